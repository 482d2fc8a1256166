// The prefix cache across requests: a second question about the same image, in a new request,
// reuses the image's KV (the shared PrefixCache of the server's workers), whichever session runs
// it, and the greedy answer is bit-identical with and without the hit. The cache key includes the
// plugin version (the SHA-256 of its file) and the image's content (the hash of its vectors).
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <thread>

#include "imaging/load.h"
#include "runtime/demo_model.h"
#include "runtime/kv_cache.h"
#include "runtime/pipeline.h"
#include "server/request.h"
#include "server/server.h"
#include "server_fixture.h"
#include "service_test_util.h"
#include "test_util.h"
#include "text/chat.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace hg::server;

using servertest::user_message;

std::shared_ptr<const hg::Model> demo_model() { return servertest::demo_model("server-prefix-demo-model"); }

std::string png_data_url() { return servertest::png_data_url(*demo_model()); }

// A request's ids and pixels as the server builds them: one user turn with the example image.
struct Request {
    std::vector<int32_t> ids;
    std::vector<std::vector<float>> pixels;
};
Request image_question(const std::string& q) {
    const auto& m = *demo_model();
    Request r;
    const auto img = hg::imaging::load_medical_image(m.path() / "example.png")[0];
    r.pixels.push_back(hg::preprocess_image(m, img));
    const hg::text::ChatTurn turn{q, 1, std::nullopt};
    const std::string prompt = hg::text::build_prompt(m.chat_template(), std::span<const hg::text::ChatTurn>(&turn, 1));
    r.ids = hg::text::tokenize_with_images(m.tokenizer(), prompt, hg::text::Semantics::slow);
    return r;
}

// A server whose requests are the patient's.
struct Server : servertest::ServerFixture {
    explicit Server(ServerOptions o) : ServerFixture("prefix", demo_model(), o, 30) {}
    json chat(const json& req) const {
        auto r = post("/v1/chat/completions", req, patient);
        EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no response");
        return r && r->status == 200 ? json::parse(r->body) : json();
    }
    json health() const { return json::parse(client().Get("/health")->body); }
    // One counter or gauge of /metrics, -1 if absent.
    double metric(const std::string& name) const {
        const std::string m = get("/metrics", patient)->body;
        const size_t at = m.find("\n" + name + " ");
        return at == std::string::npos ? -1 : std::stod(m.substr(at + name.size() + 2));
    }
};

}  // namespace

TEST(PrefixCache, ASecondSessionReusesTheImageAndAnswersBitIdentically) {
    auto pc = std::make_shared<hg::PrefixCache>(size_t(64) << 20);
    hg::SessionOptions with;
    with.prefix_cache = pc;
    hg::AskOptions ao;
    ao.max_new_tokens = 24;
    ao.plugin_version = "sha-of-com-v1";
    const Request first = image_question("What does this X-ray show?");
    const Request second = image_question("Is there a fracture?");

    hg::Session a(demo_model(), with), b(demo_model(), with), alone(demo_model());
    const hg::Answer a1 = a.run(first.ids, first.pixels, ao);
    EXPECT_EQ(a1.timings.n_prompt_reused, 0);
    EXPECT_EQ(pc->size(), 1u);  // the prompt up to the end of the image

    // another session, a new question on the same image: the image's KV comes from the cache
    const hg::Answer b2 = b.run(second.ids, second.pixels, ao);
    const hg::Answer ref = alone.run(second.ids, second.pixels, ao);
    EXPECT_EQ(ref.timings.n_prompt_reused, 0);
    EXPECT_GT(b2.timings.n_prompt_reused, 576);  // the system prompt + the image's 576 vectors
    EXPECT_LT(b2.timings.n_prompt_reused, b2.timings.n_prompt);
    EXPECT_EQ(pc->stats().hits, 1u);
    EXPECT_EQ(b2.tokens, ref.tokens);  // bit-identical greedy answer
    EXPECT_EQ(b2.text, ref.text);
    ASSERT_FALSE(ref.tokens.empty());

    // another plugin version (a replaced file under the same name) never reuses it
    hg::Session c(demo_model(), with);
    hg::AskOptions v2 = ao;
    v2.plugin_version = "sha-of-com-v2";
    const hg::Answer c2 = c.run(second.ids, second.pixels, v2);
    EXPECT_LT(c2.timings.n_prompt_reused, 576);
    EXPECT_EQ(pc->stats().hits, 1u);
    // another image (other pixels) neither
    Request other = second;
    for (float& x : other.pixels[0]) x = -x;
    hg::Session d(demo_model(), with);
    EXPECT_LT(d.run(other.ids, other.pixels, ao).timings.n_prompt_reused, 576);
}

TEST(PrefixCache, TheServerReusesAnImageOnWhicheverWorkerAndReportsCachedTokens) {
    ServerOptions o;
    o.parallel = 2;
    o.queue = 4;
    o.test_token_delay = std::chrono::milliseconds(15);
    Server s(o);
    const json q1 = {{"max_tokens", 12}, {"messages", json::array({user_message("What does this X-ray show?", {png_data_url()})})}};
    const json q2 = {{"max_tokens", 12}, {"messages", json::array({user_message("Is there a fracture?", {png_data_url()})})}};
    const json a1 = s.chat(q1);
    EXPECT_EQ(a1["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    // Two text-only blockers occupy both workers (each worker's own KV then holds a blocker, not the
    // image); the second image question waits and runs after one of them: its image KV can only
    // come from the shared cache.
    const json blocker = {{"max_tokens", 24}, {"messages", json::array({user_message("hello there")})}};
    std::vector<std::thread> ts;
    for (int i = 0; i < 2; ++i) ts.emplace_back([&] { s.chat(blocker); });
    for (int i = 0; i < 500 && s.health()["queue_running"].get<int>() < 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_EQ(s.health()["queue_running"], 2);
    const json a2 = s.chat(q2);
    for (auto& t : ts) t.join();
    const int64_t cached = a2["usage"]["prompt_tokens_details"]["cached_tokens"];
    EXPECT_GT(cached, 576);
    EXPECT_LT(cached, a2["usage"]["prompt_tokens"].get<int64_t>());
    EXPECT_EQ(s.metric("healthgpt_prefix_cache_hits_total"), 1);
    EXPECT_EQ(s.metric("healthgpt_prefix_cache_entries"), 1);
    EXPECT_GE(s.metric("healthgpt_cached_prompt_tokens_total"), double(cached));

    // the same question on a server whose cache is off: the same answer, nothing cached
    ServerOptions off;
    off.session.prefix_cache = std::make_shared<hg::PrefixCache>(0);
    Server t(off);
    const json b2 = t.chat(q2);
    EXPECT_EQ(b2["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    EXPECT_EQ(b2["choices"][0]["message"]["content"], a2["choices"][0]["message"]["content"]);
    EXPECT_EQ(t.metric("healthgpt_prefix_cache_hits_total"), 0);
    EXPECT_EQ(t.metric("healthgpt_prefix_cache_entries"), 0);
}
