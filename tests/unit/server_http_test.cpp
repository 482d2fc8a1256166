// The HTTP server end to end in-process: a server on 127.0.0.1 (an ephemeral port) over the demo
// model and a fresh data directory, talked to with httplib::Client (and a raw socket for the
// disconnect test). Every server is stopped at the end of its test.
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "imaging/image.h"
#include "imaging/load.h"
#include "runtime/demo_model.h"
#include "runtime/pipeline.h"
#include "server/request.h"
#include "server/server.h"
#include "server_fixture.h"
#include "service/consultations.h"
#include "service_test_util.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace hg::server;
using hg::service::Principal;

using servertest::b64;
using servertest::error_of;
using servertest::read_bytes;
using servertest::user_message;

std::shared_ptr<const hg::Model> demo_model() { return servertest::demo_model("server-demo-model"); }

std::string png_data_url() { return servertest::png_data_url(*demo_model()); }

// A server on a fresh data dir, with a patient, a second patient, a physician and an admin; request
// bodies up to 4 MiB unless the options say otherwise.
struct Fixture : servertest::ServerFixture {
    explicit Fixture(ServerOptions o = {}) : ServerFixture("http", demo_model(), small_bodies(o), 20) {}
    static ServerOptions small_bodies(ServerOptions o) {
        if (o.max_body_bytes == (size_t(64) << 20)) o.max_body_bytes = size_t(4) << 20;
        return o;
    }
};

// Concatenated content deltas of an SSE body; checks the framing and the [DONE] end.
std::string sse_text(const std::string& body, json* last = nullptr) {
    std::string text;
    size_t pos = 0;
    bool done = false;
    while (pos < body.size()) {
        const size_t end = body.find("\n\n", pos);
        EXPECT_NE(end, std::string::npos) << "unterminated event";
        if (end == std::string::npos) break;
        const std::string ev = body.substr(pos, end - pos);
        pos = end + 2;
        EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
        if (ev == "data: [DONE]") {
            done = true;
            continue;
        }
        const json j = json::parse(ev.substr(6));
        EXPECT_EQ(j["object"], "chat.completion.chunk");
        if (!j["choices"].empty()) {
            const json& d = j["choices"][0]["delta"];
            if (d.contains("content")) text += d["content"].get<std::string>();
            if (!j["choices"][0]["finish_reason"].is_null() && last) *last = j;
        }
    }
    EXPECT_TRUE(done) << "no data: [DONE]";
    return text;
}

// What `healthgpt ask` answers (greedy) for the same question and image.
std::string ask_reference(const std::string& q, bool with_image, int64_t max_tokens) {
    hg::Session s(demo_model());
    hg::AskOptions o;
    o.max_new_tokens = max_tokens;
    std::vector<hg::imaging::RgbImage> imgs;
    if (with_image) imgs = hg::imaging::load_medical_image(demo_model()->path() / "example.png");
    return s.ask(q, imgs, o).text;
}

const std::string kReminder = std::string("\n\n") + kNotDiagnosisReminder;

}  // namespace

