#!/usr/bin/env python3
"""Reference files for the formats layer (tests/parsers/{gguf,safetensors,torch,pickle,zip}_test.cpp).

Writes tests/fixtures/formats/:
  gguf/values.gguf (+ .json, .tensors.bin)  gguf-py GGUFWriter: every value type, arrays of every
        element type (typed arrays through a small GGUFWriter subclass that still packs each element
        with gguf-py's own code), nested arrays, UTF-8 strings, tensors of F32/F16/BF16/Q8_0/Q4_0/Q4_K/
        Q6_K/I8/I16/I32/I64/F64. The .json is what gguf.GGUFReader reads back from the file (keys,
        types, values; floats as bit patterns; tensor name/type/ggml shape/offset/bytes) and
        .tensors.bin the tensor bytes as GGUFReader returns them: the C++ reader must agree exactly.
  gguf/writer_ref.gguf, gguf/writer_ref_a64.gguf  written by plain gguf-py (no subclass) with the
        content that tests/parsers/gguf_test.cpp builds with our GGUFWriter; the test requires our
        bytes to be identical.
  gguf/phi3_vocab.json  what GGUFReader reads from the shared ggml-vocab-phi-3.gguf (if present).
Later sections add safetensors, torch.save checkpoints and hostile files.
Deterministic: fixed seeds, no timestamps.
"""
import collections
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGUFValueType as VT, GGMLQuantizationType as QT

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "formats"
SHARED = Path(os.environ.get("HEALTHGPT_SHARED_DATA", HERE.parent.parent.parent / "shared" / "data"))


# ----------------------------------------------------------------------------------------------
# GGUF

class TypedArray:
    """An array with an explicit element type (gguf-py 0.10 infers INT32/FLOAT32/BOOL/STRING)."""
    def __init__(self, elem, items):
        self.elem = elem
        self.items = items


class TypedGGUFWriter(gguf.GGUFWriter):
    """gguf-py's writer plus arrays of any element type; every element is still packed by
    gguf-py's own _pack_val, so the encoding is gguf-py's."""
    def _pack_val(self, val, vtype, add_vtype):
        if isinstance(val, TypedArray):
            out = bytearray()
            if add_vtype:
                out += self._pack("I", vtype)
            out += self._pack("I", val.elem)
            out += self._pack("Q", len(val.items))
            for item in val.items:
                out += self._pack_val(item, val.elem, add_vtype=False)
            return bytes(out)
        return super()._pack_val(val, vtype, add_vtype)


def read_value(parts, i, vtype):
    """Walks GGUFReader's decoded parts for one value; returns (json value, next part index)."""
    if vtype == VT.STRING:
        return bytes(parts[i + 1]).decode("utf-8"), i + 2
    if vtype == VT.ARRAY:
        elem = VT(int(parts[i][0]))
        n = int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(n):
            v, i = read_value(parts, i, elem)
            items.append(v)
        return {"elem": elem.name, "items": items}, i
    x = parts[i][0]
    if vtype == VT.FLOAT32:
        return {"f32bits": int(np.float32(x).view(np.uint32))}, i + 1
    if vtype == VT.FLOAT64:
        return {"f64bits": int(np.float64(x).view(np.uint64))}, i + 1
    if vtype == VT.BOOL:
        return bool(x), i + 1
    return int(x), i + 1


def dump_gguf(path, json_path, bin_path=None):
    """Reads a GGUF with gguf.GGUFReader and writes what it found as JSON (+ tensor bytes)."""
    r = gguf.GGUFReader(path)
    kvs = []
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        vtype = VT(int(f.parts[2][0]))
        value, end = read_value(f.parts, 3, vtype)
        assert end == len(f.parts)
        kvs.append({"key": name, "type": vtype.name, "value": value})
    tensors = []
    blob = bytearray()
    for t in r.tensors:
        raw = np.asarray(t.data).tobytes()
        assert len(raw) == t.n_bytes
        tensors.append({"name": t.name, "type": t.tensor_type.name, "ne": [int(d) for d in t.shape],
                        "offset": int(t.data_offset - r.data_offset), "nbytes": int(t.n_bytes),
                        "blob_offset": len(blob)})
        blob += raw
    doc = {"version": 3, "alignment": int(r.alignment), "data_offset": int(r.data_offset),
           "file_size": int(len(r.data)), "metadata": kvs, "tensors": tensors}
    Path(json_path).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    if bin_path:
        Path(bin_path).write_bytes(bytes(blob))
    return doc


