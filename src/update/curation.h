// Curation: physicians' corrections become training records (docs/UPDATES.md, "Curation").
//
//   feedback.correction ──sync──► candidate ──approve (not the author)──► approved ──export──► LLaVA JSON
//                                     │                                      │
//                                     ├─ same image + question + answer as an earlier one: merged into it
//                                     └─ approved with another answer for the same image + question: both flagged
//
// A candidate is the question of the answered message, the correction as its answer (both scrubbed
// of identifiers, scrub.h), and the image the question was about: the consultation's latest upload
// made before the question (a question with no stored image yields no candidate: chat images sent
// inline are not kept). Only physicians' corrections become candidates; ratings are signals for
// review and never training targets. Flagged (contradicting) and merged (duplicate) records are
// never exported.
//
// Roles (every call checked and audited in its transaction, service/audit.h):
//   curation.sync, curation.list        physicians; admins too when admins_approve
//   curation.approve, curation.reject   physicians other than the record's author; admins when admins_approve
//   dataset.export                      admins (the CLI's local operator is one)
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "service/roles.h"
#include "service/store.h"

namespace hg::update {

using service::Principal;
using service::Store;

struct CurationOptions {
    // true: an admin may approve (and list); false: only a second physician.
    bool admins_approve = true;
};

struct Candidate {
    int64_t id = 0, feedback_id = 0, answer_id = 0, patient_id = 0, upload_id = 0, author_id = 0;
    std::string image_sha256;
    std::string image_path;  // of the upload, relative to the data directory
    std::string question, answer;  // scrubbed
    std::string status;            // candidate | approved | rejected | flagged | merged
    std::optional<int64_t> duplicate_of, reviewer_id;
    std::optional<int64_t> reviewed_at_ms;
    std::string note;
    int64_t created_at_ms = 0;
};

// One exported record: what the registry keeps of a version's dataset.
struct DatasetRecord {
    int64_t candidate_id = 0, patient_id = 0;
    std::string image_sha256, question, answer;
    std::string record_sha256;  // SHA-256 of image_sha256 "\n" question "\n" answer
};

struct ExportResult {
    std::filesystem::path json_path;
    std::vector<DatasetRecord> records;
    size_t images_written = 0;
};

// "2026-12-07", "2026-12-07T10:30:00Z" (or +hh:mm) -> ms since the epoch; BadInput otherwise.
int64_t parse_iso_time_ms(std::string_view s);
// Lower case, inner whitespace collapsed, trailing ". ? !" dropped: what makes two questions "the same".
std::string normalise_text(std::string_view s);

class CurationService {
public:
    explicit CurationService(Store& store, CurationOptions opt = {}) : store_(store), opt_(opt) {}

    // Makes a candidate of every correction that has none yet. Returns the number made.
    int sync(const Principal& p);
    // The review queue and its history, oldest first; status empty: all.
    std::vector<Candidate> list(const Principal& p, std::string_view status = {});
    // Approves a candidate (or a flagged one after the contradiction was resolved). Returns the
    // record as it now is: approved, or flagged when another approved answer contradicts it.
    Candidate approve(const Principal& p, int64_t id);
    Candidate reject(const Principal& p, int64_t id, std::string_view note = {});

    // The approved records (reviewed at or after since_ms), duplicates and contradictions left out.
    std::vector<DatasetRecord> approved(const Principal& p, int64_t since_ms = 0);
    // Writes them as LLaVA conversation JSON (what `healthgpt train --data` reads) at out_json,
    // with each image copied by content hash to <out_json's folder>/images/<sha256>. Atomic per file.
    ExportResult export_dataset(const Principal& p, const std::filesystem::path& out_json, int64_t since_ms = 0);

private:
    bool may_review(const Principal& p) const;
    Store& store_;
    CurationOptions opt_;
};

}  // namespace hg::update
