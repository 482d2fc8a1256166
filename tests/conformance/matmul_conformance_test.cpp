// Every optimised matmul (each table kernels_for(isa) that runs here) against the scalar
// reference, for every weight type and awkward shapes.
//
// Two kinds of check:
//  * Exact: data built so that every float operation is exact (power-of-two block scales, small
//    integers), so any summation order gives the same bits. The optimised result must equal
//    the reference bit for bit: this proves the integer block dots (maddubs/madd, unsigned
//    offsets, scale/min unpacking, panel interleaving, tails) are exact.
//  * Random normal data: per element |y - y_ref| <= (n_terms + 16) * 2^-24 * S, where S is the sum
//    of |block scale| * |integer products| (vec_dot_ref's abs_terms; sum |x_k w_k| for the float
//    types): the worst-case rounding of any float summation order. Also NMSE <= 1e-10.
// Also: activation quantization bit-identical to quantize_row, and 1 vs 2 threads identical.
#include <cstdio>
#include <cstring>
#include <map>

#include "test_common.h"

namespace {

using hg::DType;

const DType kQuantTypes[] = {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K};
const DType kFloatTypes[] = {DType::F32, DType::F16, DType::BF16};

struct Shape {
    int64_t M, N, K;
};

// Reference output plus the per-element error bound.
void reference(const hg::Tensor& W, const float* x, const float* bias, int64_t M, std::vector<float>& y,
               std::vector<double>& bound) {
    const int64_t N = W.rows(), K = W.cols();
    hg::ThreadPool pool(2);
    y.assign(M * N, 0);
    hg::kernels_ref().matmul(y.data(), x, W, bias, M, pool);
    bound.assign(M * N, 0);
    const DType at = hg::vec_dot_type(W.type);
    const size_t arow = at == DType::F32 ? 0 : hg::row_bytes(at, K);
    std::vector<uint8_t> xq(M * arow);
    for (int64_t m = 0; m < M && at != DType::F32; ++m) hg::quantize_row(at, x + m * K, &xq[m * arow], K);
    const int64_t n_terms = at == DType::F32 ? K : K / hg::dtype_info(W.type).block_size * 2 + 8;
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            double abs_terms = 0;
            const void* a = at == DType::F32 ? static_cast<const void*>(x + m * K) : &xq[m * arow];
            hg::vec_dot_ref(W.type, W.row(n), a, K, &abs_terms);
            const double yb = std::fabs(y[m * N + n]) + (bias ? std::fabs(bias[n]) : 0);
            bound[m * N + n] = (n_terms + 16) * std::ldexp(1.0, -24) * (abs_terms + yb) + 1e-30;
        }
}

// Worst figures per (table, weight type), printed at the end of each test for the record.
struct Worst {
    double nmse = 0, max_rel = 0, bound_ratio = 0;
    int cases = 0;
};
std::map<std::string, Worst>& worst_by_type() {
    static std::map<std::string, Worst> w;
    return w;
}
void print_worst(const char* what) {
    for (const auto& [k, w] : worst_by_type())
        std::printf("[ %s ] %s: %d cases, worst NMSE %.3g, worst max_rel %.3g, worst |err|/bound %.3g\n", what,
                    k.c_str(), w.cases, w.nmse, w.max_rel, w.bound_ratio);
    worst_by_type().clear();
}