TEST(ServerHttp, ChatEqualsAskStreamedOrNotAndIsStored) {
    Fixture f;
    const std::string q = "What does this X-ray show?";
    const std::string ref = ask_reference(q, true, 24);
    json req = {{"model", "demo"}, {"max_tokens", 24}, {"messages", json::array({user_message(q, {png_data_url()})})}};

    auto r = f.post("/v1/chat/completions", req, f.patient);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json j = json::parse(r->body);
    EXPECT_EQ(j["object"], "chat.completion");
    EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
    // a patient's answer ends with the reminder; before it, the greedy answer of `ask`
    EXPECT_EQ(j["choices"][0]["message"]["content"].get<std::string>(), ref + kReminder);
    EXPECT_EQ(j["usage"]["completion_tokens"].get<int>() > 0, true);
    EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 576);  // the image's 576 vectors + text
    EXPECT_EQ(j["plugin"], "com");
    const int64_t cid = j["consultation_id"].get<int64_t>();

    // streamed: the deltas concatenate to the same text
    req["stream"] = true;
    req["stream_options"] = {{"include_usage", true}};
    req["consultation_id"] = cid;
    r = f.post("/v1/chat/completions", req, f.patient);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
    json last;
    EXPECT_EQ(sse_text(r->body, &last), ref + kReminder);
    EXPECT_EQ(last["consultation_id"], cid);
    EXPECT_NE(r->body.find("\"usage\""), std::string::npos);

    // both questions and answers are in the consultation, with the model and the plugin's hash
    const auto view = f.get("/v1/consultations/" + std::to_string(cid), f.patient);
    ASSERT_EQ(view->status, 200) << view->body;
    const json v = json::parse(view->body);
    ASSERT_EQ(v["messages"].size(), 2u);
    EXPECT_EQ(v["messages"][0]["text"], q);
    ASSERT_EQ(v["answers"].size(), 2u);
    EXPECT_EQ(v["answers"][0]["model"], "server-demo-model");
    const json models = json::parse(f.get("/v1/models", f.patient)->body);
    EXPECT_EQ(v["answers"][0]["plugin_sha256"], models["data"][0]["plugins"][0]["sha256"]);
    EXPECT_EQ(models["data"][0]["plugins"][0]["name"], "com");
    EXPECT_EQ(models["data"][0]["plugins"][1]["task"], "generation");

    // a physician the consultation is shared with gets no reminder
    hg::service::ConsultationService(*f.store).share(f.patient_p, cid, f.physician_p.user_id);
    req["stream"] = false;
    r = f.post("/v1/chat/completions", req, f.physician);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(json::parse(r->body)["choices"][0]["message"]["content"].get<std::string>(), ref);
}

TEST(ServerHttp, MultiTurnIsTheConversationAskBuilds) {
    Fixture f;
    hg::Session s(demo_model());
    hg::AskOptions o;
    o.max_new_tokens = 12;
    const auto imgs = hg::imaging::load_medical_image(demo_model()->path() / "example.png");
    const std::string a1 = s.ask("Describe the image.", imgs, o).text;
    const std::string a2 = s.ask("Is it normal?", {}, o).text;
    const json req = {{"max_tokens", 12},
                      {"messages", json::array({user_message("Describe the image.", {png_data_url()}),
                                                {{"role", "assistant"}, {"content", a1}},
                                                user_message("Is it normal?")})}};
    const auto r = f.post("/v1/chat/completions", req, f.patient);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(json::parse(r->body)["choices"][0]["message"]["content"].get<std::string>(), a2 + kReminder);
}

