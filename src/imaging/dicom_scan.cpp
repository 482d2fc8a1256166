// DICOM element walk (PS3.5 §7): tag (group, element), then in explicit VR a two-letter VR and a
// 2-byte length, or 2 reserved bytes and a 4-byte length for OB OD OF OL OV OW SQ SV UC UN UR UT UV;
// in implicit VR a 4-byte length. Items and delimiters (FFFE,E000/E00D/E0DD) have a 4-byte length
// in every syntax. 0xFFFFFFFF is an undefined length: a sequence (or encapsulated pixel data)
// whose items run until (FFFE,E0DD). The file meta group (0002) is always explicit little endian.
#include "imaging/dicom_scan.h"

#include <zlib.h>

#include <cstring>
#include <vector>

#include "core/error.h"

namespace hg::imaging {

namespace {

constexpr uint32_t kUndefined = 0xFFFFFFFF;
constexpr int kMaxDepth = 32;

struct Walker {
    std::span<const uint8_t> b;
    const std::string& name;
    bool big = false;  // byte order of the data set (not of the meta group)

    uint16_t u16(size_t p, bool be) const { return be ? uint16_t(b[p] << 8 | b[p + 1]) : uint16_t(b[p] | b[p + 1] << 8); }
    uint32_t u32(size_t p, bool be) const {
        return be ? uint32_t(b[p]) << 24 | uint32_t(b[p + 1]) << 16 | uint32_t(b[p + 2]) << 8 | b[p + 3]
                  : uint32_t(b[p]) | uint32_t(b[p + 1]) << 8 | uint32_t(b[p + 2]) << 16 | uint32_t(b[p + 3]) << 24;
    }
    [[noreturn]] void bad(size_t pos, uint16_t g, uint16_t e, const char* what) const {
        fail("%s: malformed DICOM file: element (%04X,%04X) at byte %zu %s", name.c_str(), g, e, pos, what);
    }

