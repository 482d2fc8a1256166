// multipart/related parsing and building (multipart.h).
#include "pacs/multipart.h"

#include <algorithm>
#include <random>

#include "core/error.h"

namespace hg::pacs {

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// RFC 2046 bcharsnospace, plus space (not last).
bool boundary_char(char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
}

void check_boundary(std::string_view b) {
    HG_CHECK(!b.empty() && b.size() <= 70, "multipart boundary must be 1 to 70 characters (got %zu)", b.size());
    HG_CHECK(b.back() != ' ', "multipart boundary must not end with a space");
    for (char c : b) HG_CHECK(boundary_char(c), "multipart boundary has a character RFC 2046 does not allow (0x%02x)", (unsigned char)c);
}

// Header field names are RFC 7230 tokens.
bool token_char(char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// The "; name=value" parameters of a Content-Type, names lower-cased; quoted values unquoted.
std::map<std::string, std::string> params(std::string_view ct) {
    std::map<std::string, std::string> out;
    size_t pos = ct.find(';');
    while (pos != std::string_view::npos) {
        ++pos;
        const size_t eq = ct.find('=', pos);
        if (eq == std::string_view::npos) break;
        const std::string name = lower(trim(ct.substr(pos, eq - pos)));
        size_t v = eq + 1;
        while (v < ct.size() && (ct[v] == ' ' || ct[v] == '\t')) ++v;
        std::string value;
        if (v < ct.size() && ct[v] == '"') {
            size_t e = v + 1;
            for (; e < ct.size() && ct[e] != '"'; ++e) {
                if (ct[e] == '\\' && e + 1 < ct.size()) ++e;
                value += ct[e];
            }
            HG_CHECK(e < ct.size(), "Content-Type: unterminated quoted value of parameter '%s'", name.c_str());
            pos = ct.find(';', e + 1);
        } else {
            const size_t end = ct.find(';', v);
            value = std::string(trim(ct.substr(v, end == std::string_view::npos ? std::string_view::npos : end - v)));
            pos = end;
        }
        out.emplace(name, value);
    }
    return out;
}

}  // namespace

std::string MultipartPart::header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
}

std::string media_type(std::string_view content_type) {
    return lower(trim(content_type.substr(0, content_type.find(';'))));
}

std::string content_type_param(std::string_view content_type, std::string_view name) {
    const auto p = params(content_type);
    auto it = p.find(lower(name));
    return it == p.end() ? std::string() : it->second;
}

std::string multipart_boundary(std::string_view content_type) {
    const std::string type = media_type(content_type);
    HG_CHECK(type.rfind("multipart/", 0) == 0, "expected a multipart Content-Type, got '%s'", type.substr(0, 100).c_str());
    const auto p = params(content_type);
    auto it = p.find("boundary");
    HG_CHECK(it != p.end(), "multipart Content-Type without a boundary parameter");
    check_boundary(it->second);
    return it->second;
}

std::vector<MultipartPart> parse_multipart(std::string_view body, std::string_view boundary, const std::string& what,
                                           const MultipartLimits& limits) {
    check_boundary(boundary);
    const std::string dash = "--" + std::string(boundary);
    const std::string delimiter = "\r\n" + dash;

    // The first delimiter: at the very start, or after a preamble that ends with CRLF.
    size_t pos;
    if (body.substr(0, dash.size()) == dash) {
        pos = dash.size();
    } else {
        const size_t d = body.find(delimiter);
        HG_CHECK(d != std::string_view::npos, "%s: multipart body without its boundary (%zu bytes)", what.c_str(), body.size());
        pos = d + delimiter.size();
    }

    std::vector<MultipartPart> parts;
    while (true) {
        // After a delimiter: "--" closes the body; else optional padding and CRLF start a part.
        if (body.substr(pos, 2) == "--") {
            HG_CHECK(!parts.empty(), "%s: multipart body has no parts", what.c_str());
            return parts;
        }
        while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
        const size_t n = parts.size() + 1;
        HG_CHECK(pos < body.size(), "%s: multipart body ends after the boundary of part %zu (truncated?)", what.c_str(), n);
        HG_CHECK(body.substr(pos, 2) == "\r\n", "%s: part %zu: the boundary line is not ended by CRLF", what.c_str(), n);
        HG_CHECK(parts.size() < limits.max_parts, "%s: more than %zu parts", what.c_str(), limits.max_parts);
        pos += 2;

        MultipartPart part;
        // Header lines until an empty line; each "Name: value", no folding (obsolete, RFC 7230 §3.2.4).
        const size_t header_start = pos;
        while (true) {
            const size_t eol = body.find("\r\n", pos);
            HG_CHECK(eol != std::string_view::npos, "%s: part %zu: headers not ended (truncated?)", what.c_str(), n);
            HG_CHECK(eol + 2 - header_start <= limits.max_header_bytes, "%s: part %zu: headers longer than %zu bytes",
                     what.c_str(), n, limits.max_header_bytes);
            if (eol == pos) {
                pos += 2;
                break;
            }
            const std::string_view line = body.substr(pos, eol - pos);
            const size_t colon = line.find(':');
            HG_CHECK(colon != std::string_view::npos && colon > 0, "%s: part %zu: a header line without 'name:'", what.c_str(), n);
            for (char c : line.substr(0, colon))
                HG_CHECK(token_char(c), "%s: part %zu: a header name with a character that is not allowed (0x%02x)",
                         what.c_str(), n, (unsigned char)c);
            for (char c : line.substr(colon + 1))
                HG_CHECK(c == '\t' || (unsigned char)c >= 0x20, "%s: part %zu: a control character in a header value",
                         what.c_str(), n);
            const std::string name = lower(line.substr(0, colon));
            HG_CHECK(!part.headers.count(name), "%s: part %zu: header '%s' given twice", what.c_str(), n, name.c_str());
            part.headers.emplace(name, std::string(trim(line.substr(colon + 1))));
            pos = eol + 2;
        }
        // The body runs to the next delimiter.
        const size_t end = body.find(delimiter, pos);
        HG_CHECK(end != std::string_view::npos, "%s: part %zu is not closed by a boundary (truncated body, %zu bytes)",
                 what.c_str(), n, body.size());
        part.body = body.substr(pos, end - pos);
        parts.push_back(std::move(part));
        pos = end + delimiter.size();
    }
}

std::string build_multipart(const std::vector<OutgoingPart>& parts, std::string_view boundary) {
    check_boundary(boundary);
    size_t total = 0;
    for (const auto& p : parts) total += p.bytes.size() + p.content_type.size() + boundary.size() + 40;
    std::string out;
    out.reserve(total + boundary.size() + 8);
    for (const auto& p : parts) {
        out += "--";
        out += boundary;
        out += "\r\nContent-Type: ";
        out += p.content_type;
        out += "\r\n\r\n";
        out += p.bytes;
        out += "\r\n";
    }
    out += "--";
    out += boundary;
    out += "--\r\n";
    return out;
}

std::string make_boundary(const std::vector<OutgoingPart>& parts) {
    static const char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    std::random_device rd;
    std::mt19937_64 rng((uint64_t(rd()) << 32) ^ rd());
    while (true) {
        std::string b = "healthgpt-";
        for (int i = 0; i < 32; ++i) b += kAlphabet[rng() % 36];
        const std::string delim = "--" + b;
        if (std::none_of(parts.begin(), parts.end(), [&](const OutgoingPart& p) {
                return p.bytes.find(delim) != std::string_view::npos;
            }))
            return b;
    }
}

}  // namespace hg::pacs
