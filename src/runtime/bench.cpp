// Model benchmarks and benchmark-model writer (see bench.h).
#include "runtime/bench.h"

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <span>

#include "core/arena.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"
#include "core/ops.h"
#include "core/quants.h"
#include "formats/gguf.h"
#include "model/clip_vision.h"
#include "model/vqgan.h"
#include "model/weight_source.h"
#include "runtime/generate.h"
#include "runtime/kv_cache.h"

namespace hg {

// ---------------------------------------------------------------------------------------------
// Small helpers

namespace {

double wall_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
double cpu_now() {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// Times fn() once.
template <class Fn>
BenchRep time_once(Fn&& fn) {
    const double w0 = wall_now(), c0 = cpu_now();
    fn();
    return {wall_now() - w0, cpu_now() - c0};
}

// splitmix64: a fast, well-mixed stream for random weights (quality far beyond what a benchmark needs)
struct SplitMix {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    // uniform in [-a, a)
    float uniform(float a) { return ((float)(next() >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * a; }
};

void fill_uniform(float* x, int64_t n, uint64_t seed, float a) {
    SplitMix r{seed};
    for (int64_t i = 0; i < n; ++i) x[i] = r.uniform(a);
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

std::string json_escape(const std::string& s) {
    std::string o;
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            o += '\\';
            o += c;
        } else if ((unsigned char)c < 0x20) {
            o += fmt("\\u%04x", c);
        } else {
            o += c;
        }
    }
    return o;
}

}  // namespace

double peak_rss_mib() {
    // VmHWM is this process image's own high-water mark. getrusage's ru_maxrss is not: Linux
    // carries it over execve, so a benchmark started by a large parent (a Python script holding
    // PyTorch) would report the parent's peak.
    if (FILE* f = std::fopen("/proc/self/status", "r")) {
        char line[256];
        long kb = -1;
        while (std::fgets(line, sizeof line, f))
            if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
        std::fclose(f);
        if (kb >= 0) return kb / 1024.0;
    }
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // Linux: kilobytes
}

double load_average_1min() {
    double l[1] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

void mean_stddev(const std::vector<double>& v, double* mean, double* stddev) {
    double m = 0;
    for (double x : v) m += x;
    m = v.empty() ? 0 : m / (double)v.size();
    double s = 0;
    for (double x : v) s += (x - m) * (x - m);
    *mean = m;
    *stddev = v.size() > 1 ? std::sqrt(s / (double)(v.size() - 1)) : 0.0;
}

std::vector<double> BenchTest::values(bool cpu_clock, int threads) const {
    std::vector<double> out;
    for (const BenchRep& r : reps) {
        const double s = cpu_clock ? r.cpu / std::max(1, threads) : r.wall;
        out.push_back(n_tokens > 0 ? (double)n_tokens / s : s * 1e3);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Benchmark models

BenchModelShape bench_model_shape(const std::string& name) {
    BenchModelShape s;
    s.name = name;
    if (name == "phi3-mini") {
        s.n_embd = 3072, s.n_ff = 8192, s.n_layer = 32, s.n_head = 32;
    } else if (name == "1b") {
        s.n_embd = 2048, s.n_ff = 8192, s.n_layer = 16, s.n_head = 32;
    } else {
        fail("bench: unknown model shape '%s' (phi3-mini, 1b)", name.c_str());
    }
    return s;
}

void write_bench_model(const std::string& path, const BenchModelShape& shape, DType type,
                       const std::string& vocab_gguf, uint64_t seed, ThreadPool& pool) {
    HG_CHECK(type == DType::F16 || type == DType::Q8_0 || type == DType::Q4_K,
             "bench model: type %s not offered (f16, q8_0, q4_k)", dtype_name(type));
    const int64_t E = shape.n_embd, I = shape.n_ff, V = shape.n_vocab, H = shape.n_head;
    HG_CHECK(E % 256 == 0 && I % 256 == 0 && E % H == 0, "bench model: shape %s does not fit the block sizes",
             shape.name.c_str());
    auto vocab = GGUFFile::open(vocab_gguf);
    const auto tokens = vocab->get_string_array("tokenizer.ggml.tokens");
    HG_CHECK(tokens && (int64_t)tokens->size() == V, "%s: expected a vocabulary of %lld tokens (tokenizer.ggml.tokens)",
             vocab_gguf.c_str(), (long long)V);

    GGUFWriter w;
    w.set_string("general.architecture", "phi3");
    w.set_string("general.name", "healthgpt-bench-" + shape.name + "-" + dtype_name(type));
    w.set_u32("phi3.context_length", (uint32_t)shape.n_ctx);
    w.set_u32("phi3.rope.scaling.original_context_length", (uint32_t)shape.n_ctx);
    w.set_u32("phi3.embedding_length", (uint32_t)E);
    w.set_u32("phi3.feed_forward_length", (uint32_t)I);
    w.set_u32("phi3.block_count", (uint32_t)shape.n_layer);
    w.set_u32("phi3.attention.head_count", (uint32_t)H);
    w.set_u32("phi3.attention.head_count_kv", (uint32_t)H);
    w.set_f32("phi3.attention.layer_norm_rms_epsilon", 1e-5f);
    w.set_u32("phi3.rope.dimension_count", (uint32_t)(E / H));
    w.set_f32("phi3.rope.freq_base", 10000.0f);
    for (const GGUFKV& kv : vocab->metadata())
        if (kv.key.rfind("tokenizer.", 0) == 0 || kv.key == "general.quantization_version") w.set(kv.key, kv.value);

    uint64_t tensor_seed = seed;
    // A matrix [rows, cols] of `type`: row r is uniform(±0.05) from its own seed, quantized by
    // our (scalar reference, ggml-exact) quantizer, rows split over the pool.
    auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
        const uint64_t ts = tensor_seed++ * 0x100000001b3ull;
        w.add_tensor_generated(name, type, {rows, cols}, [=, &pool](uint8_t* dst) {
            const size_t rb = row_bytes(type, cols);
            pool.parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
                std::vector<float> row((size_t)cols);
                for (int64_t r = r0; r < r1; ++r) {
                    fill_uniform(row.data(), cols, ts ^ ((uint64_t)r * 0x9e3779b97f4a7c15ull), 0.05f);
                    quantize_row(type, row.data(), dst + (size_t)r * rb, cols);
                }
            });
        });
    };
    auto ones = [&](const std::string& name, int64_t n) {
        std::vector<float> v((size_t)n, 1.0f);
        w.add_tensor(name, DType::F32, {n}, v.data());
    };
    matrix("token_embd.weight", V, E);
    for (int64_t l = 0; l < shape.n_layer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        ones(b + "attn_norm.weight", E);
        matrix(b + "attn_qkv.weight", 3 * E, E);
        matrix(b + "attn_output.weight", E, E);
        ones(b + "ffn_norm.weight", E);
        matrix(b + "ffn_up.weight", 2 * I, E);  // fused gate|up (phi3)
        matrix(b + "ffn_down.weight", E, I);
    }
    ones("output_norm.weight", E);
    matrix("output.weight", V, E);
    w.write(path);
}

// ---------------------------------------------------------------------------------------------
// Decoder tests

namespace {

std::vector<int32_t> random_ids(int64_t n, int64_t n_vocab, uint64_t seed, int32_t first) {
    SplitMix r{seed};
    std::vector<int32_t> ids((size_t)n);
    for (auto& id : ids) id = (int32_t)(r.next() % (uint64_t)n_vocab);
    if (n > 0 && first >= 0) ids[0] = first;
    return ids;
}

constexpr int32_t kBos = 1;       // Phi-3 / Llama BOS (only an id here: any id costs the same)
constexpr int64_t kUbatch = 512;  // positions per forward (llama-bench's n_ubatch)

}  // namespace

BenchTest bench_prompt(const Decoder& model, const DecoderBenchOptions& o, ThreadPool& pool) {
    const DecoderHParams& hp = model.hparams();
    const int64_t n = o.n_prompt, E = hp.n_embd;
    KVCache cache(hp, std::max(o.n_ctx, n), o.kv_type);
    Arena arena;
    std::vector<float> embeds((size_t)(std::min(n, kUbatch) * E)), logits((size_t)hp.n_vocab);
    ForwardOptions fo;
    fo.pool = &pool;
    const std::vector<uint64_t> hashes((size_t)kUbatch, 0);
    auto run = [&](uint64_t seed) {
        const std::vector<int32_t> ids = random_ids(n, hp.n_vocab, seed, kBos);
        cache.clear();
        for (int64_t p = 0; p < n; p += kUbatch) {
            const int64_t m = std::min(kUbatch, n - p);
            model.embed(std::span<const int32_t>(ids).subspan(p, m), embeds.data());
            model.forward(embeds.data(), m, cache.view(), p + m == n ? LogitRows::Last : LogitRows::None,
                          logits.data(), arena, fo);
            cache.append(std::span<const uint64_t>(hashes).subspan(0, m));
        }
    };
    BenchTest t;
    t.name = "pp" + std::to_string(n);
    t.n_tokens = n;
    t.note = fmt("prefill of %lld random ids from an empty cache, forwards of <= %lld positions, logits of the last",
                 (long long)n, (long long)kUbatch);
    run(o.seed);  // warm-up
    for (int r = 0; r < o.reps; ++r) t.reps.push_back(time_once([&] { run(o.seed + 1 + r); }));
    return t;
}

BenchTest bench_generate(const Decoder& model, const DecoderBenchOptions& o, ThreadPool& pool) {
    const DecoderHParams& hp = model.hparams();
    const int64_t n = o.n_gen;
    KVCache cache(hp, std::max(o.n_ctx, n), o.kv_type);
    Arena arena;
    std::vector<float> embed((size_t)hp.n_embd), logits((size_t)hp.n_vocab);
    ForwardOptions fo;
    fo.pool = &pool;
    const uint64_t h = 0;
    auto run = [&](int64_t count, uint64_t seed) {
        const std::vector<int32_t> ids = random_ids(count, hp.n_vocab, seed, kBos);
        cache.clear();
        for (int64_t i = 0; i < count; ++i) {
            model.embed(std::span<const int32_t>(&ids[i], 1), embed.data());
            model.forward(embed.data(), 1, cache.view(), LogitRows::Last, logits.data(), arena, fo);
            cache.append(std::span<const uint64_t>(&h, 1));
        }
    };
    BenchTest t;
    t.name = "tg" + std::to_string(n);
    t.n_tokens = n;
    t.note = fmt("%lld single-token forwards from position 0 with logits (random ids)", (long long)n);
    run(1, o.seed);  // warm-up, as llama-bench: one token
    for (int r = 0; r < o.reps; ++r) t.reps.push_back(time_once([&] { run(n, o.seed + 1 + r); }));
    return t;
}

std::vector<BenchTest> bench_ttft_image(std::shared_ptr<const Decoder> model, const DecoderBenchOptions& o,
                                        ThreadPool& pool) {
    const DecoderHParams& hp = model->hparams();
    constexpr int64_t kSystem = 32, kImage = 576, kQuestion = 24;
    const std::vector<int32_t> sys = random_ids(kSystem, hp.n_vocab, 11, kBos);
    const std::vector<int32_t> q1 = random_ids(kQuestion, hp.n_vocab, 12, -1);
    const std::vector<int32_t> q2 = random_ids(kQuestion, hp.n_vocab, 13, -1);
    std::vector<float> image((size_t)(kImage * hp.n_embd));
    fill_uniform(image.data(), (int64_t)image.size(), 14, 0.05f);
    Prompt p1, p2;
    for (Prompt* p : {&p1, &p2}) {
        p->add_tokens(sys);
        p->add_embeddings(image.data(), kImage, hp.n_embd);
        p->add_tokens(p == &p1 ? q1 : q2);
    }
    const int64_t n_ctx = std::max<int64_t>(o.n_ctx, p1.size() + 16);
    Generator gen(model, n_ctx, o.kv_type, &pool);
    GenerateOptions go;
    go.n_batch = kUbatch;
    BenchTest first, reuse;
    first.name = "ttft-image";
    first.note = fmt("%lld system ids + %lld image rows + %lld question ids, empty cache: prefill + first greedy token",
                     (long long)kSystem, (long long)kImage, (long long)kQuestion);
    reuse.name = "ttft-image-reuse";
    reuse.note = fmt("second question (%lld other ids) about the same image: system + image positions reused from "
                     "the cache",
                     (long long)kQuestion);
    int64_t reused = 0;
    auto ask = [&](const Prompt& p) {
        const std::span<float> logits = gen.prefill(p, go, &reused);
        volatile int64_t tok = argmax(logits.data(), (int64_t)logits.size());
        (void)tok;
    };
    for (int r = 0; r <= o.reps; ++r) {  // r = 0: warm-up
        gen.cache().clear();
        const BenchRep a = time_once([&] { ask(p1); });
        HG_CHECK(reused == 0, "ttft-image: the first question found %lld cached positions", (long long)reused);
        const BenchRep b = time_once([&] { ask(p2); });
        HG_CHECK(reused == kSystem + kImage, "ttft-image: the follow-up reused %lld positions, expected %lld",
                 (long long)reused, (long long)(kSystem + kImage));
        if (r > 0) {
            first.reps.push_back(a);
            reuse.reps.push_back(b);
        }
    }
    return {first, reuse};
}

// ---------------------------------------------------------------------------------------------
// Vision tower and VQGAN

BenchTest bench_vision(int reps, DType weights, ThreadPool& pool) {
    const ClipVisionConfig cfg = ClipVisionConfig::vit_l14_336();
    const int64_t D = cfg.hidden, F = cfg.n_ff, T = cfg.n_tokens();
    WeightMap map;
    uint64_t seed = 100;
    std::vector<float> buf;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, DType type, float fill) {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        buf.resize((size_t)n);
        if (std::isnan(fill)) fill_uniform(buf.data(), n, seed++, 0.05f);
        else std::fill(buf.begin(), buf.end(), fill);
        map.add_converted(name, type, shape, buf.data());
    };
    // The patch embedding is a convolution (float weights only); a quantized tower keeps it F16, as
    // `healthgpt convert --type q8_0|q4_k` does.
    const DType conv_type = dtype_info(weights).block_size > 1 ? DType::F16 : weights;
    add(clip_names::kPatchEmbd, {D, 3, cfg.patch_size, cfg.patch_size}, conv_type, NAN);
    add(clip_names::kClassEmbd, {D}, DType::F32, NAN);
    add(clip_names::kPositionEmbd, {T, D}, DType::F32, NAN);
    add(clip_names::kPreLnWeight, {D}, DType::F32, 1.0f);
    add(clip_names::kPreLnBias, {D}, DType::F32, 0.0f);
    for (int i = 0; i < cfg.n_layer; ++i) {
        for (const char* ln : {"ln1", "ln2"}) {
            add(clip_names::block(i, ln, "weight"), {D}, DType::F32, 1.0f);
            add(clip_names::block(i, ln, "bias"), {D}, DType::F32, 0.0f);
        }
        for (const char* p : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
            add(clip_names::block(i, p, "weight"), {D, D}, weights, NAN);
            add(clip_names::block(i, p, "bias"), {D}, DType::F32, NAN);
        }
        add(clip_names::block(i, "ffn_up", "weight"), {F, D}, weights, NAN);
        add(clip_names::block(i, "ffn_up", "bias"), {F}, DType::F32, NAN);
        add(clip_names::block(i, "ffn_down", "weight"), {D, F}, weights, NAN);
        add(clip_names::block(i, "ffn_down", "bias"), {D}, DType::F32, NAN);
    }
    buf = {};
    const ClipVision tower(cfg, map.source("random ViT-L/14-336"));
    std::vector<float> pixels((size_t)3 * cfg.image_size * cfg.image_size);
    fill_uniform(pixels.data(), (int64_t)pixels.size(), 7, 2.0f);
    std::vector<float> out((size_t)cfg.n_patches() * D);
    Arena arena;
    BenchTest t;
    t.name = "img";
    t.note = fmt("CLIP ViT-L/14-336 (random %s weights), one 336x336 image to hidden_states[-2] (%d blocks)",
                 dtype_name(weights), tower.resolve_layer(-2));
    for (int r = 0; r <= reps; ++r) {
        const BenchRep rep = time_once([&] { tower.forward(out.data(), pixels.data(), -2, arena, pool); });
        arena.reset();
        if (r > 0) t.reps.push_back(rep);
    }
    return t;
}

BenchTest bench_vqgan(int reps, DType weights, ThreadPool& pool) {
    VqganConfig cfg;  // the released OpenImages f8 / 8192 GumbelVQ, 256x256
    TensorStore store;
    vqgan_random_weights(cfg, weights, 42, store, false);
    Vqgan model = Vqgan::load(store, "random weights");
    const int64_t R = cfg.resolution, n = cfg.n_tokens();
    std::vector<int32_t> idx((size_t)n);
    for (int64_t i = 0; i < n; ++i) idx[(size_t)i] = (int32_t)((i * 2654435761u) % (uint64_t)cfg.n_embed);
    std::vector<float> image((size_t)(3 * R * R));
    BenchTest t;
    t.name = "vqgan";
    t.note = fmt("VQGAN decode, 1,024 codes -> %lldx%lld (random %s conv weights)", (long long)R, (long long)R,
                 dtype_name(weights));
    for (int r = 0; r <= reps; ++r) {
        const BenchRep rep = time_once([&] { model.decode(idx, image.data(), pool); });
        if (r > 0) t.reps.push_back(rep);
    }
    return t;
}

// ---------------------------------------------------------------------------------------------
// Reports

std::string format_bench_markdown(const BenchEnv& env, const std::vector<BenchTest>& tests) {
    std::string s;
    s += "`" + env.command + "`\n\n";
    s += "| | |\n|---|---|\n";
    if (!env.model.empty()) {
        s += "| model | " + env.model + " |\n";
        s += "| shape | " + env.shape + " |\n";
        s += fmt("| weights | %s, %.2f GiB in the file, %.3f G parameters; %.2f GiB read per decoded token |\n",
                 env.model_type.c_str(), env.model_bytes / 1073741824.0, env.n_params * 1e-9,
                 env.weight_bytes_per_token / 1073741824.0);
        s += fmt("| KV cache | %s, %lld positions |\n", env.kv_type.c_str(), (long long)env.n_ctx);
    }
    s += fmt("| threads | %d |\n", env.threads);
    s += "| kernels | " + env.kernels + " |\n";
    s += "| CPU | " + env.cpu + " (" + env.cpu_flags + ") |\n";
    s += fmt("| load average | %.2f before, %.2f after |\n", env.load_start, env.load_end);
    s += fmt("| peak RSS | %.1f MiB |\n", env.peak_rss_mib);
    if (env.read_gbps > 0) s += fmt("| read bandwidth | %.1f GB/s (measured in this run) |\n", env.read_gbps);
    s += fmt("| clock | %s |\n\n", env.cpu_clock ? "process CPU time / threads (--cpu-time)" : "wall");

    const bool roof = env.read_gbps > 0 && env.weight_bytes_per_token > 0;
    s += roof ? "| test | value | unit | reps | % of bandwidth roof |\n|---|---:|---|---:|---:|\n"
              : "| test | value | unit | reps |\n|---|---:|---|---:|\n";
    for (const BenchTest& t : tests) {
        double m, sd;
        mean_stddev(t.values(env.cpu_clock, env.threads), &m, &sd);
        const int prec = t.n_tokens > 0 ? 2 : 1;
        s += fmt("| %s | %.*f ± %.*f | %s | %zu |", t.name.c_str(), prec, m, prec, sd, t.unit(), t.reps.size());
        if (roof) {
            if (t.name.rfind("tg", 0) == 0)
                s += fmt(" %.0f %% |", 100.0 * m * (double)env.weight_bytes_per_token / (env.read_gbps * 1e9));
            else
                s += " |";
        }
        s += "\n";
    }
    s += "\n";
    for (const BenchTest& t : tests) s += "- " + t.name + ": " + t.note + "\n";
    return s;
}

std::string format_bench_json(const BenchEnv& env, const std::vector<BenchTest>& tests) {
    std::string s = "{";
    s += "\"engine\": \"healthgpt\", \"command\": \"" + json_escape(env.command) + "\"";
    s += ", \"model\": \"" + json_escape(env.model) + "\", \"model_type\": \"" + json_escape(env.model_type) + "\"";
    s += fmt(", \"model_bytes\": %llu, \"weight_bytes_per_token\": %llu, \"n_params\": %lld",
             (unsigned long long)env.model_bytes, (unsigned long long)env.weight_bytes_per_token,
             (long long)env.n_params);
    s += ", \"shape\": \"" + json_escape(env.shape) + "\"";
    s += fmt(", \"threads\": %d, \"n_ctx\": %lld", env.threads, (long long)env.n_ctx);
    s += ", \"kv_type\": \"" + json_escape(env.kv_type) + "\"";
    s += ", \"kernels\": \"" + json_escape(env.kernels) + "\", \"cpu\": \"" + json_escape(env.cpu) + "\"";
    s += ", \"cpu_flags\": \"" + json_escape(env.cpu_flags) + "\"";
    s += fmt(", \"load_start\": %.2f, \"load_end\": %.2f, \"peak_rss_mib\": %.1f, \"read_gbps\": %.2f", env.load_start,
             env.load_end, env.peak_rss_mib, env.read_gbps);
    s += fmt(", \"cpu_clock\": %s, \"tests\": {", env.cpu_clock ? "true" : "false");
    for (size_t i = 0; i < tests.size(); ++i) {
        const BenchTest& t = tests[i];
        s += (i ? ", \"" : "\"") + t.name + "\": {";
        s += fmt("\"n_tokens\": %lld, \"unit\": \"%s\", \"note\": \"%s\"", (long long)t.n_tokens, t.unit(),
                 json_escape(t.note).c_str());
        auto arr = [&](const char* key, auto get) {
            s += fmt(", \"%s\": [", key);
            for (size_t r = 0; r < t.reps.size(); ++r) s += fmt(r ? ", %.6f" : "%.6f", get(t.reps[r]));
            s += "]";
        };
        arr("seconds", [](const BenchRep& r) { return r.wall; });
        arr("cpu_seconds", [](const BenchRep& r) { return r.cpu; });
        if (t.n_tokens > 0) {
            const int64_t n = t.n_tokens;
            arr("tokens_per_second", [n](const BenchRep& r) { return (double)n / r.wall; });
        }
        s += "}";
    }
    s += "}}\n";
    return s;
}

}  // namespace hg
