// AVX2 matmul: y[M,N] = x[M,K] · W[N,K]^T + bias, for F32 F16 BF16 Q4_0 Q8_0 Q4_K Q6_K weights,
// with the semantics of the scalar reference (core/ops.h, kernels_ref.cpp).
//
// Two paths:
//  * GEMV (M <= 12, decode; float weights M <= 2): weights read straight from their GGUF layout,
//    once per group of 4 activation rows; each block is dotted with every row of the group
//    (ggml-style row dot products: maddubs/madd integer dots). This path is bound by memory
//    bandwidth; threads split N in contiguous chunks.
//  * GEMM (larger M, prefill): threads split N into panels of 8 (quantized) or 16 (float) weight
//    rows. Each panel is unpacked into an interleaved layout (for the integer types: one byte per
//    weight, 4 consecutive k of the 8 rows side by side, so one 32-byte vector holds a k-step of
//    all 8 rows and one maddubs against a broadcast of 4 activation bytes gives 8 rows at once;
//    block scales laid out as vectors over the 8 rows). A register-blocked micro-kernel then runs
//    every group of 4 activation rows over the panel, so each unpacked weight is reused M times
//    (activation rows in chunks that stay in the L2; see gemm_quant).
//    The integer dots are exact; one float FMA per (block, row group) applies the scales.
//
// Activations are quantized once per call (bit-identical to quantize_row_q8_0/_q8_K) into
// thread-local buffers that only grow, so steady-state calls do not allocate.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/kernels/gemv_shared.h"
#include "core/kernels/kernels_avx2.h"
#include "core/kernels/simd_shared.h"
#include "core/kernels/simd_avx2.h"
#include "core/quants.h"

namespace hg::avx2 {

namespace {

// ---------------------------------------------------------------------------------------------
// Activation quantization

// 4 vectors of 8 int32 (values in int8 range) -> 32 int8 in order.
inline __m256i pack_i32_to_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i abcd = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// C roundf: ties away from zero (exact: v - trunc(v) is exact in float).
inline __m256 round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 ge = _mm256_cmp_ps(abs_ps(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(ge, one));
}

// Q8_0, same arithmetic as quantize_row_q8_0: d = amax/127, q = roundf(x * (1/d)).
// sums (optional): sum of the 32 quants of each block.
void quantize_q8_0(const float* x, block_q8_0* y, int64_t n, int32_t* sums, float* dsf = nullptr) {
    for (int64_t b = 0; b < n / 32; ++b, x += 32) {
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        HG_UNROLL
        for (int j = 0; j < 4; ++j) {
            v[j] = _mm256_loadu_ps(x + 8 * j);
            amax = _mm256_max_ps(amax, abs_ps(v[j]));
        }
        const float d = hmax(amax) / 127;
        const float id = d ? 1.0f / d : 0.0f;
        if (!(id <= 3.0e38f)) {  // subnormal scale: 1/d overflows; the scalar code has the exact semantics
            quantize_row_q8_0(x, &y[b], 32);
            if (dsf) dsf[b] = fp16_to_fp32(y[b].d);
            if (sums) {
                sums[b] = 0;
                for (int j = 0; j < 32; ++j) sums[b] += y[b].qs[j];
            }
            continue;
        }
        y[b].d = fp32_to_fp16(d);
        if (dsf) dsf[b] = fp16_to_fp32(y[b].d);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        HG_UNROLL
        for (int j = 0; j < 4; ++j) {
            const __m256 r = _mm256_min_ps(_mm256_max_ps(round_away(_mm256_mul_ps(v[j], vid)), _mm256_set1_ps(-128.0f)),
                                           _mm256_set1_ps(127.0f));
            q[j] = _mm256_cvtps_epi32(r);
        }
        const __m256i q8 = pack_i32_to_i8(q[0], q[1], q[2], q[3]);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs), q8);
        if (sums) sums[b] = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    }
}

// Q8_K, same arithmetic as quantize_row_q8_K: iscale = -127/max (max = first value of largest
// magnitude), q = min(127, nearest_even(iscale * x)), d = 1/iscale, bsums of 16.
void quantize_q8_K(const float* x, block_q8_K* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        __m256 amaxv = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) amaxv = _mm256_max_ps(amaxv, abs_ps(_mm256_loadu_ps(x + j)));
        const float amax = hmax(amaxv);
        block_q8_K& out = y[b];
        if (!amax) {
            std::memset(&out, 0, sizeof(out));
            continue;
        }
        int first = 0;
        const __m256 am = _mm256_set1_ps(amax);
        for (int j = 0; j < QK_K; j += 8) {
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + j)), am, _CMP_EQ_OQ));
            if (mask) {
                first = j + __builtin_ctz(mask);
                break;
            }
        }
        const float iscale = -127.0f / x[first];
        if (!(std::fabs(iscale) <= 1.0e30f)) {  // subnormal max: the scalar code has the exact semantics
            quantize_row_q8_K(x, &out, QK_K);
            continue;
        }
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i max127 = _mm256_set1_epi32(127);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q[4];
            HG_UNROLL
            for (int i = 0; i < 4; ++i) {
                const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * i), vs),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q[i] = _mm256_min_epi32(_mm256_cvtps_epi32(r), max127);
            }
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.qs + j), pack_i32_to_i8(q[0], q[1], q[2], q[3]));
            // bsums of the two groups of 16 in these 32 values
            const __m256i s01 = _mm256_add_epi32(q[0], q[1]), s23 = _mm256_add_epi32(q[2], q[3]);
            out.bsums[j / 16] = static_cast<int16_t>(hsum_i32(s01));
            out.bsums[j / 16 + 1] = static_cast<int16_t>(hsum_i32(s23));
        }
        out.d = 1 / iscale;
    }
}

// ---------------------------------------------------------------------------------------------
// Scratch buffers: grow only (thread-local, so pool workers keep theirs between calls).