void check_random(const hg::Kernels* T, DType type, Shape s, bool with_bias, uint32_t seed) {
    SCOPED_TRACE(std::string(T->name) + " " + hg::dtype_name(type) + " " + conf::shape_name(s.M, s.N, s.K) +
                 (with_bias ? " bias" : ""));
    conf::Weights W(type, s.N, s.K, seed);
    const auto x = conf::randn(s.M * s.K, seed + 1);
    const auto bias = conf::randn(s.N, seed + 2);
    std::vector<float> ref;
    std::vector<double> bound;
    reference(W.t, x.data(), with_bias ? bias.data() : nullptr, s.M, ref, bound);
    for (int threads : {1, 2}) {
        hg::ThreadPool pool(threads);
        std::vector<float> y(s.M * s.N, NAN);
        T->matmul(y.data(), x.data(), W.t, with_bias ? bias.data() : nullptr, s.M, pool);
        int64_t bad = 0, worst = -1;
        double worst_ratio = 0;
        for (size_t i = 0; i < y.size(); ++i) {
            const double r = std::fabs((double)y[i] - ref[i]) / bound[i];
            if (!(r <= 1.0)) ++bad;
            if (!(r <= worst_ratio)) {
                worst_ratio = r;
                worst = (int64_t)i;
            }
        }
        const auto e = hgtest::compare(y, ref);
        Worst& w = worst_by_type()[std::string(T->name) + " " + hg::dtype_name(type)];
        w.nmse = std::max(w.nmse, e.nmse);
        w.max_rel = std::max(w.max_rel, e.max_rel);
        w.bound_ratio = std::max(w.bound_ratio, worst_ratio);
        w.cases += threads == 1;
        EXPECT_EQ(bad, 0) << threads << " threads: worst element " << worst << " got " << y[worst] << " ref "
                          << ref[worst] << " bound " << bound[worst] << "; " << hgtest::to_string(e);
        EXPECT_LE(e.nmse, 1e-10) << hgtest::to_string(e);
        EXPECT_EQ(e.n_nonfinite, 0u);
    }
}

TEST(MatmulConformance, QuantizedRandomWithinRoundingBound) {
    const Shape shapes[] = {{1, 1, 256},  {1, 37, 512},  {2, 19, 256},   {3, 70, 768}, {4, 16, 256},
                            {5, 9, 256},  {17, 33, 512}, {64, 72, 1024}, {70, 17, 256}, {1, 24, 8192},
                            {13, 9, 8192}, {8, 8, 256}, {19, 65, 512}, {31, 100, 2048},
                            {150, 40, 8192}};  // AVX-512 GEMM: activations in two L2 chunks (MC < M)
    CONF_FOR_EACH_TABLE(T) {
        uint32_t seed = 100;
        for (DType t : kQuantTypes)
            for (const Shape& s : shapes) {
                check_random(T, t, s, (seed & 1) != 0, seed);
                ++seed;
            }
        // blocks of 32: K not a multiple of 256
        for (DType t : {DType::Q4_0, DType::Q8_0})
            for (Shape s : {Shape{1, 5, 32}, Shape{3, 11, 96}, Shape{9, 21, 160}, Shape{6, 3, 32},
                                  Shape{23, 37, 224}, Shape{20, 9, 32}})  // 7 blocks: the AVX-512 16-k-step transposes half used
                check_random(T, t, s, true, seed++);
    }
    print_worst("quantized matmul vs reference");
}

TEST(MatmulConformance, FloatRandomWithinRoundingBound) {
    const Shape shapes[] = {{1, 1, 1},   {1, 13, 7},    {2, 31, 100}, {3, 17, 33},    {5, 40, 257},
                            {6, 16, 64}, {17, 16, 300}, {64, 50, 300}, {1, 9, 8192}, {7, 33, 8192},
                            {13, 19, 513},
                            // the GEMM's blocking: several 96-row activation blocks (last one 8 rows:
                            // one strip of 6 and a tail of 2), panel groups of 8 (19 panels, the
                            // last 12 columns wide), 3 k blocks of 256 (last 88); then a last block
                            // of 1 row and a last panel of 1 column
                            {200, 300, 600}, {97, 129, 257}};
    CONF_FOR_EACH_TABLE(T) {
        uint32_t seed = 500;
        for (DType t : kFloatTypes)
            for (const Shape& s : shapes) {
                check_random(T, t, s, (seed & 1) != 0, seed);
                ++seed;
            }
    }
    print_worst("float matmul vs reference");
}

// ---- exact checks

uint16_t f16(float v) { return hg::fp32_to_fp16(v); }

