#include "update/registry.h"

#include <cstdio>
#include <fstream>

#include "core/sha256.h"
#include "service/audit.h"
#include "service/errors.h"
#include "update/rows.h"

namespace hg::update {

namespace fs = std::filesystem;
using json = nlohmann::json;
using service::BadInput;
using service::Db;
using service::Role;
using service::Stmt;

std::string file_sha256(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    HG_CHECK(f.good(), "%s: cannot read the file", p.string().c_str());
    Sha256 h;
    std::vector<char> buf(1 << 20);
    while (f) {
        f.read(buf.data(), (std::streamsize)buf.size());
        if (f.gcount() > 0) h.update(buf.data(), (size_t)f.gcount());
    }
    return to_hex(h.finish());
}

namespace {

constexpr const char* kColumns =
    "SELECT id, plugin, parent_id, path, sha256, status, dataset, train_config, report, gate_passed, created_by, "
    "created_at, promoted_by, promoted_at FROM plugin_versions ";

PluginVersion read_row(const Stmt& s) {
    PluginVersion v;
    v.id = s.int64(0);
    v.plugin = s.text(1);
    v.parent_id = s.opt_int64(2);
    v.path = s.text(3);
    v.sha256 = s.text(4);
    v.status = s.text(5);
    v.dataset = json::parse(s.text(6));
    v.train_config = json::parse(s.text(7));
    v.report = json::parse(s.text(8));
    v.gate_passed = s.int64(9) != 0;
    v.created_by = s.opt_int64(10);
    v.created_at_ms = s.int64(11);
    v.promoted_by = s.opt_int64(12);
    v.promoted_at_ms = s.opt_int64(13);
    return v;
}

constexpr RowQuery<PluginVersion> kVersions{kColumns, read_row};

std::optional<PluginVersion> find(Db& db, int64_t id) { return kVersions.one(db, "WHERE id = ?", id); }

std::optional<PluginVersion> find_promoted(Db& db, const std::string& plugin) {
    return kVersions.one(db, "WHERE plugin = ? AND status = 'promoted'", plugin);
}

bool is_admin(const Principal& p) { return p.role == Role::admin; }

void set_promoted(Db& db, const Principal& p, int64_t id) {
    Stmt u(db, "UPDATE plugin_versions SET status = 'promoted', promoted_by = ?, promoted_at = ? WHERE id = ?");
    bind_user(u, p);
    u.bind(service::now_ms()).bind(id);
    u.run();
}

void retire_current(Db& db, const std::string& plugin) {
    Stmt u(db, "UPDATE plugin_versions SET status = 'retired' WHERE plugin = ? AND status = 'promoted'");
    u.bind(plugin);
    u.run();
}

}  // namespace

PluginVersion VersionRegistry::add(const Principal& p, const NewVersion& v) {
    if (v.plugin.empty() || v.plugin.size() > 200) throw BadInput("plugin: 1..200 bytes");
    if (v.path.empty() || fs::path(v.path).is_absolute() || v.path.find("..") != std::string::npos)
        throw BadInput("path: must be relative to the data directory, without '..'");
    const std::string sha = file_sha256(store_.data_dir() / v.path);  // outside the transaction: slow
    return service::guarded(store_, p, "plugins.add", "plugin:" + v.plugin, [&](Db&) { return is_admin(p); },
                            [&](Db& db, std::string& detail) {
                                Stmt s(db,
                                       "INSERT INTO plugin_versions (plugin, parent_id, path, sha256, status, dataset, "
                                       "train_config, report, gate_passed, created_by, created_at) "
                                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                                s.bind(v.plugin).bind(v.parent_id).bind(v.path).bind(sha);
                                s.bind(v.gate_passed ? "candidate" : "rejected");
                                s.bind(v.dataset.dump()).bind(v.train_config.dump()).bind(v.report.dump());
                                s.bind(v.gate_passed ? 1 : 0);
                                bind_user(s, p);
                                s.bind(service::now_ms());
                                s.run();
                                const int64_t id = db.last_insert_id();
                                detail = "version " + std::to_string(id) + (v.gate_passed ? " (gate passed)" : " (gate refused)");
                                return *find(db, id);
                            });
}

std::vector<PluginVersion> VersionRegistry::list(const Principal& p) {
    return service::guarded(store_, p, "plugins.list", "plugin_versions", [&](Db&) { return is_admin(p); },
                            [&](Db& db, std::string& detail) {
                                std::vector<PluginVersion> out = kVersions.all(db, "ORDER BY id");
                                detail = std::to_string(out.size()) + " versions";
                                return out;
                            });
}

PluginVersion VersionRegistry::get(const Principal& p, int64_t id) {
    return service::guarded(store_, p, "plugins.read", "plugin_version:" + std::to_string(id),
                            [&](Db& db) { return is_admin(p) && find(db, id).has_value(); },
                            [&](Db& db, std::string&) { return *find(db, id); });
}

PluginVersion VersionRegistry::promote(const Principal& p, int64_t id) {
    // The file is hashed before the transaction (slow) and compared inside it.
    std::string on_disk;
    {
        std::optional<PluginVersion> v = store_.transaction([&](Db& db) { return find(db, id); });
        if (v && is_admin(p)) {
            std::error_code ec;
            on_disk = fs::exists(store_.data_dir() / v->path, ec) ? file_sha256(store_.data_dir() / v->path) : "";
        }
    }
    return service::guarded(store_, p, "plugins.promote", "plugin_version:" + std::to_string(id),
                            [&](Db& db) { return is_admin(p) && find(db, id).has_value(); },
                            [&](Db& db, std::string& detail) {
                                const PluginVersion v = *find(db, id);
                                if (v.status == "promoted") throw BadInput(v.name() + " is already promoted");
                                if (!v.gate_passed || v.status == "rejected")
                                    throw BadInput(v.name() + ": the evaluation gate did not pass it (see its report)");
                                if (on_disk != v.sha256)
                                    throw BadInput(v.name() + ": the file " + v.path + " is missing or was changed");
                                const auto before = find_promoted(db, v.plugin);
                                retire_current(db, v.plugin);
                                set_promoted(db, p, id);
                                detail = "promoted " + v.name() + (before ? ", retired " + before->name() : "");
                                return *find(db, id);
                            });
}

std::optional<PluginVersion> VersionRegistry::rollback(const Principal& p, const std::string& plugin,
                                                       std::optional<int64_t> to) {
    return service::guarded(
        store_, p, "plugins.rollback", "plugin:" + plugin, [&](Db&) { return is_admin(p); },
        [&](Db& db, std::string& detail) -> std::optional<PluginVersion> {
            const auto current = find_promoted(db, plugin);
            std::optional<int64_t> target = to;
            if (!target) {
                // The one promoted before the current one: the latest retired version, else the folder's file.
                Stmt s(db, "SELECT id FROM plugin_versions WHERE plugin = ? AND status = 'retired' "
                           "AND promoted_at IS NOT NULL ORDER BY promoted_at DESC, id DESC LIMIT 1");
                s.bind(plugin);
                target = s.step() ? s.int64(0) : 0;
                if (!current) throw BadInput(plugin + ": nothing to roll back (the folder's own file is serving)");
            }
            if (*target != 0) {
                const auto t = find(db, *target);
                if (!t || t->plugin != plugin) throw BadInput("to: no version " + std::to_string(*target) + " of " + plugin);
                if (t->status == "promoted") throw BadInput(t->name() + " is already serving");
                if (t->status != "retired") throw BadInput(t->name() + " was never promoted (" + t->status + ")");
            }
            retire_current(db, plugin);
            if (*target != 0) set_promoted(db, p, *target);
            detail = (current ? current->name() : plugin + "@v0") + " -> " + plugin + "@v" + std::to_string(*target);
            return *target != 0 ? find(db, *target) : std::nullopt;
        });
}

PluginVersion VersionRegistry::reject(const Principal& p, int64_t id) {
    return service::guarded(store_, p, "plugins.reject", "plugin_version:" + std::to_string(id),
                            [&](Db& db) { return is_admin(p) && find(db, id).has_value(); },
                            [&](Db& db, std::string& detail) {
                                const PluginVersion v = *find(db, id);
                                if (v.status != "candidate") throw BadInput(v.name() + " is " + v.status + ", not a candidate");
                                Stmt u(db, "UPDATE plugin_versions SET status = 'rejected' WHERE id = ?");
                                u.bind(id);
                                u.run();
                                detail = "rejected";
                                return *find(db, id);
                            });
}

std::optional<PluginVersion> VersionRegistry::promoted(const std::string& plugin) {
    return store_.transaction([&](Db& db) { return find_promoted(db, plugin); });
}

}  // namespace hg::update
