// Display mapping of scalar images (CT in HU, MR/X-ray stored values, 16-bit PNG) to 8-bit:
// named CT presets, the file's own window or VOI LUT, percentiles, min–max, or an explicit C,W.
// The linear function is DICOM PS3.3 C.11.2.1.2.1 (what pydicom's apply_windowing computes) with
// output range 0..255, rounded half up.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "imaging/image.h"

namespace hg::imaging {

enum class VoiFunction { Linear, LinearExact, Sigmoid };

struct WindowCW {
    double center = 0, width = 1;
    VoiFunction function = VoiFunction::Linear;
};

// A named CT window (center, width in HU).
struct WindowPreset {
    const char* name;
    double center, width;
    const char* use;
};
std::span<const WindowPreset> window_presets();
const WindowPreset* find_window_preset(const std::string& name);  // nullptr if unknown

// A VOI LUT table from the file (VOI LUT Sequence): entries map first_mapped + i → data[i].
struct VoiLut {
    int first_mapped = 0;
    int bits = 16;  // output bits of the table
    std::vector<uint16_t> data;
};

// How the user asked to map values to 8 bits.
struct WindowSpec {
    enum class Kind {
        Auto,        // the file's first window (or VOI LUT); else the 0.5–99.5 percentile range
        Preset,      // a named CT preset (HU)
        Explicit,    // center, width given
        FileWindow,  // the file's window number `index` (error if the file has none)
        Percentile,  // [low, high] percentiles of the image
        MinMax,      // full range of the image
    };
    Kind kind = Kind::Auto;
    std::string preset;
    WindowCW cw;
    int index = 0;
    double low_pct = 0.5, high_pct = 99.5;
};

// Parses --window: a preset name ("lung"), "C,W" ("-600,1500"), "auto", "file", "file:N",
// "minmax", or "pLOW,HIGH" percentiles ("p1,99"). Errors list the presets.
WindowSpec parse_window(const std::string& text);
std::string describe(const WindowSpec& w);

// What the source knows about its own display (from DICOM; empty otherwise).
struct DisplayHints {
    std::vector<WindowCW> windows;  // Window Center/Width pairs, in order
    std::optional<VoiLut> voi_lut;  // first VOI LUT of the VOI LUT Sequence
    bool invert = false;            // MONOCHROME1: low values are bright
};

// The linear/sigmoid window of one value onto 0..255 (not yet rounded).
double apply_window(double x, const WindowCW& w);

// Percentile of values (linear interpolation between order statistics, numpy's default).
double percentile(std::vector<float> values, double pct);

// Resolves the spec against the image's values and hints to a concrete window (or VOI LUT).
struct ResolvedWindow {
    bool use_lut = false;
    WindowCW cw;
    VoiLut lut;
    std::string how;  // a short description for the user ("lung (C -600, W 1500)", "file window 1", ...)
};
ResolvedWindow resolve_window(const WindowSpec& spec, std::span<const float> values, const DisplayHints& hints);

// Maps values [h][w] to 8-bit gray (rounded, clamped, inverted for MONOCHROME1) and replicates to RGB.
RgbImage window_to_rgb(std::span<const float> values, int width, int height, const ResolvedWindow& win,
                       bool invert);

}  // namespace hg::imaging
