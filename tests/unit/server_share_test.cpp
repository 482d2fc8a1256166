// Sharing a consultation and reading feedback back over HTTP (src/server/routes_share.cpp) on an
// in-process server over the demo model and a real SQLite store: who may share (the owner patient,
// an admin; not another patient, not a physician), whom with (physicians only), the physician list
// (names only, no secrets), and who reads the ratings and corrections filed on an answer (the
// physicians it is shared with; patients and admins are refused). Every refusal leaves an audit row.
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "runtime/demo_model.h"
#include "runtime/pipeline.h"
#include "server/server.h"
#include "service/consultations.h"
#include "service_test_util.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace hg::server;
using hg::service::Principal;

std::shared_ptr<const hg::Model> share_demo_model() {
    static std::shared_ptr<const hg::Model> m = [] {
        const fs::path dir = hgtest::scratch_dir() / ("share-demo-model-" + std::to_string(::getpid()));
        if (!fs::exists(dir / "plugins" / "com.gguf")) hg::write_demo_model(dir);
        return hg::Model::load(dir);
    }();
    return m;
}

struct ShareFixture {
    fs::path dir;
    std::unique_ptr<hg::service::Store> store;  // the test's own connection to the same database
    std::string patient, other_patient, physician, colleague, admin;      // keys
    Principal patient_p, other_p, physician_p, colleague_p, admin_p;
    int64_t cid = 0, answer_id = 0;  // the patient's consultation with one model answer
    std::unique_ptr<HttpServer> server;

    ShareFixture() {
        dir = svctest::fresh_dir("share");
        store = std::make_unique<hg::service::Store>(dir);
        hg::service::KeyService keys(*store);
        const auto op = Principal::local_operator();
        auto make = [&](const char* name, const char* role, std::string& key, Principal& p) {
            key = keys.add_key(op, name, role).key;
            p = keys.authenticate(key);
        };
        make("pat-share", "patient", patient, patient_p);
        make("pat-other", "patient", other_patient, other_p);
        make("Dr Zhang", "physician", physician, physician_p);
        make("Dr Abebe", "physician", colleague, colleague_p);
        make("adm-share", "admin", admin, admin_p);
        hg::service::ConsultationService cs(*store);
        cid = cs.create(patient_p, "knee");
        const int64_t q = cs.add_message(patient_p, cid, "Is the knee normal?");
        answer_id = cs.record_answer(patient_p, cid, q, "It looks normal.", "demo", std::string(64, 'a'));
        ServerOptions o;
        o.data_dir = dir;
        o.port = 0;
        o.log_requests = false;
        server = std::make_unique<HttpServer>(share_demo_model(), o);
        server->bind();
        server->start();
    }
    ~ShareFixture() { server->stop(); }

    httplib::Result get(const std::string& path, const std::string& key) const {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(10, 0);
        return c.Get(path.c_str(), {{"Authorization", "Bearer " + key}});
    }
    httplib::Result post(const std::string& path, const std::string& body, const std::string& key) const {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(10, 0);
        return c.Post(path.c_str(), {{"Authorization", "Bearer " + key}}, body, "application/json");
    }
    httplib::Result share(int64_t consultation, const json& body, const std::string& key) const {
        return post("/v1/consultations/" + std::to_string(consultation) + "/shares", body.dump(), key);
    }
    int64_t shares() const { return svctest::query_int(*store, "SELECT count(*) FROM consultation_shares"); }
};

TEST(ServerShare, OwnerPatientSharesByIdAndByNameAndItIsAudited) {
    ShareFixture f;
    auto r = f.share(f.cid, {{"physician_id", f.physician_p.user_id}}, f.patient);
    ASSERT_EQ(r->status, 200) << r->body;
    json j = json::parse(r->body);
    EXPECT_EQ(j["consultation_id"], f.cid);
    EXPECT_EQ(j["physician_ids"], json::array({f.physician_p.user_id}));
    EXPECT_EQ(j["physicians"][0]["name"], "Dr Zhang");
    auto a = svctest::last_audit(*f.store);
    EXPECT_EQ(a.action, "consultation.share");
    EXPECT_TRUE(a.allowed);
    EXPECT_EQ(a.user_id, f.patient_p.user_id);
    EXPECT_EQ(a.target, "consultation:" + std::to_string(f.cid));
    EXPECT_EQ(a.detail, "with user:" + std::to_string(f.physician_p.user_id));

    // by name, resolved on the server; the answer lists both in order of sharing
    r = f.share(f.cid, {{"physician", "Dr Abebe"}}, f.patient);
    ASSERT_EQ(r->status, 200) << r->body;
    j = json::parse(r->body);
    EXPECT_EQ(j["physician_ids"], json::array({f.physician_p.user_id, f.colleague_p.user_id}));
    EXPECT_EQ(f.shares(), 2);

    // the physician now sees it
    r = f.get("/v1/consultations/" + std::to_string(f.cid), f.physician);
    EXPECT_EQ(r->status, 200) << r->body;

    // sharing again changes nothing and says so in the audit row
    r = f.share(f.cid, {{"physician_id", f.physician_p.user_id}}, f.patient);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(f.shares(), 2);
    EXPECT_NE(svctest::last_audit(*f.store).detail.find("already shared"), std::string::npos);
}

