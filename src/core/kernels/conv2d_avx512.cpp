// AVX-512 conv2d: the AVX2 level's implicit GEMM (conv2d_avx2.cpp: phase-split zero-padded input,
// float32 weight panels, no im2col buffer) with a micro-kernel that uses the 32 zmm registers:
// 12 output channels x 32 output pixels = 24 accumulators, two input vectors and 12 broadcast
// weights (folded into the FMAs) per tap. Same float rounding class as AVX2 (one FMA chain per
// output over the taps of a 32-channel block, blocks added in order).
//
// Compiled with -mavx512*: nothing here may be shared with other files (see matmul_avx512.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/kernels/conv2d_shared.h"
#include "core/ops.h"
#include "core/quants.h"

#define HG_UNROLL _Pragma("GCC unroll 16")
// GCC 12's AVX-512 intrinsics start from a self-initialised _mm512_undefined_*() (false reports).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace hg::avx512 {

namespace {

constexpr int CO = 12;   // output channels per micro-kernel
constexpr int PX = 32;   // output pixels per micro-kernel (two vectors)
constexpr int CIB = 32;  // input channels per k block

struct ConvBuffers {
    AlignedBuffer padded, panels;
};
ConvBuffers& conv_buffers() {
    static thread_local ConvBuffers b;
    return b;
}

// acc (12 x 32) over input channels [ci0, ci1) of one output row tile; tap_off[kx]: offset of tap
// kx inside a phase-split padded row.
void conv_tile(const float* panel, const float* pad, int64_t ci0, int64_t ci1, int KH, int KW, int s, int64_t Hp,
               int64_t Wq, int64_t iy0, int64_t ox0, const int64_t* tap_off, __m512 out[CO][2]) {
    __m512 acc[CO][2];
    HG_UNROLL
    for (int r = 0; r < CO; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const float* w = panel + ci0 * KH * KW * CO;
    for (int64_t ci = ci0; ci < ci1; ++ci)
        for (int ky = 0; ky < KH; ++ky) {
            const float* row = pad + ((ci * Hp + iy0 + ky) * s) * Wq + ox0;
            for (int kx = 0; kx < KW; ++kx, w += CO) {
                const float* src = row + tap_off[kx];
                const __m512 x0 = _mm512_loadu_ps(src), x1 = _mm512_loadu_ps(src + 16);
                HG_UNROLL
                for (int r = 0; r < CO; ++r) {
                    const __m512 wv = _mm512_set1_ps(w[r]);
                    acc[r][0] = _mm512_fmadd_ps(wv, x0, acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(wv, x1, acc[r][1]);
                }
            }
        }
    HG_UNROLL
    for (int r = 0; r < CO; ++r) out[r][0] = acc[r][0], out[r][1] = acc[r][1];
}

}  // namespace

void conv2d(float* out, const float* in, int64_t Cin, int64_t H, int64_t W, const Tensor& weight, const float* bias,
            int stride, int pad_t, int pad_l, int pad_b, int pad_r, ThreadPool& pool) {
    const ConvGeometry g = conv_geometry(Cin, H, W, weight, stride, pad_t, pad_l, pad_b, pad_r, PX);
    const int64_t Cout = g.Cout, Hp = g.Hp, Ho = g.Ho, Wo = g.Wo, Wq = g.Wq, kdim = g.kdim;
    const int KH = g.KH, KW = g.KW, s = g.s;
    const int64_t n_cob = (Cout + CO - 1) / CO;

    ConvBuffers& B = conv_buffers();
    float* pad = B.padded.floats(Cin * Hp * s * Wq);
    float* panels = B.panels.floats(n_cob * kdim * CO);
    conv_pad_input(pad, in, Cin, H, W, g, pad_t, pad_l, pool);
    conv_pack_panels<CO>(panels, weight, g, pool);

    const int64_t n_tiles = (Wo + PX - 1) / PX;
    static thread_local AlignedBuffer taps;
    int64_t* tap_off = reinterpret_cast<int64_t*>(taps.get(KW * sizeof(int64_t)));
    for (int kx = 0; kx < KW; ++kx) tap_off[kx] = (kx % s) * Wq + kx / s;
    pool.parallel_for(Ho * n_cob, [&](int64_t i0, int64_t i1, int) {
        for (int64_t item = i0; item < i1; ++item) {
            const int64_t oy = item / n_cob, cob = item % n_cob;
            const float* panel = panels + cob * kdim * CO;
            const int rows = static_cast<int>(std::min<int64_t>(CO, Cout - cob * CO));
            for (int64_t ci0 = 0; ci0 < Cin; ci0 += CIB) {
                const int64_t ci1 = std::min<int64_t>(Cin, ci0 + CIB);
                for (int64_t t = 0; t < n_tiles; ++t) {
                    const int64_t ox0 = t * PX;
                    const int cols = static_cast<int>(std::min<int64_t>(PX, Wo - ox0));
                    __m512 acc[CO][2];
                    conv_tile(panel, pad, ci0, ci1, KH, KW, s, Hp, Wq, oy * s, ox0, tap_off, acc);
                    for (int r = 0; r < rows; ++r) {
                        const int64_t co = cob * CO + r;
                        float* o = out + (co * Ho + oy) * Wo + ox0;
                        for (int h = 0; h < 2; ++h) {
                            const int c = std::clamp(cols - 16 * h, 0, 16);
                            if (c == 0) break;
                            const __mmask16 mask = static_cast<__mmask16>((1u << c) - 1);
                            const __m512 base = ci0 == 0 ? _mm512_set1_ps(bias ? bias[co] : 0.0f)
                                                         : _mm512_maskz_loadu_ps(mask, o + 16 * h);
                            _mm512_mask_storeu_ps(o + 16 * h, mask, _mm512_add_ps(acc[r][h], base));
                        }
                    }
                }
            }
        }
    });
}

}  // namespace hg::avx512
