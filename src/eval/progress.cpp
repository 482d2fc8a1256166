// See progress.h.
#include "eval/progress.h"

#include <unistd.h>

namespace hg::eval {

ProgressBar::ProgressBar(std::FILE* out, size_t total, size_t already_done, std::string unit)
    : out_(out), tty_(isatty(fileno(out)) != 0), total_(total), start_(already_done), unit_(std::move(unit)),
      t0_(std::chrono::steady_clock::now()) {}

std::string format_duration(double s) {
    if (s < 60) return std::to_string((int)(s + 0.5)) + " s";
    const long t = (long)(s + 0.5);
    char b[32];
    if (t < 3600) std::snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
    else std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    return b;
}

void ProgressBar::update(size_t done, const std::string& extra) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const size_t ran = done > start_ ? done - start_ : 0;
    const double per = ran ? secs / ran : 0;
    const std::string eta = ran ? "ETA " + format_duration(per * (double)(total_ - done)) : "ETA –";
    char rate[64];
    std::snprintf(rate, sizeof rate, "%.2f s/%s", per, unit_.c_str());
    if (tty_) {
        const int width = 30, filled = total_ ? (int)(width * done / total_) : width;
        std::string bar(filled, '#');
        bar.append(width - filled, '-');
        std::fprintf(out_, "\r[%s] %zu/%zu  %s  %s  %s\033[K", bar.c_str(), done, total_, rate, eta.c_str(), extra.c_str());
        drawn_ = true;
    } else {
        const int step = total_ ? (int)(20 * done / total_) : 20;
        if (step == last_step_ && done != total_) return;
        last_step_ = step;
        std::fprintf(out_, "%zu/%zu %ss  %s  %s  %s\n", done, total_, unit_.c_str(), rate, eta.c_str(), extra.c_str());
    }
    std::fflush(out_);
}

void ProgressBar::finish() {
    if (tty_ && drawn_) std::fprintf(out_, "\n");
    drawn_ = false;
    std::fflush(out_);
}

}  // namespace hg::eval
