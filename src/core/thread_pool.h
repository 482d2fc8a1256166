// A persistent pool of worker threads, one per physical core by default (no oversubscription).
//
// run(fn) calls fn(ith, nth) once on each of nth threads (the caller is thread 0) and returns
// when all are done. Workers spin briefly before sleeping on a futex, so back-to-back ops in a
// forward pass do not pay a wake-up each. Calls to run() must not be nested or concurrent.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
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

    // Splits [0, n) into contiguous ranges, one per thread, each a multiple of `grain`
    // (except the last); fn(begin, end, ith) is called for non-empty ranges only.
    void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end, int ith)>& fn,
                      int64_t grain = 1);

private:
    void worker(int ith);

    int n_threads_;
    std::vector<std::thread> threads_;
    const std::function<void(int, int)>* job_ = nullptr;
    std::atomic<uint32_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<bool> stop_{false};
};

// A pool shared by the process, created on first use with the default size.
// HEALTHGPT_THREADS overrides the size.
ThreadPool& default_pool();

}  // namespace hg
