// CLIP vision tower (transformers CLIPVisionModel, v4.41 semantics), as HealthGPT uses it:
// patch embedding (conv, stride = patch, no bias) + class embedding + position embeddings,
// pre_layrnorm, N pre-LN encoder blocks; no post_layernorm, no visual projection.
//
//   hidden_states[0] = pre_layrnorm(embeddings)
//   hidden_states[k] = output of block k (k = 1..N)
//
// forward(pixels, layer) returns hidden_states[layer] without the CLS row ([n_patches, hidden];
// [576, 1024] for ViT-L/14-336) and runs only the blocks that layer needs. `layer` follows
// Python indexing: -1 = block N, -2 = block N-1 (HealthGPT comprehension), 1 = block 1 (generation).
//
// Weights come from a vision GGUF with llama.cpp's CLIP/mmproj names (docs/MODELS.md).
//
// Training: forward_train computes the same output as forward (bit for bit, same kernels) and
// keeps what backward needs with per-block activation checkpointing: the patch matrix, the
// embeddings before pre_layrnorm and each block's input. backward recomputes one block's
// internals from its input (attention through the training kernels, which also give the
// log-sum-exp), backprops it, and moves to the block below. It stops at the lowest block that has
// a trainable weight unless the embeddings or the pixels want a gradient.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"
#include "core/ops.h"
#include "core/ops_backward.h"
#include "core/thread_pool.h"
#include "model/grad_sink.h"
#include "model/weight_source.h"

namespace hg {

// GGUF metadata keys and tensor names of the vision tower (llama.cpp clip-impl.h names).
namespace clip_keys {
inline constexpr const char* kArchitecture = "general.architecture";  // = "clip"
inline constexpr const char* kHasVisionEncoder = "clip.has_vision_encoder";
inline constexpr const char* kHasTextEncoder = "clip.has_text_encoder";
inline constexpr const char* kHasLlavaProjector = "clip.has_llava_projector";
inline constexpr const char* kUseGelu = "clip.use_gelu";  // false: quick_gelu (CLIP), true: exact GELU
inline constexpr const char* kImageSize = "clip.vision.image_size";
inline constexpr const char* kPatchSize = "clip.vision.patch_size";
inline constexpr const char* kEmbeddingLength = "clip.vision.embedding_length";
inline constexpr const char* kFeedForwardLength = "clip.vision.feed_forward_length";
inline constexpr const char* kBlockCount = "clip.vision.block_count";
inline constexpr const char* kHeadCount = "clip.vision.attention.head_count";
inline constexpr const char* kLayerNormEps = "clip.vision.attention.layer_norm_epsilon";
inline constexpr const char* kProjectionDim = "clip.vision.projection_dim";
inline constexpr const char* kImageMean = "clip.vision.image_mean";
inline constexpr const char* kImageStd = "clip.vision.image_std";
inline constexpr const char* kNumChannels = "healthgpt.vision.num_channels";  // optional, default 3
}  // namespace clip_keys

namespace clip_names {
inline constexpr const char* kPatchEmbd = "v.patch_embd.weight";      // [hidden, C, patch, patch]
inline constexpr const char* kClassEmbd = "v.class_embd";             // [hidden]
inline constexpr const char* kPositionEmbd = "v.position_embd.weight";  // [n_patches + 1, hidden]
inline constexpr const char* kPreLnWeight = "v.pre_ln.weight";
inline constexpr const char* kPreLnBias = "v.pre_ln.bias";
// "v.blk.{i}.{ln1,ln2,attn_q,attn_k,attn_v,attn_out,ffn_up,ffn_down}.{weight,bias}"
std::string block(int i, const char* part, const char* kind);
}  // namespace clip_names

// The GGUF name our converter writes for a key of a transformers CLIP checkpoint
// (CLIPModel or CLIPVisionModel: "vision_model.encoder.layers.3.mlp.fc1.weight" ->
// "v.blk.3.ffn_up.weight"), or nullopt for keys the vision tower does not use
// (post_layernorm, visual_projection, the text tower, logit_scale). Table in docs/MODELS.md.
std::optional<std::string> clip_gguf_name(std::string_view hf_key);

enum class ClipActivation { QuickGelu, GeluErf };

struct ClipVisionConfig {
    int image_size = 336;
    int patch_size = 14;
    int num_channels = 3;
    int hidden = 1024;
    int n_head = 16;
    int n_layer = 24;
    int n_ff = 4096;
    float eps = 1e-5f;
    ClipActivation act = ClipActivation::QuickGelu;

    int grid() const { return image_size / patch_size; }
    int n_patches() const { return grid() * grid(); }
    int n_tokens() const { return n_patches() + 1; }  // + CLS
    int head_dim() const { return hidden / n_head; }

