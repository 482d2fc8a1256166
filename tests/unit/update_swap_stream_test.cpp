// Promotion and rollback of a plugin version under 20 concurrent *streaming* clients (docs/UPDATES.md,
// "The swap"), in a running server over the demo model: no request fails; every stream names one
// plugin in all of its chunks, and that is the old or the new version; the answer stored for it
// carries the SHA-256 of the file that name stands for; a request that starts after the promotion
// returned is answered by the new version, one that starts after the rollback returned by the old.
// The version is a second demo plugin (another seed, same shapes), registered as gate-passed.
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "imaging/image.h"
#include "runtime/demo_model.h"
#include "server/server.h"
#include "service/consultations.h"
#include "service_test_util.h"
#include "update/registry.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using hg::service::Principal;

std::string png(int seed) {
    hg::imaging::RgbImage im(48, 48);
    for (int y = 0; y < 48; ++y)
        for (int x = 0; x < 48; ++x) {
            uint8_t* p = im.px(x, y);
            p[0] = uint8_t(seed * 31 + x * 3), p[1] = uint8_t(seed * 11 + y * 5), p[2] = uint8_t((x ^ y) * seed);
        }
    const auto b = hg::imaging::encode_png(im);
    return std::string(b.begin(), b.end());
}

struct Streamed {
    Clock::time_point started, ended;
    bool ok = false;
    std::string error;
    std::set<std::string> plugins;  // the "plugin" of every chunk
    std::optional<int64_t> answer_id;
};

// The chunks of one SSE body: every "data: {...}" line's plugin; the final chunk's answer_id.
void parse_stream(const std::string& body, Streamed& s) {
    std::istringstream in(body);
    std::string line;
    bool done = false, finished = false;
    while (std::getline(in, line)) {
        if (line.rfind("data: ", 0) != 0) continue;
        const std::string d = line.substr(6);
        if (d == "[DONE]") { done = true; continue; }
        const json j = json::parse(d, nullptr, false);
        if (j.is_discarded() || j.contains("error")) { s.error = d; return; }
        s.plugins.insert(j.value("plugin", std::string("?")));
        if (j.contains("answer_id")) {
            finished = true;
            if (j["answer_id"].is_number_integer()) s.answer_id = j["answer_id"].get<int64_t>();
        }
    }
    s.ok = done && finished;
    if (!s.ok) s.error = "no final chunk or [DONE]: " + body.substr(0, 200);
}

