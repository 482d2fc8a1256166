// kill -9 of `healthgpt serve` (a child process) during an update job and during promotions, then a
// restart on the same data directory (docs/UPDATES.md, "Crashes"):
//   - the registry is consistent: the database passes integrity_check, at most one version is
//     promoted, and the server serves exactly that one (or the folder's file when none is);
//   - the served version is one of the two around the kill;
//   - no half-written plugin file: no temp file of an atomic write is left under the data
//     directory, and every registered version's file has the SHA-256 its row names;
//   - no trainer child outlives the killed server.
// Skips when the healthgpt binary is not built.
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "imaging/image.h"
#include "runtime/demo_model.h"
#include "serve_process.h"
#include "service/auth.h"
#include "service/store.h"
#include "service_test_util.h"
#include "test_util.h"
#include "update/registry.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using hg::service::Principal;

using servetest::healthgpt_cli;

fs::path model_dir() {
    const fs::path d = hgtest::scratch_dir() / "update-crash-model";
    if (!fs::exists(d / "plugins" / "com.gguf")) hg::write_demo_model(d);
    return d;
}

std::string png(int seed) {
    hg::imaging::RgbImage im(48, 48);
    for (int y = 0; y < 48; ++y)
        for (int x = 0; x < 48; ++x) {
            uint8_t* p = im.px(x, y);
            p[0] = uint8_t(seed * 53 + x * 3), p[1] = uint8_t(seed * 7 + y * 5), p[2] = uint8_t((x ^ y) * seed);
        }
    const auto b = hg::imaging::encode_png(im);
    return std::string(b.begin(), b.end());
}

// `healthgpt serve` on port 0 as a child process over the model folder; the port is read from its log.
struct Serve : servetest::ServeProcess {
    Serve(const fs::path& data, const fs::path& log_file, int64_t update_steps)
        : servetest::ServeProcess(model_dir(), data, log_file, {"--update-steps", std::to_string(update_steps)}) {}
    httplib::Result call(const std::string& method, const std::string& path, const std::string& key, const std::string& body,
                         const std::string& type = "application/json") const {
        httplib::Client c("127.0.0.1", port);
        c.set_read_timeout(30, 0);
        httplib::Headers h{{"Authorization", "Bearer " + key}};
        return method == "GET" ? c.Get(path.c_str(), h) : c.Post(path.c_str(), h, body, type);
    }
};

// Processes whose command line names this data directory and "train" (a trainer child of a job).
int trainers_alive(const fs::path& data) {
    int n = 0;
    for (const auto& e : fs::directory_iterator("/proc")) {
        const std::string pid = e.path().filename().string();
        if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream f(e.path() / "cmdline");
        std::string cmd((std::istreambuf_iterator<char>(f)), {});
        for (char& c : cmd)
            if (c == '\0') c = ' ';
        if (cmd.find(" train ") != std::string::npos && cmd.find(data.string()) != std::string::npos) ++n;
    }
    return n;
}

// The invariants after a restart: see the file comment. Returns the served plugin name.
std::string check_consistent(const Serve& s, const fs::path& data, const std::string& admin, const std::string& folder_sha) {
    EXPECT_EQ(svctest::query_text(*std::make_unique<hg::service::Store>(data), "PRAGMA integrity_check"), "ok");
    hg::service::Store store(data);
    const int64_t promoted = std::stoll(svctest::query_text(store, "SELECT COUNT(*) FROM plugin_versions WHERE status = 'promoted'"));
    EXPECT_LE(promoted, 1);
    auto r = s.call("GET", "/v1/admin/plugins", admin, "");
    EXPECT_TRUE(r && r->status == 200);
    if (!r || r->status != 200) return "";
    const json j = json::parse(r->body);
    std::string want_name = "com", want_sha = folder_sha;
    for (const json& v : j["data"]) {
        // Every registered file is whole: the SHA-256 its row names.
        EXPECT_EQ(hg::update::file_sha256(data / v["path"].get<std::string>()), v["sha256"]) << v["path"];
        if (v["status"] == "promoted") want_name = "com@v" + std::to_string(v["id"].get<int64_t>()), want_sha = v["sha256"];
    }
    EXPECT_EQ(j["serving"], want_name) << "the server serves what the registry names";
    EXPECT_EQ(j["serving_sha256"], want_sha);
    for (const auto& e : fs::recursive_directory_iterator(data))
        EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << "temp file left: " << e.path();
    return j["serving"].get<std::string>();
}

