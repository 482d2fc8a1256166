// The message a DICOM decoder child sends to its parent (dicom.cpp; framing in isolated_decode.h):
// the DicomInfo fields with the pixel sample type and count, in one frame, then the pixel bytes in
// another. Internal to imaging; declared here so that tests can feed the parent's check with
// messages a subverted child could send.
#pragma once
#include <cstdint>
#include <span>

#include "imaging/dicom.h"
#include "imaging/isolated_decode.h"

namespace hg::imaging {

// Child side: the info frame's body for a decoded image (or only its info, when pixels.count is 0).
void encode_dicom_info(const DicomImage& image, MessageWriter& w);

// Parent side: reads an info frame's body and checks every field against what a decoded image can
// be under `limits` (sizes, bit depths, per-frame counts, finite numbers, the sample type and count
// the attributes imply; no pixels when `pixels` is false). Throws InvalidChildMessage. Returns the
// image with its pixel buffer sized for the pixel frame (and info.path empty).
DicomImage decode_dicom_info(std::span<const uint8_t> body, const Limits& limits, bool pixels);

}  // namespace hg::imaging
