// CLIP vision tower forward. Reads like transformers' modeling_clip.py (CLIPVisionEmbeddings,
// CLIPEncoderLayer, CLIPVisionTransformer); every op goes through the kernel table (core/ops.h).
#include "model/clip_vision.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/ops.h"

namespace hg {

std::string clip_names::block(int i, const char* part, const char* kind) {
    return "v.blk." + std::to_string(i) + "." + part + "." + kind;
}

std::optional<std::string> clip_gguf_name(std::string_view key) {
    constexpr std::string_view kPrefix = "vision_model.";
    if (key.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
    std::string_view s = key.substr(kPrefix.size());
    if (s == "embeddings.patch_embedding.weight") return std::string(clip_names::kPatchEmbd);
    if (s == "embeddings.class_embedding") return std::string(clip_names::kClassEmbd);
    if (s == "embeddings.position_embedding.weight") return std::string(clip_names::kPositionEmbd);
    if (s == "pre_layrnorm.weight") return std::string(clip_names::kPreLnWeight);
    if (s == "pre_layrnorm.bias") return std::string(clip_names::kPreLnBias);
    constexpr std::string_view kLayers = "encoder.layers.";
    if (s.substr(0, kLayers.size()) != kLayers) return std::nullopt;
    s.remove_prefix(kLayers.size());
    size_t n = 0;
    while (n < s.size() && n < 5 && s[n] >= '0' && s[n] <= '9') ++n;
    if (n == 0 || n >= 5 || n >= s.size() || s[n] != '.' || (n > 1 && s[0] == '0')) return std::nullopt;
    const int layer = std::stoi(std::string(s.substr(0, n)));
    s.remove_prefix(n + 1);
    static constexpr std::pair<std::string_view, const char*> kParts[] = {
        {"layer_norm1.", "ln1"},         {"layer_norm2.", "ln2"},          {"self_attn.q_proj.", "attn_q"},
        {"self_attn.k_proj.", "attn_k"}, {"self_attn.v_proj.", "attn_v"},  {"self_attn.out_proj.", "attn_out"},
        {"mlp.fc1.", "ffn_up"},          {"mlp.fc2.", "ffn_down"},
    };
    for (const auto& [hf, ours] : kParts) {
        if (s.substr(0, hf.size()) != hf) continue;
        const std::string_view kind = s.substr(hf.size());
        if (kind != "weight" && kind != "bias") return std::nullopt;
        return clip_names::block(layer, ours, std::string(kind).c_str());
    }
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Config and weights

void ClipVisionConfig::validate(const std::string& origin) const {
    const char* o = origin.c_str();
    HG_CHECK(image_size > 0 && patch_size > 0 && image_size >= patch_size,
             "%s: CLIP image size %d / patch size %d are invalid", o, image_size, patch_size);
    HG_CHECK(image_size / patch_size <= 4096, "%s: CLIP image size %d / patch size %d give too many patches", o,
             image_size, patch_size);
    HG_CHECK(num_channels > 0 && num_channels <= 16, "%s: CLIP channel count %d is invalid", o, num_channels);
    HG_CHECK(hidden > 0 && hidden <= 65536 && n_ff > 0 && n_ff <= 1 << 20,
             "%s: CLIP widths (embedding %d, feed-forward %d) are invalid", o, hidden, n_ff);
    HG_CHECK(n_head > 0 && hidden % n_head == 0,
             "%s: CLIP hidden size %d is not a multiple of the head count %d", o, hidden, n_head);
    HG_CHECK(n_layer > 0 && n_layer <= 1024, "%s: CLIP block count %d is invalid", o, n_layer);
    HG_CHECK(eps > 0 && std::isfinite(eps), "%s: CLIP layer-norm epsilon %g is invalid", o, (double)eps);
    // Activations of one image must stay addressable with int64 and reasonably sized (< 4 GiB).
    HG_CHECK((int64_t)n_tokens() * std::max(hidden, n_ff) < (int64_t)1 << 30,
             "%s: CLIP config too large (%d tokens x %d)", o, n_tokens(), std::max(hidden, n_ff));
}

ClipVisionConfig ClipVisionConfig::from_metadata(const WeightSource& src) {
    namespace k = clip_keys;
    if (src.get_string) {
        if (auto arch = src.get_string(k::kArchitecture))
            HG_CHECK(*arch == "clip", "%s: general.architecture is '%s', expected 'clip' (a vision tower file)",
                     src.origin.c_str(), arch->c_str());
    }
    if (src.get_bool) {
        if (auto has = src.get_bool(k::kHasVisionEncoder))
            HG_CHECK(*has, "%s: %s is false: the file has no vision encoder", src.origin.c_str(), k::kHasVisionEncoder);
    }
    auto int_key = [&](const char* key) {
        const int64_t v = require_int(src, key);
        HG_CHECK(v > 0 && v <= (int64_t)1 << 20, "%s: %s = %lld is out of range", src.origin.c_str(), key, (long long)v);
        return static_cast<int>(v);
    };
    ClipVisionConfig c;
    c.image_size = int_key(k::kImageSize);
    c.patch_size = int_key(k::kPatchSize);
    c.hidden = int_key(k::kEmbeddingLength);
    c.n_ff = int_key(k::kFeedForwardLength);
    c.n_layer = int_key(k::kBlockCount);
    c.n_head = int_key(k::kHeadCount);
    c.eps = static_cast<float>(src.get_float ? src.get_float(k::kLayerNormEps).value_or(1e-5) : 1e-5);
    if (src.get_int) c.num_channels = static_cast<int>(src.get_int(k::kNumChannels).value_or(3));
    const bool use_gelu = src.get_bool ? src.get_bool(k::kUseGelu).value_or(false) : false;
    c.act = use_gelu ? ClipActivation::GeluErf : ClipActivation::QuickGelu;
    c.validate(src.origin);
    return c;
}

ClipVision::ClipVision(const ClipVisionConfig& cfg, const WeightSource& src) : cfg_(cfg) {
    namespace n = clip_names;
    cfg_.validate(src.origin);
    const int64_t D = cfg_.hidden, F = cfg_.n_ff, P = cfg_.patch_size, C = cfg_.num_channels;

    // Conv2d(C -> D, kernel = stride = P, no bias): one row of C*P*P weights per output channel,
    // which is exactly a Linear over flattened patches.
    Tensor conv = require_matrix(src, n::kPatchEmbd, {D, C, P, P});
    HG_CHECK(conv.type == DType::F32 || conv.type == DType::F16 || conv.type == DType::BF16,
             "%s: tensor %s has type %s; the patch embedding must be F32, F16 or BF16", src.origin.c_str(),
             n::kPatchEmbd, dtype_name(conv.type));
    patch_w_ = Tensor::view(conv.type, {D, C * P * P}, conv.data);
    class_embd_ = require_f32(src, n::kClassEmbd, {D});
    pos_embd_ = require_f32(src, n::kPositionEmbd, {cfg_.n_tokens(), D});
    pre_ln_w_ = require_f32(src, n::kPreLnWeight, {D});
    pre_ln_b_ = require_f32(src, n::kPreLnBias, {D});

    blocks_.resize(cfg_.n_layer);
    for (int i = 0; i < cfg_.n_layer; ++i) {
        ClipVisionBlock& b = blocks_[i];
        auto vec = [&](const char* part, const char* kind, int64_t len) {
            return require_f32(src, n::block(i, part, kind), {len});
        };
        auto mat = [&](const char* part, int64_t rows, int64_t cols) {
            return require_matrix(src, n::block(i, part, "weight"), {rows, cols});
        };
        b.ln1_w = vec("ln1", "weight", D);
        b.ln1_b = vec("ln1", "bias", D);
        b.q_w = mat("attn_q", D, D);
        b.q_b = vec("attn_q", "bias", D);
        b.k_w = mat("attn_k", D, D);
        b.k_b = vec("attn_k", "bias", D);
        b.v_w = mat("attn_v", D, D);
        b.v_b = vec("attn_v", "bias", D);
        b.o_w = mat("attn_out", D, D);
        b.o_b = vec("attn_out", "bias", D);
        b.ln2_w = vec("ln2", "weight", D);
        b.ln2_b = vec("ln2", "bias", D);
        b.fc1_w = mat("ffn_up", F, D);
        b.fc1_b = vec("ffn_up", "bias", F);
        b.fc2_w = mat("ffn_down", D, F);
        b.fc2_b = vec("ffn_down", "bias", D);
    }
}

ClipVision ClipVision::load(const WeightSource& src) { return ClipVision(ClipVisionConfig::from_metadata(src), src); }

int ClipVision::resolve_layer(int layer) const {
    const int n_states = cfg_.n_layer + 1;  // hidden_states[0..N]
    const int k = layer < 0 ? n_states + layer : layer;
    HG_CHECK(k >= 0 && k < n_states, "vision layer %d is out of range for a %d-block tower (valid: %d..%d)", layer,
             cfg_.n_layer, -n_states, n_states - 1);
    return k;
}

// ---------------------------------------------------------------------------------------------
// Forward

namespace {
// Row-wise and elementwise ops cost little per row but, over 577 rows x 4096 (quick_gelu's exp),
// add up to a noticeable share of an image: split them over the pool in blocks of rows.
template <class Fn>
void for_rows(ThreadPool& pool, int64_t rows, Fn&& fn) {
    pool.parallel_for(rows, [&](int64_t r0, int64_t r1, int) { fn(r0, r1 - r0); }, 16);
}

struct Scratch {
    float* h;     // [T, D] normed input of a sub-block
    float* q;     // [T, D]
    float* k;     // [T, D]
    float* v;     // [T, D]
    float* attn;  // [T, D]
    float* ff;    // [T, F]
};
}  // namespace

// x[T, D] = pre_layrnorm(cat(class_embd, conv(pixels)) + position_embd)
void ClipVision::embed(float* x, const float* pixels, Arena& arena, ThreadPool& pool) const {
    const Kernels& K = kernels();
    const int64_t D = cfg_.hidden, P = cfg_.patch_size, C = cfg_.num_channels, S = cfg_.image_size;
    const int64_t G = cfg_.grid(), NP = cfg_.n_patches(), KP = C * P * P;

    // patches[NP, C*P*P]: patch (gy, gx) in raster order (HF flatten(2)), elements (c, ky, kx)
    // in the order of the conv kernel.
    float* patches = arena.alloc<float>(NP * KP);
    for (int64_t gy = 0; gy < G; ++gy)
        for (int64_t gx = 0; gx < G; ++gx) {
            float* row = patches + (gy * G + gx) * KP;
            for (int64_t c = 0; c < C; ++c)
                for (int64_t ky = 0; ky < P; ++ky)
                    std::memcpy(row + (c * P + ky) * P, pixels + (c * S + gy * P + ky) * S + gx * P, P * sizeof(float));
        }

    // x[0] = class_embd; x[1 + p] = patch_embd(p); then + position_embd
    float* e = arena.alloc<float>(cfg_.n_tokens() * D);
    K.matmul(e + D, patches, patch_w_, nullptr, NP, pool);
    std::memcpy(e, class_embd_.data(), D * sizeof(float));
    K.add(e, e, pos_embd_.data(), cfg_.n_tokens() * D);
    K.layernorm(x, e, pre_ln_w_.data(), pre_ln_b_.data(), cfg_.n_tokens(), D, cfg_.eps);
}

int ClipVision::forward(float* out, const float* pixels, int layer, Arena& arena, ThreadPool& pool) const {
    const Kernels& K = kernels();
    const int64_t T = cfg_.n_tokens(), D = cfg_.hidden, F = cfg_.n_ff;
    const int n_blocks = resolve_layer(layer);

    float* x = arena.alloc<float>(T * D);  // the residual stream
    Scratch s{arena.alloc<float>(T * D), arena.alloc<float>(T * D), arena.alloc<float>(T * D),
              arena.alloc<float>(T * D), arena.alloc<float>(T * D), arena.alloc<float>(T * F)};
    embed(x, pixels, arena, pool);

    AttentionParams ap;
    ap.n_head = cfg_.n_head;
    ap.n_kv_head = cfg_.n_head;
    ap.head_dim = cfg_.head_dim();
    ap.scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim()));
    ap.causal = false;

    auto layernorm = [&](float* y, const float* in, const std::vector<float>& w, const std::vector<float>& b) {
        for_rows(pool, T, [&](int64_t r0, int64_t n) {
            K.layernorm(y + r0 * D, in + r0 * D, w.data(), b.data(), n, D, cfg_.eps);
        });
    };
    auto add_into_x = [&](const float* d) {
        for_rows(pool, T, [&](int64_t r0, int64_t n) { K.add(x + r0 * D, x + r0 * D, d + r0 * D, n * D); });
    };
    auto activation = [&](float* f) {
        for_rows(pool, T, [&](int64_t r0, int64_t n) {
            if (cfg_.act == ClipActivation::QuickGelu)
                K.quick_gelu(f + r0 * F, f + r0 * F, n * F);
            else
                K.gelu_erf(f + r0 * F, f + r0 * F, n * F);
        });
    };

    for (int i = 0; i < n_blocks; ++i) {
        const ClipVisionBlock& b = blocks_[i];
        // x = x + out_proj(MHA(ln1(x)))
        layernorm(s.h, x, b.ln1_w, b.ln1_b);
        K.matmul(s.q, s.h, b.q_w, b.q_b.data(), T, pool);
        K.matmul(s.k, s.h, b.k_w, b.k_b.data(), T, pool);
        K.matmul(s.v, s.h, b.v_w, b.v_b.data(), T, pool);
        K.attention(s.attn, s.q, T, D, s.k, s.v, DType::F32, T, D * sizeof(float), ap, pool);
        K.matmul(s.h, s.attn, b.o_w, b.o_b.data(), T, pool);
        add_into_x(s.h);
        // x = x + fc2(act(fc1(ln2(x))))
        layernorm(s.h, x, b.ln2_w, b.ln2_b);
        K.matmul(s.ff, s.h, b.fc1_w, b.fc1_b.data(), T, pool);
        activation(s.ff);
        K.matmul(s.h, s.ff, b.fc2_w, b.fc2_b.data(), T, pool);
        add_into_x(s.h);
    }

    // select_feature = 'patch': drop the CLS row
    std::memcpy(out, x + D, (T - 1) * D * sizeof(float));
    return n_blocks;
}

std::vector<float> ClipVision::forward(const float* pixels, int layer, ThreadPool& pool) const {
    std::vector<float> out(static_cast<size_t>(cfg_.n_patches()) * cfg_.hidden);
    Arena arena;
    forward(out.data(), pixels, layer, arena, pool);
    return out;
}

}  // namespace hg
