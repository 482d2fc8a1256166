// healthgpt eval: a model on a benchmark (VQA-RAD, SLAKE, PathVQA, multiple choice, or paired image
// generation), scored by our scorer and LLaVA-Med's (src/eval/, docs/EVALUATION.md). A thin shell:
// options -> eval::load_benchmark + eval::run_benchmark + eval::build_report.
// Output: -o REPORT.json, REPORT.md beside it, and the resumable per-item log REPORT.items.jsonl
// (Ctrl-C stops after writing what is done; the same command continues).
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>

#include "command.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "eval/benchmark.h"
#include "eval/progress.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "formats/atomic_file.h"
#include "runtime/model.h"

namespace {

namespace fs = std::filesystem;

struct EvalArgs {
    std::string model, bench, data, split = "test", out, plugin, instruction, answer_list, kv = "f16";
    size_t limit = 0;
    int64_t max_new_tokens = 32, ctx = 0;
    int threads = 0;
    bool blind = false, no_answer_list = false, verbose = false;
};

std::atomic<bool> g_stop{false};
void eval_on_sigint(int) {
    g_stop = true;
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process at once (the log stays whole)
}

// A report is replaced whole (temp + rename): a reader never sees half of one.
void write_text(const fs::path& p, const std::string& s) {
    hg::write_file_atomically(p, [&](int fd, const std::string& tmp) { hg::write_all(fd, s.data(), s.size(), tmp); });
}

int run_eval(const EvalArgs& a) {
    const auto kind = hg::eval::bench_from_name(a.bench);
    HG_CHECK(kind.has_value(), "--bench %s: expected vqa-rad, slake, pathvqa, mcq, recon, ct2mri or sr", a.bench.c_str());
    HG_CHECK(a.max_new_tokens > 0, "--max-new-tokens must be positive");
    HG_CHECK(a.kv == "f16" || a.kv == "f32", "--kv %s: expected f16 or f32", a.kv.c_str());

    // Data first: a bad data set fails before the model is loaded.
    hg::eval::LoadOptions lo;
    lo.split = a.split;
    lo.answer_list = a.answer_list;
    lo.no_answer_list = a.no_answer_list;
    const hg::eval::Benchmark bench = hg::eval::load_benchmark(*kind, a.data, lo);
    std::fprintf(stderr, "%s: %zu items from %s%s\n", hg::eval::bench_name(*kind), bench.items.size(),
                 bench.file.string().c_str(),
                 bench.answer_list.empty() ? "" : (", candidate answers " + bench.answer_list_file.string()).c_str());

    fs::path report = a.out.empty() ? fs::path(std::string("eval-") + hg::eval::bench_name(*kind) +
                                               (hg::eval::is_generation_bench(*kind) ? "" : "-" + a.split) +
                                               (a.blind ? "-blind" : "") + ".json")
                                    : fs::path(a.out);
    fs::path stem = report;
    stem.replace_extension();
    const fs::path log = stem.string() + ".items.jsonl", md = stem.string() + ".md";

    auto model = hg::Model::load(a.model);
    if (a.verbose) std::fprintf(stderr, "%s", model->describe().c_str());
    if (!model->notice().empty()) std::fprintf(stderr, "note: %s\n", model->notice().c_str());
    hg::ThreadPool pool(a.threads);

    hg::eval::RunOptions ro;
    ro.plugin = a.plugin;
    ro.max_new_tokens = a.max_new_tokens;
    ro.blind = a.blind;
    ro.instruction = a.instruction;
    ro.limit = a.limit;
    ro.n_ctx = a.ctx;
    ro.kv_type = a.kv == "f32" ? hg::DType::F32 : hg::DType::F16;
    ro.pool = &pool;
    ro.log_path = log;
    ro.stop_requested = [] { return g_stop.load(); };

    // The bar needs the resumed count, which the runner learns from the log: read it once here.
    const size_t n_sel = a.limit ? std::min(a.limit, bench.items.size()) : bench.items.size();
    size_t resumed = 0;
    {
        const auto prior = hg::eval::read_log(log, /*repair=*/false);
        std::set<std::string> sel;
        for (size_t i = 0; i < n_sel; ++i) sel.insert(bench.items[i].id);
        for (const auto& r : prior.items) resumed += sel.count(r.id);
    }
    if (resumed) std::fprintf(stderr, "resuming %s: %zu of %zu items already done\n", log.string().c_str(), resumed, n_sel);
    hg::eval::ProgressBar bar(stderr, n_sel, resumed);
    size_t n_ok = 0, n_seen = 0;
    ro.on_item = [&](const hg::eval::ItemResult& r, size_t done, size_t) {
        ++n_seen;
        n_ok += r.correct;
        std::string extra = r.kind == "IMAGE" ? "" : "correct " + std::to_string(n_ok) + "/" + std::to_string(n_seen);
        bar.update(done, extra);
    };

    std::signal(SIGINT, eval_on_sigint);
    const hg::eval::RunResult run = hg::eval::run_benchmark(model, bench, ro);
    std::signal(SIGINT, SIG_DFL);
    bar.finish();

    const nlohmann::json rep = hg::eval::build_report(run);
    write_text(report, rep.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    const std::string text = hg::eval::report_markdown(rep);
    write_text(md, text);
    std::printf("%s", text.c_str());
    std::fprintf(stderr, "%zu items run now (%.2f s/item), %zu from the log; report %s, %s; log %s\n", run.n_run,
                 run.n_run ? run.seconds_run / run.n_run : 0.0, run.n_resumed, report.string().c_str(),
                 md.string().c_str(), log.string().c_str());
    if (run.interrupted) {
        std::fprintf(stderr, "interrupted: %zu of %zu items done; run the same command again to continue\n",
                     run.items.size(), run.n_selected);
        return 130;
    }
    return 0;
}

}  // namespace

HG_COMMAND(eval, "Evaluate a model on VQA-RAD, SLAKE, PathVQA, multiple choice or image generation (resumable)") {
    auto a = std::make_shared<EvalArgs>();
    app.add_option("-m,--model", a->model, "model folder (text.gguf, vision.gguf, plugins/*.gguf)")->required();
    app.add_option("--bench", a->bench, "vqa-rad, slake, pathvqa, mcq (OmniMedVQA style), recon, ct2mri or sr")
        ->required();
    app.add_option("--data", a->data,
                   "the data folder (vqa-rad: testset.json + images/; slake: test.json + imgs/; pathvqa: qas/ + "
                   "images/; mcq: a JSON file; recon/ct2mri/sr: input/ + target/) or the question file")
        ->required();
    app.add_option("--split", a->split, "test, train, validate/val")->capture_default_str();
    app.add_option("--limit", a->limit, "only the first N items of the file (0: all)");
    app.add_option("-o,--output", a->out,
                   "report JSON (default eval-BENCH-SPLIT.json); REPORT.md and the resumable log REPORT.items.jsonl "
                   "go beside it");
    app.add_option("--plugin", a->plugin, "H-LoRA plugin (a file stem in MODEL/plugins/); default: the first "
                                          "comprehension plugin (generation benches: the first generation plugin)");
    app.add_option("-n,--max-new-tokens", a->max_new_tokens, "most tokens per answer (greedy)")->capture_default_str();
    app.add_option("-t,--threads", a->threads, "threads (default: one per physical core, HEALTHGPT_THREADS)");
    app.add_flag("--blind", a->blind,
                 "replace every image by a uniform gray one of the same size (does the model look at the image?)");
    app.add_option("--instruction", a->instruction,
                   "text appended to every question on a new line, e.g. \"Answer with a single word or phrase.\" "
                   "(mcq default: \"Answer with the option's letter from the given choices directly.\")");
    app.add_option("--answer-list", a->answer_list,
                   "candidate answers for LLaVA-Med's open accuracy (JSON list; vqa-rad default: DATA/answer_list.json)");
    app.add_flag("--no-answer-list", a->no_answer_list, "do not use a candidate answer list");
    app.add_option("--ctx", a->ctx, "context size in positions (default: the model's, at most 4096)");
    app.add_option("--kv", a->kv, "KV cache type: f16 or f32")->capture_default_str();
    app.add_flag("-v,--verbose", a->verbose, "describe the loaded model on stderr");
    app.footer("Scorers and their differences: docs/EVALUATION.md.");
    return [a] { return run_eval(*a); };
}
