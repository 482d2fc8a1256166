// GGUF v3 (ggml's model file format): a reader that memory-maps the file and hands out
// zero-copy tensor views, and a writer. Layout per ggml's docs/gguf.md:
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv | kv... | tensor infos... |
//   pad to alignment | tensor data (each at an aligned offset from the data start)
// Every malformed input (bad magic, truncation, overflowing counts, offsets outside the
// file, misaligned data, unknown types) is refused with an hg::Error naming the problem.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/tensor.h"

namespace hg {

enum class GGUFType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GGUFType t);

// A metadata value. Scalars are widened into the variant; `type` keeps the stored type.
// Arrays keep their element type and elements (nested arrays allowed).
struct GGUFValue {
    GGUFType type = GGUFType::UINT8;
    GGUFType elem_type = GGUFType::UINT8;  // for ARRAY
    std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GGUFValue>> v;

    std::string to_string(size_t max_array_items = 8) const;  // for `inspect`
};

struct GGUFKV {
    std::string key;
    GGUFValue value;
};

struct GGUFTensorInfo {
    std::string name;
    DType type;
    int n_dims;
    int64_t ne[4];      // ggml order: ne[0] is the contiguous dimension
    uint64_t offset;    // relative to the start of the data section
    size_t nbytes;
};

class GGUFFile {
public:
    // Memory-maps and validates the file. Throws hg::Error with the path and the problem.
    static std::unique_ptr<GGUFFile> open(const std::filesystem::path& path);
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
    std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;
    std::optional<std::vector<double>> get_float_array(std::string_view key) const;

    const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
    const GGUFTensorInfo* find_tensor(std::string_view name) const;
    // Zero-copy view in PyTorch order (dims reversed). Throws if missing.
    Tensor tensor(std::string_view name) const;
    Tensor tensor(const GGUFTensorInfo& info) const;
    std::optional<Tensor> try_tensor(std::string_view name) const;

private:
    GGUFFile() = default;
    std::filesystem::path path_;
    const uint8_t* map_ = nullptr;
    uint64_t size_ = 0;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<GGUFKV> kv_;
    std::vector<GGUFTensorInfo> tensors_;
};

// Builds a GGUF v3 file. Metadata keys keep insertion order; tensors are written in the order
// added, each aligned. Tensor data is copied at add time unless `borrow` is used (the caller
// keeps the memory alive until write()).
class GGUFWriter {
public:
    explicit GGUFWriter(size_t alignment = 32);

    void set(std::string key, GGUFValue value);  // replaces an existing key
    void set_u32(std::string key, uint32_t v);
    void set_i32(std::string key, int32_t v);
    void set_u64(std::string key, uint64_t v);
    void set_f32(std::string key, float v);
    void set_bool(std::string key, bool v);
    void set_string(std::string key, std::string v);
    void set_string_array(std::string key, const std::vector<std::string>& v);
    void set_i32_array(std::string key, const std::vector<int32_t>& v);
    void set_f32_array(std::string key, const std::vector<float>& v);

    // shape in PyTorch order; data holds row_bytes(type, shape.back()) * rows bytes.
    void add_tensor(std::string name, DType type, const std::vector<int64_t>& shape, const void* data);
    void add_tensor_borrowed(std::string name, DType type, const std::vector<int64_t>& shape, const void* data);
    void add_tensor(std::string name, const Tensor& t) { add_tensor(std::move(name), t.type, shape_of(t), t.data); }

    // Writes atomically (to path + ".tmp", then rename). Throws on I/O errors.
    void write(const std::filesystem::path& path) const;

private:
    static std::vector<int64_t> shape_of(const Tensor& t);
    struct PendingTensor {
        std::string name;
        DType type;
        std::vector<int64_t> shape;
        const void* data;
        size_t nbytes;
        std::shared_ptr<std::vector<uint8_t>> owned;
    };
    size_t alignment_;
    std::vector<GGUFKV> kv_;
    std::vector<PendingTensor> tensors_;
};

}  // namespace hg
