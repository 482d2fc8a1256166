// Where a model component finds its tensors and hyperparameters: a GGUF file in production
// (gguf_source), an in-memory WeightMap in tests and converters. Components bind zero-copy
// Tensor views by name through it and check shape and dtype at load time, so a bad file fails
// with a message that names the file, the tensor and what was expected — never at run time.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "formats/gguf.h"

namespace hg {

struct WeightSource {
    std::string origin;  // the file (or a description), for messages
    std::function<std::optional<Tensor>(std::string_view name)> tensor;
    std::function<std::vector<std::string>()> tensor_names;
    std::function<std::optional<int64_t>(std::string_view key)> get_int;
    std::function<std::optional<double>(std::string_view key)> get_float;
    std::function<std::optional<std::string>(std::string_view key)> get_string;
    std::function<std::optional<bool>(std::string_view key)> get_bool;
};

// A GGUF file as a source (the file must outlive the source and every tensor bound from it).
inline WeightSource gguf_source(const GGUFFile& f) {
    WeightSource s;
    s.origin = f.path().string();
    s.tensor = [&f](std::string_view n) { return f.try_tensor(n); };
    s.tensor_names = [&f] {
        std::vector<std::string> names;
        for (const auto& t : f.tensors()) names.push_back(t.name);
        return names;
    };
    s.get_int = [&f](std::string_view k) { return f.get_int(k); };
    s.get_float = [&f](std::string_view k) { return f.get_float(k); };
    s.get_string = [&f](std::string_view k) { return f.get_string(k); };
    s.get_bool = [&f](std::string_view k) { return f.get_bool(k); };
    return s;
}

// Training: a source whose tensors `override` returns (e.g. float32 views into the trainer's
// parameter store) are bound instead of `base`'s; nullopt = `base`'s own tensor. Metadata and
// the tensor list are `base`'s.
using TensorOverride = std::function<std::optional<Tensor>(std::string_view name)>;
inline WeightSource with_override(WeightSource base, TensorOverride override) {
    if (!override) return base;
    auto inner = base.tensor;
    base.tensor = [inner, override](std::string_view n) -> std::optional<Tensor> {
        if (auto t = override(n)) return t;
        return inner(n);
    };
    return base;
}

// An in-memory source. Tensors are views over memory the caller keeps alive; owned() keeps a
// buffer alive inside the map for tensors built on the fly.
class WeightMap {
public:
    void add(const std::string& name, const Tensor& t) { tensors_[name] = t; }
    // Copies `data` (row_bytes(type, shape.back()) * rows bytes) into storage the map owns.
    Tensor add_copy(const std::string& name, DType type, std::initializer_list<int64_t> shape, const void* data);
    // Converts float32 values to `type` (F32, F16, BF16 or a block type) into owned storage.
    Tensor add_converted(const std::string& name, DType type, std::initializer_list<int64_t> shape,
                         const float* values);
    Tensor add_converted(const std::string& name, DType type, const std::vector<int64_t>& shape, const float* values);
    void set_int(const std::string& key, int64_t v) { ints_[key] = v; }
    void set_float(const std::string& key, double v) { floats_[key] = v; }
    void set_string(const std::string& key, std::string v) { strings_[key] = std::move(v); }
    void set_bool(const std::string& key, bool v) { bools_[key] = v; }
    void erase(const std::string& name) { tensors_.erase(name); }

    // The source reads this map; the map must outlive it.
    WeightSource source(std::string origin) const;

private:
    std::map<std::string, Tensor, std::less<>> tensors_;
    std::map<std::string, int64_t, std::less<>> ints_;
    std::map<std::string, double, std::less<>> floats_;
    std::map<std::string, std::string, std::less<>> strings_;
    std::map<std::string, bool, std::less<>> bools_;
    std::vector<std::vector<uint8_t>> storage_;
};

// --- Binding helpers (throw hg::Error "<origin>: tensor <name>: ...") ---

// A weight matrix or conv kernel of exactly `shape`, in a type the matmul kernels take
// (F32 F16 BF16 Q4_0 Q8_0 Q4_K Q6_K), contiguous.
Tensor require_matrix(const WeightSource& src, const std::string& name, std::initializer_list<int64_t> shape);
// A small parameter (norm weight, bias, embedding table) of exactly `shape`, in any readable
// type, returned as a float32 copy (so kernels that take `const float*` can use it directly).
std::vector<float> require_f32(const WeightSource& src, const std::string& name, std::initializer_list<int64_t> shape);

int64_t require_int(const WeightSource& src, std::string_view key);
double require_float(const WeightSource& src, std::string_view key);
std::string require_string(const WeightSource& src, std::string_view key);

}  // namespace hg
