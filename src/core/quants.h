// Block quantization, bit-compatible with ggml / GGUF (ggml-common.h layouts, ggml-quants.c
// rounding). Our quantize_row() output must equal gguf-py's numpy quantizer byte for byte
// (tests/unit/quants_golden_test.cpp holds us to committed golden vectors made by gguf-py and
// by llama.cpp's own reference quantizers, tests/reference/gen_quants.py).
//
// Non-finite input: F32/F16/BF16 carry NaN and +-inf through (as numpy/gguf-py do). The block
// formats have no way to represent them and ggml's behaviour on them is undefined (a float to
// int conversion of NaN), so quantize_row() refuses them with an hg::Error naming the index.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace hg {

constexpr int QK4_0 = 32;
constexpr int QK8_0 = 32;
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

#pragma pack(push, 1)
struct block_q4_0 {
    uint16_t d;               // fp16 scale
    uint8_t qs[QK4_0 / 2];    // nibbles: element j in low nibble of qs[j], j+16 in high nibble
};
struct block_q8_0 {
    uint16_t d;               // fp16 scale
    int8_t qs[QK8_0];
};
struct block_q4_K {
    uint16_t d;               // fp16 super-block scale for the 6-bit scales
    uint16_t dmin;            // fp16 super-block scale for the 6-bit mins
    uint8_t scales[K_SCALE_SIZE];  // 8 scales + 8 mins, 6 bits each, packed
    uint8_t qs[QK_K / 2];     // nibbles
};
struct block_q6_K {
    uint8_t ql[QK_K / 2];     // low 4 bits
    uint8_t qh[QK_K / 4];     // high 2 bits
    int8_t scales[QK_K / 16]; // 8-bit scales of 16-element sub-blocks
    uint16_t d;               // fp16 super-block scale
};
struct block_q8_K {           // activations only (dot products with K-quants)
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16]; // sums of groups of 16 quants
};
#pragma pack(pop)

static_assert(sizeof(block_q4_0) == 18);
static_assert(sizeof(block_q8_0) == 34);
static_assert(sizeof(block_q4_K) == 144);
static_assert(sizeof(block_q6_K) == 210);
static_assert(sizeof(block_q8_K) == 292);

// Typed scalar reference quantizers (the same code quantize_row() dispatches to). They do
// not check for non-finite input (the kernels call them on activations; the result for a
// non-finite input is unspecified but memory-safe).
void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t n);
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n);
void quantize_row_q4_K(const float* x, block_q4_K* y, int64_t n);
void quantize_row_q6_K(const float* x, block_q6_K* y, int64_t n);
void quantize_row_q8_K(const float* x, block_q8_K* y, int64_t n);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K block (ggml's packing).
inline void q4_K_scale_min(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// The activation type a weight type is multiplied with (ggml's vec_dot_type): Q8_0 for
// Q4_0/Q8_0, Q8_K for the K-quants, F32 for the float types (we keep activations in f32).
DType vec_dot_type(DType weight_type);

// Converts n floats into `type` (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K); n must be a
// multiple of the block size. dst must hold row_bytes(type, n) bytes. Scalar reference code.
void quantize_row(DType type, const float* src, void* dst, int64_t n);

// The inverse, for every supported type (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K).
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Whole tensors of rows x cols, rows processed in parallel when large.
void quantize_rows(DType type, const float* src, void* dst, int64_t rows, int64_t cols);

}  // namespace hg
