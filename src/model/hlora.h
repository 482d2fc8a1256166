// H-LoRA (HealthGPT's heterogeneous low-rank adapter), applied at run time, never merged.
//
// Per wrapped linear W [out, in] (healthgpt-reference.md §4): n experts, total rank r, t = r / n,
// s = alpha * n / r (= 8 for every release). For each token row x [in]:
//   g  = softmax(R·x)                [n]     router, per linear layer
//   a  = s · (A·x)                   [r]
//   ĝ  = repeat_interleave(g, t)     [r]     expert j owns rank slots [j·t, (j+1)·t)
//   y  = W·x + b + B·(ĝ ⊙ a)         [out]
// The adapter spans the whole output of a fused linear (Phi-3 qkv_proj, gate_up_proj): it is
// added before the q/k/v split and before the gate/up chunk.
//
// The decoder hook: every linear computes y = x·Wᵀ + b with the matmul kernel and then, when the
// active plugin wraps that linear, calls hlora_add(y, x, M, *adapter, arena, pool).
//
// A plugin file (GGUF, general.type = adapter) holds, for every wrapped linear,
//   blk.{i}.{linear}.hlora_a [r, in], .hlora_b [out, r], .hlora_route [n, in]
// with {linear} = llama.cpp's name of the wrapped weight, its projector mm.0/mm.2, its metadata
// (healthgpt.plugin.*) and, for generation plugins, the fusion rows token_embd.weight / output.weight.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/arena.h"
#include "core/ops.h"
#include "core/ops_backward.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "model/grad_sink.h"
#include "model/projector.h"
#include "model/weight_source.h"

namespace hg {

namespace plugin_keys {
inline constexpr const char* kGeneralType = "general.type";  // = "adapter"
inline constexpr const char* kTask = "healthgpt.plugin.task";                  // "comprehension" | "generation"
inline constexpr const char* kVisionLayer = "healthgpt.plugin.vision_layer";   // int32: -2 (COM) or 1 (GEN)
inline constexpr const char* kRank = "healthgpt.plugin.rank";                  // uint32: total rank r
inline constexpr const char* kAlpha = "healthgpt.plugin.alpha";                // float32
inline constexpr const char* kExperts = "healthgpt.plugin.experts";            // uint32: n (4)
inline constexpr const char* kProjectorType = "healthgpt.plugin.projector_type";  // "mlp2x_gelu"
inline constexpr const char* kBaseArchitecture = "healthgpt.plugin.base_architecture";  // phi3 | qwen2 | ...
}  // namespace plugin_keys

namespace plugin_names {
inline constexpr const char* kA = "hlora_a";          // [r, in]
inline constexpr const char* kB = "hlora_b";          // [out, r]
inline constexpr const char* kRoute = "hlora_route";  // [n, in]
inline constexpr const char* kTokenEmbd = "token_embd.weight";  // generation plugins: [V', hidden]
inline constexpr const char* kOutput = "output.weight";         // generation plugins: [V', hidden]
// "blk.{layer}.{linear}.{part}"
std::string tensor(int layer, std::string_view linear, const char* part);
}  // namespace plugin_names

// The GGUF name our converter writes for a key of a HealthGPT plugin file (com_hlora_weights*.bin,
// gen_hlora_weights.bin, fusion_layer_weights.bin), or nullopt for a key that is not part of a
// plugin. Phi-3/Phi-4 and Qwen2 module names both map (docs/MODELS.md has the table).
std::optional<std::string> plugin_gguf_name(std::string_view healthgpt_key);

// One wrapped linear's adapter: views into the plugin file plus the constants of the formula.
struct HLoraWeights {
    Tensor A;      // [r, in]
    Tensor B;      // [out, r]
    Tensor route;  // [n, in]
    int n_experts = 0;
    float scaling = 0;  // s = alpha * n / r

    int64_t rank() const { return A.shape[0]; }
    int64_t per_expert() const { return rank() / n_experts; }  // t
    int64_t d_in() const { return A.shape[1]; }
    int64_t d_out() const { return B.shape[0]; }

