#include "formats/pickle.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "formats/byte_reader.h"

namespace hg {

const char* py_kind_name(PyKind k) {
    switch (k) {
        case PyKind::None: return "None";
        case PyKind::Bool: return "bool";
        case PyKind::Int: return "int";
        case PyKind::BigInt: return "int";
        case PyKind::Float: return "float";
        case PyKind::Str: return "str";
        case PyKind::Bytes: return "bytes";
        case PyKind::Tuple: return "tuple";
        case PyKind::List: return "list";
        case PyKind::Dict: return "dict";
        case PyKind::Set: return "set";
        case PyKind::Global: return "global";
        case PyKind::Object: return "object";
        case PyKind::Storage: return "storage";
        case PyKind::Tensor: return "tensor";
    }
    return "?";
}

PyRef PyObj::get(std::string_view key) const {
    if (kind != PyKind::Dict) return nullptr;
    for (const auto& [k, v] : entries)
        if (k->kind == PyKind::Str && k->s == key) return v;
    return nullptr;
}

PyObj* PyArena::make(PyKind k) {
    if (objs_.size() >= max_objects)
        fail("%s: pickle creates more than %zu objects (raise PyArena::max_objects if the file is genuine)", name.c_str(), max_objects);
    objs_.emplace_back();
    objs_.back().kind = k;
    return &objs_.back();
}

namespace {

// --- globals -------------------------------------------------------------------------------

std::optional<ElemType> storage_elem(std::string_view g) {
    if (g.starts_with("torch.cuda.")) g.remove_prefix(11);
    else if (g.starts_with("torch.")) g.remove_prefix(6);
    else return std::nullopt;
    static const std::pair<const char*, ElemType> k[] = {
        {"FloatStorage", ElemType::F32}, {"DoubleStorage", ElemType::F64}, {"HalfStorage", ElemType::F16},
        {"BFloat16Storage", ElemType::BF16}, {"LongStorage", ElemType::I64}, {"IntStorage", ElemType::I32},
        {"ShortStorage", ElemType::I16}, {"CharStorage", ElemType::I8}, {"ByteStorage", ElemType::U8},
        {"BoolStorage", ElemType::BOOL}, {"UntypedStorage", ElemType::U8},
    };
    for (const auto& [n, t] : k)
        if (g == n) return t;
    return std::nullopt;
}

std::optional<ElemType> torch_dtype(std::string_view g) {
    static const std::pair<const char*, ElemType> k[] = {
        {"torch.float32", ElemType::F32}, {"torch.float", ElemType::F32}, {"torch.float64", ElemType::F64},
        {"torch.double", ElemType::F64}, {"torch.float16", ElemType::F16}, {"torch.half", ElemType::F16},
        {"torch.bfloat16", ElemType::BF16}, {"torch.int64", ElemType::I64}, {"torch.long", ElemType::I64},
        {"torch.int32", ElemType::I32}, {"torch.int", ElemType::I32}, {"torch.int16", ElemType::I16},
        {"torch.short", ElemType::I16}, {"torch.int8", ElemType::I8}, {"torch.uint8", ElemType::U8},
        {"torch.bool", ElemType::BOOL}, {"torch.float8_e4m3fn", ElemType::F8_E4M3}, {"torch.float8_e5m2", ElemType::F8_E5M2},
    };
    for (const auto& [n, t] : k)
        if (g == n) return t;
    return std::nullopt;
}

// What torch.save emits for tensors and state dicts (the Strict whitelist).
bool allowed_strict(const std::string& g) {
    static const std::unordered_set<std::string> k = {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2", "torch.Tensor", "torch.nn.parameter.Parameter",
        "_codecs.encode", "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.bytes",
        "__builtin__.set", "__builtin__.frozenset", "__builtin__.bytearray", "__builtin__.bytes",
    };
    return k.count(g) || storage_elem(g) || torch_dtype(g);
}

// Globals only a malicious file references: refused even in Lenient mode (nothing would run
// them anyway; a file naming them is not a checkpoint to load).
bool dangerous(const std::string& module, const std::string& name) {
    static const char* mods[] = {"os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy",
                                 "pickle", "_pickle", "cPickle", "marshal", "ctypes", "code", "codeop", "pty",
                                 "webbrowser", "commands", "multiprocessing", "signal", "pdb", "timeit", "asyncio",
                                 "torch.hub", "_posixsubprocess", "builtins.__import__"};
    for (const char* m : mods) {
        const size_t n = std::strlen(m);
        if (module == m || (module.size() > n && module.compare(0, n, m) == 0 && module[n] == '.')) return true;
    }
    if (module == "builtins" || module == "__builtin__") {
        static const std::unordered_set<std::string> bad = {
            "eval", "exec", "execfile", "compile", "open", "file", "getattr", "setattr", "delattr", "__import__",
            "globals", "locals", "vars", "input", "raw_input", "breakpoint", "exit", "quit", "help", "reload", "apply",
            "memoryview", "classmethod", "staticmethod", "property", "super", "type"};
        return bad.count(name) > 0;
    }
    const std::string full = module + "." + name;
    return full == "numpy.load" || full == "numpy.testing._private.utils.runstring" || full == "torch.load" ||
           full == "torch.jit.load" || full == "torch.serialization.load";
}

// --- the machine ---------------------------------------------------------------------------

struct Unpickler {
    ByteReader r;
    PyArena& A;
    PicklePolicy policy;
    std::vector<PyObj*> stack;
    std::vector<size_t> marks;
    std::unordered_map<uint64_t, PyObj*> memo;
    std::unordered_map<std::string, PyObj*> storages;  // key -> root or view storage
    std::unordered_set<std::string> dict_keys;         // (dict address, key) pairs seen, to refuse duplicates
    std::unordered_set<std::string> opaque_seen;
    PickleResult res;
    uint64_t op_at = 0;
    uint8_t op = 0;

