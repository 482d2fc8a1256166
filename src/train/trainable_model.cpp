#include "train/trainable_model.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "text/chat.h"

namespace hg::train {

const char* group_name(int group) {
    switch (group) {
        case kGroupHLora: return "hlora";
        case kGroupProjector: return "projector";
        case kGroupVision: return "vision";
        case kGroupDecoder: return "decoder";
    }
    return "?";
}

TrainSpec TrainSpec::stage(int stage, std::string plugin) {
    TrainSpec s;
    s.plugin = std::move(plugin);
    switch (stage) {
        case 1: s.projector = true; break;
        case 2: s.embeddings = true; break;
        case 3: s.hlora = s.projector = true; break;
        default: fail("training stage %d: HealthGPT has stages 1 (alignment), 2 (embeddings and head), 3 (H-LoRA)", stage);
    }
    return s;
}

namespace {

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

}  // namespace

std::unique_ptr<TrainableModel> TrainableModel::load(const std::filesystem::path& folder, const TrainSpec& spec) {
    namespace fs = std::filesystem;
    std::unique_ptr<TrainableModel> tm(new TrainableModel());
    tm->spec_ = spec;
    const bool wants_plugin = spec.hlora || spec.projector;
    HG_CHECK(!wants_plugin || !spec.plugin.empty(), "%s: training H-LoRA or a projector needs a plugin (--plugin NAME)",
             folder.string().c_str());
    HG_CHECK(spec.hlora || spec.projector || spec.embeddings || spec.vision || spec.decoder,
             "%s: nothing to train (no stage or parameter set chosen)", folder.string().c_str());
    HG_CHECK(fs::is_directory(folder), "%s: not a model folder", folder.string().c_str());

    // --- the trainable tensors, copied to float32 in the store, per file
    auto add_file = [&](const std::string& file, const fs::path& path,
                        const std::function<std::optional<int>(const std::string&)>& group_of) {
        std::shared_ptr<const GGUFFile> f = GGUFFile::open(path);
        const size_t before = tm->params_.size();
        tm->params_.add_from_gguf(*f, group_of);
        for (size_t i = before; i < tm->params_.size(); ++i)
            tm->by_file_[{file, tm->params_[i].name}] = &tm->params_[i];
        tm->files_.push_back(std::move(f));
        return tm->params_.size() - before;
    };
    const fs::path plugin_path = folder / "plugins" / (spec.plugin + ".gguf");
    bool plugin_rows = false;  // a generation plugin's own embedding/head rows
    if (!spec.plugin.empty()) {
        HG_CHECK(fs::exists(plugin_path), "%s: no such plugin", plugin_path.string().c_str());
        const std::string file = "plugins/" + spec.plugin;
        {
            auto f = GGUFFile::open(plugin_path);
            plugin_rows = f->try_tensor("token_embd.weight").has_value();
        }
        const size_t n = add_file(file, plugin_path, [&](const std::string& name) -> std::optional<int> {
            if (spec.hlora && name.find(".hlora_") != std::string::npos) return kGroupHLora;
            if (spec.projector && starts_with(name, "mm.")) return kGroupProjector;
            if (spec.embeddings && (name == "token_embd.weight" || name == "output.weight")) return kGroupDecoder;
            return std::nullopt;
        });
        HG_CHECK(n > 0, "%s: the plugin has none of the tensors to train", plugin_path.string().c_str());
        if (spec.hlora)
            HG_CHECK(std::any_of(tm->by_file_.begin(), tm->by_file_.end(),
                                 [](const auto& kv) { return kv.first.second.find(".hlora_") != std::string::npos; }),
                     "%s: the plugin has no H-LoRA tensors", plugin_path.string().c_str());
    }
    if (spec.decoder || (spec.embeddings && !plugin_rows)) {
        const size_t n = add_file("text", folder / "text.gguf", [&](const std::string& name) -> std::optional<int> {
            if (spec.decoder) return kGroupDecoder;
            if (name == "token_embd.weight" || name == "output.weight") return kGroupDecoder;
            return std::nullopt;
        });
        HG_CHECK(n > 0, "%s: no trainable tensors in text.gguf", folder.string().c_str());
    }
    if (spec.vision) {
        HG_CHECK(fs::exists(folder / "vision.gguf"), "%s: no vision.gguf to unfreeze", folder.string().c_str());
        add_file("vision", folder / "vision.gguf", [](const std::string&) -> std::optional<int> { return kGroupVision; });
    }

    // --- the model, with those tensors bound to the store
    ModelOptions mo;
    if (!spec.plugin.empty()) mo.plugins = {spec.plugin};
    mo.vq_vocabulary = spec.vq_vocabulary;
    TrainableModel* self = tm.get();
    mo.tensor_override = [self](const std::string& file, std::string_view name) -> std::optional<Tensor> {
        auto it = self->by_file_.find({file, std::string(name)});
        if (it == self->by_file_.end()) return std::nullopt;
        return it->second->view();
    };
    tm->model_ = Model::load(folder, mo);
    if (!spec.plugin.empty()) tm->plugin_ = &tm->model_->plugins().get(spec.plugin);

    // --- copies the components made (norms, biases): the store refreshes them after each step
    auto alias = [&](const std::string& file, const ParamRefs& refs) {
        for (const ParamRef& r : refs) {
            auto it = tm->by_file_.find({file, r.name});
            if (it == tm->by_file_.end() || r.value.data == it->second->value.data()) continue;
            HG_CHECK(r.value.type == DType::F32 && r.value.numel() == it->second->numel(),
                     "%s: %s: the component holds %s %s, the parameter has %lld values", folder.string().c_str(),
                     r.name.c_str(), dtype_name(r.value.type), r.value.shape_str().c_str(),
                     (long long)it->second->numel());
            tm->params_.add_alias(it->second->name, static_cast<float*>(r.value.data));
        }
    };
    alias("text", tm->decoder().parameters());
    if (tm->model_->vision()) alias("vision", tm->model_->vision()->parameters());
    if (tm->plugin_) alias("plugins/" + spec.plugin, tm->plugin_->weights.projector().parameters());
    HG_CHECK(!spec.vision || tm->model_->vision(), "%s: the vision tower did not load", folder.string().c_str());
    return tm;
}

const Decoder& TrainableModel::decoder() const { return plugin_ ? *plugin_->decoder : *model_->decoder(); }

std::vector<const Param*> TrainableModel::params_of(const std::string& file) const {
    std::vector<const Param*> out;
    for (const auto& [key, p] : by_file_)
        if (key.first == file) out.push_back(p);
    std::sort(out.begin(), out.end(), [](const Param* a, const Param* b) { return a->name < b->name; });
    return out;
}

int64_t TrainableModel::sequence_length(const TrainSample& s) const {
    const int64_t P = model_->vision() ? model_->vision()->config().n_patches() : 0;
    int64_t T = 0;
    for (int32_t id : s.input_ids) T += id == text::kImageTokenId ? P : 1;
    return T;
}

std::vector<int32_t> TrainableModel::targets(const TrainSample& s) const {
    HG_CHECK(s.labels.size() == s.input_ids.size(), "example %s: %zu labels for %zu input ids", s.id.c_str(),
             s.labels.size(), s.input_ids.size());
    const int64_t P = model_->vision() ? model_->vision()->config().n_patches() : 0;
    std::vector<int32_t> row_labels;  // the expanded sequence's labels
    row_labels.reserve((size_t)sequence_length(s));
    for (size_t i = 0; i < s.input_ids.size(); ++i) {
        if (s.input_ids[i] == text::kImageTokenId) row_labels.insert(row_labels.end(), (size_t)P, -100);
        else row_labels.push_back(s.labels[i]);
    }
    std::vector<int32_t> t(row_labels.size(), -100);
    for (size_t r = 0; r + 1 < row_labels.size(); ++r) t[r] = row_labels[r + 1];
    return t;
}

int64_t TrainableModel::count_targets(const std::vector<int32_t>& targets) {
    return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != -100; });
}

