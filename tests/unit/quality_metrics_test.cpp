// SSIM / PSNR / MSE against scikit-image on real image pairs (tests/reference/gen_vqgan.py, gen_metrics):
// NIH chest X-rays (read from the shared data folder) vs blurred / noised / JPEG-compressed copies,
// VQA-RAD JPEG crops (decoded by Pillow, saved as PNG) vs colour-noised copies (RGB: channel mean),
// the same pairs converted to L by Pillow (our rgb_to_luma_pil), and a 16-bit pair (data_range 65535).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "imaging/quality_metrics.h"
#include "test_util.h"

// PNG decoding for the test only (stb's PNG decoder is lossless-exact), private to this file.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace {

using hg::MetricImage;

constexpr double kTol = 1e-4;  // the brief's bound; observed differences are ~1e-12

MetricImage load_png(const std::filesystem::path& p) {
    int w = 0, h = 0, c = 0;
    MetricImage m;
    if (stbi_is_16_bit(p.c_str())) {
        stbi_us* px = stbi_load_16(p.c_str(), &w, &h, &c, 0);
        if (!px) throw std::runtime_error("cannot decode " + p.string());
        m.samples.assign(px, px + (size_t)w * h * c);
        stbi_image_free(px);
    } else {
        stbi_uc* px = stbi_load(p.c_str(), &w, &h, &c, 0);
        if (!px) throw std::runtime_error("cannot decode " + p.string());
        m.samples.assign(px, px + (size_t)w * h * c);
        stbi_image_free(px);
    }
    m.height = h, m.width = w, m.channels = c;
    return m;
}

std::filesystem::path resolve(const std::string& rel) {
    if (rel.rfind("shared:", 0) == 0) return hgtest::shared_data() / rel.substr(7);
    return hgtest::fixture("vqgan/metrics/" + rel);
}

TEST(QualityMetrics, MatchScikitImageOnRealImages) {
    std::ifstream f(hgtest::fixture("vqgan/metrics/expected.json"));
    const auto expected = nlohmann::json::parse(f);
    int n = 0, skipped = 0;
    const bool have_shared = !hgtest::shared_data().empty() && std::filesystem::exists(hgtest::shared_data() / "medical/xray");
    for (const auto& c : expected["cases"]) {
        const std::string name = c["name"];
        if (std::string(c["a"]).rfind("shared:", 0) == 0 && !have_shared) {  // the X-ray originals
            ++skipped;
            continue;
        }
        MetricImage a = load_png(resolve(c["a"])), b = load_png(resolve(c["b"]));
        if (c.value("gray", false)) {
            a = hg::rgb_to_luma_pil(a);
            b = hg::rgb_to_luma_pil(b);
        }
        const auto shape = c["shape"].get<std::vector<int64_t>>();
        ASSERT_EQ(a.height, shape[0]) << name;
        ASSERT_EQ(a.width, shape[1]) << name;
        ASSERT_EQ(a.channels, shape.size() == 3 ? shape[2] : 1) << name;
        const double range = c["dtype"] == "uint16" ? 65535.0 : 255.0;
        const hg::QualityMetrics m = hg::compare_images(a, b, range);
        const double es = c["ssim"], ep = c["psnr"], em = c["mse"];
        std::printf("  %-36s ssim %.9f (skimage %.9f, diff %.1e)  psnr %.6f (%.1e)  mse %.6f (%.1e)\n",
                    name.c_str(), m.ssim, es, m.ssim - es, m.psnr, m.psnr - ep, m.mse, (m.mse - em) / em);
        EXPECT_NEAR(m.ssim, es, kTol) << name;
        EXPECT_NEAR(m.psnr, ep, kTol) << name;
        EXPECT_NEAR(m.mse, em, kTol * std::max(1.0, em)) << name;  // relative for the 16-bit case
        ++n;
    }
    EXPECT_EQ(n + skipped, 11);
    if (skipped) GTEST_SKIP() << skipped << " X-ray cases need the shared data folder (HEALTHGPT_SHARED_DATA)";
}

MetricImage ramp(int64_t h, int64_t w, int64_t c, int step) {
    MetricImage m;
    m.height = h, m.width = w, m.channels = c;
    for (int64_t i = 0; i < h * w * c; ++i) m.samples.push_back((double)((i * step) % 256));
    return m;
}

TEST(QualityMetrics, IdenticalImages) {
    const MetricImage a = ramp(9, 11, 3, 7);
    const auto m = hg::compare_images(a, a, 255);
    EXPECT_DOUBLE_EQ(m.ssim, 1.0);
    EXPECT_EQ(m.mse, 0.0);
    EXPECT_TRUE(std::isinf(m.psnr) && m.psnr > 0);  // skimage: 10*log10(R^2/0) = inf
}

TEST(QualityMetrics, RefusesMismatchedOrTinyImages) {
    auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
        try {
            fn();
            ADD_FAILURE() << "expected an error containing " << needle;
        } catch (const hg::Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect_error([] { hg::compare_images(ramp(8, 8, 1, 3), ramp(8, 9, 1, 3), 255); },
                 "images differ in shape: 8x8x1 vs 8x9x1");
    expect_error([] { hg::compare_images(ramp(6, 8, 1, 3), ramp(6, 8, 1, 3), 255); },
                 "SSIM needs images of at least 7x7 pixels");
    expect_error([] { hg::compare_images(ramp(8, 8, 1, 3), ramp(8, 8, 1, 5), 0); }, "data_range must be positive");
    expect_error([] { hg::rgb_to_luma_pil(ramp(8, 8, 1, 3)); }, "needs an RGB image");
}

TEST(QualityMetrics, LumaIsPillowsFixedPoint) {
    MetricImage rgb;
    rgb.height = 1, rgb.width = 4, rgb.channels = 3;
    rgb.samples = {255, 255, 255, 255, 0, 0, 0, 255, 0, 10, 20, 30};
    const MetricImage l = hg::rgb_to_luma_pil(rgb);
    // Pillow 10.3 Image.convert("L") of these pixels
    EXPECT_EQ(l.samples, (std::vector<double>{255, 76, 150, 18}));
}

}  // namespace