// The metrics' route labels: every route group's paths by their shape, never an id, UID or name.
TEST(ServerHttp, MetricsLabelRoutesByShapeWithoutIds) {
    Fixture f;
    for (const char* path : {"/v1/physicians", "/v1/me", "/v1/consultations/12345", "/v1/answers/987/feedback",
                             "/v1/admin/updates/4242", "/v1/pacs/hospital-pacs/studies"})
        f.get(path, f.admin);
    const char* const labels[] = {"/v1/physicians", "/v1/me", "/v1/consultations/{id}", "/v1/answers/{id}/feedback",
                                  "/v1/admin/updates/{id}", "/v1/pacs/{name}/studies"};
    // a request is counted by the server's logger, after its response was sent: wait for them all
    std::string m;
    for (int tries = 0; tries < 100; ++tries) {
        m = f.get("/metrics", f.admin)->body;
        if (std::all_of(std::begin(labels), std::end(labels), [&](const char* l) {
                return m.find(std::string("route=\"") + l + "\"") != std::string::npos;
            }))
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (const char* label : labels)
        EXPECT_NE(m.find(std::string("route=\"") + label + "\""), std::string::npos) << label << "\n" << m;
    for (const char* leak : {"12345", "987", "4242", "hospital-pacs"}) EXPECT_EQ(m.find(leak), std::string::npos) << leak;
}

TEST(ServerHttp, AuthOnEveryRouteButHealth) {
    Fixture f;
    EXPECT_EQ(f.get("/health", "")->status, 200);
    for (const char* path : {"/v1/models", "/metrics", "/v1/consultations", "/v1/consultations/1", "/v1/uploads/1/preview.png"}) {
        auto r = f.get(path, "");
        EXPECT_EQ(r->status, 401) << path;
        EXPECT_EQ(error_of(r)["type"], "authentication_error");
        EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");
    }
    const json req = {{"messages", json::array({user_message("hi")})}};
    EXPECT_EQ(f.post("/v1/chat/completions", req, "")->status, 401);
    const int64_t audit_before = svctest::audit_rows(*f.store);
    std::string wrong = f.patient;
    wrong.back() = wrong.back() == '0' ? '1' : '0';
    auto r = f.post("/v1/chat/completions", req, wrong);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(error_of(r)["message"], "invalid or revoked API key");
    EXPECT_EQ(r->body.find(wrong), std::string::npos);
    EXPECT_EQ(svctest::audit_rows(*f.store), audit_before + 1);  // the failed authentication is audited
    EXPECT_FALSE(svctest::last_audit(*f.store).allowed);
    EXPECT_EQ(f.post("/v1/chat/completions", req, "hgk_nonsense")->status, 401);
    EXPECT_EQ(f.get("/nope", f.patient)->status, 404);
    EXPECT_EQ(error_of(f.get("/nope", f.patient))["type"], "not_found_error");
}

TEST(ServerHttp, RolesAreTheServiceLayersAndRefusalsAudited) {
    Fixture f;
    const json req = {{"max_tokens", 4}, {"messages", json::array({user_message("hi")})}};
    auto r = f.post("/v1/chat/completions", req, f.patient);
    ASSERT_EQ(r->status, 200) << r->body;
    const int64_t cid = json::parse(r->body)["consultation_id"];
    const int64_t answer_id = json::parse(r->body)["answer_id"];

    auto expect_refused = [&](const httplib::Result& res, const std::string& action) {
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 403) << res->body;
        EXPECT_EQ(error_of(res)["type"], "permission_error");
        const auto row = svctest::last_audit(*f.store);
        EXPECT_FALSE(row.allowed);
        EXPECT_EQ(row.action, action);
    };
    // another patient: not its consultation, through every route
    expect_refused(f.get("/v1/consultations/" + std::to_string(cid), f.other), "consultation.read");
    json other_req = req;
    other_req["consultation_id"] = cid;
    expect_refused(f.post("/v1/chat/completions", other_req, f.other), "consultation.read");
    expect_refused(f.post("/v1/feedback", {{"answer_id", answer_id}, {"rating", 1}}, f.other), "feedback.add");
    // physicians create no consultations; admins read no medical content
    expect_refused(f.post("/v1/chat/completions", req, f.physician), "consultation.create");
    expect_refused(f.get("/v1/consultations/" + std::to_string(cid), f.admin), "consultation.read");
    expect_refused(f.post("/v1/chat/completions", other_req, f.admin), "consultation.read");
    // a physician before and after sharing
    expect_refused(f.get("/v1/consultations/" + std::to_string(cid), f.physician), "consultation.read");
    hg::service::ConsultationService(*f.store).share(f.patient_p, cid, f.physician_p.user_id);
    EXPECT_EQ(f.get("/v1/consultations/" + std::to_string(cid), f.physician)->status, 200);
    EXPECT_EQ(json::parse(f.get("/v1/consultations", f.physician)->body)["data"].size(), 1u);
    EXPECT_EQ(json::parse(f.get("/v1/consultations", f.other)->body)["data"].size(), 0u);
    // feedback: the shared physician yes, the patient no
    r = f.post("/v1/feedback", {{"answer_id", answer_id}, {"rating", 2}, {"correction", "Normal study."}, {"comment", "demo"}},
               f.physician);
    EXPECT_EQ(r->status, 201) << r->body;
    expect_refused(f.post("/v1/feedback", {{"answer_id", answer_id}, {"rating", 5}}, f.patient), "feedback.add");
    EXPECT_EQ(f.count("feedback"), 1);
    EXPECT_EQ(f.post("/v1/feedback", {{"answer_id", answer_id}}, f.physician)->status, 400);
}

