#include "service/sqlite.h"

#include "core/error.h"

namespace hg::service {

Db::Db(const std::filesystem::path& file) : path_(file.string()) {
    const int rc = sqlite3_open_v2(path_.c_str(), &db_,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
        const std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close(db_);
        db_ = nullptr;
        fail("%s: cannot open the database: %s", path_.c_str(), msg.c_str());
    }
    sqlite3_extended_result_codes(db_, 1);
}

Db::~Db() {
    // Every Stmt is finalized by its own destructor before the Db goes away (they are scoped
    // inside a transaction), so close() succeeds; close_v2 would defer otherwise.
    if (db_) sqlite3_close_v2(db_);
}

Db& Db::operator=(Db&& o) noexcept {
    if (this != &o) {
        if (db_) sqlite3_close_v2(db_);
        db_ = o.db_;
        path_ = std::move(o.path_);
        o.db_ = nullptr;
    }
    return *this;
}

void Db::exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errmsg(db_);
        sqlite3_free(err);
        fail("%s: %s (in: %.80s)", path_.c_str(), msg.c_str(), sql);
    }
}

Stmt::Stmt(Db& db, const char* sql) : db_(db), sql_(sql) {
    if (sqlite3_prepare_v2(db.get(), sql, -1, &stmt_, nullptr) != SQLITE_OK)
        fail("%s: cannot prepare statement: %s (in: %.80s)", db.path().c_str(), sqlite3_errmsg(db.get()), sql);
}

Stmt::~Stmt() { sqlite3_finalize(stmt_); }

namespace {
void check_bind(int rc, Db& db, const std::string& sql) {
    if (rc != SQLITE_OK) fail("%s: cannot bind a parameter: %s (in: %.80s)", db.path().c_str(),
                              sqlite3_errmsg(db.get()), sql.c_str());
}
}  // namespace

Stmt& Stmt::bind(int64_t v) {
    check_bind(sqlite3_bind_int64(stmt_, next_++, v), db_, sql_);
    return *this;
}

Stmt& Stmt::bind(std::string_view v) {
    // SQLITE_TRANSIENT: SQLite copies the bytes, so the caller's string may go away.
    check_bind(sqlite3_bind_text64(stmt_, next_++, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8), db_, sql_);
    return *this;
}

Stmt& Stmt::bind(std::span<const uint8_t> blob) {
    check_bind(sqlite3_bind_blob64(stmt_, next_++, blob.data(), blob.size(), SQLITE_TRANSIENT), db_, sql_);
    return *this;
}

Stmt& Stmt::bind(std::nullopt_t) {
    check_bind(sqlite3_bind_null(stmt_, next_++), db_, sql_);
    return *this;
}

bool Stmt::step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("%s: %s (in: %.80s)", db_.path().c_str(), sqlite3_errmsg(db_.get()), sql_.c_str());
}

void Stmt::run() {
    while (step()) {
    }
}

void Stmt::reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    next_ = 1;
}

std::string Stmt::text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p ? std::string(p, size_t(sqlite3_column_bytes(stmt_, col))) : std::string();
}

std::vector<uint8_t> Stmt::blob(int col) const {
    const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, col));
    const int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::vector<uint8_t>(p, p + n) : std::vector<uint8_t>();
}

}  // namespace hg::service
