// GGUF tokenizer I/O (src/text/gguf_tokenizer.h): every reference vocabulary is written into a GGUF
// file with write_tokenizer, read back with load_tokenizer, and must then still encode the ~3,000
// strings per vocabulary of tests/fixtures/tokenizers exactly as transformers' slow tokenizer and the
// tokenizers library do (the reference ids, not our own earlier output), decode them as they do, and
// build the HealthGPT prompts (chunk-wise around <image>, VQ vocabulary extension) with the same ids.
#include <gtest/gtest.h>

#include <functional>

#include "core/error.h"
#include "formats/gguf.h"
#include "text/chat.h"
#include "text/gguf_tokenizer.h"
#include "text/tokenizer.h"
#include "text_test_util.h"

using namespace hg::text;
using hgtest::ids_of;
using hgtest::show_ids;
using hgtest::Tally;

namespace {

struct VocabCase {
    const char* name;
    const char* cases;  // fixture stem
    const char* needs;  // shared data
    std::function<Vocab()> load;
    int64_t n_rows;     // the model's embedding rows (padding written like llama.cpp's converter)
};

const VocabCase kVocabs[] = {
    {"phi3_model", "phi3", "tokenizers/phi3/tokenizer.model", [] { return hgtest::phi3_from_model(); }, 32064},
    {"phi3_json", "phi3", "tokenizers/phi3/tokenizer.model", [] { return hgtest::phi3_from_json(); }, 32064},
    {"phi4_json", "cl100k", "tokenizers/cl100k/tokenizer.json", [] { return hgtest::phi4_from_json(); }, 0},
    {"phi4_tiktoken", "cl100k", "tokenizers/cl100k/cl100k_base.tiktoken", [] { return hgtest::phi4_from_tiktoken(); }, 0},
    {"qwen2_json", "qwen2", "tokenizers/qwen2/tokenizer.json", [] { return hgtest::qwen2_from_json(); }, 152064},
};

void PrintTo(const VocabCase& c, std::ostream* os) { *os << c.name; }

// write_tokenizer -> file -> GGUFFile::open -> load_tokenizer.
Tokenizer round_trip(const Vocab& v, int64_t n_rows, const std::string& tag, std::unique_ptr<hg::GGUFFile>* keep = nullptr) {
    hg::GGUFWriter w;
    w.set_string("general.architecture", "test");
    TokenizerWriteOptions o;
    o.n_rows = n_rows;
    write_tokenizer(w, v, o);
    const auto path = hgtest::scratch_dir() / (tag + ".gguf");
    w.write(path);
    auto f = hg::GGUFFile::open(path);
    Tokenizer t = load_tokenizer(*f);
    if (keep) *keep = std::move(f);
    return t;
}

class GgufTokenizerTest : public ::testing::TestWithParam<VocabCase> {};

TEST_P(GgufTokenizerTest, RoundTripEncodesAndDecodesAsTheReference) {
    const VocabCase& vc = GetParam();
    HG_SKIP_WITHOUT_SHARED_DATA(vc.needs);
    const Vocab orig = vc.load();
    std::unique_ptr<hg::GGUFFile> file;
    const Tokenizer tok = round_trip(orig, vc.n_rows, vc.name, &file);

    // The file holds what llama.cpp expects: one token per embedding row.
    const auto tokens = file->get_string_array(tokenizer_keys::kTokens);
    ASSERT_TRUE(tokens.has_value());
    EXPECT_EQ((int64_t)tokens->size(), std::max<int64_t>(orig.size(), vc.n_rows));
    // ... and len(tokenizer) comes back without the padding.
    EXPECT_EQ(tok.size(), orig.size());
    EXPECT_EQ(tok.vocab().bos_id, orig.bos_id);
    EXPECT_EQ(tok.vocab().eos_id, orig.eos_id);
    EXPECT_EQ(tok.vocab().pad_id, orig.pad_id);
    EXPECT_EQ(tok.vocab().add_bos, orig.add_bos);
    EXPECT_EQ(tok.vocab().fast_add_bos, orig.fast_add_bos);
    EXPECT_EQ(tok.vocab().legacy, orig.legacy);
    EXPECT_EQ(tok.vocab().slow_class, orig.slow_class);
    EXPECT_EQ(tok.vocab().additional_special, orig.additional_special);
    ASSERT_EQ(tok.vocab().added.size(), orig.added.size());
    for (size_t i = 0; i < orig.added.size(); ++i) {
        const AddedToken &a = tok.vocab().added[i], &b = orig.added[i];
        EXPECT_TRUE(a.id == b.id && a.content == b.content && a.special == b.special && a.lstrip == b.lstrip &&
                    a.rstrip == b.rstrip && a.single_word == b.single_word && a.normalized == b.normalized)
            << "added token " << b.id << " " << b.content;
    }

    Tally slow{"gguf encode slow"}, fast{"gguf encode fast"}, dslow{"gguf decode slow skip"}, dfast{"gguf decode fast"};
    const auto rows = hgtest::read_jsonl_gz(hgtest::tok_fixture(std::string("cases_") + vc.cases + ".jsonl.gz"));
    ASSERT_GE(rows.size(), 2900u);
    for (const auto& r : rows) {
        const std::string text = r["text"];
        const auto ws = ids_of(r["slow"]), wf = ids_of(r["fast"]);
        const auto gs = tok.encode(text, {Semantics::slow}), gf = tok.encode(text, {Semantics::fast});
        slow.check(gs == ws, [&] { return nlohmann::json(text).dump() + " got " + show_ids(gs) + " want " + show_ids(ws); });
        fast.check(gf == wf, [&] { return nlohmann::json(text).dump() + " got " + show_ids(gf) + " want " + show_ids(wf); });
        const std::string ds = tok.decode(ws, {Semantics::slow, true}), df = tok.decode(wf, {Semantics::fast, false});
        dslow.check(ds == r["slow_dec_skip"], [&] { return show_ids(ws) + " got " + nlohmann::json(ds).dump(); });
        dfast.check(df == r["fast_dec"], [&] { return show_ids(wf) + " got " + nlohmann::json(df).dump(); });
    }
    EXPECT_EQ(slow.bad + fast.bad + dslow.bad + dfast.bad, 0);
}

INSTANTIATE_TEST_SUITE_P(Text, GgufTokenizerTest, ::testing::ValuesIn(kVocabs),
                         [](const ::testing::TestParamInfo<VocabCase>& i) { return std::string(i.param.name); });

// HealthGPT prompts through a round-tripped tokenizer: the reference's ids (with <image> slots and,
// for Phi, the VQ vocabulary extension from len(tokenizer) = 32011 on, not from the 32064 rows).
TEST(GgufTokenizer, HealthGptPromptsAfterRoundTrip) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/cl100k/tokenizer.json");
    Tokenizer phi3 = round_trip(hgtest::phi3_from_model(), 32064, "phi3p");
    Tokenizer phi3_bos = round_trip(hgtest::phi3_from_model("phi3/tokenizer_config.add_bos.json"), 32064, "phi3bp");
    Tokenizer phi4 = round_trip(hgtest::phi4_from_json(), 0, "phi4p");
    Tokenizer qwen = round_trip(hgtest::qwen2_from_json(), 152064, "qwenp");
    EXPECT_EQ(add_vq_vocabulary(phi3), 8195);
    EXPECT_EQ(add_vq_vocabulary(phi3_bos), 8195);
    EXPECT_EQ(add_vq_vocabulary(phi4), 8195);
    EXPECT_EQ(add_vq_vocabulary(qwen), 0);  // Qwen lists additional special tokens: nothing is added
    EXPECT_EQ(vq_vocabulary(phi3).start_index, 32011);
    EXPECT_EQ(vq_vocabulary(phi3).end_index, 40204);
    EXPECT_EQ(phi3.size(), 40206);
    EXPECT_EQ(vq_vocabulary(phi4).start_index, 100352);
    EXPECT_EQ(phi4.size(), 108547);
    Tally t{"gguf prompts"};
    for (const auto& r : hgtest::read_jsonl_gz(hgtest::tok_fixture("prompts.jsonl.gz"))) {
        const std::string vocab = r["vocab"];
        Tokenizer* tok = vocab == "phi3" ? &phi3 : vocab == "phi3_bos" ? &phi3_bos : vocab == "qwen2" ? &qwen : &phi4;
        ASSERT_TRUE(vocab == "phi3" || vocab == "phi3_bos" || vocab == "qwen2" || vocab == "cl100k") << vocab;
        const auto got = tokenize_with_images(*tok, r["prompt"].get<std::string>());
        t.check(got == ids_of(r["ids"]), [&] { return vocab + " " + r["prompt"].dump() + " got " + show_ids(got); });
    }
    EXPECT_GT(t.total, 10);
    EXPECT_EQ(t.bad, 0);
}

