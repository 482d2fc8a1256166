#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/gguf.h"
#include "train/checkpoint.h"
#include "train/dataset.h"
#include "train/optimizer.h"

namespace hg::train {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

nlohmann::json options_json(const TrainOptions& o) {
    nlohmann::json j;
    j["epochs"] = o.epochs;
    j["max_steps"] = o.max_steps;
    j["batch"] = o.batch;
    j["accum"] = o.accum;
    j["lr"] = std::vector<double>(o.lr, o.lr + kNumGroups);
    j["weight_decay"] = o.weight_decay;
    j["betas"] = {o.beta1, o.beta2};
    j["eps"] = o.eps;
    j["schedule"] = schedule_kind_name(o.schedule);
    j["warmup_steps"] = o.warmup_steps;
    j["warmup_ratio"] = o.warmup_ratio;
    j["max_grad_norm"] = o.max_grad_norm;
    j["seed"] = o.seed;
    return j;
}

}  // namespace

struct Trainer::Impl {
    std::unique_ptr<AdamW> opt;
    LrSchedule schedule;
    std::ofstream log;
    Clock::time_point t0 = Clock::now();
    double elapsed_before = 0;  // seconds of the run before a resume
};

Trainer::Trainer(TrainableModel& model, const SampleSource& train, const TrainOptions& opt, const SampleSource* eval)
    : impl_(std::make_unique<Impl>()), model_(model), train_(train), eval_(eval), opt_(opt) {
    HG_CHECK(train.size() > 0, "training: the training set is empty");
    HG_CHECK(opt.batch >= 1 && opt.accum >= 1 && opt.epochs >= 1, "training: batch %d, accum %d, epochs %d must be >= 1",
             opt.batch, opt.accum, opt.epochs);
    HG_CHECK(model.params().size() > 0, "training: no trainable parameters");
    HG_CHECK(opt.activation_memory_mb >= 0, "training: activation memory %lld MiB must be >= 0",
             (long long)opt.activation_memory_mb);
    model.set_activation_memory((size_t)opt.activation_memory_mb << 20);
    const int64_t micro = ((int64_t)train.size() + opt.batch - 1) / opt.batch;
    steps_per_epoch_ = (micro + opt.accum - 1) / opt.accum;
    total_steps_ = opt.max_steps > 0 ? std::min<int64_t>(opt.max_steps, steps_per_epoch_ * opt.epochs)
                                     : steps_per_epoch_ * opt.epochs;
    impl_->schedule.kind = opt.schedule;
    impl_->schedule.total_steps = total_steps_;
    impl_->schedule.warmup_steps =
        opt.warmup_steps >= 0 ? opt.warmup_steps : warmup_steps_from_ratio(total_steps_, opt.warmup_ratio);

    AdamWConfig cfg;
    cfg.beta1 = opt.beta1;
    cfg.beta2 = opt.beta2;
    cfg.eps = opt.eps;
    cfg.groups.assign((size_t)kNumGroups, AdamWGroup{});
    for (int g = 0; g < kNumGroups; ++g) {
        cfg.groups[(size_t)g].name = group_name(g);
        cfg.groups[(size_t)g].lr = opt.lr[g];
        cfg.groups[(size_t)g].weight_decay = opt.weight_decay;
    }
    impl_->opt = std::make_unique<AdamW>(model.params(), cfg);
    if (!opt.log_jsonl.empty()) {
        impl_->log.open(opt.log_jsonl, std::ios::app);
        HG_CHECK(impl_->log.good(), "%s: cannot open the training log", opt.log_jsonl.string().c_str());
    }
}

Trainer::~Trainer() = default;

EvalReport Trainer::evaluate(const SampleSource& data) {
    EvalReport r;
    double sum = 0;
    for (size_t i = 0; i < data.size(); ++i) {
        const TrainSample s = data.get(i, model_);
        int64_t nv = 0;
        sum += model_.loss_and_grad(s, 1.0f, &nv, /*backward=*/false);
        r.target_tokens += nv;
    }
    r.examples = data.size();
    r.loss = r.target_tokens > 0 ? sum / (double)r.target_tokens : 0.0;
    r.step = step_;
    return r;
}

