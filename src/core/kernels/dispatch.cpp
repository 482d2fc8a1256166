// Chooses the kernel table for this CPU.
#include "core/ops.h"

namespace hg {

// The AVX2 level is always built on x86-64 (ops_avx2.cpp defines its table). It is referenced
// strongly: a weak default here would satisfy the linker, which would then never pull the AVX2
// objects out of the static library.
const Kernels* kernels_avx2_table();
namespace avx512 {  // compiled with -mavx512*: called only where isa_supported() says the CPU has it
void matmul(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool);  // matmul_avx512.cpp
void conv2d(float* out, const float* in, int64_t Cin, int64_t H, int64_t W, const Tensor& weight, const float* bias,
            int stride, int pad_t, int pad_l, int pad_b, int pad_r, ThreadPool& pool);  // conv2d_avx512.cpp
}  // namespace avx512

// The AVX-512 level: the AVX2 table with the kernels it improves replaced. Built here, in a file
// compiled for the baseline, so that making the table (a struct copy the compiler may vectorise)
// is never AVX-512 code: only the functions it points to are.
const Kernels* kernels_avx512_table() {
    static const Kernels table = [] {
        Kernels k = *kernels_avx2_table();
        k.name = "avx512";
        k.choice =
            "matmul: quantized GEMM (Q4_0 Q8_0 Q4_K Q6_K, M>12) on AVX512_VNNI vpdpbusd/vpdpwssd, 32-row panels; "
            "Q4_K/Q6_K GEMV (M<=12) with 512-bit maddubs + vpdpwssd; conv2d with 12 x 32 register tiles; "
            "Q4_0/Q8_0 GEMV, float weights, attention, norms, rope, activations: the AVX2 kernels";
        k.matmul = avx512::matmul;
        k.conv2d = avx512::conv2d;
        return k;
    }();
    return &table;
}

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
