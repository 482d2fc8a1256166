// Reference preprocessing, step by step as the Python does it, with the same float rounding:
// transformers' rescale multiplies uint8 by 1/255 in float64 then casts to float32; normalize
// subtracts and divides in float32.
#include "imaging/preprocess.h"

#include <cstring>

#include "core/error.h"
#include "imaging/resample.h"

namespace hg::imaging {

RgbImage expand_to_square(const RgbImage& img, std::array<uint8_t, 3> bg) {
    HG_CHECK(img.width > 0 && img.height > 0, "expand_to_square: empty image");
    if (img.width == img.height) return img;
    int side = std::max(img.width, img.height);
    RgbImage out(side, side);
    for (size_t i = 0; i < size_t(side) * side; i++) std::memcpy(&out.rgb[i * 3], bg.data(), 3);
    int ox = img.width > img.height ? 0 : (img.height - img.width) / 2;
    int oy = img.width > img.height ? (img.width - img.height) / 2 : 0;
    for (int y = 0; y < img.height; y++) std::memcpy(out.px(ox, oy + y), img.px(0, y), size_t(img.width) * 3);
    return out;
}

RgbImage clip_resize_crop(const RgbImage& img, int size) {
    HG_CHECK(img.width > 0 && img.height > 0 && size > 0, "clip preprocess: empty image");
    // get_resize_output_image_size(default_to_square=False): short edge → size, long edge truncated.
    int w = img.width, h = img.height;
    int short_edge = std::min(w, h), long_edge = std::max(w, h);
    int new_long = int(double(int64_t(size) * long_edge) / short_edge);
    int new_w = w <= h ? size : new_long;
    int new_h = w <= h ? new_long : size;
    RgbImage resized = (new_w == w && new_h == h) ? img : resize_pil(img, new_w, new_h, ResampleFilter::Bicubic);
    // center_crop: top = (H − size) // 2, left = (W − size) // 2.
    int top = (new_h - size) / 2, left = (new_w - size) / 2;
    if (top == 0 && left == 0 && new_w == size && new_h == size) return resized;
    RgbImage out(size, size);
    for (int y = 0; y < size; y++) std::memcpy(out.px(0, y), resized.px(left, top + y), size_t(size) * 3);
    return out;
}

std::vector<float> clip_preprocess(const RgbImage& img, const ClipPreprocess& cfg) {
    RgbImage sq = cfg.pad_to_square ? expand_to_square(img, cfg.pad_color) : img;
    RgbImage r = clip_resize_crop(sq, cfg.size);
    const double rescale = 1.0 / 255;  // CLIPImageProcessor.rescale_factor
    size_t plane = size_t(cfg.size) * cfg.size;
    std::vector<float> out(3 * plane);
    for (int c = 0; c < 3; c++) {
        for (size_t i = 0; i < plane; i++) {
            float x = float(double(r.rgb[i * 3 + c]) * rescale);
            out[c * plane + i] = (x - cfg.mean[c]) / cfg.std[c];
        }
    }
    return out;
}

std::vector<float> vqgan_preprocess(const RgbImage& img, int size) {
    RgbImage r = resize_pil(img, size, size, ResampleFilter::Lanczos);
    size_t plane = size_t(size) * size;
    std::vector<float> out(3 * plane);
    // torchvision ToTensor: uint8 → float32 by x.float().div(255); then 2x − 1 in float32.
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++) out[c * plane + i] = 2.0f * (float(r.rgb[i * 3 + c]) / 255.0f) - 1.0f;
    return out;
}

}  // namespace hg::imaging
