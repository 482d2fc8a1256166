#include "runtime/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "core/arena.h"
#include "core/error.h"
#include "imaging/preprocess.h"
#include "runtime/kv_cache.h"

namespace hg {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Identity of a pixel tensor (its exact bytes), for the feature cache.
uint64_t hash_pixels(const std::vector<float>& px) {
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)px.size();
    for (float f : px) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        h = (h ^ u) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

}  // namespace

double StageTimings::prefill_tokens_per_second() const {
    const int64_t n = n_prompt - n_prompt_reused;
    return prefill > 0 ? (double)n / prefill : 0.0;
}

double StageTimings::decode_tokens_per_second() const { return decode > 0 ? (double)n_decoded / decode : 0.0; }

std::string StageTimings::summary() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "preprocess %.3f s | vision %.3f s (%lld of %lld images) | projector %.3f s | prefill %.3f s "
                  "(%lld positions, %lld reused, %.1f tok/s) | decode %.3f s (%lld tokens, %.2f tok/s)",
                  preprocess, vision, (long long)n_images_encoded, (long long)n_images, projector, prefill,
                  (long long)n_prompt, (long long)n_prompt_reused, prefill_tokens_per_second(), decode,
                  (long long)n_generated, decode_tokens_per_second());
    return buf;
}

const char* stage_name(Stage s) {
    switch (s) {
        case Stage::Preprocess: return "preprocess";
        case Stage::Vision: return "vision";
        case Stage::Projector: return "projector";
        case Stage::Prefill: return "prefill";
        case Stage::Decode: return "decode";
    }
    return "?";
}

std::vector<float> preprocess_image(const Model& model, const imaging::RgbImage& image) {
    HG_CHECK(model.vision(), "%s: this model has no vision tower (vision.gguf), so it cannot take images",
             model.path().string().c_str());
    return imaging::clip_preprocess(image, model.preprocess());
}

// ---------------------------------------------------------------------------------------------

Session::Session(std::shared_ptr<const Model> model, SessionOptions opt) : model_(std::move(model)), opt_(opt) {
    HG_CHECK(model_ != nullptr, "session: no model");
    if (opt_.n_ctx <= 0) {
        const int64_t train = model_->decoder()->hparams().n_ctx_train;
        opt_.n_ctx = train > 0 ? std::min<int64_t>(train, 4096) : 4096;
    }
}

Session::~Session() = default;

void Session::reset() {
    turns_.clear();
    pixels_.clear();
}

const Plugin* Session::plugin_for(const AskOptions& opt) const {
    if (opt.no_plugin) return nullptr;
    if (!opt.plugin.empty()) return &model_->plugins().get(opt.plugin);
    return model_->plugins().first(PluginTask::Comprehension);
}

const Decoder& Session::decoder() const {
    HG_CHECK(gen_ != nullptr, "session: nothing has run yet");
    return gen_->model();
}

Generator& Session::generator_for(const std::shared_ptr<const Decoder>& d) {
    // One KV cache per session. A plugin with its own vocabulary is another Decoder object (the same
    // layers): its cached positions could not be reused anyway (other adapters), so the generator
    // is rebuilt around it.
    if (!gen_ || &gen_->model() != d.get()) {
        gen_.reset();
        gen_ = std::make_unique<Generator>(d, opt_.n_ctx, opt_.kv_type, opt_.pool);
        if (opt_.kernels) gen_->set_kernels(opt_.kernels);
        if (opt_.prefix_cache) gen_->set_prefix_cache(opt_.prefix_cache);
    }
    return *gen_;
}

const std::vector<float>& Session::image_features(const std::vector<float>& pixels, const Plugin& p, StageTimings* t) {
    const ClipVision* vision = model_->vision();
    HG_CHECK(vision, "%s: this model has no vision tower (vision.gguf), so it cannot take images",
             model_->path().string().c_str());
    const ClipVisionConfig& vc = vision->config();
    const size_t want = (size_t)vc.num_channels * vc.image_size * vc.image_size;
    HG_CHECK(pixels.size() == want, "image pixels: %zu values, the vision tower takes %d x %d x %d", pixels.size(),
             vc.num_channels, vc.image_size, vc.image_size);
    const auto key = std::make_pair(&p, hash_pixels(pixels));
    auto it = features_.find(key);
    if (it != features_.end()) return it->second;

    ThreadPool& pool = opt_.pool ? *opt_.pool : default_pool();
    auto t0 = Clock::now();
    const std::vector<float> hidden = vision->forward(pixels.data(), p.vision_layer(), pool);  // [n_patches, hidden]
    const double t_vision = seconds_since(t0);
    t0 = Clock::now();
    const Projector& proj = p.weights.projector();
    std::vector<float> out((size_t)vc.n_patches() * (size_t)proj.d_out());
    Arena arena;
    proj.forward(out.data(), hidden.data(), vc.n_patches(), arena, pool);
    if (t) {
        t->vision += t_vision;
        t->projector += seconds_since(t0);
        t->n_images_encoded++;
    }
    if (features_.size() >= 64) features_.clear();  // bounded: a long-running session does not grow forever
    return features_.emplace(key, std::move(out)).first->second;
}

