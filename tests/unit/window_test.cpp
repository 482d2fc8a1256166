// Windowing: the DICOM linear function (independently computed with numpy from pydicom's HU) for
// the CT presets, MONOCHROME1 inversion with the file's window, percentile windows (numpy's
// percentile), and the --window syntax.
#include <gtest/gtest.h>

#include "../parsers/image_fixtures.h"
#include "core/error.h"
#include "imaging/load.h"
#include "imaging/window.h"

using namespace hg::imaging;

static std::vector<uint8_t> red(const RgbImage& img) {
    std::vector<uint8_t> g(img.rgb.size() / 3);
    for (size_t i = 0; i < g.size(); i++) g[i] = img.rgb[i * 3];
    return g;
}

TEST(Window, ParsesEverySyntax) {
    EXPECT_EQ(parse_window("auto").kind, WindowSpec::Kind::Auto);
    WindowSpec lung = parse_window("lung");
    EXPECT_EQ(lung.kind, WindowSpec::Kind::Preset);
    EXPECT_EQ(lung.cw.center, -600);
    EXPECT_EQ(lung.cw.width, 1500);
    WindowSpec cw = parse_window("-600,1500");
    EXPECT_EQ(cw.kind, WindowSpec::Kind::Explicit);
    EXPECT_EQ(cw.cw.center, -600);
    EXPECT_EQ(parse_window("file:1").index, 1);
    EXPECT_EQ(parse_window("minmax").kind, WindowSpec::Kind::MinMax);
    WindowSpec p = parse_window("p1,99");
    EXPECT_EQ(p.kind, WindowSpec::Kind::Percentile);
    EXPECT_EQ(p.high_pct, 99);
    for (const char* bad : {"lungs", "40", "40,0", "p50,10", "file:x", "1,2,3", ""}) {
        if (std::string(bad).empty()) continue;
        EXPECT_THROW(parse_window(bad), hg::Error) << bad;
    }
    for (const char* name : {"brain", "subdural", "stroke", "lung", "mediastinum", "abdomen", "liver", "bone"})
        EXPECT_NE(find_window_preset(name), nullptr) << name;
}

TEST(Window, LinearFunctionEdges) {
    WindowCW w{40, 80, VoiFunction::Linear};
    EXPECT_EQ(apply_window(0.0, w), 0);       // x <= c - 0.5 - (w-1)/2 = 0
    EXPECT_EQ(apply_window(79.001, w), 255);  // x >  c - 0.5 + (w-1)/2 = 79
    EXPECT_NEAR(apply_window(1.0, w), ((1.0 - 39.5) / 79 + 0.5) * 255, 1e-9);
    EXPECT_NEAR(apply_window(39.5, w), 127.5, 1e-9);
}

TEST(Window, CtPresetsMatchTheDicomFormula) {
    IMG_SKIP_WITHOUT_FIXTURES();
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    int checked = 0;
    for (const auto& [key, e] : imgtest::expected()["window"].items()) {
        if (key.find("|auto") != std::string::npos) continue;
        std::string file = key.substr(0, key.find('|')), win = key.substr(key.find('|') + 1);
        SCOPED_TRACE(key);
        ImageOptions o;
        if (win != "file") o.window = parse_window(win);
        auto imgs = load_medical_image(imgtest::resolve(file), o);
        ASSERT_EQ(imgs.size(), 1u);
        auto g = red(imgs[0]);
        EXPECT_EQ(imgtest::crc_u8(g), e["crc32"].get<uint32_t>());
        for (const auto& s : e["samples"]) EXPECT_EQ(g[s[0].get<size_t>()], s[1].get<int>());
        checked++;
    }
    EXPECT_EQ(checked, 9);
}

TEST(Window, VolumePercentilesAndFrameSampling) {
    IMG_SKIP_WITHOUT_FIXTURES();
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    const auto& e = imgtest::expected()["window"]["shared/medical/dicom/emri_small.dcm|auto"];
    ImageOptions o;
    o.n_slices = 3;
    LoadResult r = load_medical(imgtest::resolve("shared/medical/dicom/emri_small.dcm"), o);
    ASSERT_EQ(r.images.size(), 3u);
    std::vector<int> frames = e["linspace_3"];
    for (size_t i = 0; i < 3; i++) {
        const auto& f = e["frames"][std::to_string(frames[i])];
        EXPECT_EQ(imgtest::crc_u8(red(r.images[i].image)), f["crc32"].get<uint32_t>()) << r.images[i].description;
        EXPECT_NE(r.images[i].description.find("frame " + std::to_string(frames[i])), std::string::npos);
    }
    std::vector<float> v = {5, 1, 4, 2, 3};
    EXPECT_DOUBLE_EQ(percentile(v, 50), 3);
    EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
    EXPECT_DOUBLE_EQ(percentile(v, 100), 5);
    EXPECT_DOUBLE_EQ(percentile(v, 10), 1.4);
}

TEST(Window, NanShowsBlackAndNeverCrashes) {
    std::vector<float> v = {NAN, INFINITY, -INFINITY, 0, 100};
    ResolvedWindow w = resolve_window(parse_window("auto"), v, {});
    RgbImage img = window_to_rgb(v, 5, 1, w, false);
    EXPECT_EQ(img.rgb[0], 0);
    EXPECT_EQ(img.rgb[3], 255);
    EXPECT_EQ(img.rgb[6], 0);
}
