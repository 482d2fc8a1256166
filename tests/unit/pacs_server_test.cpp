// The server's PACS routes (server/routes_pacs.cpp) in-process against a real Orthanc: started and
// loaded by tests/pacs/pacs_test.py, which sets HG_ORTHANC_URL etc. (see pacs_orthanc_test.cpp);
// without it every test skips. A physician pulls a series into a consultation shared with them and
// asks about it; other roles, unknown PACS names and a PACS that refuses our credentials are
// refused with nothing stored, and no secret reaches a response, the audit log or the log.
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <fstream>

#include "pacs/dicomweb.h"
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

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

std::shared_ptr<const hg::Model> demo_model() {
    static std::shared_ptr<const hg::Model> m = [] {
        const fs::path dir = hgtest::scratch_dir() / "pacs-server-demo-model";
        if (!fs::exists(dir / "plugins" / "com.gguf")) hg::write_demo_model(dir);
        return hg::Model::load(dir);
    }();
    return m;
}

const char* kWrongInline = "inline-wrong-pw-4711";

fs::path write_config(const fs::path& dir) {
    json c = {{"pacs", json::array({{{"name", "orthanc"}, {"url", env("HG_ORTHANC_URL")}, {"timeout_s", 10}}})}};
    if (!env("HG_ORTHANC_AUTH_URL").empty()) {
        c["pacs"].push_back({{"name", "locked"},
                             {"url", env("HG_ORTHANC_AUTH_URL")},
                             {"auth", {{"type", "basic"}, {"user", env("HG_ORTHANC_AUTH_USER")},
                                       {"password_file", env("HG_ORTHANC_AUTH_PASSWORD_FILE")}}}});
        c["pacs"].push_back({{"name", "locked-wrong"},
                             {"url", env("HG_ORTHANC_AUTH_URL")},
                             {"attempts", 1},
                             {"auth", {{"type", "basic"}, {"user", env("HG_ORTHANC_AUTH_USER")}, {"password", kWrongInline}}}});
    }
    const fs::path p = dir / "pacs.json";
    fs::create_directories(dir);
    std::ofstream(p) << c.dump(1);
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
    return p;
}

struct Fixture {
    fs::path dir;
    std::unique_ptr<hg::service::Store> store;
    std::string patient, physician, admin;
    Principal patient_p, physician_p;
    int64_t cid = 0;
    std::unique_ptr<HttpServer> server;

    Fixture() {
        dir = svctest::fresh_dir("pacs-http");
        store = std::make_unique<hg::service::Store>(dir);
        hg::service::KeyService keys(*store);
        const auto op = Principal::local_operator();
        patient = keys.add_key(op, "pat", "patient").key;
        physician = keys.add_key(op, "doc", "physician").key;
        admin = keys.add_key(op, "adm", "admin").key;
        patient_p = keys.authenticate(patient);
        physician_p = keys.authenticate(physician);
        hg::service::ConsultationService cs(*store);
        cid = cs.create(patient_p, "CT review");
        cs.share(patient_p, cid, physician_p.user_id);
        ServerOptions o;
        o.data_dir = dir;
        o.port = 0;
        o.log_requests = false;
        o.pacs_config = write_config(dir / "settings");
        server = std::make_unique<HttpServer>(demo_model(), o);
        server->bind();
        server->start();
    }
    ~Fixture() { server->stop(); }

    httplib::Result post(const std::string& path, const json& body, const std::string& key) const {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(30, 0);
        return c.Post(path.c_str(), {{"Authorization", "Bearer " + key}}, body.dump(), "application/json");
    }
    httplib::Result get(const std::string& path, const std::string& key) const {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(30, 0);
        return c.Get(path.c_str(), {{"Authorization", "Bearer " + key}});
    }
    int64_t count(const char* sql) const { return svctest::query_int(*store, sql); }
    std::string all_audit_text() const {
        return svctest::query_text(*store, "SELECT group_concat(action || ' ' || target || ' ' || detail, '\n') FROM audit_log");
    }
};

json ct_request(int64_t cid, const std::string& pacs = "orthanc") {
    return {{"pacs", pacs}, {"study_uid", env("HG_PACS_CT_STUDY")}, {"series_uid", env("HG_PACS_CT_SERIES")},
            {"consultation_id", cid}};
}

#define NEED_ORTHANC() \
    if (env("HG_ORTHANC_URL").empty()) GTEST_SKIP() << "HG_ORTHANC_URL not set: run through tests/pacs/pacs_test.py (ctest -L pacs)";

