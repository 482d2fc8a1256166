// The kernels the models are built from. Every op has a scalar reference implementation
// (plain loops, shapes in comments: core/kernels/*_ref.cpp) and, where it matters, optimised
// ones (core/kernels/*_avx2.cpp, *_avx512.cpp) chosen at run time by CPUID. The conformance
// suite (tests/conformance) holds each optimised path to the reference.
//
// Conventions: activations are float32, row-major, contiguous unless a stride is given.
// Weights are Tensor views in any supported DType. Shapes in comments are PyTorch order.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/cpu_features.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace hg {

enum class RopeMode {
    RotateHalf,   // HF Llama/Phi-3/Qwen2: pairs (i, i + n_rot/2)
    Interleaved,  // GPT-J / llama2.c: pairs (2i, 2i+1)
};

struct AttentionParams {
    int n_head = 0;        // query heads
    int n_kv_head = 0;     // key/value heads (GQA: n_head % n_kv_head == 0)
    int head_dim = 0;
    float scale = 0;       // usually 1/sqrt(head_dim)
    bool causal = true;
    int64_t q_pos0 = 0;    // absolute position of the first query row (keys start at 0)
    int64_t window = 0;    // >0: query at p sees keys in (p - window, p]  (sliding window)
};

// Function table of one implementation level.
struct Kernels {
    const char* name;
    const char* choice;  // what each op of this level runs on, for `healthgpt info`

    // y[M,N] = x[M,K] · W[N,K]^T (+ bias[N]).  W: F32 F16 BF16 Q4_0 Q8_0 Q4_K Q6_K, packed rows.
    // y must not alias x. Semantics (the reference, kernels_ref.cpp, defines them exactly):
    //  * Quantized W (ggml's semantics): each row of x is quantized once to vec_dot_type(W)
    //    (Q8_0 for Q4_0/Q8_0, Q8_K for Q4_K/Q6_K, bit-identical to quantize_row), each block
    //    pair gives an exact integer dot product and one float term (block scales times that
    //    integer, see vec_dot_ref), and y is the float sum of the terms. Optimised paths are
    //    exact in the integers and differ from the reference only in the order and fusing
    //    (FMA) of the float operations: |y - y_ref| <= (n_terms + 16) * 2^-24 * S, S being
    //    vec_dot_ref's abs_terms (the conformance suite enforces this per element).
    //  * F32/F16/BF16 W: x stays float32 (it is NOT rounded to the weight type, unlike ggml);
    //    W is converted exactly to float32 and y = sum_k x_k * w_k. The reference sums in
    //    double; optimised paths sum in float32 in any order (|err| <= K * 2^-24 * sum |x_k w_k|).
    // K must be a whole number of W's blocks (any K for the float types).
    void (*matmul)(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool);

    // Attention over a KV store. q: [n_q, n_head, head_dim] with row stride q_stride (floats);
    // k, v: [n_kv, n_kv_head, head_dim] in kv_type (F32 or F16) with row stride kv_stride (bytes);
    // out: [n_q, n_head, head_dim] contiguous. Softmax in float32, no score matrix kept.
    void (*attention)(float* out, const float* q, int64_t n_q, size_t q_stride, const void* k, const void* v,
                      DType kv_type, int64_t n_kv, size_t kv_stride, const AttentionParams& p, ThreadPool& pool);

    // out[Cout, Ho, Wo] = conv2d(in[Cin, H, W], W[Cout, Cin, kh, kw]) + bias[Cout]; W in F32/F16/BF16.
    // Padding (top, left, bottom, right) with zeros; Ho = (H + pt + pb - kh) / stride + 1.
    // Memory-bounded: never materialises a full im2col buffer.
    void (*conv2d)(float* out, const float* in, int64_t Cin, int64_t H, int64_t W, const Tensor& weight,
                   const float* bias, int stride, int pad_t, int pad_l, int pad_b, int pad_r, ThreadPool& pool);

    // Row-wise ops over x[M, N].
    void (*rmsnorm)(float* y, const float* x, const float* w, int64_t M, int64_t N, float eps);
    void (*layernorm)(float* y, const float* x, const float* w, const float* b, int64_t M, int64_t N, float eps);
    void (*softmax)(float* x, int64_t M, int64_t N);  // in place, numerically safe

    // x[C, HW]: groups of C/G channels normalised together; w, b: [C].
    void (*groupnorm)(float* y, const float* x, const float* w, const float* b, int64_t C, int64_t HW, int groups,
                      float eps);

    // In place on x[n_tok, n_head, head_dim] (row stride `stride` floats per token):
    // rotates the first n_rot dims of each head by angle pos[t] * theta^(-2i/n_rot),
    // cos/sin computed in float32 exactly as HF does (inv_freq in float32, then pos * inv_freq).
    void (*rope)(float* x, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot, const int32_t* pos,
                 float theta, RopeMode mode);

    // Elementwise (n elements).
    void (*silu)(float* y, const float* x, int64_t n);
    void (*swiglu)(float* y, const float* gate, const float* up, int64_t n);  // y = silu(gate) * up
    void (*gelu_erf)(float* y, const float* x, int64_t n);    // exact GELU (nn.GELU())
    void (*gelu_tanh)(float* y, const float* x, int64_t n);   // GELU(approximate='tanh')
    void (*quick_gelu)(float* y, const float* x, int64_t n);  // x * sigmoid(1.702 x)
    void (*add)(float* y, const float* a, const float* b, int64_t n);
    void (*mul)(float* y, const float* a, const float* b, int64_t n);
    void (*scale)(float* y, const float* x, float s, int64_t n);

    // Activation quantization used by matmul: type Q8_0 or Q8_K, n a multiple of the block.
    // Bit-identical to quantize_row_q8_0 / quantize_row_q8_K (core/quants.h) for finite x.
    void (*quantize_act)(DType type, const float* x, void* y, int64_t n);
};

const Kernels& kernels_ref();              // scalar reference, always available
const Kernels* kernels_for(Isa isa);       // nullptr if not compiled in or not supported by this CPU
const Kernels& kernels();                  // the active level (isa_active())

// Second references, for tests and error reports (scalar, slow):
// y = x · dequantize(W)^T + bias accumulated in double, with x NOT quantized: the exact
// product of the stored weights and the float activations. matmul_ref minus this is the error
// that quantizing the activations adds.
void matmul_dequant_ref(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool);
// One reference row dot (ggml's vec_dot): w is a packed row of K values of type wt; a is the
// activation row in vec_dot_type(wt) (float32 for the float types). abs_terms (optional)
// receives sum |term| over the float terms, from which the conformance bounds are derived.
float vec_dot_ref(DType wt, const void* w, const void* a, int64_t K, double* abs_terms);

// Convenience wrappers on the active table.
inline void matmul(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool) {
    kernels().matmul(y, x, W, bias, M, pool);
}

// Not hot enough to need SIMD variants (one implementation each, core/kernels/misc.cpp):
// out[n, D] = rows ids[i] of table[V, D] (any supported dtype), dequantized. Throws on an id out of range.
void embedding_lookup(float* out, const Tensor& table, const int32_t* ids, int64_t n);
// out[C, 2H, 2W] = nearest-neighbour x2 upsample of in[C, H, W].
void upsample_nearest2x(float* out, const float* in, int64_t C, int64_t H, int64_t W);
// Index of the largest value; ties go to the lowest index (torch.argmax). NaN never wins.
int64_t argmax(const float* x, int64_t n);
// Indices of the k largest values, largest first; ties to the lower index. Returns count written.
int64_t topk(const float* x, int64_t n, int64_t k, int64_t* idx_out);

}  // namespace hg
