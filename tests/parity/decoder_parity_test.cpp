// The decoder against transformers 4.41.2 (tests/reference/gen_decoder.py) on tiny seeded
// models of each family, loaded from GGUF files with llama.cpp names:
//   phi3      fused qkv / gate_up, MHA, head_dim 24
//   phi4      phi3 arch, GQA 4:1, rope theta 250000, no sliding window
//   qwen2     separate q/k/v with biases, GQA 2:1, eps 1e-6, theta 1e6, repetition_penalty 1.05
//   llama     GQA 2:1, head_dim 32, tied head, q/k rows in llama.cpp's interleaved order
//   phi3_swa  phi3 with sliding_window 5 (prompt 16 + 24 generated positions)
// For F32 and BF16 weights: logits at every prompt position (max |err| <= 1e-4 x the largest
// |logit|) and the greedy continuation (64 tokens; 24 for phi3_swa) identical to HF generate.
// The BF16 reference is torch in float32 on the same bf16-rounded weights.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/quants.h"
#include "formats/gguf.h"
#include "model/decoder_loader.h"
#include "decoder_fixture.h"
#include "runtime/generate.h"

using namespace hg;

namespace {

constexpr double kBound = 1e-4;  // max |logit error| / max |logit|, F32 compute (F32 KV cache)

const char* kCases[] = {"phi3", "phi4", "qwen2", "llama", "phi3_swa"};

GenerateOptions greedy_options(const dectest::Case& c, int64_t n) {
    GenerateOptions opt;
    opt.max_new_tokens = n;
    opt.stop_ids = dectest::ids(c.j["stop_ids"]);
    opt.sampling.repetition_penalty = (float)c.j["repetition_penalty"].get<double>();
    return opt;
}

Prompt token_prompt(const std::vector<int32_t>& ids) {
    Prompt p;
    p.add_tokens(ids);
    return p;
}

}  // namespace

class DecoderParity : public ::testing::TestWithParam<const char*> {};

TEST_P(DecoderParity, HyperParametersFromGGUF) {
    const auto c = dectest::load_case(GetParam());
    for (const char* w : {"f32", "bf16"}) {
        auto d = dectest::load_gguf(c.gguf(w));
        const auto& hp = d->hparams();
        const auto& h = c.j["hparams"];
        const std::string arch = c.j["arch"];
        EXPECT_STREQ(decoder_arch_name(hp.arch), arch.c_str());
        EXPECT_EQ(hp.n_vocab, h["n_vocab"].get<int64_t>());
        EXPECT_EQ(hp.n_embd, h["n_embd"].get<int64_t>());
        EXPECT_EQ(hp.n_ff, h["n_ff"].get<int64_t>());
        EXPECT_EQ(hp.n_layer, h["n_layer"].get<int64_t>());
        EXPECT_EQ(hp.n_head, h["n_head"].get<int64_t>());
        EXPECT_EQ(hp.n_head_kv, h["n_head_kv"].get<int64_t>());
        EXPECT_EQ(hp.head_dim, h["head_dim"].get<int64_t>());
        EXPECT_EQ(hp.rope_theta, h["rope_theta"].get<float>());
        EXPECT_EQ(hp.rms_eps, h["rms_eps"].get<float>());
        EXPECT_EQ(hp.sliding_window, h["sliding_window"].get<int64_t>());
        EXPECT_EQ(hp.rope_mode, arch == "llama" ? RopeMode::Interleaved : RopeMode::RotateHalf);
        EXPECT_EQ(d->weights().output.data == d->weights().token_embd.data, h["tied"].get<bool>());
        const DType want = std::string(w) == "f32" ? DType::F32 : DType::BF16;
        EXPECT_EQ(d->weights().layers[0].o.weight.type, want);
        EXPECT_EQ(d->weights().token_embd.type, want);
        EXPECT_EQ(d->stop_ids(), dectest::ids(c.j["stop_ids"]));  // healthgpt.stop_token_ids
    }
}

