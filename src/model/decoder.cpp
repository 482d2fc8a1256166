// Phi-3 / Phi-4 / Qwen2 / Llama decoder forward pass (see decoder.h).
#include "model/decoder.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "model/hlora.h"

namespace hg {

const char* decoder_arch_name(DecoderArch a) {
    switch (a) {
        case DecoderArch::Phi3: return "phi3";
        case DecoderArch::Qwen2: return "qwen2";
        case DecoderArch::Llama: return "llama";
    }
    return "?";
}

const char* linear_kind_name(LinearKind k) {
    switch (k) {
        case LinearKind::AttnQKV: return "attn_qkv";
        case LinearKind::AttnQ: return "attn_q";
        case LinearKind::AttnK: return "attn_k";
        case LinearKind::AttnV: return "attn_v";
        case LinearKind::AttnOutput: return "attn_output";
        case LinearKind::FfnGateUp: return "ffn_up";  // llama.cpp keeps phi3's fused gate|up under this name
        case LinearKind::FfnGate: return "ffn_gate";
        case LinearKind::FfnUp: return "ffn_up";
        case LinearKind::FfnDown: return "ffn_down";
    }
    return "?";
}

std::string DecoderHParams::describe() const {
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "%s: vocab %lld, hidden %lld, ff %lld, layers %lld, heads %lld/%lld x %lld, rope %s theta %g, "
                  "rms eps %g, ctx %lld%s%s",
                  decoder_arch_name(arch), (long long)n_vocab, (long long)n_embd, (long long)n_ff, (long long)n_layer,
                  (long long)n_head, (long long)n_head_kv, (long long)head_dim,
                  rope_mode == RopeMode::RotateHalf ? "rotate-half" : "interleaved", rope_theta, rms_eps,
                  (long long)n_ctx_train,
                  sliding_window ? (", sliding window " + std::to_string(sliding_window)).c_str() : "",
                  rope_inv_freq_type == DType::F32 ? "" : rope_inv_freq_type == DType::F16 ? ", inv_freq f16"
                                                                                           : ", inv_freq bf16");
    return buf;
}

Decoder::Decoder(DecoderHParams hp, DecoderWeights w, std::shared_ptr<const void> storage, std::string source,
                 std::vector<int32_t> stop_ids)
    : hp_(hp), w_(std::move(w)), storage_(std::move(storage)), source_(std::move(source)),
      stop_ids_(std::move(stop_ids)) {
    HG_CHECK((int64_t)w_.layers.size() == hp_.n_layer, "%s: %zu layers of weights for %lld layers", source_.c_str(),
             w_.layers.size(), (long long)hp_.n_layer);
}

void Decoder::embed(std::span<const int32_t> ids, float* out) const {
    if (w_.shared_from < 0) {
        embedding_lookup(out, w_.token_embd, ids.data(), (int64_t)ids.size());
        return;
    }
    const int64_t E = hp_.n_embd;
    for (size_t i = 0; i < ids.size(); ++i) {
        const int32_t id = ids[i];
        HG_CHECK(id >= 0 && id < hp_.n_vocab, "%s: token id %d outside the vocabulary (%lld)", source_.c_str(), id,
                 (long long)hp_.n_vocab);
        if (id >= w_.shared_from) std::memcpy(out + (int64_t)i * E, w_.shared_embd.data(), (size_t)E * sizeof(float));
        else embedding_lookup(out + (int64_t)i * E, w_.token_embd, &id, 1);
    }
}

void Decoder::linear(float* y, const float* x, int64_t M, const Linear& L, int64_t layer, LinearKind kind,
                     Arena& arena, ThreadPool& pool, const Kernels& K, const AdapterSet* adapters) const {
    K.matmul(y, x, L.weight, L.bias.empty() ? nullptr : L.bias.data(), M, pool);
    if (adapters)
        if (const LinearAdapter* a = adapters->find(layer, kind)) a->apply(y, x, M, arena, pool, K);
}

namespace {

// Stores n rows of kv_dim floats (row stride src_stride floats) into cache rows [pos0, pos0+n).
void store_kv(uint8_t* base, size_t row_bytes, DType type, int64_t pos0, const float* src, int64_t n,
              size_t src_stride, int64_t kv_dim) {
    for (int64_t i = 0; i < n; ++i) {
        uint8_t* dst = base + (size_t)(pos0 + i) * row_bytes;
        const float* s = src + (size_t)i * src_stride;
        if (type == DType::F32) {
            std::memcpy(dst, s, (size_t)kv_dim * sizeof(float));
        } else {
            uint16_t* d = reinterpret_cast<uint16_t*>(dst);
            for (int64_t j = 0; j < kv_dim; ++j) d[j] = fp32_to_fp16(s[j]);
        }
    }
}

// RoPE with inv_freq rounded to `type` (F16/BF16) and back, then everything in float32 as
// transformers does: angle = pos * inv_freq, cos/sin in float32. Same pairs as the kernel.
void rope_rounded_freq(float* x, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot,
                       const int32_t* pos, float theta, RopeMode mode, DType type) {
    const int half = n_rot / 2;
    float inv_freq[512];
    HG_CHECK(half <= 512, "rope: %d rotated dims are too many", n_rot);
    for (int i = 0; i < half; ++i) {
        const float f = 1.0f / std::pow(theta, (float)(2 * i) / (float)n_rot);
        inv_freq[i] = type == DType::F16 ? fp16_to_fp32(fp32_to_fp16(f)) : bf16_to_fp32(fp32_to_bf16(f));
    }
    for (int64_t t = 0; t < n_tok; ++t)
        for (int h = 0; h < n_head; ++h) {
            float* v = x + t * stride + (size_t)h * head_dim;
            for (int i = 0; i < half; ++i) {
                const float ang = (float)pos[t] * inv_freq[i];
                const float c = std::cos(ang), sn = std::sin(ang);
                const int a = mode == RopeMode::RotateHalf ? i : 2 * i;
                const int b = mode == RopeMode::RotateHalf ? i + half : 2 * i + 1;
                const float x0 = v[a], x1 = v[b];
                v[a] = x0 * c - x1 * sn;
                v[b] = x1 * c + x0 * sn;
            }
        }
}

}  // namespace

