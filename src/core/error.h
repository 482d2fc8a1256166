// Errors: one exception type inside the library; every message says what was wrong with
// which input, so a user can act on it. The public C API (if any) catches at the boundary.
#pragma once
#include <stdexcept>
#include <string>

namespace hg {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Formats a message with printf-style arguments and throws hg::Error.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Like assert, but always on and throws hg::Error with the message.
#define HG_CHECK(cond, ...)            \
    do {                               \
        if (!(cond)) ::hg::fail(__VA_ARGS__); \
    } while (0)

}  // namespace hg
