// Standard base64 (RFC 4648 §4, '+' '/', '=' padding), strict: the length a multiple of 4, padding
// only at the end, no whitespace. Used for tiktoken ranks and the server's data URLs.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace hg {

// Decodes `s` into `out`. On bad input returns false and, if `why` is given, says what is wrong
// ("length 5 is not a multiple of 4", "bad character at offset 7").
bool base64_decode(std::string_view s, std::string& out, std::string* why = nullptr);
std::string base64_encode(std::span<const uint8_t> bytes);

}  // namespace hg
