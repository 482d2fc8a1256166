// tiktoken ranks file: one "<base64 bytes> <rank>" per line; the rank is the token id and also the
// merge priority (BPE merges the adjacent pair whose concatenated bytes have the lowest rank).
#include <unordered_map>

#include "core/base64.h"
#include "core/error.h"
#include "text/vocab.h"

namespace hg::text {

namespace {

// A rank line's token: non-empty standard base64.
bool base64_decode(std::string_view s, std::string& out) { return !s.empty() && hg::base64_decode(s, out) && !out.empty(); }

}  // namespace

Vocab load_tiktoken(std::string_view text, const std::string& source, std::string split_regex) {
    Vocab v;
    v.source = source;
    v.kind = VocabKind::byte_bpe;
    v.merge_by_rank = true;
    v.split_regex = split_regex.empty() ? kCl100kSplitRegex : std::move(split_regex);
    v.split_mode = SplitMode::isolated;
    v.slow_class = "GPT2Tokenizer";
    v.add_prefix_space = false;
    std::unordered_map<std::string, int64_t> seen;
    size_t pos = 0, line_no = 0;
    std::string bytes;
    std::vector<std::pair<int64_t, std::string>> entries;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string_view::npos) eol = text.size();
        std::string_view line = text.substr(pos, eol - pos);
        pos = eol + 1;
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;
        const size_t sp = line.find(' ');
        HG_CHECK(sp != std::string_view::npos && sp > 0 && sp + 1 < line.size(),
                 "%s: line %zu is not '<base64> <rank>'", source.c_str(), line_no);
        HG_CHECK(base64_decode(line.substr(0, sp), bytes), "%s: line %zu: invalid base64 token", source.c_str(), line_no);
        int64_t rank = 0;
        for (char c : line.substr(sp + 1)) {
            HG_CHECK(c >= '0' && c <= '9' && rank < (int64_t(1) << 30), "%s: line %zu: invalid rank", source.c_str(),
                     line_no);
            rank = rank * 10 + (c - '0');
        }
        HG_CHECK(seen.emplace(bytes, rank).second, "%s: line %zu: token listed twice", source.c_str(), line_no);
        entries.emplace_back(rank, bytes);
    }
    HG_CHECK(!entries.empty(), "%s: no tokens", source.c_str());
    int64_t max_rank = 0;
    for (auto& [rank, b] : entries) max_rank = std::max(max_rank, rank);
    HG_CHECK(max_rank < int64_t(entries.size()) * 2 + 1024, "%s: ranks are sparse (max %lld for %zu tokens)",
             source.c_str(), static_cast<long long>(max_rank), entries.size());
    v.tokens.assign(static_cast<size_t>(max_rank + 1), std::string());
    v.types.assign(v.tokens.size(), TokenType::unused);
    std::vector<bool> filled(v.tokens.size(), false);
    for (auto& [rank, b] : entries) {
        HG_CHECK(!filled[rank], "%s: rank %lld used twice", source.c_str(), static_cast<long long>(rank));
        filled[rank] = true;
        v.tokens[rank] = std::move(b);
        v.types[rank] = TokenType::normal;
    }
    v.model_size = static_cast<int32_t>(entries.size());
    for (int b = 0; b < 256; ++b)
        HG_CHECK(seen.count(std::string(1, static_cast<char>(b))), "%s: byte 0x%02X has no token", source.c_str(), b);
    v.validate();
    return v;
}

}  // namespace hg::text
