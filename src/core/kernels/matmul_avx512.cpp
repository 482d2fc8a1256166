// AVX-512 level of matmul: y[M,N] = x[M,K] · W[N,K]^T + bias, with the semantics of the scalar
// reference (core/ops.h, kernels_ref.cpp). What this level changes, and why:
//
//  * Quantized prefill (M > 12; Q4_0 Q8_0 Q4_K Q6_K) runs on AVX512_VNNI: `vpdpbusd` multiplies
//    64 unsigned bytes by 64 signed bytes and adds groups of 4 into 16 int32 lanes in one
//    instruction, where AVX2 needs maddubs + madd + add for 32. Weights are unpacked per panel
//    of 32 rows into an interleaved layout: per k-step of 4 values, 128 bytes = rows 0..15 in
//    one 64-byte vector and rows 16..31 in the next, each row's 4 consecutive k side by side.
//    One dpbusd against a broadcast of 4 activation bytes then gives 16 rows at once. The
//    weights must be the unsigned operand, so signed Q8_0 weights are stored offset by +128 and
//    the offset is taken back exactly: sum (w + 128) a = sum w a + 128 sum a. Sub-block scales
//    (Q4_K 6-bit, Q6_K 8-bit) multiply the exact int32 sub-block dots (vpmulld), the Q4_K mins
//    and the Q6_K -32 offset go through `vpdpwssd` with the activations' 16/32-sums. Every
//    integer is exact; one float FMA per (super-)block and row applies the scales, as on AVX2.
//  * Decode GEMV (M <= 12) of the K-quants: 512-bit maddubs + vpdpwssd with the sub-block
//    scales as int16 lanes (the AVX2 kernel's Q4_K decode was compute-bound at ~75 % of the
//    bandwidth roof on Zen 3). The Q4_0/Q8_0 GEMV and the float weights stay on the AVX2 path:
//    the former are bandwidth-bound already; for the latter a 12 x 32 AVX-512 float GEMM was
//    written and measured 0.87-1.22x of AVX2 on Zen 4 (512-bit FMAs there are two 256-bit
//    halves), so it is not shipped (docs/PERFORMANCE.md).
//
// This file is compiled with -mavx512*: it must not define any inline or template function that
// another file also defines (the linker keeps one copy of such a function, possibly this one,
// which would then run on CPUs without AVX-512). So everything here is in an anonymous
// namespace, scratch memory is plain malloc, and tests/conformance/isa_isolation_test.py
// checks the object file: no weak function in it contains an EVEX (AVX-512) instruction.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"
#include "core/kernels/gemv_shared.h"
#include "core/kernels/kernels_avx2.h"
#include "core/kernels/simd_shared.h"
#include "core/ops.h"
#include "core/quants.h"

#define HG_UNROLL _Pragma("GCC unroll 16")

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), a self-initialised variable that
// -Wmaybe-uninitialized / -Wuninitialized report wherever they are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace hg::avx512 {

namespace {

// ---------------------------------------------------------------------------------------------
// Scratch: grow-only, 64-byte aligned (AlignedBuffer, simd_shared.h), thread-local (pool workers
// keep theirs between calls).

using Buffer = AlignedBuffer;
struct Scratch {
    Buffer act;    // quantized activations (caller thread)
    Buffer extra;  // per-block activation sums (caller thread)
    Buffer panel;  // one unpacked weight panel (per worker)
    Buffer vals;   // the panel's rows as one unsigned byte per weight, before interleaving
};
Scratch& scratch() {
    static thread_local Scratch s;
    return s;
}

inline float fp16(uint16_t h) { return _cvtsh_ss(h); }
inline int32_t load_i32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
// An empty asm that "modifies" v: keeps the accumulation chains as written (GCC otherwise
// reassociates the unrolled adds into trees that need more registers than exist).
inline __m512i keep(__m512i v) {
    __asm__("" : "+v"(v));
    return v;
}

// ---------------------------------------------------------------------------------------------
// Panels

constexpr int PN = 32;   // weight rows per panel: two vectors of 16 rows
constexpr int MR = 4;    // activation rows per micro-kernel call
constexpr size_t kActChunkBytes = 1024 << 10;  // activation rows kept in the L2 at a time (Zen 4: 1 MiB L2; 256 KiB measured 20-30 % slower for Q4_K from the re-packing)
constexpr size_t kStep = 128;                 // bytes per k-step of a panel (4 k x 32 rows)

// 16 x 16 transpose of 32-bit elements: r[i] holds 16 groups (4 bytes each) of row i; on return
// r[j] holds group j of rows 0..15.
inline void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    HG_UNROLL
    for (int p = 0; p < 8; ++p) {
        t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
    }
    HG_UNROLL
    for (int q = 0; q < 4; ++q) {  // rows 4q..4q+3: u[4q + e] = element e of each 128-bit lane
        u[4 * q + 0] = _mm512_unpacklo_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = _mm512_unpackhi_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = _mm512_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = _mm512_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
    }
    HG_UNROLL
    for (int e = 0; e < 4; ++e) {  // group 4L + e = lane L of u[e], u[4+e], u[8+e], u[12+e]
        const __m512i v0 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x88), v1 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xDD);
        const __m512i w0 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x88),
                      w1 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xDD);
        r[e] = _mm512_shuffle_i32x4(v0, w0, 0x88);
        r[8 + e] = _mm512_shuffle_i32x4(v0, w0, 0xDD);
        r[4 + e] = _mm512_shuffle_i32x4(v1, w1, 0x88);
        r[12 + e] = _mm512_shuffle_i32x4(v1, w1, 0xDD);
    }
}

