// The fast level of the backward ops (core/ops_backward.h), compiled with AVX2/FMA (the _avx2.cpp
// suffix) so the float loops below vectorise. Blocked for the caches and threaded over disjoint
// outputs only: each output element is reduced in one fixed order (its own loop), which never
// depends on the thread count, so results are bit-identical for any number of threads.
// The elementwise ops and the norms are the reference ones (they are a small share of a step).
//   matmul dX:  dx[M,K] += dy[M,N]·W[N,K] — W dequantized and transposed once, then the forward GEMM
//   matmul dW:  dW[N,K] += dyᵀ·x, db       — dy and x transposed, then the forward GEMM
//   attention:  per head through the same GEMM: P = softmax(scale Q Kᵀ) as a [T, T] matrix with
//               each row's log-sum-exp kept; the backward recomputes P from it (one head's [T, T]
//               scores at a time: T = 2048 needs 16 MiB per buffer)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/ops.h"
#include "core/ops_backward.h"
#include "core/kernels/simd_avx2.h"
#include "core/quants.h"

namespace hg {

namespace {

// dst[8 x 8 at stride ds] = transpose of src[8 x 8 at stride ss] (exact: it only moves values).
[[gnu::always_inline]] inline void transpose8x8(float* d, size_t ds, const float* s, size_t ss) {
    __m256 v[8];
    for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(s + i * ss);
    avx2::transpose8_ps(v);
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(d + i * ds, v[i]);
}

// Row-major transpose of src[R, C] (float32) into dst[C, R], threaded over column blocks of 64;
// 8 x 8 register tiles inside, element by element at the ragged edges.
void transpose(float* dst, const float* src, int64_t R, int64_t C, ThreadPool& pool) {
    pool.parallel_for((C + 63) / 64, [&](int64_t b0, int64_t b1, int) {
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t c0 = b * 64, c1 = std::min(C, c0 + 64), c8 = c0 + (c1 - c0) / 8 * 8;
            for (int64_t r0 = 0; r0 < R; r0 += 64) {
                const int64_t r1 = std::min(R, r0 + 64), r8 = r0 + (r1 - r0) / 8 * 8;
                for (int64_t c = c0; c < c8; c += 8)
                    for (int64_t r = r0; r < r8; r += 8) transpose8x8(dst + c * R + r, (size_t)R, src + r * C + c, (size_t)C);
                for (int64_t c = c0; c < c1; ++c)  // the edges: rows past r8, and columns past c8
                    for (int64_t r = (c < c8 ? r8 : r0); r < r1; ++r) dst[c * R + r] = src[r * C + c];
            }
        }
    });
}

// dx[M,K] += dy[M,N] · W[N,K]. W is dequantized and transposed once per call into Wt[K, N]
// (float32), then the forward GEMM kernel computes dy · Wtᵀ: its reduction order per output never
// depends on the thread count (it splits over output panels), so neither does this.
void matmul_backward_x_fast(float* dx, const float* dy, const Tensor& W, int64_t M, ThreadPool& pool) {
    const int64_t N = W.rows(), K = W.cols();
    std::vector<float> w, wt((size_t)(N * K)), tmp((size_t)(M * K));
    const float* wf = nullptr;  // W as float32 [N, K]: the tensor's own bytes when it is F32
    if (W.type == DType::F32) {
        wf = (const float*)W.row(0);
    } else {
        w.resize((size_t)(N * K));
        pool.parallel_for(N, [&](int64_t n0, int64_t n1, int) {
            for (int64_t n = n0; n < n1; ++n) dequantize_row(W.type, W.row(n), w.data() + n * K, K);
        }, 16);
        wf = w.data();
    }
    transpose(wt.data(), wf, N, K, pool);
    w = {};
    const Tensor Wt = Tensor::view(DType::F32, {K, N}, wt.data());
    kernels().matmul(tmp.data(), dy, Wt, nullptr, M, pool);
    pool.parallel_for(M * K, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) dx[i] += tmp[(size_t)i];
    }, 4096);
}

// dW[N,K] += dyᵀ · x = matmul(dyᵀ [N, M], xᵀ [K, M]); db[N] += Σ_m dy.
void matmul_backward_w_fast(float* dW, float* db, const float* dy, const float* x, int64_t M, int64_t N, int64_t K,
                            ThreadPool& pool) {
    if (dW) {
        std::vector<float> dyt((size_t)(N * M)), xt((size_t)(K * M)), tmp((size_t)(N * K));
        transpose(dyt.data(), dy, M, N, pool);
        transpose(xt.data(), x, M, K, pool);
        const Tensor Xt = Tensor::view(DType::F32, {K, M}, xt.data());
        kernels().matmul(tmp.data(), dyt.data(), Xt, nullptr, N, pool);
        pool.parallel_for(N * K, [&](int64_t i0, int64_t i1, int) {
            for (int64_t i = i0; i < i1; ++i) dW[i] += tmp[(size_t)i];
        }, 4096);
    }
    if (db)
        for (int64_t n = 0; n < N; ++n) {
            float s = 0;
            for (int64_t m = 0; m < M; ++m) s += dy[m * N + n];
            db[n] += s;
        }
}

