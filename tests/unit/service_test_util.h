// Helpers of the service tests: a fresh data directory per test, users made through the real key
// path (add_key, then authenticate), raw queries for what the API does not expose.
#pragma once
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include "service/audit.h"
#include "service/auth.h"
#include "service/store.h"
#include "test_util.h"

namespace svctest {

namespace fs = std::filesystem;
using namespace hg::service;

// A new, empty directory under the test scratch dir.
inline fs::path fresh_dir(const std::string& tag) {
    static std::atomic<int> n{0};
    const fs::path d = hgtest::scratch_dir() / ("svc-" + tag + "-" + std::to_string(n++));
    fs::remove_all(d);
    return d;
}

// A principal for a new user with a new key, through the real authentication path.
inline Principal make_user(Store& store, const std::string& name, const std::string& role) {
    KeyService keys(store);
    const NewKey k = keys.add_key(Principal::local_operator(), name, role);
    return keys.authenticate(k.key);
}

inline int64_t query_int(Store& store, const char* sql) {
    return store.transaction([&](Db& db) {
        Stmt s(db, sql);
        return s.step() ? s.int64(0) : int64_t(-1);
    });
}

inline std::string query_text(Store& store, const char* sql) {
    return store.transaction([&](Db& db) {
        Stmt s(db, sql);
        return s.step() ? s.text(0) : std::string();
    });
}

// The newest audit row.
inline AuditEntry last_audit(Store& store) {
    return store.transaction([&](Db& db) {
        Stmt s(db, "SELECT id, user_id, actor, key_id, action, target, allowed, detail FROM audit_log ORDER BY id DESC LIMIT 1");
        AuditEntry e;
        if (s.step()) {
            e.id = s.int64(0);
            e.user_id = s.opt_int64(1).value_or(0);
            e.actor = s.text(2);
            e.key_id = s.text(3);
            e.action = s.text(4);
            e.target = s.text(5);
            e.allowed = s.int64(6) != 0;
            e.detail = s.text(7);
        }
        return e;
    });
}

inline int64_t audit_rows(Store& store) { return query_int(store, "SELECT count(*) FROM audit_log"); }

}  // namespace svctest
