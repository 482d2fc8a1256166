// multipart/related bodies (RFC 2046 §5.1, RFC 2387), as DICOMweb's WADO-RS answers and STOW-RS
// requests carry DICOM instances. The parser is strict and bounded, because the bytes come from a
// server on the network: CRLF line ends only, a boundary of 1..70 characters, headers of at most
// max_header_bytes per part, at most max_parts parts, every part closed by a delimiter and the body
// by the close delimiter ("--boundary--"). A truncated body (a server that stopped mid-transfer) is
// an error naming the part it stopped in, never a shorter list of parts.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace hg::pacs {

struct MultipartLimits {
    size_t max_parts = 100000;
    size_t max_header_bytes = 16384;  // all header lines of one part together
};

struct MultipartPart {
    std::map<std::string, std::string> headers;  // names lower-cased, values trimmed
    std::string_view body;                        // a view into the parsed body: keep it alive
    std::string header(const std::string& lower_name) const;  // "" when absent
};

// The value of the boundary parameter of a multipart Content-Type ("multipart/related;
// type=\"application/dicom\"; boundary=xyz"; quoted or not). Throws hg::Error when the type is not
// multipart/* or the boundary is missing or invalid.
std::string multipart_boundary(std::string_view content_type);

// The media type of a Content-Type value, lower-cased, without parameters ("application/dicom").
std::string media_type(std::string_view content_type);
// One parameter of a Content-Type value ("" when absent); names compare case-insensitively.
std::string content_type_param(std::string_view content_type, std::string_view name);

// Splits `body` into its parts. Throws hg::Error naming `what` and the problem.
std::vector<MultipartPart> parse_multipart(std::string_view body, std::string_view boundary, const std::string& what,
                                           const MultipartLimits& limits = {});

// A multipart body of `parts` (each: its Content-Type and bytes) with `boundary`, for STOW-RS.
struct OutgoingPart {
    std::string content_type;
    std::string_view bytes;
};
std::string build_multipart(const std::vector<OutgoingPart>& parts, std::string_view boundary);

// A boundary that is not found in any of the parts (random, retried on the rare collision).
std::string make_boundary(const std::vector<OutgoingPart>& parts);

}  // namespace hg::pacs
