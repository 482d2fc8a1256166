// Vocab: consistency checks, tokenizer_config.json, GGUF metadata, and loading by path.
#include "text/vocab.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <unordered_map>

#include "core/error.h"
#include "text/unicode.h"

namespace hg::text {

// The models' own split patterns (GPT-2's encoder.py; tiktoken's cl100k_base; Qwen2's tokenizer.json).
const char* const kGpt2SplitRegex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kCl100kSplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

using json = nlohmann::json;

const AddedToken* Vocab::find_added(int32_t id) const {
    auto it = std::lower_bound(added.begin(), added.end(), id, [](const AddedToken& a, int32_t v) { return a.id < v; });
    return it != added.end() && it->id == id ? &*it : nullptr;
}

void Vocab::validate() const {
    const int32_t n = size();
    HG_CHECK(n > 0, "%s: empty vocabulary", source.c_str());
    HG_CHECK(types.size() == tokens.size(), "%s: %zu token types for %d tokens", source.c_str(), types.size(), n);
    HG_CHECK(scores.empty() || scores.size() == tokens.size(), "%s: %zu scores for %d tokens", source.c_str(),
             scores.size(), n);
    for (auto [a, b] : merges)
        HG_CHECK(a >= 0 && a < n && b >= 0 && b < n, "%s: merge (%d, %d) out of range", source.c_str(), a, b);
    auto in_range = [&](int32_t id) { return id >= -1 && id < n; };
    HG_CHECK(in_range(bos_id) && in_range(eos_id) && in_range(unk_id) && in_range(pad_id),
             "%s: a special token id is out of range", source.c_str());
    for (size_t i = 0; i < added.size(); ++i) {
        HG_CHECK(added[i].id >= 0 && added[i].id < n, "%s: added token id %d out of range", source.c_str(), added[i].id);
        HG_CHECK(i == 0 || added[i].id > added[i - 1].id, "%s: added tokens not sorted or repeated", source.c_str());
        HG_CHECK(!added[i].content.empty(), "%s: added token %d is empty", source.c_str(), added[i].id);
    }
    for (int32_t id : additional_special)
        HG_CHECK(id >= 0 && id < n, "%s: additional special token id %d out of range", source.c_str(), id);
    if (kind == VocabKind::spm_bpe && !scores.empty() && merges.empty()) return;
    HG_CHECK(kind == VocabKind::byte_bpe || !merges.empty() || !scores.empty(),
             "%s: SentencePiece-style BPE needs scores or merges", source.c_str());
}

namespace {

std::string read_text(const std::filesystem::path& p, size_t max_bytes = size_t(2) << 30) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(p, ec);
    HG_CHECK(!ec, "%s: cannot read: %s", p.string().c_str(), ec.message().c_str());
    HG_CHECK(size <= max_bytes, "%s: %llu bytes is too large for a tokenizer file", p.string().c_str(),
             static_cast<unsigned long long>(size));
    std::ifstream f(p, std::ios::binary);
    HG_CHECK(f.good(), "%s: cannot open", p.string().c_str());
    std::string s(static_cast<size_t>(size), '\0');
    f.read(s.data(), static_cast<std::streamsize>(size));
    HG_CHECK(f.gcount() == static_cast<std::streamsize>(size), "%s: short read", p.string().c_str());
    return s;
}

// Content of a token field in tokenizer_config.json: "text", {"content": "text", ...} or null.
std::optional<std::string> token_content(const json& j) {
    if (j.is_string()) return j.get<std::string>();
    if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
    return std::nullopt;
}

// Token text -> id: vocabulary entries (GPT-2 alphabet for byte-level), then added tokens.
std::unordered_map<std::string, int32_t> text_index(const Vocab& v) {
    std::unordered_map<std::string, int32_t> index;
    index.reserve(v.tokens.size() * 2);
    for (int32_t i = 0; i < v.size(); ++i) {
        if (v.types[i] == TokenType::unused && v.tokens[i].empty()) continue;
        index.emplace(v.kind == VocabKind::byte_bpe && !v.find_added(i) ? bytes_to_gpt2(v.tokens[i]) : v.tokens[i], i);
    }
    for (const AddedToken& a : v.added) index[a.content] = a.id;
    return index;
}

void add_or_update(Vocab& v, AddedToken t, const std::string& source) {
    if (t.id >= v.size()) {
        v.tokens.resize(static_cast<size_t>(t.id) + 1);
        v.types.resize(v.tokens.size(), TokenType::unused);
        if (!v.scores.empty()) v.scores.resize(v.tokens.size(), 0.0f);
    } else if (const AddedToken* have = v.find_added(t.id)) {
        HG_CHECK(have->content == t.content, "%s: added token %d is '%s' here but '%s' in the tokenizer",
                 source.c_str(), t.id, t.content.c_str(), have->content.c_str());
    } else if (v.types[t.id] != TokenType::unused) {
        // Promoting a vocabulary entry (<unk>, <s>, </s>) to an added token: the text must agree.
        const std::string& have = v.tokens[t.id];
        std::string bytes;
        const bool same = have == t.content ||
                          (v.kind == VocabKind::byte_bpe && gpt2_to_bytes(t.content, bytes) && bytes == have);
        HG_CHECK(same, "%s: added token %d '%s' differs from the vocabulary entry", source.c_str(), t.id,
                 t.content.c_str());
    }
    // The model keeps its own text and type for its ids; new ids take the added token's.
    if (t.id >= v.model_size || (v.types[t.id] == TokenType::unused && v.tokens[t.id].empty())) {
        v.tokens[t.id] = t.content;
        v.types[t.id] = t.special ? TokenType::control : TokenType::user_defined;
    } else if (v.types[t.id] == TokenType::normal && v.kind == VocabKind::spm_bpe) {
        v.types[t.id] = t.special ? TokenType::control : TokenType::user_defined;
    }
    auto it = std::lower_bound(v.added.begin(), v.added.end(), t.id,
                               [](const AddedToken& a, int32_t id) { return a.id < id; });
    if (it != v.added.end() && it->id == t.id) *it = std::move(t);
    else v.added.insert(it, std::move(t));
}

}  // namespace

