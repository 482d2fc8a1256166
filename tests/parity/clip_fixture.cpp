#include "clip_fixture.h"

#include <cstring>
#include <fstream>
#include <stdexcept>

namespace hgtest {

const VisionFixture& VisionFixture::get() {
    static const VisionFixture f = [] {
        VisionFixture v;
        std::ifstream in(fixture("vision/manifest.json"));
        if (!in) throw std::runtime_error("cannot open tests/fixtures/vision/manifest.json (run gen_vision.py)");
        v.manifest_ = nlohmann::json::parse(in);
        const std::vector<uint8_t> bytes = read_file(fixture("vision/data.bin"));
        if (bytes.size() % 4) throw std::runtime_error("vision/data.bin: size not a multiple of 4");
        v.data_.resize(bytes.size() / 4);
        std::memcpy(v.data_.data(), bytes.data(), bytes.size());
        return v;
    }();
    return f;
}

std::vector<int64_t> VisionFixture::shape(const std::string& name) const {
    if (!has(name)) throw std::runtime_error("vision fixture has no array " + name);
    return manifest_["arrays"][name]["shape"].get<std::vector<int64_t>>();
}

std::span<const float> VisionFixture::array(const std::string& name) const {
    const std::vector<int64_t> s = shape(name);
    size_t n = 1;
    for (int64_t d : s) n *= static_cast<size_t>(d);
    const size_t off = manifest_["arrays"][name]["offset"].get<size_t>();
    if (off % 4 || off / 4 + n > data_.size()) throw std::runtime_error("vision fixture array out of range: " + name);
    return {data_.data() + off / 4, n};
}

void VisionFixture::add_to(hg::WeightMap& map, const std::string& name, const std::string& as, hg::DType type) const {
    map.add_converted(as, type, shape(name), array(name).data());
}

}  // namespace hgtest
