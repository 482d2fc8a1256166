// Tokenizer files are untrusted input: SentencePiece tokenizer.model (protobuf), tokenizer.json,
// tiktoken ranks, tokenizer_config.json and GGUF tokenizer metadata. The real files load with the
// facts their own tools report; every malformed variant is refused with an hg::Error that names the
// file; random damage never crashes (this suite also runs under ASan/UBSan).
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "../unit/text_test_util.h"

using namespace hg::text;

namespace {

std::span<const uint8_t> as_bytes(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

template <class F>
void expect_error(F&& f, const std::string& needle) {
    try {
        f();
        ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
    }
}

// --- a tiny protobuf writer for hand-made ModelProtos ---
void put_varint(std::string& out, uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>(v | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}
void put_bytes(std::string& out, uint32_t field, const std::string& b) {
    put_varint(out, (uint64_t(field) << 3) | 2);
    put_varint(out, b.size());
    out += b;
}
void put_int(std::string& out, uint32_t field, uint64_t v) {
    put_varint(out, uint64_t(field) << 3);
    put_varint(out, v);
}
std::string piece(const std::string& text, float score, int type = 1) {
    std::string p;
    put_bytes(p, 1, text);
    put_varint(p, (2u << 3) | 5);
    p.append(reinterpret_cast<const char*>(&score), 4);
    if (type != 1) put_int(p, 3, static_cast<uint64_t>(type));
    return p;
}
std::string tiny_model(int model_type = 2, const std::string& normalizer_name = "identity") {
    std::string m;
    put_bytes(m, 1, piece("<unk>", 0, 2));
    put_bytes(m, 1, piece("<s>", 0, 3));
    put_bytes(m, 1, piece("</s>", 0, 3));
    put_bytes(m, 1, piece("\xE2\x96\x81", -1));
    put_bytes(m, 1, piece("a", -2));
    put_bytes(m, 1, piece("b", -3));
    put_bytes(m, 1, piece("\xE2\x96\x81" "a", -0.5f));
    put_bytes(m, 1, piece("ab", -0.25f));
    std::string trainer;
    put_int(trainer, 3, static_cast<uint64_t>(model_type));
    put_bytes(m, 2, trainer);
    std::string norm;
    put_bytes(norm, 1, normalizer_name);
    put_int(norm, 3, 1);
    put_int(norm, 4, 0);
    put_bytes(m, 3, norm);
    return m;
}

TEST(TokenizerFile, SentencePieceModelLoads) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const std::string bytes = hgtest::read_text(hgtest::tok_data("phi3/tokenizer.model"));
    const Vocab v = load_sentencepiece_model(as_bytes(bytes), "tokenizer.model");
    // what sentencepiece 0.2.0 reports for this file
    EXPECT_EQ(v.size(), 32000);
    EXPECT_EQ(v.kind, VocabKind::spm_bpe);
    EXPECT_TRUE(v.byte_fallback);
    EXPECT_TRUE(v.add_dummy_prefix);
    EXPECT_FALSE(v.remove_extra_whitespaces);
    EXPECT_TRUE(v.escape_whitespaces);
    EXPECT_EQ(v.unk_id, 0);
    EXPECT_EQ(v.bos_id, 1);
    EXPECT_EQ(v.eos_id, 2);
    EXPECT_EQ(v.tokens[3], "<0x00>");
    EXPECT_EQ(v.types[3], TokenType::byte);
    EXPECT_EQ(v.tokens[300], "et");
    EXPECT_FLOAT_EQ(v.scores[300], -41.0f);
    EXPECT_EQ(v.tokens[29871], "\xE2\x96\x81");
}

TEST(TokenizerFile, HandMadeModelsAndTheirErrors) {
    const Tokenizer tok(load_sentencepiece_model(as_bytes(tiny_model()), "tiny.model"));
    // "aab": ▁a (score -0.5) beats ab (-0.25)? No: higher score first, so "ab" merges first.
    EXPECT_EQ(tok.encode("ab", {Semantics::slow}), (std::vector<int32_t>{1, 3, 7}));  // <s> ▁ ab
    EXPECT_EQ(tok.encode("a", {Semantics::slow}), (std::vector<int32_t>{1, 6}));      // <s> ▁a
    expect_error([] { load_sentencepiece_model(as_bytes(tiny_model(1)), "uni.model"); }, "uni.model: SentencePiece model type 1");
    expect_error([] { load_sentencepiece_model(as_bytes(tiny_model(2, "nmt_nfkc")), "nfkc.model"); }, "normalizer 'nmt_nfkc'");
    expect_error([] { load_sentencepiece_model(as_bytes(std::string()), "empty.model"); }, "empty.model: no pieces");
    std::string dup = tiny_model();
    put_bytes(dup, 1, piece("a", 0));
    expect_error([&] { load_sentencepiece_model(as_bytes(dup), "dup.model"); }, "appears twice");
    std::string bad_utf8;
    put_bytes(bad_utf8, 1, piece("\xFF", 0));
    expect_error([&] { load_sentencepiece_model(as_bytes(bad_utf8), "u.model"); }, "not valid UTF-8");
    std::string bad_type;
    put_bytes(bad_type, 1, piece("x", 0, 9));
    expect_error([&] { load_sentencepiece_model(as_bytes(bad_type), "t.model"); }, "unknown type 9");
    std::string bad_byte = tiny_model();
    put_bytes(bad_byte, 1, piece("<0xZZ>x", 0, 6));
    expect_error([&] { load_sentencepiece_model(as_bytes(bad_byte), "b.model"); }, "not <0xNN>");
    expect_error([] { load_sentencepiece_model(as_bytes(std::string("\x0a\xff\xff\xff\xff\x0f", 6)), "len.model"); },
                 "runs past the end");
    expect_error([] { load_sentencepiece_model(as_bytes(std::string(12, '\xff')), "varint.model"); }, "varint");
    expect_error([] { load_sentencepiece_model(as_bytes(std::string("\x0b\x00", 2)), "group.model"); }, "wire type 3");
}

TEST(TokenizerFile, TruncatedAndDamagedModelsNeverCrash) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const std::string bytes = hgtest::read_text(hgtest::tok_data("phi3/tokenizer.model"));
    std::mt19937 rng(1234);
    int loaded = 0, refused = 0;
    for (int it = 0; it < 300; ++it) {
        std::string b = bytes;
        if (it % 3 == 0) {
            b.resize(rng() % b.size());
        } else {
            for (int k = 0; k < 1 + it % 7; ++k) b[rng() % b.size()] = static_cast<char>(rng());
        }
        try {
            const Tokenizer tok(load_sentencepiece_model(as_bytes(b), "damaged.model"));
            tok.encode("Hello world, 你好 🫁", {Semantics::slow});
            tok.encode("Hello world, 你好 🫁", {Semantics::fast});
            ++loaded;
        } catch (const hg::Error& e) {
            EXPECT_NE(std::string(e.what()).find("damaged.model"), std::string::npos) << e.what();
            ++refused;
        }
    }
    std::printf("    damaged tokenizer.model: %d loaded, %d refused, 0 crashes\n", loaded, refused);
    EXPECT_GT(refused, 0);
}

TEST(TokenizerFile, TokenizerJsonLoadsAndErrors) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    const Vocab q = load_tokenizer_json(hgtest::read_text(hgtest::tok_data("qwen2/tokenizer.json")), "qwen2.json");
    EXPECT_EQ(q.kind, VocabKind::byte_bpe);
    EXPECT_TRUE(q.nfc);
    EXPECT_EQ(q.model_size, 151643);
    EXPECT_EQ(q.size(), 151669);
    EXPECT_EQ(q.merges.size(), 151387u);
    EXPECT_EQ(q.added.size(), 26u);
    const Vocab c = load_tokenizer_json(hgtest::read_text(hgtest::tok_data("cl100k/tokenizer.json")), "cl100k.json");
    EXPECT_EQ(c.split_mode, SplitMode::keep_matches);
    EXPECT_EQ(c.merges.size(), 100000u);
    const Vocab p = load_tokenizer_json(hgtest::gunzip_file(hgtest::tok_fixture("phi3/tokenizer.json.gz")), "phi3.json");
    EXPECT_EQ(p.kind, VocabKind::spm_bpe);
    EXPECT_EQ(p.space_mode, SpaceMode::prepend_each);
    EXPECT_TRUE(p.byte_fallback);
    EXPECT_EQ(p.model_size, 32000);
    EXPECT_EQ(p.size(), 32011);