TEST_P(DecoderParity, LogitsAtEveryPositionF32AndBF16) {
    const auto c = dectest::load_case(GetParam());
    for (const char* w : {"f32", "bf16"}) {
        auto d = dectest::load_gguf(c.gguf(w));
        const auto ref = c.logits(w);
        ASSERT_EQ(ref.size(), c.prompt.size() * (size_t)d->hparams().n_vocab);
        for (const Kernels* k : {&kernels_ref(), &kernels()}) {
            const auto got = dectest::logits_all(*d, c.prompt, DType::F32, k);
            const auto e = hgtest::compare(got, ref);
            std::printf("%-9s %-4s %-7s %zu positions, logit scale %.2f: %s (max_abs/scale %.2e)\n", c.name.c_str(),
                        w, k->name, c.prompt.size(), c.scale(w), hgtest::to_string(e).c_str(), e.max_abs / c.scale(w));
            EXPECT_EQ(e.n_nonfinite, 0u);
            EXPECT_LE(e.max_abs, kBound * c.scale(w)) << c.name << " " << w << " " << k->name;
        }
    }
}

TEST_P(DecoderParity, GreedyContinuationIsIdentical) {
    const auto c = dectest::load_case(GetParam());
    for (const char* w : {"f32", "bf16"}) {
        auto d = dectest::load_gguf(c.gguf(w));
        const auto want = c.greedy(w);
        Generator gen(d, 256, DType::F32, &dectest::serial_pool());
        const GenerateResult r = gen.generate(token_prompt(c.prompt), greedy_options(c, (int64_t)want.size()));
        EXPECT_EQ(r.tokens, want) << c.name << " " << w;
        EXPECT_EQ(r.reason, StopReason::MaxTokens);
        EXPECT_EQ(r.n_decoded, (int64_t)want.size() - 1);
    }
}

TEST_P(DecoderParity, F16KVCacheError) {
    // F16 keys/values (the default cache type) round K and V to 11 significant bits: measured
    // here, bounded at 5e-3 x the logit scale, and the greedy continuation is reported.
    const auto c = dectest::load_case(GetParam());
    auto d = dectest::load_gguf(c.gguf("f32"));
    const auto got = dectest::logits_all(*d, c.prompt, DType::F16, &kernels_ref());
    const auto e = hgtest::compare(got, c.logits("f32"));
    const auto want = c.greedy("f32");
    Generator gen(d, 256, DType::F16, &dectest::serial_pool());
    const GenerateResult r = gen.generate(token_prompt(c.prompt), greedy_options(c, (int64_t)want.size()));
    size_t same = 0;
    while (same < r.tokens.size() && same < want.size() && r.tokens[same] == want[same]) ++same;
    std::printf("%-9s F16 KV: %s (max_abs/scale %.2e); greedy: first %zu of %zu tokens identical\n", c.name.c_str(),
                hgtest::to_string(e).c_str(), e.max_abs / c.scale("f32"), same, want.size());
    EXPECT_LE(e.max_abs, 5e-3 * c.scale("f32"));
}

TEST_P(DecoderParity, PrefixReuseGivesTheSameResultAsAFreshRun) {
    const auto c = dectest::load_case(GetParam());
    auto d = dectest::load_gguf(c.gguf("f32"));
    const auto cont = c.greedy("f32");
    const auto opt = greedy_options(c, 12);

    // A follow-up: the first answer's start plus new tokens, after the first request.
    std::vector<int32_t> follow = c.prompt;
    follow.insert(follow.end(), cont.begin(), cont.begin() + 10);
    for (int32_t t : {5, 9, 3}) follow.push_back(t);

    Generator fresh(d, 256, DType::F32, &dectest::serial_pool());
    fresh.set_kernels(&kernels_ref());
    const auto want = fresh.generate(token_prompt(follow), opt);
    EXPECT_EQ(want.n_prompt_reused, 0);

    auto store = std::make_shared<PrefixCache>(64 << 20);
    Generator g(d, 256, DType::F32, &dectest::serial_pool());
    g.set_kernels(&kernels_ref());
    g.set_prefix_cache(store);
    GenerateOptions first = greedy_options(c, 20);
    first.save_prefix = (int64_t)c.prompt.size();
    g.generate(token_prompt(c.prompt), first);
    const auto got = g.generate(token_prompt(follow), opt);
    EXPECT_EQ(got.n_prompt_reused, (int64_t)c.prompt.size() + 10);
    EXPECT_EQ(got.tokens, want.tokens);

    // The same prompt again: everything but the last position is reused.
    const auto again = g.generate(token_prompt(follow), opt);
    EXPECT_EQ(again.n_prompt_reused, (int64_t)follow.size() - 1);
    EXPECT_EQ(again.tokens, want.tokens);

    // Another sequence starting from the stored prefix snapshot (e.g. same system prompt + image).
    Generator other(d, 256, DType::F32, &dectest::serial_pool());
    other.set_kernels(&kernels_ref());
    other.set_prefix_cache(store);
    const auto from_snapshot = other.generate(token_prompt(follow), opt);
    EXPECT_EQ(from_snapshot.n_prompt_reused, (int64_t)c.prompt.size());
    EXPECT_EQ(from_snapshot.tokens, want.tokens);

    // Logits after reuse are bit-identical to a fresh prefill (scalar kernels are batch-invariant).
    const auto reused = g.prefill(token_prompt(follow), opt);
    const std::vector<float> a(reused.begin(), reused.end());
    Generator fresh2(d, 256, DType::F32, &dectest::serial_pool());
    fresh2.set_kernels(&kernels_ref());
    const auto s = fresh2.prefill(token_prompt(follow), opt);
    EXPECT_EQ(a, std::vector<float>(s.begin(), s.end()));
}

