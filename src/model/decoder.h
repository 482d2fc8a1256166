// The text decoder: one implementation for the Phi-3 / Phi-4, Qwen2 / Qwen2.5 and Llama
// families, configured by DecoderHParams. It reads like transformers' modeling_phi3.py /
// modeling_qwen2.py / modeling_llama.py (4.41.2):
//
//   h = embeds                                   [n_tok, n_embd]
//   for each layer:
//     h += o_proj(attention(rope(q), rope(k), v))   q,k,v from one fused qkv_proj (phi3) or
//                                                  three q/k/v projections (+ biases, qwen2)
//     h += down_proj(silu(gate) * up)              gate|up fused (phi3: gate is the first half)
//                                                  or separate gate_proj / up_proj
//   logits = lm_head(norm(h))                    only for the rows asked for
//
// RMSNorm and RoPE are float32 exactly as HF computes them (ops.h). Every linear goes through
// Decoder::linear, the single place where a per-linear adapter (H-LoRA) adds its term, on the
// full output of the fused projections (before the q/k/v split and the gate/up split).
//
// Sliding window (Phi-3 `sliding_window` = W, transformers 4.41.2 eager attention, which is
// the only attention Phi-3 has there): the query at position p attends to keys p-W .. p,
// i.e. W+1 keys (the mask is built by AttentionMaskConverter._make_causal_mask with
// diagonal = past - W - 1). Prefill and cached decode behave the same. See docs/MODELS.md.
//
// Weights are views (usually into a memory-mapped GGUF, kept alive by `storage`); norms and
// biases are copied to float32 at load. A Decoder is immutable after load and can be shared by
// several generators; all per-call state is in the KV view and the Arena passed to forward().
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/arena.h"
#include "core/ops.h"
#include "core/ops_backward.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/grad_sink.h"

namespace hg {

class HLoraPlugin;

enum class DecoderArch { Phi3, Qwen2, Llama };
const char* decoder_arch_name(DecoderArch a);  // "phi3", "qwen2", "llama" (GGUF general.architecture)

struct DecoderHParams {
    DecoderArch arch = DecoderArch::Llama;
    int64_t n_vocab = 0;
    int64_t n_embd = 0;       // hidden_size
    int64_t n_ff = 0;         // intermediate_size
    int64_t n_layer = 0;
    int64_t n_head = 0;
    int64_t n_head_kv = 0;
    int64_t head_dim = 0;
    int64_t n_rot = 0;        // rotated dims per head (= head_dim for every supported model)
    int64_t n_ctx_train = 0;  // max_position_embeddings
    float rms_eps = 1e-5f;
    float rope_theta = 10000.0f;
    // llama.cpp's convention per arch: phi3/qwen2 rotate halves (NEOX), llama rotates
    // interleaved pairs with q/k rows permuted at conversion (docs/MODELS.md).
    RopeMode rope_mode = RopeMode::RotateHalf;
    // HF `sliding_window` (0 = none): the query at p sees keys p-W .. p (W+1 keys).
    int64_t sliding_window = 0;
    // Precision of RoPE's inv_freq. F32 is what transformers computes. HealthGPT's scripts call
    // model.to(FP16 | BF16) after loading, which also rounds the inv_freq buffer; F16 / BF16
    // reproduce that (GGUF key healthgpt.rope.inv_freq_type = "f16" | "bf16"; docs/MODELS.md).
    DType rope_inv_freq_type = DType::F32;

