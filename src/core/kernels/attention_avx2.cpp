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

}  // namespace

void attention(float* out, const float* q, int64_t n_q, size_t q_stride, const void* k, const void* v, DType kv_type,
               int64_t n_kv, size_t kv_stride, const AttentionParams& p, ThreadPool& pool) {
    HG_CHECK(kv_type == DType::F32 || kv_type == DType::F16, "attention: KV type %s not supported", dtype_name(kv_type));
    HG_CHECK(p.n_kv_head > 0 && p.n_head % p.n_kv_head == 0, "attention: %d heads not a multiple of %d KV heads",
             p.n_head, p.n_kv_head);
    const int D = p.head_dim;
    const int group = p.n_head / p.n_kv_head;
    const size_t esize = kv_type == DType::F16 ? 2 : 4;
    pool.parallel_for(n_q * p.n_head, [&](int64_t b, int64_t e, int) {
        static thread_local std::vector<float> acc, ml;
        for (int64_t ih = b; ih < e;) {
            const int64_t i = ih / p.n_head;
            const int h0 = static_cast<int>(ih % p.n_head);
            const int h1 = static_cast<int>(std::min<int64_t>(p.n_head, h0 + (e - ih)));
            ih += h1 - h0;
            if ((int64_t)acc.size() < (int64_t)(h1 - h0) * D) acc.resize((size_t)(h1 - h0) * D);
            if ((int)ml.size() < 2 * (h1 - h0)) ml.resize(2 * (h1 - h0));
            const int64_t pos = p.q_pos0 + i;
            // visible keys: j <= pos (causal) and j > pos - window (sliding window)
            int64_t j0 = 0, j1 = n_kv;
            if (p.causal) j1 = std::min<int64_t>(n_kv, pos + 1);
            if (p.window > 0) j0 = std::max<int64_t>(0, pos - p.window + 1);
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
