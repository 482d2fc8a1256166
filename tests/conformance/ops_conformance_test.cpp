// Every optimised attention, conv2d, norm, softmax, rope and elementwise op against the scalar
// reference. Bounds (stated, derived from the arithmetic):
//  * attention: outputs are convex combinations of V rows; float scores/exp/accumulation give
//    |err| <= 1e-5 * max|V| per element, NMSE <= 1e-10.
//  * conv2d: per element |err| <= (Cin*kh*kw + 4) * 2^-24 * (sum |w||x| + |bias|) (any float
//    summation order; the magnitude sum is the reference conv of |W| and |x|), NMSE <= 1e-12.
//  * rmsnorm/softmax: max_rel <= 2e-6 (float terms summed in double, exp within 2 ulp), NMSE <= 1e-12. layernorm/groupnorm: |err| <= 2^-20 (|ref| + |bias|) per element (<= 12 roundings; the
//    final x_hat * w + b may cancel, so the bound is on the magnitudes), NMSE <= 1e-12.
//  * silu/swiglu/quick_gelu: |err| <= 2e-6 * |ref| + 1e-37; gelu_erf/gelu_tanh: |err| <= 2e-6 *
//    |ref| + 2^-22 * |x| (erf/tanh absolute error ~1e-7, the 1 + erf cancellation for x < 0).
//  * rope, add, mul, scale: bit-identical.
// Also 1 vs 2 threads bit-identical for the threaded ops.
#include <cstdio>
#include <cstring>

#include "test_common.h"

