// A restricted unpickler for the pickles inside PyTorch checkpoints. It never executes
// anything: it interprets the pickle opcodes into an inert value tree, and understands the
// handful of callables that torch.save emits for a state dict (collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _v3 / _rebuild_parameter(_with_state),
// torch._tensor._rebuild_from_type_v2, _codecs.encode for bytes, builtins set/frozenset/
// bytearray) and persistent ids ('storage', torch.<X>Storage, key, location, numel[, view]).
//
// Policy for any other global:
//   Strict   (state-dict .bin/.pt files): an hg::Error naming the global, at the GLOBAL opcode.
//   Lenient  (Lightning .ckpt and `inspect`): an inert Global node; calling it (REDUCE, NEWOBJ,
//            BUILD) builds an inert Object node recording the callable and its arguments.
//            Globals from modules that only a malicious file would reference (os, subprocess,
//            builtins.eval/exec/getattr/__import__/..., sys, socket, ...) are refused in both modes.
// Opcodes: protocols 0-5 except the text-quoted STRING/UNICODE/PERSID, INST/OBJ, the extension
// registry (EXT1/2/4) and out-of-band buffers, which are refused. Memory is bounded: object
// count is capped (max_objects), lengths are checked against the remaining bytes, and the
// tree lives in an arena (no recursion on destruction; cycles made through the memo are fine).
#pragma once
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "formats/checkpoint.h"

namespace hg {

enum class PyKind : uint8_t {
    None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Set,
    Global,   // a module attribute referenced by GLOBAL / STACK_GLOBAL: s = "module.name"
    Object,   // lenient mode: callable(args) or cls.__new__(args), never executed; state from BUILD
    Storage,  // a persistent id ('storage', type, key, location, numel): s = key
    Tensor,   // torch._utils._rebuild_tensor_v2 & co
};
const char* py_kind_name(PyKind k);

struct PyObj;
using PyRef = const PyObj*;

struct PyObj {
    PyKind kind = PyKind::None;
    bool b = false;           // Bool; Tensor: requires_grad
    int64_t i = 0;            // Int; Storage: numel (elements); Tensor: storage offset (elements)
    double f = 0;             // Float
    std::string s;            // Str (UTF-8), Bytes, BigInt (little-endian two's complement), Global name, Storage key
    std::vector<PyRef> items; // Tuple / List / Set items; Object: the arguments
    std::vector<std::pair<PyRef, PyRef>> entries;  // Dict, in insertion order
    PyRef callable = nullptr; // Object: the Global called (or the class); Storage: the storage-type Global
    PyRef state = nullptr;    // Dict/Object: state given by BUILD (e.g. a state dict's _metadata)
    // Storage: element type; Tensor: element type, shape and strides (elements), storage in `ref`
    ElemType elem = ElemType::U8;
    std::vector<int64_t> shape, stride;
    PyRef ref = nullptr;      // Tensor: its Storage; Storage view (legacy): the root Storage
    int64_t view_offset = 0;  // Storage view (legacy): element offset into the root storage

    bool is_str() const { return kind == PyKind::Str; }
    // Dict lookup by string key (nullptr if absent or not a Dict).
    PyRef get(std::string_view key) const;
};

// Owns every object of one or more unpickled trees.
class PyArena {
public:
    PyObj* make(PyKind k);
    size_t size() const { return objs_.size(); }
    size_t max_objects = size_t{1} << 21;  // ~2M objects: far above any real checkpoint
    std::string name;                       // for error messages

private:
    std::deque<PyObj> objs_;
};

enum class PicklePolicy { Strict, Lenient };

struct PickleResult {
    PyRef root = nullptr;
    uint64_t consumed = 0;  // bytes up to and including STOP (legacy files hold several pickles)
    std::vector<std::string> opaque_globals;  // lenient mode: every unknown global referenced, in order
};

// Unpickles one pickle from the start of `bytes`. Throws hg::Error (naming arena.name, the
// opcode and its offset) on anything malformed or disallowed.
PickleResult unpickle(std::span<const uint8_t> bytes, PyArena& arena, PicklePolicy policy);

// A short Python-like rendering for `inspect`: {'a': 1, 'b': [1, 2, ...]}; tensors as
// tensor(BF16, [3, 4]); inert objects as <module.Class(...)>. Depth and items are limited.
std::string py_repr(PyRef o, int max_depth = 4, size_t max_items = 8);

}  // namespace hg
