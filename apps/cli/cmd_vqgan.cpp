// healthgpt vqgan: the taming GumbelVQ image tokenizer (model/vqgan.h).
//   vqgan bench   time one full-size decode (and/or encode) with random weights; peak memory
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/thread_pool.h"
#include "model/vqgan.h"

namespace {

struct BenchOptions {
    std::string dtype = "f32";
    std::string part = "decoder";
    int runs = 1;
    int resolution = 256;
};

double peak_rss_mib() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // Linux: kilobytes
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_bench(const BenchOptions& o) {
    const auto type = hg::dtype_from_name(o.dtype);
    HG_CHECK(type && (*type == hg::DType::F32 || *type == hg::DType::F16 || *type == hg::DType::BF16),
             "--dtype must be f32, f16 or bf16, not '%s'", o.dtype.c_str());
    HG_CHECK(o.part == "decoder" || o.part == "encoder", "--part must be decoder or encoder, not '%s'",
             o.part.c_str());
    HG_CHECK(o.runs >= 1, "--runs must be at least 1");
    const bool enc = o.part == "encoder";

    hg::VqganConfig cfg;  // the released OpenImages f8 / 8192 GumbelVQ
    cfg.resolution = o.resolution;
    cfg.validate("--resolution");
    hg::TensorStore store;
    hg::vqgan_random_weights(cfg, *type, 42, store, enc);
    hg::Vqgan model = hg::Vqgan::load(store, "random weights");
    hg::ThreadPool& pool = hg::default_pool();

    std::printf("VQGAN %s, %s convolution weights (random), %s\n", o.part.c_str(), hg::dtype_name(*type),
                cfg.to_string().c_str());
    std::printf("kernels %s, %d threads\n", hg::kernels().name, pool.size());

    const int64_t R = cfg.resolution, n = cfg.n_tokens();
    std::vector<int32_t> idx(n);
    for (int64_t i = 0; i < n; ++i) idx[i] = static_cast<int32_t>((i * 2654435761u) % cfg.n_embed);
    std::vector<float> image(3 * R * R);
    for (int64_t i = 0; i < 3 * R * R; ++i) image[i] = static_cast<float>((i * 37) % 255) / 127.5f - 1.0f;

    std::vector<double> times;
    for (int r = 0; r < o.runs; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        if (enc) {
            model.encode(image.data(), idx, pool);
        } else {
            model.decode(idx, image.data(), pool);
        }
        times.push_back(seconds_since(t0));
    }
    const double best = *std::min_element(times.begin(), times.end());
    std::printf("\n| part | weights | weight MiB | scratch MiB | first run s | best of %d s | peak RSS MiB |\n", o.runs);
    std::printf("|---|---|---:|---:|---:|---:|---:|\n");
    std::printf("| %s | %s | %.1f | %.1f | %.2f | %.2f | %.1f |\n", o.part.c_str(), hg::dtype_name(*type),
                store.nbytes() / 1048576.0, model.scratch_bytes() / 1048576.0, times[0], best, peak_rss_mib());
    return 0;
}

}  // namespace

HG_COMMAND(vqgan, "VQGAN image tokenizer (taming GumbelVQ f8/8192): benchmark") {
    app.require_subcommand(1);
    auto o = std::make_shared<BenchOptions>();
    CLI::App* bench = app.add_subcommand(
        "bench", "Time one full-size (256x256, 1,024 codes) decode or encode with random weights; peak memory");
    bench->add_option("--dtype", o->dtype, "convolution weight type: f32, f16, bf16 (default f32)");
    bench->add_option("--part", o->part, "decoder (1,024 indices -> image) or encoder (image -> indices)");
    bench->add_option("--runs", o->runs, "number of timed runs (default 1)");
    bench->add_option("--resolution", o->resolution, "image side (default 256, the released model's)");
    bench->footer("Peak RSS is the whole process's (weights + activations + code). Threads: HEALTHGPT_THREADS.\n"
                  "Run one dtype per process so each peak is its own.\n");
    return [=] { return run_bench(*o); };
}
