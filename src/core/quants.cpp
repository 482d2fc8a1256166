// Block quantization (scalar reference), bit-compatible with ggml's reference quantizers
// (ggml-quants.c quantize_row_*_ref, which is what llama-quantize uses without an imatrix)
// and with gguf-py's numpy quantizers.
//
// Bit-exactness needs the same float operations in the same order as ggml's C code: every
// expression below is evaluated in float32 (no double, no fused multiply-add: this file is
// built for baseline x86-64, where the compiler has no FMA to contract into).
#include "core/quants.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace hg {

namespace {

// Round to nearest, ties to even, for |x| < 2^22: adding 1.5 * 2^23 leaves the rounded
// integer in the low mantissa bits (ggml's nearest_int).
inline int nearest_int(float x) {
    const float v = x + 12582912.0f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

constexpr float kGroupMaxEps = 1e-15f;  // below this max|x| a group counts as all zero

// Finds scale and min for a group of n values quantized to 0..nmax with weights: starts at the
// min/max grid, then tries nstep+1 nearby grids (rmin + rdelta*is extra levels), keeping the
// least weighted squared error of a least-squares fitted (scale, min). Returns the scale;
// *neg_min receives -min (>= 0).
float make_qkx2_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep) {
    float mn = x[0], mx = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0) mn = 0;
    if (mx == mn) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *neg_min = -mn;
        return 0.0f;
    }
    float iscale = nmax / (mx - mn);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - mn));
        L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
        const float diff = scale * L[i] + mn - x[i];
        best_error += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (mx - mn);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - mn));
            l = std::max(0, std::min(nmax, l));
            Laux[i] = static_cast<uint8_t>(l);
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                const float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                mn = this_min;
            }
        }
    }
    *neg_min = -mn;
    return scale;
}

// Symmetric scale for a group of n values quantized to -nmax..nmax-1 (stored +nmax in L),
// weighted by x^2: tries 19 grids around nmax/max and keeps the best least-squares scale.
float make_qx_quants_rmse1(int n, int nmax, const float* x, int8_t* L) {
    float mx = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            mx = x[i];
        }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.0f;
    }
    float iscale = -nmax / mx;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = std::max(-nmax, std::min(nmax - 1, l));
        L[i] = static_cast<int8_t>(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / mx;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = std::max(-nmax, std::min(nmax - 1, l));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// ggml's float -> int8_t conversion as x86-64 compilers emit it (cvttss2si, then the low byte):
// truncation toward zero, and 0 where the value does not fit in int32 (the "integer indefinite"
// 0x80000000 has a zero low byte). Only reachable for finite input when a block's scale is
// subnormal (1/d overflows to inf); gguf-py's numpy casts give the same bytes.
inline int8_t f32_to_i8_x86(float v) {
    if (!(std::fabs(v) < 2147483648.0f)) return 0;
    return static_cast<int8_t>(static_cast<uint8_t>(static_cast<uint32_t>(static_cast<int32_t>(v)) & 0xFF));
}

}  // namespace

// Q4_0: d = max/-8 (max = the signed value of largest magnitude); q = min(15, trunc(x/d + 8.5)).
void quantize_row_q4_0(const float* x, block_q4_0* y, int64_t n) {
    for (int64_t b = 0; b < n / QK4_0; ++b, x += QK4_0) {
        float amax = 0, mx = 0;
        for (int j = 0; j < QK4_0; ++j)
            if (amax < std::fabs(x[j])) {
                amax = std::fabs(x[j]);
                mx = x[j];
            }
        const float d = mx / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const float v0 = x[j] * id + 8.5f, v1 = x[j + QK4_0 / 2] * id + 8.5f;
            // trunc to int8 as ggml does; v is in [0, 16.5] unless the scale is subnormal
            const int q0 = std::min(15, (int)f32_to_i8_x86(v0));
            const int q1 = std::min(15, (int)f32_to_i8_x86(v1));
            y[b].qs[j] = static_cast<uint8_t>((q0 & 0xF) | (q1 << 4));
        }
    }
}