struct Scratch {
    std::vector<uint8_t> act;     // quantized activations (caller thread)
    std::vector<int32_t> sums;    // per-block activation sums (Q8_0) / per-32 sums (Q8_K)
    std::vector<float> dscale;    // float activation block scales (Q8_0 GEMV)
    std::vector<uint8_t> panel;   // one unpacked weight panel (per worker)
    std::vector<uint8_t> xpack;   // float activations packed for the float GEMM (caller thread)
};
Scratch& scratch() {
    static thread_local Scratch s;
    return s;
}
template <typename T>
T* grow(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}
inline uint8_t* align64(uint8_t* p) {
    return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// An empty asm that "modifies" v: the accumulations of the micro-kernels stay sequential chains.
// Without it GCC reassociates the integer adds into a tree over all unrolled steps, which needs
// far more registers than AVX2 has and spills.
inline __m256i keep(__m256i v) {
    __asm__("" : "+x"(v));
    return v;
}

inline __m256i loadu256(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

inline __m256i bcast32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// ---------------------------------------------------------------------------------------------
// GEMV row dots: one weight row against MR activation rows; out[m] = dot(w, a_m).

// Quantized GEMV weights are one sequential stream per thread; the hardware prefetcher alone does
// not run far enough ahead to overlap the DRAM reads with the integer dots (1B model, 2 threads,
// A/B in one session: Q4_K tg128 +12-36 %, Q8_0 tg64 +20 % at 1 KiB ahead; 2 KiB then beat 1 KiB
// by 3-8 % and 4 KiB on the M3 shape), so each block prefetches the bytes kPrefetchAhead further
// on (past the end of the matrix is harmless: prefetches do not fault).
// The float rows (4 streams, cheap arithmetic) showed no gain and do without.
constexpr int kPrefetchAhead = 2048;
template <int Bytes>
inline void prefetch_ahead(const void* p) {
    const char* c = static_cast<const char*>(p) + kPrefetchAhead;
    HG_UNROLL
    for (int o = 0; o < Bytes; o += 64) _mm_prefetch(c + o, _MM_HINT_T0);
}

// Two blocks per step into two accumulators: one FMA chain would bound a 32-block dot by the FMA
// latency. The float conversions of each block's integer dot are exact (|lane| < 2^24).
template <int MR>
void dot_q8_0(const block_q8_0* w, const block_q8_0* const* a, int64_t nb, float* out, const float* const* ad) {
    __m256 acc[MR][2];
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    auto step = [&](int64_t b, int u) {
        prefetch_ahead<sizeof(block_q8_0)>(w + b);
        const __m256i wq = loadu256(w[b].qs);
        const __m256i wa = _mm256_sign_epi8(wq, wq);
        const float dw = _cvtsh_ss(w[b].d);
        HG_UNROLL
        for (int m = 0; m < MR; ++m) {
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(loadu256(a[m][b].qs), wq)), ones);
            acc[m][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * ad[m][b]), acc[m][u]);
        }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        step(b, 0);
        step(b + 1, 1);
    }
    if (b < nb) step(b, 0);
    HG_UNROLL
    for (int m = 0; m < MR; ++m) out[m] = hsum(_mm256_add_ps(acc[m][0], acc[m][1]));
}

template <int MR>
void dot_q4_0(const block_q4_0* w, const block_q8_0* const* a, int64_t nb, float* out, const float* const* ad) {
    __m256 acc[MR][2];
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1), lo4 = _mm256_set1_epi8(0xF), eight = _mm256_set1_epi8(8);
    auto step = [&](int64_t b, int u) {
        prefetch_ahead<sizeof(block_q4_0)>(w + b);
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));
        // elements 0..15 in the low nibbles, 16..31 in the high nibbles
        const __m256i wq = _mm256_sub_epi8(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), lo4), eight);
        const __m256i wa = _mm256_sign_epi8(wq, wq);
        const float dw = _cvtsh_ss(w[b].d);
        HG_UNROLL
        for (int m = 0; m < MR; ++m) {
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(loadu256(a[m][b].qs), wq)), ones);
            acc[m][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * ad[m][b]), acc[m][u]);
        }
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        step(b, 0);
        step(b + 1, 1);
    }
    if (b < nb) step(b, 0);
    HG_UNROLL
    for (int m = 0; m < MR; ++m) out[m] = hsum(_mm256_add_ps(acc[m][0], acc[m][1]));
}

// A Q4_K super-block's scales ready for the dots: the 6-bit scales as int16 in both 128-bit lanes
// (shuffle masks broadcast scale j), the mins duplicated per pair of 16-sums (m0 m0 m1 m1 ...),
// d and dmin broadcast.
struct Q4KScales {
    __m256i sc16, mins16;
    __m256 dw, dminw;
};
inline Q4KScales q4_K_decode(const block_q4_K& blk) {
    const __m128i dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    const __m128i scm = q4_K_scales_mins(blk);
    // d and dmin are adjacent halves: one conversion for both
    int32_t ddm;
    std::memcpy(&ddm, &blk.d, 4);
    const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128(ddm));
    return {_mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm)), _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm, dup_mins)),
            _mm256_broadcastss_ps(dd), _mm256_broadcastss_ps(_mm_movehdup_ps(dd))};
}

// The integer dot of quants j (64 values: 32 bytes of nibbles) with activations aq[0..63]: low
// nibbles x aq[0..31] scaled by sub-block 2j, high nibbles x aq[32..63] by sub-block 2j+1.
inline __m256i q4_K_dot64(const uint8_t* qs, __m256i a0, __m256i a1, __m256i sc16, int j) {
    const __m256i lo4 = _mm256_set1_epi8(0xF);
    const __m256i q = loadu256(qs);
    const __m256i ql = _mm256_and_si256(q, lo4), qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4);
    const __m256i s0 = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((int16_t)((4 * j + 1) << 8 | (4 * j))));
    const __m256i s1 = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((int16_t)((4 * j + 3) << 8 | (4 * j + 2))));
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(ql, a0), s0),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(qh, a1), s1));
}

// Per super-block: integer dots scaled per sub-block (madd with the 6-bit scale), the mins
// term as madd(bsums, mins duplicated per pair of 16-sums); both accumulated as float vectors.
template <int MR>
void dot_q4_K(const block_q4_K* w, const block_q8_K* const* a, int64_t nb, float* out, const float* const*) {
    __m256 acc[MR], accm[MR];
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m] = accm[m] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        prefetch_ahead<sizeof(block_q4_K)>(w + b);
        const Q4KScales sc = q4_K_decode(w[b]);
        __m256i isum[MR];
        HG_UNROLL
        for (int m = 0; m < MR; ++m) isum[m] = _mm256_setzero_si256();
        HG_UNROLL
        for (int j = 0; j < 4; ++j) {
            HG_UNROLL
            for (int m = 0; m < MR; ++m) {
                const int8_t* aq = a[m][b].qs + 64 * j;
                isum[m] = _mm256_add_epi32(isum[m], q4_K_dot64(w[b].qs + 32 * j, loadu256(aq), loadu256(aq + 32), sc.sc16, j));
            }
        }
        HG_UNROLL
        for (int m = 0; m < MR; ++m) {
            const __m256 da = _mm256_broadcast_ss(&a[m][b].d);
            const __m256i pm = _mm256_madd_epi16(loadu256(a[m][b].bsums), sc.mins16);
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[m]), _mm256_mul_ps(sc.dw, da), acc[m]);
            accm[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_mul_ps(sc.dminw, da), accm[m]);
        }
    }
    HG_UNROLL
    for (int m = 0; m < MR; ++m) out[m] = hsum(_mm256_sub_ps(acc[m], accm[m]));
}