void apply_tokenizer_config(Vocab& v, std::string_view text, const std::string& source) {
    json j;
    try {
        j = json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {
        hg::fail("%s: not valid JSON: %s", source.c_str(), e.what());
    }
    HG_CHECK(j.is_object(), "%s: top level is not a JSON object", source.c_str());
    if (j.contains("tokenizer_class") && j["tokenizer_class"].is_string()) {
        std::string c = j["tokenizer_class"].get<std::string>();
        if (c.size() > 4 && c.compare(c.size() - 4, 4, "Fast") == 0) c.resize(c.size() - 4);
        v.slow_class = c;
        v.add_prefix_space = c == "LlamaTokenizer";
        // the classes' defaults when the config does not set them (transformers 4.41)
        v.add_bos = c == "LlamaTokenizer";
        v.add_eos = false;
        v.clean_up_tokenization_spaces = c == "GPT2Tokenizer";
    }
    if (j.contains("added_tokens_decoder")) {
        const json& dec = j["added_tokens_decoder"];
        HG_CHECK(dec.is_object(), "%s: added_tokens_decoder is not an object", source.c_str());
        for (auto it = dec.begin(); it != dec.end(); ++it) {
            const std::string& key = it.key();
            HG_CHECK(!key.empty() && key.size() <= 9 && std::all_of(key.begin(), key.end(), ::isdigit),
                     "%s: added_tokens_decoder key '%s' is not an id", source.c_str(), key.c_str());
            const json& a = it.value();
            HG_CHECK(a.is_object() && a.contains("content") && a["content"].is_string(),
                     "%s: added token %s has no content", source.c_str(), key.c_str());
            AddedToken t;
            t.id = std::stoi(key);
            HG_CHECK(t.id < (1 << 24), "%s: added token id %d out of range", source.c_str(), t.id);
            t.content = a["content"].get<std::string>();
            HG_CHECK(!t.content.empty() && utf8_invalid_at(t.content) == std::string::npos,
                     "%s: added token %d has empty or invalid content", source.c_str(), t.id);
            auto flag = [&](const char* k, bool def) { return a.contains(k) && a[k].is_boolean() ? a[k].get<bool>() : def; };
            t.special = flag("special", false);
            t.lstrip = flag("lstrip", false);
            t.rstrip = flag("rstrip", false);
            t.single_word = flag("single_word", false);
            t.normalized = flag("normalized", !t.special);
            add_or_update(v, std::move(t), source);
        }
    }
    const auto index = text_index(v);
    auto id_of = [&](const std::string& content) {
        auto it = index.find(content);
        return it == index.end() ? -1 : it->second;
    };
    auto special = [&](const char* key, int32_t& id) {
        if (!j.contains(key)) return;
        auto content = token_content(j[key]);
        if (!content) {
            id = -1;
            return;
        }
        id = id_of(*content);
        HG_CHECK(id >= 0, "%s: %s '%s' is not a token", source.c_str(), key, content->c_str());
    };
    special("bos_token", v.bos_id);
    special("eos_token", v.eos_id);
    special("unk_token", v.unk_id);
    special("pad_token", v.pad_id);
    if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) v.add_bos = j["add_bos_token"].get<bool>();
    if (j.contains("add_eos_token") && j["add_eos_token"].is_boolean()) v.add_eos = j["add_eos_token"].get<bool>();
    if (v.bos_id < 0) v.add_bos = false;
    if (v.eos_id < 0) v.add_eos = false;
    if (v.slow_class == "LlamaTokenizer") {  // LlamaTokenizerFast rebuilds its template from the same flags
        v.fast_add_bos = v.add_bos && v.bos_id >= 0;
        v.fast_add_eos = v.add_eos && v.eos_id >= 0;
    }
    if (j.contains("clean_up_tokenization_spaces") && j["clean_up_tokenization_spaces"].is_boolean())
        v.clean_up_tokenization_spaces = j["clean_up_tokenization_spaces"].get<bool>();
    if (j.contains("legacy") && j["legacy"].is_boolean()) v.legacy = j["legacy"].get<bool>();
    if (j.contains("add_prefix_space") && j["add_prefix_space"].is_boolean())
        v.add_prefix_space = j["add_prefix_space"].get<bool>();
    if (j.contains("additional_special_tokens")) {
        const json& list = j["additional_special_tokens"];
        HG_CHECK(list.is_array(), "%s: additional_special_tokens is not a list", source.c_str());
        v.additional_special.clear();
        for (const json& t : list) {
            auto content = token_content(t);
            HG_CHECK(content.has_value(), "%s: additional_special_tokens has a non-token entry", source.c_str());
            const int32_t id = id_of(*content);
            HG_CHECK(id >= 0, "%s: additional special token '%s' is not a token", source.c_str(), content->c_str());
            v.additional_special.push_back(id);
        }
    }
    v.validate();
}

