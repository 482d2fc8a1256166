#include "formats/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace hg {

void write_all(int fd, const void* p, size_t n, const std::string& name) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    size_t done = 0;
    while (done < n) {
        const ssize_t w = ::write(fd, b + done, std::min<size_t>(n - done, size_t{1} << 30));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            fail("%s: write failed after %llu bytes: %s", name.c_str(), (unsigned long long)done,
                 w < 0 ? std::strerror(errno) : "no progress");
        done += static_cast<size_t>(w);
    }
}

void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(int fd, const std::string& tmp_name)>& emit) {
    std::string tmpl = path.string() + ".tmp-XXXXXX";
    int fd = ::mkstemp(tmpl.data());
    if (fd < 0) fail("%s: cannot create a temporary file beside it: %s", path.c_str(), std::strerror(errno));
    try {
        emit(fd, tmpl);
        if (::fsync(fd) != 0) fail("%s: fsync failed: %s", tmpl.c_str(), std::strerror(errno));
        const int rc = ::close(fd);
        fd = -1;
        if (rc != 0) fail("%s: close failed: %s", tmpl.c_str(), std::strerror(errno));
    } catch (const std::exception& e) {
        if (fd >= 0) ::close(fd);
        ::unlink(tmpl.c_str());
        fail("%s: not written (the previous file, if any, is unchanged): %s", path.c_str(), e.what());
    }
    const mode_t mask = ::umask(0);  // mkstemp creates 0600; give the usual permissions
    ::umask(mask);
    ::chmod(tmpl.c_str(), 0666 & ~mask);
    if (::rename(tmpl.c_str(), path.c_str()) != 0) {
        const int e = errno;
        ::unlink(tmpl.c_str());
        fail("%s: cannot rename the temporary file into place: %s", path.c_str(), std::strerror(e));
    }
}

}  // namespace hg