INSTANTIATE_TEST_SUITE_P(Families, DecoderParity, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param); });

// ---------------------------------------------------------------------------------------------

TEST(DecoderParityQwen2, EmbeddingInputPenalisesOnlyTheOutput) {
    // HF generate(inputs_embeds=embed(prompt)) -- the LLaVA/HealthGPT call -- applies Qwen's
    // repetition_penalty 1.05 to the generated ids only; with input_ids it includes the prompt.
    const auto c = dectest::load_case("qwen2");
    auto d = dectest::load_gguf(c.gguf("f32"));
    const auto want = dectest::ids(c.j["greedy_embeds_f32"]["ids"]);
    std::vector<float> emb(c.prompt.size() * d->hparams().n_embd);
    d->embed(c.prompt, emb.data());
    Prompt p;
    p.add_embeddings(emb.data(), (int64_t)c.prompt.size(), d->hparams().n_embd);
    Generator gen(d, 256, DType::F32, &dectest::serial_pool());
    GenerateOptions opt = greedy_options(c, (int64_t)want.size());
    opt.penalty_scope = PenaltyScope::OutputOnly;
    EXPECT_EQ(gen.generate(p, opt).tokens, want);
    // The scopes really differ on this case (else the test could not tell them apart).
    EXPECT_NE(want, c.greedy("f32"));
}

TEST(DecoderParityQwen2, MixedTokenAndEmbeddingSegments) {
    // Splicing embedding rows between token segments (the image slot) is the same as feeding
    // the ids those rows embed.
    const auto c = dectest::load_case("qwen2");
    auto d = dectest::load_gguf(c.gguf("f32"));
    const int64_t E = d->hparams().n_embd;
    std::vector<int32_t> mid(c.prompt.begin() + 5, c.prompt.begin() + 12);
    std::vector<float> rows(mid.size() * E);
    d->embed(mid, rows.data());
    Prompt mixed;
    mixed.add_tokens(std::span<const int32_t>(c.prompt).subspan(0, 5));
    mixed.add_embeddings(rows.data(), (int64_t)mid.size(), E);
    mixed.add_tokens(std::span<const int32_t>(c.prompt).subspan(12));
    EXPECT_EQ(mixed.size(), (int64_t)c.prompt.size());
    GenerateOptions opt = greedy_options(c, 16);
    opt.penalty_scope = PenaltyScope::OutputOnly;
    opt.n_batch = 4;  // chunks cross the segment borders
    Generator a(d, 256, DType::F32, &dectest::serial_pool()), b(d, 256, DType::F32, &dectest::serial_pool());
    a.set_kernels(&kernels_ref());
    b.set_kernels(&kernels_ref());
    const auto ra = a.generate(mixed, opt);
    const auto rb = b.generate(token_prompt(c.prompt), opt);
    EXPECT_EQ(ra.tokens, rb.tokens);
    EXPECT_EQ(ra.tokens.size(), 16u);
}