void Decoder::forward(const float* embeds, int64_t n_tok, const KVView& kv, LogitRows rows, float* logits,
                      Arena& arena, const ForwardOptions& opt) const {
    const DecoderHParams& hp = hp_;
    HG_CHECK(n_tok > 0, "decoder forward: no tokens");
    HG_CHECK(kv.type == DType::F32 || kv.type == DType::F16, "decoder forward: KV cache type %s not supported",
             dtype_name(kv.type));
    HG_CHECK(kv.row_bytes == row_bytes(kv.type, hp.kv_dim()), "decoder forward: KV rows of %zu bytes, expected %zu",
             kv.row_bytes, row_bytes(kv.type, hp.kv_dim()));
    HG_CHECK(kv.n_past >= 0 && kv.n_past + n_tok <= kv.capacity,
             "decoder forward: %lld + %lld positions exceed the KV cache capacity %lld", (long long)kv.n_past,
             (long long)n_tok, (long long)kv.capacity);
    arena.reset();  // nothing survives a forward; also recovers from an exception in the previous one
    ThreadPool& pool = opt.pool ? *opt.pool : default_pool();
    const Kernels& K = opt.kernels ? *opt.kernels : kernels();
    const AdapterSet* adapters = opt.adapters;

    const int64_t E = hp.n_embd, I = hp.n_ff, QD = hp.q_dim(), KVD = hp.kv_dim(), D = hp.head_dim;
    const int64_t p0 = kv.n_past, n_kv = p0 + n_tok;

    // Activations, all [n_tok, ...] row-major float32.
    float* x = arena.alloc<float>(n_tok * E);        // residual stream
    float* xn = arena.alloc<float>(n_tok * E);       // normed input of a block
    const int64_t qkv_w = QD + 2 * KVD;
    float* qkv = arena.alloc<float>(n_tok * qkv_w);  // q | k | v per row
    float* att = arena.alloc<float>(n_tok * QD);     // attention output (heads concatenated)
    float* tmp = arena.alloc<float>(n_tok * E);      // o_proj / down_proj output
    float* gu = arena.alloc<float>(n_tok * 2 * I);   // gate | up per row
    float* act = arena.alloc<float>(n_tok * I);      // silu(gate) * up
    int32_t* pos = arena.alloc<int32_t>(n_tok);
    for (int64_t i = 0; i < n_tok; ++i) pos[i] = (int32_t)(p0 + i);
    std::memcpy(x, embeds, (size_t)(n_tok * E) * sizeof(float));

    AttentionParams ap;
    ap.n_head = (int)hp.n_head;
    ap.n_kv_head = (int)hp.n_head_kv;
    ap.head_dim = (int)D;
    ap.scale = 1.0f / std::sqrt((float)D);
    ap.causal = true;
    ap.q_pos0 = p0;
    ap.window = hp.sliding_window > 0 ? hp.sliding_window + 1 : 0;  // HF: W+1 keys visible (decoder.h)

    for (int64_t l = 0; l < hp.n_layer; ++l) {
        const DecoderLayer& L = w_.layers[l];

        // --- self-attention block: x += o_proj(attn(input_layernorm(x)))
        K.rmsnorm(xn, x, L.attn_norm.data(), n_tok, E, hp.rms_eps);
        float* q = qkv;              // row stride qkv_w
        float* k = qkv + QD;
        float* v = qkv + QD + KVD;
        size_t q_stride = qkv_w, k_stride = qkv_w, v_stride = qkv_w;
        if (L.qkv.present()) {
            linear(qkv, xn, n_tok, L.qkv, l, LinearKind::AttnQKV, arena, pool, K, adapters);
        } else {
            // separate projections: q [n, QD], k [n, KVD], v [n, KVD] packed one after another
            q = qkv;
            k = qkv + n_tok * QD;
            v = k + n_tok * KVD;
            q_stride = QD;
            k_stride = v_stride = KVD;
            linear(q, xn, n_tok, L.q, l, LinearKind::AttnQ, arena, pool, K, adapters);
            linear(k, xn, n_tok, L.k, l, LinearKind::AttnK, arena, pool, K, adapters);
            linear(v, xn, n_tok, L.v, l, LinearKind::AttnV, arena, pool, K, adapters);
        }
        if (hp.rope_inv_freq_type == DType::F32) {
            K.rope(q, n_tok, q_stride, (int)hp.n_head, (int)D, (int)hp.n_rot, pos, hp.rope_theta, hp.rope_mode);
            K.rope(k, n_tok, k_stride, (int)hp.n_head_kv, (int)D, (int)hp.n_rot, pos, hp.rope_theta, hp.rope_mode);
        } else {
            rope_rounded_freq(q, n_tok, q_stride, (int)hp.n_head, (int)D, (int)hp.n_rot, pos, hp.rope_theta,
                              hp.rope_mode, hp.rope_inv_freq_type);
            rope_rounded_freq(k, n_tok, k_stride, (int)hp.n_head_kv, (int)D, (int)hp.n_rot, pos, hp.rope_theta,
                              hp.rope_mode, hp.rope_inv_freq_type);
        }
        store_kv(kv.k[l], kv.row_bytes, kv.type, p0, k, n_tok, k_stride, KVD);
        store_kv(kv.v[l], kv.row_bytes, kv.type, p0, v, n_tok, v_stride, KVD);
        K.attention(att, q, n_tok, q_stride, kv.k[l], kv.v[l], kv.type, n_kv, kv.row_bytes, ap, pool);
        linear(tmp, att, n_tok, L.o, l, LinearKind::AttnOutput, arena, pool, K, adapters);
        K.add(x, x, tmp, n_tok * E);

        // --- MLP block: x += down_proj(silu(gate) * up)
        K.rmsnorm(xn, x, L.ffn_norm.data(), n_tok, E, hp.rms_eps);
        if (L.gate_up.present()) {
            linear(gu, xn, n_tok, L.gate_up, l, LinearKind::FfnGateUp, arena, pool, K, adapters);
            for (int64_t i = 0; i < n_tok; ++i)  // chunk(2, dim=-1): gate first, then up
                K.swiglu(act + i * I, gu + i * 2 * I, gu + i * 2 * I + I, I);
        } else {
            float* gate = gu;
            float* up = gu + n_tok * I;
            linear(gate, xn, n_tok, L.gate, l, LinearKind::FfnGate, arena, pool, K, adapters);
            linear(up, xn, n_tok, L.up, l, LinearKind::FfnUp, arena, pool, K, adapters);
            K.swiglu(act, gate, up, n_tok * I);
        }
        linear(tmp, act, n_tok, L.down, l, LinearKind::FfnDown, arena, pool, K, adapters);
        K.add(x, x, tmp, n_tok * E);
    }

    // --- final norm + lm_head, only for the rows asked for
    if (rows != LogitRows::None) {
        const int64_t first = rows == LogitRows::Last ? n_tok - 1 : 0;
        const int64_t n_out = n_tok - first;
        K.rmsnorm(xn, x + first * E, w_.output_norm.data(), n_out, E, hp.rms_eps);
        if (w_.shared_from < 0) {
            K.matmul(logits, xn, w_.output, nullptr, n_out, pool);
        } else {
            // own rows [0, Vs) by matmul; the shared tail [Vs, V) by one dot product per row
            const int64_t V = hp.n_vocab, Vs = w_.shared_from;
            float* own = n_out == 1 ? logits : arena.alloc<float>(n_out * Vs);
            K.matmul(own, xn, w_.output, nullptr, n_out, pool);
            for (int64_t r = n_out; r-- > 0;) {
                if (own != logits) std::memmove(logits + r * V, own + r * Vs, (size_t)Vs * sizeof(float));
                double dot = 0;
                for (int64_t j = 0; j < E; ++j) dot += (double)xn[r * E + j] * w_.shared_output[(size_t)j];
                std::fill(logits + r * V + Vs, logits + (r + 1) * V, (float)dot);
            }
        }
    }
    arena.reset();
}

