// Input checks shared by the service calls: sizes, UTF-8, hex digests, JSON objects. Each throws
// BadInput naming the field (never echoing the value: it may be medical text or a secret).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hg::service {

// The limits of stored fields (bytes of UTF-8). Oversize input is refused, never truncated.
struct Limits {
    static constexpr size_t name = 200;            // user names
    static constexpr size_t title = 500;           // consultation titles
    static constexpr size_t text = 64 * 1024;      // messages, corrections
    static constexpr size_t comment = 16 * 1024;   // feedback comments
    static constexpr size_t answer = 256 * 1024;   // model answers
    static constexpr size_t model = 200;           // model names
    static constexpr size_t filename = 255;
    static constexpr size_t metadata = 64 * 1024;  // upload metadata JSON
    static constexpr size_t upload = size_t(512) << 20;  // upload bytes (a DICOM series is large)
};

bool is_valid_utf8(std::string_view s);

// Non-empty, at most max bytes, valid UTF-8, no control characters except tab and newlines
// (allow_newlines; names and titles are single-line).
void check_text(std::string_view field, std::string_view s, size_t max, bool allow_newlines);
// 64 lower-case hex digits.
void check_sha256_hex(std::string_view field, std::string_view s);
// A JSON object of at most Limits::metadata bytes.
void check_json_object(std::string_view field, std::string_view s);
// A positive row id.
void check_id(std::string_view field, int64_t id);

}  // namespace hg::service
