// Pieces the converters share: opening checkpoints of every format by tensor name, accounting for
// every source key (mapped / ignored by design / unknown / missing), and adding tensors to a plan
// that are produced from the mapped source while the file is written.
#pragma once
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convert/convert.h"
#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "formats/torch_checkpoint.h"
#include "text/vocab.h"

namespace hg::conv {

// The tensors of one checkpoint, by name, whatever the format.
class SourceTensors {
public:
    // A Hugging Face model folder (model.safetensors, model.safetensors.index.json + shards,
    // pytorch_model.bin, pytorch_model.bin.index.json + shards), a safetensors file or index, or a
    // torch.save file (.bin/.pt/.pth, zip or legacy). Torch files are read in StateDict mode (strict
    // unpickler: any global beyond what torch.save writes for tensors is refused).
    static std::shared_ptr<SourceTensors> open(const std::filesystem::path& p);
    // A torch.save file in a given mode (Lightning: the tensors of root["state_dict"]).
    static std::shared_ptr<SourceTensors> open_torch(const std::filesystem::path& file, TorchLoadMode mode);

    const std::vector<const CkptTensor*>& tensors() const { return list_; }
    const CkptTensor* find(std::string_view name) const;
    const std::filesystem::path& origin() const { return origin_; }
    const std::string& describe() const { return describe_; }  // "model.safetensors.index.json: 2 shards"
    const std::vector<std::string>& notes() const { return notes_; }

private:
    void add(const CkptTensor* t, const std::string& file);
    std::filesystem::path origin_;
    std::string describe_;
    std::vector<std::string> notes_;
    std::vector<std::unique_ptr<SafetensorsModel>> st_;
    std::vector<std::unique_ptr<TorchCheckpoint>> torch_;
    std::vector<const CkptTensor*> list_;
    std::map<std::string, const CkptTensor*, std::less<>> by_name_;
};

// Where every key of a source went. finish() refuses missing tensors, wrong shapes and (unless
// allowed) unknown keys, with the keys listed; it appends a summary to the plan's report.
struct KeyLedger {
    std::string origin;
    size_t mapped = 0;
    std::map<std::string, std::vector<std::string>> ignored;  // reason -> keys (ignored by design)
    std::vector<std::string> unknown;
    std::vector<std::string> missing;
    std::vector<std::string> bad;  // shape / type problems, one message each

    void finish(bool allow_unknown, std::vector<std::string>& report) const;
};

// "a, b, c and 12 more"
std::string list_some(const std::vector<std::string>& items, size_t n = 6);
std::string shape_str(const std::vector<int64_t>& shape);

// A JSON file (config.json, generation_config.json, ...): parse errors name the file. At most 64 MB.
nlohmann::json read_json(const std::filesystem::path& p);

// The DType a checkpoint element type converts from (F32/F16/BF16/F64 -> itself or F32); throws for
// integer and boolean tensors, naming `what`.
DType float_source_type(const CkptTensor& t, const std::string& what);

// Adds `name` to the plan: `src` stored as `type`, reshaped to `shape` (same element count), rows
// optionally permuted (output row r = source row row_of(r)). Bytes are produced while writing; a
// contiguous source whose type is already `type` is written straight from the mapped file.
void add_tensor(ConvertPlan& plan, const std::string& name, const CkptTensor& src, const std::vector<int64_t>& shape,
                const TypeChoice& type, const std::function<int64_t(int64_t)>& row_of = {});

// The tokenizer.ggml.* arrays (+ healthgpt.tokenizer.hf_config) of `vocab`, the token list padded
// with "[PAD{id}]" (type unused) to `n_rows` (the embedding's rows). Throws for a vocabulary GGUF
// cannot describe, naming it and why.
text::GGUFTokenizerArrays tokenizer_arrays(const text::Vocab& vocab, int64_t n_rows,
                                           const std::optional<std::string>& hf_config);
void write_tokenizer_arrays(GGUFWriter& w, const text::GGUFTokenizerArrays& g);
// The tokenizer of a Hugging Face folder (tokenizer.model when present, else tokenizer.json, with
// tokenizer_config.json) into `w`, checked by reading it back; returns a one-line description.
std::string add_tokenizer(GGUFWriter& w, const std::filesystem::path& hf_dir, int64_t n_rows);

// The common metadata of every file we write.
void add_general(GGUFWriter& w, const std::string& arch, const std::string& name);
// general.file_type (llama.cpp's LLAMA_FTYPE number), and general.quantization_version = 2 when
// the plan stores any block-quantized tensor (as gguf-py's writers do).
void set_file_type(ConvertPlan& plan, uint32_t file_type);

}  // namespace hg::conv
