// libFuzzer target: the HTTP API's request parsing (src/server/request.cpp) on arbitrary bytes —
// the chat, feedback and image generation bodies (JSON, typed fields, nested content parts, data
// URLs with base64), upload names and ids. Every input must either parse into a request that keeps
// the documented invariants or be refused with an ApiError (a 4xx); anything else (another
// exception, a crash, a broken invariant) is a finding. Multipart bodies are parsed by cpp-httplib,
// not by us, so they are not here.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/request.h"

namespace {

void check(bool ok) {
    if (!ok) std::abort();  // a broken invariant: libFuzzer records the input
}

template <class F>
void refused_or_ok(F&& f) {
    try {
        f();
    } catch (const hg::server::ApiError& e) {
        check(e.status() >= 400 && e.status() < 500 && !e.type().empty() && *e.what() != '\0');
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace hg::server;
    const std::string_view body(reinterpret_cast<const char*>(data), size);
    const ParseLimits limits;

    refused_or_ok([&] {
        const ChatRequest r = parse_chat_request(body, limits);
        check(!r.messages.empty() && r.messages.size() <= limits.max_messages && r.messages.back().role == "user");
        size_t images = 0;
        for (size_t i = 0; i < r.messages.size(); ++i) {
            check(r.messages[i].role == (i % 2 == 0 ? "user" : "assistant"));
            for (const ImageRef& im : r.messages[i].images) {
                ++images;
                check(im.upload_id > 0 || !im.bytes.empty());
            }
        }
        check(images <= limits.max_images);
        check(r.max_tokens >= 1 && r.max_tokens <= limits.max_tokens);
        check(r.temperature >= 0 && r.temperature <= 2 && r.top_p > 0 && r.top_p <= 1);
        check(r.stop.size() <= limits.max_stop);
        for (const auto& s : r.stop) check(!s.empty());
        check(!r.consultation_id || *r.consultation_id > 0);
    });
    refused_or_ok([&] {
        const FeedbackRequest f = parse_feedback_request(body);
        check(f.answer_id > 0 && (f.rating || f.correction || f.comment));
        check(!f.rating || (*f.rating >= 1 && *f.rating <= 5));
    });
    refused_or_ok([&] {
        const ImageGenerationRequest g = parse_image_generation_request(body);
        check(g.upload_id > 0);
        check(g.task == "ct2mri" || g.task == "mri2ct" || g.task == "sr" || g.task == "recon");
    });
    refused_or_ok([&] {
        const ImageRef r = parse_image_url(body, "url");
        check(r.upload_id > 0 || !r.bytes.empty());
    });
    refused_or_ok([&] { check_upload_name(body); check(body.find('/') == std::string_view::npos); });
    refused_or_ok([&] { check(parse_id(body, "id") > 0); });
    // base64: decoding accepts exactly what encoding produces, and round-trips
    const std::string enc = encode_base64(std::span<const uint8_t>(data, size));
    if (size > 0) check(decode_base64(enc, "b64") == std::vector<uint8_t>(data, data + size));
    refused_or_ok([&] {
        const std::vector<uint8_t> dec = decode_base64(body, "b64");
        check(encode_base64(dec).size() == body.size());
    });
    return 0;
}
