#!/usr/bin/env python3
"""Reference outputs for the vision path: CLIP vision tower, mlp2x_gelu projector, H-LoRA linear.

Writes tests/fixtures/vision/{manifest.json,data.bin}. data.bin is a concatenation of float32
little-endian arrays; manifest.json names each array with its shape and byte offset, and records
the configs. Tensor names of model weights are the GGUF names our loader binds (docs/MODELS.md).

Oracles:
  - CLIP: transformers' own CLIPVisionModel (4.41.2) with random weights, output_hidden_states=True;
    every hidden_states[k] with the CLS row dropped (what HealthGPT's select_feature='patch' does).
  - projector: torch nn.Sequential(Linear, GELU(), Linear), exactly LLaVA's mlp2x_gelu builder.
  - H-LoRA: a torch module written from the specification (healthgpt-reference.md §4.3), checked in
    this script against a second formulation (per-expert sum s·Σ_j g_j·B_j·A_j·x).

Deterministic: fixed seeds, CPU, fp32 (plus explicitly rounded BF16/F16 weight variants).
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import transformers
from transformers import CLIPVisionConfig, CLIPVisionModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "vision")

assert transformers.__version__ == "4.41.2", transformers.__version__
assert torch.__version__.startswith("2.3.1"), torch.__version__
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


class Blob:
    """Collects named float32 arrays into one file plus a manifest."""

    def __init__(self):
        self.parts = []
        self.entries = {}
        self.offset = 0

    def add(self, name, t):
        a = t.detach().to(torch.float32).contiguous().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
        a = np.ascontiguousarray(a, dtype="<f4")
        assert name not in self.entries, name
        self.entries[name] = {"shape": list(a.shape), "offset": self.offset}
        self.parts.append(a.tobytes())
        self.offset += a.nbytes


def round_to(t, dtype):
    """Rounds a float32 tensor to dtype (round to nearest even) and back to float32."""
    return t.to(dtype).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# CLIP vision tower

# Weights are stored under their transformers state_dict keys (CLIPVisionModel: "vision_model.…"),
# so the C++ test exercises our HF -> GGUF name mapping (clip_gguf_name) as the converter will.

def vit_l14_336_keys():
    """Every state_dict key and shape of the real openai/clip-vit-large-patch14-336 vision tower
    (the CLIPVisionModel HealthGPT builds), from transformers itself on the meta device."""
    cfg = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                           num_attention_heads=16, num_hidden_layers=24, projection_dim=768,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5)
    with torch.device("meta"):
        m = CLIPVisionModel(cfg)
    return {k: list(v.shape) for k, v in m.state_dict().items()}


def gen_clip(blob, tag, cfg_kwargs, seed):
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(**cfg_kwargs)
    model = CLIPVisionModel(cfg).eval()
    # Randomise every parameter with a scale that keeps activations O(1) but makes LayerNorm
    # affine params, biases and embeddings all matter (HF init leaves LN at 1/0 and biases at 0).
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.vision_model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif "layer_norm" in name or "layrnorm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:  # biases, class embedding
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    pixels = torch.randn(1, cfg.num_channels, cfg.image_size, cfg.image_size, generator=g)

    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def run():
        with torch.no_grad():
            out = model(pixel_values=pixels, output_hidden_states=True)
        hs = out.hidden_states
        assert len(hs) == cfg.num_hidden_layers + 1
        return [h[0, 1:, :].clone() for h in hs]  # drop CLS (select_feature='patch')

    hs32 = run()
    # F16 weights: every tensor of 2+ dims rounded to float16 (what the converter writes for
    # matrices and the conv), 1-D tensors (norms, biases, class embedding) kept float32.
    with torch.no_grad():
        for p in model.vision_model.parameters():
            if p.dim() >= 2:
                p.copy_(round_to(p, torch.float16))
    hs16 = run()

    meta = {
        "image_size": cfg.image_size, "patch_size": cfg.patch_size, "num_channels": cfg.num_channels,
        "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers, "intermediate_size": cfg.intermediate_size,
        "layer_norm_eps": cfg.layer_norm_eps, "hidden_act": cfg.hidden_act,
        "weights": sorted(weights.keys()),
    }
    for n, w in weights.items():
        blob.add(f"{tag}/hf/{n}", w)
    blob.add(f"{tag}/pixels", pixels[0])
    for k, h in enumerate(hs32):
        blob.add(f"{tag}/hidden.{k}", h)
    for k, h in enumerate(hs16):
        blob.add(f"{tag}/hidden_f16w.{k}", h)
    return meta, hs32


# ---------------------------------------------------------------------------------------------
# Projector (LLaVA mlp2x_gelu): Linear(d_vis -> H), GELU (erf), Linear(H -> H)

def gen_projector(blob, tag, x, d_out, seed):
    torch.manual_seed(seed)
    d_in = x.shape[-1]
    proj = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in proj.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        weights = {f"mm.{k.split('.')[0]}.{k.split('.')[1]}": v.clone() for k, v in proj.state_dict().items()}
        y32 = proj(x)
        for p in proj.parameters():  # the released plugins are BF16
            p.copy_(round_to(p, torch.bfloat16))
        y_bf16w = proj(x)
    for n, w in weights.items():
        blob.add(f"{tag}/{n}", w)
    blob.add(f"{tag}/x", x)
    blob.add(f"{tag}/y", y32)
    blob.add(f"{tag}/y_bf16w", y_bf16w)
    return {"d_in": d_in, "d_out": d_out, "rows": x.shape[0], "weights": sorted(weights.keys())}


# ---------------------------------------------------------------------------------------------
# H-LoRA linear, from the specification (healthgpt-reference.md §4.2-4.3):
#   g = softmax(R x) over n experts; a = s * (A x); g_hat = repeat_interleave(g, r/n);
#   y = W x + b + B (g_hat * a),  s = alpha * n / r

class HLoraLinearSpec(nn.Module):
    def __init__(self, d_in, d_out, r, n, alpha, bias):
        super().__init__()
        assert r % n == 0
        self.base = nn.Linear(d_in, d_out, bias=bias)
        self.route = nn.Linear(d_in, n, bias=False)
        self.A = nn.Linear(d_in, r, bias=False)
        self.B = nn.Linear(r, d_out, bias=False)
        self.n, self.r, self.t = n, r, r // n
        self.s = alpha * n / r

    def forward(self, x):
        y = self.base(x)
        g = torch.softmax(self.route(x), dim=-1).to(y.dtype)
        a = self.A(x) * self.s
        return y + self.B(g.repeat_interleave(self.t, dim=-1) * a)

    def forward_per_expert(self, x):
        """The same map written as a sum over experts, as an internal cross-check."""
        y = self.base(x)
        g = torch.softmax(self.route(x), dim=-1)
        for j in range(self.n):
            Aj = self.A.weight[j * self.t:(j + 1) * self.t]        # [t, in]
            Bj = self.B.weight[:, j * self.t:(j + 1) * self.t]     # [out, t]
            y = y + self.s * g[:, j:j + 1] * ((x @ Aj.T) @ Bj.T)
        return y


def gen_hlora(blob, tag, d_in, d_out, r, n, alpha, bias, rows_list, seed):
    torch.manual_seed(seed)
    m = HLoraLinearSpec(d_in, d_out, r, n, alpha, bias).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        m.base.weight.copy_(torch.randn(d_out, d_in, generator=g) / d_in ** 0.5)
        if bias:
            m.base.bias.copy_(0.1 * torch.randn(d_out, generator=g))
        # Router logits of a few units so the gate is far from uniform; a non-zero B (trained).
        m.route.weight.copy_(2.0 * torch.randn(n, d_in, generator=g) / d_in ** 0.5)
        m.A.weight.copy_(torch.randn(r, d_in, generator=g) / d_in ** 0.5)
        m.B.weight.copy_(0.5 * torch.randn(d_out, r, generator=g) / r ** 0.5)
    names = {"base.weight": "weight", "base.bias": "bias", "route.weight": "hlora_route",
             "A.weight": "hlora_a", "B.weight": "hlora_b"}
    for k, v in m.state_dict().items():
        blob.add(f"{tag}/{names[k]}", v)
    meta = {"d_in": d_in, "d_out": d_out, "rank": r, "experts": n, "alpha": alpha, "scaling": m.s,
            "bias": bias, "rows": rows_list}
    for M in rows_list:
        x = torch.randn(M, d_in, generator=g)
        with torch.no_grad():
            y = m(x)
            y2 = m.forward_per_expert(x)
            err = (y - y2).abs().max().item()
            assert err < 1e-4, f"{tag}: spec formulations disagree by {err}"
            base = m.base(x)
            # BF16 weights (as released), fp32 compute: the engine's own arithmetic.
            mb = HLoraLinearSpec(d_in, d_out, r, n, alpha, bias).eval()
            mb.load_state_dict({k: round_to(v, torch.bfloat16) for k, v in m.state_dict().items()})
            y_bf16w = mb(x)
            # The whole module in bfloat16 (weights, activations, accumulation as torch does it on CPU):
            # how far a reduced-precision run of the reference sits from ours.
            y_bf16 = mb.to(torch.bfloat16)(x.to(torch.bfloat16)).to(torch.float32)
        blob.add(f"{tag}/x.{M}", x)
        blob.add(f"{tag}/y.{M}", y)
        blob.add(f"{tag}/base.{M}", base)
        blob.add(f"{tag}/y_bf16w.{M}", y_bf16w)
        blob.add(f"{tag}/y_bf16.{M}", y_bf16)
    return meta


def main():
    os.makedirs(OUT, exist_ok=True)
    blob = Blob()
    manifest = {"generator": "tests/reference/gen_vision.py",
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "clip": {}, "projector": {}, "hlora": {}}

    # A: the ViT-L/14 recipe shrunk (patch 14, quick_gelu); 4x4 grid -> 16 patches + CLS.
    meta_a, hs_a = gen_clip(blob, "clip_a", dict(
        image_size=56, patch_size=14, num_channels=3, hidden_size=64, num_attention_heads=4,
        num_hidden_layers=5, intermediate_size=128, layer_norm_eps=1e-5, hidden_act="quick_gelu"), seed=1234)
    manifest["clip"]["clip_a"] = meta_a
    # B: other shapes (patch 7, 5x5 grid, head_dim 16, 3 heads) and exact GELU (clip.use_gelu = true).
    meta_b, _ = gen_clip(blob, "clip_b", dict(
        image_size=35, patch_size=7, num_channels=3, hidden_size=48, num_attention_heads=3,
        num_hidden_layers=3, intermediate_size=96, layer_norm_eps=1e-5, hidden_act="gelu"), seed=4321)
    manifest["clip"]["clip_b"] = meta_b
    manifest["clip"]["vit_l14_336_keys"] = vit_l14_336_keys()

    # Projector on the features HealthGPT's comprehension path feeds it: clip_a hidden_states[-2].
    manifest["projector"]["proj_a"] = gen_projector(blob, "proj_a", hs_a[-2], d_out=96, seed=99)

    # H-LoRA on linears shaped like Phi-3's (fused qkv: out = 3*hidden; fused gate_up: out = 2*ff;
    # down: in = ff) at a tiny scale; n = 4 experts as released, s = alpha*n/r.
    hl = manifest["hlora"]
    hl["qkv"] = gen_hlora(blob, "qkv", d_in=96, d_out=3 * 96, r=16, n=4, alpha=32, bias=False, rows_list=[1, 9], seed=7)
    hl["gate_up"] = gen_hlora(blob, "gate_up", d_in=96, d_out=2 * 160, r=64, n=4, alpha=128, bias=False,
                              rows_list=[1, 9], seed=8)
    hl["down"] = gen_hlora(blob, "down", d_in=160, d_out=96, r=16, n=4, alpha=16, bias=True, rows_list=[1, 9],
                           seed=9)

    manifest["arrays"] = blob.entries
    with open(os.path.join(OUT, "data.bin"), "wb") as f:
        for p in blob.parts:
            f.write(p)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(blob.entries)} arrays, {blob.offset} bytes to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    sys.exit(main())
