// Crash safety: a child process files feedback in a loop through the service and reports each
// acknowledged (committed) row through a pipe; the parent kill -9's it at a random moment,
// reopens the database and checks PRAGMA integrity_check == ok, that every acknowledged row is
// present with its content, and that each has its audit row (written in the same transaction).
// Repeated several times on the same database. This covers process crashes; power loss is
// covered by synchronous=FULL (the WAL is fsync'ed at every commit), which this test checks is set
// but cannot simulate.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <thread>

#include "service/consultations.h"
#include "service_test_util.h"

using namespace svctest;

namespace {

struct Ack {
    int64_t id, seq;
};

[[noreturn]] void child_loop(const fs::path& dir, const std::string& key, int64_t answer_id, int fd, int64_t first_seq) {
    try {
        Store store(dir);
        const Principal doc = KeyService(store).authenticate(key);
        ConsultationService svc(store);
        for (int64_t seq = first_seq;; ++seq) {
            const std::string text = "correction " + std::to_string(seq);
            const Ack ack{svc.add_feedback(doc, answer_id, int(seq % 5) + 1, std::string_view(text), std::nullopt), seq};
            // Reported only after add_feedback returned, i.e. after COMMIT: this is "acknowledged".
            if (::write(fd, &ack, sizeof ack) != sizeof ack) _exit(3);
        }
    } catch (...) {
        _exit(2);
    }
}

}  // namespace

TEST(ServiceCrash, KilledWriterLosesNoAcknowledgedRow) {
    const fs::path dir = fresh_dir("crash");
    std::string key;
    int64_t answer_id = 0;
    {
        Store store(dir);
        KeyService keys(store);
        const Principal pat = make_user(store, "pat", "patient");
        const NewKey dk = keys.add_key(Principal::local_operator(), "doc", "physician");
        key = dk.key;
        ConsultationService svc(store);
        const int64_t c = svc.create(pat, "crash test");
        const int64_t m = svc.add_message(pat, c, "question");
        answer_id = svc.record_answer(pat, c, m, "answer", "healthgpt-nano", std::string(64, 'd'));
        svc.share(pat, c, dk.user_id);
    }

    const unsigned seed = std::random_device{}();
    std::mt19937 rng(seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    constexpr int kKills = 6;
    const auto t0 = std::chrono::steady_clock::now();
    std::map<int64_t, int64_t> acked;  // id -> seq, over all rounds
    for (int round = 0; round < kKills; ++round) {
        int fds[2];
        ASSERT_EQ(::pipe(fds), 0);
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::close(fds[0]);
            child_loop(dir, key, answer_id, fds[1], int64_t(round) * 1000000);  // seqs unique over rounds
        }
        ::close(fds[1]);
        // Wait for the first acknowledged row, so the kill lands while the child is writing, then
        // a random 5..250 ms more.
        Ack ack{};
        ASSERT_EQ(::read(fds[0], &ack, sizeof ack), ssize_t(sizeof ack)) << "child wrote nothing (round " << round << ")";
        acked[ack.id] = ack.seq;
        std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(5000, 250000)(rng)));
        ASSERT_EQ(::kill(pid, SIGKILL), 0);
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child ended by itself: " << status;
        // Everything reported before the kill is still in the pipe.
        ssize_t n;
        while ((n = ::read(fds[0], &ack, sizeof ack)) == ssize_t(sizeof ack)) acked[ack.id] = ack.seq;
        ::close(fds[0]);

        Store store(dir);
        ASSERT_EQ(query_text(store, "PRAGMA integrity_check"), "ok") << "round " << round;
        store.transaction([&](Db& db) {
            Stmt row(db, "SELECT correction FROM feedback WHERE id = ?");
            Stmt audit(db, "SELECT count(*) FROM audit_log WHERE action = 'feedback.add' AND allowed = 1 AND detail = ?");
            for (const auto& [id, seq] : acked) {
                row.reset();
                row.bind(id);
                ASSERT_TRUE(row.step()) << "acknowledged feedback " << id << " lost (round " << round << ")";
                EXPECT_EQ(row.text(0), "correction " + std::to_string(seq));
                audit.reset();
                audit.bind("feedback:" + std::to_string(id));
                ASSERT_TRUE(audit.step());
                EXPECT_EQ(audit.int64(0), 1) << "feedback " << id << " without its audit row";
            }
        });
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[crash] %d kills, %zu acknowledged rows verified, %.1f s\n", kKills, acked.size(), secs);
    EXPECT_GT(acked.size(), size_t(kKills));
    EXPECT_LT(secs, 20.0);
}
