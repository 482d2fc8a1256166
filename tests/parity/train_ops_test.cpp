// The backward ops (core/ops_backward.h), one by one, against torch float64 autograd
// (tests/reference/gen_train_ops.py): activations, norms, softmax, attention (sliding window + GQA,
// MQA, non-causal), RoPE (both pair conventions, Phi-3 su/longrope factors), cross-entropy with
// ignored rows. Every table this CPU runs is checked; errors are relative to the largest |gradient|
// of the tensor. Plus: the gradient through a quantized weight is the gradient through its
// dequantized values, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/ops_backward.h"
#include "core/quants.h"
#include "test_util.h"

namespace {

using nlohmann::json;
using namespace hg;

constexpr double kRelTol = 1e-5;

const json& cases() {
    static const json j = [] {
        std::ifstream f(hgtest::fixture("train_ops/cases.json"));
        return json::parse(f);
    }();
    return j;
}

std::vector<float> vec(const json& a) { return a.get<std::vector<float>>(); }

double rel_err(const std::vector<float>& got, const json& ref_json) {
    const std::vector<double> ref = ref_json.get<std::vector<double>>();
    EXPECT_EQ(got.size(), ref.size());
    double err = 0, mx = 0;
    for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
        err = std::max(err, std::fabs((double)got[i] - ref[i]));
        mx = std::max(mx, std::fabs(ref[i]));
    }
    return mx > 0 ? err / mx : err;
}

std::vector<const BackwardKernels*> tables() {
    std::vector<const BackwardKernels*> t{&backward_kernels_ref()};
    if (&backward_kernels() != &backward_kernels_ref()) t.push_back(&backward_kernels());
    return t;
}

void check(const std::string& what, const std::vector<float>& got, const json& ref) {
    const double e = rel_err(got, ref);
    std::printf("  %-34s rel err %.2e\n", what.c_str(), e);
    EXPECT_LE(e, kRelTol) << what;
}

TEST(TrainOps, EveryOpMatchesTorchAutograd) {
    ThreadPool& pool = default_pool();
    for (const BackwardKernels* bk : tables()) {
        for (const json& c : cases()["cases"]) {
            const std::string op = c["op"];
            const json& in = c["inputs"];
            const json& gr = c["grads"];
            const std::string tag = std::string(bk->name) + " " + op;
            if (op == "gelu_tanh" || op == "gelu_erf" || op == "quick_gelu" || op == "silu") {
                const auto x = vec(in["x"]), dy = vec(c["dy"]);
                std::vector<float> dx(x.size(), 0.0f);
                auto fn = op == "gelu_tanh" ? bk->gelu_tanh_backward
                          : op == "gelu_erf" ? bk->gelu_erf_backward
                          : op == "quick_gelu" ? bk->quick_gelu_backward
                                               : bk->silu_backward;
                fn(dx.data(), dy.data(), x.data(), (int64_t)x.size());
                check(tag, dx, gr["x"]);
            } else if (op == "swiglu") {
                const auto g = vec(in["gate"]), u = vec(in["up"]), dy = vec(c["dy"]);
                std::vector<float> dg(g.size(), 0.0f), du(u.size(), 0.0f);
                bk->swiglu_backward(dg.data(), du.data(), dy.data(), g.data(), u.data(), (int64_t)g.size());
                check(tag + " gate", dg, gr["gate"]);
                check(tag + " up", du, gr["up"]);
            } else if (op == "rmsnorm" || op == "layernorm") {
                const int64_t M = c["M"], N = c["N"];
                const auto x = vec(in["x"]), w = vec(in["w"]), dy = vec(c["dy"]);
                std::vector<float> dx(x.size(), 0.0f), dw(w.size(), 0.0f), db(w.size(), 0.0f);
                if (op == "rmsnorm") {
                    bk->rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), M, N, c["eps"]);
                } else {
                    bk->layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), M, N,
                                           c["eps"]);
                    check(tag + " b", db, gr["b"]);
                }
                check(tag + " x", dx, gr["x"]);
                check(tag + " w", dw, gr["w"]);
            } else if (op == "attention") {
                const int64_t T = c["T"];
                AttentionParams p;
                p.n_head = c["H"];
                p.n_kv_head = c["Hkv"];
                p.head_dim = c["D"];
                p.scale = 1.0f / std::sqrt((float)p.head_dim);
                p.causal = c["causal"];
                p.window = c["window"];
                const auto q = vec(in["q"]), k = vec(in["k"]), v = vec(in["v"]), dy = vec(c["dy"]);
                const size_t qs = (size_t)(p.n_head * p.head_dim), kvs = (size_t)(p.n_kv_head * p.head_dim);
                std::vector<float> out(q.size()), lse((size_t)(p.n_head * T));
                bk->attention_forward(out.data(), lse.data(), q.data(), qs, k.data(), v.data(), kvs, T, p, pool);
                std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
                bk->attention_backward(dq.data(), dk.data(), dv.data(), dy.data(), q.data(), qs, k.data(), v.data(), kvs,
                                       out.data(), lse.data(), T, p, pool);
                const std::string shape = " T" + std::to_string(T) + " H" + std::to_string(p.n_head) + "/" +
                                          std::to_string(p.n_kv_head) + (p.causal ? " causal" : "") +
                                          (p.window ? " w" + std::to_string(p.window) : "");
                check(tag + shape + " dq", dq, gr["q"]);
                check(tag + shape + " dk", dk, gr["k"]);
                check(tag + shape + " dv", dv, gr["v"]);
            } else if (op == "rope") {
                const int64_t T = c["T"];
                const int H = c["H"], D = c["D"], n_rot = c["n_rot"];
                const std::vector<int32_t> pos = c["pos"].get<std::vector<int32_t>>();
                std::vector<float> factors;
                if (!c["factors"].is_null()) factors = vec(c["factors"]);
                auto dx = vec(c["dy"]);
                bk->rope_backward(dx.data(), T, (size_t)(H * D), H, D, n_rot, pos.data(), c["theta"],
                                  c["interleaved"] ? RopeMode::Interleaved : RopeMode::RotateHalf,
                                  factors.empty() ? nullptr : factors.data(), c["attn_factor"]);
                check(tag + (c["interleaved"] ? " interleaved" : " rotate-half") + (factors.empty() ? "" : " longrope"),
                      dx, gr["x"]);
            } else if (op == "softmax") {
                const int64_t M = c["M"], N = c["N"];
                auto p = vec(in["x"]);
                kernels_ref().softmax(p.data(), M, N);
                const auto dy = vec(c["dy"]);
                std::vector<float> dx(p.size(), 0.0f);
                softmax_backward(dx.data(), dy.data(), p.data(), M, N);
                check(tag, dx, gr["x"]);
            } else if (op == "cross_entropy") {
                const int64_t M = c["M"], V = c["V"];
                const auto logits = vec(in["logits"]);
                const std::vector<int32_t> t = c["targets"].get<std::vector<int32_t>>();
                std::vector<float> dl(logits.size());
                int64_t nv = 0;
                const double loss = cross_entropy(dl.data(), logits.data(), t.data(), M, V, 1.0f, &nv);
                EXPECT_EQ(nv, 4);
                EXPECT_NEAR(loss, c["loss"].get<double>(), kRelTol * c["loss"].get<double>());
                check(tag, dl, gr["logits"]);
            } else {
                ADD_FAILURE() << "unknown op " << op;
            }
        }
    }
}