// Raw weight rows of `type` with power-of-two scales and random integer contents.
std::vector<uint8_t> exact_weights(DType type, int64_t N, int64_t K, uint32_t seed) {
    std::mt19937 rng(seed);
    auto rb = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    const size_t row = hg::row_bytes(type, K);
    std::vector<uint8_t> out(row * N + 64);
    for (int64_t n = 0; n < N; ++n) {
        uint8_t* r = out.data() + n * row;
        if (type == DType::Q4_0) {
            auto* b = reinterpret_cast<hg::block_q4_0*>(r);
            for (int64_t i = 0; i < K / 32; ++i) {
                b[i].d = f16(std::ldexp(1.0f, -rb(4, 6)));
                for (auto& q : b[i].qs) q = (uint8_t)rb(0, 255);
            }
        } else if (type == DType::Q8_0) {
            auto* b = reinterpret_cast<hg::block_q8_0*>(r);
            for (int64_t i = 0; i < K / 32; ++i) {
                b[i].d = f16(std::ldexp(1.0f, -rb(4, 6)));
                for (auto& q : b[i].qs) q = (int8_t)rb(-128, 127);  // -128 too: files may hold it
            }
        } else if (type == DType::Q4_K) {
            auto* b = reinterpret_cast<hg::block_q4_K*>(r);
            for (int64_t i = 0; i < K / 256; ++i) {
                b[i].d = f16(std::ldexp(1.0f, -8));
                b[i].dmin = f16(std::ldexp(1.0f, -8));
                for (auto& s : b[i].scales) s = (uint8_t)rb(0, 255);
                for (auto& q : b[i].qs) q = (uint8_t)rb(0, 255);
            }
        } else if (type == DType::Q6_K) {
            auto* b = reinterpret_cast<hg::block_q6_K*>(r);
            for (int64_t i = 0; i < K / 256; ++i) {
                b[i].d = f16(std::ldexp(1.0f, -8));
                for (auto& s : b[i].scales) s = (int8_t)rb(-16, 16);
                for (auto& q : b[i].ql) q = (uint8_t)rb(0, 255);
                for (auto& q : b[i].qh) q = (uint8_t)rb(0, 255);
            }
        } else {  // float types: small integers, exact in F16 and BF16
            for (int64_t k = 0; k < K; ++k) {
                const float v = (float)rb(-8, 8);
                if (type == DType::F32) std::memcpy(r + 4 * k, &v, 4);
                else {
                    const uint16_t h = type == DType::F16 ? hg::fp32_to_fp16(v) : hg::fp32_to_bf16(v);
                    std::memcpy(r + 2 * k, &h, 2);
                }
            }
        }
    }
    return out;
}

// Activations whose Q8_0 / Q8_K quantization has a power-of-two scale and is exact: integers
// in [-4, 4] with one +-127 per block of `blk`, times 2^-5.
std::vector<float> exact_acts(int64_t M, int64_t K, int blk, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> d(-4, 4), pos(0, blk - 1), sg(0, 1);
    std::vector<float> x(M * K);
    for (auto& v : x) v = std::ldexp((float)d(rng), -5);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t b = 0; b < K / blk; ++b) x[m * K + b * blk + pos(rng)] = std::ldexp(sg(rng) ? 127.0f : -127.0f, -5);
    return x;
}

TEST(MatmulConformance, ExactDataGivesIdenticalBits) {
    const Shape shapes[] = {{1, 7, 256}, {2, 9, 512}, {3, 16, 256}, {4, 8, 1024}, {5, 13, 256},
                            {11, 23, 512}, {64, 40, 768}, {33, 8, 1024},
                            // AVX-512 GEMM: 32-row panels with a tail of 6, the 3-row micro-kernel
                            {19, 70, 512}, {15, 33, 256}};
    CONF_FOR_EACH_TABLE(T) {
        uint32_t seed = 900;
        for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::F32, DType::F16, DType::BF16})
            for (const Shape& s : shapes) {
                SCOPED_TRACE(std::string(T->name) + " " + hg::dtype_name(t) + " " + conf::shape_name(s.M, s.N, s.K));
                conf::Weights W(t, exact_weights(t, s.N, s.K, seed), s.N, s.K);
                const int blk = t == DType::Q4_K || t == DType::Q6_K ? 256 : 32;
                std::vector<float> x = hg::dtype_info(t).quantized ? exact_acts(s.M, s.K, blk, seed + 1)
                                                                   : exact_acts(s.M, s.K, 32, seed + 1);
                if (!hg::dtype_info(t).quantized)
                    for (auto& v : x) v = std::ldexp(v, 5);  // small integers
                ++seed;
                hg::ThreadPool pool(2);
                std::vector<float> ref(s.M * s.N), y(s.M * s.N, NAN);
                hg::kernels_ref().matmul(ref.data(), x.data(), W.t, nullptr, s.M, pool);
                T->matmul(y.data(), x.data(), W.t, nullptr, s.M, pool);
                int64_t diff = 0;
                for (size_t i = 0; i < y.size(); ++i) diff += std::memcmp(&y[i], &ref[i], 4) != 0;
                EXPECT_EQ(diff, 0) << "first: got " << y[0] << " ref " << ref[0];
            }
    }
}

