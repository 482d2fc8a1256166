#include "core/thread_pool.h"

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
constexpr int kSpinIters = 1 << 14;  // ~ tens of microseconds before sleeping
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads > 0 ? n_threads : physical_cores()) {
    threads_.reserve(n_threads_ - 1);
    for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    stop_.store(true);
    generation_.fetch_add(1);
    generation_.notify_all();
    for (auto& t : threads_) t.join();
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
                generation_.wait(seen, std::memory_order_acquire);
            }
        }
        seen = g;
        if (stop_.load()) return;
        (*job_)(ith, n_threads_);
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    job_ = &fn;
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    generation_.notify_all();
    fn(0, n_threads_);
    int spins = 0;
    int p;
    while ((p = pending_.load(std::memory_order_acquire)) != 0) {
        if (++spins < kSpinIters) {
            HG_CPU_RELAX();
        } else {
            pending_.wait(p, std::memory_order_acquire);
        }
    }
    job_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    const int64_t n_chunks = (n + grain - 1) / grain;
    const int nth = static_cast<int>(std::min<int64_t>(n_threads_, n_chunks));
    if (nth <= 1) {
        fn(0, n, 0);
        return;
    }
    run([&](int ith, int) {
        if (ith >= nth) return;
        const int64_t c0 = n_chunks * ith / nth, c1 = n_chunks * (ith + 1) / nth;
        const int64_t b = c0 * grain, e = std::min(n, c1 * grain);
        if (b < e) fn(b, e, ith);
    });
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
