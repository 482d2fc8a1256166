#!/usr/bin/env python3
"""Training reference for the vision path: gradients of the CLIP vision tower and the mlp2x_gelu
projector, from PyTorch autograd in float64.

Writes tests/fixtures/train_vision/:
  <case>.vision.gguf     the tiny tower as our vision GGUF (gguf-py, the names and clip.vision.* keys
                         of docs/MODELS.md, as gen_pipeline.py writes model/vision.gguf), float32
  <case>.proj.gguf       its projector (mm.0.*, mm.2.*), float32, as a plugin file carries it
  manifest.json          the cases (config, vision layer, the GGUF name of every gradient array),
                         and the name, shape and byte offset of every array in data.bin
  data.bin               float32 little-endian arrays, per case:
                           pixels [C, S, S], g [n_patches, H] (the upstream gradient),
                           features [n_patches, hidden] (hidden_states[layer][0, 1:]), y (projector out),
                           grad/<gguf name> for every tower and projector parameter,
                           grad/pixels, dfeatures (d loss / d features)

Oracle: transformers 4.41.2 CLIPVisionModel (output_hidden_states=True) and torch
nn.Sequential(Linear, GELU(), Linear) (LLaVA's mlp2x_gelu), both converted to float64 after the
float32 weights were drawn (so the GGUF holds exactly the oracle's weights), pixels widened too:
  features = hidden_states[layer][0, 1:]     (select_feature='patch'; layer -2 = HealthGPT COM)
  loss     = sum(projector(features) * g)
and loss.backward(). Parameters the loss does not reach (the last block when layer = -2,
post_layernorm) get zero gradients: our backward must leave them untouched. The key biases'
gradients are zero by symmetry (softmax ignores a per-row shift) and are written as exact zeros;
manifest "zero_by_symmetry" names, for each, the tensor whose gradient scale the test measures
ours against.

Cases:
  a  image 28 / patch 14 (2x2 grid + CLS), hidden 32, 4 heads, 3 blocks, ff 64, quick_gelu, layer -2
  b  image 42 / patch 14 (3x3 grid + CLS), hidden 32, 4 heads, 2 blocks, ff 48, gelu (erf), layer -1
Deterministic: fixed seeds, CPU, one thread.
"""
import json
import os
import sys

import gguf
import numpy as np
import torch
import torch.nn as nn
import transformers
from transformers import CLIPVisionConfig, CLIPVisionModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "train_vision")

assert transformers.__version__ == "4.41.2", transformers.__version__
assert torch.__version__.startswith("2.3.1"), torch.__version__
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

PROJ_OUT = 48  # the projector's width (the text model's hidden size)


class Blob:
    """Collects named float32 arrays into one file plus a manifest (as gen_vision.py)."""

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


def f32(t):
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


PARTS = {"layer_norm1": "ln1", "layer_norm2": "ln2", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
         "self_attn.v_proj": "attn_v", "self_attn.out_proj": "attn_out", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}


def gguf_name(key):
    """Our GGUF name of a CLIPVisionModel state_dict key (docs/MODELS.md), None for unused keys."""
    s = key[len("vision_model."):]
    if s == "embeddings.patch_embedding.weight":
        return "v.patch_embd.weight"
    if s == "embeddings.class_embedding":
        return "v.class_embd"
    if s == "embeddings.position_embedding.weight":
        return "v.position_embd.weight"
    if s.startswith("pre_layrnorm."):
        return "v.pre_ln." + s.split(".")[-1]
    if s.startswith("encoder.layers."):
        layer, rest = s[len("encoder.layers."):].split(".", 1)
        mod, kind = rest.rsplit(".", 1)
        return f"v.blk.{layer}.{PARTS[mod]}.{kind}"
    return None  # post_layernorm, position_ids: not part of the tower HealthGPT runs


