// Roof microbenchmarks for kernel_bench (AVX2): streaming read bandwidth and peak FP32 FMA rate.
#include <immintrin.h>

#include <algorithm>
#include <time.h>

#include <chrono>
#include <cstring>
#include <cstdint>
#include <vector>

#include "core/kernels/kernel_bench.h"

namespace hg {

namespace {
double now(BenchClock clock, int threads) {
    if (clock == BenchClock::CpuPerThread) {
        timespec t;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
        return (t.tv_sec + t.tv_nsec * 1e-9) / threads;
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

// Reads a 1 GiB buffer (32x the L3) split across the threads with 256-bit loads; best of 5.
double measure_read_gbps_avx2(ThreadPool& pool, BenchClock clock) {
    const size_t bytes = size_t(1) << 30;
    std::vector<uint8_t> mem(bytes + 64);
    __m256i* const base = reinterpret_cast<__m256i*>((reinterpret_cast<uintptr_t>(mem.data()) + 63) & ~uintptr_t(63));
    pool.parallel_for((int64_t)(bytes / 32), [&](int64_t b, int64_t e, int) {
        std::memset(base + b, 1, (e - b) * 32);  // touch every page first
    });
    double best = 1e30;
    volatile int sink = 0;
    for (int rep = 0; rep < 5; ++rep) {
        const double t0 = now(clock, pool.size());
        pool.parallel_for((int64_t)(bytes / 32), [&](int64_t b, int64_t e, int) {
            __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
            const __m256i* p = base;
            int64_t i = b;
            for (; i + 4 <= e; i += 4) {
                a0 = _mm256_xor_si256(a0, _mm256_load_si256(p + i));
                a1 = _mm256_xor_si256(a1, _mm256_load_si256(p + i + 1));
                a2 = _mm256_xor_si256(a2, _mm256_load_si256(p + i + 2));
                a3 = _mm256_xor_si256(a3, _mm256_load_si256(p + i + 3));
            }
            const __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
            sink = sink + _mm256_extract_epi32(a, 0);
        }, 1 << 12);
        best = std::min(best, now(clock, pool.size()) - t0);
    }
    return bytes / best * 1e-9;
}

// 12 independent FMA chains per thread (enough to cover the FMA latency x 2 pipes); best of 3.
double measure_fma_gflops_avx2(ThreadPool& pool, BenchClock clock) {
    const int64_t iters = 20'000'000;
    double best = 1e30;
    volatile float sink = 0;
    for (int rep = 0; rep < 3; ++rep) {
        const double t0 = now(clock, pool.size());
        pool.run([&](int, int) {
            __m256 acc[12];
            for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(0.001f * j);
            const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
            for (int64_t i = 0; i < iters; ++i) {
                // unrolled so the 12 chains live in registers (at -O2 GCC would keep the array in memory)
                _Pragma("GCC unroll 12") for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
            }
            __m256 s = acc[0];
            for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, acc[j]);
            sink = sink + _mm256_cvtss_f32(s);
        });
        best = std::min(best, now(clock, pool.size()) - t0);
    }
    return (double)iters * 12 * 8 * 2 * pool.size() / best * 1e-9;
}

}  // namespace hg