// ---------------------------------------------------------------------------------------------
// H-LoRA plugins and vocabulary swaps

namespace {

class HLoraLinear final : public LinearAdapter {
public:
    HLoraLinear(const HLoraWeights* w, std::string prefix) : w_(w), prefix_(std::move(prefix)) {}
    void apply(float* y, const float* x, int64_t M, Arena& arena, ThreadPool& pool, const Kernels& k) const override {
        hlora_add(y, x, M, *w_, arena, pool, k);
    }
    void backward(float* dx, const float* dy, const float* x, int64_t M, const GradSink* sink, ThreadPool& pool,
                  const Kernels& k, const BackwardKernels& bk) const override {
        hlora_backward(dx, dy, x, M, *w_, sink, pool, k, bk);
    }
    ParamRefs parameters() const override {
        return {{prefix_ + "." + plugin_names::kA, w_->A},
                {prefix_ + "." + plugin_names::kB, w_->B},
                {prefix_ + "." + plugin_names::kRoute, w_->route}};
    }

private:
    const HLoraWeights* w_;
    std::string prefix_;
};

constexpr int kLinearKinds = 9;

class HLoraAdapterSet final : public AdapterSet {
public:
    const LinearAdapter* find(int64_t layer, LinearKind kind) const override {
        if (layer < 0 || layer >= (int64_t)by_layer.size()) return nullptr;
        return by_layer[(size_t)layer][(size_t)kind].get();
    }
    std::vector<std::array<std::unique_ptr<HLoraLinear>, kLinearKinds>> by_layer;
};

}  // namespace