// vals: PN rows of `ksteps * 4` bytes (row stride vstride, a multiple of 64, zero-padded to it)
// -> the panel's interleaved k-steps; k-step s goes to block s / steps_per_block, at offset
// (s % steps_per_block) * kStep of that block (blocks block_bytes apart).
void interleave(uint8_t* dst, const uint8_t* vals, size_t vstride, int64_t ksteps, int steps_per_block,
                size_t block_bytes) {
    for (int64_t s0 = 0; s0 < ksteps; s0 += 16) {
        for (int half = 0; half < 2; ++half) {
            __m512i r[16];
            HG_UNROLL
            for (int i = 0; i < 16; ++i)
                r[i] = _mm512_load_si512(reinterpret_cast<const __m512i*>(vals + (16 * half + i) * vstride + 4 * s0));
            transpose16(r);
            const int n = static_cast<int>(std::min<int64_t>(16, ksteps - s0));
            for (int j = 0; j < n; ++j) {
                const int64_t s = s0 + j;
                uint8_t* o = dst + (s / steps_per_block) * block_bytes + (s % steps_per_block) * kStep + 64 * half;
                _mm512_store_si512(reinterpret_cast<__m512i*>(o), r[j]);
            }
        }
    }
}

// ---- Q8_0 and Q4_0 (blocks of 32 = 8 k-steps): 8 x 128 bytes of unsigned weights, 32 floats d.
constexpr size_t kB32Block = 8 * kStep + 128;

// Unsigned values of one row: Q8_0 as w + 128 (w ^ 0x80), Q4_0 as the nibbles 0..15.
void row_values_q8_0(uint8_t* v, const block_q8_0* blk, int64_t nb) {
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    for (int64_t b = 0; b < nb; ++b)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + 32 * b),
                            _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[b].qs)), flip));
}
void row_values_q4_0(uint8_t* v, const block_q4_0* blk, int64_t nb) {
    const __m128i lo4 = _mm_set1_epi8(0xF);
    for (int64_t b = 0; b < nb; ++b) {
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[b].qs));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(v + 32 * b), _mm_and_si128(q, lo4));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(v + 32 * b + 16), _mm_and_si128(_mm_srli_epi16(q, 4), lo4));
    }
}

template <typename Block, void (*RowValues)(uint8_t*, const Block*, int64_t)>
void pack_b32(uint8_t* dst, uint8_t* vals, size_t vstride, const uint8_t* W, size_t wrow, int rows, int64_t nb) {
    for (int r = 0; r < PN; ++r) {
        uint8_t* v = vals + r * vstride;
        float* d = reinterpret_cast<float*>(dst + 8 * kStep) + r;
        if (r < rows) {
            const Block* blk = reinterpret_cast<const Block*>(W + r * wrow);
            RowValues(v, blk, nb);
            std::memset(v + 32 * nb, 0, vstride - 32 * nb);
            for (int64_t b = 0; b < nb; ++b) d[b * (kB32Block / 4)] = fp16(blk[b].d);
        } else {
            std::memset(v, 0, vstride);
            for (int64_t b = 0; b < nb; ++b) d[b * (kB32Block / 4)] = 0.0f;
        }
    }
    interleave(dst, vals, vstride, 8 * nb, 8, kB32Block);
}

