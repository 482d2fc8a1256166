// libFuzzer target: the safetensors reader on arbitrary bytes (header, offsets, tensor data).
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto f = hg::SafetensorsFile::from_memory(std::span<const uint8_t>(data, size), "fuzz.safetensors");
        for (const auto& t : f->tensors()) {
            (void)t.contiguous_bytes();
            if (t.numel() < 4096) (void)t.to_f32();
            try {
                (void)t.view();
            } catch (const hg::Error&) {
            }
        }
    } catch (const hg::Error&) {
    }
    return 0;
}
