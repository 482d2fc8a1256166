// Tokenizers against the Hugging Face reference (tests/reference/gen_tokenizers.py): for every
// string of every vocabulary, our ids equal the slow transformers tokenizer's (HealthGPT's path)
// and the fast tokenizers library's, and our decodes equal theirs.
#include <gtest/gtest.h>

#include <functional>

#include "core/error.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "text_test_util.h"

using namespace hg::text;
using hgtest::ids_of;
using hgtest::show_ids;
using hgtest::Tally;

namespace {

struct VocabCase {
    const char* name;      // test label
    const char* cases;     // fixture stem: cases_<x>.jsonl.gz, decode_<x>.jsonl.gz
    const char* needs;     // shared data it reads
    std::function<Vocab()> load;
};

const VocabCase kVocabs[] = {
    {"phi3_model", "phi3", "tokenizers/phi3/tokenizer.model", [] { return hgtest::phi3_from_model(); }},
    {"phi3_json", "phi3", "tokenizers/phi3/tokenizer.model", [] { return hgtest::phi3_from_json(); }},
    {"phi4_json", "cl100k", "tokenizers/cl100k/tokenizer.json", [] { return hgtest::phi4_from_json(); }},
    {"phi4_tiktoken", "cl100k", "tokenizers/cl100k/cl100k_base.tiktoken", [] { return hgtest::phi4_from_tiktoken(); }},
    {"qwen2_json", "qwen2", "tokenizers/qwen2/tokenizer.json", [] { return hgtest::qwen2_from_json(); }},
};

void PrintTo(const VocabCase& c, std::ostream* os) { *os << c.name; }

class VocabTest : public ::testing::TestWithParam<VocabCase> {};

TEST_P(VocabTest, EncodeMatchesSlowAndFastReference) {
    const VocabCase& vc = GetParam();
    HG_SKIP_WITHOUT_SHARED_DATA(vc.needs);
    const Tokenizer tok(vc.load());
    const auto rows = hgtest::read_jsonl_gz(hgtest::tok_fixture(std::string("cases_") + vc.cases + ".jsonl.gz"));
    ASSERT_GE(rows.size(), 2000u);
    Tally slow{"encode slow"}, fast{"encode fast"};
    int differ = 0;
    for (const auto& r : rows) {
        const std::string text = r["text"];
        const auto want_slow = ids_of(r["slow"]), want_fast = ids_of(r["fast"]);
        differ += want_slow != want_fast;
        const auto got_slow = tok.encode(text, {Semantics::slow});
        const auto got_fast = tok.encode(text, {Semantics::fast});
        slow.check(got_slow == want_slow, [&] { return nlohmann::json(text).dump() + " got " + show_ids(got_slow) + " want " + show_ids(want_slow); });
        fast.check(got_fast == want_fast, [&] { return nlohmann::json(text).dump() + " got " + show_ids(got_fast) + " want " + show_ids(want_fast); });
    }
    std::printf("    %zu strings, %d where the slow and fast references differ\n", rows.size(), differ);
    EXPECT_EQ(slow.bad, 0);
    EXPECT_EQ(fast.bad, 0);
}

TEST_P(VocabTest, DecodeMatchesReference) {
    const VocabCase& vc = GetParam();
    HG_SKIP_WITHOUT_SHARED_DATA(vc.needs);
    const Tokenizer tok(vc.load());
    Tally slow{"decode slow"}, slow_skip{"decode slow skip_special"}, fast{"decode fast"},
        fast_skip{"decode fast skip_special"}, round{"decode(encode(s)) == s"};
    auto check_row = [&](const nlohmann::json& r, const std::vector<int32_t>& sids, const std::vector<int32_t>& fids) {
        auto cmp = [&](Tally& t, const std::vector<int32_t>& ids, Semantics s, bool skip, const char* key) {
            const std::string got = tok.decode(ids, {s, skip});
            const std::string want = r[key];
            t.check(got == want, [&] { return show_ids(ids) + " got " + nlohmann::json(got).dump() + " want " + nlohmann::json(want).dump(); });
        };
        cmp(slow, sids, Semantics::slow, false, "slow_dec");
        cmp(slow_skip, sids, Semantics::slow, true, "slow_dec_skip");
        cmp(fast, fids, Semantics::fast, false, "fast_dec");
        cmp(fast_skip, fids, Semantics::fast, true, "fast_dec_skip");
    };
    for (const auto& r : hgtest::read_jsonl_gz(hgtest::tok_fixture(std::string("cases_") + vc.cases + ".jsonl.gz"))) {
        check_row(r, ids_of(r["slow"]), ids_of(r["fast"]));
        // where the reference round-trips, ours does too (our encode, our decode)
        const std::string text = r["text"];
        if (r["fast_dec"] == text) {
            const std::string back = tok.decode(tok.encode(text, {Semantics::fast}), {Semantics::fast});
            round.check(back == text, [&] { return nlohmann::json(text).dump() + " -> " + nlohmann::json(back).dump(); });
        }
    }
    for (const auto& r : hgtest::read_jsonl_gz(hgtest::tok_fixture(std::string("decode_") + vc.cases + ".jsonl.gz")))
        check_row(r, ids_of(r["ids"]), ids_of(r["ids"]));
    EXPECT_EQ(slow.bad + slow_skip.bad + fast.bad + fast_skip.bad + round.bad, 0);
}

TEST_P(VocabTest, StreamingEqualsBatchDecode) {
    const VocabCase& vc = GetParam();
    HG_SKIP_WITHOUT_SHARED_DATA(vc.needs);
    const Tokenizer tok(vc.load());
    Tally t{"stream == decode"}, partial{"chunks are valid UTF-8"};
    auto run = [&](const std::vector<int32_t>& ids, bool skip) {
        StreamDecoder s(tok, skip);
        std::string out;
        bool chunks_valid = true;
        for (int32_t id : ids) {
            const std::string chunk = s.push(id);
            chunks_valid &= utf8_invalid_at(chunk) == std::string::npos;
            out += chunk;
        }
        out += s.finish();
        const std::string want = tok.decode(ids, {Semantics::fast, skip});
        t.check(out == want, [&] { return show_ids(ids) + " stream " + nlohmann::json(out).dump() + " batch " + nlohmann::json(want).dump(); });
        partial.check(chunks_valid, [&] { return show_ids(ids); });
    };
    for (const auto& r : hgtest::read_jsonl_gz(hgtest::tok_fixture(std::string("cases_") + vc.cases + ".jsonl.gz"))) {
        run(ids_of(r["fast"]), false);
        run(ids_of(r["fast"]), true);
    }
    for (const auto& r : hgtest::read_jsonl_gz(hgtest::tok_fixture(std::string("decode_") + vc.cases + ".jsonl.gz")))
        run(ids_of(r["ids"]), false);
    EXPECT_EQ(t.bad + partial.bad, 0);
}

INSTANTIATE_TEST_SUITE_P(Text, VocabTest, ::testing::ValuesIn(kVocabs),
                         [](const ::testing::TestParamInfo<VocabCase>& i) { return std::string(i.param.name); });

// A character split across tokens is held back until it is complete.
TEST(StreamDecoder, HoldsBackCharactersSplitAcrossTokens) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    const Tokenizer qwen(hgtest::qwen2_from_json());
    for (const std::string text : {"🫁 lung", "医学影像诊断", "👨‍👩‍👧‍👦 family", "a😀b"}) {
        const auto ids = qwen.encode(text, {Semantics::fast});
        StreamDecoder s(qwen);
        std::string out;
        int held = 0;
        for (int32_t id : ids) {
            const std::string chunk = s.push(id);
            EXPECT_EQ(utf8_invalid_at(chunk), std::string::npos) << text;
            held += chunk.empty();
            out += chunk;
        }
        out += s.finish();
        EXPECT_EQ(out, text);
        if (text.rfind("🫁", 0) == 0) {
            EXPECT_GT(held, 0) << "the emoji spans several byte-level tokens";
        }
    }
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const Tokenizer phi3(hgtest::phi3_from_model());
    const std::string text = "CT 🫁 扫描 ok";  // byte-fallback pieces for the emoji and rare CJK
    const auto ids = phi3.encode(text, {Semantics::fast});
    StreamDecoder s(phi3);
    std::string out;
    for (int32_t id : ids) {
        const std::string chunk = s.push(id);
        EXPECT_EQ(utf8_invalid_at(chunk), std::string::npos);
        out += chunk;
    }
    out += s.finish();
    EXPECT_EQ(out, text);
    // incomplete bytes at the end become U+FFFD
    StreamDecoder t(phi3);
    const int32_t f0 = phi3.token_to_id("<0xF0>"), x9f = phi3.token_to_id("<0x9F>");
    ASSERT_GE(f0, 0);
    EXPECT_EQ(t.push(f0), "");
    EXPECT_EQ(t.push(x9f), "");
    EXPECT_EQ(t.finish(), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

// llama.cpp's tokenizer test vectors (46 texts each), read in place.
TEST(Tokenizer, LlamaCppVectors) {
    struct Set { const char* dir; const char* stem; std::function<Vocab()> load; };
    const Set sets[] = {{"phi3", "ggml-vocab-phi-3.gguf", [] { return hgtest::phi3_from_model(); }},
                        {"qwen2", "ggml-vocab-qwen2.gguf", [] { return hgtest::qwen2_from_json(); }}};
    for (const Set& s : sets) {
        const auto inp = hgtest::tok_data(std::string(s.dir) + "/" + s.stem + ".inp");
        if (hgtest::shared_data().empty() || !std::filesystem::exists(inp)) {
            std::printf("    skipping %s: %s not found\n", s.dir, inp.string().c_str());
            continue;
        }
        const Tokenizer tok(s.load());
        const auto cases = hgtest::read_llamacpp_vocab_vectors(inp, hgtest::tok_data(std::string(s.dir) + "/" + s.stem + ".out"));
        ASSERT_GE(cases.size(), 40u);
        int bad = 0;
        for (const auto& c : cases) {
            const auto got = tok.encode(c.text, {Semantics::fast, /*add_special_tokens=*/false});
            if (got != c.ids && ++bad <= 5) ADD_FAILURE() << s.dir << " " << nlohmann::json(c.text).dump() << " got " << show_ids(got) << " want " << show_ids(c.ids);
        }
        std::printf("    %s: %zu llama.cpp vectors, %d mismatches\n", s.dir, cases.size(), bad);
        EXPECT_EQ(bad, 0);
    }
}

// Custom added tokens with lstrip / rstrip / single_word / normalized, slow and fast.
TEST(Tokenizer, AddedTokenFlags) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const auto rows = hgtest::read_jsonl_gz(hgtest::tok_fixture("flags.jsonl.gz"));
    std::vector<AddedToken> extra;
    for (const auto& a : rows[0]["added"]) {
        AddedToken t;
        t.content = a["content"];
        t.lstrip = a["lstrip"];
        t.rstrip = a["rstrip"];
        t.single_word = a["single_word"];
        t.normalized = a["normalized"];
        t.special = a["special"];
        extra.push_back(t);
    }
    Tokenizer phi3(hgtest::phi3_from_model()), qwen(hgtest::qwen2_from_json());
    phi3.add_tokens(extra, false);
    qwen.add_tokens(extra, false);
    Tally slow{"flags slow"}, fast{"flags fast"};
    for (size_t i = 1; i < rows.size(); ++i) {
        const auto& r = rows[i];
        Tokenizer& tok = r["vocab"] == "phi3" ? phi3 : qwen;
        if (r.contains("ids")) {
            std::vector<int32_t> got;
            for (const auto& t : extra) got.push_back(tok.token_to_id(t.content));
            EXPECT_EQ(got, ids_of(r["ids"])) << r["vocab"];
            continue;
        }
        const std::string text = r["text"];
        const auto gs = tok.encode(text, {Semantics::slow}), gf = tok.encode(text, {Semantics::fast});
        slow.check(gs == ids_of(r["slow"]), [&] { return r["vocab"].get<std::string>() + " " + nlohmann::json(text).dump() + " got " + show_ids(gs) + " want " + show_ids(ids_of(r["slow"])); });
        fast.check(gf == ids_of(r["fast"]), [&] { return r["vocab"].get<std::string>() + " " + nlohmann::json(text).dump() + " got " + show_ids(gf) + " want " + show_ids(ids_of(r["fast"])); });
    }
    EXPECT_EQ(slow.bad + fast.bad, 0);
}

TEST(Tokenizer, RefusesInvalidUtf8AndOutOfRangeIds) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    const Tokenizer tok(hgtest::qwen2_from_json());
    EXPECT_THROW(tok.encode("ab\xFF"), hg::Error);
    EXPECT_THROW(tok.encode("\xE4\xBD"), hg::Error);
    const int32_t bad[] = {1, tok.size()};
    EXPECT_THROW(tok.decode(bad), hg::Error);
    const int32_t neg[] = {-1};
    EXPECT_THROW(tok.decode(neg), hg::Error);
}

