// The tokenizer of a Hugging Face base folder -> text.gguf metadata, in the key contract of the text
// loader (src/text/gguf_tokenizer.h, which also reads it back; llama.cpp's keys):
//   tokenizer.ggml.model        "llama" (SentencePiece BPE) | "gpt2" (byte-level BPE)
//   tokenizer.ggml.pre          "default" (llama) | "gpt-2" | "qwen2" | "dbrx" (cl100k, phi-4)
//   tokenizer.ggml.tokens       string[]: pieces with "▁" / GPT-2-alphabet strings; added tokens as text;
//                               padded with "[PAD{id}]" (type unused) to the embedding's rows, as llama.cpp does
//   tokenizer.ggml.scores       f32[] (llama)
//   tokenizer.ggml.token_type   i32[]: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
//   tokenizer.ggml.merges       string[] (gpt2): "left right" in rank order
//   tokenizer.ggml.{bos,eos,unknown,padding}_token_id u32, add_bos_token / add_eos_token bool,
//   add_space_prefix bool (llama)
//   healthgpt.tokenizer.hf_config  tokenizer_config.json as shipped (strip flags, additional special
//                               tokens, legacy: what transformers' slow tokenizer needs and GGUF lacks)
// The written keys are read back with the text layer's vocab_from_gguf before the file is accepted:
// a vocabulary GGUF cannot describe is refused here, not discovered at load.
#include <unordered_map>

#include "convert/convert_common.h"
#include "core/error.h"
#include "text/unicode.h"
#include "text/vocab.h"

namespace fs = std::filesystem;

