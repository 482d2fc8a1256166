// A tokenizer vocabulary and everything that decides how text becomes ids, from any source:
// SentencePiece tokenizer.model, Hugging Face tokenizer.json (+ tokenizer_config.json), tiktoken
// ranks, or GGUF `tokenizer.ggml.*` metadata. Loaders of untrusted files: every malformed input is
// refused with an hg::Error that names the file and the problem.
//
// Two families of models are covered (healthgpt-reference.md §3.1):
//   spm_bpe   SentencePiece BPE with byte fallback (Llama-2 / Phi-3): pieces with scores, "▁" for space
//   byte_bpe  GPT-2 style byte-level BPE (cl100k / Phi-4, Qwen2.5): a split regex, then BPE over bytes
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hg::text {

enum class VocabKind : uint8_t { spm_bpe, byte_bpe };

// SentencePiece piece types (also GGUF tokenizer.ggml.token_type).
enum class TokenType : uint8_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

// A token matched in the text before the model runs (Hugging Face AddedToken).
struct AddedToken {
    std::string content;
    int32_t id = -1;
    bool special = true;       // skipped by decode(skip_special_tokens) in the fast tokenizer
    bool lstrip = false;       // eats the whitespace on its left
    bool rstrip = false;       // eats the whitespace on its right
    bool single_word = false;  // only matches as a whole word
    bool normalized = false;   // matched after normalisation (fast tokenizer only)
};

// How a SentencePiece-style tokenizer.json turns spaces into "▁" in the fast tokenizer.
enum class SpaceMode : uint8_t {
    prepend_each,      // normalizer Prepend("▁") + Replace(" ", "▁"): every text segment gets "▁" (Llama-2 "legacy")
    metaspace_always,  // pre-tokenizer Metaspace, prepend_scheme "always"
    metaspace_first,   // pre-tokenizer Metaspace, prepend_scheme "first" (only the segment at offset 0)
    metaspace_never,   // pre-tokenizer Metaspace, prepend_scheme "never"
};

// How the split regex's matches become pieces (tokenizers' Split pre-tokenizer behaviours we support).
enum class SplitMode : uint8_t { isolated, keep_matches /* "Removed" with invert: gaps are dropped */ };

struct Vocab {
    std::string source;  // file name, for error messages
    VocabKind kind = VocabKind::spm_bpe;

    // id -> token. spm_bpe: the piece as UTF-8 with "▁"; byte_bpe: the raw bytes. Added tokens: content.
    std::vector<std::string> tokens;
    std::vector<float> scores;     // spm_bpe from tokenizer.model / GGUF: merge priority of each piece
    std::vector<TokenType> types;  // one per token
    // BPE merges in rank order as (left id, right id). Empty for spm_bpe with scores (SentencePiece
    // merges the adjacent pair whose concatenation has the highest score) and for tiktoken (a pair's
    // rank is the rank of the merged bytes).
    std::vector<std::pair<int32_t, int32_t>> merges;
    bool merge_by_rank = false;    // byte_bpe without merges: a pair merges into the token of its bytes, by id

    // SentencePiece normaliser (tokenizer.model NormalizerSpec) and the fast tokenizer's equivalent.
    bool add_dummy_prefix = true;
    bool remove_extra_whitespaces = false;
    bool escape_whitespaces = true;
    bool byte_fallback = false;
    SpaceMode space_mode = SpaceMode::prepend_each;
    bool metaspace_split = false;

    // byte_bpe pre-tokenisation (fast tokenizer): NFC, split regex, byte-level mapping.
    bool nfc = false;
    std::string split_regex;       // empty: GPT-2's pattern
    SplitMode split_mode = SplitMode::isolated;
    bool byte_level_add_prefix_space = false;
    bool ignore_merges = false;    // a piece that is itself a token is not split by BPE
    bool fuse_unk = false;

    std::vector<AddedToken> added;  // sorted by id

    // tokenizer_config.json level (transformers).
    int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
    bool add_bos = false, add_eos = false;            // slow: add_bos_token / add_eos_token
    bool fast_add_bos = false, fast_add_eos = false;  // fast: the post-processor's template
    bool clean_up_tokenization_spaces = false;        // decode: " ." -> "." etc. (transformers)
    int32_t model_size = 0;             // ids [0, model_size) belong to the model's own vocabulary
    bool legacy = true;                 // LlamaTokenizer `legacy` (true when unset, as in transformers 4.41)
    bool add_prefix_space = true;       // LlamaTokenizer / GPT2Tokenizer add_prefix_space (false for GPT2)
    std::string slow_class;             // tokenizer_class without "Fast": LlamaTokenizer, GPT2Tokenizer, Qwen2Tokenizer
    std::vector<int32_t> additional_special;  // additional_special_tokens, by id

    int32_t size() const { return static_cast<int32_t>(tokens.size()); }
    const AddedToken* find_added(int32_t id) const;
    // Checks internal consistency (sizes, ids in range, unique added tokens); throws hg::Error.
    void validate() const;
};

// --- loaders (each throws hg::Error naming `source` and the problem) ---

// SentencePiece ModelProto (tokenizer.model). Only BPE models with an identity normaliser are
// accepted (that is every Llama-2-family model); others are refused with a clear message.
Vocab load_sentencepiece_model(std::span<const uint8_t> bytes, const std::string& source);

// Hugging Face tokenizer.json (model BPE: SentencePiece-style with byte fallback, or byte-level).
Vocab load_tokenizer_json(std::string_view json_text, const std::string& source);

// tiktoken ranks file ("<base64 token> <rank>" per line). The file carries no split pattern and no
// special tokens: `split_regex` defaults to cl100k's, specials come from a tokenizer_config.json.
Vocab load_tiktoken(std::string_view text, const std::string& source, std::string split_regex = {});

// Applies a transformers tokenizer_config.json: added_tokens_decoder (with flags), bos/eos/unk/pad,
// add_bos_token/add_eos_token, legacy, add_prefix_space, additional_special_tokens, tokenizer_class.
void apply_tokenizer_config(Vocab& vocab, std::string_view json_text, const std::string& source);

// GGUF tokenizer metadata, as plain arrays (the GGUF reader fills this from `tokenizer.ggml.*`).
struct GGUFTokenizerArrays {
    std::string source;
    std::string model;                  // tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    std::string pre;                    // tokenizer.ggml.pre: split regex name for gpt2 ("default", "qwen2", ...)
    std::vector<std::string> tokens;    // tokenizer.ggml.tokens
    std::vector<float> scores;          // tokenizer.ggml.scores (llama)
    std::vector<int32_t> token_type;    // tokenizer.ggml.token_type
    std::vector<std::string> merges;    // tokenizer.ggml.merges ("a b", gpt2)
    std::optional<int64_t> bos_id, eos_id, unk_id, pad_id;
    std::optional<bool> add_bos, add_eos, add_space_prefix;
    std::optional<std::string> hf_tokenizer_config;  // healthgpt.tokenizer.hf_config: tokenizer_config.json text
};
Vocab vocab_from_gguf(const GGUFTokenizerArrays& arrays);

// A tokenizer from a path: a tokenizer.json, tokenizer.model or *.tiktoken file, or a folder holding
// one of them. A tokenizer_config.json beside it (or `config`, when given) is applied on top.
Vocab load_vocab(const std::filesystem::path& path, const std::optional<std::filesystem::path>& config = {});

// Split patterns of the models we know (the strings are the models' own).
extern const char* const kGpt2SplitRegex;
extern const char* const kCl100kSplitRegex;
extern const char* const kQwen2SplitRegex;

}  // namespace hg::text