struct Keys {
    std::string admin, doc_a, doc_b;
    std::vector<std::string> patients;
};

Keys make_keys(const fs::path& data, int patients) {
    hg::service::Store store(data);
    hg::service::KeyService keys(store);
    const auto op = Principal::local_operator();
    Keys k;
    k.admin = keys.add_key(op, "adm", "admin").key;
    k.doc_a = keys.add_key(op, "doc-a", "physician").key;
    k.doc_b = keys.add_key(op, "doc-b", "physician").key;
    for (int i = 0; i < patients; ++i) k.patients.push_back(keys.add_key(op, "pat" + std::to_string(i), "patient").key);
    return k;
}

}  // namespace

// Six approved corrections (different patients and images); a job of many steps is started and
// the server killed at a random moment of it (exporting, training or evaluating), three times.
TEST(UpdateCrash, KillNineDuringAnUpdateJob) {
    if (!fs::exists(healthgpt_cli())) GTEST_SKIP() << "healthgpt not built at " << healthgpt_cli();
    const fs::path data = svctest::fresh_dir("update-crash-job");
    const Keys k = make_keys(data, 6);
    const std::string folder_sha = hg::update::file_sha256(model_dir() / "plugins" / "com.gguf");
    {
        Serve s(data, data / "serve.log", 400);
        ASSERT_GT(s.port, 0) << "server did not start";
        for (int i = 0; i < 6; ++i) {
            auto up = s.call("POST", "/v1/uploads?filename=x.png", k.patients[i], png(i + 1), "image/png");
            ASSERT_TRUE(up && up->status == 201);
            const json u = json::parse(up->body);
            for (const char* d : {"doc-a", "doc-b"})
                ASSERT_EQ(s.call("POST", "/v1/consultations/" + std::to_string(u["consultation_id"].get<int64_t>()) + "/shares",
                                 k.patients[i], json{{"physician", d}}.dump())->status, 200);
            const json body = {{"max_tokens", 4}, {"consultation_id", u["consultation_id"]},
                               {"messages", json::array({{{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "Is it normal?"}},
                                   {{"type", "image_url"}, {"image_url", {{"url", "upload:" + std::to_string(u["id"].get<int64_t>())}}}}})}}})}};
            auto a = s.call("POST", "/v1/chat/completions", k.patients[i], body.dump());
            ASSERT_TRUE(a && a->status == 200);
            const json aid = json::parse(a->body)["answer_id"];
            ASSERT_TRUE(aid.is_number_integer()) << a->body;
            ASSERT_EQ(s.call("POST", "/v1/feedback", k.doc_a, json{{"answer_id", aid}, {"correction", "yes"}}.dump())->status, 201);
        }
        auto q = s.call("GET", "/v1/review/candidates?status=candidate", k.doc_b, "");
        ASSERT_TRUE(q && q->status == 200);
        const json queue = json::parse(q->body);
        ASSERT_EQ(queue["data"].size(), 6u) << q->body;
        for (const json& c : queue["data"])
            ASSERT_EQ(s.call("POST", "/v1/review/candidates/" + std::to_string(c["id"].get<int64_t>()) + "/approve", k.doc_b, "{}")->status, 200);
    }
    {
        hg::service::Store store(data);
        ASSERT_EQ(svctest::query_text(store, "SELECT COUNT(*) FROM training_candidates WHERE status = 'approved'"), "6");
    }
    std::mt19937 rng(std::random_device{}());
    for (int round = 0; round < 3; ++round) {
        std::string status;
        {
            Serve s(data, data / ("serve-job-" + std::to_string(round) + ".log"), 400);
            ASSERT_GT(s.port, 0);
            check_consistent(s, data, k.admin, folder_sha);
            auto st = s.call("POST", "/v1/admin/updates", k.admin, "{}");
            ASSERT_TRUE(st && st->status == 202) << (st ? st->body : "");
            const int64_t job = json::parse(st->body)["id"];
            // A random moment in the job: 0.05–1.5 s (exporting and training on the demo model).
            std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 1500)(rng)));
            auto g = s.call("GET", "/v1/admin/updates/" + std::to_string(job), k.admin, "");
            if (g && g->status == 200) {
                const json j = json::parse(g->body);
                status = j["status"];
                if (status == "failed") ADD_FAILURE() << "the job failed on its own: " << j.dump(1);
            }
            s.kill9();
        }
        // The trainer child dies with the server (PR_SET_PDEATHSIG): give the kernel a moment.
        int alive = 0;
        for (int i = 0; i < 50 && (alive = trainers_alive(data)) > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        EXPECT_EQ(alive, 0) << "a trainer outlived the killed server";
        Serve s(data, data / ("serve-after-job-" + std::to_string(round) + ".log"), 400);
        ASSERT_GT(s.port, 0);
        std::printf("round %d: killed while the job was %s; after restart serving %s\n", round, status.c_str(),
                    check_consistent(s, data, k.admin, folder_sha).c_str());
    }
}

