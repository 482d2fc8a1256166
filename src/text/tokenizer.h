// Text <-> token ids, exactly as the Hugging Face reference does it.
//
// Two reference behaviours exist and they differ on real prompts, so the caller picks one:
//   Semantics::slow  transformers 4.41's Python tokenizers (LlamaTokenizer, GPT2Tokenizer,
//                    Qwen2Tokenizer), which is what HealthGPT loads (`use_fast=False`). The prompt
//                    path (chat.h tokenize_with_images) and `healthgpt tokenize` use it by default.
//   Semantics::fast  the `tokenizers` 0.19 library behind tokenizer.json (AutoTokenizer's default).
// Where they differ (measured on the strings of tests/reference/gen_tokenizers.py):
//   Phi-3 (612 of 3004 strings)
//     - slow (legacy=False) puts one "▁" before the whole text and runs sentencepiece without its
//       dummy prefix on each segment between added tokens; fast (the published Llama-2 layout
//       tokenizer.json) prefixes "▁" to every segment. After <|user|>\n the next word is "You"
//       (3492) in slow, "▁You" (887) in fast.
//     - slow keeps a lone "▁" (29871) when the text starts with an added token that is not in the
//       special-tokens map (<|system|>, <|user|>, ...): HealthGPT prompts start with [29871, 32006].
//     - rstrip/lstrip eat Python whitespace in slow (U+001C..U+001F too), Unicode White_Space in fast.
//   Phi-4 (954 of 2918): slow GPT2Tokenizer splits with GPT-2's regex whatever tokenizer.json says
//     (digit runs are not cut into threes, contractions are case-sensitive, ...); fast uses cl100k's.
//   Qwen2.5 (0 of 3065): same regex and NFC; slow applies NFC before splitting off added tokens.
//   Decoding: slow joins added tokens outside the special-tokens map with spaces and strips "▁"
//     from the first piece of each run; skip_special_tokens drops only bos/eos/unk/pad and
//     additional_special_tokens (so Phi-3's <|end|> stays: the reference's [:-8]); an ill-formed
//     byte-fallback sequence gives one U+FFFD per byte (sentencepiece) where fast replaces the
//     whole run. Fast concatenates and skips every added token flagged special.
// decode() defaults to fast (plain text for generated ids); slow reproduces the reference's strings.
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