TEST(ServerShare, AdminMayAssignButGetsNoContent) {
    ShareFixture f;
    const auto r = f.share(f.cid, {{"physician_id", f.physician_p.user_id}}, f.admin);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(r->body.find("knee"), std::string::npos);  // the title is content: not in the answer
    EXPECT_EQ(f.shares(), 1);
    EXPECT_EQ(svctest::last_audit(*f.store).user_id, f.admin_p.user_id);
}

TEST(ServerShare, OthersAreRefusedAndAudited) {
    ShareFixture f;
    const json to_doc = {{"physician_id", f.physician_p.user_id}};
    // another patient: 403, audited as a refusal, nothing shared
    auto r = f.share(f.cid, to_doc, f.other_patient);
    EXPECT_EQ(r->status, 403) << r->body;
    auto a = svctest::last_audit(*f.store);
    EXPECT_EQ(a.action, "consultation.share");
    EXPECT_FALSE(a.allowed);
    EXPECT_EQ(a.user_id, f.other_p.user_id);
    // a physician (even one it will be shared with) may not share
    ASSERT_EQ(f.share(f.cid, to_doc, f.patient)->status, 200);
    r = f.share(f.cid, {{"physician_id", f.colleague_p.user_id}}, f.physician);
    EXPECT_EQ(r->status, 403) << r->body;
    a = svctest::last_audit(*f.store);
    EXPECT_FALSE(a.allowed);
    EXPECT_EQ(a.user_id, f.physician_p.user_id);
    EXPECT_EQ(f.shares(), 1);
    // an unknown consultation is refused exactly like someone else's (refusals do not tell which
    // ids exist; service/access.h): 403 and audited, for a patient and for an admin
    for (const std::string* key : {&f.patient, &f.admin}) {
        r = f.share(f.cid + 1000, to_doc, *key);
        EXPECT_EQ(r->status, 403) << r->body;
        a = svctest::last_audit(*f.store);
        EXPECT_FALSE(a.allowed);
        EXPECT_EQ(a.target, "consultation:" + std::to_string(f.cid + 1000));
    }
    // no key: 401
    httplib::Client c("127.0.0.1", f.server->port());
    EXPECT_EQ(c.Post(("/v1/consultations/" + std::to_string(f.cid) + "/shares").c_str(), to_doc.dump(),
                     "application/json")->status,
              401);
}

TEST(ServerShare, TargetMustBeAPhysicianAndTheRequestWellFormed) {
    ShareFixture f;
    const std::string path = "/v1/consultations/" + std::to_string(f.cid) + "/shares";
    struct Case {
        std::string body, why;
    };
    const Case cases[] = {
        {json{{"physician_id", f.other_p.user_id}}.dump(), "not a physician"},  // a patient
        {json{{"physician_id", f.admin_p.user_id}}.dump(), "not a physician"},  // an admin
        {json{{"physician_id", 999999}}.dump(), "not a physician"},             // nobody
        {json{{"physician", "pat-other"}}.dump(), "no physician of that name"},  // a patient's name
        {json{{"physician", "Dr Nobody"}}.dump(), "no physician of that name"},
        {R"({"physician_id": 0})", "positive integer"},
        {R"({"physician_id": 1.5})", "positive integer"},
        {R"({"physician_id": "3"})", "positive integer"},
        {R"({"physician_id": 1e400})", "malformed JSON"},
        {R"({"physician_id": 18446744073709551615})", "positive integer"},
        {R"({"physician": ""})", "physician's name"},
        {R"({})", "exactly one"},
        {json{{"physician_id", f.physician_p.user_id}, {"physician", "Dr Zhang"}}.dump(), "exactly one"},
        {"[1]", "malformed JSON"},
        {"{", "malformed JSON"},
    };
    for (const auto& c : cases) {
        const auto r = f.post(path, c.body, f.patient);
        ASSERT_TRUE(r) << c.body;
        EXPECT_EQ(r->status, 400) << c.body << " -> " << r->body;
        EXPECT_NE(r->body.find(c.why), std::string::npos) << c.body << " -> " << r->body;
    }
    EXPECT_EQ(f.post("/v1/consultations/abc/shares", R"({"physician_id": 3})", f.patient)->status, 400);
    EXPECT_EQ(f.shares(), 0);  // nothing half-done
}

