// Helpers for the imaging tests: the committed reference (tests/fixtures/imaging/expected.json,
// written by tests/reference/gen_imaging.py), where its inputs live, and CRC-32 checksums
// computed the way the generator computes them (little-endian bytes, C order).
#pragma once
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "imaging/nifti.h"
#include "test_util.h"

namespace imgtest {

inline const nlohmann::json& expected() {
    static const nlohmann::json j = [] {
        std::ifstream f(hgtest::fixture("imaging/expected.json"));
        if (!f) return nlohmann::json::object();
        return nlohmann::json::parse(f);
    }();
    return j;
}

// Debian test files fetched by scripts/fetch-test-data.sh: $HG_TESTDATA, else <repo>/build/testdata.
inline std::filesystem::path testdata() {
    if (const char* e = std::getenv("HG_TESTDATA")) return e;
    return std::filesystem::path(HG_SOURCE_DIR) / "build" / "testdata";
}

// A key of expected.json ("shared/...", "pydicom/...", "nibabel/...", "dicom3tools/...") → path,
// or empty when that data is not on this machine.
inline std::filesystem::path resolve(const std::string& key) {
    auto under = [&](const std::filesystem::path& base, const std::string& prefix) -> std::filesystem::path {
        std::filesystem::path p = base / key.substr(prefix.size());
        return std::filesystem::exists(p) ? p : std::filesystem::path();
    };
    if (key.rfind("shared/", 0) == 0) return hgtest::shared_data().empty() ? std::filesystem::path() : under(hgtest::shared_data(), "shared/");
    if (key.rfind("pydicom/", 0) == 0)
        return under(testdata() / "python3-pydicom/usr/lib/python3/dist-packages/pydicom/data/test_files", "pydicom/");
    if (key.rfind("nibabel/", 0) == 0)
        return under(testdata() / "python3-nibabel/usr/lib/python3/dist-packages/nibabel/tests/data", "nibabel/");
    if (key.rfind("dicom3tools/", 0) == 0)
        return under(testdata() / "dicom3tools/usr/share/doc/dicom3tools/examples", "dicom3tools/");
    return {};
}

template <typename T>
inline uint32_t crc_of(std::span<const T> v) {
    return uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(v.data()), uInt(v.size_bytes())));
}
inline uint32_t crc_f32(std::span<const float> v) { return crc_of(v); }
inline uint32_t crc_u8(std::span<const uint8_t> v) { return crc_of(v); }
inline uint32_t crc_f64(std::span<const double> v) { return crc_of(v); }

// A gzip'd raw array from the fixtures folder.
inline std::vector<uint8_t> fixture_gz(const std::string& name) {
    auto gz = hgtest::read_file(hgtest::fixture("imaging/" + name));
    return hg::imaging::gunzip(gz, name, int64_t(1) << 30);
}

// The generator's synthetic test image (gen_imaging.py: pattern()).
inline hg::imaging::RgbImage pattern(int w, int h, int seed) {
    hg::imaging::RgbImage img(w, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int64_t X = x, Y = y;
            uint8_t* p = img.px(x, y);
            p[0] = uint8_t((X * 7 + Y * 13 + seed * 31 + (X * Y) % 17) % 256);
            p[1] = uint8_t((X * X + 3 * Y + seed * 5) % 256);
            p[2] = uint8_t(((X ^ Y) * 11 + seed) % 256);
        }
    return img;
}

}  // namespace imgtest

#define IMG_SKIP_WITHOUT_FIXTURES()                                                                      \
    do {                                                                                                 \
        if (imgtest::expected().empty()) GTEST_SKIP() << "tests/fixtures/imaging/expected.json missing"; \
    } while (0)
