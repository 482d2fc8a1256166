// Training throughput of the decoder with an H-LoRA plugin (HealthGPT's stage 3 on its dominant
// cost): random embeddings for T rows (an image's 576 + the text), the loss on the last `answer`
// rows, the forward with checkpointed blocks, its recomputation and the backward (dX through the
// frozen base of any stored type, dW of every H-LoRA tensor). The vision tower is frozen in stage 3:
// its forward is the inference cost `bench img` measures. Prints nothing; the CLI makes the table.
#pragma once
#include <cstdint>
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