TEST(ServerHttp, UploadsPreviewAndUploadReferences) {
    Fixture f;
    const std::string png = read_bytes(demo_model()->path() / "example.png");
    auto r = f.post_raw("/v1/uploads?filename=chest.png", png, "image/png", f.patient);
    ASSERT_EQ(r->status, 201) << r->body;
    json up = json::parse(r->body);
    EXPECT_EQ(up["sha256"].get<std::string>().size(), 64u);
    EXPECT_EQ(up["filename"], "chest.png");
    EXPECT_EQ(up["image"]["kind"], "image");
    EXPECT_EQ(up["image"]["width"], 384);
    EXPECT_EQ(up["image"]["frames"], 1);
    const int64_t id = up["id"], cid = up["consultation_id"];

    // the preview is a PNG of what the model sees
    r = f.get("/v1/uploads/" + std::to_string(id) + "/preview.png", f.patient);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "image/png");
    const auto img = hg::imaging::decode_raster(std::span<const uint8_t>((const uint8_t*)r->body.data(), r->body.size()), "p");
    EXPECT_EQ(img.width, 384);
    // someone else's: 403, audited
    r = f.get("/v1/uploads/" + std::to_string(id) + "/preview.png", f.other);
    EXPECT_EQ(r->status, 403);
    EXPECT_EQ(svctest::last_audit(*f.store).action, "upload.read");
    EXPECT_EQ(f.get("/v1/uploads/999/preview.png", f.patient)->status, 403);  // unknown = not yours

    // a DICOM through multipart into the same consultation
    const std::string dcm = read_bytes(hgtest::fixture("imaging/palette16.dcm"));
    httplib::MultipartFormDataItems items = {{"file", dcm, "palette16.dcm", "application/dicom"},
                                             {"consultation_id", std::to_string(cid), "", ""}};
    r = f.client().Post("/v1/uploads", httplib::Headers{{"Authorization", "Bearer " + f.patient}}, items);
    ASSERT_EQ(r->status, 201) << r->body;
    up = json::parse(r->body);
    EXPECT_EQ(up["consultation_id"], cid);
    EXPECT_EQ(up["image"]["kind"], "DICOM");
    EXPECT_GE(up["image"]["frames"].get<int>(), 1);
    r = f.get("/v1/uploads/" + std::to_string(up["id"].get<int64_t>()) + "/preview.png?window=minmax", f.patient);
    EXPECT_EQ(r->status, 200) << r->body;

    // chat about upload:<id> == chat about the same bytes as a data URL
    const json a = {{"max_tokens", 10}, {"messages", json::array({user_message("What is it?", {"upload:" + std::to_string(id)})})}};
    const json b = {{"max_tokens", 10}, {"messages", json::array({user_message("What is it?", {png_data_url()})})}};
    const auto ra = f.post("/v1/chat/completions", a, f.patient), rb = f.post("/v1/chat/completions", b, f.patient);
    ASSERT_EQ(ra->status, 200) << ra->body;
    ASSERT_EQ(rb->status, 200) << rb->body;
    EXPECT_EQ(json::parse(ra->body)["choices"][0]["message"]["content"], json::parse(rb->body)["choices"][0]["message"]["content"]);
    EXPECT_EQ(f.post("/v1/chat/completions", a, f.other)->status, 403);
}

