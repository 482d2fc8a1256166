// Helpers shared by every test suite.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace hgtest {

// tests/fixtures/<rel> (committed reference outputs).
std::filesystem::path fixture(const std::string& rel);

// The shared real-data folder: $HEALTHGPT_SHARED_DATA, else <repo>/../shared/data.
// Returns an empty path when absent; use HG_SKIP_WITHOUT_SHARED_DATA.
std::filesystem::path shared_data();

// A scratch directory unique to the running test, removed at process exit.
std::filesystem::path scratch_dir();

std::vector<uint8_t> read_file(const std::filesystem::path& p);
std::vector<float> read_f32(const std::filesystem::path& p);   // raw little-endian float32
void write_file(const std::filesystem::path& p, std::span<const uint8_t> bytes);

// Error between a result and its reference, as reported by the conformance and parity suites.
struct ErrorStats {
    double max_abs = 0;   // max |a-b|
    double max_rel = 0;   // max |a-b| / max(|b|, 1e-6) over elements with |b| > 1e-3·max|b|
    double nmse = 0;      // sum (a-b)^2 / sum b^2
    size_t n = 0;
    size_t n_nonfinite = 0;  // positions where exactly one of a, b is non-finite
};
ErrorStats compare(std::span<const float> got, std::span<const float> ref);
std::string to_string(const ErrorStats& e);

}  // namespace hgtest

#define HG_SKIP_WITHOUT_SHARED_DATA(sub)                                                  \
    do {                                                                                  \
        if (hgtest::shared_data().empty() || !std::filesystem::exists(hgtest::shared_data() / (sub))) \
            GTEST_SKIP() << "shared data not found (" << (sub)                             \
                         << "); set HEALTHGPT_SHARED_DATA to the shared/data folder";       \
    } while (0)
