// Windowing. Presets are the usual CT display windows (Radiopaedia's "Windowing (CT)" table);
// the function is DICOM's: for LINEAR,
//   x <= c − 0.5 − (w − 1)/2          → 0
//   x >  c − 0.5 + (w − 1)/2          → 255
//   otherwise ((x − (c − 0.5)) / (w − 1) + 0.5) · 255
// LINEAR_EXACT uses c and w as given, SIGMOID 255 / (1 + exp(−4 (x − c) / w)).
#include "imaging/window.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace hg::imaging {

static const WindowPreset kPresets[] = {
    {"brain", 40, 80, "CT head: brain parenchyma"},
    {"subdural", 75, 215, "CT head: subdural / extra-axial blood"},
    {"stroke", 40, 40, "CT head: grey-white differentiation in early ischaemia"},
    {"bone", 400, 1800, "CT: bone"},
    {"lung", -600, 1500, "CT chest: lung parenchyma"},
    {"mediastinum", 50, 350, "CT chest: mediastinum"},
    {"abdomen", 50, 400, "CT abdomen: soft tissue"},
    {"liver", 30, 150, "CT abdomen: liver"},
};

std::span<const WindowPreset> window_presets() { return kPresets; }

const WindowPreset* find_window_preset(const std::string& name) {
    for (const auto& p : kPresets)
        if (name == p.name) return &p;
    return nullptr;
}

static std::string preset_names() {
    std::string s;
    for (const auto& p : kPresets) s += std::string(s.empty() ? "" : ", ") + p.name;
    return s;
}

static bool parse_double(const std::string& s, double& out) {
    if (s.empty()) return false;
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size() && std::isfinite(out);
}

WindowSpec parse_window(const std::string& text) {
    WindowSpec w;
    if (text.empty() || text == "auto") return w;
    if (const WindowPreset* p = find_window_preset(text)) {
        w.kind = WindowSpec::Kind::Preset;
        w.preset = p->name;
        w.cw = {p->center, p->width, VoiFunction::Linear};
        return w;
    }
    if (text == "minmax") {
        w.kind = WindowSpec::Kind::MinMax;
        return w;
    }
    if (text == "file" || text.rfind("file:", 0) == 0) {
        w.kind = WindowSpec::Kind::FileWindow;
        double idx = 0;
        if (text.size() > 5 && (!parse_double(text.substr(5), idx) || idx < 0 || idx != std::floor(idx) || idx > 1e6))
            fail("--window %s: expected file or file:N with N = 0, 1, ...", text.c_str());
        w.index = int(idx);
        return w;
    }
    auto comma = text.find(',');
    if (comma != std::string::npos) {
        bool pct = text[0] == 'p';
        std::string a = text.substr(pct ? 1 : 0, comma - (pct ? 1 : 0)), b = text.substr(comma + 1);
        double x, y;
        if (parse_double(a, x) && parse_double(b, y)) {
            if (pct) {
                if (!(0 <= x && x < y && y <= 100)) fail("--window %s: percentiles must satisfy 0 <= low < high <= 100", text.c_str());
                w.kind = WindowSpec::Kind::Percentile;
                w.low_pct = x;
                w.high_pct = y;
            } else {
                if (!(y >= 1)) fail("--window %s: the width must be at least 1", text.c_str());
                w.kind = WindowSpec::Kind::Explicit;
                w.cw = {x, y, VoiFunction::Linear};
            }
            return w;
        }
    }
    fail("--window %s: expected a preset (%s), C,W (e.g. -600,1500), auto, file[:N], minmax or pLOW,HIGH",
         text.c_str(), preset_names().c_str());
}

std::string describe(const WindowSpec& w) {
    char buf[128];
    switch (w.kind) {
        case WindowSpec::Kind::Auto: return "auto";
        case WindowSpec::Kind::Preset: std::snprintf(buf, sizeof buf, "%s (C %g, W %g)", w.preset.c_str(), w.cw.center, w.cw.width); return buf;
        case WindowSpec::Kind::Explicit: std::snprintf(buf, sizeof buf, "C %g, W %g", w.cw.center, w.cw.width); return buf;
        case WindowSpec::Kind::FileWindow: std::snprintf(buf, sizeof buf, "file window %d", w.index); return buf;
        case WindowSpec::Kind::Percentile: std::snprintf(buf, sizeof buf, "percentiles %g-%g", w.low_pct, w.high_pct); return buf;
        case WindowSpec::Kind::MinMax: return "min-max";
    }
    return "?";
}

double apply_window(double x, const WindowCW& w) {
    switch (w.function) {
        case VoiFunction::Linear: {
            double c = w.center - 0.5, width = w.width - 1;
            if (x <= c - width / 2) return 0;
            if (x > c + width / 2) return 255;
            return ((x - c) / width + 0.5) * 255;
        }
        case VoiFunction::LinearExact: {
            if (x <= w.center - w.width / 2) return 0;
            if (x > w.center + w.width / 2) return 255;
            return ((x - w.center) / w.width + 0.5) * 255;
        }
        case VoiFunction::Sigmoid: return 255 / (1 + std::exp(-4 * (x - w.center) / w.width));
    }
    return 0;
}

