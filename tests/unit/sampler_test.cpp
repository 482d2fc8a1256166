// The sampler against transformers 4.41.2's logits processors (tests/reference/gen_decoder.py):
// each processor and their composition on fixed vectors, and the per-step processed scores
// of a real HF sampling `generate`, replayed from its raw logits.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "runtime/sampler.h"
#include "test_util.h"

using namespace hg;

namespace {

nlohmann::json sampler_json() {
    std::ifstream f(hgtest::fixture("decoder/sampler/sampler.json"));
    return nlohmann::json::parse(f);
}

SamplingParams params_from(const nlohmann::json& c) {
    SamplingParams p;
    p.do_sample = true;  // the fixtures apply processors and warpers, as sampling does
    auto num = [&](const char* k, double dflt) { return c.contains(k) && !c[k].is_null() ? c[k].get<double>() : dflt; };
    p.temperature = (float)num("temperature", 1.0);
    p.top_k = (int)num("top_k", 0);
    p.top_p = num("top_p", 1.0);
    p.min_p = num("min_p", 0.0);
    p.repetition_penalty = (float)num("repetition_penalty", 1.0);
    return p;
}

// Same -inf pattern, and finite values equal (the processors are single float ops, so torch
// and we round identically).
void expect_same_scores(const float* got, const float* want, int64_t n, const std::string& what) {
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (std::isinf(want[i])) {
            EXPECT_TRUE(std::isinf(got[i]) && got[i] < 0) << what << " id " << i << ": kept " << got[i];
            continue;
        }
        ++kept;
        EXPECT_EQ(got[i], want[i]) << what << " id " << i;
    }
    EXPECT_GT(kept, 0) << what;
}

}  // namespace

TEST(Sampler, EachProcessorMatchesTransformers) {
    const auto j = sampler_json();
    const int64_t V = j["vocab"].get<int64_t>(), nv = j["n_vectors"].get<int64_t>();
    const auto history = j["history"].get<std::vector<int32_t>>();
    const auto inputs = hgtest::read_f32(hgtest::fixture("decoder/sampler/inputs.bin"));
    const auto want = hgtest::read_f32(hgtest::fixture("decoder/sampler/processed.bin"));
    const auto& configs = j["configs"];
    ASSERT_EQ(inputs.size(), (size_t)(nv * V));
    ASSERT_EQ(want.size(), configs.size() * nv * V);
    int n_cases = 0;
    for (size_t c = 0; c < configs.size(); ++c) {
        Sampler s(params_from(configs[c]), V);
        for (int64_t v = 0; v < nv; ++v) {
            std::vector<float> x(inputs.begin() + v * V, inputs.begin() + (v + 1) * V);
            s.process(x.data(), history);
            expect_same_scores(x.data(), want.data() + (c * nv + v) * V, V,
                               configs[c]["name"].get<std::string>() + " vector " + std::to_string(v));
            ++n_cases;
        }
    }
    std::printf("sampler: %d (config, vector) cases equal to HF's processed scores\n", n_cases);
    EXPECT_EQ(n_cases, 14 * 8);
}

TEST(Sampler, HfGenerateTraceReplays) {
    // Per step of HF's own sampling loop: raw logits in, HF's processed scores out. This pins
    // the order in which generate composes the processors and warpers.
    const auto j = sampler_json();
    for (size_t t = 0; t < j["traces"].size(); ++t) {
        const auto& tr = j["traces"][t];
        const auto prompt = tr["prompt"].get<std::vector<int32_t>>();
        const auto seq = tr["sequence"].get<std::vector<int32_t>>();
        const int64_t steps = tr["n_steps"].get<int64_t>();
        const auto raw = hgtest::read_f32(hgtest::fixture("decoder/sampler/trace" + std::to_string(t) + "-logits.bin"));
        const auto want = hgtest::read_f32(hgtest::fixture("decoder/sampler/trace" + std::to_string(t) + "-scores.bin"));
        ASSERT_EQ(raw.size() % steps, 0u);
        const int64_t V = (int64_t)raw.size() / steps;
        Sampler s(params_from(tr["settings"]), V);
        for (int64_t i = 0; i < steps; ++i) {
            std::vector<int32_t> history(seq.begin(), seq.begin() + (int64_t)prompt.size() + i);
            std::vector<float> x(raw.begin() + i * V, raw.begin() + (i + 1) * V);
            s.process(x.data(), history);
            const std::string what = "trace " + std::to_string(t) + " step " + std::to_string(i);
            expect_same_scores(x.data(), want.data() + i * V, V, what);
            // The token HF drew is one we keep.
            const int32_t drawn = seq[prompt.size() + i];
            EXPECT_TRUE(std::isfinite(x[drawn])) << what;
        }
    }
}

