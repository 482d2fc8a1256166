// Next-token selection with the semantics of transformers 4.41.2 `generate`.
//
// HF builds two lists and applies them in this order to the last row of logits:
//   processors (GenerationMixin._get_logits_processor), also in greedy mode:
//     1. repetition penalty   RepetitionPenaltyLogitsProcessor: for every id in the history
//                             (each once), a logit s becomes s / penalty if s >= 0, else s * penalty
//   warpers (GenerationMixin._get_logits_warper), only when sampling (do_sample):
//     2. temperature          s / temperature
//     3. top-k                drop s < (k-th largest s); ties with the k-th value are kept
//     4. top-p                sort ascending, drop tokens whose cumulative softmax is <= 1 - top_p
//                             (the largest one always stays)
//     5. min-p                drop tokens with probability < min_p * (largest probability)
// Dropped tokens get -inf. Greedy then takes the argmax (ties to the lowest id, as
// torch.argmax); sampling draws from softmax(scores) with our own seeded generator
// (xoshiro256**), so a seed gives the same tokens on every machine, though not torch's.
//
// What the penalty's "history" is depends on how HF was called: generate(input_ids) sees
// prompt + output; generate(inputs_embeds=...) -- the LLaVA/HealthGPT path, image or not --
// starts from an empty input_ids and sees only the output (runtime/generate.h PenaltyScope).
// Qwen2.5's generation_config carries repetition_penalty 1.05, which HF applies under greedy.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace hg {

struct SamplingParams {
    bool do_sample = false;           // false: greedy (warpers are not applied)
    float temperature = 1.0f;         // > 0; 1 = off
    int top_k = 0;                    // 0 = off
    double top_p = 1.0;               // 1 = off (double: HF compares against float32(1 - top_p))
    double min_p = 0.0;               // 0 = off
    float repetition_penalty = 1.0f;  // 1 = off; > 0
    uint64_t seed = 0;
};

// Individual steps, in place on scores[n] (for tests and for custom pipelines).
void apply_repetition_penalty(float* scores, int64_t n, std::span<const int32_t> history, float penalty,
                              std::vector<uint8_t>& seen);
void apply_temperature(float* scores, int64_t n, float temperature);
void apply_top_k(float* scores, int64_t n, int top_k, std::vector<float>& scratch);
void apply_top_p(float* scores, int64_t n, double top_p, std::vector<int32_t>& order, std::vector<float>& probs);
void apply_min_p(float* scores, int64_t n, double min_p, std::vector<float>& probs);
// probs[n] = softmax(scores) in float32 (exp in float, sum in double); -inf -> 0.
void softmax_probs(const float* scores, int64_t n, float* probs);

// xoshiro256** seeded through splitmix64: deterministic on every platform.
class Rng {
public:
    explicit Rng(uint64_t seed = 0) { reseed(seed); }
    void reseed(uint64_t seed);
    uint64_t next();
    double uniform();  // [0, 1) with 53 random bits

private:
    uint64_t s_[4];
};

class Sampler {
public:
    Sampler(SamplingParams p, int64_t n_vocab);

    const SamplingParams& params() const { return p_; }
    void reseed(uint64_t seed) { rng_.reseed(seed); }

    // Applies the processors (and, when sampling, the warpers) in HF's order, in place.
    void process(float* logits, std::span<const int32_t> history);
    // process() then pick the next id. `logits` [n_vocab] is overwritten.
    int32_t sample(float* logits, std::span<const int32_t> history);

private:
    SamplingParams p_;
    int64_t n_vocab_;
    Rng rng_;
    std::vector<float> probs_, scratch_;  // preallocated: sampling allocates nothing
    std::vector<int32_t> order_;
    std::vector<uint8_t> seen_;
};

}  // namespace hg
