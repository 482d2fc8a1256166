// Decoder::load: a text-model GGUF through the loader in decoder_loader.cpp.
#include "formats/gguf.h"
#include "model/decoder_loader.h"

namespace hg {

namespace {

// TensorSource over a memory-mapped GGUF file: tensor views point into the mapping.
class GGUFSource : public TensorSource {
public:
    explicit GGUFSource(std::unique_ptr<GGUFFile> f) : f_(std::move(f)), name_(f_->path().string()) {}
    const std::string& name() const override { return name_; }
    std::optional<Tensor> tensor(std::string_view name) const override { return f_->try_tensor(name); }
    std::optional<std::string> get_string(std::string_view key) const override { return f_->get_string(key); }
    std::optional<int64_t> get_int(std::string_view key) const override { return f_->get_int(key); }
    std::optional<double> get_float(std::string_view key) const override { return f_->get_float(key); }

private:
    std::unique_ptr<GGUFFile> f_;
    std::string name_;
};

}  // namespace

std::shared_ptr<const Decoder> Decoder::load(const std::string& gguf_path) {
    return load_decoder(std::make_shared<GGUFSource>(GGUFFile::open(gguf_path)));
}

}  // namespace hg
