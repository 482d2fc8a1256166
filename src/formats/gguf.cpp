#include "formats/gguf.h"

#include "formats/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>

#include "core/error.h"
#include "formats/byte_reader.h"

namespace hg {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr size_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 16;        // nested arrays deeper than this are refused
constexpr size_t kMaxTensorName = 63;     // ggml's GGML_MAX_NAME (64) including the NUL

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GGUFType::FLOAT64); }

bool is_unsigned(GGUFType t) {
    return t == GGUFType::UINT8 || t == GGUFType::UINT16 || t == GGUFType::UINT32 || t == GGUFType::UINT64;
}
bool is_signed(GGUFType t) {
    return t == GGUFType::INT8 || t == GGUFType::INT16 || t == GGUFType::INT32 || t == GGUFType::INT64;
}
bool is_float(GGUFType t) { return t == GGUFType::FLOAT32 || t == GGUFType::FLOAT64; }

// One element of a packed numeric/bool array, decoded into a scalar value.
GGUFValue decode_scalar(GGUFType t, const uint8_t* p) {
    GGUFValue v;
    v.type = t;
    switch (t) {
        case GGUFType::UINT8: v.v = uint64_t{p[0]}; break;
        case GGUFType::INT8: v.v = int64_t{static_cast<int8_t>(p[0])}; break;
        case GGUFType::UINT16: { uint16_t x; std::memcpy(&x, p, 2); v.v = uint64_t{x}; break; }
        case GGUFType::INT16: { int16_t x; std::memcpy(&x, p, 2); v.v = int64_t{x}; break; }
        case GGUFType::UINT32: { uint32_t x; std::memcpy(&x, p, 4); v.v = uint64_t{x}; break; }
        case GGUFType::INT32: { int32_t x; std::memcpy(&x, p, 4); v.v = int64_t{x}; break; }
        case GGUFType::UINT64: { uint64_t x; std::memcpy(&x, p, 8); v.v = x; break; }
        case GGUFType::INT64: { int64_t x; std::memcpy(&x, p, 8); v.v = x; break; }
        case GGUFType::FLOAT32: { float x; std::memcpy(&x, p, 4); v.v = double{x}; break; }
        case GGUFType::FLOAT64: { double x; std::memcpy(&x, p, 8); v.v = x; break; }
        case GGUFType::BOOL: v.v = p[0] != 0; break;
        default: fail("GGUF: %s is not a scalar type", gguf_type_name(t));
    }
    return v;
}

// Shortest text that reads back to the same float (as Python's repr prints it).
std::string format_float(double x, bool single) {
    if (std::isnan(x)) return "nan";
    if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
    char buf[64];
    auto r = single ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(x)) : std::to_chars(buf, buf + sizeof buf, x);
    std::string s(buf, r.ptr);
    if (s.find_first_of(".en") == std::string::npos) s += ".0";
    return s;
}

// A string for display: quoted, control characters and invalid bytes escaped, cut at max_chars.
std::string quote(const std::string& s, size_t max_chars) {
    std::string out = "\"";
    size_t n = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        if (n++ >= max_chars) {
            out += "...";
            break;
        }
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            char b[8];
            std::snprintf(b, sizeof b, "\\x%02x", c);
            out += b;
        } else {
            out += static_cast<char>(c);  // UTF-8 passes through
        }
    }
    return out + "\"";
}

struct Parser {
    ByteReader r;

    std::string str(const char* what) {
        const uint64_t n = r.u64(what);
        if (n > r.remaining())
            fail("%s: %s: string length %llu at offset %llu exceeds the %llu bytes left in the file", r.name().c_str(),
                 what, (unsigned long long)n, (unsigned long long)(r.pos() - 8), (unsigned long long)r.remaining());
        return std::string(r.view(n, what));
    }

    GGUFType type(const char* what) {
        const uint64_t at = r.pos();
        const uint32_t t = r.u32(what);
        if (!valid_type(t)) fail("%s: %s: unknown value type %u at offset %llu", r.name().c_str(), what, t, (unsigned long long)at);
        return static_cast<GGUFType>(t);
    }

