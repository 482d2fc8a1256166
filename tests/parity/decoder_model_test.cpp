// Decoder properties that need no reference file, on small random models built in memory:
// the adapter hook sits where H-LoRA needs it, cached / chunked / one-by-one evaluation agree,
// decoding allocates nothing, and the loader refuses malformed models with a clear message.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <tuple>

#include "core/error.h"
#include "decoder_fixture.h"
#include "model/decoder_loader.h"
#include "model/hlora.h"
#include "runtime/generate.h"

using namespace hg;

namespace {

struct Spec {
    std::string arch = "phi3";
    int64_t E = 32, I = 48, L = 2, H = 4, KV = 2, V = 40;
    bool fused_qkv = true, fused_gate_up = true, qkv_bias = false, tied = false;
    int64_t sliding_window = 0;
};

struct Rand {
    uint64_t s;
    float next() {  // uniform in [-1, 1)
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return (float)((s >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
    }
};

// The map owns the weights; load() keeps it alive with the decoder.
std::shared_ptr<WeightMap> random_source(const Spec& sp, uint64_t seed = 1) {
    Rand r{seed};
    auto src = std::make_shared<WeightMap>();
    const std::string a = sp.arch + ".";
    src->set_string("general.architecture", sp.arch);
    src->set_int(a + "embedding_length", sp.E);
    src->set_int(a + "feed_forward_length", sp.I);
    src->set_int(a + "block_count", sp.L);
    src->set_int(a + "attention.head_count", sp.H);
    src->set_int(a + "attention.head_count_kv", sp.KV);
    src->set_float(a + "attention.layer_norm_rms_epsilon", 1e-5);
    src->set_float(a + "rope.freq_base", 10000.0);
    src->set_int(a + "context_length", 256);
    if (sp.sliding_window) src->set_int(a + "attention.sliding_window", sp.sliding_window);
    const int64_t hd = sp.E / sp.H, QD = sp.H * hd, KVD = sp.KV * hd;
    auto mat = [&](const std::string& name, int64_t rows, int64_t cols, float scale) {
        std::vector<float> w((size_t)(rows * cols));
        for (auto& x : w) x = scale * r.next();
        src->add_copy(name, DType::F32, {rows, cols}, w.data());
    };
    auto vec = [&](const std::string& name, int64_t n, float base, float scale) {
        std::vector<float> w((size_t)n);
        for (auto& x : w) x = base + scale * r.next();
        src->add_copy(name, DType::F32, {n}, w.data());
    };
    mat("token_embd.weight", sp.V, sp.E, 1.0f);
    vec("output_norm.weight", sp.E, 1.0f, 0.2f);
    if (!sp.tied) mat("output.weight", sp.V, sp.E, 0.3f);
    const float ws = 1.7f / std::sqrt((float)sp.E), wf = 1.7f / std::sqrt((float)sp.I);
    for (int64_t l = 0; l < sp.L; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        vec(b + "attn_norm.weight", sp.E, 1.0f, 0.2f);
        vec(b + "ffn_norm.weight", sp.E, 1.0f, 0.2f);
        if (sp.fused_qkv) {
            mat(b + "attn_qkv.weight", QD + 2 * KVD, sp.E, ws);
        } else {
            mat(b + "attn_q.weight", QD, sp.E, ws);
            mat(b + "attn_k.weight", KVD, sp.E, ws);
            mat(b + "attn_v.weight", KVD, sp.E, ws);
            if (sp.qkv_bias) {
                vec(b + "attn_q.bias", QD, 0.0f, 0.5f);
                vec(b + "attn_k.bias", KVD, 0.0f, 0.5f);
                vec(b + "attn_v.bias", KVD, 0.0f, 0.5f);
            }
        }
        mat(b + "attn_output.weight", sp.E, QD, ws);
        if (sp.fused_gate_up) {
            mat(b + "ffn_up.weight", 2 * sp.I, sp.E, ws);
        } else {
            mat(b + "ffn_gate.weight", sp.I, sp.E, ws);
            mat(b + "ffn_up.weight", sp.I, sp.E, ws);
        }
        mat(b + "ffn_down.weight", sp.E, sp.I, wf);
    }
    return src;
}

std::shared_ptr<const Decoder> load(const std::shared_ptr<WeightMap>& m, const std::string& origin = "random model") {
    return load_decoder(m->source(origin), m);
}

std::vector<Spec> all_specs() {
    Spec phi3;
    Spec phi3_swa = phi3;
    phi3_swa.sliding_window = 3;
    Spec qwen2;
    qwen2.arch = "qwen2";
    qwen2.fused_qkv = qwen2.fused_gate_up = false;
    qwen2.qkv_bias = true;
    Spec llama;
    llama.arch = "llama";
    llama.fused_qkv = llama.fused_gate_up = false;
    llama.tied = true;
    llama.KV = 1;
    return {phi3, phi3_swa, qwen2, llama};
}

std::vector<int32_t> some_ids(int n, int V) {
    std::vector<int32_t> v;
    for (int i = 0; i < n; ++i) v.push_back((i * 7 + 3) % V);
    return v;
}

// An adapter that adds dW·x: the same as running the model with W + dW.
class AddDelta : public LinearAdapter {
public:
    AddDelta(Tensor dW) : dW_(dW) {}
    void apply(float* y, const float* x, int64_t M, Arena& arena, ThreadPool& pool, const Kernels& k) const override {
        float* t = arena.alloc<float>(M * dW_.rows());
        k.matmul(t, x, dW_, nullptr, M, pool);
        for (int64_t i = 0; i < M * dW_.rows(); ++i) y[i] += t[i];
        ++calls;
    }
    Tensor dW_;
    mutable int calls = 0;
};

class OneAdapter : public AdapterSet {
public:
    OneAdapter(int64_t layer, LinearKind kind, const LinearAdapter* a) : layer_(layer), kind_(kind), a_(a) {}
    const LinearAdapter* find(int64_t layer, LinearKind kind) const override {
        return layer == layer_ && kind == kind_ ? a_ : nullptr;
    }
    int64_t layer_;
    LinearKind kind_;
    const LinearAdapter* a_;
};

}  // namespace

TEST(DecoderModel, IncrementalChunkedAndFullForwardAgree) {
    // With the scalar reference kernels every output element is computed the same way
    // whatever the batch, so the three schedules must agree bit for bit.
    for (const Spec& sp : all_specs()) {
        auto d = load(random_source(sp));
        const auto toks = some_ids(13, (int)sp.V);
        for (DType kv : {DType::F32, DType::F16}) {
            const auto full = dectest::logits_all(*d, toks, kv, &kernels_ref());
            const auto one = dectest::logits_all(*d, toks, kv, &kernels_ref(), 1);
            const auto chunks = dectest::logits_all(*d, toks, kv, &kernels_ref(), 5);
            EXPECT_EQ(full, one) << sp.arch << " sw " << sp.sliding_window << " " << dtype_name(kv);
            EXPECT_EQ(full, chunks) << sp.arch << " sw " << sp.sliding_window << " " << dtype_name(kv);
        }
        // The active (possibly SIMD) kernels agree closely with the reference.
        const auto ref = dectest::logits_all(*d, toks, DType::F32, &kernels_ref());
        const auto act = dectest::logits_all(*d, toks, DType::F32, &kernels(), 1);
        const auto e = hgtest::compare(act, ref);
        EXPECT_LE(e.max_abs, 1e-4) << sp.arch << " " << kernels().name << ": " << hgtest::to_string(e);
    }
}

TEST(DecoderModel, SlidingWindowChangesOnlyPositionsBeyondIt) {
    Spec a;
    Spec b = a;
    b.sliding_window = 3;
    auto da = load(random_source(a)), db = load(random_source(b));
    const auto toks = some_ids(10, (int)a.V);
    const auto la = dectest::logits_all(*da, toks, DType::F32, &kernels_ref());
    const auto lb = dectest::logits_all(*db, toks, DType::F32, &kernels_ref());
    const int64_t V = a.V;
    // Window 3 = keys p-3..p: positions 0..3 see everything either way.
    for (int64_t p = 0; p < 10; ++p) {
        double diff = 0;
        for (int64_t i = 0; i < V; ++i) diff = std::max(diff, (double)std::fabs(la[p * V + i] - lb[p * V + i]));
        if (p <= 3)
            EXPECT_EQ(diff, 0.0) << "position " << p;
        else
            EXPECT_GT(diff, 1e-4) << "position " << p;
    }
}

TEST(DecoderModel, AdapterHookEqualsModifiedWeights) {
    // For every linear of every family, an adapter adding dW·x must equal the model with
    // W + dW: the hook sees the linear's input and acts on its full (pre-split) output.
    for (const Spec& sp : all_specs()) {
        auto base_src = random_source(sp);
        auto d = load(base_src);
        std::vector<LinearKind> kinds = {LinearKind::AttnOutput, LinearKind::FfnDown};
        if (sp.fused_qkv) kinds.push_back(LinearKind::AttnQKV);
        else kinds.insert(kinds.end(), {LinearKind::AttnQ, LinearKind::AttnK, LinearKind::AttnV});
        if (sp.fused_gate_up) kinds.push_back(LinearKind::FfnGateUp);
        else kinds.insert(kinds.end(), {LinearKind::FfnGate, LinearKind::FfnUp});
        const auto toks = some_ids(9, (int)sp.V);
        for (LinearKind kind : kinds) {
            const int64_t layer = 1;
            const std::string name = "blk.1." + std::string(linear_kind_name(kind)) + ".weight";
            const Tensor W = *base_src->source("base").tensor(name);
            Rand r{77};
            std::vector<float> dw((size_t)W.numel()), w2((size_t)W.numel());
            for (size_t i = 0; i < dw.size(); ++i) {
                dw[i] = 0.2f * r.next();
                w2[i] = W.ptr<float>()[i] + dw[i];
            }
            AddDelta delta(Tensor::view(DType::F32, {W.shape[0], W.shape[1]}, dw.data()));
            OneAdapter set(layer, kind, &delta);

            auto mod_src = random_source(sp);
            mod_src->add_copy(name, DType::F32, {W.shape[0], W.shape[1]}, w2.data());
            auto dmod = load(mod_src);

            const auto& hp = d->hparams();
            KVCache cache(hp, 16, DType::F32);
            Arena arena;
            ForwardOptions fo;
            fo.kernels = &kernels_ref();
            fo.pool = &dectest::serial_pool();
            fo.adapters = &set;
            std::vector<float> emb(toks.size() * hp.n_embd), got(toks.size() * hp.n_vocab);
            d->embed(toks, emb.data());
            d->forward(emb.data(), (int64_t)toks.size(), cache.view(), LogitRows::All, got.data(), arena, fo);
            EXPECT_EQ(delta.calls, 1) << linear_kind_name(kind);
            const auto want = dectest::logits_all(*dmod, toks, DType::F32, &kernels_ref());
            const auto e = hgtest::compare(got, want);
            EXPECT_LE(e.max_abs, 1e-5) << sp.arch << " " << linear_kind_name(kind) << ": " << hgtest::to_string(e);
            // And the adapter really changed something.
            const auto plain = dectest::logits_all(*d, toks, DType::F32, &kernels_ref());
            EXPECT_GT(hgtest::compare(plain, want).max_abs, 1e-3) << sp.arch << " " << linear_kind_name(kind);
        }
    }
}

TEST(DecoderModel, DecodingAllocatesNothingInSteadyState) {
    auto d = load(random_source(Spec{}));
    const auto& hp = d->hparams();
    KVCache cache(hp, 32, DType::F16);
    Arena arena;
    std::vector<float> emb(hp.n_embd), logits(hp.n_vocab);
    auto step = [&](int i) {
        const std::vector<int32_t> id = {i % 40};
        d->embed(id, emb.data());
        d->forward(emb.data(), 1, cache.view(), LogitRows::Last, logits.data(), arena);
        cache.append(std::vector<uint64_t>{(uint64_t)i});
    };
    step(0);  // the first step sizes the arena
    const size_t allocs = arena.n_heap_allocations();
    for (int i = 1; i < 20; ++i) step(i);
    EXPECT_EQ(arena.n_heap_allocations(), allocs);
}

TEST(DecoderModel, LoaderRefusesMalformedModels) {
    auto expect_error = [](std::shared_ptr<WeightMap> src, const std::string& needle) {
        const std::string origin = "bad-model.gguf";
        try {
            load(src, origin);
            ADD_FAILURE() << "no error for: " << needle;
        } catch (const Error& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find(origin), std::string::npos) << msg;
            EXPECT_NE(msg.find(needle), std::string::npos) << msg;
        }
    };
    Spec sp;
    auto s = random_source(sp);
    s->set_string("general.architecture", "gpt2");
    expect_error(s, "not a supported text decoder");

