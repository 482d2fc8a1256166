// Constrained VQ-token decoding (runtime/vq_decode.h) against its specification
// (healthgpt-reference.md §5.3): after <start_index>, exactly n <idx_*> tokens, each the argmax
// of the scores over the <idx_*> columns (ties to the lowest id, as torch.argmax), then
// <end_index>. A scripted score source stands in for the model, so the expected ids are known
// independently of the code under test; the last test runs it on the demo model through a Session.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "runtime/demo_model.h"
#include "runtime/pipeline.h"
#include "runtime/vq_decode.h"
#include "test_util.h"

using namespace hg;

namespace {

// <start_index> = 10, <idx_0..15> = 11..26, <end_index> = 27, <pixel_newline> = 28; 30 ids.
text::VqVocabulary small_vq() {
    text::VqVocabulary vq;
    vq.start_index = 10;
    vq.idx0 = 11;
    vq.n_idx = 16;
    vq.end_index = 27;
    vq.pixel_newline = 28;
    return vq;
}
constexpr int64_t kV = 30;

// Scores for step s (s = 0 after the prompt): pseudo-random, and on every third step a non-index
// id (text token 3, or <end_index>) scores highest overall.
std::vector<float> script(int64_t s) {
    std::vector<float> v(kV);
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(s + 1);
    for (int64_t j = 0; j < kV; ++j) {
        x ^= x >> 31, x *= 0xBF58476D1CE4E5B9ull, x ^= x >> 29;
        v[(size_t)j] = (float)((x >> 11) % 10000) / 1000.0f;
    }
    if (s % 3 == 0) v[s % 2 ? 27 : 3] = 100.0f;
    return v;
}

struct Scripted {
    int64_t s = 0;
    std::vector<float> cur = script(0);
    std::vector<int32_t> fed;
    std::span<float> step(int32_t id) {
        fed.push_back(id);
        cur = script(++s);
        return cur;
    }
};

int32_t idx_argmax(const std::vector<float>& v, const text::VqVocabulary& vq) {
    int32_t best = vq.idx0;
    for (int32_t j = vq.idx0; j < vq.idx0 + vq.n_idx; ++j)
        if (v[(size_t)j] > v[(size_t)best]) best = j;
    return best;
}

}  // namespace

TEST(VqDecode, ExactlyNIndicesEachTheArgmaxOverIdxColumns) {
    const text::VqVocabulary vq = small_vq();
    for (int64_t n : {1, 64, 1024}) {
        Scripted src;
        Sampler greedy(SamplingParams{}, kV);
        std::vector<int64_t> progress;
        VqDecodeOptions o;
        o.n_tokens = n;
        o.on_progress = [&](int64_t done, int64_t total) {
            EXPECT_EQ(total, n);
            progress.push_back(done);
            return true;
        };
        const VqDecodeResult r = decode_vq(src.cur, vq.start_index, [&](int32_t id) { return src.step(id); }, vq, greedy, o);
        ASSERT_EQ((int64_t)r.indices.size(), n);
        ASSERT_EQ((int64_t)r.tokens.size(), n + 1);
        EXPECT_EQ(r.tokens.back(), vq.end_index);
        EXPECT_FALSE(r.forced_start);
        EXPECT_FALSE(r.cancelled);
        EXPECT_EQ(r.n_forward, n - 1);
        int64_t overridden = 0, wrong = 0;
        for (int64_t s = 0; s < n; ++s) {
            const std::vector<float> v = script(s);
            const int32_t want = idx_argmax(v, vq);
            wrong += r.tokens[(size_t)s] != want || r.indices[(size_t)s] != want - vq.idx0;
            int64_t best = 0;
            for (int64_t j = 1; j < kV; ++j)
                if (v[(size_t)j] > v[(size_t)best]) best = j;
            overridden += !vq.is_index((int32_t)best);
        }
        EXPECT_EQ(wrong, 0);
        EXPECT_EQ(r.n_overridden, overridden);
        EXPECT_GT(overridden, 0);
        // the model was fed exactly the chosen ids, in order, all but the last
        EXPECT_EQ(src.fed, std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + (n - 1)));
        ASSERT_EQ((int64_t)progress.size(), n);
        for (int64_t i = 0; i < n; ++i) EXPECT_EQ(progress[(size_t)i], i + 1);
    }
}

TEST(VqDecode, ForcesStartIndexWhenThePromptLacksIt) {
    const text::VqVocabulary vq = small_vq();
    Scripted src;
    Sampler greedy(SamplingParams{}, kV);
    VqDecodeOptions o;
    o.n_tokens = 5;
    const VqDecodeResult r = decode_vq(src.cur, 3, [&](int32_t id) { return src.step(id); }, vq, greedy, o);
    EXPECT_TRUE(r.forced_start);
    ASSERT_EQ(r.tokens.size(), 7u);
    EXPECT_EQ(r.tokens.front(), vq.start_index);
    EXPECT_EQ(src.fed.front(), vq.start_index);
    EXPECT_EQ(r.n_forward, 5);
    for (int64_t s = 0; s < 5; ++s) EXPECT_EQ(r.tokens[(size_t)s + 1], idx_argmax(script(s + 1), vq));
}

