#include "service/validate.h"

#include <nlohmann/json.hpp>

#include <string>

#include "service/errors.h"
#include "service/roles.h"

namespace hg::service {

namespace {

[[noreturn]] void bad(std::string_view field, const std::string& why) {
    throw BadInput(std::string(field) + ": " + why);
}

}  // namespace

const char* role_name(Role r) {
    switch (r) {
        case Role::patient: return "patient";
        case Role::physician: return "physician";
        case Role::admin: return "admin";
    }
    return "?";
}

Role parse_role(std::string_view s) {
    if (s == "patient") return Role::patient;
    if (s == "physician") return Role::physician;
    if (s == "admin") return Role::admin;
    throw BadInput("role: must be patient, physician or admin");
}

Principal Principal::local_operator() {
    Principal p;
    p.user_id = 0;
    p.name = "local-operator";
    p.role = Role::admin;
    return p;
}

bool is_valid_utf8(std::string_view s) {
    // RFC 3629: shortest form only, no surrogates, at most U+10FFFF.
    size_t i = 0;
    while (i < s.size()) {
        const auto c = uint8_t(s[i]);
        size_t n;
        uint32_t cp;
        if (c < 0x80) { ++i; continue; }
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
        else return false;
        if (i + n >= s.size()) return false;  // the sequence runs past the end
        for (size_t k = 1; k <= n; ++k) {
            const auto cc = uint8_t(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)) return false;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

void check_text(std::string_view field, std::string_view s, size_t max, bool allow_newlines) {
    if (s.empty()) bad(field, "must not be empty");
    if (s.size() > max) bad(field, std::to_string(s.size()) + " bytes, more than the limit of " + std::to_string(max));
    if (!is_valid_utf8(s)) bad(field, "is not valid UTF-8");
    for (char ch : s) {
        const auto c = uint8_t(ch);
        const bool newline = c == '\n' || c == '\r';
        if ((c < 0x20 && c != '\t' && !(allow_newlines && newline)) || c == 0x7F)
            bad(field, allow_newlines ? "contains a control character" : "contains a control character or newline");
    }
    bool blank = true;
    for (char ch : s) blank = blank && (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r');
    if (blank) bad(field, "must not be blank");
}

void check_sha256_hex(std::string_view field, std::string_view s) {
    if (s.size() != 64) bad(field, "must be 64 lower-case hex digits (a SHA-256)");
    for (char c : s)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) bad(field, "must be 64 lower-case hex digits (a SHA-256)");
}

void check_json_object(std::string_view field, std::string_view s) {
    if (s.size() > Limits::metadata)
        bad(field, std::to_string(s.size()) + " bytes, more than the limit of " + std::to_string(Limits::metadata));
    if (!is_valid_utf8(s)) bad(field, "is not valid UTF-8");
    const auto j = nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) bad(field, "is not valid JSON");
    if (!j.is_object()) bad(field, "must be a JSON object");
}

void check_id(std::string_view field, int64_t id) {
    if (id <= 0) bad(field, "must be a positive id");
}

}  // namespace hg::service