template <int MR>
void dot_q6_K(const block_q6_K* w, const block_q8_K* const* a, int64_t nb, float* out, const float* const*) {
    __m256 acc[MR];
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
    const __m256i lo4 = _mm256_set1_epi8(0xF), three = _mm256_set1_epi8(3);
    for (int64_t b = 0; b < nb; ++b) {
        prefetch_ahead<sizeof(block_q6_K)>(w + b);
        const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales));
        const float dw = _cvtsh_ss(w[b].d);
        __m256i isum[MR];
        HG_UNROLL
        for (int m = 0; m < MR; ++m) {
            // -32 * sum_sb scale[sb] * bsum[sb]
            const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[m][b].bsums));
            isum[m] = _mm256_slli_epi32(_mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc8)), 5);
            isum[m] = _mm256_sub_epi32(_mm256_setzero_si256(), isum[m]);
        }
        HG_UNROLL
        for (int h = 0; h < 2; ++h) {  // two halves of 128 values
            const uint8_t* ql = w[b].ql + 64 * h;
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qh + 32 * h));
            const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
            const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, lo4), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, lo4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4));
            HG_UNROLL
            for (int i = 0; i < 4; ++i) {
                // scales of sub-blocks 8h + 2i (low 16 values) and 8h + 2i + 1 (high 16)
                const int s0 = 8 * h + 2 * i;
                const __m256i sv = _mm256_cvtepi8_epi16(
                    _mm_shuffle_epi8(sc8, _mm_setr_epi8(s0, s0, s0, s0, s0, s0, s0, s0, s0 + 1, s0 + 1, s0 + 1,
                                                        s0 + 1, s0 + 1, s0 + 1, s0 + 1, s0 + 1)));
                HG_UNROLL
                for (int m = 0; m < MR; ++m) {
                    const __m256i aq =
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[m][b].qs + 128 * h + 32 * i));
                    isum[m] = _mm256_add_epi32(isum[m], _mm256_madd_epi16(_mm256_maddubs_epi16(q[i], aq), sv));
                }
            }
        }
        HG_UNROLL
        for (int m = 0; m < MR; ++m)
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[m]), _mm256_set1_ps(dw * a[m][b].d), acc[m]);
    }
    HG_UNROLL
    for (int m = 0; m < MR; ++m) out[m] = hsum(acc[m]);
}

// Float weights: 4 weight rows at a time share the activation loads.
template <DType T>
inline __m256 load_w(const void* w, int64_t k) {
    if constexpr (T == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(w) + k);
    else if constexpr (T == DType::F16) return load_f16(static_cast<const uint16_t*>(w) + k);
    else return load_bf16(static_cast<const uint16_t*>(w) + k);
}
template <DType T>
inline float w_at(const void* w, int64_t k) {
    if constexpr (T == DType::F32) return static_cast<const float*>(w)[k];
    else if constexpr (T == DType::F16) return _cvtsh_ss(static_cast<const uint16_t*>(w)[k]);
    else return bf16_to_fp32(static_cast<const uint16_t*>(w)[k]);
}

// out[r * ostride] = dot(W row r, x) for NR rows (x: M=1 activation row).
template <DType T, int NR>
void dot_float_rows(const uint8_t* w, size_t wstride, const float* x, int64_t K, float* out, int64_t ostride) {
    __m256 acc[NR][2];
    for (int r = 0; r < NR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
        for (int r = 0; r < NR; ++r) {
            acc[r][0] = _mm256_fmadd_ps(load_w<T>(w + r * wstride, k), x0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(load_w<T>(w + r * wstride, k + 8), x1, acc[r][1]);
        }
    }
    for (; k + 8 <= K; k += 8) {
        const __m256 x0 = _mm256_loadu_ps(x + k);
        for (int r = 0; r < NR; ++r) acc[r][0] = _mm256_fmadd_ps(load_w<T>(w + r * wstride, k), x0, acc[r][0]);
    }
    for (int r = 0; r < NR; ++r) {
        float s = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
        for (int64_t kk = k; kk < K; ++kk) s += w_at<T>(w + r * wstride, kk) * x[kk];
        out[r * ostride] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// GEMM panels for the integer types: 8 weight rows, interleaved by 4 k.
//   qs:   per k-step s (4 values): 32 bytes = row0 k[4s..4s+3], row1 ..., row7
// plus per-block scale vectors. Rows past N are zero (their outputs are not stored).

constexpr int PN = 8;   // weight rows per integer panel
constexpr int MRQ = 4;  // activation rows per micro-kernel call
constexpr size_t kActChunkBytes = 256 << 10;  // activation rows kept in the L2 at a time

// v[r] holds 8 groups of 4 bytes (8 k-steps) of weight row r; stores the 8 k-steps, each 32
// bytes = the 4-byte groups of rows 0..7 (an 8x8 transpose of 32-bit elements).
inline void store_transposed(uint8_t* dst, const __m256i v[PN]) {
    const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(v[4], v[5]), t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(v[6], v[7]), t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    __m256i* o = reinterpret_cast<__m256i*>(dst);
    _mm256_store_si256(o + 0, _mm256_permute2x128_si256(u0, u4, 0x20));
    _mm256_store_si256(o + 1, _mm256_permute2x128_si256(u1, u5, 0x20));
    _mm256_store_si256(o + 2, _mm256_permute2x128_si256(u2, u6, 0x20));
    _mm256_store_si256(o + 3, _mm256_permute2x128_si256(u3, u7, 0x20));
    _mm256_store_si256(o + 4, _mm256_permute2x128_si256(u0, u4, 0x31));
    _mm256_store_si256(o + 5, _mm256_permute2x128_si256(u1, u5, 0x31));
    _mm256_store_si256(o + 6, _mm256_permute2x128_si256(u2, u6, 0x31));
    _mm256_store_si256(o + 7, _mm256_permute2x128_si256(u3, u7, 0x31));
}

constexpr size_t kQ40PanelBlock = 256 + 32;
void pack_q4_0(uint8_t* dst, const uint8_t* W, size_t wrow, int rows, int64_t nb) {
    const __m128i lo4 = _mm_set1_epi8(0xF);
    for (int64_t b = 0; b < nb; ++b, dst += kQ40PanelBlock) {
        float* d = reinterpret_cast<float*>(dst + 256);
        __m256i v[PN];
        HG_UNROLL
        for (int r = 0; r < PN; ++r) {
            if (r < rows) {
                const block_q4_0& blk = reinterpret_cast<const block_q4_0*>(W + r * wrow)[b];
                const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs));
                v[r] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), lo4), _mm_and_si128(q, lo4));
                d[r] = _cvtsh_ss(blk.d);
            } else {
                v[r] = _mm256_setzero_si256();
                d[r] = 0;
            }
        }
        store_transposed(dst, v);
    }
}

