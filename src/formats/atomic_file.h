// Writing a file so that a crash, a full disk or an error never leaves it half-written: the bytes
// go to a temporary file beside it (mkstemp), which is fsync'ed, closed, given the permissions a
// plain create would have (0666 & ~umask) and renamed over the path. On any error the temporary
// is removed, the previous file (if any) is unchanged, and the hg::Error names the path.
// Every writer of model, checkpoint and data files uses this one routine.
#pragma once
#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>

namespace hg {

// `emit(fd, tmp_name)` writes the content to the open descriptor (tmp_name for its messages).
void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(int fd, const std::string& tmp_name)>& emit);

// Writes all n bytes to fd, retrying interrupted and partial writes; fails naming `name`.
void write_all(int fd, const void* p, size_t n, const std::string& name);

}  // namespace hg
