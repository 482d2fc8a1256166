// The plugin registry (docs/UPDATES.md, "Registry"): every plugin version the update loop made,
// with its parent, the exact dataset (record ids and hashes), the training configuration, the
// gate's report, who made and who promoted it, its file and the file's SHA-256.
//
// Status: candidate (trained, gated, waiting) -> promoted (serving; at most one per plugin, the
// database refuses a second) -> retired (was promoted, replaced); rejected (refused by the gate or
// an admin). "Version 0" of a plugin is the model folder's own file: no row; serving it means no
// row is promoted. A file is written (atomically) before its row, so a row always names a whole
// file; a crash between leaves only an unregistered file.
//
// Roles: admins only (plugins.add, plugins.list, plugins.read, plugins.promote, plugins.rollback,
// plugins.reject), each audited. promoted() is the server's own read at start-up (no caller).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "service/roles.h"
#include "service/store.h"

namespace hg::update {

using service::Principal;
using service::Store;

struct PluginVersion {
    int64_t id = 0;
    std::string plugin;              // the plugin it updates ("com")
    std::optional<int64_t> parent_id;  // nullopt: trained from the folder's own file
    std::string path;                // relative to the data directory
    std::string sha256;
    std::string status;              // candidate | promoted | retired | rejected
    nlohmann::json dataset, train_config, report;
    bool gate_passed = false;
    std::optional<int64_t> created_by, promoted_by, promoted_at_ms;
    int64_t created_at_ms = 0;

    // The name it is loaded under in the server: "com@v3".
    std::string name() const { return plugin + "@v" + std::to_string(id); }
};

struct NewVersion {
    std::string plugin;
    std::optional<int64_t> parent_id;
    std::string path;  // relative to the data directory; the file must exist (its hash is taken here)
    nlohmann::json dataset = nlohmann::json::object(), train_config = nlohmann::json::object(),
                   report = nlohmann::json::object();
    bool gate_passed = false;
};

// SHA-256 of a file's bytes, hex.
std::string file_sha256(const std::filesystem::path& p);

class VersionRegistry {
public:
    explicit VersionRegistry(Store& store) : store_(store) {}

    // Registers a trained, gated file as a candidate (rejected when the gate refused it).
    PluginVersion add(const Principal& p, const NewVersion& v);
    std::vector<PluginVersion> list(const Principal& p);
    PluginVersion get(const Principal& p, int64_t id);
    // Makes `id` the serving version of its plugin, retiring the one before, in one transaction.
    // Refused (BadInput) for a version whose gate did not pass or that was rejected, and when the
    // file's SHA-256 no longer matches the row. Returns the promoted version.
    PluginVersion promote(const Principal& p, int64_t id);
    // Back to an earlier version of `plugin`: `to` a retired version id, 0 the folder's own file, or
    // nullopt the one promoted before the current one. Returns the version now serving (nullopt: the
    // folder's own file).
    std::optional<PluginVersion> rollback(const Principal& p, const std::string& plugin, std::optional<int64_t> to);
    PluginVersion reject(const Principal& p, int64_t id);

    // The version of `plugin` being served (nullopt: the folder's own file). Not audited: the
    // server's own read when it starts.
    std::optional<PluginVersion> promoted(const std::string& plugin);

private:
    Store& store_;
};

}  // namespace hg::update
