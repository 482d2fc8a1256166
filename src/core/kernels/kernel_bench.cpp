// Kernel benchmarks (see kernel_bench.h).
#include "core/kernels/kernel_bench.h"

#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"
#include "core/ops.h"
#include "core/quants.h"

namespace hg {

double measure_read_gbps_avx2(ThreadPool& pool, BenchClock clock);   // roofline_avx2.cpp
double measure_fma_gflops_avx2(ThreadPool& pool, BenchClock clock);  // roofline_avx2.cpp

namespace {
double wall_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double cpu_now() {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
double load_average() {
    double l[1] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}
constexpr size_t kColdBytes = size_t(160) << 20;  // > 4x a 32 MiB L3: weights come from DRAM
}  // namespace

MachineRoofs measure_roofs(ThreadPool& pool, BenchClock clock) {
    MachineRoofs r;
    r.threads = pool.size();
    HG_CHECK(isa_supported() >= Isa::Avx2, "bench: the roof microbenchmarks need AVX2+FMA");
    r.read_gbps = measure_read_gbps_avx2(pool, clock);
    r.fma_gflops = measure_fma_gflops_avx2(pool, clock);
    return r;
}

std::vector<uint8_t> random_weights(DType type, int64_t rows, int64_t cols, uint32_t seed) {
    const size_t rb = row_bytes(type, cols);
    std::vector<uint8_t> w(rb * rows);
    std::mt19937 rng(seed);
    for (size_t i = 0; i + 4 <= w.size(); i += 4) {
        const uint32_t v = rng();
        std::memcpy(&w[i], &v, 4);
    }
    // make every scale / value finite and modest
    const uint16_t d = fp32_to_fp16(0.01f);
    const int64_t nb = cols / dtype_info(type).block_size;
    for (int64_t r = 0; r < rows; ++r) {
        uint8_t* p = w.data() + r * rb;
        switch (type) {
            case DType::F32:
                for (int64_t k = 0; k < cols; ++k) {
                    const float v = ((int)(p[4 * k] % 200) - 100) * 0.001f;
                    std::memcpy(p + 4 * k, &v, 4);
                }
                break;
            case DType::F16:
            case DType::BF16:
                for (int64_t k = 0; k < cols; ++k) {
                    const float v = ((int)(p[2 * k] % 200) - 100) * 0.001f;
                    const uint16_t h = type == DType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
                    std::memcpy(p + 2 * k, &h, 2);
                }
                break;
            case DType::Q4_0:
                for (int64_t b = 0; b < nb; ++b) reinterpret_cast<block_q4_0*>(p)[b].d = d;
                break;
            case DType::Q8_0:
                for (int64_t b = 0; b < nb; ++b) reinterpret_cast<block_q8_0*>(p)[b].d = d;
                break;
            case DType::Q4_K:
                for (int64_t b = 0; b < nb; ++b) reinterpret_cast<block_q4_K*>(p)[b].d = reinterpret_cast<block_q4_K*>(p)[b].dmin = d;
                break;
            case DType::Q6_K:
                for (int64_t b = 0; b < nb; ++b) reinterpret_cast<block_q6_K*>(p)[b].d = d;
                break;
            default: fail("random_weights: type %s not supported", dtype_name(type));
        }
    }
    return w;
}

std::vector<MatmulBenchCase> default_matmul_cases(const std::vector<DType>& types, const std::vector<int64_t>& Ms) {
    const int64_t shapes[][2] = {{3072, 3072}, {9216, 3072}, {16384, 3072}, {3072, 8192}};
    std::vector<MatmulBenchCase> out;
    for (int64_t M : Ms)
        for (DType t : types)
            for (auto& s : shapes) out.push_back({t, M, s[0], s[1]});
    return out;
}

std::vector<MatmulBenchResult> run_matmul_bench(const std::vector<MatmulBenchCase>& cases, ThreadPool& pool,
                                                double min_seconds, BenchClock clock, const Kernels* table) {
    const Kernels& K = table ? *table : kernels();
    std::vector<MatmulBenchResult> out;
    for (const MatmulBenchCase& c : cases) {
        const size_t wbytes = row_bytes(c.type, c.K) * c.N;
        // decode-like cases cycle through copies so that each call streams its weights from DRAM
        const bool cold = c.M <= 4;
        const int copies = cold ? (int)std::max<size_t>(1, (kColdBytes + wbytes - 1) / wbytes) : 1;
        std::vector<std::vector<uint8_t>> w;
        std::vector<Tensor> W;
        for (int i = 0; i < copies; ++i) {
            w.push_back(i == 0 ? random_weights(c.type, c.N, c.K, 1234) : w[0]);
        }
        for (auto& b : w) W.push_back(Tensor::view(c.type, {c.N, c.K}, b.data()));
        std::vector<float> x(c.M * c.K), y(c.M * c.N);
        std::mt19937 rng(5);
        std::normal_distribution<float> nd;
        for (auto& v : x) v = nd(rng);
        K.matmul(y.data(), x.data(), W[0], nullptr, c.M, pool);  // warm-up (scratch buffers grow here)
        double best = 1e30, best_wall = 0, total = 0;
        int calls = 0;
        while (total < min_seconds || calls < 3 * copies) {
            const double w0 = wall_now(), c0 = cpu_now();
            K.matmul(y.data(), x.data(), W[calls % copies], nullptr, c.M, pool);
            const double wall = wall_now() - w0, cpu = (cpu_now() - c0) / pool.size();
            const double dt = clock == BenchClock::Wall ? wall : cpu;
            if (dt < best) {
                best = dt;
                best_wall = wall;
            }
            total += wall;
            ++calls;
            if (calls > 100000) break;
        }
        MatmulBenchResult r;
        r.c = c;
        r.seconds = best;
        r.wall_seconds = best_wall;
        r.weight_gbps = wbytes / best * 1e-9;
        r.gflops = 2.0 * c.M * c.N * c.K / best * 1e-9;
        r.cold = cold && (size_t)copies * wbytes >= kColdBytes;
        out.push_back(r);
    }
    return out;
}

// The report's first lines: title, command, date, CPU, roofs, clock, load; `extra` goes after the threads line.
static std::string report_header(const char* title, const std::string& command, const MachineRoofs& roofs, BenchClock clock,
                          const std::string& extra) {
    const auto& f = cpu_features();
    std::time_t t = std::time(nullptr);
    char date[32];
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&t));
    char line[1024];
    std::snprintf(line, sizeof line,
                  "## %s\n\n- command: `%s`\n- date: %s\n- cpu: %s (%s), %d physical cores\n- cpu flags: %s\n"
                  "%s- measured roofs (%d threads): streaming read %.1f GB/s, FP32 FMA peak %.0f GFLOP/s\n"
                  "- clock: %s; load average at the end: %.2f (1 min)\n\n",
                  title, command.c_str(), date, f.brand.c_str(), f.vendor.c_str(), physical_cores(),
                  cpu_flags_string().c_str(), extra.c_str(), roofs.threads, roofs.read_gbps, roofs.fma_gflops,
                  clock == BenchClock::Wall ? "wall time"
                                            : "process CPU time / threads (machine shared: estimate for dedicated cores)",
                  load_average());
    return line;
}

