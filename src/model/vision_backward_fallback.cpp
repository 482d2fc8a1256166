// FALLBACK, to be removed once core/kernels/backward_ref.cpp lands: see vision_backward_fallback.h.
#include "model/vision_backward_fallback.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/quants.h"

namespace hg::vision_fallback {
namespace {

// dx[M, K] += dy[M, N] · W[N, K], W's rows dequantized to float32. Rows of dx are independent.
void matmul_backward_x(float* dx, const float* dy, const Tensor& W, int64_t M, ThreadPool& pool) {
    const int64_t N = W.shape[0], K = W.cols();
    std::vector<float> w(static_cast<size_t>(N * K));  // [N, K]
    for (int64_t n = 0; n < N; ++n) dequantize_row(W.type, W.row(n), w.data() + n * K, K);
    pool.parallel_for(M, [&](int64_t m0, int64_t m1, int) {
        std::vector<double> acc(static_cast<size_t>(K));
        for (int64_t m = m0; m < m1; ++m) {
            std::fill(acc.begin(), acc.end(), 0.0);
            for (int64_t n = 0; n < N; ++n) {
                const double g = dy[m * N + n];
                const float* wr = w.data() + n * K;
                for (int64_t k = 0; k < K; ++k) acc[k] += g * wr[k];
            }
            for (int64_t k = 0; k < K; ++k) dx[m * K + k] += static_cast<float>(acc[k]);
        }
    });
}

// dW[N, K] += dy[M, N]ᵀ · x[M, K], db[N] += Σ_m dy[m, :]. Each output row n is one thread's, its
// sum over m in order: the same for any thread count.
void matmul_backward_w(float* dW, float* db, const float* dy, const float* x, int64_t M, int64_t N, int64_t K,
                       ThreadPool& pool) {
    pool.parallel_for(N, [&](int64_t n0, int64_t n1, int) {
        std::vector<double> acc(static_cast<size_t>(K));
        for (int64_t n = n0; n < n1; ++n) {
            if (dW) {
                std::fill(acc.begin(), acc.end(), 0.0);
                for (int64_t m = 0; m < M; ++m) {
                    const double g = dy[m * N + n];
                    const float* xr = x + m * K;
                    for (int64_t k = 0; k < K; ++k) acc[k] += g * xr[k];
                }
                for (int64_t k = 0; k < K; ++k) dW[n * K + k] += static_cast<float>(acc[k]);
            }
            if (db) {
                double s = 0;
                for (int64_t m = 0; m < M; ++m) s += dy[m * N + n];
                db[n] += static_cast<float>(s);
            }
        }
    });
}

void check_attention(const AttentionParams& p) {
    HG_CHECK(p.n_head > 0 && p.n_kv_head > 0 && p.n_head % p.n_kv_head == 0 && p.q_pos0 == 0,
             "training attention: invalid head counts %d / %d or q_pos0 %lld", p.n_head, p.n_kv_head,
             (long long)p.q_pos0);
}

bool visible(const AttentionParams& p, int64_t i, int64_t j) {
    if (p.causal && j > i) return false;
    if (p.window > 0 && j <= i - p.window) return false;
    return true;
}

// scores s[j] = scale · q_i·k_j over the keys query i sees (others -inf).
void scores(double* s, const float* qi, const float* k, size_t kv_stride, int64_t T, int kh, int hd, int64_t i,
            const AttentionParams& p) {
    for (int64_t j = 0; j < T; ++j) {
        if (!visible(p, i, j)) {
            s[j] = -INFINITY;
            continue;
        }
        const float* kj = k + j * kv_stride + kh * hd;
        double d = 0;
        for (int e = 0; e < hd; ++e) d += (double)qi[e] * kj[e];
        s[j] = d * p.scale;
    }
}

// out[T, H, hd] = softmax(scale · q kᵀ) v per head; lse[H, T]. Parallel over KV heads: every
// output slice belongs to one of them.
void attention_forward(float* out, float* lse, const float* q, size_t q_stride, const float* k, const float* v,
                       size_t kv_stride, int64_t T, const AttentionParams& p, ThreadPool& pool) {
    check_attention(p);
    const int H = p.n_head, hd = p.head_dim, group = p.n_head / p.n_kv_head;
    pool.parallel_for(p.n_kv_head, [&](int64_t kh0, int64_t kh1, int) {
        std::vector<double> s(static_cast<size_t>(T)), o(static_cast<size_t>(hd));
        for (int64_t kh = kh0; kh < kh1; ++kh)
            for (int h = (int)kh * group; h < (int)(kh + 1) * group; ++h)
                for (int64_t i = 0; i < T; ++i) {
                    scores(s.data(), q + i * q_stride + h * hd, k, kv_stride, T, (int)kh, hd, i, p);
                    double mx = -INFINITY;
                    for (int64_t j = 0; j < T; ++j) mx = std::max(mx, s[j]);
                    double z = 0;
                    for (int64_t j = 0; j < T; ++j) z += std::exp(s[j] - mx);
                    std::fill(o.begin(), o.end(), 0.0);
                    for (int64_t j = 0; j < T; ++j) {
                        const double pj = std::exp(s[j] - mx) / z;
                        if (pj == 0) continue;
                        const float* vj = v + j * kv_stride + kh * hd;
                        for (int e = 0; e < hd; ++e) o[e] += pj * vj[e];
                    }
                    for (int e = 0; e < hd; ++e) out[(i * H + h) * hd + e] = static_cast<float>(o[e]);
                    lse[h * T + i] = static_cast<float>(mx + std::log(z));
                }
    });
}

// P = exp(s - lse); dv += Pᵀ dout; dP = dout vᵀ; ds = P ⊙ (dP - rowsum(dout ⊙ out)); dq += scale ds k,
// dk += scale dsᵀ q. Parallel over KV heads (a KV head's dk/dv rows are summed by one thread).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, size_t q_stride,
                        const float* k, const float* v, size_t kv_stride, const float* out, const float* lse,
                        int64_t T, const AttentionParams& p, ThreadPool& pool) {
    check_attention(p);
    const int H = p.n_head, hd = p.head_dim, group = p.n_head / p.n_kv_head;
    pool.parallel_for(p.n_kv_head, [&](int64_t kh0, int64_t kh1, int) {
        std::vector<double> s(static_cast<size_t>(T));
        for (int64_t kh = kh0; kh < kh1; ++kh)
            for (int h = (int)kh * group; h < (int)(kh + 1) * group; ++h)
                for (int64_t i = 0; i < T; ++i) {
                    const float* qi = q + i * q_stride + h * hd;
                    const float* gi = dout + (i * H + h) * hd;
                    const float* oi = out + (i * H + h) * hd;
                    scores(s.data(), qi, k, kv_stride, T, (int)kh, hd, i, p);
                    double delta = 0;  // Σ_e dout ⊙ out = Σ_j P_j dP_j
                    for (int e = 0; e < hd; ++e) delta += (double)gi[e] * oi[e];
                    for (int64_t j = 0; j < T; ++j) {
                        if (s[j] == -INFINITY) continue;
                        const double pj = std::exp(s[j] - (double)lse[h * T + i]);
                        const float* kj = k + j * kv_stride + kh * hd;
                        const float* vj = v + j * kv_stride + kh * hd;
                        double dpj = 0;
                        for (int e = 0; e < hd; ++e) dpj += (double)gi[e] * vj[e];
                        const double ds = pj * (dpj - delta) * p.scale;
                        float* dvj = dv + j * kv_stride + kh * hd;
                        float* dkj = dk + j * kv_stride + kh * hd;
                        float* dqi = dq + i * q_stride + h * hd;
                        for (int e = 0; e < hd; ++e) {
                            if (dv) dvj[e] += static_cast<float>(pj * gi[e]);
                            if (dk) dkj[e] += static_cast<float>(ds * qi[e]);
                            if (dq) dqi[e] += static_cast<float>(ds * kj[e]);
                        }
                    }
                }
    });
}

// y = (x - mean) / sqrt(var + eps) * w + b over rows of x[M, N]:
// dx = rstd · (dy⊙w - mean(dy⊙w) - x̂ · mean(dy⊙w⊙x̂)), dw += Σ dy⊙x̂, db += Σ dy (rows in order).
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t M,
                        int64_t N, float eps) {
    std::vector<double> xhat(static_cast<size_t>(N));
    for (int64_t m = 0; m < M; ++m) {
        const float* xr = x + m * N;
        const float* g = dy + m * N;
        double mean = 0, var = 0;
        for (int64_t n = 0; n < N; ++n) mean += xr[n];
        mean /= (double)N;
        for (int64_t n = 0; n < N; ++n) var += (xr[n] - mean) * (xr[n] - mean);
        var /= (double)N;
        const double rstd = 1.0 / std::sqrt(var + (double)eps);
        double mean_gw = 0, mean_gwx = 0;
        for (int64_t n = 0; n < N; ++n) {
            xhat[n] = (xr[n] - mean) * rstd;
            const double gw = (double)g[n] * w[n];
            mean_gw += gw;
            mean_gwx += gw * xhat[n];
            if (dw) dw[n] += static_cast<float>(g[n] * xhat[n]);
            if (db) db[n] += g[n];
        }
        mean_gw /= (double)N;
        mean_gwx /= (double)N;
        if (dx)
            for (int64_t n = 0; n < N; ++n)
                dx[m * N + n] += static_cast<float>(rstd * ((double)g[n] * w[n] - mean_gw - xhat[n] * mean_gwx));
    }
}

