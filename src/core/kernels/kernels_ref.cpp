// Scalar reference kernels: the plain-loop definition of every op in core/ops.h.
// Optimised paths are tested against these; these are tested against PyTorch.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/ops.h"
#include "core/quants.h"

namespace hg {

namespace {

// One weight row (any supported dtype) as float32.
void weight_row_f32(const Tensor& W, int64_t r, float* out) {
    dequantize_row(W.type, W.row(r), out, W.cols());
}

// ---------------------------------------------------------------------------------------------
// Row dot products, one per weight type (ggml's vec_dot semantics). `a` is the activation row
// already in vec_dot_type(W.type). Integer parts are exact; each block contributes one float
// term, summed in block order. abs_terms (optional) receives, for error bounds, the largest
// magnitude any implementation's partial sums can reach: sum over blocks of |float scale| x
// sum_k (|q_k| + zero point) |a_k| (zero point 8 for Q4_0 and 32 for Q6_K, which optimised
// paths may split off as an offset; for Q4_K the min part |dmin| x sum m |a| is added).

// Q4_0 x Q8_0, blocks of 32: term = (d_w * d_a) * sum_j (q_j - 8) * a_j
float dot_q4_0_q8_0(const block_q4_0* w, const block_q8_0* a, int64_t nb, double* abs_terms) {
    float sum = 0;
    double abs_sum = 0;
    for (int64_t b = 0; b < nb; ++b) {
        int sumi = 0, mag = 0;
        for (int j = 0; j < QK4_0 / 2; ++j) {
            sumi += ((w[b].qs[j] & 0xF) - 8) * a[b].qs[j];
            sumi += ((w[b].qs[j] >> 4) - 8) * a[b].qs[j + QK4_0 / 2];
            mag += (std::abs((w[b].qs[j] & 0xF) - 8) + 8) * std::abs(a[b].qs[j]);
            mag += (std::abs((w[b].qs[j] >> 4) - 8) + 8) * std::abs(a[b].qs[j + QK4_0 / 2]);
        }
        const float scale = fp16_to_fp32(w[b].d) * fp16_to_fp32(a[b].d);
        sum += scale * (float)sumi;
        abs_sum += std::fabs((double)scale) * mag;
    }
    if (abs_terms) *abs_terms = abs_sum;
    return sum;
}

// Q8_0 x Q8_0, blocks of 32: term = (d_w * d_a) * sum_j w_j * a_j
float dot_q8_0_q8_0(const block_q8_0* w, const block_q8_0* a, int64_t nb, double* abs_terms) {
    float sum = 0;
    double abs_sum = 0;
    for (int64_t b = 0; b < nb; ++b) {
        int sumi = 0, mag = 0;
        for (int j = 0; j < QK8_0; ++j) {
            sumi += w[b].qs[j] * a[b].qs[j];
            mag += std::abs(w[b].qs[j] * a[b].qs[j]);
        }
        const float scale = fp16_to_fp32(w[b].d) * fp16_to_fp32(a[b].d);
        sum += scale * (float)sumi;
        abs_sum += std::fabs((double)scale) * mag;
    }
    if (abs_terms) *abs_terms = abs_sum;
    return sum;
}

// Q4_K x Q8_K, super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scale sc and min m:
//   isum = sum_sb sc[sb] * sum_{j in sb} q_j * a_j      msum = sum_sb m[sb] * sum_{j in sb} a_j
//   term = (d_w * d_a) * isum - (dmin_w * d_a) * msum
float dot_q4_K_q8_K(const block_q4_K* w, const block_q8_K* a, int64_t nb, double* abs_terms) {
    float sum = 0;
    double abs_sum = 0;
    for (int64_t b = 0; b < nb; ++b) {
        int isum = 0, msum = 0, imag = 0, mmag = 0;
        for (int sb = 0; sb < 8; ++sb) {
            uint8_t sc, m;
            q4_K_scale_min(sb, w[b].scales, &sc, &m);
            // values 64*(sb/2) .. +32 sit in the low (even sb) or high (odd sb) nibbles of 32 bytes
            const uint8_t* qs = w[b].qs + 32 * (sb / 2);
            const int8_t* as = a[b].qs + 32 * sb;
            int dot = 0;
            int mag = 0, amag = 0;
            for (int j = 0; j < 32; ++j) {
                const int q = (sb % 2 == 0) ? (qs[j] & 0xF) : (qs[j] >> 4);
                dot += q * as[j];
                mag += q * std::abs(as[j]);
                amag += std::abs(as[j]);
            }
            isum += sc * dot;
            msum += m * (a[b].bsums[2 * sb] + a[b].bsums[2 * sb + 1]);
            imag += sc * mag;
            mmag += m * amag;
        }
        const float d = fp16_to_fp32(w[b].d) * a[b].d, dmin = fp16_to_fp32(w[b].dmin) * a[b].d;
        sum += d * (float)isum - dmin * (float)msum;
        abs_sum += std::fabs((double)d) * imag + std::fabs((double)dmin) * mmag;
    }
    if (abs_terms) *abs_terms = abs_sum;
    return sum;
}

// Q6_K x Q8_K, super-blocks of 256 = 16 sub-blocks of 16 with int8 scale:
//   isum = sum_sb scale[sb] * sum_{j in sb} (q_j - 32) * a_j      term = (d_w * d_a) * isum
float dot_q6_K_q8_K(const block_q6_K* w, const block_q8_K* a, int64_t nb, double* abs_terms) {
    float sum = 0;
    double abs_sum = 0;
    int8_t q[QK_K];
    for (int64_t b = 0; b < nb; ++b) {
        // unpack the 6-bit values (see dequantize_row) into q[0..255], each q - 32
        const uint8_t* ql = w[b].ql;
        const uint8_t* qh = w[b].qh;
        for (int n = 0; n < QK_K; n += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; ++l) {
                q[n + l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                q[n + l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                q[n + l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                q[n + l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        int isum = 0, imag = 0;
        for (int sb = 0; sb < 16; ++sb) {
            int dot = 0, mag = 0;
            for (int j = 0; j < 16; ++j) {
                dot += q[16 * sb + j] * a[b].qs[16 * sb + j];
                mag += (std::abs(q[16 * sb + j]) + 32) * std::abs(a[b].qs[16 * sb + j]);
            }
            isum += w[b].scales[sb] * dot;
            imag += std::abs(w[b].scales[sb]) * mag;
        }
        const float d = fp16_to_fp32(w[b].d) * a[b].d;
        sum += d * (float)isum;
        abs_sum += std::fabs((double)d) * imag;
    }
    if (abs_terms) *abs_terms = abs_sum;
    return sum;
}

// Float weights: y = sum_k x_k * w_k with w converted exactly to float32 and the sum taken in
// double (so the reference carries essentially no rounding of its own).
float dot_float(DType t, const void* w, const float* x, int64_t K, double* abs_terms) {
    double sum = 0, abs_sum = 0;
    for (int64_t k = 0; k < K; ++k) {
        const float wk = t == DType::F32    ? static_cast<const float*>(w)[k]
                         : t == DType::F16 ? fp16_to_fp32(static_cast<const uint16_t*>(w)[k])
                                           : bf16_to_fp32(static_cast<const uint16_t*>(w)[k]);
        const double p = (double)x[k] * wk;
        sum += p;
        abs_sum += std::fabs(p);
    }
    if (abs_terms) *abs_terms = abs_sum;
    return (float)sum;
}

// y[M,N] = x[M,K] · W[N,K]^T + bias: activations quantized once to vec_dot_type(W), then one
// row dot per output.
void matmul_ref(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool) {
    const int64_t N = W.rows(), K = W.cols();
    const DType at = vec_dot_type(W.type);
    const size_t arow = row_bytes(at, K);  // also checks K against the block size
    HG_CHECK(row_bytes(W.type, K) == W.row_bytes(), "matmul: weight %s is not packed", W.shape_str().c_str());
    std::vector<uint8_t> xq(at == DType::F32 ? 0 : M * arow);
    if (at != DType::F32)
        for (int64_t m = 0; m < M; ++m) {
            if (at == DType::Q8_0) quantize_row_q8_0(x + m * K, reinterpret_cast<block_q8_0*>(&xq[m * arow]), K);
            else quantize_row_q8_K(x + m * K, reinterpret_cast<block_q8_K*>(&xq[m * arow]), K);
        }
    pool.parallel_for(N, [&](int64_t n0, int64_t n1, int) {
        for (int64_t n = n0; n < n1; ++n)
            for (int64_t m = 0; m < M; ++m) {
                const float d = at == DType::F32 ? dot_float(W.type, W.row(n), x + m * K, K, nullptr)
                                                 : vec_dot_ref(W.type, W.row(n), &xq[m * arow], K, nullptr);
                y[m * N + n] = d + (bias ? bias[n] : 0.0f);
            }
    });
}

float kv_value(const void* base, DType t, size_t byte_off, int64_t i) {
    const uint8_t* p = static_cast<const uint8_t*>(base) + byte_off;
    if (t == DType::F32) return reinterpret_cast<const float*>(p)[i];
    return fp16_to_fp32(reinterpret_cast<const uint16_t*>(p)[i]);
}

// out[i, h, :] = softmax(q[i,h,:] · K[:, kvh, :]^T * scale + mask) · V[:, kvh, :]
void attention_ref(float* out, const float* q, int64_t n_q, size_t q_stride, const void* k, const void* v, DType kv_type,
                   int64_t n_kv, size_t kv_stride, const AttentionParams& p, ThreadPool& pool) {
    HG_CHECK(kv_type == DType::F32 || kv_type == DType::F16, "attention: KV type %s not supported", dtype_name(kv_type));
    HG_CHECK(p.n_kv_head > 0 && p.n_head % p.n_kv_head == 0, "attention: %d heads not a multiple of %d KV heads",
             p.n_head, p.n_kv_head);
    const int D = p.head_dim;
    const int group = p.n_head / p.n_kv_head;
    pool.parallel_for(n_q * p.n_head, [&](int64_t b, int64_t e, int) {
        std::vector<double> s(n_kv);
        for (int64_t ih = b; ih < e; ++ih) {
            const int64_t i = ih / p.n_head;
            const int h = static_cast<int>(ih % p.n_head), kvh = h / group;
            const float* qi = q + i * q_stride + (size_t)h * D;
            const int64_t pos = p.q_pos0 + i;
            double mx = -INFINITY;
            for (int64_t j = 0; j < n_kv; ++j) {
                bool visible = !p.causal || j <= pos;
                if (p.window > 0 && j <= pos - p.window) visible = false;
                if (!visible) {
                    s[j] = -INFINITY;
                    continue;
                }
                double dot = 0;
                for (int d = 0; d < D; ++d) dot += (double)qi[d] * kv_value(k, kv_type, j * kv_stride, (int64_t)kvh * D + d);
                s[j] = dot * p.scale;
                mx = std::max(mx, s[j]);
            }
            double sum = 0;
            for (int64_t j = 0; j < n_kv; ++j) {
                s[j] = std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx);
                sum += s[j];
            }
            float* o = out + (i * p.n_head + h) * D;
            for (int d = 0; d < D; ++d) {
                double acc = 0;
                for (int64_t j = 0; j < n_kv; ++j)
                    if (s[j] != 0.0) acc += s[j] * kv_value(v, kv_type, j * kv_stride, (int64_t)kvh * D + d);
                o[d] = sum > 0 ? (float)(acc / sum) : 0.0f;
            }
        }
    });
}

// out[co, oy, ox] = bias[co] + sum_{ci,ky,kx} W[co,ci,ky,kx] * in[ci, oy*s+ky-pt, ox*s+kx-pl]
void conv2d_ref(float* out, const float* in, int64_t Cin, int64_t H, int64_t W, const Tensor& weight, const float* bias,
                int stride, int pad_t, int pad_l, int pad_b, int pad_r, ThreadPool& pool) {
    HG_CHECK(weight.n_dims == 4 && weight.shape[1] == Cin, "conv2d: weight %s does not take %lld input channels",
             weight.shape_str().c_str(), (long long)Cin);
    const int64_t Cout = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3];
    const int64_t Ho = (H + pad_t + pad_b - KH) / stride + 1, Wo = (W + pad_l + pad_r - KW) / stride + 1;
    const int64_t kdim = Cin * KH * KW;
    pool.parallel_for(Cout, [&](int64_t c0, int64_t c1, int) {
        std::vector<float> w(kdim);
        for (int64_t co = c0; co < c1; ++co) {
            dequantize_row(weight.type, static_cast<const uint8_t*>(weight.data) + co * row_bytes(weight.type, kdim),
                           w.data(), kdim);
            for (int64_t oy = 0; oy < Ho; ++oy)
                for (int64_t ox = 0; ox < Wo; ++ox) {
                    double acc = bias ? bias[co] : 0.0;
                    for (int64_t ci = 0; ci < Cin; ++ci)
                        for (int64_t ky = 0; ky < KH; ++ky) {
                            const int64_t iy = oy * stride + ky - pad_t;
                            if (iy < 0 || iy >= H) continue;
                            for (int64_t kx = 0; kx < KW; ++kx) {
                                const int64_t ix = ox * stride + kx - pad_l;
                                if (ix < 0 || ix >= W) continue;
                                acc += (double)w[(ci * KH + ky) * KW + kx] * in[(ci * H + iy) * W + ix];
                            }
                        }
                    out[(co * Ho + oy) * Wo + ox] = (float)acc;
                }
        }
    });
}

// y = x / sqrt(mean(x^2) + eps) * w, per row of N
void rmsnorm_ref(float* y, const float* x, const float* w, int64_t M, int64_t N, float eps) {
    for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * N;
        double ss = 0;
        for (int64_t i = 0; i < N; ++i) ss += (double)xm[i] * xm[i];
        const float r = 1.0f / std::sqrt((float)(ss / N) + eps);
        for (int64_t i = 0; i < N; ++i) y[m * N + i] = (xm[i] * r) * (w ? w[i] : 1.0f);
    }
}

// y = (x - mean) / sqrt(var + eps) * w + b (biased variance), per row of N
void layernorm_ref(float* y, const float* x, const float* w, const float* b, int64_t M, int64_t N, float eps) {
    for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * N;
        double mean = 0;
        for (int64_t i = 0; i < N; ++i) mean += xm[i];
        mean /= N;
        double var = 0;
        for (int64_t i = 0; i < N; ++i) var += (xm[i] - mean) * (xm[i] - mean);
        var /= N;
        const double r = 1.0 / std::sqrt(var + eps);
        for (int64_t i = 0; i < N; ++i)
            y[m * N + i] = (float)((xm[i] - mean) * r) * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
}

void softmax_ref(float* x, int64_t M, int64_t N) {
    for (int64_t m = 0; m < M; ++m) {
        float* r = x + m * N;
        float mx = -INFINITY;
        for (int64_t i = 0; i < N; ++i) mx = std::max(mx, r[i]);
        double sum = 0;
        for (int64_t i = 0; i < N; ++i) sum += std::exp((double)r[i] - mx);
        for (int64_t i = 0; i < N; ++i) r[i] = (float)(std::exp((double)r[i] - mx) / sum);
    }
}

// x[C, HW]; group g holds channels [g*C/G, (g+1)*C/G)
void groupnorm_ref(float* y, const float* x, const float* w, const float* b, int64_t C, int64_t HW, int groups,
                   float eps) {
    HG_CHECK(groups > 0 && C % groups == 0, "groupnorm: %lld channels not divisible into %d groups", (long long)C, groups);
    const int64_t cg = C / groups;
    for (int g = 0; g < groups; ++g) {
        const float* xg = x + g * cg * HW;
        const int64_t n = cg * HW;
        double mean = 0;
        for (int64_t i = 0; i < n; ++i) mean += xg[i];
        mean /= n;
        double var = 0;
        for (int64_t i = 0; i < n; ++i) var += (xg[i] - mean) * (xg[i] - mean);
        var /= n;
        const double r = 1.0 / std::sqrt(var + eps);
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c)
            for (int64_t i = 0; i < HW; ++i)
                y[c * HW + i] = (float)((x[c * HW + i] - mean) * r) * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    }
}

// HF: inv_freq = 1 / theta^(arange(0, n_rot, 2) / n_rot) in float32; angle = pos * inv_freq (float32)
void rope_ref(float* x, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot, const int32_t* pos,
              float theta, RopeMode mode) {
    const int half = n_rot / 2;
    std::vector<float> inv_freq(half);
    for (int i = 0; i < half; ++i)
        inv_freq[i] = 1.0f / std::pow(theta, (float)(2 * i) / (float)n_rot);
    for (int64_t t = 0; t < n_tok; ++t)
        for (int h = 0; h < n_head; ++h) {
            float* v = x + t * stride + (size_t)h * head_dim;
            for (int i = 0; i < half; ++i) {
                const float ang = (float)pos[t] * inv_freq[i];
                const float c = std::cos(ang), s = std::sin(ang);
                const int a = mode == RopeMode::RotateHalf ? i : 2 * i;
                const int bi = mode == RopeMode::RotateHalf ? i + half : 2 * i + 1;
                const float x0 = v[a], x1 = v[bi];
                v[a] = x0 * c - x1 * s;
                v[bi] = x1 * c + x0 * s;
            }
        }
}

void silu_ref(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i]));
}
void swiglu_ref(float* y, const float* g, const float* u, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}
void gelu_erf_ref(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * (float)M_SQRT1_2));
}
void gelu_tanh_ref(float* y, const float* x, int64_t n) {
    const float c = std::sqrt(2.0f / (float)M_PI);
    for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + std::tanh(c * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
}
void quick_gelu_ref(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
}
void add_ref(float* y, const float* a, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
void mul_ref(float* y, const float* a, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}
void scale_ref(float* y, const float* x, float s, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s;
}
void quantize_act_ref(DType type, const float* x, void* y, int64_t n) {
    HG_CHECK(type == DType::Q8_0 || type == DType::Q8_K, "quantize_act: %s is not an activation type", dtype_name(type));
    if (type == DType::Q8_0) quantize_row_q8_0(x, static_cast<block_q8_0*>(y), n);
    else quantize_row_q8_K(x, static_cast<block_q8_K*>(y), n);
}

const Kernels kRef = {
    "scalar",     "every op: plain scalar loops (the reference)", matmul_ref, attention_ref, conv2d_ref,    rmsnorm_ref,    layernorm_ref, softmax_ref,
    groupnorm_ref, rope_ref,  silu_ref,      swiglu_ref,    gelu_erf_ref,   gelu_tanh_ref, quick_gelu_ref,
    add_ref,      mul_ref,    scale_ref,  quantize_act_ref,
};

}  // namespace

const Kernels& kernels_ref() { return kRef; }

float vec_dot_ref(DType wt, const void* w, const void* a, int64_t K, double* abs_terms) {
    switch (wt) {
        case DType::Q4_0:
            return dot_q4_0_q8_0(static_cast<const block_q4_0*>(w), static_cast<const block_q8_0*>(a), K / QK4_0, abs_terms);
        case DType::Q8_0:
            return dot_q8_0_q8_0(static_cast<const block_q8_0*>(w), static_cast<const block_q8_0*>(a), K / QK8_0, abs_terms);
        case DType::Q4_K:
            return dot_q4_K_q8_K(static_cast<const block_q4_K*>(w), static_cast<const block_q8_K*>(a), K / QK_K, abs_terms);
        case DType::Q6_K:
            return dot_q6_K_q8_K(static_cast<const block_q6_K*>(w), static_cast<const block_q8_K*>(a), K / QK_K, abs_terms);
        case DType::F32:
        case DType::F16:
        case DType::BF16: return dot_float(wt, w, static_cast<const float*>(a), K, abs_terms);
        default: fail("vec_dot_ref: weight type %s is not supported", dtype_name(wt));
    }
}

// y = x · dequantize(W)^T + bias in double: no activation quantization (the exact product of
// the stored weights with the float activations).
void matmul_dequant_ref(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool) {
    const int64_t N = W.rows(), K = W.cols();
    pool.parallel_for(N, [&](int64_t n0, int64_t n1, int) {
        std::vector<float> w(K);
        for (int64_t n = n0; n < n1; ++n) {
            weight_row_f32(W, n, w.data());
            for (int64_t m = 0; m < M; ++m) {
                const float* xm = x + m * K;
                double acc = 0;
                for (int64_t k = 0; k < K; ++k) acc += (double)xm[k] * w[k];
                y[m * N + n] = (float)acc + (bias ? bias[n] : 0.0f);
            }
        }
    });
}

}  // namespace hg
