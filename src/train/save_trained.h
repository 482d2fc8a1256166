// Writing what training changed: a copy of a model file (a plugin GGUF, text.gguf or vision.gguf)
// in which every trained tensor holds its new values and everything else — metadata, frozen
// tensors, their types — is the original, byte for byte. The result loads with `ask`/`generate`
// like the file it replaces; the base is never touched. Written atomically (temporary + rename).
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "train/param_store.h"

namespace hg::train {

struct SaveTrainedOptions {
    DType type = DType::F32;  // the trained tensors' type in the file: F32, F16 or BF16
    std::vector<std::pair<std::string, std::string>> set_strings;  // extra metadata (e.g. provenance)
};

// `src`: the original file; `trained`: parameters named as its tensors (each must exist there with
// the same shape). Throws naming the file and tensor otherwise, before anything is written.
void save_trained_file(const std::filesystem::path& src, const std::vector<const Param*>& trained,
                       const std::filesystem::path& out, const SaveTrainedOptions& opt = {});

}  // namespace hg::train