// Q8_0: d = amax/127; q = roundf(x/d) (ties away from zero), using the unrounded d.
void quantize_row_q8_0(const float* x, block_q8_0* y, int64_t n) {
    for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
        float amax = 0;
        for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; ++j) y[b].qs[j] = f32_to_i8_x86(std::round(x[j] * id));
    }
}

// Q4_K: 8 sub-blocks of 32, each with its own (scale, min) fitted by make_qkx2_quants with
// weights av_x + |x|; scales and mins are then quantized to 6 bits against the block's
// largest (d = max_scale/63, dmin = max_min/63) and the values re-quantized to 0..15
// against the 6-bit scales: x ~ d*sc*q - dmin*m.
void quantize_row_q4_K(const float* x, block_q4_K* y, int64_t n) {
    uint8_t L[QK_K], Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            const float* xs = x + 32 * j;
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
            const float av_x = std::sqrt(sum_x2 / 32);
            for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
            scales[j] = make_qkx2_quants(32, 15, xs, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
        const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
        block_q4_K& out = y[b];
        std::memset(out.scales, 0, sizeof(out.scales));
        for (int j = 0; j < QK_K / 32; ++j) {
            const uint8_t ls = static_cast<uint8_t>(std::min(63, (int)(uint8_t)nearest_int(inv_scale * scales[j])));
            const uint8_t lm = static_cast<uint8_t>(std::min(63, (int)(uint8_t)nearest_int(inv_min * mins[j])));
            if (j < 4) {
                out.scales[j] = ls;
                out.scales[j + 4] = lm;
            } else {
                out.scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
                out.scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
                out.scales[j] |= static_cast<uint8_t>((lm >> 4) << 6);
            }
        }
        out.d = fp32_to_fp16(max_scale / 63.0f);
        out.dmin = fp32_to_fp16(max_min / 63.0f);
        for (int j = 0; j < QK_K / 32; ++j) {
            uint8_t sc, m;
            q4_K_scale_min(j, out.scales, &sc, &m);
            const float d = fp16_to_fp32(out.d) * sc;
            if (!d) continue;  // keep make_qkx2_quants' levels
            const float dm = fp16_to_fp32(out.dmin) * m;
            for (int i = 0; i < 32; ++i) {
                const int l = nearest_int((x[32 * j + i] + dm) / d);
                L[32 * j + i] = static_cast<uint8_t>(std::max(0, std::min(15, l)));
            }
        }
        // 64 values per 32 bytes: the first 32 in the low nibbles, the next 32 in the high
        for (int j = 0; j < QK_K; j += 64)
            for (int l = 0; l < 32; ++l) out.qs[j / 2 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    }
}

// Q6_K: 16 sub-blocks of 16 with a signed scale each (make_qx_quants, levels -32..31),
// scales quantized to int8 against the largest-magnitude one (d = max_scale/-128), values
// re-quantized against d*scale. Storage: low 4 bits in ql, high 2 bits in qh.
void quantize_row_q6_K(const float* x, block_q6_K* y, int64_t n) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            const float scale = make_qx_quants_rmse1(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (std::fabs(scale) > max_abs_scale) {
                max_abs_scale = std::fabs(scale);
                max_scale = scale;
            }
        }
        block_q6_K& out = y[b];
        if (max_abs_scale < kGroupMaxEps) {
            std::memset(&out, 0, sizeof(out));
            continue;
        }
        const float iscale = -128.0f / max_scale;
        out.d = fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ++ib)
            out.scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
        for (int j = 0; j < QK_K / 16; ++j) {
            const float d = fp16_to_fp32(out.d) * out.scales[j];
            if (!d) continue;
            for (int i = 0; i < 16; ++i) {
                const int l = nearest_int(x[16 * j + i] / d);
                L[16 * j + i] = static_cast<int8_t>(std::max(-32, std::min(31, l)) + 32);
            }
        }
        // per 128 values: ql[l] = v[l] | v[l+64] << 4, ql[l+32] = v[l+32] | v[l+96] << 4,
        // qh[l] = 2 high bits of v[l], v[l+32], v[l+64], v[l+96]
        uint8_t* ql = out.ql;
        uint8_t* qh = out.qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32)
            for (int l = 0; l < 32; ++l) {
                const uint8_t* v = reinterpret_cast<const uint8_t*>(L) + j + l;
                ql[l] = static_cast<uint8_t>((v[0] & 0xF) | ((v[64] & 0xF) << 4));
                ql[l + 32] = static_cast<uint8_t>((v[32] & 0xF) | ((v[96] & 0xF) << 4));
                qh[l] = static_cast<uint8_t>((v[0] >> 4) | ((v[32] >> 4) << 2) | ((v[64] >> 4) << 4) | ((v[96] >> 4) << 6));
            }
    }
}

