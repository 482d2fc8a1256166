// H-LoRA forward (fast and reference paths) and plugin loading. Mirrors the forward of the
// H-LoRA Linear in HealthGPT's vendored PEFT (llava/peft/tuners/lora.py), see hlora.h.
#include "model/hlora.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "core/quants.h"

namespace hg {

namespace {

// HealthGPT module name -> llama.cpp tensor name of the wrapped weight, with its parent module.
struct LinearName {
    const char* parent;
    const char* module;
    const char* gguf;
};
constexpr LinearName kLinears[] = {
    {"self_attn", "qkv_proj", "attn_qkv"},   // Phi-3 / Phi-4 (fused)
    {"self_attn", "o_proj", "attn_output"},  // all
    {"mlp", "gate_up_proj", "ffn_up"},       // Phi-3 / Phi-4 (fused; llama.cpp's phi3 ffn_up is [2*ff, hidden])
    {"mlp", "down_proj", "ffn_down"},        // all
    {"self_attn", "q_proj", "attn_q"},       // Qwen2
    {"self_attn", "k_proj", "attn_k"},
    {"self_attn", "v_proj", "attn_v"},
    {"mlp", "gate_proj", "ffn_gate"},
    {"mlp", "up_proj", "ffn_up"},
};

bool known_linear(std::string_view gguf) {
    for (const auto& l : kLinears)
        if (gguf == l.gguf) return true;
    return false;
}

bool consume(std::string_view& s, std::string_view prefix) {
    if (s.substr(0, prefix.size()) != prefix) return false;
    s.remove_prefix(prefix.size());
    return true;
}

// A non-negative decimal without leading zeros (and < 1e6) followed by '.'.
std::optional<int> consume_index(std::string_view& s) {
    size_t n = 0;
    while (n < s.size() && n < 7 && s[n] >= '0' && s[n] <= '9') ++n;
    if (n == 0 || n >= 7 || n >= s.size() || s[n] != '.' || (n > 1 && s[0] == '0')) return std::nullopt;
    int v = 0;
    for (size_t i = 0; i < n; ++i) v = v * 10 + (s[i] - '0');
    s.remove_prefix(n + 1);
    return v;
}

std::vector<float> dequantize_all(const Tensor& t) {
    std::vector<float> out(static_cast<size_t>(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r) dequantize_row(t.type, t.row(r), out.data() + r * t.cols(), t.cols());
    return out;
}

}  // namespace

std::string plugin_names::tensor(int layer, std::string_view linear, const char* part) {
    return "blk." + std::to_string(layer) + "." + std::string(linear) + "." + part;
}

std::optional<std::string> plugin_gguf_name(std::string_view key) {
    std::string_view s = key;
    if (s == "base_model.model.model.embed_tokens.weight") return std::string(plugin_names::kTokenEmbd);
    if (s == "base_model.model.lm_head.weight") return std::string(plugin_names::kOutput);
    if (consume(s, "base_model.model.model.mm_projector.")) {
        for (const char* idx : {"0", "2"})
            for (const char* kind : {"weight", "bias"})
                if (s == std::string(idx) + "." + kind) return "mm." + std::string(idx) + "." + kind;
        return std::nullopt;
    }
    if (!consume(s, "base_model.model.model.layers.")) return std::nullopt;
    const std::optional<int> layer = consume_index(s);
    if (!layer) return std::nullopt;
    for (const auto& l : kLinears) {
        std::string_view r = s;
        if (!consume(r, l.parent) || !consume(r, ".") || !consume(r, l.module) || !consume(r, ".")) continue;
        if (r == "lora_A.weight") return plugin_names::tensor(*layer, l.gguf, plugin_names::kA);
        if (r == "lora_B.weight") return plugin_names::tensor(*layer, l.gguf, plugin_names::kB);
        if (r == "lora_route.weight") return plugin_names::tensor(*layer, l.gguf, plugin_names::kRoute);
        return std::nullopt;
    }
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// One adapter

HLoraWeights HLoraWeights::bind(const WeightSource& src, const std::string& prefix, int64_t rank, int n_experts,
                                float scaling) {
    const char* o = src.origin.c_str();
    HG_CHECK(n_experts > 0 && rank > 0 && rank % n_experts == 0,
             "%s: H-LoRA rank %lld is not a positive multiple of the expert count %d", o, (long long)rank, n_experts);
    HG_CHECK(src.tensor, "%s: weight source cannot look up tensors", o);
    const std::string a_name = prefix + "." + plugin_names::kA;
    std::optional<Tensor> a = src.tensor(a_name);
    HG_CHECK(a.has_value(), "%s: tensor %s is missing", o, a_name.c_str());
    HG_CHECK(a->n_dims == 2, "%s: tensor %s has shape %s, expected [rank, in]", o, a_name.c_str(),
             a->shape_str().c_str());
    const int64_t d_in = a->shape[1];
    const std::string b_name = prefix + "." + plugin_names::kB;
    std::optional<Tensor> b = src.tensor(b_name);
    HG_CHECK(b.has_value(), "%s: tensor %s is missing", o, b_name.c_str());
    HG_CHECK(b->n_dims == 2, "%s: tensor %s has shape %s, expected [out, rank]", o, b_name.c_str(),
             b->shape_str().c_str());
    const int64_t d_out = b->shape[0];

    HLoraWeights w;
    w.A = require_matrix(src, a_name, {rank, d_in});
    w.B = require_matrix(src, b_name, {d_out, rank});
    w.route = require_matrix(src, prefix + "." + plugin_names::kRoute, {n_experts, d_in});
    w.n_experts = n_experts;
    w.scaling = scaling;
    return w;
}

void HLoraWeights::check_fits(const Tensor& W, const std::string& what) const {
    HG_CHECK(W.n_dims == 2 && W.shape[0] == d_out() && W.shape[1] == d_in(),
             "%s: the H-LoRA adapter maps %lld -> %lld but the linear is %s", what.c_str(), (long long)d_in(),
             (long long)d_out(), W.shape_str().c_str());
}

// ---------------------------------------------------------------------------------------------
// Forward

float hlora_scaling(double alpha, int64_t rank, int n_experts) {
    return static_cast<float>(alpha / static_cast<double>(rank) * n_experts);
}

void hlora_add(float* y, const float* x, int64_t M, const HLoraWeights& w, Arena& arena, ThreadPool& pool) {
    hlora_add(y, x, M, w, arena, pool, kernels());
}

void hlora_add(float* y, const float* x, int64_t M, const HLoraWeights& w, Arena& arena, ThreadPool& pool,
               const Kernels& K) {
    if (M <= 0) return;
    const int64_t r = w.rank(), n = w.n_experts, t = w.per_expert(), out = w.d_out();

    // g[M, n] = softmax(x · Rᵀ) over the experts
    float* g = arena.alloc<float>(M * n);
    K.matmul(g, x, w.route, nullptr, M, pool);
    K.softmax(g, M, n);

    // a[M, r] = x · Aᵀ, then a[m, j*t + i] *= s * g[m, j]   (repeat_interleave(g, t) ⊙ s·a)
    float* a = arena.alloc<float>(M * r);
    K.matmul(a, x, w.A, nullptr, M, pool);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < n; ++j) {
            const float gate = w.scaling * g[m * n + j];
            float* aj = a + m * r + j * t;
            for (int64_t i = 0; i < t; ++i) aj[i] *= gate;
        }

    // y[M, out] += a · Bᵀ
    float* d = arena.alloc<float>(M * out);
    K.matmul(d, a, w.B, nullptr, M, pool);
    K.add(y, y, d, M * out);
}

void hlora_backward(float* dx, const float* dy, const float* x, int64_t M, const HLoraWeights& w,
                    const GradSink* sink, ThreadPool& pool, const Kernels& K, const BackwardKernels& BK) {
    if (M <= 0) return;
    float* dA = sink ? sink->find(w.A.data) : nullptr;
    float* dB = sink ? sink->find(w.B.data) : nullptr;
    float* dR = sink ? sink->find(w.route.data) : nullptr;
    if (!dx && !dA && !dB && !dR) return;
    const int64_t r = w.rank(), n = w.n_experts, t = w.per_expert(), in = w.d_in(), out = w.d_out();
    const float s = w.scaling;

    // forward recomputed: g[M, n] = softmax(x·Rᵀ), u[M, r] = x·Aᵀ, h[M, r] = ĝ ⊙ s·u
    std::vector<float> g((size_t)(M * n)), u((size_t)(M * r)), h((size_t)(M * r));
    K.matmul(g.data(), x, w.route, nullptr, M, pool);
    K.softmax(g.data(), M, n);
    K.matmul(u.data(), x, w.A, nullptr, M, pool);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < r; ++c) h[(size_t)(m * r + c)] = s * g[(size_t)(m * n + c / t)] * u[(size_t)(m * r + c)];

