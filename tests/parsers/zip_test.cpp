// The ZIP reader: the directory of a torch.save archive must match Python's zipfile
// (tensors.zip.json); zip64 records (hand-built, and a sparse archive with an entry past
// 4 GiB) must be followed; malformed archives must give hg::Error.
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/mapped_file.h"
#include "formats/zip.h"
#include "test_util.h"

using hg::ZipArchive;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string zip_error(const std::vector<uint8_t>& b) {
    try {
        ZipArchive z(b, "bad.zip");
        for (const auto& e : z.entries()) z.verify_crc(e);
        return "";
    } catch (const hg::Error& e) {
        return e.what();
    }
}

#define EXPECT_ZIP_ERROR(bytes, substr)                                          \
    do {                                                                         \
        const std::string msg_ = zip_error(bytes);                               \
        EXPECT_NE(msg_, "") << "parsed without error";                          \
        EXPECT_NE(msg_.find(substr), std::string::npos) << "message: " << msg_; \
    } while (0)

// A ZIP writer for test archives: stored entries, optional zip64 records.
struct ZipBuilder {
    struct E {
        std::string name;
        std::string data;
        uint64_t offset = 0;
        uint16_t method = 0, flags = 0;
        uint32_t crc = 0;
        bool zip64 = false;
    };
    std::vector<E> entries;
    std::vector<uint8_t> out;

    template <typename T>
    static void put(std::vector<uint8_t>& b, T v) {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
        b.insert(b.end(), p, p + sizeof v);
    }
    static void put_str(std::vector<uint8_t>& b, const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }

    void add(std::string name, std::string data, bool zip64 = false) {
        E e;
        e.name = std::move(name);
        e.data = std::move(data);
        e.crc = static_cast<uint32_t>(::crc32(0, reinterpret_cast<const Bytef*>(e.data.data()), static_cast<uInt>(e.data.size())));
        e.zip64 = zip64;
        e.offset = out.size();
        put<uint32_t>(out, 0x04034b50);
        put<uint16_t>(out, 20);
        put<uint16_t>(out, e.flags);
        put<uint16_t>(out, e.method);
        put<uint16_t>(out, 0);
        put<uint16_t>(out, 0);
        put<uint32_t>(out, e.crc);
        put<uint32_t>(out, zip64 ? 0xffffffffu : static_cast<uint32_t>(e.data.size()));
        put<uint32_t>(out, zip64 ? 0xffffffffu : static_cast<uint32_t>(e.data.size()));
        put<uint16_t>(out, static_cast<uint16_t>(e.name.size()));
        put<uint16_t>(out, 0);
        put_str(out, e.name);
        put_str(out, e.data);
        entries.push_back(e);
    }
    // The archive: entries, central directory, end records (`zip64_end`: zip64 EOCD + locator).
    std::vector<uint8_t> finish(bool zip64_end = false) {
        std::vector<uint8_t> b = out;
        const auto t = trailer(zip64_end, out.size());
        b.insert(b.end(), t.begin(), t.end());
        return b;
    }
    // Central directory + end records for a directory that starts at file offset `cd`.
    std::vector<uint8_t> trailer(bool zip64_end, uint64_t cd) {
        std::vector<uint8_t> b;
        for (const auto& e : entries) {
            put<uint32_t>(b, 0x02014b50);
            put<uint16_t>(b, 45);
            put<uint16_t>(b, 45);
            put<uint16_t>(b, e.flags);
            put<uint16_t>(b, e.method);
            put<uint16_t>(b, 0);
            put<uint16_t>(b, 0);
            put<uint32_t>(b, e.crc);
            put<uint32_t>(b, e.zip64 ? 0xffffffffu : static_cast<uint32_t>(e.data.size()));
            put<uint32_t>(b, e.zip64 ? 0xffffffffu : static_cast<uint32_t>(e.data.size()));
            put<uint16_t>(b, static_cast<uint16_t>(e.name.size()));
            put<uint16_t>(b, e.zip64 ? 28 : 0);
            put<uint16_t>(b, 0);
            put<uint16_t>(b, 0);
            put<uint16_t>(b, 0);
            put<uint32_t>(b, 0);
            put<uint32_t>(b, e.zip64 ? 0xffffffffu : static_cast<uint32_t>(e.offset));
            put_str(b, e.name);
            if (e.zip64) {
                put<uint16_t>(b, 1);
                put<uint16_t>(b, 24);
                put<uint64_t>(b, e.data.size());
                put<uint64_t>(b, e.data.size());
                put<uint64_t>(b, e.offset);
            }
        }
        const uint64_t cd_size = b.size();
        if (zip64_end) {
            const uint64_t z = cd + b.size();
            put<uint32_t>(b, 0x06064b50);
            put<uint64_t>(b, 44);
            put<uint16_t>(b, 45);
            put<uint16_t>(b, 45);
            put<uint32_t>(b, 0);
            put<uint32_t>(b, 0);
            put<uint64_t>(b, entries.size());
            put<uint64_t>(b, entries.size());
            put<uint64_t>(b, cd_size);
            put<uint64_t>(b, cd);
            put<uint32_t>(b, 0x07064b50);
            put<uint32_t>(b, 0);
            put<uint64_t>(b, z);
            put<uint32_t>(b, 1);
        }
        put<uint32_t>(b, 0x06054b50);
        put<uint16_t>(b, 0);
        put<uint16_t>(b, 0);
        put<uint16_t>(b, zip64_end ? 0xffff : static_cast<uint16_t>(entries.size()));
        put<uint16_t>(b, zip64_end ? 0xffff : static_cast<uint16_t>(entries.size()));
        put<uint32_t>(b, zip64_end ? 0xffffffffu : static_cast<uint32_t>(cd_size));
        put<uint32_t>(b, zip64_end ? 0xffffffffu : static_cast<uint32_t>(cd));
        put<uint16_t>(b, 0);
        return b;
    }
};

}  // namespace

