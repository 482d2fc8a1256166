// VQA-RAD and SLAKE -> LLaVA records. See vqa_import.h.
#include "train/vqa_import.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/error.h"

namespace hg::train {

namespace {

using nlohmann::json;

json read_json(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    HG_CHECK(f.good(), "%s: cannot open", p.string().c_str());
    std::ostringstream ss;
    ss << f.rdbuf();
    try {
        return json::parse(ss.str());
    } catch (const json::parse_error& e) {
        fail("%s: malformed JSON at byte %zu: %s", p.string().c_str(), static_cast<size_t>(e.byte), e.what());
    }
}

std::string as_text(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
    if (v.is_number_float() || v.is_boolean()) return v.dump();
    return "";
}

std::string trim(const std::string& s) {
    const char* ws = " \t\n\r\v\f";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string upper(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

struct Fields {
    const char* image;                                      // image file field
    std::vector<std::pair<const char*, const char*>> meta;  // (source field, meta key)
};

// One benchmark file: a list of objects, each a question about one image.
ImportResult import_list(const std::filesystem::path& json_path, const std::filesystem::path& image_folder,
                         const char* id_prefix, const Fields& f, const ImportOptions& opt,
                         const std::function<bool(const json&)>& keep) {
    const json doc = read_json(json_path);
    const std::string src = json_path.string();
    HG_CHECK(doc.is_array(), "%s: expected a JSON list of questions, found a %s", src.c_str(), doc.type_name());
    ImportResult out;
    out.image_folder = image_folder;
    for (size_t i = 0; i < doc.size(); ++i) {
        const json& e = doc[i];
        std::string reason, message;
        const std::string qid = e.is_object() && e.contains("qid") ? as_text(e["qid"]) : std::to_string(i);
        auto fail_entry = [&](const std::string& why, const std::string& msg) {
            if (!opt.skip_bad) fail("%s: entry %zu (qid %s): %s", src.c_str(), i, qid.c_str(), msg.c_str());
            ++out.skipped.by_reason[why];
        };
        if (!e.is_object()) { fail_entry("wrong type", "is not a JSON object"); continue; }
        if (!keep(e)) continue;
        bool ok = true;
        for (const char* k : {f.image, "question", "answer"}) {
            if (!e.contains(k)) { fail_entry("missing field", std::string("has no \"") + k + "\""); ok = false; break; }
            if (!e[k].is_string() && !e[k].is_number()) {
                fail_entry("wrong type", std::string("\"") + k + "\" is not a string"); ok = false; break;
            }
        }
        if (!ok) continue;
        const std::string image = as_text(e[f.image]), question = trim(as_text(e["question"])),
                          answer = trim(as_text(e["answer"]));
        if (image.empty() || question.empty() || answer.empty()) {
            fail_entry("missing field", "empty image name, question or answer");
            continue;
        }
        if (opt.check_images_exist && !std::filesystem::exists(image_folder / image)) {
            fail_entry("missing image", "image " + (image_folder / image).string() + " does not exist");
            continue;
        }
        LlavaRecord r;
        r.id = id_prefix + qid;
        r.images = {image};
        r.conversations = {{"human", std::string(text::kImageToken) + "\n" + question}, {"gpt", answer}};
        for (const auto& [field, key] : f.meta)
            if (e.contains(field) && !e[field].is_null()) r.meta[key] = trim(as_text(e[field]));
        if (r.meta.count("answer_type")) r.meta["answer_type"] = upper(r.meta["answer_type"]);
        out.records.push_back(std::move(r));
    }
    return out;
}

}  // namespace

ImportResult import_vqa_rad(const std::filesystem::path& json_path, const ImportOptions& opt) {
    const Fields f{"image_name",
                   {{"answer_type", "answer_type"}, {"question_type", "question_type"}, {"image_organ", "organ"},
                    {"phrase_type", "phrase_type"}, {"qid", "qid"}}};
    ImportResult r = import_list(json_path, json_path.parent_path() / "images", "vqarad-", f, opt,
                                 [](const json&) { return true; });
    for (LlavaRecord& rec : r.records) rec.meta["dataset"] = "vqa-rad";
    return r;
}

ImportResult import_slake(const std::filesystem::path& json_path, const ImportOptions& opt) {
    const Fields f{"img_name",
                   {{"answer_type", "answer_type"}, {"content_type", "question_type"}, {"location", "organ"},
                    {"modality", "modality"}, {"q_lang", "q_lang"}, {"base_type", "base_type"}, {"qid", "qid"},
                    {"img_id", "img_id"}}};
    const bool all = opt.all_languages;
    ImportResult r = import_list(json_path, json_path.parent_path() / "imgs", "slake-", f, opt, [all](const json& e) {
        return all || !e.contains("q_lang") || (e["q_lang"].is_string() && e["q_lang"].get<std::string>() == "en");
    });
    for (LlavaRecord& rec : r.records) rec.meta["dataset"] = "slake";
    return r;
}

}  // namespace hg::train
