#include "train/save_trained.h"

#include <map>

#include "core/error.h"
#include "core/half.h"
#include "formats/gguf.h"

namespace hg::train {

void save_trained_file(const std::filesystem::path& src, const std::vector<const Param*>& trained,
                       const std::filesystem::path& out, const SaveTrainedOptions& opt) {
    HG_CHECK(opt.type == DType::F32 || opt.type == DType::F16 || opt.type == DType::BF16,
             "%s: trained tensors are written as F32, F16 or BF16, not %s", out.string().c_str(), dtype_name(opt.type));
    std::error_code ec;
    auto f = GGUFFile::open(src);
    std::map<std::string, const Param*, std::less<>> by_name;
    for (const Param* p : trained) {
        const GGUFTensorInfo* ti = f->find_tensor(p->name);
        HG_CHECK(ti, "%s: the trained parameter %s is not a tensor of this file", src.string().c_str(), p->name.c_str());
        HG_CHECK(ti->shape() == p->shape, "%s: tensor %s has another shape than the trained parameter",
                 src.string().c_str(), p->name.c_str());
        by_name[p->name] = p;
    }
    GGUFWriter w(f->alignment());
    for (const GGUFKV& kv : f->metadata())
        if (kv.key != "general.alignment") w.set(kv.key, kv.value);
    for (const auto& [k, v] : opt.set_strings) w.set_string(k, v);
    // Convert the trained values now: the writer may stream after `f` is gone, so nothing borrows.
    for (const GGUFTensorInfo& ti : f->tensors()) {
        auto it = by_name.find(ti.name);
        if (it == by_name.end()) {
            const Tensor t = f->tensor(ti);
            w.add_tensor(ti.name, t.type, ti.shape(), t.data);  // copies the stored bytes
            continue;
        }
        const Param& p = *it->second;
        if (opt.type == DType::F32) {
            w.add_tensor(p.name, DType::F32, p.shape, p.value.data());
        } else {
            std::vector<uint16_t> h(p.value.size());
            for (size_t i = 0; i < h.size(); ++i)
                h[i] = opt.type == DType::F16 ? fp32_to_fp16(p.value[i]) : fp32_to_bf16(p.value[i]);
            w.add_tensor(p.name, opt.type, p.shape, h.data());
        }
    }
    std::filesystem::create_directories(out.parent_path().empty() ? "." : out.parent_path(), ec);
    w.write(out);
}

}  // namespace hg::train
