#include "server/queue.h"

#include <algorithm>
#include <cstdio>

#include "core/thread_pool.h"

namespace hg::server {

InferenceQueue::InferenceQueue(std::shared_ptr<const Model> model, int workers, size_t capacity, SessionOptions so,
                               int threads_per_worker)
    : model_(std::move(model)), session_options_(so), threads_per_worker_(threads_per_worker), capacity_(capacity) {
    workers = std::max(1, workers);
    if (!session_options_.prefix_cache) session_options_.prefix_cache = std::make_shared<PrefixCache>(kDefaultPrefixCacheBytes);
    if (workers > 1 && !session_options_.pool) {
        const int per = threads_per_worker_ > 0 ? threads_per_worker_
                                                : std::max(1, int(std::thread::hardware_concurrency()) / workers);
        for (int i = 0; i < workers; ++i) pools_.push_back(std::make_unique<ThreadPool>(per));
    }
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { work(i); });
}

InferenceQueue::~InferenceQueue() { stop(); }

bool InferenceQueue::try_submit(Job job) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_ || jobs_.size() >= capacity_ + size_t(int(threads_.size()) - running_)) return false;
        jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
}

size_t InferenceQueue::waiting() const {
    std::lock_guard<std::mutex> lock(mu_);
    return jobs_.size();
}

int InferenceQueue::running() const {
    std::lock_guard<std::mutex> lock(mu_);
    return running_;
}

void InferenceQueue::stop() {
    std::deque<Job> dropped;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_ && threads_.empty()) return;
        stopping_ = true;
        dropped.swap(jobs_);
    }
    cv_.notify_all();
    for (Job& j : dropped) j(nullptr);
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

void InferenceQueue::work(int index) {
    SessionOptions so = session_options_;
    if (!pools_.empty()) so.pool = pools_[size_t(index)].get();
    std::unique_ptr<Session> session;
    while (true) {
        Job job;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
            if (jobs_.empty()) return;  // stopping
            job = std::move(jobs_.front());
            jobs_.pop_front();
            ++running_;
        }
        try {
            // Made on first use, in the worker's thread: a server that gets no requests allocates no KV.
            if (!session) session = std::make_unique<Session>(model_, so);
            job(session.get());
        } catch (...) {
            // a job reports its own errors to its waiter; nothing may escape a worker
            session.reset();  // a failed request may leave the session mid-way: start afresh
        }
        std::lock_guard<std::mutex> lock(mu_);
        --running_;
    }
}

}  // namespace hg::server
