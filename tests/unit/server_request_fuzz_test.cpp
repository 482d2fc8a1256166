// Regressions found by fuzz/fuzz_server_request.cpp, replayed through the same parsers: each input
// must be refused with a 400 ApiError naming the problem (before the fix it escaped as another
// exception, which the server turned into a 500).
#include <gtest/gtest.h>

#include <string>

#include "server/request.h"

using namespace hg::server;

namespace {

// Every body parser refuses `body` with a 400 whose message contains `needle`.
void expect_400(const std::string& body, const std::string& needle) {
    auto check = [&](auto&& parse, const char* which) {
        try {
            parse();
            ADD_FAILURE() << which << " accepted " << body;
        } catch (const ApiError& e) {
            EXPECT_EQ(e.status(), 400) << which;
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << which << ": " << e.what();
        } catch (const std::exception& e) {
            ADD_FAILURE() << which << " threw a non-API error (a 500 in the server): " << e.what();
        }
    };
    check([&] { parse_chat_request(body); }, "chat");
    check([&] { parse_feedback_request(body); }, "feedback");
    check([&] { parse_image_generation_request(body); }, "images");
}

}  // namespace

TEST(ServerRequestFuzz, NumbersBeyondDoubleAreMalformedJsonNotAServerError) {
    // the fuzzer's input (crash-76ee628b…, minimised by hand to its cause): nlohmann throws
    // out_of_range.406 "number overflow" for a literal beyond double, not a parse_error
    expect_400("9999999999999999999E99999999999999999999999999ctt#", "malformed JSON");
    expect_400("{\"max_tokens\": 1E400, \"messages\": []}", "malformed JSON");
    expect_400("{\"answer_id\": -1e309}", "malformed JSON");
    expect_400("{\"task\": \"sr\", \"upload_id\": [1, 2e99999]}", "malformed JSON");
}
