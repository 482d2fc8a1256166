#include "train/optimizer.h"

#include <cmath>

#include "core/error.h"

namespace hg {

AdamW::AdamW(ParamStore& store, AdamWConfig cfg) : store_(store), cfg_(std::move(cfg)) {
    HG_CHECK(!cfg_.groups.empty(), "AdamW: no parameter groups");
    HG_CHECK(cfg_.beta1 >= 0 && cfg_.beta1 < 1 && cfg_.beta2 >= 0 && cfg_.beta2 < 1,
             "AdamW: betas (%g, %g) must be in [0, 1)", cfg_.beta1, cfg_.beta2);
    HG_CHECK(cfg_.eps >= 0, "AdamW: eps %g is negative", cfg_.eps);
    for (const AdamWGroup& g : cfg_.groups)
        HG_CHECK(g.lr >= 0 && g.weight_decay >= 0, "AdamW: group %s has a negative lr (%g) or weight decay (%g)",
                 g.name.c_str(), g.lr, g.weight_decay);
    for (size_t i = 0; i < store_.size(); ++i)
        HG_CHECK(store_[i].group < static_cast<int>(cfg_.groups.size()),
                 "AdamW: parameter %s is in group %d, but only %zu groups are configured", store_[i].name.c_str(),
                 store_[i].group, cfg_.groups.size());
    for (const AdamWGroup& g : cfg_.groups) lr_.push_back(g.lr);
    state_.resize(store_.size());
    for (size_t i = 0; i < store_.size(); ++i) {
        state_[i].exp_avg.assign(store_[i].value.size(), 0.0f);
        state_[i].exp_avg_sq.assign(store_[i].value.size(), 0.0f);
    }
}

void AdamW::set_lr_multiplier(double m) {
    for (size_t g = 0; g < cfg_.groups.size(); ++g) lr_[g] = cfg_.groups[g].lr * m;
}

void AdamW::step() {
    HG_CHECK(state_.size() == store_.size(), "AdamW: the parameter store changed size (%zu -> %zu parameters)",
             state_.size(), store_.size());
    const double beta1 = cfg_.beta1, beta2 = cfg_.beta2;
    const float w1 = static_cast<float>(1 - beta1);    // lerp weight
    const bool w1_small = std::fabs(w1) < 0.5f;
    const float beta2_f = static_cast<float>(beta2);
    const float one_minus_beta2 = static_cast<float>(1 - beta2);
    const float eps_f = static_cast<float>(cfg_.eps);
    for (size_t i = 0; i < store_.size(); ++i) {
        Param& p = store_[i];
        AdamState& s = state_[i];
        const double lr = lr_[static_cast<size_t>(p.group)];
        const double wd = cfg_.groups[static_cast<size_t>(p.group)].weight_decay;
        s.step += 1;
        const double step = static_cast<double>(s.step);
        const float decay = static_cast<float>(1 - lr * wd);
        const double bc1 = 1 - std::pow(beta1, step);
        const double bc2 = 1 - std::pow(beta2, step);
        const float neg_step_size = static_cast<float>(-(lr / bc1));
        const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
        float* x = p.value.data();
        const float* g = p.grad.data();
        float* m = s.exp_avg.data();
        float* v = s.exp_avg_sq.data();
        const size_t n = p.value.size();
        for (size_t j = 0; j < n; ++j) {
            x[j] = x[j] * decay;
            // torch's lerp_vec: fmadd(coeff, end - start, base)
            const float diff = g[j] - m[j];
            m[j] = w1_small ? std::fma(w1, diff, m[j]) : std::fma(w1 - 1.0f, diff, g[j]);
            // torch's addcmul: self + (value * t1) * t2, contracted to one fused multiply-add
            v[j] = std::fma(one_minus_beta2 * g[j], g[j], v[j] * beta2_f);
            const float denom = std::sqrt(v[j]) / bc2_sqrt + eps_f;
            x[j] = x[j] + (neg_step_size * m[j]) / denom;
        }
    }
}

float clip_grad_norm(ParamStore& store, double max_norm) {
    // per-tensor norms (float32 results, as torch.linalg.vector_norm of a float tensor), then their norm
    double total_sq = 0;
    for (size_t i = 0; i < store.size(); ++i) {
        double s = 0;
        for (float x : store[i].grad) s += double(x) * double(x);
        const float norm_i = static_cast<float>(std::sqrt(s));
        total_sq += double(norm_i) * double(norm_i);
    }
    const float total = static_cast<float>(std::sqrt(total_sq));
    const float recip = 1.0f / (total + 1e-6f);
    float coef = recip * static_cast<float>(max_norm);
    if (!(coef <= 1.0f) && !std::isnan(coef)) coef = 1.0f;  // torch.clamp(max=1) keeps NaN
    for (size_t i = 0; i < store.size(); ++i)
        for (float& x : store[i].grad) x *= coef;
    return total;
}

}  // namespace hg
