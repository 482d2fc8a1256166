// libFuzzer target: NIfTI-1/2 (plain or gzip) header and data reading, orientation and slicing.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "imaging/nifti.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    hg::imaging::Limits lim;
    lim.max_file_bytes = 64 << 20;
    lim.max_pixels = 1 << 22;
    lim.max_voxels = 1 << 24;
    try {
        hg::imaging::Volume v = hg::imaging::decode_nifti({data, size}, "fuzz.nii", 0, lim);
        for (auto axis : {hg::imaging::Axis::Axial, hg::imaging::Axis::Coronal, hg::imaging::Axis::Sagittal}) {
            int n = hg::imaging::axis_length(v, axis);
            hg::imaging::Slice s = hg::imaging::extract_slice(v, axis, n / 2);
            hg::imaging::square_pixels(s, 1 << 22);
        }
    } catch (const hg::Error&) {
    }
    return 0;
}
