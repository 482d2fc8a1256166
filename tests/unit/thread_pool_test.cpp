// ThreadPool: parallel_for's claimed chunks cover [0, n) exactly once, back-to-back jobs of both
// kinds (run / parallel_for) interleave correctly, also with more threads than cores (workers
// then are often late or asleep and the caller finishes jobs alone).
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/thread_pool.h"

using namespace hg;

TEST(ThreadPool, ParallelForChunksCoverOnceAndRespectGrain) {
    for (int threads : {1, 2, 3, 5}) {
        ThreadPool pool(threads);
        for (int64_t n : {1, 2, 7, 16, 17, 100, 1000, 12345}) {
            for (int64_t grain : {1, 4, 16, 64}) {
                std::vector<std::atomic<int>> hit(n);
                std::atomic<int> calls{0};
                pool.parallel_for(
                    n,
                    [&](int64_t b, int64_t e, int ith) {
                        ASSERT_LT(b, e);
                        ASSERT_GE(ith, 0);
                        ASSERT_LT(ith, threads);
                        ASSERT_EQ(b % grain, 0) << "chunk start not a multiple of the grain";
                        if (e != n) {
                            ASSERT_EQ(e % grain, 0);
                        }
                        for (int64_t i = b; i < e; ++i) hit[i]++;
                        calls++;
                    },
                    grain);
                for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hit[i].load(), 1) << "n " << n << " grain " << grain;
                ASSERT_GE(calls.load(), 1);
            }
        }
    }
}

TEST(ThreadPool, InterleavedJobsOversubscribed) {
    ThreadPool pool(4);  // more threads than the 2-core dev machine has
    std::atomic<int64_t> sum{0};
    int64_t expect = 0;
    for (int it = 0; it < 1500; ++it) {
        if (it % 3 == 0) {
            pool.run([&](int ith, int nth) {
                EXPECT_EQ(nth, 4);
                sum += ith + 1;
            });
            expect += 1 + 2 + 3 + 4;
        } else {
            const int64_t n = 1 + it % 97;
            pool.parallel_for(n, [&](int64_t b, int64_t e, int) { sum += e - b; });
            expect += n;
        }
        ASSERT_EQ(sum.load(), expect) << "iteration " << it;
    }
}

