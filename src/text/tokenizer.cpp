// Tokenizer: added-token splitting, normalisation, pre-tokenisation, BPE and decoding, each in the
// two reference behaviours (transformers' Python "slow" classes and the `tokenizers` "fast" library).
#include "text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "text/unicode.h"

namespace hg::text {

namespace {

const std::string kSpace = "\xE2\x96\x81";        // ▁ U+2581, SentencePiece's space
const char* const kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// ---------------------------------------------------------------------------------------------
// Regular expressions (PCRE2, UTF + UCP, JIT).

// PCRE2's \s with UCP is [\t-\r] plus \p{Z}; Rust, Oniguruma and Python's `regex` use Unicode
// White_Space, which also has U+0085. Rewrite \s and \S so every engine agrees.
std::string rewrite_whitespace_classes(const std::string& pattern, const std::string& source) {
    static const std::string kWs = "\\t-\\r\\x{20}\\x{85}\\p{Z}";
    std::string out;
    bool in_class = false;
    for (size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        if (c == '\\' && i + 1 < pattern.size()) {
            const char e = pattern[i + 1];
            if (e == 's') {
                out += in_class ? kWs : "[" + kWs + "]";
            } else if (e == 'S') {
                HG_CHECK(!in_class, "%s: \\S inside a character class is not supported in split patterns",
                         source.c_str());
                out += "[^" + kWs + "]";
            } else {
                out += c;
                out += e;
            }
            ++i;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            out += c;
            if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
            if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // literal ] first
            continue;
        }
        if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {  // [:alpha:]
            const size_t end = pattern.find(":]", i + 2);
            HG_CHECK(end != std::string::npos, "%s: unterminated POSIX class in split pattern", source.c_str());
            out.append(pattern, i, end + 2 - i);
            i = end + 1;
            continue;
        }
        if (in_class && c == ']') in_class = false;
        out += c;
    }
    return out;
}

class Regex {
public:
    Regex() = default;
    Regex(const std::string& pattern, const std::string& source, uint32_t extra_options = 0) {
        const std::string p = rewrite_whitespace_classes(pattern, source);
        int err = 0;
        PCRE2_SIZE off = 0;
        code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(), PCRE2_UTF | PCRE2_UCP | extra_options,
                              &err, &off, nullptr);
        if (!code_) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof(msg));
            hg::fail("%s: split pattern does not compile at offset %zu: %s", source.c_str(), static_cast<size_t>(off),
                     reinterpret_cast<const char*>(msg));
        }
        pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // the interpreter runs if JIT is unavailable
    }
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;
    Regex(Regex&& o) noexcept : code_(o.code_) { o.code_ = nullptr; }
    Regex& operator=(Regex&& o) noexcept {
        std::swap(code_, o.code_);
        return *this;
    }
    ~Regex() {
        if (code_) pcre2_code_free(code_);
    }
    explicit operator bool() const { return code_ != nullptr; }

    // Calls f(begin, end) for each non-empty match, left to right (Python's re.findall, Rust's find_iter).
    // `s` must be valid UTF-8.
    template <class F>
    void for_each_match(std::string_view s, F&& f) const {
        MatchData md(code_);
        size_t pos = 0;
        while (pos < s.size()) {
            const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                                       PCRE2_NO_UTF_CHECK, md.p, nullptr);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof(msg));
                hg::fail("split pattern failed on the text: %s", reinterpret_cast<const char*>(msg));
            }
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.p);
            const size_t b = ov[0], e = ov[1];
            if (e > b) {
                f(b, e);
                pos = e;
            } else {  // empty match: step over one character
                pos = e + 1;
                while (pos < s.size() && (static_cast<uint8_t>(s[pos]) & 0xC0) == 0x80) ++pos;
            }
        }
    }

    // Whether the pattern (compiled with PCRE2_ANCHORED) matches at exactly `pos`.
    bool matches_at(std::string_view s, size_t pos) const {
        MatchData md(code_);
        return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, PCRE2_NO_UTF_CHECK, md.p,
                           nullptr) >= 0;
    }

