// Storage types of converted tensors, and `healthgpt quantize` (GGUF -> GGUF).
//
// The requested type applies to weight matrices; the rest follows fixed rules (docs/MODELS.md,
// "Quantization"):
//   - 1-D tensors (norms, biases), class and position embeddings, and H-LoRA routers: F32 always.
//   - Convolution kernels (CLIP patch embedding, VQGAN): F32/F16/BF16 as asked; F16 under a block type.
//   - The VQGAN codebook: F32/F16/BF16 as asked; F32 under a block type.
//   - q8_0: every matrix Q8_0.
//   - q4_k: the mix of llama.cpp's Q4_K_M (llama_tensor_get_type): matrices Q4_K, except
//       output.weight (or token_embd.weight when the head is tied)   Q6_K
//       attn_v.weight and ffn_down.weight of the layers i with
//         i < n/8  or  i >= 7n/8  or  (i - n/8) % 3 == 2  ("use_more_bits")  Q6_K
//       attn_qkv.weight (Phi-3/Phi-4's fused q/k/v)                     Q6_K (llama.cpp: Q5_K, a type our
//                                                                        kernels do not have; the next finer)
//   - A matrix whose row length is not a multiple of the block (256 for the K-quants, 32 for Q8_0)
//     falls back like llama.cpp: Q4_K and Q6_K -> Q8_0 (llama.cpp: Q5_0 / Q8_0; we have no Q5_0), and
//     to F16 when the row is not even a multiple of 32.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace hg {

enum class WeightType : uint8_t { Auto, F32, F16, BF16, Q8_0, Q4_K };
const char* weight_type_name(WeightType t);  // "auto", "f32", "f16", "bf16", "q8_0", "q4_k"
std::optional<WeightType> weight_type_from_name(std::string_view s);  // case-insensitive; "q4_k_m" = q4_k
// llama.cpp's general.file_type for a file of this type (ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7,
// MOSTLY_Q4_K_M 15, MOSTLY_BF16 32); Auto: by `source`.
uint32_t gguf_file_type(WeightType t, DType source = DType::F32);

// What a tensor is, for the type rules above.
enum class TensorRole : uint8_t {
    Matrix,     // a weight matrix
    TokenEmbd,  // token_embd.weight (text model, generation plugin)
    Output,     // output.weight, or a tied token_embd.weight
    AttnV,      // blk.N.attn_v.weight
    AttnQKV,    // blk.N.attn_qkv.weight
    FfnDown,    // blk.N.ffn_down.weight
    Small,      // 1-D tensors, class/position embeddings, anything kept F32
    Router,     // H-LoRA router [experts, in]
    LoraA,      // H-LoRA A [r, in]
    LoraB,      // H-LoRA B [out, r]
    Conv,       // a convolution kernel (4-D)
    Codebook,   // VQGAN quantize.embed.weight
};
const char* tensor_role_name(TensorRole r);

struct TypeChoice {
    DType type = DType::F32;
    std::string note;  // why it differs from the plain request ("use_more_bits layer", "fallback: ...")
};

// The storage type of one tensor. `source` is the type it has now (F32/F16/BF16 for checkpoints; any
// type for GGUF inputs); `layer`/`n_layer` place blk.N tensors (-1/0 otherwise); `cols` is the row
// length (last dimension). Auto keeps float sources as they are.
TypeChoice choose_type(WeightType want, DType source, TensorRole role, int layer, int n_layer, int64_t cols);

// The role of a tensor in one of our GGUF files, from general.architecture / general.type and the name.
// `tied_head`: the text model has no output.weight (token_embd is the head).
TensorRole classify_tensor(std::string_view arch, bool adapter, std::string_view name, int n_dims, bool tied_head);

// Converts rows [0, rows) of a tensor with `cols` columns into `type`: read(r, out) writes source row
// r as float32 into out[cols]; the result goes to dst (rows * row_bytes(type, cols) bytes). Work is
// split over the default thread pool in chunks. Refuses non-finite values for block types and values
// beyond the F16 range for F16, naming `what` (the tensor).
void convert_rows(DType type, int64_t rows, int64_t cols, const std::function<void(int64_t, float*)>& read,
                  uint8_t* dst, const std::string& what);

struct QuantizeOptions {
    WeightType type = WeightType::Q8_0;  // Auto is refused here
    bool quantize_lora = true;           // plugins: H-LoRA A/B too (false: they keep their type)
};
struct QuantizeReport {
    std::vector<std::string> lines;      // one per tensor whose type changed, plus totals
    uint64_t in_bytes = 0, out_bytes = 0;
    double seconds = 0;
    int n_tensors = 0, n_changed = 0;
};
// Reads a GGUF (text, vision, plugin or VQGAN file) and writes it with the types of `opt.type`,
// every metadata key copied (general.file_type / quantization_version updated). Atomic write.
QuantizeReport quantize_gguf(const std::filesystem::path& in, const std::filesystem::path& out,
                             const QuantizeOptions& opt);

}  // namespace hg
