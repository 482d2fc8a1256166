// healthgpt compare: SSIM / PSNR / MSE between two images, or between same-named images of two folders,
// with scikit-image's definitions (imaging/quality_metrics.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "command.h"
#include "core/error.h"
#include "imaging/quality_metrics.h"

// Image decoding for this verb (PNG, JPEG, BMP, TGA through stb_image, private to this file).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_TGA
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace {

namespace fs = std::filesystem;

struct Loaded {
    hg::MetricImage img;
    int bits = 8;
};

// Samples as stored (8 or 16 bits); an alpha channel is dropped (gray+alpha -> gray, RGBA -> RGB).
Loaded load_image(const fs::path& p) {
    const std::string s = p.string();
    int w = 0, h = 0, c = 0;
    Loaded out;
    const bool is16 = stbi_is_16_bit(s.c_str());
    std::unique_ptr<void, void (*)(void*)> px(
        is16 ? (void*)stbi_load_16(s.c_str(), &w, &h, &c, 0) : (void*)stbi_load(s.c_str(), &w, &h, &c, 0),
        stbi_image_free);
    HG_CHECK(px != nullptr, "%s: cannot read the image (%s)", s.c_str(), stbi_failure_reason());
    const int keep = (c == 2 || c == 4) ? c - 1 : c;
    out.bits = is16 ? 16 : 8;
    out.img.height = h, out.img.width = w, out.img.channels = keep;
    out.img.samples.resize((size_t)w * h * keep);
    for (size_t i = 0; i < (size_t)w * h; ++i)
        for (int k = 0; k < keep; ++k)
            out.img.samples[i * keep + k] = is16 ? (double)static_cast<const uint16_t*>(px.get())[i * c + k]
                                                 : (double)static_cast<const uint8_t*>(px.get())[i * c + k];
    return out;
}

hg::MetricImage gray_to_rgb(const hg::MetricImage& g) {
    hg::MetricImage o = g;
    o.channels = 3;
    o.samples.resize(g.samples.size() * 3);
    for (size_t i = 0; i < g.samples.size(); ++i) o.samples[3 * i] = o.samples[3 * i + 1] = o.samples[3 * i + 2] = g.samples[i];
    return o;
}

struct Options {
    bool csv = false, gray = false;
    double data_range = 0;  // 0: from the bit depth
};

hg::QualityMetrics compare_files(const fs::path& pa, const fs::path& pb, const Options& o) {
    Loaded a = load_image(pa), b = load_image(pb);
    HG_CHECK(a.bits == b.bits, "%s is %d-bit but %s is %d-bit; their ranges differ", pa.c_str(), a.bits, pb.c_str(),
             b.bits);
    if (o.gray) {
        HG_CHECK(a.bits == 8, "--gray (Pillow's convert('L')) needs 8-bit images; %s is 16-bit", pa.c_str());
        if (a.img.channels == 3) a.img = hg::rgb_to_luma_pil(a.img);
        if (b.img.channels == 3) b.img = hg::rgb_to_luma_pil(b.img);
    } else if (a.img.channels != b.img.channels) {  // gray vs RGB: compare the gray one as R = G = B
        if (a.img.channels == 1) a.img = gray_to_rgb(a.img);
        if (b.img.channels == 1) b.img = gray_to_rgb(b.img);
    }
    const double range = o.data_range > 0 ? o.data_range : (a.bits == 16 ? 65535.0 : 255.0);
    try {
        return hg::compare_images(a.img, b.img, range);
    } catch (const hg::Error& e) {
        hg::fail("%s vs %s: %s", pa.c_str(), pb.c_str(), e.what());
    }
}

std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
}

std::string num(double v, int prec) {
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", prec, v);
    return buf;
}

bool is_image_name(const fs::path& p) {
    std::string e = p.extension().string();
    std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return (char)std::tolower(c); });
    return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".bmp" || e == ".tga";
}

