// POST /v1/images/generations end to end in-process: a server on 127.0.0.1:0 over the demo model
// (it has a generation plugin "gen" and a VQGAN), a fresh data dir, httplib::Client. The image
// over HTTP must be the library's generate_image on the same input, byte for byte (greedy), and it
// must be stored as an upload of the input's consultation.
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>


#include "imaging/image.h"
#include "imaging/load.h"
#include "runtime/demo_model.h"
#include "runtime/image_generation.h"
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

using servertest::read_bytes;

fs::path demo_dir() { return servertest::demo_model_dir("server-images-demo-model"); }

std::shared_ptr<const hg::Model> demo_model() { return servertest::demo_model("server-images-demo-model"); }

std::string b64_decode(const std::string& s) {
    const auto v = decode_base64(s, "test");
    return std::string(v.begin(), v.end());
}

struct Fixture : servertest::ServerFixture {
    explicit Fixture(std::shared_ptr<const hg::Model> model = demo_model(), ServerOptions o = {})
        : ServerFixture("images", std::move(model), o, 60) {}
    // The demo model's example PNG as an upload of a new consultation of the patient: {id, consultation_id}.
    std::pair<int64_t, int64_t> upload_example() const {
        const std::string png = read_bytes(demo_dir() / "example.png");
        auto r = post_raw("/v1/uploads?filename=ct.png", png, "image/png", patient);
        EXPECT_TRUE(r && r->status == 201) << (r ? r->body : "no response");
        const json j = json::parse(r->body);
        return {j["id"].get<int64_t>(), j["consultation_id"].get<int64_t>()};
    }
};

// What the library makes of the example PNG for a task (greedy): the PNG bytes.
std::string reference_png(hg::GenerationTask task) {
    hg::Session s(demo_model());
    const auto img = hg::imaging::load_medical_image(demo_dir() / "example.png")[0];
    hg::GenerateImageOptions o;
    o.task = task;
    const hg::GeneratedImage g = hg::generate_image(s, "", &img, o);
    const auto png = hg::imaging::encode_png(g.image);
    return std::string(png.begin(), png.end());
}

using servertest::error_of;

}  // namespace

TEST(ServerImages, GenerationEqualsTheLibraryAndIsStoredAsAnUpload) {
    Fixture f;
    const auto [id, cid] = f.upload_example();
    const std::string ref = reference_png(hg::GenerationTask::ct2mri);

    auto r = f.post("/v1/images/generations", {{"task", "ct2mri"}, {"upload_id", id}}, f.patient);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json j = json::parse(r->body);
    EXPECT_GT(j["created"].get<int64_t>(), 0);
    EXPECT_EQ(j["plugin"], "gen");
    ASSERT_EQ(j["data"].size(), 1u);
    const std::string png = b64_decode(j["data"][0]["b64_json"].get<std::string>());
    EXPECT_EQ(png, ref);  // byte for byte what generate_image + encode_png make
    EXPECT_EQ(png.substr(1, 3), "PNG");

    // stored as a new upload of the same consultation, with what made it; its preview is the image
    const int64_t out = j["data"][0]["upload_id"].get<int64_t>();
    EXPECT_NE(out, id);
    EXPECT_EQ(j["consultation_id"], cid);
    const json c = json::parse(f.get("/v1/consultations/" + std::to_string(cid), f.patient)->body);
    ASSERT_EQ(c["uploads"].size(), 2u);
    json stored;
    for (const auto& u : c["uploads"])
        if (u["id"] == out) stored = u;
    ASSERT_TRUE(stored.is_object()) << c.dump();
    EXPECT_EQ(stored["image"]["generated"]["task"], "ct2mri");
    EXPECT_EQ(stored["image"]["generated"]["from_upload_id"], id);
    EXPECT_EQ(stored["image"]["generated"]["plugin_sha256"].get<std::string>().size(), 64u);
    EXPECT_EQ(stored["filename"], "ct2mri-of-upload-" + std::to_string(id) + ".png");
    auto pv = f.get("/v1/uploads/" + std::to_string(out) + "/preview.png", f.patient);
    ASSERT_EQ(pv->status, 200);
    const auto a = hg::imaging::decode_raster(std::span<const uint8_t>((const uint8_t*)pv->body.data(), pv->body.size()), "a");
    const auto b = hg::imaging::decode_raster(std::span<const uint8_t>((const uint8_t*)ref.data(), ref.size()), "b");
    EXPECT_EQ(a.samples, b.samples);

    // another task gives another image (the instruction differs); a seed samples reproducibly
    r = f.post("/v1/images/generations", {{"task", "recon"}, {"upload_id", id}}, f.patient);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(b64_decode(json::parse(r->body)["data"][0]["b64_json"]), reference_png(hg::GenerationTask::reconstruction));
    const json seeded = {{"task", "sr"}, {"upload_id", id}, {"seed", 7}};
    const auto s1 = f.post("/v1/images/generations", seeded, f.patient), s2 = f.post("/v1/images/generations", seeded, f.patient);
    ASSERT_EQ(s1->status, 200) << s1->body;
    EXPECT_EQ(json::parse(s1->body)["data"][0]["b64_json"], json::parse(s2->body)["data"][0]["b64_json"]);
    EXPECT_EQ(f.count("uploads"), 5);
}

