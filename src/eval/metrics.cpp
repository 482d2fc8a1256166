// Answer scoring. See metrics.h; docs/EVALUATION.md has the worked examples the tests check.
#include "eval/metrics.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

namespace hg::eval {

namespace {

char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }
std::string lower(std::string_view s) {
    std::string o(s);
    for (char& c : o) c = lower_ascii(c);
    return o;
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Python's str.split() on ASCII text: runs of whitespace (including \x1c-\x1f) separate words.
bool py_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f'); }
std::vector<std::string> py_split(std::string_view s) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && py_space(s[i])) ++i;
        size_t j = i;
        while (j < s.size() && !py_space(s[j])) ++j;
        if (j > i) out.emplace_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}

const std::map<std::string, std::string>& number_words() {
    static const std::map<std::string, std::string> m = {
        {"zero", "0"}, {"one", "1"}, {"two", "2"},   {"three", "3"}, {"four", "4"}, {"five", "5"},
        {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"}, {"ten", "10"}};
    return m;
}

bool is_article(const std::string& w) { return w == "a" || w == "an" || w == "the"; }

std::string join(const std::vector<std::string>& w) {
    std::string s;
    for (size_t i = 0; i < w.size(); ++i) s += (i ? " " : "") + w[i];
    return s;
}

std::map<std::string, int> counts(const std::vector<std::string>& words) {
    std::map<std::string, int> c;
    for (const auto& w : words) ++c[w];
    return c;
}

}  // namespace

// ---- ours ----------------------------------------------------------------------------------

std::string normalize_answer(std::string_view text) {
    const std::string s = lower(text);
    std::string t;
    t.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool between_digits = i > 0 && i + 1 < s.size() && is_digit(s[i - 1]) && is_digit(s[i + 1]);
        if (c == '.' && between_digits) t += c;          // 2.5 cm stays a number
        else if (c == ',' && between_digits) continue;   // 1,000 -> 1000
        else if (c == '\'') continue;                    // patient's -> patients, don't -> dont
        else if ((unsigned char)c < 128 && std::ispunct((unsigned char)c)) t += ' ';
        else t += c;
    }
    std::vector<std::string> words;
    for (std::string& w : py_split(t)) {
        if (is_article(w)) continue;
        auto it = number_words().find(w);
        words.push_back(it != number_words().end() ? it->second : std::move(w));
    }
    return join(words);
}

std::vector<std::string> answer_tokens(std::string_view text) { return py_split(normalize_answer(text)); }

TokenScores token_scores(std::string_view prediction, std::string_view truth) {
    const auto p = answer_tokens(prediction), g = answer_tokens(truth);
    if (p.empty() && g.empty()) return {1, 1, 1};
    if (p.empty() || g.empty()) return {};
    auto cp = counts(p), cg = counts(g);
    int common = 0;
    for (const auto& [w, n] : cg)
        if (auto it = cp.find(w); it != cp.end()) common += std::min(n, it->second);
    if (common == 0) return {};
    TokenScores s;
    s.precision = double(common) / double(p.size());
    s.recall = double(common) / double(g.size());
    s.f1 = 2 * s.precision * s.recall / (s.precision + s.recall);
    return s;
}

bool exact_match(std::string_view prediction, std::string_view truth) {
    return normalize_answer(prediction) == normalize_answer(truth);
}

std::string yes_no_verdict(std::string_view prediction) {
    for (const auto& w : answer_tokens(prediction))
        if (w == "yes" || w == "no") return w;
    return "";
}

bool closed_correct(std::string_view prediction, std::string_view truth) {
    const std::string g = normalize_answer(truth);
    if (g == "yes" || g == "no") return yes_no_verdict(prediction) == g;
    return normalize_answer(prediction) == g;
}