    // Reads a value of type t; `key` is for messages.
    GGUFValue value(GGUFType t, const std::string& key, int depth) {
        GGUFValue v;
        v.type = t;
        const size_t sz = gguf_scalar_size(t);
        if (sz) {
            const uint64_t at = r.pos();
            v = decode_scalar(t, r.take(sz, key.c_str()));
            if (t == GGUFType::BOOL && r.data()[at] > 1)
                fail("%s: key %s: invalid BOOL value %u at offset %llu", r.name().c_str(), key.c_str(), r.data()[at],
                     (unsigned long long)at);
            return v;
        }
        if (t == GGUFType::STRING) {
            v.v = str(key.c_str());
            return v;
        }
        // ARRAY: u32 element type, u64 count, elements (nested arrays repeat type + count, no tag)
        if (depth >= kMaxArrayDepth)
            fail("%s: key %s: arrays nested deeper than %d levels", r.name().c_str(), key.c_str(), kMaxArrayDepth);
        v.elem_type = type(key.c_str());
        const uint64_t at = r.pos();
        const uint64_t n = r.u64(key.c_str());
        const size_t esz = gguf_scalar_size(v.elem_type);
        // smallest possible encoding of one element: a bound on the count from the bytes left
        const uint64_t min_elem = esz ? esz : (v.elem_type == GGUFType::STRING ? 8 : 12);
        if (n > r.remaining() / min_elem)
            fail("%s: key %s: array of %llu %s at offset %llu cannot fit in the %llu bytes left in the file",
                 r.name().c_str(), key.c_str(), (unsigned long long)n, gguf_type_name(v.elem_type),
                 (unsigned long long)at, (unsigned long long)r.remaining());
        if (esz) {
            const uint8_t* p = r.take(n * esz, key.c_str());
            if (v.elem_type == GGUFType::BOOL)
                for (uint64_t i = 0; i < n; ++i)
                    if (p[i] > 1) fail("%s: key %s: invalid BOOL value %u in array element %llu", r.name().c_str(), key.c_str(), p[i], (unsigned long long)i);
            v.v = std::vector<uint8_t>(p, p + n * esz);
        } else if (v.elem_type == GGUFType::STRING) {
            std::vector<std::string> items;
            items.reserve(n);
            for (uint64_t i = 0; i < n; ++i) items.push_back(str(key.c_str()));
            v.v = std::move(items);
        } else {
            std::vector<GGUFValue> items;
            items.reserve(n);
            for (uint64_t i = 0; i < n; ++i) items.push_back(value(GGUFType::ARRAY, key, depth + 1));
            v.v = std::move(items);
        }
        return v;
    }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// GGUFType / GGUFValue

const char* gguf_type_name(GGUFType t) {
    switch (t) {
        case GGUFType::UINT8: return "UINT8";
        case GGUFType::INT8: return "INT8";
        case GGUFType::UINT16: return "UINT16";
        case GGUFType::INT16: return "INT16";
        case GGUFType::UINT32: return "UINT32";
        case GGUFType::INT32: return "INT32";
        case GGUFType::FLOAT32: return "FLOAT32";
        case GGUFType::BOOL: return "BOOL";
        case GGUFType::STRING: return "STRING";
        case GGUFType::ARRAY: return "ARRAY";
        case GGUFType::UINT64: return "UINT64";
        case GGUFType::INT64: return "INT64";
        case GGUFType::FLOAT64: return "FLOAT64";
    }
    return "UNKNOWN";
}

size_t gguf_scalar_size(GGUFType t) {
    switch (t) {
        case GGUFType::UINT8: case GGUFType::INT8: case GGUFType::BOOL: return 1;
        case GGUFType::UINT16: case GGUFType::INT16: return 2;
        case GGUFType::UINT32: case GGUFType::INT32: case GGUFType::FLOAT32: return 4;
        case GGUFType::UINT64: case GGUFType::INT64: case GGUFType::FLOAT64: return 8;
        default: return 0;
    }
}

GGUFValue GGUFValue::make_uint(GGUFType t, uint64_t x) {
    HG_CHECK(is_unsigned(t), "GGUF: make_uint needs an unsigned type, got %s", gguf_type_name(t));
    const size_t bits = gguf_scalar_size(t) * 8;
    HG_CHECK(bits == 64 || x < (uint64_t{1} << bits), "GGUF: %llu does not fit %s", (unsigned long long)x, gguf_type_name(t));
    GGUFValue v;
    v.type = t;
    v.v = x;
    return v;
}

GGUFValue GGUFValue::make_int(GGUFType t, int64_t x) {
    HG_CHECK(is_signed(t), "GGUF: make_int needs a signed type, got %s", gguf_type_name(t));
    const size_t bits = gguf_scalar_size(t) * 8;
    HG_CHECK(bits == 64 || (x >= -(int64_t{1} << (bits - 1)) && x < (int64_t{1} << (bits - 1))),
             "GGUF: %lld does not fit %s", (long long)x, gguf_type_name(t));
    GGUFValue v;
    v.type = t;
    v.v = x;
    return v;
}

GGUFValue GGUFValue::make_float(GGUFType t, double x) {
    HG_CHECK(is_float(t), "GGUF: make_float needs FLOAT32 or FLOAT64, got %s", gguf_type_name(t));
    GGUFValue v;
    v.type = t;
    v.v = t == GGUFType::FLOAT32 ? double{static_cast<float>(x)} : x;
    return v;
}

GGUFValue GGUFValue::make_bool(bool x) {
    GGUFValue v;
    v.type = GGUFType::BOOL;
    v.v = x;
    return v;
}

GGUFValue GGUFValue::make_string(std::string s) {
    GGUFValue v;
    v.type = GGUFType::STRING;
    v.v = std::move(s);
    return v;
}

GGUFValue GGUFValue::make_array(GGUFType elem, std::span<const uint8_t> packed) {
    const size_t esz = gguf_scalar_size(elem);
    HG_CHECK(esz, "GGUF: make_array(packed) needs a numeric or BOOL element type, got %s", gguf_type_name(elem));
    HG_CHECK(packed.size() % esz == 0, "GGUF: %zu bytes is not a whole number of %s elements", packed.size(), gguf_type_name(elem));
    if (elem == GGUFType::BOOL)
        for (uint8_t b : packed) HG_CHECK(b <= 1, "GGUF: BOOL array element %u is not 0 or 1", b);
    GGUFValue v;
    v.type = GGUFType::ARRAY;
    v.elem_type = elem;
    v.v = std::vector<uint8_t>(packed.begin(), packed.end());
    return v;
}

GGUFValue GGUFValue::make_string_array(std::vector<std::string> items) {
    GGUFValue v;
    v.type = GGUFType::ARRAY;
    v.elem_type = GGUFType::STRING;
    v.v = std::move(items);
    return v;
}

GGUFValue GGUFValue::make_array_of_arrays(std::vector<GGUFValue> items) {
    for (const auto& it : items) HG_CHECK(it.is_array(), "GGUF: make_array_of_arrays: an item is a %s, not an ARRAY", gguf_type_name(it.type));
    GGUFValue v;
    v.type = GGUFType::ARRAY;
    v.elem_type = GGUFType::ARRAY;
    v.v = std::move(items);
    return v;
}

bool GGUFValue::is_integer() const { return is_unsigned(type) || is_signed(type); }

size_t GGUFValue::array_size() const {
    if (!is_array()) return 0;
    if (const auto* b = std::get_if<std::vector<uint8_t>>(&v)) return b->size() / gguf_scalar_size(elem_type);
    if (const auto* s = std::get_if<std::vector<std::string>>(&v)) return s->size();
    if (const auto* a = std::get_if<std::vector<GGUFValue>>(&v)) return a->size();
    return 0;
}

GGUFValue GGUFValue::item(size_t i) const {
    HG_CHECK(is_array(), "GGUF: item() on a %s value", gguf_type_name(type));
    HG_CHECK(i < array_size(), "GGUF: array index %zu out of range (size %zu)", i, array_size());
    if (const auto* b = std::get_if<std::vector<uint8_t>>(&v)) return decode_scalar(elem_type, b->data() + i * gguf_scalar_size(elem_type));
    if (const auto* s = std::get_if<std::vector<std::string>>(&v)) return make_string((*s)[i]);
    return std::get<std::vector<GGUFValue>>(v)[i];
}

int64_t GGUFValue::as_int() const {
    if (const auto* u = std::get_if<uint64_t>(&v); u && is_unsigned(type)) {
        HG_CHECK(*u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), "GGUF: %llu does not fit int64", (unsigned long long)*u);
        return static_cast<int64_t>(*u);
    }
    if (const auto* s = std::get_if<int64_t>(&v); s && is_signed(type)) return *s;
    fail("GGUF: expected an integer, got %s", gguf_type_name(type));
}

