// LLaVA conversation JSON -> training examples. See dataset.h for the semantics we follow.
#include "train/dataset.h"

#include "formats/atomic_file.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <fstream>
#include <random>
#include <sstream>

#include "core/error.h"

namespace hg::train {

namespace {

using nlohmann::json;

// Thrown inside the reader for one bad record: the reason is the SkipReport key.
struct BadRecord {
    std::string reason;
    std::string message;
};

[[noreturn]] void bad(const std::string& reason, const std::string& message) { throw BadRecord{reason, message}; }

std::string read_whole_file(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    HG_CHECK(f.good(), "%s: cannot open the data file", p.string().c_str());
    std::ostringstream ss;
    ss << f.rdbuf();
    HG_CHECK(!f.bad(), "%s: read error", p.string().c_str());
    return ss.str();
}

std::string scalar_to_string(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
    if (v.is_number_float()) return v.dump();
    if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
    return v.dump();
}

// Python's str.strip() for the ASCII whitespace LLaVA data contains.
std::string strip_ws(const std::string& s) {
    const char* ws = " \t\n\r\v\f";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return "";
    const size_t e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

size_t count_images(const std::string& s) {
    size_t n = 0;
    for (size_t p = s.find(text::kImageToken); p != std::string::npos; p = s.find(text::kImageToken, p + 1)) ++n;
    return n;
}

// LLaVA preprocess_multimodal: "<image>" moved to the front, followed by "\n".
std::string move_images_to_front(const std::string& value, size_t* n_images) {
    *n_images = count_images(value);
    if (*n_images == 0) return value;
    std::string rest;
    const std::string tag = text::kImageToken;
    size_t pos = 0;
    for (size_t p = value.find(tag); p != std::string::npos; p = value.find(tag, pos)) {
        rest += value.substr(pos, p - pos);
        pos = p + tag.size();
    }
    rest += value.substr(pos);
    std::string out;
    for (size_t k = 0; k < *n_images; ++k) out += tag + std::string("\n");
    return out + strip_ws(rest);
}

LlavaRecord parse_record(const json& r) {
    if (!r.is_object()) bad("wrong type", "is not a JSON object");
    LlavaRecord rec;
    if (r.contains("id")) {
        const json& id = r["id"];
        if (!id.is_string() && !id.is_number()) bad("wrong type", "\"id\" is not a string or number");
        rec.id = scalar_to_string(id);
    }
    if (r.contains("image") && !r["image"].is_null()) {
        const json& im = r["image"];
        if (im.is_string()) {
            rec.images.push_back(im.get<std::string>());
        } else if (im.is_array()) {
            for (const json& p : im) {
                if (!p.is_string()) bad("wrong type", "\"image\" list holds a non-string");
                rec.images.push_back(p.get<std::string>());
            }
        } else {
            bad("wrong type", "\"image\" is not a string or a list of strings");
        }
        for (const std::string& p : rec.images)
            if (p.empty()) bad("wrong type", "\"image\" holds an empty path");
    }
    if (!r.contains("conversations")) bad("missing field", "has no \"conversations\"");
    const json& conv = r["conversations"];
    if (!conv.is_array()) bad("wrong type", "\"conversations\" is not a list");
    for (size_t j = 0; j < conv.size(); ++j) {
        const json& t = conv[j];
        if (!t.is_object()) bad("wrong type", "conversations[" + std::to_string(j) + "] is not an object");
        if (!t.contains("from") || !t.contains("value"))
            bad("missing field", "conversations[" + std::to_string(j) + "] lacks \"from\" or \"value\"");
        if (!t["from"].is_string() || !t["value"].is_string())
            bad("wrong type", "conversations[" + std::to_string(j) + "]: \"from\" and \"value\" must be strings");
        rec.conversations.push_back({t["from"].get<std::string>(), t["value"].get<std::string>()});
    }
    for (auto it = r.begin(); it != r.end(); ++it) {
        if (it.key() == "id" || it.key() == "image" || it.key() == "conversations") continue;
        if (it->is_primitive() && !it->is_null()) rec.meta[it.key()] = scalar_to_string(*it);
    }
    return rec;
}

// The human/gpt turns as ChatTurns (images moved to the front), checked.
std::vector<text::ChatTurn> chat_turns(const LlavaRecord& rec) {
    std::vector<LlavaTurn> c = rec.conversations;
    if (!c.empty() && c[0].from != "human") c.erase(c.begin());  // LLaVA: source = source[1:]
    if (c.empty()) bad("missing field", "has no human/gpt turns");
    std::vector<text::ChatTurn> turns;
    size_t n_images = 0;
    for (size_t j = 0; j < c.size(); ++j) {
        const char* want = j % 2 == 0 ? "human" : "gpt";
        if (c[j].from != want)
            bad("roles", "turn " + std::to_string(j) + " is from \"" + c[j].from + "\", expected \"" + want +
                             "\" (turns alternate human, gpt)");
        if (c[j].value.empty()) bad("missing field", "turn " + std::to_string(j) + " has an empty value");
        if (j % 2 == 0) {
            size_t n = 0;
            text::ChatTurn t;
            t.question = move_images_to_front(c[j].value, &n);
            // build_prompt prepends "<image>\n" per image itself
            t.question = t.question.substr(n * (std::string(text::kImageToken).size() + 1));
            t.n_images = static_cast<int>(n);
            n_images += n;
            turns.push_back(std::move(t));
        } else {
            if (count_images(c[j].value)) bad("image count", "a gpt turn contains \"<image>\"");
            turns.back().answer = c[j].value;
        }
    }
    if (!turns.back().answer) bad("roles", "ends with a human turn that has no gpt answer");
    if (n_images != rec.images.size())
        bad("image count", std::to_string(n_images) + " \"<image>\" tag(s) for " + std::to_string(rec.images.size()) +
                               " image(s)");
    return turns;
}

struct TemplateStrings {
    const char* system;
    const char* role_user;
    const char* role_assistant;
    const char* sep_user;       // closes a user message
    const char* sep_assistant;  // closes an answer: part of the targets
};

TemplateStrings template_strings(text::ChatTemplate t) {
    switch (t) {
        case text::ChatTemplate::phi3_instruct:
            return {"<|system|>\nYou are a helpful AI assistant.", "\n<|user|>\n", "\n<|assistant|>\n", "<|end|>", "<|end|>"};
        case text::ChatTemplate::phi4_instruct:
            return {"<|im_start|>system<|im_sep|>\nYou are a medieval knight and must provide explanations to modern people.",
                    "\n<|im_start|>user<|im_sep|>\n", "\n<|im_start|>assistant<|im_sep|>\n", "<|im_end|>", "<|im_end|>"};
        case text::ChatTemplate::qwen_2:
            return {"<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                    "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n", "<|im_end|>\n"};
    }
    fail("unknown chat template");
}

}  // namespace

size_t SkipReport::total() const {
    size_t n = 0;
    for (const auto& [k, v] : by_reason) n += v;
    return n;
}

std::string SkipReport::summary() const {
    if (total() == 0) return "none skipped";
    std::string s = std::to_string(total()) + " skipped (";
    bool first = true;
    for (const auto& [k, v] : by_reason) {
        s += (first ? "" : ", ") + k + " " + std::to_string(v);
        first = false;
    }
    return s + ")";
}

std::vector<LlavaRecord> parse_llava_json(const std::string& text, const std::string& source, bool skip_bad,
                                          SkipReport* skipped) {
    json doc;
    try {
        doc = json::parse(text);
    } catch (const json::parse_error& e) {
        fail("%s: malformed JSON at byte %zu: %s", source.c_str(), static_cast<size_t>(e.byte), e.what());
    }
    HG_CHECK(doc.is_array(), "%s: a LLaVA data file is a JSON list of records, this is a %s", source.c_str(),
             doc.type_name());
    std::vector<LlavaRecord> out;
    out.reserve(doc.size());
    for (size_t i = 0; i < doc.size(); ++i) {
        try {
            LlavaRecord rec = parse_record(doc[i]);
            rec.source_index = i;
            chat_turns(rec);  // structure checks
            out.push_back(std::move(rec));
        } catch (const BadRecord& b) {
            std::string id = doc[i].is_object() && doc[i].contains("id") ? scalar_to_string(doc[i]["id"]) : "?";
            if (!skip_bad) fail("%s: record %zu (id %s): %s", source.c_str(), i, id.c_str(), b.message.c_str());
            if (skipped) ++skipped->by_reason[b.reason];
        }
    }
    return out;
}

LlavaDataset LlavaDataset::load(const std::filesystem::path& json_path, const DatasetOptions& options) {
    LlavaDataset d;
    d.source_ = json_path.string();
    d.options_ = options;
    if (d.options_.image_folder.empty()) d.options_.image_folder = json_path.parent_path();
    d.records_ = parse_llava_json(read_whole_file(json_path), d.source_, options.skip_bad, &d.skipped_);
    // from_records does the image-existence pass; reuse it on the parsed records
    LlavaDataset checked = checked_records(std::move(d.records_), d.options_, d.source_);
    for (const auto& [k, v] : d.skipped_.by_reason) checked.skipped_.by_reason[k] += v;
    return checked;
}

LlavaDataset LlavaDataset::from_records(std::vector<LlavaRecord> records, const DatasetOptions& options,
                                        std::string source) {
    for (size_t i = 0; i < records.size(); ++i) records[i].source_index = i;  // messages name the position
    return checked_records(std::move(records), options, std::move(source));
}

LlavaDataset LlavaDataset::checked_records(std::vector<LlavaRecord> records, const DatasetOptions& options,
                                           std::string source) {
    LlavaDataset d;
    d.source_ = std::move(source);
    d.options_ = options;
    HG_CHECK(options.max_seq > 0 && options.image_rows > 0, "%s: max_seq and image_rows must be positive",
             d.source_.c_str());
    d.records_.reserve(records.size());
    if (options.lowercase_answers)  // the answers as the benchmarks' scorers compare them
        for (LlavaRecord& r : records)
            for (LlavaTurn& t : r.conversations)
                if (t.from == "gpt")
                    for (char& ch : t.value) ch = (char)std::tolower((unsigned char)ch);
    for (size_t i = 0; i < records.size(); ++i) {
        LlavaRecord& rec = records[i];
        try {
            chat_turns(rec);
            if (options.check_images_exist) {
                for (const std::string& p : rec.images) {
                    std::error_code ec;
                    const std::filesystem::path full = d.resolve_image(p);
                    if (!std::filesystem::exists(full, ec)) bad("missing image", "image " + full.string() + " does not exist");
                }
            }
            d.records_.push_back(std::move(rec));
        } catch (const BadRecord& b) {
            if (!options.skip_bad)
                fail("%s: record %zu (id %s): %s", d.source_.c_str(), rec.source_index, rec.id.c_str(), b.message.c_str());
            ++d.skipped_.by_reason[b.reason];
        }
    }
    return d;
}

std::filesystem::path LlavaDataset::resolve_image(const std::string& rel) const {
    const std::filesystem::path p(rel);
    if (p.is_absolute() || options_.image_folder.empty()) return p;
    return options_.image_folder / p;
}

std::string LlavaDataset::where(size_t i) const {
    if (i >= records_.size()) return source_ + ": record ?";
    return source_ + ": record " + std::to_string(records_[i].source_index) + " (id " + records_[i].id + ")";
}

namespace {

// The example of one checked record (throws BadRecord).
TrainExample tokenize_record(const LlavaRecord& rec, const text::Tokenizer& tok, text::ChatTemplate tmpl,
                             const DatasetOptions& opt, const std::function<std::filesystem::path(const std::string&)>& resolve) {
    const std::vector<text::ChatTurn> turns = chat_turns(rec);
    const TemplateStrings ts = template_strings(tmpl);

    // The prompt, remembering where each answer (and its closing separator) lies.
    std::string prompt = std::string(ts.system) + ts.sep_user;
    std::vector<std::pair<size_t, size_t>> answer_chars;  // [begin, end) of answer + separator
    for (const text::ChatTurn& t : turns) {
        prompt += ts.role_user;
        for (int k = 0; k < t.n_images; ++k) prompt += std::string(text::kImageToken) + "\n";
        prompt += t.question + ts.sep_user;
        prompt += ts.role_assistant;
        const size_t b = prompt.size();
        prompt += *t.answer + ts.sep_assistant;
        answer_chars.emplace_back(b, prompt.size());
    }
    HG_CHECK(prompt == text::build_prompt(tmpl, turns), "dataset: the training prompt differs from text::build_prompt "
             "for template %s (template strings out of sync)", text::chat_template_name(tmpl));

    TrainExample ex;
    ex.id = rec.id;
    ex.input_ids = text::tokenize_with_images(tok, prompt, text::Semantics::slow);
    ex.labels.assign(ex.input_ids.size(), kIgnoreIndex);
    // Each boundary: the token count of the prompt's prefix up to it, which must tokenise to a
    // prefix of the whole (else the answer does not start or end on a token boundary).
    auto boundary = [&](size_t chars) -> size_t {
        const std::vector<int32_t> pre = text::tokenize_with_images(tok, prompt.substr(0, chars), text::Semantics::slow);
        if (pre.size() > ex.input_ids.size() || !std::equal(pre.begin(), pre.end(), ex.input_ids.begin()))
            bad("tokenization mismatch", "the prompt up to character " + std::to_string(chars) +
                                             " does not tokenise to a prefix of the whole prompt");
        return pre.size();
    };
    for (const auto& [cb, ce] : answer_chars) {
        const size_t tb = boundary(cb), te = boundary(ce);
        for (size_t t = tb; t < te; ++t) ex.labels[t] = ex.input_ids[t];
    }

    // Truncation to max_seq rows; an image slot that does not fit whole goes with what follows.
    int64_t rows = 0;
    size_t keep = 0, n_slots = 0;
    for (; keep < ex.input_ids.size(); ++keep) {
        const int64_t r = ex.input_ids[keep] == text::kImageTokenId ? opt.image_rows : 1;
        if (rows + r > opt.max_seq) break;
        rows += r;
        if (ex.input_ids[keep] == text::kImageTokenId) ++n_slots;
    }
    if (keep < ex.input_ids.size()) {
        ex.truncated = true;
        ex.input_ids.resize(keep);
        ex.labels.resize(keep);
    }
    ex.n_rows = rows;
    for (int32_t l : ex.labels) ex.n_targets += l != kIgnoreIndex;
    if (ex.n_targets == 0)
        bad("too long", "the prompt is longer than max_seq (" + std::to_string(opt.max_seq) +
                            " rows): no answer token left after truncation");
    for (size_t k = 0; k < n_slots; ++k) ex.image_paths.push_back(resolve(rec.images[k]));
    return ex;
}

}  // namespace

TrainExample LlavaDataset::get(size_t i, const text::Tokenizer& tok, text::ChatTemplate tmpl) const {
    HG_CHECK(i < records_.size(), "%s: record %zu out of range (%zu records)", source_.c_str(), i, records_.size());
    try {
        TrainExample ex = tokenize_record(records_[i], tok, tmpl, options_,
                                          [this](const std::string& p) { return resolve_image(p); });
        ex.index = i;
        ex.source_index = records_[i].source_index;
        return ex;
    } catch (const BadRecord& b) {
        fail("%s: %s", where(i).c_str(), b.message.c_str());
    } catch (const Error& e) {
        fail("%s: %s", where(i).c_str(), e.what());
    }
}

size_t LlavaDataset::validate(const text::Tokenizer& tok, text::ChatTemplate tmpl) {
    std::vector<LlavaRecord> kept;
    kept.reserve(records_.size());
    for (size_t i = 0; i < records_.size(); ++i) {
        try {
            tokenize_record(records_[i], tok, tmpl, options_, [this](const std::string& p) { return resolve_image(p); });
            kept.push_back(std::move(records_[i]));
        } catch (const BadRecord& b) {
            if (!options_.skip_bad) fail("%s: %s", where(i).c_str(), b.message.c_str());
            ++skipped_.by_reason[b.reason];
        } catch (const Error& e) {
            if (!options_.skip_bad) fail("%s: %s", where(i).c_str(), e.what());
            ++skipped_.by_reason["tokenizer"];
        }
    }
    records_ = std::move(kept);
    return records_.size();
}

std::vector<std::vector<float>> LlavaDataset::load_images(const TrainExample& ex, const imaging::ClipPreprocess& pre,
                                                          const imaging::ImageOptions& io) const {
    std::vector<std::vector<float>> out;
    for (const std::filesystem::path& p : ex.image_paths) {
        imaging::LoadResult r;
        try {
            r = imaging::load_medical(p, io);
        } catch (const Error& e) {
            fail("%s: record %zu (id %s): unreadable image: %s", source_.c_str(), ex.source_index, ex.id.c_str(), e.what());
        }
        HG_CHECK(!r.images.empty(), "%s: record %zu (id %s): %s gave no image", source_.c_str(), ex.source_index,
                 ex.id.c_str(), p.string().c_str());
        for (const imaging::LoadedImage& li : r.images) out.push_back(imaging::clip_preprocess(li.image, pre));
    }
    HG_CHECK(out.size() == ex.image_paths.size(),
             "%s: record %zu (id %s): %zu image(s) loaded for %zu <image> slot(s) (a file gave several slices)",
             source_.c_str(), ex.source_index, ex.id.c_str(), out.size(), ex.image_paths.size());
    return out;
}

void write_llava_json(const std::filesystem::path& path, const std::vector<LlavaRecord>& records) {
    json doc = json::array();
    for (const LlavaRecord& r : records) {
        json j = json::object();
        j["id"] = r.id;
        if (r.images.size() == 1) j["image"] = r.images[0];
        else if (r.images.size() > 1) j["image"] = r.images;
        json conv = json::array();
        for (const LlavaTurn& t : r.conversations) conv.push_back({{"from", t.from}, {"value", t.value}});
        j["conversations"] = std::move(conv);
        for (const auto& [k, v] : r.meta)
            if (!j.contains(k)) j[k] = v;
        doc.push_back(std::move(j));
    }
    const std::string text = doc.dump(1) + "\n";
    write_file_atomically(path, [&](int fd, const std::string& tmp) { write_all(fd, text.data(), text.size(), tmp); });
}

// ---------------------------------------------------------------------------------------------

std::vector<size_t> permutation(size_t n, uint64_t seed, uint64_t epoch) {
    std::mt19937_64 rng(seed ^ (epoch * 0x9E3779B97F4A7C15ull));
    std::vector<size_t> p(n);
    for (size_t i = 0; i < n; ++i) p[i] = i;
    // Fisher-Yates from the top: swap p[i] with p[j], j uniform in [0, i]. The bounded draw rejects
    // the top partial range of the 64-bit output (std::uniform_int_distribution differs between
    // standard libraries).
    for (size_t i = n; i > 1; --i) {
        const uint64_t bound = i;  // j in [0, i - 1]
        const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
        uint64_t x;
        do x = rng(); while (x >= limit);
        const size_t j = static_cast<size_t>(x % bound);
        std::swap(p[i - 1], p[j]);
    }
    return p;
}

std::string DataOrderState::to_json() const {
    return json{{"seed", seed}, {"epoch", epoch}, {"cursor", cursor}}.dump();
}

DataOrderState DataOrderState::from_json(const std::string& text) {
    try {
        const json j = json::parse(text);
        DataOrderState s;
        s.seed = j.at("seed").get<uint64_t>();
        s.epoch = j.at("epoch").get<uint64_t>();
        s.cursor = j.at("cursor").get<uint64_t>();
        return s;
    } catch (const json::exception& e) {
        fail("data order state: %s (in %s)", e.what(), text.substr(0, 200).c_str());
    }
}

DataOrder::DataOrder(size_t n, int batch, DataOrderState state) : n_(n), batch_(batch), state_(state) {
    HG_CHECK(n > 0, "data order: the data set is empty");
    HG_CHECK(batch > 0, "data order: batch must be positive (got %d)", batch);
    HG_CHECK(state.cursor <= n, "data order: cursor %llu beyond the data set's %zu examples",
             static_cast<unsigned long long>(state.cursor), n);
}

size_t DataOrder::batches_per_epoch() const { return (n_ + static_cast<size_t>(batch_) - 1) / static_cast<size_t>(batch_); }

std::vector<size_t> DataOrder::next_batch() {
    if (state_.cursor >= n_) {
        ++state_.epoch;
        state_.cursor = 0;
    }
    if (perm_epoch_ != state_.epoch) {
        perm_ = permutation(n_, state_.seed, state_.epoch);
        perm_epoch_ = state_.epoch;
    }
    std::vector<size_t> b;
    for (int k = 0; k < batch_ && state_.cursor < n_; ++k) b.push_back(perm_[state_.cursor++]);
    return b;
}

}  // namespace hg::train
