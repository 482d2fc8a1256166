// Scalar references of the backward ops (core/ops_backward.h): plain loops, sums over long axes
// in double. The optimised paths are held to these; these are held to PyTorch autograd.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/ops_backward.h"
#include "core/quants.h"

namespace hg {

namespace {

// dx[M,K] += dy[M,N] · W[N,K]: W's rows dequantized one at a time.
void matmul_backward_x_ref(float* dx, const float* dy, const Tensor& W, int64_t M, ThreadPool&) {
    const int64_t N = W.rows(), K = W.cols();
    std::vector<float> w((size_t)(N * K));
    for (int64_t n = 0; n < N; ++n) dequantize_row(W.type, W.row(n), w.data() + n * K, K);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) {
            double acc = 0;
            for (int64_t n = 0; n < N; ++n) acc += (double)dy[m * N + n] * w[(size_t)(n * K + k)];
            dx[m * K + k] += (float)acc;
        }
}

// dW[N,K] += dyᵀ·x; db[N] += Σ_m dy
void matmul_backward_w_ref(float* dW, float* db, const float* dy, const float* x, int64_t M, int64_t N, int64_t K,
                           ThreadPool&) {
    for (int64_t n = 0; n < N; ++n) {
        if (dW)
            for (int64_t k = 0; k < K; ++k) {
                double acc = 0;
                for (int64_t m = 0; m < M; ++m) acc += (double)dy[m * N + n] * x[m * K + k];
                dW[n * K + k] += (float)acc;
            }
        if (db) {
            double acc = 0;
            for (int64_t m = 0; m < M; ++m) acc += dy[m * N + n];
            db[n] += (float)acc;
        }
    }
}

bool visible(const AttentionParams& p, int64_t i, int64_t j) {
    if (p.causal && j > i) return false;
    if (p.window > 0 && j <= i - p.window) return false;
    return true;
}

// out = softmax(scale q kᵀ) v per head; lse[h, i] = log Σ_j exp(scale q_i·k_j)
void attention_forward_ref(float* out, float* lse, const float* q, size_t qs, const float* k, const float* v, size_t kvs,
                           int64_t T, const AttentionParams& p, ThreadPool&) {
    const int H = p.n_head, D = p.head_dim, G = p.n_head / p.n_kv_head;
    std::vector<double> s((size_t)T);
    for (int h = 0; h < H; ++h) {
        const int hk = h / G;
        for (int64_t i = 0; i < T; ++i) {
            const float* qi = q + i * qs + (size_t)h * D;
            double mx = -INFINITY;
            for (int64_t j = 0; j < T; ++j) {
                if (!visible(p, i, j)) continue;
                const float* kj = k + j * kvs + (size_t)hk * D;
                double acc = 0;
                for (int d = 0; d < D; ++d) acc += (double)qi[d] * kj[d];
                s[(size_t)j] = acc * p.scale;
                mx = std::max(mx, s[(size_t)j]);
            }
            double sum = 0;
            for (int64_t j = 0; j < T; ++j)
                if (visible(p, i, j)) sum += std::exp(s[(size_t)j] - mx);
            float* oi = out + (i * H + h) * D;
            for (int d = 0; d < D; ++d) {
                double acc = 0;
                for (int64_t j = 0; j < T; ++j)
                    if (visible(p, i, j)) acc += std::exp(s[(size_t)j] - mx) / sum * v[j * kvs + (size_t)hk * D + d];
                oi[d] = (float)acc;
            }
            lse[(size_t)h * T + i] = (float)(mx + std::log(sum));
        }
    }
}

// P = exp(S - lse); dV += Pᵀ dO; dP = dO Vᵀ; dS = P ⊙ (dP - rowsum(dO ⊙ O)); dQ += scale dS K; dK += scale dSᵀ Q
void attention_backward_ref(float* dq, float* dk, float* dv, const float* dout, const float* q, size_t qs,
                            const float* k, const float* v, size_t kvs, const float* out, const float* lse, int64_t T,
                            const AttentionParams& p, ThreadPool&) {
    const int H = p.n_head, D = p.head_dim, G = p.n_head / p.n_kv_head;
    for (int h = 0; h < H; ++h) {
        const int hk = h / G;
        for (int64_t i = 0; i < T; ++i) {
            const float* qi = q + i * qs + (size_t)h * D;
            const float* doi = dout + (i * H + h) * D;
            const float* oi = out + (i * H + h) * D;
            double delta = 0;
            for (int d = 0; d < D; ++d) delta += (double)doi[d] * oi[d];
            for (int64_t j = 0; j < T; ++j) {
                if (!visible(p, i, j)) continue;
                const float* kj = k + j * kvs + (size_t)hk * D;
                const float* vj = v + j * kvs + (size_t)hk * D;
                double sc = 0, dp = 0;
                for (int d = 0; d < D; ++d) {
                    sc += (double)qi[d] * kj[d];
                    dp += (double)doi[d] * vj[d];
                }
                const double pij = std::exp(sc * p.scale - (double)lse[(size_t)h * T + i]);
                const double ds = pij * (dp - delta) * p.scale;
                for (int d = 0; d < D; ++d) {
                    if (dv) dv[j * kvs + (size_t)hk * D + d] += (float)(pij * doi[d]);
                    if (dq) dq[i * qs + (size_t)h * D + d] += (float)(ds * kj[d]);
                    if (dk) dk[j * kvs + (size_t)hk * D + d] += (float)(ds * qi[d]);
                }
            }
        }
    }
}

void rmsnorm_backward_ref(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t M, int64_t N,
                          float eps) {
    for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * N;
        const float* gm = dy + m * N;
        double ss = 0;
        for (int64_t n = 0; n < N; ++n) ss += (double)xm[n] * xm[n];
        const double r = 1.0 / std::sqrt(ss / (double)N + eps);
        double dot = 0;  // Σ g w x
        for (int64_t n = 0; n < N; ++n) dot += (double)gm[n] * w[n] * xm[n];
        for (int64_t n = 0; n < N; ++n) {
            if (dx) dx[m * N + n] += (float)(r * gm[n] * w[n] - r * r * r * dot * xm[n] / (double)N);
            if (dw) dw[n] += (float)((double)gm[n] * xm[n] * r);
        }
    }
}

