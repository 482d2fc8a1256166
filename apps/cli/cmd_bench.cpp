// healthgpt bench: performance measurements that print markdown tables.
//   --kernels   matvec (M=1) and matmul (M=512) per weight type on Phi-3-mini shapes, next to the
//               machine's measured read bandwidth and FP32 FMA peak (core/kernels/kernel_bench.h).
// Other modes (e.g. --model FILE for pp512/tg128) are added as further flags below, each a thin
// call into the library, in the `modes` section of the runner.
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "core/error.h"
#include "core/kernels/kernel_bench.h"
#include "core/ops.h"

namespace {

struct BenchOptions {
    bool kernels = false;
    int threads = 0;
    std::string types = "f32,f16,bf16,q8_0,q4_0,q4_k,q6_k";
    std::string m_values = "1,512";
    double min_seconds = 0.5;
    bool cpu_time = false;
};

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

int run_kernels(const BenchOptions& o, const std::string& command) {
    std::vector<hg::DType> types;
    for (const auto& n : split(o.types)) {
        auto t = hg::dtype_from_name(n);
        const bool ok = t && (*t == hg::DType::F32 || *t == hg::DType::F16 || *t == hg::DType::BF16 ||
                              *t == hg::DType::Q8_0 || *t == hg::DType::Q4_0 || *t == hg::DType::Q4_K ||
                              *t == hg::DType::Q6_K);
        HG_CHECK(ok, "bench: '%s' is not a matmul weight type (f32 f16 bf16 q8_0 q4_0 q4_k q6_k)", n.c_str());
        types.push_back(*t);
    }
    std::vector<int64_t> Ms;
    for (const auto& m : split(o.m_values)) {
        const long long v = std::stoll(m);
        HG_CHECK(v >= 1 && v <= 4096, "bench: M=%lld out of range 1..4096", v);
        Ms.push_back(v);
    }
    hg::ThreadPool pool(o.threads);
    std::fprintf(stderr, "measuring roofs (%d threads)...\n", pool.size());
    const auto clock = o.cpu_time ? hg::BenchClock::CpuPerThread : hg::BenchClock::Wall;
    const hg::MachineRoofs roofs = hg::measure_roofs(pool, clock);
    std::fprintf(stderr, "timing %zu matmul cases...\n", types.size() * Ms.size() * 4);
    const auto results = hg::run_matmul_bench(hg::default_matmul_cases(types, Ms), pool, o.min_seconds, clock);
    std::fputs(hg::format_kernel_bench(roofs, results, command, clock).c_str(), stdout);
    return 0;
}

}  // namespace

HG_COMMAND(bench, "Benchmarks that print markdown tables (--kernels: matmul kernels vs machine roofs)") {
    auto o = std::make_shared<BenchOptions>();
    app.add_flag("--kernels", o->kernels, "matvec (M=1) and matmul (M=512) per weight type, Phi-3-mini shapes");
    app.add_option("-t,--threads", o->threads, "threads (default: one per physical core, HEALTHGPT_THREADS)");
    app.add_option("--types", o->types, "comma-separated weight types")->capture_default_str();
    app.add_option("--m", o->m_values, "comma-separated activation row counts M")->capture_default_str();
    app.add_option("--min-time", o->min_seconds, "seconds to repeat each case (best time reported)")->capture_default_str();
    app.add_flag("--cpu-time", o->cpu_time,
                 "rates from process CPU time / threads instead of wall time (for a machine shared with other work)");
    return [o] {
        std::string command = "healthgpt bench --kernels";
        if (o->threads) command += " -t " + std::to_string(o->threads);
        if (o->types != BenchOptions().types) command += " --types " + o->types;
        if (o->m_values != BenchOptions().m_values) command += " --m " + o->m_values;
        if (o->cpu_time) command += " --cpu-time";
        // modes: each flag selects one benchmark family
        if (o->kernels) return run_kernels(*o, command);
        std::fprintf(stderr, "error: choose what to benchmark: --kernels\n");
        return 2;
    };
}