// y[m, 0..7] (+)= panel · a_m for MR rows; a: Q8_0 rows, asum: per-block sums of the quants.
template <int MR>
void kernel_q4_0(const uint8_t* panel, const block_q8_0* const* a, const int32_t* const* asum, int64_t nb,
                 __m256* out) {
    __m256 acc[MR];  // local: __m256 may alias the loads, so `out` is written once at the end
    const __m256i ones = _mm256_set1_epi16(1);
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, panel += kQ40PanelBlock) {
        __m256i s16[MR];
        HG_UNROLL
        for (int m = 0; m < MR; ++m) s16[m] = _mm256_setzero_si256();
        HG_UNROLL
        for (int s = 0; s < 8; ++s) {
            const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 32 * s));
            HG_UNROLL
            for (int m = 0; m < MR; ++m)
                s16[m] = keep(_mm256_add_epi16(s16[m], _mm256_maddubs_epi16(wv, bcast32(a[m][b].qs + 4 * s))));
        }
        const __m256 dw = _mm256_load_ps(reinterpret_cast<const float*>(panel + 256));
        HG_UNROLL
        for (int m = 0; m < MR; ++m) {
            // sum (q - 8) a = sum q a - 8 sum a, exact in int32
            const __m256i dot = _mm256_sub_epi32(_mm256_madd_epi16(s16[m], ones), _mm256_set1_epi32(8 * asum[m][b]));
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(a[m][b].d))),
                                     acc[m]);
        }
    }
    HG_UNROLL
    for (int m = 0; m < MR; ++m) out[m] = acc[m];
}

// ---- Q8_0: per block: 256 bytes |w|, 256 bytes w, 8 floats d.
constexpr size_t kQ80PanelBlock = 512 + 32;
void pack_q8_0(uint8_t* dst, const uint8_t* W, size_t wrow, int rows, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, dst += kQ80PanelBlock) {
        float* d = reinterpret_cast<float*>(dst + 512);
        __m256i v[PN], a[PN];
        HG_UNROLL
        for (int r = 0; r < PN; ++r) {
            if (r < rows) {
                const block_q8_0& blk = reinterpret_cast<const block_q8_0*>(W + r * wrow)[b];
                v[r] = loadu256(blk.qs);
                d[r] = _cvtsh_ss(blk.d);
            } else {
                v[r] = _mm256_setzero_si256();
                d[r] = 0;
            }
            a[r] = _mm256_abs_epi8(v[r]);  // -128 -> 0x80 = 128 as the unsigned maddubs operand
        }
        store_transposed(dst, a);
        store_transposed(dst + 256, v);
    }
}

template <int MR>
void kernel_q8_0(const uint8_t* panel, const block_q8_0* const* a, const int32_t* const*, int64_t nb, __m256* out) {
    __m256 acc[MR];  // local: __m256 may alias the loads, so `out` is written once at the end
    const __m256i ones = _mm256_set1_epi16(1);
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, panel += kQ80PanelBlock) {
        __m256i s32[MR];
        HG_UNROLL
        for (int m = 0; m < MR; ++m) s32[m] = _mm256_setzero_si256();
        HG_UNROLL
        for (int s = 0; s < 8; ++s) {
            const __m256i wa = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 32 * s));
            const __m256i ws = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 256 + 32 * s));
            HG_UNROLL
            for (int m = 0; m < MR; ++m) {
                const __m256i p = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(bcast32(a[m][b].qs + 4 * s), ws));
                s32[m] = keep(_mm256_add_epi32(s32[m], _mm256_madd_epi16(p, ones)));
            }
        }
        const __m256 dw = _mm256_load_ps(reinterpret_cast<const float*>(panel + 512));
        HG_UNROLL
        for (int m = 0; m < MR; ++m)
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[m]), _mm256_mul_ps(dw, _mm256_set1_ps(_cvtsh_ss(a[m][b].d))),
                                     acc[m]);
    }
    HG_UNROLL
    for (int m = 0; m < MR; ++m) out[m] = acc[m];
}

