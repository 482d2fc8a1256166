// Chooses the kernel table for this CPU.
#include "core/ops.h"

namespace hg {

// The AVX2 level is always built on x86-64 (ops_avx2.cpp defines its table). It is referenced
// strongly: a weak default here would satisfy the linker, which would then never pull the AVX2
// objects out of the static library.
const Kernels* kernels_avx2_table();
// The AVX-512 level (matmul_avx512.cpp): the AVX2 table with the kernels it improves replaced.
const Kernels* kernels_avx512_table();

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
