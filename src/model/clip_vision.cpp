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
}  // namespace

struct ClipVision::BlockScratch {
    float* h;     // [T, D] normed input of a sub-block
    float* q;     // [T, D]
    float* k;     // [T, D]
    float* v;     // [T, D]
    float* attn;  // [T, D]
    float* ff;    // [T, F]
};

AttentionParams ClipVision::attention_params() const {
    AttentionParams ap;
    ap.n_head = cfg_.n_head;
    ap.n_kv_head = cfg_.n_head;
    ap.head_dim = cfg_.head_dim();
    ap.scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim()));
    ap.causal = false;
    return ap;
}

// patches[NP, C*P*P]: patch (gy, gx) in raster order (HF flatten(2)), elements (c, ky, kx) in the
// order of the conv kernel (the same layout as ops_backward.h im2patch).
void ClipVision::patchify(float* patches, const float* pixels) const {
    const int64_t P = cfg_.patch_size, C = cfg_.num_channels, S = cfg_.image_size;
    const int64_t G = cfg_.grid(), KP = C * P * P;
    for (int64_t gy = 0; gy < G; ++gy)
        for (int64_t gx = 0; gx < G; ++gx) {
            float* row = patches + (gy * G + gx) * KP;
            for (int64_t c = 0; c < C; ++c)
                for (int64_t ky = 0; ky < P; ++ky)
                    std::memcpy(row + (c * P + ky) * P, pixels + (c * S + gy * P + ky) * S + gx * P, P * sizeof(float));
        }
}

// e[T, D] = cat(class_embd, patches · patch_wᵀ) + position_embd
void ClipVision::embed_sum(float* e, const float* patches, const Kernels& K, ThreadPool& pool) const {
    const int64_t D = cfg_.hidden;
    K.matmul(e + D, patches, patch_w_, nullptr, cfg_.n_patches(), pool);
    std::memcpy(e, class_embd_.data(), D * sizeof(float));
    K.add(e, e, pos_embd_.data(), cfg_.n_tokens() * D);
}

// x[T, D] = pre_layrnorm(cat(class_embd, conv(pixels)) + position_embd)
void ClipVision::embed(float* x, const float* pixels, Arena& arena, ThreadPool& pool) const {
    const Kernels& K = kernels();
    const int64_t D = cfg_.hidden, P = cfg_.patch_size, C = cfg_.num_channels;
    float* patches = arena.alloc<float>(cfg_.n_patches() * C * P * P);
    patchify(patches, pixels);
    float* e = arena.alloc<float>(cfg_.n_tokens() * D);
    embed_sum(e, patches, K, pool);
    K.layernorm(x, e, pre_ln_w_.data(), pre_ln_b_.data(), cfg_.n_tokens(), D, cfg_.eps);
}