// ---- Q4_K: per super-block: 2048 bytes q (0..15); 8 x 32 bytes scale vectors (int16 pairs
// sc[r][sb], sc[r][sb]); 4 x 32 bytes min vectors (int16 pairs m[r][2i], m[r][2i+1]); 8 floats d;
// 8 floats dmin.
constexpr size_t kQ4KPanelBlock = 2048 + 256 + 128 + 64;
void pack_q4_K(uint8_t* dst, const uint8_t* W, size_t wrow, int rows, int64_t nb) {
    const __m256i lo4 = _mm256_set1_epi8(0xF);
    for (int64_t b = 0; b < nb; ++b, dst += kQ4KPanelBlock) {
        int16_t* sc = reinterpret_cast<int16_t*>(dst + 2048);
        int16_t* mn = reinterpret_cast<int16_t*>(dst + 2048 + 256);
        float* d = reinterpret_cast<float*>(dst + 2048 + 256 + 128);
        const block_q4_K* blk[PN];
        for (int r = 0; r < PN; ++r) blk[r] = r < rows ? &reinterpret_cast<const block_q4_K*>(W + r * wrow)[b] : nullptr;
        // values: 32 bytes j hold k = 64j + l (low nibbles) and 64j + 32 + l (high nibbles)
        for (int j = 0; j < 4; ++j) {
            __m256i lo[PN], hi[PN];
            HG_UNROLL
            for (int r = 0; r < PN; ++r) {
                const __m256i q = blk[r] ? loadu256(blk[r]->qs + 32 * j) : _mm256_setzero_si256();
                lo[r] = _mm256_and_si256(q, lo4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4);
            }
            store_transposed(dst + 32 * (16 * j), lo);
            store_transposed(dst + 32 * (16 * j + 8), hi);
        }
        for (int r = 0; r < PN; ++r) {
            for (int sb = 0; sb < 8; ++sb) {
                uint8_t s_ = 0, m = 0;
                if (blk[r]) q4_K_scale_min(sb, blk[r]->scales, &s_, &m);
                sc[sb * 16 + 2 * r] = sc[sb * 16 + 2 * r + 1] = s_;
                mn[(sb / 2) * 16 + 2 * r + (sb % 2)] = m;
            }
            d[r] = blk[r] ? _cvtsh_ss(blk[r]->d) : 0.0f;
            d[8 + r] = blk[r] ? _cvtsh_ss(blk[r]->dmin) : 0.0f;
        }
    }
}

// a32: per activation row, per super-block, the 8 sums of 32 quants as int16 (from bsums).
template <int MR>
void kernel_q4_K(const uint8_t* panel, const block_q8_K* const* a, const int16_t* const* a32, int64_t nb,
                 __m256* out) {
    __m256 acc[MR];  // local: __m256 may alias the loads, so `out` is written once at the end
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, panel += kQ4KPanelBlock) {
        __m256i s32[MR];
        HG_UNROLL
        for (int m = 0; m < MR; ++m) s32[m] = _mm256_setzero_si256();
        // not unrolled: a fully unrolled super-block spills the accumulators
        _Pragma("GCC unroll 1")
        for (int sb = 0; sb < 8; ++sb) {
            __m256i s16[MR];
            HG_UNROLL
            for (int m = 0; m < MR; ++m) s16[m] = _mm256_setzero_si256();
            const uint8_t* pq = panel + 256 * sb;
            HG_UNROLL
            for (int s = 0; s < 8; ++s) {
                const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(pq + 32 * s));
                HG_UNROLL
                for (int m = 0; m < MR; ++m)
                    s16[m] = keep(_mm256_add_epi16(s16[m],
                                              _mm256_maddubs_epi16(wv, bcast32(a[m][b].qs + 32 * sb + 4 * s))));
            }
            const __m256i sv = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 2048 + 32 * sb));
            HG_UNROLL
            for (int m = 0; m < MR; ++m) s32[m] = _mm256_add_epi32(s32[m], _mm256_madd_epi16(s16[m], sv));
        }
        const float* d = reinterpret_cast<const float*>(panel + 2048 + 256 + 128);
        const __m256 dw = _mm256_load_ps(d), dmin = _mm256_load_ps(d + 8);
        HG_UNROLL
        for (int m = 0; m < MR; ++m) {
            __m256i ms = _mm256_setzero_si256();
            HG_UNROLL
            for (int i = 0; i < 4; ++i)
                ms = _mm256_add_epi32(
                    ms, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 2048 + 256 + 32 * i)),
                                          bcast32(a32[m] + 8 * b + 2 * i)));
            const __m256 da = _mm256_set1_ps(a[m][b].d);
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[m]), _mm256_mul_ps(dw, da), acc[m]);
            acc[m] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_mul_ps(dmin, da), acc[m]);
        }
    }
    HG_UNROLL
    for (int m = 0; m < MR; ++m) out[m] = acc[m];
}

// ---- Q6_K: per super-block: 2048 bytes q (0..63); 16 x 32 bytes scale vectors (int16 pairs
// sc[r][sb], sc[r][sb]); 8 x 32 bytes correction vectors (int16 pairs sc[r][2i], sc[r][2i+1]);
// 8 floats d.
constexpr size_t kQ6KPanelBlock = 2048 + 512 + 256 + 32;
void pack_q6_K(uint8_t* dst, const uint8_t* W, size_t wrow, int rows, int64_t nb) {
    const __m256i lo4 = _mm256_set1_epi8(0xF), three = _mm256_set1_epi8(3);
    for (int64_t b = 0; b < nb; ++b, dst += kQ6KPanelBlock) {
        int16_t* sc = reinterpret_cast<int16_t*>(dst + 2048);
        int16_t* cs = reinterpret_cast<int16_t*>(dst + 2048 + 512);
        float* d = reinterpret_cast<float*>(dst + 2048 + 512 + 256);
        const block_q6_K* blk[PN];
        for (int r = 0; r < PN; ++r) blk[r] = r < rows ? &reinterpret_cast<const block_q6_K*>(W + r * wrow)[b] : nullptr;
        for (int h = 0; h < 2; ++h) {  // 128 values per half: 4 vectors of 32 (see dequantize_row)
            __m256i q[4][PN];
            HG_UNROLL
            for (int r = 0; r < PN; ++r) {
                if (!blk[r]) {
                    q[0][r] = q[1][r] = q[2][r] = q[3][r] = _mm256_setzero_si256();
                    continue;
                }
                const uint8_t* ql = blk[r]->ql + 64 * h;
                const __m256i qh = loadu256(blk[r]->qh + 32 * h);
                const __m256i l0 = loadu256(ql), l1 = loadu256(ql + 32);
                q[0][r] = _mm256_or_si256(_mm256_and_si256(l0, lo4), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4));
                q[1][r] = _mm256_or_si256(_mm256_and_si256(l1, lo4),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4));
                q[2][r] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), lo4),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4));
                q[3][r] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), lo4),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4));
            }
            for (int i = 0; i < 4; ++i) store_transposed(dst + 32 * (32 * h + 8 * i), q[i]);
        }
        for (int r = 0; r < PN; ++r) {
            for (int sb = 0; sb < 16; ++sb) {
                const int16_t v = blk[r] ? blk[r]->scales[sb] : 0;
                sc[sb * 16 + 2 * r] = sc[sb * 16 + 2 * r + 1] = v;
                cs[(sb / 2) * 16 + 2 * r + (sb % 2)] = v;
            }
            d[r] = blk[r] ? _cvtsh_ss(blk[r]->d) : 0.0f;
        }
    }
}

