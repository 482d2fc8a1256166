// A bounds check of a DICOM file's element structure, run before GDCM parses it. GDCM allocates
// each value at the length the file declares, before reading it; a 10 KB file declaring a 4 GB
// value would make it allocate 4 GB (found by fuzzing). This walk checks that every defined
// length fits in what is left of the file (or of its enclosing item), that undefined-length
// sequences and items end, and that nesting stays shallow. Deflated data sets are inflated (with
// the size limit) and walked too.
#pragma once
#include <cstdint>
#include <span>
#include <string>

namespace hg::imaging {

// Throws hg::Error naming `name` and the offending element when the structure is not sound.
// Returns the size of what GDCM will parse: the file, or for a deflated data set the meta group
// plus the inflated data set (the decoder's memory budget is sized from it).
int64_t scan_dicom_structure(std::span<const uint8_t> bytes, const std::string& name, int64_t max_inflated_bytes);

}  // namespace hg::imaging
