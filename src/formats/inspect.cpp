#include "formats/inspect.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "formats/torch_checkpoint.h"

namespace hg {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

void add(std::string& out, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void add(std::string& out, const char* fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    const int n = std::vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::string buf(static_cast<size_t>(n > 0 ? n : 0) + 1, '\0');
    std::vsnprintf(buf.data(), buf.size(), fmt, ap2);
    va_end(ap2);
    buf.pop_back();
    out += buf;
}

std::string dims_str(const std::vector<int64_t>& d) {
    std::string s = "[";
    for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
}

// JSON view of a GGUF value (arrays cut at max items, with their count).
json gguf_value_json(const GGUFValue& v, size_t max_items) {
    switch (v.type) {
        case GGUFType::STRING: return std::get<std::string>(v.v);
        case GGUFType::BOOL: return std::get<bool>(v.v);
        case GGUFType::FLOAT32: case GGUFType::FLOAT64: {
            const double d = std::get<double>(v.v);
            return std::isfinite(d) ? json(d) : json(v.to_string());
        }
        case GGUFType::ARRAY: {
            json a = json::array();
            for (size_t i = 0; i < v.array_size() && i < max_items; ++i) a.push_back(gguf_value_json(v.item(i), max_items));
            return a;
        }
        default: return v.is_integer() && std::holds_alternative<uint64_t>(v.v) ? json(std::get<uint64_t>(v.v)) : json(std::get<int64_t>(v.v));
    }
}

std::string gguf_type_label(const GGUFValue& v) {
    if (!v.is_array()) return gguf_type_name(v.type);
    return std::string("[") + gguf_type_name(v.elem_type) + "]";
}

std::string inspect_gguf(const fs::path& p, const InspectOptions& opt) {
    auto f = GGUFFile::open(p);
    uint64_t data_bytes = 0;
    for (const auto& t : f->tensors()) data_bytes += t.nbytes;
    if (opt.json) {
        json j;
        j["file"] = p.string();
        j["format"] = "gguf";
        j["version"] = f->version();
        j["alignment"] = f->alignment();
        j["data_offset"] = f->data_offset();
        j["file_size"] = f->file_size();
        json md = json::array();
        for (const auto& kv : f->metadata()) {
            json e;
            e["key"] = kv.key;
            e["type"] = gguf_type_name(kv.value.type);
            if (kv.value.is_array()) {
                e["elem_type"] = gguf_type_name(kv.value.elem_type);
                e["count"] = kv.value.array_size();
            }
            e["value"] = gguf_value_json(kv.value, opt.max_array_items);
            md.push_back(e);
        }
        j["metadata"] = md;
        json ts = json::array();
        for (const auto& t : f->tensors()) {
            json e;
            e["name"] = t.name;
            e["type"] = dtype_name(t.type);
            e["ne"] = std::vector<int64_t>(t.ne, t.ne + t.n_dims);
            e["shape"] = t.shape();
            e["offset"] = t.offset;
            e["nbytes"] = t.nbytes;
            ts.push_back(e);
        }
        j["tensors"] = ts;
        return j.dump(1) + "\n";
    }
    std::string out;
    add(out, "file:     %s\n", p.c_str());
    add(out, "format:   GGUF v%u, alignment %zu, tensor data at offset %llu, file %llu bytes\n", f->version(), f->alignment(),
        (unsigned long long)f->data_offset(), (unsigned long long)f->file_size());
    add(out, "metadata: %zu key-value pairs\n", f->metadata().size());
    size_t n = 0;
    for (const auto& kv : f->metadata()) {
        const size_t count = kv.value.is_array() ? kv.value.array_size() : 1;
        add(out, "  %5zu: %-10s | %8zu | %s = %s\n", ++n, gguf_type_label(kv.value).c_str(), count, kv.key.c_str(),
            kv.value.to_string(opt.max_array_items).c_str());
    }
    add(out, "tensors:  %zu, %llu bytes of data (ne in ggml order, ne0 innermost, as gguf-dump prints it; "
             "PyTorch order is the reverse)\n", f->tensors().size(), (unsigned long long)data_bytes);
    n = 0;
    for (const auto& t : f->tensors()) {
        std::string ne;
        for (int d = 0; d < 4; ++d) add(ne, "%s%5lld", d ? ", " : "", (long long)t.ne[d]);
        add(out, "  %5zu: %10lld | %s | %-7s | %s  (offset %llu, %llu bytes)\n", ++n, (long long)t.numel(), ne.c_str(),
            dtype_name(t.type), t.name.c_str(), (unsigned long long)t.offset, (unsigned long long)t.nbytes);
    }
    return out;
}

// --- safetensors / torch tensor tables ----------------------------------------------------

json tensor_json(const CkptTensor& t) {
    json e;
    e["name"] = t.name;
    e["dtype"] = elem_type_name(t.type);
    e["shape"] = t.shape;
    if (!t.is_contiguous()) e["stride"] = t.stride;
    e["nbytes"] = t.nbytes;
    return e;
}

void tensor_table(std::string& out, const std::vector<const CkptTensor*>& ts) {
    std::map<std::string, std::pair<int64_t, uint64_t>> by_type;  // dtype -> (elements, bytes)
    size_t n = 0;
    for (const CkptTensor* t : ts) {
        add(out, "  %5zu: %-7s | %-24s | %10llu bytes | %s%s\n", ++n, elem_type_name(t->type), t->shape_str().c_str(),
            (unsigned long long)t->nbytes, t->name.c_str(),
            t->is_contiguous() ? "" : ("  (strided: stride " + dims_str(t->stride) + ")").c_str());
        auto& bt = by_type[elem_type_name(t->type)];
        bt.first += t->numel();
        bt.second += t->nbytes;
    }
    for (const auto& [ty, v] : by_type)
        add(out, "  total %s: %lld elements, %llu bytes\n", ty.c_str(), (long long)v.first, (unsigned long long)v.second);
}

std::string config_summary(const fs::path& cfg_path, json* j_out) {
    std::ifstream in(cfg_path);
    json cfg;
    try {
        cfg = json::parse(in);
    } catch (const json::exception& e) {
        fail("%s: invalid JSON: %s", cfg_path.c_str(), e.what());
    }
    if (!cfg.is_object()) fail("%s: not a JSON object", cfg_path.c_str());
    std::string out;
    add(out, "config:   %s\n", cfg_path.filename().c_str());
    json summary = json::object();
    for (const auto& [k, v] : cfg.items()) {
        if (v.is_object()) continue;  // nested configs (text_config, rope_scaling, ...) shown as keys only
        std::string s = v.dump();
        if (s.size() > 120) s = s.substr(0, 117) + "...";
        add(out, "  %s = %s\n", k.c_str(), s.c_str());
        summary[k] = v;
    }
    for (const auto& [k, v] : cfg.items())
        if (v.is_object()) add(out, "  %s = {%zu keys}\n", k.c_str(), v.size());
    if (j_out) *j_out = summary;
    return out;
}

std::string inspect_safetensors(const fs::path& p, const InspectOptions& opt) {
    auto m = SafetensorsModel::open(p);
    const auto ts = m->tensors();
    fs::path cfg = fs::is_directory(p) ? p / "config.json" : fs::path();
    if (opt.json) {
        json j;
        j["file"] = p.string();
        j["format"] = fs::is_directory(p) ? "hf-folder" : "safetensors";
        if (!cfg.empty() && fs::exists(cfg)) {
            json c;
            config_summary(cfg, &c);
            j["config"] = c;
        }
        if (!m->index_path().empty()) j["index"] = m->index_path().filename().string();
        json shards = json::array();
        for (const auto& s : m->shards()) {
            json e;
            e["file"] = s->path().filename().string();
            e["size"] = s->file_size();
            json md = json::object();
            for (const auto& [k, v] : s->metadata()) md[k] = v;
            e["metadata"] = md;
            shards.push_back(e);
        }
        j["shards"] = shards;
        json tj = json::array();
        for (const CkptTensor* t : ts) tj.push_back(tensor_json(*t));
        j["tensors"] = tj;
        return j.dump(1) + "\n";
    }
    std::string out;
    add(out, "file:     %s\n", p.c_str());
    if (!cfg.empty() && fs::exists(cfg)) out += config_summary(cfg, nullptr);
    add(out, "format:   safetensors, %zu file%s%s\n", m->shards().size(), m->shards().size() == 1 ? "" : "s",
        m->index_path().empty() ? "" : (" listed by " + m->index_path().filename().string()).c_str());
    for (const auto& s : m->shards()) {
        add(out, "  %s: %llu bytes, header %llu bytes, %zu tensors\n", s->path().filename().c_str(), (unsigned long long)s->file_size(),
            (unsigned long long)s->header_size(), s->tensors().size());
        for (const auto& [k, v] : s->metadata()) add(out, "    __metadata__ %s = %s\n", k.c_str(), v.c_str());
    }
    add(out, "tensors:  %zu (shapes in PyTorch order)\n", ts.size());
    tensor_table(out, ts);
    return out;
}

void torch_summary(std::string& out, const TorchCheckpoint& c, const InspectOptions& opt, json* j) {
    PyRef root = c.root();
    const bool lightning = root->kind == PyKind::Dict && root->get("state_dict") && root->get("state_dict")->kind == PyKind::Dict;
    // The state dict: the root dict's tensors, or a Lightning checkpoint's "state_dict".
    const std::string prefix = lightning ? "state_dict." : "";
    PyRef sdo = lightning ? root->get("state_dict") : root;
    std::vector<const CkptTensor*> sd, other;
    for (const auto& t : c.all_tensors()) {
        bool in = false;
        if (sdo->kind == PyKind::Dict && t.name.starts_with(prefix)) in = sdo->get(t.name.substr(prefix.size())) != nullptr;
        (in ? sd : other).push_back(&t);
    }
    if (j) {
        (*j)["format"] = c.format() == TorchCheckpoint::Format::Zip ? "torch-zip" : "torch-legacy";
        if (c.format() == TorchCheckpoint::Format::Zip) (*j)["archive"] = c.archive_name();
        (*j)["kind"] = lightning ? "lightning" : root->kind == PyKind::Dict ? "state_dict" : py_kind_name(root->kind);
        json top = json::object();
        if (root->kind == PyKind::Dict)
            for (const auto& [k, v] : root->entries)
                if (k->kind == PyKind::Str && v->kind != PyKind::Tensor && !(lightning && k->s == "state_dict")) top[k->s] = py_repr(v, 2, opt.max_array_items);
        (*j)["entries"] = top;
        (*j)["opaque_globals"] = c.opaque_globals();
        json tj = json::array();
        for (const CkptTensor* t : sd) {
            json e = tensor_json(*t);
            if (lightning) e["name"] = t->name.substr(prefix.size());
            tj.push_back(e);
        }
        (*j)["tensors"] = tj;
        if (opt.all_tensors) {
            json oj = json::array();
            for (const CkptTensor* t : other) oj.push_back(tensor_json(*t));
            (*j)["other_tensors"] = oj;
        } else {
            (*j)["other_tensor_count"] = other.size();
        }
        return;
    }
    add(out, "format:   PyTorch %s%s\n", c.format() == TorchCheckpoint::Format::Zip ? "zip checkpoint (torch.save >= 1.6), archive " : "legacy checkpoint (torch.save < 1.6)",
        c.format() == TorchCheckpoint::Format::Zip ? c.archive_name().c_str() : "");
    add(out, "content:  %s\n", lightning ? "PyTorch Lightning checkpoint (weights under \"state_dict\")"
                            : root->kind == PyKind::Dict ? "a dict (state dict)" : py_kind_name(root->kind));
    if (root->kind == PyKind::Dict)
        for (const auto& [k, v] : root->entries) {
            if (k->kind != PyKind::Str || v->kind == PyKind::Tensor || (lightning && k->s == "state_dict")) continue;
            add(out, "  %s = %s\n", k->s.c_str(), py_repr(v, 2, opt.max_array_items).c_str());
        }
    if (!c.opaque_globals().empty()) {
        add(out, "objects of these classes/functions are referenced; they were NOT constructed or called:\n");
        for (const auto& g : c.opaque_globals()) add(out, "  %s\n", g.c_str());
    }
    add(out, "tensors:  %zu in the state dict (shapes in PyTorch order)\n", sd.size());
    std::vector<CkptTensor> renamed;
    if (lightning) {
        renamed.reserve(sd.size());
        for (const CkptTensor* t : sd) {
            renamed.push_back(*t);
            renamed.back().name = t->name.substr(prefix.size());
        }
        sd.clear();
        for (const auto& t : renamed) sd.push_back(&t);
    }
    tensor_table(out, sd);
    if (!other.empty()) {
        if (opt.all_tensors) {
            add(out, "other tensors: %zu (optimizer state, callbacks, ...)\n", other.size());
            tensor_table(out, other);
        } else {
            add(out, "other tensors: %zu outside the state dict (optimizer state, ...; --all lists them)\n", other.size());
        }
    }
}

std::string inspect_torch(const fs::path& p, const InspectOptions& opt) {
    TorchLoadOptions o;
    o.mode = TorchLoadMode::Inspect;
    auto c = TorchCheckpoint::open(p, o);
    // Would the strict state-dict loader accept it (no objects of unknown classes)?
    std::string strict = "yes";
    try {
        TorchCheckpoint::open(p, TorchLoadOptions{});
    } catch (const Error& e) {
        strict = std::string("no: ") + e.what();
    }
    if (opt.json) {
        json j;
        j["file"] = p.string();
        std::string unused;
        torch_summary(unused, *c, opt, &j);
        j["loads_as_state_dict"] = strict == "yes";
        if (strict != "yes") j["state_dict_refusal"] = strict.substr(4);
        return j.dump(1) + "\n";
    }
    std::string out;
    add(out, "file:     %s\n", p.c_str());
    torch_summary(out, *c, opt, nullptr);
    add(out, "loads as a plain state dict: %s\n", strict.c_str());
    return out;
}

}  // namespace

std::string detect_format(const fs::path& p) {
    if (fs::is_directory(p)) {
        for (const auto& e : fs::directory_iterator(p)) {
            const std::string n = e.path().filename().string();
            if (n.ends_with(".safetensors") || n == "model.safetensors.index.json" || n.starts_with("pytorch_model") || n == "config.json")
                return "hf-folder";
        }
        return "";
    }
    if (p.string().ends_with(".safetensors.index.json")) return "safetensors-index";
    std::ifstream f(p, std::ios::binary);
    uint8_t b[9] = {};
    f.read(reinterpret_cast<char*>(b), 9);
    const auto n = f.gcount();
    if (n >= 4 && std::memcmp(b, "GGUF", 4) == 0) return "gguf";
    if (n >= 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) return "torch-zip";
    if (n >= 2 && b[0] == 0x80) return "torch-legacy";
    if (n == 9 && b[8] == '{') return "safetensors";
    return "";
}

std::string inspect(const fs::path& p, const InspectOptions& opt) {
    if (!fs::exists(p)) fail("%s: no such file or folder", p.c_str());
    const std::string kind = detect_format(p);
    if (kind == "gguf") return inspect_gguf(p, opt);
    if (kind == "safetensors" || kind == "safetensors-index") return inspect_safetensors(p, opt);
    if (kind == "torch-zip" || kind == "torch-legacy") return inspect_torch(p, opt);
    if (kind == "hf-folder") {
        bool has_st = false;
        std::vector<fs::path> bins;  // pytorch_model.bin or its shards pytorch_model-0000N-of-0000M.bin
        for (const auto& e : fs::directory_iterator(p)) {
            const std::string n = e.path().filename().string();
            has_st = has_st || n.ends_with(".safetensors") || n == "model.safetensors.index.json";
            if (n.starts_with("pytorch_model") && n.ends_with(".bin")) bins.push_back(e.path());
        }
        if (has_st) return inspect_safetensors(p, opt);
        if (!bins.empty()) {
            std::sort(bins.begin(), bins.end());
            std::string out = fs::exists(p / "config.json") && !opt.json ? config_summary(p / "config.json", nullptr) : "";
            for (const auto& b : bins) out += inspect_torch(b, opt);
            return out;
        }
        fail("%s: a folder without model.safetensors, an index or pytorch_model.bin", p.c_str());
    }
    fail("%s: unknown format (not GGUF, safetensors, a PyTorch checkpoint or a Hugging Face folder)", p.c_str());
}

}  // namespace hg