template <int MR>
void kernel_q6_K(const uint8_t* panel, const block_q8_K* const* a, const int16_t* const*, int64_t nb, __m256* out) {
    __m256 acc[MR];  // local: __m256 may alias the loads, so `out` is written once at the end
    HG_UNROLL
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, panel += kQ6KPanelBlock) {
        __m256i s32[MR];
        HG_UNROLL
        for (int m = 0; m < MR; ++m) {
            // -32 * sum_sb sc[sb] * bsum[sb]
            __m256i c = _mm256_setzero_si256();
            HG_UNROLL
            for (int i = 0; i < 8; ++i)
                c = _mm256_add_epi32(
                    c, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 2048 + 512 + 32 * i)),
                                         bcast32(a[m][b].bsums + 2 * i)));
            s32[m] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(c, 5));
        }
        _Pragma("GCC unroll 1")
        for (int sb = 0; sb < 16; ++sb) {
            const __m256i sv = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + 2048 + 32 * sb));
            const uint8_t* pq = panel + 128 * sb;  // 4 k-steps of 32 bytes per sub-block of 16
            HG_UNROLL
            for (int h = 0; h < 2; ++h) {          // int16 sums of 2 k-steps stay below 2^15
                const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(pq + 64 * h));
                const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(pq + 64 * h + 32));
                HG_UNROLL
                for (int m = 0; m < MR; ++m) {
                    const int8_t* aq = a[m][b].qs + 16 * sb + 8 * h;
                    const __m256i p =
                        _mm256_add_epi16(_mm256_maddubs_epi16(w0, bcast32(aq)), _mm256_maddubs_epi16(w1, bcast32(aq + 4)));
                    s32[m] = keep(_mm256_add_epi32(s32[m], _mm256_madd_epi16(p, sv)));
                }
            }
        }
        const __m256 dw = _mm256_load_ps(reinterpret_cast<const float*>(panel + 2048 + 512 + 256));
        HG_UNROLL
        for (int m = 0; m < MR; ++m)
            acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[m]), _mm256_mul_ps(dw, _mm256_set1_ps(a[m][b].d)), acc[m]);
    }
    HG_UNROLL
    for (int m = 0; m < MR; ++m) out[m] = acc[m];
}

// ---------------------------------------------------------------------------------------------
// Drivers

inline void store_row(float* y, __m256 v, const float* bias, int cols) {
    if (bias) {
        alignas(32) float b[8] = {};
        std::memcpy(b, bias, cols * sizeof(float));
        v = _mm256_add_ps(v, _mm256_load_ps(b));
    }
    if (cols == 8) {
        _mm256_storeu_ps(y, v);
    } else {
        alignas(32) float t[8];
        _mm256_store_ps(t, v);
        std::memcpy(y, t, cols * sizeof(float));
    }
}

template <typename ABlock, typename Extra>
struct QuantGemm {
    void (*pack)(uint8_t*, const uint8_t*, size_t, int, int64_t);
    size_t panel_block_bytes;
    void (*k1)(const uint8_t*, const ABlock* const*, const Extra* const*, int64_t, __m256*);
    void (*k2)(const uint8_t*, const ABlock* const*, const Extra* const*, int64_t, __m256*);
    void (*k3)(const uint8_t*, const ABlock* const*, const Extra* const*, int64_t, __m256*);
    void (*k4)(const uint8_t*, const ABlock* const*, const Extra* const*, int64_t, __m256*);
};

template <typename ABlock, typename Extra>
void gemm_quant(const QuantGemm<ABlock, Extra>& G, float* y, const Tensor& W, const float* bias, int64_t M,
                const ABlock* act, size_t act_row_blocks, const Extra* extra, size_t extra_row, int64_t nb,
                ThreadPool& pool) {
    const int64_t N = W.rows();
    const size_t wrow = W.row_bytes();
    const uint8_t* Wd = static_cast<const uint8_t*>(W.data);
    const int64_t n_panels = (N + PN - 1) / PN;
    // Rows of activations in chunks that stay in the L2 while every panel of the thread sweeps
    // them (panels are re-unpacked per chunk: a few % of the work).
    const size_t act_bytes = act_row_blocks * sizeof(ABlock) + extra_row * sizeof(Extra);
    const int64_t MC = std::max<int64_t>(MRQ, std::min<int64_t>(M, (int64_t)(kActChunkBytes / act_bytes) / MRQ * MRQ));
    pool.parallel_for(n_panels, [&](int64_t p0, int64_t p1, int) {
        uint8_t* panel = align64(grow(scratch().panel, G.panel_block_bytes * nb + 64));
        for (int64_t mc = 0; mc < M; mc += MC)
        for (int64_t p = p0; p < p1; ++p) {
            const int64_t n0 = p * PN;
            const int rows = static_cast<int>(std::min<int64_t>(PN, N - n0));
            G.pack(panel, Wd + n0 * wrow, wrow, rows, nb);
            for (int64_t m0 = mc; m0 < std::min(M, mc + MC); m0 += MRQ) {
                const int mr = static_cast<int>(std::min<int64_t>(MRQ, M - m0));
                const ABlock* a[MRQ];
                const Extra* e[MRQ];
                for (int i = 0; i < mr; ++i) {
                    a[i] = act + (m0 + i) * act_row_blocks;
                    e[i] = extra ? extra + (m0 + i) * extra_row : nullptr;
                }
                __m256 acc[MRQ];
                switch (mr) {
                    case 1: G.k1(panel, a, e, nb, acc); break;
                    case 2: G.k2(panel, a, e, nb, acc); break;
                    case 3: G.k3(panel, a, e, nb, acc); break;
                    default: G.k4(panel, a, e, nb, acc); break;
                }
                for (int i = 0; i < mr; ++i) store_row(y + (m0 + i) * N + n0, acc[i], bias ? bias + n0 : nullptr, rows);
            }
        }
    });
}

// ---- float weights

constexpr int PNF = 16;  // weight rows per float panel
constexpr int MRF = 6;   // activation rows per float micro-kernel
constexpr int KCF = 256; // k block of the float GEMM (16 x 256 floats = 16 KiB panel)
constexpr int NPF = 4;   // panels packed together: one activation group (6 x KCF) is reused by 4