Vocab vocab_from_gguf(const GGUFTokenizerArrays& g) {
    const std::string& src = g.source;
    Vocab v;
    v.source = src;
    const size_t n = g.tokens.size();
    HG_CHECK(n > 0 && n < (size_t(1) << 24), "%s: tokenizer.ggml.tokens has %zu entries", src.c_str(), n);
    HG_CHECK(g.token_type.empty() || g.token_type.size() == n, "%s: %zu token types for %zu tokens", src.c_str(),
             g.token_type.size(), n);
    v.types.assign(n, TokenType::normal);
    for (size_t i = 0; i < g.token_type.size(); ++i) {
        const int32_t t = g.token_type[i];
        HG_CHECK(t >= 1 && t <= 6, "%s: token %zu has type %d", src.c_str(), i, t);
        v.types[i] = static_cast<TokenType>(t);
    }
    if (g.model == "llama") {
        v.kind = VocabKind::spm_bpe;
        HG_CHECK(g.scores.size() == n, "%s: %zu scores for %zu tokens", src.c_str(), g.scores.size(), n);
        v.tokens = g.tokens;
        v.scores = g.scores;
        for (size_t i = 0; i < n; ++i) {
            HG_CHECK(utf8_invalid_at(v.tokens[i]) == std::string::npos, "%s: token %zu is not valid UTF-8", src.c_str(), i);
            if (v.types[i] == TokenType::byte) v.byte_fallback = true;
        }
        v.add_dummy_prefix = g.add_space_prefix.value_or(true);
        v.space_mode = v.add_dummy_prefix ? SpaceMode::prepend_each : SpaceMode::metaspace_never;
        v.slow_class = "LlamaTokenizer";
    } else if (g.model == "gpt2") {
        v.kind = VocabKind::byte_bpe;
        v.tokens.resize(n);
        std::unordered_map<std::string, int32_t> ids;
        ids.reserve(n * 2);
        for (size_t i = 0; i < n; ++i) {
            const bool special = v.types[i] == TokenType::control || v.types[i] == TokenType::user_defined;
            if (special || !gpt2_to_bytes(g.tokens[i], v.tokens[i])) {
                HG_CHECK(special, "%s: token %zu is outside the byte-level alphabet", src.c_str(), i);
                v.tokens[i] = g.tokens[i];
            }
            ids.emplace(g.tokens[i], static_cast<int32_t>(i));
        }
        for (size_t k = 0; k < g.merges.size(); ++k) {
            const std::string& m = g.merges[k];
            const size_t sp = m.find(' ');
            HG_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < m.size(), "%s: merge %zu is not 'a b'", src.c_str(), k);
            auto a = ids.find(m.substr(0, sp)), b = ids.find(m.substr(sp + 1));
            HG_CHECK(a != ids.end() && b != ids.end() && ids.count(m.substr(0, sp) + m.substr(sp + 1)),
                     "%s: merge %zu uses or produces a token outside the vocabulary", src.c_str(), k);
            v.merges.emplace_back(a->second, b->second);
        }
        const std::string& pre = g.pre;
        if (pre.empty() || pre == "default" || pre == "gpt2" || pre == "gpt-2") v.split_regex = kGpt2SplitRegex;
        else if (pre == "qwen2") v.split_regex = kQwen2SplitRegex, v.nfc = true;
        else if (pre == "dbrx" || pre == "cl100k" || pre == "phi-4") v.split_regex = kCl100kSplitRegex;
        else hg::fail("%s: tokenizer.ggml.pre '%s' is not supported (default, qwen2, dbrx)", src.c_str(), pre.c_str());
        v.slow_class = v.nfc ? "Qwen2Tokenizer" : "GPT2Tokenizer";
        v.add_prefix_space = false;
    } else {
        hg::fail("%s: tokenizer.ggml.model '%s' is not supported (llama, gpt2)", src.c_str(), g.model.c_str());
    }
    // Control and user-defined tokens are matched in the text, as Hugging Face added tokens are.
    // GGUF has no strip flags: a tokenizer_config.json stored in the file supplies them.
    for (size_t i = 0; i < n; ++i) {
        if (v.types[i] == TokenType::unknown) v.unk_id = static_cast<int32_t>(i);
        if (v.types[i] != TokenType::control && v.types[i] != TokenType::user_defined) continue;
        AddedToken t;
        t.id = static_cast<int32_t>(i);
        t.content = g.tokens[i];
        t.special = v.types[i] == TokenType::control;
        t.normalized = false;
        v.added.push_back(std::move(t));
    }
    auto id = [&](const std::optional<int64_t>& x) {
        return x && *x >= 0 && *x < static_cast<int64_t>(n) ? static_cast<int32_t>(*x) : -1;
    };
    if (id(g.unk_id) >= 0) v.unk_id = id(g.unk_id);
    v.bos_id = id(g.bos_id);
    v.eos_id = id(g.eos_id);
    v.pad_id = id(g.pad_id);
    v.add_bos = v.fast_add_bos = g.add_bos.value_or(v.kind == VocabKind::spm_bpe) && v.bos_id >= 0;
    v.add_eos = v.fast_add_eos = g.add_eos.value_or(false) && v.eos_id >= 0;
    for (size_t i = 0; i < n; ++i)
        if (v.types[i] == TokenType::normal || v.types[i] == TokenType::byte) v.model_size = static_cast<int32_t>(i) + 1;
    if (g.hf_tokenizer_config) apply_tokenizer_config(v, *g.hf_tokenizer_config, src + " (tokenizer_config)");
    v.validate();
    return v;
}

