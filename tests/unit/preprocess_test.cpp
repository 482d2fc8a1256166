// The reference preprocessing against Pillow 10.3 + transformers' CLIPImageProcessor:
// expand2square, BICUBIC shortest-edge 336 (Pillow's antialiased fixed-point resampling),
// center crop, rescale, normalise; LANCZOS 256 for the VQGAN encoder; Image.resize for every
// filter. Real images: every VQA-RAD image and the shared X-rays; synthetic odd sizes.
#include <gtest/gtest.h>

#include <cmath>

#include "../parsers/image_fixtures.h"
#include "imaging/image.h"
#include "imaging/preprocess.h"
#include "imaging/resample.h"

using namespace hg::imaging;

TEST(Preprocess, PadColourIsTruncatedMean) {
    EXPECT_EQ(kClipPadColor[0], 122);
    EXPECT_EQ(kClipPadColor[1], 116);
    EXPECT_EQ(kClipPadColor[2], 104);
    RgbImage wide = imgtest::pattern(5, 2, 1);
    RgbImage sq = expand_to_square(wide);
    ASSERT_EQ(sq.width, 5);
    ASSERT_EQ(sq.height, 5);
    EXPECT_EQ(sq.px(0, 0)[0], 122);                  // row 0 is padding
    EXPECT_EQ(sq.px(3, 1)[2], wide.px(3, 0)[2]);     // pasted at (0, (5 - 2) // 2 = 1)
    RgbImage tall = imgtest::pattern(2, 5, 1);
    RgbImage sq2 = expand_to_square(tall);
    EXPECT_EQ(sq2.px(1, 4)[1], tall.px(0, 4)[1]);    // pasted at ((5 - 2) // 2 = 1, 0)
}

TEST(Preprocess, SyntheticOddSizesMatchClipImageProcessor) {
    IMG_SKIP_WITHOUT_FIXTURES();
    int cases = 0;
    double worst = 0;
    for (const auto& [key, e] : imgtest::expected()["preprocess"]["synthetic"].items()) {
        SCOPED_TRACE(key);
        int w, h, seed;
        ASSERT_EQ(std::sscanf(key.c_str(), "%dx%d:%d", &w, &h, &seed), 3);
        RgbImage img = imgtest::pattern(w, h, seed);
        RgbImage r = clip_resize_crop(expand_to_square(img), 336);
        EXPECT_EQ(imgtest::crc_u8(r.rgb), e["resized_crc32"].get<uint32_t>()) << "BICUBIC resize differs from Pillow";
        if (e.contains("resized_file")) {
            auto ref = imgtest::fixture_gz(e["resized_file"]);
            ASSERT_EQ(ref.size(), r.rgb.size());
            int max_diff = 0;
            for (size_t i = 0; i < ref.size(); i++) max_diff = std::max(max_diff, std::abs(int(ref[i]) - int(r.rgb[i])));
            EXPECT_EQ(max_diff, 0);
        }
        auto t = clip_preprocess(img);
        ASSERT_EQ(t.size(), 3u * 336 * 336);
        EXPECT_EQ(imgtest::crc_f32(t), e["tensor_crc32"].get<uint32_t>()) << "CLIP tensor differs";
        for (const auto& s : e["tensor_samples"]) {
            double d = std::fabs(double(t[s[0].get<size_t>()]) - s[1].get<double>());
            worst = std::max(worst, d);
            EXPECT_EQ(t[s[0].get<size_t>()], s[1].get<float>());
        }
        RgbImage lz = resize_pil(img, 256, 256, ResampleFilter::Lanczos);
        EXPECT_EQ(imgtest::crc_u8(lz.rgb), e["lanczos256_crc32"].get<uint32_t>()) << "LANCZOS 256 differs";
        cases++;
    }
    std::printf("synthetic CLIP preprocessing: %d cases bit-identical (max |diff| at samples %g)\n", cases, worst);
}