std::unique_ptr<AdapterSet> hlora_adapters(const HLoraPlugin& plugin, const Decoder& decoder) {
    auto set = std::make_unique<HLoraAdapterSet>();
    const auto& layers = decoder.weights().layers;
    set->by_layer.resize(layers.size());
    size_t bound = 0;
    for (size_t l = 0; l < layers.size(); ++l) {
        const DecoderLayer& L = layers[l];
        const auto linears = L.linears();
        for (const auto& [kind, lin] : linears) {
            if (!lin->present()) continue;
            const HLoraWeights* w = plugin.find((int)l, linear_kind_name(kind));
            if (!w) continue;
            const std::string what = "blk." + std::to_string(l) + "." + linear_kind_name(kind);
            w->check_fits(lin->weight, plugin.origin() + ": " + what + " of " + decoder.source());
            set->by_layer[l][(size_t)kind] = std::make_unique<HLoraLinear>(w, "blk." + std::to_string(l) + "." +
                                                                                   linear_kind_name(kind));
            ++bound;
        }
    }
    if (bound != plugin.adapters().size()) {
        for (const auto& [key, w] : plugin.adapters()) {
            (void)w;
            bool found = false;
            for (size_t l = 0; l < layers.size() && !found; ++l)
                for (int k = 0; k < kLinearKinds && !found; ++k)
                    found = set->by_layer[l][k] && key == "blk." + std::to_string(l) + "." +
                                                              linear_kind_name(static_cast<LinearKind>(k));
            HG_CHECK(found, "%s: adapter %s has no matching linear in %s (%s)", plugin.origin().c_str(), key.c_str(),
                     decoder.source().c_str(), decoder.hparams().describe().c_str());
        }
    }
    return set;
}

std::shared_ptr<const Decoder> with_vocabulary(std::shared_ptr<const Decoder> base, const Tensor& token_embd,
                                               const Tensor& output, std::shared_ptr<const void> keep) {
    const int64_t E = base->hparams().n_embd;
    HG_CHECK(token_embd.n_dims == 2 && token_embd.shape[1] == E && token_embd.shape[0] > 0,
             "%s: replacement token_embd %s does not fit n_embd %lld", base->source().c_str(),
             token_embd.shape_str().c_str(), (long long)E);
    HG_CHECK(output.n_dims == 2 && output.shape[1] == E && output.shape[0] == token_embd.shape[0],
             "%s: replacement output %s does not match token_embd %s", base->source().c_str(),
             output.shape_str().c_str(), token_embd.shape_str().c_str());
    DecoderHParams hp = base->hparams();
    hp.n_vocab = token_embd.shape[0];
    DecoderWeights w = base->weights();
    w.token_embd = token_embd;
    w.output = output;
    w.shared_from = -1;  // the replacement rows cover the whole vocabulary
    w.shared_embd.clear();
    w.shared_output.clear();
    struct Keep {
        std::shared_ptr<const Decoder> base;
        std::shared_ptr<const void> extra;
    };
    const std::string src = base->source();
    const std::vector<int32_t> stops = base->stop_ids();  // before `base` moves into the keeper
    auto storage = std::make_shared<const Keep>(Keep{std::move(base), std::move(keep)});
    return std::make_shared<const Decoder>(hp, std::move(w), storage, src, stops);
}

std::shared_ptr<const Decoder> with_mean_rows(std::shared_ptr<const Decoder> base, int64_t n_keep, int64_t n_new) {
    const DecoderWeights& bw = base->weights();
    const int64_t E = base->hparams().n_embd;
    HG_CHECK(bw.shared_from < 0, "%s: the vocabulary is already extended", base->source().c_str());
    HG_CHECK(n_keep > 0 && n_keep <= bw.token_embd.rows() && n_keep <= bw.output.rows() && n_new > 0,
             "%s: cannot keep %lld of %lld embedding rows and add %lld", base->source().c_str(), (long long)n_keep,
             (long long)bw.token_embd.rows(), (long long)n_new);
    // mean over rows 0 .. n_keep-1 of a [rows, E] table of any type (rows are widened one at a time)
    auto mean_row = [&](const Tensor& table) {
        std::vector<double> acc((size_t)E, 0.0);
        std::vector<float> row((size_t)E);
        for (int32_t r = 0; r < (int32_t)n_keep; ++r) {
            embedding_lookup(row.data(), table, &r, 1);
            for (int64_t j = 0; j < E; ++j) acc[(size_t)j] += row[(size_t)j];
        }
        std::vector<float> mean((size_t)E);
        for (int64_t j = 0; j < E; ++j) mean[(size_t)j] = (float)(acc[(size_t)j] / (double)n_keep);
        return mean;
    };
    DecoderHParams hp = base->hparams();
    hp.n_vocab = n_keep + n_new;
    DecoderWeights w = bw;
    w.shared_embd = mean_row(bw.token_embd);
    w.shared_output = mean_row(bw.output);
    w.token_embd = Tensor::view(bw.token_embd.type, {n_keep, E}, bw.token_embd.data);
    w.output = Tensor::view(bw.output.type, {n_keep, E}, bw.output.data);
    w.shared_from = n_keep;
    const std::string src = base->source();
    const std::vector<int32_t> stops = base->stop_ids();
    std::shared_ptr<const void> storage = base;  // keeps the base (and its mapped file) alive
    return std::make_shared<const Decoder>(hp, std::move(w), storage, src, stops);
}

}  // namespace hg

// =============================================================================================
// Training: forward with checkpointed block inputs, the loss head, and the backward of both.
// The block reads like forward() above; its backward runs the same steps in reverse.

