// The schema as a list of migrations. A released migration is never edited: a change is a new
// entry at the end (Store applies the missing ones in order, each in one transaction).
// Times are milliseconds since the Unix epoch (UTC). Text limits are enforced by the service
// (validate.h) and again here by CHECKs, so a bug in one layer cannot store an invalid row.
#include "service/store.h"

namespace hg::service {

namespace {

constexpr const char* kV1 = R"sql(
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    role        TEXT NOT NULL CHECK (role IN ('patient', 'physician', 'admin')),
    created_at  INTEGER NOT NULL
);

-- An API key is 'hgk_' <key_id: 16 hex> '_' <secret: 64 hex>. Only the public key_id and
-- SHA-256(salt || secret bytes) are stored; the secret is shown once when the key is made.
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    key_id      TEXT NOT NULL UNIQUE CHECK (length(key_id) = 16),
    user_id     INTEGER NOT NULL REFERENCES users(id),
    salt        BLOB NOT NULL CHECK (length(salt) = 16),
    hash        BLOB NOT NULL CHECK (length(hash) = 32),
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE consultations (
    id          INTEGER PRIMARY KEY,
    patient_id  INTEGER NOT NULL REFERENCES users(id),
    title       TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    created_at  INTEGER NOT NULL
);
CREATE INDEX consultations_patient ON consultations(patient_id);

CREATE TABLE consultation_shares (
    consultation_id INTEGER NOT NULL REFERENCES consultations(id),
    physician_id    INTEGER NOT NULL REFERENCES users(id),
    shared_by       INTEGER REFERENCES users(id),   -- NULL: the local operator (CLI)
    shared_at       INTEGER NOT NULL,
    PRIMARY KEY (consultation_id, physician_id)
);
CREATE INDEX consultation_shares_physician ON consultation_shares(physician_id);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    consultation_id INTEGER NOT NULL REFERENCES consultations(id),
    author_id       INTEGER NOT NULL REFERENCES users(id),
    text            TEXT NOT NULL CHECK (length(text) >= 1),
    created_at      INTEGER NOT NULL
);
CREATE INDEX messages_consultation ON messages(consultation_id);

-- Upload bytes live content-addressed under <data-dir>/uploads/; path is relative to data-dir.
CREATE TABLE uploads (
    id              INTEGER PRIMARY KEY,
    consultation_id INTEGER NOT NULL REFERENCES consultations(id),
    uploader_id     INTEGER NOT NULL REFERENCES users(id),
    sha256          TEXT NOT NULL CHECK (length(sha256) = 64),
    path            TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    filename        TEXT NOT NULL,
    metadata        TEXT NOT NULL CHECK (json_valid(metadata)),
    created_at      INTEGER NOT NULL
);
CREATE INDEX uploads_consultation ON uploads(consultation_id);

-- A model answer names the model and the plugin (SHA-256 of its GGUF) that produced it.
CREATE TABLE answers (
    id              INTEGER PRIMARY KEY,
    consultation_id INTEGER NOT NULL REFERENCES consultations(id),
    question_id     INTEGER NOT NULL REFERENCES messages(id),
    text            TEXT NOT NULL,
    model           TEXT NOT NULL CHECK (length(model) >= 1),
    plugin_sha256   TEXT NOT NULL CHECK (length(plugin_sha256) = 64),
    created_at      INTEGER NOT NULL
);
CREATE INDEX answers_consultation ON answers(consultation_id);

-- A physician's review of an answer: a rating 1..5, a corrected answer, a comment (any may be
-- absent, not all).
CREATE TABLE feedback (
    id              INTEGER PRIMARY KEY,
    answer_id       INTEGER NOT NULL REFERENCES answers(id),
    physician_id    INTEGER NOT NULL REFERENCES users(id),
    rating          INTEGER CHECK (rating BETWEEN 1 AND 5),
    correction      TEXT,
    comment         TEXT,
    created_at      INTEGER NOT NULL,
    CHECK (rating IS NOT NULL OR correction IS NOT NULL OR comment IS NOT NULL)
);
CREATE INDEX feedback_answer ON feedback(answer_id);

