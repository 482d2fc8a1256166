// AdamW and global-norm gradient clipping with PyTorch's arithmetic (torch 2.3.1,
// torch.optim.AdamW(foreach=False, amsgrad=False, maximize=False) on float32 CPU tensors, and
// torch.nn.utils.clip_grad_norm_), so a run here follows the same trajectory as the reference
// trainer to float32 rounding (tests/unit/train_optim_test.cpp compares against torch).
//
// One step for a parameter p with gradient g, in float32 per element, scalars computed in double
// as Python does and rounded to float where torch passes them to a float kernel:
//   step += 1                                        (per parameter)
//   p  *= float(1 - lr * wd)                         decoupled weight decay
//   m   = lerp(m, g, float(1 - beta1))               torch's lerp: w < 0.5 ? m + w (g - m) : g - (g - m)(1 - w), fused multiply-add
//   v   = fma(float(1 - beta2) * g, g, v * float(beta2))   torch's addcmul as its CPU kernel computes it
//   bc1 = 1 - beta1^step,  bc2 = 1 - beta2^step      (double)
//   denom = sqrt(v) / float(sqrt(bc2)) + float(eps)
//   p  += (float(-lr / bc1) * m) / denom
// Every operation but one is bit-identical to torch 2.3.1's CPU kernels (checked element by element
// while writing this): torch's float sqrt (MKL VML) is within 1 ulp but not correctly rounded, ours
// is std::sqrt, so trajectories agree to float rounding (train_optim_test.cpp states the errors).
// Every parameter of the store is stepped on every step() (torch skips parameters whose grad is
// None; every trainable parameter here has a gradient buffer, zero when nothing reached it).
//
// Parameter groups (torch's param_groups): each parameter's Param::group indexes `groups`; each
// group has its own base lr and weight decay (HealthGPT stage 3: H-LoRA and the projector).
// The current lr of a group is base_lr * multiplier (LambdaLR: set_lr_multiplier, schedule.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/param_store.h"

namespace hg {

struct AdamWGroup {
    std::string name;            // for messages and checkpoints ("hlora", "projector")
    double lr = 1e-3;            // base lr (torch's initial_lr)
    double weight_decay = 1e-2;  // torch's AdamW default
};

struct AdamWConfig {
    double beta1 = 0.9, beta2 = 0.999;
    double eps = 1e-8;
    std::vector<AdamWGroup> groups{AdamWGroup{}};
};

// The optimizer state of one parameter (torch's state[p]: step, exp_avg, exp_avg_sq).
struct AdamState {
    int64_t step = 0;
    std::vector<float> exp_avg;
    std::vector<float> exp_avg_sq;
};

class AdamW {
public:
    // State for every parameter of `store`, zero-initialised (torch's lazy init gives the same).
    // Throws when a parameter's group has no entry in cfg.groups. The store must outlive the
    // optimizer and must not gain parameters afterwards.
    AdamW(ParamStore& store, AdamWConfig cfg);

    const AdamWConfig& config() const { return cfg_; }
    // Current lr of each group = base lr * m (in double, as LambdaLR's base_lr * lambda(step)).
    void set_lr_multiplier(double m);
    double lr(int group) const { return lr_.at(static_cast<size_t>(group)); }

    // One update of every parameter from its accumulated gradient (gradients are not cleared).
    void step();

    // State, in the store's parameter order (checkpoints read and restore it).
    std::vector<AdamState>& state() { return state_; }
    const std::vector<AdamState>& state() const { return state_; }
    ParamStore& store() const { return store_; }

private:
    ParamStore& store_;
    AdamWConfig cfg_;
    std::vector<double> lr_;
    std::vector<AdamState> state_;
};

// torch.nn.utils.clip_grad_norm_(params, max_norm) over every gradient of the store (norm_type 2):
//   total = || (||g_1||, ..., ||g_n||) ||               float32 (each norm summed in double, rounded)
//   coef  = float(1 / (total + 1e-6)) * float(max_norm) (torch's scalar / tensor is reciprocal * scalar)
//   every g *= min(coef, 1)                               (a no-op multiply by 1 when not clipping)
// Returns the total norm before clipping. As torch (error_if_nonfinite=False), a non-finite norm
// still scales the gradients (to NaN); the caller may check the return value and skip the step.
float clip_grad_norm(ParamStore& store, double max_norm);

}  // namespace hg
