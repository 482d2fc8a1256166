#include "core/cpu_features.h"

#include <cpuid.h>
#include <sched.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

namespace hg {

namespace {

uint64_t xgetbv0() {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
    CpuFeatures f;
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
    const unsigned max_leaf = a;
    char vendor[13] = {};
    std::memcpy(vendor + 0, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    f.vendor = vendor;

    __get_cpuid(1, &a, &b, &c, &d);
    f.sse42 = c & bit_SSE4_2;
    const bool osxsave = c & bit_OSXSAVE;
    const bool cpu_avx = c & bit_AVX;
    f.fma = c & bit_FMA;
    f.f16c = c & bit_F16C;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    const bool os_ymm = (xcr0 & 0x6) == 0x6;     // SSE + AVX state
    const bool os_zmm = (xcr0 & 0xe6) == 0xe6;   // + opmask, ZMM_Hi256, Hi16_ZMM
    f.avx = cpu_avx && os_ymm;
    f.fma = f.fma && f.avx;
    f.f16c = f.f16c && f.avx;

    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f.avx2 = f.avx && (b & bit_AVX2);
        f.bmi2 = b & bit_BMI2;
        f.avx512f = os_zmm && (b & bit_AVX512F);
        f.avx512dq = f.avx512f && (b & bit_AVX512DQ);
        f.avx512bw = f.avx512f && (b & bit_AVX512BW);
        f.avx512vl = f.avx512f && (b & bit_AVX512VL);
        f.avx512_vnni = f.avx512f && (c & bit_AVX512VNNI);
        f.avx512_fp16 = f.avx512f && (d & (1u << 23));
        f.amx_bf16 = d & (1u << 22);
        f.amx_tile = d & (1u << 24);
        f.amx_int8 = d & (1u << 25);
        __cpuid_count(7, 1, a, b, c, d);
        f.avx512_bf16 = f.avx512f && (a & bit_AVX512BF16);
        f.avx_vnni = f.avx && (a & (1u << 4));
    }
    __get_cpuid(0x80000000, &a, &b, &c, &d);
    if (a >= 0x80000004) {
        unsigned regs[12];
        for (unsigned i = 0; i < 3; ++i) __get_cpuid(0x80000002 + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
        char brand[49] = {};
        std::memcpy(brand, regs, 48);
        f.brand = brand;
        while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
    }
    return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

Isa isa_supported() {
    const CpuFeatures& f = cpu_features();
    // BMI2 too: both levels are compiled with -mbmi2 (shlx/bzhi appear in them), and a VM may mask it.
    if (f.avx2 && f.fma && f.f16c && f.bmi2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni)
        return Isa::Avx512;
    if (f.avx2 && f.fma && f.f16c && f.bmi2) return Isa::Avx2;
    return Isa::Scalar;
}

Isa isa_active() {
    Isa best = isa_supported();
    if (const char* env = std::getenv("HEALTHGPT_ISA")) {
        std::string s = env;
        Isa want = best;
        if (s == "scalar") want = Isa::Scalar;
        else if (s == "avx2") want = Isa::Avx2;
        else if (s == "avx512") want = Isa::Avx512;
        if (static_cast<int>(want) < static_cast<int>(best)) best = want;
    }
    return best;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::Scalar: return "scalar";
        case Isa::Avx2: return "avx2";
        case Isa::Avx512: return "avx512";
    }
    return "?";
}

std::string cpu_flags_string() {
    const CpuFeatures& f = cpu_features();
    std::string s;
    auto add = [&](bool on, const char* n) {
        if (on) {
            if (!s.empty()) s += ' ';
            s += n;
        }
    };
    add(f.avx, "AVX");
    add(f.avx2, "AVX2");
    add(f.fma, "FMA");
    add(f.f16c, "F16C");
    add(f.avx512f, "AVX512F");
    add(f.avx512bw, "AVX512BW");
    add(f.avx512vl, "AVX512VL");
    add(f.avx512_vnni, "AVX512_VNNI");
    add(f.avx512_bf16, "AVX512_BF16");
    add(f.avx_vnni, "AVX_VNNI");
    add(f.avx512_fp16, "AVX512_FP16");
    add(f.amx_tile, "AMX_TILE");
    add(f.amx_bf16, "AMX_BF16");
    add(f.amx_int8, "AMX_INT8");
    return s;
}

int physical_cores() {
    static const int n = [] {
        cpu_set_t set;
        CPU_ZERO(&set);
        int allowed = 0;
        if (sched_getaffinity(0, sizeof(set), &set) == 0) allowed = CPU_COUNT(&set);
        if (allowed <= 0) allowed = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        // Count distinct (package, core) pairs among the CPUs we may use.
        std::set<std::pair<int, int>> cores;
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (!CPU_ISSET(cpu, &set)) continue;
            const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
            std::ifstream pk(base + "physical_package_id"), co(base + "core_id");
            int p = -1, c = -1;
            if (!(pk >> p) || !(co >> c)) return allowed;
            cores.insert({p, c});
        }
        return cores.empty() ? allowed : static_cast<int>(cores.size());
    }();
    return n;
}

}  // namespace hg
