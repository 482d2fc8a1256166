// Aggregation and rendering of evaluation results. See report.h.
#include "eval/report.h"

#include <cmath>
#include <cstdio>
#include <map>

namespace hg::eval {

using nlohmann::json;

json aggregate(const std::vector<const ItemResult*>& items) {
    json a;
    a["n"] = items.size();
    size_t nc = 0, nc_ok = 0, no = 0, nl_counted = 0, nl_hit = 0, nl_open_hit = 0, nm = 0, nm_ok = 0, nm_none = 0;
    size_t ni = 0, ni_psnr = 0;
    double o_rec = 0, o_ex = 0, o_f1 = 0, l_rec = 0, l_f1 = 0, l_p = 0, l_ex = 0, l_oa = 0, ssim = 0, psnr = 0, mse = 0;
    for (const ItemResult* r : items) {
        if (r->kind == "CLOSED") {
            ++nc, nc_ok += r->correct;
            if (r->llava_closed) ++nl_counted, nl_hit += *r->llava_closed;
        } else if (r->kind == "OPEN") {
            ++no, o_rec += r->recall, o_ex += r->exact, o_f1 += r->f1;
            l_rec += r->llava_recall, l_f1 += r->llava_f1, l_p += r->llava_precision, l_ex += r->llava_exact;
            if (r->llava_open_hit) ++nl_open_hit, l_oa += *r->llava_open_hit;
        } else if (r->kind == "MCQ") {
            ++nm, nm_ok += r->correct, nm_none += r->chosen < 0;
        } else if (r->kind == "IMAGE") {
            ++ni, ssim += r->ssim, mse += r->mse;
            if (std::isfinite(r->psnr)) ++ni_psnr, psnr += r->psnr;
        }
    }
    if (nc) {
        a["n_closed"] = nc;
        a["closed_accuracy"] = double(nc_ok) / nc;
        a["llava_closed_counted"] = nl_counted;
        a["llava_closed_dropped"] = nc - nl_counted;
        // run_eval.py: 0.0 when nothing was counted
        a["llava_closed_accuracy"] = nl_counted ? double(nl_hit) / nl_counted : 0.0;
    }
    if (no) {
        a["n_open"] = no;
        a["open_recall"] = o_rec / no, a["open_exact"] = o_ex / no, a["open_f1"] = o_f1 / no;
        a["llava_open_recall"] = l_rec / no, a["llava_open_f1"] = l_f1 / no, a["llava_open_precision"] = l_p / no;
        a["llava_open_exact"] = l_ex / no;
        if (nl_open_hit) a["llava_open_accuracy"] = l_oa / nl_open_hit;
    }
    if (nm) {
        a["n_mcq"] = nm;
        a["mcq_accuracy"] = double(nm_ok) / nm;
        a["mcq_unchosen"] = nm_none;
    }
    if (ni) {
        a["n_image"] = ni;
        a["ssim"] = ssim / ni, a["mse"] = mse / ni;
        a["psnr"] = ni_psnr ? json(psnr / ni_psnr) : json(nullptr);
        a["psnr_finite"] = ni_psnr;
    }
    return a;
}

json build_report(const RunResult& run) {
    json rep;
    rep["format"] = "healthgpt-eval-report/1";
    rep["run"] = run.header;
    rep["n_selected"] = run.n_selected;
    rep["n_scored"] = run.items.size();
    rep["n_resumed"] = run.n_resumed;
    rep["n_run"] = run.n_run;
    rep["complete"] = run.items.size() == run.n_selected;
    double secs = 0;
    int64_t tok = 0;
    for (const ItemResult& r : run.items) secs += r.seconds, tok += r.n_generated;
    rep["seconds_per_item"] = run.items.empty() ? 0.0 : secs / run.items.size();
    rep["generated_per_item"] = run.items.empty() ? 0.0 : double(tok) / run.items.size();

    std::vector<const ItemResult*> all;
    for (const ItemResult& r : run.items) all.push_back(&r);
    rep["overall"] = aggregate(all);
    json by = json::object();
    for (const char* field : {"kind", "question_type", "organ", "modality"}) {
        std::map<std::string, std::vector<const ItemResult*>> groups;
        for (const ItemResult* r : all) {
            if (std::string(field) == "kind") groups[r->kind].push_back(r);
            else if (auto it = r->meta.find(field); it != r->meta.end() && !it->second.empty()) groups[it->second].push_back(r);
        }
        if (groups.empty() || (groups.size() == 1 && std::string(field) != "kind")) continue;
        json t = json::object();
        for (const auto& [k, v] : groups) t[k] = aggregate(v);
        by[std::string(field) == "kind" ? "answer_type" : field] = t;
    }
    rep["by"] = by;
    json items = json::array();
    for (const ItemResult& r : run.items) items.push_back(item_to_json(r));
    rep["items"] = items;
    return rep;
}

namespace {

std::string pct(const json& a, const char* k) {
    if (!a.contains(k) || a[k].is_null()) return "–";
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", 100.0 * a[k].get<double>());
    return b;
}
std::string num(const json& a, const char* k, int prec) {
    if (!a.contains(k) || a[k].is_null()) return "–";
    char b[32];
    std::snprintf(b, sizeof b, "%.*f", prec, a[k].get<double>());
    return b;
}
std::string cnt(const json& a, const char* k) { return a.contains(k) ? std::to_string(a[k].get<size_t>()) : "0"; }

std::string table(const std::vector<std::pair<std::string, json>>& rows, const std::string& first) {
    bool vqa = false, mcq = false, img = false;
    for (const auto& [n, a] : rows) vqa |= a.contains("n_closed") || a.contains("n_open"), mcq |= a.contains("n_mcq"),
                                        img |= a.contains("n_image");
    std::string s;
    if (vqa) {
        s += "| " + first + " | n | closed n | closed acc | open n | open recall | open EM | open F1 | LLaVA-Med yes/no acc "
             "(counted/dropped) | LLaVA-Med open recall | LLaVA-Med open F1 | LLaVA-Med open acc |\n"
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for (const auto& [n, a] : rows)
            s += "| " + n + " | " + cnt(a, "n") + " | " + cnt(a, "n_closed") + " | " + pct(a, "closed_accuracy") + " | " +
                 cnt(a, "n_open") + " | " + pct(a, "open_recall") + " | " + pct(a, "open_exact") + " | " +
                 pct(a, "open_f1") + " | " + pct(a, "llava_closed_accuracy") +
                 (a.contains("n_closed") ? " (" + cnt(a, "llava_closed_counted") + "/" + cnt(a, "llava_closed_dropped") + ")"
                                         : "") +
                 " | " + pct(a, "llava_open_recall") + " | " + pct(a, "llava_open_f1") + " | " +
                 pct(a, "llava_open_accuracy") + " |\n";
    }
    if (mcq) {
        s += "| " + first + " | n | accuracy | no option chosen |\n|---|---:|---:|---:|\n";
        for (const auto& [n, a] : rows)
            s += "| " + n + " | " + cnt(a, "n") + " | " + pct(a, "mcq_accuracy") + " | " + cnt(a, "mcq_unchosen") + " |\n";
    }
    if (img) {
        s += "| " + first + " | n | SSIM | PSNR (dB) | MSE |\n|---|---:|---:|---:|---:|\n";
        for (const auto& [n, a] : rows)
            s += "| " + n + " | " + cnt(a, "n") + " | " + num(a, "ssim", 4) + " | " + num(a, "psnr", 2) + " | " +
                 num(a, "mse", 2) + " |\n";
    }
    return s;
}

}  // namespace

std::string report_markdown(const json& rep) {
    const json& run = rep["run"];
    std::string s = "# healthgpt eval: " + run.value("bench", std::string()) +
                    (run.value("split", std::string()).empty() ? "" : " (" + run.value("split", std::string()) + ")") + "\n\n";
    s += "- model: `" + run.value("model", std::string()) + "`, plugin `" + run.value("plugin", std::string()) + "`\n";
    for (const auto& [f, h] : run["files"].items()) s += "- " + f + " sha256 `" + h.get<std::string>() + "`\n";
    s += "- data: `" + run.value("data", std::string()) + "` (sha256 `" + run.value("data_sha256", std::string()) + "`)\n";
    s += "- greedy, max_new_tokens " + std::to_string(run.value("max_new_tokens", 0)) +
         (run.value("blind", false) ? ", **blind** (every image replaced by uniform gray)" : "") +
         (run.value("instruction", std::string()).empty() ? "" : ", instruction \"" + run["instruction"].get<std::string>() + "\"") +
         "\n";
    char line[160];
    std::snprintf(line, sizeof line, "- items scored %zu of %zu%s; %.3f s and %.1f generated tokens per item\n\n",
                  rep["n_scored"].get<size_t>(), rep["n_selected"].get<size_t>(),
                  rep["complete"].get<bool>() ? "" : " (**incomplete**: run again with the same -o to continue)",
                  rep["seconds_per_item"].get<double>(), rep["generated_per_item"].get<double>());
    s += line;
    s += "## Overall\n\n" + table({{"all", rep["overall"]}}, "set") + "\n";
    for (const auto& [field, groups] : rep["by"].items()) {
        std::vector<std::pair<std::string, json>> rows;
        for (const auto& [k, a] : groups.items()) rows.emplace_back(k, a);
        s += "## By " + field + "\n\n" + table(rows, field) + "\n";
    }
    if (rep["overall"].contains("n_closed") || rep["overall"].contains("n_open"))
        s += "Scorers: docs/EVALUATION.md. \"LLaVA-Med\" columns follow llava/eval/run_eval.py (microsoft/LLaVA-Med "
         "ad758b68) including its quirks: its yes/no accuracy leaves out closed items whose answer contains \"yes\" "
         "or \"no\" but not the truth (\"dropped\").\n";
    return s;
}

}  // namespace hg::eval
