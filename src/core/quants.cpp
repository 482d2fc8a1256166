// Block quantization (scalar reference), bit-compatible with ggml-quants.c / gguf-py.
#include "core/quants.h"

#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace hg {

void quantize_row(DType type, const float* src, void* dst, int64_t n) {
    switch (type) {
        case DType::F32: std::memcpy(dst, src, n * sizeof(float)); return;
        case DType::F16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
            return;
        }
        case DType::BF16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_bf16(src[i]);
            return;
        }
        default: fail("quantize_row: type %s is not supported", dtype_name(type));
    }
}

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
    switch (type) {
        case DType::F32: std::memcpy(dst, src, n * sizeof(float)); return;
        case DType::F16: {
            auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
            return;
        }
        case DType::BF16: {
            auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
            return;
        }
        default: fail("dequantize_row: type %s is not supported", dtype_name(type));
    }
}

void quantize_rows(DType type, const float* src, void* dst, int64_t rows, int64_t cols) {
    const size_t rb = row_bytes(type, cols);
    for (int64_t r = 0; r < rows; ++r) quantize_row(type, src + r * cols, static_cast<uint8_t*>(dst) + r * rb, cols);
}

}  // namespace hg
