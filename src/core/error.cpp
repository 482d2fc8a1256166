#include "core/error.h"

#include <cstdarg>
#include <cstdio>
#include <vector>

namespace hg {

void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    const int n = std::vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::vector<char> buf(n > 0 ? n + 1 : 1);
    std::vsnprintf(buf.data(), buf.size(), fmt, ap2);
    va_end(ap2);
    throw Error(std::string(buf.data()));
}

}  // namespace hg
