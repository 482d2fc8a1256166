#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/ops.h"

namespace hg {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}

void apply_repetition_penalty(float* scores, int64_t n, std::span<const int32_t> history, float penalty,
                              std::vector<uint8_t>& seen) {
    HG_CHECK(penalty > 0, "repetition penalty must be > 0, got %g", (double)penalty);
    if (penalty == 1.0f) return;
    // HF gathers the scores of all history ids, then scatters the penalised values back: an id
    // that occurs several times is penalised once.
    seen.assign(n, 0);
    for (const int32_t id : history) {
        HG_CHECK(id >= 0 && id < n, "repetition penalty: token id %d outside the vocabulary (%lld)", id, (long long)n);
        if (seen[id]) continue;
        seen[id] = 1;
        const float s = scores[id];
        scores[id] = s < 0 ? s * penalty : s / penalty;
    }
}

void apply_temperature(float* scores, int64_t n, float temperature) {
    HG_CHECK(temperature > 0, "temperature must be > 0 (use greedy decoding instead), got %g", (double)temperature);
    if (temperature == 1.0f) return;
    for (int64_t i = 0; i < n; ++i) scores[i] = scores[i] / temperature;
}

void apply_top_k(float* scores, int64_t n, int top_k, std::vector<float>& scratch) {
    if (top_k <= 0) return;
    const int64_t k = std::min<int64_t>(top_k, n);  // min_tokens_to_keep = 1 <= k
    scratch.assign(scores, scores + n);
    std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<float>());
    const float kth = scratch[k - 1];
    for (int64_t i = 0; i < n; ++i)
        if (scores[i] < kth) scores[i] = kNegInf;
}

void softmax_probs(const float* scores, int64_t n, float* probs) {
    float mx = kNegInf;
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, scores[i]);
    if (mx == kNegInf) {
        std::fill(probs, probs + n, 0.0f);
        return;
    }
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        probs[i] = std::exp(scores[i] - mx);  // exp(-inf) = 0
        sum += probs[i];
    }
    for (int64_t i = 0; i < n; ++i) probs[i] = (float)(probs[i] / sum);
}

void apply_top_p(float* scores, int64_t n, double top_p, std::vector<int32_t>& order, std::vector<float>& probs) {
    HG_CHECK(top_p >= 0 && top_p <= 1, "top_p must be in [0, 1], got %g", top_p);
    if (top_p >= 1.0) return;
    // torch.sort(ascending); equal scores keep id order here (torch leaves their order open).
    order.resize(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return scores[a] < scores[b]; });
    probs.resize(n);
    std::vector<float>& sorted = probs;  // reuse: sorted scores, then their softmax
    for (int64_t i = 0; i < n; ++i) sorted[i] = scores[order[i]];
    softmax_probs(sorted.data(), n, sorted.data());
    // cumsum accumulates in double (torch's CPU accumulate type for float) and stores float;
    // the threshold is the Python double 1 - top_p compared in float32.
    const float threshold = (float)(1.0 - top_p);
    double cum = 0;
    for (int64_t i = 0; i < n - 1; ++i) {  // the last (largest) token always stays
        cum += sorted[i];
        if ((float)cum <= threshold) scores[order[i]] = kNegInf;
    }
}

void apply_min_p(float* scores, int64_t n, double min_p, std::vector<float>& probs) {
    HG_CHECK(min_p >= 0 && min_p <= 1, "min_p must be in [0, 1], got %g", min_p);
    if (min_p <= 0) return;
    probs.resize(n);
    softmax_probs(scores, n, probs.data());
    const int64_t best = argmax(scores, n);  // first in descending order: always kept
    const float threshold = (float)min_p * probs[best];
    for (int64_t i = 0; i < n; ++i)
        if (i != best && probs[i] < threshold) scores[i] = kNegInf;
}

// ---------------------------------------------------------------------------------------------

namespace {
uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Rng::reseed(uint64_t seed) {
    for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

double Rng::uniform() { return (double)(next() >> 11) * 0x1.0p-53; }

// ---------------------------------------------------------------------------------------------

Sampler::Sampler(SamplingParams p, int64_t n_vocab) : p_(p), n_vocab_(n_vocab), rng_(p.seed) {
    HG_CHECK(n_vocab > 0, "sampler: empty vocabulary");
    HG_CHECK(p.repetition_penalty > 0, "repetition_penalty must be > 0, got %g", (double)p.repetition_penalty);
    HG_CHECK(!p.do_sample || p.temperature > 0, "temperature must be > 0 when sampling, got %g",
             (double)p.temperature);
    HG_CHECK(p.top_k >= 0, "top_k must be >= 0, got %d", p.top_k);
    HG_CHECK(p.top_p >= 0 && p.top_p <= 1, "top_p must be in [0, 1], got %g", p.top_p);
    HG_CHECK(p.min_p >= 0 && p.min_p <= 1, "min_p must be in [0, 1], got %g", p.min_p);
    probs_.reserve(n_vocab);
    scratch_.reserve(n_vocab);
    order_.reserve(n_vocab);
    seen_.reserve(n_vocab);
}

void Sampler::process(float* logits, std::span<const int32_t> history) {
    apply_repetition_penalty(logits, n_vocab_, history, p_.repetition_penalty, seen_);
    if (!p_.do_sample) return;
    apply_temperature(logits, n_vocab_, p_.temperature);
    apply_top_k(logits, n_vocab_, p_.top_k, scratch_);
    apply_top_p(logits, n_vocab_, p_.top_p, order_, probs_);
    apply_min_p(logits, n_vocab_, p_.min_p, probs_);
}

int32_t Sampler::sample(float* logits, std::span<const int32_t> history) {
    process(logits, history);
    if (!p_.do_sample) return (int32_t)argmax(logits, n_vocab_);
    probs_.resize(n_vocab_);
    softmax_probs(logits, n_vocab_, probs_.data());
    double total = 0;
    for (int64_t i = 0; i < n_vocab_; ++i) total += probs_[i];
    HG_CHECK(total > 0 && std::isfinite(total), "sampler: no finite logits to sample from");
    const double u = rng_.uniform() * total;
    double cum = 0;
    int32_t last = -1;
    for (int64_t i = 0; i < n_vocab_; ++i) {
        if (probs_[i] <= 0) continue;
        cum += probs_[i];
        last = (int32_t)i;
        if (u < cum) return last;
    }
    return last;  // rounding left u just above the total: the last candidate
}

}  // namespace hg