uint64_t GGUFValue::as_uint() const {
    if (const auto* u = std::get_if<uint64_t>(&v); u && is_unsigned(type)) return *u;
    if (const auto* s = std::get_if<int64_t>(&v); s && is_signed(type)) {
        HG_CHECK(*s >= 0, "GGUF: expected a non-negative integer, got %lld", (long long)*s);
        return static_cast<uint64_t>(*s);
    }
    fail("GGUF: expected an integer, got %s", gguf_type_name(type));
}

double GGUFValue::as_float() const {
    if (is_float(type)) return std::get<double>(v);
    if (is_unsigned(type)) return static_cast<double>(std::get<uint64_t>(v));
    if (is_signed(type)) return static_cast<double>(std::get<int64_t>(v));
    fail("GGUF: expected a number, got %s", gguf_type_name(type));
}

bool GGUFValue::as_bool() const {
    HG_CHECK(type == GGUFType::BOOL, "GGUF: expected BOOL, got %s", gguf_type_name(type));
    return std::get<bool>(v);
}

const std::string& GGUFValue::as_string() const {
    HG_CHECK(type == GGUFType::STRING, "GGUF: expected STRING, got %s", gguf_type_name(type));
    return std::get<std::string>(v);
}

std::string GGUFValue::to_string(size_t max_array_items, size_t max_string_chars) const {
    if (is_unsigned(type)) return std::to_string(std::get<uint64_t>(v));
    if (is_signed(type)) return std::to_string(std::get<int64_t>(v));
    if (is_float(type)) return format_float(std::get<double>(v), type == GGUFType::FLOAT32);
    if (type == GGUFType::BOOL) return std::get<bool>(v) ? "true" : "false";
    if (type == GGUFType::STRING) return quote(std::get<std::string>(v), max_string_chars);
    const size_t n = array_size();
    std::string s = "[";
    for (size_t i = 0; i < n && i < max_array_items; ++i) {
        if (i) s += ", ";
        s += item(i).to_string(max_array_items, max_string_chars);
    }
    if (n > max_array_items) s += ", ... (" + std::to_string(n) + " items)";
    return s + "]";
}

// ---------------------------------------------------------------------------------------------
// GGUFTensorInfo

