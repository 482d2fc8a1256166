// File identity for evaluation reports and their resumable logs (a log written by other weights
// must not be continued): SHA-256 through the project's core/sha256.h, read in 1 MiB chunks.
#pragma once
#include <filesystem>
#include <span>
#include <string>

namespace hg::eval {

std::string sha256_hex(std::span<const uint8_t> bytes);  // lower-case hex, 64 characters
// Throws hg::Error naming the file when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace hg::eval
