// Building a Decoder from a model file.
//
// The loader reads llama.cpp's metadata keys and tensor names through a WeightSource
// (model/weight_source.h), so one code path serves a GGUF file (zero-copy views into the
// mmapped file), an in-memory WeightMap (tests, imports) and a llama2.c checkpoint.
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
#include <memory>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "model/weight_source.h"

namespace hg {

// Reads hyper-parameters and binds weight views from `src`; `storage` owns what the views
// point into (the GGUFFile, the WeightMap ...) and is kept alive by the returned decoder.
// Every missing or mis-shaped tensor or key is an hg::Error naming the source and the tensor.
// stop_ids: the file's stop set if the caller read one (a GGUF array); empty = take
// tokenizer.ggml.eos_token_id (+ tokenizer.ggml.eot_token_id) from `src` when present.
std::shared_ptr<const Decoder> load_decoder(const WeightSource& src, std::shared_ptr<const void> storage,
                                            std::vector<int32_t> stop_ids = {});
DecoderHParams read_decoder_hparams(const WeightSource& src);

// A llama2.c checkpoint (run.c's format: 7 int32 header dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size (negative: separate classifier), seq_len; then float32 tensors),
// exposed under llama.cpp's names. Its q/k rows are in Meta's interleaved order, i.e.
// llama.cpp's: no permutation needed. RMSNorm eps 1e-5 and rope theta 10000, as run.c
// hard-codes them.
struct Llama2cCheckpoint {
    std::string path;
    std::vector<uint8_t> bytes;  // the file; the map's tensors are views into it
    WeightMap map;
    WeightSource source() const { return map.source(path); }
};
std::shared_ptr<const Llama2cCheckpoint> read_llama2c(const std::string& path);
std::shared_ptr<const Decoder> load_llama2c(const std::string& path);

}  // namespace hg
