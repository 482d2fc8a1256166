// The restricted unpickler: plain-data pickles of protocols 0-5 written by Python's pickle
// must give the same value tree as Python's objects (canonical text computed by
// gen_formats.py from the objects themselves); code-execution pickles (made with a custom
// __reduce__, never loaded in Python) and malformed programs must give hg::Error; nothing is
// ever called, and memory stays bounded.
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/pickle.h"
#include "test_util.h"

using hg::PicklePolicy;
using hg::PyKind;
using hg::PyRef;
using json = nlohmann::json;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

fs::path pk_fixture(const std::string& name) { return hgtest::fixture("formats/pickle/" + name); }

std::string hex(std::string_view s) {
    static const char* d = "0123456789abcdef";
    std::string o;
    for (unsigned char c : s) {
        o += d[c >> 4];
        o += d[c & 15];
    }
    return o;
}

// Same canonical text as canon() in gen_formats.py.
std::string canon(PyRef o, std::vector<PyRef>& stack) {
    if (std::find(stack.begin(), stack.end(), o) != stack.end()) return "<rec>";
    auto seq = [&](const char* open, const char* close) {
        stack.push_back(o);
        std::string s = open;
        for (size_t i = 0; i < o->items.size(); ++i) s += (i ? "," : "") + canon(o->items[i], stack);
        stack.pop_back();
        return s + close;
    };
    switch (o->kind) {
        case PyKind::None: return "None";
        case PyKind::Bool: return o->b ? "True" : "False";
        case PyKind::Int: return "int:" + std::to_string(o->i);
        case PyKind::BigInt: return "bigint:" + hex(o->s);
        case PyKind::Float: {
            uint64_t u;
            std::memcpy(&u, &o->f, 8);
            std::string be(8, '\0');
            for (int k = 0; k < 8; ++k) be[k] = static_cast<char>(u >> (56 - 8 * k));
            return "float:" + hex(be);
        }
        case PyKind::Str: return "str:" + hex(o->s);
        case PyKind::Bytes: return "bytes:" + hex(o->s);
        case PyKind::Tuple: return seq("(", ")");
        case PyKind::List: return seq("[", "]");
        case PyKind::Set: return seq("set{", "}");
        case PyKind::Dict: {
            stack.push_back(o);
            std::string s = "{";
            for (size_t i = 0; i < o->entries.size(); ++i)
                s += (i ? "," : "") + canon(o->entries[i].first, stack) + ":" + canon(o->entries[i].second, stack);
            stack.pop_back();
            return s + "}";
        }
        default: return std::string("<") + hg::py_kind_name(o->kind) + ">";
    }
}

std::string run_error(const std::vector<uint8_t>& prog, PicklePolicy p = PicklePolicy::Lenient, size_t max_objects = 1 << 21) {
    hg::PyArena a;
    a.name = "prog.pkl";
    a.max_objects = max_objects;
    try {
        hg::unpickle(prog, a, p);
        return "";
    } catch (const hg::Error& e) {
        return e.what();
    }
}

// Programs with embedded NULs: from a literal (its full length) or a std::string.
template <size_t N>
std::vector<uint8_t> P(const char (&s)[N]) { return {s, s + N - 1}; }
std::vector<uint8_t> P(const std::string& s) { return {s.begin(), s.end()}; }

#define EXPECT_PICKLE_ERROR(prog, substr, ...)                                  \
    do {                                                                        \
        const std::string msg_ = run_error(prog, ##__VA_ARGS__);                \
        EXPECT_NE(msg_, "") << "ran without error";                            \
        EXPECT_NE(msg_.find(substr), std::string::npos) << "message: " << msg_; \
    } while (0)

}  // namespace

TEST(Pickle, PlainDataOfEveryProtocolLikePython) {
    const json ref = [] { std::ifstream f(pk_fixture("expected.json")); return json::parse(f); }();
    ASSERT_EQ(ref.size(), 6u);
    for (const auto& [name, want] : ref.items()) {
        SCOPED_TRACE(name);
        const auto bytes = hgtest::read_file(pk_fixture(name));
        for (PicklePolicy p : {PicklePolicy::Strict, PicklePolicy::Lenient}) {
            hg::PyArena a;
            a.name = name;
            const hg::PickleResult r = hg::unpickle(bytes, a, p);
            EXPECT_EQ(r.consumed, bytes.size());
            EXPECT_TRUE(r.opaque_globals.empty());
            std::vector<PyRef> stack;
            EXPECT_EQ(canon(r.root, stack), want.get<std::string>());
        }
    }
}