-- Who read or wrote what, when, allowed or refused. user_id NULL: the local operator or an
-- unauthenticated caller. Append-only: the triggers abort any UPDATE or DELETE.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    user_id     INTEGER REFERENCES users(id),
    actor       TEXT NOT NULL,
    key_id      TEXT,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    allowed     INTEGER NOT NULL CHECK (allowed IN (0, 1)),
    detail      TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
-- INSERT OR REPLACE deletes the row it replaces without firing DELETE triggers (unless
-- recursive_triggers is on): refuse an insert that names an existing id.
CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log
WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
)sql";

// The update loop (docs/UPDATES.md). Training candidates come from physicians' corrections
// (feedback.correction), scrubbed of identifiers; one enters a dataset only once approved by
// someone other than its author. Plugin versions are the registry: every trained plugin with
// its parent, data, configuration, gate report and who promoted it.
constexpr const char* kV2 = R"sql(
CREATE TABLE training_candidates (
    id              INTEGER PRIMARY KEY,
    feedback_id     INTEGER NOT NULL UNIQUE REFERENCES feedback(id),
    answer_id       INTEGER NOT NULL REFERENCES answers(id),
    patient_id      INTEGER NOT NULL REFERENCES users(id),   -- for the split by patient
    upload_id       INTEGER NOT NULL REFERENCES uploads(id),
    image_sha256    TEXT NOT NULL CHECK (length(image_sha256) = 64),
    question        TEXT NOT NULL CHECK (length(question) >= 1),   -- scrubbed
    question_norm   TEXT NOT NULL,
    answer          TEXT NOT NULL CHECK (length(answer) >= 1),     -- the correction, scrubbed
    answer_norm     TEXT NOT NULL,
    author_id       INTEGER NOT NULL REFERENCES users(id),
    status          TEXT NOT NULL CHECK (status IN ('candidate', 'approved', 'rejected', 'flagged', 'merged')),
    duplicate_of    INTEGER REFERENCES training_candidates(id),
    reviewer_id     INTEGER REFERENCES users(id),
    reviewed_at     INTEGER,
    note            TEXT NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    CHECK (status <> 'merged' OR duplicate_of IS NOT NULL)
);
CREATE INDEX training_candidates_key ON training_candidates(image_sha256, question_norm);
CREATE INDEX training_candidates_status ON training_candidates(status);

-- path: relative to the data directory; the file is written (atomically) before its row.
CREATE TABLE plugin_versions (
    id            INTEGER PRIMARY KEY,
    plugin        TEXT NOT NULL CHECK (length(plugin) BETWEEN 1 AND 200),  -- the plugin it updates ("com")
    parent_id     INTEGER REFERENCES plugin_versions(id),  -- NULL: the model folder's own file
    path          TEXT NOT NULL,
    sha256        TEXT NOT NULL CHECK (length(sha256) = 64),
    status        TEXT NOT NULL CHECK (status IN ('candidate', 'promoted', 'retired', 'rejected')),
    dataset       TEXT NOT NULL CHECK (json_valid(dataset)),   -- record ids and their hashes
    train_config  TEXT NOT NULL CHECK (json_valid(train_config)),
    report        TEXT NOT NULL CHECK (json_valid(report)),    -- the gate's report
    gate_passed   INTEGER NOT NULL CHECK (gate_passed IN (0, 1)),
    created_by    INTEGER REFERENCES users(id),
    created_at    INTEGER NOT NULL,
    promoted_by   INTEGER REFERENCES users(id),
    promoted_at   INTEGER
);
-- At most one promoted version per plugin: a promotion retires the previous one in the same
-- transaction, and the database refuses a second.
CREATE UNIQUE INDEX plugin_versions_one_promoted ON plugin_versions(plugin) WHERE status = 'promoted';
)sql";

constexpr Migration kMigrations[] = {
    {1, "users, keys, consultations, messages, uploads, answers, feedback, audit log", kV1},
    {2, "update loop: training candidates, plugin versions", kV2},
};

}  // namespace

std::span<const Migration> schema_migrations() { return kMigrations; }

}  // namespace hg::service
