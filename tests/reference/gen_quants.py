#!/usr/bin/env python3
"""Golden vectors for block quantization (tests/unit/quants_golden_test.cpp).

Oracles (two independent implementations, cross-checked here where both exist):
  * gguf-py (pip `gguf`, numpy): quantize F16 (numpy cast), BF16, Q4_0, Q8_0;
    dequantize F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K.
  * llama.cpp's ggml, built from PyPI's `llama-cpp-python` (pinned in requirements.txt) and called
    through ctypes: ggml_quantize_chunk (no imatrix = the *_ref quantizers that llama-quantize uses)
    for Q4_0, Q8_0, Q4_K, Q6_K; quantize_row_q8_K_ref for Q8_K; the dequantize_row_* functions.
The committed bytes come from ggml where gguf-py cannot quantize (Q4_K, Q6_K, Q8_K) and from
gguf-py otherwise, after asserting that ggml produces the same bytes.

Non-finite inputs: only F16/BF16 cases contain NaN/inf (the block formats cannot represent them,
ggml's result is undefined, and our quantize_row refuses them; see core/quants.h).

Writes tests/fixtures/quants/: in_<case>.f32 (input), <case>.<TYPE>.q (quantized bytes),
<case>.<TYPE>.deq.f32 (the oracle's dequantization of those bytes), manifest.json.
"""
import ctypes
import importlib.metadata
import glob
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "quants")

BLOCK = {"F16": 1, "BF16": 1, "Q4_0": 32, "Q8_0": 32, "Q4_K": 256, "Q6_K": 256, "Q8_K": 256}
BYTES = {"F16": 2, "BF16": 2, "Q4_0": 18, "Q8_0": 34, "Q4_K": 144, "Q6_K": 210, "Q8_K": 292}
LLAMA_CPP_PYTHON = "0.3.16"  # the pin in requirements.txt (ggml source of the oracle)
GGML_ID = {"F16": 1, "Q4_0": 2, "Q8_0": 8, "Q4_K": 12, "Q6_K": 14, "Q8_K": 15, "BF16": 30}


def find_ggml_base():
    if os.environ.get("GGML_BASE_LIB"):  # a libggml-base.so built from llama-cpp-python's sdist
        return os.environ["GGML_BASE_LIB"]
    try:
        v = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("llama-cpp-python is not installed: pip install -r requirements.txt")
    if v != LLAMA_CPP_PYTHON:
        sys.exit(f"llama-cpp-python {v} installed, {LLAMA_CPP_PYTHON} expected (requirements.txt)")
    import site
    for sp in site.getsitepackages():
        hits = glob.glob(os.path.join(sp, "llama_cpp", "lib", "libggml-base.so"))
        if hits:
            return hits[0]
    sys.exit("libggml-base.so not found: pip install llama-cpp-python (see requirements.txt)")


ggml = ctypes.CDLL(find_ggml_base())
ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                     ctypes.c_int64, ctypes.c_void_p]
ggml.ggml_quantize_init.argtypes = [ctypes.c_int]
for f in ["quantize_row_q8_K_ref", "dequantize_row_q4_0", "dequantize_row_q8_0", "dequantize_row_q4_K",
          "dequantize_row_q6_K", "dequantize_row_q8_K"]:
    getattr(ggml, f).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    getattr(ggml, f).restype = None


