// NIfTI-1 and NIfTI-2 single files (.nii, .nii.gz), either byte order. Scaling (scl_slope,
// scl_inter) and orientation (sform, else qform, else pixdim) are applied as nibabel does.
#pragma once
#include <array>
#include <filesystem>
#include <span>
#include <string>

#include "imaging/volume.h"

namespace hg::imaging {

struct NiftiInfo {
    int version = 1;                 // 1 or 2
    bool big_endian = false;
    int datatype = 0;                // NIFTI_TYPE_* code
    std::array<int64_t, 8> dim{};    // dim[0] = number of dimensions
    std::array<double, 8> pixdim{};
    double scl_slope = 0, scl_inter = 0;
    int qform_code = 0, sform_code = 0;
    int64_t vox_offset = 0;
    std::array<double, 16> affine{}; // the one used (sform / qform / base), row-major
    std::string affine_source;       // "sform", "qform" or "pixdim"
};

// Reads volume `volume_index` (4th dimension, 0 for 3-D files) of a NIfTI file.
Volume read_nifti(const std::filesystem::path& path, int volume_index = 0, const Limits& limits = default_limits(),
                  NiftiInfo* info = nullptr);
Volume decode_nifti(std::span<const uint8_t> bytes, const std::string& name, int volume_index = 0,
                    const Limits& limits = default_limits(), NiftiInfo* info = nullptr);

// gunzips in memory (concatenated members allowed), refusing output over max_bytes.
std::vector<uint8_t> gunzip(std::span<const uint8_t> gz, const std::string& name, int64_t max_bytes);

}  // namespace hg::imaging
