#include "core/base64.h"

namespace hg {

namespace {

int base64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

}  // namespace

bool base64_decode(std::string_view s, std::string& out, std::string* why) {
    out.clear();
    auto fail = [&](std::string w) {
        if (why) *why = std::move(w);
        out.clear();
        return false;
    };
    if (s.size() % 4) return fail("length " + std::to_string(s.size()) + " is not a multiple of 4");
    size_t pad = 0;
    if (!s.empty() && s.back() == '=') pad = s.size() >= 2 && s[s.size() - 2] == '=' ? 2 : 1;
    out.reserve(s.size() / 4 * 3);
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < s.size() - pad; ++i) {
        const int v = base64_value(s[i]);
        if (v < 0) return fail("bad character at offset " + std::to_string(i));
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xFF));
        }
    }
    return true;
}

std::string base64_encode(std::span<const uint8_t> b) {
    static const char* A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((b.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= b.size(); i += 3) {
        const uint32_t v = (uint32_t(b[i]) << 16) | (uint32_t(b[i + 1]) << 8) | b[i + 2];
        out += {A[v >> 18], A[(v >> 12) & 63], A[(v >> 6) & 63], A[v & 63]};
    }
    if (i + 1 == b.size()) {
        const uint32_t v = uint32_t(b[i]) << 16;
        out += {A[v >> 18], A[(v >> 12) & 63], '=', '='};
    } else if (i + 2 == b.size()) {
        const uint32_t v = (uint32_t(b[i]) << 16) | (uint32_t(b[i + 1]) << 8);
        out += {A[v >> 18], A[(v >> 12) & 63], A[(v >> 6) & 63], '='};
    }
    return out;
}

}  // namespace hg
