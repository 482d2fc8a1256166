#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace hg {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Parses JSON and refuses duplicate keys in any object, which nlohmann would otherwise
// silently overwrite (a second "weight" entry must not hide the first). Throws hg::Error.
json parse_json_no_dups(std::string_view text, const std::string& what) {
    std::vector<std::set<std::string>> open_objects;  // keys seen in each object being parsed
    std::string dup;
    json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
        if (ev == json::parse_event_t::object_start) {
            open_objects.emplace_back();
        } else if (ev == json::parse_event_t::object_end) {
            if (!open_objects.empty()) open_objects.pop_back();
        } else if (ev == json::parse_event_t::key && dup.empty() && !open_objects.empty()) {
            if (!open_objects.back().insert(parsed.get<std::string>()).second) dup = parsed.get<std::string>();
        }
        return true;
    };
    json j;
    try {
        j = json::parse(text.begin(), text.end(), cb);
    } catch (const json::exception& e) {
        fail("%s: invalid JSON: %s", what.c_str(), e.what());
    }
    if (!dup.empty()) fail("%s: duplicate key \"%s\"", what.c_str(), dup.c_str());
    return j;
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& path) {
    std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
    f->path_ = path;
    f->file_ = MappedFile(path);
    f->map_ = f->file_.data();
    f->size_ = f->file_.size();
    f->parse();
    return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::from_memory(std::span<const uint8_t> bytes, std::string name) {
    std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
    f->path_ = std::move(name);
    f->map_ = bytes.data();
    f->size_ = bytes.size();
    f->parse();
    return f;
}

namespace {

// Streaming (SAX) reader of a safetensors header. It accepts exactly the header's structure
//   { "__metadata__": {str: str, ...}, name: {"dtype": str, "shape": [uint...], "data_offsets": [uint, uint]}, ... }
// and stops at the first deviation, so memory stays proportional to the tensors described
// (no DOM of a hostile 100 MB header, no deep nesting).
struct HeaderEntry {
    std::string name;
    std::string dtype;
    std::vector<uint64_t> shape;
    std::vector<uint64_t> offsets;
    bool has_dtype = false, has_shape = false, has_offsets = false;
};

class HeaderSax : public json::json_sax_t {
public:
    static constexpr size_t kMaxDims = 64;
    std::vector<HeaderEntry> entries;
    std::vector<std::pair<std::string, std::string>> metadata;
    std::string error;

    bool null() override { return unexpected("null"); }
    bool boolean(bool) override { return unexpected("a boolean"); }
    bool number_integer(number_integer_t) override { return unexpected("a negative number"); }
    bool number_float(number_float_t, const string_t&) override { return unexpected("a non-integer number"); }
    bool binary(binary_t&) override { return unexpected("binary data"); }
    bool number_unsigned(number_unsigned_t v) override {
        if (state_ == State::Shape) {
            if (entries.back().shape.size() >= kMaxDims) return bad("tensor " + entries.back().name + ": more than 64 dims");
            entries.back().shape.push_back(v);
            return true;
        }
        if (state_ == State::Offsets) {
            if (entries.back().offsets.size() >= 2) return bad("tensor " + entries.back().name + ": data_offsets must be [begin, end]");
            entries.back().offsets.push_back(v);
            return true;
        }
        return unexpected("a number");
    }
    bool string(string_t& v) override {
        if (state_ == State::MetaValue) {
            metadata.back().second = v;
            state_ = State::Meta;
            return true;
        }
        if (state_ == State::TensorValue && field_ == "dtype") {
            entries.back().dtype = v;
            state_ = State::Tensor;
            return true;
        }
        return unexpected("a string");
    }
    bool start_object(std::size_t) override {
        if (state_ == State::Start) { state_ = State::Root; return true; }
        if (state_ == State::RootValue) {
            state_ = is_meta_ ? State::Meta : State::Tensor;
            return true;
        }
        return unexpected("an object");
    }
    bool key(string_t& k) override {
        if (state_ == State::Root) {
            if (!names_.insert(k).second) return bad("duplicate key \"" + k + "\"");
            is_meta_ = k == "__metadata__";
            if (!is_meta_) entries.push_back(HeaderEntry{k, {}, {}, {}});
            state_ = State::RootValue;
            return true;
        }
        if (state_ == State::Meta) {
            for (const auto& m : metadata)
                if (m.first == k) return bad("__metadata__: duplicate key \"" + k + "\"");
            metadata.emplace_back(k, "");
            state_ = State::MetaValue;
            return true;
        }
        if (state_ == State::Tensor) {
            HeaderEntry& e = entries.back();
            bool* seen = k == "dtype" ? &e.has_dtype : k == "shape" ? &e.has_shape : k == "data_offsets" ? &e.has_offsets : nullptr;
            if (!seen) return bad("tensor " + e.name + ": unknown field \"" + k + "\"");
            if (*seen) return bad("tensor " + e.name + ": duplicate field \"" + k + "\"");
            *seen = true;
            field_ = k;
            state_ = State::TensorValue;
            return true;
        }
        return unexpected("a key");
    }
    bool end_object() override {
        if (state_ == State::Meta || state_ == State::Tensor) { state_ = State::Root; return true; }
        if (state_ == State::Root) { state_ = State::Done; return true; }
        return unexpected("the end of an object");
    }
    bool start_array(std::size_t) override {
        if (state_ == State::TensorValue && field_ == "shape") { state_ = State::Shape; return true; }
        if (state_ == State::TensorValue && field_ == "data_offsets") { state_ = State::Offsets; return true; }
        return unexpected("an array");
    }
    bool end_array() override {
        if (state_ == State::Shape || state_ == State::Offsets) { state_ = State::Tensor; return true; }
        return unexpected("the end of an array");
    }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
        return bad(std::string("invalid JSON: ") + ex.what());
    }

private:
    enum class State { Start, Root, RootValue, Meta, MetaValue, Tensor, TensorValue, Shape, Offsets, Done };
    bool bad(std::string msg) {
        if (error.empty()) error = std::move(msg);
        return false;
    }
    bool unexpected(const char* what) {
        std::string where = state_ == State::Start ? "at the top level (must be an object)"
                          : state_ == State::Root || state_ == State::RootValue ? "as a top-level value (must be an object)"
                          : state_ == State::Meta || state_ == State::MetaValue ? "in __metadata__ (values must be strings)"
                          : "in tensor " + entries.back().name + (field_.empty() ? "" : " field " + field_);
        return bad(std::string("unexpected ") + what + " " + where);
    }
    State state_ = State::Start;
    bool is_meta_ = false;
    std::string field_;
    std::set<std::string> names_;
};

}  // namespace

