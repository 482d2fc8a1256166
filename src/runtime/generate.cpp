#include "runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/error.h"

namespace hg {

// ---------------------------------------------------------------------------------------------
// Prompt

void Prompt::add_tokens(std::span<const int32_t> ids) {
    if (ids.empty()) return;
    if (!segs_.empty() && segs_.back().is_tokens()) {
        segs_.back().ids.insert(segs_.back().ids.end(), ids.begin(), ids.end());
        segs_.back().n += (int64_t)ids.size();
    } else {
        Segment s;
        s.ids.assign(ids.begin(), ids.end());
        s.n = (int64_t)ids.size();
        segs_.push_back(std::move(s));
    }
    n_ += (int64_t)ids.size();
}

void Prompt::add_embeddings(const float* rows, int64_t n_rows, int64_t n_embd) {
    if (n_rows <= 0) return;
    HG_CHECK(n_embd > 0, "prompt: embedding rows need a width");
    HG_CHECK(n_embd_ == 0 || n_embd_ == n_embd, "prompt: embedding rows of width %lld after rows of width %lld",
             (long long)n_embd, (long long)n_embd_);
    n_embd_ = n_embd;
    Segment s;
    s.embeds.assign(rows, rows + n_rows * n_embd);
    s.n = n_rows;
    segs_.push_back(std::move(s));
    n_ += n_rows;
}

std::vector<int32_t> Prompt::token_ids() const {
    std::vector<int32_t> out;
    for (const auto& s : segs_) out.insert(out.end(), s.ids.begin(), s.ids.end());
    return out;
}

// ---------------------------------------------------------------------------------------------

const char* stop_reason_name(StopReason r) {
    switch (r) {
        case StopReason::MaxTokens: return "max_tokens";
        case StopReason::StopToken: return "stop_token";
        case StopReason::StopString: return "stop_string";
        case StopReason::Callback: return "callback";
        case StopReason::ContextFull: return "context_full";
    }
    return "?";
}

double GenerateResult::prompt_tokens_per_second() const {
    const int64_t n = n_prompt - n_prompt_reused;
    return prompt_seconds > 0 ? (double)n / prompt_seconds : 0.0;
}

double GenerateResult::generate_tokens_per_second() const {
    return decode_seconds > 0 ? (double)n_decoded / decode_seconds : 0.0;
}

// ---------------------------------------------------------------------------------------------

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

Generator::Generator(std::shared_ptr<const Decoder> model, int64_t n_ctx, DType kv_type, ThreadPool* pool)
    : model_(std::move(model)), cache_(model_->hparams(), n_ctx, kv_type) {
    fwd_.pool = pool;
    logits_.resize((size_t)model_->hparams().n_vocab);
    hashes_.reserve((size_t)n_ctx);
}

uint64_t Generator::hash_seed(const GenerateOptions& opt) const {
    // The same inputs under another model, vocabulary or adapter give other keys/values, so
    // they are part of the identity of every cached position (a PrefixCache may be shared by
    // generators of different models; it then never hands one the other's snapshot).
    const DecoderWeights& w = model_->weights();
    uint64_t h = kPrefixHashSeed;
    for (const uint64_t part : {(uint64_t)(uintptr_t)w.token_embd.data, (uint64_t)(uintptr_t)w.output.data,
                                (uint64_t)(uintptr_t)(w.layers.empty() ? nullptr : w.layers[0].o.weight.data),
                                (uint64_t)model_->hparams().n_vocab})
        h = prefix_hash_token(h ^ part, -2);
    const uint64_t key = opt.adapter_key ? opt.adapter_key : (uint64_t)(uintptr_t)opt.adapters;
    return key ? prefix_hash_token(h ^ key, -1) : h;
}

std::span<float> Generator::prefill(const Prompt& prompt, const GenerateOptions& opt, int64_t* n_reused) {
    const DecoderHParams& hp = model_->hparams();
    const int64_t L = prompt.size(), E = hp.n_embd;
    HG_CHECK(L > 0, "generate: empty prompt");
    HG_CHECK(L <= cache_.capacity(), "generate: prompt of %lld positions exceeds the context (%lld)", (long long)L,
             (long long)cache_.capacity());

    // Chained identity of every prompt position.
    hashes_.clear();
    uint64_t h = hash_seed(opt);
    for (const auto& s : prompt.segments()) {
        HG_CHECK(s.is_tokens() || (int64_t)s.embeds.size() == s.n * E,
                 "generate: embedding rows of width %lld, the model takes %lld", (long long)(s.embeds.size() / s.n),
                 (long long)E);
        for (int64_t i = 0; i < s.n; ++i) {
            h = s.is_tokens() ? prefix_hash_token(h, s.ids[i]) : prefix_hash_embedding(h, &s.embeds[i * E], E);
            hashes_.push_back(h);
        }
    }

    // Reuse the longest cached prefix: this sequence's own cache, or a stored snapshot.
    int64_t keep = cache_.common_prefix(hashes_);
    if (prefix_cache_) {
        auto snap = prefix_cache_->find(hashes_);
        if (snap && snap->n() > keep && snap->type == cache_.type() && snap->n_layer == cache_.n_layer() &&
            snap->kv_dim == cache_.kv_dim()) {
            cache_.restore(*snap);
            keep = snap->n();
        }
    }
    if (keep == L) keep = L - 1;  // the last position is recomputed for its logits
    cache_.truncate(keep);
    if (n_reused) *n_reused = keep;

    // Prefill the rest in chunks of n_batch positions.
    const int64_t n_batch = std::max<int64_t>(1, opt.n_batch);
    if ((int64_t)embeds_.size() < std::min(n_batch, L) * E) embeds_.resize((size_t)(std::min(n_batch, L) * E));
    ForwardOptions fo = fwd_;
    fo.adapters = opt.adapters;
    int64_t pos = keep;
    while (pos < L) {
        const int64_t n = std::min(n_batch, L - pos);
        // Gather input rows [pos, pos + n) from the segments.
        int64_t seg_start = 0, filled = 0;
        for (const auto& s : prompt.segments()) {
            const int64_t a = std::max(pos, seg_start), b = std::min(pos + n, seg_start + s.n);
            if (a < b) {
                float* dst = embeds_.data() + filled * E;
                if (s.is_tokens())
                    model_->embed(std::span<const int32_t>(s.ids).subspan(a - seg_start, b - a), dst);
                else
                    std::memcpy(dst, &s.embeds[(a - seg_start) * E], (size_t)((b - a) * E) * sizeof(float));
                filled += b - a;
            }
            seg_start += s.n;
        }
        const bool last = pos + n == L;
        model_->forward(embeds_.data(), n, cache_.view(), last ? LogitRows::Last : LogitRows::None, logits_.data(),
                        arena_, fo);
        cache_.append(std::span<const uint64_t>(hashes_).subspan(pos, n));
        pos += n;
    }

    if (prefix_cache_ && opt.save_prefix > 0) prefix_cache_->put(cache_.snapshot(std::min(opt.save_prefix, L)));
    return logits_;
}

std::span<float> Generator::decode(int32_t token, const GenerateOptions& opt) {
    const int64_t E = model_->hparams().n_embd;
    HG_CHECK(cache_.n_past() > 0, "generate: decode before prefill");
    HG_CHECK(cache_.n_past() < cache_.capacity(), "generate: context of %lld positions is full",
             (long long)cache_.capacity());
    if ((int64_t)embeds_.size() < E) embeds_.resize((size_t)E);
    model_->embed(std::span<const int32_t>(&token, 1), embeds_.data());
    ForwardOptions fo = fwd_;
    fo.adapters = opt.adapters;
    model_->forward(embeds_.data(), 1, cache_.view(), LogitRows::Last, logits_.data(), arena_, fo);
    const uint64_t h = prefix_hash_token(cache_.hashes().back(), token);
    cache_.append(std::span<const uint64_t>(&h, 1));
    return logits_;
}

GenerateResult Generator::generate(const Prompt& prompt, const GenerateOptions& opt) {
    HG_CHECK(opt.stop_strings.empty() || opt.token_text, "generate: stop strings need a token_text callback");
    GenerateResult r;
    r.n_prompt = prompt.size();
    Sampler sampler(opt.sampling, model_->hparams().n_vocab);

    auto t0 = Clock::now();
    std::span<float> logits = prefill(prompt, opt, &r.n_prompt_reused);
    r.prompt_seconds = seconds_since(t0);

    std::vector<int32_t> history;
    if (opt.penalty_scope == PenaltyScope::PromptAndOutput) history = prompt.token_ids();
    history.reserve(history.size() + (size_t)std::max<int64_t>(0, opt.max_new_tokens));
    r.tokens.reserve((size_t)std::max<int64_t>(0, opt.max_new_tokens));
    size_t max_stop_len = 0;
    for (const auto& s : opt.stop_strings) max_stop_len = std::max(max_stop_len, s.size());

    t0 = Clock::now();
    if (opt.max_new_tokens <= 0) return r;
    while (true) {
        const int32_t tok = sampler.sample(logits.data(), history);
        if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), tok) != opt.stop_ids.end()) {
            r.reason = StopReason::StopToken;
            r.stop_token = tok;
            break;
        }
        r.tokens.push_back(tok);
        history.push_back(tok);
        if (opt.token_text) {
            const std::string piece = opt.token_text(tok);
            r.text += piece;
            // Only a match that ends inside the new piece is new.
            const size_t from = r.text.size() > piece.size() + max_stop_len ? r.text.size() - piece.size() - max_stop_len
                                                                           : 0;
            for (const auto& s : opt.stop_strings)
                if (!s.empty() && r.text.find(s, from) != std::string::npos) {
                    r.reason = StopReason::StopString;
                    r.stop_string = s;
                }
        }
        if (opt.on_token && !opt.on_token(tok)) {
            if (r.reason != StopReason::StopString) r.reason = StopReason::Callback;
            break;
        }
        if (r.reason == StopReason::StopString) break;
        if ((int64_t)r.tokens.size() >= opt.max_new_tokens) {
            r.reason = StopReason::MaxTokens;
            break;
        }
        if (cache_.n_past() >= cache_.capacity()) {
            r.reason = StopReason::ContextFull;
            break;
        }
        logits = decode(tok, opt);
        r.n_decoded++;
    }
    r.decode_seconds = seconds_since(t0);
    return r;
}

}  // namespace hg
