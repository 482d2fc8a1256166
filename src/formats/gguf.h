// GGUF (ggml's model file format): a reader that memory-maps the file and hands out
// zero-copy tensor views, and a streaming writer. Layout per ggml's docs/gguf.md:
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv | kv... | tensor infos... |
//   pad to alignment | tensor data (each at an aligned offset from the data start)
// Versions 2 and 3 are read (v3 only added big-endian files, which are refused; v2 has the same
// little-endian layout); v1 (32-bit counts) is refused. Every malformed input (bad magic,
// truncation, counts or lengths beyond the file, bad dims, unknown types, offsets outside the
// file, misaligned or overlapping data, duplicate keys or tensor names, a bad alignment) is
// refused with an hg::Error naming the file and the problem. Memory use while reading is
// bounded by a small multiple of the metadata bytes actually present in the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/tensor.h"
#include "formats/mapped_file.h"

namespace hg {

enum class GGUFType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GGUFType t);   // "UINT8", ..., "ARRAY" (gguf-py's names)
size_t gguf_scalar_size(GGUFType t);       // bytes of a numeric/bool value; 0 for STRING/ARRAY

// A metadata value. `type` is the stored type. Scalars are widened: unsigned types are held as
// uint64_t, signed as int64_t, FLOAT32/FLOAT64 as double, BOOL as bool, STRING as std::string.
// Arrays keep their element type in `elem_type` and their elements compactly:
//   numeric/bool elements: std::vector<uint8_t> with the elements packed little-endian as stored
//   STRING elements:       std::vector<std::string>
//   ARRAY elements:        std::vector<GGUFValue> (nested arrays)
struct GGUFValue {
    GGUFType type = GGUFType::UINT8;
    GGUFType elem_type = GGUFType::UINT8;  // ARRAY only
    std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<uint8_t>, std::vector<std::string>,
                 std::vector<GGUFValue>>
        v = uint64_t{0};

    // Scalars of a given stored type (checked: an integer must fit the type, e.g. make_uint(UINT8, 300) throws).
    static GGUFValue make_uint(GGUFType t, uint64_t x);   // UINT8/16/32/64
    static GGUFValue make_int(GGUFType t, int64_t x);     // INT8/16/32/64
    static GGUFValue make_float(GGUFType t, double x);    // FLOAT32 (rounded to float) / FLOAT64
    static GGUFValue make_bool(bool x);
    static GGUFValue make_string(std::string s);
    // Arrays. `packed` holds n elements of `elem` (numeric or BOOL) as little-endian bytes.
    static GGUFValue make_array(GGUFType elem, std::span<const uint8_t> packed);
    static GGUFValue make_string_array(std::vector<std::string> items);
    static GGUFValue make_array_of_arrays(std::vector<GGUFValue> items);  // every item an ARRAY
    template <typename T>
    static GGUFValue make_array(GGUFType elem, std::span<const T> items) {
        return make_array(elem, {reinterpret_cast<const uint8_t*>(items.data()), items.size_bytes()});
    }

    bool is_array() const { return type == GGUFType::ARRAY; }
    bool is_integer() const;   // any of the 8 integer types
    size_t array_size() const; // elements of an ARRAY (0 for scalars)
    GGUFValue item(size_t i) const;  // element i of an ARRAY as a value (a copy)

    // Typed reads; throw hg::Error when the type does not convert (e.g. a string as an int,
    // a negative INT64 as uint64, a value that does not fit).
    int64_t as_int() const;        // any integer type (UINT64 above INT64_MAX throws)
    uint64_t as_uint() const;      // any integer type >= 0
    double as_float() const;       // FLOAT32/FLOAT64 or any integer
    bool as_bool() const;
    const std::string& as_string() const;

    // "GGUF", 42, -1.5, true, [1, 2, 3, ... (1000 items)] for `inspect`.
    std::string to_string(size_t max_array_items = 8, size_t max_string_chars = 256) const;
    bool operator==(const GGUFValue& o) const = default;
};

struct GGUFKV {
    std::string key;
    GGUFValue value;
};

struct GGUFTensorInfo {
    std::string name;
    DType type;
    int n_dims;
    int64_t ne[4];      // ggml order: ne[0] is the contiguous dimension; unused dims are 1
    uint64_t offset;    // relative to the start of the data section (a multiple of the alignment)
    uint64_t nbytes;

    std::vector<int64_t> shape() const;  // PyTorch order: ne reversed
    int64_t numel() const;
};

class GGUFFile {
public:
    // Memory-maps and validates the file. Throws hg::Error with the path and the problem.
    static std::unique_ptr<GGUFFile> open(const std::filesystem::path& path);
    // Parses a GGUF image held in memory (not copied: `bytes` must outlive the object).
    // `name` is used in error messages. For tests and fuzzing.
    static std::unique_ptr<GGUFFile> from_memory(std::span<const uint8_t> bytes, std::string name);
    ~GGUFFile();

