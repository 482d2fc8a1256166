// The inference queue: a fixed number of workers, each with its own Session over the one shared
// Model, taking jobs from one bounded FIFO. A full queue refuses at once (the route answers 429
// with Retry-After) instead of letting waits grow without bound.
//
// Why one Session per worker and not per conversation: a Session holds a KV cache of the model's
// context (MBs to GBs), so their number must be bounded by the machine, not by the clients. A
// request carries its whole conversation (OpenAI style), and a worker's Session reuses the KV of
// the longest common prefix with its previous request (Generator's prefix reuse), so a follow-up
// that lands on the same worker does not recompute the image. Across workers, the sessions share
// one PrefixCache (SessionOptions::prefix_cache; made here when the options have none): the KV of
// a prompt up to its last image is kept there, so a second question about the same image (same
// pixels, same plugin file) reuses it on whichever worker it runs. Each worker has its own ThreadPool
// (a ThreadPool runs one call at a time); with one worker it is the process's default pool.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/pipeline.h"

namespace hg::server {

class InferenceQueue {
public:
    // A job runs on a worker with that worker's Session; it is called with nullptr instead when
    // the queue shuts down before it ran (so its waiter is always released).
    using Job = std::function<void(Session*)>;

    // `workers` >= 1 sessions; `capacity` >= 0 jobs may wait beyond those running.
    // `threads_per_worker` <= 0: the default pool for one worker, else physical cores / workers.
    // so.prefix_cache null: a shared one of kDefaultPrefixCacheBytes (a PrefixCache(0) turns it off).
    InferenceQueue(std::shared_ptr<const Model> model, int workers, size_t capacity, SessionOptions so = {},
                   int threads_per_worker = 0);
    ~InferenceQueue();  // stop()
    InferenceQueue(const InferenceQueue&) = delete;
    InferenceQueue& operator=(const InferenceQueue&) = delete;

    // Queues a job; false (the job is not kept) when `capacity` jobs are already waiting.
    bool try_submit(Job job);
    size_t waiting() const;  // jobs queued, not yet running
    int running() const;     // jobs on a worker now
    int workers() const { return int(threads_.size()); }
    size_t capacity() const { return capacity_; }
    const PrefixCache& prefix_cache() const { return *session_options_.prefix_cache; }
    static constexpr size_t kDefaultPrefixCacheBytes = size_t(1) << 30;  // 1 GiB of cached KV
    // Finishes the running jobs, releases the waiting ones with nullptr, joins the workers.
    void stop();

private:
    void work(int index);

    std::shared_ptr<const Model> model_;
    SessionOptions session_options_;
    int threads_per_worker_;
    size_t capacity_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Job> jobs_;
    int running_ = 0;
    bool stopping_ = false;
    std::vector<std::unique_ptr<ThreadPool>> pools_;
    std::vector<std::thread> threads_;
};

}  // namespace hg::server
