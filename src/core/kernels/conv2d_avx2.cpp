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
#include "core/kernels/kernels_avx2.h"
#include "core/kernels/simd_avx2.h"
#include "core/quants.h"

namespace hg::avx2 {

namespace {

constexpr int CO = 6;    // output channels per micro-kernel
constexpr int PX = 16;   // output pixels per micro-kernel
constexpr int CIB = 32;  // input channels per k block

struct ConvBuffers {
    std::vector<float> padded, panels;
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
    HG_CHECK(weight.n_dims == 4 && weight.shape[1] == Cin, "conv2d: weight %s does not take %lld input channels",
             weight.shape_str().c_str(), (long long)Cin);
    HG_CHECK(weight.type == DType::F32 || weight.type == DType::F16 || weight.type == DType::BF16,
             "conv2d: weight type %s not supported", dtype_name(weight.type));
    HG_CHECK(stride >= 1 && pad_t >= 0 && pad_l >= 0 && pad_b >= 0 && pad_r >= 0, "conv2d: bad stride/padding");
    const int64_t Cout = weight.shape[0];
    const int KH = static_cast<int>(weight.shape[2]), KW = static_cast<int>(weight.shape[3]);
    const int64_t Hp = H + pad_t + pad_b, Wp = W + pad_l + pad_r;
    HG_CHECK(Hp >= KH && Wp >= KW, "conv2d: kernel %dx%d larger than the padded input %lldx%lld", KH, KW, (long long)Hp,
             (long long)Wp);
    const int64_t Ho = (Hp - KH) / stride + 1, Wo = (Wp - KW) / stride + 1;
    const int s = stride;
    const int64_t Wq = (Wp + s - 1) / s + PX + KW;  // phase row length, with slack for the last tile
    const int64_t kdim = Cin * KH * KW;
    const int64_t n_cob = (Cout + CO - 1) / CO;

    ConvBuffers& B = conv_buffers();
    if ((int64_t)B.padded.size() < Cin * Hp * s * Wq) B.padded.resize(Cin * Hp * s * Wq);
    if ((int64_t)B.panels.size() < n_cob * kdim * CO) B.panels.resize(n_cob * kdim * CO);
    float* pad = B.padded.data();
    float* panels = B.panels.data();

    // zero-padded, phase-split copy of the input
    pool.parallel_for(Cin * Hp, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t ci = r / Hp, iy = r % Hp - pad_t;
            float* dst = pad + r * s * Wq;
            std::memset(dst, 0, s * Wq * sizeof(float));
            if (iy < 0 || iy >= H) continue;
            const float* src = in + (ci * H + iy) * W;
            for (int64_t x = 0; x < W; ++x) {
                const int64_t px = x + pad_l;
                dst[(px % s) * Wq + px / s] = src[x];
            }
        }
    });
    // weights -> float panels [cob][k][6]
    const size_t wrow = row_bytes(weight.type, kdim);
    pool.parallel_for(n_cob, [&](int64_t c0, int64_t c1, int) {
        std::vector<float> wr(kdim);
        for (int64_t cob = c0; cob < c1; ++cob) {
            float* p = panels + cob * kdim * CO;
            HG_UNROLL
            for (int r = 0; r < CO; ++r) {
                const int64_t co = cob * CO + r;
                if (co < Cout) dequantize_row(weight.type, static_cast<const uint8_t*>(weight.data) + co * wrow, wr.data(), kdim);
                else std::fill(wr.begin(), wr.end(), 0.0f);
                for (int64_t k = 0; k < kdim; ++k) p[k * CO + r] = wr[k];
            }
        }
    });

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
