// AVX2 row-wise and elementwise ops, and the AVX2 kernel table.
// Semantics are the reference's (kernels_ref.cpp); the differences are float summation order
// (sums of squares etc. are taken in double over float terms, 8 lanes)
// and the vector exp/tanh/erf of simd_avx2.h. rope and add/mul/scale are bit-identical to the
// reference.
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/kernels/kernels_avx2.h"
#include "core/kernels/simd_avx2.h"

namespace hg::avx2 {

__m256 erf_ps(__m256 x) {
    const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f));
    const __m256 ax = _mm256_min_ps(abs_ps(x), _mm256_set1_ps(4.0f));
    // |x| < 1: Taylor series 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)), n = 0..10
    const __m256 x2 = _mm256_mul_ps(ax, ax);
    static const float taylor[11] = {
        1.1283791670955126f,    -0.37612638903183752f,   0.11283791670955126f,   -0.026866170645131252f,
        0.0052239776254421878f, -0.00085483270234508529f, 0.00012055332981789664f, -1.4925650358406251e-05f,
        1.6462114365889246e-06f, -1.6365844691234924e-07f, 1.4807192815879218e-08f};
    __m256 p = _mm256_set1_ps(taylor[10]);
    for (int i = 9; i >= 0; --i) p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(taylor[i]));
    const __m256 small = _mm256_mul_ps(p, ax);
    // 1 <= |x| <= 4: degree-12 polynomial in t = (2|x| - 5) / 3 (tests/reference/fit_erf.py)
    static const float cheb[13] = {-0.001130018f, 0.0018515676f, 0.0034260997f, -0.010797661f, 0.007483626f,
                                   0.009810791f,  -0.032164328f, 0.04632207f,   -0.043602195f, 0.028195845f,
                                   -0.012255908f, 0.003266969f,  0.9995931f};
    const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_add_ps(ax, ax), _mm256_set1_ps(5.0f)), _mm256_set1_ps(1.0f / 3));
    __m256 q = _mm256_set1_ps(cheb[0]);
    for (int i = 1; i < 13; ++i) q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(cheb[i]));
    q = _mm256_min_ps(q, _mm256_set1_ps(1.0f));
    const __m256 r = _mm256_blendv_ps(q, small, _mm256_cmp_ps(ax, _mm256_set1_ps(1.0f), _CMP_LT_OQ));
    return _mm256_or_ps(r, sign);
}

namespace {

// Sum of f(x[i]) for i < n, with f evaluated in float and the sum taken in double (4 + 4 lanes):
// the mean of a large group (groupnorm over 1M values) stays as accurate as the reference's.
template <typename F>
double chunked_sum(const float* x, int64_t n, F f) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = f(_mm256_loadu_ps(x + i));
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    alignas(32) double t[4];
    _mm256_store_pd(t, _mm256_add_pd(a0, a1));
    double total = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < n; ++i) total += _mm256_cvtss_f32(f(_mm256_set1_ps(x[i])));
    return total;
}

void rmsnorm(float* y, const float* x, const float* w, int64_t M, int64_t N, float eps) {
    for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * N;
        float* ym = y + m * N;
        const double ss = chunked_sum(xm, N, [](__m256 v) { return _mm256_mul_ps(v, v); });
        const float r = 1.0f / std::sqrt((float)(ss / N) + eps);
        const __m256 vr = _mm256_set1_ps(r);
        int64_t i = 0;
        for (; i + 8 <= N; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xm + i), vr);
            if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
            _mm256_storeu_ps(ym + i, v);
        }
        for (; i < N; ++i) ym[i] = (xm[i] * r) * (w ? w[i] : 1.0f);
    }
}

void layernorm(float* y, const float* x, const float* w, const float* b, int64_t M, int64_t N, float eps) {
    for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * N;
        float* ym = y + m * N;
        // the mean as a float pair (hi + lo): x - hi - lo keeps the double-precision centring
        const double mean_d = chunked_sum(xm, N, [](__m256 v) { return v; }) / N;
        const float mean = (float)mean_d, mean_lo = (float)(mean_d - mean);
        const __m256 vm = _mm256_set1_ps(mean), vml = _mm256_set1_ps(mean_lo);
        const double var = chunked_sum(xm, N, [vm](__m256 v) {
                               const __m256 d = _mm256_sub_ps(v, vm);
                               return _mm256_mul_ps(d, d);
                           }) / N;
        const float r = (float)(1.0 / std::sqrt(var + eps));
        const __m256 vr = _mm256_set1_ps(r);
        int64_t i = 0;
        for (; i + 8 <= N; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(xm + i), vm), vml), vr);
            if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
            if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
            _mm256_storeu_ps(ym + i, v);
        }
        for (; i < N; ++i) ym[i] = (((xm[i] - mean) - mean_lo) * r) * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
}

