// Running GDCM on untrusted files. Two of its behaviours would take the whole process down:
//  1. Debian builds it with assert() enabled, and malformed files reach some asserts. While a
//     GdcmGuard is active on a thread, a failed assert jumps back to the guard (siglongjmp), which
//     reports it as an hg::Error. Elsewhere assert behaves as usual (message, abort).
//  2. It allocates a value at the length the file declares before reading it, and when its normal
//     parse fails it re-reads the file under other VR rules, where a 10 KB file can declare 3 GB.
//     While a guard is active, one allocation through operator new above the guard's cap throws
//     std::bad_alloc (GDCM turns that into a failed read). This needs our replacement of the global
//     operator new, which is compiled only without AddressSanitizer (ASan brings its own); in ASan
//     and fuzzing builds the cap is not enforced.
// Cost of the jump: destructors of the skipped frames do not run (GDCM's partial objects leak).
#pragma once
#include <csetjmp>
#include <cstddef>
#include <string>

namespace hg::imaging {

struct GdcmGuard {
    sigjmp_buf jump;
    explicit GdcmGuard(size_t allocation_cap);
    ~GdcmGuard();
    GdcmGuard(const GdcmGuard&) = delete;
    GdcmGuard& operator=(const GdcmGuard&) = delete;
    void set_cap(size_t allocation_cap);
    static std::string last_failure();  // "file:line: expression" of the assert that fired
    static bool cap_enforced();         // false in sanitizer builds
};

}  // namespace hg::imaging
