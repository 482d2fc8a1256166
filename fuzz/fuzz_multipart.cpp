// libFuzzer target: the multipart/related parser of the DICOMweb client (WADO-RS bodies from a
// PACS) on arbitrary bytes. The first line of the input is the Content-Type (its boundary), the
// rest the body; every part's headers and body are read back.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "pacs/multipart.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const size_t eol = in.find('\n');
    if (eol == std::string_view::npos) return 0;
    try {
        const std::string boundary = hg::pacs::multipart_boundary(in.substr(0, eol));
        hg::pacs::MultipartLimits limits;
        limits.max_parts = 64;
        limits.max_header_bytes = 512;
        const auto parts = hg::pacs::parse_multipart(in.substr(eol + 1), boundary, "fuzz", limits);
        size_t sum = 0;
        for (const auto& p : parts) {
            sum += p.body.size() + hg::pacs::media_type(p.header("content-type")).size();
            // a part's body lies inside the input
            if (p.body.data() < in.data() || p.body.data() + p.body.size() > in.data() + in.size()) __builtin_trap();
        }
        (void)sum;
    } catch (const hg::Error&) {
    }
    return 0;
}
