// libFuzzer target: the restricted unpickler (both policies) and the legacy torch.save reader
// (a sequence of pickles followed by raw storages) on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "formats/pickle.h"
#include "formats/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::span<const uint8_t> bytes(data, size);
    for (hg::PicklePolicy p : {hg::PicklePolicy::Strict, hg::PicklePolicy::Lenient}) {
        hg::PyArena a;
        a.name = "fuzz.pkl";
        a.max_objects = 1 << 16;
        try {
            const auto r = hg::unpickle(bytes, a, p);
            (void)hg::py_repr(r.root, 6, 16);
        } catch (const hg::Error&) {
        }
    }
    try {
        hg::TorchLoadOptions o;
        o.mode = hg::TorchLoadMode::Lightning;
        o.max_objects = 1 << 16;
        auto c = hg::TorchCheckpoint::from_memory(bytes, "fuzz.pt", o);
        for (const auto& t : c->all_tensors()) (void)t.contiguous_bytes();
    } catch (const hg::Error&) {
    }
    return 0;
}