// acc[m][h] (+)= panel rows 16h..16h+15 · a_m. Offset: 128 (Q8_0's +128) or 8 (Q4_0's nibbles
// are q + 8 of the signed value): the dot is sum v a - Offset * sum a, exact in int32.
template <int NR, int Offset>
void kernel_b32(const uint8_t* panel, const block_q8_0* const* a, const int32_t* const* asum, int64_t nb,
                __m512 out[][2]) {
    __m512 acc[NR][2];
    HG_UNROLL
    for (int m = 0; m < NR; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, panel += kB32Block) {
        __m512i s[NR][2];
        HG_UNROLL
        for (int m = 0; m < NR; ++m) s[m][0] = s[m][1] = _mm512_setzero_si512();
        HG_UNROLL
        for (int st = 0; st < 8; ++st) {
            const __m512i w0 = _mm512_load_si512(panel + kStep * st), w1 = _mm512_load_si512(panel + kStep * st + 64);
            HG_UNROLL
            for (int m = 0; m < NR; ++m) {
                const __m512i av = _mm512_set1_epi32(load_i32(a[m][b].qs + 4 * st));
                s[m][0] = keep(_mm512_dpbusd_epi32(s[m][0], w0, av));
                s[m][1] = keep(_mm512_dpbusd_epi32(s[m][1], w1, av));
            }
        }
        const float* d = reinterpret_cast<const float*>(panel + 8 * kStep);
        const __m512 d0 = _mm512_load_ps(d), d1 = _mm512_load_ps(d + 16);
        HG_UNROLL
        for (int m = 0; m < NR; ++m) {
            const __m512i corr = _mm512_set1_epi32(Offset * asum[m][b]);
            const __m512 da = _mm512_set1_ps(fp16(a[m][b].d));
            acc[m][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s[m][0], corr)), _mm512_mul_ps(d0, da), acc[m][0]);
            acc[m][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s[m][1], corr)), _mm512_mul_ps(d1, da), acc[m][1]);
        }
    }
    HG_UNROLL
    for (int m = 0; m < NR; ++m) out[m][0] = acc[m][0], out[m][1] = acc[m][1];
}

// ---- Q4_K (super-blocks of 256 = 64 k-steps): 64 x 128 bytes q (0..15); 8 x 128 bytes int32
// scale vectors (sub-block sb of rows 0..31); 4 x 128 bytes int16 min pairs (m[r][2i], m[r][2i+1]);
// 32 floats d; 32 floats dmin.
constexpr size_t kQ4KBlock = 64 * kStep + 8 * 128 + 4 * 128 + 2 * 128;
constexpr size_t kQ4KScales = 64 * kStep, kQ4KMins = kQ4KScales + 8 * 128, kQ4KD = kQ4KMins + 4 * 128;

void pack_q4_K(uint8_t* dst, uint8_t* vals, size_t vstride, const uint8_t* W, size_t wrow, int rows, int64_t nb) {
    const __m256i lo4 = _mm256_set1_epi8(0xF);
    for (int r = 0; r < PN; ++r) {
        uint8_t* v = vals + r * vstride;
        if (r >= rows) std::memset(v, 0, vstride);
        else std::memset(v + 256 * nb, 0, vstride - 256 * nb);
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t* blk_out = dst + b * kQ4KBlock;
            int32_t* sc = reinterpret_cast<int32_t*>(blk_out + kQ4KScales) + r;
            int16_t* mn = reinterpret_cast<int16_t*>(blk_out + kQ4KMins) + 2 * r;
            float* d = reinterpret_cast<float*>(blk_out + kQ4KD) + r;
            if (r >= rows) {
                for (int sb = 0; sb < 8; ++sb) sc[32 * sb] = 0, mn[64 * (sb / 2) + sb % 2] = 0;
                d[0] = d[32] = 0.0f;
                continue;
            }
            const block_q4_K& blk = reinterpret_cast<const block_q4_K*>(W + r * wrow)[b];
            for (int j = 0; j < 4; ++j) {  // 32 bytes j: k = 64j + l (low nibbles), 64j + 32 + l (high)
                const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs + 32 * j));
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + 256 * b + 64 * j), _mm256_and_si256(q, lo4));
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + 256 * b + 64 * j + 32),
                                    _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4));
            }
            alignas(16) uint8_t scm[16];  // 8 scales, 8 mins
            _mm_store_si128(reinterpret_cast<__m128i*>(scm), q4_K_scales_mins(blk));
            for (int sb = 0; sb < 8; ++sb) {
                sc[32 * sb] = scm[sb];
                mn[64 * (sb / 2) + sb % 2] = scm[8 + sb];
            }
            d[0] = fp16(blk.d);
            d[32] = fp16(blk.dmin);
        }
    }
    interleave(dst, vals, vstride, 64 * nb, 64, kQ4KBlock);
}

