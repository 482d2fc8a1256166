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

// ---- prefill: up to 4 query rows of one head together, so each K/V value loaded (and converted
// from F16) serves 4 rows. Rows may see different key ranges (causal, window): the block loop
// covers their union and masks the scores outside each row's range.
constexpr int kRows = 4;

template <bool F16>
void attend_rows(float* out, size_t out_row, const float* q, size_t q_stride, int nr, const int64_t* j0r,
                 const int64_t* j1r, const uint8_t* kb, const uint8_t* vb, size_t kv_stride, int D, float scale,
                 float* acc) {
    int64_t J0 = j0r[0], J1 = j1r[0];
    for (int r = 1; r < nr; ++r) {
        J0 = std::min(J0, j0r[r]);
        J1 = std::max(J1, j1r[r]);
    }
    float m[kRows], l[kRows];
    const float* qr[kRows];
    for (int r = 0; r < kRows; ++r) {
        m[r] = -INFINITY;
        l[r] = 0;
        qr[r] = q + std::min(r, nr - 1) * q_stride;  // missing rows repeat the last (results unused)
    }
    for (int t = 0; t < kRows * D; ++t) acc[t] = 0;
    const int D8 = D & ~7, D16 = D & ~15;
    alignas(32) float S[kRows][kBlock];
    for (int64_t jb = J0; jb < J1; jb += kBlock) {
        const int nb = static_cast<int>(std::min<int64_t>(kBlock, J1 - jb));
        // scores of 4 rows x 2 keys at a time
        int j = 0;
        for (; j + 2 <= nb; j += 2) {
            const uint8_t* k0 = kb + (jb + j) * kv_stride;
            const uint8_t* k1 = k0 + kv_stride;
            __m256 a[kRows][2];
            HG_UNROLL
            for (int r = 0; r < kRows; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
            for (int d = 0; d < D8; d += 8) {
                const __m256 x0 = load_kv<F16>(k0, d), x1 = load_kv<F16>(k1, d);
                HG_UNROLL
                for (int r = 0; r < kRows; ++r) {
                    const __m256 qv = _mm256_loadu_ps(qr[r] + d);
                    a[r][0] = _mm256_fmadd_ps(qv, x0, a[r][0]);
                    a[r][1] = _mm256_fmadd_ps(qv, x1, a[r][1]);
                }
            }
            const __m256 g0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0][0], a[0][1]), _mm256_hadd_ps(a[1][0], a[1][1]));
            const __m256 g1 = _mm256_hadd_ps(_mm256_hadd_ps(a[2][0], a[2][1]), _mm256_hadd_ps(a[3][0], a[3][1]));
            // lanes: r0k0 r0k1 r1k0 r1k1 (and r2.., r3..) after adding the 128-bit halves
            alignas(16) float t0[4], t1[4];
            _mm_store_ps(t0, _mm_add_ps(_mm256_castps256_ps128(g0), _mm256_extractf128_ps(g0, 1)));
            _mm_store_ps(t1, _mm_add_ps(_mm256_castps256_ps128(g1), _mm256_extractf128_ps(g1, 1)));
            S[0][j] = t0[0], S[0][j + 1] = t0[1], S[1][j] = t0[2], S[1][j + 1] = t0[3];
            S[2][j] = t1[0], S[2][j + 1] = t1[1], S[3][j] = t1[2], S[3][j + 1] = t1[3];
            for (int d = D8; d < D; ++d)
                for (int r = 0; r < kRows; ++r) {
                    S[r][j] += qr[r][d] * kv_at<F16>(k0, d);
                    S[r][j + 1] += qr[r][d] * kv_at<F16>(k1, d);
                }
        }
        for (; j < nb; ++j) {
            const uint8_t* k0 = kb + (jb + j) * kv_stride;
            for (int r = 0; r < kRows; ++r) {
                __m256 a0 = _mm256_setzero_ps();
                for (int d = 0; d < D8; d += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qr[r] + d), load_kv<F16>(k0, d), a0);
                float dot = hsum(a0);
                for (int d = D8; d < D; ++d) dot += qr[r][d] * kv_at<F16>(k0, d);
                S[r][j] = dot;
            }
        }
        // per row: scale, mask, online softmax update
        float alpha[kRows];
        for (int r = 0; r < kRows; ++r) {
            float bmax = -INFINITY;
            for (j = 0; j < nb; ++j) {
                const int64_t key = jb + j;
                S[r][j] = (r < nr && key >= j0r[r] && key < j1r[r]) ? S[r][j] * scale : -INFINITY;
                bmax = std::max(bmax, S[r][j]);
            }
            const float m_new = std::max(m[r], bmax);
            if (m_new == -INFINITY) {  // nothing visible to this row yet: weights 0, state unchanged
                alpha[r] = 1.0f;
                for (j = 0; j < nb; ++j) S[r][j] = 0;
                continue;
            }
            alpha[r] = _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(m[r] - m_new)));
            const __m256 vm = _mm256_set1_ps(m_new);
            __m256 lsum = _mm256_setzero_ps();
            j = 0;
            for (; j + 8 <= nb; j += 8) {
                const __m256 pv = exp_ps(_mm256_sub_ps(_mm256_load_ps(&S[r][j]), vm));
                _mm256_store_ps(&S[r][j], pv);
                lsum = _mm256_add_ps(lsum, pv);
            }
            float ls = hsum(lsum);
            for (; j < nb; ++j) {
                S[r][j] = _mm256_cvtss_f32(exp_ps(_mm256_set1_ps(S[r][j] - m_new)));
                ls += S[r][j];
            }
            l[r] = l[r] * alpha[r] + ls;
            m[r] = m_new;
        }
        // acc[r] = acc[r] * alpha[r] + sum_j P[r][j] v_j, 16 floats x 4 rows in registers
        const uint8_t* vr0 = vb + jb * kv_stride;
        for (int d0 = 0; d0 < D16; d0 += 16) {
            __m256 a[kRows][2];
            HG_UNROLL
            for (int r = 0; r < kRows; ++r) {
                const __m256 al = _mm256_set1_ps(alpha[r]);
                a[r][0] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * D + d0), al);
                a[r][1] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * D + d0 + 8), al);
            }
            for (j = 0; j < nb; ++j) {
                const uint8_t* vr = vr0 + j * kv_stride;
                const __m256 v0 = load_kv<F16>(vr, d0), v1 = load_kv<F16>(vr, d0 + 8);
                HG_UNROLL
                for (int r = 0; r < kRows; ++r) {
                    const __m256 pv = _mm256_broadcast_ss(&S[r][j]);
                    a[r][0] = _mm256_fmadd_ps(pv, v0, a[r][0]);
                    a[r][1] = _mm256_fmadd_ps(pv, v1, a[r][1]);
                }
            }
            HG_UNROLL
            for (int r = 0; r < kRows; ++r) {
                _mm256_storeu_ps(acc + r * D + d0, a[r][0]);
                _mm256_storeu_ps(acc + r * D + d0 + 8, a[r][1]);
            }
        }
        for (int d = D16; d < D; ++d)
            for (int r = 0; r < kRows; ++r) {
                float t = acc[r * D + d] * alpha[r];
                for (j = 0; j < nb; ++j) t += S[r][j] * kv_at<F16>(vr0 + j * kv_stride, d);
                acc[r * D + d] = t;
            }
    }
    for (int r = 0; r < nr; ++r) {
        const float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        for (int d = 0; d < D; ++d) out[r * out_row + d] = acc[r * D + d] * inv;
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
        // prefill: work items (head, block of 4 query rows), head-major so a head's K/V stay cached
        const int64_t n_rb = (n_q + kRows - 1) / kRows;
        pool.parallel_for(p.n_head * n_rb, [&](int64_t b, int64_t e, int) {
            static thread_local std::vector<float> acc;
            if ((int64_t)acc.size() < (int64_t)kRows * D) acc.resize((size_t)kRows * D);
            for (int64_t item = b; item < e; ++item) {
                const int h = static_cast<int>(item / n_rb);
                const int64_t i0 = (item % n_rb) * kRows;
                const int nr = static_cast<int>(std::min<int64_t>(kRows, n_q - i0));
                int64_t j0r[kRows], j1r[kRows];
                for (int r = 0; r < nr; ++r) visible(i0 + r, j0r[r], j1r[r]);
                const size_t off = (size_t)(h / group) * D * esize;
                const auto* kb = static_cast<const uint8_t*>(k) + off;
                const auto* vb = static_cast<const uint8_t*>(v) + off;
                float* o = out + (i0 * p.n_head + h) * D;
                const float* qi = q + i0 * q_stride + (size_t)h * D;
                const size_t orow = (size_t)p.n_head * D;
                if (kv_type == DType::F16)
                    attend_rows<true>(o, orow, qi, q_stride, nr, j0r, j1r, kb, vb, kv_stride, D, p.scale, acc.data());
                else
                    attend_rows<false>(o, orow, qi, q_stride, nr, j0r, j1r, kb, vb, kv_stride, D, p.scale, acc.data());
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