TEST(ServerHttp, BadInputIsA4xxWithAJsonErrorAndStoresNothing) {
    Fixture f;
    const int64_t c0 = f.count("consultations"), m0 = f.count("messages"), u0 = f.count("uploads");
    auto chat_with_image = [&](const std::string& url) {
        return json{{"max_tokens", 4}, {"messages", json::array({user_message("What is it?", {url})})}};
    };
    struct Case {
        std::string what;
        httplib::Result r;
        int status;
        std::string expect;
    };
    const std::string corrupt_dicom = std::string(128, '\0') + "DICM" + std::string(300, '\x7f');
    const std::string hostile_dicom = read_bytes(hgtest::fixture("imaging/fuzz_gdcm_fallback_oom.dcm"));
    // a valid PNG whose header says 16000 x 16000 (256 M pixels, over the server's 67 M): refused
    // from the header, before anything is allocated
    std::vector<uint8_t> huge = hg::imaging::encode_png(hg::imaging::RgbImage(1, 1));
    for (int k = 0; k < 2; ++k) {
        const uint32_t v = 16000;
        for (int b = 0; b < 4; ++b) huge[size_t(16 + 4 * k + b)] = uint8_t(v >> (24 - 8 * b));
    }
    const uint32_t crc = uint32_t(crc32(0, huge.data() + 12, 17));
    for (int b = 0; b < 4; ++b) huge[size_t(29 + b)] = uint8_t(crc >> (24 - 8 * b));
    const std::string huge_png(huge.begin(), huge.end());
    std::vector<Case> cases;
    cases.push_back({"malformed JSON", f.post_raw("/v1/chat/completions", "{\"messages\": [", "application/json", f.patient), 400, "malformed JSON"});
    cases.push_back({"wrong type", f.post("/v1/chat/completions", {{"messages", "hi"}}, f.patient), 400, "messages: expected an array"});
    cases.push_back({"wrong type max_tokens", f.post("/v1/chat/completions", {{"max_tokens", "5"}, {"messages", json::array({user_message("x")})}}, f.patient), 400, "max_tokens"});
    cases.push_back({"oversize body", f.post_raw("/v1/chat/completions", std::string(5 << 20, ' '), "application/json", f.patient), 413, "larger than the limit"});
    cases.push_back({"oversize upload", f.post_raw("/v1/uploads", std::string(5 << 20, 'x'), "image/png", f.patient), 413, "larger than the limit"});
    cases.push_back({"invalid base64", f.post("/v1/chat/completions", chat_with_image("data:image/png;base64,iVBO!!!!"), f.patient), 400, "invalid base64"});
    cases.push_back({"corrupt DICOM inline", f.post("/v1/chat/completions", chat_with_image("data:application/dicom;base64," + b64(corrupt_dicom)), f.patient), 400, "messages[0] image 1"});
    cases.push_back({"hostile DICOM upload", f.post_raw("/v1/uploads?filename=x.dcm", hostile_dicom, "application/dicom", f.patient), 400, "x.dcm"});
    cases.push_back({"corrupt DICOM upload", f.post_raw("/v1/uploads", corrupt_dicom, "application/dicom", f.patient), 400, "upload"});
    cases.push_back({"huge image inline", f.post("/v1/chat/completions", chat_with_image("data:image/png;base64," + b64(huge_png)), f.patient), 400, "more pixels than the limit"});
    cases.push_back({"huge image upload", f.post_raw("/v1/uploads", huge_png, "image/png", f.patient), 400, "more pixels than the limit"});
    cases.push_back({"not an image", f.post_raw("/v1/uploads", "hello, world", "text/plain", f.patient), 400, "unrecognised"});
    cases.push_back({"path in upload name", f.post_raw("/v1/uploads?filename=../../etc/passwd", read_bytes(demo_model()->path() / "example.png"), "image/png", f.patient), 400, "filename"});
    cases.push_back({"unknown plugin", f.post("/v1/chat/completions", {{"plugin", "nope"}, {"messages", json::array({user_message("x")})}}, f.patient), 400, "unknown plugin 'nope' (loaded: com, gen)"});
    cases.push_back({"generation plugin", f.post("/v1/chat/completions", {{"plugin", "gen"}, {"messages", json::array({user_message("x")})}}, f.patient), 400, "comprehension plugin"});
    cases.push_back({"bad window", f.post("/v1/chat/completions", {{"window", "sideways"}, {"messages", json::array({user_message("x", {png_data_url()})})}}, f.patient), 400, "window"});
    cases.push_back({"slice of a 2-D image", f.post("/v1/chat/completions", {{"slice", 3}, {"messages", json::array({user_message("x", {png_data_url()})})}}, f.patient), 400, "slice"});
    cases.push_back({"unknown upload", f.post("/v1/chat/completions", chat_with_image("upload:77"), f.patient), 403, "may not"});
    cases.push_back({"missing key", f.post("/v1/chat/completions", chat_with_image(png_data_url()), ""), 401, "Authorization"});
    cases.push_back({"wrong key", f.post("/v1/chat/completions", chat_with_image(png_data_url()), f.patient + "0"), 401, "invalid or revoked"});
    cases.push_back({"bad feedback", f.post_raw("/v1/feedback", "{\"answer_id\": true}", "application/json", f.patient), 400, "answer_id"});
    cases.push_back({"bad id", f.get("/v1/consultations/abc", f.patient), 400, "consultation id"});
    for (const Case& c : cases) {
        ASSERT_TRUE(c.r) << c.what;
        EXPECT_EQ(c.r->status, c.status) << c.what << ": " << c.r->body;
        const json e = error_of(c.r);
        EXPECT_NE(e["message"].get<std::string>().find(c.expect), std::string::npos) << c.what << ": " << c.r->body;
    }
    // nothing stored half-way, no temporary file left, and the server still answers
    EXPECT_EQ(f.count("consultations"), c0);
    EXPECT_EQ(f.count("messages"), m0);
    EXPECT_EQ(f.count("uploads"), u0);
    EXPECT_EQ(f.stored_files(), 0u);
    EXPECT_EQ(f.get("/health", "")->status, 200);
    const std::string metrics = f.get("/metrics", f.patient)->body;
    EXPECT_NE(metrics.find("healthgpt_requests_total{route=\"/v1/chat/completions\",status=\"400\"}"), std::string::npos);
    EXPECT_NE(metrics.find("healthgpt_errors_total{type=\"invalid_image_error\"}"), std::string::npos);
}

