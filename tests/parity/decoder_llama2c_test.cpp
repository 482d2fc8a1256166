// The real llama2.c model stories260K (shared data) against transformers' LlamaForCausalLM
// loaded with the same weights (tests/reference/gen_decoder.py): logits at every position and
// the 64-token greedy continuation from BOS. Also the llama2.c reader's handling of bad files.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "decoder_fixture.h"
#include "model/decoder_loader.h"
#include "runtime/generate.h"

using namespace hg;

namespace {

std::string stories_path() {
    return (hgtest::shared_data() / "models/stories260K/stories260K.bin").string();
}

}  // namespace

TEST(DecoderLlama2c, Stories260KHyperParameters) {
    HG_SKIP_WITHOUT_SHARED_DATA("models/stories260K/stories260K.bin");
    auto d = load_llama2c(stories_path());
    const auto& hp = d->hparams();
    EXPECT_EQ(hp.arch, DecoderArch::Llama);
    EXPECT_EQ(hp.rope_mode, RopeMode::Interleaved);
    EXPECT_EQ(hp.n_embd, 64);
    EXPECT_EQ(hp.n_ff, 172);
    EXPECT_EQ(hp.n_layer, 5);
    EXPECT_EQ(hp.n_head, 8);
    EXPECT_EQ(hp.n_head_kv, 4);
    EXPECT_EQ(hp.head_dim, 8);
    EXPECT_EQ(hp.n_vocab, 512);
    EXPECT_EQ(hp.n_ctx_train, 512);
    EXPECT_EQ(d->weights().output.data, d->weights().token_embd.data);  // shared classifier
    EXPECT_TRUE(d->stop_ids().empty());  // the format states none (run.c stops on BOS)
}

TEST(DecoderLlama2c, Stories260KLogitsMatchTransformers) {
    HG_SKIP_WITHOUT_SHARED_DATA("models/stories260K/stories260K.bin");
    auto d = load_llama2c(stories_path());
    const auto j = dectest::read_json(hgtest::fixture("decoder/stories260K/case.json"));
    const auto seq = dectest::ids(j["eval_ids"]);
    const auto ref = hgtest::read_f32(hgtest::fixture("decoder/stories260K/logits.bin"));
    const double scale = j["logits_scale"].get<double>();
    ASSERT_EQ(ref.size(), seq.size() * 512);
    for (const Kernels* k : {&kernels_ref(), &kernels()}) {
        const auto got = dectest::logits_all(*d, seq, DType::F32, k);
        const auto e = hgtest::compare(got, ref);
        std::printf("stories260K %s: %zu positions, logit scale %.2f, %s\n", k->name, seq.size(), scale,
                    hgtest::to_string(e).c_str());
        EXPECT_EQ(e.n_nonfinite, 0u);
        EXPECT_LE(e.max_abs, 1e-4 * scale) << k->name;
    }
}

TEST(DecoderLlama2c, Stories260KGreedyContinuationIsIdentical) {
    HG_SKIP_WITHOUT_SHARED_DATA("models/stories260K/stories260K.bin");
    auto d = load_llama2c(stories_path());
    const auto j = dectest::read_json(hgtest::fixture("decoder/stories260K/case.json"));
    const auto want = dectest::ids(j["greedy_from_bos"]["ids"]);
    Generator gen(d, 128, DType::F32, &dectest::serial_pool());
    Prompt p;
    const int32_t bos = 1;
    p.add_tokens(std::span<const int32_t>(&bos, 1));
    GenerateOptions opt;
    opt.max_new_tokens = (int64_t)want.size();
    const GenerateResult r = gen.generate(p, opt);
    EXPECT_EQ(r.tokens, want);
    EXPECT_EQ(r.reason, StopReason::MaxTokens);
}

// ---------------------------------------------------------------------------------------------
// Bad files: the reader names the file and the problem.

namespace {

// A tiny valid checkpoint: dim 8, hidden 12, 1 layer, 2 heads, 1 KV head, vocab 5, seq 4.
std::vector<uint8_t> tiny_llama2c(int32_t vocab_field = 5) {
    const int32_t h[7] = {8, 12, 1, 2, 1, vocab_field, 4};
    const int64_t dim = 8, hidden = 12, kvd = 4, vocab = 5, hd = 4, seq = 4;
    const int64_t n = vocab * dim + dim + dim * dim + 2 * kvd * dim + dim * dim + dim + 3 * hidden * dim + dim +
                      seq * hd + (vocab_field < 0 ? vocab * dim : 0);
    std::vector<uint8_t> b(28 + n * 4);
    std::memcpy(b.data(), h, 28);
    for (int64_t i = 0; i < n; ++i) {
        const float v = 0.01f * (float)((i * 37) % 101 - 50);
        std::memcpy(b.data() + 28 + i * 4, &v, 4);
    }
    return b;
}

std::string write_scratch(const std::string& name, const std::vector<uint8_t>& bytes) {
    const auto p = hgtest::scratch_dir() / name;
    hgtest::write_file(p, bytes);
    return p.string();
}

void expect_error(const std::string& path, const std::string& needle) {
    try {
        load_llama2c(path);
        ADD_FAILURE() << path << ": no error";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(path), std::string::npos) << msg;
        EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
}

}  // namespace

TEST(DecoderLlama2c, TinyFileLoadsSharedAndSeparateClassifier) {
    auto shared = load_llama2c(write_scratch("shared.bin", tiny_llama2c(5)));
    EXPECT_EQ(shared->weights().output.data, shared->weights().token_embd.data);
    auto sep = load_llama2c(write_scratch("separate.bin", tiny_llama2c(-5)));
    EXPECT_NE(sep->weights().output.data, sep->weights().token_embd.data);
    EXPECT_EQ(sep->hparams().n_vocab, 5);
}

TEST(DecoderLlama2c, BadFilesAreRefusedWithTheReason) {
    expect_error(write_scratch("empty.bin", {}), "too small");
    auto b = tiny_llama2c();
    expect_error(write_scratch("truncated.bin", std::vector<uint8_t>(b.begin(), b.end() - 4)), "header implies");
    b = tiny_llama2c();
    b.push_back(0);
    expect_error(write_scratch("long.bin", b), "header implies");
    b = tiny_llama2c();
    const int32_t bad_heads = 3;  // 8 % 3 != 0
    std::memcpy(b.data() + 12, &bad_heads, 4);
    expect_error(write_scratch("heads.bin", b), "n_heads");
    b = tiny_llama2c();
    const int32_t huge = 0x7fffffff;
    std::memcpy(b.data(), &huge, 4);
    expect_error(write_scratch("dim.bin", b), "dim");
    expect_error((hgtest::scratch_dir() / "missing.bin").string(), "cannot open");
}
