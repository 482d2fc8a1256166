// The YAML subset reader (yaml.h): lines are cut into (indent, text) pairs first, then block
// nodes are parsed by indentation with an explicit depth bound.
#include "formats/yaml.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace hg {

namespace {

struct Line {
    int indent = 0;
    std::string text;  // without indentation, comment and trailing spaces
    int lineno = 0;
};

bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && (is_space(s.back()) || s.back() == '\r')) s.remove_suffix(1);
    return s;
}

class Parser {
public:
    Parser(std::string_view text, const std::string& name, const YamlLimits& lim) : name_(name), lim_(lim) {
        if (text.size() > lim.max_bytes)
            fail("%s: %zu bytes; a configuration file of at most %zu bytes is expected", name.c_str(), text.size(),
                 lim.max_bytes);
        split_lines(text);
    }

    YamlNode parse() {
        size_t i = 0;
        if (i < lines_.size() && lines_[i].text == "---" && lines_[i].indent == 0) ++i;
        if (i == lines_.size()) return YamlNode{};
        if (lines_[i].indent != 0) err(lines_[i].lineno, "the document does not start at column 0");
        YamlNode root = block(i, 0, 0);
        if (i != lines_.size()) {
            const Line& l = lines_[i];
            if (l.text == "---") err(l.lineno, "several documents in one file are not supported");
            err(l.lineno, "unexpected indentation or content");
        }
        return root;
    }

private:
    const std::string& name_;
    const YamlLimits& lim_;
    std::vector<Line> lines_;
    size_t n_nodes_ = 0;

    [[noreturn]] void err(int line, const char* what, const std::string& detail = {}) const {
        if (detail.empty()) fail("%s:%d: %s", name_.c_str(), line, what);
        fail("%s:%d: %s: %s", name_.c_str(), line, what, detail.c_str());
    }

    YamlNode node(YamlNode::Kind k, int line) {
        if (++n_nodes_ > lim_.max_nodes) err(line, "too many nodes");
        YamlNode n;
        n.kind = k;
        n.line = line;
        return n;
    }

    // Cuts the text into lines; removes comments (a '#' at the start or after a space, outside
    // quotes) and blank lines; refuses tabs in the indentation and control characters.
    void split_lines(std::string_view text) {
        int lineno = 0;
        size_t pos = 0;
        while (pos <= text.size()) {
            size_t end = text.find('\n', pos);
            if (end == std::string_view::npos) end = text.size();
            std::string_view raw = text.substr(pos, end - pos);
            ++lineno;
            pos = end + 1;
            size_t ind = 0;
            while (ind < raw.size() && raw[ind] == ' ') ++ind;
            if (ind < raw.size() && raw[ind] == '\t') err(lineno, "a tab in the indentation");
            for (char c : raw)
                if ((unsigned char)c < 0x20 && c != '\t' && c != '\r') err(lineno, "a control character");
            // comment removal, tracking quotes
            char quote = 0;
            size_t cut = raw.size();
            for (size_t k = ind; k < raw.size(); ++k) {
                const char c = raw[k];
                if (quote) {
                    if (c == quote) {
                        if (quote == '\'' && k + 1 < raw.size() && raw[k + 1] == '\'') ++k;
                        else quote = 0;
                    } else if (quote == '"' && c == '\\') {
                        ++k;
                    }
                } else if (c == '"' || c == '\'') {
                    // a quote opens a quoted scalar only at the start of a value or key
                    if (k == ind || is_space(raw[k - 1]) || raw[k - 1] == '[' || raw[k - 1] == ',' || raw[k - 1] == '-')
                        quote = c;
                } else if (c == '#' && (k == ind || is_space(raw[k - 1]))) {
                    cut = k;
                    break;
                }
            }
            std::string_view t = trim(raw.substr(ind, cut - ind));
            if (t.empty()) {
                if (end == text.size()) break;
                continue;
            }
            lines_.push_back({(int)ind, std::string(t), lineno});
            if (end == text.size()) break;
        }
    }

    static bool is_seq_item(const std::string& t) { return t == "-" || (t.size() >= 2 && t[0] == '-' && t[1] == ' '); }

    // A block node whose first line is lines_[i] at indentation `indent`. Advances i past it.
    YamlNode block(size_t& i, int indent, int depth) {
        if (depth > lim_.max_depth) err(lines_[i].lineno, "nesting too deep");
        return is_seq_item(lines_[i].text) ? block_seq(i, indent, depth) : block_map(i, indent, depth);
    }

