// AVX2 attention: flash-style online softmax. Threads split the (query row, head) pairs; the heads
// of one query row that a thread holds advance together over blocks of 32 keys, within the visible
// range only (causal / sliding-window bounds computed, not masked). K/V in F32 or F16 (converted
// exactly with F16C). No score matrix is kept: a block of 32 scores and one head_dim accumulator
// per head live in thread-local scratch.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/kernels/kernels_avx2.h"
#include "core/kernels/simd_avx2.h"

namespace hg::avx2 {

namespace {

constexpr int kBlock = 32;

template <bool F16>
inline __m256 load_kv(const uint8_t* p, int d) {
    if constexpr (F16) return load_f16(reinterpret_cast<const uint16_t*>(p) + d);
    else return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + d);
}
template <bool F16>
inline float kv_at(const uint8_t* p, int d) {
    if constexpr (F16) return _cvtsh_ss(reinterpret_cast<const uint16_t*>(p)[d]);
    else return reinterpret_cast<const float*>(p)[d];
}

// acc[0 .. 8*NV) = acc * alpha + sum_j p[j] * v_j[0 .. 8*NV), with the NV accumulator vectors
// in registers across the block of keys.
template <bool F16, int NV>
inline void accumulate_v(float* acc, const float* p, int nb, const uint8_t* vr0, size_t kv_stride, int d0, float alpha) {
    __m256 a[NV];
    const __m256 va = _mm256_set1_ps(alpha);
    HG_UNROLL
    for (int c = 0; c < NV; ++c) a[c] = _mm256_mul_ps(_mm256_loadu_ps(acc + d0 + 8 * c), va);
    for (int j = 0; j < nb; ++j) {
        const uint8_t* vr = vr0 + j * kv_stride;
        const __m256 pj = _mm256_set1_ps(p[j]);
        HG_UNROLL
        for (int c = 0; c < NV; ++c) a[c] = _mm256_fmadd_ps(pj, load_kv<F16>(vr, d0 + 8 * c), a[c]);
    }
    HG_UNROLL
    for (int c = 0; c < NV; ++c) _mm256_storeu_ps(acc + d0 + 8 * c, a[c]);
}

template <bool F16>
void accumulate_v_chunk(float* acc, const float* p, int nb, const uint8_t* vr0, size_t kv_stride, int d0, int nv,
                        float alpha) {
    switch (nv) {
        case 1: return accumulate_v<F16, 1>(acc, p, nb, vr0, kv_stride, d0, alpha);
        case 2: return accumulate_v<F16, 2>(acc, p, nb, vr0, kv_stride, d0, alpha);
        case 3: return accumulate_v<F16, 3>(acc, p, nb, vr0, kv_stride, d0, alpha);
        case 4: return accumulate_v<F16, 4>(acc, p, nb, vr0, kv_stride, d0, alpha);
        case 5: return accumulate_v<F16, 5>(acc, p, nb, vr0, kv_stride, d0, alpha);
        case 6: return accumulate_v<F16, 6>(acc, p, nb, vr0, kv_stride, d0, alpha);
        case 7: return accumulate_v<F16, 7>(acc, p, nb, vr0, kv_stride, d0, alpha);
        default: return accumulate_v<F16, 8>(acc, p, nb, vr0, kv_stride, d0, alpha);
    }
}

// 4 scores at once: q . k_j for keys j0..j0+3 (D8 = D rounded down to 8; the tail is scalar).
template <bool F16>
inline void dot4(const float* qi, const uint8_t* k0, size_t kv_stride, int D, float* out) {
    const int D8 = D & ~7;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int d = 0; d < D8; d += 8) {
        const __m256 qv = _mm256_loadu_ps(qi + d);
        a0 = _mm256_fmadd_ps(qv, load_kv<F16>(k0, d), a0);
        a1 = _mm256_fmadd_ps(qv, load_kv<F16>(k0 + kv_stride, d), a1);
        a2 = _mm256_fmadd_ps(qv, load_kv<F16>(k0 + 2 * kv_stride, d), a2);
        a3 = _mm256_fmadd_ps(qv, load_kv<F16>(k0 + 3 * kv_stride, d), a3);
    }
    // horizontal sums of the four: hadd pairs, then add the 128-bit halves
    const __m256 h01 = _mm256_hadd_ps(a0, a1), h23 = _mm256_hadd_ps(a2, a3);
    const __m256 h = _mm256_hadd_ps(h01, h23);  // lanes: s0 s1 s2 s3 | s0 s1 s2 s3 (halves)
    const __m128 r = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    _mm_storeu_ps(out, r);
    for (int d = D8; d < D; ++d)
        for (int j = 0; j < 4; ++j) out[j] += qi[d] * kv_at<F16>(k0 + j * kv_stride, d);
}

