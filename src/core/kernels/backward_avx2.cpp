// The fast level of the backward ops (core/ops_backward.h), compiled with AVX2/FMA (the _avx2.cpp
// suffix) so the float loops below vectorise. Blocked for the caches and threaded over disjoint
// outputs only: each output element is reduced in one fixed order (its own loop), which never
// depends on the thread count, so results are bit-identical for any number of threads.
// The elementwise ops and the norms are the reference ones (they are a small share of a step).
//   matmul dX:  dx[M,K] += dy[M,N]·W[N,K] — W dequantized and transposed once, then the forward GEMM
//   matmul dW:  dW[N,K] += dyᵀ·x, db       — dy and x transposed, then the forward GEMM
//   attention:  forward per (head, query row) with a log-sum-exp; backward in two passes that
//               recompute the probabilities from it: dq by query rows, dk/dv by key rows
// No [T, T] matrix is stored: each thread keeps one row of T scores.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/ops.h"
#include "core/ops_backward.h"
#include "core/quants.h"

namespace hg {

namespace {

// Row-major transpose of src[R, C] (float32) into dst[C, R], threaded over column blocks.
void transpose(float* dst, const float* src, int64_t R, int64_t C, ThreadPool& pool) {
    pool.parallel_for((C + 63) / 64, [&](int64_t b0, int64_t b1, int) {
        for (int64_t b = b0; b < b1; ++b)
            for (int64_t r0 = 0; r0 < R; r0 += 64)
                for (int64_t c = b * 64; c < std::min(C, (b + 1) * 64); ++c)
                    for (int64_t r = r0; r < std::min(R, r0 + 64); ++r) dst[c * R + r] = src[r * C + c];
    });
}

// dx[M,K] += dy[M,N] · W[N,K]. W is dequantized and transposed once per call into Wt[K, N]
// (float32), then the forward GEMM kernel computes dy · Wtᵀ: its reduction order per output never
// depends on the thread count (it splits over output panels), so neither does this.
void matmul_backward_x_fast(float* dx, const float* dy, const Tensor& W, int64_t M, ThreadPool& pool) {
    const int64_t N = W.rows(), K = W.cols();
    std::vector<float> w((size_t)(N * K)), wt((size_t)(N * K)), tmp((size_t)(M * K));
    pool.parallel_for(N, [&](int64_t n0, int64_t n1, int) {
        for (int64_t n = n0; n < n1; ++n) dequantize_row(W.type, W.row(n), w.data() + n * K, K);
    }, 16);
    transpose(wt.data(), w.data(), N, K, pool);
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

bool visible(const AttentionParams& p, int64_t i, int64_t j) {
    if (p.causal && j > i) return false;
    if (p.window > 0 && j <= i - p.window) return false;
    return true;
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

void attention_forward_fast(float* out, float* lse, const float* q, size_t qs, const float* k, const float* v,
                            size_t kvs, int64_t T, const AttentionParams& p, ThreadPool& pool) {
    const int H = p.n_head, D = p.head_dim, G = p.n_head / p.n_kv_head;
    pool.parallel_for((int64_t)H * T, [&](int64_t r0, int64_t r1, int) {
        std::vector<float> s((size_t)T);
        for (int64_t r = r0; r < r1; ++r) {
            const int h = (int)(r / T);
            const int64_t i = r % T;
            const int hk = h / G;
            const float* qi = q + i * qs + (size_t)h * D;
            int64_t lo, hi;
            key_range(p, T, i, &lo, &hi);
            float mx = -INFINITY;
            for (int64_t j = lo; j < hi; ++j) {
                s[(size_t)j] = dot(qi, k + j * kvs + (size_t)hk * D, D) * p.scale;
                mx = std::max(mx, s[(size_t)j]);
            }
            float sum = 0;
            for (int64_t j = lo; j < hi; ++j) sum += (s[(size_t)j] = std::exp(s[(size_t)j] - mx));
            float* oi = out + (i * H + h) * D;
            std::fill(oi, oi + D, 0.0f);
            const float inv = 1.0f / sum;
            for (int64_t j = lo; j < hi; ++j) {
                const float w = s[(size_t)j] * inv;
                const float* vj = v + j * kvs + (size_t)hk * D;
                for (int d = 0; d < D; ++d) oi[d] += w * vj[d];
            }
            lse[(size_t)h * T + i] = mx + std::log(sum);
        }
    });
}

void attention_backward_fast(float* dq, float* dk, float* dv, const float* dout, const float* q, size_t qs,
                             const float* k, const float* v, size_t kvs, const float* out, const float* lse, int64_t T,
                             const AttentionParams& p, ThreadPool& pool) {
    const int H = p.n_head, D = p.head_dim, Hk = p.n_kv_head, G = p.n_head / p.n_kv_head;
    // delta[h, i] = dout_i · out_i
    std::vector<float> delta((size_t)H * T);
    for (int h = 0; h < H; ++h)
        for (int64_t i = 0; i < T; ++i) delta[(size_t)h * T + i] = dot(dout + (i * H + h) * D, out + (i * H + h) * D, D);
    // pass 1, by query rows: dq_i += scale Σ_j P_ij (dP_ij - delta_i) k_j
    if (dq)
        pool.parallel_for((int64_t)H * T, [&](int64_t r0, int64_t r1, int) {
            for (int64_t r = r0; r < r1; ++r) {
                const int h = (int)(r / T);
                const int64_t i = r % T;
                const int hk = h / G;
                const float* qi = q + i * qs + (size_t)h * D;
                const float* doi = dout + (i * H + h) * D;
                float* dqi = dq + i * qs + (size_t)h * D;
                int64_t lo, hi;
                key_range(p, T, i, &lo, &hi);
                for (int64_t j = lo; j < hi; ++j) {
                    const float* kj = k + j * kvs + (size_t)hk * D;
                    const float pij = std::exp(dot(qi, kj, D) * p.scale - lse[(size_t)h * T + i]);
                    const float ds = pij * (dot(doi, v + j * kvs + (size_t)hk * D, D) - delta[(size_t)h * T + i]) * p.scale;
                    for (int d = 0; d < D; ++d) dqi[d] += ds * kj[d];
                }
            }
        });
    // pass 2, by key rows of each KV head: dv_j += Σ_{h in group, i} P_ij dout_i, dk_j += Σ scale dS_ij q_i
    if (dk || dv)
        pool.parallel_for((int64_t)Hk * T, [&](int64_t r0, int64_t r1, int) {
            for (int64_t r = r0; r < r1; ++r) {
                const int hk = (int)(r / T);
                const int64_t j = r % T;
                const float* kj = k + j * kvs + (size_t)hk * D;
                const float* vj = v + j * kvs + (size_t)hk * D;
                float* dkj = dk ? dk + j * kvs + (size_t)hk * D : nullptr;
                float* dvj = dv ? dv + j * kvs + (size_t)hk * D : nullptr;
                for (int g = 0; g < G; ++g) {
                    const int h = hk * G + g;
                    for (int64_t i = 0; i < T; ++i) {
                        if (!visible(p, i, j)) continue;
                        const float* qi = q + i * qs + (size_t)h * D;
                        const float* doi = dout + (i * H + h) * D;
                        const float pij = std::exp(dot(qi, kj, D) * p.scale - lse[(size_t)h * T + i]);
                        if (dvj)
                            for (int d = 0; d < D; ++d) dvj[d] += pij * doi[d];
                        if (dkj) {
                            const float ds = pij * (dot(doi, vj, D) - delta[(size_t)h * T + i]) * p.scale;
                            for (int d = 0; d < D; ++d) dkj[d] += ds * qi[d];
                        }
                    }
                }
            }
        });
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
