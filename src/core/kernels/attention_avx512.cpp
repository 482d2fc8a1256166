// AVX-512 attention, prefill (n_q >= 4): the AVX2 level's tiled flash attention
// (attention_avx2.cpp) with micro-kernels sized for 32 zmm registers. A tile is 24 query rows of
// one head (2 groups of 12) over blocks of 64 keys:
//   scores  S[12 rows][32 keys] = Q · K^T     24 accumulators, queries packed d-major per group,
//                                              the key block transposed once (d-major);
//   update  acc[12 rows][32 dims] = acc * alpha + P · V   24 accumulators per 32 dims of the head.
// Online softmax per row in float32, with the AVX2 exp's algorithm in 16 lanes. Decode (n_q < 4)
// is the AVX2 kernel. Float results differ from AVX2 only in summation order.
//
// Compiled with -mavx512*: nothing here may be shared with other files (see matmul_avx512.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/kernels/kernels_avx2.h"
#include "core/kernels/simd_shared.h"
#include "core/ops.h"

#define HG_UNROLL _Pragma("GCC unroll 16")
// GCC 12's AVX-512 intrinsics start from a self-initialised _mm512_undefined_*() (false reports).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace hg::avx512 {

namespace {

constexpr int kRows = 4;        // n_q at or above this takes the tiled path (as on AVX2)
constexpr int kGR = 12;         // query rows per micro-kernel group
constexpr int kTileGroups = 2;  // groups per tile
constexpr int kTileRows = kGR * kTileGroups;
constexpr int kKB = 64;         // keys per block

// e^x exactly as the AVX2 level's exp_ps (Cody-Waite reduction, degree-7 Taylor, 2^n in two
// halves), in 16 lanes: the same values lane for lane.
inline __m512 exp512(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.7228f), lo = _mm512_set1_ps(-87.3365f);
    const __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i ni = _mm512_cvtps_epi32(n);
    const __m512i n1 = _mm512_srai_epi32(ni, 1), n2 = _mm512_sub_epi32(ni, n1);
    const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, _mm512_set1_epi32(127)), 23));
    const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, _mm512_set1_epi32(127)), 23));
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
    y = _mm512_mask_mov_ps(y, over, _mm512_set1_ps(INFINITY));
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), y);
}
inline float exp1(float x) { return _mm512_cvtss_f32(exp512(_mm512_set1_ps(x))); }

template <bool F16>
inline __m512 load16_kv(const uint8_t* row, int d) {
    if constexpr (F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const uint16_t*>(row) + d)));
    else return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + d);
}
template <bool F16>
inline float kv_at(const uint8_t* row, int d) {
    if constexpr (F16) return _cvtsh_ss(reinterpret_cast<const uint16_t*>(row)[d]);
    else return reinterpret_cast<const float*>(row)[d];
}

// 16 x 16 transpose of floats: on return v[i] holds element i of every input vector.
inline void transpose16_ps(__m512 v[16]) {
    __m512i r[16], t[16], u[16];
    HG_UNROLL
    for (int i = 0; i < 16; ++i) r[i] = _mm512_castps_si512(v[i]);
    HG_UNROLL
    for (int p = 0; p < 8; ++p) {
        t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
    }
    HG_UNROLL
    for (int q = 0; q < 4; ++q) {
        u[4 * q + 0] = _mm512_unpacklo_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = _mm512_unpackhi_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = _mm512_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = _mm512_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
    }
    HG_UNROLL
    for (int e = 0; e < 4; ++e) {
        const __m512i v0 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x88), v1 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xDD);
        const __m512i w0 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x88),
                      w1 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xDD);
        v[e] = _mm512_castsi512_ps(_mm512_shuffle_i32x4(v0, w0, 0x88));
        v[8 + e] = _mm512_castsi512_ps(_mm512_shuffle_i32x4(v0, w0, 0xDD));
        v[4 + e] = _mm512_castsi512_ps(_mm512_shuffle_i32x4(v1, w1, 0x88));
        v[12 + e] = _mm512_castsi512_ps(_mm512_shuffle_i32x4(v1, w1, 0xDD));
    }
}