int compare_folders(const fs::path& da, const fs::path& db, const Options& o) {
    std::set<std::string> na, nb;
    for (const auto& e : fs::directory_iterator(da))
        if (e.is_regular_file() && is_image_name(e.path())) na.insert(e.path().filename().string());
    for (const auto& e : fs::directory_iterator(db))
        if (e.is_regular_file() && is_image_name(e.path())) nb.insert(e.path().filename().string());
    std::printf("name,ssim,psnr,mse\n");
    int n = 0, only_a = 0, only_b = 0, failed = 0;
    double sum_ssim = 0, sum_psnr = 0, sum_mse = 0;
    int n_finite_psnr = 0;
    for (const auto& name : na) {
        if (!nb.count(name)) {
            std::fprintf(stderr, "only in %s: %s\n", da.c_str(), name.c_str());
            ++only_a;
            continue;
        }
        try {
            const auto m = compare_files(da / name, db / name, o);
            std::printf("%s,%s,%s,%s\n", csv_field(name).c_str(), num(m.ssim, 6).c_str(), num(m.psnr, 4).c_str(),
                        num(m.mse, 4).c_str());
            sum_ssim += m.ssim, sum_mse += m.mse, ++n;
            if (std::isfinite(m.psnr)) sum_psnr += m.psnr, ++n_finite_psnr;
        } catch (const hg::Error& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
            ++failed;
        }
    }
    for (const auto& name : nb)
        if (!na.count(name)) std::fprintf(stderr, "only in %s: %s\n", db.c_str(), name.c_str()), ++only_b;
    std::fprintf(stderr, "%d pairs compared, %d failed, %d only in %s, %d only in %s\n", n, failed, only_a,
                 da.c_str(), only_b, db.c_str());
    if (n)
        std::fprintf(stderr, "mean: ssim %.6f  psnr %s dB (over %d pairs with finite PSNR)  mse %.4f\n", sum_ssim / n,
                     n_finite_psnr ? num(sum_psnr / n_finite_psnr, 4).c_str() : "-", n_finite_psnr, sum_mse / n);
    HG_CHECK(n > 0 || failed > 0, "no same-named images in %s and %s", da.c_str(), db.c_str());
    return failed ? 1 : 0;
}

}  // namespace

HG_COMMAND(compare, "Image quality: SSIM, PSNR and MSE between two images or two folders (scikit-image definitions)") {
    auto a = std::make_shared<std::string>();
    auto b = std::make_shared<std::string>();
    auto o = std::make_shared<Options>();
    app.add_option("A", *a, "reference image, or a folder of them")->required();
    app.add_option("B", *b, "test image, or a folder with the same file names")->required();
    app.add_flag("--csv", o->csv, "print one CSV row (a,b,ssim,psnr,mse) with a header (folders always print CSV)");
    app.add_flag("--gray", o->gray, "convert RGB images to luma first, as Pillow's convert('L') (8-bit only)");
    app.add_option("--data-range", o->data_range,
                   "the data range R in PSNR and SSIM's constants (default: 255 for 8-bit, 65535 for 16-bit images, "
                   "as scikit-image takes from the dtype)");
    app.footer(
        "Definitions (scikit-image 0.24 defaults): SSIM = structural_similarity with a 7x7 uniform window, K1 0.01,\n"
        "K2 0.03, sample covariance, mean over the map with a 3-pixel border cropped; RGB images give the mean of\n"
        "the per-channel SSIMs (channel_axis=-1). PSNR = 10 log10(R^2 / MSE) (inf for identical images); MSE over\n"
        "all samples. Alpha channels are ignored; a gray image compared with an RGB one counts as R = G = B.\n"
        "Images: PNG (8/16-bit), JPEG, BMP, TGA. JPEGs are decoded by stb_image, which may differ from libjpeg\n"
        "by a level here and there: compare PNGs for reference-exact numbers.\n"
        "Folders: every same-named image pair, one CSV row each on stdout; unmatched names and means on stderr.\n");
    return [=] {
        const bool da = std::filesystem::is_directory(*a), db = std::filesystem::is_directory(*b);
        HG_CHECK(da == db, "compare two images or two folders, not %s and %s", a->c_str(), b->c_str());
        if (da) return compare_folders(*a, *b, *o);
        const auto m = compare_files(*a, *b, *o);
        if (o->csv) {
            std::printf("a,b,ssim,psnr,mse\n%s,%s,%s,%s,%s\n", csv_field(*a).c_str(), csv_field(*b).c_str(),
                        num(m.ssim, 6).c_str(), num(m.psnr, 4).c_str(), num(m.mse, 4).c_str());
        } else {
            std::printf("SSIM %s  PSNR %s dB  MSE %s\n", num(m.ssim, 6).c_str(), num(m.psnr, 4).c_str(),
                        num(m.mse, 4).c_str());
        }
        return 0;
    };
}