TEST(PacsServer, PhysicianPullsASeriesAndAsksAboutIt) {
    NEED_ORTHANC();
    Fixture f;
    auto r = f.get("/v1/pacs", f.physician);
    ASSERT_EQ(r->status, 200) << r->body;
    std::set<std::string> names;
    const json listed = json::parse(r->body);
    for (const auto& e : listed["data"]) names.insert(e["name"].get<std::string>());
    EXPECT_TRUE(names.count("orthanc")) << r->body;  // names only
    EXPECT_EQ(r->body.find("http://"), std::string::npos);
    EXPECT_EQ(r->body.find(kWrongInline), std::string::npos);

    r = f.get("/v1/pacs/orthanc/studies?PatientID=" + env("HG_PACS_CT_PATIENT"), f.physician);
    ASSERT_EQ(r->status, 200) << r->body;
    json studies = json::parse(r->body)["data"];
    ASSERT_EQ(studies.size(), 1u);
    EXPECT_EQ(studies[0]["study_uid"], env("HG_PACS_CT_STUDY"));
    r = f.get("/v1/pacs/orthanc/studies/" + env("HG_PACS_CT_STUDY") + "/series", f.physician);
    ASSERT_EQ(r->status, 200) << r->body;

    r = f.post("/v1/uploads/from-pacs", ct_request(f.cid), f.physician);
    ASSERT_EQ(r->status, 201) << r->body;
    const json ups = json::parse(r->body)["data"];
    ASSERT_EQ(int(ups.size()), std::atoi(env("HG_PACS_CT_COUNT").c_str()));
    EXPECT_EQ(ups[0]["consultation_id"], f.cid);
    EXPECT_EQ(ups[0]["image"]["modality"], "CT");
    EXPECT_EQ(ups[0]["image"]["series_uid"], env("HG_PACS_CT_SERIES"));
    EXPECT_EQ(f.count("SELECT count(*) FROM uploads"), int64_t(ups.size()));
    EXPECT_EQ(f.count("SELECT count(*) FROM audit_log WHERE action = 'pacs.retrieve' AND allowed = 1"), 1);

    // a question about the pulled series, through the chat route
    const std::string img = "upload:" + std::to_string(ups[1]["id"].get<int64_t>());
    const json chat = {{"max_tokens", 8},
                       {"consultation_id", f.cid},
                       {"messages", json::array({{{"role", "user"},
                                                  {"content", json::array({{{"type", "text"}, {"text", "What is shown?"}},
                                                                           {{"type", "image_url"}, {"image_url", {{"url", img}}}}})}}})}};
    r = f.post("/v1/chat/completions", chat, f.physician);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_FALSE(json::parse(r->body)["choices"][0]["message"]["content"].get<std::string>().empty());
    EXPECT_EQ(f.count("SELECT count(*) FROM answers"), 1);

    // the stored answer back into the study as an SR, referencing the series
    const int64_t aid = f.count("SELECT id FROM answers");
    const json back = {{"consultation_id", f.cid}, {"answer_id", aid}, {"study_uid", env("HG_PACS_CT_STUDY")},
                       {"series_uid", env("HG_PACS_CT_SERIES")}};
    EXPECT_EQ(f.post("/v1/pacs/orthanc/results", back, f.patient)->status, 403);
    json wrong = back;
    wrong["answer_id"] = aid + 100;
    EXPECT_EQ(f.post("/v1/pacs/orthanc/results", wrong, f.physician)->status, 400);
    r = f.post("/v1/pacs/orthanc/results", back, f.physician);
    ASSERT_EQ(r->status, 201) << r->body;
    const std::string sr_series = json::parse(r->body)["sr_series_uid"];
    hg::pacs::PacsEndpoint ep;
    ep.url = env("HG_ORTHANC_URL");
    hg::pacs::DicomWebClient pacs(ep);
    const auto srs = pacs.all_instances(env("HG_PACS_CT_STUDY"), sr_series);
    ASSERT_EQ(srs.size(), 1u);
    EXPECT_EQ(srs[0].sop_instance_uid, json::parse(r->body)["sr_sop_instance_uid"]);
    EXPECT_EQ(srs[0].sop_class_uid, "1.2.840.10008.5.1.4.1.1.88.11");
    EXPECT_EQ(f.count("SELECT count(*) FROM audit_log WHERE action = 'pacs.store' AND allowed = 1"), 1);

    // a generated image (ct2mri of a pulled slice) back beside the SR, as a Secondary Capture in a
    // new series of the same study; an upload that was not generated from this series is refused
    r = f.post("/v1/images/generations", {{"task", "ct2mri"}, {"upload_id", ups[1]["id"]}}, f.physician);
    ASSERT_EQ(r->status, 200) << r->body;
    const int64_t gen_id = json::parse(r->body)["data"][0]["upload_id"];
    json with_sc = back;
    with_sc["image_upload_ids"] = {ups[1]["id"]};  // the source itself: not a generated image
    EXPECT_EQ(f.post("/v1/pacs/orthanc/results", with_sc, f.physician)->status, 400);
    with_sc["image_upload_ids"] = {gen_id};
    r = f.post("/v1/pacs/orthanc/results", with_sc, f.physician);
    ASSERT_EQ(r->status, 201) << r->body;
    const json sent = json::parse(r->body);
    ASSERT_EQ(sent["sc_sop_instance_uids"].size(), 1u) << r->body;
    const auto scs = pacs.all_instances(env("HG_PACS_CT_STUDY"), sent["sc_series_uid"].get<std::string>());
    ASSERT_EQ(scs.size(), 1u);
    EXPECT_EQ(scs[0].sop_instance_uid, sent["sc_sop_instance_uids"][0]);
    EXPECT_EQ(scs[0].sop_class_uid, "1.2.840.10008.5.1.4.1.1.7");  // Secondary Capture Image Storage
    EXPECT_NE(sent["sc_series_uid"], sent["sr_series_uid"]);
    EXPECT_EQ(f.count("SELECT count(*) FROM audit_log WHERE action = 'pacs.store' AND allowed = 1"), 2);
}

