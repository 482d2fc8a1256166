// The consultation service: what the HTTP server calls for consultations, messages, uploads,
// model answers and physicians' feedback. Every call takes the Principal it acts for, checks it
// with one Access rule, and audits the outcome in the same transaction as the work (audit.h).
// Refusals throw AccessDenied, bad input BadInput (errors.h).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "service/roles.h"
#include "service/store.h"

namespace hg::service {

struct Consultation {
    int64_t id = 0;
    int64_t patient_id = 0;
    std::string title;
    int64_t created_at_ms = 0;
    std::vector<int64_t> physician_ids;  // shared with, in order of sharing
};

struct Message {
    int64_t id = 0, consultation_id = 0, author_id = 0;
    std::string text;
    int64_t created_at_ms = 0;
};

struct Upload {
    int64_t id = 0, consultation_id = 0, uploader_id = 0;
    std::string sha256;    // of the bytes
    std::string path;      // relative to the data directory: uploads/<sha256[0:2]>/<sha256>
    int64_t size_bytes = 0;
    std::string filename;  // as the uploader named it
    std::string metadata_json;
    int64_t created_at_ms = 0;
};

struct Answer {
    int64_t id = 0, consultation_id = 0, question_id = 0;
    std::string text, model, plugin_sha256;
    int64_t created_at_ms = 0;
};

struct Feedback {
    int64_t id = 0, answer_id = 0, physician_id = 0;
    std::optional<int> rating;  // 1..5
    std::optional<std::string> correction, comment;
    int64_t created_at_ms = 0;
};

// A physician as a patient choosing whom to share with sees one: the id and the name, nothing else.
struct PhysicianEntry {
    int64_t id = 0;
    std::string name;
};

// Everything a reader of one consultation sees.
struct ConsultationView {
    Consultation consultation;
    std::vector<Message> messages;
    std::vector<Upload> uploads;
    std::vector<Answer> answers;
};

class ConsultationService {
public:
    explicit ConsultationService(Store& store) : store_(store) {}

    // Patients: a new consultation they own.
    int64_t create(const Principal& p, std::string_view title);
    // Patients: their own; physicians: those shared with them. Newest first.
    std::vector<Consultation> list(const Principal& p);
    // The owner patient or a physician it is shared with.
    ConsultationView read(const Principal& p, int64_t consultation_id);
    // The owner or a shared physician.
    int64_t add_message(const Principal& p, int64_t consultation_id, std::string_view text);
    // The owner or a shared physician. The bytes are stored content-addressed under the data
    // directory (atomically, before the row commits) and hashed with SHA-256.
    Upload add_upload(const Principal& p, int64_t consultation_id, std::span<const uint8_t> bytes,
                      std::string_view filename, std::string_view metadata_json);
    // The owner patient or a physician the upload's consultation is shared with (audited as
    // upload.read; an unknown id is refused like one that is not yours).
    Upload read_upload(const Principal& p, int64_t upload_id);
    // The owner or a shared physician (whoever asked): the model's answer to one of the
    // consultation's messages, with the model and the plugin (SHA-256 of its file) that made it.
    int64_t record_answer(const Principal& p, int64_t consultation_id, int64_t question_id, std::string_view text,
                          std::string_view model, std::string_view plugin_sha256);
    // The owner patient or an admin: shares with a user whose role is physician (again: no change).
    // Returns the physicians it is shared with now, in order of sharing.
    std::vector<int64_t> share(const Principal& p, int64_t consultation_id, int64_t physician_id);
    // Physicians the answer's consultation is shared with: a rating 1..5, a corrected answer and
    // a comment, at least one of them.
    int64_t add_feedback(const Principal& p, int64_t answer_id, std::optional<int> rating,
                         std::optional<std::string_view> correction, std::optional<std::string_view> comment);
    // Physicians the answer's consultation is shared with (their own and colleagues' rows).
    // Patients do not read feedback: a correction is the physician's working note, and what the
    // patient is told is the physician's message in the consultation.
    std::vector<Feedback> list_feedback(const Principal& p, int64_t answer_id);
    // Any authenticated user or the operator: every physician's id and name, by name (so a patient
    // can choose whom to share a consultation with). Names only: no keys, roles or dates.
    std::vector<PhysicianEntry> list_physicians(const Principal& p);

private:
    Store& store_;
};

}  // namespace hg::service
