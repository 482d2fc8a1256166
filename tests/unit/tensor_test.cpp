#include "core/arena.h"
#include "core/error.h"
#include "core/half.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "test_util.h"

#include <atomic>
#include <cmath>
#include <vector>

using namespace hg;

TEST(Tensor, ViewShapesAndStrides) {
    std::vector<float> buf(2 * 3 * 4);
    Tensor t = Tensor::view(DType::F32, {2, 3, 4}, buf.data());
    EXPECT_EQ(t.numel(), 24);
    EXPECT_EQ(t.rows(), 6);
    EXPECT_EQ(t.cols(), 4);
    EXPECT_EQ(t.stride[0], 48u);
    EXPECT_EQ(t.stride[1], 16u);
    EXPECT_EQ(t.stride[2], 4u);
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_EQ(t.shape_str(), "[2, 3, 4]");
}

TEST(Tensor, QuantizedRowBytes) {
    Tensor t = Tensor::view(DType::Q4_K, {8, 512}, nullptr);
    EXPECT_EQ(t.row_bytes(), 2u * 144u);
    EXPECT_EQ(t.nbytes(), 8u * 2u * 144u);
    EXPECT_THROW(Tensor::view(DType::Q8_0, {4, 33}, nullptr), Error);
}

TEST(Half, Fp16RoundTripAndRounding) {
    // Every half value converts to float and back unchanged (NaNs stay NaN).
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = fp16_to_fp32(static_cast<uint16_t>(h));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(f))));
            continue;
        }
        EXPECT_EQ(fp32_to_fp16(f), h) << h;
    }
    EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7bff);
    EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7c00);               // rounds to inf
    EXPECT_EQ(fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00);     // tie -> even
    EXPECT_EQ(fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);     // tie -> even (up)
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // tie at the smallest subnormal -> 0
    EXPECT_EQ(fp32_to_fp16(std::ldexp(1.5f, -25)), 0x0001);
}

TEST(Half, Bf16Rounding) {
    EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x3f808000)), 0x3f80);  // tie -> even (down)
    EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x3f818000)), 0x3f82);  // tie -> even (up)
    EXPECT_EQ(fp32_to_bf16(f32_from_bits(0x3f808001)), 0x3f81);
    EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(NAN))));
}

TEST(ThreadPool, RunsEveryThreadOnceAndParallelForCovers) {
    ThreadPool pool(3);
    std::atomic<int> mask{0};
    pool.run([&](int ith, int nth) {
        EXPECT_EQ(nth, 3);
        mask.fetch_or(1 << ith);
    });
    EXPECT_EQ(mask.load(), 7);
    for (int64_t n : {1, 2, 5, 1000}) {
        std::vector<int> hit(n, 0);
        pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
            for (int64_t i = b; i < e; ++i) hit[i]++;
        });
        for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hit[i], 1);
    }
    // Many small back-to-back jobs (the decode pattern) complete.
    std::atomic<int64_t> sum{0};
    for (int i = 0; i < 2000; ++i) pool.run([&](int ith, int) { sum += ith; });
    EXPECT_EQ(sum.load(), 2000 * 3);
}

TEST(Arena, SteadyStateAllocatesNothing) {
    Arena a;
    for (int pass = 0; pass < 5; ++pass) {
        float* x = a.alloc<float>(1000);
        float* y = a.alloc<float>(50000);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(x) % 64, 0u);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(y) % 64, 0u);
        x[999] = y[49999] = 1;
        a.reset();
    }
    const size_t heap = a.n_heap_allocations();
    for (int pass = 0; pass < 5; ++pass) {
        a.alloc<float>(1000);
        a.alloc<float>(50000);
        a.reset();
    }
    EXPECT_EQ(a.n_heap_allocations(), heap);
}
