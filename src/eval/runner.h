// Running a benchmark through a model, one item at a time, resumably.
//
//   auto bench = hg::eval::load_benchmark(BenchKind::vqa_rad, "../shared/data/vqa-rad");
//   hg::eval::RunOptions opt;             // greedy, 32 new tokens, the first comprehension plugin
//   opt.log_path = "report.items.jsonl";  // appended + flushed per item; a rerun continues it
//   hg::eval::RunResult r = hg::eval::run_benchmark(model, bench, opt);
//
// The log (JSON Lines): line 1 is a header naming what produced it (bench, split, the question
// file's and every model file's SHA-256, the plugin, --blind, max_new_tokens, the instruction);
// every further line is one scored item (ItemResult). On a rerun with the same log:
//   * a header that differs in any of those fields -> hg::Error saying which (never mixed results);
//   * a last line without its newline or that does not parse (the process died mid-write) is
//     dropped and the file cut back to the last whole line; a damaged line elsewhere is an error;
//   * items already in the log are not run again; an id the benchmark does not have is an error.
// Items run grouped by image (questions about one image share its vision features), each as a
// fresh one-turn conversation with greedy decoding.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "eval/benchmark.h"
#include "imaging/image.h"
#include "runtime/model.h"

namespace hg {
class ThreadPool;
}

namespace hg::eval {

struct ItemResult {
    std::string id;
    size_t source_index = 0;
    std::string kind;  // CLOSED | OPEN | MCQ | IMAGE
    std::string question, answer, prediction;
    std::map<std::string, std::string> meta;
    double seconds = 0;
    int64_t n_generated = 0;
    // ours
    bool correct = false;                // CLOSED: closed_correct; MCQ: chosen == answer_option; OPEN: exact
    bool exact = false;                  // normalised exact match
    double f1 = 0, precision = 0, recall = 0;  // OPEN: token scores
    // LLaVA-Med run_eval.py
    std::optional<int> llava_closed;     // CLOSED: 1 / 0 / not counted
    double llava_f1 = 0, llava_precision = 0, llava_recall = 0, llava_exact = 0;  // OPEN
    std::optional<double> llava_open_hit;  // OPEN, with a candidate list
    // MCQ
    int chosen = -1, answer_option = -1;
    // IMAGE
    double ssim = 0, psnr = 0, mse = 0;  // psnr +inf for identical images (null in JSON)
    std::string output;                  // the generated PNG
};

nlohmann::json item_to_json(const ItemResult& r);
// Throws hg::Error (naming `where`) when a field is missing or of the wrong type.
ItemResult item_from_json(const nlohmann::json& j, const std::string& where);

// Scores a prediction for a VQA or MCQ item.
ItemResult score_item(const EvalItem& item, const std::string& prediction, std::span<const std::string> answer_list);

struct RunOptions {
    std::string plugin;              // empty: the model's first comprehension (or generation) plugin
    int64_t max_new_tokens = 32;     // VQA answers are short
    bool blind = false;              // every image replaced by a uniform gray one of the same size
    std::string instruction;         // appended to each question on a new line (empty: none)
    size_t limit = 0;                // the first `limit` items of the file (0: all)
    int64_t n_ctx = 0;               // KV positions (0: the session default)
    DType kv_type = DType::F16;
    ThreadPool* pool = nullptr;
    std::filesystem::path log_path;  // required: the resumable per-item log
    std::filesystem::path image_dir; // generation: where the generated PNGs go (default: log + ".images")
    // After each item: the result, items done (resumed included) and the total.
    std::function<void(const ItemResult&, size_t done, size_t total)> on_item;
    // Polled between items and during generation; true: stop cleanly (the current item is not logged).
    std::function<bool()> stop_requested;
};

struct RunResult {
    std::vector<ItemResult> items;  // the selected items that have a result, in file order
    size_t n_selected = 0;          // items selected (limit applied)
    size_t n_resumed = 0;           // taken from the log
    size_t n_run = 0;               // run now
    bool interrupted = false;
    double seconds_run = 0;         // wall time of the items run now
    nlohmann::json header;          // the log's header
};

// The header a run with these inputs writes (hashes the model files, the question file).
nlohmann::json log_header(const Model& model, const Benchmark& bench, const RunOptions& opt);

RunResult run_benchmark(std::shared_ptr<const Model> model, const Benchmark& bench, const RunOptions& opt);

// The blind ablation's image: uniform gray (128) of the same size.
imaging::RgbImage blind_image(const imaging::RgbImage& like);

// The prompt text of an item (question, MCQ options, instruction).
std::string item_prompt(const EvalItem& item, const std::string& instruction);

// Reads a log: its header and items; drops (and cuts off) a torn last line. Throws on damage.
struct LogContents {
    nlohmann::json header;  // null when the file is empty or absent
    std::vector<ItemResult> items;
    bool dropped_torn_line = false;
};
LogContents read_log(const std::filesystem::path& path, bool repair);

}  // namespace hg::eval
