// taming-transformers VQGAN (GumbelVQ) Lightning checkpoint `last.ckpt` (+ `model.yaml`) -> vqgan.gguf
// (docs/MODELS.md "VQGAN", "Converting last.ckpt"). Only root["state_dict"] is used; loss.* keys
// (LPIPS, discriminator) are ignored by design; every other key must be a tensor of the layout of
// the config, with its shape. The config comes from model.yaml when given and is always inferred
// from the shapes too; the two must agree.
#include <algorithm>
#include <map>
#include <set>

#include "convert/convert.h"
#include "convert/convert_common.h"
#include "core/error.h"
#include "formats/yaml.h"
#include "model/vqgan.h"

namespace fs = std::filesystem;

namespace hg {

using conv::KeyLedger;
using conv::SourceTensors;

namespace {

// The config from model.yaml (taming's GumbelVQ params).
VqganConfig config_from_yaml(const fs::path& p, std::vector<std::string>& rep) {
    const YamlNode y = read_yaml_file(p.string());
    const char* o = p.c_str();
    const YamlNode* model = y.get("model");
    if (!model || !model->is_map()) fail("%s: no \"model\" mapping", o);
    const YamlNode* target = model->get("target");
    const std::string t = target && target->is_scalar() ? target->scalar : "";
    if (t.size() < 9 || t.substr(t.size() - 9) != ".GumbelVQ")
        fail("%s: model.target is \"%s\"; only taming.models.vqgan.GumbelVQ (the quantizer HealthGPT's VQGAN uses) is "
             "supported", o, t.c_str());
    const YamlNode* params = model->get("params");
    if (!params || !params->is_map()) fail("%s: no model.params", o);
    if (const YamlNode* r = params->get("remap"); r && !r->is_null())
        fail("%s: model.params.remap is set; a remapped codebook is not supported", o);
    const YamlNode* dd = params->get("ddconfig");
    if (!dd || !dd->is_map()) fail("%s: no model.params.ddconfig", o);
    auto need_int = [&](const YamlNode* m, const char* k, const char* where) {
        const YamlNode* n = m->get(k);
        auto v = n ? n->as_int() : std::nullopt;
        if (!v) fail("%s: %s.%s is missing or not an integer", o, where, k);
        return check_vqgan_int(p.string(), k, *v);
    };
    auto need_ints = [&](const char* k) {
        const YamlNode* n = dd->get(k);
        if (!n || !n->is_seq()) fail("%s: model.params.ddconfig.%s is missing or not a list", o, k);
        std::vector<int> out;
        for (const YamlNode& x : n->seq) {
            auto v = x.as_int();
            if (!v) fail("%s:%d: model.params.ddconfig.%s: not an integer", o, x.line, k);
            out.push_back(check_vqgan_int(p.string(), k, *v));
        }
        return out;
    };
    if (const YamlNode* dz = dd->get("double_z"); dz && dz->as_bool().value_or(false))
        fail("%s: ddconfig.double_z is true; a VQGAN encoder has double_z false", o);
    VqganConfig c;
    c.embed_dim = need_int(params, "embed_dim", "model.params");
    c.n_embed = need_int(params, "n_embed", "model.params");
    c.ch = need_int(dd, "ch", "model.params.ddconfig");
    c.ch_mult = need_ints("ch_mult");
    c.num_res_blocks = need_int(dd, "num_res_blocks", "model.params.ddconfig");
    c.attn_resolutions = need_ints("attn_resolutions");
    c.z_channels = need_int(dd, "z_channels", "model.params.ddconfig");
    c.resolution = need_int(dd, "resolution", "model.params.ddconfig");
    c.in_channels = need_int(dd, "in_channels", "model.params.ddconfig");
    c.out_ch = need_int(dd, "out_ch", "model.params.ddconfig");
    c.validate(p.string());
    rep.push_back("config: " + p.filename().string() + " (" + t + ")");
    return c;
}

int64_t dim(const SourceTensors& s, const std::string& name, size_t d, const std::string& origin) {
    const CkptTensor* t = s.find(name);
    if (!t) fail("%s: tensor %s is missing (needed to infer the config)", origin.c_str(), name.c_str());
    if (t->shape.size() <= d) fail("%s: tensor %s has shape %s", origin.c_str(), name.c_str(), t->shape_str().c_str());
    return t->shape[d];
}

// The config implied by the tensor shapes (resolution is not in the weights: `resolution`).
VqganConfig config_from_shapes(const SourceTensors& s, int resolution, const std::optional<VqganConfig>& hint,
                               const std::string& origin) {
    VqganConfig c;
    const bool enc = s.find("encoder.conv_in.weight") != nullptr;
    int levels = 0, blocks0 = 0;
    std::set<int> attn_levels;
    for (const CkptTensor* t : s.tensors()) {
        const std::string& n = t->name;
        if (n.rfind("decoder.up.", 0) != 0) continue;
        const int i = std::atoi(n.c_str() + 11);
        if (i < 0 || i > 16) fail("%s: tensor %s: level index out of range", origin.c_str(), n.c_str());
        levels = std::max(levels, i + 1);
        const std::string rest = n.substr(n.find('.', 11) + 1);
        if (i == 0 && rest.rfind("block.", 0) == 0) blocks0 = std::max(blocks0, std::atoi(rest.c_str() + 6) + 1);
        if (rest.rfind("attn.", 0) == 0) attn_levels.insert(i);
    }
    if (levels == 0) fail("%s: no decoder.up.* tensors: not a taming VQGAN state dict", origin.c_str());
    c.ch = enc ? (int)dim(s, "encoder.conv_in.weight", 0, origin)
               : hint ? hint->ch : (int)dim(s, "decoder.conv_out.weight", 1, origin);
    c.ch_mult.clear();
    for (int i = 0; i < levels; ++i) {
        const int64_t w = dim(s, "decoder.up." + std::to_string(i) + ".block.0.conv2.weight", 0, origin);
        if (c.ch <= 0 || w % c.ch != 0) fail("%s: decoder level %d width %lld is not a multiple of ch %d", origin.c_str(), i, (long long)w, c.ch);
        c.ch_mult.push_back(check_vqgan_int(origin, "ch_mult", w / c.ch));
    }
    c.num_res_blocks = blocks0 - 1;
    c.z_channels = check_vqgan_int(origin, "z_channels", dim(s, "decoder.conv_in.weight", 1, origin));
    c.n_embed = check_vqgan_int(origin, "n_embed", dim(s, "quantize.embed.weight", 0, origin));
    c.embed_dim = check_vqgan_int(origin, "embed_dim", dim(s, "quantize.embed.weight", 1, origin));
    c.in_channels = enc ? check_vqgan_int(origin, "in_channels", dim(s, "encoder.conv_in.weight", 1, origin))
                        : hint ? hint->in_channels : 3;
    c.out_ch = check_vqgan_int(origin, "out_ch", dim(s, "decoder.conv_out.weight", 0, origin));
    c.resolution = resolution;
    c.attn_resolutions.clear();
    for (int i : attn_levels) c.attn_resolutions.push_back(resolution >> i);
    std::sort(c.attn_resolutions.begin(), c.attn_resolutions.end(), std::greater<int>());
    c.validate(origin);
    return c;
}

void check_same(const VqganConfig& yaml, const VqganConfig& w, const std::string& y, const std::string& origin) {
    auto bad = [&](const char* k, const std::string& a, const std::string& b) {
        fail("%s: %s says %s = %s, the weights of %s have %s", y.c_str(), y.c_str(), k, a.c_str(), origin.c_str(), b.c_str());
    };
    auto list = [](const std::vector<int>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
        return s + "]";
    };
    if (yaml.ch != w.ch) bad("ch", std::to_string(yaml.ch), std::to_string(w.ch));
    if (yaml.ch_mult != w.ch_mult) bad("ch_mult", list(yaml.ch_mult), list(w.ch_mult));
    if (yaml.num_res_blocks != w.num_res_blocks) bad("num_res_blocks", std::to_string(yaml.num_res_blocks), std::to_string(w.num_res_blocks));
    if (yaml.z_channels != w.z_channels) bad("z_channels", std::to_string(yaml.z_channels), std::to_string(w.z_channels));
    if (yaml.embed_dim != w.embed_dim) bad("embed_dim", std::to_string(yaml.embed_dim), std::to_string(w.embed_dim));
    if (yaml.n_embed != w.n_embed) bad("n_embed", std::to_string(yaml.n_embed), std::to_string(w.n_embed));
    if (yaml.in_channels != w.in_channels) bad("in_channels", std::to_string(yaml.in_channels), std::to_string(w.in_channels));
    if (yaml.out_ch != w.out_ch) bad("out_ch", std::to_string(yaml.out_ch), std::to_string(w.out_ch));
    for (int i = 0; i < yaml.levels(); ++i) {
        const int res = yaml.resolution >> i;
        if (yaml.has_attn(res) != w.has_attn(res))
            bad("attn_resolutions", list(yaml.attn_resolutions),
                std::string(w.has_attn(res) ? "" : "no ") + "attention at level " + std::to_string(i) + " (" + std::to_string(res) + " px)");
    }
}

}  // namespace

ConvertPlan plan_vqgan(const VqganOptions& o) {
    ConvertPlan plan;
    plan.what = "vqgan";
    plan.file = "vqgan.gguf";
    auto& rep = plan.report;
    const std::string origin = o.ckpt.string();

    // A Lightning checkpoint (root["state_dict"]) or a plain state dict: look at the root first
    // (lenient, no CRC pass: nothing is read but the pickle).
    TorchLoadOptions probe;
    probe.mode = TorchLoadMode::Inspect;
    probe.verify_crc = false;
    bool lightning = false;
    {
        auto ck = TorchCheckpoint::open(o.ckpt, probe);
        PyRef root = ck->root();
        lightning = root->kind == PyKind::Dict && root->get("state_dict") != nullptr;
    }
    auto src = SourceTensors::open_torch(o.ckpt, lightning ? TorchLoadMode::Lightning : TorchLoadMode::StateDict);
    plan.sources.push_back(src);
    rep.push_back("weights: " + src->describe());
    for (const auto& n : src->notes()) rep.push_back(n);

    fs::path yaml = o.yaml;
    if (yaml.empty() && fs::exists(o.ckpt.parent_path() / "model.yaml")) yaml = o.ckpt.parent_path() / "model.yaml";
    std::optional<VqganConfig> ycfg;
    if (!yaml.empty()) ycfg = config_from_yaml(yaml, rep);
    const VqganConfig wcfg = config_from_shapes(*src, ycfg ? ycfg->resolution : 256, ycfg, origin);
    if (ycfg) check_same(*ycfg, wcfg, yaml.string(), origin);
    else rep.push_back("config inferred from the tensor shapes (no model.yaml): resolution 256 assumed");
    const VqganConfig cfg = ycfg ? *ycfg : wcfg;
    rep.push_back("config: " + cfg.to_string());

    const bool with_encoder = src->find("encoder.conv_in.weight") != nullptr;
    if (!with_encoder) rep.push_back("decoder-only checkpoint: the file can decode, not encode");
    const std::vector<VqganTensorSpec> layout = vqgan_tensor_layout(cfg, with_encoder);
    KeyLedger led;
    led.origin = origin;
    std::set<std::string> wanted;
    for (const auto& spec : layout) {
        wanted.insert(spec.name);
        const CkptTensor* t = src->find(spec.name);
        if (!t) {
            led.missing.push_back(spec.name);
            continue;
        }
        if (t->shape != spec.shape) led.bad.push_back(spec.name + ": shape " + t->shape_str() + ", the config implies " + conv::shape_str(spec.shape));
        else if (!(t->type == ElemType::F32 || t->type == ElemType::F16 || t->type == ElemType::BF16 || t->type == ElemType::F64))
            led.bad.push_back(spec.name + ": element type " + elem_type_name(t->type));
        else ++led.mapped;
    }
    for (const CkptTensor* t : src->tensors()) {
        if (wanted.count(t->name)) continue;
        if (t->name.rfind("loss.", 0) == 0) led.ignored["training loss modules (LPIPS, discriminator)"].push_back(t->name);
        else if (t->name == "quantize.embedding.weight")
            fail("%s: quantize.embedding.weight belongs to a VQModel (nearest-neighbour quantizer); only GumbelVQ is supported", origin.c_str());
        else if (t->name == "quantize.used")
            fail("%s: quantize.used is the buffer of a remapped codebook (remap), which is not supported", origin.c_str());
        else led.unknown.push_back(t->name);
    }
    led.finish(o.allow_unknown, rep);

    GGUFWriter& w = plan.writer;
    conv::add_general(w, "vqgan", "vqgan-f" + std::to_string(1 << (cfg.levels() - 1)) + "-" + std::to_string(cfg.n_embed) + "-gumbel");
    vqgan_config_to_gguf(cfg, w);
    DType main_type = DType::F32;
    for (const auto& spec : layout) {
        const CkptTensor& t = *src->find(spec.name);
        const DType st = conv::float_source_type(t, plan.what);
        const TensorRole role = classify_tensor("vqgan", false, spec.name, (int)spec.shape.size(), false);
        if (role == TensorRole::Conv) main_type = st;
        conv::add_tensor(plan, spec.name, t, spec.shape, choose_type(o.type, st, role, -1, 0, spec.shape.back()));
    }
    w.set_u32("general.file_type", gguf_file_type(o.type == WeightType::Q8_0 || o.type == WeightType::Q4_K ? WeightType::F16 : o.type, main_type));
    return plan;
}

}  // namespace hg