TEST(ServerImages, StreamedProgressThenTheImage) {
    Fixture f;
    const auto [id, cid] = f.upload_example();
    (void)cid;
    auto r = f.post("/v1/images/generations", {{"task", "ct2mri"}, {"upload_id", id}, {"stream", true}}, f.patient);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
    int64_t last_done = -1, n_progress = 0;
    json image;
    bool done = false;
    for (size_t pos = 0; pos < r->body.size();) {
        const size_t end = r->body.find("\n\n", pos);
        ASSERT_NE(end, std::string::npos);
        const std::string ev = r->body.substr(pos, end - pos);
        pos = end + 2;
        if (ev[0] == ':') continue;  // a comment (keep-alive)
        ASSERT_EQ(ev.rfind("data: ", 0), 0u) << ev;
        if (ev == "data: [DONE]") {
            done = true;
            continue;
        }
        EXPECT_FALSE(done) << "an event after [DONE]";
        const json j = json::parse(ev.substr(6));
        if (j["type"] == "progress") {
            EXPECT_TRUE(image.is_null()) << "progress after the image";
            EXPECT_EQ(j["total"], 1024);
            EXPECT_GT(j["done"].get<int64_t>(), last_done);
            last_done = j["done"];
            ++n_progress;
        } else {
            ASSERT_EQ(j["type"], "image") << ev;
            image = j;
        }
    }
    EXPECT_TRUE(done);
    EXPECT_GE(n_progress, 1);
    EXPECT_EQ(last_done, 1024);
    ASSERT_TRUE(image.is_object());
    EXPECT_EQ(b64_decode(image["b64_json"]), reference_png(hg::GenerationTask::ct2mri));
    EXPECT_GT(image["upload_id"].get<int64_t>(), id);
    EXPECT_EQ(image["plugin"], "gen");
}

