// Helpers for the text-layer tests: gzip'd JSON-lines fixtures and the reference tokenizers.
#pragma once
#include <zlib.h>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_util.h"
#include "text/tokenizer.h"
#include "text/vocab.h"

namespace hgtest {

inline std::string gunzip_file(const std::filesystem::path& p) {
    gzFile f = gzopen(p.string().c_str(), "rb");
    if (!f) throw std::runtime_error("cannot open " + p.string());
    std::string out;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    const bool ok = n == 0;
    gzclose(f);
    if (!ok) throw std::runtime_error("gzip error in " + p.string());
    return out;
}

inline std::vector<nlohmann::json> read_jsonl_gz(const std::filesystem::path& p) {
    const std::string text = gunzip_file(p);
    std::vector<nlohmann::json> rows;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string::npos) eol = text.size();
        if (eol > pos) rows.push_back(nlohmann::json::parse(text.begin() + static_cast<long>(pos), text.begin() + static_cast<long>(eol)));
        pos = eol + 1;
    }
    return rows;
}

inline std::string read_text(const std::filesystem::path& p) {
    auto b = read_file(p);
    return std::string(b.begin(), b.end());
}

inline std::vector<int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

inline std::string show_ids(const std::vector<int32_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? " " : "") + std::to_string(v[i]);
    return s + "]";
}

// The reference vocabularies: shared data files plus the pinned tokenizer configs of tests/fixtures.
inline std::filesystem::path tok_data(const std::string& rel) { return shared_data() / "tokenizers" / rel; }
inline std::filesystem::path tok_fixture(const std::string& rel) { return fixture("tokenizers/" + rel); }

inline hg::text::Vocab phi3_from_model(const char* config = "phi3/tokenizer_config.json") {
    const std::string bytes = read_text(tok_data("phi3/tokenizer.model"));
    auto v = hg::text::load_sentencepiece_model({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()},
                                                "phi3/tokenizer.model");
    hg::text::apply_tokenizer_config(v, read_text(tok_fixture(config)), config);
    return v;
}
inline hg::text::Vocab phi3_from_json() {
    auto v = hg::text::load_tokenizer_json(gunzip_file(tok_fixture("phi3/tokenizer.json.gz")), "phi3/tokenizer.json");
    hg::text::apply_tokenizer_config(v, read_text(tok_fixture("phi3/tokenizer_config.json")), "phi3/tokenizer_config.json");
    return v;
}
inline hg::text::Vocab phi4_from_json() {
    auto v = hg::text::load_tokenizer_json(read_text(tok_data("cl100k/tokenizer.json")), "cl100k/tokenizer.json");
    hg::text::apply_tokenizer_config(v, read_text(tok_fixture("phi4/tokenizer_config.json")), "phi4/tokenizer_config.json");
    return v;
}
inline hg::text::Vocab phi4_from_tiktoken() {
    auto v = hg::text::load_tiktoken(read_text(tok_data("cl100k/cl100k_base.tiktoken")), "cl100k_base.tiktoken");
    hg::text::apply_tokenizer_config(v, read_text(tok_fixture("phi4/tokenizer_config.json")), "phi4/tokenizer_config.json");
    return v;
}
inline hg::text::Vocab qwen2_from_json() {
    return hg::text::load_vocab(tok_data("qwen2/tokenizer.json"));  // tokenizer_config.json beside it is applied
}

// Counts mismatches, printing the first few.
struct Tally {
    const char* what;
    int bad = 0, total = 0;
    void check(bool ok, const std::function<std::string()>& detail) {
        ++total;
        if (ok) return;
        if (++bad <= 8) ADD_FAILURE() << what << ": " << detail();
    }
    ~Tally() { std::printf("    %-30s %5d / %5d mismatches\n", what, bad, total); }
};

// llama.cpp's tokenizer test vectors (`ggml-vocab-*.gguf.inp` / `.out`): the input texts, each
// followed by "\n__ggml_vocab_test__\n", and one line of space-separated token ids per text.
struct VocabVector {
    std::string text;
    std::vector<int32_t> ids;
};
inline std::vector<VocabVector> read_llamacpp_vocab_vectors(const std::filesystem::path& inp,
                                                            const std::filesystem::path& out_path) {
    const std::string in = read_text(inp), out = read_text(out_path);
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<VocabVector> cases;
    size_t pos = 0, opos = 0;
    while (pos < in.size()) {  // every case ends with the separator: nothing after the last one
        const size_t k = in.find(sep, pos);
        const size_t e = out.find('\n', opos);
        VocabVector c;
        c.text = in.substr(pos, k == std::string::npos ? std::string::npos : k - pos);
        const std::string line = out.substr(opos, e == std::string::npos ? std::string::npos : e - opos);
        for (size_t p = 0; p < line.size();) {
            if (line[p] == ' ') {
                ++p;
                continue;
            }
            c.ids.push_back(std::stoi(line.substr(p)));
            while (p < line.size() && line[p] != ' ') ++p;
        }
        cases.push_back(std::move(c));
        if (k == std::string::npos || e == std::string::npos) break;
        pos = k + sep.size();
        opos = e + 1;
    }
    return cases;
}

}  // namespace hgtest
