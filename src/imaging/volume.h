// Scalar volumes (CT/MR series, multi-frame DICOM, NIfTI, raw int16) and what to show of them:
// one slice along an anatomical axis, or several evenly spaced slices.
//
// Orientation: every volume carries an affine from voxel (i, j, k) to patient RAS millimetres
// (DICOM's LPS is converted). Axes are found as in nibabel's as_closest_canonical (each voxel axis
// goes to the nearest of R, A, S); slices are shown in the radiological convention:
//   axial    slice N counts from inferior;  rows anterior → posterior, columns patient right → left
//   coronal  slice N counts from posterior; rows superior → inferior, columns patient right → left
//   sagittal slice N counts from the patient's left; rows superior → inferior, columns anterior → posterior
// For a standard axial CT this is exactly how the DICOM frames are displayed.
#pragma once
#include <array>
#include <filesystem>
#include <string>
#include <vector>

#include "imaging/dicom.h"
#include "imaging/image.h"
#include "imaging/window.h"

namespace hg::imaging {

struct Volume {
    int nx = 0, ny = 0, nz = 0;          // voxels along i (columns), j (rows), k (slices)
    int channels = 1;                    // 1 (scalar) or 3 (RGB colour volume, 0..255)
    std::vector<float> data;             // [nz][ny][nx][channels], modality values (HU for CT)
    std::array<double, 16> affine{};     // row-major 4×4: (i, j, k, 1) → (R, A, S, 1) in mm
    std::string source;                  // file or folder, for messages
    std::string modality;                // "CT", "MR", ... when known
    DisplayHints hints;                  // file windows / VOI LUT / MONOCHROME1
    bool stored_display = false;         // DICOM/raw: slices k as stored are the natural view
    float at(int i, int j, int k, int c = 0) const { return data[((size_t(k) * ny + j) * nx + i) * channels + c]; }
};

// The affine DICOM frames without orientation get, and raw volumes: columns toward the patient's
// left, rows toward posterior, slices toward superior, so that axial slices show as stored.
std::array<double, 16> default_affine(double sx, double sy, double sz);

enum class Axis { Axial, Coronal, Sagittal };
Axis parse_axis(const std::string& s);  // "axial" | "coronal" | "sagittal"
const char* axis_name(Axis a);

// A 2-D slice of a volume in display orientation; spacing in mm between rows and between columns.
struct Slice {
    int width = 0, height = 0, channels = 1;
    std::vector<float> values;  // [height][width][channels]
    double row_spacing = 1, col_spacing = 1;
};

// Number of slices along an axis, and one of them (index 0 = inferior / posterior / left).
int axis_length(const Volume& v, Axis axis);
Slice extract_slice(const Volume& v, Axis axis, int index);
// Slice k as stored (rows j, columns i): how a DICOM viewer shows frame k of an acquisition.
Slice stored_slice(const Volume& v, int k);

// Resamples a slice to square pixels (linear interpolation along the coarser direction) so that
// reformatted slices of thick-slice scans are not squashed. No-op when spacings agree within 1 %.
Slice square_pixels(const Slice& s, int64_t max_pixels);

// HealthGPT-Pro's frame choice: indices int(linspace(1, D − 2, n)) (skips the first and last
// slice); for D < 3, linspace(0, D − 1, n).
std::vector<int> sample_slice_indices(int depth, int n);

// Multi-frame DICOM → volume (frames sorted along the slice normal when positions are known).
Volume volume_from_dicom(const DicomImage& img);

// All DICOM files directly inside `folder` (one series; `series_uid` picks one if there are
// several) → a volume sorted by position along the slice normal (else Instance Number).
Volume read_dicom_series(const std::filesystem::path& folder, const std::string& series_uid = "",
                         const Limits& limits = default_limits());

// Headerless volume: nx × ny × nz samples of `type`, x fastest, after `offset` bytes.
struct RawSpec {
    int nx = 0, ny = 0, nz = 0;
    SampleType type = SampleType::I16;
    bool big_endian = false;
    double sx = 1, sy = 1, sz = 1;
    int64_t offset = 0;
};
// Parses "WxHxD[:type][:be][:sp=X,Y,Z]" e.g. "256x256x108:int16:sp=0.957,0.957,1.5".
RawSpec parse_raw_spec(const std::string& text);
Volume read_raw_volume(const std::filesystem::path& path, const RawSpec& spec, const Limits& limits = default_limits());

}  // namespace hg::imaging