std::vector<int64_t> GGUFTensorInfo::shape() const {
    std::vector<int64_t> s(n_dims);
    for (int i = 0; i < n_dims; ++i) s[i] = ne[n_dims - 1 - i];
    return s;
}

int64_t GGUFTensorInfo::numel() const {
    int64_t n = 1;
    for (int i = 0; i < n_dims; ++i) n *= ne[i];
    return n;
}

// ---------------------------------------------------------------------------------------------
// GGUFFile

std::unique_ptr<GGUFFile> GGUFFile::open(const std::filesystem::path& path) {
    std::unique_ptr<GGUFFile> f(new GGUFFile());
    f->path_ = path;
    f->file_ = MappedFile(path);
    f->map_ = f->file_.data();
    f->size_ = f->file_.size();
    f->parse();
    return f;
}

std::unique_ptr<GGUFFile> GGUFFile::from_memory(std::span<const uint8_t> bytes, std::string name) {
    std::unique_ptr<GGUFFile> f(new GGUFFile());
    f->path_ = std::move(name);
    f->map_ = bytes.data();
    f->size_ = bytes.size();
    f->parse();
    return f;
}

GGUFFile::~GGUFFile() = default;

void GGUFFile::parse() {
    Parser ps{ByteReader(map_, size_, path_.string())};
    ByteReader& r = ps.r;
    const char* name = path_.c_str();

    if (size_ < 4) fail("%s: not a GGUF file (%llu bytes, too short for the magic)", name, (unsigned long long)size_);
    const uint32_t magic = r.u32("magic");
    if (magic != kMagic)
        fail("%s: not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")", name, map_[0], map_[1], map_[2], map_[3]);
    version_ = r.u32("version");
    if (version_ == 1) fail("%s: GGUF version 1 is not supported (32-bit counts; convert it again with a current tool)", name);
    if (version_ != 0 && (version_ & 0xffff) == 0)
        fail("%s: big-endian GGUF file (version field %08x); only little-endian files are supported", name, version_);
    if (version_ != 2 && version_ != 3) fail("%s: unsupported GGUF version %u (supported: 2, 3)", name, version_);

    const uint64_t n_tensors = r.u64("tensor count");
    const uint64_t n_kv = r.u64("metadata count");
    // Each key-value pair takes at least 13 bytes (u64 key length, u32 type, 1-byte value) and
    // each tensor info at least 32: counts beyond what the file can hold are refused up front.
    if (n_kv > r.remaining() / 13)
        fail("%s: metadata count %llu cannot fit in a %llu-byte file", name, (unsigned long long)n_kv, (unsigned long long)size_);
    if (n_tensors > r.remaining() / 32)
        fail("%s: tensor count %llu cannot fit in a %llu-byte file", name, (unsigned long long)n_tensors, (unsigned long long)size_);

    kv_.reserve(n_kv);
    for (uint64_t i = 0; i < n_kv; ++i) {
        const uint64_t at = r.pos();
        GGUFKV kv;
        kv.key = ps.str("metadata key");
        if (!kv_index_.emplace(kv.key, kv_.size()).second)
            fail("%s: duplicate metadata key \"%s\" at offset %llu", name, kv.key.c_str(), (unsigned long long)at);
        const GGUFType t = ps.type(kv.key.c_str());
        kv.value = ps.value(t, kv.key, 0);
        kv_.push_back(std::move(kv));
    }

    alignment_ = kDefaultAlignment;
    if (const GGUFValue* a = find("general.alignment")) {
        if (a->type != GGUFType::UINT32) fail("%s: general.alignment must be UINT32, got %s", name, gguf_type_name(a->type));
        const uint64_t al = std::get<uint64_t>(a->v);
        if (al == 0 || (al & (al - 1)) != 0) fail("%s: general.alignment %llu is not a power of two", name, (unsigned long long)al);
        alignment_ = static_cast<size_t>(al);
    }

    tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) {
        const uint64_t at = r.pos();
        GGUFTensorInfo ti;
        ti.name = ps.str("tensor name");
        const char* tn = ti.name.c_str();
        if (!tensor_index_.emplace(ti.name, tensors_.size()).second) fail("%s: duplicate tensor name \"%s\" at offset %llu", name, tn, (unsigned long long)at);
        const uint32_t n_dims = r.u32("tensor n_dims");
        if (n_dims == 0 || n_dims > 4) fail("%s: tensor %s: n_dims %u (must be 1 to 4)", name, tn, n_dims);
        ti.n_dims = static_cast<int>(n_dims);
        int64_t numel = 1;
        for (int d = 0; d < 4; ++d) ti.ne[d] = 1;
        for (int d = 0; d < ti.n_dims; ++d) {
            const uint64_t ne = r.u64("tensor dims");
            if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
                fail("%s: tensor %s: dimension %d is %llu (negative as int64)", name, tn, d, (unsigned long long)ne);
            ti.ne[d] = static_cast<int64_t>(ne);
            if (__builtin_mul_overflow(numel, ti.ne[d], &numel))
                fail("%s: tensor %s: element count overflows int64", name, tn);
        }
        const uint32_t type = r.u32("tensor type");
        const auto info = dtype_info(type);
        if (!info) fail("%s: tensor %s: unknown or unsupported ggml type %u", name, tn, type);
        ti.type = static_cast<DType>(type);
        if (ti.ne[0] % info->block_size != 0)
            fail("%s: tensor %s: row of %lld elements is not a whole number of %s blocks (%lld)", name, tn,
                 (long long)ti.ne[0], info->name, (long long)info->block_size);
        uint64_t nbytes = static_cast<uint64_t>(ti.ne[0] / info->block_size) * info->block_bytes;
        for (int d = 1; d < 4; ++d)
            if (__builtin_mul_overflow(nbytes, static_cast<uint64_t>(ti.ne[d]), &nbytes))
                fail("%s: tensor %s: byte size overflows", name, tn);
        ti.nbytes = nbytes;
        ti.offset = r.u64("tensor offset");
        if (ti.offset % alignment_ != 0)
            fail("%s: tensor %s: data offset %llu is not a multiple of the alignment %zu", name, tn,
                 (unsigned long long)ti.offset, alignment_);
        tensors_.push_back(std::move(ti));
    }

    // The data section starts at the next multiple of the alignment.
    data_offset_ = (r.pos() + alignment_ - 1) / alignment_ * alignment_;
    for (const auto& ti : tensors_) {
        const uint64_t avail = data_offset_ <= size_ ? size_ - data_offset_ : 0;
        if (data_offset_ > size_ || ti.nbytes > avail || ti.offset > avail - ti.nbytes)
            fail("%s: tensor %s: data [%llu, +%llu) at file offset %llu lies outside the file (size %llu)", name,
                 ti.name.c_str(), (unsigned long long)ti.offset, (unsigned long long)ti.nbytes,
                 (unsigned long long)(data_offset_ + ti.offset), (unsigned long long)size_);
    }
    // Tensors may come in any order but must not share bytes.
    std::vector<const GGUFTensorInfo*> by_offset;
    for (const auto& ti : tensors_)
        if (ti.nbytes) by_offset.push_back(&ti);
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
        const auto* a = by_offset[i - 1];
        const auto* b = by_offset[i];
        if (a->offset + a->nbytes > b->offset)
            fail("%s: tensors %s [%llu, %llu) and %s [%llu, %llu) overlap", name, a->name.c_str(),
                 (unsigned long long)a->offset, (unsigned long long)(a->offset + a->nbytes), b->name.c_str(),
                 (unsigned long long)b->offset, (unsigned long long)(b->offset + b->nbytes));
    }
}

