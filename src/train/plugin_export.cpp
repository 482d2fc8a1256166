#include "train/plugin_export.h"

#include "core/error.h"
#include "core/half.h"
#include "core/quants.h"
#include "formats/torch_writer.h"
#include "model/hlora.h"

namespace hg {

namespace {

struct ModuleName {
    const char* gguf;  // llama.cpp linear name
    const char* hf;    // parent.module in the reference
};
constexpr ModuleName kPhi3[] = {{"attn_qkv", "self_attn.qkv_proj"}, {"attn_output", "self_attn.o_proj"},
                                {"ffn_up", "mlp.gate_up_proj"}, {"ffn_down", "mlp.down_proj"}};
constexpr ModuleName kQwen[] = {{"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
                                {"attn_v", "self_attn.v_proj"}, {"attn_output", "self_attn.o_proj"},
                                {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"}, {"ffn_down", "mlp.down_proj"}};

std::string candidate_key(const std::string& g, const std::string& arch) {
    if (g == plugin_names::kTokenEmbd) return "base_model.model.model.embed_tokens.weight";
    if (g == plugin_names::kOutput) return "base_model.model.lm_head.weight";
    if (g.rfind("mm.", 0) == 0) return "base_model.model.model.mm_projector." + g.substr(3);
    // blk.{i}.{linear}.{part}
    if (g.rfind("blk.", 0) != 0) return {};
    const size_t d1 = g.find('.', 4);
    const size_t d3 = g.rfind('.');
    if (d1 == std::string::npos || d3 == std::string::npos || d3 <= d1) return {};
    const std::string layer = g.substr(4, d1 - 4), linear = g.substr(d1 + 1, d3 - d1 - 1), part = g.substr(d3 + 1);
    const char* suffix = part == plugin_names::kA ? "A" : part == plugin_names::kB ? "B" : part == plugin_names::kRoute ? "route" : nullptr;
    if (!suffix) return {};
    const bool phi = arch == "phi3";
    const ModuleName* begin = phi ? std::begin(kPhi3) : std::begin(kQwen);
    const ModuleName* end = phi ? std::end(kPhi3) : std::end(kQwen);
    for (const ModuleName* m = begin; m != end; ++m)
        if (linear == m->gguf)
            return "base_model.model.model.layers." + layer + "." + m->hf + ".lora_" + suffix + ".weight";
    return {};
}

}  // namespace

std::string plugin_reference_key(const std::string& g, const std::string& arch) {
    HG_CHECK(arch == "phi3" || arch == "qwen2" || arch == "llama", "plugin export: base architecture \"%s\" is not phi3, qwen2 or llama",
             arch.c_str());
    const std::string key = candidate_key(g, arch);
    // the library's forward mapping must give the tensor back, so `healthgpt convert` reads our key as this tensor
    HG_CHECK(!key.empty() && plugin_gguf_name(key) == g,
             "plugin export: tensor %s has no reference key in a %s plugin (not an H-LoRA, projector or fusion tensor)",
             g.c_str(), arch.c_str());
    return key;
}

PluginExportResult export_plugin(const GGUFFile& f, const PluginExportOptions& opt) {
    const char* p = f.path().c_str();
    HG_CHECK(opt.type == DType::F32 || opt.type == DType::BF16 || opt.type == DType::F16,
             "plugin export: type %s is not F32, BF16 or F16", dtype_name(opt.type));
    HG_CHECK(f.get_string(plugin_keys::kGeneralType).value_or("") == "adapter", "%s: not a plugin (general.type is not adapter)", p);
    const std::string arch = f.get_string(plugin_keys::kBaseArchitecture).value_or("");
    HG_CHECK(!opt.hlora_out.empty(), "plugin export: no output path for the H-LoRA file");
    TorchWriter hl(opt.hlora_out.stem().string().empty() ? "archive" : opt.hlora_out.stem().string());
    TorchWriter fu(opt.fusion_out.empty() || opt.fusion_out.stem().string().empty() ? "archive" : opt.fusion_out.stem().string());
    PluginExportResult res;
    for (const GGUFTensorInfo& ti : f.tensors()) {
        const std::string key = plugin_reference_key(ti.name, arch);
        const bool fusion = ti.name == plugin_names::kTokenEmbd || ti.name == plugin_names::kOutput;
        HG_CHECK(!fusion || !opt.fusion_out.empty(),
                 "%s: a generation plugin with fusion rows (%s): give the fusion_layer_weights.bin output path too", p, ti.name.c_str());
        const Tensor t = f.tensor(ti);
        std::vector<float> v(static_cast<size_t>(t.numel()));
        for (int64_t r = 0; r < t.rows(); ++r) dequantize_row(t.type, t.row(r), v.data() + r * t.cols(), t.cols());
        TorchWriter& w = fusion ? fu : hl;
        if (opt.type == DType::F32) {
            w.add(key, DType::F32, ti.shape(), v.data());
        } else {
            std::vector<uint16_t> h(v.size());
            for (size_t i = 0; i < v.size(); ++i) h[i] = opt.type == DType::BF16 ? fp32_to_bf16(v[i]) : fp32_to_fp16(v[i]);
            w.add(key, opt.type, ti.shape(), h.data());
        }
        (fusion ? res.fusion_tensors : res.hlora_tensors)++;
        res.lines.push_back(ti.name + " -> " + key);
    }
    HG_CHECK(res.hlora_tensors > 0, "%s: the plugin holds no H-LoRA or projector tensors", p);
    hl.write(opt.hlora_out);
    if (res.fusion_tensors) fu.write(opt.fusion_out);
    return res;
}

}  // namespace hg