namespace hg {

namespace {

Tensor f32_view(const std::vector<float>& v) {
    return Tensor::view(DType::F32, {(int64_t)v.size()}, const_cast<float*>(v.data()));
}

AttentionParams train_attention_params(const DecoderHParams& hp) {
    AttentionParams ap;
    ap.n_head = (int)hp.n_head;
    ap.n_kv_head = (int)hp.n_head_kv;
    ap.head_dim = (int)hp.head_dim;
    ap.scale = 1.0f / std::sqrt((float)hp.head_dim);
    ap.causal = true;
    ap.q_pos0 = 0;
    ap.window = hp.sliding_window > 0 ? hp.sliding_window + 1 : 0;
    return ap;
}

}  // namespace

void LinearAdapter::backward(float*, const float*, const float*, int64_t, const GradSink*, ThreadPool&, const Kernels&,
                             const BackwardKernels&) const {
    fail("this linear adapter has no backward pass, so a model using it cannot be trained");
}

ParamRefs Decoder::parameters() const {
    ParamRefs p;
    p.push_back({"token_embd.weight", w_.token_embd});
    for (size_t l = 0; l < w_.layers.size(); ++l) {
        const DecoderLayer& L = w_.layers[l];
        const std::string blk = "blk." + std::to_string(l) + ".";
        p.push_back({blk + "attn_norm.weight", f32_view(L.attn_norm)});
        const auto linears = L.linears();
        for (const auto& [kind, lin] : linears) {
            if (!lin->present()) continue;
            p.push_back({blk + linear_kind_name(kind) + ".weight", lin->weight});
            if (!lin->bias.empty()) p.push_back({blk + linear_kind_name(kind) + ".bias", f32_view(lin->bias)});
        }
        p.push_back({blk + "ffn_norm.weight", f32_view(L.ffn_norm)});
    }
    p.push_back({"output_norm.weight", f32_view(w_.output_norm)});
    if (w_.output.data != w_.token_embd.data) p.push_back({"output.weight", w_.output});
    if (w_.shared_from >= 0) {  // the one row every extended id shares (with_mean_rows)
        p.push_back({"healthgpt.shared_embd", f32_view(w_.shared_embd)});
        p.push_back({"healthgpt.shared_output", f32_view(w_.shared_output)});
    }
    return p;
}

// One block's activations, [n_tok, ...] row-major; q and k are after RoPE.
struct DecoderBlockActs {
    std::vector<float> xn1, qkv, att, lse, x1, xn2, gu, act, tmp;
    float *q = nullptr, *k = nullptr, *v = nullptr;
    size_t q_stride = 0, kv_stride = 0;
};

void Decoder::block_train(int64_t l, const float* x_in, float* x_out, int64_t n_tok, BlockActs& a, Arena& arena,
                          ThreadPool& pool, const Kernels& K, const BackwardKernels& BK,
                          const AdapterSet* adapters) const {
    const DecoderHParams& hp = hp_;
    const DecoderLayer& L = w_.layers[(size_t)l];
    const int64_t T = n_tok, E = hp.n_embd, I = hp.n_ff, QD = hp.q_dim(), KVD = hp.kv_dim(), D = hp.head_dim;
    const int64_t qkv_w = QD + 2 * KVD;
    arena.reset();  // adapter scratch only
    a.xn1.resize((size_t)(T * E));
    a.qkv.resize((size_t)(T * qkv_w));
    a.att.resize((size_t)(T * QD));
    a.lse.resize((size_t)(hp.n_head * T));
    a.x1.resize((size_t)(T * E));
    a.xn2.resize((size_t)(T * E));
    a.gu.resize((size_t)(T * 2 * I));
    a.act.resize((size_t)(T * I));
    a.tmp.resize((size_t)(T * E));
    std::vector<int32_t> pos((size_t)T);
    for (int64_t i = 0; i < T; ++i) pos[(size_t)i] = (int32_t)i;

    // --- x1 = x + o_proj(attn(rope(q), rope(k), v)),  q|k|v = qkv_proj(input_layernorm(x))
    K.rmsnorm(a.xn1.data(), x_in, L.attn_norm.data(), T, E, hp.rms_eps);
    if (L.qkv.present()) {
        linear(a.qkv.data(), a.xn1.data(), T, L.qkv, l, LinearKind::AttnQKV, arena, pool, K, adapters);
        a.q = a.qkv.data();
        a.k = a.q + QD;
        a.v = a.q + QD + KVD;
        a.q_stride = a.kv_stride = (size_t)qkv_w;
    } else {  // q [T, QD], k [T, KVD], v [T, KVD], one after another
        a.q = a.qkv.data();
        a.k = a.q + T * QD;
        a.v = a.k + T * KVD;
        a.q_stride = (size_t)QD;
        a.kv_stride = (size_t)KVD;
        linear(a.q, a.xn1.data(), T, L.q, l, LinearKind::AttnQ, arena, pool, K, adapters);
        linear(a.k, a.xn1.data(), T, L.k, l, LinearKind::AttnK, arena, pool, K, adapters);
        linear(a.v, a.xn1.data(), T, L.v, l, LinearKind::AttnV, arena, pool, K, adapters);
    }
    rope_forward(a.q, T, a.q_stride, (int)hp.n_head, (int)D, (int)hp.n_rot, pos.data(), hp.rope_theta, hp.rope_mode,
                 nullptr, 1.0f);
    rope_forward(a.k, T, a.kv_stride, (int)hp.n_head_kv, (int)D, (int)hp.n_rot, pos.data(), hp.rope_theta,
                 hp.rope_mode, nullptr, 1.0f);
    const AttentionParams ap = train_attention_params(hp);
    BK.attention_forward(a.att.data(), a.lse.data(), a.q, a.q_stride, a.k, a.v, a.kv_stride, T, ap, pool);
    linear(a.tmp.data(), a.att.data(), T, L.o, l, LinearKind::AttnOutput, arena, pool, K, adapters);
    K.add(a.x1.data(), x_in, a.tmp.data(), T * E);

    // --- x_out = x1 + down_proj(silu(gate) * up),  gate|up from post_attention_layernorm(x1)
    K.rmsnorm(a.xn2.data(), a.x1.data(), L.ffn_norm.data(), T, E, hp.rms_eps);
    if (L.gate_up.present()) {
        linear(a.gu.data(), a.xn2.data(), T, L.gate_up, l, LinearKind::FfnGateUp, arena, pool, K, adapters);
        for (int64_t i = 0; i < T; ++i)
            K.swiglu(a.act.data() + i * I, a.gu.data() + i * 2 * I, a.gu.data() + i * 2 * I + I, I);
    } else {
        linear(a.gu.data(), a.xn2.data(), T, L.gate, l, LinearKind::FfnGate, arena, pool, K, adapters);
        linear(a.gu.data() + T * I, a.xn2.data(), T, L.up, l, LinearKind::FfnUp, arena, pool, K, adapters);
        K.swiglu(a.act.data(), a.gu.data(), a.gu.data() + T * I, T * I);
    }
    linear(a.tmp.data(), a.act.data(), T, L.down, l, LinearKind::FfnDown, arena, pool, K, adapters);
    K.add(x_out, a.x1.data(), a.tmp.data(), T * E);
    arena.reset();
}

void Decoder::forward_train(const float* embeds, int64_t n_tok, DecoderTape& tape, const ForwardOptions& opt) const {
    const DecoderHParams& hp = hp_;
    HG_CHECK(n_tok > 0, "%s: training forward: no tokens", source_.c_str());
    HG_CHECK(hp.rope_inv_freq_type == DType::F32,
             "%s: training needs RoPE inv_freq in float32 (this file asks for %s rounding)", source_.c_str(),
             dtype_name(hp.rope_inv_freq_type));
    ThreadPool& pool = opt.pool ? *opt.pool : default_pool();
    const Kernels& K = opt.kernels ? *opt.kernels : kernels();
    const BackwardKernels& BK = opt.kernels == &kernels_ref() ? backward_kernels_ref() : backward_kernels();
    const int64_t E = hp.n_embd, NL = hp.n_layer;
    tape.n_tok = n_tok;
    tape.block_in.assign((size_t)((NL + 1) * n_tok * E), 0.0f);
    std::memcpy(tape.block_in.data(), embeds, (size_t)(n_tok * E) * sizeof(float));
    Arena arena;
    BlockActs a;
    tape.kept.assign((size_t)NL, nullptr);
    size_t kept_bytes = 0;
    for (int64_t l = 0; l < NL; ++l) {
        block_train(l, tape.block_in.data() + l * n_tok * E, tape.block_in.data() + (l + 1) * n_tok * E, n_tok, a,
                    arena, pool, K, BK, opt.adapters);
        a.tmp = {};  // scratch: the backward does not read it
        const size_t bytes = sizeof(float) * (a.xn1.size() + a.qkv.size() + a.att.size() + a.lse.size() + a.x1.size() +
                                              a.xn2.size() + a.gu.size() + a.act.size());
        if (kept_bytes + bytes <= opt.keep_activation_bytes) {
            kept_bytes += bytes;
            tape.kept[(size_t)l] = std::make_shared<const BlockActs>(std::move(a));  // q/k/v point into qkv: moved with it
            a = BlockActs{};
        }
    }
}

double Decoder::loss_backward(const DecoderTape& tape, const int32_t* targets, float grad_scale, float* dhidden,
                              const GradSink* sink, int64_t* n_valid, const ForwardOptions& opt) const {
    const DecoderHParams& hp = hp_;
    ThreadPool& pool = opt.pool ? *opt.pool : default_pool();
    const Kernels& K = opt.kernels ? *opt.kernels : kernels();
    const BackwardKernels& BK = opt.kernels == &kernels_ref() ? backward_kernels_ref() : backward_kernels();
    const int64_t T = tape.n_tok, E = hp.n_embd, V = hp.n_vocab;
    const int64_t Vs = w_.shared_from < 0 ? V : w_.shared_from;  // rows the head stores
    std::fill(dhidden, dhidden + T * E, 0.0f);

    // The rows with a target, gathered: hr[R, E], their targets tg[R]
    std::vector<int64_t> rows;
    for (int64_t t = 0; t < T; ++t) {
        if (targets[t] == -100) continue;
        HG_CHECK(targets[t] >= 0 && targets[t] < V, "%s: training target id %d outside the vocabulary (%lld)",
                 source_.c_str(), targets[t], (long long)V);
        rows.push_back(t);
    }
    const int64_t R = (int64_t)rows.size();
    if (n_valid) *n_valid = R;
    if (R == 0) return 0.0;
    const float* h = tape.hidden(E);
    std::vector<float> hr((size_t)(R * E)), hn((size_t)(R * E));
    std::vector<int32_t> tg((size_t)R);
    for (int64_t r = 0; r < R; ++r) {
        std::memcpy(hr.data() + r * E, h + rows[(size_t)r] * E, (size_t)E * sizeof(float));
        tg[(size_t)r] = targets[rows[(size_t)r]];
    }
    K.rmsnorm(hn.data(), hr.data(), w_.output_norm.data(), R, E, hp.rms_eps);

    // logits[R, V]: the stored rows by matmul, the shared tail as one dot product per row
    std::vector<float> own((size_t)(R * Vs)), logits((size_t)(R * V));
    K.matmul(own.data(), hn.data(), w_.output, nullptr, R, pool);
    std::vector<double> tail_dot((size_t)R, 0.0);
    for (int64_t r = 0; r < R; ++r) {
        std::memcpy(logits.data() + r * V, own.data() + r * Vs, (size_t)Vs * sizeof(float));
        if (Vs < V) {
            double dot = 0;
            for (int64_t j = 0; j < E; ++j) dot += (double)hn[(size_t)(r * E + j)] * w_.shared_output[(size_t)j];
            std::fill(logits.data() + r * V + Vs, logits.data() + (r + 1) * V, (float)dot);
        }
    }
    std::vector<float> dlogits((size_t)(R * V));
    int64_t nv = 0;
    const double loss = cross_entropy(dlogits.data(), logits.data(), tg.data(), R, V, grad_scale, &nv);

    // back through the head: dhn[R, E] = dlogits_own · output (+ Σ tail · shared_output)
    std::vector<float> dl_own((size_t)(R * Vs)), dhn((size_t)(R * E), 0.0f), tail((size_t)R, 0.0f);
    for (int64_t r = 0; r < R; ++r) {
        std::memcpy(dl_own.data() + r * Vs, dlogits.data() + r * V, (size_t)Vs * sizeof(float));
        double acc = 0;
        for (int64_t c = Vs; c < V; ++c) acc += dlogits[(size_t)(r * V + c)];
        tail[(size_t)r] = (float)acc;
    }
    BK.matmul_backward_x(dhn.data(), dl_own.data(), w_.output, R, pool);
    if (float* dout = sink ? sink->find(w_.output.data) : nullptr)
        BK.matmul_backward_w(dout, nullptr, dl_own.data(), hn.data(), R, Vs, E, pool);
    if (Vs < V) {
        float* dso = sink ? sink->find(w_.shared_output.data()) : nullptr;
        for (int64_t r = 0; r < R; ++r)
            for (int64_t j = 0; j < E; ++j) {
                dhn[(size_t)(r * E + j)] += tail[(size_t)r] * w_.shared_output[(size_t)j];
                if (dso) dso[j] += tail[(size_t)r] * hn[(size_t)(r * E + j)];
            }
    }
    // back through the output norm, scattered to the rows
    std::vector<float> dhr((size_t)(R * E), 0.0f);
    BK.rmsnorm_backward(dhr.data(), sink ? sink->find(w_.output_norm.data()) : nullptr, dhn.data(), hr.data(),
                        w_.output_norm.data(), R, E, hp.rms_eps);
    for (int64_t r = 0; r < R; ++r)
        std::memcpy(dhidden + rows[(size_t)r] * E, dhr.data() + r * E, (size_t)E * sizeof(float));
    return loss;
}

void Decoder::linear_backward(float* dx, const float* dy, const float* x, int64_t M, const Linear& L, int64_t layer,
                              LinearKind kind, const GradSink* sink, ThreadPool& pool, const Kernels& K,
                              const BackwardKernels& BK, const AdapterSet* adapters) const {
    if (dx) BK.matmul_backward_x(dx, dy, L.weight, M, pool);
    float* dW = sink ? sink->find(L.weight.data) : nullptr;
    float* db = sink && !L.bias.empty() ? sink->find(L.bias.data()) : nullptr;
    const int64_t N = L.n_out(), Kd = L.n_in();
    if (dW) {
        BK.matmul_backward_w(dW, db, dy, x, M, N, Kd, pool);
    } else if (db) {
        for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) db[n] += dy[m * N + n];
    }
    if (adapters)
        if (const LinearAdapter* a = adapters->find(layer, kind)) a->backward(dx, dy, x, M, sink, pool, K, BK);
}

