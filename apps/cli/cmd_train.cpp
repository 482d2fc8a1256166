// healthgpt train: H-LoRA / projector / embedding / full fine-tuning of a HealthGPT model folder on
// LLaVA conversation data (train/trainer.h, docs/TRAINING.md). A progress line per step on stderr,
// a JSONL log, evaluation loss per epoch, Ctrl-C saves a checkpoint that --resume continues.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "command.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "train/llava_source.h"
#include "train/plugin_export.h"
#include "train/plugin_init.h"
#include "train/save_trained.h"
#include "train/trainer.h"

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

struct TrainArgs {
    std::string model, data, eval_data, image_folder, plugin = "com", out, resume, log, checkpoint, export_bin;
    int stage = 3;
    bool unfreeze_vision = false, full = false, skip_bad = false, new_plugin = false, lowercase_answers = false;
    int64_t rank = 64, experts = 4;
    double alpha = 128;
    double lr = -1, projector_lr = -1, vision_lr = -1, weight_decay = 0, max_grad_norm = 1.0;
    int64_t activation_memory_mb = 2048;
    int epochs = 1, batch = 1, accum = 1, max_seq = 2048;
    int64_t max_steps = 0, warmup = -1, save_every = 0;
    double warmup_ratio = 0.03;
    std::string schedule = "cosine", out_type = "f32";
    uint64_t seed = 42;
};

std::string fmt_time(double s) {
    char b[32];
    const long t = (long)(s + 0.5);
    if (t >= 3600) std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
    return b;
}

