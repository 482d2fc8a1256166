// Request parsing of the HTTP API (server/request.h), without a socket: every malformed body,
// wrong type and bad value is an ApiError 400 whose message names the field.
#include <gtest/gtest.h>

#include <string>

#include "server/request.h"

using namespace hg::server;

namespace {

// The message of the ApiError that parsing `body` throws ("" when it parses).
std::string chat_error(const std::string& body) {
    try {
        parse_chat_request(body);
    } catch (const ApiError& e) {
        EXPECT_EQ(e.status(), 400);
        EXPECT_EQ(e.type(), "invalid_request_error");
        return e.what();
    }
    return "";
}

const std::string kUser = R"({"role":"user","content":"What is this?"})";

}  // namespace

TEST(ServerRequest, Base64RoundTripAndRefusals) {
    for (std::string s : {"", "a", "ab", "abc", "abcd", "\x00\xff\x10 binary"}) {
        std::vector<uint8_t> b(s.begin(), s.end());
        if (b.empty()) continue;
        EXPECT_EQ(decode_base64(encode_base64(b), "x"), b);
    }
    EXPECT_EQ(encode_base64(std::vector<uint8_t>{'M', 'a', 'n'}), "TWFu");
    EXPECT_THROW(decode_base64("TWF", "f"), ApiError);      // length not a multiple of 4
    EXPECT_THROW(decode_base64("TW!u", "f"), ApiError);     // bad character
    EXPECT_THROW(decode_base64("TW u", "f"), ApiError);     // whitespace
    EXPECT_THROW(decode_base64("", "f"), ApiError);
    try {
        decode_base64("AAA*", "messages[0].content[1].image_url.url");
        FAIL();
    } catch (const ApiError& e) {
        EXPECT_NE(std::string(e.what()).find("messages[0].content[1].image_url.url: invalid base64"), std::string::npos)
            << e.what();
    }
}

TEST(ServerRequest, ParsesAFullRequest) {
    const ChatRequest r = parse_chat_request(R"({
        "model": "anything", "stream": true, "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 42,
        "stop": ["\n\n", "END"], "plugin": "com", "consultation_id": 3, "window": "lung", "slice": 2,
        "stream_options": {"include_usage": true}, "user": "ignored",
        "messages": [
          {"role": "system", "content": "be brief"},
          {"role": "user", "content": [{"type": "text", "text": "Describe"},
                                       {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
                                       {"type": "image_url", "image_url": {"url": "upload:12"}}]},
          {"role": "assistant", "content": "A chest X-ray."},
          {"role": "user", "content": "Is it normal?"}]})");
    ASSERT_EQ(r.messages.size(), 3u);  // the system message is dropped
    EXPECT_EQ(r.messages[0].text, "Describe");
    ASSERT_EQ(r.messages[0].images.size(), 2u);
    EXPECT_EQ(r.messages[0].images[0].mime, "image/png");
    EXPECT_EQ(r.messages[0].images[0].bytes.size(), 4u);
    EXPECT_EQ(r.messages[0].images[1].upload_id, 12);
    EXPECT_EQ(r.messages[1].text, "A chest X-ray.");
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.include_usage);
    EXPECT_EQ(r.max_tokens, 7);
    EXPECT_FLOAT_EQ(r.temperature, 0.5f);
    EXPECT_DOUBLE_EQ(r.top_p, 0.9);
    EXPECT_EQ(r.seed, 42u);
    EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));
    EXPECT_EQ(r.plugin, "com");
    EXPECT_EQ(r.consultation_id, 3);
    EXPECT_EQ(r.window, "lung");
    EXPECT_EQ(r.slice, 2);
    // defaults: greedy, not streamed
    const ChatRequest d = parse_chat_request("{\"messages\":[" + kUser + "]}");
    EXPECT_FALSE(d.stream);
    EXPECT_EQ(d.temperature, 0.0f);
    EXPECT_EQ(d.max_tokens, 512);
}

