// An H-LoRA plugin (our plugin GGUF, model/hlora.h) exported to the reference's files:
//   hlora_out   com_hlora_weights.bin / gen_hlora_weights.bin layout: a torch.save state dict with
//               base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A,B,route}.weight
//               and base_model.model.model.mm_projector.{0,2}.{weight,bias}
//   fusion_out  generation plugins only: fusion_layer_weights.bin with
//               base_model.model.model.embed_tokens.weight and base_model.model.lm_head.weight
// Every key is the inverse of plugin_gguf_name() (checked for each tensor), with the module names
// of the plugin's base architecture (healthgpt.plugin.base_architecture: phi3 fused qkv_proj /
// gate_up_proj, qwen2 / llama separate projections). Written with formats/torch_writer (atomic), so
// `healthgpt convert` reads the files back (train_optim_test.cpp converts them and compares every
// tensor). Element type: F32 (default), or BF16 as the released files hold, or F16; quantized
// plugin tensors are dequantized first. alpha is not stored in the .bin (as in the release): give
// `--alpha` (healthgpt.plugin.alpha of the plugin) when converting back a non-released shape.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/gguf.h"

namespace hg {

struct PluginExportOptions {
    std::filesystem::path hlora_out;   // required
    std::filesystem::path fusion_out;  // required when the plugin has token_embd / output rows
    DType type = DType::F32;           // F32, BF16 or F16
};

struct PluginExportResult {
    size_t hlora_tensors = 0, fusion_tensors = 0;
    std::vector<std::string> lines;    // "blk.0.attn_qkv.hlora_a -> base_model...lora_A.weight"
};

// The reference key of one plugin GGUF tensor for base architecture `arch`; throws (naming the
// tensor) for a tensor that is not part of a plugin of that architecture.
std::string plugin_reference_key(const std::string& gguf_name, const std::string& arch);

PluginExportResult export_plugin(const GGUFFile& plugin, const PluginExportOptions& opt);

}  // namespace hg
