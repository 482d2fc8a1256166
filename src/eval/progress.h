// A progress line for long runs on stderr: "[#####-----] 120/450  1.9 s/item  ETA 10:27" redrawn in
// place on a terminal, a plain line every 5% (and at the end) otherwise (CI logs, files).
// The rate counts only items run now, so a resumed run's ETA is not skewed by the resumed ones.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

namespace hg::eval {

class ProgressBar {
public:
    ProgressBar(std::FILE* out, size_t total, size_t already_done, std::string unit = "item");
    // `done` of `total` (resumed included); `extra` is printed after the ETA (e.g. a running score).
    void update(size_t done, const std::string& extra = "");
    void finish();  // ends the in-place line

private:
    std::FILE* out_;
    bool tty_;
    size_t total_, start_;
    std::string unit_;
    std::chrono::steady_clock::time_point t0_;
    int last_step_ = -1;
    bool drawn_ = false;
};

std::string format_duration(double seconds);  // "42 s", "3:07", "1:02:03"

}  // namespace hg::eval