TEST(Sampler, GreedyIsArgmaxWithTiesToLowestIdAndPenaltyApplies) {
    std::vector<float> x = {0.5f, 2.0f, -1.0f, 3.0f, 1.0f, 3.0f};
    SamplingParams p;  // greedy
    Sampler s(p, 6);
    auto y = x;
    EXPECT_EQ(s.sample(y.data(), {}), 3);
    // The penalty acts under greedy too (Qwen's 1.05): id 3 seen -> 3 / 1.5 = 2 < 3 (id 5).
    p.repetition_penalty = 1.5f;
    Sampler s2(p, 6);
    y = x;
    const std::vector<int32_t> hist = {3};
    EXPECT_EQ(s2.sample(y.data(), hist), 5);
    EXPECT_EQ(y[3], 2.0f);
    // Temperature / top-k are warpers: not applied when greedy (HF ignores them too).
    p = SamplingParams{};
    p.temperature = 0.5f;
    p.top_k = 1;
    Sampler s3(p, 6);
    y = x;
    s3.process(y.data(), {});
    EXPECT_EQ(y, x);
}

TEST(Sampler, SeededSamplingIsDeterministicAndFollowsTheDistribution) {
    const std::vector<float> logits = {1.0f, 2.0f, 0.0f, -1.0f, 1.5f, -std::numeric_limits<float>::infinity()};
    SamplingParams p;
    p.do_sample = true;
    p.seed = 1234;
    auto draw = [&](uint64_t seed, int n) {
        SamplingParams q = p;
        q.seed = seed;
        Sampler s(q, 6);
        std::vector<int32_t> out;
        for (int i = 0; i < n; ++i) {
            auto y = logits;
            out.push_back(s.sample(y.data(), {}));
        }
        return out;
    };
    EXPECT_EQ(draw(1234, 200), draw(1234, 200));
    EXPECT_NE(draw(1234, 200), draw(4321, 200));

    // Frequencies of 40000 draws within 5 standard deviations of softmax(logits).
    const int n = 40000;
    const auto d = draw(99, n);
    std::vector<float> probs(6);
    softmax_probs(logits.data(), 6, probs.data());
    for (int id = 0; id < 6; ++id) {
        const double f = (double)std::count(d.begin(), d.end(), id) / n;
        const double sd = std::sqrt(probs[id] * (1 - probs[id]) / n);
        EXPECT_NEAR(f, probs[id], 5 * sd + 1e-12) << "id " << id;
    }
    EXPECT_EQ(std::count(d.begin(), d.end(), 5), 0);  // -inf is never drawn
}

TEST(Sampler, RngIsTheSameEverywhere) {
    // xoshiro256** seeded by splitmix64(0): fixed values, so a seed means the same on every build.
    Rng r(0);
    const uint64_t a = r.next(), b = r.next();
    Rng r2(0);
    EXPECT_EQ(r2.next(), a);
    EXPECT_EQ(r2.next(), b);
    Rng r3(1);
    EXPECT_NE(r3.next(), a);
    for (int i = 0; i < 1000; ++i) {
        const double u = r.uniform();
        ASSERT_TRUE(u >= 0.0 && u < 1.0);
    }
}

TEST(Sampler, InvalidSettingsAreRefused) {
    SamplingParams p;
    p.do_sample = true;
    p.temperature = 0.0f;
    EXPECT_THROW(Sampler(p, 10), Error);
    p = SamplingParams{};
    p.top_p = 1.5;
    EXPECT_THROW(Sampler(p, 10), Error);
    p = SamplingParams{};
    p.repetition_penalty = 0.0f;
    EXPECT_THROW(Sampler(p, 10), Error);
    Sampler s(SamplingParams{}, 4);
    std::vector<float> x(4, 0.0f);
    std::vector<int32_t> bad = {7};
    SamplingParams pen;
    pen.repetition_penalty = 1.2f;
    Sampler s2(pen, 4);
    EXPECT_THROW(s2.sample(x.data(), bad), Error);
}
