// PyTorch zip checkpoint writer (torch_writer.h). Zip layout per PKWARE's APPNOTE: for each entry a
// local file header (signature, version, flags, method 0, time/date 0, CRC-32, sizes, name, extra
// field) and the data; then the central directory (one record per entry) and the end record.
#include "formats/torch_writer.h"

#include "formats/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "core/error.h"

namespace hg {

namespace {

constexpr size_t kAlign = 64;  // torch's kFieldAlignment: every entry's data starts at a multiple of 64

const char* storage_class(DType t) {
    switch (t) {
        case DType::F32: return "FloatStorage";
        case DType::F16: return "HalfStorage";
        case DType::BF16: return "BFloat16Storage";
        default: return nullptr;
    }
}

// Where the bytes go: a growing buffer or a file descriptor. Counts what was written.
class Sink {
public:
    virtual ~Sink() = default;
    virtual void put(const void* p, size_t n) = 0;
    uint64_t pos = 0;
    void u8(uint8_t v) { put(&v, 1); }
    void u16(uint16_t v) { uint8_t b[2] = {uint8_t(v), uint8_t(v >> 8)}; put(b, 2); }
    void u32(uint32_t v) { uint8_t b[4]; for (int i = 0; i < 4; ++i) b[i] = uint8_t(v >> (8 * i)); put(b, 4); }
    void str(const std::string& s) { put(s.data(), s.size()); }
};

class MemorySink final : public Sink {
public:
    std::vector<uint8_t> bytes;
    void put(const void* p, size_t n) override {
        const uint8_t* b = static_cast<const uint8_t*>(p);
        bytes.insert(bytes.end(), b, b + n);
        pos += n;
    }
};

class FileSink final : public Sink {
public:
    FileSink(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
    void put(const void* p, size_t n) override {
        write_all(fd_, p, n, name_);
        pos += n;
    }

private:
    int fd_;
    std::string name_;
};

// The protocol-2 pickle torch.save writes for an OrderedDict of tensors (no memo: every GLOBAL and
// string is written out; Python's pickler memoizes, which only makes the file shorter).
class Pickler {
public:
    std::vector<uint8_t> out;
    void op(uint8_t c) { out.push_back(c); }
    void global(const char* module, const char* name) {
        op('c');
        for (const char* p = module; *p; ++p) op(uint8_t(*p));
        op('\n');
        for (const char* p = name; *p; ++p) op(uint8_t(*p));
        op('\n');
    }
    void unicode(const std::string& s) {  // BINUNICODE: u32 length + UTF-8 bytes
        op('X');
        for (int i = 0; i < 4; ++i) op(uint8_t(uint32_t(s.size()) >> (8 * i)));
        out.insert(out.end(), s.begin(), s.end());
    }
    void integer(int64_t v) {
        if (v >= 0 && v < 256) {
            op('K');
            op(uint8_t(v));
        } else if (v >= 0 && v < 65536) {
            op('M');
            op(uint8_t(v));
            op(uint8_t(v >> 8));
        } else if (v >= INT32_MIN && v <= INT32_MAX) {
            op('J');
            for (int i = 0; i < 4; ++i) op(uint8_t(uint32_t(int32_t(v)) >> (8 * i)));
        } else {  // LONG1: little-endian two's complement, 8 bytes is always enough
            op(0x8a);
            op(8);
            for (int i = 0; i < 8; ++i) op(uint8_t(uint64_t(v) >> (8 * i)));
        }
    }
    void int_tuple(const std::vector<int64_t>& v) {
        if (v.empty()) {
            op(')');
            return;
        }
        if (v.size() > 3) op('(');
        for (int64_t x : v) integer(x);
        if (v.size() == 1) op(0x85);
        else if (v.size() == 2) op(0x86);
        else if (v.size() == 3) op(0x87);
        else op('t');
    }
    void empty_ordered_dict() {
        global("collections", "OrderedDict");
        op(')');
        op('R');
    }
};

uint32_t crc_of(const void* data, uint64_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (n > 0) {  // zlib takes uInt lengths
        const uInt chunk = n > (1u << 30) ? (1u << 30) : static_cast<uInt>(n);
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return static_cast<uint32_t>(crc);
}

}  // namespace

TorchWriter::TorchWriter(std::string archive_name) : archive_(std::move(archive_name)) {
    HG_CHECK(!archive_.empty() && archive_.find('/') == std::string::npos,
             "torch writer: archive name \"%s\" must be a non-empty name without '/'", archive_.c_str());
}

TorchWriter::Entry& TorchWriter::new_entry(std::string name, DType type, const std::vector<int64_t>& shape) {
    HG_CHECK(storage_class(type), "torch writer: tensor %s: type %s is not written (F32, F16, BF16 only)", name.c_str(),
             dtype_name(type));
    for (const auto& t : tensors_)
        HG_CHECK(t.name != name, "torch writer: tensor %s added twice", name.c_str());
    int64_t numel = 1;
    for (int64_t d : shape) {
        HG_CHECK(d >= 0, "torch writer: tensor %s has a negative dimension", name.c_str());
        numel *= d;
    }
    Entry e;
    e.name = std::move(name);
    e.type = type;
    e.shape = shape;
    e.nbytes = static_cast<uint64_t>(numel) * dtype_info(type).block_bytes;
    tensors_.push_back(std::move(e));
    return tensors_.back();
}

void TorchWriter::add(std::string name, DType type, const std::vector<int64_t>& shape, const void* data) {
    Entry& e = new_entry(std::move(name), type, shape);
    const uint8_t* b = static_cast<const uint8_t*>(data);
    e.owned = std::make_shared<std::vector<uint8_t>>(b, b + e.nbytes);
    e.data = e.owned->data();
}

void TorchWriter::add_borrowed(std::string name, DType type, const std::vector<int64_t>& shape, const void* data) {
    new_entry(std::move(name), type, shape).data = data;
}

std::vector<uint8_t> TorchWriter::pickle() const {
    Pickler p;
    p.op(0x80);  // PROTO 2
    p.op(2);
    p.empty_ordered_dict();
    p.op('(');  // MARK for SETITEMS
    for (size_t i = 0; i < tensors_.size(); ++i) {
        const Entry& t = tensors_[i];
        int64_t numel = 1;
        for (int64_t d : t.shape) numel *= d;
        std::vector<int64_t> stride(t.shape.size());
        int64_t s = 1;
        for (size_t d = t.shape.size(); d-- > 0;) {
            stride[d] = s;
            s *= t.shape[d];
        }
        p.unicode(t.name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op('(');                // MARK: the argument tuple
        p.op('(');                // MARK: the persistent id
        p.unicode("storage");
        p.global("torch", storage_class(t.type));
        p.unicode(std::to_string(i));  // storage key = the data/<key> record
        p.unicode("cpu");
        p.integer(numel);
        p.op('t');
        p.op('Q');                // BINPERSID
        p.integer(0);             // storage offset
        p.int_tuple(t.shape);
        p.int_tuple(stride);
        p.op(0x89);               // requires_grad = False
        p.empty_ordered_dict();   // backward hooks
        p.op('t');
        p.op('R');                // _rebuild_tensor_v2(*args)
    }
    p.op('u');  // SETITEMS
    p.op('.');  // STOP
    return p.out;
}

template <typename SinkT>
void TorchWriter::emit(SinkT& out) const {
    struct Record {
        std::string name;
        const void* data;
        uint64_t size;
        uint32_t crc;
        uint64_t header_offset;
    };
    const std::vector<uint8_t> pkl = pickle();
    static const char kByteorder[] = "little";
    static const char kVersion[] = "3\n";
    std::vector<Record> recs;
    recs.push_back({archive_ + "/data.pkl", pkl.data(), pkl.size(), 0, 0});
    recs.push_back({archive_ + "/byteorder", kByteorder, 6, 0, 0});
    for (size_t i = 0; i < tensors_.size(); ++i)
        recs.push_back({archive_ + "/data/" + std::to_string(i), tensors_[i].data, tensors_[i].nbytes, 0, 0});
    recs.push_back({archive_ + "/version", kVersion, 2, 0, 0});

    constexpr uint64_t kMax32 = 0xffffffffull;
    for (Record& r : recs) {
        HG_CHECK(r.size < kMax32 && out.pos < kMax32 && r.name.size() < 65536,
                 "torch writer: %s: entries and files over 4 GiB need zip64, which this writer does not write",
                 r.name.c_str());
        r.crc = crc_of(r.data, r.size);
        r.header_offset = out.pos;
        // The data starts after the 30-byte header, the name and the extra field (4 bytes + padding).
        const uint64_t start = out.pos + 30 + r.name.size() + 4;
        const uint16_t pad = static_cast<uint16_t>((kAlign - start % kAlign) % kAlign);
        out.u32(0x04034b50);  // local file header
        out.u16(20);          // version needed: 2.0
        out.u16(0);           // flags
        out.u16(0);           // method: stored
        out.u16(0);           // time
        out.u16(0);           // date
        out.u32(r.crc);
        out.u32(static_cast<uint32_t>(r.size));  // compressed size
        out.u32(static_cast<uint32_t>(r.size));  // uncompressed size
        out.u16(static_cast<uint16_t>(r.name.size()));
        out.u16(static_cast<uint16_t>(4 + pad));
        out.str(r.name);
        out.u16(0x4246);  // "FB": torch's padding extra field
        out.u16(pad);
        static const std::string kZ(kAlign, 'Z');
        out.put(kZ.data(), pad);
        out.put(r.data, r.size);
    }
    const uint64_t cd_offset = out.pos;
    for (const Record& r : recs) {
        out.u32(0x02014b50);  // central directory record
        out.u16(20);          // version made by
        out.u16(20);          // version needed
        out.u16(0);
        out.u16(0);
        out.u16(0);
        out.u16(0);
        out.u32(r.crc);
        out.u32(static_cast<uint32_t>(r.size));
        out.u32(static_cast<uint32_t>(r.size));
        out.u16(static_cast<uint16_t>(r.name.size()));
        out.u16(0);  // extra
        out.u16(0);  // comment
        out.u16(0);  // disk
        out.u16(0);  // internal attributes
        out.u32(0);  // external attributes
        out.u32(static_cast<uint32_t>(r.header_offset));
        out.str(r.name);
    }
    const uint64_t cd_size = out.pos - cd_offset;
    HG_CHECK(out.pos < kMax32 && recs.size() < 65535, "torch writer: the archive needs zip64, which this writer does not write");
    out.u32(0x06054b50);  // end of central directory
    out.u16(0);
    out.u16(0);
    out.u16(static_cast<uint16_t>(recs.size()));
    out.u16(static_cast<uint16_t>(recs.size()));
    out.u32(static_cast<uint32_t>(cd_size));
    out.u32(static_cast<uint32_t>(cd_offset));
    out.u16(0);  // comment length
}

std::vector<uint8_t> TorchWriter::to_bytes() const {
    MemorySink s;
    emit(s);
    return std::move(s.bytes);
}

void TorchWriter::write(const std::filesystem::path& path) const {
    write_file_atomically(path, [&](int fd, const std::string& tmp) {
        FileSink sink(fd, tmp);
        emit(sink);
    });
}

}  // namespace hg