private:
    struct MatchData {
        pcre2_match_data* p;
        explicit MatchData(const pcre2_code* code) : p(pcre2_match_data_create_from_pattern(code, nullptr)) {
            HG_CHECK(p, "out of memory creating regex match data");
        }
        ~MatchData() { pcre2_match_data_free(p); }
    };
    pcre2_code* code_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Added-token matching: a byte trie, leftmost-longest (aho-corasick LeftmostLongest in tokenizers;
// transformers' Trie.split also takes the longest match).

class Trie {
public:
    void clear() {
        nodes_.assign(1, Node{});
        std::fill(std::begin(first_), std::end(first_), false);
    }
    void insert(std::string_view key, int32_t value) {
        if (key.empty()) return;
        int32_t n = 0;
        for (char ch : key) {
            const uint8_t c = static_cast<uint8_t>(ch);
            auto& next = nodes_[n].next;
            auto it = std::lower_bound(next.begin(), next.end(), c,
                                       [](const std::pair<uint8_t, int32_t>& a, uint8_t b) { return a.first < b; });
            if (it != next.end() && it->first == c) {
                n = it->second;
            } else {
                const int32_t child = static_cast<int32_t>(nodes_.size());
                next.insert(it, {c, child});
                nodes_.push_back(Node{});
                n = child;
            }
        }
        if (nodes_[n].value < 0) nodes_[n].value = value;  // the first definition wins for equal contents
        first_[static_cast<uint8_t>(key[0])] = true;
    }
    bool empty() const { return nodes_.size() <= 1; }
    // Longest key that starts at s[i]: returns its length (0 if none) and its value.
    size_t longest(std::string_view s, size_t i, int32_t& value) const {
        if (!first_[static_cast<uint8_t>(s[i])]) return 0;
        int32_t n = 0;
        size_t best = 0;
        for (size_t k = i; k < s.size(); ++k) {
            const uint8_t c = static_cast<uint8_t>(s[k]);
            const auto& next = nodes_[n].next;
            auto it = std::lower_bound(next.begin(), next.end(), c,
                                       [](const std::pair<uint8_t, int32_t>& a, uint8_t b) { return a.first < b; });
            if (it == next.end() || it->first != c) break;
            n = it->second;
            if (nodes_[n].value >= 0) {
                best = k + 1 - i;
                value = nodes_[n].value;
            }
        }
        return best;
    }

private:
    struct Node {
        std::vector<std::pair<uint8_t, int32_t>> next;
        int32_t value = -1;
    };
    std::vector<Node> nodes_{1};
    bool first_[256] = {};
};

// ---------------------------------------------------------------------------------------------
// Merge table: (left id, right id) -> (priority, merged id). Lower priority merges first; ties go
// to the leftmost pair (SentencePiece, tokenizers and tiktoken all break ties that way).

class MergeTable {
public:
    struct Entry {
        uint64_t key;
        float priority;
        int32_t result;
    };
    static uint64_t make_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
    void build(const std::vector<Entry>& entries) {
        size_t cap = 16;
        while (cap < entries.size() * 2) cap <<= 1;
        slots_.assign(cap, Entry{kEmpty, 0, 0});
        mask_ = cap - 1;
        for (const Entry& e : entries) {
            size_t h = hash(e.key) & mask_;
            while (slots_[h].key != kEmpty && slots_[h].key != e.key) h = (h + 1) & mask_;
            if (slots_[h].key == kEmpty || e.priority < slots_[h].priority) slots_[h] = e;
        }
    }
    const Entry* find(int32_t a, int32_t b) const {
        if (slots_.empty() || a < 0 || b < 0) return nullptr;
        const uint64_t key = make_key(a, b);
        size_t h = hash(key) & mask_;
        while (slots_[h].key != kEmpty) {
            if (slots_[h].key == key) return &slots_[h];
            h = (h + 1) & mask_;
        }
        return nullptr;
    }

private:
    static constexpr uint64_t kEmpty = ~uint64_t(0);
    static size_t hash(uint64_t k) {  // splitmix64 finaliser: every key bit reaches every slot bit
        k ^= k >> 30;
        k *= 0xBF58476D1CE4E5B9ull;
        k ^= k >> 27;
        k *= 0x94D049BB133111EBull;
        return static_cast<size_t>(k ^ (k >> 31));
    }
    std::vector<Entry> slots_;
    size_t mask_ = 0;
};

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    while (true) {
        const size_t k = s.find(from, pos);
        if (k == std::string_view::npos) break;
        out.append(s.substr(pos, k - pos));
        out.append(to);
        pos = k + from.size();
    }
    out.append(s.substr(pos));
    return out;
}

bool starts_with_space_symbol(std::string_view s) { return s.compare(0, kSpace.size(), kSpace) == 0; }

// A "▁" at byte k that follows a character other than "▁" (where a new word starts).
bool word_start(std::string_view s, size_t k) {
    return k > 0 && starts_with_space_symbol(s.substr(k)) &&
           !(k >= kSpace.size() && s.compare(k - kSpace.size(), kSpace.size(), kSpace) == 0);
}

// Start of the last UTF-8 character of a non-empty valid string.
size_t last_char_start(std::string_view s) {
    size_t b = s.size() - 1;
    while (b > 0 && (static_cast<uint8_t>(s[b]) & 0xC0) == 0x80) --b;
    return b;
}

// Python str.lstrip() / str.rstrip() (whitespace per str.isspace).
std::string py_lstrip(const std::string& s) {
    size_t i = 0, k = 0;
    char32_t cp;
    while (k < s.size() && utf8_next(s, k, cp) && is_python_space(cp)) i = k;
    return s.substr(i);
}
std::string py_rstrip(const std::string& s) {
    size_t end = s.size();
    while (end > 0) {
        const size_t b = last_char_start(std::string_view(s).substr(0, end));
        size_t k = b;
        char32_t cp;
        if (!utf8_next(s, k, cp) || !is_python_space(cp)) break;
        end = b;
    }
    return s.substr(0, end);
}

// Rust regex \s*$ and ^\s* (White_Space).
size_t ws_run_start_at_end(std::string_view s) {
    size_t end = s.size();
    while (end > 0) {
        const size_t b = last_char_start(s.substr(0, end));
        size_t k = b;
        char32_t cp;
        if (!utf8_next(s, k, cp) || !is_white_space(cp)) break;
        end = b;
    }
    return end;
}
size_t ws_run_len_at_start(std::string_view s) {
    size_t i = 0, k = 0;
    char32_t cp;
    while (k < s.size() && utf8_next(s, k, cp) && is_white_space(cp)) i = k;
    return i;
}

// transformers' clean_up_tokenization.
std::string clean_up_tokenization(std::string s) {
    static const std::pair<const char*, const char*> kRules[] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (auto [from, to] : kRules) s = replace_all(s, from, to);
    return s;
}

bool byte_piece_value(std::string_view t, uint8_t& b) {  // "<0xNN>"
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return false;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    if (hi < 0 || lo < 0) return false;
    b = static_cast<uint8_t>(hi * 16 + lo);
    return true;
}

}  // namespace

// =============================================================================================