    Unpickler(std::span<const uint8_t> b, PyArena& a, PicklePolicy p)
        : r(b.data(), b.size(), a.name + ": pickle"), A(a), policy(p) {}

    [[noreturn]] void err(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        fail("%s: pickle opcode 0x%02x at offset %llu: %s", A.name.c_str(), op, (unsigned long long)op_at, buf);
    }

    PyObj* pop() {
        if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) err("stack underflow");
        PyObj* o = stack.back();
        stack.pop_back();
        return o;
    }
    PyObj* top() {
        if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) err("stack underflow");
        return stack.back();
    }
    std::vector<PyObj*> pop_mark() {
        if (marks.empty()) err("no MARK on the stack");
        const size_t m = marks.back();
        marks.pop_back();
        std::vector<PyObj*> items(stack.begin() + static_cast<std::ptrdiff_t>(m), stack.end());
        stack.resize(m);
        return items;
    }
    void push(PyObj* o) { stack.push_back(o); }

    PyObj* make(PyKind k) { return A.make(k); }
    PyObj* make_int(int64_t v) {
        PyObj* o = make(PyKind::Int);
        o->i = v;
        return o;
    }
    PyObj* make_str(std::string_view s, PyKind k = PyKind::Str) {
        PyObj* o = make(k);
        o->s = s;
        return o;
    }
    PyObj* tuple(const std::vector<PyObj*>& items) {
        PyObj* o = make(PyKind::Tuple);
        o->items.assign(items.begin(), items.end());
        return o;
    }

    std::string_view line(const char* what) {
        const uint64_t start = r.pos();
        const uint64_t limit = std::min<uint64_t>(r.remaining(), 4096);
        for (uint64_t k = 0; k < limit; ++k)
            if (r.data()[start + k] == '\n') {
                std::string_view s = r.view(k, what);
                r.skip(1, what);
                return s;
            }
        err("%s: no newline within %llu bytes", what, (unsigned long long)limit);
    }
    int64_t parse_int(std::string_view s, const char* what) {
        std::string t(s);
        if (t.empty()) err("%s: empty number", what);
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(t.c_str(), &end, 10);
        if (errno || end != t.c_str() + t.size()) err("%s: invalid or too large integer \"%s\"", what, t.c_str());
        return v;
    }

    // Little-endian two's complement of n bytes: Int when it fits 64 bits, else BigInt.
    PyObj* make_long(const uint8_t* p, uint64_t n) {
        if (n <= 8) {
            uint64_t u = 0;
            for (uint64_t k = 0; k < n; ++k) u |= static_cast<uint64_t>(p[k]) << (8 * k);
            if (n && n < 8 && (p[n - 1] & 0x80)) u |= ~uint64_t{0} << (8 * n);  // sign-extend
            return make_int(static_cast<int64_t>(u));
        }
        PyObj* o = make(PyKind::BigInt);
        o->s.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
        return o;
    }

    // Decimal text of any size -> Int, or BigInt (little-endian two's complement, minimal).
    PyObj* decimal_long(std::string_view s) {
        const bool neg = !s.empty() && s[0] == '-';
        if (neg || (!s.empty() && s[0] == '+')) s.remove_prefix(1);
        if (s.empty()) err("empty LONG");
        std::vector<uint8_t> mag;  // little-endian magnitude
        for (char c : s) {
            if (c < '0' || c > '9') err("invalid LONG digit");
            unsigned carry = static_cast<unsigned>(c - '0');
            for (uint8_t& b : mag) {
                const unsigned v = b * 10u + carry;
                b = static_cast<uint8_t>(v & 0xff);
                carry = v >> 8;
            }
            while (carry) {
                mag.push_back(static_cast<uint8_t>(carry & 0xff));
                carry >>= 8;
            }
        }
        while (!mag.empty() && mag.back() == 0) mag.pop_back();
        mag.push_back(0);  // room for the sign bit
        if (neg) {         // two's complement: invert and add one
            unsigned carry = 1;
            for (uint8_t& b : mag) {
                const unsigned v = static_cast<uint8_t>(~b) + carry;
                b = static_cast<uint8_t>(v & 0xff);
                carry = v >> 8;
            }
        }
        // minimal length: drop redundant sign bytes
        while (mag.size() > 1 && ((mag.back() == 0 && !(mag[mag.size() - 2] & 0x80)) || (mag.back() == 0xff && (mag[mag.size() - 2] & 0x80))))
            mag.pop_back();
        return make_long(mag.data(), mag.size());
    }

