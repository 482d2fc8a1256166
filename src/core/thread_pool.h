// A persistent pool of worker threads, one per physical core by default (no oversubscription).
//
// run(fn) calls fn(ith, nth) once on each of nth threads (the caller is thread 0) and returns
// when all are done. parallel_for(n, fn) splits [0, n) into chunks that the threads claim one at
// a time (the caller works too) and returns as soon as every chunk is done: a thread that is late
// (not yet woken, or preempted by another process on a shared machine) simply gets fewer chunks,
// and the caller never waits for a thread that has not started. Workers spin briefly before
// sleeping on a futex, so back-to-back ops in a forward pass do not pay a wake-up each.
// Calls to run() / parallel_for() must not be nested or concurrent. An exception thrown by fn on
// any thread is caught there; the call still waits for all threads to leave fn (they share its
// captures), skips the chunks not yet started, and rethrows the first exception in the caller.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hg {

class ThreadPool {
public:
    // n_threads <= 0: physical_cores().
    explicit ThreadPool(int n_threads = 0);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    void run(const std::function<void(int ith, int nth)>& fn);

    // Splits [0, n) into contiguous chunks, each a multiple of `grain` (except the last), at most
    // a few per thread; fn(begin, end, ith) is called once per chunk, by whichever thread claims
    // it (ith: that thread's index, for per-thread scratch). Chunks never overlap and cover [0, n).
    void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end, int ith)>& fn,
                      int64_t grain = 1);

private:
    using RangeFn = std::function<void(int64_t, int64_t, int)>;
    void worker(int ith);
    void wake_workers();
    // Claims and runs chunks of the current parallel_for job while its tag is `tag`.
    void work_chunks(uint32_t tag, int ith);
    void record_error();   // keeps the first exception of the current call
    void rethrow_error();  // in the caller, after every thread has left fn

    int n_threads_;
    std::vector<std::thread> threads_;
    std::atomic<uint32_t> generation_{0};  // bumped for every job; workers wait for a change
    std::atomic<int> sleepers_{0};         // workers blocked in generation_.wait()
    std::atomic<bool> stop_{false};

    // run(): every worker calls job_ once, the caller waits for pending_ to reach 0.
    std::atomic<const std::function<void(int, int)>*> job_{nullptr};
    std::atomic<int> pending_{0};

    // parallel_for(): chunks claimed through ticket_ = (tag << 32) | next chunk. The tag changes
    // with every job, so a late worker's claim on a finished job fails and it touches nothing.
    // The fields are atomics because a late worker may read them while the caller sets up the
    // next job (it then discards what it read: its claim fails).
    alignas(64) std::atomic<uint64_t> ticket_{0};
    alignas(64) std::atomic<int64_t> chunks_done_{0};
    std::atomic<const RangeFn*> range_fn_{nullptr};
    std::atomic<int64_t> range_n_{0}, range_grain_{1}, range_chunks_{0};
    uint32_t tag_ = 0;

    std::mutex error_mutex_;
    std::exception_ptr error_;
    std::atomic<bool> failed_{false};
};

// A pool shared by the process, created on first use with the default size.
// HEALTHGPT_THREADS overrides the size.
ThreadPool& default_pool();

}  // namespace hg