namespace hg::conv {

namespace {

using text::TokenType;
using text::Vocab;
using text::VocabKind;

std::string pad_token(int64_t id) { return "[PAD" + std::to_string(id) + "]"; }

// The split pattern's llama.cpp name; nullptr if it has none.
const char* pre_name(const Vocab& v) {
    const std::string& re = v.split_regex;
    if ((re.empty() || re == text::kGpt2SplitRegex) && !v.nfc) return "gpt-2";
    if (re == text::kQwen2SplitRegex && v.nfc) return "qwen2";
    if (re == text::kCl100kSplitRegex && !v.nfc) return "dbrx";
    return nullptr;
}

std::string read_small_text(const fs::path& p) {
    const nlohmann::json j = read_json(p);  // validates and bounds the size
    (void)j;
    FILE* f = std::fopen(p.c_str(), "rb");
    HG_CHECK(f, "%s: cannot open", p.c_str());
    std::string s;
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    std::fclose(f);
    return s;
}

}  // namespace

text::GGUFTokenizerArrays tokenizer_arrays(const Vocab& v, int64_t n_rows, const std::optional<std::string>& hf_config) {
    v.validate();
    const char* src = v.source.c_str();
    const int32_t n = v.size();
    HG_CHECK(n_rows >= n, "%s: %d tokens do not fit the %lld embedding rows of config.json", src, n, (long long)n_rows);
    text::GGUFTokenizerArrays g;
    g.source = v.source;
    g.tokens.reserve((size_t)n_rows);
    g.token_type.reserve((size_t)n_rows);
    // Added tokens take their type from added_tokens_decoder, as llama.cpp's converter does: special
    // -> control, else user-defined (Phi-3's </s> is not special). Our loader reads both as added
    // tokens; the stored tokenizer_config.json gives them their flags.
    std::vector<TokenType> types = v.types;
    for (const text::AddedToken& t : v.added) types[t.id] = t.special ? TokenType::control : TokenType::user_defined;
    for (int32_t i = 0; i < n; ++i) {
        const TokenType t = types[i];
        if (t == TokenType::unused && v.tokens[i].empty()) g.tokens.push_back(pad_token(i));  // a hole in the ids
        else if (v.kind == VocabKind::byte_bpe && t != TokenType::control && t != TokenType::user_defined)
            g.tokens.push_back(text::bytes_to_gpt2(v.tokens[i]));
        else {
            HG_CHECK(!v.tokens[i].empty(), "%s: token %d is empty", src, i);
            g.tokens.push_back(v.tokens[i]);
        }
        g.token_type.push_back((int32_t)t);
    }
    for (int64_t i = n; i < n_rows; ++i) {
        g.tokens.push_back(pad_token(i));
        g.token_type.push_back((int32_t)TokenType::unused);
    }
    if (v.kind == VocabKind::spm_bpe) {
        HG_CHECK(v.escape_whitespaces && !v.remove_extra_whitespaces,
                 "%s: a SentencePiece normaliser without whitespace escaping or with whitespace removal has no GGUF form",
                 src);
        const text::SpaceMode expect = v.add_dummy_prefix ? text::SpaceMode::prepend_each : text::SpaceMode::metaspace_never;
        HG_CHECK(v.space_mode == expect && !v.metaspace_split,
                 "%s: this Metaspace pre-tokenizer (prepend scheme first/always, or split) has no GGUF form", src);
        std::vector<float> scores;
        if (!v.scores.empty()) {
            scores = v.scores;
            scores.resize((size_t)n, 0.0f);  // added tokens: no score (never merged)
        } else {
            // tokenizer.json has merges, not scores: a piece scores minus the rank of the first merge
            // that builds it (SentencePiece merges the highest score first); others score lowest.
            HG_CHECK(!v.merges.empty(), "%s: SentencePiece vocabulary without scores or merges", src);
            scores.assign((size_t)n, -1e9f);
            std::unordered_map<std::string, int32_t> ids;
            for (int32_t i = 0; i < n; ++i)
                if (!v.tokens[i].empty()) ids.emplace(v.tokens[i], i);
            for (size_t r = v.merges.size(); r-- > 0;) {
                auto it = ids.find(v.tokens[v.merges[r].first] + v.tokens[v.merges[r].second]);
                if (it != ids.end()) scores[it->second] = -(float)r;
            }
            for (int32_t i = 0; i < n; ++i)
                if (text::utf8_length(v.tokens[i]) <= 1 || types[i] != TokenType::normal) scores[i] = 0.0f;
        }
        scores.resize((size_t)n_rows, -10000.0f);
        g.model = "llama";
        g.pre = "default";
        g.scores = std::move(scores);
        g.add_space_prefix = v.add_dummy_prefix;
    } else {
        const char* pre = pre_name(v);
        HG_CHECK(pre, "%s: this byte-level tokenizer's split pattern has no GGUF name (GPT-2's, cl100k's and Qwen2's are "
                      "supported)", src);
        // Split(Removed, invert) (cl100k's tokenizer.json) keeps only the matches; each named pattern
        // ends in \s+ and so matches every character: nothing is removed, the split is the same.
        HG_CHECK(!v.byte_level_add_prefix_space && !v.ignore_merges,
                 "%s: this byte-level pre-tokenizer (add_prefix_space, ignore_merges) has no GGUF form", src);
        HG_CHECK(!v.merges.empty(), "%s: a byte-level vocabulary without merges (tiktoken ranks) is not supported here; "
                 "convert from the folder's tokenizer.json", src);
        g.model = "gpt2";
        g.pre = pre;
        g.merges.reserve(v.merges.size());
        for (auto [l, r] : v.merges) g.merges.push_back(text::bytes_to_gpt2(v.tokens[l]) + " " + text::bytes_to_gpt2(v.tokens[r]));
    }
    if (v.bos_id >= 0) g.bos_id = v.bos_id;
    if (v.eos_id >= 0) g.eos_id = v.eos_id;
    if (v.unk_id >= 0) g.unk_id = v.unk_id;
    if (v.pad_id >= 0) g.pad_id = v.pad_id;
    g.add_bos = v.fast_add_bos;
    g.add_eos = v.fast_add_eos;
    g.hf_tokenizer_config = hf_config;
    return g;
}

void write_tokenizer_arrays(GGUFWriter& w, const text::GGUFTokenizerArrays& g) {
    w.set_string("tokenizer.ggml.model", g.model);
    w.set_string("tokenizer.ggml.pre", g.pre);
    w.set_string_array("tokenizer.ggml.tokens", g.tokens);
    if (!g.scores.empty()) w.set_f32_array("tokenizer.ggml.scores", g.scores);
    w.set_i32_array("tokenizer.ggml.token_type", g.token_type);
    if (!g.merges.empty()) w.set_string_array("tokenizer.ggml.merges", g.merges);
    if (g.bos_id) w.set_u32("tokenizer.ggml.bos_token_id", (uint32_t)*g.bos_id);
    if (g.eos_id) w.set_u32("tokenizer.ggml.eos_token_id", (uint32_t)*g.eos_id);
    if (g.unk_id) w.set_u32("tokenizer.ggml.unknown_token_id", (uint32_t)*g.unk_id);
    if (g.pad_id) w.set_u32("tokenizer.ggml.padding_token_id", (uint32_t)*g.pad_id);
    if (g.add_bos) w.set_bool("tokenizer.ggml.add_bos_token", *g.add_bos);
    if (g.add_eos) w.set_bool("tokenizer.ggml.add_eos_token", *g.add_eos);
    if (g.add_space_prefix) w.set_bool("tokenizer.ggml.add_space_prefix", *g.add_space_prefix);
    if (g.hf_tokenizer_config) w.set_string("healthgpt.tokenizer.hf_config", *g.hf_tokenizer_config);
}

std::string add_tokenizer(GGUFWriter& w, const fs::path& dir, int64_t n_rows) {
    // Phi-3's folder has both tokenizer.model and tokenizer.json: the SentencePiece model carries the
    // scores (llama.cpp converts from it too) and is what the slow LlamaTokenizer HealthGPT loads reads.
    const fs::path cfg = dir / "tokenizer_config.json";
    const bool has_cfg = fs::exists(cfg);
    text::Vocab v = fs::exists(dir / "tokenizer.model") ? text::load_vocab(dir / "tokenizer.model") : text::load_vocab(dir);
    std::optional<std::string> cfg_text;
    if (has_cfg) cfg_text = read_small_text(cfg);
    const text::GGUFTokenizerArrays g = tokenizer_arrays(v, n_rows, cfg_text);
    // What the loader will see: the same arrays read back through the text layer's GGUF path.
    text::GGUFTokenizerArrays back = g;
    back.source = (dir / "tokenizer (as written to text.gguf)").string();
    while (back.tokens.size() > (size_t)v.size()) {  // the padding rows, as text::read_tokenizer_arrays drops them
        back.tokens.pop_back();
        back.token_type.pop_back();
        if (back.scores.size() > back.tokens.size()) back.scores.pop_back();
    }
    for (size_t i = 0; i < back.tokens.size(); ++i)
        if (back.token_type[i] == (int32_t)TokenType::unused && back.tokens[i] == pad_token((int64_t)i)) back.tokens[i].clear();
    const text::Vocab check = text::vocab_from_gguf(back);
    HG_CHECK(check.size() == v.size(), "%s: the tokenizer written to GGUF has %d tokens, the folder's %d", dir.c_str(),
             check.size(), v.size());
    write_tokenizer_arrays(w, g);
    return v.source + " (" + std::to_string(v.size()) + " tokens, " +
           (v.kind == VocabKind::spm_bpe ? "SentencePiece BPE" : std::string("byte-level BPE, pre ") + g.pre) +
           (n_rows > v.size() ? ", padded to " + std::to_string(n_rows) + " rows" : std::string()) +
           (has_cfg ? ", tokenizer_config.json stored" : ", no tokenizer_config.json") + ")";
}

}  // namespace hg::conv
