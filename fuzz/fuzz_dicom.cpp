// libFuzzer target: DICOM decoding (our structure pre-check, GDCM parse, our attribute checks, RLE,
// pixel handling) and what follows it (modality LUT, volume assembly, windowing). Any outcome but
// an hg::Error or a decoded image is a bug. Decoding runs in-process (DecodeIsolation::InProcess):
// the public APIs would fork a child per input, which libFuzzer could not see into. Without the
// child's limits, huge allocations are caught by libFuzzer's -malloc_limit_mb / -rss_limit_mb, and
// a GDCM assert aborts the run (a finding: add a pre-check, or a regression test that the
// subprocess path reports it).
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "imaging/dicom.h"
#include "imaging/volume.h"
#include "imaging/window.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    hg::imaging::Limits lim;
    lim.max_file_bytes = 64 << 20;
    lim.max_pixels = 1 << 22;
    lim.max_voxels = 1 << 24;
    try {
        hg::imaging::DicomImage d =
            hg::imaging::decode_dicom({data, size}, "fuzz.dcm", lim, hg::imaging::DecodeIsolation::InProcess);
        if (d.info.is_color()) {
            d.color_frame(0);
        } else {
            hg::imaging::Volume v = hg::imaging::volume_from_dicom(d);
            hg::imaging::Slice s = hg::imaging::stored_slice(v, v.nz / 2);
            auto w = hg::imaging::resolve_window(hg::imaging::WindowSpec{}, s.values, v.hints);
            hg::imaging::window_to_rgb(s.values, s.width, s.height, w, v.hints.invert);
        }
    } catch (const hg::Error&) {
    }
    return 0;
}
