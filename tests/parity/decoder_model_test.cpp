// Decoder properties that need no reference file, on small random models built in memory:
// the adapter hook sits where H-LoRA needs it, cached / chunked / one-by-one evaluation agree,
// decoding allocates nothing, and the loader refuses malformed models with a clear message.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/error.h"
#include "decoder_fixture.h"
#include "model/decoder_loader.h"
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

std::shared_ptr<MemorySource> random_source(const Spec& sp, uint64_t seed = 1) {
    Rand r{seed};
    auto src = std::make_shared<MemorySource>("random-" + sp.arch);
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
        src->add_tensor(name, DType::F32, {rows, cols}, w.data());
    };
    auto vec = [&](const std::string& name, int64_t n, float base, float scale) {
        std::vector<float> w((size_t)n);
        for (auto& x : w) x = base + scale * r.next();
        src->add_tensor(name, DType::F32, {n}, w.data());
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
        auto d = load_decoder(random_source(sp));
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
    auto da = load_decoder(random_source(a)), db = load_decoder(random_source(b));
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
        auto d = load_decoder(base_src);
        std::vector<LinearKind> kinds = {LinearKind::AttnOutput, LinearKind::FfnDown};
        if (sp.fused_qkv) kinds.push_back(LinearKind::AttnQKV);
        else kinds.insert(kinds.end(), {LinearKind::AttnQ, LinearKind::AttnK, LinearKind::AttnV});
        if (sp.fused_gate_up) kinds.push_back(LinearKind::FfnGateUp);
        else kinds.insert(kinds.end(), {LinearKind::FfnGate, LinearKind::FfnUp});
        const auto toks = some_ids(9, (int)sp.V);
        for (LinearKind kind : kinds) {
            const int64_t layer = 1;
            const std::string name = "blk.1." + std::string(linear_kind_name(kind)) + ".weight";
            const Tensor W = *base_src->tensor(name);
            Rand r{77};
            std::vector<float> dw((size_t)W.numel()), w2((size_t)W.numel());
            for (size_t i = 0; i < dw.size(); ++i) {
                dw[i] = 0.2f * r.next();
                w2[i] = W.ptr<float>()[i] + dw[i];
            }
            AddDelta delta(Tensor::view(DType::F32, {W.shape[0], W.shape[1]}, dw.data()));
            OneAdapter set(layer, kind, &delta);

            auto mod_src = random_source(sp);
            mod_src->add_tensor(name, DType::F32, {W.shape[0], W.shape[1]}, w2.data());
            auto dmod = load_decoder(mod_src);

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
    auto d = load_decoder(random_source(Spec{}));
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
    auto expect_error = [](std::shared_ptr<MemorySource> src, const std::string& needle) {
        try {
            load_decoder(src);
            ADD_FAILURE() << "no error for: " << needle;
        } catch (const Error& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find(src->name()), std::string::npos) << msg;
            EXPECT_NE(msg.find(needle), std::string::npos) << msg;
        }
    };
    Spec sp;
    auto s = random_source(sp);
    s->set_string("general.architecture", "gpt2");
    expect_error(s, "not a supported text decoder");

    s = std::make_shared<MemorySource>("nokey");
    s->set_string("general.architecture", "phi3");
    expect_error(s, "phi3.embedding_length");

    s = random_source(sp);
    s->set_int("phi3.attention.head_count_kv", 3);
    expect_error(s, "not a multiple");

    s = random_source(sp);
    std::vector<float> junk(10);
    s->add_tensor("blk.1.attn_output.weight", DType::F32, {2, 5}, junk.data());
    expect_error(s, "blk.1.attn_output.weight has shape [2, 5], expected [32, 32]");

    s = random_source(sp);
    s->set_int("phi3.block_count", 3);
    expect_error(s, "missing tensor blk.2.attn_norm.weight");

    s = random_source(sp);
    s->set_int("phi3.block_count", 1);
    expect_error(s, "more layers than block_count");

    s = random_source(sp);
    s->add_tensor("rope_factors_long.weight", DType::F32, {4}, junk.data());
    expect_error(s, "longrope");

    s = random_source(sp);
    std::vector<int32_t> ints(32 * 32);
    s->add_tensor("blk.0.attn_output.weight", DType::I32, {32, 32}, ints.data());
    expect_error(s, "matmul does not take");

    s = random_source(sp);
    s->set_float("phi3.attention.layer_norm_rms_epsilon", -1.0);
    expect_error(s, "layer_norm_rms_epsilon");
}

TEST(DecoderModel, ForwardRefusesBadCalls) {
    auto d = load_decoder(random_source(Spec{}));
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
