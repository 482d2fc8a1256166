// See gdcm_guard.h. __assert_fail defined here takes precedence over glibc's for the whole process
// (GDCM's shared libraries resolve it here); outside a guard it prints glibc's message and aborts,
// exactly as before. The global operator new/delete replacement is the standard-conforming kind.
#include "imaging/gdcm_guard.h"

#include <cstdio>
#include <cstdlib>
#include <new>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer) || __has_feature(thread_sanitizer)
#define HG_NO_NEW_REPLACEMENT 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HG_NO_NEW_REPLACEMENT 1
#endif

namespace hg::imaging {

static thread_local GdcmGuard* active_guard = nullptr;
static thread_local size_t active_cap = 0;  // 0: no cap
static thread_local char failure[512];

GdcmGuard::GdcmGuard(size_t allocation_cap) : jump{} {
    failure[0] = 0;
    active_guard = this;
    active_cap = allocation_cap;
}
GdcmGuard::~GdcmGuard() {
    active_guard = nullptr;
    active_cap = 0;
}
void GdcmGuard::set_cap(size_t allocation_cap) { active_cap = allocation_cap; }
std::string GdcmGuard::last_failure() { return failure; }
bool GdcmGuard::cap_enforced() {
#ifdef HG_NO_NEW_REPLACEMENT
    return false;
#else
    return true;
#endif
}

}  // namespace hg::imaging

extern "C" [[noreturn]] void __assert_fail(const char* assertion, const char* file, unsigned int line,
                                           const char* function) noexcept {
    using namespace hg::imaging;
    if (GdcmGuard* g = active_guard) {
        active_guard = nullptr;
        active_cap = 0;
        std::snprintf(failure, sizeof failure, "%s:%u: %s", file, line, assertion);
        siglongjmp(g->jump, 1);
    }
    std::fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, function, assertion);
    std::abort();
}

#ifndef HG_NO_NEW_REPLACEMENT
void* operator new(std::size_t n) {
    if (hg::imaging::active_cap && n > hg::imaging::active_cap) throw std::bad_alloc();
    for (;;) {
        if (void* p = std::malloc(n ? n : 1)) return p;
        std::new_handler h = std::get_new_handler();
        if (!h) throw std::bad_alloc();
        h();
    }
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return ::operator new(n);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return ::operator new(n, std::nothrow); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#endif
