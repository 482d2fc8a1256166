// Google Benchmark microbenchmarks of the kernel tables (active level unless HEALTHGPT_ISA caps
// it): matmul per weight type (decode M=1 with weights cycled past the L3, prefill M=512),
// attention (decode and prefill), conv2d (VQGAN-decoder-like layers) and the row-wise ops.
// Counters: weight bytes/s and FLOP/s. The markdown report with machine roofs is
// `healthgpt bench --kernels` (same library code, core/kernels/kernel_bench.h).
//
//   build/bin/bench_kernels --benchmark_filter='matmul/Q4_K'
#if __has_include(<benchmark/benchmark.h>)
#include <benchmark/benchmark.h>

#include <atomic>
#include <cmath>
#include <random>
#include <vector>

#include "core/kernels/kernel_bench.h"
#include "core/ops.h"
#include "core/quants.h"

namespace {

hg::ThreadPool& pool() { return hg::default_pool(); }

std::vector<float> randn(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d;
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// args: type id, M, N, K
void BM_matmul(benchmark::State& st) {
    const auto type = static_cast<hg::DType>(st.range(0));
    const int64_t M = st.range(1), N = st.range(2), K = st.range(3);
    const size_t wbytes = hg::row_bytes(type, K) * N;
    const int copies = M <= 4 ? (int)std::max<size_t>(1, ((size_t)160 << 20) / wbytes + 1) : 1;
    std::vector<std::vector<uint8_t>> w(copies, hg::random_weights(type, N, K, 7));
    std::vector<hg::Tensor> W;
    for (auto& b : w) W.push_back(hg::Tensor::view(type, {N, K}, b.data()));
    const auto x = randn(M * K, 1);
    std::vector<float> y(M * N);
    int i = 0;
    for (auto _ : st) {
        hg::matmul(y.data(), x.data(), W[i++ % copies], nullptr, M, pool());
        benchmark::DoNotOptimize(y.data());
    }
    st.counters["weight_B/s"] = benchmark::Counter((double)wbytes, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["FLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate);
    st.SetLabel(hg::dtype_name(type));
}

void matmul_args(benchmark::internal::Benchmark* b) {
    for (hg::DType t : {hg::DType::F32, hg::DType::F16, hg::DType::BF16, hg::DType::Q8_0, hg::DType::Q4_0,
                        hg::DType::Q4_K, hg::DType::Q6_K})
        for (int64_t M : {1, 512})
            for (auto nk : {std::pair<int64_t, int64_t>{3072, 3072}, {9216, 3072}, {16384, 3072}, {3072, 8192}})
                b->Args({(int64_t)t, M, nk.first, nk.second});
    b->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(BM_matmul)->Name("matmul")->Apply(matmul_args);

// args: n_q, n_kv, kv type (F32/F16), heads, head_dim, causal. Phi-3-mini: 32 x 96 causal over an
// F16 KV cache; CLIP ViT-L/14-336: 577 tokens, 16 x 64, bidirectional, F32 K/V.
void BM_attention(benchmark::State& st) {
    const int64_t n_q = st.range(0), n_kv = st.range(1);
    const auto kt = static_cast<hg::DType>(st.range(2));
    hg::AttentionParams p;
    p.n_head = static_cast<int>(st.range(3));
    p.n_kv_head = p.n_head;
    p.head_dim = static_cast<int>(st.range(4));
    p.causal = st.range(5) != 0;
    p.scale = 1.0f / std::sqrt((float)p.head_dim);
    p.q_pos0 = p.causal ? n_kv - n_q : 0;
    const int64_t row = (int64_t)p.n_head * p.head_dim;
    const auto q = randn(n_q * row, 2), kf = randn(n_kv * row, 3);
    std::vector<uint8_t> k(hg::row_bytes(kt, n_kv * row)), v(k.size());
    hg::quantize_row(kt, kf.data(), k.data(), n_kv * row);
    hg::quantize_row(kt, kf.data(), v.data(), n_kv * row);
    std::vector<float> out(n_q * row);
    for (auto _ : st) {
        hg::kernels().attention(out.data(), q.data(), n_q, row, k.data(), v.data(), kt, n_kv,
                                hg::row_bytes(kt, row), p, pool());
        benchmark::DoNotOptimize(out.data());
    }
    // visible (query, key) pairs x heads x 2 dot products of head_dim multiply-adds
    double pairs = 0;
    for (int64_t i = 0; i < n_q; ++i) pairs += p.causal ? (double)(p.q_pos0 + i + 1) : (double)n_kv;
    st.counters["GFLOP/s"] = benchmark::Counter(pairs * p.n_head * p.head_dim * 4.0, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
    st.SetLabel(hg::dtype_name(kt));
}
BENCHMARK(BM_attention)
    ->Name("attention")
    ->Args({1, 512, (int64_t)hg::DType::F16, 32, 96, 1})
    ->Args({1, 4096, (int64_t)hg::DType::F16, 32, 96, 1})
    ->Args({512, 512, (int64_t)hg::DType::F16, 32, 96, 1})
    ->Args({512, 512, (int64_t)hg::DType::F32, 32, 96, 1})
    ->Args({577, 577, (int64_t)hg::DType::F32, 16, 64, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// args: channels in/out, spatial size; 3x3, stride 1, pad 1, F16 weights (VQGAN decoder layers)
void BM_conv2d(benchmark::State& st) {
    const int64_t C = st.range(0), Co = st.range(1), S = st.range(2);
    const auto wf = randn(Co * C * 9, 4);
    std::vector<uint8_t> wb(hg::row_bytes(hg::DType::F16, Co * C * 9));
    hg::quantize_row(hg::DType::F16, wf.data(), wb.data(), Co * C * 9);
    const hg::Tensor w = hg::Tensor::view(hg::DType::F16, {Co, C, 3, 3}, wb.data());
    const auto x = randn(C * S * S, 5);
    std::vector<float> out(Co * S * S);
    for (auto _ : st) {
        hg::kernels().conv2d(out.data(), x.data(), C, S, S, w, nullptr, 1, 1, 1, 1, 1, pool());
        benchmark::DoNotOptimize(out.data());
    }
    st.counters["FLOP/s"] = benchmark::Counter(2.0 * Co * C * 9 * S * S, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_conv2d)
    ->Name("conv2d_3x3")
    ->Args({512, 512, 32})
    ->Args({256, 256, 128})
    ->Args({128, 128, 256})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_rowops(benchmark::State& st) {
    const int64_t M = 512, N = 3072;
    const auto x = randn(M * N, 6), w = randn(N, 7);
    std::vector<float> y(M * N);
    const int op = (int)st.range(0);
    for (auto _ : st) {
        switch (op) {
            case 0: hg::kernels().rmsnorm(y.data(), x.data(), w.data(), M, N, 1e-5f); break;
            case 1: hg::kernels().softmax(y.data(), M, N); break;
            case 2: hg::kernels().silu(y.data(), x.data(), M * N); break;
            case 3: hg::kernels().gelu_erf(y.data(), x.data(), M * N); break;
            default: hg::kernels().gelu_tanh(y.data(), x.data(), M * N); break;
        }
        benchmark::DoNotOptimize(y.data());
    }
    static const char* names[] = {"rmsnorm", "softmax", "silu", "gelu_erf", "gelu_tanh"};
    st.SetLabel(names[op]);
    st.counters["elem/s"] = benchmark::Counter((double)M * N, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_rowops)->Name("rowops_512x3072")->DenseRange(0, 4)->Unit(benchmark::kMicrosecond);

// Cost of one pool job (the "barrier" every op of a forward pays): parallel_for over n items
// with an empty body, and run() with an empty body, on the default pool. Time per job.
void BM_pool_parallel_for(benchmark::State& st) {
    const int64_t n = st.range(0);
    std::atomic<int64_t> sink{0};
    for (auto _ : st) pool().parallel_for(n, [&](int64_t b, int64_t e, int) { sink.fetch_add(e - b, std::memory_order_relaxed); });
    benchmark::DoNotOptimize(sink.load());
    st.counters["threads"] = pool().size();
}
BENCHMARK(BM_pool_parallel_for)->Name("pool/parallel_for")->Arg(16)->Arg(4096)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_pool_run(benchmark::State& st) {
    std::atomic<int64_t> sink{0};
    for (auto _ : st) pool().run([&](int ith, int) { sink.fetch_add(ith, std::memory_order_relaxed); });
    benchmark::DoNotOptimize(sink.load());
    st.counters["threads"] = pool().size();
}
BENCHMARK(BM_pool_run)->Name("pool/run")->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
#else
#include <cstdio>
int main() {
    std::puts("bench_kernels: Google Benchmark is not installed (libbenchmark-dev); use `healthgpt bench --kernels`");
    return 0;
}
#endif