namespace {

using hg::DType;

void expect_bitwise(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
    ASSERT_EQ(a.size(), b.size());
    int64_t diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff += std::memcmp(&a[i], &b[i], 4) != 0;
    EXPECT_EQ(diff, 0) << what;
}

// ---- attention

struct AttnCase {
    int64_t n_q, n_kv, q_pos0;
    int n_head, n_kv_head, head_dim;
    bool causal;
    int64_t window;
};

TEST(OpsConformance, Attention) {
    const AttnCase cases[] = {
        {1, 1, 0, 4, 4, 64, true, 0},       {1, 300, 299, 8, 8, 96, true, 0},   {37, 37, 0, 4, 4, 96, true, 0},
        {5, 40, 35, 4, 2, 64, true, 0},     {64, 64, 0, 8, 2, 128, true, 0},    {33, 33, 0, 4, 1, 40, true, 7},
        {1, 500, 499, 4, 4, 64, true, 100}, {10, 23, 0, 2, 2, 20, false, 0},    {9, 70, 61, 6, 3, 96, true, 16},
        {3, 5, 10, 2, 2, 32, true, 0},      {17, 100, 83, 4, 4, 512, true, 0},
        // rows that see no key at all (window past the end of the KV): output 0
        {6, 5, 20, 2, 2, 32, true, 4},      {7, 30, 0, 4, 2, 24, false, 5}, {5, 9, 3, 3, 3, 8, true, 2},
        // tiled prefill: several 24-row tiles and 64-key blocks, partial last tile / block, odd D
        {150, 150, 0, 4, 4, 64, false, 0},  {130, 200, 70, 4, 2, 96, true, 0}, {100, 100, 0, 2, 2, 72, true, 30},
        {49, 131, 0, 2, 1, 44, false, 0}};
    double worst_nmse = 0, worst_abs = 0;
    int n_cases = 0;
    CONF_FOR_EACH_TABLE(T) {
        uint32_t seed = 3;
        for (const AttnCase& c : cases)
            for (DType kt : {DType::F32, DType::F16}) {
                SCOPED_TRACE(std::string(T->name) + " n_q=" + std::to_string(c.n_q) + " n_kv=" + std::to_string(c.n_kv) +
                             " D=" + std::to_string(c.head_dim) + " heads=" + std::to_string(c.n_head) + "/" +
                             std::to_string(c.n_kv_head) + " window=" + std::to_string(c.window) + " " +
                             hg::dtype_name(kt));
                hg::AttentionParams p;
                p.n_head = c.n_head;
                p.n_kv_head = c.n_kv_head;
                p.head_dim = c.head_dim;
                p.scale = 1.0f / std::sqrt((float)c.head_dim);
                p.causal = c.causal;
                p.q_pos0 = c.q_pos0;
                p.window = c.window;
                const size_t q_stride = (size_t)c.n_head * c.head_dim + 5;  // padded rows
                const auto q = conf::randn(c.n_q * q_stride, seed++, 1.5f);
                const int64_t kv_row = (int64_t)c.n_kv_head * c.head_dim + 3;  // padded rows
                const size_t es = kt == DType::F16 ? 2 : 4;
                const size_t kv_stride = kv_row * es;
                auto kf = conf::randn(c.n_kv * kv_row, seed++, 1.5f), vf = conf::randn(c.n_kv * kv_row, seed++);
                std::vector<uint8_t> kb(c.n_kv * kv_stride), vb(c.n_kv * kv_stride);
                hg::quantize_row(kt, kf.data(), kb.data(), c.n_kv * kv_row);
                hg::quantize_row(kt, vf.data(), vb.data(), c.n_kv * kv_row);
                double vmax = 0;
                for (float v : vf) vmax = std::max(vmax, (double)std::fabs(v));
                const size_t n_out = c.n_q * c.n_head * c.head_dim;
                std::vector<float> ref(n_out), got1(n_out, NAN), got2(n_out, NAN);
                hg::ThreadPool p1(1), p2(2);
                hg::kernels_ref().attention(ref.data(), q.data(), c.n_q, q_stride, kb.data(), vb.data(), kt, c.n_kv,
                                            kv_stride, p, p2);
                T->attention(got1.data(), q.data(), c.n_q, q_stride, kb.data(), vb.data(), kt, c.n_kv, kv_stride, p, p1);
                T->attention(got2.data(), q.data(), c.n_q, q_stride, kb.data(), vb.data(), kt, c.n_kv, kv_stride, p, p2);
                const auto e = hgtest::compare(got1, ref);
                worst_nmse = std::max(worst_nmse, e.nmse);
                worst_abs = std::max(worst_abs, e.max_abs / vmax);
                ++n_cases;
                EXPECT_LE(e.max_abs, 1e-5 * vmax) << hgtest::to_string(e);
                EXPECT_LE(e.nmse, 1e-10) << hgtest::to_string(e);
                EXPECT_EQ(e.n_nonfinite, 0u);
                expect_bitwise(got1, got2, "1 vs 2 threads");
            }
    }
    std::printf("[ attention vs reference ] %d cases, worst NMSE %.3g, worst max_abs/max|V| %.3g\n", n_cases, worst_nmse,
                worst_abs);
}

// ---- conv2d

struct ConvCase {
    int64_t Cin, H, W, Cout, KH, KW;
    int stride, pt, pl, pb, pr;
};

TEST(OpsConformance, Conv2d) {
    const ConvCase cases[] = {
        {3, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1},   {8, 16, 16, 13, 3, 3, 2, 0, 0, 1, 1}, {17, 5, 23, 7, 1, 1, 1, 0, 0, 0, 0},
        {33, 7, 19, 6, 3, 5, 1, 1, 2, 1, 2},  {64, 12, 20, 12, 3, 3, 1, 1, 1, 1, 1}, {5, 13, 17, 4, 4, 4, 2, 1, 1, 1, 1},
        {40, 31, 9, 8, 3, 3, 2, 0, 0, 1, 1},  {2, 1, 1, 3, 1, 1, 1, 0, 0, 0, 0},    {16, 6, 40, 19, 3, 3, 1, 0, 2, 0, 0},
        // wider tiles (Wo 70: a third 32-pixel tile, its second half partly used), Cout 30 (three
        // 12-channel blocks), stride 3, a CLIP-style patch embedding (k = s = 14), KW above 64
        {3, 12, 70, 30, 3, 3, 1, 1, 1, 1, 1}, {6, 20, 50, 7, 3, 3, 3, 1, 1, 1, 1},  {3, 42, 56, 8, 14, 14, 14, 0, 0, 0, 0},
        {2, 3, 9, 5, 1, 70, 1, 0, 35, 0, 35}};
    double worst_nmse = 0, worst_ratio = 0;
    int n_cases = 0;
    CONF_FOR_EACH_TABLE(T) {
        uint32_t seed = 70;
        for (const ConvCase& c : cases)
            for (DType wt : {DType::F32, DType::F16, DType::BF16}) {
                SCOPED_TRACE(std::string(T->name) + " Cin=" + std::to_string(c.Cin) + " " + std::to_string(c.H) + "x" +
                             std::to_string(c.W) + " Cout=" + std::to_string(c.Cout) + " k=" + std::to_string(c.KH) +
                             "x" + std::to_string(c.KW) + " s=" + std::to_string(c.stride) + " " + hg::dtype_name(wt));
                const int64_t kdim = c.Cin * c.KH * c.KW;
                const auto wf = conf::randn(c.Cout * kdim, seed++, 0.1f);
                std::vector<uint8_t> wb(hg::row_bytes(wt, c.Cout * kdim));
                hg::quantize_row(wt, wf.data(), wb.data(), c.Cout * kdim);
                const hg::Tensor w = hg::Tensor::view(wt, {c.Cout, c.Cin, c.KH, c.KW}, wb.data());
                const auto x = conf::randn(c.Cin * c.H * c.W, seed++);
                const auto bias = conf::randn(c.Cout, seed++);
                const bool with_bias = seed % 2;
                const int64_t Ho = (c.H + c.pt + c.pb - c.KH) / c.stride + 1, Wo = (c.W + c.pl + c.pr - c.KW) / c.stride + 1;
                std::vector<float> ref(c.Cout * Ho * Wo), mag(ref.size()), got1(ref.size(), NAN), got2(ref.size(), NAN);
                hg::ThreadPool p1(1), p2(2);
                const float* b = with_bias ? bias.data() : nullptr;
                hg::kernels_ref().conv2d(ref.data(), x.data(), c.Cin, c.H, c.W, w, b, c.stride, c.pt, c.pl, c.pb, c.pr, p2);
                // magnitudes: the reference conv of |W| (as float32) and |x|
                std::vector<float> wabs(c.Cout * kdim), xabs(x.size()), babs(bias.size());
                hg::dequantize_row(wt, wb.data(), wabs.data(), c.Cout * kdim);
                for (auto& v : wabs) v = std::fabs(v);
                for (size_t i = 0; i < x.size(); ++i) xabs[i] = std::fabs(x[i]);
                for (size_t i = 0; i < bias.size(); ++i) babs[i] = std::fabs(bias[i]);
                const hg::Tensor wa = hg::Tensor::view(DType::F32, {c.Cout, c.Cin, c.KH, c.KW}, wabs.data());
                hg::kernels_ref().conv2d(mag.data(), xabs.data(), c.Cin, c.H, c.W, wa, with_bias ? babs.data() : nullptr,
                                         c.stride, c.pt, c.pl, c.pb, c.pr, p2);
                T->conv2d(got1.data(), x.data(), c.Cin, c.H, c.W, w, b, c.stride, c.pt, c.pl, c.pb, c.pr, p1);
                T->conv2d(got2.data(), x.data(), c.Cin, c.H, c.W, w, b, c.stride, c.pt, c.pl, c.pb, c.pr, p2);
                int64_t bad = 0;
                for (size_t i = 0; i < ref.size(); ++i) {
                    const double bound = (kdim + 4) * std::ldexp(1.0, -24) * mag[i] + 1e-30;
                    const double err = std::fabs((double)got1[i] - ref[i]);
                    if (!(err <= bound)) ++bad;
                    worst_ratio = std::max(worst_ratio, err / bound);
                }
                const auto e = hgtest::compare(got1, ref);
                worst_nmse = std::max(worst_nmse, e.nmse);
                ++n_cases;
                EXPECT_EQ(bad, 0) << hgtest::to_string(e);
                EXPECT_LE(e.nmse, 1e-12) << hgtest::to_string(e);
                expect_bitwise(got1, got2, "1 vs 2 threads");
            }
    }
    std::printf("[ conv2d vs reference ] %d cases, worst NMSE %.3g, worst |err|/bound %.3g\n", n_cases, worst_nmse,
                worst_ratio);
}

// ---- row-wise ops

TEST(OpsConformance, NormsAndSoftmax) {
    CONF_FOR_EACH_TABLE(T) {
        for (int64_t N : {1, 7, 8, 96, 1000, 3072, 5000}) {
            const int64_t M = 3;
            SCOPED_TRACE(std::string(T->name) + " N=" + std::to_string(N));
            auto x = conf::randn(M * N, 40 + (uint32_t)N, 3.0f);
            for (int64_t i = 0; i < M * N; i += 17) x[i] += 4.0f;  // non-zero mean
            const auto w = conf::randn(N, 41), b = conf::randn(N, 42);
            std::vector<float> r(M * N), g(M * N);
            auto check = [&](const char* what) {
                const auto e = hgtest::compare(g, r);
                EXPECT_LE(e.max_rel, 2e-6) << what << " " << hgtest::to_string(e);
                EXPECT_LE(e.nmse, 1e-12) << what << " " << hgtest::to_string(e);
                EXPECT_EQ(e.n_nonfinite, 0u) << what;
            };
            hg::kernels_ref().rmsnorm(r.data(), x.data(), w.data(), M, N, 1e-5f);
            T->rmsnorm(g.data(), x.data(), w.data(), M, N, 1e-5f);
            check("rmsnorm");
            hg::kernels_ref().rmsnorm(r.data(), x.data(), nullptr, M, N, 1e-6f);
            T->rmsnorm(g.data(), x.data(), nullptr, M, N, 1e-6f);
            check("rmsnorm no weight");
            hg::kernels_ref().layernorm(r.data(), x.data(), w.data(), b.data(), M, N, 1e-5f);
            T->layernorm(g.data(), x.data(), w.data(), b.data(), M, N, 1e-5f);
            for (int64_t i = 0; i < M * N; ++i)  // the bias add may cancel: bound by the magnitudes
                EXPECT_LE(std::fabs(g[i] - r[i]), std::ldexp(1.0, -20) * (std::fabs(r[i]) + std::fabs(b[i % N])))
                    << "layernorm element " << i;
            r = x;
            g = x;
            hg::kernels_ref().softmax(r.data(), M, N);
            T->softmax(g.data(), M, N);
            check("softmax");
        }
        // softmax with -inf entries (masked logits)
        std::vector<float> r = {1.0f, -INFINITY, 2.0f, -INFINITY, 0.5f, 3.0f, -1.0f, 0.0f, 7.0f};
        std::vector<float> g = r;
        hg::kernels_ref().softmax(r.data(), 1, 9);
        T->softmax(g.data(), 1, 9);
        const auto e = hgtest::compare(g, r);
        EXPECT_LE(e.max_rel, 2e-6) << hgtest::to_string(e);
    }
}

TEST(OpsConformance, GroupNorm) {
    CONF_FOR_EACH_TABLE(T) {
        for (auto [C, HW, G] : {std::tuple<int64_t, int64_t, int>{32, 7, 32}, {64, 33, 32}, {128, 1024, 32},
                                {6, 5, 3}, {512, 256, 32}}) {
            SCOPED_TRACE(std::string(T->name) + " C=" + std::to_string(C) + " HW=" + std::to_string(HW));
            auto x = conf::randn(C * HW, 50 + (uint32_t)C, 2.0f);
            for (auto& v : x) v += 1.5f;
            const auto w = conf::randn(C, 51), b = conf::randn(C, 52);
            std::vector<float> r(C * HW), g(C * HW);
            hg::kernels_ref().groupnorm(r.data(), x.data(), w.data(), b.data(), C, HW, G, 1e-6f);
            T->groupnorm(g.data(), x.data(), w.data(), b.data(), C, HW, G, 1e-6f);
            const auto e = hgtest::compare(g, r);
            int64_t bad = 0;
            for (int64_t i = 0; i < C * HW; ++i)
                if (!(std::fabs(g[i] - r[i]) <= std::ldexp(1.0, -20) * (std::fabs(r[i]) + std::fabs(b[i / HW])))) {
                    if (bad++ < 3)
                        ADD_FAILURE() << "element " << i << " x " << x[i] << " got " << g[i] << " ref " << r[i] << " w "
                                      << w[i / HW] << " b " << b[i / HW];
                }
            EXPECT_EQ(bad, 0) << hgtest::to_string(e);
            EXPECT_LE(e.nmse, 1e-12) << hgtest::to_string(e);
        }
    }
}

TEST(OpsConformance, RopeIsBitIdentical) {
    CONF_FOR_EACH_TABLE(T) {
        for (auto mode : {hg::RopeMode::RotateHalf, hg::RopeMode::Interleaved})
            for (auto [n_head, head_dim, n_rot] : {std::tuple<int, int, int>{32, 96, 96}, {4, 64, 32}, {2, 80, 80},
                                                   {3, 128, 128}, {2, 24, 12}, {1, 6, 6}}) {
                const int64_t n_tok = 9;
                const size_t stride = (size_t)n_head * head_dim + 3;
                auto x = conf::randn(n_tok * stride, 60 + head_dim);
                std::vector<int32_t> pos(n_tok);
                for (int64_t t = 0; t < n_tok; ++t) pos[t] = (int32_t)(t * 517 + 3);
                auto r = x, g = x;
                hg::kernels_ref().rope(r.data(), n_tok, stride, n_head, head_dim, n_rot, pos.data(), 10000.0f, mode);
                T->rope(g.data(), n_tok, stride, n_head, head_dim, n_rot, pos.data(), 10000.0f, mode);
                expect_bitwise(g, r, std::string(T->name) + " rope D=" + std::to_string(head_dim));
            }
    }
}

// Dense sweep plus random values for the activations.
std::vector<float> activation_inputs() {
    std::vector<float> x;
    for (int i = -200000; i <= 200000; ++i) x.push_back(i * 1e-4f);  // [-20, 20] step 1e-4
    for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 50.0f, -50.0f, 88.0f, -88.0f, 100.0f, -100.0f, 1e4f, -1e4f})
        x.push_back(v);
    const auto r = conf::randn(10001, 77, 4.0f);  // odd count: exercises the tail
    x.insert(x.end(), r.begin(), r.end());
    return x;
}

