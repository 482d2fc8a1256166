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


def main():
    sections = sys.argv[1:] or ["gguf"]
    for s in sections:
        print(f"  {s}")
        globals()["gen_" + s]()


if __name__ == "__main__":
    main()