TEST(ServerImages, RolesAreCheckedAndRefusalsAudited) {
    Fixture f;
    const auto [id, cid] = f.upload_example();
    const json req = {{"task", "mri2ct"}, {"upload_id", id}};
    auto expect_refused = [&](const httplib::Result& res) {
        ASSERT_TRUE(res);
        EXPECT_EQ(res->status, 403) << res->body;
        EXPECT_EQ(error_of(res)["type"], "permission_error");
        const auto row = svctest::last_audit(*f.store);
        EXPECT_FALSE(row.allowed);
        EXPECT_EQ(row.action, "upload.read");
    };
    expect_refused(f.post("/v1/images/generations", req, f.other));      // another patient's upload
    expect_refused(f.post("/v1/images/generations", req, f.physician));  // not shared (yet)
    expect_refused(f.post("/v1/images/generations", req, f.admin));      // admins read no medical content
    expect_refused(f.post("/v1/images/generations", {{"task", "sr"}, {"upload_id", 9999}}, f.patient));  // unknown = not yours
    EXPECT_EQ(f.count("uploads"), 1);
    // shared: the physician may, and the output lands in the patient's consultation
    hg::service::ConsultationService(*f.store).share(f.patient_p, cid, f.physician_p.user_id);
    auto r = f.post("/v1/images/generations", req, f.physician);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(json::parse(r->body)["consultation_id"], cid);
    EXPECT_EQ(f.count("uploads"), 2);
    const auto row = svctest::last_audit(*f.store);
    EXPECT_TRUE(row.allowed);
    EXPECT_EQ(row.action, "upload.add");
    // no key
    EXPECT_EQ(f.client().Post("/v1/images/generations", req.dump(), "application/json")->status, 401);
}

TEST(ServerImages, BadRequestsAreA4xxNamingTheProblemAndStoreNothing) {
    Fixture f;
    const auto [id, cid] = f.upload_example();
    (void)cid;
    struct Case {
        json body;
        int status;
        std::string needle;
    };
    const std::vector<Case> cases = {
        {{{"upload_id", id}}, 400, "task: required"},
        {{{"task", "xray2ct"}, {"upload_id", id}}, 400, "task: expected"},
        {{{"task", 3}, {"upload_id", id}}, 400, "task: expected a string"},
        {{{"task", "ct2mri"}}, 400, "upload_id: required"},
        {{{"task", "ct2mri"}, {"upload_id", "3"}}, 400, "upload_id: expected an integer"},
        {{{"task", "ct2mri"}, {"upload_id", id}, {"plugin", "nope"}}, 400, "unknown plugin 'nope'"},
        {{{"task", "ct2mri"}, {"upload_id", id}, {"plugin", "com"}}, 400, "comprehension plugin"},
        {{{"task", "ct2mri"}, {"upload_id", id}, {"slice", 3}}, 400, "slice"},
        {{{"task", "ct2mri"}, {"upload_id", id}, {"window", "nonsense"}}, 400, "window"},
        {{{"task", "ct2mri"}, {"upload_id", id}, {"n", 2}}, 400, "n: must be between 1 and 1"},
        {{{"task", "ct2mri"}, {"upload_id", id}, {"response_format", "url"}}, 400, "response_format"},
        {{{"task", "ct2mri"}, {"upload_id", id}, {"stream", "yes"}}, 400, "stream: expected true or false"},
    };
    for (const Case& c : cases) {
        auto r = f.post("/v1/images/generations", c.body, f.patient);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, c.status) << c.body.dump() << " -> " << r->body;
        EXPECT_NE(error_of(r)["message"].get<std::string>().find(c.needle), std::string::npos)
            << c.body.dump() << " -> " << r->body;
    }
    auto r = f.client().Post("/v1/images/generations", httplib::Headers{{"Authorization", "Bearer " + f.patient}},
                             "{\"task\": ", "application/json");
    EXPECT_EQ(r->status, 400);
    EXPECT_NE(error_of(r)["message"].get<std::string>().find("malformed JSON"), std::string::npos);
    // a number beyond double (found by fuzz_server_request): a 400, not a 500, on both routes
    for (const char* path : {"/v1/images/generations", "/v1/chat/completions"}) {
        r = f.client().Post(path, httplib::Headers{{"Authorization", "Bearer " + f.patient}},
                            "{\"task\": \"sr\", \"upload_id\": 1E400, \"max_tokens\": 1E400}", "application/json");
        EXPECT_EQ(r->status, 400) << path << ": " << r->body;
        EXPECT_NE(error_of(r)["message"].get<std::string>().find("malformed JSON"), std::string::npos) << r->body;
    }
    EXPECT_EQ(f.count("uploads"), 1);  // only the input
}