// Python's unicodedata NFC and bytes.decode("utf-8", "replace").
TEST(TextUnicode, NfcAndLossyDecodingMatchPython) {
    const auto rows = hgtest::read_jsonl_gz(hgtest::tok_fixture("unicode.jsonl.gz"));
    int bad_nfc = 0, bad_lossy = 0, n_nfc = 0, n_lossy = 0;
    for (const auto& r : rows) {
        if (r.contains("nfc_in")) {
            ++n_nfc;
            const std::string got = nfc(r["nfc_in"].get<std::string>());
            if (got != r["nfc_out"].get<std::string>() && ++bad_nfc <= 5) ADD_FAILURE() << "nfc " << r.dump();
        } else {
            ++n_lossy;
            const std::string hex = r["bytes"];
            std::string bytes;
            for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
            const std::string got = utf8_lossy(bytes);
            if (got != r["lossy"].get<std::string>() && ++bad_lossy <= 5) ADD_FAILURE() << "lossy " << r.dump();
            // the stable prefix never splits what lossy decoding would decode differently later
            const size_t k = utf8_stable_prefix(bytes);
            EXPECT_EQ(utf8_lossy(bytes.substr(0, k)) + utf8_lossy(bytes.substr(k)), got) << hex;
        }
    }
    std::printf("    NFC %d / %d mismatches, lossy UTF-8 %d / %d mismatches\n", bad_nfc, n_nfc, bad_lossy, n_lossy);
    EXPECT_GT(n_nfc, 500);
    EXPECT_GT(n_lossy, 500);
    EXPECT_EQ(bad_nfc + bad_lossy, 0);
}

TEST(TextUnicode, WhitespaceSetsAndByteAlphabet) {
    EXPECT_TRUE(is_white_space(0x85));
    EXPECT_FALSE(is_white_space(0x1C));
    EXPECT_TRUE(is_python_space(0x1C));
    EXPECT_FALSE(is_white_space(0x200B));
    for (int b = 0; b < 256; ++b) EXPECT_EQ(unicode_to_byte(byte_to_unicode(static_cast<uint8_t>(b))), b);
    EXPECT_EQ(byte_to_unicode(' '), char32_t(0x120));   // Ġ
    EXPECT_EQ(byte_to_unicode('\n'), char32_t(0x10A));  // Ċ
}

}  // namespace
