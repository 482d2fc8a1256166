// Thin RAII wrappers over the SQLite C API: Db owns a sqlite3*, Stmt a prepared sqlite3_stmt*.
// Every statement is prepared and takes its values through bind() (never string-built SQL with
// user data). Errors throw hg::Error naming the statement and SQLite's message.
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hg::service {

class Db {
public:
    Db() = default;
    // Opens (creating if absent) the file read-write; the handle is used by one thread at a time
    // (SQLITE_OPEN_NOMUTEX: the Store's own mutex serialises access, see store.h).
    explicit Db(const std::filesystem::path& file);
    ~Db();
    Db(Db&& o) noexcept : db_(o.db_), path_(std::move(o.path_)) { o.db_ = nullptr; }
    Db& operator=(Db&& o) noexcept;
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    sqlite3* get() const { return db_; }
    const std::string& path() const { return path_; }
    // Runs SQL without parameters (schema, pragmas, BEGIN/COMMIT); may hold several statements.
    void exec(const char* sql);
    int64_t last_insert_id() const { return sqlite3_last_insert_rowid(db_); }
    int changes() const { return sqlite3_changes(db_); }

private:
    sqlite3* db_ = nullptr;
    std::string path_;
};

class Stmt {
public:
    Stmt(Db& db, const char* sql);
    ~Stmt();
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    // Binds parameters 1, 2, ... in order; returns *this so calls chain.
    Stmt& bind(int64_t v);
    Stmt& bind(int v) { return bind(int64_t(v)); }
    Stmt& bind(std::string_view v);
    Stmt& bind(const char* v) { return bind(std::string_view(v)); }
    Stmt& bind(const std::string& v) { return bind(std::string_view(v)); }
    Stmt& bind(std::span<const uint8_t> blob);
    Stmt& bind(std::nullopt_t);
    template <class T>
    Stmt& bind(const std::optional<T>& v) {
        return v ? bind(*v) : bind(std::nullopt);
    }

    // One step: true while a row is available, false when done. Throws on an error (a constraint
    // or trigger abort included), naming the statement.
    bool step();
    // step() for statements that return no rows.
    void run();
    void reset();  // for re-use with new bindings

    int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
    bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
    std::string text(int col) const;
    std::vector<uint8_t> blob(int col) const;
    std::optional<int64_t> opt_int64(int col) const {
        return is_null(col) ? std::nullopt : std::optional<int64_t>(int64(col));
    }

private:
    Db& db_;
    sqlite3_stmt* stmt_ = nullptr;
    int next_ = 1;
    std::string sql_;
};

}  // namespace hg::service
