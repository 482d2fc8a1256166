// libFuzzer target: DICOM decoding as the product runs it (decode_dicom's default,
// DecodeIsolation::Subprocess): GDCM parses and decodes in a fork()ed child under resource limits
// (imaging/isolated_decode.h) and this process checks the child's frames. What is fuzzed here is
// the parent side (frame reading and checking, the runner's handling of every way a child ends)
// and, through the child, GDCM on hostile bytes: a GDCM assert, crash, huge allocation or loop in
// the child must end in an hg::Error, and in this sanitizer build a sanitizer report from the
// child makes the parent abort (a finding). libFuzzer's coverage counters of the child are not
// seen by this process (they are copies after the fork), so coverage counts the parent's code;
// fuzz_dicom runs the same parsing in-process for coverage-guided search of our own checks.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "imaging/dicom.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    hg::imaging::Limits lim;
    lim.max_file_bytes = 64 << 20;
    lim.max_pixels = 1 << 22;
    lim.max_voxels = 1 << 24;
    try {
        hg::imaging::DicomImage d = hg::imaging::decode_dicom({data, size}, "fuzz.dcm", lim);
        if (d.info.is_color()) (void)d.color_frame(0);
        else (void)d.modality_frame(0);
    } catch (const hg::Error&) {
    }
    return 0;
}