TEST(PacsServer, OtherRolesUnknownNamesAndBadInputAreRefusedStoringNothing) {
    NEED_ORTHANC();
    Fixture f;
    EXPECT_EQ(f.post("/v1/uploads/from-pacs", ct_request(f.cid), f.patient)->status, 403);
    EXPECT_EQ(f.post("/v1/uploads/from-pacs", ct_request(f.cid), f.admin)->status, 403);
    EXPECT_EQ(f.get("/v1/pacs/orthanc/studies", f.patient)->status, 403);
    EXPECT_EQ(f.get("/v1/pacs", f.patient)->status, 403);
    EXPECT_EQ(f.post("/v1/uploads/from-pacs", ct_request(f.cid, "nowhere"), f.physician)->status, 403);
    EXPECT_EQ(f.count("SELECT count(*) FROM audit_log WHERE action LIKE 'pacs.%' AND allowed = 0"), 5);
    // a consultation not shared with the physician
    const int64_t other = hg::service::ConsultationService(*f.store).create(f.patient_p, "not shared");
    EXPECT_EQ(f.post("/v1/uploads/from-pacs", ct_request(other), f.physician)->status, 403);
    for (const json& bad : {json::array(), json{{"pacs", "orthanc"}}, json{{"pacs", 1}, {"study_uid", "1"}, {"series_uid", "2"}},
                            json{{"pacs", "orthanc"}, {"study_uid", "1.2"}, {"series_uid", "1.3"}},
                            json{{"pacs", "orthanc"}, {"study_uid", "1.2/../x"}, {"series_uid", "1.3"}, {"consultation_id", f.cid}}}) {
        auto r = f.post("/v1/uploads/from-pacs", bad, f.physician);
        EXPECT_EQ(r->status, 400) << bad.dump() << " " << r->body;
    }
    auto r = f.post("/v1/uploads/from-pacs",
                    {{"pacs", "orthanc"}, {"study_uid", env("HG_PACS_CT_STUDY")}, {"series_uid", "1.2.3.999"}, {"consultation_id", f.cid}},
                    f.physician);
    EXPECT_EQ(r->status, 404) << r->body;
    EXPECT_EQ(f.count("SELECT count(*) FROM uploads"), 0);
}

TEST(PacsServer, APacsThatRefusesOurCredentialsIsA502WithoutTheSecret) {
    NEED_ORTHANC();
    if (env("HG_ORTHANC_AUTH_URL").empty()) GTEST_SKIP() << "HG_ORTHANC_AUTH_URL not set";
    Fixture f;
    auto r = f.post("/v1/uploads/from-pacs", ct_request(f.cid, "locked-wrong"), f.physician);
    EXPECT_EQ(r->status, 502) << r->body;
    EXPECT_NE(r->body.find("HTTP 401"), std::string::npos) << r->body;
    EXPECT_EQ(r->body.find(kWrongInline), std::string::npos);
    EXPECT_EQ(f.count("SELECT count(*) FROM uploads"), 0);
    // the right credentials reach the (empty) authenticated Orthanc: the study is not there
    r = f.post("/v1/uploads/from-pacs", ct_request(f.cid, "locked"), f.physician);
    EXPECT_EQ(r->status, 404) << r->body;
    const std::string audit = f.all_audit_text();
    EXPECT_EQ(audit.find(kWrongInline), std::string::npos);
    EXPECT_EQ(audit.find(hg::pacs::read_secret_file(env("HG_ORTHANC_AUTH_PASSWORD_FILE"))), std::string::npos);
}

TEST(PacsServer, ConfigWithAnInlineSecretMustBePrivate) {
    const fs::path dir = svctest::fresh_dir("pacs-config");
    fs::create_directories(dir);
    const fs::path p = dir / "pacs.json";
    std::ofstream(p) << R"({"pacs": [{"name": "x", "url": "http://127.0.0.1:1/dicom-web",
                             "auth": {"type": "basic", "user": "u", "password": "topsecret-99"}}]})";
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
    ServerOptions o;
    o.data_dir = dir / "data";
    o.port = 0;
    o.log_requests = false;
    o.pacs_config = p;
    try {
        HttpServer s(demo_model(), o);
        ADD_FAILURE() << "a group-readable config with an inline password was accepted";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("chmod 600"), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find("topsecret"), std::string::npos) << e.what();
    }
    std::ofstream(p) << R"({"pacs": [{"name": "bad name!", "url": "http://127.0.0.1:1/"}]})";
    EXPECT_THROW(HttpServer(demo_model(), o), hg::Error);
    std::ofstream(p) << R"({"pacs": [{"name": "x", "url": "http://u:pw@127.0.0.1:1/"}]})";
    EXPECT_THROW(HttpServer(demo_model(), o), hg::Error);
}

}  // namespace