const GGUFValue* GGUFFile::find(std::string_view key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].value;
}

namespace {
[[noreturn]] void rethrow_with(const std::filesystem::path& p, std::string_view key, const Error& e) {
    fail("%s: key %.*s: %s", p.c_str(), (int)key.size(), key.data(), e.what());
}
}  // namespace

std::optional<std::string> GGUFFile::get_string(std::string_view key) const {
    const GGUFValue* v = find(key);
    if (!v) return std::nullopt;
    try { return v->as_string(); } catch (const Error& e) { rethrow_with(path_, key, e); }
}

std::optional<int64_t> GGUFFile::get_int(std::string_view key) const {
    const GGUFValue* v = find(key);
    if (!v) return std::nullopt;
    try { return v->as_int(); } catch (const Error& e) { rethrow_with(path_, key, e); }
}

std::optional<double> GGUFFile::get_float(std::string_view key) const {
    const GGUFValue* v = find(key);
    if (!v) return std::nullopt;
    try { return v->as_float(); } catch (const Error& e) { rethrow_with(path_, key, e); }
}

std::optional<bool> GGUFFile::get_bool(std::string_view key) const {
    const GGUFValue* v = find(key);
    if (!v) return std::nullopt;
    try { return v->as_bool(); } catch (const Error& e) { rethrow_with(path_, key, e); }
}

std::optional<std::vector<std::string>> GGUFFile::get_string_array(std::string_view key) const {
    const GGUFValue* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_array() || v->elem_type != GGUFType::STRING)
        fail("%s: key %.*s: expected an array of STRING, got %s", path_.c_str(), (int)key.size(), key.data(),
             v->is_array() ? (std::string("an array of ") + gguf_type_name(v->elem_type)).c_str() : gguf_type_name(v->type));
    return std::get<std::vector<std::string>>(v->v);
}

std::optional<std::vector<int64_t>> GGUFFile::get_int_array(std::string_view key) const {
    const GGUFValue* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_array() || !(is_unsigned(v->elem_type) || is_signed(v->elem_type)))
        fail("%s: key %.*s: expected an array of integers, got %s", path_.c_str(), (int)key.size(), key.data(),
             v->is_array() ? (std::string("an array of ") + gguf_type_name(v->elem_type)).c_str() : gguf_type_name(v->type));
    std::vector<int64_t> out(v->array_size());
    try {
        for (size_t i = 0; i < out.size(); ++i) out[i] = v->item(i).as_int();
    } catch (const Error& e) {
        rethrow_with(path_, key, e);
    }
    return out;
}