def gen_gguf_values(d):
    rng = np.random.default_rng(1234)
    w = TypedGGUFWriter(d / "values.gguf", "healthgpt-test")
    # scalars of every type, with their extreme values
    w.add_uint8("s.u8", 255)
    w.add_int8("s.i8", -128)
    w.add_uint16("s.u16", 65535)
    w.add_int16("s.i16", -32768)
    w.add_uint32("s.u32", 4294967295)
    w.add_int32("s.i32", -2147483648)
    w.add_uint64("s.u64", 18446744073709551615)
    w.add_int64("s.i64", -9223372036854775808)
    w.add_float32("s.f32", 3.14159)
    w.add_float32("s.f32_inf", float("inf"))
    w.add_float32("s.f32_negzero", -0.0)
    w.add_float32("s.f32_denorm", 1e-40)
    w.add_float64("s.f64", -1.0e300)
    w.add_float64("s.f64_nan", float("nan"))
    w.add_bool("s.true", True)
    w.add_bool("s.false", False)
    w.add_string("s.str", "Grüße, 世界 — 🩺 CT/MRI")
    w.add_key_value("s.empty_str", "", VT.STRING)  # add_string skips empty strings
    w.add_string("s.nul", "a\x00b")
    # arrays: every element type
    w.add_key_value("a.u8", TypedArray(VT.UINT8, [0, 1, 127, 128, 255]), VT.ARRAY)
    w.add_key_value("a.i8", TypedArray(VT.INT8, [-128, -1, 0, 127]), VT.ARRAY)
    w.add_key_value("a.u16", TypedArray(VT.UINT16, [0, 65535, 1234]), VT.ARRAY)
    w.add_key_value("a.i16", TypedArray(VT.INT16, [-32768, 32767]), VT.ARRAY)
    w.add_key_value("a.u32", TypedArray(VT.UINT32, [0, 4294967295]), VT.ARRAY)
    w.add_key_value("a.i32", [1, -2, 3, 2147483647, -2147483648], VT.ARRAY)  # native gguf-py inference
    w.add_key_value("a.u64", TypedArray(VT.UINT64, [0, 18446744073709551615]), VT.ARRAY)
    w.add_key_value("a.i64", TypedArray(VT.INT64, [-9223372036854775808, 9223372036854775807]), VT.ARRAY)
    w.add_key_value("a.f32", [0.5, -1.25, 1e-7, 65504.0], VT.ARRAY)
    w.add_key_value("a.f64", TypedArray(VT.FLOAT64, [0.1, -2.5e-300, float("inf")]), VT.ARRAY)
    w.add_key_value("a.bool", [True, False, True], VT.ARRAY)
    w.add_key_value("a.str", ["a", "ümlaut", "", "日本語", "tab\tnew\nline"], VT.ARRAY)
    w.add_key_value("a.nested", [[1, 2], [3], [4, 5, 6]], VT.ARRAY)
    w.add_key_value("a.nested3", TypedArray(VT.ARRAY, [TypedArray(VT.ARRAY, [TypedArray(VT.UINT16, [7, 8])]),
                                                        TypedArray(VT.ARRAY, [])]), VT.ARRAY)
    w.add_key_value("a.nested_str", [["x", "y"], ["z"]], VT.ARRAY)
    w.add_key_value("a.empty_f32", TypedArray(VT.FLOAT32, []), VT.ARRAY)
    w.add_key_value("a.long", [int(x) for x in rng.integers(-1000, 1000, size=1000)], VT.ARRAY)

    # tensors of every type we know (raw bytes for block types: the reader does not decode them)
    def raw(shape_bytes):
        return rng.integers(0, 256, size=shape_bytes, dtype=np.uint8)
    w.add_tensor("t.f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("t.f16", rng.standard_normal((2, 3, 4)).astype(np.float16))
    w.add_tensor("t.bf16", rng.integers(0, 65536, size=(4, 6), dtype=np.uint16), raw_dtype=QT.BF16)
    w.add_tensor("t.q8_0", raw((3, 2 * 34)), raw_dtype=QT.Q8_0)
    w.add_tensor("t.q4_0", raw((2, 18)), raw_dtype=QT.Q4_0)
    w.add_tensor("t.q4_k", raw((2, 144)), raw_dtype=QT.Q4_K)
    w.add_tensor("t.q6_k", raw((1, 2 * 210)), raw_dtype=QT.Q6_K)
    w.add_tensor("t.i8", rng.integers(-128, 128, size=(7,), dtype=np.int8))
    w.add_tensor("t.i16", rng.integers(-30000, 30000, size=(2, 2, 2, 3), dtype=np.int16))
    w.add_tensor("t.i32", rng.integers(-2**31, 2**31, size=(5,), dtype=np.int32))
    w.add_tensor("t.i64", rng.integers(-2**62, 2**62, size=(2, 2), dtype=np.int64))
    w.add_tensor("t.f64", rng.standard_normal((3,)).astype(np.float64))
    w.add_tensor("t.empty", np.zeros((0, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    doc = dump_gguf(d / "values.gguf", d / "values.json", d / "values.tensors.bin")
    assert len(doc["metadata"]) == 1 + 19 + 17, len(doc["metadata"])


def build_writer_ref(w):
    """The content tests/parsers/gguf_test.cpp (WriterMatchesGgufPy) builds with our writer."""
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_uint64("test.u64", 18446744073709551615)
    w.add_int64("test.i64", -9223372036854775808)
    w.add_float32("test.f32", 0.1)
    w.add_float64("test.f64", 2.718281828459045)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "Grüße, 世界 🩺")
    w.add_key_value("test.empty_string", "", VT.STRING)
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_array("test.arr_f32", [0.5, -1.25])
    w.add_array("test.arr_bool", [True, False, True])
    w.add_array("test.arr_str", ["a", "ümlaut", ""])
    w.add_array("test.arr_nested", [[1, 2], [3]])
    w.add_array("test.arr_u8", b"\x00\x01\xff")
    w.add_tensor("tok_embd.weight", (np.arange(15, dtype=np.float32) * 0.5 - 2).reshape(3, 5))
    w.add_tensor("blk.0.attn_q.weight", (np.arange(16, dtype=np.float32) * 0.25 - 1).astype(np.float16).reshape(2, 8))
    w.add_tensor("blk.0.ffn_up.weight", ((np.arange(2 * 68) * 7 + 3) % 256).astype(np.uint8).reshape(2, 68),
                 raw_dtype=QT.Q8_0)
    w.add_tensor("blk.0.ffn_down.weight", ((np.arange(144) * 13 + 1) % 256).astype(np.uint8).reshape(1, 144),
                 raw_dtype=QT.Q4_K)
    w.add_tensor("ids", np.array([1, -1, 2147483647, -2147483648], dtype=np.int32))
    w.add_tensor("bf", ((np.arange(6) * 1000 + 0x3F80) % 65536).astype(np.uint16).reshape(2, 3), raw_dtype=QT.BF16)
    w.add_tensor("scalar", np.array([42.0], dtype=np.float32))


def gen_gguf_writer_ref(d):
    for name, align in (("writer_ref.gguf", None), ("writer_ref_a64.gguf", 64)):
        w = gguf.GGUFWriter(d / name, "healthgpt-test")  # plain gguf-py
        if align:
            w.add_custom_alignment(align)
        build_writer_ref(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        r = gguf.GGUFReader(d / name)  # gguf-py must read its own file back
        assert r.alignment == (align or 32) and len(r.tensors) == 7


def gen_gguf_phi3_vocab(d):
    src = SHARED / "tokenizers" / "phi3" / "ggml-vocab-phi-3.gguf"
    if not src.exists():
        print(f"  (skipping phi3_vocab.json: {src} not found)")
        return
    r = gguf.GGUFReader(src)
    keys = []
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        keys.append({"key": name, "type": VT(f.types[0]).name,
                     "elem": VT(f.types[1]).name if len(f.types) > 1 else None,
                     "count": len(f.data)})
    def field(name):
        f = r.fields[name]
        return [f.parts[i] for i in f.data]
    tokens = [bytes(p).decode("utf-8") for p in field("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in field("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in field("tokenizer.ggml.token_type")]
    pick = [0, 1, 2, 3, 100, 1000, 29871, 31999, 32000, 32001, 32007, 32010, 32063]
    doc = {"file_size": len(r.data), "n_tensors": len(r.tensors), "keys": keys,
           "tokens": {str(i): tokens[i] for i in pick},
           "scores_f32bits": {str(i): int(np.float32(scores[i]).view(np.uint32)) for i in pick},
           "token_type": {str(i): types[i] for i in pick},
           "context_length": int(field("phi3.context_length")[0][0]),
           "rms_eps_f32bits": int(np.float32(field("phi3.attention.layer_norm_rms_epsilon")[0][0]).view(np.uint32)),
           "chat_template": bytes(field("tokenizer.chat_template")[0]).decode("utf-8")}
    (d / "phi3_vocab.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def gen_gguf():
    d = OUT / "gguf"
    d.mkdir(parents=True, exist_ok=True)
    gen_gguf_values(d)
    gen_gguf_writer_ref(d)
    gen_gguf_phi3_vocab(d)


# ----------------------------------------------------------------------------------------------
# safetensors

def tensor_bytes(t):
    """Row-major bytes of a torch tensor (the oracle for every tensor value)."""
    import torch
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


ST_DTYPE = None


def st_dtype(t):
    import torch
    return {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
            torch.bool: "BOOL"}[t.dtype]


def describe(named, blob):
    """JSON description of (name, tensor) pairs; values go to blob."""
    out = []
    for name, t in named:
        raw = tensor_bytes(t)
        out.append({"name": name, "dtype": st_dtype(t), "shape": list(t.shape), "stride": list(t.stride()),
                    "storage_offset": int(t.storage_offset()), "contiguous": bool(t.is_contiguous()),
                    "blob_offset": len(blob), "nbytes": len(raw)})
        blob += raw
    return out


def tiny_llama():
    import torch
    import transformers
    torch.manual_seed(7)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg)


def gen_safetensors():
    import torch
    from safetensors.torch import save_file, load_file
    d = OUT / "safetensors"
    d.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(42)
    tensors = {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(2, 3, 4, generator=g).half(),
        "bf16": torch.randn(4, 6, generator=g).bfloat16(),
        "f64": torch.randn(3, generator=g).double(),
        "i64": torch.randint(-2**62, 2**62, (2, 2), generator=g),
        "i32": torch.randint(-2**31, 2**31 - 1, (5,), generator=g, dtype=torch.int32),
        "i16": torch.randint(-30000, 30000, (2, 2, 2, 3), generator=g, dtype=torch.int16),
        "i8": torch.randint(-128, 127, (7,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (6,), generator=g, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
        "five_d": torch.arange(32, dtype=torch.float32).reshape(2, 2, 2, 2, 2),
    }
    save_file(tensors, d / "single.safetensors", metadata={"format": "pt", "note": "Grüße 🩺"})
    back = load_file(d / "single.safetensors")  # the safetensors package reads its own file back
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    blob = bytearray()
    doc = {"metadata": {"format": "pt", "note": "Grüße 🩺"},
           "tensors": describe(sorted(tensors.items()), blob)}
    (d / "single.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    (d / "single.bin").write_bytes(bytes(blob))

    # Hugging Face folders written by save_pretrained: sharded with an index, and a single file.
    import shutil
    model = tiny_llama()
    for sub, shard in (("hf_sharded", "8KB"), ("hf_single", "10GB")):
        out = d / sub
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out, max_shard_size=shard, safe_serialization=True)
    assert (d / "hf_sharded" / "model.safetensors.index.json").exists()
    assert (d / "hf_single" / "model.safetensors").exists()
    blob = bytearray()
    sd = model.state_dict()
    doc = {"tensors": describe(sorted(sd.items()), blob),
           "shards": sorted(p.name for p in (d / "hf_sharded").glob("*.safetensors"))}
    (d / "hf_model.json").write_text(json.dumps(doc, indent=1) + "\n")
    (d / "hf_model.bin").write_bytes(bytes(blob))

    # hostile headers (never valid for the safetensors crate either)
    def raw(name, header, data=b""):
        h = header.encode("utf-8")
        (d / "hostile" / name).write_bytes(struct.pack("<Q", len(h)) + h + data)
    (d / "hostile").mkdir(exist_ok=True)
    raw("outside.safetensors", '{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', b"\0" * 8)
    raw("dup_keys.safetensors", '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                '"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\0" * 8)
    raw("wrong_size.safetensors", '{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', b"\0" * 8)
    raw("overlap.safetensors", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                               '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', b"\0" * 12)
    raw("gap.safetensors", '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                           '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', b"\0" * 12)
    raw("unknown_dtype.safetensors", '{"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}', b"\0")
    raw("bad_json.safetensors", '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}', b"\0" * 4)
    raw("metadata_not_str.safetensors", '{"__metadata__":{"n":1}}')
    (d / "hostile" / "huge_header.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")


# ----------------------------------------------------------------------------------------------
# PyTorch checkpoints (torch.save) and hostile pickles

def pickle_globals(data):
    """Every GLOBAL a pickle stream names (pickletools, which never executes anything)."""
    import io
    import pickletools
    f = io.BytesIO(data)
    names = []
    while f.tell() < len(data):
        try:
            ops = list(pickletools.genops(f))
        except Exception:
            break
        for op, arg, _ in ops:
            if op.name == "GLOBAL":
                names.append(arg.replace(" ", "."))
        if not ops or ops[-1][0].name != "STOP":
            break
    return names


def walk_tensors(obj, path, out, seen):
    """(path, tensor) for every tensor reachable, named like TorchCheckpoint::all_tensors()."""
    import torch
    if id(obj) in seen:
        return
    seen.add(id(obj))
    join = lambda k: f"{path}.{k}" if path else str(k)
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            key = k if isinstance(k, (str, int)) else f"{k.__module__}.{k.__qualname__}" if isinstance(k, type) else "?"
            walk_tensors(v, join(key), out, seen)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk_tensors(v, join(i), out, seen)


class Custom:
    """An arbitrary class, as Lightning hparams and callbacks contain."""
    def __init__(self, lr):
        self.lr = lr
        self.name = "adam"


class ModelCheckpoint:
    """Stands for pytorch_lightning's callback class, used as a dict key in 'callbacks'."""


class Evil:
    """Pickles to a call of `fn(*args)`; the fixture must be refused, never loaded."""
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def torch_sample():
    import torch
    g = torch.Generator().manual_seed(3)
    base = torch.arange(12, dtype=torch.float32)
    sd = collections.OrderedDict()
    sd["bf16"] = torch.randn(3, 4, generator=g).bfloat16()
    sd["f16"] = torch.randn(2, 5, generator=g).half()
    sd["f32"] = torch.randn(4, generator=g)
    sd["f64"] = torch.randn(2, 2, generator=g).double()
    sd["i64"] = torch.tensor([1, -2, 2**40], dtype=torch.int64)
    sd["i32"] = torch.tensor([7, -7], dtype=torch.int32)
    sd["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False])
    sd["shared_view"] = base[2:8].view(2, 3)        # storage offset 2, shares `base`
    sd["shared_full"] = base                        # the same storage
    sd["transposed"] = base.view(3, 4).t()          # non-contiguous view of the same storage
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.ones(2, 2))
    return sd


def save_torch(obj, path, legacy=False):
    import torch
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


def write_expect(path, named, extra=None):
    blob = bytearray()
    doc = {"tensors": describe(named, blob)}
    doc.update(extra or {})
    path.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    path.with_suffix(".values").write_bytes(bytes(blob))


def gen_torch():
    import io
    import torch
    import zipfile
    d = OUT / "torch"
    d.mkdir(parents=True, exist_ok=True)
    sd = torch_sample()
    for name, legacy in (("tensors.pt", False), ("tensors_legacy.pt", True)):
        save_torch(sd, d / name, legacy)
        write_expect(d / name, list(sd.items()), {"globals": pickle_globals_of(d / name)})

    # the zip directory as Python's zipfile reads it (tests/parsers/zip_test.cpp)
    with zipfile.ZipFile(d / "tensors.pt") as z:
        entries = []
        for info in z.infolist():
            data = z.read(info.filename)
            entries.append({"name": info.filename, "size": info.file_size, "compressed_size": info.compress_size,
                            "method": info.compress_type, "crc32": info.CRC, "header_offset": info.header_offset,
                            "flags": info.flag_bits, "first_bytes": data[:16].hex()})
    (d / "tensors.zip.json").write_text(json.dumps({"entries": entries}, indent=1) + "\n")

    # a real module's state_dict (carries _metadata, a 0-d num_batches_tracked), BF16 like HealthGPT's .bin
    torch.manual_seed(5)
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Embedding(5, 4)).to(torch.bfloat16)
    msd = m.state_dict()
    save_torch(msd, d / "module_state_dict.bin")
    write_expect(d / "module_state_dict.bin", list(msd.items()), {"globals": pickle_globals_of(d / "module_state_dict.bin")})

    # Lightning-style checkpoint (as pytorch_lightning's trainer writes last.ckpt)
    import argparse
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.BatchNorm2d(4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    ckpt = {
        "epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.0.8",
        "state_dict": net.state_dict(),
        "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
        "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.25), "monitor": "val/rec_loss"}},
        "hparams_name": "kwargs",
        "hyper_parameters": {"args": argparse.Namespace(lr=1e-4, base="vqgan"), "custom": Custom(0.1),
                             "np_scalar": np.float64(0.5), "bytes": b"\x00\xff", "set": {1, 2}, "big": 2**80,
                             "tuple": (1, "a", None, True, 1.5)},
    }
    for name, legacy in (("lightning.ckpt", False), ("lightning_legacy.ckpt", True)):
        save_torch(ckpt, d / name, legacy)
        everything = []
        walk_tensors(ckpt, "", everything, set())
        write_expect(d / name, list(ckpt["state_dict"].items()),
                     {"globals": pickle_globals_of(d / name), "epoch": 3, "global_step": 1234,
                      "all_tensors": [{"path": p, "dtype": st_dtype(t), "shape": list(t.shape)} for p, t in everything]})

    # hostile files: written, never loaded
    h = d / "hostile"
    h.mkdir(exist_ok=True)
    w = torch.zeros(2)
    save_torch({"w": w, "x": Evil(os.system, ("echo pwned",))}, h / "os_system.pt")
    save_torch({"w": w, "x": Evil(eval, ("1+1",))}, h / "builtins_eval.pt")
    import subprocess
    save_torch({"w": w, "x": Evil(subprocess.call, (["true"],))}, h / "subprocess.pt")
    save_torch({"w": w, "x": Custom(1.0)}, h / "unknown_global.pt")
    save_torch({"w": w, "x": Evil(os.system, ("echo pwned",))}, h / "os_system_legacy.pt", legacy=True)
    for name in ("os_system.pt", "builtins_eval.pt", "subprocess.pt", "unknown_global.pt", "os_system_legacy.pt"):
        (h / (name + ".globals")).write_text("\n".join(pickle_globals_of(h / name)) + "\n")
    full = (d / "tensors.pt").read_bytes()
    (h / "truncated.pt").write_bytes(full[: len(full) // 2])
    zin = zipfile.ZipFile(d / "tensors.pt")
    def rezip(name, compress=zipfile.ZIP_STORED, drop=None, edit=None):
        with zipfile.ZipFile(h / name, "w", compression=compress) as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if drop and info.filename.endswith(drop):
                    continue
                if edit and info.filename.endswith(edit[0]):
                    data = edit[1](data)
                zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
                zi.compress_type = compress
                zout.writestr(zi, data)
    rezip("deflated.pt", compress=zipfile.ZIP_DEFLATED)
    rezip("restored.pt")  # python's own stored zip of the same entries: must load like tensors.pt
    rezip("missing_storage.pt", drop="/data/0")
    rezip("short_storage.pt", edit=("/data/0", lambda b: b[:-4]))
    rezip("truncated_pickle.pt", edit=("/data.pkl", lambda b: b[: len(b) // 2]))
    bad = bytearray(full)
    data0 = zin.getinfo("tensors/data/0")
    at = data0.header_offset + 30 + len(data0.filename) + len(data0.extra) + 1  # inside storage 0 (via local header)
    lh = full[data0.header_offset:data0.header_offset + 30]
    name_len, extra_len = struct.unpack("<HH", lh[26:30])
    at = data0.header_offset + 30 + name_len + extra_len + 1
    bad[at] ^= 0xFF
    (h / "bad_crc.pt").write_bytes(bytes(bad))


def pickle_globals_of(path):
    import zipfile
    data = Path(path).read_bytes()
    if data[:2] == b"PK":
        z = zipfile.ZipFile(path)
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        return pickle_globals(z.read(pkl))
    return pickle_globals(data)


def gen_pickle():
    """Plain-data pickles of protocols 0-5 and their canonical form (from the Python objects)."""
    import pickle
    d = OUT / "pickle"
    d.mkdir(parents=True, exist_ok=True)
    shared = [1, 2]
    rec = [0]
    rec.append(rec)
    obj = {"none": None, "t": True, "f": False, "i": [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**63 - 1, -2**63],
           "big": [2**64, -2**70], "float": [0.5, -1e300, float("inf")], "str": ["", "ascii", "Grüße 世界 🩺"],
           "bytes": [b"", b"\x00\xff\x80"], "tuple": (1, (2, 3), ()), "set": {7}, "frozenset": frozenset({8}),
           "bytearray": bytearray(b"ab"), "shared": [shared, shared], "rec": rec, 5: "int key"}
    p0 = {1: [1, -2, 3.5, None, True], 2: (4, 2**70), 3: {}}
    cases = {}
    for proto in range(1, 6):
        (d / f"data_p{proto}.pkl").write_bytes(pickle.dumps(obj, protocol=proto))
        cases[f"data_p{proto}.pkl"] = canon(obj)
    (d / "data_p0.pkl").write_bytes(pickle.dumps(p0, protocol=0))
    cases["data_p0.pkl"] = canon(p0)
    (d / "expected.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    # hostile, written with custom __reduce__ and never loaded
    for proto in (2, 4):
        (d / f"os_system_p{proto}.pkl").write_bytes(pickle.dumps(Evil(os.system, ("echo pwned",)), protocol=proto))
    (d / "eval.pkl").write_bytes(pickle.dumps(Evil(eval, ("1+1",)), protocol=2))
    (d / "getattr.pkl").write_bytes(pickle.dumps(Evil(getattr, ("x", "upper")), protocol=2))
    (d / "custom.pkl").write_bytes(pickle.dumps(Custom(0.5), protocol=2))


def canon(o, depth=0, stack=()):
    import pickle
    """A canonical text form of a plain Python value; tests/parsers/pickle_test.cpp builds the
    same text from our unpickled tree. Recursion back into an enclosing container is '<rec>'."""
    if any(o is s for s in stack):
        return "<rec>"
    st = stack + (o,) if isinstance(o, (list, dict, tuple, set, frozenset)) else stack
    if o is None:
        return "None"
    if isinstance(o, bool):
        return "True" if o else "False"
    if isinstance(o, int):
        return f"int:{o}" if -2**63 <= o < 2**63 else "bigint:" + pickle.encode_long(o).hex()
    if isinstance(o, float):
        return "float:" + struct.pack(">d", o).hex()
    if isinstance(o, str):
        return "str:" + o.encode("utf-8").hex()
    if isinstance(o, (bytes, bytearray)):
        return "bytes:" + bytes(o).hex()
    if isinstance(o, tuple):
        return "(" + ",".join(canon(x, depth + 1, st) for x in o) + ")"
    if isinstance(o, list):
        return "[" + ",".join(canon(x, depth + 1, st) for x in o) + "]"
    if isinstance(o, (set, frozenset)):
        return "set{" + ",".join(canon(x, depth + 1, st) for x in o) + "}"
    if isinstance(o, dict):
        return "{" + ",".join(canon(k, depth + 1, st) + ":" + canon(v, depth + 1, st) for k, v in o.items()) + "}"
    raise TypeError(type(o))


def main():
    sections = sys.argv[1:] or ["gguf", "safetensors", "torch", "pickle"]
    for s in sections:
        print(f"  {s}")
        globals()["gen_" + s]()


if __name__ == "__main__":
    main()
