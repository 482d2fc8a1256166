#include "core/dtype.h"

#include <cctype>
#include <string>

#include "core/error.h"

namespace hg {

namespace {
struct Entry {
    DType t;
    DTypeInfo info;
};
// Sizes from ggml's block definitions (ggml-common.h); "supported" = we compute with it.
constexpr Entry kTypes[] = {
    {DType::F32,  {"F32", 1, 4, false, true}},
    {DType::F16,  {"F16", 1, 2, false, true}},
    {DType::Q4_0, {"Q4_0", 32, 18, true, true}},
    {DType::Q4_1, {"Q4_1", 32, 20, true, false}},
    {DType::Q5_0, {"Q5_0", 32, 22, true, false}},
    {DType::Q5_1, {"Q5_1", 32, 24, true, false}},
    {DType::Q8_0, {"Q8_0", 32, 34, true, true}},
    {DType::Q8_1, {"Q8_1", 32, 36, true, false}},
    {DType::Q2_K, {"Q2_K", 256, 84, true, false}},
    {DType::Q3_K, {"Q3_K", 256, 110, true, false}},
    {DType::Q4_K, {"Q4_K", 256, 144, true, true}},
    {DType::Q5_K, {"Q5_K", 256, 176, true, false}},
    {DType::Q6_K, {"Q6_K", 256, 210, true, true}},
    {DType::Q8_K, {"Q8_K", 256, 292, true, true}},
    {DType::I8,   {"I8", 1, 1, false, true}},
    {DType::I16,  {"I16", 1, 2, false, true}},
    {DType::I32,  {"I32", 1, 4, false, true}},
    {DType::I64,  {"I64", 1, 8, false, true}},
    {DType::F64,  {"F64", 1, 8, false, true}},
    {DType::BF16, {"BF16", 1, 2, false, true}},
};
}  // namespace

std::optional<DTypeInfo> dtype_info(uint32_t id) {
    for (const auto& e : kTypes)
        if (static_cast<uint32_t>(e.t) == id) return e.info;
    return std::nullopt;
}

const DTypeInfo& dtype_info(DType t) {
    for (const auto& e : kTypes)
        if (e.t == t) return e.info;
    fail("unknown tensor type id %u", static_cast<unsigned>(t));
}

const char* dtype_name(DType t) {
    auto i = dtype_info(static_cast<uint32_t>(t));
    return i ? i->name : "UNKNOWN";
}

std::optional<DType> dtype_from_name(std::string_view name) {
    std::string up;
    for (char c : name) up += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (const auto& e : kTypes)
        if (up == e.info.name) return e.t;
    return std::nullopt;
}

size_t row_bytes(DType t, int64_t n) {
    const DTypeInfo& i = dtype_info(t);
    HG_CHECK(n >= 0 && n % i.block_size == 0, "%s row of %lld elements is not a whole number of %lld-element blocks",
             i.name, (long long)n, (long long)i.block_size);
    return static_cast<size_t>(n / i.block_size) * i.block_bytes;
}

}  // namespace hg