void layernorm_backward_ref(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t M,
                            int64_t N, float eps) {
    for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * N;
        const float* gm = dy + m * N;
        double mean = 0;
        for (int64_t n = 0; n < N; ++n) mean += xm[n];
        mean /= (double)N;
        double var = 0;
        for (int64_t n = 0; n < N; ++n) var += (xm[n] - mean) * (xm[n] - mean);
        var /= (double)N;
        const double r = 1.0 / std::sqrt(var + eps);
        double sg = 0, sgx = 0;  // Σ g w, Σ g w x̂
        for (int64_t n = 0; n < N; ++n) {
            const double xh = (xm[n] - mean) * r, gw = (double)gm[n] * w[n];
            sg += gw;
            sgx += gw * xh;
        }
        for (int64_t n = 0; n < N; ++n) {
            const double xh = (xm[n] - mean) * r, gw = (double)gm[n] * w[n];
            if (dx) dx[m * N + n] += (float)(r * (gw - sg / (double)N - xh * sgx / (double)N));
            if (dw) dw[n] += (float)((double)gm[n] * xh);
            if (db) db[n] += gm[n];
        }
    }
}

void rope_apply(float* x, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot, const int32_t* pos,
                float theta, RopeMode mode, const float* ff, float attn_factor, float sign) {
    const int half = n_rot / 2;
    std::vector<float> inv_freq((size_t)half);
    for (int i = 0; i < half; ++i) {
        inv_freq[(size_t)i] = 1.0f / std::pow(theta, (float)(2 * i) / (float)n_rot);
        if (ff) inv_freq[(size_t)i] = inv_freq[(size_t)i] / ff[i];
    }
    for (int64_t t = 0; t < n_tok; ++t)
        for (int h = 0; h < n_head; ++h) {
            float* v = x + t * stride + (size_t)h * head_dim;
            for (int i = 0; i < half; ++i) {
                const float ang = (float)pos[t] * inv_freq[(size_t)i];
                float c = std::cos(ang), s = std::sin(ang);
                if (attn_factor != 1.0f) {
                    c *= attn_factor;
                    s *= attn_factor;
                }
                s *= sign;
                const int a = mode == RopeMode::RotateHalf ? i : 2 * i;
                const int b = mode == RopeMode::RotateHalf ? i + half : 2 * i + 1;
                const float x0 = v[a], x1 = v[b];
                v[a] = x0 * c - x1 * s;
                v[b] = x1 * c + x0 * s;
            }
        }
}