    if (dB) BK.matmul_backward_w(dB, nullptr, dy, h.data(), M, out, r, pool);  // dB[out, r] += dyᵀ·h
    if (!dx && !dA && !dR) return;

    // dh[M, r] = dy·B
    std::vector<float> dh((size_t)(M * r), 0.0f);
    BK.matmul_backward_x(dh.data(), dy, w.B, M, pool);
    // du = dh ⊙ s·ĝ (reuses h's buffer);  dg_j = s·Σ_c dh_c·u_c over expert j's slots
    std::vector<float> dg((size_t)(M * n), 0.0f), dlogits((size_t)(M * n), 0.0f);
    float* du = h.data();
    for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < n; ++j) {
            const float gate = s * g[(size_t)(m * n + j)];
            float acc = 0;
            for (int64_t i = 0; i < t; ++i) {
                const size_t c = (size_t)(m * r + j * t + i);
                acc += dh[c] * u[c];
                du[c] = dh[c] * gate;
            }
            dg[(size_t)(m * n + j)] = s * acc;
        }
    softmax_backward(dlogits.data(), dg.data(), g.data(), M, n);

    if (dA) BK.matmul_backward_w(dA, nullptr, du, x, M, r, in, pool);               // dA[r, in] += duᵀ·x
    if (dR) BK.matmul_backward_w(dR, nullptr, dlogits.data(), x, M, n, in, pool);   // dR[n, in] += dlogitsᵀ·x
    if (dx) {
        BK.matmul_backward_x(dx, du, w.A, M, pool);               // dx += du·A
        BK.matmul_backward_x(dx, dlogits.data(), w.route, M, pool);  // dx += dlogits·R
    }
}