Prompt Session::build_prompt(std::span<const int32_t> ids, std::span<const std::vector<float>> pixels, const Plugin* p,
                             const AskOptions& opt, StageTimings& t) {
    const int64_t n_slots = std::count(ids.begin(), ids.end(), text::kImageTokenId);
    HG_CHECK(n_slots == (int64_t)pixels.size(), "request: %lld <image> slots but %zu images", (long long)n_slots,
             pixels.size());
    HG_CHECK(n_slots == 0 || p != nullptr,
             "images need a plugin (it carries the projector and the vision layer); %s",
             model_->plugins().empty() ? "this model has none" : "the request runs without one");
    const int64_t E = model_->decoder()->hparams().n_embd;
    Prompt prompt;
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= ids.size(); ++i) {
        if (i < ids.size() && ids[i] != text::kImageTokenId) continue;
        prompt.add_tokens(ids.subspan(start, i - start));
        if (i < ids.size()) {
            if (opt.on_progress) opt.on_progress({Stage::Vision, (int64_t)k, n_slots});
            const std::vector<float>& f = image_features(pixels[k], *p, &t);
            prompt.add_embeddings(f.data(), (int64_t)(f.size() / (size_t)E), E);
            ++k;
        }
        start = i + 1;
    }
    t.n_images = n_slots;
    if (opt.on_progress && n_slots) opt.on_progress({Stage::Projector, n_slots, n_slots});
    HG_CHECK(prompt.size() > 0, "request: empty prompt");
    return prompt;
}

GenerateOptions Session::generate_options(const Plugin* p, const AskOptions& opt) const {
    GenerateOptions g;
    g.max_new_tokens = opt.max_new_tokens;
    g.sampling = opt.sampling;
    g.sampling.repetition_penalty = opt.repetition_penalty.value_or(model_->repetition_penalty());
    g.penalty_scope = opt.penalty_scope;
    g.stop_ids = model_->stop_ids();
    g.stop_strings = opt.stop_strings;
    if (!g.stop_strings.empty()) {
        const text::Tokenizer* tok = &model_->tokenizer();
        g.token_text = [tok](int32_t id) {
            const int32_t one[1] = {id};
            return id < tok->size() ? tok->decode(one, {text::Semantics::fast, true}) : std::string();
        };
    }
    g.adapters = p ? p->adapters.get() : nullptr;
    g.adapter_key = p ? p->key : 0;
    if (p && !opt.plugin_version.empty()) {  // the version joins the plugin's identity
        uint64_t h = prefix_hash_token(kPrefixHashSeed ^ p->key, -3);
        for (unsigned char c : opt.plugin_version) h = prefix_hash_token(h, c);
        g.adapter_key = h ? h : 1;
    }
    return g;
}

Answer Session::run(std::span<const int32_t> ids, std::span<const std::vector<float>> pixels, const AskOptions& opt) {
    Answer a;
    const Plugin* p = plugin_for(opt);
    a.plugin = p ? p->name : "";
    Prompt prompt = build_prompt(ids, pixels, p, opt, a.timings);
    Generator& gen = generator_for(p ? p->decoder : model_->decoder());
    GenerateOptions g = generate_options(p, opt);
    // With a shared prefix cache: keep the prompt up to the end of its last image (the system
    // prompt, the earlier turns and the image vectors), what a next question about it starts with.
    if (opt_.prefix_cache) {
        int64_t end = 0, image_end = 0;
        for (const auto& seg : prompt.segments()) {
            end += seg.n;
            if (!seg.is_tokens()) image_end = end;
        }
        g.save_prefix = image_end;
    }

    const text::Tokenizer& tok = model_->tokenizer();
    text::StreamDecoder stream(tok, /*skip_special_tokens=*/true);
    int64_t n_out = 0;
    bool prefilled = false;
    auto emit = [&](const std::string& s) {
        if (s.empty()) return true;
        a.text += s;
        return !opt.on_text || opt.on_text(s);
    };
    g.on_token = [&](int32_t id) {
        if (!prefilled && opt.on_progress) opt.on_progress({Stage::Prefill, prompt.size(), prompt.size()});
        prefilled = true;
        bool go = true;
        // ids past the tokenizer (padding rows of a random model) have no text
        if (id < tok.size()) go = emit(stream.push(id));
        if (opt.on_token && !opt.on_token(id)) go = false;
        if (opt.on_progress) opt.on_progress({Stage::Decode, ++n_out, opt.max_new_tokens});
        return go;
    };
    if (opt.on_progress) opt.on_progress({Stage::Prefill, 0, prompt.size()});
    const GenerateResult r = gen.generate(prompt, g);
    emit(stream.finish());

    a.tokens = r.tokens;
    a.reason = r.reason;
    a.stop_token = r.stop_token;
    StageTimings& t = a.timings;
    t.prefill = r.prompt_seconds;
    t.decode = r.decode_seconds;
    t.n_prompt = r.n_prompt;
    t.n_prompt_reused = r.n_prompt_reused;
    t.n_generated = (int64_t)r.tokens.size();
    t.n_decoded = r.n_decoded;
    return a;
}

