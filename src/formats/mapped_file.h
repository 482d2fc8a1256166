// A read-only memory map of a whole file (RAII). Model files are used straight from the page
// cache: tensors are views into the mapping, so it must outlive them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace hg {

class MappedFile {
public:
    enum class Access { Normal, Sequential, Random };  // madvise hint

    MappedFile() = default;
    // Maps `path` read-only. Throws hg::Error naming the file and the reason (missing, not a
    // regular file, mmap failure). An empty file gives size() == 0 and data() == nullptr.
    explicit MappedFile(const std::filesystem::path& path, Access access = Access::Normal);
    ~MappedFile();
    MappedFile(MappedFile&& o) noexcept;
    MappedFile& operator=(MappedFile&& o) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }
    std::span<const uint8_t> bytes() const { return {data_, static_cast<size_t>(size_)}; }
    const std::filesystem::path& path() const { return path_; }

    // Hint that [offset, offset + n) will be needed soon (MADV_WILLNEED); no-op when out of range.
    void prefetch(uint64_t offset, uint64_t n) const;

private:
    void release();
    std::filesystem::path path_;
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

}  // namespace hg
