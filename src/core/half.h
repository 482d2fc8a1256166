// Scalar conversions between float32 and the 16-bit float formats, bit-exact with
// numpy's float16 cast (round to nearest even) and with ggml/gguf-py's bfloat16 rounding.
// SIMD kernels use F16C / AVX-512 BF16 instructions and are held to these by tests.
#pragma once
#include <cstdint>
#include <cstring>

namespace hg {

inline uint32_t f32_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float f32_from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// IEEE binary16 -> binary32 (exact).
inline float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000 | (mant << 13));  // inf / nan
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign);  // +-0
        // subnormal: normalise
        exp = 113;
        while (!(mant & 0x400)) {
            mant <<= 1;
            --exp;
        }
        mant &= 0x3ff;
        return f32_from_bits(sign | (exp << 23) | (mant << 13));
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

// binary32 -> binary16, round to nearest even, overflow to inf, NaN stays (quiet) NaN.
inline uint16_t fp32_to_fp16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t abs = x & 0x7fffffff;
    if (abs > 0x7f800000) return static_cast<uint16_t>(sign | 0x7e00 | ((abs >> 13) & 0x3ff));  // nan
    if (abs == 0x7f800000) return static_cast<uint16_t>(sign | 0x7c00);                        // inf
    const uint32_t e = abs >> 23;  // biased float exponent
    if (e > 112) {                 // normal half (or overflow)
        const uint32_t mant = abs & 0x7fffff;
        uint32_t h = ((e - 112) << 10) | (mant >> 13);
        const uint32_t rem = mant & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;  // carry may step into the exponent: fine
        if (h >= 0x7c00) h = 0x7c00;
        return static_cast<uint16_t>(sign | h);
    }
    if (e >= 102) {  // subnormal half: units of 2^-24
        const uint32_t mant = (abs & 0x7fffff) | 0x800000;
        const uint32_t shift = 126 - e;  // 14..24
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) ++h;
        return static_cast<uint16_t>(sign | h);
    }
    return static_cast<uint16_t>(sign);  // underflow to +-0
}

// bfloat16 -> float32 (exact).
inline float bf16_to_fp32(uint16_t b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }

// float32 -> bfloat16 the way ggml and gguf-py do it: NaN forced quiet, otherwise
// round to nearest even (subnormals kept, overflow rounds to inf).
inline uint16_t fp32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 64);
    return static_cast<uint16_t>((static_cast<uint64_t>(u) + (0x7fff + ((u >> 16) & 1))) >> 16);
}

}  // namespace hg