    void check_global(const std::string& module, const std::string& name) {
        const std::string full = module + "." + name;
        if (dangerous(module, name)) err("refusing global %s: checkpoints never need it (the file is likely malicious)", full.c_str());
        if (policy == PicklePolicy::Strict) {
            if (!allowed_strict(full))
                err("global %s is not allowed in a state-dict checkpoint (only tensors, storages and OrderedDict are)", full.c_str());
        } else if (!allowed_strict(full) && opaque_seen.insert(full).second) {
            res.opaque_globals.push_back(full);
        }
    }
    PyObj* make_global(const std::string& module, const std::string& name) {
        check_global(module, name);
        PyObj* g = make(PyKind::Global);
        // Python 2 names that protocol-2 pickles use
        g->s = (module == "__builtin__" ? std::string("builtins") : module == "copy_reg" ? std::string("copyreg") : module) + "." + name;
        return g;
    }

    // Dict insertion; duplicate keys of simple types are refused (Python would silently keep
    // the last one, letting a crafted file hide a tensor behind another).
    void set_item(PyObj* d, PyObj* k, PyObj* v) {
        if (d->kind != PyKind::Dict) err("SETITEM on a %s", py_kind_name(d->kind));
        std::string id;
        if (k->kind == PyKind::Str || k->kind == PyKind::Bytes || k->kind == PyKind::BigInt) id = char('0' + int(k->kind)) + k->s;
        else if (k->kind == PyKind::Int || k->kind == PyKind::Bool) id = "i" + std::to_string(k->kind == PyKind::Bool ? int64_t{k->b} : k->i);
        else if (k->kind == PyKind::None) id = "n";
        if (!id.empty()) {
            id.append(reinterpret_cast<const char*>(&d), sizeof d);
            if (!dict_keys.insert(std::move(id)).second)
                err("duplicate dict key %s", k->kind == PyKind::Str ? ("'" + k->s.substr(0, 200) + "'").c_str() : py_kind_name(k->kind));
        }
        d->entries.emplace_back(k, v);
    }

    std::vector<int64_t> int_tuple(PyRef o, const char* what) {
        if (o->kind != PyKind::Tuple && o->kind != PyKind::List) err("%s: expected a tuple of ints, got %s", what, py_kind_name(o->kind));
        if (o->items.size() > 64) err("%s: %zu dims", what, o->items.size());
        std::vector<int64_t> v;
        for (PyRef x : o->items) {
            if (x->kind != PyKind::Int) err("%s: expected ints, got %s", what, py_kind_name(x->kind));
            v.push_back(x->i);
        }
        return v;
    }

    int64_t storage_numel(PyRef st) { return st->i; }

    // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
    // torch._utils._rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])
    PyObj* rebuild_tensor(PyRef args, bool v3) {
        const size_t n = args->items.size();
        if (v3 ? (n != 7 && n != 8) : (n != 6 && n != 7)) err("_rebuild_tensor_v%d takes %d or %d arguments, got %zu", v3 ? 3 : 2, v3 ? 7 : 6, v3 ? 8 : 7, n);
        PyRef st = args->items[0];
        if (st->kind != PyKind::Storage) err("tensor storage is a %s, not a persistent storage", py_kind_name(st->kind));
        if (args->items[1]->kind != PyKind::Int) err("tensor storage offset is a %s", py_kind_name(args->items[1]->kind));
        PyObj* t = make(PyKind::Tensor);
        t->ref = st;
        t->i = args->items[1]->i;
        t->shape = int_tuple(args->items[2], "tensor size");
        t->stride = int_tuple(args->items[3], "tensor stride");
        PyRef rg = args->items[4];
        if (rg->kind != PyKind::Bool) err("requires_grad is a %s", py_kind_name(rg->kind));
        t->b = rg->b;
        int64_t elems = storage_numel(st);
        t->elem = st->elem;
        if (v3) {
            PyRef dt = args->items[6];
            const auto e = dt->kind == PyKind::Global ? torch_dtype(dt->s) : std::nullopt;
            if (!e) err("_rebuild_tensor_v3: unknown dtype %s", dt->kind == PyKind::Global ? dt->s.c_str() : py_kind_name(dt->kind));
            const int64_t es = static_cast<int64_t>(elem_size(*e));
            int64_t bytes = 0;
            if (__builtin_mul_overflow(elems, static_cast<int64_t>(elem_size(st->elem)), &bytes)) err("storage size overflows");
            if (bytes % es) err("storage of %lld bytes is not a whole number of %s elements", (long long)bytes, elem_type_name(*e));
            elems = bytes / es;
            t->elem = *e;
        }
        try {
            check_strided_extent(t->shape, t->stride, t->i, elems, "tensor");
        } catch (const Error& e) {
            err("%s", e.what());
        }
        return t;
    }

