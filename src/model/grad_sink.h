// Where the backward passes of the model components put weight gradients.
//
// The components' weights are Tensor views (into a mapped GGUF, or into the float32 buffers of
// the trainer's parameter store). A backward pass asks the sink for the gradient buffer of each
// weight by the weight's data pointer: nullptr means the weight is frozen and its gradient is not
// computed at all (only the gradient flowing through it, if an earlier op needs one). Gradient
// buffers are float32, the weight's shape, and accumulate (+=), as in core/ops_backward.h.
#pragma once
#include <unordered_map>

namespace hg {

class GradSink {
public:
    virtual ~GradSink() = default;
    // The gradient buffer of the weight whose values start at `weight_data`, or nullptr (frozen).
    virtual float* find(const void* weight_data) const = 0;
};

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