double percentile(std::vector<float> v, double pct) {
    HG_CHECK(!v.empty(), "percentile of no values");
    // numpy.percentile(method="linear") step by step: q = pct / 100; virtual index
    // n*q + (alpha + q*(1 - alpha - beta)) - 1 with alpha = beta = 1; numpy's _lerp, which
    // interpolates from the upper neighbour when the fraction is at least 0.5.
    double q = pct / 100.0, n = double(v.size());
    double vi = n * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0;
    if (vi >= n - 1) return *std::max_element(v.begin(), v.end());
    if (vi <= 0) return *std::min_element(v.begin(), v.end());
    size_t lo = size_t(std::floor(vi));
    double t = vi - double(lo);
    std::nth_element(v.begin(), v.begin() + lo, v.end());
    double a = v[lo];
    double b = *std::min_element(v.begin() + lo + 1, v.end());
    double diff = b - a;
    return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

// A window that maps [lo, hi] linearly onto 0..255 (LINEAR_EXACT with c, w from the range).
static WindowCW range_window(double lo, double hi) {
    if (!(hi > lo)) hi = lo + 1;  // a constant image shows as black, not NaN
    return {(lo + hi) / 2, hi - lo, VoiFunction::LinearExact};
}

ResolvedWindow resolve_window(const WindowSpec& spec, std::span<const float> values, const DisplayHints& hints) {
    ResolvedWindow r;
    char buf[160];
    auto percentiles = [&](double lo_p, double hi_p) {
        std::vector<float> v;
        v.reserve(values.size());
        for (float x : values)
            if (std::isfinite(x)) v.push_back(x);
        if (v.empty()) v.push_back(0.0f);
        double lo = percentile(v, lo_p), hi = percentile(v, hi_p);
        r.cw = range_window(lo, hi);
        std::snprintf(buf, sizeof buf, "percentiles %g-%g (%g..%g)", lo_p, hi_p, lo, hi);
        r.how = buf;
    };
    switch (spec.kind) {
        case WindowSpec::Kind::Preset:
        case WindowSpec::Kind::Explicit:
            r.cw = spec.cw;
            r.how = describe(spec);
            return r;
        case WindowSpec::Kind::FileWindow:
            if (spec.index >= int(hints.windows.size()))
                fail("--window %s: the file has %zu window(s)", describe(spec).c_str(), hints.windows.size());
            r.cw = hints.windows[spec.index];
            std::snprintf(buf, sizeof buf, "file window %d (C %g, W %g)", spec.index, r.cw.center, r.cw.width);
            r.how = buf;
            return r;
        case WindowSpec::Kind::Percentile: percentiles(spec.low_pct, spec.high_pct); return r;
        case WindowSpec::Kind::MinMax: {
            double mn = INFINITY, mx = -INFINITY;
            for (float x : values)
                if (std::isfinite(x)) mn = std::min(mn, double(x)), mx = std::max(mx, double(x));
            if (mn > mx) mn = mx = 0;
            r.cw = range_window(mn, mx);
            std::snprintf(buf, sizeof buf, "min-max (%g..%g)", mn, mx);
            r.how = buf;
            return r;
        }
        case WindowSpec::Kind::Auto:
            if (hints.voi_lut && !hints.voi_lut->data.empty()) {
                r.use_lut = true;
                r.lut = *hints.voi_lut;
                r.how = "file VOI LUT";
                return r;
            }
            if (!hints.windows.empty() && hints.windows[0].width > 0) {
                r.cw = hints.windows[0];
                std::snprintf(buf, sizeof buf, "file window (C %g, W %g)", r.cw.center, r.cw.width);
                r.how = buf;
                return r;
            }
            percentiles(0.5, 99.5);
            return r;
    }
    return r;
}

RgbImage window_to_rgb(std::span<const float> values, int width, int height, const ResolvedWindow& win, bool invert) {
    HG_CHECK(values.size() == size_t(width) * size_t(height), "window: %zu values for a %d x %d image", values.size(),
             width, height);
    RgbImage out(width, height);
    double lut_max = win.use_lut ? double((1u << std::clamp(win.lut.bits, 1, 16)) - 1) : 255;
    for (size_t i = 0; i < values.size(); i++) {
        double y;
        if (std::isnan(values[i])) {
            y = 0;  // missing values (NaN in float volumes) show as black
        } else if (win.use_lut) {
            // pydicom's apply_voi_lut: index = clip(x − first_mapped, 0, n − 1), then scale to 0..255.
            double idx = std::floor(double(values[i])) - win.lut.first_mapped;
            size_t n = win.lut.data.size();
            size_t k = idx <= 0 ? 0 : idx >= double(n - 1) ? n - 1 : size_t(idx);
            y = win.lut.data[k] / lut_max * 255;
        } else {
            y = apply_window(values[i], win.cw);
        }
        int g = int(std::floor(y + 0.5));
        g = g < 0 ? 0 : g > 255 ? 255 : g;
        if (invert) g = 255 - g;
        out.rgb[i * 3 + 0] = out.rgb[i * 3 + 1] = out.rgb[i * 3 + 2] = uint8_t(g);
    }
    return out;
}

}  // namespace hg::imaging
