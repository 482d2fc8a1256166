// Hugging Face tokenizer.json (tokenizers library). Only the components our models use are
// accepted; anything else is refused by name, so a file we would tokenise differently never loads:
//   model          BPE (byte_fallback, fuse_unk, ignore_merges; no dropout, no subword prefix/suffix)
//   normalizer     null | NFC | Sequence[Prepend("▁"), Replace(" ", "▁")] | Replace(" ", "▁")
//   pre_tokenizer  null | Metaspace | ByteLevel | Sequence[Split(regex), ByteLevel]
//   post_processor null | ByteLevel | TemplateProcessing (BOS/EOS around $A)
#include <nlohmann/json.hpp>

#include <unordered_map>

#include "core/error.h"
#include "text/unicode.h"
#include "text/vocab.h"

namespace hg::text {

namespace {

using json = nlohmann::json;

const std::string kSpace = "\xE2\x96\x81";  // ▁

bool is_type(const json& j, const char* type) { return j.is_object() && j.value("type", "") == type; }

std::string str_field(const json& j, const char* key, const std::string& source, const char* what) {
    auto it = j.find(key);
    HG_CHECK(it != j.end() && it->is_string(), "%s: %s: missing string field '%s'", source.c_str(), what, key);
    return it->get<std::string>();
}

bool bool_field(const json& j, const char* key, bool def) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return def;
    return it->is_boolean() ? it->get<bool>() : def;
}

// Replace(" " -> "▁") normalizer.
bool is_space_replace(const json& n) {
    if (!is_type(n, "Replace")) return false;
    const json& pat = n.value("pattern", json());
    return pat.is_object() && pat.value("String", "") == " " && n.value("content", "") == kSpace;
}

void parse_normalizer(Vocab& v, const json& n, const std::string& source, bool& replaces_spaces, bool& prepends) {
    if (n.is_null()) return;
    if (is_type(n, "NFC")) {
        v.nfc = true;
        return;
    }
    if (is_type(n, "Prepend") && n.value("prepend", "") == kSpace) {
        prepends = true;
        return;
    }
    if (is_space_replace(n)) {
        replaces_spaces = true;
        return;
    }
    if (is_type(n, "Sequence")) {
        const json& list = n.value("normalizers", json::array());
        HG_CHECK(list.is_array(), "%s: normalizer Sequence without a list", source.c_str());
        for (const json& m : list) parse_normalizer(v, m, source, replaces_spaces, prepends);
        return;
    }
    hg::fail("%s: normalizer %s is not supported", source.c_str(), n.dump().substr(0, 120).c_str());
}

void parse_split(Vocab& v, const json& p, const std::string& source) {
    const json& pat = p.value("pattern", json());
    HG_CHECK(pat.is_object(), "%s: Split pre-tokenizer without a pattern", source.c_str());
    if (pat.contains("Regex") && pat["Regex"].is_string()) {
        v.split_regex = pat["Regex"].get<std::string>();
    } else {
        hg::fail("%s: Split pre-tokenizer with a %s pattern is not supported (only Regex)", source.c_str(),
                 pat.dump().substr(0, 60).c_str());
    }
    const std::string behavior = p.value("behavior", "");
    const bool invert = bool_field(p, "invert", false);
    if (behavior == "Isolated" && !invert) v.split_mode = SplitMode::isolated;
    else if (behavior == "Removed" && invert) v.split_mode = SplitMode::keep_matches;
    else hg::fail("%s: Split behavior '%s' (invert %d) is not supported", source.c_str(), behavior.c_str(), invert);
}

// Returns true when the tokenizer is byte-level.
bool parse_pre_tokenizer(Vocab& v, const json& p, const std::string& source, bool& metaspace) {
    if (p.is_null()) return false;
    if (is_type(p, "ByteLevel")) {
        v.byte_level_add_prefix_space = bool_field(p, "add_prefix_space", false);
        if (bool_field(p, "use_regex", true)) {
            HG_CHECK(v.split_regex.empty(), "%s: ByteLevel(use_regex) after a Split is not supported", source.c_str());
            v.split_regex = kGpt2SplitRegex;
            v.split_mode = SplitMode::isolated;
        }
        return true;
    }
    if (is_type(p, "Split")) {
        parse_split(v, p, source);
        return false;
    }
    if (is_type(p, "Metaspace")) {
        HG_CHECK(p.value("replacement", kSpace) == kSpace, "%s: Metaspace replacement other than ▁", source.c_str());
        metaspace = true;
        std::string scheme = p.value("prepend_scheme", "");
        if (scheme.empty()) scheme = bool_field(p, "add_prefix_space", true) ? "always" : "never";
        if (scheme == "always") v.space_mode = SpaceMode::metaspace_always;
        else if (scheme == "first") v.space_mode = SpaceMode::metaspace_first;
        else if (scheme == "never") v.space_mode = SpaceMode::metaspace_never;
        else hg::fail("%s: Metaspace prepend_scheme '%s' is not supported", source.c_str(), scheme.c_str());
        v.metaspace_split = bool_field(p, "split", true);
        return false;
    }
    if (is_type(p, "Sequence")) {
        const json& list = p.value("pretokenizers", json::array());
        HG_CHECK(list.is_array(), "%s: pre_tokenizer Sequence without a list", source.c_str());
        bool byte_level = false;
        for (const json& q : list) byte_level |= parse_pre_tokenizer(v, q, source, metaspace);
        return byte_level;
    }
    hg::fail("%s: pre_tokenizer %s is not supported", source.c_str(), p.dump().substr(0, 120).c_str());
}

// TemplateProcessing "single": [SpecialToken?, Sequence A, SpecialToken?] -> BOS / EOS.
void parse_post_processor(Vocab& v, const json& p, const std::unordered_map<std::string, int32_t>& ids,
                          const std::string& source) {
    if (p.is_null() || is_type(p, "ByteLevel")) return;
    if (is_type(p, "Sequence")) {
        for (const json& q : p.value("processors", json::array())) parse_post_processor(v, q, ids, source);
        return;
    }
    HG_CHECK(is_type(p, "TemplateProcessing"), "%s: post_processor %s is not supported", source.c_str(),
             p.dump().substr(0, 80).c_str());
    const json& single = p.value("single", json::array());
    HG_CHECK(single.is_array(), "%s: TemplateProcessing without 'single'", source.c_str());
    bool seen_a = false;
    for (const json& piece : single) {
        if (piece.contains("Sequence")) {
            HG_CHECK(!seen_a, "%s: TemplateProcessing with two sequences in 'single'", source.c_str());
            seen_a = true;
            continue;
        }
        HG_CHECK(piece.contains("SpecialToken"), "%s: unexpected TemplateProcessing item", source.c_str());
        const std::string name = str_field(piece["SpecialToken"], "id", source, "TemplateProcessing");
        auto it = ids.find(name);
        HG_CHECK(it != ids.end(), "%s: TemplateProcessing token '%s' is not in the vocabulary", source.c_str(),
                 name.c_str());
        if (!seen_a) {
            HG_CHECK(!v.fast_add_bos, "%s: TemplateProcessing with two leading tokens", source.c_str());
            v.fast_add_bos = true;
            v.bos_id = it->second;
        } else {
            HG_CHECK(!v.fast_add_eos, "%s: TemplateProcessing with two trailing tokens", source.c_str());
            v.fast_add_eos = true;
            v.eos_id = it->second;
        }
    }
}

}  // namespace

