// Small SIMD helpers shared by the *_avx2.cpp and *_avx512.cpp kernels (include only from those).
//
// Everything here has internal linkage (an anonymous namespace): each file gets its own copy,
// compiled with that file's ISA flags. A shared inline function with external linkage would be
// merged by the linker into one copy, possibly the AVX-512 one, which would then run on CPUs
// without AVX-512 (tests/conformance/isa_isolation_test.py checks the AVX-512 objects).
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <new>

#include "core/quants.h"

namespace hg {
namespace {

// Grow-only, 64-byte aligned scratch memory (plain malloc: no std::vector, whose member templates
// would be shared between files of different ISA levels). Contents are not kept on growth.
struct AlignedBuffer {
    uint8_t* p = nullptr;
    size_t n = 0;
    AlignedBuffer() = default;
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    ~AlignedBuffer() { std::free(p); }
    uint8_t* get(size_t bytes) {
        if (bytes > n) {
            std::free(p);
            p = nullptr;
            n = 0;
            const size_t rounded = (bytes + 63) & ~size_t(63);
            p = static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
            if (!p) throw std::bad_alloc();
            n = rounded;
        }
        return p;
    }
    float* floats(size_t count) { return reinterpret_cast<float*>(get(count * sizeof(float))); }
};

// The 8 6-bit scales and 8 mins of a Q4_K block as bytes (sc in the low 8, m in the high 8),
// from the 12 packed bytes (see q4_K_scale_min) with 32-bit lane ops: with w0, w1, w2 the three
// words, sc = [w0 & 0x3f.., (w2 & 0x0f..) | ((w0 >> 2) & 0x30..)], m = [w1 & 0x3f..,
// ((w2 >> 4) & 0x0f..) | ((w1 >> 2) & 0x30..)].
[[maybe_unused]] inline __m128i q4_K_scales_mins(const block_q4_K& blk) {
    // 16 bytes from the scales: the 4 after them are the first quants (same block, never read past it)
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales));
    const __m128i t1 = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));  // w0 w2 w1 w2
    const __m128i lo = _mm_and_si128(_mm_srlv_epi32(t1, _mm_setr_epi32(0, 0, 0, 4)),
                                     _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i t2 = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));  // w0 w0 w1 w1
    const __m128i hi = _mm_and_si128(_mm_srli_epi32(t2, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo, hi);
}

}  // namespace
}  // namespace hg