// One block of nb keys (rows kr0, vr0 onwards) for one head: scores, online softmax update of
// (m, l), acc = acc * alpha + sum_j p_j v_j.
template <bool F16>
void attend_block(float* acc, float& m, float& l, const float* qi, const uint8_t* kr0, const uint8_t* vr0,
                  size_t kv_stride, int nb, int D, float scale) {
    const int D8 = D & ~7;
    alignas(32) float s[kBlock];
    int j = 0;
    for (; j + 4 <= nb; j += 4) dot4<F16>(qi, kr0 + j * kv_stride, kv_stride, D, s + j);
    for (; j < nb; ++j) {
        const uint8_t* kr = kr0 + j * kv_stride;
        __m256 a0 = _mm256_setzero_ps();
        for (int d = 0; d < D8; d += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qi + d), load_kv<F16>(kr, d), a0);
        float dot = hsum(a0);
        for (int d = D8; d < D; ++d) dot += qi[d] * kv_at<F16>(kr, d);
        s[j] = dot;
    }
    float bmax = -INFINITY;
    for (j = 0; j < nb; ++j) {
        s[j] *= scale;
        bmax = std::max(bmax, s[j]);
    }
    const float m_new = std::max(m, bmax);
    const float alpha = _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(m - m_new)));  // 0 on the first block
    const __m256 vm = _mm256_set1_ps(m_new);
    __m256 lsum = _mm256_setzero_ps();
    j = 0;
    for (; j + 8 <= nb; j += 8) {
        const __m256 p = exp_ps(_mm256_sub_ps(_mm256_load_ps(s + j), vm));
        _mm256_store_ps(s + j, p);
        lsum = _mm256_add_ps(lsum, p);
    }
    float ls = hsum(lsum);
    for (; j < nb; ++j) {
        s[j] = _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(s[j] - m_new)));
        ls += s[j];
    }
    l = l * alpha + ls;
    m = m_new;
    for (int d0 = 0; d0 < D8; d0 += 64)
        accumulate_v_chunk<F16>(acc, s, nb, vr0, kv_stride, d0, std::min(8, (D8 - d0) / 8), alpha);
    for (int d = D8; d < D; ++d) {
        float t = acc[d] * alpha;
        for (j = 0; j < nb; ++j) t += s[j] * kv_at<F16>(vr0 + j * kv_stride, d);
        acc[d] = t;
    }
}

// Query row i, heads [h0, h1): the heads advance together block by block, so each block of KV
// rows is read once, front to back, for all of them (one head at a time would walk the rows
// with a stride of a whole KV row and miss the TLB at long context).
template <bool F16>
void attend_heads(float* out, const float* qi_row, const uint8_t* k, const uint8_t* v, size_t kv_stride, int64_t j0,
                  int64_t j1, int h0, int h1, int group, int D, size_t esize, float scale, float* acc, float* ml) {
    const int nh = h1 - h0;
    for (int t = 0; t < nh * D; ++t) acc[t] = 0;
    for (int t = 0; t < nh; ++t) {
        ml[2 * t] = -INFINITY;
        ml[2 * t + 1] = 0;
    }
    for (int64_t jb = j0; jb < j1; jb += kBlock) {
        const int nb = static_cast<int>(std::min<int64_t>(kBlock, j1 - jb));
        for (int h = h0; h < h1; ++h) {
            const size_t off = jb * kv_stride + (size_t)(h / group) * D * esize;
            attend_block<F16>(acc + (h - h0) * D, ml[2 * (h - h0)], ml[2 * (h - h0) + 1], qi_row + (size_t)h * D, k + off,
                              v + off, kv_stride, nb, D, scale);
        }
    }
    for (int h = h0; h < h1; ++h) {
        const float l = ml[2 * (h - h0) + 1];
        const float inv = l > 0 ? 1.0f / l : 0.0f;
        for (int d = 0; d < D; ++d) out[(size_t)h * D + d] = acc[(h - h0) * D + d] * inv;
    }
}

