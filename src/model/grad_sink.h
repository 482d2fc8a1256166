// Where the backward passes of the model components put weight gradients.
//
// The components' weights are Tensor views (into a mapped GGUF, or into the float32 buffers of
// the trainer's parameter store). A backward pass asks the sink for the gradient buffer of each
// weight by the weight's data pointer: nullptr means the weight is frozen and its gradient is not
// computed at all (only the gradient flowing through it, if an earlier op needs one). Gradient
// buffers are float32, the weight's shape, and accumulate (+=), as in core/ops_backward.h.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace hg {

class GradSink {
public:
    virtual ~GradSink() = default;
    // The gradient buffer of the weight whose values start at `weight_data`, or nullptr (frozen).
    virtual float* find(const void* weight_data) const = 0;
};

// One parameter of a component as its backward sees it: the GGUF tensor name it was bound from
// and a view of the memory the forward reads. Norm weights and biases that a component copied to
// float32 at load are F32 views of those copies. The trainer keys its gradient buffers by
// `value.data` and, after each optimiser step, makes sure this memory holds the new values (it is
// the parameter store's own buffer, or a copy the trainer refreshes).
struct ParamRef {
    std::string name;
    Tensor value;
};
using ParamRefs = std::vector<ParamRef>;

// A sink over an explicit map (tests, small tools): weight data pointer -> gradient buffer.
class MapGradSink final : public GradSink {
public:
    void add(const void* weight_data, float* grad) { map_[weight_data] = grad; }
    float* find(const void* weight_data) const override {
        auto it = map_.find(weight_data);
        return it == map_.end() ? nullptr : it->second;
    }

private:
    std::unordered_map<const void*, float*> map_;
};

}  // namespace hg