TEST(Zip, TorchArchiveLikePythonZipfile) {
    const json ref = [] { std::ifstream f(hgtest::fixture("formats/torch/tensors.zip.json")); return json::parse(f); }();
    const auto bytes = hgtest::read_file(hgtest::fixture("formats/torch/tensors.pt"));
    ZipArchive z(bytes, "tensors.pt");
    ASSERT_EQ(z.entries().size(), ref["entries"].size());
    for (size_t i = 0; i < z.entries().size(); ++i) {
        const auto& e = z.entries()[i];
        const auto& r = ref["entries"][i];
        SCOPED_TRACE(e.name);
        EXPECT_EQ(e.name, r["name"].get<std::string>());
        EXPECT_EQ(e.size, r["size"].get<uint64_t>());
        EXPECT_EQ(e.compressed_size, r["compressed_size"].get<uint64_t>());
        EXPECT_EQ(e.method, r["method"].get<uint16_t>());
        EXPECT_EQ(e.crc32, r["crc32"].get<uint32_t>());
        EXPECT_EQ(e.header_offset, r["header_offset"].get<uint64_t>());
        EXPECT_EQ(e.flags, r["flags"].get<uint16_t>());
        const auto d = z.data(e);
        std::string first;
        for (size_t k = 0; k < d.size() && k < 16; ++k) {
            char h[3];
            std::snprintf(h, sizeof h, "%02x", d[k]);
            first += h;
        }
        EXPECT_EQ(first, r["first_bytes"].get<std::string>());
        EXPECT_NO_THROW(z.verify_crc(e));
        EXPECT_EQ(e.data_offset % 64, 0u);  // torch aligns storage data to 64 bytes
    }
}

TEST(Zip, BuiltArchivesIncludingZip64) {
    for (bool z64 : {false, true}) {
        ZipBuilder b;
        b.add("a/data.pkl", "hello", z64);
        b.add("a/data/0", std::string(100, 'x'), z64);
        b.add("a/empty", "", z64);
        const auto bytes = b.finish(z64);
        ZipArchive z(bytes, "built.zip");
        ASSERT_EQ(z.entries().size(), 3u);
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(z.data(*z.find("a/data.pkl")).data()), 5), "hello");
        EXPECT_EQ(z.data(*z.find("a/data/0")).size(), 100u);
        EXPECT_EQ(z.data(*z.find("a/empty")).size(), 0u);
        for (const auto& e : z.entries()) EXPECT_NO_THROW(z.verify_crc(e));
        EXPECT_EQ(z.find("nope"), nullptr);
        // with a trailing comment
        auto with_comment = bytes;
        with_comment[with_comment.size() - 2] = 3;
        with_comment.insert(with_comment.end(), {'a', 'b', 'c'});
        EXPECT_EQ(zip_error(with_comment), "");
    }
}

