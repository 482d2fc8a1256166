#include "model/weight_source.h"

#include <cstring>

#include "core/error.h"
#include "core/quants.h"

namespace hg {

namespace {

std::string shape_string(std::initializer_list<int64_t> shape) {
    std::string s = "[";
    bool first = true;
    for (int64_t d : shape) {
        if (!first) s += ", ";
        s += std::to_string(d);
        first = false;
    }
    return s + "]";
}

Tensor find_with_shape(const WeightSource& src, const std::string& name, std::initializer_list<int64_t> shape) {
    HG_CHECK(src.tensor, "%s: weight source cannot look up tensors", src.origin.c_str());
    std::optional<Tensor> t = src.tensor(name);
    HG_CHECK(t.has_value(), "%s: tensor %s is missing", src.origin.c_str(), name.c_str());
    bool ok = t->n_dims == static_cast<int>(shape.size());
    int i = 0;
    for (int64_t d : shape) ok = ok && t->shape[i++] == d;
    HG_CHECK(ok, "%s: tensor %s has shape %s, expected %s", src.origin.c_str(), name.c_str(), t->shape_str().c_str(),
             shape_string(shape).c_str());
    HG_CHECK(t->data != nullptr || t->numel() == 0, "%s: tensor %s has no data", src.origin.c_str(), name.c_str());
    HG_CHECK(t->is_contiguous(), "%s: tensor %s is not contiguous", src.origin.c_str(), name.c_str());
    return *t;
}

bool matmul_type(DType t) {
    switch (t) {
        case DType::F32: case DType::F16: case DType::BF16: case DType::Q4_0: case DType::Q8_0: case DType::Q4_K:
        case DType::Q6_K:
            return true;
        default:
            return false;
    }
}

}  // namespace

Tensor WeightMap::add_copy(const std::string& name, DType type, std::initializer_list<int64_t> shape,
                           const void* data) {
    Tensor t = Tensor::view(type, shape, nullptr);
    storage_.emplace_back(t.nbytes());
    if (t.nbytes()) std::memcpy(storage_.back().data(), data, t.nbytes());
    t.data = storage_.back().data();
    tensors_[name] = t;
    return t;
}

Tensor WeightMap::add_converted(const std::string& name, DType type, const std::vector<int64_t>& shape,
                                const float* values) {
    Tensor t = Tensor::view(type, shape.data(), static_cast<int>(shape.size()), nullptr);
    storage_.emplace_back(t.nbytes());
    t.data = storage_.back().data();
    quantize_rows(type, values, t.data, t.rows(), t.cols());
    tensors_[name] = t;
    return t;
}

Tensor WeightMap::add_converted(const std::string& name, DType type, std::initializer_list<int64_t> shape,
                                const float* values) {
    return add_converted(name, type, std::vector<int64_t>(shape), values);
}

WeightSource WeightMap::source(std::string origin) const {
    WeightSource s;
    s.origin = std::move(origin);
    s.tensor = [this](std::string_view n) -> std::optional<Tensor> {
        auto it = tensors_.find(n);
        if (it == tensors_.end()) return std::nullopt;
        return it->second;
    };
    s.tensor_names = [this] {
        std::vector<std::string> names;
        for (const auto& [n, t] : tensors_) names.push_back(n);
        return names;
    };
    s.get_int = [this](std::string_view k) -> std::optional<int64_t> {
        auto it = ints_.find(k);
        if (it == ints_.end()) return std::nullopt;
        return it->second;
    };
    s.get_float = [this](std::string_view k) -> std::optional<double> {
        if (auto it = floats_.find(k); it != floats_.end()) return it->second;
        if (auto it = ints_.find(k); it != ints_.end()) return static_cast<double>(it->second);
        return std::nullopt;
    };
    s.get_string = [this](std::string_view k) -> std::optional<std::string> {
        auto it = strings_.find(k);
        if (it == strings_.end()) return std::nullopt;
        return it->second;
    };
    s.get_bool = [this](std::string_view k) -> std::optional<bool> {
        auto it = bools_.find(k);
        if (it == bools_.end()) return std::nullopt;
        return it->second;
    };
    return s;
}

Tensor require_matrix(const WeightSource& src, const std::string& name, std::initializer_list<int64_t> shape) {
    Tensor t = find_with_shape(src, name, shape);
    HG_CHECK(matmul_type(t.type), "%s: tensor %s has type %s, which the matmul kernels do not take",
             src.origin.c_str(), name.c_str(), dtype_name(t.type));
    return t;
}

std::vector<float> require_f32(const WeightSource& src, const std::string& name, std::initializer_list<int64_t> shape) {
    Tensor t = find_with_shape(src, name, shape);
    const DTypeInfo& info = dtype_info(t.type);
    HG_CHECK(t.type == DType::F32 || t.type == DType::F16 || t.type == DType::BF16 ||
                 (info.quantized && info.supported),
             "%s: tensor %s has type %s, expected a float type", src.origin.c_str(), name.c_str(), dtype_name(t.type));
    std::vector<float> out(static_cast<size_t>(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r) dequantize_row(t.type, t.row(r), out.data() + r * t.cols(), t.cols());
    return out;
}

int64_t require_int(const WeightSource& src, std::string_view key) {
    std::optional<int64_t> v = src.get_int ? src.get_int(key) : std::nullopt;
    HG_CHECK(v.has_value(), "%s: metadata key %.*s is missing", src.origin.c_str(), (int)key.size(), key.data());
    return *v;
}

double require_float(const WeightSource& src, std::string_view key) {
    std::optional<double> v = src.get_float ? src.get_float(key) : std::nullopt;
    HG_CHECK(v.has_value(), "%s: metadata key %.*s is missing", src.origin.c_str(), (int)key.size(), key.data());
    return *v;
}

std::string require_string(const WeightSource& src, std::string_view key) {
    std::optional<std::string> v = src.get_string ? src.get_string(key) : std::nullopt;
    HG_CHECK(v.has_value(), "%s: metadata key %.*s is missing", src.origin.c_str(), (int)key.size(), key.data());
    return *v;
}

}  // namespace hg
