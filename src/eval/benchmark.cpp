// Benchmark loaders. See benchmark.h.
#include "eval/benchmark.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "eval/metrics.h"
#include "train/vqa_import.h"

namespace hg::eval {

namespace fs = std::filesystem;
using nlohmann::json;

std::optional<BenchKind> bench_from_name(std::string_view n) {
    if (n == "vqa-rad" || n == "vqarad") return BenchKind::vqa_rad;
    if (n == "slake") return BenchKind::slake;
    if (n == "pathvqa" || n == "path-vqa") return BenchKind::pathvqa;
    if (n == "mcq" || n == "omnimedvqa") return BenchKind::mcq;
    if (n == "recon") return BenchKind::recon;
    if (n == "ct2mri") return BenchKind::ct2mri;
    if (n == "sr") return BenchKind::sr;
    return std::nullopt;
}

const char* bench_name(BenchKind k) {
    switch (k) {
        case BenchKind::vqa_rad: return "vqa-rad";
        case BenchKind::slake: return "slake";
        case BenchKind::pathvqa: return "pathvqa";
        case BenchKind::mcq: return "mcq";
        case BenchKind::recon: return "recon";
        case BenchKind::ct2mri: return "ct2mri";
        case BenchKind::sr: return "sr";
    }
    return "?";
}

bool is_generation_bench(BenchKind k) { return k == BenchKind::recon || k == BenchKind::ct2mri || k == BenchKind::sr; }

namespace {


std::string trim(std::string s) {
    const char* ws = " \t\n\r\v\f";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

fs::path first_existing(const fs::path& dir, std::initializer_list<const char*> names) {
    for (const char* n : names)
        if (fs::exists(dir / n)) return dir / n;
    return dir / *names.begin();
}

std::vector<EvalItem> from_records(const train::ImportResult& r) {
    std::vector<EvalItem> out;
    for (const train::LlavaRecord& rec : r.records) {
        EvalItem it;
        it.id = rec.id;
        it.source_index = rec.source_index;
        std::string q = rec.conversations.at(0).value;
        const std::string tag = "<image>\n";
        if (q.rfind(tag, 0) == 0) q = q.substr(tag.size());
        it.question = q;
        it.answer = rec.conversations.at(1).value;
        for (const std::string& im : rec.images) it.images.push_back(r.image_folder / im);
        it.meta = rec.meta;
        auto at = it.meta.find("answer_type");
        it.kind = at != it.meta.end() && at->second == "CLOSED" ? "CLOSED" : "OPEN";
        out.push_back(std::move(it));
    }
    return out;
}

// OmniMedVQA-style multiple choice.
std::vector<EvalItem> load_mcq(const fs::path& file) {
    const json doc = train::read_json_file(file);
    const std::string src = file.string();
    HG_CHECK(doc.is_array(), "%s: expected a JSON list of questions, found a %s", src.c_str(), doc.type_name());
    std::vector<EvalItem> out;
    for (size_t i = 0; i < doc.size(); ++i) {
        const json& e = doc[i];
        std::string id = std::to_string(i);
        if (e.is_object())
            for (const char* k : {"question_id", "qid", "id"})
                if (e.contains(k) && !train::json_text(e[k]).empty()) { id = train::json_text(e[k]); break; }
        auto bad = [&](const std::string& msg) { fail("%s: entry %zu (id %s): %s", src.c_str(), i, id.c_str(), msg.c_str()); };
        if (!e.is_object()) bad("is not a JSON object");
        EvalItem it;
        it.id = "mcq-" + id;
        it.source_index = i;
        it.kind = "MCQ";
        if (!e.contains("question") || trim(train::json_text(e["question"])).empty()) bad("has no \"question\"");
        it.question = trim(train::json_text(e["question"]));
        // options: option_A.. (OmniMedVQA), or "options" as a list / {"A": ...}
        if (e.contains("options")) {
            const json& o = e["options"];
            if (o.is_array()) {
                for (const json& x : o) it.options.push_back(trim(train::json_text(x)));
            } else if (o.is_object()) {
                for (char L = 'A'; L <= 'Z'; ++L) {
                    const std::string k(1, L);
                    if (!o.contains(k)) break;
                    it.options.push_back(trim(train::json_text(o[k])));
                }
            } else {
                bad("\"options\" is neither a list nor an object");
            }
        } else {
            for (char L = 'A'; L <= 'Z'; ++L) {
                const std::string k = std::string("option_") + L;
                if (!e.contains(k) || e[k].is_null()) break;
                it.options.push_back(trim(train::json_text(e[k])));
            }
        }
        if (it.options.size() < 2) bad("has fewer than two options (option_A, option_B, ... or \"options\")");
        for (size_t k = 0; k < it.options.size(); ++k)
            if (it.options[k].empty()) bad(std::string("option ") + char('A' + k) + " is empty");
        // ground truth: a letter or an option's text
        std::string gt;
        for (const char* k : {"gt_answer", "answer"})
            if (e.contains(k)) { gt = trim(train::json_text(e[k])); break; }
        if (gt.empty()) bad("has no \"gt_answer\" / \"answer\"");
        if (gt.size() == 1 && gt[0] >= 'A' && gt[0] < char('A' + it.options.size())) {
            it.answer_option = gt[0] - 'A';
        } else {
            for (size_t k = 0; k < it.options.size() && it.answer_option < 0; ++k)
                if (it.options[k] == gt) it.answer_option = (int)k;
            for (size_t k = 0; k < it.options.size() && it.answer_option < 0; ++k)
                if (normalize_answer(it.options[k]) == normalize_answer(gt)) it.answer_option = (int)k;
        }
        if (it.answer_option < 0) {
            std::string opts;
            for (size_t k = 0; k < it.options.size(); ++k) opts += (k ? ", " : "") + std::string(1, char('A' + k)) + " \"" + it.options[k] + "\"";
            bad("the answer \"" + gt + "\" matches none of the options (" + opts + ")");
        }
        it.answer = it.options[it.answer_option];
        std::string image;
        for (const char* k : {"image_path", "image", "img_name"})
            if (e.contains(k)) { image = train::json_text(e[k]); break; }
        if (image.empty()) bad("has no \"image_path\" / \"image\"");
        const fs::path ip = file.parent_path() / image;
        if (!fs::exists(ip)) bad("image " + ip.string() + " does not exist");
        it.images.push_back(ip);
        const std::pair<const char*, const char*> meta[] = {{"question_type", "question_type"}, {"modality_type", "modality"},
                                                            {"modality", "modality"}, {"dataset", "dataset"},
                                                            {"organ", "organ"}};
        for (const auto& [field, key] : meta)
            if (e.contains(field) && !train::json_text(e[field]).empty()) it.meta[key] = trim(train::json_text(e[field]));
        out.push_back(std::move(it));
    }
    return out;
}

bool is_image_name(const fs::path& p) {
    std::string e = p.extension().string();
    for (char& c : e) c = (char)std::tolower((unsigned char)c);
    return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".bmp" || e == ".tif" || e == ".tiff" || e == ".dcm" ||
           e == ".nii" || e == ".gz";
}

std::vector<EvalItem> load_pairs(const fs::path& dir) {
    const fs::path in = dir / "input", tg = dir / "target";
    HG_CHECK(fs::is_directory(in) && fs::is_directory(tg), "%s: expected the folders input/ and target/ (same file names)",
             dir.string().c_str());
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(in))
        if (e.is_regular_file() && is_image_name(e.path())) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    HG_CHECK(!names.empty(), "%s: no images", in.string().c_str());
    std::vector<EvalItem> out;
    for (size_t i = 0; i < names.size(); ++i) {
        // A target may be stored as PNG for a DICOM input: same stem, any image extension.
        fs::path t = tg / names[i];
        if (!fs::exists(t)) {
            const std::string stem = fs::path(names[i]).stem().string();
            for (const char* ext : {".png", ".jpg", ".jpeg", ".bmp"})
                if (fs::exists(tg / (stem + ext))) { t = tg / (stem + ext); break; }
        }
        HG_CHECK(fs::exists(t), "%s: item %zu (%s): no target image %s", dir.string().c_str(), i, names[i].c_str(),
                 (tg / names[i]).string().c_str());
        EvalItem it;
        it.id = names[i];
        it.source_index = i;
        it.kind = "IMAGE";
        it.images = {in / names[i]};
        it.target = t;
        out.push_back(std::move(it));
    }
    return out;
}

}  // namespace

fs::path question_file(BenchKind kind, const fs::path& data, const std::string& split) {
    if (fs::is_regular_file(data)) return data;
    HG_CHECK(fs::is_directory(data), "%s: no such file or folder", data.string().c_str());
    const std::string s = split == "val" || split == "validation" ? "validate" : split;
    switch (kind) {
        case BenchKind::vqa_rad:
            HG_CHECK(s == "test" || s == "train", "--split %s: VQA-RAD has test and train", split.c_str());
            return data / (s == "test" ? "testset.json" : "trainset.json");
        case BenchKind::slake:
            HG_CHECK(s == "test" || s == "train" || s == "validate", "--split %s: SLAKE has test, validate and train",
                     split.c_str());
            return data / (s + ".json");
        case BenchKind::pathvqa: {
            const std::string p = s == "validate" ? "val" : s;
            HG_CHECK(p == "test" || p == "train" || p == "val", "--split %s: PathVQA has test, val and train",
                     split.c_str());
            const fs::path dir = data / "qas" / p;
            return first_existing(dir, {(p + "_qa.pkl").c_str(), (p + "_qa.json").c_str()});
        }
        case BenchKind::mcq: return data / (split + ".json");
        default: return data;
    }
}

std::vector<std::string> read_answer_list(const fs::path& path) {
    json doc = train::read_json_file(path);
    if (doc.is_object() && doc.contains("0")) doc = doc["0"];  // LLaVA-Med's candidate.json
    HG_CHECK(doc.is_array(), "%s: expected a JSON list of candidate answers (or {\"0\": [...]})", path.string().c_str());
    std::vector<std::string> out;
    for (size_t i = 0; i < doc.size(); ++i) {
        HG_CHECK(doc[i].is_string() || doc[i].is_number(), "%s: entry %zu is a %s, expected a string", path.string().c_str(),
                 i, doc[i].type_name());
        out.push_back(train::json_text(doc[i]));
    }
    HG_CHECK(!out.empty(), "%s: the candidate answer list is empty", path.string().c_str());
    return out;
}

Benchmark load_benchmark(BenchKind kind, const fs::path& data, const LoadOptions& opt) {
    Benchmark b;
    b.kind = kind;
    b.split = opt.split;
    if (is_generation_bench(kind)) {
        b.file = data;
        b.items = load_pairs(data);
        return b;
    }
    b.file = question_file(kind, data, opt.split);
    HG_CHECK(fs::exists(b.file), "%s: not found (the %s question file for split %s)", b.file.string().c_str(),
             bench_name(kind), opt.split.c_str());
    switch (kind) {
        case BenchKind::vqa_rad: b.items = from_records(train::import_vqa_rad(b.file)); break;
        case BenchKind::slake: b.items = from_records(train::import_slake(b.file)); break;
        case BenchKind::pathvqa: b.items = from_records(train::import_pathvqa(b.file)); break;
        case BenchKind::mcq: b.items = load_mcq(b.file); break;
        default: break;
    }
    HG_CHECK(!b.items.empty(), "%s: no questions", b.file.string().c_str());
    std::set<std::string> ids;
    for (const EvalItem& it : b.items)
        HG_CHECK(ids.insert(it.id).second, "%s: entry %zu: the id %s occurs twice (ids key the resumable log)",
                 b.file.string().c_str(), it.source_index, it.id.c_str());

    // The candidate answer list, checked against the open answers.
    if (!opt.no_answer_list) {
        b.answer_list_file = opt.answer_list;
        if (b.answer_list_file.empty() && kind == BenchKind::vqa_rad && fs::exists(b.file.parent_path() / "answer_list.json"))
            b.answer_list_file = b.file.parent_path() / "answer_list.json";
    }
    if (!b.answer_list_file.empty()) {
        b.answer_list = read_answer_list(b.answer_list_file);
        std::set<std::string> norm;
        for (const std::string& a : b.answer_list) norm.insert(llava::normalize_word(a));
        for (const EvalItem& it : b.items) {
            if (it.kind != "OPEN") continue;
            // run_eval.py compares normalize_word(normalize_word(lower(gt))) with normalize_word(candidate)
            std::string g = it.answer;
            for (char& c : g) c = (char)std::tolower((unsigned char)c);
            g = llava::normalize_word(llava::normalize_word(g));
            HG_CHECK(norm.count(g), "%s does not match %s: entry %zu (id %s) has the answer \"%s\", which is not in the "
                     "list (its open accuracy could never be 1); give the list made for this data (--answer-list) or "
                     "--no-answer-list",
                     b.answer_list_file.string().c_str(), b.file.string().c_str(), it.source_index, it.id.c_str(),
                     it.answer.c_str());
        }
    }
    return b;
}

}  // namespace hg::eval
