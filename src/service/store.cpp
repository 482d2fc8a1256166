#include "service/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "core/error.h"

namespace hg::service {

namespace fs = std::filesystem;

int64_t now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

fs::path Store::db_file(const fs::path& data_dir) { return data_dir / "healthgpt.db"; }

Store::Store(const fs::path& data_dir) : Store(data_dir, schema_migrations()) {}

Store::Store(const fs::path& data_dir, std::span<const Migration> migrations) : data_dir_(data_dir) {
    HG_CHECK(!data_dir.empty(), "the data directory is empty (set --data-dir)");
    std::error_code ec;
    if (!fs::exists(data_dir, ec)) {
        fs::create_directories(data_dir, ec);
        if (ec) fail("%s: cannot create the data directory: %s", data_dir.c_str(), ec.message().c_str());
        ::chmod(data_dir.c_str(), 0700);
    }
    HG_CHECK(fs::is_directory(data_dir, ec), "%s: the data directory is not a directory", data_dir.c_str());
    // The database holds medical data: created owner-only (SQLite gives its -wal and -shm files
    // the same mode), whatever the umask and the directory's mode are.
    const fs::path file = db_file(data_dir);
    if (!fs::exists(file, ec)) {
        const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) ::close(fd);
    }
    db_ = Db(file);
    configure();
    migrate(migrations);
}

namespace {

std::string pragma_text(Db& db, const char* sql) {
    Stmt s(db, sql);
    return s.step() ? s.text(0) : std::string();
}

}  // namespace

void Store::configure() {
    // busy_timeout first: setting WAL mode itself needs the lock another process may hold.
    sqlite3_busy_timeout(db_.get(), 10000);
    const std::string mode = pragma_text(db_, "PRAGMA journal_mode=WAL");
    HG_CHECK(mode == "wal", "%s: cannot switch the database to WAL mode (journal_mode is '%s')",
             db_.path().c_str(), mode.c_str());
    db_.exec("PRAGMA synchronous=FULL");
    db_.exec("PRAGMA foreign_keys=ON");
    // Deleted data (there is little: revoked keys stay) is overwritten, not left in free pages.
    db_.exec("PRAGMA secure_delete=ON");
    HG_CHECK(pragma_text(db_, "PRAGMA foreign_keys") == "1", "%s: this SQLite does not enforce foreign keys",
             db_.path().c_str());
}

int Store::schema_version() {
    std::lock_guard<std::mutex> lock(mu_);
    Stmt s(db_, "PRAGMA user_version");
    s.step();
    return int(s.int64(0));
}

void Store::migrate(std::span<const Migration> migrations) {
    for (size_t i = 0; i < migrations.size(); ++i)
        HG_CHECK(migrations[i].version == int(i) + 1, "migration list: entry %zu has version %d (expected %zu)", i,
                 migrations[i].version, i + 1);
    const int known = int(migrations.size());
    const int current = schema_version();
    if (current > known)
        fail("%s: the database has schema version %d, newer than this program's %d; use a newer healthgpt "
             "(the database was not changed)",
             db_.path().c_str(), current, known);
    for (int v = current + 1; v <= known; ++v) {
        const Migration& m = migrations[v - 1];
        try {
            transaction([&](Db& db) {
                // Re-read inside the write lock: another process may have migrated meanwhile.
                Stmt s(db, "PRAGMA user_version");
                s.step();
                if (s.int64(0) >= v) return;
                db.exec(m.sql);
                // PRAGMA takes no bound parameters; v is our own integer, not user data.
                db.exec(("PRAGMA user_version=" + std::to_string(v)).c_str());
            });
        } catch (const hg::Error& e) {
            fail("%s: migration %d (%s) failed, the database stays at version %d: %s", db_.path().c_str(), v, m.name,
                 v - 1, e.what());
        }
    }
}

void Store::rollback_quietly() noexcept {
    // After some errors (SQLITE_FULL, IOERR) SQLite has already rolled back; then there is no
    // transaction and ROLLBACK fails, which is fine.
    if (!sqlite3_get_autocommit(db_.get())) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

}  // namespace hg::service