// a32: per activation row, per super-block, the 8 sums of 32 quants as int16 (from bsums).
template <int NR>
void kernel_q4_K(const uint8_t* panel, const block_q8_K* const* a, const int16_t* const* a32, int64_t nb,
                 __m512 out[][2]) {
    __m512 acc[NR][2];
    HG_UNROLL
    for (int m = 0; m < NR; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, panel += kQ4KBlock) {
        __m512i s32[NR][2];
        HG_UNROLL
        for (int m = 0; m < NR; ++m) s32[m][0] = s32[m][1] = _mm512_setzero_si512();
        _Pragma("GCC unroll 1")  // a fully unrolled super-block spills the accumulators
        for (int sb = 0; sb < 8; ++sb) {
            __m512i sub[NR][2];
            HG_UNROLL
            for (int m = 0; m < NR; ++m) sub[m][0] = sub[m][1] = _mm512_setzero_si512();
            const uint8_t* pq = panel + 8 * kStep * sb;
            HG_UNROLL
            for (int st = 0; st < 8; ++st) {
                const __m512i w0 = _mm512_load_si512(pq + kStep * st), w1 = _mm512_load_si512(pq + kStep * st + 64);
                HG_UNROLL
                for (int m = 0; m < NR; ++m) {
                    const __m512i av = _mm512_set1_epi32(load_i32(a[m][b].qs + 32 * sb + 4 * st));
                    sub[m][0] = keep(_mm512_dpbusd_epi32(sub[m][0], w0, av));
                    sub[m][1] = keep(_mm512_dpbusd_epi32(sub[m][1], w1, av));
                }
            }
            const int32_t* sc = reinterpret_cast<const int32_t*>(panel + kQ4KScales) + 32 * sb;
            const __m512i sc0 = _mm512_load_si512(sc), sc1 = _mm512_load_si512(sc + 16);
            HG_UNROLL
            for (int m = 0; m < NR; ++m) {
                s32[m][0] = _mm512_add_epi32(s32[m][0], _mm512_mullo_epi32(sub[m][0], sc0));
                s32[m][1] = _mm512_add_epi32(s32[m][1], _mm512_mullo_epi32(sub[m][1], sc1));
            }
        }
        const float* d = reinterpret_cast<const float*>(panel + kQ4KD);
        HG_UNROLL
        for (int h = 0; h < 2; ++h) {
            const __m512 dw = _mm512_load_ps(d + 16 * h), dmin = _mm512_load_ps(d + 32 + 16 * h);
            HG_UNROLL
            for (int m = 0; m < NR; ++m) {
                __m512i ms = _mm512_setzero_si512();
                HG_UNROLL
                for (int i = 0; i < 4; ++i)
                    ms = _mm512_dpwssd_epi32(ms, _mm512_load_si512(panel + kQ4KMins + 128 * i + 64 * h),
                                             _mm512_set1_epi32(load_i32(a32[m] + 8 * b + 2 * i)));
                const __m512 da = _mm512_set1_ps(a[m][b].d);
                acc[m][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32[m][h]), _mm512_mul_ps(dw, da), acc[m][h]);
                acc[m][h] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(ms), _mm512_mul_ps(dmin, da), acc[m][h]);
            }
        }
    }
    HG_UNROLL
    for (int m = 0; m < NR; ++m) out[m][0] = acc[m][0], out[m][1] = acc[m][1];
}

// ---- Q6_K (super-blocks of 256): 64 x 128 bytes q (0..63, the stored value + 32); 16 x 128 bytes
// int32 scale vectors; 8 x 128 bytes int16 scale pairs (sc[r][2i], sc[r][2i+1]) for the -32
// offset; 32 floats d.
constexpr size_t kQ6KBlock = 64 * kStep + 16 * 128 + 8 * 128 + 128;
constexpr size_t kQ6KScales = 64 * kStep, kQ6KPairs = kQ6KScales + 16 * 128, kQ6KD = kQ6KPairs + 8 * 128;

void pack_q6_K(uint8_t* dst, uint8_t* vals, size_t vstride, const uint8_t* W, size_t wrow, int rows, int64_t nb) {
    const __m256i lo4 = _mm256_set1_epi8(0xF), three = _mm256_set1_epi8(3);
    for (int r = 0; r < PN; ++r) {
        uint8_t* v = vals + r * vstride;
        if (r >= rows) std::memset(v, 0, vstride);
        else std::memset(v + 256 * nb, 0, vstride - 256 * nb);
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t* blk_out = dst + b * kQ6KBlock;
            int32_t* sc = reinterpret_cast<int32_t*>(blk_out + kQ6KScales) + r;
            int16_t* cs = reinterpret_cast<int16_t*>(blk_out + kQ6KPairs) + 2 * r;
            float* d = reinterpret_cast<float*>(blk_out + kQ6KD) + r;
            const block_q6_K* blk = r < rows ? &reinterpret_cast<const block_q6_K*>(W + r * wrow)[b] : nullptr;
            for (int sb = 0; sb < 16; ++sb) {
                const int16_t s_ = blk ? blk->scales[sb] : 0;
                sc[32 * sb] = s_;
                cs[64 * (sb / 2) + sb % 2] = s_;
            }
            d[0] = blk ? fp16(blk->d) : 0.0f;
            if (!blk) continue;
            for (int h = 0; h < 2; ++h) {  // 128 values per half, as dequantize_row_q6_K
                const uint8_t* ql = blk->ql + 64 * h;
                const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qh + 32 * h));
                const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
                const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
                uint8_t* o = v + 256 * b + 128 * h;
                auto put = [&](int i, __m256i lo, __m256i hi2) {
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 32 * i),
                                        _mm256_or_si256(_mm256_and_si256(lo, lo4),
                                                        _mm256_slli_epi16(_mm256_and_si256(hi2, three), 4)));
                };
                put(0, l0, qh);
                put(1, l1, _mm256_srli_epi16(qh, 2));
                put(2, _mm256_srli_epi16(l0, 4), _mm256_srli_epi16(qh, 4));
                put(3, _mm256_srli_epi16(l1, 4), _mm256_srli_epi16(qh, 6));
            }
        }
    }
    interleave(dst, vals, vstride, 64 * nb, 64, kQ6KBlock);
}

