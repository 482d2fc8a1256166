#include "update/curation.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <fstream>
#include <map>
#include <set>

#include "core/sha256.h"
#include "formats/atomic_file.h"
#include "service/audit.h"
#include "service/errors.h"
#include "update/rows.h"
#include "update/scrub.h"

namespace hg::update {

namespace fs = std::filesystem;
using json = nlohmann::json;
using service::BadInput;
using service::Db;
using service::Role;
using service::Stmt;

int64_t parse_iso_time_ms(std::string_view s) {
    int Y = 0, M = 0, D = 0, h = 0, m = 0, sec = 0;
    char tail[16] = {0};
    const std::string str(s.substr(0, 40));
    const int n = std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%15s", &Y, &M, &D, &h, &m, &sec, tail);
    if (!(n == 3 && str.size() == 10) && n < 6)
        throw BadInput("--since: '" + str + "' is not an ISO date (2026-12-07 or 2026-12-07T10:30:00Z)");
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        throw BadInput("--since: '" + str + "' is out of range");
    int64_t offset_s = 0;
    const std::string t = tail;
    if (n >= 7 && t != "Z") {
        int oh = 0, om = 0;
        char sign = 0;
        if (std::sscanf(t.c_str(), "%c%2d:%2d", &sign, &oh, &om) != 3 || (sign != '+' && sign != '-'))
            throw BadInput("--since: '" + str + "': the time zone must be Z or +hh:mm");
        offset_s = (sign == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    }
    std::tm tm{};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    return (int64_t(timegm(&tm)) - offset_s) * 1000;
}

std::string normalise_text(std::string_view s) {
    std::string out;
    bool space = false;
    for (char c : s) {
        if (std::isspace((unsigned char)c)) {
            space = !out.empty();
            continue;
        }
        if (space) out += ' ';
        space = false;
        out += (char)std::tolower((unsigned char)c);
    }
    while (!out.empty() && (out.back() == '.' || out.back() == '?' || out.back() == '!')) out.pop_back();
    return out;
}

namespace {

constexpr const char* kCandidateColumns =
    "SELECT t.id, t.feedback_id, t.answer_id, t.patient_id, t.upload_id, t.author_id, t.image_sha256, u.path, "
    "t.question, t.answer, t.status, t.duplicate_of, t.reviewer_id, t.reviewed_at, t.note, t.created_at "
    "FROM training_candidates t JOIN uploads u ON u.id = t.upload_id ";

Candidate read_candidate(const Stmt& s) {
    Candidate c;
    c.id = s.int64(0);
    c.feedback_id = s.int64(1);
    c.answer_id = s.int64(2);
    c.patient_id = s.int64(3);
    c.upload_id = s.int64(4);
    c.author_id = s.int64(5);
    c.image_sha256 = s.text(6);
    c.image_path = s.text(7);
    c.question = s.text(8);
    c.answer = s.text(9);
    c.status = s.text(10);
    c.duplicate_of = s.opt_int64(11);
    c.reviewer_id = s.opt_int64(12);
    c.reviewed_at_ms = s.opt_int64(13);
    c.note = s.text(14);
    c.created_at_ms = s.int64(15);
    return c;
}

constexpr RowQuery<Candidate> kCandidates{kCandidateColumns, read_candidate};

std::optional<Candidate> find_candidate(Db& db, int64_t id) { return kCandidates.one(db, "WHERE t.id = ?", id); }

std::string record_hash(const std::string& image, const std::string& q, const std::string& a) {
    const Sha256Digest d = sha256(image + "\n" + q + "\n" + a);
    return to_hex(d);
}

// The approved, exportable records: one per (image, question, answer); a group with two different
// approved answers is left out whole (the flagging in approve() should already have caught it).
std::vector<std::pair<DatasetRecord, std::string>> exportable(Db& db, int64_t since_ms) {
    const std::vector<Candidate> all =
        kCandidates.all(db, "WHERE t.status = 'approved' AND t.reviewed_at >= ? ORDER BY t.id", since_ms);
    std::map<std::pair<std::string, std::string>, std::set<std::string>> answers;
    for (const Candidate& c : all) answers[{c.image_sha256, normalise_text(c.question)}].insert(normalise_text(c.answer));
    std::vector<std::pair<DatasetRecord, std::string>> out;
    std::set<std::string> seen;
    for (const Candidate& c : all) {
        if (answers[{c.image_sha256, normalise_text(c.question)}].size() != 1) continue;
        DatasetRecord r;
        r.candidate_id = c.id;
        r.patient_id = c.patient_id;
        r.image_sha256 = c.image_sha256;
        r.question = c.question;
        r.answer = c.answer;
        r.record_sha256 = record_hash(c.image_sha256, normalise_text(c.question), normalise_text(c.answer));
        if (!seen.insert(r.record_sha256).second) continue;
        out.push_back({std::move(r), c.image_path});
    }
    return out;
}

}  // namespace

bool CurationService::may_review(const Principal& p) const {
    return p.role == Role::physician || (p.role == Role::admin && opt_.admins_approve);
}

int CurationService::sync(const Principal& p) {
    return service::guarded(
        store_, p, "curation.sync", "training_candidates", [&](Db&) { return may_review(p); },
        [&](Db& db, std::string& detail) {
            struct Source {
                int64_t feedback_id, answer_id, author_id, consultation_id, patient_id, asked_at;
                std::string correction, question;
            };
            std::vector<Source> todo;
            {
                Stmt s(db,
                       "SELECT f.id, f.answer_id, f.physician_id, a.consultation_id, c.patient_id, m.created_at, "
                       "f.correction, m.text FROM feedback f JOIN answers a ON a.id = f.answer_id "
                       "JOIN consultations c ON c.id = a.consultation_id JOIN messages m ON m.id = a.question_id "
                       "WHERE f.correction IS NOT NULL AND NOT EXISTS "
                       "(SELECT 1 FROM training_candidates t WHERE t.feedback_id = f.id) ORDER BY f.id");
                while (s.step())
                    todo.push_back({s.int64(0), s.int64(1), s.int64(2), s.int64(3), s.int64(4), s.int64(5), s.text(6),
                                    s.text(7)});
            }
            int made = 0, merged = 0, no_image = 0;
            for (const Source& src : todo) {
                Stmt u(db,
                       "SELECT id, sha256 FROM uploads WHERE consultation_id = ? AND created_at <= ? "
                       "ORDER BY created_at DESC, id DESC LIMIT 1");
                u.bind(src.consultation_id).bind(src.asked_at);
                if (!u.step()) {
                    ++no_image;
                    continue;
                }
                const int64_t upload_id = u.int64(0);
                const std::string image = u.text(1);
                const std::string q = scrub_identifiers(src.question), a = scrub_identifiers(src.correction);
                const std::string qn = normalise_text(q), an = normalise_text(a);
                if (qn.empty() || an.empty()) {
                    ++no_image;
                    continue;
                }
                std::optional<int64_t> dup;
                {
                    Stmt d(db,
                           "SELECT id FROM training_candidates WHERE image_sha256 = ? AND question_norm = ? AND "
                           "answer_norm = ? AND status IN ('candidate', 'approved', 'flagged') ORDER BY id LIMIT 1");
                    d.bind(image).bind(qn).bind(an);
                    if (d.step()) dup = d.int64(0);
                }
                Stmt ins(db,
                         "INSERT INTO training_candidates (feedback_id, answer_id, patient_id, upload_id, image_sha256, "
                         "question, question_norm, answer, answer_norm, author_id, status, duplicate_of, note, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                ins.bind(src.feedback_id).bind(src.answer_id).bind(src.patient_id).bind(upload_id).bind(image);
                ins.bind(q).bind(qn).bind(a).bind(an).bind(src.author_id).bind(dup ? "merged" : "candidate");
                ins.bind(dup).bind(dup ? "duplicate of #" + std::to_string(*dup) : std::string());
                ins.bind(service::now_ms());
                ins.run();
                ++made;
                merged += dup ? 1 : 0;
            }
            detail = std::to_string(made) + " made (" + std::to_string(merged) + " merged duplicates), " +
                     std::to_string(no_image) + " corrections without a stored image or text";
            return made;
        });
}

std::vector<Candidate> CurationService::list(const Principal& p, std::string_view status) {
    static const std::set<std::string> kStatuses = {"candidate", "approved", "rejected", "flagged", "merged"};
    if (!status.empty() && !kStatuses.count(std::string(status)))
        throw BadInput("status: '" + std::string(status.substr(0, 32)) +
                       "' is not candidate, approved, rejected, flagged or merged");
    return service::guarded(store_, p, "curation.list", "training_candidates", [&](Db&) { return may_review(p); },
                            [&](Db& db, std::string& detail) {
                                const std::string st(status);  // an empty view may bind as NULL
                                std::vector<Candidate> out =
                                    kCandidates.all(db, "WHERE (? = '' OR t.status = ?) ORDER BY t.id", st, st);
                                detail = std::to_string(out.size()) + " rows";
                                return out;
                            });
}

Candidate CurationService::approve(const Principal& p, int64_t id) {
    const std::string target = "candidate:" + std::to_string(id);
    return service::guarded(
        store_, p, "curation.approve", target,
        [&](Db& db) {
            // Someone else than the author; an unknown id is refused like a forbidden one.
            const auto c = find_candidate(db, id);
            return may_review(p) && c && (p.is_local_operator() || c->author_id != p.user_id);
        },
        [&](Db& db, std::string& detail) {
            Candidate c = *find_candidate(db, id);
            if (c.status != "candidate" && c.status != "flagged")
                throw BadInput(target + ": is " + c.status + "; only a candidate or a flagged record can be approved");
            // Contradiction: an approved (or flagged) record with another answer to the same image and question.
            std::vector<int64_t> against;
            {
                Stmt s(db,
                       "SELECT id FROM training_candidates WHERE image_sha256 = ? AND question_norm = ? AND "
                       "answer_norm <> ? AND status IN ('approved', 'flagged') AND id <> ? ORDER BY id");
                s.bind(c.image_sha256).bind(normalise_text(c.question)).bind(normalise_text(c.answer)).bind(id);
                while (s.step()) against.push_back(s.int64(0));
            }
            std::string status = against.empty() ? "approved" : "flagged";
            std::string note;
            for (int64_t o : against) note += (note.empty() ? "contradicts #" : ", #") + std::to_string(o);
            Stmt u(db, "UPDATE training_candidates SET status = ?, reviewer_id = ?, reviewed_at = ?, note = ? WHERE id = ?");
            u.bind(status);
            bind_user(u, p);
            u.bind(service::now_ms()).bind(note).bind(id);
            u.run();
            for (int64_t o : against) {
                Stmt f(db, "UPDATE training_candidates SET status = 'flagged', note = ? WHERE id = ?");
                f.bind("contradicts #" + std::to_string(id)).bind(o);
                f.run();
            }
            detail = status + (note.empty() ? "" : " (" + note + ")");
            return *find_candidate(db, id);
        });
}

Candidate CurationService::reject(const Principal& p, int64_t id, std::string_view note) {
    if (note.size() > 2000) throw BadInput("note: longer than 2000 bytes");
    const std::string target = "candidate:" + std::to_string(id);
    return service::guarded(
        store_, p, "curation.reject", target,
        [&](Db& db) {
            const auto c = find_candidate(db, id);
            return may_review(p) && c && (p.is_local_operator() || c->author_id != p.user_id);
        },
        [&](Db& db, std::string& detail) {
            Stmt u(db, "UPDATE training_candidates SET status = 'rejected', reviewer_id = ?, reviewed_at = ?, note = ? "
                       "WHERE id = ?");
            bind_user(u, p);
            u.bind(service::now_ms()).bind(std::string(note)).bind(id);
            u.run();
            detail = "rejected";
            return *find_candidate(db, id);
        });
}

std::vector<DatasetRecord> CurationService::approved(const Principal& p, int64_t since_ms) {
    return service::guarded(store_, p, "dataset.read", "training_candidates",
                            [&](Db&) { return p.role == Role::admin; },
                            [&](Db& db, std::string& detail) {
                                std::vector<DatasetRecord> out;
                                for (auto& [r, path] : exportable(db, since_ms)) out.push_back(std::move(r));
                                detail = std::to_string(out.size()) + " records";
                                return out;
                            });
}

ExportResult CurationService::export_dataset(const Principal& p, const fs::path& out_json, int64_t since_ms) {
    if (out_json.empty() || out_json.filename().empty()) throw BadInput("-o: a file name is needed");
    return service::guarded(
        store_, p, "dataset.export", "training_candidates", [&](Db&) { return p.role == Role::admin; },
        [&](Db& db, std::string& detail) {
            ExportResult r;
            r.json_path = out_json;
            const auto rows = exportable(db, since_ms);
            const fs::path folder = out_json.has_parent_path() ? out_json.parent_path() : fs::path(".");
            fs::create_directories(folder / "images");
            json doc = json::array();
            for (const auto& [rec, rel] : rows) {
                // Content-addressed: an image already there is the same bytes.
                const fs::path dst = folder / "images" / rec.image_sha256;
                if (!fs::exists(dst)) {
                    std::ifstream in(store_.data_dir() / rel, std::ios::binary);
                    if (!in) throw hg::Error("dataset export: the stored image " + rel + " is missing");
                    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
                    write_file_atomically(dst, [&](int fd, const std::string& tmp) { write_all(fd, bytes.data(), bytes.size(), tmp); });
                    ++r.images_written;
                }
                doc.push_back({{"id", "hg-" + std::to_string(rec.candidate_id)},
                               {"image", "images/" + rec.image_sha256},
                               {"conversations", json::array({{{"from", "human"}, {"value", "<image>\n" + rec.question}},
                                                              {{"from", "gpt"}, {"value", rec.answer}}})},
                               {"hg_record", rec.candidate_id},
                               {"hg_patient", rec.patient_id},
                               {"hg_image_sha256", rec.image_sha256},
                               {"hg_record_sha256", rec.record_sha256}});
                r.records.push_back(rec);
            }
            const std::string text = doc.dump(1) + "\n";
            write_file_atomically(out_json, [&](int fd, const std::string& tmp) { write_all(fd, text.data(), text.size(), tmp); });
            detail = std::to_string(r.records.size()) + " records, " + std::to_string(r.images_written) + " new images";
            return r;
        });
}

}  // namespace hg::update
