#include "core/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <mutex>
#include <cstdlib>

#include "core/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HG_CPU_RELAX() _mm_pause()
#else
#define HG_CPU_RELAX() ((void)0)
#endif

namespace hg {

namespace {
constexpr int kSpinIters = 1 << 14;   // ~ tens of microseconds before a worker sleeps
constexpr int kYieldAfter = 1 << 10;  // a waiting caller yields its core after this many spins
constexpr int kChunksPerThread = 8;   // parallel_for granularity: balance vs. claims

// Decodes a job kind from the generation: even = run(), odd = parallel_for().
inline bool is_range_job(uint32_t g) { return g & 1; }
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads > 0 ? n_threads : physical_cores()) {
    threads_.reserve(n_threads_ - 1);
    for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    stop_.store(true);
    generation_.fetch_add(2);
    generation_.notify_all();
    for (auto& t : threads_) t.join();
}

void ThreadPool::wake_workers() {
    // Only a sleeping worker needs the futex wake (a syscall); spinning ones see the new value.
    if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
}

void ThreadPool::worker(int ith) {
    // Generation 0 is the value at construction; a worker that starts late must still
    // take the first job, so it must not read the current value here.
    uint32_t seen = 0;
    for (;;) {
        // Wait for a new generation: spin, then sleep.
        uint32_t g;
        int spins = 0;
        while ((g = generation_.load(std::memory_order_acquire)) == seen) {
            if (++spins < kSpinIters) {
                HG_CPU_RELAX();
            } else {
                sleepers_.fetch_add(1, std::memory_order_seq_cst);
                // re-check after announcing ourselves: a job published in between is not missed
                if (generation_.load(std::memory_order_seq_cst) == seen) generation_.wait(seen, std::memory_order_acquire);
                sleepers_.fetch_sub(1, std::memory_order_relaxed);
                spins = 0;
            }
        }
        seen = g;
        if (stop_.load()) return;
        if (is_range_job(g)) {
            // The job may already be finished (we were late): work_chunks then claims nothing.
            work_chunks((uint32_t)(ticket_.load(std::memory_order_acquire) >> 32), ith);
        } else {
            try {
                (*job_.load(std::memory_order_acquire))(ith, n_threads_);
            } catch (...) {
                record_error();
            }
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
        }
    }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    job_.store(&fn, std::memory_order_relaxed);
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    // next even generation
    const uint32_t g = generation_.load(std::memory_order_relaxed);
    generation_.store(g + (is_range_job(g) ? 1 : 2), std::memory_order_seq_cst);
    wake_workers();
    try {
        fn(0, n_threads_);
    } catch (...) {
        record_error();  // still wait: the workers use fn
    }
    int spins = 0;
    int p;
    while ((p = pending_.load(std::memory_order_acquire)) != 0) {
        if (++spins < kSpinIters) {
            HG_CPU_RELAX();
        } else {
            pending_.wait(p, std::memory_order_acquire);
        }
    }
    job_.store(nullptr, std::memory_order_relaxed);
    rethrow_error();
}

void ThreadPool::record_error() {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
    failed_.store(true, std::memory_order_relaxed);
}

void ThreadPool::rethrow_error() {
    if (!failed_.load(std::memory_order_relaxed)) return;
    std::exception_ptr e;
    {
        std::lock_guard<std::mutex> lock(error_mutex_);
        e = error_;
        error_ = nullptr;
        failed_.store(false, std::memory_order_relaxed);
    }
    std::rethrow_exception(e);
}

void ThreadPool::work_chunks(uint32_t tag, int ith) {
    for (;;) {
        uint64_t t = ticket_.load(std::memory_order_acquire);
        for (;;) {
            if ((uint32_t)(t >> 32) != tag) return;  // another job now: ours is finished
            const int64_t c = (int64_t)(uint32_t)t;
            // Acquire: if any field below is already the next job's, the caller closed the ticket
            // before writing it (parallel_for), so the compare-exchange on `t` must fail.
            const int64_t n_chunks = range_chunks_.load(std::memory_order_acquire);
            if (c >= n_chunks) return;
            const RangeFn* fn = range_fn_.load(std::memory_order_acquire);
            const int64_t n = range_n_.load(std::memory_order_acquire);
            const int64_t grain = range_grain_.load(std::memory_order_acquire);
            // The fields belong to job `tag` if this claim succeeds: while a chunk is unclaimed the
            // job cannot finish, and the caller closes the ticket before it sets up the next job,
            // so a ticket that still reads `t` means no field has changed since.
            if (ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
                const int64_t units = (n + grain - 1) / grain;
                const int64_t b = std::min(n, units * c / n_chunks * grain);
                const int64_t e = std::min(n, units * (c + 1) / n_chunks * grain);
                // After a failure the remaining chunks are only counted (the caller rethrows).
                if (b < e && !failed_.load(std::memory_order_relaxed)) {
                    try {
                        (*fn)(b, e, ith);
                    } catch (...) {
                        record_error();
                    }
                }
                chunks_done_.fetch_add(1, std::memory_order_acq_rel);
                break;
            }
        }
    }
}

void ThreadPool::parallel_for(int64_t n, const RangeFn& fn, int64_t grain) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    const int64_t units = (n + grain - 1) / grain;
    const int64_t n_chunks = std::min<int64_t>(units, (int64_t)n_threads_ * kChunksPerThread);
    if (n_threads_ == 1 || n_chunks <= 1) {
        fn(0, n, 0);
        return;
    }
    // Close the previous job's ticket first: its chunks are all claimed and done, but a late
    // worker may hold its last value (tag, n_chunks) and be about to read the fields. Without the
    // close it could read this job's larger chunk count, pass the bound check and win its
    // compare-exchange on the unchanged old ticket — a chunk past the end: a chunk of this job run
    // twice, and one count too many in chunks_done_, so the wait below never ended (the hang of
    // thread_pool_test BackToBackJobsGrowingChunkCountNeverHangOrRepeat). The closed value has
    // c = 0xFFFFFFFF, past any chunk count, so nobody claims from it either.
    ticket_.store(((uint64_t)tag_ << 32) | 0xFFFFFFFFull, std::memory_order_relaxed);
    // Set up the job (release: a worker that reads a new field also sees the closed ticket), then
    // publish it with a new tag and wake the workers.
    range_fn_.store(&fn, std::memory_order_release);
    range_n_.store(n, std::memory_order_release);
    range_grain_.store(grain, std::memory_order_release);
    range_chunks_.store(n_chunks, std::memory_order_release);
    chunks_done_.store(0, std::memory_order_relaxed);
    const uint32_t tag = ++tag_;
    ticket_.store((uint64_t)tag << 32, std::memory_order_release);
    const uint32_t g = generation_.load(std::memory_order_relaxed);
    generation_.store(g + (is_range_job(g) ? 2 : 1), std::memory_order_seq_cst);  // next odd generation
    wake_workers();
    work_chunks(tag, 0);
    // Wait for chunks other threads are still running; yield the core if that takes long (on a
    // shared machine the thread we wait for may be waiting for a core).
    int spins = 0;
    while (chunks_done_.load(std::memory_order_acquire) != n_chunks) {
        if (++spins < kYieldAfter) HG_CPU_RELAX();
        else sched_yield();
    }
    rethrow_error();
}

ThreadPool& default_pool() {
    static ThreadPool pool([] {
        if (const char* env = std::getenv("HEALTHGPT_THREADS")) {
            int n = std::atoi(env);
            if (n > 0) return n;
        }
        return 0;
    }());
    return pool;
}

}  // namespace hg
