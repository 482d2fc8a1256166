// The reference's image preprocessing, exactly (healthgpt-reference.md §2.3 and §5.1):
//   comprehension/generation input: expand2square with (122,116,104), then CLIPImageProcessor
//   (shortest edge → 336 with Pillow BICUBIC, center crop 336, ×1/255, CLIP mean/std) → [3,336,336];
//   VQGAN encoder input: Pillow LANCZOS to 256×256 (no padding), ToTensor, 2x−1 → [3,256,256].
#pragma once
#include <array>
#include <vector>

#include "imaging/image.h"

namespace hg::imaging {

// CLIP's normalisation constants (openai/clip-vit-large-patch14-336 preprocessor_config.json).
inline constexpr std::array<float, 3> kClipMean = {0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> kClipStd = {0.26862954f, 0.26130258f, 0.27577711f};
// expand2square's background: tuple(int(m * 255) for m in image_mean), truncated = (122, 116, 104).
inline constexpr std::array<uint8_t, 3> kClipPadColor = {122, 116, 104};

// llava's expand2square: a max(W,H) square filled with `bg`, the image pasted at
// (0, (W−H)//2) when W > H, else ((H−W)//2, 0). A square image is returned unchanged.
RgbImage expand_to_square(const RgbImage& img, std::array<uint8_t, 3> bg = kClipPadColor);

struct ClipPreprocess {
    int size = 336;           // shortest_edge and crop_size
    bool pad_to_square = true;  // HealthGPT pads first; false gives plain CLIPImageProcessor
    std::array<float, 3> mean = kClipMean, std = kClipStd;
    std::array<uint8_t, 3> pad_color = kClipPadColor;
};

// CLIPImageProcessor's resize step alone: Pillow BICUBIC so that the shortest edge is `size`
// (long edge int(size * long / short)), then the center crop to size × size.
RgbImage clip_resize_crop(const RgbImage& img, int size);

// The model input: float32 [3][size][size], channel-major (what pixel_values[0] holds).
std::vector<float> clip_preprocess(const RgbImage& img, const ClipPreprocess& cfg = {});

// VQGAN encoder input (taming img2idx): Pillow LANCZOS to 256×256, /255, then 2x−1 → [3][256][256].
std::vector<float> vqgan_preprocess(const RgbImage& img, int size = 256);

}  // namespace hg::imaging