// The transpose of the rotation [c -s; s c] is [c s; -s c]: the same rotation with -sin.
void rope_backward_ref(float* dx, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot, const int32_t* pos,
                       float theta, RopeMode mode, const float* ff, float attn_factor) {
    rope_apply(dx, n_tok, stride, n_head, head_dim, n_rot, pos, theta, mode, ff, attn_factor, -1.0f);
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void swiglu_backward_ref(float* dgate, float* dup, const float* dy, const float* g, const float* u, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double sg = sigmoid(g[i]), silu = g[i] * sg;
        if (dgate) dgate[i] += (float)(dy[i] * u[i] * (sg * (1.0 + g[i] * (1.0 - sg))));
        if (dup) dup[i] += (float)(dy[i] * silu);
    }
}
void silu_backward_ref(float* dx, const float* dy, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double sg = sigmoid(x[i]);
        dx[i] += (float)(dy[i] * sg * (1.0 + x[i] * (1.0 - sg)));
    }
}
void gelu_erf_backward_ref(float* dx, const float* dy, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double xi = x[i];
        const double cdf = 0.5 * (1.0 + std::erf(xi * M_SQRT1_2));
        const double pdf = std::exp(-0.5 * xi * xi) / std::sqrt(2.0 * M_PI);
        dx[i] += (float)(dy[i] * (cdf + xi * pdf));
    }
}
void gelu_tanh_backward_ref(float* dx, const float* dy, const float* x, int64_t n) {
    const double k = std::sqrt(2.0 / M_PI);
    for (int64_t i = 0; i < n; ++i) {
        const double xi = x[i], inner = k * (xi + 0.044715 * xi * xi * xi);
        const double t = std::tanh(inner);
        const double d = 0.5 * (1.0 + t) + 0.5 * xi * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * xi * xi);
        dx[i] += (float)(dy[i] * d);
    }
}
void quick_gelu_backward_ref(float* dx, const float* dy, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const double s = sigmoid(1.702 * x[i]);
        dx[i] += (float)(dy[i] * (s + 1.702 * x[i] * s * (1.0 - s)));
    }
}

const BackwardKernels kBackwardRef = {
    "scalar",
    matmul_backward_x_ref, matmul_backward_w_ref, attention_forward_ref, attention_backward_ref,
    rmsnorm_backward_ref,  layernorm_backward_ref, rope_backward_ref,    swiglu_backward_ref,
    gelu_erf_backward_ref, gelu_tanh_backward_ref, quick_gelu_backward_ref, silu_backward_ref,
};

}  // namespace

// The fast level (backward_avx2.cpp), referenced strongly so the linker keeps it (dispatch.cpp).
const BackwardKernels* backward_kernels_avx2_table();

const BackwardKernels& backward_kernels_ref() { return kBackwardRef; }
const BackwardKernels* backward_kernels_for(Isa isa) {
    if (static_cast<int>(isa) > static_cast<int>(isa_supported())) return nullptr;
    switch (isa) {
        case Isa::Scalar: return &kBackwardRef;
        case Isa::Avx2: return backward_kernels_avx2_table();
        case Isa::Avx512: return nullptr;  // no AVX-512 backward level yet: the AVX2 one runs there
    }
    return nullptr;
}
// The same choice as kernels(): the highest level at or below isa_active() that exists.
const BackwardKernels& backward_kernels() {
    static const BackwardKernels* k = [] {
        for (int l = static_cast<int>(isa_active()); l > 0; --l)
            if (const BackwardKernels* t = backward_kernels_for(static_cast<Isa>(l))) return t;
        return &kBackwardRef;
    }();
    return *k;
}

