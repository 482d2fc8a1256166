// Every role rule: what each role may do succeeds (and is audited as allowed), and every
// forbidden access throws AccessDenied AND leaves exactly one refused audit row naming the
// caller, the action and the target, while changing nothing else.
#include <functional>

#include "core/sha256.h"
#include "service/consultations.h"
#include "service_test_util.h"

using namespace svctest;

namespace {

const std::string kPlugin(64, 'a');

class ServiceAccess : public ::testing::Test {
protected:
    void SetUp() override {
        store = std::make_unique<Store>(fresh_dir("access"));
        admin = make_user(*store, "admin", "admin");
        p1 = make_user(*store, "patient-1", "patient");
        p2 = make_user(*store, "patient-2", "patient");
        d1 = make_user(*store, "doctor-1", "physician");
        d2 = make_user(*store, "doctor-2", "physician");
        svc = std::make_unique<ConsultationService>(*store);
        c1 = svc->create(p1, "chest pain");
        m1 = svc->add_message(p1, c1, "Is this X-ray normal?");
        a1 = svc->record_answer(p1, c1, m1, "No acute findings.", "healthgpt-m3", kPlugin);
        svc->share(p1, c1, d1.user_id);
    }

    // fn must throw AccessDenied and write exactly one refused audit row for `who`, `action`,
    // `target`; nothing else may change (the rows of every content table are counted).
    void expect_refused(const Principal& who, const std::string& action, const std::string& target,
                        const std::function<void()>& fn) {
        SCOPED_TRACE(who.name + " " + action + " " + target);
        const int64_t audit_before = audit_rows(*store);
        const int64_t content_before = content_rows();
        try {
            fn();
            ADD_FAILURE() << "allowed";
        } catch (const AccessDenied& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find(who.name), std::string::npos) << msg;
            EXPECT_NE(msg.find(action), std::string::npos) << msg;
        }
        EXPECT_EQ(audit_rows(*store), audit_before + 1);
        const AuditEntry e = last_audit(*store);
        EXPECT_FALSE(e.allowed);
        EXPECT_EQ(e.actor, who.name);
        EXPECT_EQ(e.user_id, who.user_id);
        EXPECT_EQ(e.key_id, who.key_id);
        EXPECT_EQ(e.action, action);
        EXPECT_EQ(e.target, target);
        EXPECT_EQ(content_rows(), content_before) << "a refused call changed the store";
    }

    void expect_allowed_audit(const Principal& who, const std::string& action) {
        const AuditEntry e = last_audit(*store);
        EXPECT_TRUE(e.allowed) << action;
        EXPECT_EQ(e.actor, who.name);
        EXPECT_EQ(e.action, action);
    }

    int64_t content_rows() {
        return query_int(*store,
                         "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM api_keys WHERE revoked_at IS NULL) + "
                         "(SELECT count(*) FROM consultations) + (SELECT count(*) FROM consultation_shares) + "
                         "(SELECT count(*) FROM messages) + (SELECT count(*) FROM uploads) + "
                         "(SELECT count(*) FROM answers) + (SELECT count(*) FROM feedback)");
    }

    std::unique_ptr<Store> store;
    std::unique_ptr<ConsultationService> svc;
    Principal admin, p1, p2, d1, d2;
    int64_t c1 = 0, m1 = 0, a1 = 0;
};

const std::vector<uint8_t> kBytes = {1, 2, 3, 4};

}  // namespace