    // Bytes from _codecs.encode(str, 'latin1'): each code point (<= 255) is one byte.
    PyObj* latin1(PyRef s, PyRef enc) {
        if (s->kind != PyKind::Str || enc->kind != PyKind::Str) err("_codecs.encode expects (str, str)");
        if (enc->s != "latin1" && enc->s != "latin-1" && enc->s != "iso-8859-1" && enc->s != "ISO-8859-1")
            err("_codecs.encode with encoding '%s' (only latin1 is used for bytes)", enc->s.substr(0, 40).c_str());
        PyObj* o = make(PyKind::Bytes);
        const std::string& u = s->s;
        for (size_t k = 0; k < u.size();) {
            const unsigned char c = static_cast<unsigned char>(u[k]);
            if (c < 0x80) {
                o->s += static_cast<char>(c);
                k += 1;
            } else if ((c & 0xe0) == 0xc0 && k + 1 < u.size() && (static_cast<unsigned char>(u[k + 1]) & 0xc0) == 0x80) {
                const unsigned cp = ((c & 0x1fu) << 6) | (static_cast<unsigned char>(u[k + 1]) & 0x3fu);
                if (cp > 0xff) err("_codecs.encode: code point U+%04X is not latin1", cp);
                o->s += static_cast<char>(cp);
                k += 2;
            } else {
                err("_codecs.encode: string is not latin1-encodable UTF-8");
            }
        }
        return o;
    }

    PyObj* reduce(PyObj* callable, PyObj* args) {
        if (args->kind != PyKind::Tuple) err("REDUCE arguments are a %s, not a tuple", py_kind_name(args->kind));
        if (callable->kind != PyKind::Global) {
            if (policy == PicklePolicy::Strict) err("REDUCE on a %s", py_kind_name(callable->kind));
            PyObj* o = make(PyKind::Object);
            o->callable = callable;
            o->items.assign(args->items.begin(), args->items.end());
            return o;
        }
        const std::string& g = callable->s;
        const auto& a = args->items;
        if (g == "collections.OrderedDict") {
            PyObj* d = make(PyKind::Dict);
            if (a.size() > 1) err("OrderedDict takes at most one argument");
            if (a.size() == 1) {
                if (a[0]->kind != PyKind::List && a[0]->kind != PyKind::Tuple) err("OrderedDict argument is a %s", py_kind_name(a[0]->kind));
                for (PyRef kv : a[0]->items) {
                    if (kv->kind != PyKind::Tuple || kv->items.size() != 2) err("OrderedDict items must be pairs");
                    set_item(d, const_cast<PyObj*>(kv->items[0]), const_cast<PyObj*>(kv->items[1]));
                }
            }
            return d;
        }
        if (g == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(args, false);
        if (g == "torch._utils._rebuild_tensor_v3") return rebuild_tensor(args, true);
        if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
            if (a.size() != (g.ends_with("state") ? 4u : 3u)) err("%s: wrong number of arguments (%zu)", g.c_str(), a.size());
            if (a[0]->kind != PyKind::Tensor) err("%s: data is a %s, not a tensor", g.c_str(), py_kind_name(a[0]->kind));
            return const_cast<PyObj*>(a[0]);
        }
        if (g == "torch._tensor._rebuild_from_type_v2") {
            // (func, type, args, state): a tensor (sub)class rebuilt by func(*args)
            if (a.size() != 4) err("_rebuild_from_type_v2 takes 4 arguments, got %zu", a.size());
            if (a[0]->kind != PyKind::Global || a[1]->kind != PyKind::Global || a[2]->kind != PyKind::Tuple)
                err("_rebuild_from_type_v2: malformed arguments");
            if (a[1]->s != "torch.Tensor" && a[1]->s != "torch.nn.parameter.Parameter")
                err("_rebuild_from_type_v2: tensor subclass %s is not supported", a[1]->s.c_str());
            if (a[0]->s != "torch._utils._rebuild_tensor_v2" && a[0]->s != "torch._utils._rebuild_tensor_v3" &&
                a[0]->s != "torch._utils._rebuild_parameter")
                err("_rebuild_from_type_v2: rebuild function %s is not supported", a[0]->s.c_str());
            return reduce(const_cast<PyObj*>(a[0]), const_cast<PyObj*>(a[2]));
        }
        if (g == "_codecs.encode") {
            if (a.size() != 2) err("_codecs.encode takes 2 arguments, got %zu", a.size());
            return latin1(a[0], a[1]);
        }
        if (g == "builtins.set" || g == "builtins.frozenset") {
            PyObj* s = make(PyKind::Set);
            if (a.size() > 1) err("%s takes at most one argument", g.c_str());
            if (a.size() == 1) {
                if (a[0]->kind != PyKind::List && a[0]->kind != PyKind::Tuple && a[0]->kind != PyKind::Set)
                    err("%s argument is a %s", g.c_str(), py_kind_name(a[0]->kind));
                s->items = a[0]->items;
            }
            return s;
        }
        if (g == "builtins.bytearray" || g == "builtins.bytes") {
            if (a.empty()) return make(PyKind::Bytes);
            if (a.size() == 1 && a[0]->kind == PyKind::Bytes) return make_str(a[0]->s, PyKind::Bytes);
            if (a.size() == 2) return latin1(a[0], a[1]);
            err("%s: unsupported arguments", g.c_str());
        }
        if (policy == PicklePolicy::Strict) err("%s cannot be called in a state-dict checkpoint", g.c_str());
        PyObj* o = make(PyKind::Object);
        o->callable = callable;
        o->items.assign(a.begin(), a.end());
        return o;
    }