    YamlNode block_seq(size_t& i, int indent, int depth) {
        YamlNode seq = node(YamlNode::Kind::Seq, lines_[i].lineno);
        while (i < lines_.size() && lines_[i].indent == indent && is_seq_item(lines_[i].text)) {
            Line& l = lines_[i];
            size_t off = 1;
            while (off < l.text.size() && l.text[off] == ' ') ++off;
            if (off == l.text.size()) {  // "-" alone: the item is the block below, or null
                ++i;
                if (i < lines_.size() && lines_[i].indent > indent) {
                    const int in = lines_[i].indent;
                    seq.seq.push_back(block(i, in, depth + 1));
                } else {
                    seq.seq.push_back(node(YamlNode::Kind::Null, l.lineno));
                }
                continue;
            }
            const std::string rest = l.text.substr(off);
            if (starts_mapping(rest, l.lineno) || is_seq_item(rest)) {
                // "- key: value" (a compact mapping) or "- - x": reparse the rest as a line of its own
                // at the column where it starts; lines below at that column continue it.
                l.indent = indent + (int)off;
                l.text = rest;
                seq.seq.push_back(block(i, l.indent, depth + 1));
            } else {
                seq.seq.push_back(inline_value(rest, l.lineno));
                ++i;
            }
        }
        if (i < lines_.size() && lines_[i].indent > indent) err(lines_[i].lineno, "unexpected indentation");
        return seq;
    }

    // Whether `t` is "key: ..." or "key:" (a mapping entry), as opposed to a scalar.
    bool starts_mapping(const std::string& t, int lineno) const {
        std::string key;
        size_t after = 0;
        return split_key(t, lineno, key, after, /*must*/ false);
    }

    // Splits "key: rest" / "key:" into the key and the offset of rest. Returns false when t is not a
    // mapping entry (must = false) or throws (must = true).
    bool split_key(const std::string& t, int lineno, std::string& key, size_t& after, bool must) const {
        if (t.empty()) return false;
        if (t[0] == '"' || t[0] == '\'') {
            size_t end = 0;
            std::string k = quoted(t, 0, end, lineno);
            size_t p = end;
            while (p < t.size() && t[p] == ' ') ++p;
            if (p < t.size() && t[p] == ':' && (p + 1 == t.size() || t[p + 1] == ' ')) {
                key = std::move(k);
                after = p + 1;
                return true;
            }
            if (must) err(lineno, "expected \"key: value\"");
            return false;
        }
        if (t[0] == '[' || t[0] == '{') {
            if (must) err(lineno, "flow collections as keys are not supported");
            return false;
        }
        for (size_t p = 0; p < t.size(); ++p) {
            if (t[p] == ':' && (p + 1 == t.size() || t[p + 1] == ' ')) {
                key = std::string(trim(std::string_view(t).substr(0, p)));
                if (key.empty()) err(lineno, "an empty key");
                if (key[0] == '?') err(lineno, "complex keys (\"? \") are not supported");
                after = p + 1;
                return true;
            }
        }
        if (must) err(lineno, "expected \"key: value\"", t.substr(0, 80));
        return false;
    }

    YamlNode block_map(size_t& i, int indent, int depth) {
        YamlNode map = node(YamlNode::Kind::Map, lines_[i].lineno);
        while (i < lines_.size() && lines_[i].indent == indent && !(indent == 0 && lines_[i].text == "---")) {
            const Line& l = lines_[i];
            if (is_seq_item(l.text)) err(l.lineno, "a sequence item where a mapping key is expected");
            std::string key;
            size_t after = 0;
            split_key(l.text, l.lineno, key, after, true);
            for (const auto& kv : map.map)
                if (kv.key == key) err(l.lineno, "duplicate key", key);
            const std::string rest(trim(std::string_view(l.text).substr(after)));
            const int lineno = l.lineno;
            ++i;
            if (!rest.empty()) {
                map.map.push_back({std::move(key), inline_value(rest, lineno)});
                continue;
            }
            if (i < lines_.size() && lines_[i].indent > indent) {
                const int in = lines_[i].indent;
                map.map.push_back({std::move(key), block(i, in, depth + 1)});
            } else if (i < lines_.size() && lines_[i].indent == indent && is_seq_item(lines_[i].text)) {
                // "key:\n- a\n- b": PyYAML writes a block sequence at the key's own indentation
                map.map.push_back({std::move(key), block_seq(i, indent, depth + 1)});
            } else {
                map.map.push_back({std::move(key), node(YamlNode::Kind::Null, lineno)});
            }
        }
        if (i < lines_.size() && lines_[i].indent > indent) err(lines_[i].lineno, "unexpected indentation");
        return map;
    }