TEST(MatmulConformance, ActivationQuantizationIsBitIdentical) {
    CONF_FOR_EACH_TABLE(T) {
        for (DType t : {DType::Q8_0, DType::Q8_K}) {
            for (int64_t n : {256, 512, 3072}) {
                for (int variant = 0; variant < 6; ++variant) {
                    // variant 5: float32 subnormals (the block scale's inverse overflows)
                    std::vector<float> x = conf::randn(n, 31 + variant + (int)n,
                                                       variant == 1 ? 1e-20f : variant == 5 ? 1e-40f : 1.0f);
                    if (variant == 2) std::fill(x.begin(), x.begin() + 256, 0.0f);  // an all-zero block
                    if (variant == 3)  // ties: amax 127 gives scale 1, x.5 values round away (Q8_0) / to even (Q8_K)
                        for (int64_t i = 0; i < n; ++i) x[i] = i % 32 == 0 ? -127.0f : (float)((int)(i % 21) - 10) + 0.5f;
                    if (variant == 4)  // +amax and -amax in the same block: the first one wins
                        for (int64_t i = 0; i < n; i += 64) {
                            x[i + 5] = 9.0f;
                            x[i + 7] = -9.0f;
                        }
                    std::vector<uint8_t> a(hg::row_bytes(t, n)), b(hg::row_bytes(t, n));
                    hg::quantize_row(t, x.data(), a.data(), n);
                    T->quantize_act(t, x.data(), b.data(), n);
                    EXPECT_EQ(a, b) << T->name << " " << hg::dtype_name(t) << " n=" << n << " variant " << variant;
                }
            }
        }
    }
}

TEST(MatmulConformance, OneAndTwoThreadsGiveIdenticalResults) {
    CONF_FOR_EACH_TABLE(T) {
        for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::F32, DType::F16, DType::BF16})
            for (int64_t M : {1, 3, 37, 150}) {
                conf::Weights W(t, 45, 512, 7);
                const auto x = conf::randn(M * 512, 8);
                std::vector<float> y1(M * 45), y2(M * 45);
                hg::ThreadPool p1(1), p2(2);
                T->matmul(y1.data(), x.data(), W.t, nullptr, M, p1);
                T->matmul(y2.data(), x.data(), W.t, nullptr, M, p2);
                EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << hg::dtype_name(t) << " M=" << M;
            }
    }
}

// The error that quantizing the activations adds, against the exact product of the stored
// weights (reported; bounded loosely: Q8 activations keep NMSE well under 1e-3).
TEST(MatmulConformance, ActivationQuantizationErrorReport) {
    hg::ThreadPool pool(2);
    for (DType t : kQuantTypes) {
        conf::Weights W(t, 64, 3072, 11);
        const auto x = conf::randn(4 * 3072, 12);
        std::vector<float> y(4 * 64), exact(4 * 64);
        hg::kernels_ref().matmul(y.data(), x.data(), W.t, nullptr, 4, pool);
        hg::matmul_dequant_ref(exact.data(), x.data(), W.t, nullptr, 4, pool);
        const auto e = hgtest::compare(y, exact);
        std::printf("[ activation quantization error ] %s: %s\n", hg::dtype_name(t), hgtest::to_string(e).c_str());
        EXPECT_LT(e.nmse, 1e-3) << hg::dtype_name(t);
    }
}

}  // namespace