template <int NR>
void kernel_q6_K(const uint8_t* panel, const block_q8_K* const* a, const int16_t* const*, int64_t nb,
                 __m512 out[][2]) {
    __m512 acc[NR][2];
    HG_UNROLL
    for (int m = 0; m < NR; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b, panel += kQ6KBlock) {
        __m512i s32[NR][2];
        HG_UNROLL
        for (int h = 0; h < 2; ++h)
            HG_UNROLL
            for (int m = 0; m < NR; ++m) {
                // -32 * sum_sb sc[sb] * bsum[sb]
                __m512i c = _mm512_setzero_si512();
                HG_UNROLL
                for (int i = 0; i < 8; ++i)
                    c = _mm512_dpwssd_epi32(c, _mm512_load_si512(panel + kQ6KPairs + 128 * i + 64 * h),
                                            _mm512_set1_epi32(load_i32(a[m][b].bsums + 2 * i)));
                s32[m][h] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(c, 5));
            }
        _Pragma("GCC unroll 2")
        for (int sb = 0; sb < 16; ++sb) {
            __m512i sub[NR][2];
            HG_UNROLL
            for (int m = 0; m < NR; ++m) sub[m][0] = sub[m][1] = _mm512_setzero_si512();
            const uint8_t* pq = panel + 4 * kStep * sb;
            HG_UNROLL
            for (int st = 0; st < 4; ++st) {
                const __m512i w0 = _mm512_load_si512(pq + kStep * st), w1 = _mm512_load_si512(pq + kStep * st + 64);
                HG_UNROLL
                for (int m = 0; m < NR; ++m) {
                    const __m512i av = _mm512_set1_epi32(load_i32(a[m][b].qs + 16 * sb + 4 * st));
                    sub[m][0] = keep(_mm512_dpbusd_epi32(sub[m][0], w0, av));
                    sub[m][1] = keep(_mm512_dpbusd_epi32(sub[m][1], w1, av));
                }
            }
            const int32_t* sc = reinterpret_cast<const int32_t*>(panel + kQ6KScales) + 32 * sb;
            const __m512i sc0 = _mm512_load_si512(sc), sc1 = _mm512_load_si512(sc + 16);
            HG_UNROLL
            for (int m = 0; m < NR; ++m) {
                s32[m][0] = _mm512_add_epi32(s32[m][0], _mm512_mullo_epi32(sub[m][0], sc0));
                s32[m][1] = _mm512_add_epi32(s32[m][1], _mm512_mullo_epi32(sub[m][1], sc1));
            }
        }
        const float* d = reinterpret_cast<const float*>(panel + kQ6KD);
        const __m512 d0 = _mm512_load_ps(d), d1 = _mm512_load_ps(d + 16);
        HG_UNROLL
        for (int m = 0; m < NR; ++m) {
            const __m512 da = _mm512_set1_ps(a[m][b].d);
            acc[m][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32[m][0]), _mm512_mul_ps(d0, da), acc[m][0]);
            acc[m][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32[m][1]), _mm512_mul_ps(d1, da), acc[m][1]);
        }
    }
    HG_UNROLL
    for (int m = 0; m < NR; ++m) out[m][0] = acc[m][0], out[m][1] = acc[m][1];
}

// ---------------------------------------------------------------------------------------------
// GEMV for the K-quants (decode, M <= 12): one weight row against up to 4 activation rows.
// The 6-bit (Q4_K) / 8-bit (Q6_K) sub-block scales are int16 lanes of a vector, so one
// maddubs (u8 x s8 -> int16 pairs) and one vpdpwssd (int16 pairs x scale -> int32) replace
// AVX2's maddubs, madd, madd and add per 32 values. Weights stream once; each block prefetches
// kPrefetchAhead bytes further (the AVX2 level measured 2 KiB as the best distance).

constexpr int kPrefetchAhead = 2048;
template <int Bytes>
inline void prefetch_ahead(const void* p) {
    const char* c = static_cast<const char*>(p) + kPrefetchAhead;
    HG_UNROLL
    for (int o = 0; o < Bytes; o += 64) _mm_prefetch(c + o, _MM_HINT_T0);
}

inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }

