// Block quantization, bit-compatible with ggml / GGUF (ggml-common.h layouts, ggml-quants.c
// rounding). Our quantize_row() output must equal gguf-py's numpy quantizer byte for byte
// (tests/parsers/quants_golden_test.cpp holds us to committed golden vectors).
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

// Converts n floats into `type` (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K); n must be a
// multiple of the block size. dst must hold row_bytes(type, n) bytes. Scalar reference code.
void quantize_row(DType type, const float* src, void* dst, int64_t n);

// The inverse, for every supported type (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K).
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Whole tensors of rows x cols, rows processed in parallel when large.
void quantize_rows(DType type, const float* src, void* dst, int64_t rows, int64_t cols);

}  // namespace hg
