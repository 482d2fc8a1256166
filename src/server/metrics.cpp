#include "server/metrics.h"

#include <cstdio>

#include "runtime/kv_cache.h"

namespace hg::server {

namespace {
std::string num(double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.9g", v);
    return b;
}
}  // namespace

void Histogram::observe(double v) {
    size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help) const {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
    uint64_t cum = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
        cum += counts_[i];
        out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cum) + "\n";
    }
    cum += counts_.back();
    out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cum) + "\n";
    out += name + "_sum " + num(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      duration_({0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}) {}

void Metrics::count_request(const std::string& route, int status) {
    std::lock_guard<std::mutex> l(mu_);
    ++requests_[{route, status}];
}
void Metrics::count_error(const std::string& type) {
    std::lock_guard<std::mutex> l(mu_);
    ++errors_[type];
}
void Metrics::count_tokens(int64_t prompt, int64_t completion, int64_t cached) {
    std::lock_guard<std::mutex> l(mu_);
    prompt_tokens_ += uint64_t(prompt);
    completion_tokens_ += uint64_t(completion);
    cached_tokens_ += uint64_t(cached);
}
void Metrics::observe_ttft(double s) {
    std::lock_guard<std::mutex> l(mu_);
    ttft_.observe(s);
}
void Metrics::observe_duration(double s) {
    std::lock_guard<std::mutex> l(mu_);
    duration_.observe(s);
}

uint64_t Metrics::requests(const std::string& route, int status) const {
    std::lock_guard<std::mutex> l(mu_);
    auto it = requests_.find({route, status});
    return it == requests_.end() ? 0 : it->second;
}

std::string Metrics::prometheus(size_t waiting, int running, size_t capacity, int workers) const {
    std::lock_guard<std::mutex> l(mu_);
    std::string o;
    o += "# HELP healthgpt_requests_total HTTP requests answered, by route pattern and status.\n"
         "# TYPE healthgpt_requests_total counter\n";
    for (const auto& [k, n] : requests_)
        o += "healthgpt_requests_total{route=\"" + k.first + "\",status=\"" + std::to_string(k.second) + "\"} " +
             std::to_string(n) + "\n";
    o += "# HELP healthgpt_errors_total Error responses by error type.\n# TYPE healthgpt_errors_total counter\n";
    for (const auto& [t, n] : errors_) o += "healthgpt_errors_total{type=\"" + t + "\"} " + std::to_string(n) + "\n";
    o += "# HELP healthgpt_queue_waiting Inference jobs waiting for a worker.\n# TYPE healthgpt_queue_waiting gauge\n"
         "healthgpt_queue_waiting " + std::to_string(waiting) + "\n";
    o += "# HELP healthgpt_queue_running Inference jobs on a worker.\n# TYPE healthgpt_queue_running gauge\n"
         "healthgpt_queue_running " + std::to_string(running) + "\n";
    o += "# HELP healthgpt_queue_capacity Jobs that may wait beyond the workers.\n# TYPE healthgpt_queue_capacity gauge\n"
         "healthgpt_queue_capacity " + std::to_string(capacity) + "\n";
    o += "# HELP healthgpt_workers Inference workers (sessions).\n# TYPE healthgpt_workers gauge\nhealthgpt_workers " +
         std::to_string(workers) + "\n";
    o += "# HELP healthgpt_prompt_tokens_total Prompt positions processed (text tokens and image vectors).\n"
         "# TYPE healthgpt_prompt_tokens_total counter\nhealthgpt_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
    o += "# HELP healthgpt_completion_tokens_total Tokens generated.\n"
         "# TYPE healthgpt_completion_tokens_total counter\nhealthgpt_completion_tokens_total " +
         std::to_string(completion_tokens_) + "\n";
    o += "# HELP healthgpt_cached_prompt_tokens_total Prompt positions reused from a KV cache (not prefilled).\n"
         "# TYPE healthgpt_cached_prompt_tokens_total counter\nhealthgpt_cached_prompt_tokens_total " +
         std::to_string(cached_tokens_) + "\n";
    if (prefix_cache_) {
        const PrefixCache::Stats st = prefix_cache_->stats();
        o += "# HELP healthgpt_prefix_cache_lookups_total Requests that looked their prompt up in the shared prefix cache.\n"
             "# TYPE healthgpt_prefix_cache_lookups_total counter\nhealthgpt_prefix_cache_lookups_total " +
             std::to_string(st.lookups) + "\n";
        o += "# HELP healthgpt_prefix_cache_hits_total Lookups that found a stored prefix (an image's KV).\n"
             "# TYPE healthgpt_prefix_cache_hits_total counter\nhealthgpt_prefix_cache_hits_total " +
             std::to_string(st.hits) + "\n";
        o += "# HELP healthgpt_prefix_cache_entries Prefixes stored.\n# TYPE healthgpt_prefix_cache_entries gauge\n"
             "healthgpt_prefix_cache_entries " + std::to_string(prefix_cache_->size()) + "\n";
        o += "# HELP healthgpt_prefix_cache_bytes Bytes of KV stored.\n# TYPE healthgpt_prefix_cache_bytes gauge\n"
             "healthgpt_prefix_cache_bytes " + std::to_string(prefix_cache_->bytes()) + "\n";
    }
    ttft_.write(o, "healthgpt_time_to_first_token_seconds", "Seconds from a chat request's arrival to its first text.");
    duration_.write(o, "healthgpt_request_duration_seconds", "Seconds from a chat request's arrival to its end.");
    return o;
}

}  // namespace hg::server
