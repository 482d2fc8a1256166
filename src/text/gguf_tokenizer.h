// A tokenizer stored in a GGUF file, both directions.
//
// Keys (llama.cpp's, so llama.cpp and gguf-dump read our text.gguf unchanged):
//   tokenizer.ggml.model        "llama" (SentencePiece BPE, byte fallback) | "gpt2" (byte-level BPE)
//   tokenizer.ggml.pre          gpt2 only: the split pattern's name ("gpt-2", "qwen2", "dbrx" = cl100k)
//   tokenizer.ggml.tokens       string[]: SentencePiece pieces ("▁" for space) / GPT-2-alphabet strings;
//                               added tokens as their text
//   tokenizer.ggml.scores       f32[] (llama): piece scores (the BPE merge priority)
//   tokenizer.ggml.token_type   i32[]: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
//   tokenizer.ggml.merges       string[] (gpt2): "left right" in rank order
//   tokenizer.ggml.{bos,eos,unknown,padding}_token_id   u32
//   tokenizer.ggml.add_bos_token / add_eos_token         bool (what the fast tokenizer adds; llama.cpp's)
//   tokenizer.ggml.add_space_prefix                      bool (llama)
// plus ours:
//   healthgpt.tokenizer.hf_config  the transformers tokenizer_config.json text. GGUF has no lstrip /
//                               rstrip / single_word / normalized flags, no additional_special_tokens,
//                               no `legacy`, no slow-tokenizer add_bos: transformers' slow tokenizer
//                               (what HealthGPT uses) needs them, so the config travels with the file.
//
// Padding: a model's embedding often has more rows than its tokenizer has tokens (Phi-3: 32064 rows,
// len(tokenizer) = 32011; Qwen2.5: 152064 / 151665). llama.cpp's converter pads the token list to the
// row count with "[PAD{id}]" tokens; we write the same (TokenizerWriteOptions::n_rows), and
// load_tokenizer() drops trailing "[PAD{id}]" tokens of type unknown/unused again, so Tokenizer::size()
// is len(tokenizer) of transformers -- where HealthGPT's vocabulary extension starts (§5.2).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "formats/gguf.h"
#include "text/tokenizer.h"
#include "text/vocab.h"

namespace hg::text {

namespace tokenizer_keys {
inline constexpr const char* kModel = "tokenizer.ggml.model";
inline constexpr const char* kPre = "tokenizer.ggml.pre";
inline constexpr const char* kTokens = "tokenizer.ggml.tokens";
inline constexpr const char* kScores = "tokenizer.ggml.scores";
inline constexpr const char* kTokenType = "tokenizer.ggml.token_type";
inline constexpr const char* kMerges = "tokenizer.ggml.merges";
inline constexpr const char* kBosId = "tokenizer.ggml.bos_token_id";
inline constexpr const char* kEosId = "tokenizer.ggml.eos_token_id";
inline constexpr const char* kUnkId = "tokenizer.ggml.unknown_token_id";
inline constexpr const char* kPadId = "tokenizer.ggml.padding_token_id";
inline constexpr const char* kAddBos = "tokenizer.ggml.add_bos_token";
inline constexpr const char* kAddEos = "tokenizer.ggml.add_eos_token";
inline constexpr const char* kAddSpacePrefix = "tokenizer.ggml.add_space_prefix";
inline constexpr const char* kHfConfig = "healthgpt.tokenizer.hf_config";
}  // namespace tokenizer_keys

// The tokenizer.ggml.* arrays of a file (padding tokens at the end removed, see above).
// Throws naming the file when a key is missing or has the wrong type.
GGUFTokenizerArrays read_tokenizer_arrays(const GGUFFile& f);
bool has_tokenizer(const GGUFFile& f);  // tokenizer.ggml.tokens present

// The file's tokenizer (read_tokenizer_arrays + vocab_from_gguf).
Tokenizer load_tokenizer(const GGUFFile& f);

struct TokenizerWriteOptions {
    // Pad the token list with "[PAD{id}]" (type unused, score -10000) up to this many entries, the
    // row count of the model's embedding (llama.cpp requires tokens == rows). 0: no padding.
    int64_t n_rows = 0;
    // The tokenizer_config.json text the vocabulary was loaded with, if any. Its other keys
    // (chat_template, model_max_length, ...) are kept; every key our loader reads is rewritten from
    // the Vocab, so the stored config always describes exactly the vocabulary written.
    std::optional<std::string> hf_config;
};

// Writes the tokenizer.ggml.* keys and healthgpt.tokenizer.hf_config for `vocab` into `w`, such
// that load_tokenizer() of the written file encodes and decodes as `vocab` does (slow and fast
// semantics). A byte-level vocabulary without merges (tiktoken ranks) gets the merges BPE by rank
// implies (one per multi-byte token, as llama.cpp's and transformers' tiktoken converters derive
// them). Throws hg::Error for a vocabulary GGUF cannot describe (an unknown split pattern, a
// Metaspace pre-tokenizer, ignore_merges ...), naming what and why.
void write_tokenizer(GGUFWriter& w, const Vocab& vocab, const TokenizerWriteOptions& opt = {});
inline void write_tokenizer(GGUFWriter& w, const Tokenizer& tok, const TokenizerWriteOptions& opt = {}) {
    write_tokenizer(w, tok.vocab(), opt);
}

// The tokenizer_config.json text describing `vocab` as apply_tokenizer_config() reads it, merged
// into `base` (a tokenizer_config.json text, or empty). Exposed for tests.
std::string tokenizer_config_json(const Vocab& vocab, const std::string& base = {});

}  // namespace hg::text
