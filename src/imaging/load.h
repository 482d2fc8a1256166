// What the model sees of a medical input, in one call:
//
//   auto images = hg::imaging::load_medical_image("ct_series/", {.window = parse_window("lung"),
//                                                               .slice = 120});
//   std::vector<float> pixels = hg::imaging::clip_preprocess(images[0].image);  // [3,336,336]
//
// Inputs: PNG/JPEG/BMP/GIF/TIFF/PNM files, DICOM files (any transfer syntax GDCM decodes,
// multi-frame included), folders of DICOM slices (one series), NIfTI-1/2 (.nii, .nii.gz) and
// headerless raw volumes (with ImageOptions::raw). Output: 8-bit RGB images.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "imaging/image.h"
#include "imaging/volume.h"
#include "imaging/window.h"

namespace hg::imaging {

struct ImageOptions {
    WindowSpec window;              // --window (auto by default)
    std::optional<int> slice;       // --slice N along `axis` (default: the middle slice)
    std::optional<Axis> axis;       // --axis; unset: DICOM/raw slices as stored, NIfTI axial
    int n_slices = 0;               // --slices N: N evenly spaced slices (HealthGPT-Pro's sampling)
    int volume_index = 0;           // 4-D NIfTI: which volume
    std::string series_uid;         // folder with several series: which one
    std::optional<RawSpec> raw;     // headerless volume layout (--raw WxHxD:type)
    bool apply_exif = true;         // honour EXIF orientation of JPEG/TIFF
    bool square_pixels = true;      // resample reformatted slices to square pixels
    Limits limits;
};

enum class SourceKind { Raster, Dicom, DicomSeries, Nifti, Raw };
const char* source_kind_name(SourceKind k);

struct LoadedImage {
    RgbImage image;
    std::string description;  // "axial slice 54 of 108, window lung (C -600, W 1500)"
};

// Everything the caller may want to know about the input, plus the images.
struct LoadResult {
    SourceKind kind = SourceKind::Raster;
    std::string modality;     // DICOM modality when known
    std::vector<LoadedImage> images;
};

LoadResult load_medical(const std::filesystem::path& path, const ImageOptions& opts = {});

// The images only, 8-bit RGB, ready for clip_preprocess.
std::vector<RgbImage> load_medical_image(const std::filesystem::path& path, const ImageOptions& opts = {});

// How a path will be read (by extension and magic bytes).
SourceKind detect_source(const std::filesystem::path& path, const ImageOptions& opts = {});

}  // namespace hg::imaging