bool Trainer::run(const std::function<bool(const StepReport&)>& on_step,
                  const std::function<void(const EvalReport&)>& on_eval) {
    ParamStore& ps = model_.params();
    impl_->t0 = Clock::now();
    const int64_t start_step = step_;
    const int64_t micro_per_epoch = ((int64_t)train_.size() + opt_.batch - 1) / opt_.batch;
    int first_group = 0;
    for (int g = kNumGroups - 1; g >= 0; --g)
        for (size_t i = 0; i < ps.size(); ++i)
            if (ps[i].group == g) first_group = g;

    while (step_ < total_steps_) {
        const int epoch = (int)(step_ / steps_per_epoch_);
        const int64_t step_in_epoch = step_ % steps_per_epoch_;
        const std::vector<size_t> order = permutation(train_.size(), opt_.seed, (uint64_t)epoch);
        const auto t_step = Clock::now();

        // --- one optimiser step: accumulate its micro-batches
        const int64_t m0 = step_in_epoch * opt_.accum;
        const int64_t m1 = std::min<int64_t>(m0 + opt_.accum, micro_per_epoch);
        const float micro_scale = 1.0f / (float)(m1 - m0);
        ps.zero_grad();
        StepReport rep;
        double step_loss = 0;
        for (int64_t m = m0; m < m1; ++m) {
            const size_t e0 = (size_t)(m * opt_.batch);
            const size_t e1 = std::min(train_.size(), e0 + (size_t)opt_.batch);
            std::vector<TrainSample> batch;
            int64_t n_targets = 0;
            for (size_t e = e0; e < e1; ++e) {
                batch.push_back(train_.get(order[e], model_));
                n_targets += TrainableModel::count_targets(model_.targets(batch.back()));
            }
            HG_CHECK(n_targets > 0, "step %lld: micro-batch %lld has no answer tokens (every label is -100)",
                     (long long)(step_ + 1), (long long)m);
            double sum = 0;
            for (const TrainSample& s : batch) {
                int64_t nv = 0;
                sum += model_.loss_and_grad(s, micro_scale / (float)n_targets, &nv);
                rep.tokens += model_.sequence_length(s);
            }
            rep.target_tokens += n_targets;
            step_loss += sum / (double)n_targets * micro_scale;
        }
        rep.step = step_ + 1;
        rep.total_steps = total_steps_;
        rep.epoch = epoch;
        rep.loss = step_loss;
        rep.grad_norm = ps.grad_norm();
        if (!std::isfinite(rep.loss) || !std::isfinite(rep.grad_norm))
            fail("step %lld: the loss is %g and the gradient norm %g: training stopped before applying the step "
                 "(the parameters and the last checkpoint are those of step %lld; lower the learning rate or check "
                 "the data)",
                 (long long)rep.step, rep.loss, rep.grad_norm, (long long)step_);

        // --- clip, schedule, AdamW, refresh the components' copies
        if (opt_.max_grad_norm > 0) clip_grad_norm(ps, opt_.max_grad_norm);
        const double mult = impl_->schedule.multiplier(step_);
        impl_->opt->set_lr_multiplier(mult);
        impl_->opt->step();
        model_.sync();
        ++step_;

        rep.lr = opt_.lr[first_group] * mult;
        rep.seconds = seconds_since(t_step);
        rep.elapsed = impl_->elapsed_before + seconds_since(impl_->t0);
        const double per_step = seconds_since(impl_->t0) / (double)std::max<int64_t>(1, step_ - start_step);
        rep.eta = per_step * (double)(total_steps_ - step_);
        if (impl_->log.is_open()) {
            nlohmann::json j = {{"step", rep.step},       {"epoch", rep.epoch},   {"loss", rep.loss},
                                {"lr", rep.lr},           {"grad_norm", rep.grad_norm},
                                {"tokens", rep.tokens},   {"target_tokens", rep.target_tokens},
                                {"seconds", rep.seconds}, {"tokens_per_second", rep.tokens_per_second()}};
            impl_->log << j.dump() << "\n" << std::flush;
        }
        const bool end_of_epoch = step_ % steps_per_epoch_ == 0 || step_ == total_steps_;
        if (end_of_epoch && eval_) {
            EvalReport er = evaluate(*eval_);
            er.epoch = epoch;
            if (impl_->log.is_open()) {
                nlohmann::json j = {{"eval_epoch", er.epoch}, {"step", er.step}, {"eval_loss", er.loss},
                                    {"eval_tokens", er.target_tokens}, {"eval_examples", er.examples}};
                impl_->log << j.dump() << "\n" << std::flush;
            }
            if (on_eval) on_eval(er);
        }
        if (opt_.save_every > 0 && step_ % opt_.save_every == 0 && !opt_.checkpoint_path.empty())
            save_checkpoint(opt_.checkpoint_path);
        if (on_step && !on_step(rep)) return step_ == total_steps_;
    }
    return true;
}

void Trainer::save_checkpoint(const std::filesystem::path& path) const {
    TrainProgress pr;
    pr.global_step = (uint64_t)step_;
    pr.epoch = (uint64_t)(step_ / steps_per_epoch_);
    pr.rng_state = {opt_.seed};  // the data order is a function of (seed, epoch): nothing else to keep
    pr.config_json = options_json(opt_).dump();
    hg::save_checkpoint(path, *impl_->opt, pr);
}

void Trainer::resume(const std::filesystem::path& path) {
    // Check the options before anything changes: load_checkpoint restores in place.
    auto f = GGUFFile::open(path);
    const std::string want = options_json(opt_).dump();
    const std::string have = f->get_string("healthgpt.train.config").value_or("");
    HG_CHECK(have == want, "%s: the checkpoint was made with other training options:\n  checkpoint %s\n  now        %s",
             path.string().c_str(), have.c_str(), want.c_str());
    f.reset();
    const TrainProgress pr = hg::load_checkpoint(path, *impl_->opt);
    HG_CHECK(pr.global_step <= (uint64_t)total_steps_, "%s: checkpoint step %llu past the run's %lld steps",
             path.string().c_str(), (unsigned long long)pr.global_step, (long long)total_steps_);
    step_ = (int64_t)pr.global_step;
    model_.sync();
}

}  // namespace hg::train