double TrainableModel::loss_and_grad(const TrainSample& s, float grad_scale, int64_t* n_valid, bool backward,
                                     const ForwardOptions& opt_in) {
    const Decoder& dec = decoder();
    ForwardOptions opt = opt_in;
    if (!opt.adapters && plugin_) opt.adapters = plugin_->adapters.get();
    if (!opt.keep_activation_bytes && backward) opt.keep_activation_bytes = activation_bytes_;
    ThreadPool& pool = opt.pool ? *opt.pool : default_pool();
    const bool ref = opt.kernels == &kernels_ref();
    const Kernels* K = opt.kernels ? opt.kernels : &kernels();
    const BackwardKernels* BK = ref ? &backward_kernels_ref() : &backward_kernels();
    const int64_t E = dec.hparams().n_embd;
    const int64_t n_slots = std::count(s.input_ids.begin(), s.input_ids.end(), text::kImageTokenId);
    HG_CHECK(n_slots == (int64_t)s.pixels.size(), "example %s: %lld <image> slots but %zu images", s.id.c_str(),
             (long long)n_slots, s.pixels.size());
    HG_CHECK(n_slots == 0 || (model_->vision() && plugin_),
             "example %s: images need a vision tower and a plugin (its projector)", s.id.c_str());

    // --- images: vision tower -> projector, each image's rows [P, E]
    const ClipVision* vision = model_->vision();
    const int64_t P = vision ? vision->config().n_patches() : 0;
    std::vector<ClipVisionTrainState> vstate((size_t)n_slots);
    std::vector<ProjectorTrainState> pstate((size_t)n_slots);
    std::vector<std::vector<float>> rows((size_t)n_slots);
    Arena arena;
    for (int64_t k = 0; k < n_slots; ++k) {
        const auto& cfg = vision->config();
        HG_CHECK(s.pixels[(size_t)k].size() == (size_t)cfg.num_channels * cfg.image_size * cfg.image_size,
                 "example %s: image %lld has %zu pixel values, the tower takes %d x %d x %d", s.id.c_str(),
                 (long long)k, s.pixels[(size_t)k].size(), cfg.num_channels, cfg.image_size, cfg.image_size);
        std::vector<float> feat((size_t)(P * cfg.hidden));
        arena.reset();
        if (spec_.vision)
            vision->forward_train(feat.data(), s.pixels[(size_t)k].data(), plugin_->vision_layer(), vstate[(size_t)k],
                                  arena, pool, K);
        else
            vision->forward(feat.data(), s.pixels[(size_t)k].data(), plugin_->vision_layer(), arena, pool);
        const Projector& proj = plugin_->weights.projector();
        rows[(size_t)k].resize((size_t)(P * proj.d_out()));
        arena.reset();
        proj.forward_train(rows[(size_t)k].data(), feat.data(), P, pstate[(size_t)k], arena, pool, K);
    }

    // --- embeddings with the image rows spliced into the slots
    const int64_t T = sequence_length(s);
    std::vector<float> embeds((size_t)(T * E));
    {
        int64_t r = 0, k = 0;
        for (int32_t id : s.input_ids) {
            if (id == text::kImageTokenId) {
                std::memcpy(embeds.data() + r * E, rows[(size_t)k++].data(), (size_t)(P * E) * sizeof(float));
                r += P;
            } else {
                dec.embed({&id, 1}, embeds.data() + r * E);
                r += 1;
            }
        }
    }

    // --- decoder, loss
    const std::vector<int32_t> tg = targets(s);
    DecoderTape tape;
    dec.forward_train(embeds.data(), T, tape, opt);
    std::vector<float> dh((size_t)(T * E));
    int64_t nv = 0;
    const double loss = dec.loss_backward(tape, tg.data(), grad_scale, dh.data(), backward ? &params_ : nullptr, &nv, opt);
    if (n_valid) *n_valid = nv;
    if (!backward) return loss;

    // --- backward: decoder, then the embeddings' sources
    const bool need_dembeds = spec_.projector || spec_.vision || spec_.embeddings || spec_.decoder;
    std::vector<float> de(need_dembeds ? (size_t)(T * E) : 0, 0.0f);
    dec.backward(dh.data(), tape, need_dembeds ? de.data() : nullptr, &params_, opt);
    if (!need_dembeds) return loss;
    int64_t r = 0, k = 0;
    for (int32_t id : s.input_ids) {
        if (id != text::kImageTokenId) {
            dec.embed_backward({&id, 1}, de.data() + r * E, &params_);
            r += 1;
            continue;
        }
        const Projector& proj = plugin_->weights.projector();
        std::vector<float> dfeat(spec_.vision ? (size_t)(P * proj.d_in()) : 0, 0.0f);
        arena.reset();
        proj.backward(de.data() + r * E, pstate[(size_t)k], params_, spec_.vision ? dfeat.data() : nullptr, arena, pool,
                      BK);
        if (spec_.vision) {
            arena.reset();
            vision->backward(dfeat.data(), vstate[(size_t)k], params_, nullptr, arena, pool, BK);
        }
        r += P;
        ++k;
    }
    return loss;
}

}  // namespace hg::train