def write_vision(path, clip):
    cfg = clip.config
    w = gguf.GGUFWriter(path, "clip")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_llava_projector", False)
    w.add_bool("clip.use_gelu", cfg.hidden_act == "gelu")
    w.add_uint32("clip.vision.image_size", cfg.image_size)
    w.add_uint32("clip.vision.patch_size", cfg.patch_size)
    w.add_uint32("clip.vision.embedding_length", cfg.hidden_size)
    w.add_uint32("clip.vision.feed_forward_length", cfg.intermediate_size)
    w.add_uint32("clip.vision.block_count", cfg.num_hidden_layers)
    w.add_uint32("clip.vision.attention.head_count", cfg.num_attention_heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", cfg.layer_norm_eps)
    w.add_uint32("clip.vision.projection_dim", cfg.hidden_size)
    for k, t in clip.state_dict().items():
        name = gguf_name(k)
        if name is not None:
            w.add_tensor(name, f32(t))
    finish(w)


def write_projector(path, proj):
    w = gguf.GGUFWriter(path, "phi3")
    w.add_string("general.type", "adapter")
    w.add_string("healthgpt.plugin.projector_type", "mlp2x_gelu")
    w.add_tensor("mm.0.weight", f32(proj[0].weight))
    w.add_tensor("mm.0.bias", f32(proj[0].bias))
    w.add_tensor("mm.2.weight", f32(proj[2].weight))
    w.add_tensor("mm.2.bias", f32(proj[2].bias))
    finish(w)


def randomise(module, g):
    """Every parameter random (HF init leaves LN at 1/0 and biases at 0, which would hide their
    gradients' use of the forward values), at scales that keep activations O(1)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "layer_norm" in name or "layrnorm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:  # biases, class embedding
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def gen_case(blob, tag, cfg_kwargs, layer, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    cfg = CLIPVisionConfig(**cfg_kwargs)
    clip = CLIPVisionModel(cfg).eval()
    randomise(clip.vision_model, g)
    proj = nn.Sequential(nn.Linear(cfg.hidden_size, PROJ_OUT), nn.GELU(), nn.Linear(PROJ_OUT, PROJ_OUT)).eval()
    randomise(proj, g)
    n_patches = (cfg.image_size // cfg.patch_size) ** 2
    pixels = torch.randn(cfg.num_channels, cfg.image_size, cfg.image_size, generator=g)
    upstream = torch.randn(n_patches, PROJ_OUT, generator=g)

    # The files hold the float32 weights; the oracle runs on exactly those values in float64.
    write_vision(os.path.join(OUT, f"{tag}.vision.gguf"), clip)
    write_projector(os.path.join(OUT, f"{tag}.proj.gguf"), proj)
    clip = clip.double()
    proj = proj.double()

    px = pixels.double().unsqueeze(0).requires_grad_(True)
    hs = clip(pixel_values=px, output_hidden_states=True).hidden_states
    assert len(hs) == cfg.num_hidden_layers + 1
    features = hs[layer][0, 1:, :]
    features.retain_grad()
    y = proj(features)
    loss = (y * upstream.double()).sum()
    loss.backward()

    grads = {}
    for k, p in clip.state_dict(keep_vars=True).items():
        name = gguf_name(k)
        if name is None:
            continue
        grads[name] = p.grad if p.grad is not None else torch.zeros_like(p)
    for k, p in proj.named_parameters():
        grads[f"mm.{k}"] = p.grad
    n_unreached = sum(1 for n, t in grads.items() if not t.abs().max() > 0)
    # hidden_states[k] is the output of block k: blocks k+1..N (16 tensors each) get no gradient,
    # everything else must.
    k = layer % (cfg.num_hidden_layers + 1)
    expect_unreached = 16 * (cfg.num_hidden_layers - k)
    assert n_unreached == expect_unreached, (tag, n_unreached, expect_unreached)

    unreached = sorted(n for n, t in grads.items() if not t.abs().max() > 0)
    # The key bias shifts every score of a query row by the same q·b_k, which softmax ignores: its
    # true gradient is exactly zero (float64 leaves ~1e-16). The test measures ours against the
    # scale of the same block's key-weight gradient instead of its own (zero) maximum.
    zero_by_symmetry = {}
    for i in range(k):
        kb, kw = f"v.blk.{i}.attn_k.bias", f"v.blk.{i}.attn_k.weight"
        assert grads[kb].abs().max() < 1e-12 * grads[kw].abs().max(), (tag, kb)
        zero_by_symmetry[kb] = kw
        grads[kb] = torch.zeros_like(grads[kb])

    blob.add(f"{tag}/pixels", pixels)
    blob.add(f"{tag}/g", upstream)
    blob.add(f"{tag}/features", features)
    blob.add(f"{tag}/y", y)
    blob.add(f"{tag}/dfeatures", features.grad)
    blob.add(f"{tag}/grad/pixels", px.grad[0])
    for name, t in grads.items():
        blob.add(f"{tag}/grad/{name}", t)
    return {
        "image_size": cfg.image_size, "patch_size": cfg.patch_size, "num_channels": cfg.num_channels,
        "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers, "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act, "layer": layer, "projector_out": PROJ_OUT,
        "vision_gguf": f"{tag}.vision.gguf", "projector_gguf": f"{tag}.proj.gguf",
        "params": sorted(grads.keys()), "unreached": unreached,
        "zero_by_symmetry": zero_by_symmetry, "loss": loss.item(),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    blob = Blob()
    manifest = {"generator": "tests/reference/gen_train_vision.py",
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "gguf": getattr(gguf, "__version__", "0.10.0")},
                "cases": {}}
    manifest["cases"]["a"] = gen_case(blob, "a", dict(
        image_size=28, patch_size=14, num_channels=3, hidden_size=32, num_attention_heads=4,
        num_hidden_layers=3, intermediate_size=64, layer_norm_eps=1e-5, hidden_act="quick_gelu"), layer=-2, seed=777)
    manifest["cases"]["b"] = gen_case(blob, "b", dict(
        image_size=42, patch_size=14, num_channels=3, hidden_size=32, num_attention_heads=4,
        num_hidden_layers=2, intermediate_size=48, layer_norm_eps=1e-5, hidden_act="gelu"), layer=-1, seed=888)
    manifest["arrays"] = blob.entries
    tmp = os.path.join(OUT, "data.bin.tmp")
    with open(tmp, "wb") as f:
        for p in blob.parts:
            f.write(p)
    os.replace(tmp, os.path.join(OUT, "data.bin"))
    tmp = os.path.join(OUT, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(OUT, "manifest.json"))
    print(f"wrote {len(blob.entries)} arrays, {blob.offset} bytes to {os.path.relpath(OUT)}")


if __name__ == "__main__":
    sys.exit(main())