TEST(Zip, RefusesMalformedArchives) {
    ZipBuilder b;
    b.add("a/x", "data1");
    b.add("a/y", "data2");
    const auto good = b.finish();
    EXPECT_EQ(zip_error(good), "");
    EXPECT_ZIP_ERROR(std::vector<uint8_t>{}, "no end-of-central-directory");
    EXPECT_ZIP_ERROR(std::vector<uint8_t>(good.begin(), good.end() - 1), "no end-of-central-directory");

    auto patch = [&](size_t at, std::vector<uint8_t> v) {
        auto m = good;
        std::copy(v.begin(), v.end(), m.begin() + static_cast<std::ptrdiff_t>(at));
        return m;
    };
    const size_t eocd = good.size() - 22;
    const size_t cd = eocd - 2 * (46 + 3);
    EXPECT_ZIP_ERROR(patch(eocd + 8, {0xff, 0x00, 0xff, 0x00}), "cannot fit");           // entry counts
    EXPECT_ZIP_ERROR(patch(eocd + 16, {0xf0, 0xff, 0xff, 0x7f}), "outside the archive");  // cd offset
    EXPECT_ZIP_ERROR(patch(eocd + 4, {1, 0}), "multi-disk");
    EXPECT_ZIP_ERROR(patch(cd, {'X'}), "bad central directory header signature");
    EXPECT_ZIP_ERROR(patch(cd + 8, {1, 0}), "encrypted");                                  // flags bit 0
    EXPECT_ZIP_ERROR(patch(cd + 10, {8, 0}), "local header method");                       // deflate in the directory only
    EXPECT_ZIP_ERROR(patch(cd + 10, {99, 0}), "compression method 99");
    EXPECT_ZIP_ERROR(patch(cd + 16, {0, 0, 0, 0}), "CRC");                                 // local header CRC differs
    EXPECT_ZIP_ERROR(patch(cd + 20, {6, 0, 0, 0}), "stored entry with size");
    EXPECT_ZIP_ERROR(patch(cd + 20, {0xff, 0, 0, 0}), "");                                 // sizes disagree
    EXPECT_ZIP_ERROR(patch(cd + 42, {0x30, 0, 0, 0}), "outside the archive data");         // local offset
    EXPECT_ZIP_ERROR(patch(cd + 42, {0x01, 0, 0, 0}), "bad local header signature");
    EXPECT_ZIP_ERROR(patch(cd + 46, {'b'}), "local header names it");                      // name mismatch
    EXPECT_ZIP_ERROR(patch(cd + 46 + 3 + 46 + 2, {'x'}), "duplicate entry a/x");           // second entry renamed to a/x
    EXPECT_ZIP_ERROR(patch(cd + 30, {0xff, 0xff}), "");                                    // extra length beyond the directory
    EXPECT_ZIP_ERROR(patch(30 + 3, {'D'}), "CRC-32");                                      // data byte changed
    EXPECT_ZIP_ERROR(patch(cd + 20, {0xff, 0xff, 0xff, 0xff}), "zip64");                   // saturated size, no zip64 field

    // overlapping entries: the second directory entry points at the first local header's data
    ZipBuilder o;
    o.add("a/x", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    o.add("a/y", "b");
    auto ov = o.finish();
    const size_t ov_cd = ov.size() - 22 - 2 * (46 + 3);
    // craft: copy entry x's local header bytes into x's data region and point y there
    std::vector<uint8_t> lh(ov.begin(), ov.begin() + 30 + 3);
    lh[26] = 3;
    lh[26 + 1] = 0;
    lh[30] = 'a';
    lh[31] = '/';
    lh[32] = 'y';
    const uint32_t crc_b = static_cast<uint32_t>(::crc32(0, reinterpret_cast<const Bytef*>("b"), 1));
    std::memcpy(lh.data() + 14, &crc_b, 4);
    const uint32_t one = 1;
    std::memcpy(lh.data() + 18, &one, 4);
    std::memcpy(lh.data() + 22, &one, 4);
    std::copy(lh.begin(), lh.end(), ov.begin() + 33);
    ov[33 + 33] = 'b';
    const uint32_t at = 33;
    std::memcpy(ov.data() + ov_cd + 46 + 3 + 42, &at, 4);
    EXPECT_ZIP_ERROR(ov, "overlap");

    // zip64 end record problems
    ZipBuilder z;
    z.add("a/x", "data", true);
    auto z64 = z.finish(true);
    EXPECT_EQ(zip_error(z64), "");
    auto no_loc = z64;
    no_loc[no_loc.size() - 22 - 20] = 'X';
    EXPECT_ZIP_ERROR(no_loc, "zip64 locator");
    auto bad_rec = z64;
    bad_rec[bad_rec.size() - 22 - 20 - 56] = 'X';
    EXPECT_ZIP_ERROR(bad_rec, "zip64 end-of-central-directory");
}

TEST(Zip, EveryTruncationAndMutationOfATorchArchive) {
    const auto full = hgtest::read_file(hgtest::fixture("formats/torch/tensors.pt"));
    for (size_t n = 0; n < full.size(); ++n)
        EXPECT_NE(zip_error(std::vector<uint8_t>(full.begin(), full.begin() + n)), "") << "cut at " << n;
    ZipArchive z(full, "tensors.pt");
    const size_t cd = static_cast<size_t>(z.entries().back().data_offset + z.entries().back().compressed_size);
    int refused = 0;
    for (size_t i = 0; i < full.size(); ++i) {
        // every byte of headers and directory; data bytes only matter to the CRC
        bool header = i >= cd;
        for (const auto& e : z.entries()) header = header || (i >= e.header_offset && i < e.data_offset);
        if (!header) continue;
        for (uint8_t v : {uint8_t{0}, uint8_t{0xff}, static_cast<uint8_t>(full[i] + 1)}) {
            if (v == full[i]) continue;
            auto m = full;
            m[i] = v;
            refused += zip_error(m).empty() ? 0 : 1;
        }
    }
    EXPECT_GT(refused, 0);
}

TEST(Zip, SparseArchiveBeyond4GiB) {
    // An entry whose local header sits past 4 GiB, reachable only through zip64 fields.
    const uint64_t far = (4ull << 30) + 4096;
    ZipBuilder b;
    b.add("a/x", "near");
    std::vector<uint8_t> head = b.out;
    ZipBuilder::E e;
    e.name = "a/y";
    e.data = "far away";
    e.crc = static_cast<uint32_t>(::crc32(0, reinterpret_cast<const Bytef*>(e.data.data()), 8));
    e.zip64 = true;
    e.offset = far;
    std::vector<uint8_t> local;
    ZipBuilder::put<uint32_t>(local, 0x04034b50);
    ZipBuilder::put<uint16_t>(local, 45);
    ZipBuilder::put<uint16_t>(local, 0);
    ZipBuilder::put<uint16_t>(local, 0);
    ZipBuilder::put<uint32_t>(local, 0);
    ZipBuilder::put<uint32_t>(local, e.crc);
    ZipBuilder::put<uint32_t>(local, 0xffffffffu);
    ZipBuilder::put<uint32_t>(local, 0xffffffffu);
    ZipBuilder::put<uint16_t>(local, 3);
    ZipBuilder::put<uint16_t>(local, 0);
    ZipBuilder::put_str(local, e.name);
    ZipBuilder::put_str(local, e.data);
    // directory + zip64 end records after the far entry
    ZipBuilder tail;
    tail.entries = b.entries;
    tail.entries.push_back(e);
    const std::vector<uint8_t> trailer = tail.trailer(true, far + local.size());

    const fs::path p = hgtest::scratch_dir() / "sparse.zip";
    const int fd = ::open(p.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, head.data(), head.size(), 0), (ssize_t)head.size());
    ASSERT_EQ(::pwrite(fd, local.data(), local.size(), (off_t)far), (ssize_t)local.size());
    ASSERT_EQ(::pwrite(fd, trailer.data(), trailer.size(), (off_t)(far + local.size())), (ssize_t)trailer.size());
    ::close(fd);

    hg::MappedFile f(p);
    ZipArchive z(f.bytes(), p.string());
    const hg::ZipEntry* y = z.find("a/y");
    ASSERT_NE(y, nullptr);
    EXPECT_EQ(y->header_offset, far);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(z.data(*y).data()), 8), "far away");
    EXPECT_NO_THROW(z.verify_crc(*y));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(z.data(*z.find("a/x")).data()), 4), "near");
    fs::remove(p);
}
