// Tensors stored in third-party checkpoint files (safetensors, torch.save): element types as
// those files name them, and a zero-copy reference into the memory-mapped file. Converters
// read these and write our GGUF files.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace hg {

enum class ElemType : uint8_t { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };

const char* elem_type_name(ElemType t);                         // safetensors' names: "F32", "BF16", "BOOL", ...
std::optional<ElemType> elem_type_from_name(std::string_view s); // exact safetensors name
size_t elem_size(ElemType t);
std::optional<DType> elem_to_dtype(ElemType t);                  // nullopt: no DType counterpart (BOOL, U8, ...)

// A tensor inside a mapped checkpoint file. `data` points at element [0, 0, ...] (storage start
// plus storage offset); strides are in elements, PyTorch order, never negative.
struct CkptTensor {
    std::string name;
    ElemType type = ElemType::F32;
    std::vector<int64_t> shape;   // PyTorch order; empty for a 0-d tensor
    std::vector<int64_t> stride;  // elements
    const uint8_t* data = nullptr;
    uint64_t nbytes = 0;          // numel * elem_size (the bytes a contiguous copy takes)
    std::string storage;          // torch: the storage key (tensors sharing storage share it); else empty
    int64_t storage_offset = 0;   // torch: offset of data into that storage, in elements

    int64_t numel() const;
    bool is_contiguous() const;   // row-major with no gaps (size-1 dims' strides ignored)

    // Zero-copy view (read-only memory). Throws hg::Error when the tensor is not contiguous,
    // has more than 4 dims, its type has no DType, or its data is not aligned to the element
    // size (legacy torch.save files). A 0-d tensor is viewed as shape [1].
    Tensor view() const;
    // The elements in row-major order, for any strides.
    std::vector<uint8_t> contiguous_bytes() const;
    // Values converted to float32 (F32, F16, BF16, F64, and integer/bool types), any strides.
    std::vector<float> to_f32() const;

    std::string shape_str() const;  // "[3, 4]"
};

// Checks that a strided tensor over a storage of `storage_elems` elements stays inside it:
// offset + sum((shape[d]-1) * stride[d]) < storage_elems (or the tensor is empty). Returns the
// element count. `what` names the tensor in the error.
int64_t check_strided_extent(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride, int64_t offset,
                             int64_t storage_elems, const std::string& what);

}  // namespace hg
