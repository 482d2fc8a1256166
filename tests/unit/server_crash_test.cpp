// kill -9 at the HTTP level: `healthgpt serve` runs as a child process over a fresh data dir;
// client threads fire feedback writes over HTTP; the server is SIGKILLed mid-burst, then started
// again on the same data dir. Every feedback the server acknowledged (HTTP 201 with its id) must be
// in the database with its content, and the database must pass PRAGMA integrity_check. Three
// rounds, each killed at another moment. (The service-level test, service_crash_test.cpp, does the
// same below HTTP; this one adds the server's threads, its HTTP pool and the process exit path.)
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "runtime/demo_model.h"
#include "serve_process.h"
#include "service/auth.h"
#include "service/consultations.h"
#include "service/store.h"
#include "service_test_util.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

using servetest::healthgpt_cli;

fs::path demo_dir() {
    const fs::path d = hgtest::scratch_dir() / "server-crash-demo-model";
    if (!fs::exists(d / "plugins" / "com.gguf")) hg::write_demo_model(d);
    return d;
}

// `healthgpt serve` on port 0 as a child over the demo model, with room for the burst in its queue.
struct ServeProcess : servetest::ServeProcess {
    ServeProcess(const fs::path& data_dir, const fs::path& log_file)
        : servetest::ServeProcess(demo_dir(), data_dir, log_file, {"--queue", "32"}) {}
};

}  // namespace

TEST(ServerCrash, KillNineMidBurstLosesNoAcknowledgedFeedback) {
    if (!fs::exists(healthgpt_cli())) GTEST_SKIP() << "healthgpt not built at " << healthgpt_cli();
    const fs::path dir = svctest::fresh_dir("server-crash");
    std::string physician;
    int64_t answer_id = 0;
    {
        // a patient's consultation with one model answer, shared with a physician who files feedback
        hg::service::Store store(dir);
        hg::service::KeyService keys(store);
        const auto op = hg::service::Principal::local_operator();
        const auto patient = keys.authenticate(keys.add_key(op, "pat", "patient").key);
        physician = keys.add_key(op, "doc", "physician").key;
        const auto doc = keys.authenticate(physician);
        hg::service::ConsultationService cs(store);
        const int64_t cid = cs.create(patient, "crash test");
        const int64_t q = cs.add_message(patient, cid, "What does this show?");
        answer_id = cs.record_answer(patient, cid, q, "A normal chest X-ray.", "demo", std::string(64, 'a'));
        cs.share(patient, cid, doc.user_id);
    }

    std::map<int64_t, std::string> acked;  // feedback id -> its comment, for every 201
    std::mt19937 rng(20261207);
    const auto t_start = Clock::now();
    for (int round = 0; round < 3; ++round) {
        ServeProcess srv(dir, dir.parent_path() / (dir.filename().string() + "-serve.log"));
        ASSERT_GT(srv.port, 0) << "the server did not start: " << srv.log_text();
        std::mutex mu;
        std::atomic<bool> killed{false};
        std::atomic<int> acks{0}, failed{0};
        auto client = [&](int t) {
            httplib::Client c("127.0.0.1", srv.port);
            c.set_connection_timeout(2, 0);
            c.set_read_timeout(5, 0);
            for (int i = 0; !killed; ++i) {
                const std::string comment = "round " + std::to_string(round) + " thread " + std::to_string(t) + " #" + std::to_string(i);
                const json body = {{"answer_id", answer_id}, {"rating", 1 + i % 5}, {"comment", comment}};
                auto r = c.Post("/v1/feedback", httplib::Headers{{"Authorization", "Bearer " + physician}}, body.dump(),
                                "application/json");
                if (!r) {
                    ++failed;  // the server is gone (or not yet back)
                    if (killed) break;
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
                    continue;
                }
                if (r->status == 201) {
                    std::lock_guard<std::mutex> l(mu);
                    acked[json::parse(r->body)["id"].get<int64_t>()] = comment;
                    ++acks;
                } else {
                    ADD_FAILURE() << "feedback answered " << r->status << ": " << r->body;
                    break;
                }
            }
        };
        std::vector<std::thread> ts;
        for (int t = 0; t < 4; ++t) ts.emplace_back(client, t);
        // kill after a random number of acknowledged writes (at most 3 s)
        const int kill_after = std::uniform_int_distribution<int>(20, 120)(rng);
        const auto until = Clock::now() + std::chrono::seconds(3);
        while (acks < kill_after && Clock::now() < until) std::this_thread::sleep_for(std::chrono::microseconds(200));
        srv.kill9();
        killed = true;
        for (auto& t : ts) t.join();
        EXPECT_GE(acks.load(), 1) << "no feedback was acknowledged in round " << round;

        // after the kill: every acknowledged row is there with its content; the database is sound
        hg::service::Store store(dir);
        EXPECT_EQ(svctest::query_text(store, "PRAGMA integrity_check"), "ok");
        int64_t missing = 0;
        for (const auto& [id, comment] : acked) {
            const std::string got = store.transaction([&](hg::service::Db& db) {
                hg::service::Stmt s(db, "SELECT comment FROM feedback WHERE id = ?");
                s.bind(id);
                return s.step() ? s.text(0) : std::string("<missing>");
            });
            if (got != comment) ++missing;
        }
        EXPECT_EQ(missing, 0) << "of " << acked.size() << " acknowledged feedback rows";
    }
    // and the server still starts and serves on the data dir it was killed over
    ServeProcess last(dir, dir.parent_path() / (dir.filename().string() + "-serve.log"));
    ASSERT_GT(last.port, 0) << last.log_text();
    httplib::Client c("127.0.0.1", last.port);
    auto r = c.Post("/v1/feedback", httplib::Headers{{"Authorization", "Bearer " + physician}},
                    json{{"answer_id", answer_id}, {"rating", 5}}.dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 201) << r->body;
    last.stop();
    std::fprintf(stderr, "[server crash] %zu acknowledged feedback rows verified over 3 kills in %.1f s\n", acked.size(),
                 std::chrono::duration<double>(Clock::now() - t_start).count());
}
