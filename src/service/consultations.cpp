#include "service/consultations.h"

#include <unistd.h>

#include <filesystem>

#include "core/sha256.h"
#include "formats/atomic_file.h"
#include "service/access.h"
#include "service/audit.h"
#include "service/errors.h"
#include "service/validate.h"

namespace hg::service {

namespace fs = std::filesystem;

namespace {

std::string consultation_target(int64_t id) { return "consultation:" + std::to_string(id); }

std::vector<int64_t> physicians_of(Db& db, int64_t consultation_id) {
    std::vector<int64_t> out;
    Stmt s(db, "SELECT physician_id FROM consultation_shares WHERE consultation_id = ? ORDER BY shared_at, physician_id");
    s.bind(consultation_id);
    while (s.step()) out.push_back(s.int64(0));
    return out;
}

}  // namespace

int64_t ConsultationService::create(const Principal& p, std::string_view title) {
    check_text("title", title, Limits::title, /*allow_newlines=*/false);
    return guarded(store_, p, "consultation.create", "consultations",
                   [&](Db& db) { return Access(db).can_create_consultation(p); },
                   [&](Db& db, std::string& detail) {
                       Stmt s(db, "INSERT INTO consultations (patient_id, title, created_at) VALUES (?, ?, ?)");
                       s.bind(p.user_id).bind(title).bind(now_ms());
                       s.run();
                       const int64_t id = db.last_insert_id();
                       detail = consultation_target(id);
                       return id;
                   });
}

std::vector<Consultation> ConsultationService::list(const Principal& p) {
    return guarded(store_, p, "consultation.list", "consultations",
                   [&](Db& db) { return Access(db).can_list_consultations(p); },
                   [&](Db& db, std::string& detail) {
                       // The role picks the query: there is no query that lists everyone's.
                       const char* sql = p.role == Role::patient
                                             ? "SELECT id, patient_id, title, created_at FROM consultations "
                                               "WHERE patient_id = ? ORDER BY id DESC"
                                             : "SELECT c.id, c.patient_id, c.title, c.created_at FROM consultations c "
                                               "JOIN consultation_shares s ON s.consultation_id = c.id "
                                               "WHERE s.physician_id = ? ORDER BY c.id DESC";
                       Stmt s(db, sql);
                       s.bind(p.user_id);
                       std::vector<Consultation> out;
                       while (s.step()) {
                           Consultation c;
                           c.id = s.int64(0);
                           c.patient_id = s.int64(1);
                           c.title = s.text(2);
                           c.created_at_ms = s.int64(3);
                           out.push_back(std::move(c));
                       }
                       for (auto& c : out) c.physician_ids = physicians_of(db, c.id);
                       detail = std::to_string(out.size()) + " consultations";
                       return out;
                   });
}

ConsultationView ConsultationService::read(const Principal& p, int64_t id) {
    check_id("consultation", id);
    return guarded(store_, p, "consultation.read", consultation_target(id),
                   [&](Db& db) { return Access(db).can_read_consultation(p, id); },
                   [&](Db& db, std::string&) {
                       ConsultationView v;
                       {
                           Stmt s(db, "SELECT id, patient_id, title, created_at FROM consultations WHERE id = ?");
                           s.bind(id);
                           s.step();  // exists: the access rule checked it
                           v.consultation = {s.int64(0), s.int64(1), s.text(2), s.int64(3), physicians_of(db, id)};
                       }
                       Stmt m(db, "SELECT id, author_id, text, created_at FROM messages WHERE consultation_id = ? ORDER BY id");
                       m.bind(id);
                       while (m.step()) v.messages.push_back({m.int64(0), id, m.int64(1), m.text(2), m.int64(3)});
                       Stmt u(db,
                              "SELECT id, uploader_id, sha256, path, size_bytes, filename, metadata, created_at "
                              "FROM uploads WHERE consultation_id = ? ORDER BY id");
                       u.bind(id);
                       while (u.step())
                           v.uploads.push_back({u.int64(0), id, u.int64(1), u.text(2), u.text(3), u.int64(4), u.text(5),
                                                u.text(6), u.int64(7)});
                       Stmt a(db,
                              "SELECT id, question_id, text, model, plugin_sha256, created_at FROM answers "
                              "WHERE consultation_id = ? ORDER BY id");
                       a.bind(id);
                       while (a.step())
                           v.answers.push_back({a.int64(0), id, a.int64(1), a.text(2), a.text(3), a.text(4), a.int64(5)});
                       return v;
                   });
}

int64_t ConsultationService::add_message(const Principal& p, int64_t id, std::string_view text) {
    check_id("consultation", id);
    check_text("message", text, Limits::text, /*allow_newlines=*/true);
    return guarded(store_, p, "message.add", consultation_target(id),
                   [&](Db& db) { return Access(db).can_write_consultation(p, id); },
                   [&](Db& db, std::string& detail) {
                       Stmt s(db, "INSERT INTO messages (consultation_id, author_id, text, created_at) VALUES (?, ?, ?, ?)");
                       s.bind(id).bind(p.user_id).bind(text).bind(now_ms());
                       s.run();
                       const int64_t mid = db.last_insert_id();
                       detail = "message:" + std::to_string(mid);
                       return mid;
                   });
}

Upload ConsultationService::add_upload(const Principal& p, int64_t id, std::span<const uint8_t> bytes,
                                       std::string_view filename, std::string_view metadata_json) {
    check_id("consultation", id);
    check_text("filename", filename, Limits::filename, /*allow_newlines=*/false);
    check_json_object("metadata", metadata_json);
    if (bytes.empty()) throw BadInput("upload: must not be empty");
    if (bytes.size() > Limits::upload)
        throw BadInput("upload: " + std::to_string(bytes.size()) + " bytes, more than the limit of " +
                       std::to_string(Limits::upload));
    // The access check first, in its own transaction (a refusal is audited there), so nothing is
    // written to disk for a caller who may not; the bytes are then hashed and written outside
    // the store's lock, and the row commits under a second check of the same rule.
    guarded(store_, p, "upload.check", consultation_target(id),
            [&](Db& db) { return Access(db).can_write_consultation(p, id); }, [](Db&, std::string&) {});
    Upload up;
    up.consultation_id = id;
    up.uploader_id = p.user_id;
    up.sha256 = to_hex(sha256(bytes));
    up.path = "uploads/" + up.sha256.substr(0, 2) + "/" + up.sha256;
    up.size_bytes = int64_t(bytes.size());
    up.filename = std::string(filename);
    up.metadata_json = std::string(metadata_json);
    const fs::path file = store_.data_dir() / up.path;
    // Content-addressed: the same bytes are stored once; an existing file with this name holds them.
    if (!fs::exists(file)) {
        fs::create_directories(file.parent_path());
        write_file_atomically(file, [&](int fd, const std::string& tmp) { write_all(fd, bytes.data(), bytes.size(), tmp); });
    }
    return guarded(store_, p, "upload.add", consultation_target(id),
                   [&](Db& db) { return Access(db).can_write_consultation(p, id); },
                   [&](Db& db, std::string& detail) {
                       up.created_at_ms = now_ms();
                       Stmt s(db,
                              "INSERT INTO uploads (consultation_id, uploader_id, sha256, path, size_bytes, filename, "
                              "metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
                       s.bind(id).bind(p.user_id).bind(up.sha256).bind(up.path).bind(up.size_bytes).bind(up.filename)
                           .bind(up.metadata_json).bind(up.created_at_ms);
                       s.run();
                       up.id = db.last_insert_id();
                       detail = "upload:" + std::to_string(up.id) + " sha256 " + up.sha256;
                       return up;
                   });
}

Upload ConsultationService::read_upload(const Principal& p, int64_t upload_id) {
    check_id("upload", upload_id);
    return guarded(store_, p, "upload.read", "upload:" + std::to_string(upload_id),
                   [&](Db& db) {
                       Stmt c(db, "SELECT consultation_id FROM uploads WHERE id = ?");
                       c.bind(upload_id);
                       return c.step() && Access(db).can_read_consultation(p, c.int64(0));
                   },
                   [&](Db& db, std::string&) {
                       Stmt u(db,
                              "SELECT id, consultation_id, uploader_id, sha256, path, size_bytes, filename, metadata, "
                              "created_at FROM uploads WHERE id = ?");
                       u.bind(upload_id);
                       u.step();  // exists: the access rule checked it
                       return Upload{u.int64(0), u.int64(1), u.int64(2), u.text(3), u.text(4), u.int64(5),
                                     u.text(6), u.text(7), u.int64(8)};
                   });
}

int64_t ConsultationService::record_answer(const Principal& p, int64_t id, int64_t question_id, std::string_view text,
                                           std::string_view model, std::string_view plugin_sha256) {
    check_id("consultation", id);
    check_id("question", question_id);
    check_text("answer", text, Limits::answer, /*allow_newlines=*/true);
    check_text("model", model, Limits::model, /*allow_newlines=*/false);
    check_sha256_hex("plugin_sha256", plugin_sha256);
    return guarded(store_, p, "answer.add", consultation_target(id),
                   [&](Db& db) { return Access(db).can_write_consultation(p, id); },
                   [&](Db& db, std::string& detail) {
                       Stmt q(db, "SELECT 1 FROM messages WHERE id = ? AND consultation_id = ?");
                       q.bind(question_id).bind(id);
                       if (!q.step())
                           throw BadInput("question: message " + std::to_string(question_id) +
                                          " is not part of consultation " + std::to_string(id));
                       Stmt s(db,
                              "INSERT INTO answers (consultation_id, question_id, text, model, plugin_sha256, created_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)");
                       s.bind(id).bind(question_id).bind(text).bind(model).bind(plugin_sha256).bind(now_ms());
                       s.run();
                       const int64_t aid = db.last_insert_id();
                       detail = "answer:" + std::to_string(aid) + " model " + std::string(model) + " plugin " +
                                std::string(plugin_sha256);
                       return aid;
                   });
}

std::vector<int64_t> ConsultationService::share(const Principal& p, int64_t id, int64_t physician_id) {
    check_id("consultation", id);
    check_id("physician", physician_id);
    return guarded(store_, p, "consultation.share", consultation_target(id),
            [&](Db& db) { return Access(db).can_share_consultation(p, id); },
            [&](Db& db, std::string& detail) {
                Stmt r(db, "SELECT role FROM users WHERE id = ?");
                r.bind(physician_id);
                if (!r.step() || r.text(0) != "physician")
                    throw BadInput("physician: user " + std::to_string(physician_id) + " is not a physician");
                Stmt s(db,
                       "INSERT INTO consultation_shares (consultation_id, physician_id, shared_by, shared_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING");
                s.bind(id).bind(physician_id);
                if (p.is_local_operator()) s.bind(std::nullopt); else s.bind(p.user_id);
                s.bind(now_ms());
                s.run();
                detail = "with user:" + std::to_string(physician_id) + (db.changes() ? "" : " (already shared)");
                return physicians_of(db, id);
            });
}

int64_t ConsultationService::add_feedback(const Principal& p, int64_t answer_id, std::optional<int> rating,
                                          std::optional<std::string_view> correction,
                                          std::optional<std::string_view> comment) {
    check_id("answer", answer_id);
    if (!rating && !correction && !comment) throw BadInput("feedback: give a rating, a correction or a comment");
    if (rating && (*rating < 1 || *rating > 5)) throw BadInput("rating: must be 1..5");
    if (correction) check_text("correction", *correction, Limits::text, /*allow_newlines=*/true);
    if (comment) check_text("comment", *comment, Limits::comment, /*allow_newlines=*/true);
    return guarded(store_, p, "feedback.add", "answer:" + std::to_string(answer_id),
                   [&](Db& db) { return Access(db).can_file_feedback(p, answer_id); },
                   [&](Db& db, std::string& detail) {
                       Stmt s(db,
                              "INSERT INTO feedback (answer_id, physician_id, rating, correction, comment, created_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)");
                       s.bind(answer_id).bind(p.user_id);
                       if (rating) s.bind(*rating); else s.bind(std::nullopt);
                       s.bind(correction).bind(comment).bind(now_ms());
                       s.run();
                       const int64_t fid = db.last_insert_id();
                       detail = "feedback:" + std::to_string(fid);
                       return fid;
                   });
}

std::vector<Feedback> ConsultationService::list_feedback(const Principal& p, int64_t answer_id) {
    check_id("answer", answer_id);
    return guarded(store_, p, "feedback.read", "answer:" + std::to_string(answer_id),
                   [&](Db& db) { return Access(db).can_read_feedback(p, answer_id); },
                   [&](Db& db, std::string& detail) {
                       std::vector<Feedback> out;
                       Stmt s(db,
                              "SELECT id, physician_id, rating, correction, comment, created_at FROM feedback "
                              "WHERE answer_id = ? ORDER BY id");
                       s.bind(answer_id);
                       while (s.step()) {
                           Feedback f;
                           f.id = s.int64(0);
                           f.answer_id = answer_id;
                           f.physician_id = s.int64(1);
                           if (!s.is_null(2)) f.rating = int(s.int64(2));
                           if (!s.is_null(3)) f.correction = s.text(3);
                           if (!s.is_null(4)) f.comment = s.text(4);
                           f.created_at_ms = s.int64(5);
                           out.push_back(std::move(f));
                       }
                       detail = std::to_string(out.size()) + " feedback rows";
                       return out;
                   });
}

std::vector<PhysicianEntry> ConsultationService::list_physicians(const Principal& p) {
    return guarded(store_, p, "physician.list", "users",
                   [&](Db&) { return true; },  // every role: a name list is what sharing needs
                   [&](Db& db, std::string& detail) {
                       std::vector<PhysicianEntry> out;
                       Stmt s(db, "SELECT id, name FROM users WHERE role = 'physician' ORDER BY name, id");
                       while (s.step()) out.push_back({s.int64(0), s.text(1)});
                       detail = std::to_string(out.size()) + " physicians";
                       return out;
                   });
}

}  // namespace hg::service
