// DICOM images through GDCM (Debian's libgdcm): every transfer syntax GDCM decodes (uncompressed
// little/big endian, deflate, RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000), 1–32-bit
// signed/unsigned and float samples, MONOCHROME1/2, RGB, YBR_FULL/YBR_FULL_422, palette colour,
// multi-frame and enhanced multi-frame. Metadata is read from the data set directly so that the
// semantics (per-frame rescale, window, position) are ours and documented.
#pragma once
#include <array>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "imaging/image.h"
#include "imaging/isolated_decode.h"
#include "imaging/window.h"

namespace hg::imaging {

enum class SampleType { U8, I8, U16, I16, U32, I32, F32, F64 };
const char* sample_type_name(SampleType t);

// Decoded samples as stored (before the modality LUT), frames × rows × columns × samples,
// samples interleaved. Colour is already RGB (YBR converted, palette applied).
struct PixelData {
    SampleType type = SampleType::U8;
    std::vector<uint8_t> bytes;
    size_t count = 0;
    double at(size_t i) const;  // sample i as a double (exact for every type)
};

struct DicomInfo {
    std::string path;
    std::string transfer_syntax;       // UID
    std::string transfer_syntax_name;  // e.g. "JPEG 2000 Image Compression (Lossless Only)"
    std::string sop_class_uid, modality, body_part, series_uid, study_uid, series_description;
    std::string photometric;           // as in the file (MONOCHROME2, YBR_FULL_422, PALETTE COLOR, ...)
    int rows = 0, columns = 0, frames = 1, samples_per_pixel = 1;
    int bits_allocated = 0, bits_stored = 0, high_bit = 0, pixel_representation = 0, planar_configuration = 0;
    bool float_pixels = false;         // Float / Double Float Pixel Data
    bool lossy = false;                // the pixel data went through lossy compression
    // Modality LUT (rescale); per frame for enhanced multi-frame files (else one value for all).
    std::vector<double> rescale_slope{1.0}, rescale_intercept{0.0};
    std::string rescale_type;          // "HU" etc., when given
    std::vector<WindowCW> windows;     // Window Center/Width (top level or shared/first per-frame group)
    std::optional<VoiLut> voi_lut;     // first item of the VOI LUT Sequence
    std::optional<std::array<double, 2>> pixel_spacing;  // row spacing, column spacing (mm)
    std::optional<double> slice_thickness;
    std::optional<std::array<double, 6>> orientation;    // Image Orientation (Patient): row then column cosines
    std::vector<std::array<double, 3>> positions;        // Image Position (Patient), one per frame when known
    std::optional<int> instance_number;
    bool monochrome1() const { return photometric == "MONOCHROME1"; }
    bool is_color() const { return samples_per_pixel == 3; }
};

struct DicomImage {
    DicomInfo info;
    PixelData pixels;  // frames × rows × columns × (1 or 3)
    // One frame's values after the modality LUT (Hounsfield units for CT), rows × columns.
    std::vector<float> modality_frame(int frame) const;
    // One frame as 8-bit RGB for a colour image (samples above 8 bits scaled to 0..255).
    RgbImage color_frame(int frame) const;
    DisplayHints hints() const;
};

// True if the bytes look like DICOM (preamble + "DICM", or a plausible group 0008/0002 start).
bool looks_like_dicom(std::span<const uint8_t> head);

// Reads and decodes a DICOM file. Errors name the file and the problem (no pixel data,
// unsupported transfer syntax, truncated, over the limits, ...). GDCM's parse and decode run in a
// child process with resource limits (isolated_decode.h), so that a file which makes GDCM assert,
// crash, allocate gigabytes or loop ends in an hg::Error; InProcess is for fuzzing and tests only.
DicomImage read_dicom(const std::filesystem::path& path, const Limits& limits = default_limits(),
                      DecodeIsolation isolation = DecodeIsolation::Subprocess);
DicomImage decode_dicom(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits = default_limits(),
                        DecodeIsolation isolation = DecodeIsolation::Subprocess);

// Reads only the metadata (no pixel decoding): for sorting series.
DicomInfo read_dicom_info(const std::filesystem::path& path, const Limits& limits = default_limits(),
                          DecodeIsolation isolation = DecodeIsolation::Subprocess);

}  // namespace hg::imaging
