// libFuzzer target: raster decoding (PNG, JPEG, BMP, GIF, TIFF, PNM), EXIF orientation, and the
// reference preprocessing of whatever decodes.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "imaging/image.h"
#include "imaging/preprocess.h"
#include "imaging/resample.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    hg::imaging::Limits lim;
    lim.max_file_bytes = 64 << 20;
    lim.max_pixels = 1 << 22;
    try {
        hg::imaging::RasterImage r = hg::imaging::decode_raster({data, size}, "fuzz.img", true, lim);
        if (r.bits == 16 && r.channels == 1) return 0;
        hg::imaging::RgbImage rgb = hg::imaging::to_rgb8(r);
        if (int64_t(rgb.width) * rgb.height <= 1 << 16) {
            hg::imaging::clip_resize_crop(hg::imaging::expand_to_square(rgb), 16);
            hg::imaging::resize_pil(rgb, 7, 5, hg::imaging::ResampleFilter::Lanczos);
        }
    } catch (const hg::Error&) {
    }
    return 0;
}