void softmax(float* x, int64_t M, int64_t N) {
    for (int64_t m = 0; m < M; ++m) {
        float* r = x + m * N;
        __m256 mv = _mm256_set1_ps(-INFINITY);
        int64_t i = 0;
        for (; i + 8 <= N; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(r + i));
        float mx = hmax(mv);
        for (; i < N; ++i) mx = std::max(mx, r[i]);
        if (mx == -INFINITY) mx = 0;  // an all -inf row: exp gives 0 everywhere (0/0 -> NaN as in the reference)
        const __m256 vmx = _mm256_set1_ps(mx);
        double sum = 0;
        for (int64_t c = 0; c < N; c += 1024) {
            const int64_t e = std::min<int64_t>(N, c + 1024);
            __m256 acc = _mm256_setzero_ps();
            int64_t j = c;
            for (; j + 8 <= e; j += 8) {
                const __m256 ev = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(r + j), vmx));
                _mm256_storeu_ps(r + j, ev);
                acc = _mm256_add_ps(acc, ev);
            }
            float s = hsum(acc);
            for (; j < e; ++j) {
                r[j] = _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(r[j] - mx)));
                s += r[j];
            }
            sum += s;
        }
        const float inv = (float)(1.0 / sum);
        const __m256 vi = _mm256_set1_ps(inv);
        i = 0;
        for (; i + 8 <= N; i += 8) _mm256_storeu_ps(r + i, _mm256_mul_ps(_mm256_loadu_ps(r + i), vi));
        for (; i < N; ++i) r[i] *= inv;
    }
}

void groupnorm(float* y, const float* x, const float* w, const float* b, int64_t C, int64_t HW, int groups, float eps) {
    HG_CHECK(groups > 0 && C % groups == 0, "groupnorm: %lld channels not divisible into %d groups", (long long)C, groups);
    const int64_t cg = C / groups;
    for (int g = 0; g < groups; ++g) {
        const float* xg = x + g * cg * HW;
        const int64_t n = cg * HW;
        const double mean_d = chunked_sum(xg, n, [](__m256 v) { return v; }) / n;
        const float mean = (float)mean_d, mean_lo = (float)(mean_d - mean);
        const __m256 vm = _mm256_set1_ps(mean), vml = _mm256_set1_ps(mean_lo);
        const double var = chunked_sum(xg, n, [vm](__m256 v) {
                               const __m256 d = _mm256_sub_ps(v, vm);
                               return _mm256_mul_ps(d, d);
                           }) / n;
        const float r = (float)(1.0 / std::sqrt(var + eps));
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
            const float wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f;
            const __m256 vr = _mm256_set1_ps(r), vw = _mm256_set1_ps(wc), vb = _mm256_set1_ps(bc);
            const float* xc = x + c * HW;
            float* yc = y + c * HW;
            int64_t i = 0;
            for (; i + 8 <= HW; i += 8)
                _mm256_storeu_ps(yc + i, _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(xc + i), vm), vml), vr), vw), vb));
            for (; i < HW; ++i) yc[i] = (((xc[i] - mean) - mean_lo) * r) * wc + bc;
        }
    }
}

// cos/sin exactly as the reference (scalar libm on the float angle), rotation vectorised;
// the products are not fused (contraction off for this function: GCC would otherwise fuse the
// mul/sub intrinsics into FMAs), so the result is bit-identical to the reference.
__attribute__((optimize("fp-contract=off"))) void rope(float* x, int64_t n_tok, size_t stride, int n_head, int head_dim, int n_rot, const int32_t* pos, float theta,
          RopeMode mode) {
    const int half = n_rot / 2;
    std::vector<float> inv_freq(half), c(half), s(half);
    for (int i = 0; i < half; ++i) inv_freq[i] = 1.0f / std::pow(theta, (float)(2 * i) / (float)n_rot);
    for (int64_t t = 0; t < n_tok; ++t) {
        for (int i = 0; i < half; ++i) {
            const float ang = (float)pos[t] * inv_freq[i];
            c[i] = std::cos(ang);
            s[i] = std::sin(ang);
        }
        for (int h = 0; h < n_head; ++h) {
            float* v = x + t * stride + (size_t)h * head_dim;
            if (mode == RopeMode::RotateHalf) {
                int i = 0;
                for (; i + 8 <= half; i += 8) {
                    const __m256 x0 = _mm256_loadu_ps(v + i), x1 = _mm256_loadu_ps(v + i + half);
                    const __m256 cv = _mm256_loadu_ps(&c[i]), sv = _mm256_loadu_ps(&s[i]);
                    _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(x0, cv), _mm256_mul_ps(x1, sv)));
                    _mm256_storeu_ps(v + i + half, _mm256_add_ps(_mm256_mul_ps(x1, cv), _mm256_mul_ps(x0, sv)));
                }
                for (; i < half; ++i) {
                    const float x0 = v[i], x1 = v[i + half];
                    v[i] = x0 * c[i] - x1 * s[i];
                    v[i + half] = x1 * c[i] + x0 * s[i];
                }
            } else {
                int i = 0;
                for (; i + 4 <= half; i += 4) {
                    // 8 floats = 4 pairs (x0, x1); c, s duplicated to (c, c) and (s, s)
                    const __m256 xv = _mm256_loadu_ps(v + 2 * i);
                    const __m128 c4 = _mm_loadu_ps(&c[i]), s4 = _mm_loadu_ps(&s[i]);
                    const __m256 cv = _mm256_set_m128(_mm_unpackhi_ps(c4, c4), _mm_unpacklo_ps(c4, c4));
                    const __m256 sv = _mm256_set_m128(_mm_unpackhi_ps(s4, s4), _mm_unpacklo_ps(s4, s4));
                    const __m256 sw = _mm256_permute_ps(xv, 0xb1);  // (x1, x0)
                    const __m256 a = _mm256_mul_ps(xv, cv), bb = _mm256_mul_ps(sw, sv);
                    // even lanes: x0 c - x1 s; odd lanes: x1 c + x0 s
                    _mm256_storeu_ps(v + 2 * i, _mm256_addsub_ps(a, bb));
                }
                for (; i < half; ++i) {
                    const float x0 = v[2 * i], x1 = v[2 * i + 1];
                    v[2 * i] = x0 * c[i] - x1 * s[i];
                    v[2 * i + 1] = x1 * c[i] + x0 * s[i];
                }
            }
        }
    }
}

