#include "formats/zip.h"

#include <zlib.h>

#include <algorithm>
#include <unordered_set>

#include "core/error.h"
#include "formats/byte_reader.h"

namespace hg {

namespace {
constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint64_t kEocdSize = 22;
constexpr uint64_t kCentralSize = 46;
constexpr uint64_t kLocalSize = 30;
}  // namespace

bool ZipArchive::looks_like_zip(std::span<const uint8_t> b) {
    return b.size() >= 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4;
}

ZipArchive::ZipArchive(std::span<const uint8_t> bytes, std::string name) : bytes_(bytes), name_(std::move(name)) {
    const char* nm = name_.c_str();
    const uint64_t size = bytes.size();
    ByteReader r(bytes.data(), size, name_ + ": zip");

    // End of central directory: 22 bytes + a comment of up to 65535 bytes at the very end.
    // Search backwards for a record whose comment length reaches exactly the end of the file.
    if (size < kEocdSize) fail("%s: not a zip archive (%llu bytes, no end-of-central-directory record)", nm, (unsigned long long)size);
    uint64_t eocd = UINT64_MAX;
    const uint64_t lowest = size > kEocdSize + 65535 ? size - kEocdSize - 65535 : 0;
    for (uint64_t p = size - kEocdSize + 1; p-- > lowest;) {
        uint32_t sig;
        std::memcpy(&sig, bytes.data() + p, 4);
        if (sig != kEocdSig) continue;
        uint16_t comment;
        std::memcpy(&comment, bytes.data() + p + 20, 2);
        if (p + kEocdSize + comment == size) {
            eocd = p;
            break;
        }
    }
    if (eocd == UINT64_MAX) fail("%s: not a zip archive or truncated (no end-of-central-directory record)", nm);
    r.seek(eocd + 4, "end of central directory");
    const uint16_t disk = r.u16("eocd disk");
    const uint16_t cd_disk = r.u16("eocd cd disk");
    const uint16_t n_disk = r.u16("eocd entries on disk");
    uint64_t n_entries = r.u16("eocd entries");
    uint64_t cd_size = r.u32("eocd cd size");
    uint64_t cd_offset = r.u32("eocd cd offset");
    uint64_t cd_limit = eocd;  // the central directory must end before this

    const bool zip64 = n_entries == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff || disk == 0xffff;
    if (zip64) {
        if (eocd < 20) fail("%s: zip64 archive without a zip64 locator", nm);
        r.seek(eocd - 20, "zip64 locator");
        if (r.u32("zip64 locator") != kZip64LocatorSig) fail("%s: zip64 archive without a zip64 locator", nm);
        const uint32_t z_disk = r.u32("zip64 locator disk");
        const uint64_t z_eocd = r.u64("zip64 eocd offset");
        const uint32_t z_disks = r.u32("zip64 disk count");
        if (z_disk != 0 || z_disks > 1) fail("%s: multi-disk zip archives are not supported", nm);
        if (z_eocd > eocd - 20 || eocd - 20 - z_eocd < 56) fail("%s: zip64 end-of-central-directory offset %llu is invalid", nm, (unsigned long long)z_eocd);
        r.seek(z_eocd, "zip64 end of central directory");
        if (r.u32("zip64 eocd") != kZip64EocdSig) fail("%s: bad zip64 end-of-central-directory signature at %llu", nm, (unsigned long long)z_eocd);
        r.u64("zip64 eocd record size");
        r.u16("zip64 version made by");
        r.u16("zip64 version needed");
        const uint32_t d1 = r.u32("zip64 disk");
        const uint32_t d2 = r.u32("zip64 cd disk");
        const uint64_t e1 = r.u64("zip64 entries on disk");
        n_entries = r.u64("zip64 entries");
        cd_size = r.u64("zip64 cd size");
        cd_offset = r.u64("zip64 cd offset");
        if (d1 != 0 || d2 != 0 || e1 != n_entries) fail("%s: multi-disk zip archives are not supported", nm);
        cd_limit = z_eocd;
    } else if (disk != 0 || cd_disk != 0 || n_disk != n_entries) {
        fail("%s: multi-disk zip archives are not supported", nm);
    }
    if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
        fail("%s: central directory [%llu, +%llu) lies outside the archive", nm, (unsigned long long)cd_offset, (unsigned long long)cd_size);
    if (n_entries > cd_size / kCentralSize)
        fail("%s: %llu entries cannot fit in a %llu-byte central directory", nm, (unsigned long long)n_entries, (unsigned long long)cd_size);

    ByteReader cd(bytes.data() + cd_offset, cd_size, name_ + ": zip central directory");
    entries_.reserve(n_entries);
    std::unordered_set<std::string> names;
    for (uint64_t i = 0; i < n_entries; ++i) {
        if (cd.u32("central header") != kCentralSig) fail("%s: bad central directory header signature (entry %llu)", nm, (unsigned long long)i);
        ZipEntry e;
        cd.u16("version made by");
        cd.u16("version needed");
        e.flags = cd.u16("flags");
        e.method = cd.u16("method");
        cd.u16("time");
        cd.u16("date");
        e.crc32 = cd.u32("crc32");
        e.compressed_size = cd.u32("compressed size");
        e.size = cd.u32("size");
        const uint16_t name_len = cd.u16("name length");
        const uint16_t extra_len = cd.u16("extra length");
        const uint16_t comment_len = cd.u16("comment length");
        const uint16_t start_disk = cd.u16("start disk");
        cd.u16("internal attributes");
        cd.u32("external attributes");
        e.header_offset = cd.u32("local header offset");
        e.name = std::string(cd.view(name_len, "entry name"));
        const char* en = e.name.c_str();
        ByteReader extra(cd.take(extra_len, "extra field"), extra_len, name_ + ": " + e.name + ": extra field");
        cd.skip(comment_len, "entry comment");
        // zip64 extended information replaces the fields that are saturated, in this order
        bool need_size = e.size == 0xffffffff, need_csize = e.compressed_size == 0xffffffff,
             need_offset = e.header_offset == 0xffffffff;
        while (extra.remaining() >= 4) {
            const uint16_t id = extra.u16("extra id");
            const uint16_t len = extra.u16("extra length");
            ByteReader field(extra.take(len, "extra data"), len, name_ + ": " + e.name + ": zip64 field");
            if (id != kZip64ExtraId) continue;
            if (need_size) { e.size = field.u64("zip64 size"); need_size = false; }
            if (need_csize) { e.compressed_size = field.u64("zip64 compressed size"); need_csize = false; }
            if (need_offset) { e.header_offset = field.u64("zip64 header offset"); need_offset = false; }
        }
        if (need_size || need_csize || need_offset) fail("%s: entry %s: saturated sizes without a zip64 extra field", nm, en);
        if (start_disk != 0 && start_disk != 0xffff) fail("%s: entry %s: multi-disk archives are not supported", nm, en);
        if (!names.insert(e.name).second) fail("%s: duplicate entry %s", nm, en);
        if (e.flags & 1) fail("%s: entry %s is encrypted", nm, en);
        if (e.method != 0 && e.method != 8) fail("%s: entry %s uses compression method %u (only stored entries are read)", nm, en, e.method);
        if (e.method == 0 && e.size != e.compressed_size)
            fail("%s: entry %s: stored entry with size %llu but compressed size %llu", nm, en, (unsigned long long)e.size,
                 (unsigned long long)e.compressed_size);

        // Local header: must agree with the directory.
        if (e.header_offset > cd_offset || cd_offset - e.header_offset < kLocalSize)
            fail("%s: entry %s: local header offset %llu is outside the archive data", nm, en, (unsigned long long)e.header_offset);
        ByteReader lh(bytes.data() + e.header_offset, cd_offset - e.header_offset, name_ + ": " + e.name + ": local header");
        if (lh.u32("signature") != kLocalSig) fail("%s: entry %s: bad local header signature at %llu", nm, en, (unsigned long long)e.header_offset);
        lh.u16("version needed");
        const uint16_t l_flags = lh.u16("flags");
        const uint16_t l_method = lh.u16("method");
        lh.u16("time");
        lh.u16("date");
        const uint32_t l_crc = lh.u32("crc32");
        const uint32_t l_csize = lh.u32("compressed size");
        const uint32_t l_size = lh.u32("size");
        const uint16_t l_name_len = lh.u16("name length");
        const uint16_t l_extra_len = lh.u16("extra length");
        const std::string_view l_name = lh.view(l_name_len, "name");
        lh.skip(l_extra_len, "extra field");
        if (l_name != e.name) fail("%s: entry %s: local header names it \"%.*s\"", nm, en, (int)l_name.size(), l_name.data());
        if (l_method != e.method) fail("%s: entry %s: local header method %u differs from the directory's %u", nm, en, l_method, e.method);
        if ((l_flags & 1) != (e.flags & 1)) fail("%s: entry %s: local header encryption flag differs", nm, en);
        if (!(l_flags & 8)) {
            // no data descriptor: the local header carries CRC and sizes (saturated when zip64)
            if (l_crc != e.crc32) fail("%s: entry %s: local header CRC %08x differs from the directory's %08x", nm, en, l_crc, e.crc32);
            if ((l_csize != 0xffffffff && l_csize != e.compressed_size) || (l_size != 0xffffffff && l_size != e.size))
                fail("%s: entry %s: local header sizes differ from the directory's", nm, en);
        }
        e.data_offset = e.header_offset + lh.pos();
        if (e.compressed_size > cd_offset - e.data_offset)
            fail("%s: entry %s: data [%llu, +%llu) runs past the central directory at %llu", nm, en,
                 (unsigned long long)e.data_offset, (unsigned long long)e.compressed_size, (unsigned long long)cd_offset);
        entries_.push_back(std::move(e));
    }
    // Local headers + data must not overlap (a crafted archive could alias one entry's bytes).
    std::vector<const ZipEntry*> by_offset;
    for (const auto& e : entries_) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->header_offset < b->header_offset; });
    for (size_t i = 1; i < by_offset.size(); ++i)
        if (by_offset[i - 1]->data_offset + by_offset[i - 1]->compressed_size > by_offset[i]->header_offset)
            fail("%s: entries %s and %s overlap", nm, by_offset[i - 1]->name.c_str(), by_offset[i]->name.c_str());
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
    for (const auto& e : entries_)
        if (e.name == name) return &e;
    return nullptr;
}

std::span<const uint8_t> ZipArchive::data(const ZipEntry& e) const {
    if (e.method != 0)
        fail("%s: entry %s is compressed (method %u); only stored entries are read, as torch.save writes them "
             "(re-save the checkpoint with torch.save, or unzip and re-zip with -0)", name_.c_str(), e.name.c_str(), e.method);
    return bytes_.subspan(static_cast<size_t>(e.data_offset), static_cast<size_t>(e.size));
}

void ZipArchive::verify_crc(const ZipEntry& e) const {
    const auto d = data(e);
    uLong crc = ::crc32(0L, Z_NULL, 0);
    const uint8_t* p = d.data();
    size_t n = d.size();
    while (n) {  // zlib takes uInt lengths
        const uInt k = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
        crc = ::crc32(crc, p, k);
        p += k;
        n -= k;
    }
    if (static_cast<uint32_t>(crc) != e.crc32)
        fail("%s: entry %s: CRC-32 %08x does not match the directory's %08x (corrupt file)", name_.c_str(), e.name.c_str(),
             static_cast<uint32_t>(crc), e.crc32);
}

}  // namespace hg
