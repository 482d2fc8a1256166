// SSIM / PSNR / MSE as scikit-image defines them (see quality_metrics.h).
#include "imaging/quality_metrics.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace hg {

namespace {

constexpr int kWin = 7;          // skimage win_size default (uniform filter)
constexpr int kPad = kWin / 2;   // border cropped from the SSIM map
constexpr double kK1 = 0.01, kK2 = 0.03;

void check_pair(const MetricImage& a, const MetricImage& b) {
    HG_CHECK(a.height == b.height && a.width == b.width && a.channels == b.channels,
             "images differ in shape: %lldx%lldx%lld vs %lldx%lldx%lld (height x width x channels)",
             (long long)a.height, (long long)a.width, (long long)a.channels, (long long)b.height, (long long)b.width,
             (long long)b.channels);
    HG_CHECK(a.height > 0 && a.width > 0 && a.channels > 0, "empty image");
    HG_CHECK((int64_t)a.samples.size() == a.height * a.width * a.channels &&
                 (int64_t)b.samples.size() == b.height * b.width * b.channels,
             "image sample count does not match its shape");
}

// Mean SSIM of channel c: for every pixel whose 7x7 window lies inside the image (skimage crops the
// others), the window means/variances/covariance give
//   S = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2)).
// Window sums run separably (rows, then a sliding column sum); with integer samples they are exact.
double ssim_channel(const MetricImage& a, const MetricImage& b, int64_t c, double data_range) {
    const int64_t H = a.height, W = a.width, C = a.channels;
    const int64_t Wo = W - 2 * kPad;  // output columns
    const double np = kWin * kWin, cov_norm = np / (np - 1);
    const double C1 = (kK1 * data_range) * (kK1 * data_range), C2 = (kK2 * data_range) * (kK2 * data_range);
    // row_sums[r % 7][q][j]: horizontal 7-sums of quantity q (x, y, xx, yy, xy) of row r, column j + kPad
    std::vector<double> row_sums(kWin * 5 * Wo), col(5 * Wo, 0.0);
    auto at = [&](const MetricImage& m, int64_t y, int64_t x) { return m.samples[(y * W + x) * C + c]; };
    auto horizontal = [&](int64_t r) {
        double* rs = &row_sums[(r % kWin) * 5 * Wo];
        for (int64_t j = 0; j < Wo; ++j) {
            double s[5] = {0, 0, 0, 0, 0};
            for (int64_t k = 0; k < kWin; ++k) {
                const double x = at(a, r, j + k), y = at(b, r, j + k);
                s[0] += x, s[1] += y, s[2] += x * x, s[3] += y * y, s[4] += x * y;
            }
            for (int q = 0; q < 5; ++q) rs[q * Wo + j] = s[q];
        }
    };
    double total = 0;
    for (int64_t r = 0; r < H; ++r) {
        horizontal(r);
        const double* add = &row_sums[(r % kWin) * 5 * Wo];
        for (int64_t i = 0; i < 5 * Wo; ++i) col[i] += add[i];
        if (r < kWin - 1) continue;
        // window rows r-6 .. r: centre row r-3
        for (int64_t j = 0; j < Wo; ++j) {
            const double ux = col[j] / np, uy = col[Wo + j] / np;
            const double uxx = col[2 * Wo + j] / np, uyy = col[3 * Wo + j] / np, uxy = col[4 * Wo + j] / np;
            const double vx = cov_norm * (uxx - ux * ux);
            const double vy = cov_norm * (uyy - uy * uy);
            const double vxy = cov_norm * (uxy - ux * uy);
            const double A1 = 2 * ux * uy + C1, A2 = 2 * vxy + C2;
            const double B1 = ux * ux + uy * uy + C1, B2 = vx + vy + C2;
            total += (A1 * A2) / (B1 * B2);
        }
        const double* sub = &row_sums[((r + 1) % kWin) * 5 * Wo];  // row r-6, leaving the window next
        for (int64_t i = 0; i < 5 * Wo; ++i) col[i] -= sub[i];
    }
    return total / (double)((H - 2 * kPad) * Wo);
}

}  // namespace

double mean_squared_error(const MetricImage& a, const MetricImage& b) {
    check_pair(a, b);
    double s = 0;
    for (size_t i = 0; i < a.samples.size(); ++i) {
        const double d = a.samples[i] - b.samples[i];
        s += d * d;
    }
    return s / (double)a.samples.size();
}

double peak_signal_noise_ratio(const MetricImage& a, const MetricImage& b, double data_range) {
    HG_CHECK(data_range > 0, "PSNR: data_range must be positive, got %g", data_range);
    const double err = mean_squared_error(a, b);
    if (err == 0) return std::numeric_limits<double>::infinity();
    return 10.0 * std::log10((data_range * data_range) / err);
}

double structural_similarity(const MetricImage& a, const MetricImage& b, double data_range) {
    check_pair(a, b);
    HG_CHECK(data_range > 0, "SSIM: data_range must be positive, got %g", data_range);
    HG_CHECK(a.height >= kWin && a.width >= kWin,
             "SSIM needs images of at least %dx%d pixels (the window), got %lldx%lld", kWin, kWin,
             (long long)a.width, (long long)a.height);
    double s = 0;
    for (int64_t c = 0; c < a.channels; ++c) s += ssim_channel(a, b, c, data_range);
    return s / (double)a.channels;
}

QualityMetrics compare_images(const MetricImage& a, const MetricImage& b, double data_range) {
    QualityMetrics m;
    m.ssim = structural_similarity(a, b, data_range);
    m.mse = mean_squared_error(a, b);
    m.psnr = peak_signal_noise_ratio(a, b, data_range);
    return m;
}

MetricImage rgb_to_luma_pil(const MetricImage& rgb) {
    HG_CHECK(rgb.channels == 3, "luma conversion needs an RGB image, got %lld channels", (long long)rgb.channels);
    MetricImage out;
    out.height = rgb.height, out.width = rgb.width, out.channels = 1;
    out.samples.resize(rgb.height * rgb.width);
    for (int64_t p = 0; p < rgb.height * rgb.width; ++p) {
        const double* s = &rgb.samples[p * 3];
        HG_CHECK(s[0] >= 0 && s[0] <= 255 && s[1] >= 0 && s[1] <= 255 && s[2] >= 0 && s[2] <= 255 &&
                     s[0] == std::floor(s[0]) && s[1] == std::floor(s[1]) && s[2] == std::floor(s[2]),
                 "luma conversion needs 8-bit integer samples");
        const uint32_t l = (uint32_t)s[0] * 19595u + (uint32_t)s[1] * 38470u + (uint32_t)s[2] * 7471u + 0x8000u;
        out.samples[p] = (double)(l >> 16);
    }
    return out;
}

}  // namespace hg