// llama.cpp's own Phi-3 vocabulary file: its 53 "[PAD{id}]" rows are dropped, so len(tokenizer)
// is 32011 as in transformers, and llama.cpp's test vectors still encode as llama.cpp does.
TEST(GgufTokenizer, LlamaCppPhi3FileDropsPadding) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/ggml-vocab-phi-3.gguf");
    auto f = hg::GGUFFile::open(hgtest::tok_data("phi3/ggml-vocab-phi-3.gguf"));
    ASSERT_TRUE(has_tokenizer(*f));
    EXPECT_EQ(f->get_string_array(tokenizer_keys::kTokens)->size(), 32064u);
    const Tokenizer tok = load_tokenizer(*f);
    EXPECT_EQ(tok.size(), 32011);
    EXPECT_EQ(tok.token_to_id("<|user|>"), 32010);
    const auto cases = hgtest::read_llamacpp_vocab_vectors(hgtest::tok_data("phi3/ggml-vocab-phi-3.gguf.inp"),
                                                           hgtest::tok_data("phi3/ggml-vocab-phi-3.gguf.out"));
    const int n = static_cast<int>(cases.size());
    int bad = 0;
    for (const auto& c : cases) bad += tok.encode(c.text, {Semantics::fast, false}) != c.ids;
    EXPECT_EQ(n, 46);
    EXPECT_EQ(bad, 0);
}