void hlora_add_ref(float* y, const float* x, int64_t M, const HLoraWeights& w) {
    const int64_t r = w.rank(), n = w.n_experts, t = w.per_expert(), in = w.d_in(), out = w.d_out();
    const std::vector<float> A = dequantize_all(w.A);      // [r, in]
    const std::vector<float> B = dequantize_all(w.B);      // [out, r]
    const std::vector<float> R = dequantize_all(w.route);  // [n, in]
    std::vector<double> logits(n), u(t);
    for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * in;
        // g = softmax(R · x)
        double mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
            double acc = 0;
            for (int64_t k = 0; k < in; ++k) acc += (double)R[j * in + k] * xm[k];
            logits[j] = acc;
            mx = std::max(mx, acc);
        }
        double sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += std::exp(logits[j] - mx);
        // y += s * g_j * B_j (A_j x), expert by expert
        for (int64_t j = 0; j < n; ++j) {
            const double gj = std::exp(logits[j] - mx) / sum;
            for (int64_t i = 0; i < t; ++i) {  // u = A_j x
                double acc = 0;
                for (int64_t k = 0; k < in; ++k) acc += (double)A[(j * t + i) * in + k] * xm[k];
                u[i] = acc;
            }
            for (int64_t o = 0; o < out; ++o) {
                double acc = 0;
                for (int64_t i = 0; i < t; ++i) acc += (double)B[o * r + j * t + i] * u[i];
                y[m * out + o] += (float)((double)w.scaling * gj * acc);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plugin

const char* plugin_task_name(PluginTask t) { return t == PluginTask::Generation ? "generation" : "comprehension"; }

HLoraPlugin HLoraPlugin::load(const WeightSource& src) {
    namespace k = plugin_keys;
    const char* o = src.origin.c_str();
    HLoraPlugin p;
    p.origin_ = src.origin;

    if (src.get_string) {
        if (auto type = src.get_string(k::kGeneralType))
            HG_CHECK(*type == "adapter", "%s: general.type is '%s', expected 'adapter' (a plugin file)", o,
                     type->c_str());
        if (auto proj = src.get_string(k::kProjectorType))
            HG_CHECK(*proj == "mlp2x_gelu", "%s: projector type '%s' is not supported (only mlp2x_gelu)", o,
                     proj->c_str());
    }
    const std::string task = require_string(src, k::kTask);
    if (task == "comprehension")
        p.task_ = PluginTask::Comprehension;
    else if (task == "generation")
        p.task_ = PluginTask::Generation;
    else
        fail("%s: %s is '%s', expected 'comprehension' or 'generation'", o, k::kTask, task.c_str());
    const int64_t vl = require_int(src, k::kVisionLayer);
    HG_CHECK(vl >= -1025 && vl <= 1024, "%s: %s = %lld is out of range", o, k::kVisionLayer, (long long)vl);
    p.vision_layer_ = static_cast<int>(vl);
    p.rank_ = require_int(src, k::kRank);
    const int64_t experts = require_int(src, k::kExperts);
    p.alpha_ = require_float(src, k::kAlpha);
    HG_CHECK(experts > 0 && experts <= 1024, "%s: %s = %lld is out of range", o, k::kExperts, (long long)experts);
    p.experts_ = static_cast<int>(experts);
    HG_CHECK(p.rank_ > 0 && p.rank_ <= 65536 && p.rank_ % p.experts_ == 0,
             "%s: H-LoRA rank %lld is not a positive multiple of the expert count %d", o, (long long)p.rank_,
             p.experts_);
    HG_CHECK(std::isfinite(p.alpha_) && p.alpha_ > 0, "%s: %s = %g is invalid", o, k::kAlpha, p.alpha_);
    p.scaling_ = hlora_scaling(p.alpha_, p.rank_, p.experts_);

    // Group the tensors: blk.{i}.{linear}.hlora_{a,b,route}, mm.*, the fusion rows; nothing else.
    HG_CHECK(src.tensor_names, "%s: weight source cannot list its tensors", o);
    std::map<std::string, std::set<std::string>> parts;  // "blk.i.linear" -> parts present
    for (const std::string& name : src.tensor_names()) {
        if (name.rfind("mm.", 0) == 0) {
            HG_CHECK(name == projector_names::kW0 || name == projector_names::kB0 || name == projector_names::kW2 ||
                         name == projector_names::kB2,
                     "%s: unexpected projector tensor %s (mlp2x_gelu has mm.0 and mm.2)", o, name.c_str());
            continue;
        }
        if (name == plugin_names::kTokenEmbd || name == plugin_names::kOutput) continue;
        std::string_view s = name;
        std::optional<int> layer;
        size_t dot = std::string_view::npos;
        if (consume(s, "blk.") && (layer = consume_index(s)) && (dot = s.rfind('.')) != std::string_view::npos) {
            const std::string_view linear = s.substr(0, dot), part = s.substr(dot + 1);
            HG_CHECK(known_linear(linear), "%s: tensor %s wraps an unknown linear '%.*s'", o, name.c_str(),
                     (int)linear.size(), linear.data());
            HG_CHECK(part == plugin_names::kA || part == plugin_names::kB || part == plugin_names::kRoute,
                     "%s: unexpected plugin tensor %s", o, name.c_str());
            parts[name.substr(0, name.size() - part.size() - 1)].insert(std::string(part));
            continue;
        }
        fail("%s: unexpected tensor %s in a plugin file", o, name.c_str());
    }
    HG_CHECK(!parts.empty(), "%s: the plugin has no H-LoRA tensors (blk.N.<linear>.hlora_*)", o);
    for (const auto& [prefix, have] : parts) {
        for (const char* need : {plugin_names::kA, plugin_names::kB, plugin_names::kRoute})
            HG_CHECK(have.count(need), "%s: tensor %s.%s is missing (its adapter is incomplete)", o, prefix.c_str(),
                     need);
        p.adapters_.emplace(prefix, HLoraWeights::bind(src, prefix, p.rank_, p.experts_, p.scaling_));
    }

    p.projector_.emplace(src);
    if (auto t = src.tensor(plugin_names::kTokenEmbd)) p.token_embd_ = *t;
    if (auto t = src.tensor(plugin_names::kOutput)) p.output_ = *t;
    HG_CHECK(p.token_embd_.has_value() == p.output_.has_value(), "%s: a plugin carries both %s and %s or neither", o,
             plugin_names::kTokenEmbd, plugin_names::kOutput);
    return p;
}

const HLoraWeights* HLoraPlugin::find(int layer, std::string_view linear) const {
    auto it = adapters_.find("blk." + std::to_string(layer) + "." + std::string(linear));
    return it == adapters_.end() ? nullptr : &it->second;
}

}  // namespace hg
