// Full-reference image quality metrics with scikit-image's definitions (skimage.metrics 0.24):
//   mse  = mean((a - b)^2) over every sample (all channels)              mean_squared_error
//   psnr = 10 log10(data_range^2 / mse), +inf when mse == 0              peak_signal_noise_ratio
//   ssim = structural_similarity with its defaults: 7x7 uniform window, K1 0.01, K2 0.03,
//          sample covariance (use_sample_covariance=True, N/(N-1) with N = 49), the mean of the
//          SSIM map with a 3-pixel border cropped; for several channels (channel_axis=-1) the mean
//          of the per-channel SSIMs.
// data_range is what skimage takes from an integer dtype: 255 for 8-bit, 65535 for 16-bit samples.
// Images are interleaved [H, W, C] samples (C = 1 gray, 3 RGB), any bit depth, as double.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace hg {

struct MetricImage {
    int64_t height = 0, width = 0, channels = 0;
    std::vector<double> samples;  // [height, width, channels]
};

struct QualityMetrics {
    double ssim = 0, psnr = 0, mse = 0;
};

// All three; throws hg::Error when the shapes differ, an image is smaller than 7x7, or data_range <= 0.
QualityMetrics compare_images(const MetricImage& a, const MetricImage& b, double data_range);

double mean_squared_error(const MetricImage& a, const MetricImage& b);
double peak_signal_noise_ratio(const MetricImage& a, const MetricImage& b, double data_range);
double structural_similarity(const MetricImage& a, const MetricImage& b, double data_range);

// Pillow's Image.convert("L") of 8-bit RGB (ITU-R 601-2 luma in 16-bit fixed point, rounded):
//   L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16
MetricImage rgb_to_luma_pil(const MetricImage& rgb);

}  // namespace hg
