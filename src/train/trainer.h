// The training loop: seeded data order, micro-batches with gradient accumulation, HF's loss
// normalisation, global-norm clipping, AdamW with a warmup schedule per parameter group, a JSONL
// log of every step, evaluation loss per epoch, checkpoints that resume bit for bit, and a stop
// on a non-finite loss that keeps the last good checkpoint.
//
// Semantics (transformers' Trainer, 4.41, as far as a CPU trainer needs them):
//   * an epoch visits every example once in the order permutation(seed, epoch) (dataset.h);
//   * a micro-batch is `batch` consecutive examples of that order (the last may be shorter); its
//     loss is the mean cross-entropy over all of its answer tokens (the examples together, as a
//     padded batch with -100 labels gives);
//   * an optimiser step accumulates `accum` micro-batches (fewer at the end of an epoch), each
//     scaled by 1 / (micro-batches in the step); the step's reported loss is that mean;
//   * steps per epoch = ceil(ceil(N / batch) / accum); total = epochs * that (or max_steps);
//   * lr of the k-th step = group lr * schedule.multiplier(k - 1) (LambdaLR), clipping before the
//     step, weight decay decoupled (AdamW).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "train/schedule.h"
#include "train/trainable_model.h"

namespace hg::train {

// Where the trainer gets examples: the dataset layer adapts its records to this.
class SampleSource {
public:
    virtual ~SampleSource() = default;
    virtual size_t size() const = 0;
    // Example i, with its images loaded and preprocessed for `model`. Throws hg::Error naming the
    // record on a bad one.
    virtual TrainSample get(size_t i, const TrainableModel& model) const = 0;
};

// An in-memory source (tests, small tools).
class VectorSource final : public SampleSource {
public:
    explicit VectorSource(std::vector<TrainSample> s) : samples_(std::move(s)) {}
    size_t size() const override { return samples_.size(); }
    TrainSample get(size_t i, const TrainableModel&) const override { return samples_.at(i); }

private:
    std::vector<TrainSample> samples_;
};

struct TrainOptions {
    int epochs = 1;
    int64_t max_steps = 0;      // > 0: stop after this many steps (and size the schedule to it)
    int batch = 1;              // examples per micro-batch
    int accum = 1;              // micro-batches per optimiser step
    double lr[kNumGroups] = {2e-4, 2e-5, 2e-5, 2e-4};  // hlora, projector, vision, decoder (§6 stage 3)
    double weight_decay = 0.0;  // HealthGPT: 0 in every stage
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    ScheduleKind schedule = ScheduleKind::Cosine;
    int64_t warmup_steps = -1;  // >= 0: exact; -1: from warmup_ratio
    double warmup_ratio = 0.03;
    double max_grad_norm = 1.0;  // <= 0: no clipping
    // Decoder activations kept between forward and backward, per example (MiB): blocks that fit
    // are not recomputed (a third less arithmetic each); beyond it, per-block checkpointing. The
    // results do not depend on it. 0: checkpoint every block (the least memory).
    int64_t activation_memory_mb = 2048;
    uint64_t seed = 42;          // data order
    std::filesystem::path log_jsonl;        // one JSON object per step (and per evaluation)
    std::filesystem::path checkpoint_path;  // where save_checkpoint() writes by default
    int64_t save_every = 0;                 // > 0: a checkpoint every this many steps
};

struct StepReport {
    int64_t step = 0, total_steps = 0;
    int epoch = 0;
    double loss = 0;           // mean token cross-entropy of the step
    double lr = 0;             // group 0's lr of this step (the first group that has parameters)
    double grad_norm = 0;      // before clipping
    int64_t tokens = 0;        // sequence rows processed in the step (text + image)
    int64_t target_tokens = 0;
    double seconds = 0;        // of the step
    double elapsed = 0, eta = 0;
    double tokens_per_second() const { return seconds > 0 ? (double)tokens / seconds : 0; }
};

struct EvalReport {
    int epoch = 0;
    int64_t step = 0;
    double loss = 0;           // mean token cross-entropy over the whole evaluation set
    int64_t target_tokens = 0;
    size_t examples = 0;
};

class Trainer {
public:
    Trainer(TrainableModel& model, const SampleSource& train, const TrainOptions& opt,
            const SampleSource* eval = nullptr);
    ~Trainer();

    int64_t total_steps() const { return total_steps_; }
    int64_t step() const { return step_; }
    int64_t steps_per_epoch() const { return steps_per_epoch_; }

    // Runs until the last step. on_step after every step: return false to stop early (Ctrl-C):
    // the caller then saves a checkpoint. on_eval after each epoch's evaluation (when an eval set
    // was given). Throws hg::Error on a non-finite loss or gradient norm, before the step is
    // applied, so the parameters and the last checkpoint stay those of the last good step.
    // Returns true when every step ran.
    bool run(const std::function<bool(const StepReport&)>& on_step = {},
             const std::function<void(const EvalReport&)>& on_eval = {});

    // Mean token cross-entropy over `data` (no gradients).
    EvalReport evaluate(const SampleSource& data);

    // Weights, optimiser state, step, data position and options in one file, written atomically.
    void save_checkpoint(const std::filesystem::path& path) const;
    // Continues from a checkpoint of the same model, parameters and options (checked).
    void resume(const std::filesystem::path& path);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    TrainableModel& model_;
    const SampleSource& train_;
    const SampleSource* eval_;
    TrainOptions opt_;
    int64_t steps_per_epoch_ = 0, total_steps_ = 0;
    int64_t step_ = 0;  // optimiser steps done
};

}  // namespace hg::train