    // A quoted scalar starting at t[pos]; `end` = index after the closing quote.
    std::string quoted(const std::string& t, size_t pos, size_t& end, int lineno) const {
        const char q = t[pos];
        std::string out;
        size_t k = pos + 1;
        for (;; ++k) {
            if (k >= t.size()) err(lineno, "an unterminated quoted string (multi-line strings are not supported)");
            const char c = t[k];
            if (q == '\'') {
                if (c == '\'') {
                    if (k + 1 < t.size() && t[k + 1] == '\'') {
                        out += '\'';
                        ++k;
                        continue;
                    }
                    break;
                }
                out += c;
                continue;
            }
            if (c == '"') break;
            if (c != '\\') {
                out += c;
                continue;
            }
            if (++k >= t.size()) err(lineno, "an unterminated escape");
            switch (t[k]) {
                case '\\': out += '\\'; break;
                case '"': out += '"'; break;
                case '/': out += '/'; break;
                case 'n': out += '\n'; break;
                case 't': out += '\t'; break;
                case 'r': out += '\r'; break;
                case '0': out += '\0'; break;
                case ' ': out += ' '; break;
                case 'x':
                case 'u': {
                    const int nd = t[k] == 'x' ? 2 : 4;
                    if (k + nd >= t.size()) err(lineno, "a truncated escape");
                    uint32_t cp = 0;
                    for (int d = 1; d <= nd; ++d) {
                        const char h = t[k + d];
                        int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                              : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                        if (v < 0) err(lineno, "a bad hexadecimal escape");
                        cp = cp * 16 + (uint32_t)v;
                    }
                    k += nd;
                    if (cp >= 0xD800 && cp < 0xE000) err(lineno, "a surrogate escape");
                    if (cp < 0x80) {
                        out += (char)cp;
                    } else if (cp < 0x800) {
                        out += (char)(0xC0 | (cp >> 6));
                        out += (char)(0x80 | (cp & 63));
                    } else {
                        out += (char)(0xE0 | (cp >> 12));
                        out += (char)(0x80 | ((cp >> 6) & 63));
                        out += (char)(0x80 | (cp & 63));
                    }
                    break;
                }
                default: err(lineno, "an unsupported escape sequence");
            }
        }
        end = k + 1;
        return out;
    }