// kt[d][0..63] = K[key j][d] for the nb keys of the block (columns past nb zero).
template <bool F16>
void pack_keys_t(float* kt, const uint8_t* kb, size_t kv_stride, int nb, int D) {
    const int D16 = D & ~15;
    for (int j0 = 0; j0 < kKB; j0 += 16) {
        if (j0 + 16 <= nb) {
            for (int d = 0; d < D16; d += 16) {
                __m512 v[16];
                HG_UNROLL
                for (int r = 0; r < 16; ++r) v[r] = load16_kv<F16>(kb + (j0 + r) * kv_stride, d);
                transpose16_ps(v);
                HG_UNROLL
                for (int i = 0; i < 16; ++i) _mm512_store_ps(kt + (d + i) * kKB + j0, v[i]);
            }
            for (int d = D16; d < D; ++d)
                for (int r = 0; r < 16; ++r) kt[d * kKB + j0 + r] = kv_at<F16>(kb + (j0 + r) * kv_stride, d);
        } else {
            for (int d = 0; d < D; ++d)
                for (int r = 0; r < 16; ++r)
                    kt[d * kKB + j0 + r] = j0 + r < nb ? kv_at<F16>(kb + (j0 + r) * kv_stride, d) : 0.0f;
        }
    }
}

// S[r][c0 .. c0+31] = sum_d qp[d][r] * kt[d][c0 ..] for the 12 rows of a group (S rows kKB apart).
inline void scores_12x32(const float* qp, const float* kt, int D, float* S) {
    __m512 a[kGR][2];
    HG_UNROLL
    for (int r = 0; r < kGR; ++r) a[r][0] = a[r][1] = _mm512_setzero_ps();
    for (int d = 0; d < D; ++d) {
        const __m512 k0 = _mm512_load_ps(kt + d * kKB), k1 = _mm512_load_ps(kt + d * kKB + 16);
        HG_UNROLL
        for (int r = 0; r < kGR; ++r) {
            const __m512 q = _mm512_set1_ps(qp[d * kGR + r]);
            a[r][0] = _mm512_fmadd_ps(q, k0, a[r][0]);
            a[r][1] = _mm512_fmadd_ps(q, k1, a[r][1]);
        }
    }
    HG_UNROLL
    for (int r = 0; r < kGR; ++r) {
        _mm512_store_ps(S + r * kKB, a[r][0]);
        _mm512_store_ps(S + r * kKB + 16, a[r][1]);
    }
}

// acc[r][d0 .. d0+16*NV) = acc * alpha[r] + sum_j P[r][j] * vp[j][d0 ..] for the 12 rows.
template <int NV>
inline void update_12(float* acc, int D, const float* P, const float* alpha, int nb, const float* vp, int ldv, int d0) {
    __m512 a[kGR][NV];
    HG_UNROLL
    for (int r = 0; r < kGR; ++r) {
        const __m512 al = _mm512_set1_ps(alpha[r]);
        HG_UNROLL
        for (int c = 0; c < NV; ++c) a[r][c] = _mm512_mul_ps(_mm512_loadu_ps(acc + r * D + d0 + 16 * c), al);
    }
    for (int j = 0; j < nb; ++j) {
        __m512 v[NV];
        HG_UNROLL
        for (int c = 0; c < NV; ++c) v[c] = _mm512_load_ps(vp + j * ldv + d0 + 16 * c);
        HG_UNROLL
        for (int r = 0; r < kGR; ++r) {
            const __m512 pv = _mm512_set1_ps(P[r * kKB + j]);
            HG_UNROLL
            for (int c = 0; c < NV; ++c) a[r][c] = _mm512_fmadd_ps(pv, v[c], a[r][c]);
        }
    }
    HG_UNROLL
    for (int r = 0; r < kGR; ++r)
        HG_UNROLL
        for (int c = 0; c < NV; ++c) _mm512_storeu_ps(acc + r * D + d0 + 16 * c, a[r][c]);
}

// vp[j][0 .. D) = V[key j] as float, rows ldv (D rounded up to 16) apart.
template <bool F16>
void pack_values(float* vp, int ldv, const uint8_t* vb, size_t kv_stride, int nb, int D) {
    const int D16 = D & ~15;
    for (int j = 0; j < nb; ++j) {
        const uint8_t* vr = vb + j * kv_stride;
        float* dst = vp + j * ldv;
        for (int d = 0; d < D16; d += 16) _mm512_store_ps(dst + d, load16_kv<F16>(vr, d));
        for (int d = D16; d < D; ++d) dst[d] = kv_at<F16>(vr, d);
    }
}

