// Ordinary raster images: PNG (8/16-bit, libpng), JPEG (libjpeg-turbo, as Pillow decodes it),
// BMP/GIF/PNM (stb_image), TIFF (libtiff), EXIF orientation, PNG writing.
//
// What the model pipeline takes is an RgbImage: 8-bit RGB, row-major, 3 bytes a pixel. Files whose
// samples need a display mapping first (16-bit grayscale) come back as a RasterImage with
// bits = 16, for the windowing step (window.h) to turn into RGB.
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace hg::imaging {

// 8-bit RGB, rows top to bottom, pixels left to right, R G B per pixel.
struct RgbImage {
    int width = 0, height = 0;
    std::vector<uint8_t> rgb;  // [height][width][3]

    RgbImage() = default;
    RgbImage(int w, int h) : width(w), height(h), rgb(size_t(w) * size_t(h) * 3, 0) {}
    uint8_t* px(int x, int y) { return &rgb[(size_t(y) * width + x) * 3]; }
    const uint8_t* px(int x, int y) const { return &rgb[(size_t(y) * width + x) * 3]; }
};

// Sizes we refuse before allocating: a hostile header must not make us allocate gigabytes.
struct Limits {
    int64_t max_file_bytes = int64_t(2) << 30;     // 2 GiB read from disk (or inflated from .gz)
    int max_side = 65535;                          // pixels along one side of one image
    int64_t max_pixels = int64_t(1) << 28;         // pixels in one 2-D image (268 M)
    int64_t max_voxels = int64_t(1) << 30;         // voxels in a volume (4 GiB as float)
};
const Limits& default_limits();

// A decoded raster file before any display mapping. channels: 1 (gray) or 3 (RGB); bits: 8 or 16.
// Samples are stored as uint16 whatever the depth (8-bit files use 0..255).
struct RasterImage {
    int width = 0, height = 0, channels = 0, bits = 8;
    std::vector<uint16_t> samples;  // [height][width][channels]
    int exif_orientation = 1;       // 1..8 as found in the file (JPEG/TIFF); already applied when asked
    std::string format;             // "png", "jpeg", "bmp", "tiff", ...
};

enum class RasterFormat { Unknown, Png, Jpeg, Bmp, Gif, Tiff, Pnm };
// Recognises a raster format from the first bytes of a file (magic numbers only).
RasterFormat sniff_raster(std::span<const uint8_t> head);

// Decodes a PNG/JPEG/BMP/GIF/TIFF/PNM file held in memory. `name` is used in error messages.
// Palette and low-bit-depth gray are expanded as Pillow's convert("RGB") does; alpha is dropped
// (not composited), as Pillow does. 16-bit RGB keeps 16 bits (to_rgb8 takes the high byte, like
// Pillow); 16-bit gray keeps 16 bits for windowing. With apply_exif the EXIF orientation is applied.
RasterImage decode_raster(std::span<const uint8_t> bytes, const std::string& name, bool apply_exif = true,
                          const Limits& limits = default_limits());
RasterImage read_raster(const std::filesystem::path& path, bool apply_exif = true,
                        const Limits& limits = default_limits());

// 8-bit raster (gray or RGB) → RgbImage, gray replicated to R=G=B (Pillow's "L" → "RGB").
// A 16-bit RGB raster keeps its high byte (Pillow's "RGB;16B" unpacking). A 16-bit gray raster
// must be windowed instead (window.h); this function refuses it.
RgbImage to_rgb8(const RasterImage& r);

// Rotates/flips by an EXIF orientation value (1..8) as ImageOps.exif_transpose does.
RasterImage apply_exif_orientation(const RasterImage& r, int orientation);

// Writes an 8-bit RGB PNG (libpng). Errors name the path.
void write_png(const std::filesystem::path& path, const RgbImage& img);
std::vector<uint8_t> encode_png(const RgbImage& img);

// Reads a whole file with a size limit; the error names the file.
std::vector<uint8_t> read_file_bytes(const std::filesystem::path& path, int64_t max_bytes);

// Checks width/height against the limits; `what` names the input in the error.
void check_image_size(int64_t width, int64_t height, const Limits& limits, const std::string& what);

}  // namespace hg::imaging