// Stress: many short jobs of both kinds on pools of 2, 3 and 8 threads (8 > the cores of the dev
// machine, so workers are often preempted, late or asleep), chunks of random cost (some yield or
// sleep, as a preempted thread would). Per job: every index covered exactly once, the index ith
// never used by two chunks at the same time (per-thread scratch stays private), every run() call
// sees each ith in [0, nth) exactly once.
TEST(ThreadPool, StressRandomJobsPerThreadIndexExclusive) {
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    auto next = [&rng] {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    };
    for (int threads : {2, 3, 8}) {
        ThreadPool pool(threads);
        std::vector<std::atomic<int>> busy(threads);
        std::vector<std::atomic<int>> hit(4096);
        const int iters = threads == 8 ? 3000 : 6000;
        for (int it = 0; it < iters; ++it) {
            if (next() % 5 == 0) {
                std::vector<std::atomic<int>> seen(threads);
                pool.run([&](int ith, int nth) {
                    ASSERT_EQ(nth, threads);
                    seen[ith]++;
                });
                for (int i = 0; i < threads; ++i) ASSERT_EQ(seen[i].load(), 1) << "run: ith " << i << " at " << it;
                continue;
            }
            const int64_t n = 1 + (int64_t)(next() % 4096);
            const int64_t grain = 1 + (int64_t)(next() % 8);
            const uint64_t mode = next() % 16;
            std::atomic<bool> overlap{false};
            pool.parallel_for(
                n,
                [&](int64_t b, int64_t e, int ith) {
                    if (busy[ith].exchange(1) != 0) overlap = true;
                    for (int64_t i = b; i < e; ++i) hit[i].fetch_add(1, std::memory_order_relaxed);
                    if (mode == 0 && (b / grain) % 3 == 0) std::this_thread::yield();
                    if (mode == 1 && b == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
                    busy[ith].store(0);
                },
                grain);
            ASSERT_FALSE(overlap.load()) << "two chunks ran with the same ith at iteration " << it;
            for (int64_t i = 0; i < n; ++i) {
                ASSERT_EQ(hit[i].load(), 1) << "index " << i << " of " << n << " at iteration " << it;
                hit[i].store(0);
            }
        }
    }
}

// Pools created and destroyed right away (workers may not have started yet), with 0, 1 or 2
// jobs: construction, the first job and shutdown never race.
TEST(ThreadPool, CreateDestroyRepeatedly) {
    for (int rep = 0; rep < 300; ++rep) {
        ThreadPool pool(2 + rep % 3);
        std::atomic<int64_t> sum{0};
        if (rep % 3 >= 1) pool.parallel_for(100, [&](int64_t b, int64_t e, int) { sum += e - b; });
        if (rep % 3 == 2) pool.run([&](int, int) { sum += 1; });
        ASSERT_EQ(sum.load(), rep % 3 == 0 ? 0 : rep % 3 == 1 ? 100 : 100 + pool.size());
    }
}

// An exception in fn (on the caller or a worker) reaches the caller after every thread has left
// fn; the pool stays usable.
TEST(ThreadPool, ExceptionsPropagateAndPoolSurvives) {
    ThreadPool pool(3);
    for (int rep = 0; rep < 200; ++rep) {
        std::atomic<int> inside{0};
        const int64_t bad = rep % 97;
        EXPECT_THROW(pool.parallel_for(97,
                                       [&](int64_t b, int64_t e, int) {
                                           inside++;
                                           if (bad >= b && bad < e) throw std::runtime_error("chunk failed");
                                           inside--;
                                       }),
                     std::runtime_error);
        EXPECT_EQ(inside.load(), 1);  // only the throwing chunk left early, and nothing runs after
        EXPECT_THROW(pool.run([&](int ith, int) {
            if (ith == rep % 3) throw std::logic_error("thread failed");
        }),
                     std::logic_error);
        std::atomic<int64_t> sum{0};
        pool.parallel_for(1000, [&](int64_t b, int64_t e, int) { sum += e - b; });
        ASSERT_EQ(sum.load(), 1000);
    }
}

// The race behind a training run (and once a tiny-model `ask`) that spun forever: a worker that
// loaded the ticket of a job whose chunks were all claimed (c == n_chunks) could read the NEXT
// job's chunk count while the caller was still setting that job up, pass the bound check and win
// its compare-exchange on the old ticket — claiming a chunk past the end: a chunk of the next job
// ran twice, and its extra count in chunks_done_ made the caller wait forever. The window is a
// few instructions wide, so this runs many tiny jobs whose chunk counts alternate small / large
// (the next job must have more chunks) on more threads than cores, in a child process with a
// watchdog: a hang fails the test instead of hanging CI; every job must cover each index once.
TEST(ThreadPool, BackToBackJobsGrowingChunkCountNeverHangOrRepeat) {
    constexpr int kSeconds = 6;
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ThreadPool pool(3);
        std::vector<std::atomic<int>> hit(64);
        const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(kSeconds);
        int64_t jobs = 0;
        while (std::chrono::steady_clock::now() < end) {
            for (int k = 0; k < 1000; ++k, ++jobs) {
                const int64_t n = (jobs & 1) ? 24 : 2;  // 24 chunks after 2
                pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
                    for (int64_t i = b; i < e; ++i) hit[i].fetch_add(1, std::memory_order_relaxed);
                });
                for (int64_t i = 0; i < n; ++i)
                    if (hit[i].exchange(0) != 1) _exit(3);  // an index run twice (or never)
            }
        }
        _exit(0);
    }
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kSeconds + 20);
    pid_t r = 0;
    while ((r = waitpid(child, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (r == 0) {
        kill(child, SIGKILL);
        waitpid(child, &status, 0);
        FAIL() << "parallel_for hung (the child ran past its " << kSeconds << " s budget by 20 s)";
    }
    ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
    ASSERT_EQ(WEXITSTATUS(status), 0) << "a chunk ran twice or was skipped";
}
