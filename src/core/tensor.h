// A non-owning view of an n-dimensional array (up to 4 dims).
//
// Shapes are in PyTorch order: shape[0] is the outermost dimension and shape[n_dims-1]
// the contiguous one, so a Linear weight is [out, in] exactly as in the checkpoint.
// (GGUF files store dims innermost-first; formats/gguf.cpp reverses them.)
// For block-quantized types the last dimension must be a whole number of blocks and
// strides are in bytes per index of each dimension; the last dimension is always packed.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/dtype.h"

namespace hg {

struct Tensor {
    DType type = DType::F32;
    int n_dims = 0;
    std::array<int64_t, 4> shape{1, 1, 1, 1};
    std::array<size_t, 4> stride{0, 0, 0, 0};  // bytes; stride[n_dims-1] = element bytes (or 0 for quantized)
    void* data = nullptr;

    // A contiguous view over `data` with the given shape.
    static Tensor view(DType type, std::initializer_list<int64_t> shape, void* data);
    static Tensor view(DType type, const int64_t* shape, int n_dims, void* data);

    int64_t numel() const;
    int64_t rows() const;  // product of all dims but the last (1 for a 1-d tensor)
    int64_t cols() const { return n_dims ? shape[n_dims - 1] : 1; }
    size_t row_bytes() const;    // bytes of one packed row of cols() elements
    size_t nbytes() const;       // bytes spanned by a contiguous tensor
    bool is_contiguous() const;

    // Pointer to row r of the tensor seen as a matrix [rows(), cols()] (contiguous only).
    const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + r * row_bytes(); }
    template <typename T>
    T* ptr() const { return static_cast<T*>(data); }

    std::string shape_str() const;  // "[9216, 3072]"
};

}  // namespace hg
