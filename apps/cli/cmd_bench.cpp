// healthgpt bench: performance measurements that print markdown tables (or JSON).
//   --kernels         matvec (M=1) and matmul (M=512) per weight type on Phi-3-mini shapes, next to
//                     the machine's measured read bandwidth and FP32 FMA peak (core/kernels/kernel_bench.h).
//   -m FILE           llama-bench style model tests: pp512, tg128, ttft-image (runtime/bench.h);
//                     img and vqgan need no model file (random weights of the real shapes).
//   --write-model F   writes a random-weight Phi-3-shaped GGUF that llama.cpp also loads
//                     (scripts/bench-vs-llamacpp.sh compares the two engines on it).
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "command.h"
#include "core/thread_pool.h"
#include "train/bench_train.h"
#include "core/kernels/kernel_bench.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/kernels/kernel_bench.h"
#include "core/ops.h"
#include "formats/gguf.h"
#include "model/decoder.h"
#include "runtime/bench.h"

namespace {

struct BenchOptions {
    // --kernels
    bool kernels = false;
    std::string types = "f32,f16,bf16,q8_0,q4_0,q4_k,q6_k";
    std::string m_values = "1,512";
    std::string isa_levels;  // --isa avx2,avx512: those levels side by side
    double min_seconds = 0.5;
    // model tests
    std::string model;
    int64_t n_prompt = 512, n_gen = 128, n_ctx = 0;
    int reps = 5;
    std::string tests;
    std::string output = "md";
    std::string kv_type = "f16";
    std::string img_type = "f16";
    bool roof = false;
    // --write-model
    std::string write_model, shape = "phi3-mini", wtype = "q4_k", vocab;
    // --train
    bool train = false;
    std::string train_manifest;  // --train-manifest: a side-by-side run (scripts/bench-train-vs-torch.py)
    int64_t rank = 64;
    // common
    int threads = 0;
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
    const auto cases = hg::default_matmul_cases(types, Ms);
    if (!o.isa_levels.empty()) {
        std::vector<const hg::Kernels*> levels;
        for (const auto& n : split(o.isa_levels)) {
            const hg::Isa isa = n == "scalar" ? hg::Isa::Scalar : n == "avx2" ? hg::Isa::Avx2 : n == "avx512" ? hg::Isa::Avx512 : hg::Isa(-1);
            HG_CHECK(isa != hg::Isa(-1), "bench: --isa: '%s' is not a level (scalar, avx2, avx512)", n.c_str());
            const hg::Kernels* k = hg::kernels_for(isa);
            HG_CHECK(k, "bench: --isa: level %s does not run on this CPU (%s)", n.c_str(), hg::cpu_flags_string().c_str());
            levels.push_back(k);
        }
        HG_CHECK(levels.size() >= 2, "bench: --isa needs two or more levels, e.g. --isa avx2,avx512");
        std::fprintf(stderr, "timing %zu matmul cases x %zu levels (interleaved)...\n", cases.size(), levels.size());
        std::vector<std::vector<hg::MatmulBenchResult>> results(levels.size());
        for (const auto& c : cases)
            for (size_t l = 0; l < levels.size(); ++l)
                results[l].push_back(hg::run_matmul_bench({c}, pool, o.min_seconds, clock, levels[l]).front());
        std::fputs(hg::format_level_comparison(roofs, levels, results, command, clock).c_str(), stdout);
        return 0;
    }
    std::fprintf(stderr, "timing %zu matmul cases...\n", cases.size());
    const auto results = hg::run_matmul_bench(cases, pool, o.min_seconds, clock);
    std::fputs(hg::format_kernel_bench(roofs, results, command, clock).c_str(), stdout);
    return 0;
}

int run_write_model(const BenchOptions& o) {
    const auto type = hg::dtype_from_name(o.wtype);
    HG_CHECK(type && (*type == hg::DType::F16 || *type == hg::DType::Q8_0 || *type == hg::DType::Q4_K),
             "bench --write-model: --type must be f16, q8_0 or q4_k, not '%s'", o.wtype.c_str());
    std::string vocab = o.vocab;
    if (vocab.empty()) {
        const char* shared = std::getenv("HEALTHGPT_SHARED_DATA");
        vocab = std::string(shared ? shared : "../shared/data") + "/tokenizers/phi3/ggml-vocab-phi-3.gguf";
    }
    hg::ThreadPool pool(o.threads);
    const hg::BenchModelShape shape = hg::bench_model_shape(o.shape);
    std::fprintf(stderr, "writing %s (%s, %s, vocabulary from %s)...\n", o.write_model.c_str(), o.shape.c_str(),
                 hg::dtype_name(*type), vocab.c_str());
    hg::write_bench_model(o.write_model, shape, *type, vocab, 42, pool);
    return 0;
}

// Weight type summary, sizes and parameter count of a model file.
void describe_model(const std::string& path, hg::BenchEnv& env) {
    auto f = hg::GGUFFile::open(path);
    std::map<std::string, uint64_t> bytes_by_type;
    for (const auto& t : f->tensors()) {
        env.model_bytes += t.nbytes;
        env.n_params += t.numel();
        if (t.name != "token_embd.weight") env.weight_bytes_per_token += t.nbytes;
        if (t.n_dims == 2) bytes_by_type[hg::dtype_name(t.type)] += t.nbytes;
    }
    if (bytes_by_type.size() == 1) {
        env.model_type = bytes_by_type.begin()->first;
    } else {
        env.model_type = "mixed:";
        for (const auto& [name, b] : bytes_by_type) env.model_type += " " + name + " " + std::to_string(b >> 20) + " MiB";
    }
}

int run_models(const BenchOptions& o, const std::string& command) {
    const auto kv = hg::dtype_from_name(o.kv_type);
    HG_CHECK(kv && (*kv == hg::DType::F16 || *kv == hg::DType::F32), "bench: --kv-type must be f16 or f32");
    const auto img_type = hg::dtype_from_name(o.img_type);
    HG_CHECK(img_type && (*img_type == hg::DType::F16 || *img_type == hg::DType::F32 || *img_type == hg::DType::BF16 ||
                          *img_type == hg::DType::Q8_0),
             "bench: --img-type must be f16, f32, bf16 or q8_0");
    HG_CHECK(o.output == "md" || o.output == "json", "bench: -o must be md or json, not '%s'", o.output.c_str());
    HG_CHECK(o.reps >= 1, "bench: -r must be at least 1");
    HG_CHECK(o.n_prompt >= 1 && o.n_gen >= 1, "bench: -p and -n must be at least 1");

    std::vector<std::string> tests = split(o.tests.empty() ? (o.model.empty() ? "img,vqgan" : "pp,tg") : o.tests);
    hg::DecoderBenchOptions dopt;
    dopt.n_prompt = o.n_prompt;
    dopt.n_gen = o.n_gen;
    dopt.reps = o.reps;
    dopt.n_ctx = o.n_ctx;
    dopt.kv_type = *kv;

    hg::ThreadPool pool(o.threads);
    hg::BenchEnv env;
    env.command = command;
    env.threads = pool.size();
    env.kernels = hg::kernels().name;
    env.cpu = hg::cpu_features().brand;
    env.cpu_flags = hg::cpu_flags_string();
    env.cpu_clock = o.cpu_time;
    env.kv_type = hg::dtype_name(*kv);
    env.load_start = hg::load_average_1min();

    std::shared_ptr<const hg::Decoder> model;
    for (const auto& t : tests) {
        const bool needs_model = t.rfind("pp", 0) == 0 || t.rfind("tg", 0) == 0 || t == "ttft-image";
        HG_CHECK(needs_model || t == "img" || t == "vqgan",
                 "bench: unknown test '%s' (pp, ppN, tg, tgN, ttft-image, img, vqgan)", t.c_str());
        if (needs_model && !model) {
            HG_CHECK(!o.model.empty(), "bench: test '%s' needs a model file (-m FILE)", t.c_str());
            model = hg::Decoder::load(o.model);
            env.model = o.model;
            env.shape = model->hparams().describe();
            describe_model(o.model, env);
        }
    }
    if (o.roof) {
        const auto clock = o.cpu_time ? hg::BenchClock::CpuPerThread : hg::BenchClock::Wall;
        env.read_gbps = hg::measure_roofs(pool, clock).read_gbps;
    }

    std::vector<hg::BenchTest> results;
    for (const auto& t : tests) {
        std::fprintf(stderr, "bench: %s...\n", t.c_str());
        hg::DecoderBenchOptions d = dopt;
        if (t.rfind("pp", 0) == 0) {
            if (t.size() > 2) d.n_prompt = std::stoll(t.substr(2));
            d.n_ctx = std::max(d.n_ctx, d.n_prompt);
            env.n_ctx = std::max(env.n_ctx, d.n_ctx);
            results.push_back(hg::bench_prompt(*model, d, pool));
        } else if (t.rfind("tg", 0) == 0) {
            if (t.size() > 2) d.n_gen = std::stoll(t.substr(2));
            d.n_ctx = std::max(d.n_ctx, d.n_gen);
            env.n_ctx = std::max(env.n_ctx, d.n_ctx);
            results.push_back(hg::bench_generate(*model, d, pool));
        } else if (t == "ttft-image") {
            for (auto& r : hg::bench_ttft_image(model, d, pool)) results.push_back(std::move(r));
        } else if (t == "img") {
            results.push_back(hg::bench_vision(o.reps, *img_type, pool));
        } else if (t == "vqgan") {
            HG_CHECK(*img_type != hg::DType::Q8_0, "bench: the VQGAN test takes float weights (--img-type f16, f32 or bf16)");
            results.push_back(hg::bench_vqgan(o.reps, *img_type, pool));
        }
    }
    env.load_end = hg::load_average_1min();
    env.peak_rss_mib = hg::peak_rss_mib();
    const std::string out =
        o.output == "json" ? hg::format_bench_json(env, results) : hg::format_bench_markdown(env, results);
    std::fputs(out.c_str(), stdout);
    return 0;
}

// Training throughput (train/bench_train.h): stage 3 H-LoRA on the decoder of -m, one example of
// -p rows with the loss on the last 64, -r timed steps.
int run_train(const BenchOptions& o) {
    HG_CHECK(!o.model.empty(), "bench --train needs a text-model GGUF (-m FILE)");
    hg::ThreadPool pool(o.threads);
    auto dec = hg::Decoder::load(o.model);
    hg::train::TrainBenchOptions t;
    t.seq = o.n_prompt;
    t.rank = o.rank;
    t.steps = o.reps;
    const hg::MachineRoofs roofs = hg::measure_roofs(pool);
    const hg::train::TrainBenchResult r = hg::train::bench_train_hlora(*dec, t, pool);
    double mean = 0, sd = 0;
    hg::mean_stddev(r.step_seconds, &mean, &sd);
    std::printf("| CPU | model | threads | rows | H-LoRA rank | trainable | s/step | train tok/s | GFLOP/step | GFLOP/s | "
                "FMA peak GFLOP/s | share of peak | peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    std::printf("| %s | %s | %d | %lld | %lld | %lld | %.2f ± %.2f | %.1f | %.0f | %.1f | %.0f | %.0f %% | %.0f |\n",
                hg::cpu_features().brand.c_str(), dec->hparams().describe().c_str(), pool.size(), (long long)t.seq,
                (long long)t.rank, (long long)r.trainable, mean, sd, (double)t.seq / mean, r.step_gflop,
                r.step_gflop / mean, roofs.fma_gflops, 100.0 * r.step_gflop / mean / roofs.fma_gflops, r.peak_rss_mib);
    std::printf("\nforward %.0f GFLOP; a step = forward + recomputed forward (checkpointing) + backward dX through the "
                "frozen base + H-LoRA; final loss %.3f\n", r.forward_gflop, r.loss);
    return 0;
}

// --train-manifest: the optimiser steps another framework ran on the same files; one JSON object
// on stdout (the side-by-side script compares it with PyTorch's run).
int run_train_manifest(const BenchOptions& o) {
    if (o.threads > 0) ::setenv("HEALTHGPT_THREADS", std::to_string(o.threads).c_str(), 1);  // the trainer's pool
    const hg::train::ManifestBenchResult r = hg::train::bench_train_manifest(o.train_manifest);
    nlohmann::json j = {{"cpu", hg::cpu_features().brand},
                        {"threads", hg::default_pool().size()},
                        {"loss", r.loss},
                        {"grad_norm", r.grad_norm},
                        {"seconds", r.seconds},
                        {"cpu_seconds", r.cpu_seconds},
                        {"rows_per_step", r.rows_per_step},
                        {"trainable", r.trainable},
                        {"peak_rss_mib", r.peak_rss_mib}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
}

}  // namespace

HG_COMMAND(bench, "Benchmarks: llama-bench style model tests (-m FILE), kernels (--kernels), benchmark models") {
    auto o = std::make_shared<BenchOptions>();
    app.add_flag("--kernels", o->kernels, "matvec (M=1) and matmul (M=512) per weight type, Phi-3-mini shapes");
    app.add_option("--types", o->types, "--kernels: comma-separated weight types")->capture_default_str();
    app.add_option("--m", o->m_values, "--kernels: comma-separated activation row counts M")->capture_default_str();
    app.add_option("--isa", o->isa_levels,
                   "--kernels: two or more levels side by side, interleaved, with the speed-up (e.g. avx2,avx512)");
    app.add_option("--min-time", o->min_seconds, "--kernels: seconds to repeat each case (best time reported)")
        ->capture_default_str();

    app.add_option("-m,--model", o->model, "text-model GGUF for pp / tg / ttft-image");
    app.add_option("-p,--n-prompt", o->n_prompt, "prompt tokens of the pp test")->capture_default_str();
    app.add_option("-n,--n-gen", o->n_gen, "generated tokens of the tg test")->capture_default_str();
    app.add_option("-r,--reps", o->reps, "timed repetitions per test (after one warm-up)")->capture_default_str();
    app.add_option("--tests", o->tests,
                   "comma-separated: pp (or ppN), tg (or tgN), ttft-image, img, vqgan "
                   "(default: pp,tg with -m, else img,vqgan)");
    app.add_option("-o,--output", o->output, "md or json")->capture_default_str();
    app.add_option("-c,--ctx", o->n_ctx, "KV cache positions to allocate (default: what the test needs)");
    app.add_option("--kv-type", o->kv_type, "KV cache type: f16 or f32")->capture_default_str();
    app.add_option("--img-type", o->img_type, "weight type of the random vision tower / VQGAN: f16, f32, bf16; q8_0 (vision only: its matrices, as converted Q8_0/Q4_K models store them)")
        ->capture_default_str();
    app.add_flag("--roof", o->roof, "measure the read bandwidth first and report tg as % of the bandwidth roof");

    app.add_option("--write-model", o->write_model, "write a random-weight benchmark GGUF to this path and exit");
    app.add_option("--shape", o->shape, "--write-model: phi3-mini or 1b")->capture_default_str();
    app.add_option("--type", o->wtype, "--write-model: f16, q8_0 or q4_k (every matrix)")->capture_default_str();
    app.add_option("--vocab", o->vocab,
                   "--write-model: GGUF whose tokenizer.* keys are copied "
                   "(default $HEALTHGPT_SHARED_DATA/tokenizers/phi3/ggml-vocab-phi-3.gguf)");

    app.add_flag("--train", o->train, "training throughput and peak RSS: stage-3 H-LoRA steps on the decoder of -m "
                                     "(-p rows per example, -r steps, --rank)");
    app.add_option("--train-manifest", o->train_manifest,
                   "the optimiser steps of a side-by-side run written by scripts/bench-train-vs-torch.py; prints JSON "
                   "(losses, grad norms, seconds per step; threads from -t / HEALTHGPT_THREADS)");
    app.add_option("--rank", o->rank, "--train: total H-LoRA rank")->capture_default_str();
    app.add_option("-t,--threads", o->threads, "threads (default: one per physical core, HEALTHGPT_THREADS)");
    app.add_flag("--cpu-time", o->cpu_time,
                 "rates from process CPU time / threads instead of wall time (for a machine shared with other work)");
    app.footer(
        "Examples:\n"
        "  healthgpt bench -m phi3-mini-q4_k.gguf -p 512 -n 128 -r 5 --roof\n"
        "  healthgpt bench -m phi3-mini-q4_k.gguf --tests ttft-image -o json\n"
        "  healthgpt bench --tests img,vqgan -r 3\n"
        "  healthgpt bench --write-model phi3-mini-q4_k.gguf --shape phi3-mini --type q4_k\n"
        "  healthgpt bench --kernels --types q4_k,q8_0 --m 1\n"
        "  healthgpt bench --kernels --types q8_0,q4_k --isa avx2,avx512   (levels side by side)\n"
        "Peak RSS is the whole process's: run one test per process for a test's own peak.");
    return [o] {
        std::string command = "healthgpt bench";
        if (o->kernels) {
            command += " --kernels";
            if (o->threads) command += " -t " + std::to_string(o->threads);
            if (o->types != BenchOptions().types) command += " --types " + o->types;
            if (o->m_values != BenchOptions().m_values) command += " --m " + o->m_values;
            if (o->cpu_time) command += " --cpu-time";
            if (!o->isa_levels.empty()) command += " --isa " + o->isa_levels;
            return run_kernels(*o, command);
        }
        if (!o->write_model.empty()) return run_write_model(*o);
        if (!o->train_manifest.empty()) return run_train_manifest(*o);
        if (o->train) return run_train(*o);
        if (!o->model.empty()) command += " -m " + o->model;
        command += " -p " + std::to_string(o->n_prompt) + " -n " + std::to_string(o->n_gen) + " -r " +
                   std::to_string(o->reps);
        if (!o->tests.empty()) command += " --tests " + o->tests;
        if (o->n_ctx) command += " -c " + std::to_string(o->n_ctx);
        if (o->threads) command += " -t " + std::to_string(o->threads);
        if (o->kv_type != "f16") command += " --kv-type " + o->kv_type;
        if (o->img_type != "f16") command += " --img-type " + o->img_type;
        if (o->roof) command += " --roof";
        if (o->cpu_time) command += " --cpu-time";
        if (o->output != "md") command += " -o " + o->output;
        return run_models(*o, command);
    };
}
