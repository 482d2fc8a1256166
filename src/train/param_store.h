// The trainer's parameters: named float32 tensors with a gradient buffer each.
//
// Every parameter in the store is trainable; a weight that is not in the store is frozen. The
// model components read Tensor views (view()) whose data point into the store, and their backward
// passes find the gradient of a weight by the weight's data pointer (model/grad_sink.h): the store
// is a GradSink, find(data) returns the parameter's grad buffer or nullptr (frozen). Gradients
// accumulate (+=, core/ops_backward.h); zero_grad() clears them before each accumulation window.
//
// Values and gradients are allocated once, when a parameter is added, and never move: views and
// the grad_of() map stay valid for the store's life. Each parameter belongs to an optimizer
// group (optimizer.h: its own lr and weight decay), by index.
//
// Typical use (the training loop):
//   ParamStore ps;
//   ps.add_from_gguf(*plugin_file, [](const std::string& n) -> std::optional<int> {
//       return n.rfind("mm.", 0) == 0 ? 1 : 0; });       // group 1 = projector, 0 = H-LoRA
//   ... bind the components to ps.view(name) / ps.refs() ...
//   ps.zero_grad(); forward; backward(sink = ps); clip_grad_norm(ps, 1.0); opt.step();
//   ps.add_to_gguf(writer, DType::BF16);                  // export the trained tensors
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "formats/gguf.h"
#include "model/grad_sink.h"

namespace hg {

struct Param {
    std::string name;              // the GGUF tensor name ("blk.0.attn_qkv.hlora_a", "mm.0.weight")
    std::vector<int64_t> shape;    // PyTorch order, 1 to 4 dims
    std::vector<float> value;      // numel() floats, row-major
    std::vector<float> grad;       // numel() floats, accumulated by the backward passes
    int group = 0;                 // optimizer parameter group

    int64_t numel() const { return static_cast<int64_t>(value.size()); }
    Tensor view() const;           // F32 view of `value` (writable memory)
    Tensor grad_view() const;      // F32 view of `grad`
};

class ParamStore final : public GradSink {
public:
    ParamStore() = default;
    ParamStore(const ParamStore&) = delete;
    ParamStore& operator=(const ParamStore&) = delete;

    // Adds a parameter with these values (numel must match the shape); its grad starts at zero.
    // Throws on a duplicate name, a bad shape or a negative group.
    Param& add(std::string name, const std::vector<int64_t>& shape, std::span<const float> values, int group = 0);
    // Adds a copy of a tensor of any type that dequantizes (F32, F16, BF16, Q8_0, ...), as float32.
    Param& add_tensor(std::string name, const Tensor& t, int group = 0);
    // Adds every tensor of a GGUF file for which `group_of(name)` returns a group (nullopt: skipped,
    // i.e. frozen). Returns the number added.
    size_t add_from_gguf(const GGUFFile& f, const std::function<std::optional<int>(const std::string&)>& group_of);

    // Exports every parameter as a tensor of `type` (F32, F16 or BF16; rounded to nearest even).
    // The values are copied into the writer.
    void add_to_gguf(GGUFWriter& w, DType type = DType::F32) const;

    size_t size() const { return params_.size(); }
    Param& operator[](size_t i) { return *params_[i]; }
    const Param& operator[](size_t i) const { return *params_[i]; }
    Param* find_param(std::string_view name);
    const Param* find_param(std::string_view name) const;
    Param& get(std::string_view name);  // throws naming the parameter when absent
    const Param& get(std::string_view name) const;
    int64_t total_numel() const;
    int n_groups() const;                // 1 + the largest group index (0 when empty)

    // The grad buffer of the parameter whose values start at `data` (a view's data pointer, or a
    // registered alias), nullptr when no parameter starts there (frozen).
    float* grad_of(const void* data) const;
    float* find(const void* weight_data) const override { return grad_of(weight_data); }
    // Views of every parameter by name, for components that bind ParamRefs.
    ParamRefs refs() const;

    // A component that keeps its own float32 copy of a parameter (model/grad_sink.h: norm weights
    // copied at load) registers the copy: grad_of(copy) then finds the parameter's gradient, and
    // sync_aliases() (call it after each optimizer step) copies the new values into every copy.
    void add_alias(std::string_view name, float* copy);
    void sync_aliases() const;

    void zero_grad();
    // sqrt(sum over every parameter of sum grad^2), accumulated in double.
    double grad_norm() const;

private:
    std::vector<std::unique_ptr<Param>> params_;
    std::unordered_map<std::string, size_t> by_name_;
    std::unordered_map<const void*, size_t> by_data_;
    std::vector<std::pair<float*, size_t>> aliases_;
};

}  // namespace hg
