// Kernel benchmarks behind `healthgpt bench --kernels` (and bench/bench_kernels.cpp): matvec
// (M = 1, decode) and matmul (M = 512, prefill) for every weight type on Phi-3-mini shapes, next
// to this machine's measured roofs (streaming-read bandwidth, peak FP32 FMA rate).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"

// (measure_read_gbps_avx2 / measure_fma_gflops_avx2 in roofline_avx2.cpp take the same clock.)

namespace hg {

// Clock for rates: wall time, or process CPU time divided by the thread count (an estimate of
// the time on dedicated cores when other processes share them; workers of the pool only spin
// briefly, so idle waiting adds little CPU time).
enum class BenchClock { Wall, CpuPerThread };

// Roofs measured on this machine with `threads` threads.
struct MachineRoofs {
    double read_gbps = 0;      // streaming read of a buffer much larger than the L3 (AVX2 loads)
    double fma_gflops = 0;     // independent FP32 FMA chains (AVX2), all threads
    int threads = 0;
};
MachineRoofs measure_roofs(ThreadPool& pool, BenchClock clock = BenchClock::Wall);

struct MatmulBenchCase {
    DType type;
    int64_t M, N, K;
};

struct MatmulBenchResult {
    MatmulBenchCase c;
    double seconds = 0;        // best of the repetitions, one call, by the chosen clock
    double wall_seconds = 0;   // wall time of that call
    double weight_gbps = 0;    // weight bytes / time
    double gflops = 0;         // 2 M N K / time
    bool cold = false;         // weights streamed from DRAM (several copies cycled past the L3)
};

// The default case list: Phi-3-mini shapes (N x K) 3072x3072, 9216x3072, 16384x3072, 3072x8192
// for every supported weight type, M = 1 and M = 512.
std::vector<MatmulBenchCase> default_matmul_cases(const std::vector<DType>& types, const std::vector<int64_t>& Ms);

// Times a kernel table's matmul (table nullptr: the active one). min_seconds: keep repeating a
// case at least this long. For M = 1 the weights are cycled through enough copies (> 2 x L3) that
// every call reads them from memory, as decode does.
struct Kernels;
std::vector<MatmulBenchResult> run_matmul_bench(const std::vector<MatmulBenchCase>& cases, ThreadPool& pool,
                                                double min_seconds, BenchClock clock = BenchClock::Wall,
                                                const Kernels* table = nullptr);

// Markdown report: machine, roofs, one table row per result.
std::string format_kernel_bench(const MachineRoofs& roofs, const std::vector<MatmulBenchResult>& results,
                                const std::string& command, BenchClock clock = BenchClock::Wall);

// Side-by-side report of two or more kernel levels on the same cases (results[level][case], run
// interleaved case by case): time per level and the speed-up of the last level over the first.
std::string format_level_comparison(const MachineRoofs& roofs, const std::vector<const Kernels*>& levels,
                                    const std::vector<std::vector<MatmulBenchResult>>& results,
                                    const std::string& command, BenchClock clock = BenchClock::Wall);

// Random but valid weights of `type` (finite block scales), rows x cols, for benchmarks.
std::vector<uint8_t> random_weights(DType type, int64_t rows, int64_t cols, uint32_t seed);

}  // namespace hg