TEST(OpsConformance, Activations) {
    const auto x = activation_inputs();
    const auto u = conf::randn(x.size(), 78);
    const int64_t n = (int64_t)x.size();
    CONF_FOR_EACH_TABLE(T) {
        std::vector<float> r(n), g(n);
        auto check = [&](const char* what, double rel, double xabs) {
            int64_t bad = 0, worst = -1;
            double wr = 0;
            for (int64_t i = 0; i < n; ++i) {
                const double bound = rel * std::fabs(r[i]) + xabs * std::fabs(x[i]) + 1e-37;
                const double ratio = std::fabs((double)g[i] - r[i]) / bound;
                if (!(ratio <= 1)) ++bad;
                if (!(ratio <= wr)) {
                    wr = ratio;
                    worst = i;
                }
            }
            EXPECT_EQ(bad, 0) << T->name << " " << what << ": worst x=" << x[worst] << " got " << g[worst] << " ref "
                              << r[worst];
        };
        hg::kernels_ref().silu(r.data(), x.data(), n);
        T->silu(g.data(), x.data(), n);
        check("silu", 2e-6, 0);
        hg::kernels_ref().swiglu(r.data(), x.data(), u.data(), n);
        T->swiglu(g.data(), x.data(), u.data(), n);
        check("swiglu", 2e-6, 0);
        hg::kernels_ref().quick_gelu(r.data(), x.data(), n);
        T->quick_gelu(g.data(), x.data(), n);
        check("quick_gelu", 2e-6, 0);
        hg::kernels_ref().gelu_erf(r.data(), x.data(), n);
        T->gelu_erf(g.data(), x.data(), n);
        check("gelu_erf", 2e-6, std::ldexp(1.0, -22));
        hg::kernels_ref().gelu_tanh(r.data(), x.data(), n);
        T->gelu_tanh(g.data(), x.data(), n);
        check("gelu_tanh", 2e-6, std::ldexp(1.0, -22));
    }
}

TEST(OpsConformance, ElementwiseIsBitIdentical) {
    CONF_FOR_EACH_TABLE(T) {
        for (int64_t n : {1, 7, 8, 9, 1000, 4099}) {
            const auto a = conf::randn(n, 90), b = conf::randn(n, 91);
            std::vector<float> r(n), g(n);
            hg::kernels_ref().add(r.data(), a.data(), b.data(), n);
            T->add(g.data(), a.data(), b.data(), n);
            expect_bitwise(g, r, "add");
            hg::kernels_ref().mul(r.data(), a.data(), b.data(), n);
            T->mul(g.data(), a.data(), b.data(), n);
            expect_bitwise(g, r, "mul");
            hg::kernels_ref().scale(r.data(), a.data(), 0.37f, n);
            T->scale(g.data(), a.data(), 0.37f, n);
            expect_bitwise(g, r, "scale");
            // in place (y == x) is allowed for elementwise ops
            auto c = a;
            T->scale(c.data(), c.data(), 0.37f, n);
            expect_bitwise(c, r, "scale in place");
        }
    }
}

}  // namespace