TEST(ServerHttp, FullQueueAnswers429AndTimeoutsAnswer504) {
    ServerOptions o;
    o.parallel = 1;
    o.queue = 1;
    o.test_token_delay = std::chrono::milliseconds(40);
    Fixture f(o);
    const json req = {{"max_tokens", 12}, {"messages", json::array({user_message("hello there")})}};
    std::vector<int> status(4, 0);
    std::vector<std::string> retry(4);
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; ++i)
        ts.emplace_back([&, i] {
            std::this_thread::sleep_for(std::chrono::milliseconds(30 * i));  // 0 runs, 1 waits, 2 and 3 find it full
            auto r = f.post("/v1/chat/completions", req, f.patient);
            status[i] = r ? r->status : -1;
            if (r) retry[i] = r->get_header_value("Retry-After");
        });
    for (auto& t : ts) t.join();
    int ok = 0, busy = 0;
    for (int i = 0; i < 4; ++i) {
        ok += status[i] == 200;
        if (status[i] == 429) {
            ++busy;
            EXPECT_EQ(retry[i], "1");
        }
    }
    EXPECT_EQ(ok, 2);
    EXPECT_EQ(busy, 2);
    // the refused requests stored nothing: two answered, two consultations
    EXPECT_EQ(f.count("consultations"), 2);
    EXPECT_EQ(f.server->metrics().requests("/v1/chat/completions", 429), 2u);

    ServerOptions t;
    t.timeout_s = 0.25;
    t.test_token_delay = std::chrono::milliseconds(50);
    Fixture g(t);
    const json slow = {{"max_tokens", 40}, {"messages", json::array({user_message("hello there")})}};
    auto r = g.post("/v1/chat/completions", slow, g.patient);
    EXPECT_EQ(r->status, 504) << r->body;
    EXPECT_EQ(error_of(r)["type"], "timeout_error");
    EXPECT_EQ(g.count("messages"), 0);
}