Vocab load_vocab(const std::filesystem::path& path, const std::optional<std::filesystem::path>& config) {
    namespace fs = std::filesystem;
    std::error_code ec;
    HG_CHECK(fs::exists(path, ec), "%s: no such file or folder", path.string().c_str());
    fs::path file = path;
    if (fs::is_directory(path, ec)) {
        file.clear();
        for (const char* name : {"tokenizer.json", "tokenizer.model"})
            if (fs::exists(path / name)) {
                file = path / name;
                break;
            }
        if (file.empty())
            for (const auto& e : fs::directory_iterator(path, ec))
                if (e.path().extension() == ".tiktoken") {
                    file = e.path();
                    break;
                }
        HG_CHECK(!file.empty(), "%s: no tokenizer.json, tokenizer.model or *.tiktoken in this folder",
                 path.string().c_str());
    }
    const std::string name = file.filename().string();
    const std::string ext = file.extension().string();
    Vocab v;
    if (ext == ".model") {
        const std::string bytes = read_text(file);
        v = load_sentencepiece_model({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, file.string());
    } else if (ext == ".tiktoken") {
        v = load_tiktoken(read_text(file), file.string());
    } else if (ext == ".json") {
        HG_CHECK(name != "tokenizer_config.json", "%s: this is a tokenizer configuration; pass tokenizer.json or "
                 "tokenizer.model (the configuration beside it is read automatically)", file.string().c_str());
        v = load_tokenizer_json(read_text(file), file.string());
    } else {
        hg::fail("%s: unknown tokenizer file type (expected tokenizer.json, tokenizer.model or *.tiktoken)",
                 file.string().c_str());
    }
    fs::path cfg = config ? *config : file.parent_path() / "tokenizer_config.json";
    if (config || fs::exists(cfg, ec)) apply_tokenizer_config(v, read_text(cfg), cfg.string());
    return v;
}

}  // namespace hg::text
