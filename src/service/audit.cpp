#include "service/audit.h"

#include "service/access.h"

namespace hg::service {

void audit_append(Db& db, const Principal& p, std::string_view action, std::string_view target, bool allowed,
                  std::string_view detail) {
    Stmt s(db,
           "INSERT INTO audit_log (at, user_id, actor, key_id, action, target, allowed, detail) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    s.bind(now_ms());
    if (p.is_local_operator()) s.bind(std::nullopt); else s.bind(p.user_id);
    s.bind(p.name);
    if (p.key_id.empty()) s.bind(std::nullopt); else s.bind(p.key_id);
    s.bind(action).bind(target).bind(allowed ? 1 : 0).bind(detail);
    s.run();
}

void audit_append_anonymous(Db& db, std::string_view key_id, std::string_view action, std::string_view target,
                            std::string_view detail) {
    Stmt s(db,
           "INSERT INTO audit_log (at, user_id, actor, key_id, action, target, allowed, detail) "
           "VALUES (?, NULL, 'anonymous', ?, ?, ?, 0, ?)");
    s.bind(now_ms());
    if (key_id.empty()) s.bind(std::nullopt); else s.bind(key_id);
    s.bind(action).bind(target).bind(detail);
    s.run();
}

std::vector<AuditEntry> AuditService::read(const Principal& p, int64_t after_id, int limit) {
    if (after_id < 0) throw BadInput("after_id: must not be negative");
    if (limit < 1 || limit > 10000) throw BadInput("limit: must be 1..10000");
    return guarded(store_, p, "audit.read", "audit_log", [&](Db& db) { return Access(db).can_read_audit(p); },
                   [&](Db& db, std::string& detail) {
                       std::vector<AuditEntry> out;
                       Stmt s(db,
                              "SELECT id, at, user_id, actor, key_id, action, target, allowed, detail FROM audit_log "
                              "WHERE id > ? ORDER BY id LIMIT ?");
                       s.bind(after_id).bind(limit);
                       while (s.step()) {
                           AuditEntry e;
                           e.id = s.int64(0);
                           e.at_ms = s.int64(1);
                           e.user_id = s.opt_int64(2).value_or(0);
                           e.actor = s.text(3);
                           e.key_id = s.text(4);
                           e.action = s.text(5);
                           e.target = s.text(6);
                           e.allowed = s.int64(7) != 0;
                           e.detail = s.text(8);
                           out.push_back(std::move(e));
                       }
                       detail = std::to_string(out.size()) + " rows after " + std::to_string(after_id);
                       return out;
                   });
}

}  // namespace hg::service
