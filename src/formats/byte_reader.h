// Bounded little-endian reads over a byte range, for the parsers of untrusted files.
// Every read checks the remaining length first and throws hg::Error naming the input, the
// field being read and its offset; nothing ever reads past the end.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"

namespace hg {

class ByteReader {
public:
    ByteReader(const uint8_t* data, uint64_t size, std::string name) : data_(data), size_(size), name_(std::move(name)) {}

    uint64_t pos() const { return pos_; }
    uint64_t size() const { return size_; }
    uint64_t remaining() const { return size_ - pos_; }
    const std::string& name() const { return name_; }
    const uint8_t* data() const { return data_; }

    void seek(uint64_t pos, const char* what) {
        if (pos > size_)
            fail("%s: %s: offset %llu is past the end (size %llu)", name_.c_str(), what, (unsigned long long)pos,
                 (unsigned long long)size_);
        pos_ = pos;
    }
    // Throws unless n more bytes are available.
    void need(uint64_t n, const char* what) const {
        if (n > size_ - pos_)
            fail("%s: truncated: %s needs %llu bytes at offset %llu but only %llu remain", name_.c_str(), what,
                 (unsigned long long)n, (unsigned long long)pos_, (unsigned long long)(size_ - pos_));
    }
    const uint8_t* take(uint64_t n, const char* what) {
        need(n, what);
        const uint8_t* p = data_ + pos_;
        pos_ += n;
        return p;
    }
    void skip(uint64_t n, const char* what) { take(n, what); }

    template <typename T>
    T read(const char* what) {
        T v;
        std::memcpy(&v, take(sizeof(T), what), sizeof(T));  // the host is little-endian (x86-64)
        return v;
    }
    uint8_t u8(const char* what) { return read<uint8_t>(what); }
    uint16_t u16(const char* what) { return read<uint16_t>(what); }
    uint32_t u32(const char* what) { return read<uint32_t>(what); }
    uint64_t u64(const char* what) { return read<uint64_t>(what); }
    int32_t i32(const char* what) { return read<int32_t>(what); }
    int64_t i64(const char* what) { return read<int64_t>(what); }
    std::string_view view(uint64_t n, const char* what) {
        const uint8_t* p = take(n, what);
        return {reinterpret_cast<const char*>(p), static_cast<size_t>(n)};
    }

private:
    const uint8_t* data_;
    uint64_t size_;
    uint64_t pos_ = 0;
    std::string name_;
};

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the file parsers assume a little-endian host");

}  // namespace hg
