// The AVX2 implementation level: functions defined in the *_avx2.cpp files, gathered into one
// Kernels table by ops_avx2.cpp (kernels_avx2_table()). Include only from *_avx2.cpp files.
#pragma once
#include "core/ops.h"

namespace hg::avx2 {

void matmul(float* y, const float* x, const Tensor& W, const float* bias, int64_t M, ThreadPool& pool);
void quantize_act(DType type, const float* x, void* y, int64_t n);
void attention(float* out, const float* q, int64_t n_q, size_t q_stride, const void* k, const void* v, DType kv_type,
               int64_t n_kv, size_t kv_stride, const AttentionParams& p, ThreadPool& pool);
void conv2d(float* out, const float* in, int64_t Cin, int64_t H, int64_t W, const Tensor& weight, const float* bias,
            int stride, int pad_t, int pad_l, int pad_b, int pad_r, ThreadPool& pool);

}  // namespace hg::avx2