TEST(UpdateSwapStream, PromoteAndRollbackUnder20StreamingClients) {
    const fs::path model_dir = hgtest::scratch_dir() / "update-swap-stream-model";
    const fs::path other_dir = hgtest::scratch_dir() / "update-swap-stream-other";
    if (!fs::exists(model_dir / "plugins" / "com.gguf")) hg::write_demo_model(model_dir);
    if (!fs::exists(other_dir / "plugins" / "com.gguf")) hg::write_demo_model(other_dir, {.seed = 77, .write_example_image = false});
    const fs::path data = svctest::fresh_dir("swap-stream");
    fs::create_directories(data / "versions");
    fs::copy_file(other_dir / "plugins" / "com.gguf", data / "versions" / "com-v1.gguf");

    hg::service::Store store(data);
    hg::service::KeyService keys(store);
    const auto op = Principal::local_operator();
    const std::string admin = keys.add_key(op, "adm", "admin").key;
    constexpr int kClients = 20;
    std::vector<std::string> patients;
    for (int i = 0; i < kClients; ++i) patients.push_back(keys.add_key(op, "pat" + std::to_string(i), "patient").key);
    hg::update::VersionRegistry reg(store);
    hg::update::NewVersion n;
    n.plugin = "com", n.path = "versions/com-v1.gguf", n.gate_passed = true;
    const auto v1 = reg.add(op, n);
    const std::string old_sha = hg::update::file_sha256(model_dir / "plugins" / "com.gguf");
    const std::string new_sha = v1.sha256;
    ASSERT_NE(old_sha, new_sha);

    hg::server::ServerOptions o;
    o.data_dir = data;
    o.port = 0;
    o.log_requests = false;
    o.parallel = 2;
    o.queue = 2 * kClients;  // nobody is refused with 429: every request must be answered
    hg::server::HttpServer server(hg::Model::load(model_dir), o);
    server.bind();
    server.start();
    auto client = [&] {
        httplib::Client c("127.0.0.1", server.port());
        c.set_read_timeout(30, 0);
        return c;
    };
    auto admin_post = [&](const std::string& path, const json& body) {
        auto r = client().Post(path.c_str(), httplib::Headers{{"Authorization", "Bearer " + admin}}, body.dump(), "application/json");
        EXPECT_TRUE(r && r->status == 200) << path << ": " << (r ? r->body : "no response");
        return r ? json::parse(r->body, nullptr, false) : json();
    };

    std::vector<int64_t> uploads(kClients), cids(kClients);
    for (int i = 0; i < kClients; ++i) {
        auto r = client().Post("/v1/uploads?filename=x.png", httplib::Headers{{"Authorization", "Bearer " + patients[i]}},
                               png(i + 1), "image/png");
        ASSERT_TRUE(r && r->status == 201) << (r ? r->body : "no response");
        const json up = json::parse(r->body);
        uploads[i] = up["id"], cids[i] = up["consultation_id"];
    }

    std::atomic<bool> stop{false};
    std::atomic<int> done{0};
    std::mutex mu;
    std::vector<Streamed> all;
    std::vector<std::thread> load;
    const auto deadline = Clock::now() + std::chrono::seconds(25);
    for (int t = 0; t < kClients; ++t)
        load.emplace_back([&, t] {
            const json body = {{"stream", true}, {"max_tokens", 4}, {"consultation_id", cids[t]},
                               {"messages", json::array({{{"role", "user"},
                                                          {"content", json::array({{{"type", "text"}, {"text", "Is there an abnormality?"}},
                                                                                   {{"type", "image_url"},
                                                                                    {"image_url", {{"url", "upload:" + std::to_string(uploads[t])}}}}})}}})}};
            while (!stop && Clock::now() < deadline) {
                Streamed s;
                s.started = Clock::now();
                auto r = client().Post("/v1/chat/completions", httplib::Headers{{"Authorization", "Bearer " + patients[t]}},
                                       body.dump(), "application/json");
                s.ended = Clock::now();
                if (!r)
                    s.error = "no response: " + httplib::to_string(r.error()) + " after " +
                              std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(s.ended - s.started).count()) + " ms";
                else if (r->status != 200) s.error = std::to_string(r->status) + " " + r->body;
                else parse_stream(r->body, s);
                std::lock_guard<std::mutex> l(mu);
                all.push_back(std::move(s));
                ++done;
            }
        });
    auto wait_done = [&](int n) {
        while (done < n && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    };
    wait_done(kClients);
    const auto promote_called = Clock::now();
    EXPECT_EQ(admin_post("/v1/admin/plugins/" + std::to_string(v1.id) + "/promote", json::object())["status"], "promoted");
    const auto promoted = Clock::now();
    wait_done(done + 2 * kClients);
    const auto rollback_called = Clock::now();
    EXPECT_EQ(admin_post("/v1/admin/plugins/rollback", json::object())["serving"], "com");
    const auto rolled_back = Clock::now();
    wait_done(done + 2 * kClients);
    stop = true;
    for (auto& t : load) t.join();
    ASSERT_LT(Clock::now(), deadline) << "the load did not reach its counts in time";

    const std::string new_name = v1.name();
    int failed = 0, stored = 0, after_promote = 0, after_rollback = 0;
    std::set<std::string> seen;
    for (const Streamed& s : all) {
        if (!s.ok) { ++failed; ADD_FAILURE() << s.error; continue; }
        ASSERT_EQ(s.plugins.size(), 1u) << "one plugin for every chunk of a stream";
        const std::string name = *s.plugins.begin();
        ASSERT_TRUE(name == "com" || name == new_name) << name;
        seen.insert(name);
        if (s.answer_id) {  // an empty answer is not stored
            const std::string sha = svctest::query_text(store, ("SELECT plugin_sha256 FROM answers WHERE id = " +
                                                                std::to_string(*s.answer_id)).c_str());
            EXPECT_EQ(sha, name == "com" ? old_sha : new_sha) << "stored version differs from the streamed one";
            ++stored;
        }
        if (s.started > promoted && s.ended < rollback_called) {
            EXPECT_EQ(name, new_name) << "started after the promotion returned";
            ++after_promote;
        }
        if (s.started > rolled_back) {
            EXPECT_EQ(name, "com") << "started after the rollback returned";
            ++after_rollback;
        }
        (void)promote_called;
    }
    std::printf("streams: %zu (%d failed), %d answers stored; %d started after the promotion, %d after the rollback\n",
                all.size(), failed, stored, after_promote, after_rollback);
    EXPECT_EQ(failed, 0);
    EXPECT_EQ(seen.size(), 2u);
    EXPECT_GT(after_promote, 0);
    EXPECT_GT(after_rollback, 0);
    EXPECT_GT(stored, 0);
    server.stop();
}

}  // namespace