TEST(TrainOps, RopeForwardWithoutFactorsIsTheInferenceKernel) {
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0, 1);
    const int T = 9, H = 3, D = 24;
    std::vector<float> a((size_t)T * H * D);
    for (auto& v : a) v = nd(rng);
    std::vector<float> b = a;
    const std::vector<float> orig = a;
    std::vector<int32_t> pos{0, 1, 2, 3, 17, 100, 511, 1000, 4095};
    kernels().rope(a.data(), T, (size_t)H * D, H, D, D, pos.data(), 10000.0f, RopeMode::RotateHalf);
    rope_forward(b.data(), T, (size_t)H * D, H, D, D, pos.data(), 10000.0f, RopeMode::RotateHalf, nullptr, 1.0f);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
    // ... and its backward undoes it (a rotation's transpose is its inverse), up to rounding
    backward_kernels_ref().rope_backward(b.data(), T, (size_t)H * D, H, D, D, pos.data(), 10000.0f,
                                         RopeMode::RotateHalf, nullptr, 1.0f);
    double err = 0;
    for (size_t i = 0; i < b.size(); ++i) err = std::max(err, (double)std::fabs(b[i] - orig[i]));
    EXPECT_LE(err, 1e-5);
}

TEST(TrainOps, GradientThroughQuantizedWeightsIsThroughTheirDequantizedValues) {
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0, 1);
    const int64_t N = 24, K = 512, M = 3;
    std::vector<float> w((size_t)(N * K)), dy((size_t)(M * N));
    for (auto& v : w) v = nd(rng);
    for (auto& v : dy) v = nd(rng);
    for (DType t : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
        std::vector<uint8_t> packed(row_bytes(t, K) * (size_t)N);
        for (int64_t n = 0; n < N; ++n) quantize_row(t, w.data() + n * K, packed.data() + n * row_bytes(t, K), K);
        const Tensor Wq = Tensor::view(t, {N, K}, packed.data());
        std::vector<float> wd((size_t)(N * K));
        for (int64_t n = 0; n < N; ++n) dequantize_row(t, Wq.row(n), wd.data() + n * K, K);
        const Tensor Wf = Tensor::view(DType::F32, {N, K}, wd.data());
        for (const BackwardKernels* bk : tables()) {
            std::vector<float> a((size_t)(M * K), 0.0f), b((size_t)(M * K), 0.0f);
            bk->matmul_backward_x(a.data(), dy.data(), Wq, M, default_pool());
            bk->matmul_backward_x(b.data(), dy.data(), Wf, M, default_pool());
            EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << dtype_name(t) << " " << bk->name;
        }
    }
}

}  // namespace
