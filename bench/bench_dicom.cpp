// Milliseconds per DICOM file: decoding in a child process (the default of every public API,
// isolated_decode.h) against decoding in the calling process, and the difference (the cost of the
// isolation: fork, pipes, limits, the result's copy through the pipe, reaping).
//
//   bench_dicom [--runs R] [FILE.dcm ...]
//
// Without files: a small and a large file of $HEALTHGPT_SHARED_DATA/medical/dicom. Each mode is
// run R times (default 30, the two modes alternating) after one warm-up; the table gives the median
// and the minimum, and the overhead of each.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "imaging/dicom.h"
#include "imaging/image.h"

using namespace hg::imaging;

namespace {

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Timing {
    double median, min;
};

Timing summarize(std::vector<double> t) {
    std::sort(t.begin(), t.end());
    return {t[t.size() / 2], t[0]};
}

double time_once(const std::vector<uint8_t>& bytes, const std::string& name, DecodeIsolation iso) {
    double t0 = now_ms();
    DicomImage d = decode_dicom(bytes, name, default_limits(), iso);
    double t = now_ms() - t0;
    if (d.pixels.count == 0) std::abort();
    return t;
}

// The two modes alternate, run after run, so that a change in the machine's load hits both alike.
void time_both(const std::vector<uint8_t>& bytes, const std::string& name, int runs, Timing& child, Timing& here) {
    time_once(bytes, name, DecodeIsolation::Subprocess);  // warm-up (GDCM's dictionaries, page faults)
    time_once(bytes, name, DecodeIsolation::InProcess);
    std::vector<double> c, h;
    for (int i = 0; i < runs; i++) {
        c.push_back(time_once(bytes, name, DecodeIsolation::Subprocess));
        h.push_back(time_once(bytes, name, DecodeIsolation::InProcess));
    }
    child = summarize(c);
    here = summarize(h);
}

}  // namespace

int main(int argc, char** argv) {
    int runs = 30;
    std::vector<std::filesystem::path> files;
    for (int i = 1; i < argc; i++) {
        if (!std::strcmp(argv[i], "--runs") && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
        else files.push_back(argv[i]);
    }
    if (files.empty()) {
        const char* shared = std::getenv("HEALTHGPT_SHARED_DATA");
        if (!shared) {
            std::fprintf(stderr, "bench_dicom: give files, or set HEALTHGPT_SHARED_DATA\n");
            return 2;
        }
        auto dir = std::filesystem::path(shared) / "medical/dicom";
        files = {dir / "emri_small.dcm", dir / "MR2_UNCR.dcm", dir / "DX_J2KLossless_1416.dcm"};
    }
    std::printf("%-26s %7s %11s %7s | %8s %8s | %8s %8s | %8s %8s\n", "file", "KiB", "image", "MiB out", "child", "min",
                "here", "min", "overhead", "min");
    std::printf("%-26s %7s %11s %7s | %8s %8s | %8s %8s | %8s %8s\n", "", "", "", "", "ms", "ms", "ms", "ms", "ms/file",
                "ms/file");
    try {
        for (const auto& f : files) {
            std::vector<uint8_t> bytes = read_file_bytes(f, default_limits().max_file_bytes);
            DicomImage d = decode_dicom(bytes, f.string(), default_limits(), DecodeIsolation::InProcess);
            Timing child, here;
            time_both(bytes, f.string(), runs, child, here);
            char image[32];
            std::snprintf(image, sizeof image, "%dx%dx%d", d.info.columns, d.info.rows, d.info.frames);
            std::printf("%-26s %7.1f %11s %7.2f | %8.2f %8.2f | %8.2f %8.2f | %8.2f %8.2f\n", f.filename().c_str(),
                        bytes.size() / 1024.0, image, d.pixels.bytes.size() / 1048576.0, child.median, child.min,
                        here.median, here.min, child.median - here.median, child.min - here.min);
        }
    } catch (const hg::Error& e) {
        std::fprintf(stderr, "bench_dicom: %s\n", e.what());
        return 1;
    }
    std::printf("(median and minimum of %d runs of each mode, alternating; overhead = child - in-process, of the medians and of the minimums)\n", runs);
    return 0;
}