int run_train(const TrainArgs& a) {
    namespace fs = std::filesystem;
    using namespace hg::train;
    HG_CHECK(!a.out.empty(), "-o OUT is required: the trained plugin (.gguf), or a model folder with --full");
    const fs::path folder = a.model;

    // --- what is trained
    TrainSpec spec;
    if (a.full) {
        spec.decoder = true;
        spec.plugin = a.plugin == "none" ? "" : a.plugin;
        if (!spec.plugin.empty()) spec.hlora = spec.projector = true;
    } else {
        spec = TrainSpec::stage(a.stage, a.plugin);
    }
    spec.vision = a.unfreeze_vision;
    const fs::path plugin_file = folder / "plugins" / (spec.plugin + ".gguf");
    if (!spec.plugin.empty() && !fs::exists(plugin_file)) {
        HG_CHECK(a.new_plugin, "%s does not exist: pass --new-plugin to start one (rank %lld, alpha %g, %lld experts)",
                 plugin_file.string().c_str(), (long long)a.rank, a.alpha, (long long)a.experts);
        PluginInit init;
        init.rank = a.rank;
        init.alpha = a.alpha;
        init.experts = (int)a.experts;
        init.seed = a.seed;
        write_new_plugin(folder, plugin_file, init);
        std::fprintf(stderr, "train: new plugin %s (rank %lld, alpha %g, %lld experts, seed %llu)\n",
                     plugin_file.string().c_str(), (long long)a.rank, a.alpha, (long long)a.experts,
                     (unsigned long long)a.seed);
    }
    auto tm = TrainableModel::load(folder, spec);
    std::fprintf(stderr, "train: %lld trainable values in %zu tensors (", (long long)tm->params().total_numel(),
                 tm->params().size());
    for (int g = 0; g < kNumGroups; ++g) {
        int64_t n = 0;
        for (size_t i = 0; i < tm->params().size(); ++i)
            if (tm->params()[i].group == g) n += tm->params()[i].numel();
        if (n) std::fprintf(stderr, " %s %lld", group_name(g), (long long)n);
    }
    std::fprintf(stderr, " )\n");

    // --- data
    LlavaSourceOptions so;
    so.image_folder = a.image_folder;
    so.max_seq = a.max_seq;
    so.skip_bad = a.skip_bad;
    so.lowercase_answers = a.lowercase_answers;
    auto train = make_llava_source(a.data, *tm, so);
    std::unique_ptr<SampleSource> eval;
    if (!a.eval_data.empty()) eval = make_llava_source(a.eval_data, *tm, so);
    std::fprintf(stderr, "train: %zu examples from %s%s\n", train->size(), a.data.c_str(),
                 eval ? (", " + std::to_string(eval->size()) + " for evaluation").c_str() : "");

    // --- options (HealthGPT §6: H-LoRA 2e-4, adapter 2e-5; stage 1's adapter 1e-3)
    TrainOptions o;
    const double base_lr = a.lr > 0 ? a.lr : a.full ? 1e-3 : 2e-4;
    o.lr[kGroupHLora] = base_lr;
    o.lr[kGroupDecoder] = base_lr;
    o.lr[kGroupProjector] = a.projector_lr > 0 ? a.projector_lr : a.stage == 1 && !a.full ? 1e-3 : 2e-5;
    o.lr[kGroupVision] = a.vision_lr > 0 ? a.vision_lr : 2e-5;
    o.weight_decay = a.weight_decay;
    o.epochs = a.epochs;
    o.batch = a.batch;
    o.accum = a.accum;
    o.max_steps = a.max_steps;
    o.warmup_steps = a.warmup;
    o.warmup_ratio = a.warmup_ratio;
    auto kind = hg::schedule_kind_from_name(a.schedule);
    HG_CHECK(kind.has_value(), "--schedule %s: one of constant, constant_with_warmup, linear, cosine", a.schedule.c_str());
    o.schedule = *kind;
    o.max_grad_norm = a.max_grad_norm;
    o.activation_memory_mb = a.activation_memory_mb;
    o.seed = a.seed;
    o.log_jsonl = a.log.empty() ? fs::path(a.out).string() + ".log.jsonl" : a.log;
    o.checkpoint_path = a.checkpoint.empty() ? fs::path(a.out).string() + ".ckpt" : a.checkpoint;
    o.save_every = a.save_every;

    Trainer trainer(*tm, *train, o, eval.get());
    if (!a.resume.empty()) {
        trainer.resume(a.resume);
        std::fprintf(stderr, "train: resumed %s at step %lld\n", a.resume.c_str(), (long long)trainer.step());
    }
    std::fprintf(stderr, "train: %lld steps (%lld per epoch), log %s, %d threads\n", (long long)trainer.total_steps(),
                 (long long)trainer.steps_per_epoch(), o.log_jsonl.string().c_str(), hg::default_pool().size());

    g_interrupted = false;
    auto old = std::signal(SIGINT, on_sigint);
    const bool done = trainer.run(
        [&](const StepReport& r) {
            std::fprintf(stderr, "\rstep %lld/%lld  epoch %d  loss %.4f  lr %.3g  |g| %.3g  %.0f tok/s  %s elapsed, ETA %s   ",
                         (long long)r.step, (long long)r.total_steps, r.epoch, r.loss, r.lr, r.grad_norm,
                         r.tokens_per_second(), fmt_time(r.elapsed).c_str(), fmt_time(r.eta).c_str());
            std::fflush(stderr);
            return !g_interrupted.load();
        },
        [](const EvalReport& e) {
            std::fprintf(stderr, "\nepoch %d: eval loss %.4f over %lld answer tokens of %zu examples\n", e.epoch, e.loss,
                         (long long)e.target_tokens, e.examples);
        });
    std::signal(SIGINT, old);
    std::fprintf(stderr, "\n");
    if (!done) {
        trainer.save_checkpoint(o.checkpoint_path);
        std::fprintf(stderr, "train: stopped at step %lld; checkpoint %s (continue with --resume %s)\n",
                     (long long)trainer.step(), o.checkpoint_path.string().c_str(), o.checkpoint_path.string().c_str());
        return 130;
    }

    // --- outputs: the trained plugin (or files), and a final checkpoint
    SaveTrainedOptions st;
    st.type = a.out_type == "bf16" ? hg::DType::BF16 : a.out_type == "f16" ? hg::DType::F16 : hg::DType::F32;
    HG_CHECK(a.out_type == "f32" || a.out_type == "f16" || a.out_type == "bf16", "--out-type %s: f32, f16 or bf16",
             a.out_type.c_str());
    st.set_strings = {{"healthgpt.train.data", a.data}, {"healthgpt.train.steps", std::to_string(trainer.step())}};
    if (a.full) {
        const fs::path out_dir = a.out;
        HG_CHECK(fs::absolute(out_dir) != fs::absolute(folder), "-o %s: write a new model folder, not over the input",
                 a.out.c_str());
        fs::create_directories(out_dir / "plugins");
        for (const char* f : {"text", "vision"}) {
            const fs::path src = folder / (std::string(f) + ".gguf");
            if (fs::exists(src)) save_trained_file(src, tm->params_of(f), out_dir / (std::string(f) + ".gguf"), st);
        }
        if (!spec.plugin.empty())
            save_trained_file(plugin_file, tm->params_of("plugins/" + spec.plugin),
                              out_dir / "plugins" / (spec.plugin + ".gguf"), st);
        std::fprintf(stderr, "train: wrote the model folder %s\n", out_dir.string().c_str());
    } else {
        if (!tm->params_of("plugins/" + spec.plugin).empty())
            save_trained_file(plugin_file, tm->params_of("plugins/" + spec.plugin), a.out, st);
        if (spec.vision || (spec.embeddings && !tm->params_of("text").empty()))
            std::fprintf(stderr, "train: note: trained text/vision tensors are in the checkpoint %s; use --full to "
                                 "write a model folder\n", o.checkpoint_path.string().c_str());
        std::fprintf(stderr, "train: wrote %s (run it with: healthgpt ask -m MODEL --plugin ... after copying it "
                             "into MODEL/plugins/)\n", a.out.c_str());
        if (!a.export_bin.empty()) {
            // The reference's com_hlora_weights.bin layout, so the plugin also runs in the Python HealthGPT.
            auto trained = hg::GGUFFile::open(a.out);
            hg::PluginExportOptions eo;
            eo.hlora_out = a.export_bin;
            eo.fusion_out = fs::path(a.export_bin).parent_path() / "fusion_layer_weights.bin";
            eo.type = st.type;
            std::error_code ec;
            if (fs::path(a.export_bin).has_parent_path()) fs::create_directories(fs::path(a.export_bin).parent_path(), ec);
            const hg::PluginExportResult r = hg::export_plugin(*trained, eo);
            std::fprintf(stderr, "train: exported %zu tensors to %s (the reference's key layout)\n", r.hlora_tensors,
                         a.export_bin.c_str());
        }
    }
    trainer.save_checkpoint(o.checkpoint_path);
    return 0;
}

}  // namespace