    auto json_with = [](const std::string& model, const std::string& rest = "") {
        return std::string(R"({"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},)") +
               rest + R"("model":)" + model + "}";
    };
    std::string vocab = "{";
    for (int b = 0; b < 256; ++b) vocab += (b ? "," : "") + nlohmann::json(bytes_to_gpt2(std::string(1, char(b)))).dump() + ":" + std::to_string(b);
    const std::string ok_vocab = vocab + R"(,"ab":256})";
    EXPECT_NO_THROW(load_tokenizer_json(json_with(R"({"type":"BPE","vocab":)" + ok_vocab + R"(,"merges":["a b"]})"), "ok.json"));
    expect_error([] { load_tokenizer_json("{not json", "bad.json"); }, "bad.json: not valid JSON");
    expect_error([] { load_tokenizer_json("[]", "arr.json"); }, "not a JSON object");
    expect_error([] { load_tokenizer_json(R"({"x":1})", "nomodel.json"); }, "no 'model' object");
    expect_error([&] { load_tokenizer_json(json_with(R"({"type":"WordPiece","vocab":{}})"), "wp.json"); }, "model type 'WordPiece'");
    expect_error([&] { load_tokenizer_json(json_with(R"({"type":"BPE","dropout":0.1,"vocab":)" + ok_vocab + "}"), "d.json"); }, "dropout");
    expect_error([&] { load_tokenizer_json(json_with(R"({"type":"BPE","vocab":)" + ok_vocab + R"(,"merges":["a c"]})"), "m.json"); },
                 "not in the vocabulary");
    expect_error([&] { load_tokenizer_json(json_with(R"({"type":"BPE","vocab":)" + ok_vocab + R"(,"merges":["ab"]})"), "m2.json"); },
                 "is not 'a b'");
    expect_error([&] { load_tokenizer_json(json_with(R"({"type":"BPE","vocab":{"a":0,"b":0}})"), "dupid.json"); }, "used twice");
    expect_error([&] { load_tokenizer_json(json_with(R"({"type":"BPE","vocab":{"a":-4}})"), "neg.json"); }, "out of range");
    expect_error([&] { load_tokenizer_json(json_with(R"({"type":"BPE","vocab":{"a":0}})"), "byte.json"); }, "has no token");
    expect_error([&] {
        load_tokenizer_json(R"({"normalizer":{"type":"NFKC"},"pre_tokenizer":null,"model":{"type":"BPE","vocab":{"a":0}}})", "n.json");
    }, "normalizer");
    expect_error([&] {
        load_tokenizer_json(json_with(R"({"type":"BPE","vocab":)" + ok_vocab + "}", R"("added_tokens":[{"id":3,"content":""}],)"), "added.json");
    }, "empty or invalid content");
}