    int64_t q_dim() const { return n_head * head_dim; }
    int64_t kv_dim() const { return n_head_kv * head_dim; }
    std::string describe() const;  // one line for logs and `info`
};

// The linears of one layer. The names are llama.cpp's tensor names, which adapter files
// (H-LoRA plugins: blk.N.<name>.hlora_a ...) use too. Phi-3's fused gate|up is "ffn_up".
enum class LinearKind { AttnQKV, AttnQ, AttnK, AttnV, AttnOutput, FfnGateUp, FfnGate, FfnUp, FfnDown };
const char* linear_kind_name(LinearKind k);  // "attn_qkv", ..., FfnGateUp -> "ffn_up"

// y[M, out] = x[M, in] · Wᵀ + bias
struct Linear {
    Tensor weight;              // [out, in], any dtype matmul supports
    std::vector<float> bias;    // [out] or empty
    bool present() const { return weight.data != nullptr; }
    int64_t n_out() const { return weight.rows(); }
    int64_t n_in() const { return weight.cols(); }
};

// A per-linear add-on (H-LoRA): called right after the base matmul with the same input and
// adds its term into y. Implementations must not keep pointers into arena memory.
class LinearAdapter {
public:
    virtual ~LinearAdapter() = default;
    // y[M, n_out] += f(x[M, n_in]); scratch may come from `arena` (freed after the forward).
    // `k` is the kernel table the forward runs with.
    virtual void apply(float* y, const float* x, int64_t M, Arena& arena, ThreadPool& pool,
                       const Kernels& k) const = 0;
    // Training: given the same x and the gradient dy of y, dx[M, n_in] += the gradient through
    // the adapter (dx may be nullptr) and the adapter's own weight gradients go to `sink`.
    // The default refuses: an adapter without a backward cannot take part in training.
    virtual void backward(float* dx, const float* dy, const float* x, int64_t M, const GradSink* sink,
                          ThreadPool& pool, const Kernels& k, const BackwardKernels& bk) const;
    // Every trainable tensor of this adapter, by its GGUF name (default: none).
    virtual ParamRefs parameters() const { return {}; }
};

// The adapters of one request (e.g. one H-LoRA plugin): nullptr where a linear has none.
class AdapterSet {
public:
    virtual ~AdapterSet() = default;
    virtual const LinearAdapter* find(int64_t layer, LinearKind kind) const = 0;
};

struct DecoderLayer {
    std::vector<float> attn_norm;  // input_layernorm [n_embd]
    Linear qkv;                    // fused [(n_head + 2 n_head_kv) head_dim, n_embd]   (phi3)
    Linear q, k, v;                // or separate (qwen2 with biases, llama)
    Linear o;                      // [n_embd, n_head head_dim]
    std::vector<float> ffn_norm;   // post_attention_layernorm [n_embd]
    Linear gate_up;                // fused [2 n_ff, n_embd], gate = rows [0, n_ff)  (phi3)
    Linear gate, up;               // or separate [n_ff, n_embd]
    Linear down;                   // [n_embd, n_ff]

