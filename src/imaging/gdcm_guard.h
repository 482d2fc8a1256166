// GDCM as packaged by Debian is built with assert() enabled, and some of those asserts can be
// reached by malformed files (a truncated meta header, unexpected attribute lengths). An assert
// would abort the whole process. While a GdcmGuard is active on a thread, a failed assert jumps
// back to the guard instead (siglongjmp), which then reports it as an hg::Error. Elsewhere assert
// behaves as usual (message, abort).
//
// Cost of the jump: destructors of the frames it skips do not run (GDCM's partial objects and
// our buffers leak); the process keeps running and the caller gets a clear error.
#pragma once
#include <csetjmp>
#include <string>

namespace hg::imaging {

struct GdcmGuard {
    sigjmp_buf jump;
    GdcmGuard();
    ~GdcmGuard();
    GdcmGuard(const GdcmGuard&) = delete;
    GdcmGuard& operator=(const GdcmGuard&) = delete;
    static std::string last_failure();  // "file:line: expression" of the assert that fired
};

}  // namespace hg::imaging