TEST(ServerShare, PhysicianListIsNamesOnly) {
    ShareFixture f;
    for (const std::string* key : {&f.patient, &f.physician, &f.admin}) {
        const auto r = f.get("/v1/physicians", *key);
        ASSERT_EQ(r->status, 200) << r->body;
        const json j = json::parse(r->body);
        ASSERT_EQ(j["data"].size(), 2u);
        EXPECT_EQ(j["data"][0]["name"], "Dr Abebe");  // by name
        EXPECT_EQ(j["data"][0]["id"], f.colleague_p.user_id);
        EXPECT_EQ(j["data"][1]["name"], "Dr Zhang");
        for (const auto& e : j["data"]) {
            std::vector<std::string> keys_of;
            for (const auto& [k, v] : e.items()) keys_of.push_back(k);
            EXPECT_EQ(keys_of, (std::vector<std::string>{"id", "name", "object"}));
        }
        // no patient, no admin, no key material of anyone
        EXPECT_EQ(r->body.find("pat-"), std::string::npos);
        EXPECT_EQ(r->body.find("adm-"), std::string::npos);
        EXPECT_EQ(r->body.find("hgk_"), std::string::npos);
        EXPECT_EQ(r->body.find(f.physician_p.key_id), std::string::npos);
        EXPECT_EQ(svctest::last_audit(*f.store).action, "physician.list");
    }
    httplib::Client c("127.0.0.1", f.server->port());
    EXPECT_EQ(c.Get("/v1/physicians")->status, 401);
}

TEST(ServerShare, FeedbackIsReadBackByTheSharedPhysiciansOnly) {
    ShareFixture f;
    const std::string path = "/v1/answers/" + std::to_string(f.answer_id) + "/feedback";
    // not shared yet: the physician is refused
    EXPECT_EQ(f.get(path, f.physician)->status, 403);
    ASSERT_EQ(f.share(f.cid, {{"physician_id", f.physician_p.user_id}}, f.patient)->status, 200);
    ASSERT_EQ(f.share(f.cid, {{"physician_id", f.colleague_p.user_id}}, f.patient)->status, 200);
    auto r = f.get(path, f.physician);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(json::parse(r->body)["data"].size(), 0u);

    // a correction by one, a rating by the other (through the feedback endpoint): both read both
    const json fb1 = {{"answer_id", f.answer_id}, {"correction", "Effusion in the suprapatellar recess."}};
    const json fb2 = {{"answer_id", f.answer_id}, {"rating", 2}, {"comment", "agree with Dr Zhang"}};
    ASSERT_EQ(f.post("/v1/feedback", fb1.dump(), f.physician)->status, 201);
    ASSERT_EQ(f.post("/v1/feedback", fb2.dump(), f.colleague)->status, 201);
    for (const std::string* key : {&f.physician, &f.colleague}) {
        r = f.get(path, *key);
        ASSERT_EQ(r->status, 200) << r->body;
        const json d = json::parse(r->body)["data"];
        ASSERT_EQ(d.size(), 2u);
        EXPECT_EQ(d[0]["physician_id"], f.physician_p.user_id);
        EXPECT_EQ(d[0]["correction"], "Effusion in the suprapatellar recess.");
        EXPECT_TRUE(d[0]["rating"].is_null());
        EXPECT_EQ(d[1]["physician_id"], f.colleague_p.user_id);
        EXPECT_EQ(d[1]["rating"], 2);
        EXPECT_EQ(d[1]["comment"], "agree with Dr Zhang");
        EXPECT_EQ(svctest::last_audit(*f.store).action, "feedback.read");
    }
    // the patient (the owner), another patient and the admin are refused and audited; the body
    // carries none of the correction
    for (const std::string* key : {&f.patient, &f.other_patient, &f.admin}) {
        r = f.get(path, *key);
        EXPECT_EQ(r->status, 403) << r->body;
        EXPECT_EQ(r->body.find("Effusion"), std::string::npos);
        const auto a = svctest::last_audit(*f.store);
        EXPECT_EQ(a.action, "feedback.read");
        EXPECT_FALSE(a.allowed);
    }
    // an unknown answer: refused like one not yours
    EXPECT_EQ(f.get("/v1/answers/" + std::to_string(f.answer_id + 100) + "/feedback", f.physician)->status, 403);
    EXPECT_EQ(f.get("/v1/answers/x/feedback", f.physician)->status, 400);
}

}  // namespace
