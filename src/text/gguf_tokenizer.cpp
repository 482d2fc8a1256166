// GGUF tokenizer metadata: read (tokenizer.ggml.* -> Vocab) and write (Vocab -> tokenizer.ggml.*).
#include "text/gguf_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <unordered_map>

#include "core/error.h"
#include "text/unicode.h"

namespace hg::text {

using json = nlohmann::json;
namespace tk = tokenizer_keys;

namespace {

std::string pad_name(int64_t id) { return "[PAD" + std::to_string(id) + "]"; }

// Which tokenizer.ggml.pre names our reader maps to which split pattern (vocab_from_gguf).
const char* pre_name(const Vocab& v) {
    const std::string& re = v.split_regex.empty() ? std::string(kGpt2SplitRegex) : v.split_regex;
    if (re == kGpt2SplitRegex && !v.nfc) return "gpt-2";
    if (re == kQwen2SplitRegex && v.nfc) return "qwen2";
    if (re == kCl100kSplitRegex && !v.nfc) return "dbrx";  // llama.cpp's name for cl100k's pattern
    return nullptr;
}

// The text a tokenizer_config.json uses for token `id` (what apply_tokenizer_config looks up).
std::string config_text(const Vocab& v, int32_t id) {
    if (const AddedToken* a = v.find_added(id)) return a->content;
    return v.kind == VocabKind::byte_bpe ? bytes_to_gpt2(v.tokens[id]) : v.tokens[id];
}

// One merge per multi-byte token of a byte-level vocabulary ranked by id (tiktoken): the two parts
// byte-pair encoding by rank leaves when only merges of lower rank than the token are allowed (the
// derivation of llama.cpp's and transformers' tiktoken converters). Returned in rank order.
std::vector<std::pair<int32_t, int32_t>> merges_from_ranks(const Vocab& v) {
    std::unordered_map<std::string, int32_t> rank;
    rank.reserve(v.tokens.size() * 2);
    for (int32_t i = 0; i < v.size(); ++i)
        if (v.types[i] == TokenType::normal || v.types[i] == TokenType::byte) rank.emplace(v.tokens[i], i);
    std::vector<std::pair<int32_t, int32_t>> merges;
    std::vector<std::string> parts;
    for (int32_t id = 0; id < v.size(); ++id) {
        const std::string& t = v.tokens[id];
        if (t.size() < 2 || (v.types[id] != TokenType::normal && v.types[id] != TokenType::byte)) continue;
        auto it = rank.find(t);
        if (it == rank.end() || it->second != id) continue;  // a duplicate text: the first id is the token
        parts.clear();
        for (char c : t) parts.emplace_back(1, c);
        while (parts.size() > 2) {
            int32_t best = std::numeric_limits<int32_t>::max();
            size_t at = 0;
            for (size_t k = 0; k + 1 < parts.size(); ++k) {
                auto r = rank.find(parts[k] + parts[k + 1]);
                if (r != rank.end() && r->second < id && r->second < best) best = r->second, at = k;
            }
            if (best == std::numeric_limits<int32_t>::max()) break;
            parts[at] += parts[at + 1];
            parts.erase(parts.begin() + static_cast<long>(at) + 1);
        }
        if (parts.size() != 2) continue;  // not reachable by merges: BPE never produces it either
        auto a = rank.find(parts[0]), b = rank.find(parts[1]);
        if (a == rank.end() || b == rank.end()) continue;
        merges.emplace_back(a->second, b->second);
    }
    return merges;
}

}  // namespace

bool has_tokenizer(const GGUFFile& f) { return f.find(tk::kTokens) != nullptr; }

GGUFTokenizerArrays read_tokenizer_arrays(const GGUFFile& f) {
    GGUFTokenizerArrays g;
    g.source = f.path().string();
    const char* src = g.source.c_str();
    auto model = f.get_string(tk::kModel);
    HG_CHECK(model.has_value(), "%s: no tokenizer (%s is missing)", src, tk::kModel);
    g.model = *model;
    g.pre = f.get_string(tk::kPre).value_or("");
    auto tokens = f.get_string_array(tk::kTokens);
    HG_CHECK(tokens.has_value(), "%s: %s is missing", src, tk::kTokens);
    g.tokens = std::move(*tokens);
    if (auto s = f.get_float_array(tk::kScores)) g.scores.assign(s->begin(), s->end());
    if (auto t = f.get_int_array(tk::kTokenType)) {
        g.token_type.reserve(t->size());
        for (int64_t x : *t) {
            HG_CHECK(x >= INT32_MIN && x <= INT32_MAX, "%s: %s holds %lld", src, tk::kTokenType, (long long)x);
            g.token_type.push_back(static_cast<int32_t>(x));
        }
    }
    if (auto m = f.get_string_array(tk::kMerges)) g.merges = std::move(*m);
    g.bos_id = f.get_int(tk::kBosId);
    g.eos_id = f.get_int(tk::kEosId);
    g.unk_id = f.get_int(tk::kUnkId);
    g.pad_id = f.get_int(tk::kPadId);
    g.add_bos = f.get_bool(tk::kAddBos);
    g.add_eos = f.get_bool(tk::kAddEos);
    g.add_space_prefix = f.get_bool(tk::kAddSpacePrefix);
    g.hf_tokenizer_config = f.get_string(tk::kHfConfig);

    // Padding "[PAD{id}]" entries: trailing ones are not part of the tokenizer (llama.cpp pads to
    // the embedding rows), inner ones are holes in the id space (written for empty unused ids).
    const bool typed = g.token_type.size() == g.tokens.size();
    auto is_pad = [&](size_t i, bool trailing) {
        if (!typed || g.tokens[i] != pad_name(static_cast<int64_t>(i))) return false;
        const int32_t t = g.token_type[i];
        return t == static_cast<int32_t>(TokenType::unused) || (trailing && t == static_cast<int32_t>(TokenType::unknown));
    };
    size_t n = g.tokens.size();
    while (n > 1 && is_pad(n - 1, true)) --n;
    if (n < g.tokens.size()) {
        g.tokens.resize(n);
        g.token_type.resize(n);
        if (g.scores.size() > n) g.scores.resize(n);
    }
    for (size_t i = 0; i < n; ++i)
        if (is_pad(i, false)) g.tokens[i].clear();
    return g;
}

Tokenizer load_tokenizer(const GGUFFile& f) { return Tokenizer(vocab_from_gguf(read_tokenizer_arrays(f))); }

std::string tokenizer_config_json(const Vocab& v, const std::string& base) {
    json j = json::object();
    if (!base.empty()) {
        try {
            j = json::parse(base);
        } catch (const json::exception& e) {
            hg::fail("%s: tokenizer_config.json is not valid JSON: %s", v.source.c_str(), e.what());
        }
        HG_CHECK(j.is_object(), "%s: tokenizer_config.json is not a JSON object", v.source.c_str());
    }
    if (!v.slow_class.empty()) j["tokenizer_class"] = v.slow_class;
    json dec = json::object();
    for (const AddedToken& a : v.added)
        dec[std::to_string(a.id)] = {{"content", a.content},         {"lstrip", a.lstrip},
                                     {"normalized", a.normalized},   {"rstrip", a.rstrip},
                                     {"single_word", a.single_word}, {"special", a.special}};
    j["added_tokens_decoder"] = dec;
    auto token = [&](int32_t id) { return id >= 0 ? json(config_text(v, id)) : json(nullptr); };
    j["bos_token"] = token(v.bos_id);
    j["eos_token"] = token(v.eos_id);
    j["unk_token"] = token(v.unk_id);
    j["pad_token"] = token(v.pad_id);
    j["add_bos_token"] = v.add_bos;
    j["add_eos_token"] = v.add_eos;
    j["clean_up_tokenization_spaces"] = v.clean_up_tokenization_spaces;
    j["legacy"] = v.legacy;
    j["add_prefix_space"] = v.add_prefix_space;
    json extra = json::array();
    for (int32_t id : v.additional_special) extra.push_back(config_text(v, id));
    j["additional_special_tokens"] = extra;
    return j.dump(2);
}

void write_tokenizer(GGUFWriter& w, const Vocab& v, const TokenizerWriteOptions& opt) {
    v.validate();
    const char* src = v.source.c_str();
    const int32_t n = v.size();
    HG_CHECK(opt.n_rows == 0 || opt.n_rows >= n, "%s: %d tokens do not fit %lld embedding rows", src, n,
             (long long)opt.n_rows);
    const int64_t n_out = std::max<int64_t>(n, opt.n_rows);

    std::vector<std::string> tokens;
    tokens.reserve(static_cast<size_t>(n_out));
    std::vector<int32_t> types;
    types.reserve(static_cast<size_t>(n_out));
    for (int32_t i = 0; i < n; ++i) {
        const TokenType t = v.types[i];
        if (t == TokenType::unused && v.tokens[i].empty()) {  // a hole in the id space
            tokens.push_back(pad_name(i));
        } else if (v.kind == VocabKind::byte_bpe && t != TokenType::control && t != TokenType::user_defined) {
            tokens.push_back(bytes_to_gpt2(v.tokens[i]));
        } else {
            HG_CHECK(!v.tokens[i].empty(), "%s: token %d is empty", src, i);
            tokens.push_back(v.tokens[i]);
        }
        types.push_back(static_cast<int32_t>(t));
    }
    for (int64_t i = n; i < n_out; ++i) {
        tokens.push_back(pad_name(i));
        types.push_back(static_cast<int32_t>(TokenType::unused));
    }

    if (v.kind == VocabKind::spm_bpe) {
        HG_CHECK(v.escape_whitespaces && !v.remove_extra_whitespaces,
                 "%s: a SentencePiece normaliser without whitespace escaping or with whitespace removal cannot be "
                 "stored in GGUF", src);
        const SpaceMode expect = v.add_dummy_prefix ? SpaceMode::prepend_each : SpaceMode::metaspace_never;
        HG_CHECK(v.space_mode == expect && !v.metaspace_split,
                 "%s: this tokenizer.json's Metaspace pre-tokenizer (prepend scheme first/always or split) has no "
                 "GGUF equivalent", src);
        std::vector<float> scores;
        if (!v.scores.empty()) {
            scores = v.scores;
        } else {
            // tokenizer.json lists merges instead of scores: a piece's score is minus the rank of
            // the first merge that builds it (SentencePiece merges the highest score first);
            // pieces no merge builds get the lowest score, so they only form when nothing else can.
            HG_CHECK(!v.merges.empty(), "%s: SentencePiece vocabulary without scores or merges", src);
            scores.assign(static_cast<size_t>(n), -1e9f);
            std::unordered_map<std::string, int32_t> ids;
            for (int32_t i = 0; i < n; ++i)
                if (!v.tokens[i].empty()) ids.emplace(v.tokens[i], i);
            for (size_t r = v.merges.size(); r-- > 0;) {
                auto it = ids.find(v.tokens[v.merges[r].first] + v.tokens[v.merges[r].second]);
                if (it != ids.end()) scores[it->second] = -static_cast<float>(r);
            }
            for (int32_t i = 0; i < n; ++i)
                if (utf8_length(v.tokens[i]) <= 1 || v.types[i] != TokenType::normal) scores[i] = 0.0f;
        }
        scores.resize(static_cast<size_t>(n_out), -10000.0f);
        w.set_string(tk::kModel, "llama");
        w.set_string(tk::kPre, "default");
        w.set_string_array(tk::kTokens, tokens);
        w.set_f32_array(tk::kScores, scores);
        w.set_i32_array(tk::kTokenType, types);
    } else {
        const char* pre = pre_name(v);
        HG_CHECK(pre != nullptr, "%s: the split pattern of this byte-level tokenizer has no GGUF name "
                 "(supported: GPT-2's, cl100k's, Qwen2's with NFC)", src);
        // Split(Removed, invert) keeps only the matches; the three named patterns end in \s+ and
        // match every character, so nothing is removed and it splits exactly as Isolated does.
        HG_CHECK(!v.byte_level_add_prefix_space && !v.ignore_merges,
                 "%s: this byte-level tokenizer's pre-tokenizer options (split behaviour, add_prefix_space, "
                 "ignore_merges) have no GGUF equivalent", src);
        const auto merges = v.merges.empty() ? merges_from_ranks(v) : v.merges;
        HG_CHECK(!merges.empty(), "%s: byte-level vocabulary without merges", src);
        std::vector<std::string> text;
        text.reserve(merges.size());
        for (auto [a, b] : merges) text.push_back(bytes_to_gpt2(v.tokens[a]) + " " + bytes_to_gpt2(v.tokens[b]));
        w.set_string(tk::kModel, "gpt2");
        w.set_string(tk::kPre, pre);
        w.set_string_array(tk::kTokens, tokens);
        w.set_i32_array(tk::kTokenType, types);
        w.set_string_array(tk::kMerges, text);
    }
    if (v.bos_id >= 0) w.set_u32(tk::kBosId, static_cast<uint32_t>(v.bos_id));
    if (v.eos_id >= 0) w.set_u32(tk::kEosId, static_cast<uint32_t>(v.eos_id));
    if (v.unk_id >= 0) w.set_u32(tk::kUnkId, static_cast<uint32_t>(v.unk_id));
    if (v.pad_id >= 0) w.set_u32(tk::kPadId, static_cast<uint32_t>(v.pad_id));
    w.set_bool(tk::kAddBos, v.fast_add_bos);
    w.set_bool(tk::kAddEos, v.fast_add_eos);
    if (v.kind == VocabKind::spm_bpe) w.set_bool(tk::kAddSpacePrefix, v.add_dummy_prefix);
    w.set_string(tk::kHfConfig, tokenizer_config_json(v, opt.hf_config.value_or("")));
}

}  // namespace hg::text
