// Text <-> token ids, exactly as the Hugging Face reference does it.
//
// Two reference behaviours exist and they differ on real prompts, so the caller picks one:
//   Semantics::slow  transformers' Python tokenizers (LlamaTokenizer, GPT2Tokenizer, Qwen2Tokenizer),
//                    which is what HealthGPT loads (`use_fast=False`). The prompt path uses this.
//   Semantics::fast  the `tokenizers` library behind tokenizer.json (AutoTokenizer's default).
// Where they differ (docs/text.md has the full list): Phi-3 slow (legacy=False) prefixes "▁" only to
// the start of the text and keeps a lone "▁" before <|system|>, fast prefixes every segment between
// added tokens; Phi-4 slow splits with GPT-2's regex, fast with cl100k's; slow strips U+001C..U+001F
// next to rstrip/lstrip tokens (Python whitespace), fast does not; decoding joins added tokens
// with spaces in slow.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/vocab.h"

namespace hg::text {

enum class Semantics : uint8_t { slow, fast };

struct EncodeOptions {
    Semantics semantics = Semantics::slow;
    bool add_special_tokens = true;   // BOS/EOS as the tokenizer config says (HF's default)
    bool parse_added_tokens = true;   // false: added-token text is plain text (HF split_special_tokens=True)
};

struct DecodeOptions {
    Semantics semantics = Semantics::fast;
    bool skip_special_tokens = false;
};

class Tokenizer {
public:
    explicit Tokenizer(Vocab vocab);
    ~Tokenizer();
    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;

    static Tokenizer load(const std::filesystem::path& path, const std::optional<std::filesystem::path>& config = {}) {
        return Tokenizer(load_vocab(path, config));
    }

    // Throws hg::Error if `text` is not valid UTF-8 (the reference only ever sees Unicode strings).
    std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;
    // Ids outside [0, size()) throw hg::Error.
    std::string decode(std::span<const int32_t> ids, const DecodeOptions& options = {}) const;

    const Vocab& vocab() const;
    int32_t size() const;  // len(tokenizer): vocabulary plus added tokens
    // Id of an added token's content or of a vocabulary entry's text; -1 if none.
    int32_t token_to_id(std::string_view text) const;
    // Printable text of a token (added content, SentencePiece piece, or GPT-2 alphabet form).
    std::string id_to_token(int32_t id) const;
    // True for ids decode(skip_special_tokens) removes under `semantics`.
    bool is_special(int32_t id, Semantics semantics) const;

    // Adds tokens after the last id (HF add_special_tokens / add_tokens). Tokens whose content is
    // already a token keep that id. `special_map` also lists them as additional special tokens.
    // Returns the number of new ids.
    int32_t add_tokens(std::span<const AddedToken> tokens, bool special_map);

    // The bytes one token contributes to fast decoding, before the leading-space strip (streaming).
    struct Piece {
        std::string bytes;
        bool is_byte = false;  // a byte-fallback piece (<0xNN>) of a SentencePiece vocabulary
        bool skipped = false;  // removed by skip_special_tokens
    };
    Piece piece_bytes(int32_t id, bool skip_special_tokens) const;
    bool strips_leading_space() const;  // fast decoding drops one leading space (SentencePiece "▁" prefix)

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Emits text as ids arrive, holding back bytes that may still become part of a character (a UTF-8
// sequence split across tokens, or a run of byte-fallback pieces). The concatenated output equals
// decode(ids, {fast, skip_special_tokens}).
class StreamDecoder {
public:
    explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);
    std::string push(int32_t id);  // the text that became final with this id (often empty)
    std::string finish();          // flushes what is held back (incomplete bytes become U+FFFD)

private:
    const Tokenizer& tok_;
    bool skip_;
    bool started_ = false;   // some text was emitted (the leading-space strip is done)
    std::string pending_;    // bytes not yet emitted
    std::string byte_run_;   // SentencePiece byte-fallback bytes of the current run
    std::string emit(std::string_view text);
    void flush_byte_run();
};

}  // namespace hg::text