TEST(ServerImages, AModelWithoutAGenerationPluginAnswers404) {
    // the demo model without plugins/gen.gguf
    const fs::path dir = hgtest::scratch_dir() / "server-images-no-gen";
    fs::remove_all(dir);
    fs::copy(demo_dir(), dir, fs::copy_options::recursive);
    fs::remove(dir / "plugins" / "gen.gguf");
    Fixture f(hg::Model::load(dir));
    const auto [id, cid] = f.upload_example();
    (void)cid;
    auto r = f.post("/v1/images/generations", {{"task", "ct2mri"}, {"upload_id", id}}, f.patient);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << r->body;
    const json e = error_of(r);
    EXPECT_EQ(e["type"], "not_found_error");
    EXPECT_NE(e["message"].get<std::string>().find("no generation plugin"), std::string::npos) << r->body;
    EXPECT_EQ(f.count("uploads"), 1);
}

// SSE keep-alive comments: a streamed request waiting behind a slow one (one worker) gets
// ": keep-alive" comments before its first text, and its text is unchanged; the image stream too.
TEST(ServerSse, KeepAliveCommentsDuringAQueueWait) {
    ServerOptions o;
    o.parallel = 1;
    o.queue = 4;
    o.sse_keepalive_s = 0.05;
    o.test_token_delay = std::chrono::milliseconds(25);
    Fixture f(demo_model(), o);
    const json text_only = {{"role", "user"}, {"content", "hello there"}};
    const json slow = {{"max_tokens", 16}, {"messages", json::array({text_only})}};  // ~0.4 s of tokens
    std::thread blocker([&] { EXPECT_EQ(f.post("/v1/chat/completions", slow, f.patient)->status, 200); });
    for (int i = 0; i < 500 && json::parse(f.client().Get("/health")->body)["queue_running"] != 1; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    json streamed = {{"max_tokens", 4}, {"stream", true}, {"messages", json::array({text_only})}};
    auto r = f.post("/v1/chat/completions", streamed, f.patient);
    blocker.join();
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const std::string& b = r->body;
    const size_t first_ka = b.find("\n\n: keep-alive\n\n"), first_text = b.find("\"content\":\"", b.find("\n\n"));
    ASSERT_NE(first_ka, std::string::npos) << b;
    EXPECT_LT(first_ka, first_text);  // during the wait, before any text
    // without the comments the stream is what it would be otherwise: the same text as unstreamed
    std::string text;
    for (size_t pos = 0; pos < b.size();) {
        const size_t end = b.find("\n\n", pos);
        ASSERT_NE(end, std::string::npos);
        const std::string ev = b.substr(pos, end - pos);
        pos = end + 2;
        if (ev == ": keep-alive" || ev == "data: [DONE]") continue;
        ASSERT_EQ(ev.rfind("data: ", 0), 0u) << ev;
        const json j = json::parse(ev.substr(6));
        if (!j["choices"].empty() && j["choices"][0]["delta"].contains("content"))
            text += j["choices"][0]["delta"]["content"].get<std::string>();
    }
    streamed["stream"] = false;
    EXPECT_EQ(text, json::parse(f.post("/v1/chat/completions", streamed, f.patient)->body)["choices"][0]["message"]["content"]);

    // an image stream waiting behind another generation (one worker) gets them too
    ServerOptions g;
    g.parallel = 1;
    g.sse_keepalive_s = 0.05;
    Fixture h(demo_model(), g);
    const auto [id, cid] = h.upload_example();
    (void)cid;
    std::thread blocker2([&, id = id] { h.post("/v1/images/generations", {{"task", "sr"}, {"upload_id", id}}, h.patient); });
    for (int i = 0; i < 500 && json::parse(h.client().Get("/health")->body)["queue_running"] != 1; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    r = h.post("/v1/images/generations", {{"task", "sr"}, {"upload_id", id}, {"stream", true}}, h.patient);
    blocker2.join();
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(r->body.rfind(": keep-alive\n\n", 0), 0u) << r->body.substr(0, 200);
    EXPECT_NE(r->body.find("\"type\":\"image\""), std::string::npos);
}
