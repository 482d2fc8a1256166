#include "service/access.h"

namespace hg::service {

bool Access::owns(const Principal& p, int64_t consultation_id) {
    if (p.role != Role::patient || p.is_local_operator()) return false;
    Stmt s(db_, "SELECT 1 FROM consultations WHERE id = ? AND patient_id = ?");
    s.bind(consultation_id).bind(p.user_id);
    return s.step();
}

bool Access::shared_with(const Principal& p, int64_t consultation_id) {
    if (p.role != Role::physician || p.is_local_operator()) return false;
    Stmt s(db_, "SELECT 1 FROM consultation_shares WHERE consultation_id = ? AND physician_id = ?");
    s.bind(consultation_id).bind(p.user_id);
    return s.step();
}

bool Access::reviews_answer(const Principal& p, int64_t answer_id) {
    if (p.role != Role::physician || p.is_local_operator()) return false;
    Stmt s(db_,
           "SELECT 1 FROM answers a JOIN consultation_shares s ON s.consultation_id = a.consultation_id "
           "WHERE a.id = ? AND s.physician_id = ?");
    s.bind(answer_id).bind(p.user_id);
    return s.step();
}

bool Access::can_create_consultation(const Principal& p) { return p.role == Role::patient && !p.is_local_operator(); }

bool Access::can_list_consultations(const Principal& p) {
    return (p.role == Role::patient || p.role == Role::physician) && !p.is_local_operator();
}

bool Access::can_read_consultation(const Principal& p, int64_t id) { return owns(p, id) || shared_with(p, id); }

bool Access::can_write_consultation(const Principal& p, int64_t id) { return owns(p, id) || shared_with(p, id); }

bool Access::can_share_consultation(const Principal& p, int64_t id) {
    if (p.role == Role::admin) {
        Stmt s(db_, "SELECT 1 FROM consultations WHERE id = ?");
        s.bind(id);
        return s.step();
    }
    return owns(p, id);
}

bool Access::can_file_feedback(const Principal& p, int64_t answer_id) { return reviews_answer(p, answer_id); }

bool Access::can_read_feedback(const Principal& p, int64_t answer_id) { return reviews_answer(p, answer_id); }

bool Access::can_manage_keys(const Principal& p) { return p.role == Role::admin; }

bool Access::can_read_audit(const Principal& p) { return p.role == Role::admin; }

}  // namespace hg::service
