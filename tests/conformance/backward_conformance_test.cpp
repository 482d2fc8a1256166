// The fast backward level against the scalar reference (core/ops_backward.h): matmul dX through
// every stored weight type, dW and db, attention forward (with its log-sum-exp) and backward —
// causal, sliding window, GQA, MQA, non-causal, odd sizes — and 1 vs 2 threads bit-identical.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "core/ops_backward.h"
#include "core/quants.h"

namespace {

using namespace hg;

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

// max |a - b| / max |b|
double rel(const std::vector<float>& a, const std::vector<float>& b) {
    double e = 0, m = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        e = std::max(e, (double)std::fabs(a[i] - b[i]));
        m = std::max(m, (double)std::fabs(b[i]));
    }
    return m > 0 ? e / m : e;
}

const BackwardKernels* fast() {
    const BackwardKernels* f = backward_kernels_for(Isa::Avx2);
    if (!f) std::printf("  this CPU has no AVX2: only the scalar level exists here\n");
    return f;
}

TEST(BackwardConformance, MatmulDxEveryTypeAndDwMatchTheReference) {
    const BackwardKernels* F = fast();
    if (!F) GTEST_SKIP() << "no AVX2 on this CPU";
    ThreadPool one(1), two(2);
    const BackwardKernels& R = backward_kernels_ref();
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 7, 256}, {13, 33, 512}, {40, 70, 768}, {5, 3, 37}}) {
        const auto w = randn((size_t)(N * K), 1), dy = randn((size_t)(M * N), 2), x = randn((size_t)(M * K), 3);
        for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
            if (K % dtype_info(t).block_size) continue;
            std::vector<uint8_t> packed(row_bytes(t, K) * (size_t)N);
            if (t == DType::F32) std::memcpy(packed.data(), w.data(), packed.size());
            else
                for (int64_t n = 0; n < N; ++n) quantize_row(t, w.data() + n * K, packed.data() + n * row_bytes(t, K), K);
            const Tensor W = Tensor::view(t, {N, K}, packed.data());
            std::vector<float> r((size_t)(M * K), 0.5f), a = r, b = r;
            R.matmul_backward_x(r.data(), dy.data(), W, M, one);
            F->matmul_backward_x(a.data(), dy.data(), W, M, one);
            F->matmul_backward_x(b.data(), dy.data(), W, M, two);
            EXPECT_LE(rel(a, r), 2e-6) << dtype_name(t) << " M" << M << " N" << N << " K" << K;
            EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << "threads change dx";
        }
        std::vector<float> r((size_t)(N * K), 0.25f), a = r, b = r, rb((size_t)N, 0.1f), ab = rb, bb = rb;
        R.matmul_backward_w(r.data(), rb.data(), dy.data(), x.data(), M, N, K, one);
        F->matmul_backward_w(a.data(), ab.data(), dy.data(), x.data(), M, N, K, one);
        F->matmul_backward_w(b.data(), bb.data(), dy.data(), x.data(), M, N, K, two);
        std::printf("  matmul M%lld N%lld K%lld: dW rel err %.2e, db %.2e\n", (long long)M, (long long)N, (long long)K,
                    rel(a, r), rel(ab, rb));
        EXPECT_LE(rel(a, r), 2e-6);
        EXPECT_LE(rel(ab, rb), 2e-6);
        EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(ab.data(), bb.data(), ab.size() * sizeof(float)));
    }
}

TEST(BackwardConformance, AttentionForwardAndBackwardMatchTheReference) {
    const BackwardKernels* F = fast();
    if (!F) GTEST_SKIP() << "no AVX2 on this CPU";
    ThreadPool one(1), two(2);
    const BackwardKernels& R = backward_kernels_ref();
    struct Case { int64_t T; int H, Hk, D; bool causal; int64_t window; };
    for (const Case c : {Case{1, 2, 1, 8, true, 0}, Case{37, 4, 2, 24, true, 0}, Case{50, 4, 4, 44, true, 9},
                         Case{29, 6, 1, 16, true, 0}, Case{41, 2, 2, 32, false, 0}}) {
        AttentionParams p;
        p.n_head = c.H;
        p.n_kv_head = c.Hk;
        p.head_dim = c.D;
        p.scale = 1.0f / std::sqrt((float)c.D);
        p.causal = c.causal;
        p.window = c.window;
        // q rows padded (stride > H*D) as the decoder's fused q|k|v layout has them
        const size_t qs = (size_t)(c.H * c.D + 8), kvs = (size_t)(c.Hk * c.D + 4);
        const auto q = randn((size_t)c.T * qs, 4), k = randn((size_t)c.T * kvs, 5), v = randn((size_t)c.T * kvs, 6);
        const auto dout = randn((size_t)(c.T * c.H * c.D), 7);
        std::vector<float> ro((size_t)(c.T * c.H * c.D)), rl((size_t)(c.H * c.T)), fo = ro, fl = rl, fo2 = ro, fl2 = rl;
        R.attention_forward(ro.data(), rl.data(), q.data(), qs, k.data(), v.data(), kvs, c.T, p, one);
        F->attention_forward(fo.data(), fl.data(), q.data(), qs, k.data(), v.data(), kvs, c.T, p, one);
        F->attention_forward(fo2.data(), fl2.data(), q.data(), qs, k.data(), v.data(), kvs, c.T, p, two);
        EXPECT_LE(rel(fo, ro), 2e-6);
        EXPECT_LE(rel(fl, rl), 2e-6);
        EXPECT_EQ(0, std::memcmp(fo.data(), fo2.data(), fo.size() * sizeof(float)));
        std::vector<float> rq(q.size(), 0.0f), rk(k.size(), 0.0f), rv(v.size(), 0.0f);
        std::vector<float> fq = rq, fk = rk, fv = rv, gq = rq, gk = rk, gv = rv;
        R.attention_backward(rq.data(), rk.data(), rv.data(), dout.data(), q.data(), qs, k.data(), v.data(), kvs,
                             ro.data(), rl.data(), c.T, p, one);
        F->attention_backward(fq.data(), fk.data(), fv.data(), dout.data(), q.data(), qs, k.data(), v.data(), kvs,
                              fo.data(), fl.data(), c.T, p, one);
        F->attention_backward(gq.data(), gk.data(), gv.data(), dout.data(), q.data(), qs, k.data(), v.data(), kvs,
                              fo.data(), fl.data(), c.T, p, two);
        std::printf("  attention T%lld H%d/%d D%d%s%s: out %.1e dq %.1e dk %.1e dv %.1e\n", (long long)c.T, c.H, c.Hk,
                    c.D, c.causal ? " causal" : "", c.window ? " window" : "", rel(fo, ro), rel(fq, rq), rel(fk, rk),
                    rel(fv, rv));
        EXPECT_LE(rel(fq, rq), 1e-5);
        EXPECT_LE(rel(fk, rk), 1e-5);
        EXPECT_LE(rel(fv, rv), 1e-5);
        EXPECT_EQ(0, std::memcmp(fq.data(), gq.data(), fq.size() * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(fk.data(), gk.data(), fk.size() * sizeof(float)));
        EXPECT_EQ(0, std::memcmp(fv.data(), gv.data(), fv.size() * sizeof(float)));
    }
}

}  // namespace
