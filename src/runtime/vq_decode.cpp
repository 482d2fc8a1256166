// Constrained VQ-token decoding (see vq_decode.h).
#include "runtime/vq_decode.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "runtime/pipeline.h"

namespace hg {

VqDecodeResult decode_vq(std::span<float> logits, int32_t prompt_last,
                         const std::function<std::span<float>(int32_t)>& step, const text::VqVocabulary& vq,
                         Sampler& sampler, const VqDecodeOptions& opt) {
    HG_CHECK(vq.valid(), "image generation: the vocabulary has no <start_index>/<idx_k>/<end_index> tokens "
             "(HealthGPT's VQ extension applies to Phi-3/Phi-4 models)");
    HG_CHECK(opt.n_tokens > 0 && opt.n_tokens <= (int64_t)1 << 20, "image generation: %lld VQ tokens requested",
             (long long)opt.n_tokens);
    const int64_t first = vq.idx0, last = (int64_t)vq.idx0 + vq.n_idx;  // <idx_*> ids: [first, last)
    auto check = [&](std::span<float> s) {
        HG_CHECK((int64_t)s.size() >= last && (int64_t)s.size() > vq.end_index,
                 "image generation: %zu scores do not cover the VQ tokens (<idx_%d> = %lld, <end_index> = %d)",
                 s.size(), vq.n_idx - 1, (long long)(last - 1), vq.end_index);
    };
    const auto t0 = std::chrono::steady_clock::now();
    VqDecodeResult r;
    r.indices.reserve((size_t)opt.n_tokens);
    r.tokens.reserve((size_t)opt.n_tokens + 2);
    if (prompt_last != vq.start_index) {
        r.forced_start = true;
        r.tokens.push_back(vq.start_index);
        logits = step(vq.start_index);
        ++r.n_forward;
    }
    std::vector<int32_t> history;  // what the repetition penalty sees: the generated ids
    history.reserve((size_t)opt.n_tokens);
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t k = 0; k < opt.n_tokens; ++k) {
        check(logits);
        const int64_t V = (int64_t)logits.size();
        // the unconstrained greedy choice (lowest id of ties), to count where the constraint acts
        int64_t best = 0;
        for (int64_t j = 1; j < V; ++j)
            if (logits[(size_t)j] > logits[(size_t)best]) best = j;
        r.n_overridden += best < first || best >= last;
        for (int64_t j = 0; j < V; ++j)
            if (j < first || j >= last) logits[(size_t)j] = ninf;
        for (int64_t j = first; j < last; ++j)
            HG_CHECK(!std::isnan(logits[(size_t)j]), "image generation: step %lld: the model produced NaN scores",
                     (long long)k);
        const int32_t id = sampler.sample(logits.data(), history);
        HG_CHECK(id >= first && id < last, "image generation: step %lld: the sampler chose id %d outside <idx_*>",
                 (long long)k, id);
        r.indices.push_back(id - (int32_t)first);
        r.tokens.push_back(id);
        history.push_back(id);
        if (opt.on_progress && !opt.on_progress(k + 1, opt.n_tokens)) {
            r.cancelled = true;
            break;
        }
        if (k + 1 < opt.n_tokens) {  // the last index needs no forward: <end_index> is appended
            logits = step(id);
            ++r.n_forward;
        }
    }
    if (!r.cancelled) r.tokens.push_back(vq.end_index);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

VqDecodeResult generate_vq(Session& session, std::span<const int32_t> ids, std::span<const std::vector<float>> pixels,
                           const AskOptions& ask, const VqDecodeOptions& opt) {
    HG_CHECK(!ids.empty(), "image generation: empty prompt");
    std::span<float> logits = session.begin(ids, pixels, ask);
    SamplingParams sp = ask.sampling;
    sp.repetition_penalty = ask.repetition_penalty.value_or(session.model().repetition_penalty());
    Sampler sampler(sp, (int64_t)logits.size());
    const auto step = [&session](int32_t id) { return session.step(id); };
    return decode_vq(logits, ids.back(), step, session.model().vq(), sampler, opt);
}

}  // namespace hg