std::optional<std::vector<double>> GGUFFile::get_float_array(std::string_view key) const {
    const GGUFValue* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_array() || !(is_float(v->elem_type) || is_unsigned(v->elem_type) || is_signed(v->elem_type)))
        fail("%s: key %.*s: expected an array of numbers, got %s", path_.c_str(), (int)key.size(), key.data(),
             v->is_array() ? (std::string("an array of ") + gguf_type_name(v->elem_type)).c_str() : gguf_type_name(v->type));
    std::vector<double> out(v->array_size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = v->item(i).as_float();
    return out;
}

const GGUFTensorInfo* GGUFFile::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Tensor GGUFFile::tensor(std::string_view name) const {
    const GGUFTensorInfo* ti = find_tensor(name);
    if (!ti) fail("%s: no tensor named %.*s", path_.c_str(), (int)name.size(), name.data());
    return tensor(*ti);
}

Tensor GGUFFile::tensor(const GGUFTensorInfo& info) const {
    int64_t shape[4];
    for (int i = 0; i < info.n_dims; ++i) shape[i] = info.ne[info.n_dims - 1 - i];
    // The mapping is read-only; Tensor carries a non-const pointer by convention.
    void* data = const_cast<uint8_t*>(map_ + data_offset_ + info.offset);
    return Tensor::view(info.type, shape, info.n_dims, data);
}

std::optional<Tensor> GGUFFile::try_tensor(std::string_view name) const {
    const GGUFTensorInfo* ti = find_tensor(name);
    if (!ti) return std::nullopt;
    return tensor(*ti);
}

std::span<const uint8_t> GGUFFile::tensor_bytes(const GGUFTensorInfo& info) const {
    return {map_ + data_offset_ + info.offset, static_cast<size_t>(info.nbytes)};
}

// ---------------------------------------------------------------------------------------------
// GGUFWriter

GGUFWriter::GGUFWriter(size_t alignment) {
    HG_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0 && alignment <= 0xffffffffu,
             "GGUF writer: alignment %zu is not a power of two", alignment);
    if (alignment != kDefaultAlignment) set_u32("general.alignment", static_cast<uint32_t>(alignment));
}

void GGUFWriter::set(std::string key, GGUFValue value) {
    for (auto& kv : kv_)
        if (kv.key == key) {
            kv.value = std::move(value);
            return;
        }
    kv_.push_back({std::move(key), std::move(value)});
}

void GGUFWriter::set_u8(std::string key, uint8_t v) { set(std::move(key), GGUFValue::make_uint(GGUFType::UINT8, v)); }
void GGUFWriter::set_i8(std::string key, int8_t v) { set(std::move(key), GGUFValue::make_int(GGUFType::INT8, v)); }
void GGUFWriter::set_u16(std::string key, uint16_t v) { set(std::move(key), GGUFValue::make_uint(GGUFType::UINT16, v)); }
void GGUFWriter::set_i16(std::string key, int16_t v) { set(std::move(key), GGUFValue::make_int(GGUFType::INT16, v)); }
void GGUFWriter::set_u32(std::string key, uint32_t v) { set(std::move(key), GGUFValue::make_uint(GGUFType::UINT32, v)); }
void GGUFWriter::set_i32(std::string key, int32_t v) { set(std::move(key), GGUFValue::make_int(GGUFType::INT32, v)); }
void GGUFWriter::set_u64(std::string key, uint64_t v) { set(std::move(key), GGUFValue::make_uint(GGUFType::UINT64, v)); }
void GGUFWriter::set_i64(std::string key, int64_t v) { set(std::move(key), GGUFValue::make_int(GGUFType::INT64, v)); }
void GGUFWriter::set_f32(std::string key, float v) { set(std::move(key), GGUFValue::make_float(GGUFType::FLOAT32, v)); }
void GGUFWriter::set_f64(std::string key, double v) { set(std::move(key), GGUFValue::make_float(GGUFType::FLOAT64, v)); }
void GGUFWriter::set_bool(std::string key, bool v) { set(std::move(key), GGUFValue::make_bool(v)); }
void GGUFWriter::set_string(std::string key, std::string v) { set(std::move(key), GGUFValue::make_string(std::move(v))); }
void GGUFWriter::set_string_array(std::string key, const std::vector<std::string>& v) {
    set(std::move(key), GGUFValue::make_string_array(v));
}
void GGUFWriter::set_i32_array(std::string key, const std::vector<int32_t>& v) {
    set(std::move(key), GGUFValue::make_array(GGUFType::INT32, std::span<const int32_t>(v)));
}
void GGUFWriter::set_f32_array(std::string key, const std::vector<float>& v) {
    set(std::move(key), GGUFValue::make_array(GGUFType::FLOAT32, std::span<const float>(v)));
}

