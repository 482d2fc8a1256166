// SHA-256 (FIPS 180-4), our own small implementation: the service hashes API keys and uploads
// with it, and no third-party source may be vendored. Streaming (update/finish) or one call.
// Not constant time in the message length (nothing here needs that); the digest comparison that
// must be constant time lives with its caller (service/auth.cpp).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace hg {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t n);
    void update(std::span<const uint8_t> bytes) { update(bytes.data(), bytes.size()); }
    void update(std::string_view s) { update(s.data(), s.size()); }
    Sha256Digest finish();  // the object must not be updated after finish()

private:
    void compress(const uint8_t block[64]);
    uint32_t h_[8];
    uint8_t buf_[64];
    size_t buf_len_ = 0;
    uint64_t total_bytes_ = 0;
};

Sha256Digest sha256(std::span<const uint8_t> bytes);
Sha256Digest sha256(std::string_view s);

// Lower-case hex of any byte string (64 characters for a digest).
std::string to_hex(std::span<const uint8_t> bytes);

// Lower-case hex SHA-256 of a file's bytes, read in 1 MiB chunks (model, plugin and data file
// identities in reports, the server's plugin versions). Throws hg::Error naming the file when it
// cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace hg