// gelu(x) = x Φ(x): gelu'(x) = Φ(x) + x φ(x)
void gelu_erf_backward(float* dx, const float* dy, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        const double cdf = 0.5 * (1.0 + std::erf(v / std::sqrt(2.0)));
        const double pdf = std::exp(-0.5 * v * v) / std::sqrt(2.0 * M_PI);
        dx[i] += static_cast<float>(dy[i] * (cdf + v * pdf));
    }
}

// quick_gelu(x) = x σ(1.702 x): derivative σ + 1.702 x σ (1 - σ)
void quick_gelu_backward(float* dx, const float* dy, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        const double s = 1.0 / (1.0 + std::exp(-1.702 * v));
        dx[i] += static_cast<float>(dy[i] * (s + 1.702 * v * s * (1.0 - s)));
    }
}

BackwardKernels make_table() {
    BackwardKernels t{};
    t.name = "vision fallback (scalar)";
    t.matmul_backward_x = matmul_backward_x;
    t.matmul_backward_w = matmul_backward_w;
    t.attention_forward = attention_forward;
    t.attention_backward = attention_backward;
    t.layernorm_backward = layernorm_backward;
    t.gelu_erf_backward = gelu_erf_backward;
    t.quick_gelu_backward = quick_gelu_backward;
    return t;
}

}  // namespace

const BackwardKernels& backward_kernels() {
    static const BackwardKernels t = make_table();
    return t;
}

void patch2im(float* dpixels, const float* dcols, int64_t C, int64_t H, int64_t W, int patch) {
    const int64_t P = patch, GW = W / P, KP = C * P * P;
    for (int64_t gy = 0; gy < H / P; ++gy)
        for (int64_t gx = 0; gx < GW; ++gx) {
            const float* row = dcols + (gy * GW + gx) * KP;  // patch (gy, gx), elements (c, ky, kx)
            for (int64_t c = 0; c < C; ++c)
                for (int64_t ky = 0; ky < P; ++ky)
                    for (int64_t kx = 0; kx < P; ++kx)
                        dpixels[(c * H + gy * P + ky) * W + gx * P + kx] += row[(c * P + ky) * P + kx];
        }
}

}  // namespace hg::vision_fallback