    // ('storage', torch.XStorage, key, location, numel[, view_metadata])
    PyObj* persistent_load(PyObj* pid) {
        if (pid->kind != PyKind::Tuple || pid->items.size() < 5 || pid->items.size() > 6 || pid->items[0]->kind != PyKind::Str ||
            pid->items[0]->s != "storage")
            err("persistent id is not a ('storage', type, key, location, numel) tuple");
        const auto& a = pid->items;
        if (a[1]->kind != PyKind::Global) err("storage type is a %s", py_kind_name(a[1]->kind));
        const auto et = storage_elem(a[1]->s);
        if (!et) err("unsupported storage type %s", a[1]->s.c_str());
        if (a[2]->kind != PyKind::Str) err("storage key is a %s", py_kind_name(a[2]->kind));
        if (a[3]->kind != PyKind::Str) err("storage location is a %s", py_kind_name(a[3]->kind));
        if (a[4]->kind != PyKind::Int || a[4]->i < 0) err("storage size is not a non-negative int");
        const std::string& key = a[2]->s;
        PyObj* root;
        if (auto it = storages.find(key); it != storages.end()) {
            root = it->second;
            if (root->elem != *et || root->i != a[4]->i || root->ref)
                err("storage %s is referenced with different types or sizes", key.substr(0, 100).c_str());
        } else {
            root = make(PyKind::Storage);
            root->s = key;
            root->callable = a[1];
            root->elem = *et;
            root->i = a[4]->i;
            storages[key] = root;
        }
        if (a.size() == 5 || a[5]->kind == PyKind::None) return root;
        // legacy view: (view_key, offset, view_size) into the root storage
        PyRef vm = a[5];
        if (vm->kind != PyKind::Tuple || vm->items.size() != 3 || vm->items[0]->kind != PyKind::Str ||
            vm->items[1]->kind != PyKind::Int || vm->items[2]->kind != PyKind::Int)
            err("storage view metadata is not (key, offset, size)");
        const int64_t off = vm->items[1]->i, n = vm->items[2]->i;
        if (off < 0 || n < 0 || off > root->i || n > root->i - off)
            err("storage view [%lld, +%lld) outside storage %s of %lld elements", (long long)off, (long long)n, key.substr(0, 100).c_str(), (long long)root->i);
        const std::string& vkey = vm->items[0]->s;
        if (auto it = storages.find(vkey); it != storages.end()) {
            PyObj* v = it->second;
            if (v->ref != root || v->view_offset != off || v->i != n) err("storage view %s is redefined", vkey.substr(0, 100).c_str());
            return v;
        }
        PyObj* v = make(PyKind::Storage);
        v->s = vkey;
        v->callable = a[1];
        v->elem = *et;
        v->i = n;
        v->ref = root;
        v->view_offset = off;
        storages[vkey] = v;
        return v;
    }

