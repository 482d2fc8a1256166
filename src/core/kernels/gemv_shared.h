// The quantized GEMV driver shared by the AVX2 and AVX-512 levels: threads split the weight rows,
// each row is dotted with groups of up to 4 activation rows by the level's row-dot kernels.
// Internal linkage (anonymous namespace): each level compiles its own copy with its own ISA
// flags (see simd_shared.h).
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/ops.h"

namespace hg {
namespace {

// GEMV over all N for M <= 4 rows (quantized): dot(w_row, a_m) per row.
template <typename WBlock, typename ABlock>
using DotFn = void (*)(const WBlock*, const ABlock* const*, int64_t, float*, const float* const*);

// ad: float activation block scales (M x nb) for the 32-block types, else nullptr.
template <typename WBlock, typename ABlock>
inline void gemv_quant(DotFn<WBlock, ABlock> d1, DotFn<WBlock, ABlock> d2, DotFn<WBlock, ABlock> d3, DotFn<WBlock, ABlock> d4,
                float* y, const Tensor& W, const float* bias, int64_t M, const ABlock* act, const float* ad, int64_t nb,
                ThreadPool& pool) {
    const int64_t N = W.rows();
    const uint8_t* Wd = static_cast<const uint8_t*>(W.data);
    const size_t wrow = W.row_bytes();
    pool.parallel_for(
        N,
        [&](int64_t n0, int64_t n1, int) {
            for (int64_t m0 = 0; m0 < M; m0 += 4) {
                const int mr = static_cast<int>(std::min<int64_t>(4, M - m0));
                const ABlock* a[4];
                const float* s[4] = {};
                for (int i = 0; i < mr; ++i) {
                    a[i] = act + (m0 + i) * nb;
                    if (ad) s[i] = ad + (m0 + i) * nb;
                }
                for (int64_t n = n0; n < n1; ++n) {
                    const WBlock* w = reinterpret_cast<const WBlock*>(Wd + n * wrow);
                    float out[4];
                    switch (mr) {
                        case 1: d1(w, a, nb, out, s); break;
                        case 2: d2(w, a, nb, out, s); break;
                        case 3: d3(w, a, nb, out, s); break;
                        default: d4(w, a, nb, out, s); break;
                    }
                    for (int i = 0; i < mr; ++i) y[(m0 + i) * N + n] = out[i] + (bias ? bias[n] : 0.0f);
                }
            }
        },
        16);
}

}  // namespace
}  // namespace hg
