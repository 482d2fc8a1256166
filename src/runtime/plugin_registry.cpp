#include "runtime/plugin_registry.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "model/weight_source.h"

namespace hg {

std::string Plugin::describe() const {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s: %s, vision layer %d, rank %lld, alpha %g, %d experts, %zu adapters%s",
                  name.c_str(), plugin_task_name(task()), vision_layer(), (long long)weights.rank(), weights.alpha(),
                  weights.experts(), weights.adapters().size(),
                  has_fusion_rows() ? (", own embedding/head rows " + std::to_string(weights.token_embd()->shape[0])).c_str()
                                    : "");
    return buf;
}

std::unique_ptr<Plugin> PluginRegistry::make(const std::filesystem::path& path, std::string name,
                                             const Override& override, size_t index) const {
    const std::shared_ptr<const Decoder>& base = base_;
    const int64_t n_tokens = n_tokens_, vision_hidden = vision_hidden_;
    auto p = std::make_unique<Plugin>();
    p->name = name.empty() ? path.stem().string() : std::move(name);
    p->path = path;
    p->file = GGUFFile::open(path);
    const std::string src = path.string();
    TensorOverride tensor_override;
    if (override)
        tensor_override = [override, file = "plugins/" + p->name](std::string_view n) { return override(file, n); };
    const WeightSource ws = with_override(gguf_source(*p->file), tensor_override);
    p->weights = HLoraPlugin::load(ws);
    if (auto arch = p->file->get_string("general.architecture")) {
        const char* want = decoder_arch_name(base->hparams().arch);
        HG_CHECK(*arch == want, "%s: a plugin for a %s base, but the text model is %s", src.c_str(), arch->c_str(), want);
    }
    const Projector& proj = p->weights.projector();
    HG_CHECK(proj.d_out() == base->hparams().n_embd, "%s: the projector gives %lld-wide vectors, the text model takes %lld",
             src.c_str(), (long long)proj.d_out(), (long long)base->hparams().n_embd);
    HG_CHECK(vision_hidden <= 0 || proj.d_in() == vision_hidden,
             "%s: the projector takes %lld-wide vision features, the vision tower gives %lld", src.c_str(),
             (long long)proj.d_in(), (long long)vision_hidden);

    p->decoder = base;
    if (p->weights.token_embd() || p->weights.output()) {
        // Generation plugins: the fusion rows replace the embedding and the head (they override
        // the mean-initialised extension, as the reference loads them after resizing).
        HG_CHECK(p->weights.token_embd() && p->weights.output(), "%s: %s without %s", src.c_str(),
                 p->weights.token_embd() ? plugin_names::kTokenEmbd : plugin_names::kOutput,
                 p->weights.token_embd() ? plugin_names::kOutput : plugin_names::kTokenEmbd);
        const Tensor& te = *p->weights.token_embd();
        HG_CHECK(te.n_dims == 2 && te.shape[0] >= n_tokens,
                 "%s: %s has %lld rows, fewer than the tokenizer's %lld tokens", src.c_str(), plugin_names::kTokenEmbd,
                 (long long)te.shape[0], (long long)n_tokens);
        p->decoder = with_vocabulary(base, te, *p->weights.output(), p->file);
    }
    p->adapters = hlora_adapters(p->weights, *p->decoder);
    // Any value that differs between plugins and from "no adapter" (0): the load position + 1
    // mixed with a constant, so two plugins never share a cached KV position.
    p->key = 0x51ed270b3f1a9c57ull ^ (uint64_t)(index + 1) * 0x9e3779b97f4a7c15ull;
    return p;
}

const Plugin& PluginRegistry::load_file(const std::filesystem::path& path, const std::shared_ptr<const Decoder>& base,
                                        int64_t n_tokens, int64_t vision_hidden, std::string name,
                                        const Override& override) {
    base_ = base;
    n_tokens_ = n_tokens;
    vision_hidden_ = vision_hidden;
    const std::string stem = name.empty() ? path.stem().string() : name;
    HG_CHECK(!find(stem), "%s: a plugin named '%s' is already loaded", path.string().c_str(), stem.c_str());
    plugins_.push_back(make(path, std::move(name), override, plugins_.size()));
    return *plugins_.back();
}