std::string format_kernel_bench(const MachineRoofs& roofs, const std::vector<MatmulBenchResult>& results,
                                const std::string& command, BenchClock clock) {
    char line[512];
    std::snprintf(line, sizeof line, "- kernels: %s (isa %s), threads: %d\n", kernels().name, isa_name(isa_active()),
                  roofs.threads);
    std::string s = report_header("Kernel benchmark", command, roofs, clock, line);
    s += "| weights | M | N x K | time (ms) | wall (ms) | weight GB/s | % of read BW | GFLOP/s | % of FP32 FMA peak |\n";
    s += "|---|---:|---|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& r : results) {
        const bool mv = r.c.M <= 4;  // matvec rows: bandwidth columns; matmul rows: compute columns
        char bw[64] = "-", bwp[32] = "-", pk[32] = "-";
        if (mv) {
            std::snprintf(bw, sizeof bw, "%.1f%s", r.weight_gbps, r.cold ? "" : " (cached)");
            std::snprintf(bwp, sizeof bwp, "%.0f%%", 100.0 * r.weight_gbps / roofs.read_gbps);
        } else {
            std::snprintf(pk, sizeof pk, "%.0f%%", 100.0 * r.gflops / roofs.fma_gflops);
        }
        std::snprintf(line, sizeof line, "| %s | %lld | %lld x %lld | %.3f | %.3f | %s | %s | %.1f | %s |\n",
                      dtype_name(r.c.type), (long long)r.c.M, (long long)r.c.N, (long long)r.c.K, r.seconds * 1e3,
                      r.wall_seconds * 1e3, bw, bwp, r.gflops, pk);
        s += line;
    }
    s += "\nM = 1 rows stream their weights from DRAM (copies cycled past the L3): compare GB/s with the read "
         "bandwidth. M = 512 rows are compute-bound: compare GFLOP/s with the FP32 FMA peak (the integer "
         "types use int8 dot products, which can exceed it).\n";
    return s;
}

std::string format_level_comparison(const MachineRoofs& roofs, const std::vector<const Kernels*>& levels,
                                    const std::vector<std::vector<MatmulBenchResult>>& results,
                                    const std::string& command, BenchClock clock) {
    char line[512];
    std::string s = report_header("Kernel levels side by side", command, roofs, clock,
                                  "- cases run interleaved: every level on a case before the next case\n");
    s += "| weights | M | N x K |";
    for (const Kernels* k : levels) s += std::string(" ") + k->name + " ms | " + k->name + " GFLOP/s or GB/s |";
    s += std::string(" ") + levels.back()->name + " / " + levels.front()->name + " speed |\n|---|---:|---|";
    for (size_t i = 0; i < levels.size(); ++i) s += "---:|---:|";
    s += "---:|\n";
    for (size_t c = 0; c < results.front().size(); ++c) {
        const MatmulBenchResult& r0 = results.front()[c];
        std::snprintf(line, sizeof line, "| %s | %lld | %lld x %lld |", dtype_name(r0.c.type), (long long)r0.c.M,
                      (long long)r0.c.N, (long long)r0.c.K);
        s += line;
        for (size_t l = 0; l < levels.size(); ++l) {
            const MatmulBenchResult& r = results[l][c];
            if (r.c.M <= 4) std::snprintf(line, sizeof line, " %.3f | %.1f GB/s |", r.seconds * 1e3, r.weight_gbps);
            else std::snprintf(line, sizeof line, " %.3f | %.1f |", r.seconds * 1e3, r.gflops);
            s += line;
        }
        std::snprintf(line, sizeof line, " **%.2f×** |\n", r0.seconds / results.back()[c].seconds);
        s += line;
    }
    return s;
}

}  // namespace hg
