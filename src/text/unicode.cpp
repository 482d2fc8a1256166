#include "text/unicode.h"

#include <algorithm>
#include <array>
#include <vector>

namespace hg::text {

namespace {

struct CccRun { char32_t first, last; uint8_t ccc; };
struct Decomp { char32_t cp; uint16_t offset, length; };
struct Compose { char32_t a, b, composite; };
#include "text/unicode_tables.inc"

// Expected continuation range for the second byte of a sequence led by `lead` (Unicode Table 3-7).
bool second_byte_ok(uint8_t lead, uint8_t b) {
    if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
    if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
    if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
    if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
    return b >= 0x80 && b <= 0xBF;
}

int sequence_length(uint8_t lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;  // continuation byte, C0, C1, F5..FF: never a lead
}

// Length of the maximal subpart at s[i] (1..3 bytes that start a valid sequence but do not finish
// it), or 0 if s[i..] starts with a complete valid sequence.
size_t ill_formed_prefix(std::string_view s, size_t i, size_t* complete_len) {
    const uint8_t lead = static_cast<uint8_t>(s[i]);
    const int n = sequence_length(lead);
    if (n == 0) return 1;
    if (n == 1) {
        *complete_len = 1;
        return 0;
    }
    size_t k = 1;
    for (; k < static_cast<size_t>(n); ++k) {
        if (i + k >= s.size()) return k;  // truncated at the end
        const uint8_t b = static_cast<uint8_t>(s[i + k]);
        const bool ok = k == 1 ? second_byte_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
        if (!ok) return k;
    }
    *complete_len = static_cast<size_t>(n);
    return 0;
}

uint8_t combining_class(char32_t c) {
    if (c < 0x300) return 0;
    size_t lo = 0, hi = sizeof(kCcc) / sizeof(kCcc[0]);
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (kCcc[mid].last < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < sizeof(kCcc) / sizeof(kCcc[0]) && kCcc[lo].first <= c ? kCcc[lo].ccc : 0;
}

constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr int kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr int kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

void decompose(char32_t c, std::vector<char32_t>& out) {
    if (c >= kHangulS && c < kHangulS + kHangulSCount) {
        const int s = static_cast<int>(c - kHangulS);
        out.push_back(kHangulL + s / kHangulNCount);
        out.push_back(kHangulV + (s % kHangulNCount) / kHangulTCount);
        if (s % kHangulTCount) out.push_back(kHangulT + s % kHangulTCount);
        return;
    }
    const auto* end = kDecomp + sizeof(kDecomp) / sizeof(kDecomp[0]);
    const auto* it = std::lower_bound(kDecomp, end, c, [](const Decomp& d, char32_t v) { return d.cp < v; });
    if (it != end && it->cp == c) {
        out.insert(out.end(), kDecompData + it->offset, kDecompData + it->offset + it->length);
        return;
    }
    out.push_back(c);
}

char32_t compose_pair(char32_t a, char32_t b) {
    if (a >= kHangulL && a < kHangulL + kHangulLCount && b >= kHangulV && b < kHangulV + kHangulVCount)
        return kHangulS + ((a - kHangulL) * kHangulVCount + (b - kHangulV)) * kHangulTCount;
    if (a >= kHangulS && a < kHangulS + kHangulSCount && (a - kHangulS) % kHangulTCount == 0 && b > kHangulT &&
        b < kHangulT + kHangulTCount)
        return a + (b - kHangulT);
    const auto* end = kCompose + sizeof(kCompose) / sizeof(kCompose[0]);
    const auto* it = std::lower_bound(kCompose, end, std::make_pair(a, b), [](const Compose& x, std::pair<char32_t, char32_t> v) {
        return x.a != v.first ? x.a < v.first : x.b < v.second;
    });
    return it != end && it->a == a && it->b == b ? it->composite : 0;
}

}  // namespace

bool utf8_next(std::string_view s, size_t& i, char32_t& cp) {
    if (i >= s.size()) return false;
    size_t n = 0;
    if (ill_formed_prefix(s, i, &n) != 0) return false;
    const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + i;
    switch (n) {
        case 1: cp = p[0]; break;
        case 2: cp = (char32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F); break;
        case 3: cp = (char32_t(p[0] & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F); break;
        default: cp = (char32_t(p[0] & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) | (char32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    }
    i += n;
    return true;
}

void utf8_append(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

size_t utf8_invalid_at(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        if (static_cast<uint8_t>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        size_t n = 0;
        if (ill_formed_prefix(s, i, &n) != 0) return i;
        i += n;
    }
    return std::string_view::npos;
}

std::string utf8_lossy(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    size_t i = 0;
    while (i < bytes.size()) {
        size_t n = 0;
        const size_t bad = ill_formed_prefix(bytes, i, &n);
        if (bad) {
            out += "\xEF\xBF\xBD";
            i += bad;
        } else {
            out.append(bytes.substr(i, n));
            i += n;
        }
    }
    return out;
}

size_t utf8_stable_prefix(std::string_view bytes) {
    // Look back at most 3 bytes for a lead whose sequence is a valid but unfinished prefix.
    const size_t n = bytes.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        const size_t i = n - back;
        const uint8_t lead = static_cast<uint8_t>(bytes[i]);
        const int len = sequence_length(lead);
        if (len == 0) continue;                           // continuation or never-lead byte
        if (len <= static_cast<int>(back)) return n;      // a complete (or already judged) sequence
        size_t complete = 0;
        const size_t bad = ill_formed_prefix(bytes, i, &complete);
        if (bad == back) return i;                        // valid so far, waiting for more bytes
        return n;
    }
    return n;
}

size_t utf8_length(std::string_view s) {
    size_t count = 0;
    for (char c : s)
        if ((static_cast<uint8_t>(c) & 0xC0) != 0x80) ++count;
    return count;
}

bool is_white_space(char32_t c) {
    if (c >= 0x09 && c <= 0x0D) return true;
    switch (c) {
        case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
            return true;
        default:
            return c >= 0x2000 && c <= 0x200A;
    }
}

bool is_python_space(char32_t c) { return is_white_space(c) || (c >= 0x1C && c <= 0x1F); }

namespace {
struct ByteTables {
    std::array<char32_t, 256> to_cp{};
    std::array<int16_t, 512> from_cp{};  // every code point of the alphabet is < 0x144
    ByteTables() {
        from_cp.fill(-1);
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            to_cp[b] = printable ? char32_t(b) : char32_t(256 + n++);
            from_cp[to_cp[b]] = static_cast<int16_t>(b);
        }
    }
};
const ByteTables& byte_tables() {
    static const ByteTables t;
    return t;
}
}  // namespace

char32_t byte_to_unicode(uint8_t b) { return byte_tables().to_cp[b]; }

int unicode_to_byte(char32_t c) { return c < 512 ? byte_tables().from_cp[c] : -1; }

bool gpt2_to_bytes(std::string_view s, std::string& out) {
    out.clear();
    size_t i = 0;
    char32_t cp;
    while (i < s.size()) {
        if (!utf8_next(s, i, cp)) return false;
        const int b = unicode_to_byte(cp);
        if (b < 0) return false;
        out.push_back(static_cast<char>(b));
    }
    return true;
}

std::string bytes_to_gpt2(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size() * 2);
    for (char c : bytes) utf8_append(out, byte_to_unicode(static_cast<uint8_t>(c)));
    return out;
}

std::string nfc(std::string_view s) {
    // Fast path: text below U+0300 is already NFC (no combining marks, no decomposable characters
    // except Latin-1 letters, which are their own NFC form).
    bool simple = true;
    for (char c : s)
        if (static_cast<uint8_t>(c) >= 0xCC) { simple = false; break; }
    if (simple) return std::string(s);

    // 1. canonical decomposition, 2. canonical ordering, 3. canonical composition (UAX #15).
    std::vector<char32_t> cps;
    cps.reserve(s.size());
    size_t i = 0;
    char32_t cp;
    while (i < s.size()) {
        if (!utf8_next(s, i, cp)) {  // callers validate first; keep bytes we cannot decode as U+FFFD
            cp = 0xFFFD;
            ++i;
        }
        decompose(cp, cps);
    }
    for (size_t a = 0; a < cps.size();) {  // stable sort each run of non-starters by combining class
        if (combining_class(cps[a]) == 0) { ++a; continue; }
        size_t b = a;
        while (b < cps.size() && combining_class(cps[b]) != 0) ++b;
        std::stable_sort(cps.begin() + a, cps.begin() + b,
                         [](char32_t x, char32_t y) { return combining_class(x) < combining_class(y); });
        a = b;
    }
    std::vector<char32_t> out;
    out.reserve(cps.size());
    long starter = -1;  // index in `out` of the last starter
    int last_ccc = 0;   // class of the last character appended after that starter (0: none)
    for (char32_t c : cps) {
        const int ccc = combining_class(c);
        if (starter >= 0) {
            // c may combine with the starter unless a character in between blocks it (class 0 or >= ccc).
            const bool adjacent = static_cast<long>(out.size()) - 1 == starter;
            if (adjacent || (last_ccc != 0 && last_ccc < ccc)) {
                if (const char32_t comp = compose_pair(out[starter], c)) {
                    out[starter] = comp;
                    continue;
                }
            }
        }
        if (ccc == 0) {
            starter = static_cast<long>(out.size());
            last_ccc = 0;
        } else {
            last_ccc = ccc;
        }
        out.push_back(c);
    }
    std::string r;
    r.reserve(s.size());
    for (char32_t c : out) utf8_append(r, c);
    return r;
}

}  // namespace hg::text
