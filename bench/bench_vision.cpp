// Seconds per image for the CLIP ViT-L/14-336 vision tower (HealthGPT's), random F16 weights
// (what the converter writes), with the active kernel table.
//
//   bench_vision [--threads N] [--layer L] [--runs R] [--quick]
//
// Prints a table: embedding alone (layer 0), one block (layer 1 minus layer 0), the requested
// layer (default -2 = 23 blocks, the comprehension path; 1 = the generation path) end to end,
// and the GFLOP/s those imply. --quick times layers 0 and 1 only and extrapolates layer L.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/cpu_features.h"
#include "core/half.h"
#include "core/ops.h"
#include "core/thread_pool.h"
#include "model/clip_vision.h"
#include "model/weight_source.h"

using namespace hg;

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// CPU seconds of the whole process (all threads): wall x threads when nothing else competes.
double cpu_s() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Timing {
    double wall = 0, cpu = 0;
};

// A pool of random F16 values that every matrix views a window of (keeps setup fast and memory
// at the real model's size: each tensor gets its own storage, filled from the pool).
struct RandomWeights {
    WeightMap map;
    std::vector<std::vector<uint16_t>> store;
    std::vector<uint16_t> pool;
    std::mt19937 rng{42};

    RandomWeights() {
        pool.resize(1 << 22);
        std::normal_distribution<float> d(0.0f, 0.02f);
        for (auto& h : pool) h = fp32_to_fp16(d(rng));
    }
    void add(const std::string& name, std::vector<int64_t> shape, DType type = DType::F16, float fill = NAN) {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        if (type == DType::F32) {
            std::vector<float> v(n);
            std::normal_distribution<float> d(0.0f, 0.02f);
            for (auto& x : v) x = std::isnan(fill) ? d(rng) : fill;
            map.add_converted(name, DType::F32, shape, v.data());
            return;
        }
        store.emplace_back(n);
        const size_t off = rng() % (pool.size() / 2);
        for (int64_t i = 0; i < n; i += (int64_t)(pool.size() / 2)) {
            const int64_t len = std::min<int64_t>(n - i, pool.size() / 2);
            std::memcpy(store.back().data() + i, pool.data() + off, len * 2);
        }
        map.add(name, Tensor::view(DType::F16, shape.data(), (int)shape.size(), store.back().data()));
    }
};

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, layer = -2, runs = 1;
    bool quick = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (a == "--layer" && i + 1 < argc) layer = std::atoi(argv[++i]);
        else if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
        else if (a == "--quick") quick = true;
        else {
            std::fprintf(stderr, "usage: %s [--threads N] [--layer L] [--runs R] [--quick]\n", argv[0]);
            return 2;
        }
    }

    const ClipVisionConfig cfg = ClipVisionConfig::vit_l14_336();
    const int64_t D = cfg.hidden, F = cfg.n_ff, T = cfg.n_tokens();
    RandomWeights w;
    w.add(clip_names::kPatchEmbd, {D, 3, cfg.patch_size, cfg.patch_size});
    w.add(clip_names::kClassEmbd, {D}, DType::F32);
    w.add(clip_names::kPositionEmbd, {T, D}, DType::F32);
    w.add(clip_names::kPreLnWeight, {D}, DType::F32, 1.0f);
    w.add(clip_names::kPreLnBias, {D}, DType::F32);
    for (int i = 0; i < cfg.n_layer; ++i) {
        for (const char* ln : {"ln1", "ln2"}) {
            w.add(clip_names::block(i, ln, "weight"), {D}, DType::F32, 1.0f);
            w.add(clip_names::block(i, ln, "bias"), {D}, DType::F32);
        }
        for (const char* p : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
            w.add(clip_names::block(i, p, "weight"), {D, D});
            w.add(clip_names::block(i, p, "bias"), {D}, DType::F32);
        }
        w.add(clip_names::block(i, "ffn_up", "weight"), {F, D});
        w.add(clip_names::block(i, "ffn_up", "bias"), {F}, DType::F32);
        w.add(clip_names::block(i, "ffn_down", "weight"), {D, F});
        w.add(clip_names::block(i, "ffn_down", "bias"), {D}, DType::F32);
    }
    const ClipVision tower(cfg, w.map.source("random ViT-L/14-336"));

    std::vector<float> pixels(3 * cfg.image_size * cfg.image_size);
    std::mt19937 rng(7);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (auto& p : pixels) p = d(rng);
    std::vector<float> out((size_t)cfg.n_patches() * D);
    ThreadPool pool(threads);
    Arena arena;

    auto time_layer = [&](int l, int n_runs) {
        std::vector<Timing> t;
        for (int r = 0; r < n_runs; ++r) {
            const double t0 = now_s(), c0 = cpu_s();
            tower.forward(out.data(), pixels.data(), l, arena, pool);
            t.push_back({now_s() - t0, cpu_s() - c0});
            arena.reset();
        }
        std::sort(t.begin(), t.end(), [](const Timing& a, const Timing& b) { return a.wall < b.wall; });
        return t[t.size() / 2];  // median by wall time
    };
    tower.forward(out.data(), pixels.data(), 0, arena, pool);  // warm-up (arena, pages)
    arena.reset();

    // FLOPs (multiply-add = 2): per block 4·T·D² + 2·T·D·F (linears) + 2·T²·D (QKᵀ and PV).
    const double block_flop = 2.0 * (4.0 * T * D * D + 2.0 * T * D * F + 2.0 * (double)T * T * D);
    const double embed_flop = 2.0 * cfg.n_patches() * D * 3.0 * cfg.patch_size * cfg.patch_size;
    const int n_blocks = tower.resolve_layer(layer);

    const Timing t_embed = time_layer(0, std::max(runs, 3));
    const Timing t_one = time_layer(1, runs);
    const Timing t_block{t_one.wall - t_embed.wall, t_one.cpu - t_embed.cpu};
    Timing t_full;
    if (quick)
        t_full = {t_embed.wall + n_blocks * t_block.wall, t_embed.cpu + n_blocks * t_block.cpu};
    else
        t_full = time_layer(layer, runs);

    std::printf("CLIP ViT-L/14-336 vision tower, F16 weights, kernel table: %s (CPU level %s), threads: %d, runs: %d\n",
                kernels().name, isa_name(isa_active()), threads, runs);
    std::printf("%-44s %10s %10s %10s\n", "stage", "wall s", "cpu s", "GFLOP/s");
    auto row = [&](const char* label, const Timing& t, double flop) {
        std::printf("%-44s %10.3f %10.3f %10.1f\n", label, t.wall, t.cpu, flop / t.wall * 1e-9);
    };
    row("embedding + pre_ln (layer 0)", t_embed, embed_flop);
    row("one encoder block", t_block, block_flop);
    char label[96];
    std::snprintf(label, sizeof label, "image, layer %d (%d blocks)%s", layer, n_blocks, quick ? ", extrapolated" : "");
    row(label, t_full, embed_flop + n_blocks * block_flop);
    return 0;
}
