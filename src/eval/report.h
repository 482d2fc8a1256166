// Evaluation reports: per-item results and aggregate tables (overall, per answer type, question
// type, organ and modality), as JSON and as markdown. docs/EVALUATION.md defines every column.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/runner.h"

namespace hg::eval {

// Aggregate numbers of a set of items (fractions in [0, 1]; absent when no item counts).
//   closed_accuracy          ours, over every CLOSED item
//   open_recall/_exact/_f1   ours, over every OPEN item
//   llava_closed_accuracy    run_eval.py's "yes/no accuracy": hits / counted (llava_closed_counted)
//   llava_open_recall/_f1/_precision/_exact, llava_open_accuracy (with a candidate list)
//   mcq_accuracy             chosen option == answer over every MCQ item (mcq_unchosen: no option chosen)
//   ssim, psnr (over finite values), mse   IMAGE items
nlohmann::json aggregate(const std::vector<const ItemResult*>& items);

// The report: the run's header (model, hashes, options), counts, "overall", "by" tables for
// kind / question_type / organ / modality (those present), and every item.
nlohmann::json build_report(const RunResult& run);

// The same as markdown tables (what the JSON says, for a human and for docs/EVALUATION.md).
std::string report_markdown(const nlohmann::json& report);

}  // namespace hg::eval