// Q4_K: 32 bytes j of nibbles become one vector of 64 values k = 64j .. 64j + 63 (low nibbles
// then high nibbles, i.e. sub-blocks 2j and 2j + 1); its scale vector has sc[2j] in int16 lanes
// 0..15 and sc[2j + 1] in lanes 16..31.
template <int NR>
void dot_q4_K(const block_q4_K* w, const block_q8_K* const* a, int64_t nb, float* out, const float* const*) {
    __m512 acc[NR];
    __m256 accm[NR];
    HG_UNROLL
    for (int m = 0; m < NR; ++m) acc[m] = _mm512_setzero_ps(), accm[m] = _mm256_setzero_ps();
    const __m512i lo4 = _mm512_set1_epi8(0xF);
    const __m128i dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    for (int64_t b = 0; b < nb; ++b) {
        prefetch_ahead<sizeof(block_q4_K)>(w + b);
        const block_q4_K& blk = w[b];
        // the 8 scales (bytes 0..7) and 8 mins (bytes 8..15); the scales as int16 in every 128-bit lane
        const __m128i scm_v = q4_K_scales_mins(blk);
        const __m512i sc16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(scm_v));
        const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scm_v, dup_mins));
        __m512i isum[NR];
        HG_UNROLL
        for (int m = 0; m < NR; ++m) isum[m] = _mm512_setzero_si512();
        HG_UNROLL
        for (int j = 0; j < 4; ++j) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qs + 32 * j));
            const __m512i v = _mm512_and_si512(
                _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1), lo4);
            // int16 lanes 0..15 (bytes 0..31) take scale 2j, lanes 16..31 scale 2j + 1: in-lane byte shuffles
            const __m512i sv = _mm512_shuffle_epi8(
                sc16, _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>((4 * j + 1) << 8 | (4 * j))),
                                         _mm256_set1_epi16(static_cast<int16_t>((4 * j + 3) << 8 | (4 * j + 2))), 1));
            HG_UNROLL
            for (int m = 0; m < NR; ++m)
                isum[m] = _mm512_dpwssd_epi32(isum[m], _mm512_maddubs_epi16(v, load512(a[m][b].qs + 64 * j)), sv);
        }
        const __m512 dw = _mm512_set1_ps(fp16(blk.d));
        const __m256 dmin = _mm256_set1_ps(fp16(blk.dmin));
        HG_UNROLL
        for (int m = 0; m < NR; ++m) {
            const float da = a[m][b].d;
            const __m256i pm = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[m][b].bsums)), mins16);
            acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[m]), _mm512_mul_ps(dw, _mm512_set1_ps(da)), acc[m]);
            accm[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_mul_ps(dmin, _mm256_set1_ps(da)), accm[m]);
        }
    }
    HG_UNROLL
    for (int m = 0; m < NR; ++m) {
        const __m256 lo = _mm512_castps512_ps256(acc[m]);
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[m]), 1));
        const __m256 t = _mm256_sub_ps(_mm256_add_ps(lo, hi), accm[m]);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        out[m] = _mm_cvtss_f32(s);
    }
}

// Q6_K: per half of 128 values, two vectors of 64 (k = 128h + 64i + 0..63) built as the AVX2
// level builds its 32-value quarters; sub-blocks of 16 values = 8 int16 lanes, so the scale
// vector of vector (h, i) has sc[8h + 4i + lane / 8] in int16 lane `lane`.
template <int NR>
void dot_q6_K(const block_q6_K* w, const block_q8_K* const* a, int64_t nb, float* out, const float* const*) {
    __m512 acc[NR];
    HG_UNROLL
    for (int m = 0; m < NR; ++m) acc[m] = _mm512_setzero_ps();
    const __m256i lo4 = _mm256_set1_epi8(0xF), three = _mm256_set1_epi8(3);
    // lane l of vector (h, i) takes scale 8h + 4i + l / 8
    __m512i sidx[4];
    for (int g = 0; g < 4; ++g) {
        alignas(64) int16_t idx[32];
        for (int l = 0; l < 32; ++l) idx[l] = static_cast<int16_t>(4 * g + l / 8);
        sidx[g] = _mm512_load_si512(idx);
    }
    for (int64_t b = 0; b < nb; ++b) {
        prefetch_ahead<sizeof(block_q6_K)>(w + b);
        const block_q6_K& blk = w[b];
        const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales));
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        __m512i isum[NR];
        HG_UNROLL
        for (int m = 0; m < NR; ++m) {
            // -32 * sum_sb scale[sb] * bsum[sb]
            const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[m][b].bsums));
            const __m256i c = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
            isum[m] = _mm512_castsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), c));
            isum[m] = _mm512_inserti64x4(isum[m], _mm256_setzero_si256(), 1);
        }
        HG_UNROLL
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = blk.ql + 64 * h;
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk.qh + 32 * h));
            const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
            const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
            auto quarter = [&](__m256i lo, __m256i hi2) {
                return _mm256_or_si256(_mm256_and_si256(lo, lo4), _mm256_slli_epi16(_mm256_and_si256(hi2, three), 4));
            };
            const __m512i v[2] = {
                _mm512_inserti64x4(_mm512_castsi256_si512(quarter(l0, qh)), quarter(l1, _mm256_srli_epi16(qh, 2)), 1),
                _mm512_inserti64x4(_mm512_castsi256_si512(quarter(_mm256_srli_epi16(l0, 4), _mm256_srli_epi16(qh, 4))),
                                   quarter(_mm256_srli_epi16(l1, 4), _mm256_srli_epi16(qh, 6)), 1)};
            HG_UNROLL
            for (int i = 0; i < 2; ++i) {
                const __m512i sv = _mm512_permutexvar_epi16(sidx[2 * h + i], _mm512_castsi256_si512(sc16));
                HG_UNROLL
                for (int m = 0; m < NR; ++m)
                    isum[m] = _mm512_dpwssd_epi32(isum[m], _mm512_maddubs_epi16(v[i], load512(a[m][b].qs + 128 * h + 64 * i)), sv);
            }
        }
        const float dw = fp16(blk.d);
        HG_UNROLL
        for (int m = 0; m < NR; ++m)
            acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[m]), _mm512_set1_ps(dw * a[m][b].d), acc[m]);
    }
    HG_UNROLL
    for (int m = 0; m < NR; ++m) out[m] = _mm512_reduce_add_ps(acc[m]);
}


