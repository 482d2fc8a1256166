// Pillow-exact resampling. The steps and their rounding follow Pillow's ImagingResample:
//   1. per output pixel xx: center = (xx + 0.5) * scale, scale = in/out; support = filter support
//      * max(scale, 1); taps xmin = (int)(center - support + 0.5) clamped to 0 and
//      xmax = (int)(center + support + 0.5) clamped to in; weight of tap x =
//      filter((x - center + 0.5) / max(scale, 1)), weights normalised to sum 1 (in double);
//   2. weights → int32 fixed point with 22 fraction bits, rounding half away from zero;
//   3. a pass accumulates 2^21 + sum(sample * weight) in int32 and keeps bits 22.. clamped to 0..255.
#include "imaging/resample.h"

#include <cmath>

#include "core/error.h"

namespace hg::imaging {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double filter_box(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
double filter_bilinear(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}
double filter_hamming(double x) {
    x = std::fabs(x);
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * M_PI;
    return std::sin(x) / x * (0.54f + 0.46f * std::cos(x));  // float constants, as in Pillow
}
double filter_bicubic(double x) {  // Keys cubic with a = -0.5
    const double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}
double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return std::sin(x) / x;
}
double filter_lanczos(double x) {  // 3-lobe truncated sinc
    if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
    return 0.0;
}

struct Filter {
    double (*fn)(double);
    double support;
};
Filter filter_of(ResampleFilter f) {
    switch (f) {
        case ResampleFilter::Box: return {filter_box, 0.5};
        case ResampleFilter::Bilinear: return {filter_bilinear, 1.0};
        case ResampleFilter::Hamming: return {filter_hamming, 1.0};
        case ResampleFilter::Bicubic: return {filter_bicubic, 2.0};
        case ResampleFilter::Lanczos: return {filter_lanczos, 3.0};
    }
    fail("resize: unknown filter");
}

// Taps of one axis: for output index o, inputs [first[o], first[o] + count[o]) with fixed-point weights
// weights[o * ksize + t].
struct Taps {
    int ksize = 0;
    std::vector<int> first, count;
    std::vector<int32_t> weights;
};

Taps make_taps(int in_size, int out_size, const Filter& filter) {
    // Pillow passes the box edges as float: in0 = 0, in1 = in_size.
    float in0 = 0.0f, in1 = float(in_size);
    double scale = double(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter.support * filterscale;
    Taps t;
    t.ksize = int(std::ceil(support)) * 2 + 1;
    t.first.resize(out_size);
    t.count.resize(out_size);
    t.weights.assign(size_t(out_size) * t.ksize, 0);
    std::vector<double> k(t.ksize);
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ss = 1.0 / filterscale;
        int xmin = int(center - support + 0.5);  // truncation toward zero, then clamped
        if (xmin < 0) xmin = 0;
        int xmax = int(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            double w = filter.fn((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (int x = 0; x < t.ksize; x++) {
            double v = x < xmax ? k[x] : 0.0;
            t.weights[size_t(xx) * t.ksize + x] =
                v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
        }
        t.first[xx] = xmin;
        t.count[xx] = xmax;
    }
    return t;
}

inline uint8_t clip8(int32_t acc) {
    int32_t v = acc >> kPrecisionBits;
    return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Resamples an image of `channels` interleaved uint8 channels; returns out_w × out_h.
std::vector<uint8_t> resample(const uint8_t* in, int in_w, int in_h, int channels, int out_w, int out_h,
                              ResampleFilter which) {
    HG_CHECK(in_w > 0 && in_h > 0 && out_w > 0 && out_h > 0, "resize: empty size (%d x %d -> %d x %d)", in_w, in_h,
             out_w, out_h);
    Filter filter = filter_of(which);
    bool need_h = out_w != in_w, need_v = out_h != in_h;
    if (!need_h && !need_v) return std::vector<uint8_t>(in, in + size_t(in_w) * in_h * channels);
    Taps tv = make_taps(in_h, out_h, filter);
    // Rows the vertical pass reads: [y_first, y_last).
    int y_first = tv.first[0];
    int y_last = tv.first[out_h - 1] + tv.count[out_h - 1];

    // Horizontal pass over rows y_first..y_last-1: tmp [y_last - y_first][out_w][channels].
    std::vector<uint8_t> tmp;
    const uint8_t* src = in;
    int src_w = in_w, row0 = 0;
    if (need_h) {
        Taps th = make_taps(in_w, out_w, filter);
        int rows = y_last - y_first;
        tmp.resize(size_t(rows) * out_w * channels);
        for (int y = 0; y < rows; y++) {
            const uint8_t* line = in + size_t(y + y_first) * in_w * channels;
            uint8_t* dst = &tmp[size_t(y) * out_w * channels];
            for (int xx = 0; xx < out_w; xx++) {
                const int32_t* k = &th.weights[size_t(xx) * th.ksize];
                int xmin = th.first[xx], n = th.count[xx];
                for (int c = 0; c < channels; c++) {
                    int32_t acc = 1 << (kPrecisionBits - 1);
                    for (int x = 0; x < n; x++) acc += int32_t(line[(x + xmin) * channels + c]) * k[x];
                    dst[xx * channels + c] = clip8(acc);
                }
            }
        }
        src = tmp.data();
        src_w = out_w;
        row0 = y_first;  // tmp row r holds input row r + y_first
    }
    if (!need_v) return tmp;

    // Vertical pass: out [out_h][src_w][channels].
    std::vector<uint8_t> out(size_t(out_h) * src_w * channels);
    for (int yy = 0; yy < out_h; yy++) {
        const int32_t* k = &tv.weights[size_t(yy) * tv.ksize];
        int ymin = tv.first[yy] - row0, n = tv.count[yy];
        for (int xx = 0; xx < src_w; xx++) {
            for (int c = 0; c < channels; c++) {
                int32_t acc = 1 << (kPrecisionBits - 1);
                for (int y = 0; y < n; y++) acc += int32_t(src[(size_t(y + ymin) * src_w + xx) * channels + c]) * k[y];
                out[(size_t(yy) * src_w + xx) * channels + c] = clip8(acc);
            }
        }
    }
    return out;
}

}  // namespace

RgbImage resize_pil(const RgbImage& in, int out_w, int out_h, ResampleFilter filter) {
    RgbImage out;
    out.width = out_w;
    out.height = out_h;
    out.rgb = resample(in.rgb.data(), in.width, in.height, 3, out_w, out_h, filter);
    return out;
}

std::vector<uint8_t> resize_pil_gray(std::span<const uint8_t> in, int in_w, int in_h, int out_w, int out_h,
                                     ResampleFilter filter) {
    HG_CHECK(in.size() == size_t(in_w) * size_t(in_h), "resize: buffer of %zu bytes is not %d x %d", in.size(), in_w,
             in_h);
    return resample(in.data(), in_w, in_h, 1, out_w, out_h, filter);
}

}  // namespace hg::imaging
