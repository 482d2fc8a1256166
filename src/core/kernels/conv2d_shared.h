// The set-up shared by the conv2d levels (conv2d_avx2.cpp, conv2d_avx512.cpp): argument checks,
// geometry, the zero-padded phase-split input copy and the float weight panels. Only the
// micro-kernel and its tile sizes differ between levels. Internal linkage (anonymous namespace):
// each level compiles its own copy with its own ISA flags (see simd_shared.h).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/kernels/simd_shared.h"
#include "core/ops.h"
#include "core/quants.h"

namespace hg {
namespace {

struct ConvGeometry {
    int64_t Cout, Hp, Wp, Ho, Wo, Wq, kdim;
    int KH, KW, s;
};

// Checks the arguments; Wq: phase row length with slack for the last tile of `px` pixels.
inline ConvGeometry conv_geometry(int64_t Cin, int64_t H, int64_t W, const Tensor& weight, int stride, int pad_t,
                                  int pad_l, int pad_b, int pad_r, int px) {
    HG_CHECK(weight.n_dims == 4 && weight.shape[1] == Cin, "conv2d: weight %s does not take %lld input channels",
             weight.shape_str().c_str(), (long long)Cin);
    HG_CHECK(weight.type == DType::F32 || weight.type == DType::F16 || weight.type == DType::BF16,
             "conv2d: weight type %s not supported", dtype_name(weight.type));
    HG_CHECK(stride >= 1 && pad_t >= 0 && pad_l >= 0 && pad_b >= 0 && pad_r >= 0, "conv2d: bad stride/padding");
    ConvGeometry g;
    g.Cout = weight.shape[0];
    g.KH = static_cast<int>(weight.shape[2]);
    g.KW = static_cast<int>(weight.shape[3]);
    g.Hp = H + pad_t + pad_b;
    g.Wp = W + pad_l + pad_r;
    HG_CHECK(g.Hp >= g.KH && g.Wp >= g.KW, "conv2d: kernel %dx%d larger than the padded input %lldx%lld", g.KH, g.KW,
             (long long)g.Hp, (long long)g.Wp);
    g.s = stride;
    g.Ho = (g.Hp - g.KH) / stride + 1;
    g.Wo = (g.Wp - g.KW) / stride + 1;
    g.Wq = (g.Wp + stride - 1) / stride + px + g.KW;
    g.kdim = Cin * g.KH * g.KW;
    return g;
}

// pad[Cin][Hp][s phases][Wq]: phase p of a padded row holds its columns p, p+s, p+2s, ... (zeros around).
inline void conv_pad_input(float* pad, const float* in, int64_t Cin, int64_t H, int64_t W, const ConvGeometry& g,
                           int pad_t, int pad_l, ThreadPool& pool) {
    const int s = g.s;
    pool.parallel_for(Cin * g.Hp, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t ci = r / g.Hp, iy = r % g.Hp - pad_t;
            float* dst = pad + r * s * g.Wq;
            std::memset(dst, 0, s * g.Wq * sizeof(float));
            if (iy < 0 || iy >= H) continue;
            const float* src = in + (ci * H + iy) * W;
            for (int64_t x = 0; x < W; ++x) {
                const int64_t px = x + pad_l;
                dst[(px % s) * g.Wq + px / s] = src[x];
            }
        }
    });
}

// panels[cob][k][CO] = weight[cob * CO + r][k] as float32 (rows past Cout zero).
template <int CO>
void conv_pack_panels(float* panels, const Tensor& weight, const ConvGeometry& g, ThreadPool& pool) {
    const int64_t n_cob = (g.Cout + CO - 1) / CO, kdim = g.kdim;
    const size_t wrow = row_bytes(weight.type, kdim);
    pool.parallel_for(n_cob, [&](int64_t c0, int64_t c1, int) {
        static thread_local AlignedBuffer row;
        float* wr = row.floats(kdim);
        for (int64_t cob = c0; cob < c1; ++cob) {
            float* p = panels + cob * kdim * CO;
            for (int r = 0; r < CO; ++r) {
                const int64_t co = cob * CO + r;
                if (co < g.Cout) dequantize_row(weight.type, static_cast<const uint8_t*>(weight.data) + co * wrow, wr, kdim);
                else std::memset(wr, 0, kdim * sizeof(float));
                for (int64_t k = 0; k < kdim; ++k) p[k * CO + r] = wr[k];
            }
        }
    });
}

}  // namespace
}  // namespace hg
