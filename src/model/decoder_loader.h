// Building a Decoder from a model file.
//
// The loader reads llama.cpp's metadata keys and tensor names through TensorSource, so one
// code path serves a GGUF file (GGUFSource, zero-copy views into the mmapped file), an
// in-memory model (MemorySource: tests, imports) and a llama2.c checkpoint (load_llama2c).
//
// Metadata (ARCH = general.architecture: phi3 | qwen2 | llama):
//   ARCH.embedding_length, .block_count, .feed_forward_length, .attention.head_count   required
//   ARCH.attention.head_count_kv (= head_count), .attention.key_length (= n_embd / n_head),
//   ARCH.rope.dimension_count (= head dim), .rope.freq_base (= 10000), .context_length,
//   ARCH.attention.layer_norm_rms_epsilon (required), phi3: ARCH.attention.sliding_window
//   (0 or absent = none). Rope scaling (Phi-3 128k "longrope") is refused with a clear error.
// Tensors: token_embd, output_norm, output (absent = tied to token_embd), and per layer
//   blk.N.attn_norm, blk.N.attn_qkv | blk.N.attn_{q,k,v}(.bias), blk.N.attn_output,
//   blk.N.ffn_norm, blk.N.ffn_gate + blk.N.ffn_up | blk.N.ffn_up fused [2 n_ff, n_embd]
//   (gate first), blk.N.ffn_down — all with the ".weight" / ".bias" suffixes.
// RoPE convention per arch (llama.cpp's): phi3/qwen2 rotate halves with the HF row order;
// llama rotates interleaved pairs, its q/k rows permuted as llama.cpp's converter does.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/decoder.h"

namespace hg {

class TensorSource {
public:
    virtual ~TensorSource() = default;
    virtual const std::string& name() const = 0;  // the file, for error messages
    virtual std::optional<Tensor> tensor(std::string_view name) const = 0;
    virtual std::optional<std::string> get_string(std::string_view key) const = 0;
    virtual std::optional<int64_t> get_int(std::string_view key) const = 0;
    virtual std::optional<double> get_float(std::string_view key) const = 0;
};

// Tensors and metadata held in memory. Tensor data is copied unless added with
// add_tensor_view (then the caller keeps it alive, e.g. through keep_alive()).
class MemorySource : public TensorSource {
public:
    explicit MemorySource(std::string name) : name_(std::move(name)) {}

    void set_string(std::string key, std::string v) { strings_[std::move(key)] = std::move(v); }
    void set_int(std::string key, int64_t v) { ints_[std::move(key)] = v; }
    void set_float(std::string key, double v) { floats_[std::move(key)] = v; }
    // shape in PyTorch order; data holds rows * row_bytes(type, shape.back()) bytes.
    void add_tensor(const std::string& name, DType type, std::initializer_list<int64_t> shape, const void* data);
    void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape, const void* data);
    void add_tensor_view(const std::string& name, const Tensor& t) { tensors_[name] = t; }
    void keep_alive(std::shared_ptr<const void> p) { keep_.push_back(std::move(p)); }

    const std::string& name() const override { return name_; }
    std::optional<Tensor> tensor(std::string_view name) const override;
    std::optional<std::string> get_string(std::string_view key) const override;
    std::optional<int64_t> get_int(std::string_view key) const override;
    std::optional<double> get_float(std::string_view key) const override;

private:
    std::string name_;
    std::map<std::string, std::string, std::less<>> strings_;
    std::map<std::string, int64_t, std::less<>> ints_;
    std::map<std::string, double, std::less<>> floats_;
    std::map<std::string, Tensor, std::less<>> tensors_;
    std::vector<std::shared_ptr<std::vector<uint8_t>>> owned_;
    std::vector<std::shared_ptr<const void>> keep_;
};

// Reads hyper-parameters and weight views from `src` (kept alive by the returned decoder).
// Every missing or mis-shaped tensor or key is an hg::Error naming the source and the tensor.
std::shared_ptr<const Decoder> load_decoder(std::shared_ptr<const TensorSource> src);
DecoderHParams read_decoder_hparams(const TensorSource& src);

// A llama2.c checkpoint (run.c's format: 7 int32 header dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size (negative: separate classifier), seq_len; then float32 tensors).
// Its q/k rows are in Meta's interleaved order, i.e. llama.cpp's: no permutation needed.
// RMSNorm eps 1e-5 and rope theta 10000, as run.c hard-codes them.
std::shared_ptr<MemorySource> read_llama2c(const std::string& path);
std::shared_ptr<const Decoder> load_llama2c(const std::string& path);

}  // namespace hg