// Lookups by string_view without building a std::string.
struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct Tokenizer::Impl {
    Vocab v;
    StringMap model_index;  // text the BPE model merges into -> id
    StringMap text_index;   // token_to_id
    MergeTable merges;
    int32_t byte_ids[256];           // byte_bpe: single-byte token; spm: <0xNN> piece
    int32_t ascii_ids[128];          // spm: single ASCII character piece
    std::vector<char> is_added;      // by id
    std::vector<char> slow_special;  // by id: bos/eos/unk/pad/additional_special_tokens (all_special_ids)
    Trie added_all;                  // slow: every added token
    Trie added_raw;                  // fast: special or normalized=false tokens, matched on the raw text
    Trie added_norm;                 // fast: normalized tokens, matched on normalised text
    Trie user_defined;               // spm: user-defined pieces are atomic symbols
    Regex fast_re, slow_re, word_re;
    bool words_are_independent = false;  // spm: no piece has "▁" after another character

    explicit Impl(Vocab vocab) : v(std::move(vocab)) { index(); }

    // Text of a token as the tokenizer shows it: an added token's content, else the model's text.
    const std::string& text_of(int32_t id) const {
        if (is_added[id]) return v.find_added(id)->content;
        return v.tokens[id];
    }

    // ---- derived structures ------------------------------------------------------------------
    void index() {
        v.validate();
        const int32_t n = v.size();
        is_added.assign(n, 0);
        for (const AddedToken& a : v.added) is_added[a.id] = 1;
        model_index.clear();
        model_index.reserve(static_cast<size_t>(n) * 2);
        std::fill(std::begin(byte_ids), std::end(byte_ids), -1);
        std::fill(std::begin(ascii_ids), std::end(ascii_ids), -1);
        user_defined.clear();
        for (int32_t i = 0; i < n; ++i) {
            if (is_added[i] && i >= v.model_size) continue;  // added tokens outside the model never come out of BPE
            const TokenType t = v.types[i];
            if (t == TokenType::unused && v.tokens[i].empty()) continue;  // a hole in the id space
            if (v.kind == VocabKind::spm_bpe) {
                uint8_t b;
                if (t == TokenType::byte && byte_piece_value(v.tokens[i], b)) byte_ids[b] = i;
                // SentencePiece merges into normal, user-defined and unused pieces only.
                if (t != TokenType::normal && t != TokenType::user_defined && t != TokenType::unused) continue;
                model_index.emplace(v.tokens[i], i);
                if (t == TokenType::user_defined && !is_added[i]) user_defined.insert(v.tokens[i], i);
            } else {
                model_index.emplace(v.tokens[i], i);
                if (v.tokens[i].size() == 1) byte_ids[static_cast<uint8_t>(v.tokens[i][0])] = i;
            }
        }
        words_are_independent = v.kind == VocabKind::spm_bpe;
        for (const auto& [text, id] : model_index) {
            for (size_t k = 1; k < text.size() && words_are_independent; ++k)
                if (word_start(text, k)) words_are_independent = false;
            if (!words_are_independent) break;
        }
        if (v.kind == VocabKind::spm_bpe)
            for (int c = 0; c < 128; ++c) {
                auto it = model_index.find(std::string(1, static_cast<char>(c)));
                if (it != model_index.end()) ascii_ids[c] = it->second;
            }

        // merges
        std::vector<MergeTable::Entry> entries;
        if (!v.merges.empty()) {
            entries.reserve(v.merges.size());
            for (size_t r = 0; r < v.merges.size(); ++r) {
                const auto [a, b] = v.merges[r];
                auto it = model_index.find(v.tokens[a] + v.tokens[b]);
                if (it == model_index.end()) continue;  // the loaders refuse these; keep BPE total anyway
                entries.push_back({MergeTable::make_key(a, b), static_cast<float>(r), it->second});
            }
        } else {
            // SentencePiece scores (priority = -score) or tiktoken ranks (priority = id): every split of
            // a token into two tokens is a merge into it. (sentencepiece looks the concatenated text up,
            // so it could also merge a character that is not itself a piece; trained vocabularies have
            // every character of every piece, so the id pairs are the same set.)
            for (const auto& [text, id] : model_index) {
                if (text.size() < 2) continue;
                for (size_t k = 1; k < text.size(); ++k) {
                    if (v.kind == VocabKind::spm_bpe && (static_cast<uint8_t>(text[k]) & 0xC0) == 0x80) continue;
                    auto a = model_index.find(std::string_view(text).substr(0, k));
                    if (a == model_index.end()) continue;
                    auto b = model_index.find(std::string_view(text).substr(k));
                    if (b == model_index.end()) continue;
                    const float prio = v.kind == VocabKind::spm_bpe ? -v.scores[id] : static_cast<float>(id);
                    entries.push_back({MergeTable::make_key(a->second, b->second), prio, id});
                }
            }
        }
        merges.build(entries);

        // token_to_id
        text_index.clear();
        text_index.reserve(static_cast<size_t>(n) * 2);
        for (int32_t i = 0; i < n; ++i) {
            if (v.types[i] == TokenType::unused && v.tokens[i].empty()) continue;
            if (is_added[i] && i >= v.model_size) continue;
            text_index.emplace(v.kind == VocabKind::byte_bpe ? bytes_to_gpt2(v.tokens[i]) : v.tokens[i], i);
        }
        for (const AddedToken& a : v.added) text_index[a.content] = a.id;

        // added tokens
        added_all.clear();
        added_raw.clear();
        added_norm.clear();
        for (const AddedToken& a : v.added) {
            added_all.insert(a.content, a.id);
            if (a.special || !a.normalized) added_raw.insert(a.content, a.id);
        }
        for (const AddedToken& a : v.added) {
            if (a.special || !a.normalized) continue;
            std::string norm = a.content;  // tokenizers normalises the content of normalized tokens
            if (v.kind == VocabKind::spm_bpe) {
                if (v.space_mode == SpaceMode::prepend_each) norm = kSpace + replace_all(norm, " ", kSpace);
            } else if (v.nfc) {
                norm = nfc(norm);
            }
            added_norm.insert(norm, a.id);
        }
        slow_special.assign(n, 0);
        for (int32_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id})
            if (id >= 0) slow_special[id] = 1;
        for (int32_t id : v.additional_special) slow_special[id] = 1;

        // regexes
        if (v.kind == VocabKind::byte_bpe && !fast_re) {
            fast_re = Regex(v.split_regex.empty() ? kGpt2SplitRegex : v.split_regex, v.source);
            // the slow classes hard-code their patterns
            slow_re = Regex(v.slow_class == "Qwen2Tokenizer" ? kQwen2SplitRegex : kGpt2SplitRegex, v.source);
        }
        // Rust regex \w: Alphabetic, marks, decimal digits, connector punctuation, joiners.
        if (!word_re) word_re = Regex("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]", v.source, PCRE2_ANCHORED);
    }

    // ---- BPE ----------------------------------------------------------------------------------
    struct Sym {
        int32_t id;  // -1: a character without a token; -2: merged away
        int32_t prev, next;
        uint32_t begin, end;
    };
    struct Cand {
        float prio;
        uint32_t begin;
        int32_t left, right, left_id, right_id;
        bool operator>(const Cand& o) const { return prio != o.prio ? prio > o.prio : begin > o.begin; }
    };
    using UnusedRev = std::unordered_map<int32_t, std::pair<int32_t, int32_t>>;

    // Merges the linked list `syms` until no pair of neighbours has a merge: the lowest priority
    // first, the leftmost of equal priorities first.
    void merge_symbols(std::vector<Sym>& syms, UnusedRev* unused_rev) const {
        if (syms.size() <= 64) return merge_symbols_small(syms, unused_rev);
        std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
        auto try_pair = [&](int32_t l, int32_t r) {
            if (l < 0 || r < 0) return;
            if (const MergeTable::Entry* e = merges.find(syms[l].id, syms[r].id))
                heap.push({e->priority, syms[l].begin, l, r, syms[l].id, syms[r].id});
        };
        for (size_t i = 0; i + 1 < syms.size(); ++i) try_pair(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
        while (!heap.empty()) {
            const Cand c = heap.top();
            heap.pop();
            Sym& L = syms[c.left];
            Sym& R = syms[c.right];
            if (L.id != c.left_id || R.id != c.right_id || L.next != c.right) continue;  // stale
            const MergeTable::Entry* e = merges.find(L.id, R.id);
            if (unused_rev && v.types[e->result] == TokenType::unused) (*unused_rev)[e->result] = {L.id, R.id};
            L.id = e->result;
            L.end = R.end;
            L.next = R.next;
            if (R.next >= 0) syms[R.next].prev = c.left;
            R.id = -2;
            R.next = R.prev = -1;
            try_pair(L.prev, c.left);
            try_pair(c.left, L.next);
        }
    }

    // The same for short runs (most words): a scan over cached pair priorities, no heap, no allocation.
    void merge_symbols_small(std::vector<Sym>& syms, UnusedRev* unused_rev) const {
        size_t n = syms.size();
        const MergeTable::Entry* pair[64];
        for (size_t i = 0; i + 1 < n; ++i) pair[i] = merges.find(syms[i].id, syms[i + 1].id);
        while (n > 1) {
            size_t best = n;
            for (size_t i = 0; i + 1 < n; ++i)
                if (pair[i] && (best == n || pair[i]->priority < pair[best]->priority)) best = i;
            if (best == n) break;
            const MergeTable::Entry* e = pair[best];
            if (unused_rev && v.types[e->result] == TokenType::unused) (*unused_rev)[e->result] = {syms[best].id, syms[best + 1].id};
            syms[best].id = e->result;
            syms[best].end = syms[best + 1].end;
            for (size_t i = best + 1; i + 1 < n; ++i) {
                syms[i] = syms[i + 1];
                pair[i] = pair[i + 1];
            }
            --n;
            if (best > 0) pair[best - 1] = merges.find(syms[best - 1].id, syms[best].id);
            if (best + 1 < n) pair[best] = merges.find(syms[best].id, syms[best + 1].id);
        }
        syms.resize(n);
        for (size_t i = 0; i < n; ++i) {
            syms[i].prev = static_cast<int32_t>(i) - 1;
            syms[i].next = i + 1 < n ? static_cast<int32_t>(i) + 1 : -1;
        }
    }

    void push_unk(std::vector<int32_t>& out, bool fuse) const {
        HG_CHECK(v.unk_id >= 0, "%s: the text has a character the vocabulary cannot represent and there is no <unk>",
                 v.source.c_str());
        if (fuse && !out.empty() && out.back() == v.unk_id) return;
        out.push_back(v.unk_id);
    }

    // SentencePiece splits an unused piece back into the pieces it was merged from.
    void resegment(int32_t id, const UnusedRev& rev, std::vector<int32_t>& out, int depth = 0) const {
        auto it = rev.find(id);
        if (v.types[id] != TokenType::unused || it == rev.end() || depth > 64) {
            out.push_back(id);
            return;
        }
        resegment(it->second.first, rev, out, depth + 1);
        resegment(it->second.second, rev, out, depth + 1);
    }

    // SentencePiece-style BPE over text whose spaces are already "▁". When no piece has a "▁" after
    // another character (true of Llama-2 / Phi-3: pieces are "▁"* + word), no merge can cross the
    // start of a word, so each word is merged on its own: same result, and a long text no longer
    // makes one huge heap.
    void spm_bpe(std::string_view text, std::vector<int32_t>& out, bool fuse_unk) const {
        if (!words_are_independent) return spm_bpe_run(text, out, fuse_unk);
        size_t b = 0;
        for (size_t k = 1; k <= text.size(); ++k) {
            if (k < text.size() && !word_start(text, k)) continue;
            spm_bpe_run(text.substr(b, k - b), out, fuse_unk);
            b = k;
        }
    }

    void spm_bpe_run(std::string_view text, std::vector<int32_t>& out, bool fuse_unk) const {
        if (text.empty()) return;
        std::vector<Sym> syms;
        syms.reserve(text.size());
        size_t i = 0;
        while (i < text.size()) {
            size_t len = 0;
            int32_t id = -1;
            if (!user_defined.empty()) len = user_defined.longest(text, i, id);
            if (len == 0) {
                const uint8_t c = static_cast<uint8_t>(text[i]);
                if (c < 0x80) {
                    len = 1;
                    id = ascii_ids[c];
                } else {
                    size_t k = i;
                    char32_t cp;
                    if (!utf8_next(text, k, cp)) k = i + 1;
                    len = k - i;
                    auto it = model_index.find(text.substr(i, len));
                    id = it == model_index.end() ? -1 : it->second;
                }
            }
            const int32_t idx = static_cast<int32_t>(syms.size());
            syms.push_back({id, idx - 1, idx + 1, static_cast<uint32_t>(i), static_cast<uint32_t>(i + len)});
            i += len;
        }
        syms.back().next = -1;
        UnusedRev rev;
        merge_symbols(syms, &rev);
        for (int32_t k = 0; k >= 0; k = syms[k].next) {
            const Sym& s = syms[k];
            if (s.id >= 0) {
                resegment(s.id, rev, out);
                continue;
            }
            // byte fallback: the character's UTF-8 bytes as <0xNN> pieces, else <unk>
            const std::string_view bytes = text.substr(s.begin, s.end - s.begin);
            bool all = v.byte_fallback;
            for (char c : bytes) all = all && byte_ids[static_cast<uint8_t>(c)] >= 0;
            if (all) {
                for (char c : bytes) out.push_back(byte_ids[static_cast<uint8_t>(c)]);
            } else {
                push_unk(out, fuse_unk);
            }
        }
    }

    // Byte-level BPE of one pre-tokenised piece.
    void byte_bpe(std::string_view piece, std::vector<int32_t>& out, bool ignore_merges) const {
        if (piece.empty()) return;
        if (ignore_merges || piece.size() == 1) {
            auto it = model_index.find(piece);
            if (it != model_index.end()) {
                out.push_back(it->second);
                return;
            }
        }
        std::vector<Sym> syms(piece.size());
        for (size_t i = 0; i < piece.size(); ++i) {
            syms[i] = {byte_ids[static_cast<uint8_t>(piece[i])], static_cast<int32_t>(i) - 1,
                       static_cast<int32_t>(i) + 1, static_cast<uint32_t>(i), static_cast<uint32_t>(i + 1)};
        }
        syms.back().next = -1;
        merge_symbols(syms, nullptr);
        for (int32_t k = 0; k >= 0; k = syms[k].next) {
            if (syms[k].id >= 0) out.push_back(syms[k].id);
            else push_unk(out, v.fuse_unk);
        }
    }

    // ---- SentencePiece normaliser (slow path: what the sentencepiece library does) -------------
    std::string sp_normalize(std::string_view text, bool dummy_prefix) const {
        std::string s;
        if (v.remove_extra_whitespaces) {
            bool prev_space = true;
            for (char c : text) {
                if (c == ' ') {
                    if (!prev_space) s += ' ';
                    prev_space = true;
                } else {
                    s += c;
                    prev_space = false;
                }
            }
            while (!s.empty() && s.back() == ' ') s.pop_back();
        } else {
            s.assign(text);
        }
        if (s.empty()) return s;
        if (dummy_prefix) s.insert(s.begin(), ' ');
        if (v.escape_whitespaces) s = replace_all(s, " ", kSpace);
        return s;
    }

    // ---- added-token splitting ---------------------------------------------------------------
    struct Seg {
        std::string text;
        int32_t id;  // >= 0: an added token
    };

    // transformers PreTrainedTokenizer.tokenize: Trie.split, then the strip / single_word fix-ups
    // applied left to right on the list, exactly as the Python loop does.
    std::vector<Seg> split_slow(const std::string& text) const {
        std::vector<Seg> segs;
        size_t last = 0, i = 0;
        while (i < text.size()) {
            int32_t id = -1;
            const size_t len = added_all.empty() ? 0 : added_all.longest(text, i, id);
            if (len == 0) {
                ++i;
                continue;
            }
            if (i > last) segs.push_back({text.substr(last, i - last), -1});
            segs.push_back({text.substr(i, len), id});
            i += len;
            last = i;
        }
        if (last < text.size()) segs.push_back({text.substr(last), -1});
        auto refresh = [&](Seg& s) {  // Python tests membership by string after the edits
            auto it = text_index.find(s.text);
            s.id = it != text_index.end() && is_added[it->second] ? it->second : -1;
        };
        for (size_t k = 0; k < segs.size(); ++k) {
            if (segs[k].id < 0) continue;
            const AddedToken* tok = v.find_added(segs[k].id);
            const std::string token = segs[k].text;
            const std::string left = k > 0 ? segs[k - 1].text : std::string();
            const std::string right = k + 1 < segs.size() ? segs[k + 1].text : std::string();
            if (tok->rstrip && !right.empty()) {
                segs[k + 1].text = py_lstrip(right);
                refresh(segs[k + 1]);
            }
            if (tok->lstrip && !left.empty()) {
                segs[k - 1].text = py_rstrip(left);
                refresh(segs[k - 1]);
            }
            if (tok->single_word && !left.empty() && left.back() != ' ') {
                segs[k - 1].text += token;
                refresh(segs[k - 1]);
                segs[k] = {std::string(), -1};
            } else if (tok->single_word && !right.empty() && right[0] != ' ') {
                segs[k + 1].text = token + segs[k + 1].text;
                refresh(segs[k + 1]);
                segs[k] = {std::string(), -1};
            }
        }
        return segs;
    }

    // tokenizers AddedVocabulary::find_matches over `s` with one trie.
    struct Span {
        size_t begin, end;
        int32_t id;
    };
    std::vector<Span> split_fast(std::string_view s, const Trie& trie) const {
        std::vector<Span> out;
        if (trie.empty()) {
            out.push_back({0, s.size(), -1});
            return out;
        }
        std::vector<Span> matches;  // aho-corasick find_iter: non-overlapping, leftmost-longest
        for (size_t i = 0; i < s.size();) {
            int32_t id = -1;
            const size_t len = trie.longest(s, i, id);
            if (len) {
                matches.push_back({i, i + len, id});
                i += len;
            } else {
                ++i;
            }
        }
        size_t start_offset = 0;
        for (const Span& m : matches) {
            size_t start = m.begin, stop = m.end;
            const AddedToken* tok = v.find_added(m.id);
            if (tok->single_word) {
                const bool start_space = start == 0 || !word_re.matches_at(s, last_char_start(s.substr(0, start)));
                const bool stop_space = stop == s.size() || !word_re.matches_at(s, stop);
                if (!start_space || !stop_space) continue;
            }
            if (start < start_offset) continue;  // inside whitespace an rstrip already took
            if (tok->lstrip) start = std::max(ws_run_start_at_end(s.substr(0, start)), start_offset);
            if (tok->rstrip) stop += ws_run_len_at_start(s.substr(stop));
            if (start_offset < start) out.push_back({start_offset, start, -1});
            out.push_back({start, stop, m.id});
            start_offset = stop;
        }
        if (start_offset != s.size() || out.empty()) out.push_back({start_offset, s.size(), -1});
        return out;
    }

    // ---- encode ------------------------------------------------------------------------------
    void encode_slow(std::string_view text, bool parse, std::vector<int32_t>& ids) const {
        auto split = [&](const std::string& t) {
            if (parse) return split_slow(t);
            return std::vector<Seg>{{t, -1}};
        };
        if (v.kind == VocabKind::spm_bpe) {
            HG_CHECK(v.slow_class.empty() || v.slow_class == "LlamaTokenizer", "%s: no slow tokenizer for class '%s'",
                     v.source.c_str(), v.slow_class.c_str());
            if (v.legacy) {  // LlamaTokenizer(legacy=True): sentencepiece with its dummy prefix on every segment
                for (const Seg& s : split(std::string(text))) {
                    if (s.text.empty()) continue;
                    if (s.id >= 0) ids.push_back(s.id);
                    else spm_bpe(sp_normalize(s.text, v.add_dummy_prefix), ids, true);
                }
                return;
            }
            // LlamaTokenizer(legacy=False).tokenize: "▁" -> " ", one "▁" before the whole text, and
            // sentencepiece without its dummy prefix on each segment.
            if (text.empty()) return;
            std::string t = replace_all(text, kSpace, " ");
            if (v.add_prefix_space) t = kSpace + t;
            const size_t first = ids.size();
            for (const Seg& s : split(t)) {
                if (s.text.empty()) continue;
                if (s.id >= 0) ids.push_back(s.id);
                else spm_bpe(sp_normalize(s.text, false), ids, true);
            }
            // a lone "▁" right before a token of the special-tokens map is dropped
            if (ids.size() - first > 1 && !is_added[ids[first]] && v.tokens[ids[first]] == kSpace &&
                slow_special[ids[first + 1]])
                ids.erase(ids.begin() + static_cast<long>(first));
            return;
        }
        // GPT2Tokenizer / Qwen2Tokenizer
        std::string t(text);
        if (v.slow_class == "Qwen2Tokenizer") {
            t = nfc(t);
        } else {
            HG_CHECK(v.slow_class.empty() || v.slow_class == "GPT2Tokenizer", "%s: no slow tokenizer for class '%s'",
                     v.source.c_str(), v.slow_class.c_str());
            if (v.add_prefix_space) t = " " + t;
        }
        for (const Seg& s : split(t)) {
            if (s.text.empty()) continue;
            if (s.id >= 0) {
                ids.push_back(s.id);
                continue;
            }
            slow_re.for_each_match(s.text, [&](size_t b, size_t e) {
                byte_bpe(std::string_view(s.text).substr(b, e - b), ids, false);
            });
        }
    }

    // Fast SentencePiece-style normalisation of one segment (normalizer or Metaspace pre-tokenizer).
    std::string fast_spm_normalize(std::string_view seg, bool at_text_start) const {
        if (seg.empty()) return std::string();
        if (v.space_mode == SpaceMode::prepend_each) return kSpace + replace_all(seg, " ", kSpace);
        std::string s = replace_all(seg, " ", kSpace);
        if (!starts_with_space_symbol(s) && (v.space_mode == SpaceMode::metaspace_always ||
                                             (v.space_mode == SpaceMode::metaspace_first && at_text_start)))
            s = kSpace + s;
        return s;
    }

    // Pre-tokeniser + model on one normalised piece.
    void fast_model(std::string_view piece, std::vector<int32_t>& ids) const {
        if (v.kind == VocabKind::spm_bpe) {
            if (v.space_mode != SpaceMode::prepend_each && v.metaspace_split) {
                size_t b = 0;  // split before every "▁" (MergedWithNext)
                for (size_t k = 1; k <= piece.size(); ++k) {
                    if (k == piece.size() || starts_with_space_symbol(piece.substr(k))) {
                        spm_bpe(piece.substr(b, k - b), ids, v.fuse_unk);
                        b = k;
                    }
                }
                return;
            }
            spm_bpe(piece, ids, v.fuse_unk);
            return;
        }
        std::string s(piece);
        if (v.byte_level_add_prefix_space && s[0] != ' ') s = " " + s;
        size_t last = 0;
        fast_re.for_each_match(s, [&](size_t b, size_t e) {
            if (v.split_mode == SplitMode::isolated && b > last)
                byte_bpe(std::string_view(s).substr(last, b - last), ids, v.ignore_merges);
            byte_bpe(std::string_view(s).substr(b, e - b), ids, v.ignore_merges);
            last = e;
        });
        if (v.split_mode == SplitMode::isolated && last < s.size())
            byte_bpe(std::string_view(s).substr(last), ids, v.ignore_merges);
    }

    void encode_fast(std::string_view text, bool parse, std::vector<int32_t>& ids) const {
        static const Trie kNone;
        for (const Span& seg : split_fast(text, parse ? added_raw : kNone)) {
            if (seg.id >= 0) {
                ids.push_back(seg.id);
                continue;
            }
            const std::string_view raw = text.substr(seg.begin, seg.end - seg.begin);
            std::string norm;
            if (v.kind == VocabKind::spm_bpe) norm = fast_spm_normalize(raw, seg.begin == 0);
            else norm = v.nfc ? nfc(raw) : std::string(raw);
            if (norm.empty()) continue;
            for (const Span& sub : split_fast(norm, parse ? added_norm : kNone)) {
                if (sub.id >= 0) ids.push_back(sub.id);
                else if (sub.end > sub.begin) fast_model(std::string_view(norm).substr(sub.begin, sub.end - sub.begin), ids);
            }
        }
    }

    // ---- decode ------------------------------------------------------------------------------
    bool is_fast_special(int32_t id) const { return is_added[id] && v.find_added(id)->special; }

    // Bytes of one token for fast decoding (SentencePiece: after Replace("▁", " ")).
    std::string fast_bytes(int32_t id, bool& is_byte) const {
        is_byte = false;
        const std::string& t = text_of(id);
        if (v.kind == VocabKind::spm_bpe) {
            uint8_t b;
            if (byte_piece_value(t, b)) {  // tokenizers' ByteFallback looks at the text, whatever the type
                is_byte = true;
                return std::string(1, static_cast<char>(b));
            }
            return replace_all(t, kSpace, " ");
        }
        if (is_added[id]) {  // ByteLevel decoder: through the alphabet when every character is in it
            std::string bytes;
            return gpt2_to_bytes(t, bytes) ? bytes : t;
        }
        return t;
    }

    std::string decode_fast(std::span<const int32_t> ids, bool skip) const {
        std::string out;
        if (v.kind == VocabKind::spm_bpe) {
            std::string run;  // consecutive byte-fallback pieces
            auto flush = [&]() {
                if (run.empty()) return;
                if (utf8_invalid_at(run) == std::string::npos) out += run;
                else for (size_t k = 0; k < run.size(); ++k) out += kReplacement;
                run.clear();
            };
            for (int32_t id : ids) {
                if (skip && is_fast_special(id)) continue;
                bool is_byte;
                std::string b = fast_bytes(id, is_byte);
                if (is_byte) {
                    run += b;
                } else {
                    flush();
                    out += b;
                }
            }
            flush();
            if (v.space_mode != SpaceMode::metaspace_never && !out.empty() && out[0] == ' ') out.erase(0, 1);
        } else {
            std::string bytes;
            for (int32_t id : ids) {
                if (skip && is_fast_special(id)) continue;
                bool is_byte;
                bytes += fast_bytes(id, is_byte);
            }
            out = utf8_lossy(bytes);
        }
        return v.clean_up_tokenization_spaces ? clean_up_tokenization(out) : out;
    }

    // sentencepiece's DecodePieces, for the pieces LlamaTokenizer hands it. `id` < 0: text that is
    // not a piece (sentencepiece maps it to <unk> and returns the text unchanged).
    std::string sp_decode(const std::vector<std::pair<std::string, int32_t>>& pieces) const {
        std::string out, run;
        auto flush = [&]() {  // each byte of an ill-formed sequence becomes U+FFFD
            size_t i = 0;
            while (i < run.size()) {
                size_t k = i;
                char32_t cp;
                if (utf8_next(run, k, cp)) {
                    out.append(run, i, k - i);
                    i = k;
                } else {
                    out += kReplacement;
                    ++i;
                }
            }
            run.clear();
        };
        // LlamaTokenizer(legacy=False) loads the model with add_dummy_prefix off
        const bool strip_first = (v.legacy && v.add_dummy_prefix) || v.remove_extra_whitespaces;
        bool first = true;
        for (const auto& [piece, id] : pieces) {
            const TokenType t = id >= 0 ? v.types[id] : TokenType::unknown;
            uint8_t b;
            if (t == TokenType::byte && byte_piece_value(piece, b)) {
                run += static_cast<char>(b);
                first = false;
                continue;
            }
            flush();
            if (t == TokenType::control) continue;
            if (id < 0 || t == TokenType::unknown) {
                out += piece == "<unk>" ? " \xE2\x81\x87 " : piece;
                first = false;
                continue;
            }
            std::string_view p = piece;
            if (first && strip_first && starts_with_space_symbol(p)) p.remove_prefix(kSpace.size());
            out += replace_all(p, kSpace, " ");
            first = false;
        }
        flush();
        return out;
    }

    // convert_tokens_to_string of the slow classes.
    std::string tokens_to_string(const std::vector<int32_t>& ids) const {
        if (v.kind == VocabKind::byte_bpe) {  // GPT2Tokenizer / Qwen2Tokenizer
            std::string bytes, b;
            for (int32_t id : ids) {
                if (is_added[id]) bytes += gpt2_to_bytes(text_of(id), b) ? b : text_of(id);
                else bytes += v.tokens[id];
            }
            return utf8_lossy(bytes);
        }
        // LlamaTokenizer. The first token loses its "▁" (add_prefix_space); sentencepiece then looks
        // the shortened text up like any piece.
        std::vector<std::pair<std::string, int32_t>> toks;
        for (int32_t id : ids) toks.emplace_back(text_of(id), id);
        if (!toks.empty() && v.add_prefix_space && starts_with_space_symbol(toks[0].first)) {
            toks[0].first.erase(0, kSpace.size());
            auto it = text_index.find(toks[0].first);
            toks[0].second = it != text_index.end() ? it->second : -1;
        }
        std::string out;
        std::vector<std::pair<std::string, int32_t>> sub;
        bool prev_is_special = false;
        for (size_t i = 0; i < toks.size(); ++i) {
            const int32_t id = toks[i].second;
            if (id >= 0 && slow_special[id] && toks[i].first == text_of(id)) {  // token in all_special_tokens
                if (!prev_is_special && i != 0 && v.legacy) out += ' ';
                out += sp_decode(sub) + toks[i].first;
                prev_is_special = true;
                sub.clear();
            } else {
                if (prev_is_special && i == 1 && v.add_prefix_space && !starts_with_space_symbol(toks[i].first))
                    out += ' ';
                sub.push_back(toks[i]);
                prev_is_special = false;
            }
        }
        out += sp_decode(sub);
        return out;
    }

    // transformers PreTrainedTokenizer._decode (spaces_between_special_tokens: True, except Qwen2).
    std::string decode_slow(std::span<const int32_t> ids, bool skip) const {
        auto is_legacy_added = [&](int32_t id) {  // added tokens outside all_special_tokens, and
            if (!is_added[id]) return false;       // additional special tokens past the model's vocabulary
            if (!slow_special[id]) return true;
            return id >= v.model_size && std::find(v.additional_special.begin(), v.additional_special.end(), id) !=
                                             v.additional_special.end();
        };
        std::vector<std::string> sub_texts;
        std::vector<int32_t> cur;
        for (int32_t id : ids) {
            if (skip && slow_special[id]) continue;
            if (is_legacy_added(id)) {
                if (!cur.empty()) {
                    std::string s = tokens_to_string(cur);
                    if (!s.empty()) sub_texts.push_back(std::move(s));
                    cur.clear();
                }
                sub_texts.push_back(text_of(id));
            } else {
                cur.push_back(id);
            }
        }
        if (!cur.empty()) sub_texts.push_back(tokens_to_string(cur));
        const bool spaces = v.slow_class != "Qwen2Tokenizer";
        std::string text;
        for (size_t k = 0; k < sub_texts.size(); ++k) {
            if (k && spaces) text += ' ';
            text += sub_texts[k];
        }
        return v.clean_up_tokenization_spaces ? clean_up_tokenization(text) : text;
    }
};

