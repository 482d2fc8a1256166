// A new H-LoRA plugin for a model folder, initialised as HealthGPT's training code does
// (healthgpt-reference.md §4.2): on every linear of every decoder layer, lora_route and lora_A
// kaiming_uniform(a=√5) — U(-1/√in, 1/√in) for a [*, in] matrix, as nn.Linear's default —, lora_B
// zeros (so the new plugin starts as the bare base), and a fresh mlp2x_gelu projector with
// nn.Linear's default init (weights and biases U(-1/√in, 1/√in)). Values come from our own seeded
// generator (std::mt19937_64, no standard-library distribution), so a seed gives the same plugin
// on every platform. Written atomically (GGUFWriter::write: temporary file + rename).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

#include "model/hlora.h"

namespace hg::train {

struct PluginInit {
    PluginTask task = PluginTask::Comprehension;
    int64_t rank = 64;       // total rank r (M3-COM: 64, M3-GEN: 256)
    double alpha = 128;      // s = alpha * experts / rank (= 8 for every release)
    int experts = 4;
    int vision_layer = 0;    // 0: the task's default (-2 comprehension, 1 generation)
    uint64_t seed = 1;
    std::string name;        // general.name
};

// Writes `out` for the model folder `folder` (text.gguf gives the linears and their shapes,
// vision.gguf the projector's input width). Throws on a rank not divisible by experts, a model
// without vision.gguf, or an I/O error.
void write_new_plugin(const std::filesystem::path& folder, const std::filesystem::path& out, const PluginInit& init);

}  // namespace hg::train
