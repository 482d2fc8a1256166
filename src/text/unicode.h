// UTF-8 and the few Unicode facts the tokenizers need: strict decoding, lossy decoding with
// maximal-subpart replacement (what Python's errors="replace" and Rust's from_utf8_lossy do),
// the two whitespace sets (Unicode White_Space, used by Rust/Oniguruma/`regex`; Python str.isspace,
// used by transformers' slow tokenizers), GPT-2's byte <-> unicode table, and NFC (through ICU).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace hg::text {

// Decodes one code point at s[i]; on success advances i and returns true. Rejects overlongs,
// surrogates, values above U+10FFFF and truncated sequences (i is then left unchanged).
bool utf8_next(std::string_view s, size_t& i, char32_t& cp);

// Appends the UTF-8 encoding of cp (cp must be a Unicode scalar value).
void utf8_append(std::string& out, char32_t cp);

// Byte offset of the first invalid byte, or npos when s is valid UTF-8.
size_t utf8_invalid_at(std::string_view s);

// Valid UTF-8 from arbitrary bytes: every maximal subpart of an ill-formed sequence becomes U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Length of the longest prefix of `bytes` whose lossy decoding cannot change when more bytes are
// appended: everything except a trailing, still-completable partial sequence (at most 3 bytes).
size_t utf8_stable_prefix(std::string_view bytes);

// Number of code points (s must be valid UTF-8).
size_t utf8_length(std::string_view s);

// Unicode White_Space: \t..\r, space, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029,
// U+202F, U+205F, U+3000. This is `\s` in Rust's regex, Oniguruma and Python's `regex`.
bool is_white_space(char32_t c);
// Python str.isspace(): White_Space plus U+001C..U+001F (str.strip() strips these).
bool is_python_space(char32_t c);

// GPT-2 byte-level alphabet: byte b is written as the code point byte_to_unicode(b).
char32_t byte_to_unicode(uint8_t b);
// Inverse mapping; returns -1 for code points outside the alphabet.
int unicode_to_byte(char32_t c);
// Converts a GPT-2 alphabet string ("Ġhello") to raw bytes; false if a character is outside the alphabet.
bool gpt2_to_bytes(std::string_view s, std::string& out);
std::string bytes_to_gpt2(std::string_view bytes);

// Unicode canonical composition (NFC), as used by the Qwen2 tokenizers. Input must be valid UTF-8.
std::string nfc(std::string_view s);

}  // namespace hg::text
