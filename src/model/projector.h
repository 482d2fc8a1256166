// The vision-language projector of LLaVA-1.5 / HealthGPT, type mlp2x_gelu:
//   y = Linear_2( GELU_erf( Linear_0(x) ) ),  Linear_0: d_vis -> H, Linear_2: H -> H, both with bias.
// Each HealthGPT plugin carries its own (COM and GEN differ); tensors mm.0.* and mm.2.* (index 1
// of the PyTorch Sequential is the parameter-free GELU).
#pragma once
#include <cstdint>
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

namespace projector_names {
inline constexpr const char* kW0 = "mm.0.weight";  // [H, d_vis]
inline constexpr const char* kB0 = "mm.0.bias";    // [H]
inline constexpr const char* kW2 = "mm.2.weight";  // [H, H]
inline constexpr const char* kB2 = "mm.2.bias";    // [H]
}  // namespace projector_names

// What Projector::forward_train keeps for Projector::backward (owned buffers, reused across calls).
struct ProjectorTrainState {
    int64_t M = 0;
    std::vector<float> x;    // [M, d_in]  the input (mm.0's input)
    std::vector<float> pre;  // [M, d_out] mm.0's output before the GELU
    const Kernels* kernels = nullptr;  // the forward table the pass ran with; backward recomputes GELU with it
};

class Projector {
public:
    // Binds mm.0/mm.2 from `src`; d_in and d_out are taken from mm.0.weight and checked against
    // every other tensor. If `expect_in` / `expect_out` are > 0 they must match too.
    explicit Projector(const WeightSource& src, int64_t expect_in = 0, int64_t expect_out = 0);

    int64_t d_in() const { return d_in_; }
    int64_t d_out() const { return d_out_; }

    // y[M, d_out] = mm.2(gelu(mm.0(x[M, d_in]))). Scratch [M, d_out] from `arena` (not reset here).
    void forward(float* y, const float* x, int64_t M, Arena& arena, ThreadPool& pool) const;

    // mm.0.weight, mm.0.bias, mm.2.weight, mm.2.bias: the bound matrices and F32 views of the
    // float32 bias copies this object holds.
    ParamRefs parameters() const;

    // forward() (bit for bit with the active table; `kernels` nullptr = active) keeping the input
    // and the pre-GELU activation in `saved`. Scratch [M, d_out] from `arena` (not reset here).
    void forward_train(float* y, const float* x, int64_t M, ProjectorTrainState& saved, Arena& arena,
                       ThreadPool& pool, const Kernels* kernels = nullptr) const;

    // Given dy[M, d_out], ACCUMULATES the gradients of the weights `sink` has buffers for and,
    // unless dx is nullptr, dx[M, d_in] += d loss / d x. Deterministic for any thread count.
    // Scratch from `arena` (not reset here); `bk` nullptr = the active backward table (backward_kernels()).
    void backward(const float* dy, const ProjectorTrainState& saved, const GradSink& sink, float* dx, Arena& arena,
                  ThreadPool& pool, const BackwardKernels* bk = nullptr) const;

private:
    int64_t d_in_ = 0, d_out_ = 0;
    Tensor w0_, w2_;
    std::vector<float> b0_, b2_;
};

}  // namespace hg