TEST(DecoderParityPhi3, SlidingWindowSemantics) {
    // The probe in gen_decoder.py: transformers 4.41.2's mask equals an explicit band of W + 1
    // keys (and differs from W or W + 2); our hparam keeps HF's W.
    const auto c = dectest::load_case("phi3_swa");
    EXPECT_EQ(c.j["sliding_window_visible_keys"].get<int>(), 6);
    for (const auto& probe : c.j["sliding_window_probe"])
        EXPECT_EQ(probe["max_abs_diff"].get<double>() == 0.0, probe["visible_keys"].get<int>() == 6);
    auto d = dectest::load_gguf(c.gguf("f32"));
    EXPECT_EQ(d->hparams().sliding_window, 5);
}

TEST(DecoderParityPhi3, StopIdsAndStopStrings) {
    const auto c = dectest::load_case("phi3");
    auto d = dectest::load_gguf(c.gguf("f32"));
    const auto cont = c.greedy("f32");
    Generator gen(d, 256, DType::F32, &dectest::serial_pool());
    GenerateOptions opt = greedy_options(c, 64);
    opt.stop_ids.push_back(cont[9]);
    int streamed = 0;
    opt.on_token = [&](int32_t) { return ++streamed, true; };
    auto r = gen.generate(token_prompt(c.prompt), opt);
    const auto first = std::find(cont.begin(), cont.end(), cont[9]) - cont.begin();
    EXPECT_EQ(r.reason, StopReason::StopToken);
    EXPECT_EQ(r.stop_token, cont[9]);
    EXPECT_EQ(r.tokens, std::vector<int32_t>(cont.begin(), cont.begin() + first));
    EXPECT_EQ(streamed, (int)first);

    // A stop string spanning two tokens' text, "<a><b>" for the 6th and 7th tokens: generation
    // stops at the first token whose text completes it.
    opt = greedy_options(c, 64);
    opt.token_text = [](int32_t id) { return "<" + std::to_string(id) + ">"; };
    const std::string stop = "<" + std::to_string(cont[5]) + "><" + std::to_string(cont[6]) + ">";
    opt.stop_strings = {stop};
    std::string text;
    size_t n_expected = 0;
    while (text.find(stop) == std::string::npos) text += "<" + std::to_string(cont[n_expected++]) + ">";
    r = gen.generate(token_prompt(c.prompt), opt);
    EXPECT_EQ(r.reason, StopReason::StopString);
    EXPECT_EQ(r.stop_string, stop);
    EXPECT_LE(n_expected, 7u);
    EXPECT_EQ(r.tokens, std::vector<int32_t>(cont.begin(), cont.begin() + (int64_t)n_expected));
    EXPECT_EQ(r.text, text);

    // The streaming callback can stop generation.
    opt = greedy_options(c, 64);
    opt.on_token = [n = 0](int32_t) mutable { return ++n < 3; };
    r = gen.generate(token_prompt(c.prompt), opt);
    EXPECT_EQ(r.reason, StopReason::Callback);
    EXPECT_EQ(r.tokens.size(), 3u);
}

TEST(DecoderParityPhi3, RopeInvFreqRoundedLikeModelTo) {
    // HealthGPT's model.to(FP16/BF16) rounds RoPE's inv_freq; rope_inv_freq_type reproduces it.
    // References: the float32 HF model with inv_freq as is / rounded to fp16 / to bf16, 128 ids.
    const auto c = dectest::load_case("phi3");
    auto base = dectest::load_gguf(c.gguf("f32"));
    const auto seq = dectest::ids(c.j["invfreq_ids"]);
    const auto exact = hgtest::read_f32(c.dir / "logits-invfreq-f32.bin");
    for (const auto& [tag, type] : {std::pair<const char*, DType>{"f32", DType::F32}, {"f16", DType::F16},
                                    {"bf16", DType::BF16}}) {
        DecoderHParams hp = base->hparams();
        hp.rope_inv_freq_type = type;
        Decoder d(hp, base->weights(), base, base->source());
        const auto ref = hgtest::read_f32(c.dir / (std::string("logits-invfreq-") + tag + ".bin"));
        double scale = 0;
        for (float v : ref) scale = std::max(scale, (double)std::fabs(v));
        const auto got = dectest::logits_all(d, seq, DType::F32, &kernels_ref());
        const auto e = hgtest::compare(got, ref);
        std::printf("phi3 inv_freq %-4s 128 positions: %s; reference vs exact-f32 reference: max_abs %.3g\n", tag,
                    hgtest::to_string(e).c_str(), hgtest::compare(ref, exact).max_abs);
        EXPECT_LE(e.max_abs, kBound * scale) << tag;
        if (type != DType::F32) {  // the rounding is visible: exact inv_freq would fail the bound
            EXPECT_GT(hgtest::compare(ref, exact).max_abs, 5 * kBound * scale) << tag;
        }
    }
}