    YamlNode scalar_node(const std::string& text, bool was_quoted, int lineno) {
        if (!was_quoted && (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL"))
            return node(YamlNode::Kind::Null, lineno);
        YamlNode n = node(YamlNode::Kind::Scalar, lineno);
        n.scalar = text;
        n.quoted = was_quoted;
        return n;
    }

    // A plain scalar: refuses the indicators of YAML features outside the subset.
    YamlNode plain(const std::string& t, int lineno) {
        const char c = t[0];
        if (c == '&') err(lineno, "anchors are not supported");
        if (c == '*') err(lineno, "aliases are not supported");
        if (c == '!') err(lineno, "tags are not supported (nothing in a configuration file is constructed)");
        if (c == '|' || c == '>') err(lineno, "block scalars are not supported");
        if (c == '%' || c == '@' || c == '`') err(lineno, "a reserved indicator");
        if (t.find(": ") != std::string::npos) err(lineno, "a mapping inside a plain scalar", t.substr(0, 80));
        return scalar_node(t, false, lineno);
    }

    YamlNode inline_value(const std::string& t, int lineno) {
        if (t[0] == '"' || t[0] == '\'') {
            size_t end = 0;
            std::string s = quoted(t, 0, end, lineno);
            if (!trim(std::string_view(t).substr(end)).empty()) err(lineno, "text after a quoted string");
            return scalar_node(s, true, lineno);
        }
        if (t[0] == '{') {
            if (trim(std::string_view(t).substr(1)) != "}") err(lineno, "flow mappings other than {} are not supported");
            return node(YamlNode::Kind::Map, lineno);
        }
        if (t[0] != '[') return plain(t, lineno);
        if (t.back() != ']') err(lineno, "a flow sequence must end on its line");
        YamlNode seq = node(YamlNode::Kind::Seq, lineno);
        const std::string body(trim(std::string_view(t).substr(1, t.size() - 2)));
        if (body.empty()) return seq;
        size_t p = 0;
        for (;;) {
            while (p < body.size() && body[p] == ' ') ++p;
            if (p >= body.size()) err(lineno, "an empty item in a flow sequence");
            if (body[p] == '[' || body[p] == '{') err(lineno, "nested flow collections are not supported");
            if (body[p] == '"' || body[p] == '\'') {
                size_t end = 0;
                std::string s = quoted(body, p, end, lineno);
                seq.seq.push_back(scalar_node(s, true, lineno));
                p = end;
                while (p < body.size() && body[p] == ' ') ++p;
            } else {
                size_t q = body.find(',', p);
                if (q == std::string::npos) q = body.size();
                const std::string item(trim(std::string_view(body).substr(p, q - p)));
                if (item.empty()) err(lineno, "an empty item in a flow sequence");
                if (item.find(']') != std::string::npos) err(lineno, "a stray ']' in a flow sequence");
                seq.seq.push_back(plain(item, lineno));
                p = q;
            }
            if (p >= body.size()) break;
            if (body[p] != ',') err(lineno, "expected ',' in a flow sequence");
            ++p;
        }
        return seq;
    }
};

bool all_digits(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

}  // namespace

const YamlNode* YamlNode::get(std::string_view key) const {
    if (kind != Kind::Map) return nullptr;
    for (const auto& kv : map)
        if (kv.key == key) return &kv.value;
    return nullptr;
}

const YamlNode* YamlNode::at_path(std::string_view dotted) const {
    const YamlNode* n = this;
    while (n) {
        const size_t dot = dotted.find('.');
        n = n->get(dotted.substr(0, dot));
        if (dot == std::string_view::npos) return n;
        dotted.remove_prefix(dot + 1);
    }
    return nullptr;
}

std::optional<int64_t> YamlNode::as_int() const {
    if (kind != Kind::Scalar || quoted) return std::nullopt;
    std::string_view s = scalar;
    bool neg = false;
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s.remove_prefix(1);
    }
    if (!all_digits(s) || s.size() > 18) return std::nullopt;
    int64_t v = 0;
    for (char c : s) v = v * 10 + (c - '0');
    return neg ? -v : v;
}

std::optional<double> YamlNode::as_float() const {
    if (kind != Kind::Scalar || quoted) return std::nullopt;
    // [-+]? ( digits [. digits?] | . digits ) ( [eE] [-+]? digits )?
    std::string_view s = scalar;
    size_t p = 0;
    if (p < s.size() && (s[p] == '-' || s[p] == '+')) ++p;
    size_t int_digits = 0, frac_digits = 0;
    while (p < s.size() && s[p] >= '0' && s[p] <= '9') ++p, ++int_digits;
    if (p < s.size() && s[p] == '.') {
        ++p;
        while (p < s.size() && s[p] >= '0' && s[p] <= '9') ++p, ++frac_digits;
    }
    if (int_digits + frac_digits == 0) return std::nullopt;
    if (p < s.size() && (s[p] == 'e' || s[p] == 'E')) {
        ++p;
        if (p < s.size() && (s[p] == '-' || s[p] == '+')) ++p;
        size_t exp_digits = 0;
        while (p < s.size() && s[p] >= '0' && s[p] <= '9') ++p, ++exp_digits;
        if (exp_digits == 0) return std::nullopt;
    }
    if (p != s.size()) return std::nullopt;
    errno = 0;
    const double v = std::strtod(scalar.c_str(), nullptr);
    if (errno == ERANGE) return std::nullopt;
    return v;
}

std::optional<bool> YamlNode::as_bool() const {
    if (kind != Kind::Scalar || quoted) return std::nullopt;
    if (scalar == "true" || scalar == "True" || scalar == "TRUE") return true;
    if (scalar == "false" || scalar == "False" || scalar == "FALSE") return false;
    return std::nullopt;
}

YamlNode parse_yaml(std::string_view text, const std::string& name, const YamlLimits& limits) {
    Parser p(text, name, limits);
    return p.parse();
}

YamlNode read_yaml_file(const std::string& path, const YamlLimits& limits) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("%s: cannot open the file", path.c_str());
    std::string text;
    char buf[65536];
    while (f.read(buf, sizeof buf) || f.gcount() > 0) {
        text.append(buf, (size_t)f.gcount());
        if (text.size() > limits.max_bytes)
            fail("%s: larger than %zu bytes; not a model configuration file", path.c_str(), limits.max_bytes);
    }
    return parse_yaml(text, path, limits);
}

}  // namespace hg