// ---- prefill: tiles of up to 24 query rows (4 groups of 6) of one head over blocks of 64 keys.
// Scores and the P·V update are small GEMMs with the register blocking of the float matmul
// (6 rows x 16 columns, 12 accumulators): the queries are packed d-major per group of 6 rows and
// each key block is transposed once (d-major, 64 keys) for all 24 rows, so no horizontal sums
// are needed. Rows may see different key ranges (causal, window): the block loop covers their
// union and masks the scores outside each row's range.
constexpr int kRows = 4;        // n_q at or above this takes the tiled path
constexpr int kGR = 6;          // query rows per micro-kernel group
constexpr int kTileGroups = 4;  // groups per tile
constexpr int kTileRows = kGR * kTileGroups;
constexpr int kKB = 64;         // keys per block

// kt[d][0..63] = K[key j][d] for the nb keys of the block (columns past nb zero).
template <bool F16>
void pack_keys_t(float* kt, const uint8_t* kb, size_t kv_stride, int nb, int D) {
    const int D8 = D & ~7;
    for (int j0 = 0; j0 < kKB; j0 += 8) {
        if (j0 + 8 <= nb) {
            for (int d = 0; d < D8; d += 8) {
                __m256 v[8];
                HG_UNROLL
                for (int r = 0; r < 8; ++r) v[r] = load_kv<F16>(kb + (j0 + r) * kv_stride, d);
                transpose8_ps(v);
                HG_UNROLL
                for (int i = 0; i < 8; ++i) _mm256_store_ps(kt + (d + i) * kKB + j0, v[i]);
            }
            for (int d = D8; d < D; ++d)
                for (int r = 0; r < 8; ++r) kt[d * kKB + j0 + r] = kv_at<F16>(kb + (j0 + r) * kv_stride, d);
        } else {
            for (int d = 0; d < D; ++d)
                for (int r = 0; r < 8; ++r)
                    kt[d * kKB + j0 + r] = j0 + r < nb ? kv_at<F16>(kb + (j0 + r) * kv_stride, d) : 0.0f;
        }
    }
}

// S[r][c0 .. c0+15] = sum_d qp[d][r] * kt[d][c0 ..] for the 6 rows of a group (S rows kKB apart).
inline void scores_6x16(const float* qp, const float* kt, int D, float* S) {
    __m256 a[kGR][2];
    static_assert(kGR == 6, "fma_rows_x16 takes queries packed in groups of 6");
    fma_rows_x16<kGR>(qp, kt, kKB, D, a);
    HG_UNROLL
    for (int r = 0; r < kGR; ++r) {
        _mm256_store_ps(S + r * kKB, a[r][0]);
        _mm256_store_ps(S + r * kKB + 8, a[r][1]);
    }
}

// acc[r][d0 .. d0+8*NV) = acc * alpha[r] + sum_j P[r][j] * vp[j][d0 ..] for the 6 rows of a group
// (vp: the block's V rows packed as float, ldv apart).
template <int NV>
inline void update_6(float* acc, int D, const float* P, const float* alpha, int nb, const float* vp, int ldv, int d0) {
    __m256 a[kGR][NV];
    HG_UNROLL
    for (int r = 0; r < kGR; ++r) {
        const __m256 al = _mm256_set1_ps(alpha[r]);
        HG_UNROLL
        for (int c = 0; c < NV; ++c) a[r][c] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * D + d0 + 8 * c), al);
    }
    for (int j = 0; j < nb; ++j) {
        __m256 v[NV];
        HG_UNROLL
        for (int c = 0; c < NV; ++c) v[c] = _mm256_load_ps(vp + j * ldv + d0 + 8 * c);
        HG_UNROLL
        for (int r = 0; r < kGR; ++r) {
            const __m256 pv = _mm256_broadcast_ss(P + r * kKB + j);
            HG_UNROLL
            for (int c = 0; c < NV; ++c) a[r][c] = _mm256_fmadd_ps(pv, v[c], a[r][c]);
        }
    }
    HG_UNROLL
    for (int r = 0; r < kGR; ++r)
        HG_UNROLL
        for (int c = 0; c < NV; ++c) _mm256_storeu_ps(acc + r * D + d0 + 8 * c, a[r][c]);
}