// ---------------------------------------------------------------------------------------------
// Driver

template <typename ABlock, typename Extra>
struct QuantGemm {
    void (*pack)(uint8_t*, uint8_t*, size_t, const uint8_t*, size_t, int, int64_t);
    size_t block_bytes;
    int block_size;  // weights per block
    void (*k[MR])(const uint8_t*, const ABlock* const*, const Extra* const*, int64_t, __m512[][2]);
};

inline void store_row(float* y, const __m512 v[2], const float* bias, int cols) {
    HG_UNROLL
    for (int h = 0; h < 2; ++h) {
        const int c = std::clamp(cols - 16 * h, 0, 16);
        if (c == 0) break;
        const __mmask16 mask = static_cast<__mmask16>((1u << c) - 1);
        __m512 o = v[h];
        if (bias) o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(mask, bias + 16 * h));
        _mm512_mask_storeu_ps(y + 16 * h, mask, o);
    }
}

template <typename ABlock, typename Extra>
void gemm_quant(const QuantGemm<ABlock, Extra>& G, float* y, const Tensor& W, const float* bias, int64_t M,
                const ABlock* act, size_t act_row_blocks, const Extra* extra, size_t extra_row, int64_t nb,
                ThreadPool& pool) {
    const int64_t N = W.rows();
    const size_t wrow = W.row_bytes();
    const uint8_t* Wd = static_cast<const uint8_t*>(W.data);
    const int64_t n_panels = (N + PN - 1) / PN;
    const size_t vstride = (static_cast<size_t>(nb * G.block_size) + 63) & ~size_t(63);
    // Activation rows in chunks that stay in the L2 while every panel of the thread sweeps them
    // (panels are re-unpacked per chunk: a few % of the work).
    const size_t act_bytes = act_row_blocks * sizeof(ABlock) + extra_row * sizeof(Extra);
    const int64_t MC = std::max<int64_t>(MR, std::min<int64_t>(M, (int64_t)(kActChunkBytes / act_bytes) / MR * MR));
    pool.parallel_for(n_panels, [&](int64_t p0, int64_t p1, int) {
        Scratch& S = scratch();
        uint8_t* panel = S.panel.get(G.block_bytes * nb);
        uint8_t* vals = S.vals.get(vstride * PN);
        for (int64_t mc = 0; mc < M; mc += MC)
            for (int64_t p = p0; p < p1; ++p) {
                const int64_t n0 = p * PN;
                const int rows = static_cast<int>(std::min<int64_t>(PN, N - n0));
                G.pack(panel, vals, vstride, Wd + n0 * wrow, wrow, rows, nb);
                for (int64_t m0 = mc; m0 < std::min(M, mc + MC); m0 += MR) {
                    const int mr = static_cast<int>(std::min<int64_t>(MR, M - m0));
                    const ABlock* a[MR];
                    const Extra* e[MR];
                    for (int i = 0; i < mr; ++i) {
                        a[i] = act + (m0 + i) * act_row_blocks;
                        e[i] = extra ? extra + (m0 + i) * extra_row : nullptr;
                    }
                    __m512 acc[MR][2];
                    G.k[mr - 1](panel, a, e, nb, acc);
                    for (int i = 0; i < mr; ++i) store_row(y + (m0 + i) * N + n0, acc[i], bias ? bias + n0 : nullptr, rows);
                }
            }
    });
}

const QuantGemm<block_q8_0, int32_t> kGemmQ8_0 = {
    pack_b32<block_q8_0, row_values_q8_0>, kB32Block, 32,
    {kernel_b32<1, 128>, kernel_b32<2, 128>, kernel_b32<3, 128>, kernel_b32<4, 128>}};
const QuantGemm<block_q8_0, int32_t> kGemmQ4_0 = {
    pack_b32<block_q4_0, row_values_q4_0>, kB32Block, 32,
    {kernel_b32<1, 8>, kernel_b32<2, 8>, kernel_b32<3, 8>, kernel_b32<4, 8>}};
