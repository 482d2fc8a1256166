// The audit log: who read or wrote what, when, allowed or refused. Rows are appended in the same
// transaction as the work they describe (guarded() below), so an allowed action never exists
// without its row and a refusal's row is committed before its AccessDenied is thrown. The table
// is append-only (SQLite triggers abort UPDATE and DELETE). Text in a row is ids, names, roles
// and the public key id: never a secret and never the medical text of a request.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "service/errors.h"
#include "service/roles.h"
#include "service/store.h"

namespace hg::service {

struct AuditEntry {
    int64_t id = 0;
    int64_t at_ms = 0;
    int64_t user_id = 0;   // 0: the local operator or an unauthenticated caller
    std::string actor;     // user name, "local-operator" or "anonymous"
    std::string key_id;    // the public id of the key used, if any
    std::string action;    // e.g. "consultation.read"
    std::string target;    // e.g. "consultation:5"
    bool allowed = false;
    std::string detail;    // ids of what was written, or why a request was refused
};

// Appends one row inside the caller's transaction.
void audit_append(Db& db, const Principal& p, std::string_view action, std::string_view target, bool allowed,
                  std::string_view detail);
// The same for a caller without a principal (failed authentication). key_id only when it is a
// well-formed public id (never the secret part of a presented key).
void audit_append_anonymous(Db& db, std::string_view key_id, std::string_view action, std::string_view target,
                            std::string_view detail);

class AuditService {
public:
    explicit AuditService(Store& store) : store_(store) {}
    // Admins only: rows with id > after_id, oldest first, at most limit (1..10000). The read is
    // itself audited.
    std::vector<AuditEntry> read(const Principal& p, int64_t after_id = 0, int limit = 1000);

private:
    Store& store_;
};

// One service call as one transaction: `allowed(db)` decides; if it says no, the refusal row is
// committed and AccessDenied thrown; if yes, `body(db, detail)` does the work, may set `detail`
// (ids it wrote), and its row is appended before the commit. BadInput thrown by body rolls back
// everything (no row: nothing was read or written).
template <class Check, class Body>
auto guarded(Store& store, const Principal& p, std::string_view action, const std::string& target, Check&& allowed,
             Body&& body) {
    using R = std::invoke_result_t<Body, Db&, std::string&>;
    bool refused = false;
    if constexpr (std::is_void_v<R>) {
        store.transaction([&](Db& db) {
            if (!allowed(db)) {
                refused = true;
                audit_append(db, p, action, target, false, "refused");
                return;
            }
            std::string detail;
            body(db, detail);
            audit_append(db, p, action, target, true, detail);
        });
        if (refused) throw AccessDenied(p.name + " (" + role_name(p.role) + ") may not " + std::string(action) + " " + target);
    } else {
        std::optional<R> result = store.transaction([&](Db& db) -> std::optional<R> {
            if (!allowed(db)) {
                refused = true;
                audit_append(db, p, action, target, false, "refused");
                return std::nullopt;
            }
            std::string detail;
            std::optional<R> r(body(db, detail));
            audit_append(db, p, action, target, true, detail);
            return r;
        });
        if (refused) throw AccessDenied(p.name + " (" + role_name(p.role) + ") may not " + std::string(action) + " " + target);
        return std::move(*result);
    }
}

}  // namespace hg::service
