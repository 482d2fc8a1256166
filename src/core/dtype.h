// Element and block types. The numeric values are ggml's `ggml_type` ids, so a GGUF tensor
// type maps to DType by value. Block layouts (core/quants.h) are bit-compatible with ggml.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace hg {

enum class DType : uint32_t {
    F32  = 0,
    F16  = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    I8   = 24,
    I16  = 25,
    I32  = 26,
    I64  = 27,
    F64  = 28,
    BF16 = 30,
};

struct DTypeInfo {
    const char* name;       // "F32", "Q4_K", ... as gguf-py prints them
    int64_t block_size;     // elements per block (1 for plain types)
    size_t block_bytes;     // bytes per block
    bool quantized;         // block-quantized
    bool supported;         // we can read/compute with it (others are only listed by `inspect`)
};

// Info for a known type; nullopt for ids we do not know at all (a corrupt file).
std::optional<DTypeInfo> dtype_info(uint32_t id);
const DTypeInfo& dtype_info(DType t);   // throws for unknown ids
const char* dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);  // case-insensitive "q4_k", "F16", ...

// Bytes taken by one row of n elements; throws when n is not a multiple of the block size.
size_t row_bytes(DType t, int64_t n);

}  // namespace hg