TEST(Preprocess, ResizeMatchesPillowForEveryFilter) {
    IMG_SKIP_WITHOUT_FIXTURES();
    int equal = 0, total = 0;
    for (const auto& [key, e] : imgtest::expected()["preprocess"]["resize"].items()) {
        int w, h, seed, ow, oh;
        char filter[16];
        ASSERT_EQ(std::sscanf(key.c_str(), "%dx%d:%d|%15[a-z]|%dx%d", &w, &h, &seed, filter, &ow, &oh), 6) << key;
        std::string f = filter;
        ResampleFilter rf = f == "box" ? ResampleFilter::Box : f == "bilinear" ? ResampleFilter::Bilinear
                          : f == "hamming" ? ResampleFilter::Hamming : f == "bicubic" ? ResampleFilter::Bicubic
                          : ResampleFilter::Lanczos;
        RgbImage r = resize_pil(imgtest::pattern(w, h, seed), ow, oh, rf);
        bool same = imgtest::crc_u8(r.rgb) == e["crc32"].get<uint32_t>();
        EXPECT_TRUE(same) << key;
        for (const auto& s : e["samples"]) EXPECT_EQ(r.rgb[s[0].get<size_t>()], s[1].get<int>()) << key;
        equal += same;
        total++;
    }
    std::printf("Image.resize parity: %d of %d cases byte-identical\n", equal, total);
}

TEST(Preprocess, RealImagesMatchPillowAndClip) {
    IMG_SKIP_WITHOUT_FIXTURES();
    HG_SKIP_WITHOUT_SHARED_DATA("vqa-rad/images");
    int n = 0, decode_eq = 0, resize_eq = 0, tensor_eq = 0, lanczos_eq = 0;
    for (const auto& [key, e] : imgtest::expected()["preprocess"]["real"].items()) {
        auto path = imgtest::resolve(key);
        if (path.empty()) continue;
        SCOPED_TRACE(key);
        // The reference opens with PIL and does not apply EXIF orientation.
        RgbImage img = to_rgb8(read_raster(path, /*apply_exif=*/false));
        n++;
        bool dec = imgtest::crc_u8(img.rgb) == e["decoded_crc32"].get<uint32_t>();
        decode_eq += dec;
        EXPECT_TRUE(dec) << "decoded pixels differ from Pillow's";
        if (!dec) continue;  // the steps below are only comparable on identical input
        RgbImage r = clip_resize_crop(expand_to_square(img), 336);
        bool rs = imgtest::crc_u8(r.rgb) == e["resized_crc32"].get<uint32_t>();
        resize_eq += rs;
        EXPECT_TRUE(rs) << "BICUBIC 336 differs";
        auto t = clip_preprocess(img);
        bool ts = imgtest::crc_f32(t) == e["tensor_crc32"].get<uint32_t>();
        tensor_eq += ts;
        EXPECT_TRUE(ts) << "CLIP tensor differs";
        for (const auto& s : e["tensor_samples"]) EXPECT_EQ(t[s[0].get<size_t>()], s[1].get<float>());
        RgbImage lz = resize_pil(img, 256, 256, ResampleFilter::Lanczos);
        bool lq = imgtest::crc_u8(lz.rgb) == e["lanczos256_crc32"].get<uint32_t>();
        lanczos_eq += lq;
        EXPECT_TRUE(lq) << "LANCZOS 256 differs";
    }
    std::printf("real images: %d; decode = Pillow on %d, BICUBIC-336 uint8 identical on %d, CLIP float tensor "
                "identical on %d, LANCZOS-256 identical on %d\n",
                n, decode_eq, resize_eq, tensor_eq, lanczos_eq);
}

TEST(Preprocess, VqganInputRange) {
    auto t = vqgan_preprocess(imgtest::pattern(300, 200, 3));
    ASSERT_EQ(t.size(), 3u * 256 * 256);
    for (float v : t) ASSERT_TRUE(v >= -1.0f && v <= 1.0f);
}