TEST(VqDecode, TiesGoToTheLowestIdAndProgressCanCancel) {
    const text::VqVocabulary vq = small_vq();
    std::vector<float> flat(kV, 1.0f);
    flat[2] = 5.0f;  // a text token wins unconstrained
    Sampler greedy(SamplingParams{}, kV);
    VqDecodeOptions o;
    o.n_tokens = 32;
    o.on_progress = [](int64_t done, int64_t) { return done < 10; };
    std::vector<float> cur = flat;
    const VqDecodeResult r = decode_vq(cur, vq.start_index, [&](int32_t) {
        cur = flat;
        return std::span<float>(cur);
    }, vq, greedy, o);
    EXPECT_TRUE(r.cancelled);
    ASSERT_EQ(r.indices.size(), 10u);
    for (int32_t k : r.indices) EXPECT_EQ(k, 0);
    EXPECT_EQ(r.tokens.back(), vq.idx0) << "no <end_index> after a cancel";
    EXPECT_EQ(r.n_overridden, 10);
}

TEST(VqDecode, SamplingStaysInsideTheIdxColumns) {
    const text::VqVocabulary vq = small_vq();
    SamplingParams sp;
    sp.do_sample = true;
    sp.temperature = 2.0f;
    sp.seed = 7;
    Sampler sampler(sp, kV);
    Scripted src;
    VqDecodeOptions o;
    o.n_tokens = 500;
    const VqDecodeResult r = decode_vq(src.cur, vq.start_index, [&](int32_t id) { return src.step(id); }, vq, sampler, o);
    ASSERT_EQ(r.indices.size(), 500u);
    std::vector<int> seen(16, 0);
    for (int32_t k : r.indices) {
        ASSERT_TRUE(k >= 0 && k < 16) << k;
        seen[(size_t)k] = 1;
    }
    int distinct = 0;
    for (int s : seen) distinct += s;
    EXPECT_GT(distinct, 8) << "sampling, not argmax";
}

TEST(VqDecode, Refusals) {
    Sampler greedy(SamplingParams{}, kV);
    std::vector<float> v(kV, 0.0f);
    auto step = [&](int32_t) { return std::span<float>(v); };
    EXPECT_THROW(decode_vq(v, 0, step, text::VqVocabulary{}, greedy), hg::Error);  // no VQ vocabulary
    std::vector<float> short_scores(20, 0.0f);
    EXPECT_THROW(decode_vq(short_scores, 10, step, small_vq(), greedy), hg::Error);  // scores end before <idx_15>
    std::vector<float> nan(kV, std::numeric_limits<float>::quiet_NaN());
    EXPECT_THROW(decode_vq(nan, 10, step, small_vq(), greedy), hg::Error);
    VqDecodeOptions o;
    o.n_tokens = 0;
    EXPECT_THROW(decode_vq(v, 10, step, small_vq(), greedy, o), hg::Error);
}

// Through a Session on the demo model: the generation prompt (phi3 template + <start_index>) is
// continued by n <idx_*> tokens. The demo model's <idx_*> rows are the 8,195 identical mean rows,
// so every step ties across them and picks <idx_0>.
TEST(VqDecode, OnTheDemoModelThroughASession) {
    const auto dir = hgtest::scratch_dir() / "demo-vq";
    write_demo_model(dir);
    auto m = Model::load(dir);
    const text::VqVocabulary& vq = m->vq();
    ASSERT_TRUE(vq.valid());
    const imaging::RgbImage img = synthetic_radiograph(64);
    const std::vector<text::ChatTurn> turns = {{"Reconstruct the image.", 1, std::nullopt}};
    const std::vector<int32_t> ids = text::tokenize_with_images(
        m->tokenizer(), text::build_prompt(m->chat_template(), turns, /*generation=*/true), text::Semantics::slow);
    ASSERT_EQ(ids.back(), vq.start_index);
    const std::vector<std::vector<float>> px = {preprocess_image(*m, img)};
    Session s(m);
    VqDecodeOptions o;
    o.n_tokens = 6;
    int64_t calls = 0;
    o.on_progress = [&](int64_t, int64_t) { return ++calls > 0; };
    const VqDecodeResult r = generate_vq(s, ids, px, AskOptions{}, o);
    EXPECT_FALSE(r.forced_start);
    EXPECT_EQ(r.indices, std::vector<int32_t>(6, 0));
    EXPECT_EQ(r.tokens.back(), vq.end_index);
    EXPECT_EQ(calls, 6);
    EXPECT_EQ(r.n_forward, 5);
}
