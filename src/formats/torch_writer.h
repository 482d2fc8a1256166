// A writer of PyTorch zip checkpoints: the files torch.save writes (torch >= 1.6), read back by
// torch.load(path, weights_only=True) and by our own reader (formats/torch_checkpoint.h).
//
// The file is a zip archive of *stored* (uncompressed) entries, each entry's data 64-byte aligned
// (a local-header extra field "FB" + 'Z' padding, as torch's writer does):
//   <archive>/data.pkl     protocol-2 pickle of an OrderedDict {name: tensor}; each tensor is
//                          torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())
//                          with the storage a persistent id ('storage', torch.<T>Storage, key, 'cpu', numel)
//   <archive>/byteorder    "little"
//   <archive>/data/<key>   the raw little-endian elements of storage <key> ("0", "1", ... in add order)
//   <archive>/version      "3\n"
// One storage per tensor, contiguous row-major, storage offset 0. Element types: F32, F16, BF16
// (torch.FloatStorage, HalfStorage, BFloat16Storage). Files and entries up to 4 GiB (no zip64).
// The bytes depend only on the content (no time stamps), so a committed file pins the format.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace hg {

class TorchWriter {
public:
    // `archive_name` is the folder inside the zip (torch.save uses the file's stem; torch.load ignores it).
    explicit TorchWriter(std::string archive_name = "archive");

    // shape in PyTorch order (0-d: empty); data holds numel * element bytes. add() copies,
    // add_borrowed() keeps the pointer (the memory must stay valid until write()/to_bytes()).
    // Throws for another type, a duplicate name or a negative dimension.
    void add(std::string name, DType type, const std::vector<int64_t>& shape, const void* data);
    void add_borrowed(std::string name, DType type, const std::vector<int64_t>& shape, const void* data);
    size_t size() const { return tensors_.size(); }

    // The whole file in memory (tests, small files).
    std::vector<uint8_t> to_bytes() const;
    // Writes atomically: a temporary file beside `path`, fsync, rename. On any I/O error (disk full,
    // ...) throws hg::Error naming the path and leaves an existing file at `path` untouched.
    void write(const std::filesystem::path& path) const;

    // The pickle alone (data.pkl), for tests.
    std::vector<uint8_t> pickle() const;

private:
    struct Entry {
        std::string name;
        DType type;
        std::vector<int64_t> shape;
        uint64_t nbytes = 0;
        const void* data = nullptr;
        std::shared_ptr<std::vector<uint8_t>> owned;
    };
    Entry& new_entry(std::string name, DType type, const std::vector<int64_t>& shape);
    template <typename Sink>
    void emit(Sink& out) const;

    std::string archive_;
    std::vector<Entry> tensors_;
};

}  // namespace hg
