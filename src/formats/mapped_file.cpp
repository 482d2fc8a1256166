#include "formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace hg {

MappedFile::MappedFile(const std::filesystem::path& path, Access access) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("%s: cannot open: %s", path.c_str(), std::strerror(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        ::close(fd);
        fail("%s: cannot stat: %s", path.c_str(), std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail("%s: not a regular file", path.c_str());
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ == 0) {  // mmap of length 0 is an error; an empty file is simply empty
        ::close(fd);
        return;
    }
    void* p = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    ::close(fd);  // the mapping keeps the file referenced
    if (p == MAP_FAILED) fail("%s: cannot map %llu bytes: %s", path.c_str(), (unsigned long long)size_, std::strerror(e));
    data_ = static_cast<const uint8_t*>(p);
    if (access == Access::Sequential) ::madvise(p, static_cast<size_t>(size_), MADV_SEQUENTIAL);
    if (access == Access::Random) ::madvise(p, static_cast<size_t>(size_), MADV_RANDOM);
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
    if (this != &o) {
        release();
        path_ = std::move(o.path_);
        data_ = std::exchange(o.data_, nullptr);
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

void MappedFile::release() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
    data_ = nullptr;
    size_ = 0;
}

void MappedFile::prefetch(uint64_t offset, uint64_t n) const {
    if (!data_ || offset >= size_) return;
    if (n > size_ - offset) n = size_ - offset;
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t start = offset / page * page;  // madvise needs a page-aligned address
    ::madvise(const_cast<uint8_t*>(data_) + start, static_cast<size_t>(offset + n - start), MADV_WILLNEED);
}

}  // namespace hg
