#include "core/tensor.h"

#include "core/error.h"

namespace hg {

Tensor Tensor::view(DType type, std::initializer_list<int64_t> shape, void* data) {
    HG_CHECK(shape.size() >= 1 && shape.size() <= 4, "tensor must have 1 to 4 dims, got %zu", shape.size());
    int64_t s[4];
    int i = 0;
    for (int64_t v : shape) s[i++] = v;
    return view(type, s, static_cast<int>(shape.size()), data);
}

Tensor Tensor::view(DType type, const int64_t* shape, int n_dims, void* data) {
    HG_CHECK(n_dims >= 1 && n_dims <= 4, "tensor must have 1 to 4 dims, got %d", n_dims);
    Tensor t;
    t.type = type;
    t.n_dims = n_dims;
    for (int i = 0; i < n_dims; ++i) {
        HG_CHECK(shape[i] >= 0, "negative tensor dimension %lld", (long long)shape[i]);
        t.shape[i] = shape[i];
    }
    const DTypeInfo& info = dtype_info(type);
    size_t s = hg::row_bytes(type, t.shape[n_dims - 1]);
    t.stride[n_dims - 1] = info.quantized ? 0 : info.block_bytes;
    for (int i = n_dims - 2; i >= 0; --i) {
        t.stride[i] = s;
        s *= static_cast<size_t>(t.shape[i]);
    }
    t.data = data;
    return t;
}

int64_t Tensor::numel() const {
    int64_t n = 1;
    for (int i = 0; i < n_dims; ++i) n *= shape[i];
    return n;
}

int64_t Tensor::rows() const {
    int64_t n = 1;
    for (int i = 0; i + 1 < n_dims; ++i) n *= shape[i];
    return n;
}

size_t Tensor::row_bytes() const { return hg::row_bytes(type, cols()); }

size_t Tensor::nbytes() const { return static_cast<size_t>(rows()) * row_bytes(); }

bool Tensor::is_contiguous() const {
    size_t s = row_bytes();
    for (int i = n_dims - 2; i >= 0; --i) {
        if (stride[i] != s) return false;
        s *= static_cast<size_t>(shape[i]);
    }
    return true;
}

std::string Tensor::shape_str() const {
    std::string s = "[";
    for (int i = 0; i < n_dims; ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + "]";
}

}  // namespace hg
