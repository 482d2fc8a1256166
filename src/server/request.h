// Request parsing for the HTTP API: JSON bodies -> typed requests, with every problem reported as
// an ApiError (HTTP status, OpenAI-style error type, a message naming the field). Kept apart from
// the routes so that each rule is unit-testable without a socket (tests/unit/server_request_test.cpp).
// Messages name fields and limits, never the value (it may be medical text or a key).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace hg::server {

// A request the server refuses: the route answers `status` with
// {"error": {"message": what(), "type": type, "code": status}}.
class ApiError : public hg::Error {
public:
    ApiError(int status, std::string type, const std::string& message)
        : hg::Error(message), status_(status), type_(std::move(type)) {}
    int status() const { return status_; }
    const std::string& type() const { return type_; }

private:
    int status_;
    std::string type_;
};

// 400 invalid_request_error naming the problem.
[[noreturn]] void bad_request(const std::string& message);

// RFC 4648 base64 (standard alphabet, '=' padding required when the length is not a multiple of 4,
// no whitespace). Throws ApiError 400 naming `field` at the first bad character.
std::vector<uint8_t> decode_base64(std::string_view s, std::string_view field);
std::string encode_base64(std::span<const uint8_t> bytes);

// An image in a chat message: bytes from a data URL, or an upload stored earlier.
struct ImageRef {
    std::string mime;            // data URL media type (image/png, image/jpeg, application/dicom, ...)
    std::vector<uint8_t> bytes;  // the decoded bytes (data URL)
    int64_t upload_id = 0;       // > 0: "upload:<id>"
};

// "data:<type>;base64,<data>" or "upload:<id>". Types: image/png, image/jpeg, application/dicom,
// application/x-nifti, application/gzip (.nii.gz), application/octet-stream (sniffed).
ImageRef parse_image_url(std::string_view url, std::string_view field);

struct ChatMessage {
    std::string role;  // "user" | "assistant" ("system" messages are dropped: the template has its own)
    std::string text;  // the text parts joined with "\n"
    std::vector<ImageRef> images;
};

struct ChatRequest {
    std::vector<ChatMessage> messages;  // alternating user / assistant, ending with user
    bool stream = false;
    bool include_usage = false;         // stream_options.include_usage: a last chunk with usage
    int64_t max_tokens = 512;
    float temperature = 0;              // 0: greedy (the default, as HealthGPT)
    double top_p = 1;
    uint64_t seed = 0;
    std::vector<std::string> stop;
    std::string plugin;                 // extension: the H-LoRA plugin (default: the model's)
    std::optional<int64_t> consultation_id;  // extension: store into this consultation
    std::string window;                 // extension: DICOM/NIfTI window (imaging's syntax), "" = auto
    std::optional<int> slice;           // extension: slice/frame of a volume
};

struct ParseLimits {
    int64_t max_tokens = 4096;   // the most a request may ask for
    size_t max_messages = 64;
    size_t max_images = 8;       // in the whole conversation
    size_t max_stop = 4;         // as OpenAI
};

// Parses and checks a /v1/chat/completions body. Unknown fields are ignored (OpenAI clients send
// fields we do not use, e.g. "user", "frequency_penalty" at its default).
ChatRequest parse_chat_request(std::string_view body, const ParseLimits& limits = {});

struct FeedbackRequest {
    int64_t answer_id = 0;
    std::optional<int> rating;
    std::optional<std::string> correction, comment;
};
FeedbackRequest parse_feedback_request(std::string_view body);

// POST /v1/images/generations: an image->image task of the generation plugin on an upload.
struct ImageGenerationRequest {
    std::string task;                 // "ct2mri" | "mri2ct" | "sr" | "recon"
    int64_t upload_id = 0;            // the input image (an upload of a consultation)
    bool stream = false;              // progress events, then the image, as SSE
    std::optional<int> slice;         // slice/frame of a volume
    std::string window;               // DICOM/NIfTI window (imaging's syntax), "" = auto
    std::string plugin;               // a generation plugin by name; "": the model's first one
    std::optional<uint64_t> seed;     // given: indices sampled (temperature 1) from this seed; else greedy
    std::string prompt;               // optional instruction; "": the task's default (the paper's)
};
// Unknown fields are ignored; "n" must be 1 and "response_format" "b64_json" when given.
ImageGenerationRequest parse_image_generation_request(std::string_view body);

// An upload's file name as the client gave it: a plain name, no path. Refuses '/', '\\', "..",
// "." and control characters (400), so a name can never be read as a path anywhere.
void check_upload_name(std::string_view name);

// A positive decimal id (path segment or query value); 400 naming `field` otherwise.
int64_t parse_id(std::string_view s, std::string_view field);

}  // namespace hg::server