const QuantGemm<block_q8_K, int16_t> kGemmQ4_K = {
    pack_q4_K, kQ4KBlock, 256, {kernel_q4_K<1>, kernel_q4_K<2>, kernel_q4_K<3>, kernel_q4_K<4>}};
const QuantGemm<block_q8_K, int16_t> kGemmQ6_K = {
    pack_q6_K, kQ6KBlock, 256, {kernel_q6_K<1>, kernel_q6_K<2>, kernel_q6_K<3>, kernel_q6_K<4>}};

// M above this takes the packed GEMM (the same crossover as the AVX2 level's GEMV).
constexpr int64_t kGemvMaxRows = 12;

int32_t sum_i8x32(const int8_t* q) {
    const __m512i v = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
    return _mm512_reduce_add_epi32(_mm512_madd_epi16(v, _mm512_set1_epi16(1)));
}

}  // namespace

void matmul(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool) {
    const int64_t K = W.cols();
    const bool quantized = W.type == DType::Q4_0 || W.type == DType::Q8_0 || W.type == DType::Q4_K || W.type == DType::Q6_K;
    const bool k_quant = W.type == DType::Q4_K || W.type == DType::Q6_K;
    // Not improved here: float weights (a 12 x 32 AVX-512 float GEMM measured 0.87-1.22x of
    // the AVX2 one on Zen 4, whose 512-bit FMAs are two 256-bit halves: not shipped) and the
    // GEMV of the 32-blocks (bandwidth-bound on the AVX2 level already)
    if (!quantized || (M <= kGemvMaxRows && !k_quant)) return avx2::matmul(y, x, W, bias, M, pool);
    HG_CHECK(row_bytes(W.type, K) == W.row_bytes(), "matmul: weight %s is not packed", W.shape_str().c_str());
    if (M <= 0 || W.rows() == 0) return;
    const DType at = vec_dot_type(W.type);
    const size_t arow = row_bytes(at, K);
    const int64_t nb = K / dtype_info(W.type).block_size;
    Scratch& S = scratch();
    uint8_t* act = S.act.get(M * arow);
    if (at == DType::Q8_0) {
        auto* aq = reinterpret_cast<block_q8_0*>(act);
        auto* sums = reinterpret_cast<int32_t*>(S.extra.get(M * nb * sizeof(int32_t)));
        pool.parallel_for(M, [&](int64_t m0, int64_t m1, int) {
            for (int64_t m = m0; m < m1; ++m) {
                avx2::quantize_act(at, x + m * K, aq + m * nb, K);
                for (int64_t b = 0; b < nb; ++b) sums[m * nb + b] = sum_i8x32(aq[m * nb + b].qs);
            }
        });
        gemm_quant(W.type == DType::Q8_0 ? kGemmQ8_0 : kGemmQ4_0, y, W, bias, M, aq, nb, sums, nb, nb, pool);
        return;
    }
    auto* aq = reinterpret_cast<block_q8_K*>(act);
    if (M <= kGemvMaxRows) {
        if (M <= 4) {  // a few rows: not worth a pool round trip
            for (int64_t m = 0; m < M; ++m) avx2::quantize_act(at, x + m * K, aq + m * nb, K);
        } else {
            pool.parallel_for(M, [&](int64_t m0, int64_t m1, int) {
                for (int64_t m = m0; m < m1; ++m) avx2::quantize_act(at, x + m * K, aq + m * nb, K);
            });
        }
        if (W.type == DType::Q4_K)
            gemv_quant<block_q4_K, block_q8_K>(dot_q4_K<1>, dot_q4_K<2>, dot_q4_K<3>, dot_q4_K<4>, y, W, bias, M, aq,
                                               nullptr, nb, pool);
        else
            gemv_quant<block_q6_K, block_q8_K>(dot_q6_K<1>, dot_q6_K<2>, dot_q6_K<3>, dot_q6_K<4>, y, W, bias, M, aq,
                                               nullptr, nb, pool);
        return;
    }
    int16_t* a32 = W.type == DType::Q4_K ? reinterpret_cast<int16_t*>(S.extra.get(M * nb * 8 * sizeof(int16_t))) : nullptr;
    pool.parallel_for(M, [&](int64_t m0, int64_t m1, int) {
        for (int64_t m = m0; m < m1; ++m) {
            avx2::quantize_act(at, x + m * K, aq + m * nb, K);
            if (a32)
                for (int64_t b = 0; b < nb; ++b)
                    for (int i = 0; i < 8; ++i)
                        a32[(m * nb + b) * 8 + i] =
                            static_cast<int16_t>(aq[m * nb + b].bsums[2 * i] + aq[m * nb + b].bsums[2 * i + 1]);
        }
    });
    if (W.type == DType::Q4_K) gemm_quant(kGemmQ4_K, y, W, bias, M, aq, nb, a32, nb * 8, nb, pool);
    else gemm_quant(kGemmQ6_K, y, W, bias, M, aq, nb, static_cast<const int16_t*>(nullptr), 0, nb, pool);
}

}  // namespace hg::avx512