Answer Session::ask(const std::string& question, std::span<const imaging::RgbImage> images, const AskOptions& opt) {
    StageTimings pre;
    const size_t n_before = pixels_.size();
    try {
        auto t0 = Clock::now();
        for (size_t i = 0; i < images.size(); ++i) {
            if (opt.on_progress) opt.on_progress({Stage::Preprocess, (int64_t)i, (int64_t)images.size()});
            pixels_.push_back(preprocess_image(*model_, images[i]));
        }
        pre.preprocess = seconds_since(t0);
        turns_.push_back({question, (int)images.size(), std::nullopt});
        const std::string prompt = text::build_prompt(model_->chat_template(), turns_, opt.generation_prompt);
        const std::vector<int32_t> ids = text::tokenize_with_images(model_->tokenizer(), prompt, text::Semantics::slow);
        Answer a = run(ids, pixels_, opt);
        a.timings.preprocess = pre.preprocess;
        turns_.back().answer = a.text;
        return a;
    } catch (...) {
        // the conversation is as it was before this question
        if (turns_.size() && !turns_.back().answer && turns_.back().question == question) turns_.pop_back();
        pixels_.resize(n_before);
        throw;
    }
}

std::span<float> Session::begin(std::span<const int32_t> ids, std::span<const std::vector<float>> pixels,
                                const AskOptions& opt, StageTimings* t) {
    StageTimings local;
    StageTimings& tt = t ? *t : local;
    const Plugin* p = plugin_for(opt);
    Prompt prompt = build_prompt(ids, pixels, p, opt, tt);
    Generator& gen = generator_for(p ? p->decoder : model_->decoder());
    step_opt_ = generate_options(p, opt);
    int64_t reused = 0;
    auto t0 = Clock::now();
    std::span<float> logits = gen.prefill(prompt, step_opt_, &reused);
    tt.prefill += seconds_since(t0);
    tt.n_prompt = prompt.size();
    tt.n_prompt_reused = reused;
    return logits;
}

std::span<float> Session::step(int32_t token) {
    HG_CHECK(gen_ != nullptr, "session: step() before begin()");
    return gen_->decode(token, step_opt_);
}

std::vector<float> Session::logits(std::span<const int32_t> ids, std::span<const std::vector<float>> pixels,
                                   const AskOptions& opt) {
    StageTimings t;
    const Plugin* p = plugin_for(opt);
    const Prompt prompt = build_prompt(ids, pixels, p, opt, t);
    const std::shared_ptr<const Decoder>& d = p ? p->decoder : model_->decoder();
    const int64_t L = prompt.size(), E = d->hparams().n_embd, V = d->hparams().n_vocab;
    std::vector<float> embeds((size_t)(L * E));
    int64_t row = 0;
    for (const auto& s : prompt.segments()) {
        if (s.is_tokens()) d->embed(s.ids, embeds.data() + row * E);
        else std::memcpy(embeds.data() + row * E, s.embeds.data(), s.embeds.size() * sizeof(float));
        row += s.n;
    }
    KVCache kv(d->hparams(), L, opt_.kv_type);
    std::vector<float> out((size_t)(L * V));
    Arena arena;
    ForwardOptions fo;
    fo.pool = opt_.pool;
    fo.kernels = opt_.kernels;
    fo.adapters = p ? p->adapters.get() : nullptr;
    d->forward(embeds.data(), L, kv.view(), LogitRows::All, out.data(), arena, fo);
    return out;
}

}  // namespace hg