    s = std::make_shared<WeightMap>();
    s->set_string("general.architecture", "phi3");
    expect_error(s, "phi3.embedding_length");

    s = random_source(sp);
    s->set_int("phi3.attention.head_count_kv", 3);
    expect_error(s, "not a multiple");

    s = random_source(sp);
    std::vector<float> junk(10);
    s->add_copy("blk.1.attn_output.weight", DType::F32, {2, 5}, junk.data());
    expect_error(s, "blk.1.attn_output.weight has shape [2, 5], expected [32, 32]");

    s = random_source(sp);
    s->set_int("phi3.block_count", 3);
    expect_error(s, "tensor blk.2.attn_norm.weight is missing");

    s = random_source(sp);
    s->set_int("phi3.block_count", 1);
    expect_error(s, "more layers than block_count");

    s = random_source(sp);
    s->add_copy("rope_factors_long.weight", DType::F32, {4}, junk.data());
    expect_error(s, "longrope");

    s = random_source(sp);
    std::vector<int32_t> ints(32 * 32);
    s->add_copy("blk.0.attn_output.weight", DType::I32, {32, 32}, ints.data());
    expect_error(s, "matmul kernels do not take");

    s = random_source(sp);
    s->set_float("phi3.attention.layer_norm_rms_epsilon", -1.0);
    expect_error(s, "layer_norm_rms_epsilon");