// Q8_K (activations): d = max/-127 with max the signed value of largest magnitude, q =
// nearest(x/d) (ties to even), plus sums of each 16 quants for the K-quant dot products.
void quantize_row_q8_K(const float* x, block_q8_K* y, int64_t n) {
    for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K) {
        float mx = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j)
            if (std::fabs(x[j]) > amax) {
                amax = std::fabs(x[j]);
                mx = x[j];
            }
        block_q8_K& out = y[b];
        if (!amax) {
            std::memset(&out, 0, sizeof(out));
            continue;
        }
        const float iscale = -127.0f / mx;
        for (int j = 0; j < QK_K; ++j) out.qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int i = 0; i < 16; ++i) sum += out.qs[16 * j + i];
            out.bsums[j] = static_cast<int16_t>(sum);
        }
        out.d = 1 / iscale;
    }
}

DType vec_dot_type(DType t) {
    switch (t) {
        case DType::Q4_0:
        case DType::Q8_0: return DType::Q8_0;
        case DType::Q4_K:
        case DType::Q6_K: return DType::Q8_K;
        case DType::F32:
        case DType::F16:
        case DType::BF16: return DType::F32;
        default: fail("matmul: weight type %s is not supported", dtype_name(t));
    }
}

void quantize_row(DType type, const float* src, void* dst, int64_t n) {
    const DTypeInfo& info = dtype_info(type);
    HG_CHECK(n >= 0 && n % info.block_size == 0, "quantize_row: %lld values are not a whole number of %s blocks (%lld)",
             (long long)n, info.name, (long long)info.block_size);
    if (info.quantized)
        for (int64_t i = 0; i < n; ++i)
            HG_CHECK(std::isfinite(src[i]), "quantize_row: %s cannot represent the non-finite value %g at index %lld",
                     info.name, (double)src[i], (long long)i);
    switch (type) {
        case DType::F32: std::memcpy(dst, src, n * sizeof(float)); return;
        case DType::F16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
            return;
        }
        case DType::BF16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_bf16(src[i]);
            return;
        }
        case DType::Q4_0: quantize_row_q4_0(src, static_cast<block_q4_0*>(dst), n); return;
        case DType::Q8_0: quantize_row_q8_0(src, static_cast<block_q8_0*>(dst), n); return;
        case DType::Q4_K: quantize_row_q4_K(src, static_cast<block_q4_K*>(dst), n); return;
        case DType::Q6_K: quantize_row_q6_K(src, static_cast<block_q6_K*>(dst), n); return;
        case DType::Q8_K: quantize_row_q8_K(src, static_cast<block_q8_K*>(dst), n); return;
        default: fail("quantize_row: type %s is not supported", info.name);
    }
}

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
    const DTypeInfo& info = dtype_info(type);
    HG_CHECK(n >= 0 && n % info.block_size == 0,
             "dequantize_row: %lld values are not a whole number of %s blocks (%lld)", (long long)n, info.name,
             (long long)info.block_size);
    const int64_t nb = n / info.block_size;
    switch (type) {
        case DType::F32: std::memcpy(dst, src, n * sizeof(float)); return;
        case DType::F16: {
            auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
            return;
        }
        case DType::BF16: {
            auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
            return;
        }
        case DType::Q4_0: {  // x = (q - 8) * d
            auto* x = static_cast<const block_q4_0*>(src);
            for (int64_t b = 0; b < nb; ++b, dst += QK4_0) {
                const float d = fp16_to_fp32(x[b].d);
                for (int j = 0; j < QK4_0 / 2; ++j) {
                    dst[j] = ((x[b].qs[j] & 0xF) - 8) * d;
                    dst[j + QK4_0 / 2] = ((x[b].qs[j] >> 4) - 8) * d;
                }
            }
            return;
        }
        case DType::Q8_0: {  // x = q * d
            auto* x = static_cast<const block_q8_0*>(src);
            for (int64_t b = 0; b < nb; ++b, dst += QK8_0) {
                const float d = fp16_to_fp32(x[b].d);
                for (int j = 0; j < QK8_0; ++j) dst[j] = x[b].qs[j] * d;
            }
            return;
        }
        case DType::Q4_K: {  // x = d*sc[j] * q - dmin*m[j] for sub-block j of 32
            auto* x = static_cast<const block_q4_K*>(src);
            for (int64_t b = 0; b < nb; ++b) {
                const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
                const uint8_t* q = x[b].qs;
                for (int j = 0; j < QK_K / 32; j += 2, q += 32) {
                    uint8_t sc, m;
                    q4_K_scale_min(j, x[b].scales, &sc, &m);
                    const float d1 = d * sc, m1 = dmin * m;
                    q4_K_scale_min(j + 1, x[b].scales, &sc, &m);
                    const float d2 = d * sc, m2 = dmin * m;
                    for (int l = 0; l < 32; ++l) *dst++ = d1 * (q[l] & 0xF) - m1;
                    for (int l = 0; l < 32; ++l) *dst++ = d2 * (q[l] >> 4) - m2;
                }
            }
            return;
        }
        case DType::Q6_K: {  // x = d * scale[j] * (q - 32) for sub-block j of 16
            auto* x = static_cast<const block_q6_K*>(src);
            for (int64_t b = 0; b < nb; ++b) {
                const float d = fp16_to_fp32(x[b].d);
                const uint8_t* ql = x[b].ql;
                const uint8_t* qh = x[b].qh;
                const int8_t* sc = x[b].scales;
                for (int n128 = 0; n128 < QK_K; n128 += 128, ql += 64, qh += 32, sc += 8, dst += 128)
                    for (int l = 0; l < 32; ++l) {
                        const int is = l / 16;
                        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        dst[l] = d * sc[is] * q1;
                        dst[l + 32] = d * sc[is + 2] * q2;
                        dst[l + 64] = d * sc[is + 4] * q3;
                        dst[l + 96] = d * sc[is + 6] * q4;
                    }
            }
            return;
        }
        case DType::Q8_K: {
            auto* x = static_cast<const block_q8_K*>(src);
            for (int64_t b = 0; b < nb; ++b)
                for (int j = 0; j < QK_K; ++j) *dst++ = x[b].d * x[b].qs[j];
            return;
        }
        default: fail("dequantize_row: type %s is not supported", info.name);
    }
}

void quantize_rows(DType type, const float* src, void* dst, int64_t rows, int64_t cols) {
    const size_t rb = row_bytes(type, cols);
    auto one = [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r)
            quantize_row(type, src + r * cols, static_cast<uint8_t*>(dst) + r * rb, cols);
    };
    // Parallel only for big tensors (the converter); callers inside a pool job must not land here.
    if (rows > 1 && rows * cols >= (1 << 20)) default_pool().parallel_for(rows, one);
    else one(0, rows, 0);
}

}  // namespace hg