TEST_F(ServiceAccess, PatientOwnsItsConsultations) {
    const ConsultationView v = svc->read(p1, c1);
    expect_allowed_audit(p1, "consultation.read");
    EXPECT_EQ(v.consultation.patient_id, p1.user_id);
    EXPECT_EQ(v.consultation.title, "chest pain");
    EXPECT_EQ(v.consultation.physician_ids, std::vector<int64_t>{d1.user_id});
    ASSERT_EQ(v.messages.size(), 1u);
    EXPECT_EQ(v.messages[0].text, "Is this X-ray normal?");
    ASSERT_EQ(v.answers.size(), 1u);
    EXPECT_EQ(v.answers[0].model, "healthgpt-m3");
    EXPECT_EQ(v.answers[0].plugin_sha256, kPlugin);
    EXPECT_EQ(v.answers[0].question_id, m1);
    ASSERT_EQ(svc->list(p1).size(), 1u);
    EXPECT_TRUE(svc->list(p2).empty()) << "a patient lists only its own";
    const int64_t c2 = svc->create(p2, "headache");
    ASSERT_EQ(svc->list(p2).size(), 1u);
    EXPECT_EQ(svc->list(p2)[0].id, c2);
}

TEST_F(ServiceAccess, PhysicianReadsSharedAndFilesFeedback) {
    EXPECT_EQ(svc->read(d1, c1).consultation.id, c1);
    ASSERT_EQ(svc->list(d1).size(), 1u);
    EXPECT_TRUE(svc->list(d2).empty());
    svc->add_message(d1, c1, "Please come in for a CT.");
    const int64_t f = svc->add_feedback(d1, a1, 2, std::string_view("Small left pneumothorax."), std::nullopt);
    expect_allowed_audit(d1, "feedback.add");
    const auto fb = svc->list_feedback(d1, a1);
    ASSERT_EQ(fb.size(), 1u);
    EXPECT_EQ(fb[0].id, f);
    EXPECT_EQ(fb[0].rating, 2);
    EXPECT_EQ(fb[0].correction, "Small left pneumothorax.");
    EXPECT_FALSE(fb[0].comment.has_value());
    EXPECT_EQ(fb[0].physician_id, d1.user_id);
}

TEST_F(ServiceAccess, AdminManagesButReadsNoContent) {
    svc->share(admin, c1, d2.user_id);  // assignment
    expect_allowed_audit(admin, "consultation.share");
    EXPECT_EQ(svc->read(d2, c1).consultation.physician_ids.size(), 2u);
    const auto rows = AuditService(*store).read(admin);
    EXPECT_FALSE(rows.empty());
    expect_allowed_audit(admin, "audit.read");
}