    s = random_source(sp);
    s->set_int("tokenizer.ggml.eos_token_id", 40);  // vocabulary is 40
    expect_error(s, "tokenizer.ggml.eos_token_id = 40 is outside the vocabulary");
}

TEST(DecoderModel, StopIdsFromTokenizerMetadata) {
    auto s = random_source(Spec{});
    EXPECT_TRUE(load(s)->stop_ids().empty());
    s->set_int("tokenizer.ggml.eos_token_id", 2);
    s->set_int("tokenizer.ggml.eot_token_id", 7);
    EXPECT_EQ(load(s)->stop_ids(), (std::vector<int32_t>{2, 7}));
    EXPECT_EQ(load_decoder(s->source("x"), s, {5})->stop_ids(), std::vector<int32_t>{5});  // a stated set wins
}

TEST(DecoderModel, ForwardRefusesBadCalls) {
    auto d = load(random_source(Spec{}));
    const auto& hp = d->hparams();
    KVCache cache(hp, 4, DType::F32);
    Arena arena;
    std::vector<float> emb(5 * hp.n_embd), logits(5 * hp.n_vocab);
    EXPECT_THROW(d->forward(emb.data(), 5, cache.view(), LogitRows::All, logits.data(), arena), Error);  // > capacity
    KVCache wrong(hp.n_layer, hp.kv_dim() + 1, 8, DType::F32);
    EXPECT_THROW(d->forward(emb.data(), 1, wrong.view(), LogitRows::All, logits.data(), arena), Error);
    const std::vector<int32_t> bad = {(int32_t)hp.n_vocab};
    EXPECT_THROW(d->embed(bad, emb.data()), Error);
}

// ---------------------------------------------------------------------------------------------
// H-LoRA plugins and vocabulary swaps

namespace {

// A plugin file in memory: H-LoRA triples for the given "blk.i.linear" -> (out, in).
std::shared_ptr<WeightMap> plugin_map(const std::vector<std::tuple<std::string, int64_t, int64_t>>& linears,
                                      int64_t rank = 8, int experts = 4) {
    auto m = std::make_shared<WeightMap>();
    m->set_string("general.type", "adapter");
    m->set_string("healthgpt.plugin.task", "comprehension");
    m->set_int("healthgpt.plugin.vision_layer", -2);
    m->set_int("healthgpt.plugin.rank", rank);
    m->set_float("healthgpt.plugin.alpha", 2.0 * rank);
    m->set_int("healthgpt.plugin.experts", experts);
    Rand r{99};
    auto mat = [&](const std::string& name, int64_t rows, int64_t cols, float scale) {
        std::vector<float> w((size_t)(rows * cols));
        for (auto& x : w) x = scale * r.next();
        m->add_copy(name, DType::F32, {rows, cols}, w.data());
    };
    for (const auto& [prefix, out, in] : linears) {
        mat(prefix + ".hlora_a", rank, in, 0.3f);
        mat(prefix + ".hlora_b", out, rank, 0.3f);
        mat(prefix + ".hlora_route", experts, in, 1.0f);
    }
    mat("mm.0.weight", 32, 16, 0.1f);
    mat("mm.2.weight", 32, 32, 0.1f);
    std::vector<float> b(32, 0.0f);
    m->add_copy("mm.0.bias", DType::F32, {32}, b.data());
    m->add_copy("mm.2.bias", DType::F32, {32}, b.data());
    return m;
}

// The expected wiring, spelled out: hlora_add_ref on the named (layer, linear).
class RefPluginAdapters : public AdapterSet {
public:
    struct Ref : LinearAdapter {
        const HLoraWeights* w;
        void apply(float* y, const float* x, int64_t M, Arena&, ThreadPool&, const Kernels&) const override {
            hlora_add_ref(y, x, M, *w);
        }
    };
    std::map<std::pair<int64_t, LinearKind>, Ref> refs;
    const LinearAdapter* find(int64_t layer, LinearKind kind) const override {
        auto it = refs.find({layer, kind});
        return it == refs.end() ? nullptr : &it->second;
    }
};

std::vector<float> run(const Decoder& d, const std::vector<int32_t>& toks, const AdapterSet* a) {
    const auto& hp = d.hparams();
    KVCache cache(hp, 16, DType::F32);
    Arena arena;
    ForwardOptions fo;
    fo.kernels = &kernels_ref();
    fo.pool = &dectest::serial_pool();
    fo.adapters = a;
    std::vector<float> emb(toks.size() * hp.n_embd), out(toks.size() * hp.n_vocab);
    d.embed(toks, emb.data());
    d.forward(emb.data(), (int64_t)toks.size(), cache.view(), LogitRows::All, out.data(), arena, fo);
    return out;
}

}  // namespace

TEST(DecoderModel, HLoraPluginIsWiredToItsLinears) {
    for (const Spec& sp : {all_specs()[0], all_specs()[2]}) {  // phi3 (fused), qwen2 (separate + biases)
        auto d = load(random_source(sp));
        const auto& hp = d->hparams();
        const bool phi3 = sp.arch == "phi3";
        const int64_t QKV = hp.q_dim() + 2 * hp.kv_dim();
        std::vector<std::tuple<std::string, int64_t, int64_t>> linears;
        std::vector<std::pair<int64_t, LinearKind>> where;
        if (phi3) {
            linears = {{"blk.1.attn_qkv", QKV, hp.n_embd}, {"blk.0.ffn_up", 2 * hp.n_ff, hp.n_embd},
                       {"blk.1.ffn_down", hp.n_embd, hp.n_ff}};
            where = {{1, LinearKind::AttnQKV}, {0, LinearKind::FfnGateUp}, {1, LinearKind::FfnDown}};
        } else {
            linears = {{"blk.0.attn_k", hp.kv_dim(), hp.n_embd}, {"blk.1.ffn_up", hp.n_ff, hp.n_embd},
                       {"blk.1.attn_output", hp.n_embd, hp.q_dim()}};
            where = {{0, LinearKind::AttnK}, {1, LinearKind::FfnUp}, {1, LinearKind::AttnOutput}};
        }
        auto pm = plugin_map(linears);
        const HLoraPlugin plugin = HLoraPlugin::load(pm->source("plugin.gguf"));
        const auto adapters = hlora_adapters(plugin, *d);
        RefPluginAdapters ref;
        for (size_t i = 0; i < where.size(); ++i) ref.refs[where[i]].w = plugin.find((int)where[i].first,
                                                                                     linear_kind_name(where[i].second));
        const auto toks = some_ids(7, (int)sp.V);
        const auto got = run(*d, toks, adapters.get());
        const auto want = run(*d, toks, &ref);
        const auto e = hgtest::compare(got, want);
        EXPECT_LE(e.max_abs, 1e-5) << sp.arch << ": " << hgtest::to_string(e);
        EXPECT_GT(hgtest::compare(run(*d, toks, nullptr), want).max_abs, 1e-3) << sp.arch;  // the plugin acts
    }
}

TEST(DecoderModel, HLoraPluginThatDoesNotFitIsRefused) {
    auto phi3 = load(random_source(all_specs()[0]), "phi3-text.gguf");
    const auto& hp = phi3->hparams();
    auto expect_error = [&](const std::shared_ptr<WeightMap>& pm, const std::string& needle) {
        const HLoraPlugin plugin = HLoraPlugin::load(pm->source("plugin.gguf"));
        try {
            hlora_adapters(plugin, *phi3);
            ADD_FAILURE() << "no error for: " << needle;
        } catch (const Error& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find("plugin.gguf"), std::string::npos) << msg;
            EXPECT_NE(msg.find(needle), std::string::npos) << msg;
        }
    };
    // A qwen2 plugin (separate q) on a phi3 base, a layer past the last, a wrong input width.
    expect_error(plugin_map({{"blk.0.attn_q", hp.q_dim(), hp.n_embd}}), "blk.0.attn_q has no matching linear");
    expect_error(plugin_map({{"blk.2.ffn_down", hp.n_embd, hp.n_ff}}), "blk.2.ffn_down has no matching linear");
    expect_error(plugin_map({{"blk.0.attn_qkv", hp.q_dim() + 2 * hp.kv_dim(), 16}}), "the linear is [64, 32]");
}