// panel[k][16] floats for k in [k0, k0 + kc), rows past N zero: 8 x 8 blocks transposed in
// registers (rows of 8 k -> k-major vectors of 8 rows).
template <DType T>
void pack_float(float* dst, const uint8_t* W, size_t wrow, int rows, int64_t k0, int64_t kc) {
    const int64_t kv = kc & ~int64_t(7);
    for (int g = 0; g < PNF; g += 8) {
        for (int64_t k = 0; k < kv; k += 8) {
            __m256 v[8];
            HG_UNROLL
            for (int r = 0; r < 8; ++r)
                v[r] = g + r < rows ? load_w<T>(W + (g + r) * wrow, k0 + k) : _mm256_setzero_ps();
            transpose8_ps(v);
            float* o = dst + k * PNF + g;
            HG_UNROLL
            for (int i = 0; i < 8; ++i) _mm256_store_ps(o + i * PNF, v[i]);
        }
        for (int64_t k = kv; k < kc; ++k)
            for (int r = 0; r < 8; ++r) dst[k * PNF + g + r] = g + r < rows ? w_at<T>(W + (g + r) * wrow, k0 + k) : 0.0f;
    }
}

// acc[m][0..1] (+)= sum_k xp[k][m] * panel[k][0..15]; xp: packed activations, MRF floats per k
// (one contiguous stream: the broadcasts need no per-row address arithmetic).
template <int MR>
void kernel_float(const float* panel, const float* xp, int64_t kc, float* y, int64_t ldy, int cols, bool accumulate,
                  const float* bias) {
    __m256 acc[MR][2];
    static_assert(MRF == 6, "fma_rows_x16 takes activations packed in groups of 6");
    fma_rows_x16<MR>(xp, panel, PNF, kc, acc);
    HG_UNROLL
    for (int m = 0; m < MR; ++m) {
        float* ym = y + m * ldy;
        if (cols == PNF) {
            __m256 v0 = acc[m][0], v1 = acc[m][1];
            if (accumulate) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ym));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ym + 8));
            } else if (bias) {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias + 8));
            }
            _mm256_storeu_ps(ym, v0);
            _mm256_storeu_ps(ym + 8, v1);
        } else {
            alignas(32) float t[16];
            _mm256_store_ps(t, acc[m][0]);
            _mm256_store_ps(t + 8, acc[m][1]);
            for (int c = 0; c < cols; ++c) ym[c] = accumulate ? ym[c] + t[c] : t[c] + (bias ? bias[c] : 0.0f);
        }
    }
}

template <DType T>
void matmul_float(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool) {
    const int64_t N = W.rows(), K = W.cols();
    const size_t wrow = W.row_bytes();
    const uint8_t* Wd = static_cast<const uint8_t*>(W.data);
    if (M <= 2) {  // GEMV: stream the weights once, 4 rows at a time
        pool.parallel_for(
            N,
            [&](int64_t n0, int64_t n1, int) {
                for (int64_t m = 0; m < M; ++m) {
                    int64_t n = n0;
                    for (; n + 4 <= n1; n += 4) dot_float_rows<T, 4>(Wd + n * wrow, wrow, x + m * K, K, y + m * N + n, 1);
                    for (; n < n1; ++n) dot_float_rows<T, 1>(Wd + n * wrow, wrow, x + m * K, K, y + m * N + n, 1);
                    if (bias)
                        for (int64_t i = n0; i < n1; ++i) y[m * N + i] += bias[i];
                }
            },
            16);
        return;
    }
    // Activations packed once per call, group-major: xp[g][k][0..5] = x[6g + 0..5][k] (rows past
    // M left unread: the tail group runs a narrower kernel).
    const int64_t n_groups = (M + MRF - 1) / MRF;
    float* xp = reinterpret_cast<float*>(align64(grow(scratch().xpack, n_groups * MRF * K * sizeof(float) + 64)));
    pool.parallel_for(n_groups, [&](int64_t g0, int64_t g1, int) {
        for (int64_t g = g0; g < g1; ++g) {
            const int rows = static_cast<int>(std::min<int64_t>(MRF, M - g * MRF));
            float* dst = xp + g * MRF * K;
            for (int r = 0; r < rows; ++r) {
                const float* src = x + (g * MRF + r) * K;
                for (int64_t k = 0; k < K; ++k) dst[k * MRF + r] = src[k];
            }
        }
    });
    // Threads take groups of NPF panels of 16 weight rows. Per k block the group's panels are
    // packed (4 x 16 KiB, in the L2); each activation group (6 x KCF floats, 6 KiB) is then
    // loaded once into the L1 and swept over the 4 panels; the outputs (M x 64 floats) stay in
    // the L2 across k blocks.
    const int64_t n_panels = (N + PNF - 1) / PNF;
    const int64_t n_pgroups = (n_panels + NPF - 1) / NPF;
    pool.parallel_for(n_pgroups, [&](int64_t q0, int64_t q1, int) {
        float* panels =
            reinterpret_cast<float*>(align64(grow(scratch().panel, NPF * KCF * PNF * sizeof(float) + 64)));
        for (int64_t q = q0; q < q1; ++q) {
            const int64_t p0 = q * NPF, np = std::min<int64_t>(NPF, n_panels - p0);
            for (int64_t k0 = 0; k0 < K; k0 += KCF) {
                const int64_t kc = std::min<int64_t>(KCF, K - k0);
                const bool accum = k0 > 0;
                for (int64_t j = 0; j < np; ++j) {
                    const int64_t n0 = (p0 + j) * PNF;
                    pack_float<T>(panels + j * KCF * PNF, Wd + n0 * wrow, wrow,
                                  static_cast<int>(std::min<int64_t>(PNF, N - n0)), k0, kc);
                }
                for (int64_t g = 0; g < n_groups; ++g) {
                    const int64_t m0 = g * MRF;
                    const float* xg = xp + m0 * K + k0 * MRF;
                    for (int64_t j = 0; j < np; ++j) {
                        const int64_t n0 = (p0 + j) * PNF;
                        const int cols = static_cast<int>(std::min<int64_t>(PNF, N - n0));
                        const float* b = bias ? bias + n0 : nullptr;
                        const float* pj = panels + j * KCF * PNF;
                        float* ym = y + m0 * N + n0;
                        switch (std::min<int64_t>(MRF, M - m0)) {
                            case 6: kernel_float<6>(pj, xg, kc, ym, N, cols, accum, b); break;
                            case 5: kernel_float<5>(pj, xg, kc, ym, N, cols, accum, b); break;
                            case 4: kernel_float<4>(pj, xg, kc, ym, N, cols, accum, b); break;
                            case 3: kernel_float<3>(pj, xg, kc, ym, N, cols, accum, b); break;
                            case 2: kernel_float<2>(pj, xg, kc, ym, N, cols, accum, b); break;
                            default: kernel_float<1>(pj, xg, kc, ym, N, cols, accum, b); break;
                        }
                    }
                }
            }
        }
    });
}