    // Binds {prefix}.hlora_{a,b,route} and checks their shapes agree (r % n == 0); throws otherwise.
    static HLoraWeights bind(const WeightSource& src, const std::string& prefix, int64_t rank, int n_experts,
                             float scaling);
    // Throws unless this adapter fits the linear W [out, in] (`what` names the linear in the message).
    void check_fits(const Tensor& W, const std::string& what) const;
};

// y[M, out] += B·(repeat_interleave(softmax(x·Rᵀ), t) ⊙ s·(x·Aᵀ)) for x[M, in].
// Fast path: one matmul for the router [M, n], one for A [M, r] with the gate fused into its
// output, one for B [M, out] accumulated into y. Scratch from `arena` (not reset here).
void hlora_add(float* y, const float* x, int64_t M, const HLoraWeights& w, Arena& arena, ThreadPool& pool);
// The same with an explicit kernel table (the conformance suite runs every table).
void hlora_add(float* y, const float* x, int64_t M, const HLoraWeights& w, Arena& arena, ThreadPool& pool,
               const Kernels& k);

// Reference for hlora_add: plain loops, per expert (y += s·Σ_j g_j·B_j·(A_j·x)), double
// accumulation, no kernels. For tests.
void hlora_add_ref(float* y, const float* x, int64_t M, const HLoraWeights& w);

// Backward of hlora_add (training). Given the input x[M, in] and the gradient dy[M, out] of y:
//   dx[M, in] += gradient through the adapter (dx may be nullptr: not wanted),
//   and, for each of A, B, route that `sink` has a buffer for, its gradient (accumulated).
// g and a are recomputed from x (two skinny matmuls) rather than kept from the forward:
//   u = x·Aᵀ [M, r], h = repeat_interleave(g, t) ⊙ s·u, y += h·Bᵀ
//   dB += dyᵀ·h;  dh = dy·B;  du = dh ⊙ s·ĝ;  dg_j = s·Σ_{c in expert j} dh_c·u_c
//   dlogits = softmax_backward(dg, g);  dA += duᵀ·x;  dR += dlogitsᵀ·x;  dx += du·A + dlogits·R
void hlora_backward(float* dx, const float* dy, const float* x, int64_t M, const HLoraWeights& w,
                    const GradSink* sink, ThreadPool& pool, const Kernels& k, const BackwardKernels& bk);

// s = alpha / r * n, evaluated in double as the reference's Python does, used in float32.
float hlora_scaling(double alpha, int64_t rank, int n_experts);

enum class PluginTask { Comprehension, Generation };
const char* plugin_task_name(PluginTask t);

// A loaded plugin: its adapters by wrapped linear, its projector, its vision layer and task.
class HLoraPlugin {
public:
    // Reads healthgpt.plugin.* and binds every blk.*.*.hlora_* triple and the projector.
    // Throws (naming the file and tensor) on missing/extra parts, shape or rank mismatches.
    static HLoraPlugin load(const WeightSource& src);

    const std::string& origin() const { return origin_; }
    PluginTask task() const { return task_; }
    int vision_layer() const { return vision_layer_; }
    int64_t rank() const { return rank_; }
    double alpha() const { return alpha_; }
    int experts() const { return experts_; }
    float scaling() const { return scaling_; }
    const Projector& projector() const { return *projector_; }
    const std::map<std::string, HLoraWeights>& adapters() const { return adapters_; }  // key "blk.{i}.{linear}"

    // The adapter of linear `linear` (llama.cpp name, e.g. "attn_qkv") in block `layer`; nullptr if
    // the plugin does not wrap it.
    const HLoraWeights* find(int layer, std::string_view linear) const;

    // Generation plugins' resized embedding table and head (nullopt when absent).
    const std::optional<Tensor>& token_embd() const { return token_embd_; }
    const std::optional<Tensor>& output() const { return output_; }

private:
    std::string origin_;
    PluginTask task_ = PluginTask::Comprehension;
    int vision_layer_ = -2;
    int64_t rank_ = 0;
    double alpha_ = 0;
    int experts_ = 0;
    float scaling_ = 0;
    std::optional<Projector> projector_;
    std::map<std::string, HLoraWeights> adapters_;
    std::optional<Tensor> token_embd_, output_;
};

}  // namespace hg
