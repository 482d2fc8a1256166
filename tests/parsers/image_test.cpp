// Raster decoding against Pillow 10.3 (Image.open(...).convert("RGB")): PNG (RGB, gray, RGBA, LA,
// palette, 1-bit, 16-bit), JPEG (RGB, gray, CMYK, EXIF orientation), BMP, TIFF, GIF; broken files
// end in clear errors.
#include <gtest/gtest.h>

#include "core/error.h"
#include "image_fixtures.h"
#include "imaging/image.h"
#include "imaging/load.h"

using namespace hg::imaging;

TEST(Image, DecodesLikePillow) {
    IMG_SKIP_WITHOUT_FIXTURES();
    int checked = 0;
    for (const auto& [name, e] : imgtest::expected()["raster"].items()) {
        if (!e.contains("rgb_crc32")) continue;
        SCOPED_TRACE(name);
        RasterImage r = read_raster(hgtest::fixture("imaging/" + name), /*apply_exif=*/false);
        RgbImage rgb = to_rgb8(r);
        EXPECT_EQ(rgb.width, e["size"][0].get<int>());
        EXPECT_EQ(rgb.height, e["size"][1].get<int>());
        EXPECT_EQ(imgtest::crc_u8(rgb.rgb), e["rgb_crc32"].get<uint32_t>()) << "differs from Pillow's convert(\"RGB\")";
        for (const auto& s : e["samples"]) EXPECT_EQ(rgb.rgb[s[0].get<size_t>()], s[1].get<int>());
        checked++;
        if (e.contains("transposed_crc32")) {
            RgbImage t = to_rgb8(read_raster(hgtest::fixture("imaging/" + name), /*apply_exif=*/true));
            EXPECT_EQ(t.width, e["transposed_size"][0].get<int>());
            EXPECT_EQ(t.height, e["transposed_size"][1].get<int>());
            EXPECT_EQ(imgtest::crc_u8(t.rgb), e["transposed_crc32"].get<uint32_t>()) << "differs from ImageOps.exif_transpose";
        }
    }
    EXPECT_GE(checked, 16);
}

TEST(Image, Gray16IsWindowedByPercentiles) {
    IMG_SKIP_WITHOUT_FIXTURES();
    const auto& e = imgtest::expected()["raster"]["raster_gray16.png"];
    RasterImage r = read_raster(hgtest::fixture("imaging/raster_gray16.png"));
    EXPECT_EQ(r.bits, 16);
    EXPECT_EQ(r.channels, 1);
    EXPECT_THROW(to_rgb8(r), hg::Error);
    auto imgs = load_medical_image(hgtest::fixture("imaging/raster_gray16.png"));
    ASSERT_EQ(imgs.size(), 1u);
    std::vector<uint8_t> gray(imgs[0].rgb.size() / 3);
    for (size_t i = 0; i < gray.size(); i++) gray[i] = imgs[0].rgb[i * 3];
    EXPECT_EQ(imgtest::crc_u8(gray), e["window_crc32"].get<uint32_t>());
}

TEST(Image, BrokenFilesGiveClearErrors) {
    IMG_SKIP_WITHOUT_FIXTURES();
    int errors = 0;
    for (const char* name : {"raster_rgb.png", "raster_rgb.jpg", "raster_rgb.bmp", "raster_rgb.tif", "raster_rgb.gif",
                             "raster_palette.png", "raster_gray16.png", "raster_rgb_lzw.tif", "raster_cmyk.jpg"}) {
        auto bytes = hgtest::read_file(hgtest::fixture(std::string("imaging/") + name));
        for (int cut = 1; cut < 16; cut++) {
            std::vector<uint8_t> part(bytes.begin(), bytes.begin() + bytes.size() * cut / 16);
            try {
                decode_raster(part, name);  // libjpeg pads a truncated scan; others must fail
            } catch (const hg::Error& e) {
                errors++;
                EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
            }
        }
    }
    EXPECT_GT(errors, 60);
    EXPECT_THROW(decode_raster(std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'}, "text"), hg::Error);
    // A PNG header claiming 100000 x 100000 pixels is refused before allocating.
    auto png = hgtest::read_file(hgtest::fixture("imaging/raster_rgb.png"));
    png[16] = 0x00, png[17] = 0x01, png[18] = 0x86, png[19] = 0xA0;
    png[20] = 0x00, png[21] = 0x01, png[22] = 0x86, png[23] = 0xA0;
    EXPECT_THROW(decode_raster(png, "huge.png"), hg::Error);
}
