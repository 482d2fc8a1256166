// The service's store: one SQLite database file, `<data-dir>/healthgpt.db`.
//
// Guarantees (docs/SERVER.md, "Store and roles"):
// - WAL journal, synchronous=FULL: a transaction whose commit returned is on disk (the WAL is
//   fsync'ed at every commit), so no acknowledged write is lost on a crash or a power loss.
//   (NORMAL with WAL would only fsync at checkpoints and can lose the last commits on power loss.)
// - foreign_keys=ON on every connection; busy_timeout so another process (`healthgpt keys` while
//   the server runs) waits instead of failing at once.
// - Versioned schema: PRAGMA user_version is the number of the last applied migration. Opening
//   applies the pending migrations, each in its own transaction together with its new
//   user_version (a failing one leaves the database at the previous version), and refuses a
//   database whose version is newer than this program knows.
//
// Threads: one connection per Store, guarded by a mutex. Every call goes through transaction(),
// which holds the mutex for the whole transaction, so a Store may be shared by any number of
// threads (a multi-threaded server holds one). Why not a connection per thread: every service
// call writes (at least its audit row), and SQLite admits one writer at a time anyway, so more
// connections would only wait on SQLite's lock instead of ours. Slow work (hashing and writing
// an upload) is done outside transaction().
#pragma once
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>

#include "service/sqlite.h"

namespace hg::service {

struct Migration {
    int version;          // 1, 2, 3 ... in order
    const char* name;     // what it does, for messages
    const char* sql;      // statements without parameters
};

// The migrations of this program's schema (schema.cpp), oldest first.
std::span<const Migration> schema_migrations();

// Milliseconds since the Unix epoch (UTC): the time stored in every row.
int64_t now_ms();

class Store {
public:
    // Opens DIR/healthgpt.db, creating DIR (mode 0700: the database holds medical data) and the
    // database as needed, and migrates it.
    static std::filesystem::path db_file(const std::filesystem::path& data_dir);
    explicit Store(const std::filesystem::path& data_dir);
    // The same with another migration list (tests: upgrades, failing migrations).
    Store(const std::filesystem::path& data_dir, std::span<const Migration> migrations);

    const std::filesystem::path& data_dir() const { return data_dir_; }
    int schema_version();  // PRAGMA user_version

    // Runs fn(Db&) inside BEGIN IMMEDIATE ... COMMIT under the store's mutex; rolls back and
    // rethrows if fn throws. IMMEDIATE takes the write lock at once, so a read-then-write
    // transaction never fails half-way with SQLITE_BUSY.
    template <class F>
    auto transaction(F&& fn) -> std::invoke_result_t<F, Db&> {
        std::lock_guard<std::mutex> lock(mu_);
        db_.exec("BEGIN IMMEDIATE");
        try {
            if constexpr (std::is_void_v<std::invoke_result_t<F, Db&>>) {
                fn(db_);
                db_.exec("COMMIT");
            } else {
                auto r = fn(db_);
                db_.exec("COMMIT");
                return r;
            }
        } catch (...) {
            rollback_quietly();
            throw;
        }
    }

private:
    void configure();
    void migrate(std::span<const Migration> migrations);
    void rollback_quietly() noexcept;

    std::filesystem::path data_dir_;
    std::mutex mu_;
    Db db_;
};

}  // namespace hg::service