Vocab load_tokenizer_json(std::string_view text, const std::string& source) {
    json j;
    try {
        j = json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {
        hg::fail("%s: not valid JSON: %s", source.c_str(), e.what());
    }
    HG_CHECK(j.is_object(), "%s: top level is not a JSON object", source.c_str());
    HG_CHECK(j.contains("model") && j["model"].is_object(), "%s: no 'model' object (not a tokenizer.json?)",
             source.c_str());
    const json& model = j["model"];
    HG_CHECK(model.value("type", "BPE") == "BPE", "%s: model type '%s' is not supported (only BPE)", source.c_str(),
             model.value("type", "").c_str());
    HG_CHECK(model.value("continuing_subword_prefix", json()).is_null() || model["continuing_subword_prefix"] == "",
             "%s: continuing_subword_prefix is not supported", source.c_str());
    HG_CHECK(model.value("end_of_word_suffix", json()).is_null() || model["end_of_word_suffix"] == "",
             "%s: end_of_word_suffix is not supported", source.c_str());
    {
        const json d = model.value("dropout", json());
        HG_CHECK(d.is_null() || (d.is_number() && d.get<double>() == 0.0),
                 "%s: BPE dropout is not supported (tokenisation would be random)", source.c_str());
    }

    Vocab v;
    v.source = source;
    bool metaspace = false, replaces_spaces = false, prepends = false;
    parse_normalizer(v, j.value("normalizer", json()), source, replaces_spaces, prepends);
    const bool byte_level = parse_pre_tokenizer(v, j.value("pre_tokenizer", json()), source, metaspace);
    v.kind = byte_level ? VocabKind::byte_bpe : VocabKind::spm_bpe;
    if (byte_level) {
        HG_CHECK(!metaspace && !replaces_spaces && !prepends, "%s: byte-level tokenizer with ▁ handling", source.c_str());
        if (v.split_regex.empty()) {  // ByteLevel(use_regex=false) alone: the whole segment is one piece
            v.split_regex = "[\\s\\S]+";
        }
        v.slow_class = v.nfc ? "Qwen2Tokenizer" : "GPT2Tokenizer";
        v.add_prefix_space = false;
    } else {
        HG_CHECK(v.split_regex.empty(), "%s: a Split pre-tokenizer without ByteLevel is not supported", source.c_str());
        HG_CHECK(!v.nfc, "%s: NFC with a SentencePiece-style tokenizer is not supported", source.c_str());
        if (metaspace) {
            HG_CHECK(!replaces_spaces && !prepends, "%s: both Metaspace and a ▁ normalizer", source.c_str());
        } else if (replaces_spaces) {
            v.space_mode = prepends ? SpaceMode::prepend_each : SpaceMode::metaspace_never;
        } else {
            hg::fail("%s: SentencePiece-style BPE without ▁ handling (no Metaspace, no Replace normalizer)",
                     source.c_str());
        }
        v.add_dummy_prefix = v.space_mode != SpaceMode::metaspace_never;
        v.slow_class = "LlamaTokenizer";
    }
    v.byte_fallback = bool_field(model, "byte_fallback", false);
    v.fuse_unk = bool_field(model, "fuse_unk", false);
    v.ignore_merges = bool_field(model, "ignore_merges", false);

    // vocabulary
    const json& vocab = model.value("vocab", json());
    HG_CHECK(vocab.is_object() && !vocab.empty(), "%s: model.vocab is missing or empty", source.c_str());
    int64_t max_id = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        HG_CHECK(it.value().is_number_integer(), "%s: vocab entry '%s' has a non-integer id", source.c_str(),
                 it.key().c_str());
        const int64_t id = it.value().get<int64_t>();
        HG_CHECK(id >= 0 && id < (int64_t(1) << 24), "%s: vocab id %lld out of range", source.c_str(),
                 static_cast<long long>(id));
        max_id = std::max(max_id, id);
    }
    const json& added_list = j.value("added_tokens", json::array());
    HG_CHECK(added_list.is_array(), "%s: added_tokens is not a list", source.c_str());
    for (const json& a : added_list) {
        HG_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer(), "%s: added token without an id",
                 source.c_str());
        const int64_t id = a["id"].get<int64_t>();
        HG_CHECK(id >= 0 && id < (int64_t(1) << 24), "%s: added token id %lld out of range", source.c_str(),
                 static_cast<long long>(id));
        max_id = std::max(max_id, id);
    }
    v.tokens.assign(static_cast<size_t>(max_id + 1), std::string());
    v.types.assign(v.tokens.size(), TokenType::unused);
    std::vector<bool> filled(v.tokens.size(), false);
    std::unordered_map<std::string, int32_t> ids;  // vocabulary as written (GPT-2 alphabet for byte-level)
    ids.reserve(vocab.size() * 2);
    std::string bytes;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        const int32_t id = it.value().get<int32_t>();
        HG_CHECK(!filled[id], "%s: vocab id %d is used twice", source.c_str(), id);
        filled[id] = true;
        ids.emplace(it.key(), id);
        if (byte_level) {
            HG_CHECK(gpt2_to_bytes(it.key(), bytes), "%s: vocab token '%s' (id %d) is outside the byte-level alphabet",
                     source.c_str(), it.key().c_str(), id);
            v.tokens[id] = bytes;
        } else {
            v.tokens[id] = it.key();
        }
        v.types[id] = TokenType::normal;
        if (!byte_level && it.key().size() == 6 && it.key().compare(0, 3, "<0x") == 0 && it.key()[5] == '>')
            v.types[id] = TokenType::byte;
    }
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
        auto it = ids.find(model["unk_token"].get<std::string>());
        HG_CHECK(it != ids.end(), "%s: unk_token is not in the vocabulary", source.c_str());
        v.unk_id = it->second;
        v.types[it->second] = TokenType::unknown;
    }

    // added tokens
    for (const json& a : added_list) {
        AddedToken t;
        t.id = a["id"].get<int32_t>();
        t.content = str_field(a, "content", source, "added token");
        HG_CHECK(!t.content.empty() && utf8_invalid_at(t.content) == std::string::npos,
                 "%s: added token %d has empty or invalid content", source.c_str(), t.id);
        t.special = bool_field(a, "special", false);
        t.lstrip = bool_field(a, "lstrip", false);
        t.rstrip = bool_field(a, "rstrip", false);
        t.single_word = bool_field(a, "single_word", false);
        t.normalized = bool_field(a, "normalized", !t.special);
        if (filled[t.id]) {
            // An added token that is also a vocabulary entry (<unk>, <s>, </s>): same text required.
            const std::string& have = v.tokens[t.id];
            const bool same = byte_level ? gpt2_to_bytes(t.content, bytes) && bytes == have : have == t.content;
            HG_CHECK(same || (byte_level && have == t.content), "%s: added token %d '%s' differs from vocab entry",
                     source.c_str(), t.id, t.content.c_str());
        }
        if (!filled[t.id]) v.tokens[t.id] = t.content;  // the model keeps its own text for its ids
        filled[t.id] = true;
        v.types[t.id] = t.special ? TokenType::control : TokenType::user_defined;
        if (t.id == v.unk_id) v.types[t.id] = TokenType::unknown;
        ids[t.content] = t.id;
        v.added.push_back(std::move(t));
    }
    std::sort(v.added.begin(), v.added.end(), [](const AddedToken& x, const AddedToken& y) { return x.id < y.id; });
    for (size_t i = 1; i < v.added.size(); ++i)
        HG_CHECK(v.added[i].id != v.added[i - 1].id, "%s: added token id %d listed twice", source.c_str(),
                 v.added[i].id);

    // merges: "a b" strings (tokenizers < 0.20) or ["a", "b"] pairs
    const json& merges = model.value("merges", json::array());
    HG_CHECK(merges.is_array(), "%s: model.merges is not a list", source.c_str());
    v.merges.reserve(merges.size());
    std::string left, right;
    for (size_t k = 0; k < merges.size(); ++k) {
        const json& m = merges[k];
        if (m.is_string()) {
            const std::string s = m.get<std::string>();
            const size_t sp = s.find(' ');
            HG_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < s.size() && s.find(' ', sp + 1) == std::string::npos,
                     "%s: merge %zu '%s' is not 'a b'", source.c_str(), k, s.c_str());
            left = s.substr(0, sp);
            right = s.substr(sp + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            left = m[0].get<std::string>();
            right = m[1].get<std::string>();
        } else {
            hg::fail("%s: merge %zu is neither 'a b' nor [a, b]", source.c_str(), k);
        }
        auto a = ids.find(left), b = ids.find(right), c = ids.find(left + right);
        HG_CHECK(a != ids.end() && b != ids.end(), "%s: merge %zu uses a token that is not in the vocabulary",
                 source.c_str(), k);
        HG_CHECK(c != ids.end(), "%s: merge %zu produces '%s', which is not in the vocabulary", source.c_str(), k,
                 (left + right).c_str());
        v.merges.emplace_back(a->second, b->second);
    }
    HG_CHECK(!v.merges.empty() || v.size() <= 256 + int32_t(v.added.size()) || !byte_level,
             "%s: byte-level BPE without merges", source.c_str());

    parse_post_processor(v, j.value("post_processor", json()), ids, source);
    v.add_bos = v.fast_add_bos;  // until a tokenizer_config.json says otherwise
    v.add_eos = v.fast_add_eos;
    v.model_size = 0;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) v.model_size = std::max(v.model_size, it.value().get<int32_t>() + 1);

    // decoder: only checked for consistency with what we decode.
    const json& dec = j.value("decoder", json());
    if (!dec.is_null()) {
        const std::string t = dec.value("type", "");
        HG_CHECK(t == "ByteLevel" || t == "Sequence" || t == "Metaspace" || t == "Replace" || t == "ByteFallback",
                 "%s: decoder '%s' is not supported", source.c_str(), t.c_str());
        HG_CHECK((t == "ByteLevel") == byte_level, "%s: decoder '%s' does not match the pre-tokenizer", source.c_str(),
                 t.c_str());
    }
    if (byte_level)
        for (int b = 0; b < 256; ++b)
            HG_CHECK(ids.count(bytes_to_gpt2(std::string(1, static_cast<char>(b)))), "%s: byte 0x%02X has no token",
                     source.c_str(), b);
    v.validate();
    return v;
}

}  // namespace hg::text
