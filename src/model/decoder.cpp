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
    explicit HLoraLinear(const HLoraWeights* w) : w_(w) {}
    void apply(float* y, const float* x, int64_t M, Arena& arena, ThreadPool& pool, const Kernels& k) const override {
        hlora_add(y, x, M, *w_, arena, pool, k);
    }

private:
    const HLoraWeights* w_;
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
        const std::pair<LinearKind, const Linear*> linears[] = {
            {LinearKind::AttnQKV, &L.qkv}, {LinearKind::AttnQ, &L.q},          {LinearKind::AttnK, &L.k},
            {LinearKind::AttnV, &L.v},     {LinearKind::AttnOutput, &L.o},     {LinearKind::FfnGateUp, &L.gate_up},
            {LinearKind::FfnGate, &L.gate}, {LinearKind::FfnUp, &L.up},        {LinearKind::FfnDown, &L.down},
        };
        for (const auto& [kind, lin] : linears) {
            if (!lin->present()) continue;
            const HLoraWeights* w = plugin.find((int)l, linear_kind_name(kind));
            if (!w) continue;
            const std::string what = "blk." + std::to_string(l) + "." + linear_kind_name(kind);
            w->check_fits(lin->weight, plugin.origin() + ": " + what + " of " + decoder.source());
            set->by_layer[l][(size_t)kind] = std::make_unique<HLoraLinear>(w);
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