TEST(TokenizerFile, TruncatedJsonIsRefused) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    const std::string text = hgtest::gunzip_file(hgtest::tok_fixture("phi3/tokenizer.json.gz"));
    std::mt19937 rng(99);
    for (int it = 0; it < 12; ++it) {
        const size_t n = rng() % text.size();
        expect_error([&] { load_tokenizer_json(std::string_view(text).substr(0, n), "cut.json"); }, "cut.json");
    }
}

TEST(TokenizerFile, TiktokenLoadsAndErrors) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/cl100k/cl100k_base.tiktoken");
    const Vocab v = load_tiktoken(hgtest::read_text(hgtest::tok_data("cl100k/cl100k_base.tiktoken")), "cl100k.tiktoken");
    EXPECT_EQ(v.size(), 100256);
    EXPECT_EQ(v.tokens[0], "!");
    EXPECT_TRUE(v.merge_by_rank);
    std::string all;
    for (int b = 0; b < 256; ++b) {
        std::string s(1, static_cast<char>(b));
        static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        std::string enc;
        enc += k[(b >> 2) & 63];
        enc += k[(b << 4) & 63];
        enc += "==";
        all += enc + " " + std::to_string(b) + "\n";
    }
    EXPECT_NO_THROW(load_tiktoken(all, "bytes.tiktoken"));
    expect_error([&] { load_tiktoken(all + "!!!! 256\n", "b64.tiktoken"); }, "invalid base64");
    expect_error([&] { load_tiktoken(all + "YWI=\n", "norank.tiktoken"); }, "is not '<base64> <rank>'");
    expect_error([&] { load_tiktoken(all + "YWI= x\n", "rank.tiktoken"); }, "invalid rank");
    expect_error([&] { load_tiktoken(all + "QQ== 300\n", "dup.tiktoken"); }, "listed twice");
    expect_error([&] { load_tiktoken(all + "YWI= 255\n", "rk.tiktoken"); }, "used twice");
    expect_error([&] { load_tiktoken("YWI= 0\n", "few.tiktoken"); }, "has no token");
    expect_error([&] { load_tiktoken("", "none.tiktoken"); }, "no tokens");
    expect_error([&] { load_tiktoken(all + "YWI= 99999999\n", "sparse.tiktoken"); }, "sparse");
}