def ggml_quantize(name, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.size
    out = np.zeros(n // BLOCK[name] * BYTES[name], dtype=np.uint8)
    if name == "Q8_K":
        ggml.quantize_row_q8_K_ref(x.ctypes.data, out.ctypes.data, n)
    else:
        ggml.ggml_quantize_init(GGML_ID[name])
        got = ggml.ggml_quantize_chunk(GGML_ID[name], x.ctypes.data, out.ctypes.data, 0, 1, n, None)
        assert got == out.size, (name, got, out.size)
    return out.tobytes()


def ggml_dequantize(name, q, n):
    buf = np.frombuffer(q, dtype=np.uint8).copy()
    y = np.zeros(n, dtype=np.float32)
    getattr(ggml, "dequantize_row_" + name[:-1].lower() + name[-1])(buf.ctypes.data, y.ctypes.data, n)
    return y


def gguf_quantize(name, x):
    if name == "F16":
        return x.astype(np.float16).tobytes()
    return gguf.quants.quantize(x.reshape(1, -1), getattr(T, name)).tobytes()


def gguf_dequantize(name, q, n):
    if name == "F16":
        return np.frombuffer(q, dtype=np.float16).astype(np.float32)
    arr = np.frombuffer(q, dtype=np.uint8).reshape(1, -1)
    return gguf.quants.dequantize(arr, getattr(T, name)).reshape(-1).astype(np.float32)


def cases():
    rng = np.random.default_rng(20250214)
    c = {}
    f = np.float32
    c["normal_1sb"] = rng.standard_normal(256).astype(f)
    c["normal_4sb"] = rng.standard_normal(1024).astype(f)
    c["uniform"] = rng.uniform(-1, 1, 512).astype(f)
    c["uniform_pos"] = rng.uniform(0.5, 2, 256).astype(f)      # no negative values: Q4_K min = 0
    c["zeros"] = np.zeros(256, f)
    c["constant_pos"] = np.full(256, 0.75, f)
    c["constant_neg"] = np.full(256, -3.5, f)
    c["large"] = (rng.standard_normal(256) * 1e4).astype(f)
    c["huge"] = (rng.standard_normal(256) * 1e6).astype(f)     # fp16 scales overflow to inf
    c["tiny"] = (rng.standard_normal(256) * 1e-6).astype(f)
    c["tiniest"] = (rng.standard_normal(256) * 1e-30).astype(f)
    c["subnormal"] = (rng.standard_normal(256) * 1e-40).astype(f)  # float32 subnormals
    x = rng.standard_normal(512).astype(f)
    x[::37] *= 100.0                                              # an outlier in (nearly) every block
    c["outlier"] = x
    c["negative_only"] = -np.abs(rng.standard_normal(256)).astype(f)
    x = np.zeros(256, f)
    x[100] = 5.0                                                  # one non-zero value
    c["one_hot"] = x
    c["ramp"] = np.linspace(-2, 3, 256).astype(f)
    c["halves"] = (np.round(rng.standard_normal(256) * 8) / 2).astype(f)  # many rounding ties
    # 16-bit float specials (only for F16/BF16)
    sp = np.array([0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, 1e5, -1e5, 6.1035156e-05, 5.9604645e-08,
                   2.9802322e-08, 2.98023259e-08, 1e-8, 3.0e-8, np.inf, -np.inf, np.nan, 1.00048828125, 1.0009765625,
                   1.00146484375, 3.3895314e38, 3.4028235e38, 1e-45, -1e-45, 1.1754944e-38, 0.1, 1 / 3],
                  dtype=f)
    c["specials16"] = np.concatenate([sp, rng.standard_normal(256 - sp.size).astype(f) * 100]).astype(f)
    c["one_block32"] = rng.standard_normal(32).astype(f)
    return c


def types_for(case, n):
    out = []
    for t in ["F16", "BF16", "Q4_0", "Q8_0", "Q4_K", "Q6_K", "Q8_K"]:
        if n % BLOCK[t]:
            continue
        if case == "specials16" and BLOCK[t] > 1:
            continue
        out.append(t)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for p in glob.glob(os.path.join(OUT, "*")):
        os.remove(p)
    manifest = {"generator": "tests/reference/gen_quants.py", "gguf": importlib.metadata.version("gguf"),
                "llama_cpp_python": LLAMA_CPP_PYTHON,
                "cases": []}
    for name, x in cases().items():
        n = x.size
        x.tofile(os.path.join(OUT, f"in_{name}.f32"))
        entry = {"name": name, "n": n, "types": []}
        for t in types_for(name, n):
            # quantize: gguf-py where it can, checked against ggml; ggml otherwise
            if t in ("F16", "BF16", "Q4_0", "Q8_0"):
                q = gguf_quantize(t, x)
                qg = ggml_quantize(t, x)
                assert q == qg, f"{name} {t}: gguf-py and ggml quantize differently"
            else:
                q = ggml_quantize(t, x)
            # dequantize: gguf-py where it can, checked against ggml
            if t == "Q8_K":
                dq = ggml_dequantize(t, q, n)
            else:
                dq = gguf_dequantize(t, q, n)
                if t in ("Q4_0", "Q8_0", "Q4_K", "Q6_K"):
                    dg = ggml_dequantize(t, q, n)
                    assert np.array_equal(dq.view(np.uint32), dg.view(np.uint32)), f"{name} {t}: dequantize differs"
            with open(os.path.join(OUT, f"{name}.{t}.q"), "wb") as fh:
                fh.write(q)
            dq.astype(np.float32).tofile(os.path.join(OUT, f"{name}.{t}.deq.f32"))
            entry["types"].append(t)
        manifest["cases"].append(entry)
    with open(os.path.join(OUT, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(OUT, "*")))
    print(f"wrote {len(manifest['cases'])} cases, {total} bytes to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
