// Chooses the kernel table for this CPU.
#include "core/ops.h"

namespace hg {

// The ISA-specific translation units define these (strong symbols); a level that is not
// built falls back to these weak definitions.
__attribute__((weak)) const Kernels* kernels_avx2_table() { return nullptr; }
__attribute__((weak)) const Kernels* kernels_avx512_table() { return nullptr; }

const Kernels* kernels_for(Isa isa) {
    if (static_cast<int>(isa) > static_cast<int>(isa_supported())) return nullptr;
    switch (isa) {
        case Isa::Scalar: return &kernels_ref();
        case Isa::Avx2: return kernels_avx2_table();
        case Isa::Avx512: return kernels_avx512_table();
    }
    return nullptr;
}

const Kernels& kernels() {
    static const Kernels* k = [] {
        for (int l = static_cast<int>(isa_active()); l > 0; --l)
            if (const Kernels* t = kernels_for(static_cast<Isa>(l))) return t;
        return &kernels_ref();
    }();
    return *k;
}

}  // namespace hg