    // Every linear slot with its kind, in LinearKind order (absent ones have !present()).
    std::array<std::pair<LinearKind, const Linear*>, 9> linears() const {
        return {{{LinearKind::AttnQKV, &qkv}, {LinearKind::AttnQ, &q}, {LinearKind::AttnK, &k},
                 {LinearKind::AttnV, &v}, {LinearKind::AttnOutput, &o}, {LinearKind::FfnGateUp, &gate_up},
                 {LinearKind::FfnGate, &gate}, {LinearKind::FfnUp, &up}, {LinearKind::FfnDown, &down}}};
    }
};

struct DecoderWeights {
    Tensor token_embd;                 // [n_vocab, n_embd] (with a shared tail: [shared_from, n_embd])
    std::vector<DecoderLayer> layers;
    std::vector<float> output_norm;    // [n_embd]
    Tensor output;                     // [n_vocab, n_embd]; = token_embd when tied (same rows as token_embd)
    // HealthGPT's vocabulary extension (with_mean_rows): ids [shared_from, n_vocab) all embed as
    // shared_embd and all score shared_output, so the 8,195 identical rows are never materialised.
    // -1: none (every id has its own row in token_embd / output).
    int64_t shared_from = -1;
    std::vector<float> shared_embd, shared_output;  // [n_embd] each
};

// Where forward() reads and writes keys and values (owned by runtime/KVCache): per layer, one
// row of kv_dim elements of `type` (F32 or F16) per position; rows [0, n_past) are filled.
struct KVView {
    DType type = DType::F16;
    int64_t n_past = 0;
    int64_t capacity = 0;
    size_t row_bytes = 0;
    uint8_t* const* k = nullptr;  // [n_layer] base pointers
    uint8_t* const* v = nullptr;
};

enum class LogitRows { None, Last, All };

// What Decoder::forward_train keeps for the backward: activation checkpointing per block, so only
// each block's input is stored ([n_layer + 1, n_tok, n_embd]; the last slice is the final hidden
// state before the output norm). The backward recomputes one block's internals at a time.
struct DecoderBlockActs;  // one block's internals (decoder.cpp)
struct DecoderTape {
    int64_t n_tok = 0;
    std::vector<float> block_in;
    // Per block, its internals when forward_train kept them (ForwardOptions::keep_activation_bytes):
    // the backward then reads them instead of recomputing the block. Null: checkpointed.
    std::vector<std::shared_ptr<const DecoderBlockActs>> kept;
    const float* hidden(int64_t n_embd) const { return block_in.data() + (block_in.size() - (size_t)(n_tok * n_embd)); }
};

struct ForwardOptions {
    ThreadPool* pool = nullptr;          // default_pool()
    const Kernels* kernels = nullptr;    // kernels() (tests pin the scalar reference)
    const AdapterSet* adapters = nullptr;
    // forward_train: keep the internals of as many blocks (from the first) as fit in this many
    // bytes, so the backward skips recomputing them (one forward less per kept block, the same
    // numbers bit for bit); 0 = checkpoint every block (only the block inputs are kept).
    size_t keep_activation_bytes = 0;
};

class Decoder {
public:
    Decoder(DecoderHParams hp, DecoderWeights w, std::shared_ptr<const void> storage, std::string source,
            std::vector<int32_t> stop_ids = {});

    // A text-model GGUF (llama.cpp names; general.architecture phi3 | qwen2 | llama).
    // Implemented in decoder_loader.cpp.
    static std::shared_ptr<const Decoder> load(const std::string& gguf_path);

    const DecoderHParams& hparams() const { return hp_; }
    const DecoderWeights& weights() const { return w_; }
    const std::string& source() const { return source_; }  // file it came from, for messages
    // End-of-generation ids stated by the file: healthgpt.stop_token_ids, else
    // tokenizer.ggml.eos_token_id (+ eot_token_id); empty if it states none.
    const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

    // out[n, n_embd] = embedding rows of ids (throws on an id outside the table).
    void embed(std::span<const int32_t> ids, float* out) const;

    // Runs n_tok rows of input embeddings at positions kv.n_past .. kv.n_past + n_tok - 1,
    // writing their keys/values into kv rows of the same positions (the caller advances
    // n_past). logits: [1 or n_tok, n_vocab] for LogitRows::Last / All. Scratch comes from
    // `arena`, which is reset on entry and before returning (keep nothing in it across calls).
    void forward(const float* embeds, int64_t n_tok, const KVView& kv, LogitRows rows, float* logits, Arena& arena,
                 const ForwardOptions& opt = {}) const;

    // ---- Training (backward beside forward) ----
    // Every parameter of the decoder by its GGUF name (llama.cpp names): token_embd, the layers'
    // linears, biases and norms, output_norm, output (not repeated when tied), the shared rows.
    ParamRefs parameters() const;

    // Forward over one whole training sequence at positions 0 .. n_tok-1 (no KV cache; keys and
    // values in float32), keeping the block inputs in `tape`. Same arithmetic as forward() except
    // attention, which is the training kernel (ops_backward.h) returning its log-sum-exp.
    void forward_train(const float* embeds, int64_t n_tok, DecoderTape& tape, const ForwardOptions& opt = {}) const;

