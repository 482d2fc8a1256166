// SHA-256 (FIPS 180-4) of bytes and files: the identity of a model or plugin file in an evaluation
// report and in its resumable log (a log written by other weights must not be continued).
// Plain scalar code: a file is read in 1 MiB chunks, about 0.3-0.5 GB/s on one core.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

namespace hg::eval {

class Sha256 {
public:
    Sha256();
    void update(std::span<const uint8_t> bytes);
    std::array<uint8_t, 32> finish();  // the object must not be updated afterwards

private:
    void block(const uint8_t* p);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t n_buf_ = 0;
    uint64_t n_bytes_ = 0;
};

std::string to_hex(std::span<const uint8_t> bytes);
std::string sha256_hex(std::span<const uint8_t> bytes);
// Throws hg::Error naming the file when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace hg::eval
