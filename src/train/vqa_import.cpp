// VQA-RAD, SLAKE and PathVQA -> LLaVA records. See vqa_import.h.
#include "train/vqa_import.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/error.h"
#include "formats/pickle.h"

namespace hg::train {

namespace {

using nlohmann::json;

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
    std::vector<std::string> image_suffixes = {""};         // tried in order until a file exists
};

// One benchmark file: a list of objects, each a question about one image.
ImportResult import_list(const json& doc, const std::filesystem::path& json_path,
                         const std::filesystem::path& image_folder, const char* id_prefix, const Fields& f,
                         const ImportOptions& opt, const std::function<bool(const json&)>& keep) {
    const std::string src = json_path.string();
    HG_CHECK(doc.is_array(), "%s: expected a JSON list of questions, found a %s", src.c_str(), doc.type_name());
    ImportResult out;
    out.image_folder = image_folder;
    for (size_t i = 0; i < doc.size(); ++i) {
        const json& e = doc[i];
        std::string reason, message;
        const std::string qid = e.is_object() && e.contains("qid") ? json_text(e["qid"]) : std::to_string(i);
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
        std::string image = json_text(e[f.image]);
        const std::string question = trim(json_text(e["question"])), answer = trim(json_text(e["answer"]));
        if (image.empty() || question.empty() || answer.empty()) {
            fail_entry("missing field", "empty image name, question or answer");
            continue;
        }
        if (opt.check_images_exist) {
            bool found = false;
            for (const std::string& suffix : f.image_suffixes)
                if (std::filesystem::exists(image_folder / (image + suffix))) {
                    image += suffix, found = true;
                    break;
                }
            if (!found) {
                fail_entry("missing image", "image " + (image_folder / image).string() +
                                                (f.image_suffixes.size() > 1 ? "{.jpg,.png,.jpeg,}" : "") +
                                                " does not exist");
                continue;
            }
        }
        LlavaRecord r;
        r.id = id_prefix + qid;
        r.source_index = i;
        r.images = {image};
        r.conversations = {{"human", std::string(text::kImageToken) + "\n" + question}, {"gpt", answer}};
        for (const auto& [field, key] : f.meta)
            if (e.contains(field) && !e[field].is_null()) r.meta[key] = trim(json_text(e[field]));
        if (r.meta.count("answer_type")) r.meta["answer_type"] = upper(r.meta["answer_type"]);
        out.records.push_back(std::move(r));
    }
    return out;
}

}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& p) {
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

std::string json_text(const nlohmann::json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
    if (v.is_number_float() || v.is_boolean()) return v.dump();
    return "";
}


ImportResult import_vqa_rad(const std::filesystem::path& json_path, const ImportOptions& opt) {
    const Fields f{"image_name",
                   {{"answer_type", "answer_type"}, {"question_type", "question_type"}, {"image_organ", "organ"},
                    {"phrase_type", "phrase_type"}, {"qid", "qid"}}};
    ImportResult r = import_list(read_json_file(json_path), json_path, json_path.parent_path() / "images", "vqarad-", f,
                                 opt, [](const json&) { return true; });
    for (LlavaRecord& rec : r.records) rec.meta["dataset"] = "vqa-rad";
    return r;
}

ImportResult import_slake(const std::filesystem::path& json_path, const ImportOptions& opt) {
    const Fields f{"img_name",
                   {{"answer_type", "answer_type"}, {"content_type", "question_type"}, {"location", "organ"},
                    {"modality", "modality"}, {"q_lang", "q_lang"}, {"base_type", "base_type"}, {"qid", "qid"},
                    {"img_id", "img_id"}}};
    const bool all = opt.all_languages;
    ImportResult r = import_list(read_json_file(json_path), json_path, json_path.parent_path() / "imgs", "slake-", f, opt,
                                 [all](const json& e) {
        return all || !e.contains("q_lang") || (e["q_lang"].is_string() && e["q_lang"].get<std::string>() == "en");
    });
    for (LlavaRecord& rec : r.records) rec.meta["dataset"] = "slake";
    return r;
}

namespace {

// A pickled value tree of plain data (what pickle.dump of a list of dicts of strings writes) as JSON.
json py_to_json(PyRef o, const std::string& src) {
    switch (o->kind) {
        case PyKind::None: return nullptr;
        case PyKind::Bool: return o->b;
        case PyKind::Int: return o->i;
        case PyKind::Float: return o->f;
        case PyKind::Str: return o->s;
        case PyKind::List:
        case PyKind::Tuple: {
            json a = json::array();
            for (PyRef it : o->items) a.push_back(py_to_json(it, src));
            return a;
        }
        case PyKind::Dict: {
            json d = json::object();
            for (const auto& [k, v] : o->entries) {
                HG_CHECK(k->kind == PyKind::Str, "%s: a dict key is a %s, expected a string", src.c_str(),
                         py_kind_name(k->kind));
                d[k->s] = py_to_json(v, src);
            }
            return d;
        }
        default: fail("%s: unexpected %s in a question list (expected plain lists, dicts and strings)", src.c_str(),
                      py_kind_name(o->kind));
    }
}

json read_pickle_as_json(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    HG_CHECK(f.good(), "%s: cannot open", p.string().c_str());
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    PyArena arena;
    arena.name = p.string();
    const PickleResult r = unpickle(bytes, arena, PicklePolicy::Strict);
    return py_to_json(r.root, p.string());
}

}  // namespace

ImportResult import_pathvqa(const std::filesystem::path& qa_path, const ImportOptions& opt) {
    // pvqa/qas/<split>/<split>_qa.pkl -> pvqa/images/<split>/
    const std::filesystem::path split_dir = qa_path.parent_path();
    const std::string split = split_dir.filename().string();
    const std::filesystem::path images = split_dir.parent_path().parent_path() / "images" / split;
    const json doc = qa_path.extension() == ".pkl" ? read_pickle_as_json(qa_path) : read_json_file(qa_path);
    Fields f{"image", {{"answer_type", "answer_type"}, {"question_type", "question_type"}}, {".jpg", ".png", ".jpeg", ""}};
    // No qid in the release: number the entries ("test-17") before the common path names them.
    json numbered = doc;
    if (numbered.is_array())
        for (size_t i = 0; i < numbered.size(); ++i)
            if (numbered[i].is_object() && !numbered[i].contains("qid")) numbered[i]["qid"] = split + "-" + std::to_string(i);
    ImportResult r = import_list(numbered, qa_path, images, "pathvqa-", f, opt, [](const json&) { return true; });
    for (LlavaRecord& rec : r.records) {
        rec.meta["dataset"] = "pathvqa";
        if (!rec.meta.count("answer_type")) {
            std::string a = rec.conversations[1].value;
            for (char& c : a) c = (char)std::tolower((unsigned char)c);
            rec.meta["answer_type"] = (a == "yes" || a == "no") ? "CLOSED" : "OPEN";
        }
    }
    return r;
}

}  // namespace hg::train
