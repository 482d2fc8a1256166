// The vision fixtures written by tests/reference/gen_vision.py: tests/fixtures/vision/manifest.json
// (configs, and the name, shape and byte offset of every array) and data.bin (float32 arrays).
// Shared by the clip, projector and hlora parity tests.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/weight_source.h"
#include "test_util.h"

namespace hgtest {

class VisionFixture {
public:
    static const VisionFixture& get();  // loaded once; fails the test (throws) if unreadable

    const nlohmann::json& manifest() const { return manifest_; }
    bool has(const std::string& name) const { return manifest_["arrays"].contains(name); }
    std::span<const float> array(const std::string& name) const;
    std::vector<int64_t> shape(const std::string& name) const;

    // Adds array `name` to `map` as tensor `as` in `type` (converted with round-to-nearest-even).
    void add_to(hg::WeightMap& map, const std::string& name, const std::string& as, hg::DType type) const;

private:
    nlohmann::json manifest_;
    std::vector<float> data_;
};

}  // namespace hgtest
