#!/usr/bin/env python3
"""Op-level training oracle: torch float64 autograd gradients of the backward ops that the whole-model
oracle (gen_train_model.py) does not reach on its own: GELU (tanh), SiLU, SwiGLU, GELU (erf),
quick-GELU, causal attention with a sliding window and GQA, non-causal attention, RoPE in both pair
conventions with Phi-3 su/longrope factors and an attention factor, RMSNorm, LayerNorm, softmax,
cross-entropy with ignore_index -100.

Writes tests/fixtures/train_ops/cases.json: {"cases": [{"op", params..., "inputs": {name: [floats]},
"grads": {name: [floats]}}]}. Inputs are float32-representable (drawn in float32, widened), so the
C++ float32 run sees exactly the oracle's inputs. Deterministic (seeded, one thread).
"""
import json
import math
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "train_ops")
assert torch.__version__.startswith("2.3.1"), torch.__version__
torch.manual_seed(1234)
torch.set_num_threads(1)


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float32) * scale).double().requires_grad_(True)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


cases = []


def add(op, params, inputs, out, extra_grads=None):
    g = torch.randn(out.shape, dtype=torch.float32).double()
    (out * g).sum().backward()
    grads = {k: flat(v.grad) for k, v in inputs.items() if v.requires_grad}
    c = {"op": op, **params, "inputs": {k: flat(v) for k, v in inputs.items()}, "dy": flat(g), "grads": grads}
    if extra_grads:
        c.update(extra_grads)
    cases.append(c)


# --- elementwise
n = 301
for op, fn in [
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
    ("gelu_erf", lambda x: F.gelu(x)),
    ("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x)),
    ("silu", F.silu),
]:
    x = rnd(n, scale=3.0)
    add(op, {"n": n}, {"x": x}, fn(x))
g, u = rnd(n, scale=3.0), rnd(n)
add("swiglu", {"n": n}, {"gate": g, "up": u}, F.silu(g) * u)

# --- norms
M, N = 5, 37
x, w = rnd(M, N), rnd(N)
add("rmsnorm", {"M": M, "N": N, "eps": 1e-5}, {"x": x, "w": w},
    x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w)
x, w, b = rnd(M, N), rnd(N), rnd(N)
add("layernorm", {"M": M, "N": N, "eps": 1e-5}, {"x": x, "w": w, "b": b}, F.layer_norm(x, (N,), w, b, 1e-5))

# --- softmax (dx given p = softmax(x))
x = rnd(4, 9)
add("softmax", {"M": 4, "N": 9}, {"x": x}, torch.softmax(x, -1))


# --- attention: q [T, H, D], k, v [T, Hkv, D]
def attention(q, k, v, causal, window, scale):
    T, H, D = q.shape
    G = H // k.shape[1]
    kk = k.repeat_interleave(G, dim=1)
    vv = v.repeat_interleave(G, dim=1)
    s = torch.einsum("ihd,jhd->hij", q, kk) * scale
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    mask = torch.ones(T, T, dtype=torch.bool)
    if causal:
        mask &= j <= i
    if window > 0:
        mask &= j > i - window
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, -1)
    return torch.einsum("hij,jhd->ihd", p, vv)


for T, H, Hkv, D, causal, window in [(13, 4, 2, 8, True, 5), (17, 4, 1, 12, True, 0), (11, 2, 2, 16, False, 0)]:
    q, k, v = rnd(T, H, D), rnd(T, Hkv, D), rnd(T, Hkv, D)
    add("attention", {"T": T, "H": H, "Hkv": Hkv, "D": D, "causal": causal, "window": window},
        {"q": q, "k": k, "v": v}, attention(q, k, v, causal, window, 1.0 / math.sqrt(D)))


# --- RoPE: x [T, H, D], first n_rot dims of each head rotated
def rope(x, pos, theta, n_rot, interleaved, factors, attn_factor):
    half = n_rot // 2
    inv = 1.0 / (theta ** (torch.arange(0, half, dtype=torch.float32) * 2 / n_rot))  # float32 as HF
    if factors is not None:
        inv = inv / torch.tensor(factors, dtype=torch.float32)
    ang = pos.float()[:, None] * inv[None, :]
    c = (torch.cos(ang) * attn_factor).double()[:, None, :]
    s = (torch.sin(ang) * attn_factor).double()[:, None, :]
    y = x.clone()
    if interleaved:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        y[..., 0:n_rot:2] = a * c - b * s
        y[..., 1:n_rot:2] = b * c + a * s
    else:
        a, b = x[..., :half], x[..., half:n_rot]
        y[..., :half] = a * c - b * s
        y[..., half:n_rot] = b * c + a * s
    return y


T, H, D = 7, 3, 16
pos = torch.tensor([0, 1, 2, 5, 9, 100, 2047])
for interleaved, factors, attn_factor in [(False, None, 1.0), (True, None, 1.0),
                                          (False, [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0], 1.19)]:
    x = rnd(T, H, D)
    add("rope", {"T": T, "H": H, "D": D, "n_rot": D, "theta": 10000.0, "interleaved": interleaved,
                 "pos": pos.tolist(), "factors": factors, "attn_factor": attn_factor},
        {"x": x}, rope(x, pos, 10000.0, D, interleaved, factors, attn_factor))

# --- cross-entropy (sum), ignore_index -100
M, V = 6, 11
logits = rnd(M, V, scale=2.0)
targets = torch.tensor([3, -100, 0, 10, -100, 7])
loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
loss.backward()
cases.append({"op": "cross_entropy", "M": M, "V": V, "targets": targets.tolist(),
              "inputs": {"logits": flat(logits)}, "loss": float(loss), "grads": {"logits": flat(logits.grad)}})

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump({"generator": "tests/reference/gen_train_ops.py", "torch": torch.__version__, "cases": cases}, f)
print(f"wrote {len(cases)} cases to {OUT}/cases.json")
