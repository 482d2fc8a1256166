// The server's counters, in the Prometheus text exposition format (GET /metrics):
//   healthgpt_requests_total{route,status}      requests answered, by route pattern and HTTP status
//   healthgpt_errors_total{type}                error responses by error type (invalid_request_error, ...)
//   healthgpt_queue_waiting / _running          inference jobs waiting / on a worker now (gauges)
//   healthgpt_prompt_tokens_total, healthgpt_completion_tokens_total
//   healthgpt_time_to_first_token_seconds       histogram: from the request's arrival to its first text
//   healthgpt_request_duration_seconds          histogram of chat completions, arrival to last byte
//   healthgpt_cached_prompt_tokens_total        prompt positions taken from a KV cache instead of prefilled
//   healthgpt_prefix_cache_{lookups,hits}_total the workers' shared PrefixCache: lookups, found prefixes,
//   healthgpt_prefix_cache_{entries,bytes}        and what it holds now (gauges)
// Routes are the patterns ("/v1/uploads/{id}/preview.png"), never raw paths, so ids do not explode
// the label set. Thread-safe (one mutex; a scrape is rare and small).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace hg {
class PrefixCache;
}

namespace hg::server {

class Histogram {
public:
    explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
    void observe(double v);
    // name_bucket{le=...}, name_sum, name_count lines
    void write(std::string& out, const std::string& name, const std::string& help) const;
    uint64_t count() const { return count_; }

private:
    std::vector<double> bounds_;
    std::vector<uint64_t> counts_;
    double sum_ = 0;
    uint64_t count_ = 0;
};

class Metrics {
public:
    Metrics();
    void count_request(const std::string& route, int status);
    void count_error(const std::string& type);
    void count_tokens(int64_t prompt, int64_t completion, int64_t cached = 0);
    // The shared prefix cache whose counters /metrics shows (it outlives the Metrics' use).
    void set_prefix_cache(const PrefixCache* pc) { prefix_cache_ = pc; }
    void observe_ttft(double seconds);
    void observe_duration(double seconds);
    std::string prometheus(size_t queue_waiting, int queue_running, size_t queue_capacity, int workers) const;
    // for tests
    uint64_t requests(const std::string& route, int status) const;

private:
    mutable std::mutex mu_;
    std::map<std::pair<std::string, int>, uint64_t> requests_;
    std::map<std::string, uint64_t> errors_;
    uint64_t prompt_tokens_ = 0, completion_tokens_ = 0, cached_tokens_ = 0;
    const PrefixCache* prefix_cache_ = nullptr;
    Histogram ttft_, duration_;
};

}  // namespace hg::server