TEST(Pickle, SharedAndRecursiveReferencesAreOneObject) {
    const auto bytes = hgtest::read_file(pk_fixture("data_p2.pkl"));
    hg::PyArena a;
    const auto r = hg::unpickle(bytes, a, PicklePolicy::Strict);
    const hg::PyObj* shared = r.root->get("shared");
    ASSERT_EQ(shared->items.size(), 2u);
    EXPECT_EQ(shared->items[0], shared->items[1]);  // memo: the same list twice
    const hg::PyObj* rec = r.root->get("rec");
    ASSERT_EQ(rec->items.size(), 2u);
    EXPECT_EQ(rec->items[1], rec);                 // a list that contains itself
    EXPECT_NE(hg::py_repr(r.root, 50).size(), 0u); // repr terminates (depth-limited)
}

TEST(Pickle, RefusesCodeExecution) {
    const std::pair<const char*, const char*> cases[] = {
        {"os_system_p2.pkl", "posix.system"},  // GLOBAL
        {"os_system_p4.pkl", "posix.system"},  // STACK_GLOBAL
        {"eval.pkl", "__builtin__.eval"},
        {"getattr.pkl", "__builtin__.getattr"},
    };
    for (const auto& [name, global] : cases)
        for (PicklePolicy p : {PicklePolicy::Strict, PicklePolicy::Lenient}) {
            const std::string err = run_error(hgtest::read_file(pk_fixture(name)), p);
            EXPECT_NE(err.find(global), std::string::npos) << name << ": " << err;
        }
    // hand-written: subprocess, sys, importlib, builtins.__import__ via STACK_GLOBAL
    EXPECT_PICKLE_ERROR(P("csubprocess\nPopen\n."), "subprocess.Popen");
    EXPECT_PICKLE_ERROR(P("cos.path\njoin\n."), "os.path.join");
    EXPECT_PICKLE_ERROR(P("\x8c\x08" "builtins\x8c\x0a" "__import__\x93."), "builtins.__import__");
    EXPECT_PICKLE_ERROR(P("cnumpy.testing._private.utils\nruntring\n."), "not allowed", PicklePolicy::Strict);
}

TEST(Pickle, ArbitraryObjectsAreInertInLenientMode) {
    const auto bytes = hgtest::read_file(pk_fixture("custom.pkl"));
    EXPECT_NE(run_error(bytes, PicklePolicy::Strict).find("global __main__.Custom is not allowed"), std::string::npos);
    hg::PyArena a;
    const auto r = hg::unpickle(bytes, a, PicklePolicy::Lenient);
    EXPECT_EQ(r.opaque_globals, std::vector<std::string>{"__main__.Custom"});
    ASSERT_EQ(r.root->kind, PyKind::Object);  // NEWOBJ: recorded, not constructed
    EXPECT_EQ(r.root->callable->s, "__main__.Custom");
    ASSERT_NE(r.root->state, nullptr);          // BUILD: recorded, __setstate__ never called
    EXPECT_EQ(r.root->state->get("lr")->f, 0.5);
    EXPECT_EQ(r.root->state->get("name")->s, "adam");
}

