#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace hg {

const char* schedule_kind_name(ScheduleKind k) {
    switch (k) {
        case ScheduleKind::Constant: return "constant";
        case ScheduleKind::ConstantWithWarmup: return "constant_with_warmup";
        case ScheduleKind::Linear: return "linear";
        case ScheduleKind::Cosine: return "cosine";
    }
    return "?";
}

std::optional<ScheduleKind> schedule_kind_from_name(std::string_view s) {
    for (ScheduleKind k : {ScheduleKind::Constant, ScheduleKind::ConstantWithWarmup, ScheduleKind::Linear, ScheduleKind::Cosine})
        if (s == schedule_kind_name(k)) return k;
    return std::nullopt;
}

double LrSchedule::multiplier(int64_t step) const {
    HG_CHECK(step >= 0 && warmup_steps >= 0 && total_steps >= 0, "lr schedule: negative step (%lld), warmup or total",
             (long long)step);
    if (kind == ScheduleKind::Constant) return 1.0;
    if (step < warmup_steps) {
        // constant_with_warmup divides by max(1.0, W), the others by max(1, W): the same value.
        return double(step) / double(std::max<int64_t>(1, warmup_steps));
    }
    const double denom = double(std::max<int64_t>(1, total_steps - warmup_steps));
    switch (kind) {
        case ScheduleKind::ConstantWithWarmup: return 1.0;
        case ScheduleKind::Linear: return std::max(0.0, double(total_steps - step) / denom);
        case ScheduleKind::Cosine: {
            const double progress = double(step - warmup_steps) / denom;
            // math.pi * float(num_cycles) * 2.0 * progress, left to right
            return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress)));
        }
        default: return 1.0;
    }
}

int64_t warmup_steps_from_ratio(int64_t total_steps, double ratio) {
    HG_CHECK(ratio >= 0 && ratio <= 1, "warmup ratio %g is not in [0, 1]", ratio);
    return static_cast<int64_t>(std::ceil(double(total_steps) * ratio));
}

}  // namespace hg