// Two gate-passed versions; a client promotes v1, v2 and rolls back in a loop; the server is killed
// at a random moment, five times. After each restart the served version is the registry's one, which
// is one of the two around the kill.
TEST(UpdateCrash, KillNineDuringPromotion) {
    if (!fs::exists(healthgpt_cli())) GTEST_SKIP() << "healthgpt not built at " << healthgpt_cli();
    const fs::path data = svctest::fresh_dir("update-crash-promote");
    const Keys k = make_keys(data, 0);
    fs::create_directories(data / "versions");
    for (uint64_t seed : {101u, 102u}) {
        const fs::path other = hgtest::scratch_dir() / ("update-crash-other-" + std::to_string(seed));
        if (!fs::exists(other / "plugins" / "com.gguf")) hg::write_demo_model(other, {.seed = seed, .write_example_image = false});
        fs::copy_file(other / "plugins" / "com.gguf", data / "versions" / ("com-" + std::to_string(seed) + ".gguf"));
    }
    {
        hg::service::Store store(data);
        hg::update::VersionRegistry reg(store);
        const auto op = Principal::local_operator();
        for (const char* path : {"versions/com-101.gguf", "versions/com-102.gguf"}) {
            hg::update::NewVersion n;
            n.plugin = "com", n.path = path, n.gate_passed = true;
            reg.add(op, n);
        }
    }
    const std::string folder_sha = hg::update::file_sha256(model_dir() / "plugins" / "com.gguf");
    std::mt19937 rng(std::random_device{}());
    std::set<std::string> served;
    for (int round = 0; round < 5; ++round) {
        std::string before;
        int last_swaps = 0;
        {
            Serve s(data, data / ("serve-promote-" + std::to_string(round) + ".log"), 10);
            ASSERT_GT(s.port, 0);
            before = check_consistent(s, data, k.admin, folder_sha);
            std::atomic<bool> stop{false};
            std::atomic<int> swaps{0};
            std::thread admin([&] {
                // Both versions promoted once (v1 then retired), then swaps among v1, v2 and the
                // folder's file by rollback {"to"}: every request is a real swap.
                const std::pair<const char*, const char*> steps[] = {{"/v1/admin/plugins/rollback", R"({"to":1})"},
                                                                     {"/v1/admin/plugins/rollback", R"({"to":2})"},
                                                                     {"/v1/admin/plugins/rollback", R"({"to":0})"}};
                if (round == 0)
                    for (const char* p : {"/v1/admin/plugins/1/promote", "/v1/admin/plugins/2/promote"}) {
                        auto r = s.call("POST", p, k.admin, "{}");
                        if (!r) return;
                        EXPECT_EQ(r->status, 200) << r->body;
                        ++swaps;
                    }
                for (int i = 0; !stop; ++i) {
                    auto r = s.call("POST", steps[i % 3].first, k.admin, steps[i % 3].second);
                    if (!r) break;  // killed
                    if (r->status == 200) ++swaps;
                }
            });
            std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 400)(rng)));
            s.kill9();
            stop = true;
            admin.join();
            last_swaps = swaps;
        }
        Serve s(data, data / ("serve-after-promote-" + std::to_string(round) + ".log"), 10);
        ASSERT_GT(s.port, 0);
        const std::string now = check_consistent(s, data, k.admin, folder_sha);
        EXPECT_TRUE(now == "com" || now == "com@v1" || now == "com@v2") << now;
        served.insert(now);
        EXPECT_GT(last_swaps, 0) << "the kill came before any swap";
        std::printf("round %d: serving %s before, %d swaps, %s after the kill and restart\n", round, before.c_str(),
                    last_swaps, now.c_str());
    }
}
