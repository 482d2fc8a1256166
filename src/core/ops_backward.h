// Backward passes of the ops in ops.h, for training (llm.c's *_forward / *_backward pairing).
//
// Every function here has a scalar reference (plain loops, double accumulation where a sum runs
// over a long axis: core/kernels/backward_ref.cpp) and, where it matters for speed, an optimised
// one (core/kernels/backward_avx2.cpp) chosen by the same dispatch as ops.h. tests/conformance
// holds the optimised path to the reference; tests/parity holds the reference to PyTorch autograd
// (float64 oracle, tests/reference/gen_train_ops.py).
//
// Conventions (the same for every function, so callers never guess):
//  * Shapes are PyTorch order, activations float32 row-major contiguous.
//  * Every gradient output ACCUMULATES (+=) into its buffer: the caller zeroes it once. This is
//    what residual branches, fused projections split into q/k/v, shared weights and gradient
//    accumulation over micro-batches all need.
//  * A gradient pointer may be nullptr: that gradient is not wanted (a frozen weight, an input
//    that needs no gradient) and is not computed.
//  * Forward values the backward needs are passed in explicitly (the caller saved or recomputed
//    them); nothing is cached behind the caller's back.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/ops.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace hg {

struct BackwardKernels {
    const char* name;

    // Forward: y[M,N] = x[M,K] · W[N,K]^T + b[N]  (ops.h matmul).
    // dx[M,K] += dy[M,N] · W[N,K], W in any stored type (F32 F16 BF16 Q4_0 Q8_0 Q4_K Q6_K), its
    // rows dequantized on the fly to float32 (dy is never quantized: the gradient through a frozen
    // quantized weight is the gradient through its dequantized values).
    void (*matmul_backward_x)(float* dx, const float* dy, const Tensor& W, int64_t M, ThreadPool& pool);
    // dW[N,K] += dy[M,N]^T · x[M,K];  db[N] += Σ_m dy[m,:]  (db may be nullptr). Trainable
    // weights are float32. Deterministic: the reduction over M runs in a fixed order that does
    // not depend on the thread count.
    void (*matmul_backward_w)(float* dW, float* db, const float* dy, const float* x, int64_t M, int64_t N, int64_t K,
                              ThreadPool& pool);

    // Attention for training: the whole sequence at once, K/V float32, no KV cache.
    // q: [T, n_head, hd] (row stride q_stride floats), k, v: [T, n_kv_head, hd] (row stride
    // kv_stride floats), out: [T, n_head, hd] contiguous; p as in ops.h (causal, window, GQA,
    // q_pos0 must be 0). lse[n_head, T] receives each query row's log-sum-exp of its scaled scores
    // (natural log), which the backward uses to recompute the probabilities tile by tile: no
    // [T, T] matrix per head is ever stored in the optimised path.
    void (*attention_forward)(float* out, float* lse, const float* q, size_t q_stride, const float* k,
                              const float* v, size_t kv_stride, int64_t T, const AttentionParams& p, ThreadPool& pool);
    // Given dout [T, n_head, hd] contiguous, the forward's q, k, v, out and lse: dq (stride
    // q_stride), dk, dv (stride kv_stride) accumulate. GQA: the gradients of the query heads that
    // share a KV head are summed into it.
    void (*attention_backward)(float* dq, float* dk, float* dv, const float* dout, const float* q, size_t q_stride,
                               const float* k, const float* v, size_t kv_stride, const float* out, const float* lse,
                               int64_t T, const AttentionParams& p, ThreadPool& pool);

    // y = x / sqrt(mean(x²) + eps) * w over rows x[M,N] (HF RMSNorm in float32).
    // dx[M,N] += ..., dw[N] += ... (dw may be nullptr).
    void (*rmsnorm_backward)(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t M,
                             int64_t N, float eps);
    // y = (x - mean) / sqrt(var + eps) * w + b (biased variance, nn.LayerNorm).
    void (*layernorm_backward)(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                               int64_t M, int64_t N, float eps);

    // RoPE is a rotation, so its backward rotates dy back by the same angles: in place on
    // dx[n_tok, n_head, head_dim] (row stride `stride` floats), arguments as ops.h rope.
    // freq_factors (nullptr = none) is Phi-3's su/longrope per-dimension divisor of inv_freq
    // [n_rot/2]; attn_factor multiplies cos and sin (1 when unscaled). The forward with the same
    // arguments is rope_forward below (the plain case equals ops.h rope).
    void (*rope_backward)(float* dx, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot,
                          const int32_t* pos, float theta, RopeMode mode, const float* freq_factors,
                          float attn_factor);

    // Elementwise (n elements), dx accumulates:
    // y = silu(gate) * up:  dgate += dy * up * silu'(gate), dup += dy * silu(gate)
    void (*swiglu_backward)(float* dgate, float* dup, const float* dy, const float* gate, const float* up, int64_t n);
    void (*gelu_erf_backward)(float* dx, const float* dy, const float* x, int64_t n);
    void (*gelu_tanh_backward)(float* dx, const float* dy, const float* x, int64_t n);
    void (*quick_gelu_backward)(float* dx, const float* dy, const float* x, int64_t n);
    void (*silu_backward)(float* dx, const float* dy, const float* x, int64_t n);
};

const BackwardKernels& backward_kernels_ref();
const BackwardKernels* backward_kernels_for(Isa isa);  // nullptr if not compiled in / not supported
const BackwardKernels& backward_kernels();             // the active level (same choice as kernels())

// RoPE forward with Phi-3 su/longrope factors (freq_factors [n_rot/2], attn_factor); with
// freq_factors == nullptr and attn_factor == 1 it is bit-identical to kernels().rope.
void rope_forward(float* x, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot, const int32_t* pos,
                  float theta, RopeMode mode, const float* freq_factors, float attn_factor);

// Softmax over the rows of x[M, N] given its output p (= softmax(x)): dx += p ⊙ (dp - Σ dp ⊙ p).
void softmax_backward(float* dx, const float* dp, const float* p, int64_t M, int64_t N);

// Embedding: out[n, D] = table[ids[i]]. dtable[V, D] += dout rows scattered to their ids
// (repeated ids sum, in order of i).
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t n, int64_t D);

// CLIP's patch embedding: a conv with kernel = stride = patch, no padding, no bias, is a matmul
// of the patch matrix. im2patch writes cols[n_patches, C*patch*patch] from pixels[C, H, W] in the
// order of W.view(hidden, -1) (c, ky, kx); patch2im adds cols' gradient back into dpixels.
void im2patch(float* cols, const float* pixels, int64_t C, int64_t H, int64_t W, int patch);
void patch2im(float* dpixels, const float* dcols, int64_t C, int64_t H, int64_t W, int patch);

// Cross-entropy over rows of logits[M, V] against targets[M] (ignore_index -100 skips a row),
// as torch.nn.functional.cross_entropy(reduction='sum'). Returns the summed loss (double) and
// the count of rows that were not ignored in *n_valid. If dlogits is not nullptr it is
// OVERWRITTEN (not accumulated: logits are a temporary) with grad_scale * (softmax - onehot) for
// each valid row and 0 for ignored rows; pass grad_scale = 1 / (tokens in the batch) for the
// mean reduction HF's LlamaForCausalLM-style loss uses.
double cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t M, int64_t V,
                     float grad_scale, int64_t* n_valid);

}  // namespace hg