const Plugin& PluginRegistry::add_version(const std::filesystem::path& path, const std::string& name,
                                          const std::string& sha256) const {
    HG_CHECK(base_ != nullptr, "%s: this model loaded no plugin folder, so it takes no plugin versions", path.string().c_str());
    std::lock_guard<std::mutex> l(versions_mu_);
    for (const auto& v : versions_)
        if (v->name == name) {
            HG_CHECK(v->sha256 == sha256, "%s: a different file is already loaded as %s", path.string().c_str(), name.c_str());
            return *v;
        }
    for (const auto& p : plugins_)
        HG_CHECK(p->name != name, "%s: '%s' is the name of one of the model's own plugins", path.string().c_str(), name.c_str());
    auto p = make(path, name, {}, plugins_.size() + versions_.size());
    HG_CHECK(p->task() == PluginTask::Comprehension, "%s: a %s plugin; only comprehension plugins are swapped at run time",
             path.string().c_str(), plugin_task_name(p->task()));
    p->sha256 = sha256;
    versions_.push_back(std::move(p));
    return *versions_.back();
}

void PluginRegistry::set_default(const Plugin* p) const {
    HG_CHECK(!p || p->task() == PluginTask::Comprehension, "plugin %s: the default must be a comprehension plugin",
             p->name.c_str());
    default_.store(p);
}

void PluginRegistry::load_folder(const std::filesystem::path& dir, const std::vector<std::string>& names,
                                 const std::shared_ptr<const Decoder>& base, int64_t n_tokens, int64_t vision_hidden,
                                 const Override& override) {
    namespace fs = std::filesystem;
    base_ = base;  // for add_version, even when the folder holds no plugin yet
    n_tokens_ = n_tokens;
    vision_hidden_ = vision_hidden;
    std::error_code ec;
    std::vector<fs::path> files;
    if (fs::is_directory(dir, ec))
        for (const auto& e : fs::directory_iterator(dir, ec))
            if (e.is_regular_file() && e.path().extension() == ".gguf") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (names.empty()) {
        for (const auto& f : files) load_file(f, base, n_tokens, vision_hidden, {}, override);
        return;
    }
    for (const std::string& n : names) {
        const fs::path f = dir / (n + ".gguf");
        if (!fs::exists(f, ec)) {
            std::string have;
            for (const auto& g : files) have += (have.empty() ? "" : ", ") + g.stem().string();
            hg::fail("%s: no plugin '%s' (found: %s)", dir.string().c_str(), n.c_str(), have.empty() ? "none" : have.c_str());
        }
        load_file(f, base, n_tokens, vision_hidden, {}, override);
    }
}

const Plugin* PluginRegistry::find(std::string_view name) const {
    for (const auto& p : plugins_)
        if (p->name == name) return p.get();
    std::lock_guard<std::mutex> l(versions_mu_);
    for (const auto& p : versions_)
        if (p->name == name) return p.get();
    return nullptr;
}

const Plugin& PluginRegistry::get(std::string_view name) const {
    if (const Plugin* p = find(name)) return *p;
    std::string have;
    for (const auto& p : plugins_) have += (have.empty() ? "" : ", ") + p->name;
    hg::fail("no plugin '%.*s' is loaded (loaded: %s)", (int)name.size(), name.data(), have.empty() ? "none" : have.c_str());
}

const Plugin* PluginRegistry::first(PluginTask task) const {
    if (task == PluginTask::Comprehension)
        if (const Plugin* d = default_.load()) return d;
    for (const auto& p : plugins_)
        if (p->task() == task) return p.get();
    return nullptr;
}

}  // namespace hg