HG_COMMAND(train, "Fine-tune H-LoRA plugins (HealthGPT's stages 1-3), the vision tower or a whole small model") {
    auto a = std::make_shared<TrainArgs>();
    app.add_option("-m,--model", a->model, "model folder (text.gguf, vision.gguf, plugins/)")->required();
    app.add_option("--data", a->data, "training data: LLaVA conversation JSON, or a VQA-RAD/SLAKE question file")
        ->required();
    app.add_option("--eval-data", a->eval_data, "evaluation data (same formats): loss after every epoch");
    app.add_option("--image-folder", a->image_folder, "folder the records' image paths are relative to (default: "
                                                      "the data file's folder; VQA-RAD: its images/)");
    app.add_option("--stage", a->stage, "1: projector (alignment), 2: embeddings + head, 3: H-LoRA + projector")
        ->capture_default_str();
    app.add_option("--plugin", a->plugin, "plugin to train (MODEL/plugins/NAME.gguf)")->capture_default_str();
    app.add_flag("--new-plugin", a->new_plugin, "create the plugin if it does not exist (--rank/--alpha/--experts)");
    app.add_option("--rank", a->rank, "new plugin: total H-LoRA rank")->capture_default_str();
    app.add_option("--alpha", a->alpha, "new plugin: H-LoRA alpha (scaling alpha*experts/rank)")->capture_default_str();
    app.add_option("--experts", a->experts, "new plugin: experts per linear")->capture_default_str();
    app.add_flag("--lowercase-answers", a->lowercase_answers,
                 "lower-case the answers (ASCII) before training: VQA-RAD writes the same answer as \"No\" and \"no\"");
    app.add_flag("--unfreeze-vision", a->unfreeze_vision, "also train the vision tower");
    app.add_flag("--full", a->full, "train every decoder weight (a small model); -o is then a model folder");
    app.add_option("--lr", a->lr, "learning rate of H-LoRA / decoder weights (default 2e-4; --full 1e-3)");
    app.add_option("--projector-lr", a->projector_lr, "learning rate of the projector (default 2e-5; stage 1: 1e-3)");
    app.add_option("--vision-lr", a->vision_lr, "learning rate of the vision tower (default 2e-5)");
    app.add_option("--weight-decay", a->weight_decay, "AdamW decoupled weight decay")->capture_default_str();
    app.add_option("--epochs", a->epochs, "passes over the data")->capture_default_str();
    app.add_option("--max-steps", a->max_steps, "stop after this many optimiser steps (0: epochs decide)");
    app.add_option("--batch", a->batch, "examples per micro-batch")->capture_default_str();
    app.add_option("--accum", a->accum, "micro-batches per optimiser step (gradient accumulation)")->capture_default_str();
    app.add_option("--max-seq", a->max_seq, "longest example in positions (image rows included)")->capture_default_str();
    app.add_option("--warmup", a->warmup, "warm-up steps (default: --warmup-ratio of the total)");
    app.add_option("--warmup-ratio", a->warmup_ratio, "warm-up share of the steps")->capture_default_str();
    app.add_option("--schedule", a->schedule, "constant, constant_with_warmup, linear or cosine")->capture_default_str();
    app.add_option("--max-grad-norm", a->max_grad_norm, "global gradient-norm clipping (0: off)")->capture_default_str();
    app.add_option("--activation-memory", a->activation_memory_mb,
                   "MiB of decoder activations kept per example between forward and backward (blocks beyond it are "
                   "recomputed: activation checkpointing); results identical; 0: checkpoint every block")
        ->capture_default_str();
    app.add_option("--seed", a->seed, "data order (and a new plugin's initial values)")->capture_default_str();
    app.add_flag("--skip-bad", a->skip_bad, "skip (and count) unreadable records instead of stopping");
    app.add_option("--resume", a->resume, "continue from a training checkpoint (same options)");
    app.add_option("--checkpoint", a->checkpoint, "checkpoint file (default OUT.ckpt)");
    app.add_option("--save-every", a->save_every, "also save the checkpoint every N steps");
    app.add_option("--log", a->log, "JSONL log of every step (default OUT.log.jsonl)");
    app.add_option("--out-type", a->out_type, "type of the trained tensors in the output: f32, f16, bf16")
        ->capture_default_str();
    app.add_option("--export-bin", a->export_bin,
                   "also write the trained plugin as the reference's com_hlora_weights.bin (PyTorch zip)");
    app.add_option("-o,--out", a->out, "the trained plugin .gguf (or, with --full, a model folder)")->required();
    return [a] { return run_train(*a); };
}