void rope_forward(float* x, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot, const int32_t* pos,
                  float theta, RopeMode mode, const float* freq_factors, float attn_factor) {
    if (!freq_factors && attn_factor == 1.0f) {
        kernels().rope(x, n_tok, stride, n_head, head_dim, n_rot, pos, theta, mode);
        return;
    }
    rope_apply(x, n_tok, stride, n_head, head_dim, n_rot, pos, theta, mode, freq_factors, attn_factor, 1.0f);
}

void softmax_backward(float* dx, const float* dp, const float* p, int64_t M, int64_t N) {
    for (int64_t m = 0; m < M; ++m) {
        double dot = 0;
        for (int64_t n = 0; n < N; ++n) dot += (double)dp[m * N + n] * p[m * N + n];
        for (int64_t n = 0; n < N; ++n) dx[m * N + n] += (float)(p[m * N + n] * (dp[m * N + n] - dot));
    }
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t n, int64_t D) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t d = 0; d < D; ++d) dtable[(int64_t)ids[i] * D + d] += dout[i * D + d];
}

void im2patch(float* cols, const float* px, int64_t C, int64_t H, int64_t W, int P) {
    const int64_t gw = W / P, gh = H / P, K = C * P * P;
    for (int64_t py = 0; py < gh; ++py)
        for (int64_t pxi = 0; pxi < gw; ++pxi) {
            float* row = cols + (py * gw + pxi) * K;
            for (int64_t c = 0; c < C; ++c)
                for (int ky = 0; ky < P; ++ky)
                    for (int kx = 0; kx < P; ++kx)
                        row[(c * P + ky) * P + kx] = px[(c * H + py * P + ky) * W + pxi * P + kx];
        }
}

void patch2im(float* dpx, const float* dcols, int64_t C, int64_t H, int64_t W, int P) {
    const int64_t gw = W / P, gh = H / P, K = C * P * P;
    for (int64_t py = 0; py < gh; ++py)
        for (int64_t pxi = 0; pxi < gw; ++pxi) {
            const float* row = dcols + (py * gw + pxi) * K;
            for (int64_t c = 0; c < C; ++c)
                for (int ky = 0; ky < P; ++ky)
                    for (int kx = 0; kx < P; ++kx) dpx[(c * H + py * P + ky) * W + pxi * P + kx] += row[(c * P + ky) * P + kx];
        }
}

double cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t M, int64_t V,
                     float grad_scale, int64_t* n_valid) {
    double loss = 0;
    int64_t nv = 0;
    for (int64_t m = 0; m < M; ++m) {
        const float* l = logits + m * V;
        if (targets[m] == -100) {
            if (dlogits) std::fill(dlogits + m * V, dlogits + (m + 1) * V, 0.0f);
            continue;
        }
        HG_CHECK(targets[m] >= 0 && targets[m] < V, "cross_entropy: target %d outside 0..%lld", targets[m],
                 (long long)V - 1);
        double mx = -INFINITY;
        for (int64_t v = 0; v < V; ++v) mx = std::max(mx, (double)l[v]);
        double sum = 0;
        for (int64_t v = 0; v < V; ++v) sum += std::exp((double)l[v] - mx);
        const double lse = mx + std::log(sum);
        loss += lse - l[targets[m]];
        ++nv;
        if (dlogits)
            for (int64_t v = 0; v < V; ++v)
                dlogits[m * V + v] = (float)(grad_scale * (std::exp((double)l[v] - lse) - (v == targets[m] ? 1.0 : 0.0)));
    }
    if (n_valid) *n_valid = nv;
    return loss;
}

}  // namespace hg
