// safetensors files (u64 header length | JSON header | tensor bytes) and Hugging Face model
// folders (model.safetensors, or shards listed by model.safetensors.index.json).
// Validation follows the safetensors crate: header at most 100,000,000 bytes, a JSON object
// starting with '{', dtypes by their safetensors names, data_offsets [begin, end) that tile the
// data section exactly in order (no gaps, no overlap, end of last = end of file), end - begin =
// numel * element size; plus: no duplicate tensor names, `__metadata__` string -> string only.
// Tensors are zero-copy views into the mapped file.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/mapped_file.h"

namespace hg {

class SafetensorsFile {
public:
    static constexpr uint64_t kMaxHeader = 100'000'000;

    static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
    // Parses bytes held in memory (not copied: they must outlive the object). For tests/fuzzing.
    static std::unique_ptr<SafetensorsFile> from_memory(std::span<const uint8_t> bytes, std::string name);

    const std::filesystem::path& path() const { return path_; }
    uint64_t file_size() const { return size_; }
    uint64_t header_size() const { return header_size_; }
    const std::vector<CkptTensor>& tensors() const { return tensors_; }  // in data-offset order
    const CkptTensor* find(std::string_view name) const;
    const CkptTensor& get(std::string_view name) const;  // throws if missing
    const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }

private:
    SafetensorsFile() = default;
    void parse();
    std::filesystem::path path_;
    MappedFile file_;
    const uint8_t* map_ = nullptr;
    uint64_t size_ = 0;
    uint64_t header_size_ = 0;
    std::vector<CkptTensor> tensors_;
    std::map<std::string, size_t, std::less<>> index_;
    std::vector<std::pair<std::string, std::string>> metadata_;
};

// A Hugging Face checkpoint: a folder with model.safetensors or model.safetensors.index.json
// (+ the shards it names), an index file, or a single .safetensors file. With an index, every
// tensor of the weight_map must be in the shard it names, shard names must be plain file names
// in the folder, and no tensor may appear in two shards.
class SafetensorsModel {
public:
    static std::unique_ptr<SafetensorsModel> open(const std::filesystem::path& path);

    const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }
    const std::filesystem::path& index_path() const { return index_path_; }  // empty without index
    const std::vector<std::pair<std::string, std::string>>& index_metadata() const { return index_metadata_; }
    std::vector<const CkptTensor*> tensors() const;  // shard order, then data order
    const CkptTensor* find(std::string_view name) const;
    const CkptTensor& get(std::string_view name) const;

private:
    std::filesystem::path index_path_;
    std::vector<std::unique_ptr<SafetensorsFile>> shards_;
    std::map<std::string, const CkptTensor*, std::less<>> by_name_;
    std::vector<std::pair<std::string, std::string>> index_metadata_;
};

}  // namespace hg