    void run() {
        for (;;) {
            op_at = r.pos();
            op = r.u8("opcode");
            switch (op) {
                case 0x80: {  // PROTO
                    const uint8_t v = r.u8("protocol");
                    if (v > 5) err("unsupported pickle protocol %u", v);
                    break;
                }
                case 0x95: r.u64("frame size"); break;  // FRAME: a buffering hint
                case '.': {  // STOP
                    res.root = pop();
                    res.consumed = r.pos();
                    return;
                }
                case '(': marks.push_back(stack.size()); break;
                case '0': pop(); break;
                case '1': pop_mark(); break;
                case '2': push(top()); break;
                case 'N': push(make(PyKind::None)); break;
                case 0x88: case 0x89: {
                    PyObj* o = make(PyKind::Bool);
                    o->b = op == 0x88;
                    push(o);
                    break;
                }
                case 'J': push(make_int(r.i32("BININT"))); break;
                case 'K': push(make_int(r.u8("BININT1"))); break;
                case 'M': push(make_int(r.u16("BININT2"))); break;
                case 0x8a: {  // LONG1
                    const uint8_t n = r.u8("LONG1 length");
                    push(make_long(r.take(n, "LONG1"), n));
                    break;
                }
                case 0x8b: {  // LONG4
                    const int32_t n = r.i32("LONG4 length");
                    if (n < 0) err("negative LONG4 length");
                    push(make_long(r.take(static_cast<uint64_t>(n), "LONG4"), static_cast<uint64_t>(n)));
                    break;
                }
                case 'I': {  // INT (text): I01 / I00 are True / False
                    const std::string_view s = line("INT");
                    if (s == "01" || s == "00") {
                        PyObj* o = make(PyKind::Bool);
                        o->b = s == "01";
                        push(o);
                    } else {
                        push(make_int(parse_int(s, "INT")));
                    }
                    break;
                }
                case 'L': {  // LONG (text): 123L, any size
                    std::string_view s = line("LONG");
                    if (!s.empty() && s.back() == 'L') s.remove_suffix(1);
                    push(decimal_long(s));
                    break;
                }
                case 'G': {  // BINFLOAT: big-endian IEEE double
                    const uint8_t* p = r.take(8, "BINFLOAT");
                    uint64_t u = 0;
                    for (int k = 0; k < 8; ++k) u = (u << 8) | p[k];
                    PyObj* o = make(PyKind::Float);
                    std::memcpy(&o->f, &u, 8);
                    push(o);
                    break;
                }
                case 'F': {  // FLOAT (text)
                    const std::string t(line("FLOAT"));
                    char* end = nullptr;
                    const double v = std::strtod(t.c_str(), &end);
                    if (t.empty() || end != t.c_str() + t.size()) err("invalid FLOAT \"%s\"", t.substr(0, 40).c_str());
                    PyObj* o = make(PyKind::Float);
                    o->f = v;
                    push(o);
                    break;
                }
                case 'X': { const uint32_t n = r.u32("BINUNICODE length"); push(make_str(r.view(n, "BINUNICODE"))); break; }
                case 0x8c: { const uint8_t n = r.u8("SHORT_BINUNICODE length"); push(make_str(r.view(n, "SHORT_BINUNICODE"))); break; }
                case 0x8d: { const uint64_t n = r.u64("BINUNICODE8 length"); push(make_str(r.view(n, "BINUNICODE8"))); break; }
                case 'T': {
                    const int32_t n = r.i32("BINSTRING length");
                    if (n < 0) err("negative BINSTRING length");
                    push(make_str(r.view(static_cast<uint64_t>(n), "BINSTRING")));
                    break;
                }
                case 'U': { const uint8_t n = r.u8("SHORT_BINSTRING length"); push(make_str(r.view(n, "SHORT_BINSTRING"))); break; }
                case 'B': { const uint32_t n = r.u32("BINBYTES length"); push(make_str(r.view(n, "BINBYTES"), PyKind::Bytes)); break; }
                case 'C': { const uint8_t n = r.u8("SHORT_BINBYTES length"); push(make_str(r.view(n, "SHORT_BINBYTES"), PyKind::Bytes)); break; }
                case 0x8e: case 0x96: {  // BINBYTES8, BYTEARRAY8
                    const uint64_t n = r.u64("BINBYTES8 length");
                    push(make_str(r.view(n, "BINBYTES8"), PyKind::Bytes));
                    break;
                }
                case ')': push(make(PyKind::Tuple)); break;
                case 't': push(tuple(pop_mark())); break;
                case 0x85: { PyObj* a = pop(); push(tuple({a})); break; }
                case 0x86: { PyObj* b = pop(); PyObj* a = pop(); push(tuple({a, b})); break; }
                case 0x87: { PyObj* c = pop(); PyObj* b = pop(); PyObj* a = pop(); push(tuple({a, b, c})); break; }
                case ']': push(make(PyKind::List)); break;
                case 'l': {
                    PyObj* l = make(PyKind::List);
                    for (PyObj* x : pop_mark()) l->items.push_back(x);
                    push(l);
                    break;
                }
                case 'a': {
                    PyObj* x = pop();
                    PyObj* l = top();
                    if (l->kind != PyKind::List) err("APPEND to a %s", py_kind_name(l->kind));
                    l->items.push_back(x);
                    break;
                }
                case 'e': {
                    std::vector<PyObj*> xs = pop_mark();
                    PyObj* l = top();
                    if (l->kind != PyKind::List) err("APPENDS to a %s", py_kind_name(l->kind));
                    for (PyObj* x : xs) l->items.push_back(x);
                    break;
                }
                case '}': push(make(PyKind::Dict)); break;
                case 'd': {
                    std::vector<PyObj*> xs = pop_mark();
                    if (xs.size() % 2) err("DICT with an odd number of items");
                    PyObj* d = make(PyKind::Dict);
                    for (size_t k = 0; k < xs.size(); k += 2) set_item(d, xs[k], xs[k + 1]);
                    push(d);
                    break;
                }
                case 's': {
                    PyObj* v = pop();
                    PyObj* k = pop();
                    set_item(top(), k, v);
                    break;
                }
                case 'u': {
                    std::vector<PyObj*> xs = pop_mark();
                    if (xs.size() % 2) err("SETITEMS with an odd number of items");
                    PyObj* d = top();
                    for (size_t k = 0; k < xs.size(); k += 2) set_item(d, xs[k], xs[k + 1]);
                    break;
                }
                case 0x8f: push(make(PyKind::Set)); break;
                case 0x90: {  // ADDITEMS
                    std::vector<PyObj*> xs = pop_mark();
                    PyObj* s = top();
                    if (s->kind != PyKind::Set) err("ADDITEMS to a %s", py_kind_name(s->kind));
                    for (PyObj* x : xs) s->items.push_back(x);
                    break;
                }
                case 0x91: {  // FROZENSET
                    PyObj* s = make(PyKind::Set);
                    for (PyObj* x : pop_mark()) s->items.push_back(x);
                    push(s);
                    break;
                }
                case 'p': {
                    const uint64_t idx = static_cast<uint64_t>(parse_int(line("PUT"), "PUT"));
                    memo[idx] = top();
                    break;
                }
                case 'q': memo[r.u8("BINPUT")] = top(); break;
                case 'r': memo[r.u32("LONG_BINPUT")] = top(); break;
                case 0x94: memo[memo.size()] = top(); break;  // MEMOIZE
                case 'g': case 'h': case 'j': {
                    const uint64_t idx = op == 'g' ? static_cast<uint64_t>(parse_int(line("GET"), "GET"))
                                       : op == 'h' ? r.u8("BINGET") : r.u32("LONG_BINGET");
                    auto it = memo.find(idx);
                    if (it == memo.end()) err("memo key %llu not defined", (unsigned long long)idx);
                    push(it->second);
                    break;
                }
                case 'c': {  // GLOBAL module\nname\n
                    const std::string module(line("GLOBAL module"));
                    const std::string name(line("GLOBAL name"));
                    push(make_global(module, name));
                    break;
                }
                case 0x93: {  // STACK_GLOBAL
                    PyObj* name = pop();
                    PyObj* module = pop();
                    if (name->kind != PyKind::Str || module->kind != PyKind::Str) err("STACK_GLOBAL needs two strings");
                    push(make_global(module->s, name->s));
                    break;
                }
                case 'R': {  // REDUCE
                    PyObj* args = pop();
                    PyObj* callable = pop();
                    push(reduce(callable, args));
                    break;
                }
                case 0x81: case 0x92: {  // NEWOBJ cls args / NEWOBJ_EX cls args kwargs
                    PyObj* kwargs = op == 0x92 ? pop() : nullptr;
                    PyObj* args = pop();
                    PyObj* cls = pop();
                    if (args->kind != PyKind::Tuple) err("NEWOBJ arguments are a %s", py_kind_name(args->kind));
                    const std::string cname = cls->kind == PyKind::Global ? cls->s : py_kind_name(cls->kind);
                    if (policy == PicklePolicy::Strict) err("NEWOBJ of %s is not allowed in a state-dict checkpoint", cname.c_str());
                    if (cls->kind != PyKind::Global) err("NEWOBJ of a %s", py_kind_name(cls->kind));
                    PyObj* o = make(PyKind::Object);
                    o->callable = cls;
                    o->items.assign(args->items.begin(), args->items.end());
                    o->state = kwargs;
                    push(o);
                    break;
                }
                case 'b': {  // BUILD obj state: sets state, never calls __setstate__
                    PyObj* state = pop();
                    PyObj* obj = top();
                    if (obj->kind == PyKind::Dict || obj->kind == PyKind::Object) {
                        obj->state = state;
                    } else if (obj->kind == PyKind::Tensor) {
                        // tensors carry no Python state in a state dict; tolerate an empty one
                        if (!(state->kind == PyKind::None || (state->kind == PyKind::Dict && state->entries.empty()) ||
                              (state->kind == PyKind::Tuple && state->items.empty())))
                            err("BUILD with state on a tensor");
                    } else {
                        err("BUILD on a %s", py_kind_name(obj->kind));
                    }
                    break;
                }
                case 'Q': push(persistent_load(pop())); break;  // BINPERSID
                case 'P': err("PERSID (text persistent id) is not used by torch.save");
                case 'S': case 'V': err("protocol-0 quoted STRING/UNICODE opcodes are not supported");
                case 'i': case 'o': err("INST/OBJ (protocol-0 object creation) is not allowed");
                case 0x82: case 0x83: case 0x84: err("EXT opcodes (copyreg extension registry) are not allowed");
                case 0x97: case 0x98: err("out-of-band buffers are not supported");
                default: err("unknown opcode");
            }
        }
    }
};

}  // namespace

