// See gdcm_guard.h. This file defines __assert_fail, which takes precedence over glibc's for the
// whole process (GDCM's shared libraries resolve it here). Outside a guard it prints glibc's
// message and aborts, exactly as before.
#include "imaging/gdcm_guard.h"

#include <cstdio>
#include <cstdlib>

namespace hg::imaging {

static thread_local GdcmGuard* active_guard = nullptr;
static thread_local char failure[512];

GdcmGuard::GdcmGuard() : jump{} {
    failure[0] = 0;
    active_guard = this;
}
GdcmGuard::~GdcmGuard() { active_guard = nullptr; }
std::string GdcmGuard::last_failure() { return failure; }

}  // namespace hg::imaging

extern "C" [[noreturn]] void __assert_fail(const char* assertion, const char* file, unsigned int line,
                                           const char* function) noexcept {
    using namespace hg::imaging;
    if (GdcmGuard* g = active_guard) {
        active_guard = nullptr;
        std::snprintf(failure, sizeof failure, "%s:%u: %s", file, line, assertion);
        siglongjmp(g->jump, 1);
    }
    std::fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, function, assertion);
    std::abort();
}