// =============================================================================================

Tokenizer::Tokenizer(Vocab vocab) : impl_(std::make_unique<Impl>(std::move(vocab))) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

const Vocab& Tokenizer::vocab() const { return impl_->v; }
int32_t Tokenizer::size() const { return impl_->v.size(); }

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& o) const {
    const size_t bad = utf8_invalid_at(text);
    HG_CHECK(bad == std::string_view::npos, "text to tokenize is not valid UTF-8 (byte %zu)", bad);
    const Vocab& v = impl_->v;
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    const bool slow = o.semantics == Semantics::slow;
    bool bos = false, eos = false;
    if (o.add_special_tokens) {
        if (slow) {  // build_inputs_with_special_tokens: LlamaTokenizer BOS/EOS, GPT2Tokenizer BOS, Qwen2 none
            const bool llama = v.kind == VocabKind::spm_bpe;
            bos = v.add_bos && (llama || v.slow_class != "Qwen2Tokenizer");
            eos = v.add_eos && llama;
        } else {
            bos = v.fast_add_bos;
            eos = v.fast_add_eos;
        }
    }
    if (bos && v.bos_id >= 0) ids.push_back(v.bos_id);
    if (slow) impl_->encode_slow(text, o.parse_added_tokens, ids);
    else impl_->encode_fast(text, o.parse_added_tokens, ids);
    if (eos && v.eos_id >= 0) ids.push_back(v.eos_id);
    return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& o) const {
    for (int32_t id : ids) HG_CHECK(id >= 0 && id < size(), "token id %d is outside the vocabulary (size %d)", id, size());
    return o.semantics == Semantics::slow ? impl_->decode_slow(ids, o.skip_special_tokens)
                                          : impl_->decode_fast(ids, o.skip_special_tokens);
}

