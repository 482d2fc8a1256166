// Learning-rate schedules as Hugging Face transformers defines them (optimization.py, 4.41): the
// multiplier LambdaLR applies to each group's base lr, as a function of the scheduler step.
//
//   warmup (all three, step < W):  step / max(1, W)
//   constant_with_warmup:          1
//   linear:                        max(0, (T - step) / max(1, T - W))
//   cosine (num_cycles c = 0.5):   p = (step - W) / max(1, T - W);  max(0, 0.5 * (1 + cos(pi * c * 2 * p)))
//
// Evaluated in double exactly as the Python expressions (same operation order), so the values are
// bit-identical to transformers' lambdas. LambdaLR semantics: the lr used by the k-th optimizer
// step (k = 1, 2, ...) is base_lr * multiplier(k - 1); the training loop calls
//   opt.set_lr_multiplier(schedule.multiplier(step)); opt.step(); ++step;
// HealthGPT's scripts use cosine with warmup_ratio 0.03: W = warmup_steps_from_ratio(T, 0.03).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hg {

enum class ScheduleKind { Constant, ConstantWithWarmup, Linear, Cosine };
const char* schedule_kind_name(ScheduleKind k);                       // "constant", "constant_with_warmup", "linear", "cosine"
std::optional<ScheduleKind> schedule_kind_from_name(std::string_view s);  // those names (transformers' lr_scheduler_type)

struct LrSchedule {
    ScheduleKind kind = ScheduleKind::Cosine;
    int64_t warmup_steps = 0;   // W
    int64_t total_steps = 0;    // T (num_training_steps; unused by the constant kinds)
    double num_cycles = 0.5;    // cosine only

    double multiplier(int64_t step) const;
};

// TrainingArguments.get_warmup_steps: ceil(total_steps * ratio) (ratio in [0, 1]).
int64_t warmup_steps_from_ratio(int64_t total_steps, double ratio);

}  // namespace hg