GGUFWriter::PendingTensor& GGUFWriter::new_tensor(std::string name, DType type, const std::vector<int64_t>& shape) {
    HG_CHECK(!name.empty(), "GGUF writer: empty tensor name");
    HG_CHECK(name.size() <= kMaxTensorName, "GGUF writer: tensor name %s is longer than %zu bytes (llama.cpp's limit)",
             name.c_str(), kMaxTensorName);
    for (const auto& t : tensors_) HG_CHECK(t.name != name, "GGUF writer: duplicate tensor name %s", name.c_str());
    HG_CHECK(shape.size() >= 1 && shape.size() <= 4, "GGUF writer: tensor %s has %zu dims (must be 1 to 4)", name.c_str(), shape.size());
    const auto info = dtype_info(static_cast<uint32_t>(type));
    HG_CHECK(info.has_value(), "GGUF writer: tensor %s: unknown type id %u", name.c_str(), static_cast<unsigned>(type));
    int64_t numel = 1;
    for (int64_t d : shape) {
        HG_CHECK(d >= 0, "GGUF writer: tensor %s: negative dimension %lld", name.c_str(), (long long)d);
        HG_CHECK(!__builtin_mul_overflow(numel, d, &numel), "GGUF writer: tensor %s: element count overflows", name.c_str());
    }
    HG_CHECK(shape.back() % info->block_size == 0, "GGUF writer: tensor %s: last dimension %lld is not a multiple of the %s block size %lld",
             name.c_str(), (long long)shape.back(), info->name, (long long)info->block_size);
    uint64_t nbytes = 0;
    HG_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(numel / info->block_size), info->block_bytes, &nbytes),
             "GGUF writer: tensor %s: byte size overflows", name.c_str());
    PendingTensor t;
    t.name = std::move(name);
    t.type = type;
    t.shape = shape;
    t.nbytes = nbytes;
    tensors_.push_back(std::move(t));
    return tensors_.back();
}

void GGUFWriter::add_tensor(std::string name, DType type, const std::vector<int64_t>& shape, const void* data) {
    PendingTensor& t = new_tensor(std::move(name), type, shape);
    HG_CHECK(data || t.nbytes == 0, "GGUF writer: tensor %s: null data", t.name.c_str());
    const uint8_t* p = static_cast<const uint8_t*>(data);
    t.owned = std::make_shared<std::vector<uint8_t>>(p, p + t.nbytes);
    t.data = t.owned->data();
}

void GGUFWriter::add_tensor_borrowed(std::string name, DType type, const std::vector<int64_t>& shape, const void* data) {
    PendingTensor& t = new_tensor(std::move(name), type, shape);
    HG_CHECK(data || t.nbytes == 0, "GGUF writer: tensor %s: null data", t.name.c_str());
    t.data = data;
}

void GGUFWriter::add_tensor(std::string name, const Tensor& t) {
    HG_CHECK(t.is_contiguous(), "GGUF writer: tensor %s is not contiguous", name.c_str());
    add_tensor(std::move(name), t.type, std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.n_dims), t.data);
}

void GGUFWriter::add_tensor_generated(std::string name, DType type, const std::vector<int64_t>& shape,
                                      std::function<void(uint8_t*)> fill) {
    HG_CHECK(fill != nullptr, "GGUF writer: tensor %s: no fill function", name.c_str());
    new_tensor(std::move(name), type, shape).fill = std::move(fill);
}

size_t GGUFWriter::alignment() const {
    for (const auto& kv : kv_)
        if (kv.key == "general.alignment") {
            HG_CHECK(kv.value.type == GGUFType::UINT32, "GGUF writer: general.alignment must be UINT32, got %s",
                     gguf_type_name(kv.value.type));
            const uint64_t a = std::get<uint64_t>(kv.value.v);
            HG_CHECK(a > 0 && (a & (a - 1)) == 0, "GGUF writer: general.alignment %llu is not a power of two", (unsigned long long)a);
            return static_cast<size_t>(a);
        }
    return kDefaultAlignment;
}

namespace {

// Buffered output to a file descriptor that counts bytes and throws on any error.
class Out {
public:
    Out(int fd, std::string name) : fd_(fd), name_(std::move(name)) { buf_.reserve(kBuf); }
    void write(const void* p, size_t n) {
        const uint8_t* b = static_cast<const uint8_t*>(p);
        pos_ += n;
        if (buf_.size() + n <= kBuf) {
            buf_.insert(buf_.end(), b, b + n);
            return;
        }
        flush();
        if (n >= kBuf) {
            raw(b, n);
        } else {
            buf_.insert(buf_.end(), b, b + n);
        }
    }
    template <typename T>
    void put(T v) { write(&v, sizeof v); }
    void str(const std::string& s) {
        put<uint64_t>(s.size());
        write(s.data(), s.size());
    }
    void pad(size_t alignment) {
        static const uint8_t zeros[256] = {};
        uint64_t n = (alignment - pos_ % alignment) % alignment;
        while (n) {
            const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof zeros));
            write(zeros, k);
            n -= k;
        }
    }
    void flush() {
        raw(buf_.data(), buf_.size());
        buf_.clear();
    }
    uint64_t pos() const { return pos_; }