TEST(Pickle, RefusesMalformedPrograms) {
    EXPECT_PICKLE_ERROR(P(""), "truncated");
    EXPECT_PICKLE_ERROR(P("\x80\x02]"), "truncated");          // no STOP
    EXPECT_PICKLE_ERROR(P("\x80\x06]."), "protocol 6");
    EXPECT_PICKLE_ERROR(P("."), "stack underflow");
    EXPECT_PICKLE_ERROR(P("a."), "stack underflow");
    EXPECT_PICKLE_ERROR(P("t."), "no MARK");
    EXPECT_PICKLE_ERROR(P("h\x05."), "memo key 5");
    EXPECT_PICKLE_ERROR(P("j\xff\xff\xff\xff."), "memo key 4294967295");
    EXPECT_PICKLE_ERROR(P("}(K\x01u."), "odd number");
    EXPECT_PICKLE_ERROR(P("}(K\x01K\x02K\x01K\x03u."), "duplicate dict key");
    EXPECT_PICKLE_ERROR(P("}X\x01\x00\x00\x00" "aK\x01sX\x01\x00\x00\x00" "aK\x02s."), "duplicate dict key 'a'");
    EXPECT_PICKLE_ERROR(P(")K\x01" "a."), "APPEND to a tuple");
    EXPECT_PICKLE_ERROR(P("](K\x01u."), "SETITEMS");
    EXPECT_PICKLE_ERROR(P("X\xff\xff\xff\x7f"), "truncated");  // string length beyond the data
    EXPECT_PICKLE_ERROR(P("\x8d\xff\xff\xff\xff\xff\xff\xff\xff"), "truncated");
    EXPECT_PICKLE_ERROR(P("\x8b\xff\xff\xff\xff"), "negative LONG4");
    EXPECT_PICKLE_ERROR(P("I99999999999999999999999\n."), "too large");
    EXPECT_PICKLE_ERROR(P("Fnotanumber\n."), "invalid FLOAT");
    EXPECT_PICKLE_ERROR(P("I12"), "no newline");
    EXPECT_PICKLE_ERROR(P("S'abc'\n."), "STRING");
    EXPECT_PICKLE_ERROR(P("(i__main__\nX\n."), "INST");
    EXPECT_PICKLE_ERROR(P("\x82\x01."), "EXT");
    EXPECT_PICKLE_ERROR(P("\x97."), "out-of-band");
    EXPECT_PICKLE_ERROR(P("\xff."), "unknown opcode");
    EXPECT_PICKLE_ERROR(P("Pabc\n."), "PERSID");
    EXPECT_PICKLE_ERROR(P("K\x01)R."), "REDUCE on a int", PicklePolicy::Strict);
    EXPECT_PICKLE_ERROR(P("ccollections\nOrderedDict\nK\x01R."), "not a tuple");
    EXPECT_PICKLE_ERROR(P("K\x01}b."), "BUILD on a int");
    EXPECT_PICKLE_ERROR(P("ccollections\nOrderedDict\n)\x81."), "NEWOBJ of collections.OrderedDict", PicklePolicy::Strict);
    EXPECT_PICKLE_ERROR(P("c_codecs\nencode\nX\x02\x00\x00\x00\xc4\x80X\x06\x00\x00\x00latin1\x86R."), "not latin1");
    EXPECT_PICKLE_ERROR(P("c_codecs\nencode\nX\x01\x00\x00\x00" "aX\x05\x00\x00\x00" "utf-8\x86R."), "only latin1");
    EXPECT_PICKLE_ERROR(P("ctorch\nFloatStorage\nK\x01\x85R."), "cannot be called", PicklePolicy::Strict);
    // the GLOBAL line is bounded
    EXPECT_PICKLE_ERROR(P("c" + std::string(5000, 'a') + "\nb\n."), "no newline");
    // valid programs
    EXPECT_EQ(run_error(P("\x80\x02}q\x00(X\x01\x00\x00\x00" "aK\x01X\x01\x00\x00\x00" "bh\x00u.")), "");  // a dict holding itself
    EXPECT_EQ(run_error(P("I01\nI00\nI-5\nL-170141183460469231731687303715884105728L\n\x86\x86.")), "");
    EXPECT_EQ(run_error(P("(K\x01K\x02\x31N.")), "");  // POP_MARK
}