// vp[j][0 .. D) = V[key j] as float, rows ldv (D rounded up to 8) apart: the P·V loops then read
// contiguous, aligned floats instead of one KV-cache row (often its own page) per key.
template <bool F16>
void pack_values(float* vp, int ldv, const uint8_t* vb, size_t kv_stride, int nb, int D) {
    const int D8 = D & ~7;
    for (int j = 0; j < nb; ++j) {
        const uint8_t* vr = vb + j * kv_stride;
        float* dst = vp + j * ldv;
        for (int d = 0; d < D8; d += 8) _mm256_store_ps(dst + d, load_kv<F16>(vr, d));
        for (int d = D8; d < D; ++d) dst[d] = kv_at<F16>(vr, d);
    }
}

struct TileScratch {
    std::vector<float> qp, kt, vp, acc;
};

// Rows i0 .. i0+nr-1 (nr <= 24) of one head; q: row i0 of that head; out: its output row.
template <bool F16>
void attend_tile(float* out, size_t out_row, const float* q, size_t q_stride, int nr, const int64_t* j0r,
                 const int64_t* j1r, const uint8_t* kb, const uint8_t* vb, size_t kv_stride, int D, float scale,
                 TileScratch& ts) {
    const int ng = (nr + kGR - 1) / kGR;
    const int rows = ng * kGR;  // rows past nr: zero queries, results dropped
    if (ts.qp.size() < (size_t)rows * D) ts.qp.resize((size_t)rows * D);
    const int ldv = (D + 7) & ~7;
    if (ts.kt.size() < (size_t)D * kKB + 8) ts.kt.resize((size_t)D * kKB + 8);
    if (ts.vp.size() < (size_t)kKB * ldv + 8) ts.vp.resize((size_t)kKB * ldv + 8);
    if (ts.acc.size() < (size_t)rows * D) ts.acc.resize((size_t)rows * D);
    float* qp = ts.qp.data();
    float* kt = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(ts.kt.data()) + 31) & ~uintptr_t(31));
    float* vp = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(ts.vp.data()) + 31) & ~uintptr_t(31));
    float* acc = ts.acc.data();
    for (int g = 0; g < ng; ++g)
        for (int r = 0; r < kGR; ++r) {
            const int i = g * kGR + r;
            for (int d = 0; d < D; ++d) qp[(g * D + d) * kGR + r] = i < nr ? q[i * q_stride + d] : 0.0f;
        }
    std::fill(acc, acc + (size_t)rows * D, 0.0f);
    int64_t J0 = j0r[0], J1 = j1r[0];
    for (int r = 1; r < nr; ++r) {
        J0 = std::min(J0, j0r[r]);
        J1 = std::max(J1, j1r[r]);
    }
    float m[kTileRows], l[kTileRows], alpha[kTileRows];
    for (int r = 0; r < kTileRows; ++r) m[r] = -INFINITY, l[r] = 0, alpha[r] = 1.0f;
    alignas(32) float S[kTileRows * kKB];
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int D8 = D & ~7, D16 = D & ~15;
    for (int64_t jb = J0; jb < J1; jb += kKB) {
        const int nb = static_cast<int>(std::min<int64_t>(kKB, J1 - jb));
        const int ncol = (nb + 15) & ~15;  // score columns computed (16 at a time)
        pack_keys_t<F16>(kt, kb + jb * kv_stride, kv_stride, nb, D);
        for (int g = 0; g < ng; ++g)
            for (int c0 = 0; c0 < ncol; c0 += 16) scores_6x16(qp + g * D * kGR, kt + c0, D, S + g * kGR * kKB + c0);
        // per row: scale, mask, online softmax update; S becomes P
        for (int r = 0; r < rows; ++r) {
            float* Sr = S + r * kKB;
            const int lo = r < nr ? static_cast<int>(std::clamp<int64_t>(j0r[r] - jb, 0, nb)) : 0;
            const int hi = r < nr ? static_cast<int>(std::clamp<int64_t>(j1r[r] - jb, 0, nb)) : 0;
            if (lo >= hi) {  // nothing visible to this row in this block: weights 0, state unchanged
                alpha[r] = 1.0f;
                std::fill(Sr, Sr + ncol, 0.0f);
                continue;
            }
            const __m256i vlo = _mm256_set1_epi32(lo - 1), vhi = _mm256_set1_epi32(hi);
            const __m256 vs = _mm256_set1_ps(scale), ninf = _mm256_set1_ps(-INFINITY);
            __m256 vmax = ninf;
            for (int c = 0; c < ncol; c += 8) {
                const __m256i key = _mm256_add_epi32(iota, _mm256_set1_epi32(c));
                const __m256 in = _mm256_castsi256_ps(
                    _mm256_and_si256(_mm256_cmpgt_epi32(key, vlo), _mm256_cmpgt_epi32(vhi, key)));
                const __m256 sv = _mm256_blendv_ps(ninf, _mm256_mul_ps(_mm256_load_ps(Sr + c), vs), in);
                _mm256_store_ps(Sr + c, sv);
                vmax = _mm256_max_ps(vmax, sv);
            }
            const float m_new = std::max(m[r], hmax(vmax));
            alpha[r] = _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(m[r] - m_new)));  // 0 on the first block
            const __m256 vm = _mm256_set1_ps(m_new);
            __m256 lsum = _mm256_setzero_ps();
            for (int c = 0; c < ncol; c += 8) {
                const __m256 pv = exp_ps(_mm256_sub_ps(_mm256_load_ps(Sr + c), vm));  // masked: exp(-inf) = 0
                _mm256_store_ps(Sr + c, pv);
                lsum = _mm256_add_ps(lsum, pv);
            }
            l[r] = l[r] * alpha[r] + hsum(lsum);
            m[r] = m_new;
        }
        pack_values<F16>(vp, ldv, vb + jb * kv_stride, kv_stride, nb, D);
        for (int g = 0; g < ng; ++g) {
            float* ag = acc + (size_t)g * kGR * D;
            const float* Pg = S + g * kGR * kKB;
            const float* al = alpha + g * kGR;
            for (int d0 = 0; d0 < D16; d0 += 16) update_6<2>(ag, D, Pg, al, nb, vp, ldv, d0);
            if (D8 > D16) update_6<1>(ag, D, Pg, al, nb, vp, ldv, D16);
            for (int d = D8; d < D; ++d)
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
    if (n_q >= kRows) {
        // prefill: work items (head, tile of 24 query rows), head-major so a head's K/V stay cached
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
        return;
    }
    pool.parallel_for(n_q * p.n_head, [&](int64_t b, int64_t e, int) {
        static thread_local std::vector<float> acc, ml;
        for (int64_t ih = b; ih < e;) {
            const int64_t i = ih / p.n_head;
            const int h0 = static_cast<int>(ih % p.n_head);
            const int h1 = static_cast<int>(std::min<int64_t>(p.n_head, h0 + (e - ih)));
            ih += h1 - h0;
            if ((int64_t)acc.size() < (int64_t)(h1 - h0) * D) acc.resize((size_t)(h1 - h0) * D);
            if ((int)ml.size() < 2 * (h1 - h0)) ml.resize(2 * (h1 - h0));
            int64_t j0, j1;
            visible(i, j0, j1);
            float* o = out + i * p.n_head * D;
            if (j0 >= j1) {
                std::fill(o + (size_t)h0 * D, o + (size_t)h1 * D, 0.0f);
                continue;
            }
            const float* qi = q + i * q_stride;
            const auto* kb = static_cast<const uint8_t*>(k);
            const auto* vb = static_cast<const uint8_t*>(v);
            if (kv_type == DType::F16)
                attend_heads<true>(o, qi, kb, vb, kv_stride, j0, j1, h0, h1, group, D, esize, p.scale, acc.data(), ml.data());
            else
                attend_heads<false>(o, qi, kb, vb, kv_stride, j0, j1, h0, h1, group, D, esize, p.scale, acc.data(), ml.data());
        }
    });
}

}  // namespace hg::avx2