void SafetensorsFile::parse() {
    const char* name = path_.c_str();
    if (size_ < 8) fail("%s: not a safetensors file (%llu bytes, too short for the header length)", name, (unsigned long long)size_);
    uint64_t n;
    std::memcpy(&n, map_, 8);
    if (n > kMaxHeader) fail("%s: safetensors header length %llu exceeds the %llu-byte limit", name, (unsigned long long)n, (unsigned long long)kMaxHeader);
    if (n > size_ - 8) fail("%s: safetensors header length %llu exceeds the file (%llu bytes)", name, (unsigned long long)n, (unsigned long long)size_);
    header_size_ = n;
    const std::string_view text(reinterpret_cast<const char*>(map_ + 8), static_cast<size_t>(n));
    if (text.empty() || text[0] != '{') fail("%s: safetensors header does not start with '{'", name);
    // nlohmann's lexer refuses invalid UTF-8 inside strings; outside them it is a syntax error.
    HeaderSax sax;
    bool ok = false;
    try {
        ok = json::sax_parse(text.begin(), text.end(), &sax);
    } catch (const json::exception& e) {
        if (sax.error.empty()) sax.error = std::string("invalid JSON: ") + e.what();
    }
    if (!ok || !sax.error.empty()) fail("%s: safetensors header: %s", name, sax.error.empty() ? "invalid JSON" : sax.error.c_str());
    metadata_ = std::move(sax.metadata);

    const uint64_t data_start = 8 + n;
    const uint64_t data_len = size_ - data_start;
    struct Entry {
        uint64_t begin, end;
        CkptTensor t;
    };
    std::vector<Entry> entries;
    entries.reserve(sax.entries.size());
    for (auto& h : sax.entries) {
        const char* tn = h.name.c_str();
        if (!h.has_dtype) fail("%s: tensor %s: missing dtype", name, tn);
        if (!h.has_shape) fail("%s: tensor %s: missing shape", name, tn);
        if (!h.has_offsets || h.offsets.size() != 2) fail("%s: tensor %s: data_offsets must be [begin, end]", name, tn);
        const auto et = elem_type_from_name(h.dtype);
        if (!et) fail("%s: tensor %s: unknown dtype \"%s\"", name, tn, h.dtype.c_str());
        Entry e;
        e.t.name = std::move(h.name);
        tn = e.t.name.c_str();
        e.t.type = *et;
        int64_t numel = 1;
        for (uint64_t v : h.shape) {
            if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
                __builtin_mul_overflow(numel, static_cast<int64_t>(v), &numel))
                fail("%s: tensor %s: shape overflows", name, tn);
            e.t.shape.push_back(static_cast<int64_t>(v));
        }
        e.begin = h.offsets[0];
        e.end = h.offsets[1];
        if (e.end < e.begin)
            fail("%s: tensor %s: data_offsets [%llu, %llu) end before they begin", name, tn, (unsigned long long)e.begin, (unsigned long long)e.end);
        uint64_t nbytes;
        if (__builtin_mul_overflow(static_cast<uint64_t>(numel), elem_size(*et), &nbytes)) fail("%s: tensor %s: byte size overflows", name, tn);
        if (e.end - e.begin != nbytes)
            fail("%s: tensor %s: data_offsets [%llu, %llu) hold %llu bytes but %s %s needs %llu", name, tn,
                 (unsigned long long)e.begin, (unsigned long long)e.end, (unsigned long long)(e.end - e.begin),
                 elem_type_name(*et), e.t.shape_str().c_str(), (unsigned long long)nbytes);
        if (e.end > data_len)
            fail("%s: tensor %s: data_offsets [%llu, %llu) lie outside the %llu-byte data section", name, tn,
                 (unsigned long long)e.begin, (unsigned long long)e.end, (unsigned long long)data_len);
        e.t.nbytes = nbytes;
        e.t.stride.assign(e.t.shape.size(), 1);
        for (size_t d = e.t.shape.size(); d-- > 1;) e.t.stride[d - 1] = e.t.stride[d] * e.t.shape[d];
        e.t.data = map_ + data_start + e.begin;
        entries.push_back(std::move(e));
    }
    // The tensors must tile the data section in offset order (as the safetensors crate checks).
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t expect = 0;
    for (const auto& e : entries) {
        if (e.begin != expect)
            fail("%s: tensor %s: data starts at %llu but the previous tensor ends at %llu (%s)", name, e.t.name.c_str(),
                 (unsigned long long)e.begin, (unsigned long long)expect, e.begin < expect ? "overlap" : "gap");
        expect = e.end;
    }
    if (expect != data_len)
        fail("%s: the tensors cover %llu bytes of data but the file holds %llu after the header", name,
             (unsigned long long)expect, (unsigned long long)data_len);
    for (auto& e : entries) {
        index_[e.t.name] = tensors_.size();
        tensors_.push_back(std::move(e.t));
    }
}

