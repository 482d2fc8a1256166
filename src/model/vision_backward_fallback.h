// FALLBACK, to be removed: private scalar backward ops for the vision tower and the projector.
//
// core/kernels/backward_ref.cpp (the backward ops of core/ops_backward.h) had not landed when the
// vision backward was written, so ClipVision::backward and Projector::backward default to this
// table instead of backward_kernels(). It implements the BackwardKernels entries they use
// (matmul_backward_x/_w, attention_forward/_backward, layernorm_backward, gelu_erf_backward,
// quick_gelu_backward; the others are nullptr) with the same conventions (accumulate, nullptr =
// not wanted, deterministic for any thread count), in plain loops with double sums. Once the
// real kernels are in: default to backward_kernels() in clip_vision.cpp / projector.cpp, call
// core's patch2im, point the parity test at backward_kernels_ref() / backward_kernels(), and
// delete these two files.
#pragma once
#include <cstdint>

#include "core/ops_backward.h"

namespace hg::vision_fallback {

const BackwardKernels& backward_kernels();

// dpixels[C, H, W] += the patch-matrix gradient dcols[n_patches, C*patch*patch] put back in place
// (the layout of ops_backward.h im2patch).
void patch2im(float* dpixels, const float* dcols, int64_t C, int64_t H, int64_t W, int patch);

}  // namespace hg::vision_fallback
