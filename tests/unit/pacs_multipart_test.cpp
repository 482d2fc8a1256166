// The multipart/related parser of the DICOMweb client (pacs/multipart.h) on hand-built bodies:
// what WADO-RS servers send, and every way a body can be malformed or truncated.
#include <gtest/gtest.h>

#include "core/error.h"
#include "pacs/multipart.h"

namespace {

using namespace hg::pacs;

std::string two_parts() {
    return "--B1\r\nContent-Type: application/dicom\r\n\r\nAAAA\r\n"
           "--B1\r\nContent-Type: application/dicom\r\nContent-Length: 3\r\n\r\nB\r\nC\r\n"
           "--B1--\r\n";
}

void expect_error(const std::string& body, const std::string& boundary, const std::string& fragment,
                  const MultipartLimits& limits = {}) {
    try {
        parse_multipart(body, boundary, "test body", limits);
        ADD_FAILURE() << "no error for: " << body;
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("test body"), std::string::npos) << e.what();
    }
}

TEST(PacsMultipart, ParsesPartsHeadersAndBinaryBodies) {
    const std::string body = two_parts();
    const auto parts = parse_multipart(body, "B1", "test");
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(parts[0].body, "AAAA");
    EXPECT_EQ(parts[0].header("content-type"), "application/dicom");
    EXPECT_EQ(parts[1].body, "B\r\nC");  // a CRLF inside a body that is not followed by the delimiter stays
    EXPECT_EQ(parts[1].header("content-length"), "3");
    EXPECT_EQ(parts[1].header("absent"), "");

    // Binary bytes (NULs, a lone "--") and a preamble and epilogue are fine.
    std::string bin("\x00\x01--B1x\xff", 8);
    const std::string b2 = "preamble text\r\n--B1\r\n\r\n" + bin + "\r\n--B1--epilogue";
    const auto p2 = parse_multipart(b2, "B1", "test");
    ASSERT_EQ(p2.size(), 1u);
    EXPECT_EQ(p2[0].body, bin);
    EXPECT_TRUE(p2[0].headers.empty());
}

TEST(PacsMultipart, BoundaryFromContentType) {
    EXPECT_EQ(multipart_boundary("multipart/related; type=\"application/dicom\"; boundary=abc123"), "abc123");
    EXPECT_EQ(multipart_boundary("Multipart/Related;Boundary=\"a b:c\";type=application/dicom"), "a b:c");
    EXPECT_EQ(media_type(" Application/DICOM ; transfer-syntax=1.2"), "application/dicom");
    EXPECT_EQ(content_type_param("multipart/related; type=\"application/dicom\"", "TYPE"), "application/dicom");
    EXPECT_THROW(multipart_boundary("application/dicom"), hg::Error);
    EXPECT_THROW(multipart_boundary("multipart/related; type=application/dicom"), hg::Error);
    EXPECT_THROW(multipart_boundary("multipart/related; boundary="), hg::Error);
    EXPECT_THROW(multipart_boundary("multipart/related; boundary=\"unterminated"), hg::Error);
    EXPECT_THROW(multipart_boundary("multipart/related; boundary=" + std::string(71, 'x')), hg::Error);
    EXPECT_THROW(multipart_boundary("multipart/related; boundary=\"ends with space \""), hg::Error);
    EXPECT_THROW(multipart_boundary("multipart/related; boundary=semi\x01"), hg::Error);
}

TEST(PacsMultipart, MalformedBodiesAreClearErrors) {
    expect_error("", "B1", "without its boundary");
    expect_error("no boundary here", "B1", "without its boundary");
    expect_error("--B1--\r\n", "B1", "has no parts");
    // truncated at every interesting place
    expect_error("--B1", "B1", "ends after the boundary of part 1");
    expect_error("--B1\r\nContent-Type: application/dicom\r\n", "B1", "headers not ended");
    expect_error("--B1\r\nContent-Type: application/dicom\r\n\r\nAAAA", "B1", "part 1 is not closed");
    expect_error("--B1\r\n\r\nAAAA\r\n--B1\r\n\r\nBB", "B1", "part 2 is not closed");
    expect_error("--B1\r\n\r\nAAAA\r\n--B1", "B1", "ends after the boundary of part 2");
    // bad syntax
    expect_error("--B1\n\nAAAA\n--B1--", "B1", "not ended by CRLF");
    expect_error("--B1\r\nno colon line\r\n\r\nA\r\n--B1--", "B1", "without 'name:'");
    expect_error("--B1\r\n: empty name\r\n\r\nA\r\n--B1--", "B1", "without 'name:'");
    expect_error("--B1\r\nBad Name: x\r\n\r\nA\r\n--B1--", "B1", "not allowed");
    expect_error("--B1\r\nX: a\x01 b\r\n\r\nA\r\n--B1--", "B1", "control character");
    expect_error("--B1\r\nX: 1\r\nx: 2\r\n\r\nA\r\n--B1--", "B1", "given twice");
    expect_error("--B1xyz\r\n\r\nA\r\n--B1--", "B1", "not ended by CRLF");
    EXPECT_THROW(parse_multipart(two_parts(), "", "t"), hg::Error);
}

TEST(PacsMultipart, LimitsAreEnforced) {
    MultipartLimits one;
    one.max_parts = 1;
    expect_error(two_parts(), "B1", "more than 1 parts", one);
    MultipartLimits small;
    small.max_header_bytes = 20;
    expect_error(two_parts(), "B1", "headers longer than 20 bytes", small);
}

TEST(PacsMultipart, BuildThenParseRoundTrips) {
    const std::string a("DICM\0\0\r\n--x", 12), b = "second";
    const std::vector<OutgoingPart> parts = {{"application/dicom", a}, {"application/dicom", b}};
    const std::string boundary = make_boundary(parts);
    EXPECT_EQ(a.find("--" + boundary), std::string::npos);
    const std::string body = build_multipart(parts, boundary);
    const auto back = parse_multipart(body, boundary, "round trip");
    ASSERT_EQ(back.size(), 2u);
    EXPECT_EQ(back[0].body, a);
    EXPECT_EQ(back[1].body, b);
    EXPECT_EQ(back[1].header("content-type"), "application/dicom");
    // every truncation of a valid body is an error, never fewer parts
    for (size_t n = 0; n + 2 < body.size(); ++n) {
        EXPECT_THROW(parse_multipart(std::string_view(body).substr(0, n), boundary, "cut"), hg::Error) << n;
    }
}

}  // namespace
