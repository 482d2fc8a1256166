#include "formats/checkpoint.h"

#include <cstring>

#include "core/error.h"
#include "core/half.h"

namespace hg {

namespace {
struct ElemInfo {
    ElemType t;
    const char* name;
    size_t size;
};
constexpr ElemInfo kElems[] = {
    {ElemType::BOOL, "BOOL", 1}, {ElemType::U8, "U8", 1},     {ElemType::I8, "I8", 1},
    {ElemType::I16, "I16", 2},   {ElemType::U16, "U16", 2},   {ElemType::I32, "I32", 4},
    {ElemType::U32, "U32", 4},   {ElemType::I64, "I64", 8},   {ElemType::U64, "U64", 8},
    {ElemType::F16, "F16", 2},   {ElemType::BF16, "BF16", 2}, {ElemType::F32, "F32", 4},
    {ElemType::F64, "F64", 8},   {ElemType::F8_E4M3, "F8_E4M3", 1}, {ElemType::F8_E5M2, "F8_E5M2", 1},
};
const ElemInfo& info(ElemType t) {
    for (const auto& e : kElems)
        if (e.t == t) return e;
    fail("unknown element type %d", static_cast<int>(t));
}
}  // namespace

const char* elem_type_name(ElemType t) { return info(t).name; }
size_t elem_size(ElemType t) { return info(t).size; }

std::optional<ElemType> elem_type_from_name(std::string_view s) {
    for (const auto& e : kElems)
        if (s == e.name) return e.t;
    return std::nullopt;
}

std::optional<DType> elem_to_dtype(ElemType t) {
    switch (t) {
        case ElemType::F32: return DType::F32;
        case ElemType::F16: return DType::F16;
        case ElemType::BF16: return DType::BF16;
        case ElemType::F64: return DType::F64;
        case ElemType::I8: return DType::I8;
        case ElemType::I16: return DType::I16;
        case ElemType::I32: return DType::I32;
        case ElemType::I64: return DType::I64;
        default: return std::nullopt;
    }
}

int64_t CkptTensor::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

bool CkptTensor::is_contiguous() const {
    int64_t expect = 1;
    for (size_t i = shape.size(); i-- > 0;) {
        if (shape[i] != 1 && stride[i] != expect) return false;
        expect *= shape[i];
    }
    return true;
}

Tensor CkptTensor::view() const {
    HG_CHECK(is_contiguous(), "%s: tensor is not contiguous (shape %s); use contiguous_bytes()", name.c_str(), shape_str().c_str());
    HG_CHECK(shape.size() <= 4, "%s: %zu dims; views have at most 4", name.c_str(), shape.size());
    const auto dt = elem_to_dtype(type);
    HG_CHECK(dt.has_value(), "%s: element type %s has no engine dtype", name.c_str(), elem_type_name(type));
    // Legacy torch.save files place storages at arbitrary offsets: a misaligned view would be
    // undefined behaviour for the kernels, so those tensors are read with contiguous_bytes().
    HG_CHECK(reinterpret_cast<uintptr_t>(data) % elem_size(type) == 0,
             "%s: data is not aligned to its %zu-byte elements in the file; use contiguous_bytes()", name.c_str(), elem_size(type));
    const int64_t one = 1;
    void* p = const_cast<uint8_t*>(data);  // the mapping is read-only; Tensor carries a non-const pointer
    if (shape.empty()) return Tensor::view(*dt, &one, 1, p);
    return Tensor::view(*dt, shape.data(), static_cast<int>(shape.size()), p);
}

std::vector<uint8_t> CkptTensor::contiguous_bytes() const {
    const size_t es = elem_size(type);
    const int64_t n = numel();
    std::vector<uint8_t> out(static_cast<size_t>(n) * es);
    if (n == 0) return out;
    if (is_contiguous()) {
        std::memcpy(out.data(), data, out.size());
        return out;
    }
    // walk the index space row-major with a counter per dim
    const size_t nd = shape.size();
    std::vector<int64_t> idx(nd, 0);
    for (int64_t k = 0; k < n; ++k) {
        int64_t off = 0;
        for (size_t d = 0; d < nd; ++d) off += idx[d] * stride[d];
        std::memcpy(out.data() + k * es, data + off * static_cast<int64_t>(es), es);
        for (size_t d = nd; d-- > 0;) {
            if (++idx[d] < shape[d]) break;
            idx[d] = 0;
        }
    }
    return out;
}

std::vector<float> CkptTensor::to_f32() const {
    const auto bytes = contiguous_bytes();
    const size_t n = static_cast<size_t>(numel());
    std::vector<float> out(n);
    const uint8_t* p = bytes.data();
    for (size_t i = 0; i < n; ++i) {
        switch (type) {
            case ElemType::F32: std::memcpy(&out[i], p + 4 * i, 4); break;
            case ElemType::F16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = fp16_to_fp32(h); break; }
            case ElemType::BF16: { uint16_t h; std::memcpy(&h, p + 2 * i, 2); out[i] = bf16_to_fp32(h); break; }
            case ElemType::F64: { double d; std::memcpy(&d, p + 8 * i, 8); out[i] = static_cast<float>(d); break; }
            case ElemType::BOOL: case ElemType::U8: out[i] = p[i]; break;
            case ElemType::I8: out[i] = static_cast<int8_t>(p[i]); break;
            case ElemType::I16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
            case ElemType::U16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
            case ElemType::I32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = static_cast<float>(v); break; }
            case ElemType::U32: { uint32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = static_cast<float>(v); break; }
            case ElemType::I64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = static_cast<float>(v); break; }
            case ElemType::U64: { uint64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = static_cast<float>(v); break; }
            default: fail("%s: cannot convert %s to float32", name.c_str(), elem_type_name(type));
        }
    }
    return out;
}

std::string CkptTensor::shape_str() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

int64_t check_strided_extent(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride, int64_t offset,
                             int64_t storage_elems, const std::string& what) {
    HG_CHECK(shape.size() == stride.size(), "%s: %zu sizes but %zu strides", what.c_str(), shape.size(), stride.size());
    HG_CHECK(offset >= 0, "%s: negative storage offset %lld", what.c_str(), (long long)offset);
    int64_t numel = 1, last = offset;
    for (size_t d = 0; d < shape.size(); ++d) {
        HG_CHECK(shape[d] >= 0, "%s: negative size %lld", what.c_str(), (long long)shape[d]);
        HG_CHECK(stride[d] >= 0, "%s: negative stride %lld", what.c_str(), (long long)stride[d]);
        HG_CHECK(!__builtin_mul_overflow(numel, shape[d], &numel), "%s: element count overflows", what.c_str());
    }
    if (numel == 0) {
        HG_CHECK(offset <= storage_elems, "%s: storage offset %lld beyond the storage (%lld elements)", what.c_str(),
                 (long long)offset, (long long)storage_elems);
        return 0;
    }
    for (size_t d = 0; d < shape.size(); ++d) {
        int64_t span = 0;
        HG_CHECK(!__builtin_mul_overflow(shape[d] - 1, stride[d], &span) && !__builtin_add_overflow(last, span, &last),
                 "%s: strided extent overflows", what.c_str());
    }
    HG_CHECK(last < storage_elems, "%s: elements up to index %lld lie outside the storage of %lld elements", what.c_str(),
             (long long)last, (long long)storage_elems);
    return numel;
}

}  // namespace hg
