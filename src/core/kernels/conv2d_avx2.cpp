// AVX2 conv2d as an implicit GEMM (no im2col buffer):
//   out[co, oy, ox] = bias[co] + sum_{ci,ky,kx} W[co, ci, ky, kx] * in[ci, oy*s + ky - pt, ox*s + kx - pl]
// * The input is copied once, zero-padded, into [Cin][Hp][s phases][Wq] where phase p of a row
//   holds its columns p, p+s, p+2s, ...: for output pixels ox0..ox0+15 and a tap kx the inputs are
//   then 16 consecutive floats (phase kx % s, offset ox0 + kx / s), for any stride.
//   Extra memory: about the size of the input (plus the weights converted to float32).
// * The weights are converted to float32 panels of 6 output channels, k-major ([k][6]).
// * Micro-kernel: 6 output channels x 16 output pixels (12 accumulators), one broadcast weight
//   and two input vectors per tap; input channels in blocks of 32 so the panel slice stays in L1
//   while it sweeps an output row. Work items (output row, channel block) are split across threads.
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/kernels/conv2d_shared.h"
#include "core/kernels/kernels_avx2.h"
#include "core/kernels/simd_avx2.h"
#include "core/quants.h"

namespace hg::avx2 {

namespace {

constexpr int CO = 6;    // output channels per micro-kernel
constexpr int PX = 16;   // output pixels per micro-kernel
constexpr int CIB = 32;  // input channels per k block

struct ConvBuffers {
    AlignedBuffer padded, panels;
};
ConvBuffers& conv_buffers() {
    static thread_local ConvBuffers b;
    return b;
}

// acc (6 x 16) over input channels [ci0, ci1) of one output row tile. tap_off[kx]: offset of
// tap kx inside a phase-split padded row ((kx % s) * Wq + kx / s, precomputed: no division here).
void conv_tile(const float* panel, const float* pad, int64_t ci0, int64_t ci1, int KH, int KW, int s, int64_t Hp,
               int64_t Wq, int64_t iy0, int64_t ox0, const int64_t* tap_off, __m256 out[CO][2]) {
    // local accumulators: __m256 may alias float, so updating `out` in the loop would force a
    // store after every FMA
    __m256 acc[CO][2];
    HG_UNROLL
    for (int r = 0; r < CO; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float* w = panel + ci0 * KH * KW * CO;
    for (int64_t ci = ci0; ci < ci1; ++ci)
        for (int ky = 0; ky < KH; ++ky) {
            const float* row = pad + ((ci * Hp + iy0 + ky) * s) * Wq + ox0;
            for (int kx = 0; kx < KW; ++kx, w += CO) {
                const float* src = row + tap_off[kx];
                const __m256 x0 = _mm256_loadu_ps(src), x1 = _mm256_loadu_ps(src + 8);
                HG_UNROLL
                for (int r = 0; r < CO; ++r) {
                    const __m256 wv = _mm256_broadcast_ss(w + r);
                    acc[r][0] = _mm256_fmadd_ps(wv, x0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(wv, x1, acc[r][1]);
                }
            }
        }
    HG_UNROLL
    for (int r = 0; r < CO; ++r) {
        out[r][0] = acc[r][0];
        out[r][1] = acc[r][1];
    }
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
    std::vector<int64_t> tap_off(KW);
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
                    __m256 acc[CO][2];
                    HG_UNROLL
                    for (int r = 0; r < CO; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
                    conv_tile(panel, pad, ci0, ci1, KH, KW, s, Hp, Wq, oy * s, ox0, tap_off.data(), acc);
                    for (int r = 0; r < rows; ++r) {
                        const int64_t co = cob * CO + r;
                        float* o = out + (co * Ho + oy) * Wo + ox0;
                        alignas(32) float t16[PX];
                        _mm256_store_ps(t16, acc[r][0]);
                        _mm256_store_ps(t16 + 8, acc[r][1]);
                        if (ci0 == 0) {
                            const float b = bias ? bias[co] : 0.0f;
                            for (int c = 0; c < cols; ++c) o[c] = t16[c] + b;
                        } else {
                            for (int c = 0; c < cols; ++c) o[c] += t16[c];
                        }
                    }
                }
            }
        }
    });
}

}  // namespace hg::avx2