TEST(DecoderModel, VocabularySwapUsesTheNewRows) {
    // A generation plugin's fusion rows: same layers, a larger embedding table and head.
    Spec sp;
    auto base_src = random_source(sp);
    base_src->set_int("tokenizer.ggml.eos_token_id", 2);
    auto base = load(base_src);
    const int64_t V2 = 57, E = sp.E;
    Rand r{5};
    std::vector<float> emb((size_t)(V2 * E)), head((size_t)(V2 * E));
    for (auto& x : emb) x = r.next();
    for (auto& x : head) x = 0.3f * r.next();
    auto rows = std::make_shared<WeightMap>();
    const Tensor te = rows->add_copy("token_embd.weight", DType::F32, {V2, E}, emb.data());
    const Tensor to = rows->add_copy("output.weight", DType::F32, {V2, E}, head.data());
    auto swapped = with_vocabulary(base, te, to, rows);
    EXPECT_EQ(swapped->hparams().n_vocab, V2);
    EXPECT_EQ(swapped->stop_ids(), std::vector<int32_t>{2});

    auto full = random_source(sp);  // the same model built with those rows from the start
    full->add_copy("token_embd.weight", DType::F32, {V2, E}, emb.data());
    full->add_copy("output.weight", DType::F32, {V2, E}, head.data());
    auto want = load(full);
    const std::vector<int32_t> toks = {1, 50, 56, 3, 41};  // ids beyond the base vocabulary (40)
    EXPECT_EQ(run(*swapped, toks, nullptr), run(*want, toks, nullptr));
    EXPECT_THROW(with_vocabulary(base, te, Tensor::view(DType::F32, {V2 - 1, E}, head.data()), rows), Error);
}