TEST(DecoderParityPhi4, BlockQuantizedWeights) {
    // Q8_0 / Q4_0 files (gguf-py's quantizer); the reference is float32 on gguf-py's dequantized
    // weights. Two separate claims:
    //  1. the weights decode exactly: the same file widened to F32 at load meets the F32 bound;
    //  2. the quantized matmul (ggml's semantics: activations quantized to Q8_0 per 32-block for
    //     an integer dot product, in every kernel table) stays within 5e-2 x the logit scale;
    //     measured 1.6e-2 (Q8_0) and 2.0e-2 (Q4_0) on this model. Continuations are reported,
    //     not required: that error exceeds the smallest greedy margins (3e-3).
    const auto c = dectest::load_case("phi4");
    for (const char* wt : {"q8_0", "q4_0"}) {
        const DType t = std::string(wt) == "q8_0" ? DType::Q8_0 : DType::Q4_0;
        auto d = dectest::load_gguf(c.gguf(wt));
        EXPECT_EQ(d->weights().layers[0].qkv.weight.type, t);
        const auto ref = c.logits(wt);

        // 1. Every tensor widened to F32 (our dequantize_row), metadata from the file.
        std::shared_ptr<const GGUFFile> f = GGUFFile::open(c.gguf(wt));
        auto wide = std::make_shared<WeightMap>();
        for (const auto& info : f->tensors()) {
            const Tensor q = f->tensor(info);
            std::vector<float> v((size_t)q.numel());
            for (int64_t r = 0; r < q.rows(); ++r) dequantize_row(q.type, q.row(r), v.data() + r * q.cols(), q.cols());
            wide->add_converted(info.name, DType::F32, std::vector<int64_t>(q.shape.begin(), q.shape.begin() + q.n_dims),
                                v.data());
        }
        WeightSource src = gguf_source(*f);
        src.tensor = [wide](std::string_view n) { return wide->source("").tensor(n); };
        auto df = load_decoder(src, std::make_shared<std::pair<std::shared_ptr<const GGUFFile>,
                                                                std::shared_ptr<WeightMap>>>(f, wide));
        EXPECT_EQ(df->weights().layers[0].qkv.weight.type, DType::F32);
        const auto ew = hgtest::compare(dectest::logits_all(*df, c.prompt, DType::F32, &kernels_ref()), ref);
        std::printf("phi4      %-4s widened to F32   : %s (max_abs/scale %.2e)\n", wt, hgtest::to_string(ew).c_str(),
                    ew.max_abs / c.scale(wt));
        EXPECT_LE(ew.max_abs, kBound * c.scale(wt)) << wt;

        // 2. The quantized path, every kernel table.
        for (const Kernels* k : {&kernels_ref(), &kernels()}) {
            const auto got = dectest::logits_all(*d, c.prompt, DType::F32, k);
            const auto e = hgtest::compare(got, ref);
            Generator gen(d, 256, DType::F32, &dectest::serial_pool());
            gen.set_kernels(k);
            const auto want = c.greedy(wt);
            const auto toks = gen.generate(token_prompt(c.prompt), greedy_options(c, (int64_t)want.size())).tokens;
            size_t same = 0;
            while (same < toks.size() && same < want.size() && toks[same] == want[same]) ++same;
            std::printf("phi4      %-4s %-7s quantized: %s (max_abs/scale %.2e); greedy: first %zu of %zu identical\n",
                        wt, k->name, hgtest::to_string(e).c_str(), e.max_abs / c.scale(wt), same, want.size());
            EXPECT_LE(e.max_abs, 5e-2 * c.scale(wt)) << wt << " " << k->name;
        }
    }
}