    // Next-token cross-entropy on the rows that have a target: targets[t] is the id position t
    // must predict (already shifted; -100 = no loss at t). Only those rows get the output norm and
    // head. Returns the summed loss (double) and the number of target rows in *n_valid;
    // dhidden[n_tok, n_embd] is OVERWRITTEN with grad_scale · d(sum loss)/d(hidden) (zero on rows
    // without a target); the head's and output norm's gradients accumulate into `sink`.
    double loss_backward(const DecoderTape& tape, const int32_t* targets, float grad_scale, float* dhidden,
                         const GradSink* sink, int64_t* n_valid, const ForwardOptions& opt = {}) const;

    // Backward of forward_train: from dhidden[n_tok, n_embd] (the gradient of the final hidden
    // state) to dembeds[n_tok, n_embd] (accumulated; nullptr = not wanted), with every weight
    // gradient that `sink` has a buffer for (and the adapters' through opt.adapters).
    void backward(const float* dhidden, const DecoderTape& tape, float* dembeds, const GradSink* sink,
                  const ForwardOptions& opt = {}) const;

    // Backward of embed(): dembeds rows go to the token_embd gradient (or the shared row's).
    void embed_backward(std::span<const int32_t> ids, const float* dembeds, const GradSink* sink) const;

private:
    void linear(float* y, const float* x, int64_t M, const Linear& L, int64_t layer, LinearKind kind,
                Arena& arena, ThreadPool& pool, const Kernels& K, const AdapterSet* adapters) const;
    void linear_backward(float* dx, const float* dy, const float* x, int64_t M, const Linear& L, int64_t layer,
                         LinearKind kind, const GradSink* sink, ThreadPool& pool, const Kernels& K,
                         const BackwardKernels& BK, const AdapterSet* adapters) const;
    using BlockActs = DecoderBlockActs;
    void block_train(int64_t l, const float* x_in, float* x_out, int64_t n_tok, BlockActs& a, Arena& arena,
                     ThreadPool& pool, const Kernels& K, const BackwardKernels& BK,
                     const AdapterSet* adapters) const;

    DecoderHParams hp_;
    DecoderWeights w_;
    std::shared_ptr<const void> storage_;  // keeps mapped weights alive
    std::string source_;
    std::vector<int32_t> stop_ids_;
};

// The adapters of an H-LoRA plugin (model/hlora.h) bound to this decoder's linears: each is
// checked against its linear's shape (HLoraWeights::check_fits), and a plugin that wraps a
// linear this decoder does not have (a qwen2 plugin on a phi3 base, a layer past the last) is
// refused. The plugin must outlive the returned set.
std::unique_ptr<AdapterSet> hlora_adapters(const HLoraPlugin& plugin, const Decoder& decoder);

// The same decoder with another embedding table and head, e.g. a generation plugin's fusion
// rows ([40206, 3072] for M3-GEN) over the base's layers. Shapes must be [V', n_embd]; `keep`
// owns their memory. The layers are shared with `base` (kept alive too).
std::shared_ptr<const Decoder> with_vocabulary(std::shared_ptr<const Decoder> base, const Tensor& token_embd,
                                               const Tensor& output, std::shared_ptr<const void> keep);

// HealthGPT's add_special_tokens_and_resize_model on the model side (healthgpt-reference.md §5.2):
// the embedding and the head become n_keep + n_new rows, rows [n_keep, n_keep + n_new) set to the
// mean of rows 0 .. n_keep-1 of each (in double from the stored weights, used as float32). Base rows
// from n_keep on are dropped (Phi-3's 32011..32063 padding rows are overwritten in the reference).
// The new rows are identical, so they are kept as one row each: embed() copies it, forward()
// computes its logit once per position and fills the n_new columns (greedy argmax then picks the
// lowest of tied ids, as torch.argmax). The layers are shared with `base` (kept alive).
std::shared_ptr<const Decoder> with_mean_rows(std::shared_ptr<const Decoder> base, int64_t n_keep, int64_t n_new);

}  // namespace hg
