// `healthgpt inspect`: describes a model file without loading or executing anything.
// GGUF (like gguf-dump), safetensors files, Hugging Face folders (config.json + safetensors
// shards, with or without model.safetensors.index.json, or pytorch_model*.bin), and PyTorch
// .bin/.pt/.ckpt checkpoints (zip or legacy; Lightning checkpoints included: their objects of
// unknown classes are listed, never constructed).
#pragma once
#include <filesystem>
#include <string>

namespace hg {

struct InspectOptions {
    bool json = false;             // machine-readable output (one JSON document)
    size_t max_array_items = 8;    // longer arrays are abbreviated, with their count
    bool all_tensors = false;      // torch checkpoints: also tensors outside the state dict
};

// Returns the description; throws hg::Error for unreadable or malformed inputs.
std::string inspect(const std::filesystem::path& path, const InspectOptions& opt = {});

// What a file looks like from its first bytes (and name): "gguf", "safetensors", "torch-zip",
// "torch-legacy", "hf-folder", "safetensors-index", or "" when unknown.
std::string detect_format(const std::filesystem::path& path);

}  // namespace hg
