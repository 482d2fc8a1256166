// AVX2/FMA/F16C helpers shared by the *_avx2.cpp kernels (include only from those files:
// they are the only ones compiled with -mavx2 -mfma -mf16c).
//
// Vector math accuracy (measured against the libm float functions over dense sweeps, see
// tests/conformance/ops_conformance_test.cpp):
//   exp_ps   |rel err| <= 2 ulp on [-87.3, 88.7]; flushes to 0 below -87.3, +inf above 88.72.
//   tanh_ps  a few ulp (Taylor series below 0.55, exp-based above).
//   erf_ps   |abs err| ~ 1e-7 (the GELU bound is stated relative to |x|).
// The bounds the conformance suite enforces are stated there.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "core/ops.h"

// Complete unrolling of the small fixed-count loops of the micro-kernels: at -O2 GCC keeps
// arrays of vector accumulators in memory unless their loops are unrolled.
#define HG_UNROLL _Pragma("GCC unroll 16")

namespace hg::avx2 {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

// In-register 8x8 transpose: on return v[i] holds element i of every input vector.
inline void transpose8_ps(__m256 v[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
    const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
    const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
    const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    v[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    v[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    v[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    v[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    v[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    v[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    v[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    v[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// The float GEMM micro-kernel (matmul, attention): acc[m][0..1] = sum_k a[k][m] * b[k][0..15] for
// k < n, m < MR. a: 6 floats per k (rows packed k-major in groups of 6); b: 16 floats per k, ldb
// apart, 32-byte aligned. 12 accumulators, 2 loads of b and MR broadcasts per k.
template <int MR>
inline void fma_rows_x16(const float* a, const float* b, int64_t ldb, int64_t n, __m256 acc[][2]) {
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int64_t k = 0; k < n; ++k) {
        const __m256 b0 = _mm256_load_ps(b + k * ldb), b1 = _mm256_load_ps(b + k * ldb + 8);
        HG_UNROLL
        for (int m = 0; m < MR; ++m) {
            const __m256 av = _mm256_broadcast_ss(a + k * 6 + m);
            acc[m][0] = _mm256_fmadd_ps(av, b0, acc[m][0]);
            acc[m][1] = _mm256_fmadd_ps(av, b1, acc[m][1]);
        }
    }
}

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// 8 halfs / bfloat16s -> 8 floats (exact).
inline __m256 load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256 load_bf16(const uint16_t* p) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

// e^x: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite two-part ln2), e^r by its Taylor polynomial
// to degree 7 (truncation < 2^-26 relative), scaled by 2^n built in the exponent bits.
inline __m256 exp_ps(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.7228f), lo = _mm256_set1_ps(-87.3365f);
    const __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 high part (exact product)
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);      // ln2 low part
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    // 2^n in two halves so n = 128 (x near 88.7) does not overflow the exponent field
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
    y = _mm256_andnot_ps(under, y);
    return y;
}

// 1 / (1 + e^-x), exact division.
inline __m256 sigmoid_ps(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

// tanh: for |x| < 0.55 its Taylor series x + x^3 P(x^2) to x^19 (truncation < 1e-9 relative),
// above 1 - 2 / (e^{2|x|} + 1); sign restored.
inline __m256 tanh_ps(__m256 x) {
    const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f));
    const __m256 ax = abs_ps(x);
    const __m256 e = exp_ps(_mm256_add_ps(ax, ax));
    const __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                                     _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    const __m256 x2 = _mm256_mul_ps(ax, ax);
    __m256 p = _mm256_set1_ps(-0.00023912911424099f);                        // -443861162/1856156927625
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(0.00059002744094558595f));   // 6404582/10854718875
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-0.0014558343870513183f));   // -929569/638512875
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(0.0035921280365724810f));    // 21844/6081075
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-0.0088632355299021966f));   // -1382/155925
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(0.021869488536155203f));     // 62/2835
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-0.053968253968253968f));    // -17/315
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(0.13333333333333333f));      // 2/15
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-0.33333333333333333f));     // -1/3
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, x2), ax, ax);
    const __m256 use_small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.55f), _CMP_LT_OQ);
    return _mm256_or_ps(_mm256_blendv_ps(big, small, use_small), sign);
}

// erf(x): x * P(x^2) for |x| < 1 and 1 - exp(-x^2) * Q(|x|) for 1 <= |x| < 4 (coefficients
// fitted by tests/reference/fit_erf.py), 1 beyond; sign restored.
__m256 erf_ps(__m256 x);

}  // namespace hg::avx2
