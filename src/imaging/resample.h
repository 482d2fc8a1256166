// Image resizing with Pillow's exact arithmetic (Pillow 10.3 libImaging/Resample.c semantics,
// re-implemented): separable two-pass convolution, filter support widened by the downscale factor
// (antialiasing), coefficients normalised in double then quantised to 22-bit fixed point, and each
// pass rounded and clamped to uint8. The horizontal pass runs first, over only the rows the
// vertical pass will read. The result equals Image.resize((w, h), filter) byte for byte.
#pragma once
#include "imaging/image.h"

namespace hg::imaging {

enum class ResampleFilter { Box, Bilinear, Hamming, Bicubic, Lanczos };

// Pillow's Image.resize((out_w, out_h), filter) of an RGB image (box = whole image).
RgbImage resize_pil(const RgbImage& in, int out_w, int out_h, ResampleFilter filter);

// The same on one 8-bit channel (Pillow mode "L").
std::vector<uint8_t> resize_pil_gray(std::span<const uint8_t> in, int in_w, int in_h, int out_w, int out_h,
                                     ResampleFilter filter);

}  // namespace hg::imaging