    static ClipVisionConfig vit_l14_336() { return {}; }
    // Reads the clip.vision.* keys; throws naming the file and the key when one is missing or invalid.
    static ClipVisionConfig from_metadata(const WeightSource& src);
    void validate(const std::string& origin) const;
};

struct ClipVisionBlock {
    std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;  // [hidden]
    Tensor q_w, k_w, v_w, o_w;                       // [hidden, hidden]
    std::vector<float> q_b, k_b, v_b, o_b;           // [hidden]
    Tensor fc1_w;                                    // [n_ff, hidden]   (ffn_up)
    std::vector<float> fc1_b;                        // [n_ff]
    Tensor fc2_w;                                    // [hidden, n_ff]   (ffn_down)
    std::vector<float> fc2_b;                        // [hidden]
};

// What ClipVision::forward_train keeps for ClipVision::backward (owned buffers, reused across calls).
struct ClipVisionTrainState {
    int n_blocks = 0;                 // blocks the forward ran (resolve_layer(layer))
    std::vector<float> patches;       // [n_patches, C*patch*patch]: the conv as a matmul's input
    std::vector<float> embeddings;    // [n_tokens, hidden]: class/patch embeddings + positions (pre_layrnorm's input)
    std::vector<float> block_inputs;  // [n_blocks, n_tokens, hidden]: x entering block i (x_0 = pre_layrnorm output)
    const Kernels* kernels = nullptr;  // the forward table the pass ran with; backward recomputes with it
};

class ClipVision {
public:
    // Binds every tensor (all N blocks) from `src`, checking names, shapes and types.
    ClipVision(const ClipVisionConfig& cfg, const WeightSource& src);
    // Config from the source's metadata, then the tensors.
    static ClipVision load(const WeightSource& src);

    const ClipVisionConfig& config() const { return cfg_; }

    // Layer index as HF resolves it into hidden_states (0..N); throws when out of range.
    int resolve_layer(int layer) const;

    // out[n_patches, hidden] = hidden_states[layer][1:] for pixels[C, image_size, image_size]
    // (CLIP-normalised, channel-major). Scratch comes from `arena` (not reset here). Runs blocks
    // 1..resolve_layer(layer) only and returns how many it ran.
    int forward(float* out, const float* pixels, int layer, Arena& arena, ThreadPool& pool) const;
    std::vector<float> forward(const float* pixels, int layer, ThreadPool& pool) const;

    // Every tensor the tower binds, by the GGUF name it was bound from (clip_names): the patch
    // conv [hidden, C, patch, patch] and the block matrices are the bound views; class/position
    // embeddings, norms and biases are F32 views of the float32 copies this object holds.
    ParamRefs parameters() const;

    // forward() with what backward needs kept in `state` (see ClipVisionTrainState). `kernels`
    // nullptr = the active table (with it the output equals forward()'s bit for bit). Scratch
    // from `arena` (not reset here). Returns the number of blocks it ran.
    int forward_train(float* out, const float* pixels, int layer, ClipVisionTrainState& state, Arena& arena,
                      ThreadPool& pool, const Kernels* kernels = nullptr) const;

    // Given dout[n_patches, hidden] = d loss / d forward_train's output, ACCUMULATES (+=) the
    // gradient of every weight that `sink` has a buffer for (found by the data pointer of its
    // ParamRef), and of the pixels into dpixels[C, S, S] unless it is nullptr. Runs back only
    // through the blocks the forward ran, and only down to the lowest one that needs it; with
    // nothing trainable and dpixels == nullptr it returns at once. Deterministic: the same result
    // for any thread count. `bk` nullptr = the active backward table (backward_kernels()).
    void backward(const float* dout, const ClipVisionTrainState& state, const GradSink& sink, float* dpixels,
                  Arena& arena, ThreadPool& pool, const BackwardKernels* bk = nullptr) const;

private:
    struct BlockScratch;
    struct BackwardScratch;
    // x[n_tokens, hidden] = pre_layrnorm(e); e from the patch matrix (embed_sum).
    void embed(float* x, const float* pixels, Arena& arena, ThreadPool& pool) const;
    void patchify(float* patches, const float* pixels) const;  // [n_patches, C*P*P]
    void embed_sum(float* e, const float* patches, const Kernels& K, ThreadPool& pool) const;  // e[n_tokens, hidden]
    // x = x + attn(ln1(x)); x = x + mlp(ln2(x)), in place on the residual stream x[n_tokens, hidden].
    void block_forward(float* x, const ClipVisionBlock& b, const BlockScratch& s, const Kernels& K,
                       ThreadPool& pool) const;
    // Gradient of block b given g = d loss / d its output, in place: g becomes d loss / d its input
    // `x_in`. Weight gradients accumulate through `sink`.
    void block_backward(float* g, const float* x_in, const ClipVisionBlock& b, const GradSink& sink,
                        const BackwardScratch& s, ThreadPool& pool, const Kernels& K, const BackwardKernels& BK) const;
    bool block_trainable(const ClipVisionBlock& b, const GradSink& sink) const;
    AttentionParams attention_params() const;

    ClipVisionConfig cfg_;
    Tensor patch_w_;  // [hidden, C*patch*patch]: the conv kernel seen as a matrix
    std::vector<float> class_embd_;  // [hidden]
    std::vector<float> pos_embd_;    // [n_tokens, hidden]
    std::vector<float> pre_ln_w_, pre_ln_b_;
    std::vector<ClipVisionBlock> blocks_;
};

}  // namespace hg
