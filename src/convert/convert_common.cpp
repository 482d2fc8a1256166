#include "convert/convert_common.h"

#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/half.h"
#include "core/quants.h"
#include "formats/inspect.h"

namespace fs = std::filesystem;

namespace hg::conv {

// ---------------------------------------------------------------------------------------------
// SourceTensors

const CkptTensor* SourceTensors::find(std::string_view name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

void SourceTensors::add(const CkptTensor* t, const std::string& file) {
    if (!by_name_.emplace(t->name, t).second)
        fail("%s: tensor %s appears twice (again in %s)", origin_.c_str(), t->name.c_str(), file.c_str());
    list_.push_back(t);
}

namespace {

// Non-tensor values next to the tensors of a state dict are reported, never silently dropped.
void note_non_tensors(PyRef dict, const std::string& where, std::vector<std::string>& notes) {
    if (!dict || dict->kind != PyKind::Dict) return;
    std::vector<std::string> keys;
    for (const auto& [k, v] : dict->entries)
        if (v->kind != PyKind::Tensor) keys.push_back(k->kind == PyKind::Str ? k->s : py_kind_name(k->kind));
    if (!keys.empty()) notes.push_back(where + ": " + std::to_string(keys.size()) + " non-tensor entries ignored (" + list_some(keys) + ")");
}

bool plain_file_name(const std::string& s) {
    return !s.empty() && s.find('/') == std::string::npos && s.find('\\') == std::string::npos && s != "." && s != "..";
}

}  // namespace

std::shared_ptr<SourceTensors> SourceTensors::open_torch(const fs::path& file, TorchLoadMode mode) {
    auto s = std::make_shared<SourceTensors>();
    s->origin_ = file;
    TorchLoadOptions opt;
    opt.mode = mode;
    s->torch_.push_back(TorchCheckpoint::open(file, opt));
    const TorchCheckpoint& ck = *s->torch_.back();
    s->describe_ = file.filename().string() + " (" + (ck.format() == TorchCheckpoint::Format::Zip ? "torch zip" : "torch legacy") +
                   (mode == TorchLoadMode::Lightning ? ", Lightning" : "") + ", " + std::to_string(ck.tensors().size()) + " tensors)";
    for (const auto& t : ck.tensors()) s->add(&t, file.filename().string());
    if (mode == TorchLoadMode::Lightning) {
        std::vector<std::string> top;
        for (const auto& [k, v] : ck.root()->entries)
            if (!(k->kind == PyKind::Str && k->s == "state_dict")) top.push_back(k->kind == PyKind::Str ? k->s : py_kind_name(k->kind));
        if (!top.empty()) s->notes_.push_back("Lightning entries besides state_dict ignored by design: " + list_some(top, 10));
        if (!ck.opaque_globals().empty())
            s->notes_.push_back("objects of classes referenced but never constructed: " + list_some(ck.opaque_globals(), 4));
        note_non_tensors(ck.root()->get("state_dict"), "state_dict", s->notes_);
    } else {
        note_non_tensors(ck.root(), file.filename().string(), s->notes_);
    }
    return s;
}

std::shared_ptr<SourceTensors> SourceTensors::open(const fs::path& p) {
    if (!fs::exists(p)) fail("%s: no such file or folder", p.c_str());
    auto s = std::make_shared<SourceTensors>();
    s->origin_ = p;
    auto open_safetensors = [&](const fs::path& at) {
        s->st_.push_back(SafetensorsModel::open(at));
        const SafetensorsModel& m = *s->st_.back();
        for (const auto* t : m.tensors()) s->add(t, "safetensors");
        s->describe_ = m.index_path().empty()
                           ? m.shards().front()->path().filename().string() + " (" + std::to_string(m.tensors().size()) + " tensors)"
                           : m.index_path().filename().string() + " (" + std::to_string(m.shards().size()) + " shards, " +
                                 std::to_string(m.tensors().size()) + " tensors)";
        return s;
    };
    auto open_torch_index = [&](const fs::path& index) {
        const nlohmann::json j = read_json(index);
        if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
            fail("%s: no \"weight_map\" object", index.c_str());
        std::map<std::string, std::vector<std::string>> by_file;
        for (const auto& [name, file] : j["weight_map"].items()) {
            if (!file.is_string() || !plain_file_name(file.get<std::string>()))
                fail("%s: tensor %s: shard name must be a plain file name in the folder", index.c_str(), name.c_str());
            by_file[file.get<std::string>()].push_back(name);
        }
        if (by_file.empty()) fail("%s: the weight map is empty", index.c_str());
        for (const auto& [file, names] : by_file) {
            TorchLoadOptions opt;
            s->torch_.push_back(TorchCheckpoint::open(index.parent_path() / file, opt));
            const TorchCheckpoint& ck = *s->torch_.back();
            for (const auto& n : names)
                if (!ck.find(n)) fail("%s: tensor %s is listed in the index but not in %s", index.c_str(), n.c_str(), file.c_str());
            for (const auto& t : ck.tensors()) s->add(&t, file);
            note_non_tensors(ck.root(), file, s->notes_);
        }
        for (const auto* t : s->list_)
            if (!j["weight_map"].contains(t->name)) s->notes_.push_back("tensor " + t->name + " is in a shard but not in the index");
        s->describe_ = index.filename().string() + " (" + std::to_string(by_file.size()) + " shards, " +
                       std::to_string(s->list_.size()) + " tensors)";
        return s;
    };

    if (fs::is_directory(p)) {
        const bool st = fs::exists(p / "model.safetensors.index.json") || fs::exists(p / "model.safetensors");
        const bool pt = fs::exists(p / "pytorch_model.bin.index.json") || fs::exists(p / "pytorch_model.bin");
        if (st) {
            open_safetensors(p);
            if (pt) s->notes_.push_back("pytorch_model.bin also present; the safetensors weights were used");
            return s;
        }
        if (fs::exists(p / "pytorch_model.bin.index.json")) return open_torch_index(p / "pytorch_model.bin.index.json");
        if (fs::exists(p / "pytorch_model.bin")) {
            auto t = open_torch(p / "pytorch_model.bin", TorchLoadMode::StateDict);
            t->origin_ = p;
            return t;
        }
        fail("%s: no weights found (model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
             "pytorch_model.bin.index.json)", p.c_str());
    }
    const std::string fmt = detect_format(p);
    const std::string fname = p.filename().string();
    if (fmt == "safetensors" || fmt == "safetensors-index") return open_safetensors(p);
    if (fname.size() > 11 && fname.substr(fname.size() - 11) == ".index.json") return open_torch_index(p);
    if (fmt == "torch-zip" || fmt == "torch-legacy") return open_torch(p, TorchLoadMode::StateDict);
    if (fmt == "gguf") fail("%s: already a GGUF file (use `healthgpt quantize` to change its types)", p.c_str());
    fail("%s: not a safetensors file or a PyTorch checkpoint", p.c_str());
}

// ---------------------------------------------------------------------------------------------
// Reporting

std::string list_some(const std::vector<std::string>& items, size_t n) {
    std::string s;
    for (size_t i = 0; i < items.size() && i < n; ++i) s += (i ? ", " : "") + items[i];
    if (items.size() > n) s += " and " + std::to_string(items.size() - n) + " more";
    return s;
}

std::string shape_str(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

void KeyLedger::finish(bool allow_unknown, std::vector<std::string>& report) const {
    const char* o = origin.c_str();
    if (!bad.empty()) {
        std::string msg;
        for (size_t i = 0; i < bad.size() && i < 8; ++i) msg += "\n  " + bad[i];
        if (bad.size() > 8) msg += "\n  ... and " + std::to_string(bad.size() - 8) + " more";
        fail("%s: %zu tensors do not have the expected shape or type:%s", o, bad.size(), msg.c_str());
    }
    if (!missing.empty())
        fail("%s: %zu expected tensors are missing: %s", o, missing.size(), list_some(missing, 8).c_str());
    if (!unknown.empty() && !allow_unknown)
        fail("%s: %zu keys are not part of the expected layout: %s (refused: nothing is silently dropped; "
             "--allow-unknown converts without them)", o, unknown.size(), list_some(unknown, 8).c_str());
    report.push_back(std::to_string(mapped) + " tensors mapped");
    for (const auto& [why, keys] : ignored)
        report.push_back(std::to_string(keys.size()) + " keys ignored by design (" + why + "): " + list_some(keys, 4));
    if (!unknown.empty())
        report.push_back(std::to_string(unknown.size()) + " UNKNOWN keys skipped (--allow-unknown): " + list_some(unknown, 8));
}

nlohmann::json read_json(const fs::path& p) {
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    if (ec) fail("%s: cannot read: %s", p.c_str(), ec.message().c_str());
    if (size > (64u << 20)) fail("%s: %llu bytes is too large for a configuration file", p.c_str(), (unsigned long long)size);
    std::ifstream f(p, std::ios::binary);
    if (!f) fail("%s: cannot open", p.c_str());
    std::stringstream ss;
    ss << f.rdbuf();
    try {
        return nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::exception& e) {
        fail("%s: not valid JSON: %s", p.c_str(), e.what());
    }
}

// ---------------------------------------------------------------------------------------------
// Tensors

DType float_source_type(const CkptTensor& t, const std::string& what) {
    switch (t.type) {
        case ElemType::F32: return DType::F32;
        case ElemType::F16: return DType::F16;
        case ElemType::BF16: return DType::BF16;
        case ElemType::F64: return DType::F32;
        default: fail("%s: tensor %s has element type %s; a floating-point tensor is expected", what.c_str(),
                      t.name.c_str(), elem_type_name(t.type));
    }
}

namespace {

// Source row r (of `cols` elements, contiguous layout) as float32.
void read_row(const uint8_t* base, ElemType type, int64_t r, int64_t cols, float* out) {
    switch (type) {
        case ElemType::F32: std::memcpy(out, base + r * cols * 4, (size_t)cols * 4); return;
        case ElemType::F16: {
            const uint8_t* p = base + r * cols * 2;
            for (int64_t i = 0; i < cols; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                out[i] = fp16_to_fp32(h);
            }
            return;
        }
        case ElemType::BF16: {
            const uint8_t* p = base + r * cols * 2;
            for (int64_t i = 0; i < cols; ++i) {
                uint16_t h;
                std::memcpy(&h, p + 2 * i, 2);
                out[i] = bf16_to_fp32(h);
            }
            return;
        }
        case ElemType::F64: {
            const uint8_t* p = base + r * cols * 8;
            for (int64_t i = 0; i < cols; ++i) {
                double d;
                std::memcpy(&d, p + 8 * i, 8);
                out[i] = (float)d;
            }
            return;
        }
        default: fail("internal: read_row of a non-float type");
    }
}

}  // namespace

void add_tensor(ConvertPlan& plan, const std::string& name, const CkptTensor& src, const std::vector<int64_t>& shape,
                const TypeChoice& type, const std::function<int64_t(int64_t)>& row_of) {
    const std::string what = plan.what + ": " + name + " (from " + src.name + ")";
    const DType src_type = float_source_type(src, plan.what);
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    HG_CHECK(numel == src.numel(), "%s: %lld elements, the output shape %s needs %lld", what.c_str(),
             (long long)src.numel(), shape_str(shape).c_str(), (long long)numel);
    HG_CHECK(!shape.empty() && shape.size() <= 4, "%s: %zu dimensions (1 to 4 are stored)", what.c_str(), shape.size());
    const int64_t cols = shape.back(), rows = cols ? numel / cols : 0;
    const DType dst = type.type;
    plan.data_bytes += row_bytes(dst, cols) * (uint64_t)rows;
    ++plan.type_counts[dtype_name(dst)];

    // Zero-copy: written straight from the mapped file.
    const bool same_bytes = src.type != ElemType::F64 && src_type == dst && src.is_contiguous() && !row_of;
    if (same_bytes) {
        plan.writer.add_tensor_borrowed(name, dst, shape, src.data);
        return;
    }
    const CkptTensor* s = &src;
    std::function<int64_t(int64_t)> map = row_of;
    plan.writer.add_tensor_generated(name, dst, shape, [s, rows, cols, dst, map, what](uint8_t* out) {
        std::vector<uint8_t> copy;  // strided sources (a transposed view saved as is) are made contiguous once
        const uint8_t* base = s->data;
        if (!s->is_contiguous()) {
            copy = s->contiguous_bytes();
            base = copy.data();
        }
        const ElemType et = s->type;
        convert_rows(dst, rows, cols,
                     [&](int64_t r, float* o) {
                         const int64_t sr = map ? map(r) : r;
                         read_row(base, et, sr, cols, o);
                     },
                     out, what);
    });
}

void add_general(GGUFWriter& w, const std::string& arch, const std::string& name) {
    w.set_string("general.architecture", arch);
    if (!name.empty()) w.set_string("general.name", name);
}

void set_file_type(ConvertPlan& plan, uint32_t file_type) {
    plan.writer.set_u32("general.file_type", file_type);
    for (const auto& [type_name, n] : plan.type_counts)
        if (dtype_info(*dtype_from_name(type_name)).quantized) {
            plan.writer.set_u32("general.quantization_version", 2);
            break;
        }
}

}  // namespace hg::conv
