// The H-LoRA plugins of a model, all loaded once over one base (design.md: "several plugins stay
// loaded over one base; a request names the plugin; nothing reloads the base").
//
// A plugin file (MODEL/plugins/<name>.gguf, docs/MODELS.md) carries its H-LoRA tensors, its own
// projector, its vision layer (-2 comprehension, 1 generation) and task; a generation plugin also
// carries its fusion rows (the full embedding table and head, 40206 rows for M3-GEN). Loading binds
// zero-copy views into the mapped file and the adapters to the base decoder's linears, so choosing a
// plugin for a request is a pointer: no weights are copied or reloaded, and plugins sharing a base
// share its layers (a generation plugin's decoder is the base's layers with its own rows).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "formats/gguf.h"
#include "model/decoder.h"
#include "model/hlora.h"

namespace hg {

struct Plugin {
    std::string name;                        // the file's stem: plugins/com.gguf -> "com"
    std::filesystem::path path;
    std::shared_ptr<const GGUFFile> file;    // the mapped file every view points into
    HLoraPlugin weights;                     // adapters, projector, task, vision layer
    std::shared_ptr<const Decoder> decoder;  // what runs with this plugin: the (extended) base, or the
                                             // base layers with the plugin's own fusion rows
    std::unique_ptr<AdapterSet> adapters;    // bound to decoder's linears
    uint64_t key = 0;                        // identity for KV-cache reuse (distinct per plugin)
    std::string sha256;                      // of the file, when the loader knew it (run-time versions)

    PluginTask task() const { return weights.task(); }
    int vision_layer() const { return weights.vision_layer(); }
    bool has_fusion_rows() const { return weights.token_embd().has_value(); }
    std::string describe() const;            // "com: comprehension, vision layer -2, rank 64, ..."
};

class PluginRegistry {
public:
    // Loads every plugins/*.gguf of `dir` (sorted by name), or only `names` (each must exist).
    // `base` is the decoder the plugins wrap (with HealthGPT's vocabulary extension applied, which
    // the reference does before loading a plugin); `n_tokens` = len(tokenizer): fusion rows must
    // cover it. Throws naming the file and the problem (wrong base, shapes, missing parts).
    // `override` (training): tensors bound instead of the file's, called with "plugins/<stem>".
    using Override = std::function<std::optional<Tensor>(const std::string& file, std::string_view name)>;
    void load_folder(const std::filesystem::path& dir, const std::vector<std::string>& names,
                     const std::shared_ptr<const Decoder>& base, int64_t n_tokens, int64_t vision_hidden,
                     const Override& override = {});
    // One plugin file (any path); its name is the file stem unless `name` is given.
    const Plugin& load_file(const std::filesystem::path& path, const std::shared_ptr<const Decoder>& base,
                            int64_t n_tokens, int64_t vision_hidden, std::string name = {},
                            const Override& override = {});

    // The plugins loaded with the model (fixed after loading; run-time versions are not listed).
    const std::vector<std::unique_ptr<Plugin>>& all() const { return plugins_; }
    bool empty() const { return plugins_.empty(); }
    // By name (the model's plugins, then run-time versions); nullptr if absent.
    const Plugin* find(std::string_view name) const;
    // By name, or an hg::Error listing the loaded plugins.
    const Plugin& get(std::string_view name) const;
    // The first plugin (by name) of a task; nullptr if none. For comprehension, the run-time
    // default when one was set (set_default).
    const Plugin* first(PluginTask task) const;

    // --- run time (the update loop's hot swap, docs/UPDATES.md) ---
    // The Model is shared as const by every request, so these are const and thread-safe: a
    // version is loaded beside the others (same base, its own mapped file) under a mutex and never
    // unloaded while the process runs, so a request holding a Plugin* keeps a valid plugin to the
    // end; the default is one atomic pointer, so a request sees either the old or the new one.
    // Loads a comprehension plugin file under `name` (a name already loaded: that plugin, whose
    // sha256 must match). Throws (and loads nothing) on a bad file.
    const Plugin& add_version(const std::filesystem::path& path, const std::string& name, const std::string& sha256) const;
    // The comprehension plugin new requests get by default; nullptr: the first by name again.
    void set_default(const Plugin* p) const;
    const Plugin* default_comprehension() const { return first(PluginTask::Comprehension); }

private:
    std::unique_ptr<Plugin> make(const std::filesystem::path& path, std::string name, const Override& override,
                                 size_t index) const;
    std::vector<std::unique_ptr<Plugin>> plugins_;
    // What add_version loads against (recorded by the first load).
    std::shared_ptr<const Decoder> base_;
    int64_t n_tokens_ = 0, vision_hidden_ = 0;
    mutable std::mutex versions_mu_;
    mutable std::vector<std::unique_ptr<Plugin>> versions_;
    mutable std::atomic<const Plugin*> default_{nullptr};
};

}  // namespace hg