// ---- LLaVA-Med ------------------------------------------------------------------------------
namespace llava {

namespace {

// glossary.py's contractions (keys that can match lower-cased text; the table's capitalised
// keys "Id've", "Im", "Ive" never do, because normalize_word lower-cases first).
const std::map<std::string, std::string>& contractions() {
    static const std::map<std::string, std::string> m = [] {
        std::map<std::string, std::string> t;
        const char* pairs[][2] = {
            {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"},
            {"couldnt", "couldn't"}, {"couldn'tve", "couldn't've"}, {"couldnt've", "couldn't've"},
            {"didnt", "didn't"}, {"doesnt", "doesn't"}, {"dont", "don't"}, {"hadnt", "hadn't"},
            {"hadnt've", "hadn't've"}, {"hadn'tve", "hadn't've"}, {"hasnt", "hasn't"}, {"havent", "haven't"},
            {"hed", "he'd"}, {"hed've", "he'd've"}, {"he'dve", "he'd've"}, {"hes", "he's"}, {"howd", "how'd"},
            {"howll", "how'll"}, {"hows", "how's"}, {"isnt", "isn't"}, {"itd", "it'd"}, {"itd've", "it'd've"},
            {"it'dve", "it'd've"}, {"itll", "it'll"}, {"let's", "let's"}, {"maam", "ma'am"},
            {"mightnt", "mightn't"}, {"mightnt've", "mightn't've"}, {"mightn'tve", "mightn't've"},
            {"mightve", "might've"}, {"mustnt", "mustn't"}, {"mustve", "must've"}, {"neednt", "needn't"},
            {"notve", "not've"}, {"oclock", "o'clock"}, {"oughtnt", "oughtn't"}, {"ow's'at", "'ow's'at"},
            {"'ows'at", "'ow's'at"}, {"'ow'sat", "'ow's'at"}, {"shant", "shan't"}, {"shed've", "she'd've"},
            {"she'dve", "she'd've"}, {"she's", "she's"}, {"shouldve", "should've"}, {"shouldnt", "shouldn't"},
            {"shouldnt've", "shouldn't've"}, {"shouldn'tve", "shouldn't've"}, {"somebody'd", "somebodyd"},
            {"somebodyd've", "somebody'd've"}, {"somebody'dve", "somebody'd've"}, {"somebodyll", "somebody'll"},
            {"somebodys", "somebody's"}, {"someoned", "someone'd"}, {"someoned've", "someone'd've"},
            {"someone'dve", "someone'd've"}, {"someonell", "someone'll"}, {"someones", "someone's"},
            {"somethingd", "something'd"}, {"somethingd've", "something'd've"},
            {"something'dve", "something'd've"}, {"somethingll", "something'll"}, {"thats", "that's"},
            {"thered", "there'd"}, {"thered've", "there'd've"}, {"there'dve", "there'd've"},
            {"therere", "there're"}, {"theres", "there's"}, {"theyd", "they'd"}, {"theyd've", "they'd've"},
            {"they'dve", "they'd've"}, {"theyll", "they'll"}, {"theyre", "they're"}, {"theyve", "they've"},
            {"twas", "'twas"}, {"wasnt", "wasn't"}, {"wed've", "we'd've"}, {"we'dve", "we'd've"},
            {"weve", "we've"}, {"werent", "weren't"}, {"whatll", "what'll"}, {"whatre", "what're"},
            {"whats", "what's"}, {"whatve", "what've"}, {"whens", "when's"}, {"whered", "where'd"},
            {"wheres", "where's"}, {"whereve", "where've"}, {"whod", "who'd"}, {"whod've", "who'd've"},
            {"who'dve", "who'd've"}, {"wholl", "who'll"}, {"whos", "who's"}, {"whove", "who've"},
            {"whyll", "why'll"}, {"whyre", "why're"}, {"whys", "why's"}, {"wont", "won't"},
            {"wouldve", "would've"}, {"wouldnt", "wouldn't"}, {"wouldnt've", "wouldn't've"},
            {"wouldn'tve", "wouldn't've"}, {"yall", "y'all"}, {"yall'll", "y'all'll"}, {"y'allll", "y'all'll"},
            {"yall'd've", "y'all'd've"}, {"y'alld've", "y'all'd've"}, {"y'all'dve", "y'all'd've"},
            {"youd", "you'd"}, {"youd've", "you'd've"}, {"you'dve", "you'd've"}, {"youll", "you'll"},
            {"youre", "you're"}, {"youve", "you've"}};
        for (const auto& p : pairs) t[p[0]] = p[1];
        return t;
    }();
    return m;
}

// glossary.py's punct list, in its order ('.', ':' and '\'' are not in it).
constexpr std::string_view kPunct = ";/[]\"{}()=+\\_->@<`,?!";  // order irrelevant: each is independent

bool contains(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

bool has_digit_comma_digit(std::string_view s) {
    for (size_t i = 1; i + 1 < s.size(); ++i)
        if (s[i] == ',' && is_digit(s[i - 1]) && is_digit(s[i + 1])) return true;
    return false;
}

std::string replace_all(std::string s, char from, std::string_view to) {
    std::string o;
    for (char c : s) {
        if (c == from) o += to;
        else o += c;
    }
    return o;
}

// split_sentence(s, 1): word -> count (lower-cased, whitespace-split).
std::map<std::string, int> split_sentence(std::string_view s) { return counts(py_split(lower(s))); }

}  // namespace

std::string normalize_word(std::string_view text) {
    const std::string token(text);
    std::string t = token;
    // Each punctuation mark is deleted when it touches a space somewhere in the *original* text
    // (or the text has a digit,digit comma), else replaced by a space.
    const bool digit_comma = has_digit_comma_digit(token);
    for (char p : kPunct) {
        const std::string ps = std::string(1, p) + " ", sp = " " + std::string(1, p);
        const bool drop = contains(token, ps) || contains(token, sp) || digit_comma;
        t = replace_all(std::move(t), p, drop ? "" : " ");
    }
    // period_strip.sub("", _token, re.UNICODE): a '.' not followed by a digit is removed; the
    // third positional argument is `count`, and re.UNICODE == 32, so at most 32 of them.
    std::string u;
    int removed = 0;
    for (size_t i = 0; i < t.size(); ++i) {
        const bool before_digit = i + 1 < t.size() && is_digit(t[i + 1]);
        if (t[i] == '.' && !before_digit && removed < 32) { ++removed; continue; }
        u += t[i];
    }
    std::vector<std::string> words;
    for (std::string& w : py_split(lower(u))) {
        if (w == "none") w = "0";  // manual_map: "none" and the number words
        else if (auto it = number_words().find(w); it != number_words().end()) w = it->second;
        if (!is_article(w)) words.push_back(std::move(w));
    }
    for (auto& w : words)
        if (auto it = contractions().find(w); it != contractions().end()) w = it->second;
    std::string out = join(words);
    out.erase(std::remove(out.begin(), out.end(), ','), out.end());
    return out;
}

std::optional<int> closed_hit(std::string_view prediction, std::string_view truth) {
    const std::string p = normalize_word(lower(prediction)), g = normalize_word(lower(truth));
    if (contains(p, "yes") || contains(p, "no")) {
        if (contains(p, g)) return 1;
        return std::nullopt;  // run_eval.py appends nothing here
    }
    return 0;
}

OpenScores open_scores(std::string_view prediction, std::string_view truth, std::span<const std::string> candidates) {
    // evaluate(): lower + normalize_word once; each metric normalises again.
    const std::string p1 = normalize_word(lower(prediction)), g1 = normalize_word(lower(truth));
    const std::string p = normalize_word(p1), g = normalize_word(g1);
    const auto cw = split_sentence(p), rw = split_sentence(g);
    OpenScores s;
    // calculate_exactmatch: reference word types present in the prediction / prediction words.
    {
        int count = 0, total = 0;
        for (const auto& [w, n] : rw) count += cw.count(w) ? 1 : 0;
        for (const auto& [w, n] : cw) total += n;
        s.exact = total ? double(count) / total : 0.0;
    }
    // calculate_f1score: tp counts the *prediction's* occurrences of shared words.
    if (!cw.empty() && !rw.empty()) {
        int tp = 0, fp = 0, fn = 0;
        for (const auto& [w, n] : cw) (rw.count(w) ? tp : fp) += n;
        for (const auto& [w, n] : rw)
            if (!cw.count(w)) fn += n;
        if (tp > 0) {
            s.precision = double(tp) / (tp + fp);
            s.recall = double(tp) / (tp + fn);
            s.f1 = 2 * s.precision * s.recall / (s.precision + s.recall);
        }
    }
    // calculate_appearance_with_normalization: the candidate with the largest share of its word
    // types found among the prediction's (first one on ties) must equal the reference.
    if (!candidates.empty()) {
        double best = -1;
        std::string chosen;
        for (const std::string& c : candidates) {
            const std::string cn = normalize_word(c);
            const auto cand = split_sentence(cn);
            int count = 0;
            for (const auto& [w, n] : cw) count += cand.count(w) ? 1 : 0;
            const double sim = cand.empty() ? 0.0 : double(count) / cand.size();
            if (sim > best) best = sim, chosen = cn;
        }
        s.open_hit = chosen == g ? 1.0 : 0.0;
    }
    return s;
}

}  // namespace llava

// ---- multiple choice --------------------------------------------------------------------------

namespace {

// "B", "B.", "B)", "(B)", "B:", "B," possibly followed by more text after the mark; a bare letter
// followed by a space and a word is not a letter answer ("A mass ..." is text).
int letter_at(std::string_view s, size_t n_options) {
    size_t i = 0;
    while (i < s.size() && py_space(s[i])) ++i;
    bool paren = false;
    if (i < s.size() && s[i] == '(') paren = true, ++i;
    if (i >= s.size()) return -1;
    const char c = (char)std::toupper((unsigned char)s[i]);
    if (c < 'A' || c >= char('A' + n_options)) return -1;
    ++i;
    if (paren) return (i < s.size() && s[i] == ')') ? c - 'A' : -1;
    if (i == s.size()) return c - 'A';
    const char next = s[i];
    if (next == '.' || next == ')' || next == ':' || next == ',') return c - 'A';
    // "B" then only spaces
    while (i < s.size() && py_space(s[i])) ++i;
    return i == s.size() ? c - 'A' : -1;
}

}  // namespace

int choose_option(std::string_view answer, std::span<const std::string> options) {
    if (options.empty()) return -1;
    if (int k = letter_at(answer, options.size()); k >= 0) return k;
    // "option B", "answer: B", "the answer is (B)": a lead-in phrase then a letter form.
    const std::string low = lower(answer);
    for (std::string_view lead : {"the correct answer is", "the answer is", "correct answer:", "answer is", "answer:",
                                  "answer", "option"}) {
        size_t i = 0;
        while (i < low.size() && py_space(low[i])) ++i;
        if (low.compare(i, lead.size(), lead) == 0) {
            if (int k = letter_at(std::string_view(answer).substr(i + lead.size()), options.size()); k >= 0) return k;
        }
    }
    // Text: whole-token occurrence of an option's normalised text in the normalised answer.
    const auto a = answer_tokens(answer);
    const std::string an = normalize_answer(answer);
    int best = -1;
    size_t best_len = 0;
    bool tie = false;
    for (size_t k = 0; k < options.size(); ++k) {
        if (normalize_answer(options[k]) == an && !an.empty()) return (int)k;
        const auto o = answer_tokens(options[k]);
        if (o.empty() || o.size() > a.size()) continue;
        bool found = false;
        for (size_t s = 0; s + o.size() <= a.size() && !found; ++s)
            found = std::equal(o.begin(), o.end(), a.begin() + (ptrdiff_t)s);
        if (!found) continue;
        if (o.size() > best_len) best = (int)k, best_len = o.size(), tie = false;
        else if (o.size() == best_len) tie = true;
    }
    return tie ? -1 : best;
}

}  // namespace hg::eval
