// The role rules, one function per action, each a yes/no over the current database state. The
// service calls exactly one of them at the start of every operation (inside the operation's
// transaction, so the answer cannot change before the work is done) and audits the outcome.
//
//   patient    creates consultations (owned by itself); reads, writes to (messages, uploads,
//              model answers) and shares (with a physician) only its own
//   physician  reads and writes to the consultations shared with it; files and reads feedback
//              on their answers; creates no consultations
//   admin      manages users and keys, reads the audit log, may share a consultation with a
//              physician (assignment) but reads no consultation content
//
// A consultation that does not exist is refused like one that is not yours, so refusals do not
// tell a caller which ids exist.
#pragma once
#include <cstdint>

#include "service/roles.h"
#include "service/sqlite.h"

namespace hg::service {

class Access {
public:
    explicit Access(Db& db) : db_(db) {}

    bool can_create_consultation(const Principal& p);
    bool can_list_consultations(const Principal& p);
    bool can_read_consultation(const Principal& p, int64_t consultation_id);
    // Messages, uploads and model answers.
    bool can_write_consultation(const Principal& p, int64_t consultation_id);
    bool can_share_consultation(const Principal& p, int64_t consultation_id);
    bool can_file_feedback(const Principal& p, int64_t answer_id);
    bool can_read_feedback(const Principal& p, int64_t answer_id);
    bool can_manage_keys(const Principal& p);
    bool can_read_audit(const Principal& p);

private:
    bool owns(const Principal& p, int64_t consultation_id);
    bool shared_with(const Principal& p, int64_t consultation_id);
    bool reviews_answer(const Principal& p, int64_t answer_id);
    Db& db_;
};

}  // namespace hg::service