TEST(Pickle, TorchStoragesAndTensors) {
    // ('storage', torch.FloatStorage, '0', 'cpu', 6) as the persistent id, then _rebuild_tensor_v2
    auto prog = [](const std::string& storage_args, const std::string& tensor_args) {
        std::string p = "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(";
        p += "(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpu"s + storage_args + "tQ";
        p += tensor_args + "tR.";
        return P(p);
    };
    const std::string six = "K\x06"s;
    // offset 1, size (2, 2), stride (2, 1): last element index 1 + 2 + 1 = 4 < 6
    const std::string ok = "K\x01K\x02K\x02\x86K\x02K\x01\x86\x89}"s;
    hg::PyArena a;
    const auto r = hg::unpickle(prog(six, ok), a, PicklePolicy::Strict);
    ASSERT_EQ(r.root->kind, PyKind::Tensor);
    EXPECT_EQ(r.root->elem, hg::ElemType::F32);
    EXPECT_EQ(r.root->shape, (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(r.root->i, 1);
    EXPECT_EQ(r.root->ref->i, 6);
    EXPECT_EQ(run_error(prog(six, ok), PicklePolicy::Strict), "");
    EXPECT_PICKLE_ERROR(prog("K\x04", ok), "outside the storage");                                     // 4 elements only
    EXPECT_PICKLE_ERROR(prog(six, "K\x05K\x02K\x02\x86K\x02K\x01\x86\x89}"s), "outside the storage");    // offset 5
    EXPECT_PICKLE_ERROR(prog(six, "J\xff\xff\xff\xffK\x02\x85K\x01\x85\x89}"s), "negative storage offset");
    EXPECT_PICKLE_ERROR(prog(six, "K\x00K\x02\x85J\xff\xff\xff\xff\x85\x89}"s), "negative stride");
    EXPECT_PICKLE_ERROR(prog(six, "K\x00K\x02K\x02\x86K\x01\x85\x89}"s), "sizes but");
    EXPECT_PICKLE_ERROR(prog(six, "K\x00K\x02\x85K\x01\x85K\x01}"s), "requires_grad");
    EXPECT_PICKLE_ERROR(prog(six, "K\x00K\x02\x85K\x01\x85\x89"s), "takes 6 or 7");
    // huge sizes: element count / extent overflow int64
    EXPECT_PICKLE_ERROR(prog(six, "K\x00\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x40\x86K\x01K\x01\x86\x89}"s),
                        "overflows");
    EXPECT_PICKLE_ERROR(prog("J\xff\xff\xff\xff", ok), "non-negative");
    // the same storage key with another size
    const std::string two = "\x80\x02(" "(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x06tQ"
                            "(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x07tQt."s;
    EXPECT_PICKLE_ERROR(P(two), "different types or sizes");
    EXPECT_PICKLE_ERROR(P("\x80\x02(X\x03\x00\x00\x00" "abctQ."), "persistent id");
    EXPECT_PICKLE_ERROR(P("\x80\x02(X\x07\x00\x00\x00storagectorch\nComplexFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x01tQ."),
                        "ComplexFloatStorage");
}

TEST(Pickle, BoundedMemoryAndDepth) {
    // 3M EMPTY_LIST opcodes: refused at the object cap, not after allocating them all
    std::vector<uint8_t> many(3'000'000, ']');
    many.push_back('.');
    EXPECT_PICKLE_ERROR(many, "more than 100000 objects", PicklePolicy::Lenient, 100000);
    // churn through the memo: new lists, DUP, GET, POP
    std::string churn = "]q\x00"s;
    for (int i = 0; i < 200'000; ++i) churn += "]\x32" "h\x00" "\x32" "0"s;
    churn += ".";
    EXPECT_EQ(run_error(P(churn)), "");
    // 300k lists, each appended into the one below: nested 300k deep. The tree lives in an
    // arena (no recursive destruction) and repr is depth- and size-limited.
    std::string nest = "\x80\x02";
    for (int i = 0; i < 300'000; ++i) nest += "]";
    for (int i = 0; i < 300'000 - 1; ++i) nest += "a";
    nest += ".";
    hg::PyArena a;
    const auto r = hg::unpickle(P(nest), a, PicklePolicy::Strict);
    EXPECT_EQ(r.root->kind, PyKind::List);
    EXPECT_LT(hg::py_repr(r.root, 1000).size(), 10000u);
}

TEST(Pickle, ByteMutationsNeverCrash) {
    for (const char* name : {"data_p2.pkl", "data_p4.pkl"}) {
        const auto full = hgtest::read_file(pk_fixture(name));
        for (size_t i = 0; i < full.size(); ++i)
            for (uint8_t v : {uint8_t{0}, uint8_t{0xff}, uint8_t{'.'}, uint8_t{'('}, uint8_t{'R'}, uint8_t{'h'}, static_cast<uint8_t>(full[i] ^ 0x10)}) {
                auto m = full;
                m[i] = v;
                hg::PyArena a;
                try {
                    const auto r = hg::unpickle(m, a, PicklePolicy::Lenient);
                    (void)hg::py_repr(r.root);
                } catch (const hg::Error&) {
                }
            }
        for (size_t n = 0; n < full.size(); ++n)
            EXPECT_NE(run_error(std::vector<uint8_t>(full.begin(), full.begin() + n)), "") << name << " cut at " << n;
    }
}