// Keys query i sees: [lo, hi)
void key_range(const AttentionParams& p, int64_t T, int64_t i, int64_t* lo, int64_t* hi) {
    *hi = p.causal ? i + 1 : T;
    *lo = p.window > 0 ? std::max<int64_t>(0, i - p.window + 1) : 0;
}

float dot(const float* a, const float* b, int D) {
    float s = 0;
    for (int d = 0; d < D; ++d) s += a[d] * b[d];
    return s;
}

// Per-head copies of the strided q/k/v/dout rows: x[t, h*D .. h*D+D) -> dst[t, D].
void gather_head(float* dst, const float* src, size_t stride, int64_t T, int D, int h) {
    for (int64_t t = 0; t < T; ++t) std::memcpy(dst + t * D, src + t * stride + (size_t)h * D, sizeof(float) * D);
}

// y[M, N] = x[M, K] · w[N, K]ᵀ through the forward GEMM (bit-identical for any thread count).
void gemm_nt(float* y, const float* x, const float* w, int64_t M, int64_t N, int64_t K, ThreadPool& pool) {
    const Tensor W = Tensor::view(DType::F32, {N, K}, const_cast<float*>(w));
    kernels().matmul(y, x, W, nullptr, M, pool);
}

// Scores of one head as a [T, T] matrix through the GEMM: S = Q Kᵀ, then per row the mask, the
// scale and the softmax with the given log-sum-exp (backward) or one computed into lse_out (forward). Invisible entries are 0
// after the softmax. Each row is reduced serially in key order, so the result does not depend on
// the thread count.
void head_probabilities(float* P, const float* Qh, const float* Kh, int64_t T, int D, const AttentionParams& p,
                        const float* lse_known, float* lse_out, ThreadPool& pool) {
    gemm_nt(P, Qh, Kh, T, T, D, pool);
    pool.parallel_for(T, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) {
            float* r = P + i * T;
            int64_t lo, hi;
            key_range(p, T, i, &lo, &hi);
            const __m256 vs = _mm256_set1_ps(p.scale);
            const int64_t hi8 = lo + (hi - lo) / 8 * 8;
            if (!lse_known) {  // forward: the row's log-sum-exp (8 lanes, then the lanes in a fixed order)
                float mx = -INFINITY;
                for (int64_t j = lo; j < hi; ++j) mx = std::max(mx, r[j] * p.scale);
                const __m256 vm = _mm256_set1_ps(mx);
                __m256 acc = _mm256_setzero_ps();
                for (int64_t j = lo; j < hi8; j += 8)
                    acc = _mm256_add_ps(acc, avx2::exp_ps(_mm256_fmsub_ps(_mm256_loadu_ps(r + j), vs, vm)));
                float sum = avx2::hsum(acc);
                for (int64_t j = hi8; j < hi; ++j) sum += std::exp(r[j] * p.scale - mx);
                lse_out[i] = mx + std::log(sum);
            }
            const float l = lse_known ? lse_known[i] : lse_out[i];
            const __m256 vl = _mm256_set1_ps(l);
            for (int64_t j = 0; j < lo; ++j) r[j] = 0;
            for (int64_t j = lo; j < hi8; j += 8)
                _mm256_storeu_ps(r + j, avx2::exp_ps(_mm256_fmsub_ps(_mm256_loadu_ps(r + j), vs, vl)));
            for (int64_t j = hi8; j < hi; ++j) r[j] = std::exp(r[j] * p.scale - l);
            for (int64_t j = hi; j < T; ++j) r[j] = 0;
        }
    }, 8);
}

// Forward, one head at a time: P = softmax(scale Q Kᵀ + mask) as a [T, T] matrix, O = P V, with
// the log-sum-exp of each row kept for the backward. The matmuls run on the forward GEMM kernel.
void attention_forward_fast(float* out, float* lse, const float* q, size_t qs, const float* k, const float* v,
                            size_t kvs, int64_t T, const AttentionParams& p, ThreadPool& pool) {
    const int H = p.n_head, D = p.head_dim, G = p.n_head / p.n_kv_head;
    std::vector<float> Qh((size_t)(T * D)), Kh((size_t)(T * D)), Vt((size_t)(D * T)), tmp((size_t)(T * D));
    std::vector<float> P((size_t)(T * T));
    for (int h = 0; h < H; ++h) {
        const int hk = h / G;
        gather_head(Qh.data(), q, qs, T, D, h);
        if (h % G == 0) {
            gather_head(Kh.data(), k, kvs, T, D, hk);
            gather_head(tmp.data(), v, kvs, T, D, hk);
            transpose(Vt.data(), tmp.data(), T, D, pool);  // Vᵀ [D, T]
        }
        head_probabilities(P.data(), Qh.data(), Kh.data(), T, D, p, nullptr, lse + (size_t)h * T, pool);
        gemm_nt(tmp.data(), P.data(), Vt.data(), T, D, T, pool);  // O_h = P V
        for (int64_t i = 0; i < T; ++i) std::memcpy(out + (i * H + h) * D, tmp.data() + i * D, sizeof(float) * D);
    }
}