TEST(ServerHttp, ClientDisconnectCancelsTheStream) {
    ServerOptions o;
    o.test_token_delay = std::chrono::milliseconds(20);
    Fixture f(o);
    const std::string body = json{{"stream", true}, {"max_tokens", 400}, {"messages", json::array({user_message("hello there")})}}.dump();
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(f.server->port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + f.patient +
                             "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    const std::string msg = head + body;
    ASSERT_EQ(::send(fd, msg.data(), msg.size(), 0), ssize_t(msg.size()));
    // read until the first content delta arrives, then hang up
    std::string got;
    char buf[4096];
    while (got.find("\"content\":\"\"") == std::string::npos || got.find("data:", got.find("\"content\":\"\"")) == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        ASSERT_GT(n, 0);
        got.append(buf, size_t(n));
    }
    const auto t0 = std::chrono::steady_clock::now();
    ::close(fd);
    // the worker is free again long before 400 tokens x 20 ms = 8 s
    httplib::Client c("127.0.0.1", f.server->port());
    while (true) {
        const json h = json::parse(c.Get("/health")->body);
        if (h["queue_running"] == 0) break;
        ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3)) << "still generating";
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const std::string m = f.get("/metrics", f.patient)->body;
    EXPECT_NE(m.find("healthgpt_errors_total{type=\"client_disconnected\"} 1"), std::string::npos) << m;
    EXPECT_EQ(f.count("answers"), 0);  // an abandoned answer is not stored
}

namespace {

// Many clients connecting at the same moment are all taken into the accept queue: httplib's own
// backlog of 5 would leave the rest of the handshakes dropped, and those connections fail about a
// second later (update_swap_stream_test saw it with 20 streaming clients). The server is bound but
// not started, so nothing accepts: only the backlog decides how many connections complete.
TEST(ServerHttp, SixtyFourConnectionsAtOnceAllCompleteTheHandshake) {
    ServerOptions o;
    o.data_dir = svctest::fresh_dir("http-backlog");
    o.port = 0;
    o.log_requests = false;
    HttpServer server(demo_model(), o);
    const int port = server.bind();
    constexpr int kConnections = 64;
    std::vector<int> fds;
    for (int i = 0; i < kConnections; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        ASSERT_GE(fd, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(uint16_t(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
        ASSERT_TRUE(rc == 0 || errno == EINPROGRESS) << std::strerror(errno);
        fds.push_back(fd);
    }
    // A dropped SYN is sent again after 1 s: within 500 ms only the queued handshakes complete.
    int connected = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    std::vector<bool> done(kConnections, false);
    while (connected < kConnections && std::chrono::steady_clock::now() < until) {
        for (int i = 0; i < kConnections; ++i) {
            if (done[i]) continue;
            pollfd p{fds[i], POLLOUT, 0};
            if (::poll(&p, 1, 0) == 1 && (p.revents & POLLOUT)) {
                int err = 0;
                socklen_t len = sizeof err;
                ::getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
                EXPECT_EQ(err, 0) << std::strerror(err);
                done[i] = true, ++connected;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    for (int fd : fds) ::close(fd);
    EXPECT_EQ(connected, kConnections) << "connections left waiting for a second SYN: the listen backlog is too small";
    EXPECT_EQ(raise_listen_backlog(port, 1024), 1) << "one listening socket on the server's port";
    EXPECT_EQ(raise_listen_backlog(1, 1024), 0) << "nothing listens on port 1 in this process";
}

}  // namespace