const CkptTensor* SafetensorsFile::find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

const CkptTensor& SafetensorsFile::get(std::string_view name) const {
    const CkptTensor* t = find(name);
    if (!t) fail("%s: no tensor named %.*s", path_.c_str(), (int)name.size(), name.data());
    return *t;
}

// ---------------------------------------------------------------------------------------------

std::unique_ptr<SafetensorsModel> SafetensorsModel::open(const fs::path& path) {
    auto m = std::make_unique<SafetensorsModel>();
    fs::path index, single;
    if (fs::is_directory(path)) {
        if (fs::exists(path / "model.safetensors.index.json")) index = path / "model.safetensors.index.json";
        else if (fs::exists(path / "model.safetensors")) single = path / "model.safetensors";
        else {
            // a folder with exactly one *.safetensors file (e.g. adapter_model.safetensors)
            std::vector<fs::path> found;
            for (const auto& e : fs::directory_iterator(path))
                if (e.path().extension() == ".safetensors") found.push_back(e.path());
            if (found.size() != 1)
                fail("%s: no model.safetensors.index.json or model.safetensors, and %zu other .safetensors files", path.c_str(), found.size());
            single = found[0];
        }
    } else if (path.string().ends_with(".json")) {
        index = path;
    } else {
        single = path;
    }

    if (!single.empty()) {
        m->shards_.push_back(SafetensorsFile::open(single));
        for (const auto& t : m->shards_[0]->tensors()) m->by_name_[t.name] = &t;
        return m;
    }

    m->index_path_ = index;
    const std::string what = index.string();
    std::ifstream in(index, std::ios::binary);
    if (!in) fail("%s: cannot open", index.c_str());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > SafetensorsFile::kMaxHeader) fail("%s: index larger than %llu bytes", index.c_str(), (unsigned long long)SafetensorsFile::kMaxHeader);
    const json j = parse_json_no_dups(text, what);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        fail("%s: not a safetensors index (no \"weight_map\" object)", index.c_str());
    if (j.contains("metadata") && j["metadata"].is_object())
        for (const auto& [k, v] : j["metadata"].items()) m->index_metadata_.emplace_back(k, v.is_string() ? v.get<std::string>() : v.dump());

    const fs::path folder = index.parent_path();
    std::map<std::string, size_t> shard_of_file;  // shards open in file-name order (00001, 00002, ...)
    std::vector<std::pair<std::string, std::string>> wanted;  // tensor -> shard file
    for (const auto& [tensor, file] : j["weight_map"].items()) {
        if (!file.is_string()) fail("%s: weight_map[%s] is not a string", index.c_str(), tensor.c_str());
        const std::string f = file.get<std::string>();
        // shards live in the same folder: refuse paths (../../etc/passwd, /abs, sub/dir)
        if (f.empty() || f.find('/') != std::string::npos || f.find('\\') != std::string::npos || f == "." || f == "..")
            fail("%s: weight_map[%s] = \"%s\" is not a plain file name", index.c_str(), tensor.c_str(), f.c_str());
        shard_of_file.emplace(f, 0);
        wanted.emplace_back(tensor, f);
    }
    for (auto& [f, idx] : shard_of_file) {
        idx = m->shards_.size();
        m->shards_.push_back(SafetensorsFile::open(folder / f));
    }
    for (const auto& shard : m->shards_)
        for (const auto& t : shard->tensors()) {
            auto [it, inserted] = m->by_name_.emplace(t.name, &t);
            if (!inserted)
                fail("%s: tensor %s is in two shards (%s and another)", index.c_str(), t.name.c_str(), shard->path().filename().c_str());
        }
    for (const auto& [tensor, f] : wanted) {
        const auto& shard = m->shards_[shard_of_file[f]];
        if (!shard->find(tensor)) fail("%s: weight_map puts %s in %s, which does not hold it", index.c_str(), tensor.c_str(), f.c_str());
    }
    return m;
}

std::vector<const CkptTensor*> SafetensorsModel::tensors() const {
    std::vector<const CkptTensor*> out;
    for (const auto& s : shards_)
        for (const auto& t : s->tensors()) out.push_back(&t);
    return out;
}

const CkptTensor* SafetensorsModel::find(std::string_view name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

const CkptTensor& SafetensorsModel::get(std::string_view name) const {
    const CkptTensor* t = find(name);
    if (!t) fail("%s: no tensor named %.*s", (index_path_.empty() && !shards_.empty() ? shards_[0]->path() : index_path_).c_str(),
                 (int)name.size(), name.data());
    return *t;
}

}  // namespace hg
