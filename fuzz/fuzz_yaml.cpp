// libFuzzer target: the YAML subset reader (model.yaml of taming VQGAN checkpoints) on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "formats/yaml.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const hg::YamlNode y = hg::parse_yaml(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
        // walk what a converter reads
        if (const hg::YamlNode* n = y.at_path("model.params.ddconfig.ch_mult"))
            for (const auto& x : n->seq) (void)x.as_int();
        if (const hg::YamlNode* n = y.at_path("model.params.kl_weight")) (void)n->as_float();
    } catch (const hg::Error&) {
    }
    return 0;
}