TEST(DecoderModel, CachedPrefixesAreNotSharedAcrossModelsOrAdapters) {
    Spec sp;
    auto a = load(random_source(sp, 1)), b = load(random_source(sp, 2));  // same shapes, other weights
    auto store = std::make_shared<PrefixCache>(16 << 20);
    const auto ids = some_ids(10, (int)sp.V);
    Prompt p;
    p.add_tokens(ids);
    GenerateOptions opt;
    opt.max_new_tokens = 4;
    opt.save_prefix = 10;
    Generator ga(a, 64, DType::F32, &dectest::serial_pool()), gb(b, 64, DType::F32, &dectest::serial_pool());
    ga.set_prefix_cache(store);
    gb.set_prefix_cache(store);
    ga.generate(p, opt);
    EXPECT_EQ(store->size(), 1u);
    const auto rb = gb.generate(p, opt);
    EXPECT_EQ(rb.n_prompt_reused, 0);  // a's snapshot is not b's
    Generator fresh(b, 64, DType::F32, &dectest::serial_pool());
    GenerateOptions plain;
    plain.max_new_tokens = 4;
    EXPECT_EQ(fresh.generate(p, plain).tokens, rb.tokens);

    // Same model, another adapter: the cached positions of the plain run are not reused.
    Rand r{3};
    std::vector<float> dw((size_t)(sp.E * sp.E));
    for (auto& x : dw) x = 0.1f * r.next();
    AddDelta delta(Tensor::view(DType::F32, {sp.E, sp.E}, dw.data()));
    OneAdapter set(0, LinearKind::AttnOutput, &delta);
    GenerateOptions with = opt;
    with.adapters = &set;
    const auto ra = ga.generate(p, with);
    EXPECT_EQ(ra.n_prompt_reused, 0);
    EXPECT_GT(delta.calls, 0);
    const auto again = ga.generate(p, with);  // the same adapter again: reused
    EXPECT_EQ(again.n_prompt_reused, 9);
    EXPECT_EQ(again.tokens, ra.tokens);
}
