// The audit log is append-only: UPDATE, DELETE and INSERT OR REPLACE / upsert are aborted by the
// triggers (also through raw SQL, inside a transaction that is then rolled back), and the rows are unchanged after.
// Reading it is admin-only and is itself audited; allowed calls leave rows with the ids they
// wrote but never the medical text.
#include "service/consultations.h"
#include "service_test_util.h"

using namespace svctest;

TEST(ServiceAudit, UpdateAndDeleteAreRefused) {
    Store store(fresh_dir("audit"));
    make_user(store, "a", "admin");
    make_user(store, "b", "patient");
    const int64_t rows = audit_rows(store);
    ASSERT_GE(rows, 2);
    const std::string before = query_text(store, "SELECT group_concat(id || actor || action || detail, ';') FROM audit_log");
    for (const char* sql : {"UPDATE audit_log SET allowed = 1", "UPDATE audit_log SET detail = '' WHERE id = 1",
                            "DELETE FROM audit_log", "DELETE FROM audit_log WHERE id = 1",
                            "INSERT OR REPLACE INTO audit_log (id, at, actor, action, target, allowed, detail) "
                            "VALUES (1, 0, 'x', 'x', 'x', 1, 'x')",
                            "REPLACE INTO audit_log (id, at, actor, action, target, allowed, detail) "
                            "VALUES (2, 0, 'x', 'x', 'x', 1, 'x')",
                            "INSERT INTO audit_log (id, at, actor, action, target, allowed, detail) "
                            "VALUES (1, 0, 'x', 'x', 'x', 1, 'x') ON CONFLICT (id) DO UPDATE SET detail = 'x'"}) {
        try {
            store.transaction([&](Db& db) { db.exec(sql); });
            ADD_FAILURE() << "accepted: " << sql;
        } catch (const hg::Error& e) {
            EXPECT_NE(std::string(e.what()).find("append-only"), std::string::npos) << sql << ": " << e.what();
        }
    }
    EXPECT_EQ(audit_rows(store), rows);
    EXPECT_EQ(query_text(store, "SELECT group_concat(id || actor || action || detail, ';') FROM audit_log"), before);
}

TEST(ServiceAudit, RowsNameIdsNotMedicalText) {
    Store store(fresh_dir("audit-text"));
    const Principal p = make_user(store, "pat", "patient");
    ConsultationService svc(store);
    const int64_t c = svc.create(p, "private title");
    const int64_t m = svc.add_message(p, c, "my private symptom");
    svc.record_answer(p, c, m, "a private answer", "healthgpt-nano", std::string(64, 'b'));
    svc.read(p, c);
    const auto rows = AuditService(store).read(Principal::local_operator());
    int allowed = 0;
    for (const auto& r : rows) {
        allowed += r.allowed;
        for (const std::string& f : {r.actor, r.action, r.target, r.detail})
            EXPECT_EQ(f.find("private"), std::string::npos) << r.action << ": " << f;
    }
    EXPECT_GE(allowed, 5);
    const AuditEntry e = last_audit(store);
    EXPECT_EQ(e.action, "audit.read") << "reading the audit log is audited";
    EXPECT_EQ(e.actor, "local-operator");
    EXPECT_EQ(e.user_id, 0);
    // Paging: rows after an id, bounded.
    const auto page = AuditService(store).read(Principal::local_operator(), rows[1].id, 2);
    ASSERT_EQ(page.size(), 2u);
    EXPECT_EQ(page[0].id, rows[2].id);
    EXPECT_THROW(AuditService(store).read(Principal::local_operator(), 0, 0), BadInput);
    EXPECT_THROW(AuditService(store).read(Principal::local_operator(), -1, 10), BadInput);
}