template <typename F>
inline void map(float* y, const float* x, int64_t n, F f) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
    if (i < n) {
        alignas(32) float t[8] = {};
        for (int64_t j = i; j < n; ++j) t[j - i] = x[j];
        _mm256_store_ps(t, f(_mm256_load_ps(t)));
        for (int64_t j = i; j < n; ++j) y[j] = t[j - i];
    }
}
template <typename F>
inline void map2(float* y, const float* a, const float* b, int64_t n, F f) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    if (i < n) {
        alignas(32) float ta[8] = {}, tb[8] = {};
        for (int64_t j = i; j < n; ++j) {
            ta[j - i] = a[j];
            tb[j - i] = b[j];
        }
        _mm256_store_ps(ta, f(_mm256_load_ps(ta), _mm256_load_ps(tb)));
        for (int64_t j = i; j < n; ++j) y[j] = ta[j - i];
    }
}

void silu(float* y, const float* x, int64_t n) {
    map(y, x, n, [](__m256 v) { return _mm256_mul_ps(v, sigmoid_ps(v)); });
}
void swiglu(float* y, const float* g, const float* u, int64_t n) {
    map2(y, g, u, n, [](__m256 gv, __m256 uv) { return _mm256_mul_ps(_mm256_mul_ps(gv, sigmoid_ps(gv)), uv); });
}
void gelu_erf(float* y, const float* x, int64_t n) {
    map(y, x, n, [](__m256 v) {
        const __m256 e = erf_ps(_mm256_mul_ps(v, _mm256_set1_ps((float)M_SQRT1_2)));
        return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    });
}
void gelu_tanh(float* y, const float* x, int64_t n) {
    const float c = std::sqrt(2.0f / (float)M_PI);
    map(y, x, n, [c](__m256 v) {
        const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
        const __m256 in = _mm256_mul_ps(_mm256_set1_ps(c), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
        return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.0f), tanh_ps(in)));
    });
}
void quick_gelu(float* y, const float* x, int64_t n) {
    map(y, x, n, [](__m256 v) { return _mm256_mul_ps(v, sigmoid_ps(_mm256_mul_ps(_mm256_set1_ps(1.702f), v))); });
}
void add(float* y, const float* a, const float* b, int64_t n) {
    map2(y, a, b, n, [](__m256 u, __m256 v) { return _mm256_add_ps(u, v); });
}
void mul(float* y, const float* a, const float* b, int64_t n) {
    map2(y, a, b, n, [](__m256 u, __m256 v) { return _mm256_mul_ps(u, v); });
}
void scale(float* y, const float* x, float s, int64_t n) {
    const __m256 vs = _mm256_set1_ps(s);
    map(y, x, n, [vs](__m256 v) { return _mm256_mul_ps(v, vs); });
}

const Kernels kAvx2 = {
    "avx2",
    "matmul: AVX2 row dots (GEMV, M<=12) and 8-row packed GEMM (maddubs/madd integer dots, FMA float); "
    "attention, conv2d, norms, rope, activations: AVX2/FMA",
    avx2::matmul, avx2::attention, avx2::conv2d, rmsnorm,    layernorm, softmax, groupnorm, rope,
    silu,     swiglu,       gelu_erf,        gelu_tanh,    quick_gelu, add,       mul,     scale,    avx2::quantize_act,
};

}  // namespace
}  // namespace hg::avx2

namespace hg {
const Kernels* kernels_avx2_table() { return &avx2::kAvx2; }
}  // namespace hg