void ClipVision::block_forward(float* x, const ClipVisionBlock& b, const BlockScratch& s, const Kernels& K,
                               ThreadPool& pool) const {
    const int64_t T = cfg_.n_tokens(), D = cfg_.hidden, F = cfg_.n_ff;
    const AttentionParams ap = attention_params();
    auto layernorm = [&](float* y, const float* in, const std::vector<float>& w, const std::vector<float>& bias) {
        for_rows(pool, T, [&](int64_t r0, int64_t n) {
            K.layernorm(y + r0 * D, in + r0 * D, w.data(), bias.data(), n, D, cfg_.eps);
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

int ClipVision::forward(float* out, const float* pixels, int layer, Arena& arena, ThreadPool& pool) const {
    const int64_t T = cfg_.n_tokens(), D = cfg_.hidden, F = cfg_.n_ff;
    const int n_blocks = resolve_layer(layer);

    float* x = arena.alloc<float>(T * D);  // the residual stream
    const BlockScratch s{arena.alloc<float>(T * D), arena.alloc<float>(T * D), arena.alloc<float>(T * D),
                         arena.alloc<float>(T * D), arena.alloc<float>(T * D), arena.alloc<float>(T * F)};
    embed(x, pixels, arena, pool);
    for (int i = 0; i < n_blocks; ++i) block_forward(x, blocks_[i], s, kernels(), pool);

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

// ---------------------------------------------------------------------------------------------
// Training

ParamRefs ClipVision::parameters() const {
    namespace n = clip_names;
    const int64_t D = cfg_.hidden, F = cfg_.n_ff, P = cfg_.patch_size, C = cfg_.num_channels;
    ParamRefs r;
    // The float32 copies are the memory the forward reads; the trainer writes updates into it.
    auto vec = [&](std::string name, const std::vector<float>& v, std::initializer_list<int64_t> shape) {
        r.push_back({std::move(name), Tensor::view(DType::F32, shape, const_cast<float*>(v.data()))});
    };
    r.push_back({n::kPatchEmbd, Tensor::view(patch_w_.type, {D, C, P, P}, patch_w_.data)});
    vec(n::kClassEmbd, class_embd_, {D});
    vec(n::kPositionEmbd, pos_embd_, {cfg_.n_tokens(), D});
    vec(n::kPreLnWeight, pre_ln_w_, {D});
    vec(n::kPreLnBias, pre_ln_b_, {D});
    for (int i = 0; i < cfg_.n_layer; ++i) {
        const ClipVisionBlock& b = blocks_[i];
        auto mat = [&](const char* part, const Tensor& w) { r.push_back({n::block(i, part, "weight"), w}); };
        auto bias = [&](const char* part, const std::vector<float>& v, int64_t len) {
            vec(n::block(i, part, "bias"), v, {len});
        };
        vec(n::block(i, "ln1", "weight"), b.ln1_w, {D});
        bias("ln1", b.ln1_b, D);
        mat("attn_q", b.q_w);
        bias("attn_q", b.q_b, D);
        mat("attn_k", b.k_w);
        bias("attn_k", b.k_b, D);
        mat("attn_v", b.v_w);
        bias("attn_v", b.v_b, D);
        mat("attn_out", b.o_w);
        bias("attn_out", b.o_b, D);
        vec(n::block(i, "ln2", "weight"), b.ln2_w, {D});
        bias("ln2", b.ln2_b, D);
        mat("ffn_up", b.fc1_w);
        bias("ffn_up", b.fc1_b, F);
        mat("ffn_down", b.fc2_w);
        bias("ffn_down", b.fc2_b, D);
    }
    return r;
}

int ClipVision::forward_train(float* out, const float* pixels, int layer, ClipVisionTrainState& state, Arena& arena,
                              ThreadPool& pool, const Kernels* kernels_in) const {
    const Kernels& K = kernels_in ? *kernels_in : kernels();
    const int64_t T = cfg_.n_tokens(), D = cfg_.hidden, F = cfg_.n_ff;
    const int64_t KP = (int64_t)cfg_.num_channels * cfg_.patch_size * cfg_.patch_size;
    const int n_blocks = resolve_layer(layer);
    state.n_blocks = n_blocks;
    state.kernels = &K;
    state.patches.resize(static_cast<size_t>(cfg_.n_patches() * KP));
    state.embeddings.resize(static_cast<size_t>(T * D));
    state.block_inputs.resize(static_cast<size_t>(n_blocks * T * D));

    // The same ops in the same order as forward(): embed, then the blocks on the residual stream.
    patchify(state.patches.data(), pixels);
    embed_sum(state.embeddings.data(), state.patches.data(), K, pool);
    float* x = arena.alloc<float>(T * D);
    K.layernorm(x, state.embeddings.data(), pre_ln_w_.data(), pre_ln_b_.data(), T, D, cfg_.eps);
    const BlockScratch s{arena.alloc<float>(T * D), arena.alloc<float>(T * D), arena.alloc<float>(T * D),
                         arena.alloc<float>(T * D), arena.alloc<float>(T * D), arena.alloc<float>(T * F)};
    for (int i = 0; i < n_blocks; ++i) {
        std::memcpy(state.block_inputs.data() + i * T * D, x, T * D * sizeof(float));  // the checkpoint
        block_forward(x, blocks_[i], s, K, pool);
    }
    std::memcpy(out, x + D, (T - 1) * D * sizeof(float));
    return n_blocks;
}

// The backward's buffers, allocated once per backward() and reused by every block.
struct ClipVision::BackwardScratch {
    // recomputed forward values of one block
    float* h1;     // [T, D] ln1(x_in)
    float* q;      // [T, D]
    float* k;      // [T, D]
    float* v;      // [T, D]
    float* attn;   // [T, D] attention output (out_proj's input)
    float* lse;    // [n_head, T]
    float* x_mid;  // [T, D] x_in + attention branch (ln2's input)
    float* h2;     // [T, D] ln2(x_mid)
    float* f;      // [T, F] fc1 output before the activation
    float* a;      // [T, F] act(f) (fc2's input)
    // gradients
    float* dh;     // [T, D] d h2, then d h1
    float* dattn;  // [T, D]
    float* dq;     // [T, D]
    float* dk;     // [T, D]
    float* dv;     // [T, D]
    float* da;     // [T, F]
    float* df;     // [T, F]
};

bool ClipVision::block_trainable(const ClipVisionBlock& b, const GradSink& sink) const {
    for (const Tensor* w : {&b.q_w, &b.k_w, &b.v_w, &b.o_w, &b.fc1_w, &b.fc2_w})
        if (sink.find(w->data)) return true;
    for (const std::vector<float>* v : {&b.ln1_w, &b.ln1_b, &b.ln2_w, &b.ln2_b, &b.q_b, &b.k_b, &b.v_b, &b.o_b,
                                        &b.fc1_b, &b.fc2_b})
        if (sink.find(v->data())) return true;
    return false;
}

void ClipVision::block_backward(float* g, const float* x_in, const ClipVisionBlock& b, const GradSink& sink,
                                const BackwardScratch& s, ThreadPool& pool, const Kernels& K,
                                const BackwardKernels& BK) const {
    const int64_t T = cfg_.n_tokens(), D = cfg_.hidden, F = cfg_.n_ff;
    const AttentionParams ap = attention_params();
    auto grad = [&](const Tensor& w) { return sink.find(w.data); };
    auto grad_v = [&](const std::vector<float>& v) { return sink.find(v.data()); };
    auto zero = [](float* p, int64_t n) { std::memset(p, 0, n * sizeof(float)); };
    // dW += dyᵀ·x, db += Σ dy for y[T, N] = x[T, Kd]·Wᵀ + b; skipped when both are frozen.
    auto weight_grads = [&](const Tensor& w, const std::vector<float>& bias, const float* dy, const float* x) {
        float* dw = grad(w);
        float* db = grad_v(bias);
        if (dw || db) BK.matmul_backward_w(dw, db, dy, x, T, w.shape[0], w.shape[1], pool);
    };

    // --- Recompute the block's internals from its input (forward() order and kernels; the
    // attention through the training kernel, which also gives the log-sum-exp the backward uses).
    auto layernorm = [&](float* y, const float* in, const std::vector<float>& w, const std::vector<float>& bias) {
        for_rows(pool, T, [&](int64_t r0, int64_t n) {
            K.layernorm(y + r0 * D, in + r0 * D, w.data(), bias.data(), n, D, cfg_.eps);
        });
    };
    layernorm(s.h1, x_in, b.ln1_w, b.ln1_b);
    K.matmul(s.q, s.h1, b.q_w, b.q_b.data(), T, pool);
    K.matmul(s.k, s.h1, b.k_w, b.k_b.data(), T, pool);
    K.matmul(s.v, s.h1, b.v_w, b.v_b.data(), T, pool);
    BK.attention_forward(s.attn, s.lse, s.q, D, s.k, s.v, D, T, ap, pool);
    K.matmul(s.x_mid, s.attn, b.o_w, b.o_b.data(), T, pool);
    for_rows(pool, T, [&](int64_t r0, int64_t n) {
        K.add(s.x_mid + r0 * D, s.x_mid + r0 * D, x_in + r0 * D, n * D);
    });
    layernorm(s.h2, s.x_mid, b.ln2_w, b.ln2_b);
    K.matmul(s.f, s.h2, b.fc1_w, b.fc1_b.data(), T, pool);
    for_rows(pool, T, [&](int64_t r0, int64_t n) {
        if (cfg_.act == ClipActivation::QuickGelu)
            K.quick_gelu(s.a + r0 * F, s.f + r0 * F, n * F);
        else
            K.gelu_erf(s.a + r0 * F, s.f + r0 * F, n * F);
    });

    // --- MLP branch: out = x_mid + fc2(act(fc1(ln2(x_mid)))); g = d out.
    weight_grads(b.fc2_w, b.fc2_b, g, s.a);
    zero(s.da, T * F);
    BK.matmul_backward_x(s.da, g, b.fc2_w, T, pool);  // da[T, F] = g · fc2_w
    zero(s.df, T * F);
    for_rows(pool, T, [&](int64_t r0, int64_t n) {
        if (cfg_.act == ClipActivation::QuickGelu)
            BK.quick_gelu_backward(s.df + r0 * F, s.da + r0 * F, s.f + r0 * F, n * F);
        else
            BK.gelu_erf_backward(s.df + r0 * F, s.da + r0 * F, s.f + r0 * F, n * F);
    });
    weight_grads(b.fc1_w, b.fc1_b, s.df, s.h2);
    zero(s.dh, T * D);
    BK.matmul_backward_x(s.dh, s.df, b.fc1_w, T, pool);  // dh2[T, D] = df · fc1_w
    // g += ln2ᵀ(dh2): now g = d x_mid (the residual passes g through unchanged). One call over
    // all rows: dw/db sum over the rows in a fixed order, whatever the thread count.
    BK.layernorm_backward(g, grad_v(b.ln2_w), grad_v(b.ln2_b), s.dh, s.x_mid, b.ln2_w.data(), T, D, cfg_.eps);

    // --- Attention branch: x_mid = x_in + out_proj(MHA(q, k, v)), q/k/v = proj(ln1(x_in)).
    weight_grads(b.o_w, b.o_b, g, s.attn);
    zero(s.dattn, T * D);
    BK.matmul_backward_x(s.dattn, g, b.o_w, T, pool);
    zero(s.dq, T * D);
    zero(s.dk, T * D);
    zero(s.dv, T * D);
    BK.attention_backward(s.dq, s.dk, s.dv, s.dattn, s.q, D, s.k, s.v, D, s.attn, s.lse, T, ap, pool);
    weight_grads(b.q_w, b.q_b, s.dq, s.h1);
    weight_grads(b.k_w, b.k_b, s.dk, s.h1);
    weight_grads(b.v_w, b.v_b, s.dv, s.h1);
    zero(s.dh, T * D);  // dh1 = dq·Wq + dk·Wk + dv·Wv
    BK.matmul_backward_x(s.dh, s.dq, b.q_w, T, pool);
    BK.matmul_backward_x(s.dh, s.dk, b.k_w, T, pool);
    BK.matmul_backward_x(s.dh, s.dv, b.v_w, T, pool);
    // g += ln1ᵀ(dh1): now g = d x_in.
    BK.layernorm_backward(g, grad_v(b.ln1_w), grad_v(b.ln1_b), s.dh, x_in, b.ln1_w.data(), T, D, cfg_.eps);
}

void ClipVision::backward(const float* dout, const ClipVisionTrainState& state, const GradSink& sink, float* dpixels,
                          Arena& arena, ThreadPool& pool, const BackwardKernels* bk) const {
    const int64_t T = cfg_.n_tokens(), D = cfg_.hidden, F = cfg_.n_ff, NP = cfg_.n_patches();
    const int64_t C = cfg_.num_channels, P = cfg_.patch_size, S = cfg_.image_size, KP = C * P * P;
    const int n_blocks = state.n_blocks;
    HG_CHECK(state.kernels != nullptr && n_blocks >= 0 && n_blocks <= cfg_.n_layer &&
                 state.block_inputs.size() == static_cast<size_t>(n_blocks * T * D) &&
                 state.embeddings.size() == static_cast<size_t>(T * D) &&
                 state.patches.size() == static_cast<size_t>(NP * KP),
             "ClipVision::backward: the training state does not come from this tower's forward_train");

    // How far down the gradient has to go: the embeddings (or the pixels) need all of it,
    // otherwise the lowest block with a trainable weight is the last one to run.
    float* d_patch = sink.find(patch_w_.data);
    float* d_class = sink.find(class_embd_.data());
    float* d_pos = sink.find(pos_embd_.data());
    float* d_pre_w = sink.find(pre_ln_w_.data());
    float* d_pre_b = sink.find(pre_ln_b_.data());
    const bool need_embed = d_patch || d_class || d_pos || d_pre_w || d_pre_b || dpixels;
    int lowest = n_blocks;
    for (int i = 0; i < n_blocks && lowest == n_blocks; ++i)
        if (block_trainable(blocks_[i], sink)) lowest = i;
    if (!need_embed && lowest == n_blocks) return;  // frozen: nothing to compute
    const int stop = need_embed ? 0 : lowest;

    const BackwardKernels& BK = bk ? *bk : backward_kernels();
    const Kernels& K = *state.kernels;
    auto buf = [&](int64_t n) { return arena.alloc<float>(static_cast<size_t>(n)); };

    // g[T, D] = d loss / d hidden_states[n_blocks]: dout on the patch rows, 0 on CLS (dropped).
    float* g = buf(T * D);
    std::memset(g, 0, D * sizeof(float));
    std::memcpy(g + D, dout, NP * D * sizeof(float));

    if (stop < n_blocks) {
        const BackwardScratch s{buf(T * D), buf(T * D), buf(T * D), buf(T * D), buf(T * D),
                                buf((int64_t)cfg_.n_head * T), buf(T * D), buf(T * D), buf(T * F), buf(T * F),
                                buf(T * D), buf(T * D), buf(T * D), buf(T * D), buf(T * D), buf(T * F), buf(T * F)};
        for (int i = n_blocks - 1; i >= stop; --i)
            block_backward(g, state.block_inputs.data() + i * T * D, blocks_[i], sink, s, pool, K, BK);
    }
    if (!need_embed) return;

    // x_0 = pre_layrnorm(e): de = pre_lnᵀ(g)
    float* de = buf(T * D);
    std::memset(de, 0, T * D * sizeof(float));
    BK.layernorm_backward(de, d_pre_w, d_pre_b, g, state.embeddings.data(), pre_ln_w_.data(), T, D, cfg_.eps);
    // e = cat(class_embd, patches·Wᵀ) + position_embd
    if (d_class)
        for (int64_t j = 0; j < D; ++j) d_class[j] += de[j];
    if (d_pos)
        for (int64_t j = 0; j < T * D; ++j) d_pos[j] += de[j];
    if (d_patch) BK.matmul_backward_w(d_patch, nullptr, de + D, state.patches.data(), NP, D, KP, pool);
    if (dpixels) {
        float* dcols = buf(NP * KP);  // [NP, C*P*P]
        std::memset(dcols, 0, NP * KP * sizeof(float));
        BK.matmul_backward_x(dcols, de + D, patch_w_, NP, pool);
        patch2im(dpixels, dcols, C, S, S, cfg_.patch_size);
    }
}

}  // namespace hg