TEST(ServerRequest, MalformedJsonAndWrongTypesNameTheProblem) {
    struct Case {
        std::string body, expect;
    };
    const std::vector<Case> cases = {
        {"", "malformed JSON"},
        {"{\"messages\": [", "malformed JSON"},
        {"[1,2]", "must be a JSON object"},
        {"{}", "messages: required"},
        {R"({"messages": "hi"})", "messages: expected an array"},
        {R"({"messages": [42]})", "messages[0]: expected an object"},
        {R"({"messages": [{"content": "x"}]})", "messages[0].role: required"},
        {R"({"messages": [{"role": "doctor", "content": "x"}]})", "messages[0].role: expected user"},
        {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content: expected a string or an array"},
        {R"({"messages": [{"role": "user", "content": [{"type": "video"}]}]})", "messages[0].content[0].type: expected text or image_url"},
        {R"({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]})", "messages[0].content[0].text: expected a string"},
        {R"({"messages": [{"role": "user", "content": "  "}]})", "messages[0].content: empty"},
        {R"({"messages": [{"role": "assistant", "content": "x"}]})", "must alternate"},
        {"{\"messages\": [" + kUser + "," + kUser + "]}", "must alternate"},
        {"{\"messages\": [" + kUser + R"(, {"role":"assistant","content":"y"}]})", "the last message must be the user's"},
        {R"({"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "upload:1"}}]}]})",
         "images are accepted in user messages only"},
        {"{\"max_tokens\": \"10\", \"messages\": [" + kUser + "]}", "max_tokens: expected an integer, got string"},
        {"{\"max_tokens\": 0, \"messages\": [" + kUser + "]}", "max_tokens: must be between 1 and 4096"},
        {"{\"max_tokens\": 2.5, \"messages\": [" + kUser + "]}", "max_tokens: expected an integer"},
        {"{\"temperature\": \"hot\", \"messages\": [" + kUser + "]}", "temperature: expected a number"},
        {"{\"temperature\": 3, \"messages\": [" + kUser + "]}", "temperature: must be between"},
        {"{\"top_p\": 0, \"messages\": [" + kUser + "]}", "top_p: must be greater than 0"},
        {"{\"stream\": \"yes\", \"messages\": [" + kUser + "]}", "stream: expected true or false"},
        {"{\"stop\": 5, \"messages\": [" + kUser + "]}", "stop: expected a string or an array"},
        {"{\"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"], \"messages\": [" + kUser + "]}", "stop: at most 4"},
        {"{\"n\": 2, \"messages\": [" + kUser + "]}", "n: must be between 1 and 1"},
        {"{\"consultation_id\": -1, \"messages\": [" + kUser + "]}", "consultation_id: must be between"},
        {"{\"plugin\": 7, \"messages\": [" + kUser + "]}", "plugin: expected a string"},
        {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]})",
         "remote URLs are not fetched"},
        {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}}]}]})",
         "messages[0].content[0].image_url.url: invalid base64"},
        {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:text/html;base64,AAAA"}}]}]})",
         "unsupported media type"},
        {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,rawdata"}}]}]})",
         "only base64 data URLs"},
        {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "upload:abc"}}]}]})",
         "expected a positive integer id"},
    };
    for (const Case& c : cases) {
        const std::string msg = chat_error(c.body);
        EXPECT_NE(msg.find(c.expect), std::string::npos) << "body: " << c.body << "\nmessage: " << msg;
    }
}

TEST(ServerRequest, UploadNamesArePlainNames) {
    EXPECT_NO_THROW(check_upload_name("chest x-ray 01.dcm"));
    for (const std::string& bad : std::vector<std::string>{"../etc/passwd", "a/b.png", "..", ".", "a\\b.dcm", "x..y", std::string("a\nb"), std::string(300, 'a'), ""})
        EXPECT_THROW(check_upload_name(bad), ApiError) << bad;
}

TEST(ServerRequest, Feedback) {
    const FeedbackRequest f = parse_feedback_request(R"({"answer_id": 4, "rating": 2, "correction": "Pneumothorax."})");
    EXPECT_EQ(f.answer_id, 4);
    EXPECT_EQ(f.rating, 2);
    EXPECT_EQ(f.correction, "Pneumothorax.");
    EXPECT_FALSE(f.comment);
    EXPECT_THROW(parse_feedback_request(R"({"rating": 2})"), ApiError);
    EXPECT_THROW(parse_feedback_request(R"({"answer_id": 1})"), ApiError);
    EXPECT_THROW(parse_feedback_request(R"({"answer_id": 1, "rating": 9})"), ApiError);
    EXPECT_THROW(parse_feedback_request(R"({"answer_id": "1", "rating": 3})"), ApiError);
}
