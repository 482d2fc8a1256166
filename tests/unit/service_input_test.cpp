// Bad input is refused with BadInput naming the field (never echoing the value), before anything
// is written: empty and blank names, oversize text, invalid UTF-8, control characters, an
// invalid role, bad digests and metadata, out-of-range ratings, references of the wrong kind.
#include "service/consultations.h"
#include "service/validate.h"
#include "service_test_util.h"

using namespace svctest;

namespace {

const std::string kPlugin(64, 'c');

template <class F>
void expect_bad(const std::string& field, F&& fn) {
    try {
        fn();
        ADD_FAILURE() << field << ": accepted";
    } catch (const BadInput& e) {
        EXPECT_EQ(std::string(e.what()).rfind(field, 0), 0u) << "message does not start with the field: " << e.what();
    }
}

}  // namespace

TEST(ServiceInput, Utf8Validation) {
    EXPECT_TRUE(is_valid_utf8("plain ascii"));
    EXPECT_TRUE(is_valid_utf8("Röntgen — 肺 🫁"));
    EXPECT_FALSE(is_valid_utf8("\xff"));
    EXPECT_FALSE(is_valid_utf8("\xc3"));              // truncated
    EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong '/'
    EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
    EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
    EXPECT_FALSE(is_valid_utf8("ab\xe2\x82"));        // truncated at the end
}

TEST(ServiceInput, KeysAndUsers) {
    Store store(fresh_dir("input-keys"));
    KeyService keys(store);
    const Principal op = Principal::local_operator();
    expect_bad("name", [&] { keys.add_key(op, "", "patient"); });
    expect_bad("name", [&] { keys.add_key(op, "   ", "patient"); });
    expect_bad("name", [&] { keys.add_key(op, std::string(Limits::name + 1, 'n'), "patient"); });
    expect_bad("name", [&] { keys.add_key(op, "two\nlines", "patient"); });
    expect_bad("name", [&] { keys.add_key(op, std::string("nul\0byte", 8), "patient"); });
    expect_bad("name", [&] { keys.add_key(op, "bad \xff utf8", "patient"); });
    expect_bad("role", [&] { keys.add_key(op, "eve", "nurse"); });
    expect_bad("role", [&] { keys.add_key(op, "eve", "Admin"); });
    expect_bad("role", [&] { keys.add_key(op, "eve", ""); });
    keys.add_key(op, std::string(Limits::name, 'n'), "patient");  // exactly the limit is fine
    keys.add_key(op, "eve", "physician");
    expect_bad("user 'eve'", [&] { keys.add_key(op, "eve", "admin"); });  // exists with another role
    expect_bad("key id", [&] { keys.revoke_key(op, "0123"); });
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM users"), 2);
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM api_keys"), 2);
}

TEST(ServiceInput, ConsultationContent) {
    Store store(fresh_dir("input-content"));
    const Principal p = make_user(store, "pat", "patient");
    const Principal other = make_user(store, "pat2", "patient");
    const Principal d = make_user(store, "doc", "physician");
    ConsultationService svc(store);
    expect_bad("title", [&] { svc.create(p, ""); });
    expect_bad("title", [&] { svc.create(p, std::string(Limits::title + 1, 't')); });
    expect_bad("title", [&] { svc.create(p, "line\nbreak"); });
    const int64_t c = svc.create(p, "ok");
    const int64_t c_other = svc.create(other, "other's");
    expect_bad("message", [&] { svc.add_message(p, c, ""); });
    expect_bad("message", [&] { svc.add_message(p, c, "\n\t "); });
    expect_bad("message", [&] { svc.add_message(p, c, std::string(Limits::text + 1, 'm')); });
    expect_bad("message", [&] { svc.add_message(p, c, "bell\a"); });
    expect_bad("consultation", [&] { svc.add_message(p, 0, "hi"); });
    expect_bad("consultation", [&] { svc.add_message(p, -5, "hi"); });
    const int64_t m = svc.add_message(p, c, "multi\nline\tmessage is fine");
    const int64_t m_other = svc.add_message(other, c_other, "q");
    expect_bad("answer", [&] { svc.record_answer(p, c, m, std::string(Limits::answer + 1, 'a'), "m", kPlugin); });
    expect_bad("model", [&] { svc.record_answer(p, c, m, "a", "", kPlugin); });
    expect_bad("plugin_sha256", [&] { svc.record_answer(p, c, m, "a", "m", "abc"); });
    expect_bad("plugin_sha256", [&] { svc.record_answer(p, c, m, "a", "m", std::string(64, 'A')); });
    expect_bad("question", [&] { svc.record_answer(p, c, m_other, "a", "m", kPlugin); });  // another consultation's
    expect_bad("metadata", [&] { svc.add_upload(p, c, std::vector<uint8_t>{1}, "f", "[1,2]"); });
    expect_bad("metadata", [&] { svc.add_upload(p, c, std::vector<uint8_t>{1}, "f", "{not json"); });
    expect_bad("metadata", [&] { svc.add_upload(p, c, std::vector<uint8_t>{1}, "f", std::string(Limits::metadata + 1, ' ')); });
    expect_bad("filename", [&] { svc.add_upload(p, c, std::vector<uint8_t>{1}, "", "{}"); });
    expect_bad("upload", [&] { svc.add_upload(p, c, std::vector<uint8_t>{}, "f", "{}"); });
    expect_bad("physician", [&] { svc.share(p, c, other.user_id); });  // a patient is not a physician
    expect_bad("physician", [&] { svc.share(p, c, 12345); });
    svc.share(p, c, d.user_id);
    svc.share(p, c, d.user_id);  // sharing twice is harmless
    const int64_t a = svc.record_answer(p, c, m, "answer", "m", kPlugin);
    expect_bad("feedback", [&] { svc.add_feedback(d, a, std::nullopt, std::nullopt, std::nullopt); });
    expect_bad("rating", [&] { svc.add_feedback(d, a, 0, std::nullopt, std::nullopt); });
    expect_bad("rating", [&] { svc.add_feedback(d, a, 6, std::nullopt, std::nullopt); });
    expect_bad("correction", [&] { svc.add_feedback(d, a, std::nullopt, std::string_view(""), std::nullopt); });
    expect_bad("comment", [&] { svc.add_feedback(d, a, 3, std::nullopt, std::string(Limits::comment + 1, 'c')); });
    // Nothing of the refused input was stored.
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM consultations"), 2);
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM messages"), 2);
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM answers"), 1);
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM uploads"), 0);
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM feedback"), 0);
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM consultation_shares"), 1);
}
