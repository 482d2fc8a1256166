// The image options every verb that takes --image shares (imaging/load.h's ImageOptions):
//   --window PRESET|C,W|auto|file[:N]|minmax|pLO,HI   --slice N   --slices N   --axis A
//   --volume N   --series UID   --raw WxHxD[:type][:be]   --no-exif
// Call add_image_options(app, opts) in a verb's setup and finish_image_options(*opts) in its runner.
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "imaging/load.h"

namespace hgcli {

struct ImageArgs {
    std::string window = "auto", axis, raw, series;
    int slice = -1, slices = 0, volume = 0;
    bool no_exif = false, keep_aspect = false;
};

inline void add_image_options(CLI::App& app, const std::shared_ptr<ImageArgs>& a) {
    std::string presets;
    for (const auto& p : hg::imaging::window_presets())
        presets += std::string(presets.empty() ? "" : ", ") + p.name + " (" + std::to_string(int(p.center)) + "," +
                   std::to_string(int(p.width)) + ")";
    app.add_option("--window", a->window,
                   "display window for CT/MR/X-ray values: a CT preset [" + presets +
                       "], C,W (e.g. -600,1500), auto (the file's VOI LUT or window, else 0.5-99.5 percentiles; 8-bit images as they are), "
                       "file[:N] (the file's N-th window), minmax, or pLO,HI (percentiles)")
        ->capture_default_str();
    app.add_option("--slice", a->slice, "slice (or frame) index along --axis; default: the middle one");
    app.add_option("--slices", a->slices,
                   "show N evenly spaced slices as N images (int(linspace(1, D-2, N)), as HealthGPT-Pro samples)");
    app.add_option("--axis", a->axis,
                   "reformat volumes along axial, coronal or sagittal (radiological view); default: DICOM frames "
                   "as stored, NIfTI axial");
    app.add_option("--volume", a->volume, "4-D NIfTI: which volume (0-based)")->capture_default_str();
    app.add_option("--series", a->series, "folder with several DICOM series: the Series Instance UID to use");
    app.add_option("--raw", a->raw, "the input is a headerless volume WxHxD[:type][:be][:sp=X,Y,Z mm], e.g. 256x256x108:int16:sp=0.96,0.96,1.5");
    app.add_flag("--no-exif", a->no_exif, "ignore the EXIF orientation of JPEG/TIFF files (as PIL's Image.open does)");
    app.add_flag("--keep-aspect", a->keep_aspect, "do not resample reformatted slices to square pixels");
}

inline hg::imaging::ImageOptions finish_image_options(const ImageArgs& a) {
    hg::imaging::ImageOptions o;
    o.window = hg::imaging::parse_window(a.window);
    if (!a.axis.empty()) o.axis = hg::imaging::parse_axis(a.axis);
    if (a.slice >= 0) o.slice = a.slice;
    if (a.slices < 0) hg::fail("--slices %d: expected a positive count", a.slices);
    o.n_slices = a.slices;
    o.volume_index = a.volume;
    o.series_uid = a.series;
    if (!a.raw.empty()) o.raw = hg::imaging::parse_raw_spec(a.raw);
    o.apply_exif = !a.no_exif;
    o.square_pixels = !a.keep_aspect;
    return o;
}

}  // namespace hgcli