// Backward, one head at a time, all through the GEMM:
//   P recomputed from the log-sum-exp;  dP = dO Vᵀ;  dS = scale P ∘ (dP - delta), delta_i = dO_i · O_i
//   dQ += dS K;  dK += dSᵀ Q;  dV += Pᵀ dO   (GQA: a KV head sums its query heads in head order)
void attention_backward_fast(float* dq, float* dk, float* dv, const float* dout, const float* q, size_t qs,
                             const float* k, const float* v, size_t kvs, const float* out, const float* lse, int64_t T,
                             const AttentionParams& p, ThreadPool& pool) {
    const int H = p.n_head, D = p.head_dim, G = p.n_head / p.n_kv_head;
    const size_t TD = (size_t)(T * D), TT = (size_t)(T * T);
    std::vector<float> Qh(TD), Kh(TD), Vh(TD), dOh(TD), Oh(TD), Kt(TD), Qt(TD), dOt(TD), tmp(TD);
    std::vector<float> P(TT), dS(TT), Tt(TT), delta((size_t)T);
    for (int h = 0; h < H; ++h) {
        const int hk = h / G;
        gather_head(Qh.data(), q, qs, T, D, h);
        if (h % G == 0) {
            gather_head(Kh.data(), k, kvs, T, D, hk);
            gather_head(Vh.data(), v, kvs, T, D, hk);
            transpose(Kt.data(), Kh.data(), T, D, pool);  // Kᵀ [D, T]
        }
        for (int64_t i = 0; i < T; ++i) {
            std::memcpy(dOh.data() + i * D, dout + (i * H + h) * D, sizeof(float) * D);
            std::memcpy(Oh.data() + i * D, out + (i * H + h) * D, sizeof(float) * D);
            delta[(size_t)i] = dot(dOh.data() + i * D, Oh.data() + i * D, D);
        }
        head_probabilities(P.data(), Qh.data(), Kh.data(), T, D, p, lse + (size_t)h * T, nullptr, pool);
        gemm_nt(dS.data(), dOh.data(), Vh.data(), T, T, D, pool);  // dP = dO Vᵀ
        pool.parallel_for(T, [&](int64_t i0, int64_t i1, int) {
            for (int64_t i = i0; i < i1; ++i)
                for (int64_t j = 0; j < T; ++j)
                    dS[(size_t)(i * T + j)] = P[(size_t)(i * T + j)] * (dS[(size_t)(i * T + j)] - delta[(size_t)i]) * p.scale;
        }, 8);
        if (dq) {
            gemm_nt(tmp.data(), dS.data(), Kt.data(), T, D, T, pool);  // dS K
            for (int64_t i = 0; i < T; ++i) {
                float* dqi = dq + i * qs + (size_t)h * D;
                for (int d = 0; d < D; ++d) dqi[d] += tmp[(size_t)(i * D + d)];
            }
        }
        if (dk) {
            transpose(Tt.data(), dS.data(), T, T, pool);  // dSᵀ
            transpose(Qt.data(), Qh.data(), T, D, pool);  // Qᵀ [D, T]
            gemm_nt(tmp.data(), Tt.data(), Qt.data(), T, D, T, pool);
            for (int64_t j = 0; j < T; ++j) {
                float* dkj = dk + j * kvs + (size_t)hk * D;
                for (int d = 0; d < D; ++d) dkj[d] += tmp[(size_t)(j * D + d)];
            }
        }
        if (dv) {
            transpose(Tt.data(), P.data(), T, T, pool);      // Pᵀ
            transpose(dOt.data(), dOh.data(), T, D, pool);   // dOᵀ [D, T]
            gemm_nt(tmp.data(), Tt.data(), dOt.data(), T, D, T, pool);
            for (int64_t j = 0; j < T; ++j) {
                float* dvj = dv + j * kvs + (size_t)hk * D;
                for (int d = 0; d < D; ++d) dvj[d] += tmp[(size_t)(j * D + d)];
            }
        }
    }
}

}  // namespace

const BackwardKernels* backward_kernels_avx2_table() {
    static const BackwardKernels t = [] {
        BackwardKernels b = backward_kernels_ref();
        b.name = "avx2";
        b.matmul_backward_x = matmul_backward_x_fast;
        b.matmul_backward_w = matmul_backward_w_fast;
        b.attention_forward = attention_forward_fast;
        b.attention_backward = attention_backward_fast;
        return b;
    }();
    return &t;
}

}  // namespace hg
