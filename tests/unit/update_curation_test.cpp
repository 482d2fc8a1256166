// Curation over a real store: corrections become scrubbed candidates; approval needs someone other
// than the author (a second physician, or an admin when configured); duplicates are merged and
// contradictions flagged and never exported; every refusal is audited; the export is the LLaVA
// JSON the trainer reads, with images by content hash.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "core/sha256.h"
#include "service/consultations.h"
#include "service_test_util.h"
#include "train/dataset.h"
#include "update/curation.h"

namespace {

using namespace svctest;
using namespace hg::update;
using json = nlohmann::json;

struct World {
    fs::path dir = fresh_dir("curation");
    Store store{dir};
    ConsultationService svc{store};
    Principal patient = make_user(store, "pat", "patient");
    Principal patient2 = make_user(store, "pat2", "patient");
    Principal doc_a = make_user(store, "doc-a", "physician");
    Principal doc_b = make_user(store, "doc-b", "physician");
    Principal admin = make_user(store, "adm", "admin");

    // A consultation of `who` with an image (bytes) and a question, answered; returns the answer id.
    int64_t answered(const Principal& who, const std::string& image_bytes, const std::string& question) {
        const int64_t c = svc.create(who, "c");
        svc.share(who, c, doc_a.user_id);
        svc.share(who, c, doc_b.user_id);
        const std::vector<uint8_t> b(image_bytes.begin(), image_bytes.end());
        svc.add_upload(who, c, b, "x.png", "{}");
        const int64_t m = svc.add_message(who, c, question);
        return svc.record_answer(who, c, m, "model answer", "demo", std::string(64, 'a'));
    }
};

Candidate by_feedback(CurationService& cur, const Principal& p, int64_t fid) {
    for (const Candidate& c : cur.list(p))
        if (c.feedback_id == fid) return c;
    ADD_FAILURE() << "no candidate for feedback " << fid;
    return {};
}

TEST(UpdateCuration, CorrectionsBecomeScrubbedCandidatesApprovedBySomeoneElse) {
    World w;
    CurationService cur(w.store);
    const int64_t a1 = w.answered(w.patient, "image-one", "Is there a fracture? Mr Smith, MRN: 1234567");
    const int64_t f1 = w.svc.add_feedback(w.doc_a, a1, 2, "Yes, a rib fracture seen on 2024-03-15.", std::nullopt);
    w.svc.add_feedback(w.doc_b, a1, 4, std::nullopt, "rating only");  // no correction: no candidate
    EXPECT_EQ(cur.sync(w.doc_b), 1);
    EXPECT_EQ(cur.sync(w.doc_b), 0) << "sync is idempotent";

    const Candidate c = by_feedback(cur, w.doc_b, f1);
    EXPECT_EQ(c.status, "candidate");
    EXPECT_EQ(c.question, "Is there a fracture? Mr [NAME], MRN: [ID]");
    EXPECT_EQ(c.answer, "Yes, a rib fracture seen on [DATE].");
    EXPECT_EQ(c.image_sha256, hg::to_hex(hg::sha256(std::string("image-one"))));
    EXPECT_EQ(c.author_id, w.doc_a.user_id);
    EXPECT_EQ(c.patient_id, w.patient.user_id);

    // The author cannot approve their own correction: refused and audited, nothing changed.
    const int64_t before = audit_rows(w.store);
    EXPECT_THROW(cur.approve(w.doc_a, c.id), AccessDenied);
    EXPECT_EQ(audit_rows(w.store), before + 1);
    AuditEntry e = last_audit(w.store);
    EXPECT_EQ(e.action, "curation.approve");
    EXPECT_FALSE(e.allowed);
    EXPECT_EQ(e.actor, "doc-a");
    EXPECT_EQ(by_feedback(cur, w.doc_b, f1).status, "candidate");

    // Patients never review; an unknown id is refused like a forbidden one.
    EXPECT_THROW(cur.list(w.patient), AccessDenied);
    EXPECT_THROW(cur.sync(w.patient), AccessDenied);
    EXPECT_THROW(cur.approve(w.patient, c.id), AccessDenied);
    EXPECT_THROW(cur.approve(w.doc_b, 999), AccessDenied);
    EXPECT_EQ(last_audit(w.store).target, "candidate:999");
    // Physicians do not export; admins do.
    EXPECT_THROW(cur.export_dataset(w.doc_b, w.dir / "x.json"), AccessDenied);
    EXPECT_EQ(last_audit(w.store).action, "dataset.export");
    EXPECT_FALSE(fs::exists(w.dir / "x.json"));

    const Candidate ok = cur.approve(w.doc_b, c.id);
    EXPECT_EQ(ok.status, "approved");
    EXPECT_EQ(ok.reviewer_id, w.doc_b.user_id);
    e = last_audit(w.store);
    EXPECT_EQ(e.action, "curation.approve");
    EXPECT_TRUE(e.allowed);
    EXPECT_THROW(cur.approve(w.doc_b, c.id), BadInput) << "approving twice";
}

TEST(UpdateCuration, AdminApprovalIsConfigurable) {
    World w;
    const int64_t a1 = w.answered(w.patient, "img", "Which organ?");
    w.svc.add_feedback(w.doc_a, a1, std::nullopt, "liver", std::nullopt);
    CurationService strict(w.store, CurationOptions{.admins_approve = false});
    EXPECT_EQ(strict.sync(w.doc_a), 1);
    const int64_t id = strict.list(w.doc_a)[0].id;
    EXPECT_THROW(strict.approve(w.admin, id), AccessDenied);
    EXPECT_THROW(strict.list(w.admin), AccessDenied);
    CurationService lenient(w.store, CurationOptions{.admins_approve = true});
    EXPECT_EQ(lenient.approve(w.admin, id).status, "approved");
}

TEST(UpdateCuration, DuplicatesMergeAndContradictionsAreFlaggedNeverExported) {
    World w;
    CurationService cur(w.store);
    // The same image bytes in two consultations of two patients, the same question.
    const int64_t a1 = w.answered(w.patient, "same-image", "Is the heart enlarged?");
    const int64_t a2 = w.answered(w.patient2, "same-image", "is the heart  enlarged");
    const int64_t a3 = w.answered(w.patient, "other-image", "Is the heart enlarged?");
    const int64_t f1 = w.svc.add_feedback(w.doc_a, a1, std::nullopt, "Yes.", std::nullopt);
    const int64_t f2 = w.svc.add_feedback(w.doc_b, a2, std::nullopt, "yes", std::nullopt);   // duplicate of f1
    const int64_t f3 = w.svc.add_feedback(w.doc_b, a1, std::nullopt, "No", std::nullopt);    // contradicts f1
    const int64_t f4 = w.svc.add_feedback(w.doc_a, a3, std::nullopt, "No", std::nullopt);    // another image: fine
    EXPECT_EQ(cur.sync(w.admin), 4);
    const Candidate c1 = by_feedback(cur, w.admin, f1), c2 = by_feedback(cur, w.admin, f2);
    const Candidate c3 = by_feedback(cur, w.admin, f3), c4 = by_feedback(cur, w.admin, f4);
    EXPECT_EQ(c2.status, "merged");
    EXPECT_EQ(c2.duplicate_of, c1.id);
    EXPECT_THROW(cur.approve(w.doc_a, c2.id), BadInput) << "a merged record is not approved on its own";

    EXPECT_EQ(cur.approve(w.doc_b, c1.id).status, "approved");
    EXPECT_EQ(cur.approve(w.doc_b, c4.id).status, "approved");
    EXPECT_EQ(cur.approve(w.doc_a, c3.id).status, "flagged");
    EXPECT_EQ(by_feedback(cur, w.admin, f1).status, "flagged") << "both sides of a contradiction are flagged";

    auto ids = [](const std::vector<DatasetRecord>& rs) {
        std::vector<int64_t> v;
        for (const auto& r : rs) v.push_back(r.candidate_id);
        return v;
    };
    EXPECT_EQ(ids(cur.approved(w.admin)), std::vector<int64_t>{c4.id});
    // Resolving it: the wrong one rejected, the right one approved again.
    EXPECT_THROW(cur.reject(w.doc_b, c3.id, "mine"), AccessDenied) << "nor reject their own";
    cur.reject(w.doc_a, c3.id, "wrong");
    EXPECT_EQ(cur.approve(w.doc_b, c1.id).status, "approved");
    EXPECT_EQ(ids(cur.approved(w.admin)), (std::vector<int64_t>{c1.id, c4.id}));
}

TEST(UpdateCuration, ExportWritesLlavaJsonTheTrainerReads) {
    World w;
    CurationService cur(w.store);
    const int64_t a1 = w.answered(w.patient, "png-bytes-1", "What modality is this? Dr. Who ordered it");
    const int64_t a2 = w.answered(w.patient2, "png-bytes-2", "Is there free air?");
    w.svc.add_feedback(w.doc_a, a1, std::nullopt, "CT", std::nullopt);
    w.svc.add_feedback(w.doc_a, a2, std::nullopt, "no", std::nullopt);
    cur.sync(w.doc_b);
    for (const Candidate& c : cur.list(w.doc_b)) cur.approve(w.doc_b, c.id);

    const fs::path out = w.dir / "export" / "data.json";
    const ExportResult r = cur.export_dataset(Principal::local_operator(), out);
    ASSERT_EQ(r.records.size(), 2u);
    EXPECT_EQ(r.images_written, 2u);
    std::ifstream f(out);
    const json doc = json::parse(f);
    ASSERT_EQ(doc.size(), 2u);
    EXPECT_EQ(doc[0]["conversations"][0]["value"], "<image>\nWhat modality is this? Dr. [NAME] ordered it");
    EXPECT_EQ(doc[0]["conversations"][1]["value"], "CT");
    const std::string sha = hg::to_hex(hg::sha256(std::string("png-bytes-1")));
    EXPECT_EQ(doc[0]["image"], "images/" + sha);
    std::ifstream img(out.parent_path() / "images" / sha, std::ios::binary);
    EXPECT_EQ(std::string((std::istreambuf_iterator<char>(img)), {}), "png-bytes-1");
    // The trainer's parser takes it (images resolved beside the JSON).
    const hg::train::LlavaDataset ds = hg::train::LlavaDataset::load(out);
    ASSERT_EQ(ds.size(), 2u);
    EXPECT_EQ(ds.skipped().total(), 0u);

    // --since after the approvals: nothing.
    const ExportResult none = cur.export_dataset(w.admin, w.dir / "later.json", hg::service::now_ms() + 60000);
    EXPECT_TRUE(none.records.empty());
    EXPECT_EQ(parse_iso_time_ms("1970-01-02"), 86400000);
    EXPECT_EQ(parse_iso_time_ms("1970-01-01T01:00:00+01:00"), 0);
    EXPECT_THROW(parse_iso_time_ms("yesterday"), BadInput);
}

}  // namespace