PickleResult unpickle(std::span<const uint8_t> bytes, PyArena& arena, PicklePolicy policy) {
    Unpickler u(bytes, arena, policy);
    u.run();  // a pickle cut short fails in a bounded read ("truncated")
    return std::move(u.res);
}

// --- repr ----------------------------------------------------------------------------------

namespace {
void repr_into(std::string& out, PyRef o, int depth, size_t max_items) {
    if (out.size() > 4096) {
        out += "...";
        return;
    }
    auto seq = [&](const std::vector<PyRef>& items, const char* open, const char* close) {
        out += open;
        if (depth <= 0 && !items.empty()) {
            out += "...";
        } else {
            for (size_t k = 0; k < items.size() && k < max_items; ++k) {
                if (k) out += ", ";
                repr_into(out, items[k], depth - 1, max_items);
            }
            if (items.size() > max_items) out += ", ... (" + std::to_string(items.size()) + " items)";
        }
        out += close;
    };
    switch (o->kind) {
        case PyKind::None: out += "None"; break;
        case PyKind::Bool: out += o->b ? "True" : "False"; break;
        case PyKind::Int: out += std::to_string(o->i); break;
        case PyKind::BigInt: out += "<int of " + std::to_string(o->s.size()) + " bytes>"; break;
        case PyKind::Float: {
            char b[40];
            std::snprintf(b, sizeof b, "%.17g", o->f);
            out += b;
            break;
        }
        case PyKind::Str: case PyKind::Bytes: {
            out += o->kind == PyKind::Bytes ? "b'" : "'";
            for (size_t k = 0; k < o->s.size() && k < 200; ++k) {
                const unsigned char c = static_cast<unsigned char>(o->s[k]);
                if (c == '\'' || c == '\\') { out += '\\'; out += static_cast<char>(c); }
                else if (c < 0x20 || c == 0x7f || (o->kind == PyKind::Bytes && c >= 0x80)) {
                    char b[8];
                    std::snprintf(b, sizeof b, "\\x%02x", c);
                    out += b;
                } else out += static_cast<char>(c);
            }
            if (o->s.size() > 200) out += "...";
            out += "'";
            break;
        }
        case PyKind::Tuple: seq(o->items, "(", o->items.size() == 1 ? ",)" : ")"); break;
        case PyKind::List: seq(o->items, "[", "]"); break;
        case PyKind::Set: seq(o->items, "{", "}"); break;
        case PyKind::Dict: {
            out += "{";
            if (depth <= 0 && !o->entries.empty()) {
                out += "...";
            } else {
                for (size_t k = 0; k < o->entries.size() && k < max_items; ++k) {
                    if (k) out += ", ";
                    repr_into(out, o->entries[k].first, depth - 1, max_items);
                    out += ": ";
                    repr_into(out, o->entries[k].second, depth - 1, max_items);
                }
                if (o->entries.size() > max_items) out += ", ... (" + std::to_string(o->entries.size()) + " items)";
            }
            out += "}";
            break;
        }
        case PyKind::Global: out += "<" + o->s + ">"; break;
        case PyKind::Object:
            out += "<" + (o->callable && o->callable->kind == PyKind::Global ? o->callable->s : std::string("object"));
            seq(o->items, "(", ")");
            if (o->state) out += " +state";
            out += ">";
            break;
        case PyKind::Storage: out += std::string("storage(") + elem_type_name(o->elem) + ", " + std::to_string(o->i) + ")"; break;
        case PyKind::Tensor: {
            out += std::string("tensor(") + elem_type_name(o->elem) + ", [";
            for (size_t k = 0; k < o->shape.size(); ++k) out += (k ? ", " : "") + std::to_string(o->shape[k]);
            out += "])";
            break;
        }
    }
}
}  // namespace

std::string py_repr(PyRef o, int max_depth, size_t max_items) {
    std::string out;
    repr_into(out, o, max_depth, max_items);
    return out;
}

}  // namespace hg