TEST(TokenizerFile, TokenizerConfigErrors) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const std::string bytes = hgtest::read_text(hgtest::tok_data("phi3/tokenizer.model"));
    auto base = [&] { return load_sentencepiece_model(as_bytes(bytes), "tokenizer.model"); };
    expect_error([&] { auto v = base(); apply_tokenizer_config(v, "{", "c.json"); }, "c.json: not valid JSON");
    expect_error([&] { auto v = base(); apply_tokenizer_config(v, R"({"added_tokens_decoder":{"x":{"content":"a"}}})", "k.json"); },
                 "is not an id");
    expect_error([&] { auto v = base(); apply_tokenizer_config(v, R"({"added_tokens_decoder":{"5":{"content":"zzz"}}})", "m.json"); },
                 "differs from the vocabulary entry");
    expect_error([&] { auto v = base(); apply_tokenizer_config(v, R"({"added_tokens_decoder":{"40000":{}}})", "n.json"); }, "has no content");
    expect_error([&] { auto v = base(); apply_tokenizer_config(v, R"({"bos_token":"<nope>"})", "b.json"); }, "bos_token '<nope>' is not a token");
    expect_error([&] { auto v = base(); apply_tokenizer_config(v, R"({"additional_special_tokens":"x"})", "a.json"); }, "not a list");
    auto v = base();
    apply_tokenizer_config(v, hgtest::read_text(hgtest::tok_fixture("phi3/tokenizer_config.json")), "phi3 config");
    EXPECT_EQ(v.size(), 32011);
    EXPECT_FALSE(v.add_bos);
    EXPECT_FALSE(v.legacy);
    EXPECT_EQ(v.eos_id, 32000);
    ASSERT_NE(v.find_added(32007), nullptr);
    EXPECT_TRUE(v.find_added(32007)->rstrip);
    EXPECT_FALSE(v.find_added(32000)->rstrip);
    expect_error([&] { apply_tokenizer_config(v, R"({"added_tokens_decoder":{"32007":{"content":"<|foo|>"}}})", "re.json"); },
                 "re.json: added token 32007 is '<|foo|>' here but '<|end|>'");
}

TEST(TokenizerFile, LoadVocabByPath) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    const Vocab q = load_vocab(hgtest::shared_data() / "tokenizers" / "qwen2");  // folder: tokenizer.json + config
    EXPECT_EQ(q.slow_class, "Qwen2Tokenizer");
    EXPECT_EQ(q.eos_id, 151645);
    EXPECT_EQ(q.additional_special.size(), 13u);
    const Vocab t = load_vocab(hgtest::tok_data("cl100k/cl100k_base.tiktoken"), hgtest::tok_fixture("phi4/tokenizer_config.json"));
    EXPECT_EQ(t.size(), 100352);
    EXPECT_EQ(t.slow_class, "GPT2Tokenizer");
    expect_error([] { load_vocab("/nonexistent/tokenizer.json"); }, "no such file");
    expect_error([] { load_vocab(hgtest::tok_fixture("phi3/tokenizer_config.json")); }, "tokenizer configuration");
    expect_error([] { load_vocab(hgtest::tok_fixture("summary.json").parent_path().parent_path()); }, "no tokenizer.json");
}