    static bool long_vr(const uint8_t* v) {
        static const char* vrs[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
        for (const char* x : vrs)
            if (v[0] == x[0] && v[1] == x[1]) return true;
        return false;
    }
    static bool letters(const uint8_t* v) { return v[0] >= 'A' && v[0] <= 'Z' && v[1] >= 'A' && v[1] <= 'Z'; }

    // Walks elements in [pos, end) (end = b.size() for the top level). With `until_delimiter`, stops
    // after the item delimiter (FFFE,E00D) and returns the position after it. Returns the end position.
    size_t walk(size_t pos, size_t end, bool explicit_vr, int depth, bool until_delimiter, bool meta_only = false) {
        if (depth > kMaxDepth) fail("%s: malformed DICOM file: sequences nested deeper than %d", name.c_str(), kMaxDepth);
        while (pos < end) {
            if (end - pos < 8) {
                if (until_delimiter) fail("%s: DICOM file is truncated inside a sequence item", name.c_str());
                return end;  // trailing padding bytes: GDCM ignores them too
            }
            bool meta = meta_only;
            bool be = meta ? false : big;
            uint16_t g = u16(pos, be), e = u16(pos + 2, be);
            if (meta_only && g != 0x0002) return pos;
            if (g == 0xFFFE) {  // item / delimiters: 4-byte length, no VR
                uint32_t len = u32(pos + 4, be);
                if (e == 0xE00D) {
                    if (until_delimiter) return pos + 8;
                    pos += 8;
                    continue;
                }
                if (e == 0xE0DD) return pos + 8;  // caller handles sequence ends
                if (len != kUndefined && len > end - pos - 8) bad(pos, g, e, "has a length past the end of the file (truncated?)");
                pos += 8 + (len == kUndefined ? 0 : len);
                continue;
            }
            uint32_t len;
            size_t header;
            bool sq = false;
            if (explicit_vr && letters(&b[pos + 4])) {
                if (long_vr(&b[pos + 4])) {
                    if (end - pos < 12) bad(pos, g, e, "is cut short");
                    len = u32(pos + 8, be);
                    header = 12;
                } else {
                    len = u16(pos + 6, be);
                    header = 8;
                }
                sq = b[pos + 4] == 'S' && b[pos + 5] == 'Q';
                if ((b[pos + 4] == 'U' && b[pos + 5] == 'N') && len == kUndefined) sq = true;  // UN of undefined length: SQ
            } else {
                len = u32(pos + 4, be);
                header = 8;
            }
            size_t value = pos + header;
            if (len == kUndefined) {
                // A sequence, or encapsulated pixel data: items until (FFFE,E0DD).
                bool pixels = g == 0x7FE0;
                size_t p = value;
                bool closed = false;
                while (p + 8 <= end) {
                    uint16_t ig = u16(p, be), ie = u16(p + 2, be);
                    uint32_t il = u32(p + 4, be);
                    if (ig != 0xFFFE) bad(p, ig, ie, "should be an item inside a sequence");
                    if (ie == 0xE0DD) {
                        p += 8;
                        closed = true;
                        break;
                    }
                    if (ie != 0xE000) bad(p, ig, ie, "is not an item");
                    if (il == kUndefined) {
                        if (pixels) bad(p, ig, ie, "is a pixel data fragment of undefined length");
                        p = walk(p + 8, end, explicit_vr, depth + 1, true);
                    } else {
                        if (il > end - p - 8) bad(p, ig, ie, "has a length past the end of the file (truncated?)");
                        if (!pixels) walk(p + 8, p + 8 + il, explicit_vr, depth + 1, false);
                        p += 8 + il;
                    }
                }
                if (!closed) fail("%s: DICOM file is truncated: sequence (%04X,%04X) has no end", name.c_str(), g, e);
                pos = p;
                continue;
            }
            if (len > end - value) bad(pos, g, e, "has a length past the end of the file (truncated?)");
            if (sq && len > 0) walk(value, value + len, explicit_vr, depth + 1, false);
            pos = value + len;
        }
        if (until_delimiter) fail("%s: DICOM file is truncated inside a sequence item", name.c_str());
        return end;
    }
};

std::vector<uint8_t> inflate_raw(std::span<const uint8_t> in, const std::string& name, int64_t max_bytes) {
    std::vector<uint8_t> out;
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) fail("%s: zlib initialisation failed", name.c_str());
    zs.next_in = const_cast<Bytef*>(in.data());
    zs.avail_in = uInt(in.size());
    std::vector<uint8_t> chunk(1 << 16);
    int rc;
    do {
        zs.next_out = chunk.data();
        zs.avail_out = uInt(chunk.size());
        rc = inflate(&zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) break;
        size_t got = chunk.size() - zs.avail_out;
        if (int64_t(out.size() + got) > max_bytes) {
            inflateEnd(&zs);
            fail("%s: deflated data set inflates past the limit of %lld bytes", name.c_str(), (long long)max_bytes);
        }
        out.insert(out.end(), chunk.begin(), chunk.begin() + got);
    } while (rc != Z_STREAM_END && zs.avail_in > 0);
    inflateEnd(&zs);
    if (rc != Z_STREAM_END) fail("%s: deflated data set is corrupt or truncated", name.c_str());
    return out;
}

}  // namespace

int64_t scan_dicom_structure(std::span<const uint8_t> b, const std::string& name, int64_t max_inflated_bytes) {
    Walker w{b, name};
    size_t pos = 0;
    std::string ts;
    bool has_preamble = b.size() >= 132 && std::memcmp(&b[128], "DICM", 4) == 0;
    if (has_preamble) pos = 132;
    // File meta group: explicit VR little endian.
    if (b.size() >= pos + 8 && (b[pos] | b[pos + 1] << 8) == 0x0002) {
        size_t meta_end = w.walk(pos, b.size(), true, 0, false, /*meta_only=*/true);
        // Transfer Syntax UID (0002,0010): find it in the meta group.
        for (size_t p = pos; p + 8 <= meta_end;) {
            uint16_t g = w.u16(p, false), e = w.u16(p + 2, false);
            bool lv = Walker::letters(&b[p + 4]) && Walker::long_vr(&b[p + 4]);
            uint32_t len = lv ? w.u32(p + 8, false) : (Walker::letters(&b[p + 4]) ? w.u16(p + 6, false) : w.u32(p + 4, false));
            size_t hdr = lv ? 12 : 8;
            if (len == 0xFFFFFFFF || p + hdr + len > meta_end) break;
            if (g == 0x0002 && e == 0x0010) {
                ts.assign(reinterpret_cast<const char*>(&b[p + hdr]), len);
                while (!ts.empty() && (ts.back() == '\0' || ts.back() == ' ')) ts.pop_back();
            }
            p += hdr + len;
        }
        pos = meta_end;
    }
    if (pos >= b.size()) return int64_t(b.size());  // nothing after the meta group: GDCM reports what is missing
    bool explicit_vr = true;
    if (ts == "1.2.840.10008.1.2") {
        explicit_vr = false;
    } else if (ts == "1.2.840.10008.1.2.2") {
        w.big = true;
    } else if (ts == "1.2.840.10008.1.2.1.99") {
        auto inflated = inflate_raw(b.subspan(pos), name, max_inflated_bytes);
        Walker d{inflated, name};
        d.walk(0, inflated.size(), true, 0, false);
        return int64_t(pos + inflated.size());
    } else if (ts.empty()) {
        // No meta group (or no transfer syntax): guess as GDCM does, from the first element.
        if (b.size() - pos >= 8) {
            explicit_vr = Walker::letters(&b[pos + 4]);
            uint16_t le = uint16_t(b[pos] | b[pos + 1] << 8), be = uint16_t(b[pos] << 8 | b[pos + 1]);
            w.big = le > 0x00FF && be <= 0x00FF;
        }
    }
    w.walk(pos, b.size(), explicit_vr, 0, false);
    return int64_t(b.size());
}

}  // namespace hg::imaging