const QuantGemm<block_q8_0, int32_t> kGemmQ4_0 = {pack_q4_0, kQ40PanelBlock, kernel_q4_0<1>, kernel_q4_0<2>,
                                                  kernel_q4_0<3>, kernel_q4_0<4>};
const QuantGemm<block_q8_0, int32_t> kGemmQ8_0 = {pack_q8_0, kQ80PanelBlock, kernel_q8_0<1>, kernel_q8_0<2>,
                                                  kernel_q8_0<3>, kernel_q8_0<4>};
const QuantGemm<block_q8_K, int16_t> kGemmQ4_K = {pack_q4_K, kQ4KPanelBlock, kernel_q4_K<1>, kernel_q4_K<2>,
                                                  kernel_q4_K<3>, kernel_q4_K<4>};
const QuantGemm<block_q8_K, int16_t> kGemmQ6_K = {pack_q6_K, kQ6KPanelBlock, kernel_q6_K<1>, kernel_q6_K<2>,
                                                  kernel_q6_K<3>, kernel_q6_K<4>};

constexpr int64_t kGemvMaxRows = 12;  // M above this takes the packed GEMM path (GEMV is faster up to ~12-16 rows, measured for Q4_K)

}  // namespace

void quantize_act(DType type, const float* x, void* y, int64_t n) {
    HG_CHECK(type == DType::Q8_0 || type == DType::Q8_K, "quantize_act: %s is not an activation type", dtype_name(type));
    if (type == DType::Q8_0) quantize_q8_0(x, static_cast<block_q8_0*>(y), n, nullptr);
    else quantize_q8_K(x, static_cast<block_q8_K*>(y), n);
}

void matmul(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool) {
    const int64_t K = W.cols();
    HG_CHECK(row_bytes(W.type, K) == W.row_bytes(), "matmul: weight %s is not packed", W.shape_str().c_str());
    if (M <= 0 || W.rows() == 0) return;
    switch (W.type) {
        case DType::F32: return matmul_float<DType::F32>(y, x, W, bias, M, pool);
        case DType::F16: return matmul_float<DType::F16>(y, x, W, bias, M, pool);
        case DType::BF16: return matmul_float<DType::BF16>(y, x, W, bias, M, pool);
        default: break;
    }
    const DType at = vec_dot_type(W.type);
    const size_t arow = row_bytes(at, K);
    Scratch& S = scratch();
    uint8_t* act = align64(grow(S.act, M * arow + 64));
    const int64_t nb = K / dtype_info(W.type).block_size;
    const bool gemm = M > kGemvMaxRows;
    if (at == DType::Q8_0) {
        auto* aq = reinterpret_cast<block_q8_0*>(act);
        int32_t* sums = gemm ? grow(S.sums, M * nb) : nullptr;
        float* ad = gemm ? nullptr : grow(S.dscale, M * nb);
        auto quant_rows = [&](int64_t m0, int64_t m1, int) {
            for (int64_t m = m0; m < m1; ++m)
                quantize_q8_0(x + m * K, aq + m * nb, K, sums ? sums + m * nb : nullptr, ad ? ad + m * nb : nullptr);
        };
        if (M <= 4) quant_rows(0, M, 0);  // a few rows: not worth a pool round trip
        else pool.parallel_for(M, quant_rows);
        if (W.type == DType::Q4_0) {
            if (gemm) gemm_quant(kGemmQ4_0, y, W, bias, M, aq, nb, sums, nb, nb, pool);
            else gemv_quant<block_q4_0, block_q8_0>(dot_q4_0<1>, dot_q4_0<2>, dot_q4_0<3>, dot_q4_0<4>, y, W, bias, M, aq, ad, nb, pool);
        } else {
            if (gemm) gemm_quant(kGemmQ8_0, y, W, bias, M, aq, nb, sums, nb, nb, pool);
            else gemv_quant<block_q8_0, block_q8_0>(dot_q8_0<1>, dot_q8_0<2>, dot_q8_0<3>, dot_q8_0<4>, y, W, bias, M, aq, ad, nb, pool);
        }
        return;
    }
    auto* aq = reinterpret_cast<block_q8_K*>(act);
    int16_t* a32 = nullptr;
    if (gemm && W.type == DType::Q4_K) a32 = reinterpret_cast<int16_t*>(grow(S.sums, (M * nb * 8 + 1) / 2));
    auto quant_rows = [&](int64_t m0, int64_t m1, int) {
        for (int64_t m = m0; m < m1; ++m) {
            quantize_q8_K(x + m * K, aq + m * nb, K);
            if (a32)
                for (int64_t b = 0; b < nb; ++b)
                    HG_UNROLL
                    for (int i = 0; i < 8; ++i)
                        a32[(m * nb + b) * 8 + i] =
                            static_cast<int16_t>(aq[m * nb + b].bsums[2 * i] + aq[m * nb + b].bsums[2 * i + 1]);
        }
    };
    if (M <= 4) quant_rows(0, M, 0);
    else pool.parallel_for(M, quant_rows);
    if (W.type == DType::Q4_K) {
        if (gemm) gemm_quant(kGemmQ4_K, y, W, bias, M, aq, nb, a32, nb * 8, nb, pool);
        else gemv_quant<block_q4_K, block_q8_K>(dot_q4_K<1>, dot_q4_K<2>, dot_q4_K<3>, dot_q4_K<4>, y, W, bias, M, aq, nullptr, nb, pool);
    } else {
        if (gemm) gemm_quant(kGemmQ6_K, y, W, bias, M, aq, nb, (const int16_t*)nullptr, 0, nb, pool);
        else gemv_quant<block_q6_K, block_q8_K>(dot_q6_K<1>, dot_q6_K<2>, dot_q6_K<3>, dot_q6_K<4>, y, W, bias, M, aq, nullptr, nb, pool);
    }
}

}  // namespace hg::avx2