// GGUF tokenizer metadata as gguf-py reads it from llama.cpp's Phi-3 vocabulary file.
TEST(TokenizerFile, GgufArraysPhi3) {
    const auto path = hgtest::tok_fixture("phi3/ggml-vocab-phi-3.arrays.json.gz");
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/ggml-vocab-phi-3.gguf.inp");
    const auto j = nlohmann::json::parse(hgtest::gunzip_file(path));
    GGUFTokenizerArrays g;
    g.source = "ggml-vocab-phi-3.gguf";
    g.model = j["model"];
    g.pre = j["pre"];
    g.tokens = j["tokens"].get<std::vector<std::string>>();
    g.scores = j["scores"].get<std::vector<float>>();
    g.token_type = j["token_type"].get<std::vector<int32_t>>();
    g.bos_id = j["bos_id"].get<int64_t>();
    g.eos_id = j["eos_id"].get<int64_t>();
    g.unk_id = j["unk_id"].get<int64_t>();
    g.pad_id = j["pad_id"].get<int64_t>();
    g.add_bos = j["add_bos"].get<bool>();
    g.add_eos = j["add_eos"].get<bool>();
    const Vocab v = vocab_from_gguf(g);
    EXPECT_EQ(v.size(), 32064);
    EXPECT_EQ(v.model_size, 32000);
    const Tokenizer tok(v);
    // llama.cpp's vectors (no BOS) with the fast semantics llama.cpp reproduces
    const auto cases = hgtest::read_llamacpp_vocab_vectors(hgtest::tok_data("phi3/ggml-vocab-phi-3.gguf.inp"),
                                                           hgtest::tok_data("phi3/ggml-vocab-phi-3.gguf.out"));
    const int n = static_cast<int>(cases.size());
    int bad = 0;
    for (const auto& c : cases) bad += tok.encode(c.text, {Semantics::fast, false}) != c.ids;
    EXPECT_EQ(n, 46);
    std::printf("    GGUF Phi-3 vocabulary: %d llama.cpp vectors, %d mismatches\n", n, bad);
    EXPECT_EQ(bad, 0);
    // With Phi-3's tokenizer_config stored beside the arrays, the slow (HealthGPT) path matches too.
    g.hf_tokenizer_config = hgtest::read_text(hgtest::tok_fixture("phi3/tokenizer_config.json"));
    const Tokenizer slow(vocab_from_gguf(g));
    int bad_slow = 0, rows = 0;
    for (const auto& r : hgtest::read_jsonl_gz(hgtest::tok_fixture("cases_phi3.jsonl.gz"))) {
        bad_slow += slow.encode(r["text"].get<std::string>(), {Semantics::slow}) != hgtest::ids_of(r["slow"]);
        ++rows;
    }
    std::printf("    GGUF Phi-3 + tokenizer_config: %d strings, %d slow-path mismatches\n", rows, bad_slow);
    EXPECT_EQ(bad_slow, 0);
}

TEST(TokenizerFile, GgufArraysErrors) {
    GGUFTokenizerArrays g;
    g.source = "m.gguf";
    expect_error([&] { vocab_from_gguf(g); }, "m.gguf: tokenizer.ggml.tokens has 0 entries");
    g.tokens = {"a", "b"};
    g.model = "bert";
    expect_error([&] { vocab_from_gguf(g); }, "tokenizer.ggml.model 'bert'");
    g.model = "llama";
    expect_error([&] { vocab_from_gguf(g); }, "0 scores for 2 tokens");
    g.scores = {0, 0};
    g.token_type = {1};
    expect_error([&] { vocab_from_gguf(g); }, "1 token types for 2 tokens");
    g.token_type = {1, 7};
    expect_error([&] { vocab_from_gguf(g); }, "has type 7");
    g.model = "gpt2";
    g.token_type = {1, 1};
    g.pre = "mystery";
    expect_error([&] { vocab_from_gguf(g); }, "tokenizer.ggml.pre 'mystery'");
    g.pre = "default";
    g.merges = {"a"};
    expect_error([&] { vocab_from_gguf(g); }, "merge 0 is not 'a b'");
    g.merges = {"a b"};
    expect_error([&] { vocab_from_gguf(g); }, "outside the vocabulary");
}

}  // namespace
