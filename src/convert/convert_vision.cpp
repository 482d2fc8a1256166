// transformers CLIP checkpoint (CLIPModel or CLIPVisionModel; safetensors or pytorch_model.bin) ->
// vision.gguf: the vision tower only, all blocks, llama.cpp's CLIP/mmproj names (docs/MODELS.md
// "Vision tower"). Names come from clip_gguf_name(), the loader's own mapping.
#include <cmath>
#include <set>

#include "convert/convert.h"
#include "convert/convert_common.h"
#include "core/error.h"
#include "model/clip_vision.h"

namespace fs = std::filesystem;

namespace hg {

using conv::KeyLedger;
using conv::SourceTensors;

namespace {

// CLIPVisionConfig as transformers 4.41 fills it: keys of config.json (vision_config of a CLIPModel),
// class defaults for the absent ones.
struct VisionConfig {
    int64_t hidden = 768, ff = 3072, layers = 12, heads = 12, channels = 3, image = 224, patch = 32, proj = 512;
    double eps = 1e-5;
    std::string act = "quick_gelu";
};

VisionConfig read_vision_config(const fs::path& p, std::vector<std::string>& rep) {
    VisionConfig c;
    if (!fs::exists(p)) {
        rep.push_back("no config.json beside the weights: CLIPVisionConfig defaults, checked against the tensor shapes");
        return c;
    }
    const nlohmann::json root = conv::read_json(p);
    if (!root.is_object()) fail("%s: not a JSON object", p.c_str());
    const std::string mt = root.value("model_type", std::string());
    const nlohmann::json* j = &root;
    if (mt == "clip") {
        if (!root.contains("vision_config") || !root["vision_config"].is_object())
            fail("%s: a CLIPModel config without a vision_config object", p.c_str());
        j = &root["vision_config"];
        if (root.contains("projection_dim") && root["projection_dim"].is_number_integer())
            c.proj = root["projection_dim"].get<int64_t>();
    } else if (mt != "clip_vision_model") {
        fail("%s: model_type \"%s\" is not a CLIP model (clip or clip_vision_model)", p.c_str(), mt.c_str());
    }
    auto get = [&](const char* k, int64_t& v) {
        if (!j->contains(k) || (*j)[k].is_null()) return;
        if (!(*j)[k].is_number_integer() || (*j)[k].get<int64_t>() <= 0 || (*j)[k].get<int64_t>() > (1 << 20))
            fail("%s: vision config \"%s\" is not a positive integer", p.c_str(), k);
        v = (*j)[k].get<int64_t>();
    };
    get("hidden_size", c.hidden);
    get("intermediate_size", c.ff);
    get("num_hidden_layers", c.layers);
    get("num_attention_heads", c.heads);
    get("num_channels", c.channels);
    get("image_size", c.image);
    get("patch_size", c.patch);
    get("projection_dim", c.proj);
    if (j->contains("layer_norm_eps") && (*j)["layer_norm_eps"].is_number()) c.eps = (*j)["layer_norm_eps"].get<double>();
    if (j->contains("hidden_act") && (*j)["hidden_act"].is_string()) c.act = (*j)["hidden_act"].get<std::string>();
    if (c.act != "quick_gelu" && c.act != "gelu")
        fail("%s: hidden_act \"%s\" is not supported (quick_gelu, gelu)", p.c_str(), c.act.c_str());
    if (c.hidden % c.heads != 0) fail("%s: hidden_size %lld is not a multiple of the head count %lld", p.c_str(), (long long)c.hidden, (long long)c.heads);
    if (c.image % c.patch != 0) fail("%s: image_size %lld is not a multiple of patch_size %lld", p.c_str(), (long long)c.image, (long long)c.patch);
    if (!(c.eps > 0) || !std::isfinite(c.eps)) fail("%s: layer_norm_eps is out of range", p.c_str());
    return c;
}

// image_mean / image_std of preprocessor_config.json (CLIP's values when absent).
void read_normalisation(const fs::path& p, std::vector<float>& mean, std::vector<float>& stdv, std::vector<std::string>& rep) {
    mean = {0.48145466f, 0.4578275f, 0.40821073f};
    stdv = {0.26862954f, 0.26130258f, 0.27577711f};
    if (!fs::exists(p)) {
        rep.push_back("no preprocessor_config.json: CLIP's image_mean / image_std");
        return;
    }
    const nlohmann::json j = conv::read_json(p);
    auto get3 = [&](const char* k, std::vector<float>& out) {
        if (!j.contains(k)) return;
        const auto& a = j[k];
        if (!a.is_array() || a.size() != 3) fail("%s: \"%s\" must be a list of 3 numbers", p.c_str(), k);
        for (size_t i = 0; i < 3; ++i) {
            if (!a[i].is_number()) fail("%s: \"%s\" must be a list of 3 numbers", p.c_str(), k);
            out[i] = a[i].get<float>();
        }
    };
    get3("image_mean", mean);
    get3("image_std", stdv);
    for (float s : stdv)
        if (!(s > 0)) fail("%s: image_std must be positive", p.c_str());
    rep.push_back("image_mean / image_std from preprocessor_config.json");
}

std::string ignored_reason(const std::string& k) {
    if (k.rfind("text_model.", 0) == 0 || k == "text_projection.weight") return "text tower";
    if (k == "logit_scale") return "contrastive logit scale";
    if (k == "visual_projection.weight") return "CLIP projection head, not used by HealthGPT";
    if (k.rfind("vision_model.post_layernorm.", 0) == 0) return "post_layernorm, never applied by HealthGPT";
    if (k == "vision_model.embeddings.position_ids") return "position_ids buffer";
    return {};
}

}  // namespace

ConvertPlan plan_vision(const VisionOptions& o) {
    ConvertPlan plan;
    plan.what = "vision tower";
    plan.file = "vision.gguf";
    auto& rep = plan.report;
    const fs::path dir = fs::is_directory(o.source) ? o.source : o.source.parent_path();
    auto src = SourceTensors::open(o.source);
    plan.sources.push_back(src);
    rep.push_back("weights: " + src->describe());
    for (const auto& n : src->notes()) rep.push_back(n);
    const VisionConfig c = read_vision_config(dir / "config.json", rep);
    std::vector<float> mean, stdv;
    read_normalisation(dir / "preprocessor_config.json", mean, stdv, rep);

    const int64_t E = c.hidden, F = c.ff, g = c.image / c.patch;
    struct Expect {
        std::string hf;
        std::vector<int64_t> shape;
    };
    std::vector<Expect> want = {
        {"vision_model.embeddings.patch_embedding.weight", {E, c.channels, c.patch, c.patch}},
        {"vision_model.embeddings.class_embedding", {E}},
        {"vision_model.embeddings.position_embedding.weight", {g * g + 1, E}},
        {"vision_model.pre_layrnorm.weight", {E}},
        {"vision_model.pre_layrnorm.bias", {E}},
    };
    for (int64_t i = 0; i < c.layers; ++i) {
        const std::string h = "vision_model.encoder.layers." + std::to_string(i) + ".";
        for (const char* ln : {"layer_norm1", "layer_norm2"})
            for (const char* k : {"weight", "bias"}) want.push_back({h + ln + "." + k, {E}});
        for (const char* pr : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
            want.push_back({h + "self_attn." + pr + ".weight", {E, E}});
            want.push_back({h + "self_attn." + pr + ".bias", {E}});
        }
        want.push_back({h + "mlp.fc1.weight", {F, E}});
        want.push_back({h + "mlp.fc1.bias", {F}});
        want.push_back({h + "mlp.fc2.weight", {E, F}});
        want.push_back({h + "mlp.fc2.bias", {E}});
    }

    KeyLedger led;
    led.origin = o.source.string();
    std::set<std::string> used;
    for (const Expect& e : want) {
        const CkptTensor* t = src->find(e.hf);
        if (!t) {
            led.missing.push_back(e.hf);
            continue;
        }
        used.insert(e.hf);
        if (t->shape != e.shape)
            led.bad.push_back(e.hf + ": shape " + t->shape_str() + ", the config implies " + conv::shape_str(e.shape));
        else if (!(t->type == ElemType::F32 || t->type == ElemType::F16 || t->type == ElemType::BF16 || t->type == ElemType::F64))
            led.bad.push_back(e.hf + ": element type " + elem_type_name(t->type));
        else
            ++led.mapped;
    }
    for (const CkptTensor* t : src->tensors()) {
        if (used.count(t->name)) continue;
        const std::string why = ignored_reason(t->name);
        if (!why.empty()) led.ignored[why].push_back(t->name);
        else if (t->name.rfind("vision_model.encoder.layers.", 0) == 0 && clip_gguf_name(t->name))
            led.bad.push_back(t->name + ": a block beyond num_hidden_layers = " + std::to_string(c.layers));
        else led.unknown.push_back(t->name);
    }
    led.finish(o.allow_unknown, rep);

    GGUFWriter& w = plan.writer;
    conv::add_general(w, "clip", "CLIP vision tower");
    w.set_bool(clip_keys::kHasVisionEncoder, true);
    w.set_bool(clip_keys::kHasTextEncoder, false);
    w.set_bool(clip_keys::kHasLlavaProjector, false);
    w.set_bool(clip_keys::kUseGelu, c.act == "gelu");
    w.set_u32(clip_keys::kImageSize, (uint32_t)c.image);
    w.set_u32(clip_keys::kPatchSize, (uint32_t)c.patch);
    w.set_u32(clip_keys::kEmbeddingLength, (uint32_t)E);
    w.set_u32(clip_keys::kFeedForwardLength, (uint32_t)F);
    w.set_u32(clip_keys::kBlockCount, (uint32_t)c.layers);
    w.set_u32(clip_keys::kHeadCount, (uint32_t)c.heads);
    w.set_f32(clip_keys::kLayerNormEps, (float)c.eps);
    w.set_u32(clip_keys::kProjectionDim, (uint32_t)c.proj);
    w.set_f32_array(clip_keys::kImageMean, mean);
    w.set_f32_array(clip_keys::kImageStd, stdv);
    w.set_u32(clip_keys::kNumChannels, (uint32_t)c.channels);
    char line[256];
    std::snprintf(line, sizeof line, "CLIP vision: %lld blocks, hidden %lld, ff %lld, %lld heads, image %lld, patch %lld, %s",
                  (long long)c.layers, (long long)E, (long long)F, (long long)c.heads, (long long)c.image,
                  (long long)c.patch, c.act.c_str());
    rep.push_back(line);

    // The tower is 0.3 B parameters: under q4_k its matrices are stored Q8_0 (4 bits would save
    // ~150 MB at a precision cost on every image token). `healthgpt quantize` applies Q4_K if asked.
    WeightType wt = o.type == WeightType::Q4_K ? WeightType::Q8_0 : o.type;
    if (o.type == WeightType::Q4_K) rep.push_back("q4_k: vision matrices stored Q8_0");
    DType main_type = DType::F32;
    for (const Expect& e : want) {
        const CkptTensor& t = *src->find(e.hf);
        const std::string name = *clip_gguf_name(e.hf);
        const DType st = conv::float_source_type(t, plan.what);
        if (e.shape.size() == 2 && name != clip_names::kPositionEmbd) main_type = st;
        const TensorRole role = classify_tensor("clip", false, name, (int)e.shape.size(), false);
        conv::add_tensor(plan, name, t, e.shape, choose_type(wt, st, role, -1, 0, e.shape.back()));
    }
    conv::set_file_type(plan, gguf_file_type(wt, main_type));
    return plan;
}

}  // namespace hg
