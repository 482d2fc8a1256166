#include "train/param_store.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "core/quants.h"

namespace hg {

Tensor Param::view() const {
    return Tensor::view(DType::F32, shape.data(), static_cast<int>(shape.size()), const_cast<float*>(value.data()));
}

Tensor Param::grad_view() const {
    return Tensor::view(DType::F32, shape.data(), static_cast<int>(shape.size()), const_cast<float*>(grad.data()));
}

Param& ParamStore::add(std::string name, const std::vector<int64_t>& shape, std::span<const float> values, int group) {
    HG_CHECK(!name.empty(), "parameter store: a parameter needs a name");
    HG_CHECK(!by_name_.count(name), "parameter store: parameter %s added twice", name.c_str());
    HG_CHECK(shape.size() >= 1 && shape.size() <= 4, "parameter store: %s has %zu dims (1 to 4 supported)", name.c_str(),
             shape.size());
    HG_CHECK(group >= 0, "parameter store: %s has a negative group %d", name.c_str(), group);
    int64_t n = 1;
    for (int64_t d : shape) {
        HG_CHECK(d > 0, "parameter store: %s has a dimension %lld", name.c_str(), (long long)d);
        n *= d;
    }
    HG_CHECK(static_cast<int64_t>(values.size()) == n, "parameter store: %s has %zu values for shape of %lld elements",
             name.c_str(), values.size(), (long long)n);
    auto p = std::make_unique<Param>();
    p->name = std::move(name);
    p->shape = shape;
    p->value.assign(values.begin(), values.end());
    p->grad.assign(static_cast<size_t>(n), 0.0f);
    p->group = group;
    const size_t idx = params_.size();
    by_name_[p->name] = idx;
    by_data_[p->value.data()] = idx;
    params_.push_back(std::move(p));
    return *params_.back();
}

Param& ParamStore::add_tensor(std::string name, const Tensor& t, int group) {
    HG_CHECK(t.is_contiguous(), "parameter store: %s is not contiguous", name.c_str());
    std::vector<float> v(static_cast<size_t>(t.numel()));
    for (int64_t r = 0; r < t.rows(); ++r) dequantize_row(t.type, t.row(r), v.data() + r * t.cols(), t.cols());
    std::vector<int64_t> shape(t.shape.begin(), t.shape.begin() + t.n_dims);
    return add(std::move(name), shape, v, group);
}

size_t ParamStore::add_from_gguf(const GGUFFile& f,
                                 const std::function<std::optional<int>(const std::string&)>& group_of) {
    size_t n = 0;
    for (const GGUFTensorInfo& ti : f.tensors()) {
        const std::optional<int> g = group_of(ti.name);
        if (!g) continue;
        add_tensor(ti.name, f.tensor(ti), *g);
        ++n;
    }
    return n;
}

void ParamStore::add_to_gguf(GGUFWriter& w, DType type) const {
    HG_CHECK(type == DType::F32 || type == DType::F16 || type == DType::BF16,
             "parameter store: export type %s is not F32, F16 or BF16", dtype_name(type));
    for (const auto& p : params_) {
        if (type == DType::F32) {
            w.add_tensor(p->name, DType::F32, p->shape, p->value.data());
            continue;
        }
        std::vector<uint16_t> h(p->value.size());
        for (size_t i = 0; i < h.size(); ++i)
            h[i] = type == DType::F16 ? fp32_to_fp16(p->value[i]) : fp32_to_bf16(p->value[i]);
        w.add_tensor(p->name, type, p->shape, h.data());
    }
}

Param* ParamStore::find_param(std::string_view name) {
    auto it = by_name_.find(std::string(name));
    return it == by_name_.end() ? nullptr : params_[it->second].get();
}

const Param* ParamStore::find_param(std::string_view name) const {
    auto it = by_name_.find(std::string(name));
    return it == by_name_.end() ? nullptr : params_[it->second].get();
}

Param& ParamStore::get(std::string_view name) {
    Param* p = find_param(name);
    HG_CHECK(p, "parameter store: no parameter %.*s", (int)name.size(), name.data());
    return *p;
}

const Param& ParamStore::get(std::string_view name) const {
    const Param* p = find_param(name);
    HG_CHECK(p, "parameter store: no parameter %.*s", (int)name.size(), name.data());
    return *p;
}

int64_t ParamStore::total_numel() const {
    int64_t n = 0;
    for (const auto& p : params_) n += p->numel();
    return n;
}

int ParamStore::n_groups() const {
    int g = 0;
    for (const auto& p : params_) g = std::max(g, p->group + 1);
    return g;
}

float* ParamStore::grad_of(const void* data) const {
    auto it = by_data_.find(data);
    return it == by_data_.end() ? nullptr : params_[it->second]->grad.data();
}

ParamRefs ParamStore::refs() const {
    ParamRefs r;
    for (const auto& p : params_) r.push_back({p->name, p->view()});
    return r;
}

void ParamStore::add_alias(std::string_view name, float* copy) {
    auto it = by_name_.find(std::string(name));
    HG_CHECK(it != by_name_.end(), "parameter store: alias for unknown parameter %.*s", (int)name.size(), name.data());
    HG_CHECK(copy, "parameter store: null alias for %.*s", (int)name.size(), name.data());
    auto [pos, fresh] = by_data_.emplace(copy, it->second);
    HG_CHECK(fresh || pos->second == it->second, "parameter store: memory of %.*s is already %s",
             (int)name.size(), name.data(), params_[pos->second]->name.c_str());
    if (fresh) aliases_.emplace_back(copy, it->second);
}

void ParamStore::sync_aliases() const {
    for (const auto& [copy, idx] : aliases_) {
        const Param& p = *params_[idx];
        std::memcpy(copy, p.value.data(), p.value.size() * sizeof(float));
    }
}

void ParamStore::zero_grad() {
    for (auto& p : params_) std::fill(p->grad.begin(), p->grad.end(), 0.0f);
}

double ParamStore::grad_norm() const {
    double s = 0;
    for (const auto& p : params_)
        for (float g : p->grad) s += double(g) * double(g);
    return std::sqrt(s);
}

}  // namespace hg