TEST_F(ServiceAccess, EveryForbiddenAccessIsRefusedAndAudited) {
    const std::string c = "consultation:" + std::to_string(c1);
    const std::string a = "answer:" + std::to_string(a1);
    AuditService audit(*store);
    KeyService keys(*store);
    const std::string some_key = keys.list_keys(admin)[0].key_id;

    // Another patient: nothing of patient-1's.
    expect_refused(p2, "consultation.read", c, [&] { svc->read(p2, c1); });
    expect_refused(p2, "message.add", c, [&] { svc->add_message(p2, c1, "hi"); });
    expect_refused(p2, "upload.check", c, [&] { svc->add_upload(p2, c1, kBytes, "x.png", "{}"); });
    expect_refused(p2, "answer.add", c, [&] { svc->record_answer(p2, c1, m1, "x", "m", kPlugin); });
    expect_refused(p2, "consultation.share", c, [&] { svc->share(p2, c1, d2.user_id); });
    // The owner patient: no feedback (a physician's review), no keys, no audit log.
    expect_refused(p1, "feedback.add", a, [&] { svc->add_feedback(p1, a1, 5, std::nullopt, std::nullopt); });
    expect_refused(p1, "feedback.read", a, [&] { svc->list_feedback(p1, a1); });
    expect_refused(p1, "audit.read", "audit_log", [&] { audit.read(p1); });
    expect_refused(p1, "keys.add", "user:x", [&] { keys.add_key(p1, "x", "admin"); });
    expect_refused(p1, "keys.list", "api_keys", [&] { keys.list_keys(p1); });
    expect_refused(p1, "keys.revoke", "key:" + some_key, [&] { keys.revoke_key(p1, some_key); });
    // An id that does not exist is refused like one that is not yours.
    expect_refused(p1, "consultation.read", "consultation:999", [&] { svc->read(p1, 999); });
    expect_refused(p1, "message.add", "consultation:999", [&] { svc->add_message(p1, 999, "hi"); });
    // A physician it is not shared with.
    expect_refused(d2, "consultation.read", c, [&] { svc->read(d2, c1); });
    expect_refused(d2, "message.add", c, [&] { svc->add_message(d2, c1, "hi"); });
    expect_refused(d2, "upload.check", c, [&] { svc->add_upload(d2, c1, kBytes, "x.png", "{}"); });
    expect_refused(d2, "answer.add", c, [&] { svc->record_answer(d2, c1, m1, "x", "m", kPlugin); });
    expect_refused(d2, "feedback.add", a, [&] { svc->add_feedback(d2, a1, 1, std::nullopt, std::nullopt); });
    expect_refused(d2, "feedback.read", a, [&] { svc->list_feedback(d2, a1); });
    expect_refused(d2, "feedback.add", "answer:999", [&] { svc->add_feedback(d2, 999, 1, std::nullopt, std::nullopt); });
    // The shared physician: no new consultations, no sharing onwards, no keys, no audit log.
    expect_refused(d1, "consultation.create", "consultations", [&] { svc->create(d1, "mine"); });
    expect_refused(d1, "consultation.share", c, [&] { svc->share(d1, c1, d2.user_id); });
    expect_refused(d1, "audit.read", "audit_log", [&] { audit.read(d1); });
    expect_refused(d1, "keys.list", "api_keys", [&] { keys.list_keys(d1); });
    // The admin: no consultation content, no consultations of its own, no feedback.
    expect_refused(admin, "consultation.read", c, [&] { svc->read(admin, c1); });
    expect_refused(admin, "consultation.list", "consultations", [&] { svc->list(admin); });
    expect_refused(admin, "consultation.create", "consultations", [&] { svc->create(admin, "x"); });
    expect_refused(admin, "message.add", c, [&] { svc->add_message(admin, c1, "x"); });
    expect_refused(admin, "answer.add", c, [&] { svc->record_answer(admin, c1, m1, "x", "m", kPlugin); });
    expect_refused(admin, "feedback.add", a, [&] { svc->add_feedback(admin, a1, 3, std::nullopt, std::nullopt); });
    expect_refused(admin, "feedback.read", a, [&] { svc->list_feedback(admin, a1); });
    expect_refused(admin, "consultation.share", "consultation:999", [&] { svc->share(admin, 999, d2.user_id); });
    // The local operator (CLI) is an admin without a user: the same limits.
    const Principal op = Principal::local_operator();
    expect_refused(op, "consultation.read", c, [&] { svc->read(op, c1); });
    expect_refused(op, "consultation.create", "consultations", [&] { svc->create(op, "x"); });
    EXPECT_FALSE(fs::exists(store->data_dir() / "uploads")) << "a refused upload wrote its bytes";
}

TEST_F(ServiceAccess, UploadsAreStoredContentAddressed) {
    const std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', 0, 1, 2, 3};
    const Upload u = svc->add_upload(p1, c1, png, "chest.png", R"({"modality":"CR"})");
    expect_allowed_audit(p1, "upload.add");
    EXPECT_EQ(u.sha256, hg::to_hex(hg::sha256(png)));
    EXPECT_EQ(hgtest::read_file(store->data_dir() / u.path), png);
    const Upload again = svc->add_upload(d1, c1, png, "same.png", "{}");
    EXPECT_EQ(again.path, u.path);
    EXPECT_NE(again.id, u.id);
    const auto v = svc->read(d1, c1);
    ASSERT_EQ(v.uploads.size(), 2u);
    EXPECT_EQ(v.uploads[0].metadata_json, R"({"modality":"CR"})");
    EXPECT_EQ(v.uploads[1].uploader_id, d1.user_id);
    EXPECT_FALSE(fs::exists(store->data_dir() / "uploads" / "xx"));
}
