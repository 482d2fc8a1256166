// H-LoRA fast path (three matmuls + fused gate, every kernel table this CPU runs) against the
// plain-loop per-expert reference (hlora_add_ref), over weight dtypes and awkward shapes.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/error.h"
#include "core/quants.h"
#include "core/cpu_features.h"
#include "core/ops.h"
#include "core/thread_pool.h"
#include "model/hlora.h"
#include "model/weight_source.h"
#include "test_util.h"

using namespace hg;

namespace {

struct Shape {
    int64_t in, out, rank;
    int experts;
    float scaling;
};

std::vector<float> randn(size_t n, float stddev, std::mt19937& rng) {
    std::normal_distribution<float> d(0.0f, stddev);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// One case: random adapter in `type`, random x[M, in] and y0[M, out]; returns fast vs ref stats
// of the adapter's contribution (optionally handing back both contributions).
hgtest::ErrorStats run_case(const Kernels& K, const Shape& s, DType type, int64_t M, uint32_t seed,
                            std::vector<float>* fast_out = nullptr, std::vector<float>* ref_out = nullptr) {
    std::mt19937 rng(seed);
    WeightMap map;
    const auto A = randn(s.rank * s.in, 1.0f / std::sqrt((float)s.in), rng);
    const auto B = randn(s.out * s.rank, 0.5f / std::sqrt((float)s.rank), rng);
    const auto R = randn((size_t)s.experts * s.in, 2.0f / std::sqrt((float)s.in), rng);
    map.add_converted("blk.0.attn_qkv.hlora_a", type, {s.rank, s.in}, A.data());
    map.add_converted("blk.0.attn_qkv.hlora_b", type, {s.out, s.rank}, B.data());
    map.add_converted("blk.0.attn_qkv.hlora_route", type, {s.experts, s.in}, R.data());
    const HLoraWeights w = HLoraWeights::bind(map.source("random"), "blk.0.attn_qkv", s.rank, s.experts, s.scaling);

    const auto x = randn(M * s.in, 1.0f, rng);
    const auto y0 = randn(M * s.out, 1.0f, rng);  // the base linear's output: the adapter adds to it
    std::vector<float> fast = y0, ref = y0;
    ThreadPool pool(2);
    Arena arena;
    hlora_add(fast.data(), x.data(), M, w, arena, pool, K);
    hlora_add_ref(ref.data(), x.data(), M, w);
    // compare the adapter's contribution itself, not y0 + something small
    for (size_t i = 0; i < fast.size(); ++i) {
        fast[i] -= y0[i];
        ref[i] -= y0[i];
    }
    if (fast_out) *fast_out = fast;
    if (ref_out) *ref_out = ref;
    return hgtest::compare(fast, ref);
}

std::vector<const Kernels*> tables() {
    std::vector<const Kernels*> t;
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
        if (const Kernels* k = kernels_for(isa)) t.push_back(k);
    return t;
}

}  // namespace

// Awkward small shapes: rank 4 (one slot per expert), experts 1/2/4/8, in not a multiple of 8,
// M = 1 (decode) and M > 1 (prefill). Float weights: both paths widen weights exactly; the fast
// path rounds a[M, r] to fp32 once more than the double reference, so agreement is ~1e-7 relative.
TEST(HLoraConformance, FusedEqualsUnfusedFloatWeights) {
    const Shape shapes[] = {
        {33, 50, 4, 4, 8.0f}, {96, 288, 16, 4, 8.0f}, {64, 256, 64, 4, 8.0f}, {160, 96, 16, 4, 4.0f},
        {17, 5, 6, 2, 2.5f},  {40, 24, 8, 1, 1.0f},   {48, 40, 16, 8, 3.0f},
    };
    int n = 0;
    for (const Kernels* K : tables())
        for (DType type : {DType::F32, DType::F16, DType::BF16})
            for (const Shape& s : shapes)
                for (int64_t M : {1, 7, 33}) {
                    std::vector<float> ref;
                    const hgtest::ErrorStats e = run_case(*K, s, type, M, 1000 + n, nullptr, &ref);
                    double ref_max = 0;
                    for (float v : ref) ref_max = std::max(ref_max, (double)std::fabs(v));
                    EXPECT_EQ(e.n_nonfinite, 0u);
                    EXPECT_LE(e.nmse, 1e-12) << K->name << " " << dtype_name(type) << " in=" << s.in
                                             << " out=" << s.out << " r=" << s.rank << " M=" << M << " "
                                             << hgtest::to_string(e);
                    // Per-element: float rounding of sums of O(in) terms, relative to the output scale
                    // (a flat relative bound would fail on outputs where the terms cancel).
                    EXPECT_LE(e.max_abs, 1e-5 * ref_max) << K->name << " " << hgtest::to_string(e);
                    ++n;
                }
    std::printf("  %d cases\n", n);
}

// Block-quantized adapters (a user's quantized plugin). Every table follows ggml's semantics:
// activations are quantized on the fly to Q8_0 (x before the route and A matmuls, the gated rank
// vector before B). So (1) each optimised table must equal the scalar table up to summation order
// (integer block dots are exact), and (2) the scalar table differs from the exact per-expert
// reference only by that activation quantization: two Q8 stages, each a relative step of at most
// 1/254 of its 32-block maximum, measured by the kernels suite at nmse ~3e-5 per matmul; three
// chained matmuls and a softmax gate stay below nmse 1e-3.
TEST(HLoraConformance, FusedEqualsUnfusedQuantizedWeights) {
    const Shape shapes[] = {{64, 96, 32, 4, 8.0f}, {256, 64, 64, 4, 8.0f}};  // rank: whole blocks
    int n = 0;
    for (DType type : {DType::Q8_0, DType::Q4_0})
        for (const Shape& s : shapes)
            for (int64_t M : {1, 9}) {
                const uint32_t seed = 2000 + n;
                std::vector<float> scalar_fast, exact;
                const hgtest::ErrorStats q = run_case(kernels_ref(), s, type, M, seed, &scalar_fast, &exact);
                EXPECT_LE(q.nmse, 1e-3) << "scalar vs exact " << dtype_name(type) << " M=" << M << " "
                                        << hgtest::to_string(q);
                for (const Kernels* K : tables()) {
                    if (K == &kernels_ref()) continue;
                    std::vector<float> fast;
                    run_case(*K, s, type, M, seed, &fast, nullptr);
                    const hgtest::ErrorStats e = hgtest::compare(fast, scalar_fast);
                    EXPECT_LE(e.nmse, 1e-10) << K->name << " vs scalar " << dtype_name(type) << " M=" << M << " "
                                             << hgtest::to_string(e);
                }
                ++n;
            }
    std::printf("  %d cases\n", n);
}

// The released shapes (Phi-3-mini, BF16): qkv 3072->9216 r=64 (COM), gate_up 3072->16384 r=256
// (GEN), down 8192->3072 r=64, decode (M=1) and a short prefill (M=3).
TEST(HLoraConformance, FusedEqualsUnfusedReleasedShapes) {
    const Shape shapes[] = {{3072, 9216, 64, 4, 8.0f}, {3072, 16384, 256, 4, 8.0f}, {8192, 3072, 64, 4, 8.0f}};
    for (const Kernels* K : tables())
        for (const Shape& s : shapes)
            for (int64_t M : {1, 3}) {
                const hgtest::ErrorStats e = run_case(*K, s, DType::BF16, M, 77);
                std::printf("  %-7s in=%-5lld out=%-5lld r=%-3lld M=%lld: %s\n", K->name, (long long)s.in,
                            (long long)s.out, (long long)s.rank, (long long)M, hgtest::to_string(e).c_str());
                EXPECT_LE(e.nmse, 1e-12);
                EXPECT_LE(e.max_rel, 1e-3);
            }
}

TEST(HLoraConformance, ZeroRowsIsANoOp) {
    std::mt19937 rng(5);
    WeightMap map;
    const auto A = randn(16 * 32, 1, rng), B = randn(8 * 16, 1, rng), R = randn(4 * 32, 1, rng);
    map.add_converted("p.hlora_a", DType::F32, {16, 32}, A.data());
    map.add_converted("p.hlora_b", DType::F32, {8, 16}, B.data());
    map.add_converted("p.hlora_route", DType::F32, {4, 32}, R.data());
    const HLoraWeights w = HLoraWeights::bind(map.source("random"), "p", 16, 4, 8.0f);
    ThreadPool pool(1);
    Arena arena;
    float y = 1.0f;
    hlora_add(&y, nullptr, 0, w, arena, pool);
    EXPECT_EQ(y, 1.0f);
}