int32_t Tokenizer::token_to_id(std::string_view text) const {
    auto it = impl_->text_index.find(text);
    return it == impl_->text_index.end() ? -1 : it->second;
}

std::string Tokenizer::id_to_token(int32_t id) const {
    HG_CHECK(id >= 0 && id < size(), "token id %d is outside the vocabulary (size %d)", id, size());
    if (impl_->v.kind == VocabKind::byte_bpe && !impl_->is_added[id]) return bytes_to_gpt2(impl_->v.tokens[id]);
    return impl_->text_of(id);
}

bool Tokenizer::is_special(int32_t id, Semantics s) const {
    if (id < 0 || id >= size()) return false;
    return s == Semantics::slow ? impl_->slow_special[id] != 0 : impl_->is_fast_special(id);
}

int32_t Tokenizer::add_tokens(std::span<const AddedToken> tokens, bool special_map) {
    Vocab& v = impl_->v;
    int32_t added = 0;
    // add_special_tokens({"additional_special_tokens": [...]}) replaces the list; add_tokens appends
    // each special=True token that is not special yet (transformers _add_tokens).
    if (special_map) v.additional_special.clear();
    std::vector<char> special(static_cast<size_t>(v.size()) + tokens.size(), 0);
    for (int32_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id})
        if (id >= 0) special[id] = 1;
    for (int32_t id : v.additional_special) special[id] = 1;
    for (const AddedToken& t : tokens) {
        HG_CHECK(!t.content.empty() && utf8_invalid_at(t.content) == std::string::npos,
                 "added token has empty or invalid content");
        int32_t id = token_to_id(t.content);
        if (id < 0) {  // a new id after the last one
            id = v.size();
            v.tokens.push_back(t.content);
            v.types.push_back(t.special ? TokenType::control : TokenType::user_defined);
            if (!v.scores.empty()) v.scores.push_back(0.0f);
            ++added;
        }
        AddedToken a = t;
        a.id = id;
        auto it = std::lower_bound(v.added.begin(), v.added.end(), id,
                                   [](const AddedToken& x, int32_t i) { return x.id < i; });
        if (it != v.added.end() && it->id == id) *it = a;
        else v.added.insert(it, a);
        impl_->text_index[a.content] = id;
        if (special_map || (t.special && !special[id])) {
            v.additional_special.push_back(id);
            special[id] = 1;
        }
    }
    impl_->index();
    return added;
}

