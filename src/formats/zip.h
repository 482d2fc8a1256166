// A minimal ZIP reader for PyTorch checkpoints (torch.save >= 1.6 writes a ZIP of *stored*
// entries). Reads the end-of-central-directory record (zip64 too, for files > 4 GiB), the
// central directory, and validates every local header against it (name, method, sizes, CRC
// where present), that data lies inside the file before the central directory, and that
// entries do not overlap or repeat. Compressed (deflate) and encrypted entries, multi-disk
// archives and data descriptors that contradict the directory are refused with an hg::Error.
// Entry data is returned as a zero-copy span of the caller's bytes.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hg {

struct ZipEntry {
    std::string name;
    uint16_t method = 0;          // 0 = stored (the only method we read), 8 = deflate
    uint16_t flags = 0;
    uint32_t crc32 = 0;
    uint64_t compressed_size = 0;
    uint64_t size = 0;            // uncompressed
    uint64_t header_offset = 0;   // local file header
    uint64_t data_offset = 0;     // first byte of the entry's data
};

class ZipArchive {
public:
    ZipArchive() = default;
    // `bytes` (a mapped file) must outlive the archive; `name` is used in error messages.
    ZipArchive(std::span<const uint8_t> bytes, std::string name);

    const std::string& name() const { return name_; }
    const std::vector<ZipEntry>& entries() const { return entries_; }
    const ZipEntry* find(std::string_view name) const;
    // The entry's bytes (stored entries only; throws for compressed ones).
    std::span<const uint8_t> data(const ZipEntry& e) const;
    // Throws unless the CRC-32 of the entry's bytes equals the directory's.
    void verify_crc(const ZipEntry& e) const;

    static bool looks_like_zip(std::span<const uint8_t> bytes);  // starts with a local header signature

private:
    std::span<const uint8_t> bytes_;
    std::string name_;
    std::vector<ZipEntry> entries_;
};

}  // namespace hg
