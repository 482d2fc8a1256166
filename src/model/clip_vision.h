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
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
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

private:
    void embed(float* x, const float* pixels, Arena& arena, ThreadPool& pool) const;  // x[n_tokens, hidden]
    void block_forward(float* x, const ClipVisionBlock& b, Arena& arena, ThreadPool& pool) const;

    ClipVisionConfig cfg_;
    Tensor patch_w_;  // [hidden, C*patch*patch]: the conv kernel seen as a matrix
    std::vector<float> class_embd_;  // [hidden]
    std::vector<float> pos_embd_;    // [n_tokens, hidden]
    std::vector<float> pre_ln_w_, pre_ln_b_;
    std::vector<ClipVisionBlock> blocks_;
};

}  // namespace hg
