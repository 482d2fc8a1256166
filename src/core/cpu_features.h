// What the CPU can do, read once with CPUID (and XGETBV for OS support of the wide registers).
// Kernels are chosen from this at run time; HEALTHGPT_ISA=scalar|avx2|avx512 caps the choice
// (for tests and for comparing paths).
#pragma once
#include <string>

namespace hg {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
    bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
    bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
    bool avx512_fp16 = false;                             // reported only: no kernel uses it yet
    bool amx_tile = false, amx_bf16 = false, amx_int8 = false;  // CPU has them (OS permission not asked)
    std::string vendor, brand;
};

const CpuFeatures& cpu_features();

// Best ISA level this CPU supports (AVX2 level = AVX2+FMA+F16C; AVX-512 level = F/BW/VL/DQ+VNNI).
Isa isa_supported();
// isa_supported() capped by HEALTHGPT_ISA if set (an unsupported request is capped, not honoured).
Isa isa_active();
const char* isa_name(Isa isa);
// "AVX2 FMA F16C AVX512F ..." for reports.
std::string cpu_flags_string();

// Number of physical cores this process may run on (SMT siblings counted once).
int physical_cores();

}  // namespace hg