// tiktoken ranks carry no merges; the ones write_tokenizer derives equal the 100,000 merges of the
// published cl100k tokenizer.json (converted by others from the same ranks).
TEST(GgufTokenizer, TiktokenMergesEqualTokenizerJson) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/cl100k/cl100k_base.tiktoken");
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/cl100k/tokenizer.json");
    std::unique_ptr<hg::GGUFFile> a, b;
    round_trip(hgtest::phi4_from_tiktoken(), 0, "tt", &a);
    round_trip(hgtest::phi4_from_json(), 0, "tj", &b);
    const auto ma = a->get_string_array(tokenizer_keys::kMerges), mb = b->get_string_array(tokenizer_keys::kMerges);
    ASSERT_TRUE(ma && mb);
    EXPECT_EQ(mb->size(), 100000u);
    EXPECT_EQ(ma->size(), mb->size());
    size_t differ = 0;
    for (size_t i = 0; i < std::min(ma->size(), mb->size()); ++i) differ += (*ma)[i] != (*mb)[i];
    EXPECT_EQ(differ, 0u);
}

TEST(GgufTokenizer, Errors) {
    // A file without tokenizer keys.
    hg::GGUFWriter w;
    w.set_string("general.architecture", "phi3");
    const auto path = hgtest::scratch_dir() / "notok.gguf";
    w.write(path);
    auto f = hg::GGUFFile::open(path);
    EXPECT_FALSE(has_tokenizer(*f));
    try {
        load_tokenizer(*f);
        ADD_FAILURE() << "no error";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("notok.gguf: no tokenizer"), std::string::npos) << e.what();
    }
    // A split pattern GGUF has no name for.
    Vocab v;
    v.source = "custom";
    v.kind = VocabKind::byte_bpe;
    v.tokens = {"a", "b", "ab"};
    v.types.assign(3, TokenType::normal);
    v.merges = {{0, 1}};
    v.split_regex = "\\w+";
    hg::GGUFWriter w2;
    try {
        write_tokenizer(w2, v);
        ADD_FAILURE() << "no error";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("custom: the split pattern"), std::string::npos) << e.what();
    }
    // Fewer rows than tokens.
    v.split_regex.clear();
    try {
        hg::GGUFWriter w3;
        TokenizerWriteOptions o;
        o.n_rows = 2;
        write_tokenizer(w3, v, o);
        ADD_FAILURE() << "no error";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("3 tokens do not fit 2 embedding rows"), std::string::npos) << e.what();
    }
}

}  // namespace
