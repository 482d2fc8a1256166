#include "formats/torch_checkpoint.h"

#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "formats/byte_reader.h"

namespace hg {

namespace fs = std::filesystem;

namespace {
// torch/serialization.py: MAGIC_NUMBER = 0x1950a86a20f9469cfc6c, PROTOCOL_VERSION = 1001
constexpr uint8_t kLegacyMagic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int64_t kLegacyProtocol = 1001;
constexpr int kMaxWalkDepth = 64;
}  // namespace

std::unique_ptr<TorchCheckpoint> TorchCheckpoint::open(const fs::path& path, const TorchLoadOptions& opt) {
    std::unique_ptr<TorchCheckpoint> c(new TorchCheckpoint());
    c->path_ = path;
    c->file_ = MappedFile(path);
    c->bytes_ = c->file_.bytes();
    c->load(opt);
    return c;
}

std::unique_ptr<TorchCheckpoint> TorchCheckpoint::from_memory(std::span<const uint8_t> bytes, std::string name,
                                                              const TorchLoadOptions& opt) {
    std::unique_ptr<TorchCheckpoint> c(new TorchCheckpoint());
    c->path_ = std::move(name);
    c->bytes_ = bytes;
    c->load(opt);
    return c;
}

void TorchCheckpoint::load(const TorchLoadOptions& opt) {
    arena_.name = path_.string();
    arena_.max_objects = opt.max_objects;
    if (ZipArchive::looks_like_zip(bytes_)) {
        format_ = Format::Zip;
        load_zip(opt);
    } else if (!bytes_.empty() && bytes_[0] == 0x80) {
        format_ = Format::Legacy;
        load_legacy(opt);
    } else if (bytes_.size() > 262 && std::memcmp(bytes_.data() + 257, "ustar", 5) == 0) {
        fail("%s: a tar-format PyTorch checkpoint (PyTorch < 0.4) is not supported; load and re-save it with torch.save", path_.c_str());
    } else {
        fail("%s: not a PyTorch checkpoint (neither a zip archive nor a pickle)", path_.c_str());
    }
    collect(opt);
}

void TorchCheckpoint::load_zip(const TorchLoadOptions& opt) {
    const char* nm = path_.c_str();
    zip_ = ZipArchive(bytes_, path_.string());
    if (zip_.entries().empty()) fail("%s: empty zip archive", nm);
    const std::string& first = zip_.entries()[0].name;
    const size_t slash = first.find('/');
    if (slash == std::string::npos) fail("%s: zip entry %s is not inside an archive folder (not a torch.save file)", nm, first.c_str());
    archive_ = first.substr(0, slash);
    const ZipEntry* pkl = zip_.find(archive_ + "/data.pkl");
    if (!pkl) {
        const bool script = zip_.find(archive_ + "/constants.pkl") != nullptr;
        fail("%s: no %s/data.pkl in the archive%s", nm, archive_.c_str(),
             script ? " (a TorchScript archive; save the state_dict with torch.save instead)" : " (not a torch.save checkpoint)");
    }
    if (const ZipEntry* bo = zip_.find(archive_ + "/byteorder")) {
        const auto d = zip_.data(*bo);
        const std::string_view s(reinterpret_cast<const char*>(d.data()), d.size());
        if (s != "little") fail("%s: byteorder record is \"%.*s\"; only little-endian checkpoints are supported", nm, (int)std::min<size_t>(s.size(), 16), s.data());
    }
    if (opt.verify_crc) zip_.verify_crc(*pkl);
    const PicklePolicy policy = opt.mode == TorchLoadMode::StateDict ? PicklePolicy::Strict : PicklePolicy::Lenient;
    arena_.name = path_.string() + ": " + pkl->name;
    PickleResult res = unpickle(zip_.data(*pkl), arena_, policy);
    arena_.name = path_.string();
    root_ = res.root;
    opaque_ = std::move(res.opaque_globals);
}

void TorchCheckpoint::load_legacy(const TorchLoadOptions& opt) {
    const char* nm = path_.c_str();
    uint64_t pos = 0;
    auto next_pickle = [&](PicklePolicy policy, const char* what) {
        arena_.name = path_.string() + ": legacy " + what;
        PickleResult r = unpickle(bytes_.subspan(pos), arena_, policy);
        pos += r.consumed;
        arena_.name = path_.string();
        return r;
    };
    PyRef magic = next_pickle(PicklePolicy::Strict, "magic number").root;
    if (magic->kind != PyKind::BigInt || magic->s.size() != sizeof kLegacyMagic || std::memcmp(magic->s.data(), kLegacyMagic, sizeof kLegacyMagic) != 0)
        fail("%s: not a PyTorch checkpoint (a pickle without torch.save's magic number)", nm);
    PyRef proto = next_pickle(PicklePolicy::Strict, "protocol version").root;
    if (proto->kind != PyKind::Int || proto->i != kLegacyProtocol)
        fail("%s: legacy torch.save protocol version %lld is not supported (expected 1001)", nm, proto->kind == PyKind::Int ? (long long)proto->i : -1LL);
    PyRef sys_info = next_pickle(PicklePolicy::Strict, "sys_info").root;
    if (sys_info->kind != PyKind::Dict) fail("%s: legacy sys_info is not a dict", nm);
    if (PyRef le = sys_info->get("little_endian"); le && !(le->kind == PyKind::Bool && le->b))
        fail("%s: a big-endian legacy checkpoint is not supported", nm);
    const PicklePolicy policy = opt.mode == TorchLoadMode::StateDict ? PicklePolicy::Strict : PicklePolicy::Lenient;
    PickleResult obj = next_pickle(policy, "object");
    root_ = obj.root;
    opaque_ = std::move(obj.opaque_globals);
    PyRef keys = next_pickle(PicklePolicy::Strict, "storage keys").root;
    if (keys->kind != PyKind::List) fail("%s: legacy storage key list is a %s", nm, py_kind_name(keys->kind));

    // Storage element types come from the object pickle: find every root storage in it.
    std::unordered_map<std::string, PyRef> roots;
    std::vector<PyRef> todo{root_};
    std::unordered_set<PyRef> seen;
    while (!todo.empty()) {
        PyRef o = todo.back();
        todo.pop_back();
        if (!seen.insert(o).second) continue;
        if (o->kind == PyKind::Storage) {
            PyRef root = o->ref ? o->ref : o;
            roots.emplace(root->s, root);
        }
        for (PyRef x : o->items) todo.push_back(x);
        for (const auto& [k, v] : o->entries) { todo.push_back(k); todo.push_back(v); }
        if (o->state) todo.push_back(o->state);
        if (o->ref) todo.push_back(o->ref);
    }
    ByteReader r(bytes_.data(), bytes_.size(), path_.string() + ": legacy storages");
    r.seek(pos, "storage data");
    std::unordered_set<std::string> listed;
    for (PyRef k : keys->items) {
        if (k->kind != PyKind::Str) fail("%s: legacy storage key is a %s", nm, py_kind_name(k->kind));
        if (!listed.insert(k->s).second) fail("%s: storage key %s listed twice", nm, k->s.c_str());
        auto it = roots.find(k->s);
        if (it == roots.end()) fail("%s: storage %s is listed but no object uses it", nm, k->s.c_str());
        PyRef st = it->second;
        const int64_t n = r.i64("storage element count");
        if (n != st->i) fail("%s: storage %s holds %lld elements but the pickle says %lld", nm, k->s.c_str(), (long long)n, (long long)st->i);
        const uint64_t es = elem_size(st->elem);
        if (static_cast<uint64_t>(n) > r.remaining() / es)
            fail("%s: storage %s: %lld %s elements run past the end of the file", nm, k->s.c_str(), (long long)n, elem_type_name(st->elem));
        const uint64_t nbytes = static_cast<uint64_t>(n) * es;
        storage_data_.emplace(st, std::span<const uint8_t>(r.take(nbytes, "storage data"), static_cast<size_t>(nbytes)));
    }
    if (r.remaining() != 0) fail("%s: %llu unexpected bytes after the last storage", nm, (unsigned long long)r.remaining());
    for (const auto& [key, st] : roots)
        if (!listed.count(key)) fail("%s: storage %s is used but missing from the file", nm, key.c_str());
}

std::span<const uint8_t> TorchCheckpoint::storage_bytes(PyRef st) const {
    if (auto it = storage_data_.find(st); it != storage_data_.end()) return it->second;
    fail("%s: storage %s has no data", path_.c_str(), st->s.c_str());
}

CkptTensor TorchCheckpoint::tensor_of(PyRef t, std::string name) const {
    HG_CHECK(t && t->kind == PyKind::Tensor, "%s: %s is not a tensor", path_.c_str(), name.c_str());
    PyRef st = t->ref;
    PyRef root = st->ref ? st->ref : st;
    std::span<const uint8_t> bytes = storage_bytes(root);
    const size_t root_es = elem_size(root->elem);
    if (st->ref) bytes = bytes.subspan(static_cast<size_t>(st->view_offset) * root_es, static_cast<size_t>(st->i) * root_es);
    CkptTensor c;
    c.name = std::move(name);
    c.type = t->elem;
    c.shape = t->shape;
    c.stride = t->stride;
    const size_t es = elem_size(t->elem);
    // extent inside the storage was checked when the tensor was unpickled (in elements of t->elem)
    c.data = bytes.data() + static_cast<size_t>(t->i) * es;
    c.storage = root->s;
    c.storage_offset = t->i + (st->ref ? st->view_offset * static_cast<int64_t>(root_es) / static_cast<int64_t>(es) : 0);
    c.nbytes = static_cast<uint64_t>(c.numel()) * es;
    return c;
}

void TorchCheckpoint::collect(const TorchLoadOptions& opt) {
    const char* nm = path_.c_str();
    // Walk the tree (iteratively; shared and cyclic references visited once) for tensors.
    struct Item {
        PyRef o;
        std::string path;
        int depth;
    };
    std::vector<Item> todo{{root_, "", 0}};
    std::unordered_set<PyRef> seen;
    std::vector<std::pair<PyRef, std::string>> found;
    auto join = [](const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; };
    while (!todo.empty()) {
        Item it = std::move(todo.back());
        todo.pop_back();
        if (!seen.insert(it.o).second || it.depth > kMaxWalkDepth) continue;
        PyRef o = it.o;
        if (o->kind == PyKind::Tensor) {
            found.emplace_back(o, it.path);
            continue;
        }
        std::vector<Item> kids;
        for (size_t k = 0; k < o->items.size(); ++k) kids.push_back({o->items[k], join(it.path, std::to_string(k)), it.depth + 1});
        for (const auto& [k, v] : o->entries) {
            const std::string key = k->kind == PyKind::Str ? k->s : k->kind == PyKind::Int ? std::to_string(k->i)
                                  : k->kind == PyKind::Global ? k->s : std::string("?");
            kids.push_back({v, join(it.path, key), it.depth + 1});
        }
        if (o->state) kids.push_back({o->state, join(it.path, "__state__"), it.depth + 1});
        for (size_t k = kids.size(); k-- > 0;) todo.push_back(std::move(kids[k]));  // keep file order
    }

    // Lightning: only the state dict's storages are CRC-checked (the optimizer state, often twice
    // the size of the weights, is listed but not read).
    std::unordered_set<PyRef> needed;
    if (opt.mode == TorchLoadMode::Lightning && root_->kind == PyKind::Dict)
        if (PyRef sd = root_->get("state_dict"); sd && sd->kind == PyKind::Dict)
            for (const auto& [k, v] : sd->entries)
                if (v->kind == PyKind::Tensor) needed.insert(v->ref->ref ? v->ref->ref : v->ref);
    // Zip: bind every root storage used to its record data/<key> (size and CRC checked once).
    if (format_ == Format::Zip) {
        for (const auto& [t, path] : found) {
            PyRef root = t->ref->ref ? t->ref->ref : t->ref;
            if (storage_data_.count(root)) continue;
            const std::string rec = archive_ + "/data/" + root->s;
            const ZipEntry* e = zip_.find(rec);
            if (!e) fail("%s: storage record %s is missing", nm, rec.c_str());
            uint64_t want = 0;
            if (__builtin_mul_overflow(static_cast<uint64_t>(root->i), elem_size(root->elem), &want) || e->size != want)
                fail("%s: storage record %s holds %llu bytes but %lld %s elements need %llu", nm, rec.c_str(),
                     (unsigned long long)e->size, (long long)root->i, elem_type_name(root->elem), (unsigned long long)want);
            if (opt.verify_crc && (opt.mode != TorchLoadMode::Lightning || needed.count(root))) zip_.verify_crc(*e);
            storage_data_.emplace(root, zip_.data(*e));
        }
    }
    for (const auto& [t, path] : found) all_tensors_.push_back(tensor_of(t, path));

    if (opt.mode == TorchLoadMode::Inspect) return;
    PyRef sd = root_;
    if (opt.mode == TorchLoadMode::Lightning) {
        if (root_->kind != PyKind::Dict) fail("%s: a Lightning checkpoint is a dict, this one is a %s", nm, py_kind_name(root_->kind));
        sd = root_->get("state_dict");
        if (!sd) fail("%s: no \"state_dict\" entry (not a Lightning checkpoint)", nm);
    }
    if (sd->kind != PyKind::Dict)
        fail("%s: the %s is a %s, not a dict of tensors", nm, opt.mode == TorchLoadMode::Lightning ? "state_dict entry" : "checkpoint", py_kind_name(sd->kind));
    for (const auto& [k, v] : sd->entries) {
        if (k->kind != PyKind::Str) fail("%s: state dict key is a %s, not a string", nm, py_kind_name(k->kind));
        if (v->kind == PyKind::Object || v->kind == PyKind::Global)
            fail("%s: state dict entry %s is an object of unknown type %s", nm, k->s.c_str(),
                 v->kind == PyKind::Global ? v->s.c_str() : (v->callable && v->callable->kind == PyKind::Global ? v->callable->s.c_str() : "?"));
        if (v->kind != PyKind::Tensor) continue;  // e.g. a plain number kept beside the tensors
        state_dict_index_.emplace(k->s, state_dict_.size());
        state_dict_.push_back(tensor_of(v, k->s));
    }
}

const CkptTensor* TorchCheckpoint::find(std::string_view name) const {
    auto it = state_dict_index_.find(std::string(name));
    return it == state_dict_index_.end() ? nullptr : &state_dict_[it->second];
}

const CkptTensor& TorchCheckpoint::get(std::string_view name) const {
    const CkptTensor* t = find(name);
    if (!t) fail("%s: no tensor named %.*s in the state dict", path_.c_str(), (int)name.size(), name.data());
    return *t;
}

}  // namespace hg
