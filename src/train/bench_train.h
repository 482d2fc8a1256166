// Training throughput of the decoder with an H-LoRA plugin (HealthGPT's stage 3 on its dominant
// cost): random embeddings for T rows (an image's 576 + the text), the loss on the last `answer`
// rows, the forward with checkpointed blocks, its recomputation and the backward (dX through the
// frozen base of any stored type, dW of every H-LoRA tensor). The vision tower is frozen in stage 3:
// its forward is the inference cost `bench img` measures. Prints nothing; the CLI makes the table.
#pragma once
#include <cstdint>
#include <filesystem>
#include <vector>

#include "core/thread_pool.h"
#include "model/decoder.h"

namespace hg::train {

struct TrainBenchOptions {
    int64_t seq = 640;     // rows per example
    int64_t answer = 64;   // rows with a target
    int64_t rank = 64;     // total H-LoRA rank (M3-COM: 64)
    int experts = 4;
    int steps = 2;         // timed optimiser steps (one example each), after one warm-up step
};

struct TrainBenchResult {
    std::vector<double> step_seconds;
    int64_t trainable = 0;          // H-LoRA values
    double forward_gflop = 0;       // 2 · T · (linear weights) + attention, one forward
    double step_gflop = 0;          // forward + recomputed forward + backward dX (+ H-LoRA)
    double peak_rss_mib = 0;
    double loss = 0;
};

TrainBenchResult bench_train_hlora(const Decoder& decoder, const TrainBenchOptions& opt, ThreadPool& pool);

}  // namespace hg::train

namespace hg::train {

// The same training run as another framework's, for a side-by-side (scripts/bench-train-vs-torch.py
// writes the model folder and this manifest, runs PyTorch, then `healthgpt bench --train-manifest`):
//   {"model": folder (relative to the manifest), "plugin": name, "stage": 3, "steps": K,
//    "batch": examples per step, "lr": {"hlora": .., "projector": .., "vision": ..}, "weight_decay": ..,
//    "warmup_steps": .., "max_grad_norm": .., "unfreeze_vision": bool,
//    "examples": [{"ids": [...] (-200 = image slot), "labels": [...] (-100 = no loss),
//                  "pixels": file of float32 [3, S, S] (relative)}]}
// The optimiser steps run through train::Trainer (AdamW, cosine schedule with the given warmup,
// clipping), every step on the same examples in the same order. Returns per step its loss, grad
// norm (before clipping) and wall seconds. Threads: HEALTHGPT_THREADS (the default pool).
struct ManifestBenchResult {
    std::vector<double> loss, grad_norm, seconds;
    std::vector<double> cpu_seconds;  // process CPU time of each step (all threads; for a shared machine)
    int64_t rows_per_step = 0;   // sequence rows of all examples of a step (text + image)
    int64_t trainable = 0;       // values the optimiser updates
    double peak_rss_mib = 0;
};
ManifestBenchResult bench_train_manifest(const std::filesystem::path& manifest);

}  // namespace hg::train
