// PyTorch checkpoints written by torch.save, read without executing anything:
//  - the zip format (torch >= 1.6): <archive>/data.pkl, <archive>/data/<key> storages,
//    <archive>/byteorder ("little" required when present), <archive>/version;
//  - the legacy format (torch < 1.6, or _use_new_zipfile_serialization=False): pickled magic
//    number, protocol version, sys_info, the object pickle, the sorted storage keys, then each
//    storage as an int64 element count followed by its bytes.
// Tensors are zero-copy views into the mapped file when contiguous; strided ones (a transposed
// view saved as is) are described by their strides and copied on request (CkptTensor).
//
// Modes:
//   StateDict (HealthGPT's *.bin, pytorch_model.bin): strict pickle policy, any global other
//     than what torch.save emits for tensors/OrderedDict is an error naming it. The state dict
//     is the root dict's tensor entries.
//   Lightning (taming's last.ckpt): lenient policy; unknown globals (callbacks, hparams
//     objects, ...) become inert nodes listed by opaque_globals(); the state dict is
//     root["state_dict"], which must hold nothing but tensors (and plain values).
//   Inspect: lenient, no state dict required (for `healthgpt inspect`).
#pragma once
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
#include "formats/pickle.h"
#include "formats/zip.h"

namespace hg {

enum class TorchLoadMode { StateDict, Lightning, Inspect };

struct TorchLoadOptions {
    TorchLoadMode mode = TorchLoadMode::StateDict;
    bool verify_crc = true;            // zip format: CRC-32 of data.pkl and every storage used
    size_t max_objects = size_t{1} << 21;
};

class TorchCheckpoint {
public:
    static std::unique_ptr<TorchCheckpoint> open(const std::filesystem::path& path, const TorchLoadOptions& opt = {});
    static std::unique_ptr<TorchCheckpoint> from_memory(std::span<const uint8_t> bytes, std::string name,
                                                        const TorchLoadOptions& opt = {});

    enum class Format { Zip, Legacy };
    Format format() const { return format_; }
    const std::filesystem::path& path() const { return path_; }
    std::string archive_name() const { return archive_; }  // zip: the folder inside the archive

    PyRef root() const { return root_; }
    // The state dict: tensor entries of the root dict (StateDict) or of root["state_dict"]
    // (Lightning), in file order. Empty in Inspect mode.
    const std::vector<CkptTensor>& tensors() const { return state_dict_; }
    const CkptTensor* find(std::string_view name) const;
    const CkptTensor& get(std::string_view name) const;
    // Every tensor reachable from the root, named by its path ("optimizer_states.0.state.3.exp_avg").
    const std::vector<CkptTensor>& all_tensors() const { return all_tensors_; }
    // Lenient modes: the unknown globals the file references (never called).
    const std::vector<std::string>& opaque_globals() const { return opaque_; }
    // Resolves a Tensor node of the tree.
    CkptTensor tensor_of(PyRef t, std::string name) const;

private:
    TorchCheckpoint() = default;
    void load(const TorchLoadOptions& opt);
    void load_zip(const TorchLoadOptions& opt);
    void load_legacy(const TorchLoadOptions& opt);
    void collect(const TorchLoadOptions& opt);
    std::span<const uint8_t> storage_bytes(PyRef storage) const;

    std::filesystem::path path_;
    MappedFile file_;
    std::span<const uint8_t> bytes_;
    Format format_ = Format::Zip;
    std::string archive_;
    ZipArchive zip_;
    PyArena arena_;
    PyRef root_ = nullptr;
    std::vector<std::string> opaque_;
    // root storages (by key) -> their bytes in the file
    std::unordered_map<PyRef, std::span<const uint8_t>> storage_data_;
    std::vector<CkptTensor> state_dict_, all_tensors_;
    std::unordered_map<std::string, size_t> state_dict_index_;
};

}  // namespace hg