Tokenizer::Piece Tokenizer::piece_bytes(int32_t id, bool skip) const {
    HG_CHECK(id >= 0 && id < size(), "token id %d is outside the vocabulary (size %d)", id, size());
    Piece p;
    if (skip && impl_->is_fast_special(id)) {
        p.skipped = true;
        return p;
    }
    p.bytes = impl_->fast_bytes(id, p.is_byte);
    return p;
}

bool Tokenizer::strips_leading_space() const {
    const Vocab& v = impl_->v;
    return v.kind == VocabKind::spm_bpe && v.space_mode != SpaceMode::metaspace_never;
}

// =============================================================================================

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tok_(tokenizer), skip_(skip_special_tokens) {}

std::string StreamDecoder::emit(std::string_view text) {
    pending_.append(text);
    if (!started_ && !pending_.empty()) {  // fast decoding strips one space from the whole text
        if (tok_.strips_leading_space() && pending_[0] == ' ') pending_.erase(0, 1);
        started_ = true;
    }
    const size_t n = utf8_stable_prefix(pending_);
    std::string out = utf8_lossy(std::string_view(pending_).substr(0, n));
    pending_.erase(0, n);
    return out;
}

void StreamDecoder::flush_byte_run() {
    if (byte_run_.empty()) return;
    if (utf8_invalid_at(byte_run_) == std::string::npos) {
        pending_ += byte_run_;
    } else {  // tokenizers' ByteFallback: an ill-formed run becomes one U+FFFD per byte
        for (size_t k = 0; k < byte_run_.size(); ++k) pending_ += kReplacement;
    }
    byte_run_.clear();
}

std::string StreamDecoder::push(int32_t id) {
    const Tokenizer::Piece p = tok_.piece_bytes(id, skip_);
    if (p.skipped) return std::string();
    if (tok_.vocab().kind == VocabKind::byte_bpe) return emit(p.bytes);
    if (p.is_byte) {
        byte_run_ += p.bytes;
        return std::string();
    }
    flush_byte_run();
    return emit(p.bytes);
}

std::string StreamDecoder::finish() {
    flush_byte_run();
    std::string out = emit("");
    out += utf8_lossy(pending_);
    pending_.clear();
    return out;
}

}  // namespace hg::text