struct TileScratch {
    AlignedBuffer qp, kt, vp, acc;
};

// Rows i0 .. i0+nr-1 (nr <= 24) of one head; q: row i0 of that head; out: its output row.
template <bool F16>
void attend_tile(float* out, size_t out_row, const float* q, size_t q_stride, int nr, const int64_t* j0r,
                 const int64_t* j1r, const uint8_t* kb, const uint8_t* vb, size_t kv_stride, int D, float scale,
                 TileScratch& ts) {
    const int ng = (nr + kGR - 1) / kGR;
    const int rows = ng * kGR;  // rows past nr: zero queries, results dropped
    const int ldv = (D + 15) & ~15;
    float* qp = ts.qp.floats((size_t)rows * D);
    float* kt = ts.kt.floats((size_t)D * kKB);
    float* vp = ts.vp.floats((size_t)kKB * ldv);
    float* acc = ts.acc.floats((size_t)rows * D);
    for (int g = 0; g < ng; ++g)
        for (int r = 0; r < kGR; ++r) {
            const int i = g * kGR + r;
            for (int d = 0; d < D; ++d) qp[(g * D + d) * kGR + r] = i < nr ? q[i * q_stride + d] : 0.0f;
        }
    std::memset(acc, 0, sizeof(float) * rows * D);
    int64_t J0 = j0r[0], J1 = j1r[0];
    for (int r = 1; r < nr; ++r) {
        J0 = std::min(J0, j0r[r]);
        J1 = std::max(J1, j1r[r]);
    }
    float m[kTileRows], l[kTileRows], alpha[kTileRows];
    for (int r = 0; r < kTileRows; ++r) m[r] = -INFINITY, l[r] = 0, alpha[r] = 1.0f;
    alignas(64) float S[kTileRows * kKB];
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const int D16 = D & ~15, D32 = D & ~31;
    for (int64_t jb = J0; jb < J1; jb += kKB) {
        const int nb = static_cast<int>(std::min<int64_t>(kKB, J1 - jb));
        const int ncol = (nb + 31) & ~31;  // score columns computed (32 at a time)
        pack_keys_t<F16>(kt, kb + jb * kv_stride, kv_stride, nb, D);
        for (int g = 0; g < ng; ++g)
            for (int c0 = 0; c0 < ncol; c0 += 32) scores_12x32(qp + g * D * kGR, kt + c0, D, S + g * kGR * kKB + c0);
        // per row: scale, mask, online softmax update; S becomes P
        for (int r = 0; r < rows; ++r) {
            float* Sr = S + r * kKB;
            const int lo = r < nr ? static_cast<int>(std::clamp<int64_t>(j0r[r] - jb, 0, nb)) : 0;
            const int hi = r < nr ? static_cast<int>(std::clamp<int64_t>(j1r[r] - jb, 0, nb)) : 0;
            if (lo >= hi) {  // nothing visible to this row in this block: weights 0, state unchanged
                alpha[r] = 1.0f;
                std::memset(Sr, 0, sizeof(float) * ncol);
                continue;
            }
            const __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
            const __m512 vs = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
            __m512 vmax = ninf;
            for (int c = 0; c < ncol; c += 16) {
                const __m512i key = _mm512_add_epi32(iota, _mm512_set1_epi32(c));
                const __mmask16 in = _mm512_cmpge_epi32_mask(key, vlo) & _mm512_cmplt_epi32_mask(key, vhi);
                const __m512 sv = _mm512_mask_mul_ps(ninf, in, _mm512_load_ps(Sr + c), vs);
                _mm512_store_ps(Sr + c, sv);
                vmax = _mm512_max_ps(vmax, sv);
            }
            const float m_new = std::max(m[r], _mm512_reduce_max_ps(vmax));
            alpha[r] = exp1(m[r] - m_new);  // 0 on the first block
            const __m512 vm = _mm512_set1_ps(m_new);
            __m512 lsum = _mm512_setzero_ps();
            for (int c = 0; c < ncol; c += 16) {
                const __m512 pv = exp512(_mm512_sub_ps(_mm512_load_ps(Sr + c), vm));  // masked: exp(-inf) = 0
                _mm512_store_ps(Sr + c, pv);
                lsum = _mm512_add_ps(lsum, pv);
            }
            l[r] = l[r] * alpha[r] + _mm512_reduce_add_ps(lsum);
            m[r] = m_new;
        }
        pack_values<F16>(vp, ldv, vb + jb * kv_stride, kv_stride, nb, D);
        for (int g = 0; g < ng; ++g) {
            float* ag = acc + (size_t)g * kGR * D;
            const float* Pg = S + g * kGR * kKB;
            const float* al = alpha + g * kGR;
            for (int d0 = 0; d0 < D32; d0 += 32) update_12<2>(ag, D, Pg, al, nb, vp, ldv, d0);
            if (D16 > D32) update_12<1>(ag, D, Pg, al, nb, vp, ldv, D32);
            for (int d = D16; d < D; ++d)
                for (int r = 0; r < kGR; ++r) {
                    float t = ag[r * D + d] * al[r];
                    for (int j = 0; j < nb; ++j) t += Pg[r * kKB + j] * vp[j * ldv + d];
                    ag[r * D + d] = t;
                }
        }
    }
    for (int r = 0; r < nr; ++r) {
        const float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        for (int d = 0; d < D; ++d) out[r * out_row + d] = acc[(size_t)r * D + d] * inv;
    }
}

}  // namespace