    const std::filesystem::path& path() const { return path_; }
    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }  // absolute file offset of the data section
    uint64_t file_size() const { return size_; }

    const std::vector<GGUFKV>& metadata() const { return kv_; }
    const GGUFValue* find(std::string_view key) const;

    // Typed getters: nullopt if absent; throw if present with an incompatible type.
    std::optional<std::string> get_string(std::string_view key) const;
    std::optional<int64_t> get_int(std::string_view key) const;      // any integer type
    std::optional<double> get_float(std::string_view key) const;     // float or integer
    std::optional<bool> get_bool(std::string_view key) const;
    std::optional<std::vector<std::string>> get_string_array(std::string_view key) const;
    std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;   // any integer elements
    std::optional<std::vector<double>> get_float_array(std::string_view key) const;  // float or integer elements

    const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
    const GGUFTensorInfo* find_tensor(std::string_view name) const;
    // Zero-copy, read-only view in PyTorch order (dims reversed). Throws if missing.
    Tensor tensor(std::string_view name) const;
    Tensor tensor(const GGUFTensorInfo& info) const;
    std::optional<Tensor> try_tensor(std::string_view name) const;
    std::span<const uint8_t> tensor_bytes(const GGUFTensorInfo& info) const;

private:
    GGUFFile() = default;
    void parse();
    std::filesystem::path path_;
    MappedFile file_;
    const uint8_t* map_ = nullptr;
    uint64_t size_ = 0;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<GGUFKV> kv_;
    std::vector<GGUFTensorInfo> tensors_;
    std::map<std::string, size_t, std::less<>> kv_index_, tensor_index_;
};

// Builds a GGUF v3 file, byte-identical to what gguf-py's GGUFWriter writes for the same
// content: metadata keys in insertion order, tensor infos with offsets that are the running
// sum of the aligned tensor sizes, zero padding to the alignment after the tensor infos and
// after every tensor. The alignment is 32 unless "general.alignment" (UINT32) is set.
// Tensor data is copied at add time, borrowed (the caller keeps the memory alive until
// write()), or produced at write time by a callback; write() streams, so files > 4 GiB work.
class GGUFWriter {
public:
    // alignment != 32 also sets the "general.alignment" key (as gguf-py's add_custom_alignment).
    explicit GGUFWriter(size_t alignment = 32);

    void set(std::string key, GGUFValue value);  // replaces an existing key in place
    void set_u8(std::string key, uint8_t v);
    void set_i8(std::string key, int8_t v);
    void set_u16(std::string key, uint16_t v);
    void set_i16(std::string key, int16_t v);
    void set_u32(std::string key, uint32_t v);
    void set_i32(std::string key, int32_t v);
    void set_u64(std::string key, uint64_t v);
    void set_i64(std::string key, int64_t v);
    void set_f32(std::string key, float v);
    void set_f64(std::string key, double v);
    void set_bool(std::string key, bool v);
    void set_string(std::string key, std::string v);
    void set_string_array(std::string key, const std::vector<std::string>& v);
    void set_i32_array(std::string key, const std::vector<int32_t>& v);
    void set_f32_array(std::string key, const std::vector<float>& v);
    const std::vector<GGUFKV>& metadata() const { return kv_; }

    // shape in PyTorch order (1 to 4 dims); data holds row_bytes(type, shape.back()) * rows bytes.
    void add_tensor(std::string name, DType type, const std::vector<int64_t>& shape, const void* data);
    void add_tensor_borrowed(std::string name, DType type, const std::vector<int64_t>& shape, const void* data);
    void add_tensor(std::string name, const Tensor& t);  // contiguous tensors only; copies
    // `fill(dst)` is called during write() to produce the tensor's bytes (dst holds nbytes),
    // so converters can quantize one tensor at a time without holding the whole model.
    void add_tensor_generated(std::string name, DType type, const std::vector<int64_t>& shape,
                              std::function<void(uint8_t* dst)> fill);
    size_t n_tensors() const { return tensors_.size(); }

    // Writes atomically (to a temporary file beside `path`, fsync, then rename). Throws on
    // I/O errors and leaves no temporary file behind.
    void write(const std::filesystem::path& path) const;

private:
    struct PendingTensor {
        std::string name;
        DType type;
        std::vector<int64_t> shape;  // PyTorch order
        uint64_t nbytes;
        const void* data = nullptr;
        std::shared_ptr<std::vector<uint8_t>> owned;
        std::function<void(uint8_t*)> fill;
    };
    PendingTensor& new_tensor(std::string name, DType type, const std::vector<int64_t>& shape);
    size_t alignment() const;
    std::vector<GGUFKV> kv_;
    std::vector<PendingTensor> tensors_;
};

}  // namespace hg
