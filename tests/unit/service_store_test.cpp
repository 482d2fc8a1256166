// The store: a fresh database is migrated and configured (WAL, synchronous=FULL, foreign keys,
// owner-only file), re-opening keeps data and version, a newer database is refused unchanged,
// a pending migration is applied on open, a failing one leaves the previous version, and one
// Store serves several threads at once.
#include <sys/stat.h>

#include <thread>
#include <vector>

#include "service/consultations.h"
#include "service_test_util.h"

using namespace svctest;

namespace {

const Migration kExtraV2 = {2, "test: add a table", "CREATE TABLE extra (x INTEGER NOT NULL);"};
const Migration kBadV2 = {2, "test: fails half-way",
                          "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);"};

std::vector<Migration> with(const Migration& m) {
    std::vector<Migration> v(schema_migrations().begin(), schema_migrations().end());
    v.push_back(m);
    v.back().version = int(v.size());  // the next version after the program's own
    return v;
}

bool table_exists(Store& s, const std::string& name) {
    return s.transaction([&](Db& db) {
        Stmt q(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?");
        q.bind(name);
        return q.step();
    });
}

}  // namespace

TEST(ServiceStore, FreshDatabaseIsMigratedAndConfigured) {
    const fs::path dir = fresh_dir("fresh") / "nested" / "data";  // created, parents too
    Store store(dir);
    EXPECT_EQ(store.schema_version(), int(schema_migrations().size()));
    EXPECT_EQ(query_text(store, "PRAGMA journal_mode"), "wal");
    EXPECT_EQ(query_int(store, "PRAGMA synchronous"), 2);  // FULL
    EXPECT_EQ(query_int(store, "PRAGMA foreign_keys"), 1);
    for (const char* t : {"users", "api_keys", "consultations", "consultation_shares", "messages", "uploads", "answers",
                          "feedback", "audit_log"})
        EXPECT_TRUE(table_exists(store, t)) << t;
    struct stat st{};
    ASSERT_EQ(::stat(Store::db_file(dir).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "the database holds medical data";
    ASSERT_EQ(::stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(ServiceStore, ReopenKeepsDataAndVersion) {
    const fs::path dir = fresh_dir("reopen");
    {
        Store store(dir);
        make_user(store, "alice", "patient");
    }
    Store again(dir);
    EXPECT_EQ(again.schema_version(), int(schema_migrations().size()));
    const auto keys = KeyService(again).list_keys(Principal::local_operator());
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_EQ(keys[0].user_name, "alice");
}

TEST(ServiceStore, NewerDatabaseIsRefusedAndLeftUnchanged) {
    const fs::path dir = fresh_dir("newer");
    { Store store(dir); }
    {
        Db raw(Store::db_file(dir));
        raw.exec("PRAGMA user_version = 99");
    }
    try {
        Store store(dir);
        FAIL() << "a database of version 99 was opened";
    } catch (const hg::Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("schema version 99"), std::string::npos) << msg;
        EXPECT_NE(msg.find("newer"), std::string::npos) << msg;
    }
    Db raw(Store::db_file(dir));
    Stmt s(raw, "PRAGMA user_version");
    ASSERT_TRUE(s.step());
    EXPECT_EQ(s.int64(0), 99);
}

TEST(ServiceStore, PendingMigrationIsAppliedOnOpen) {
    const fs::path dir = fresh_dir("upgrade");
    {
        Store v1(dir);
        make_user(v1, "bob", "physician");
        EXPECT_FALSE(table_exists(v1, "extra"));
    }
    const auto v2list = with(kExtraV2);
    Store v2(dir, v2list);
    EXPECT_EQ(v2.schema_version(), int(v2list.size()));
    EXPECT_TRUE(table_exists(v2, "extra"));
    EXPECT_EQ(query_int(v2, "SELECT count(*) FROM users"), 1);
    // The v1 program now refuses the v2 database.
    EXPECT_THROW(Store{dir}, hg::Error);
}

TEST(ServiceStore, FailingMigrationLeavesThePreviousVersion) {
    const fs::path dir = fresh_dir("badmig");
    { Store v1(dir); }
    const auto bad = with(kBadV2);
    try {
        Store s(dir, bad);
        FAIL() << "a failing migration was accepted";
    } catch (const hg::Error& e) {
        const size_t latest = schema_migrations().size();
        EXPECT_NE(std::string(e.what()).find("migration " + std::to_string(latest + 1)), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("stays at version " + std::to_string(latest)), std::string::npos) << e.what();
    }
    Store v1(dir);
    EXPECT_EQ(v1.schema_version(), int(schema_migrations().size()));
    EXPECT_FALSE(table_exists(v1, "half_done")) << "the half-applied migration was not rolled back";
}

TEST(ServiceStore, ForeignKeysAreEnforced) {
    Store store(fresh_dir("fk"));
    EXPECT_THROW(store.transaction([](Db& db) {
        db.exec("INSERT INTO messages (consultation_id, author_id, text, created_at) VALUES (999, 999, 'x', 0)");
    }),
                 hg::Error);
    EXPECT_EQ(query_int(store, "SELECT count(*) FROM messages"), 0);
}

TEST(ServiceStore, OneStoreServesManyThreads) {
    Store store(fresh_dir("threads"));
    const Principal patient = make_user(store, "patient-t", "patient");
    ConsultationService svc(store);
    const int64_t c = svc.create(patient, "threads");
    constexpr int kThreads = 4, kEach = 25;
    std::atomic<int> errors{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                try {
                    svc.add_message(patient, c, "thread " + std::to_string(t) + " message " + std::to_string(i));
                    if (i % 5 == 0) svc.read(patient, c);
                } catch (...) {
                    ++errors;
                }
            }
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(svc.read(patient, c).messages.size(), size_t(kThreads * kEach));
    EXPECT_EQ(query_text(store, "PRAGMA integrity_check"), "ok");
}