void attention(float* out, const float* q, int64_t n_q, size_t q_stride, const void* k, const void* v, DType kv_type,
               int64_t n_kv, size_t kv_stride, const AttentionParams& p, ThreadPool& pool) {
    if (n_q < kRows) return avx2::attention(out, q, n_q, q_stride, k, v, kv_type, n_kv, kv_stride, p, pool);
    HG_CHECK(kv_type == DType::F32 || kv_type == DType::F16, "attention: KV type %s not supported", dtype_name(kv_type));
    HG_CHECK(p.n_kv_head > 0 && p.n_head % p.n_kv_head == 0, "attention: %d heads not a multiple of %d KV heads",
             p.n_head, p.n_kv_head);
    const int D = p.head_dim;
    const int group = p.n_head / p.n_kv_head;
    const size_t esize = kv_type == DType::F16 ? 2 : 4;
    auto visible = [&](int64_t i, int64_t& j0, int64_t& j1) {  // j <= pos (causal), j > pos - window
        const int64_t pos = p.q_pos0 + i;
        j0 = 0;
        j1 = n_kv;
        if (p.causal) j1 = std::min<int64_t>(n_kv, pos + 1);
        if (p.window > 0) j0 = std::max<int64_t>(0, pos - p.window + 1);
    };
    // work items (head, tile of 24 query rows), head-major so a head's K/V stay cached
    const int64_t n_rb = (n_q + kTileRows - 1) / kTileRows;
    pool.parallel_for(p.n_head * n_rb, [&](int64_t b, int64_t e, int) {
        static thread_local TileScratch ts;
        for (int64_t item = b; item < e; ++item) {
            const int h = static_cast<int>(item / n_rb);
            const int64_t i0 = (item % n_rb) * kTileRows;
            const int nr = static_cast<int>(std::min<int64_t>(kTileRows, n_q - i0));
            int64_t j0r[kTileRows], j1r[kTileRows];
            for (int r = 0; r < nr; ++r) visible(i0 + r, j0r[r], j1r[r]);
            const size_t off = (size_t)(h / group) * D * esize;
            const auto* kb = static_cast<const uint8_t*>(k) + off;
            const auto* vb = static_cast<const uint8_t*>(v) + off;
            float* o = out + (i0 * p.n_head + h) * D;
            const float* qi = q + i0 * q_stride + (size_t)h * D;
            const size_t orow = (size_t)p.n_head * D;
            if (kv_type == DType::F16)
                attend_tile<true>(o, orow, qi, q_stride, nr, j0r, j1r, kb, vb, kv_stride, D, p.scale, ts);
            else
                attend_tile<false>(o, orow, qi, q_stride, nr, j0r, j1r, kb, vb, kv_stride, D, p.scale, ts);
        }
    });
}

}  // namespace hg::avx512