private:
    void raw(const uint8_t* p, size_t n) { write_all(fd_, p, n, name_); }
    static constexpr size_t kBuf = 1 << 20;
    int fd_;
    std::string name_;
    std::vector<uint8_t> buf_;
    uint64_t pos_ = 0;
};

void write_value(Out& o, const GGUFValue& v) {
    const size_t sz = gguf_scalar_size(v.type);
    if (sz) {
        uint8_t b[8];
        if (is_unsigned(v.type)) {
            const uint64_t x = std::get<uint64_t>(v.v);
            std::memcpy(b, &x, sz);  // little-endian: the low bytes
        } else if (is_signed(v.type)) {
            const int64_t x = std::get<int64_t>(v.v);
            std::memcpy(b, &x, sz);
        } else if (v.type == GGUFType::FLOAT32) {
            const float x = static_cast<float>(std::get<double>(v.v));
            std::memcpy(b, &x, 4);
        } else if (v.type == GGUFType::FLOAT64) {
            const double x = std::get<double>(v.v);
            std::memcpy(b, &x, 8);
        } else {
            b[0] = std::get<bool>(v.v) ? 1 : 0;
        }
        o.write(b, sz);
        return;
    }
    if (v.type == GGUFType::STRING) {
        o.str(std::get<std::string>(v.v));
        return;
    }
    HG_CHECK(v.type == GGUFType::ARRAY, "GGUF writer: invalid value type %u", static_cast<unsigned>(v.type));
    o.put<uint32_t>(static_cast<uint32_t>(v.elem_type));
    o.put<uint64_t>(v.array_size());
    if (const auto* b = std::get_if<std::vector<uint8_t>>(&v.v)) {
        o.write(b->data(), b->size());
    } else if (const auto* s = std::get_if<std::vector<std::string>>(&v.v)) {
        for (const auto& x : *s) o.str(x);
    } else {
        for (const auto& x : std::get<std::vector<GGUFValue>>(v.v)) write_value(o, x);
    }
}

// Checks that a value's storage matches its declared type (a GGUFValue built by hand could lie).
void check_value(const std::string& key, const GGUFValue& v) {
    bool ok = false;
    if (is_unsigned(v.type)) ok = std::holds_alternative<uint64_t>(v.v);
    else if (is_signed(v.type)) ok = std::holds_alternative<int64_t>(v.v);
    else if (is_float(v.type)) ok = std::holds_alternative<double>(v.v);
    else if (v.type == GGUFType::BOOL) ok = std::holds_alternative<bool>(v.v);
    else if (v.type == GGUFType::STRING) ok = std::holds_alternative<std::string>(v.v);
    else if (v.type == GGUFType::ARRAY) {
        if (gguf_scalar_size(v.elem_type)) {
            const auto* b = std::get_if<std::vector<uint8_t>>(&v.v);
            ok = b && b->size() % gguf_scalar_size(v.elem_type) == 0;
        } else if (v.elem_type == GGUFType::STRING) {
            ok = std::holds_alternative<std::vector<std::string>>(v.v);
        } else if (v.elem_type == GGUFType::ARRAY) {
            ok = std::holds_alternative<std::vector<GGUFValue>>(v.v);
            if (ok)
                for (const auto& x : std::get<std::vector<GGUFValue>>(v.v)) {
                    HG_CHECK(x.type == GGUFType::ARRAY, "GGUF writer: key %s: nested item is %s, not ARRAY", key.c_str(), gguf_type_name(x.type));
                    check_value(key, x);
                }
        }
    }
    HG_CHECK(ok, "GGUF writer: key %s: value storage does not match its type %s", key.c_str(), gguf_type_name(v.type));
}

}  // namespace

void GGUFWriter::write(const std::filesystem::path& path) const {
    const size_t align = alignment();
    for (const auto& kv : kv_) check_value(kv.key, kv.value);

    write_file_atomically(path, [&](int fd, const std::string& tmpl) {
        Out o(fd, tmpl);
        o.put<uint32_t>(kMagic);
        o.put<uint32_t>(3);
        o.put<uint64_t>(tensors_.size());
        o.put<uint64_t>(kv_.size());
        for (const auto& kv : kv_) {
            o.str(kv.key);
            o.put<uint32_t>(static_cast<uint32_t>(kv.value.type));
            write_value(o, kv.value);
        }
        uint64_t offset = 0;
        for (const auto& t : tensors_) {
            o.str(t.name);
            o.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
            for (size_t i = t.shape.size(); i-- > 0;) o.put<uint64_t>(static_cast<uint64_t>(t.shape[i]));  // ggml order
            o.put<uint32_t>(static_cast<uint32_t>(t.type));
            o.put<uint64_t>(offset);
            offset += (t.nbytes + align - 1) / align * align;
        }
        o.pad(align);
        for (const auto& t : tensors_) {
            if (t.fill) {
                std::vector<uint8_t> buf(t.nbytes);
                t.fill(buf.data());
                o.write(buf.data(), buf.size());
            } else {
                o.write(t.data, t.nbytes);
            }
            o.pad(align);
        }
        o.flush();
    });
}

}  // namespace hg