void Decoder::backward(const float* dhidden, const DecoderTape& tape, float* dembeds, const GradSink* sink,
                       const ForwardOptions& opt) const {
    const DecoderHParams& hp = hp_;
    ThreadPool& pool = opt.pool ? *opt.pool : default_pool();
    const Kernels& K = opt.kernels ? *opt.kernels : kernels();
    const BackwardKernels& BK = opt.kernels == &kernels_ref() ? backward_kernels_ref() : backward_kernels();
    const AdapterSet* adapters = opt.adapters;
    const int64_t T = tape.n_tok, E = hp.n_embd, I = hp.n_ff, QD = hp.q_dim(), KVD = hp.kv_dim(), D = hp.head_dim;
    const int64_t qkv_w = QD + 2 * KVD;
    HG_CHECK(T > 0 && tape.block_in.size() == (size_t)((hp.n_layer + 1) * T * E),
             "%s: training backward: the tape does not belong to this decoder", source_.c_str());
    const AttentionParams ap = train_attention_params(hp);
    std::vector<int32_t> pos((size_t)T);
    for (int64_t i = 0; i < T; ++i) pos[(size_t)i] = (int32_t)i;

    Arena arena;
    BlockActs a;
    std::vector<float> dx(dhidden, dhidden + T * E);  // gradient of the current block's output
    std::vector<float> x_out((size_t)(T * E)), dx1((size_t)(T * E)), dact((size_t)(T * I)), dgu((size_t)(T * 2 * I)),
        dxn((size_t)(T * E)), datt((size_t)(T * QD)), dqkv((size_t)(T * qkv_w));
    for (int64_t l = hp.n_layer; l-- > 0;) {
        const DecoderLayer& L = w_.layers[(size_t)l];
        const float* x_in = tape.block_in.data() + l * T * E;
        const BlockActs* kept = tape.kept.size() == (size_t)hp.n_layer ? tape.kept[(size_t)l].get() : nullptr;
        if (!kept) block_train(l, x_in, x_out.data(), T, a, arena, pool, K, BK, adapters);  // recompute (checkpointing)
        const BlockActs& A = kept ? *kept : a;

        // --- x_out = x1 + down(act)
        dx1 = dx;
        std::fill(dact.begin(), dact.end(), 0.0f);
        linear_backward(dact.data(), dx.data(), A.act.data(), T, L.down, l, LinearKind::FfnDown, sink, pool, K, BK,
                        adapters);
        std::fill(dgu.begin(), dgu.end(), 0.0f);
        std::fill(dxn.begin(), dxn.end(), 0.0f);
        if (L.gate_up.present()) {
            for (int64_t i = 0; i < T; ++i)
                BK.swiglu_backward(dgu.data() + i * 2 * I, dgu.data() + i * 2 * I + I, dact.data() + i * I,
                                   A.gu.data() + i * 2 * I, A.gu.data() + i * 2 * I + I, I);
            linear_backward(dxn.data(), dgu.data(), A.xn2.data(), T, L.gate_up, l, LinearKind::FfnGateUp, sink, pool,
                            K, BK, adapters);
        } else {
            BK.swiglu_backward(dgu.data(), dgu.data() + T * I, dact.data(), A.gu.data(), A.gu.data() + T * I, T * I);
            linear_backward(dxn.data(), dgu.data(), A.xn2.data(), T, L.gate, l, LinearKind::FfnGate, sink, pool, K, BK,
                            adapters);
            linear_backward(dxn.data(), dgu.data() + T * I, A.xn2.data(), T, L.up, l, LinearKind::FfnUp, sink, pool, K,
                            BK, adapters);
        }
        BK.rmsnorm_backward(dx1.data(), sink ? sink->find(L.ffn_norm.data()) : nullptr, dxn.data(), A.x1.data(),
                            L.ffn_norm.data(), T, E, hp.rms_eps);

        // --- x1 = x_in + o(attn(rope(q), rope(k), v))
        std::fill(datt.begin(), datt.end(), 0.0f);
        linear_backward(datt.data(), dx1.data(), A.att.data(), T, L.o, l, LinearKind::AttnOutput, sink, pool, K, BK,
                        adapters);
        std::fill(dqkv.begin(), dqkv.end(), 0.0f);
        float* dq = dqkv.data() + (A.q - A.qkv.data());  // the same layout as q|k|v
        float* dk = dqkv.data() + (A.k - A.qkv.data());
        float* dv = dqkv.data() + (A.v - A.qkv.data());
        BK.attention_backward(dq, dk, dv, datt.data(), A.q, A.q_stride, A.k, A.v, A.kv_stride, A.att.data(),
                              A.lse.data(), T, ap, pool);
        BK.rope_backward(dq, T, A.q_stride, (int)hp.n_head, (int)D, (int)hp.n_rot, pos.data(), hp.rope_theta,
                         hp.rope_mode, nullptr, 1.0f);
        BK.rope_backward(dk, T, A.kv_stride, (int)hp.n_head_kv, (int)D, (int)hp.n_rot, pos.data(), hp.rope_theta,
                         hp.rope_mode, nullptr, 1.0f);
        std::fill(dxn.begin(), dxn.end(), 0.0f);
        if (L.qkv.present()) {
            linear_backward(dxn.data(), dqkv.data(), A.xn1.data(), T, L.qkv, l, LinearKind::AttnQKV, sink, pool, K, BK,
                            adapters);
        } else {
            linear_backward(dxn.data(), dq, A.xn1.data(), T, L.q, l, LinearKind::AttnQ, sink, pool, K, BK, adapters);
            linear_backward(dxn.data(), dk, A.xn1.data(), T, L.k, l, LinearKind::AttnK, sink, pool, K, BK, adapters);
            linear_backward(dxn.data(), dv, A.xn1.data(), T, L.v, l, LinearKind::AttnV, sink, pool, K, BK, adapters);
        }
        dx = dx1;  // the residual
        BK.rmsnorm_backward(dx.data(), sink ? sink->find(L.attn_norm.data()) : nullptr, dxn.data(), x_in,
                            L.attn_norm.data(), T, E, hp.rms_eps);
    }
    if (dembeds)
        for (int64_t i = 0; i < T * E; ++i) dembeds[i] += dx[(size_t)i];
}

void Decoder::embed_backward(std::span<const int32_t> ids, const float* dembeds, const GradSink* sink) const {
    if (!sink) return;
    const int64_t E = hp_.n_embd;
    float* dtable = sink->find(w_.token_embd.data);
    float* dshared = w_.shared_from >= 0 ? sink->find(w_.shared_embd.data()) : nullptr;
    for (size_t i = 0; i < ids.size(); ++i) {
        const int32_t id = ids[i];
        HG_CHECK(id >= 0 && id < hp_.n_vocab, "%s: token id %d outside the vocabulary (%lld)", source_.c_str(), id,
                 (long long)hp_.n_vocab);
        const float* g = dembeds + (int64_t)i * E;
        if (w_.shared_from >= 0 && id >= w_.shared_from) {
            if (dshared)
                for (int64_t j = 0; j < E; ++j) dshared[j] += g[j];
        } else if (dtable) {
            HG_CHECK(w_.token_embd.type == DType::F32, "%s: a trainable token_embd must be float32", source_.c_str());
            embedding_backward(dtable, g, &id, 1, E);
        }
    }
}

}  // namespace hg
