// libFuzzer target: the ZIP reader and the torch.save (zip) checkpoint reader on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "formats/torch_checkpoint.h"
#include "formats/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::span<const uint8_t> bytes(data, size);
    try {
        hg::ZipArchive z(bytes, "fuzz.zip");
        for (const auto& e : z.entries()) {
            try {
                z.verify_crc(e);
            } catch (const hg::Error&) {
            }
        }
    } catch (const hg::Error&) {
    }
    for (hg::TorchLoadMode m : {hg::TorchLoadMode::StateDict, hg::TorchLoadMode::Inspect}) {
        try {
            hg::TorchLoadOptions o;
            o.mode = m;
            o.max_objects = 1 << 16;
            auto c = hg::TorchCheckpoint::from_memory(bytes, "fuzz.pt", o);
            for (const auto& t : c->all_tensors()) (void)t.contiguous_bytes();
            (void)hg::py_repr(c->root());
        } catch (const hg::Error&) {
        }
    }
    return 0;
}
