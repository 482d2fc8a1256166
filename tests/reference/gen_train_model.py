#!/usr/bin/env python3
"""Training oracle for the WHOLE tiny HealthGPT: gradients and a 20-step AdamW trajectory.

Writes tests/fixtures/train_model/ (one manifest.json, per case a folder):
  <case>/model/text.gguf, vision.gguf, plugins/com.gguf   the model folder (gguf-py, our names,
                              F32); load it with hg::Model::load and ModelOptions.vq_vocabulary = false
                              (no VQ vocabulary extension anywhere in this oracle)
  <case>/pixels_<k>.f32       example k's CLIP input: float32 little-endian [3, S, S], C order, already
                              normalised (preprocessing is not under test here)
  <case>/expected.f64         float64 little-endian values, concatenated
  <case>/expected.f32         float32 little-endian values, concatenated
  manifest.json               everything else (see below)

Cases: phi3_gqa (Phi3ForCausalLM, 4 heads / 2 KV heads, fused qkv_proj = q rows, k rows, v rows;
gate_up_proj = gate rows, up rows; H-LoRA on qkv/o/gate_up/down) and qwen2 (Qwen2ForCausalLM,
q/k/v biases, 4/2 heads, tied embeddings as Qwen2.5-0.5B..3B: no output.weight, the head is
token_embd.weight; H-LoRA on q/k/v/o/gate/up/down). Both: CLIP tower 42 px, patch 14 (9 patches),
hidden 16, 3 blocks, quick_gelu; vision layer -2 (hidden_states[-2] = the output of block 1, CLS
row dropped), so block 2 of the tower never reaches the loss; mlp2x_gelu projector (exact GELU).

manifest.json: {"cases": {name: case}} with, per case,
  "model": folder, "load": {"vq_vocabulary": false, "plugin": "com"}, "hparams": {...}
  "examples": [ {"ids": [...] (-200 = the image slot), "labels": [...] (aligned with ids; -100 =
      ignored; -100 at the slot), "pixels": file, "positions": L (after splicing),
      "spliced_labels": [...] (length L: the slot expanded to n_patches entries of -100)} x 2 ]
  "text_examples": the same two examples with the image slot (and its label) removed (grads_full)
  "blobs": {"f64": file, "f32": file}
  "grads_lora": {"loss": float64 loss, "loss_f32": torch float32 loss, "n_label_tokens": count,
      "tensors": [T...]}   (T = {"name", "shape" (PyTorch order), "blob": "f64"|"f32", "offset"
      (IN ELEMENTS into that blob), "count", "max_abs", "f32_max_abs_err" (torch float32 run's max
      |difference| from float64: the scale of float32 rounding), "reached" (false: no path to the
      loss, gradient exactly 0), "zero_in_exact_arithmetic" (true: CLIP's v.blk.*.attn_k.bias, whose
      gradient is 0 mathematically, softmax being shift-invariant per query row: compare it with an
      absolute tolerance, e.g. against the other tensors' scale)})
  "grads_full": the same for every decoder parameter, no plugin, on "text_examples"
  "trajectory": {"optimizer": ..., "param_groups": [{"name", "lr", "tensors": [names]}],
      "float64": {"loss": [20], "lr": [20][groups], "grad_norm": [20], "final_loss", "final": [T...]},
      "float32": the same for the torch float32 run, "final" in the f32 blob}

Conventions (HF / LLaVA semantics):
  - splicing: embeds = concat(E[ids before the slot], projector(vision(pixels)) [9, E], E[ids after]),
    positions 0..L-1 contiguous per example;
  - loss: logits[t] predicts spliced_labels[t+1]; cross-entropy (log-softmax over the full vocabulary
    rows of the file) averaged over every (example, t) whose target is not -100, the two examples
    of the batch pooled (one mean, not a mean of means); padding counts nowhere. The batch is run
    right-padded with an attention mask, and the script asserts it equals the per-example sum / count;
  - grads_lora: trainable = every vision tensor of vision.gguf, mm.*, every hlora_{a,b,route}; the
    decoder base frozen. grads_full: every decoder tensor of text.gguf trainable, no plugin (qwen2:
    token_embd.weight's gradient holds both its uses, lookup and head);
  - trajectory: the reached tensors of grads_lora's set (the unreached vision block 2 is NOT given to
    the optimiser: it stays as in the file); torch.optim.AdamW(groups [hlora lr 1e-3, projector +
    vision lr 2e-4], betas (0.9, 0.999), eps 1e-8, weight_decay 0.01 on every tensor, amsgrad off,
    foreach=False); transformers' get_cosine_schedule_with_warmup(3, 20) (so the lr of step 0 is 0);
    per step: zero grads, loss, backward, total = clip_grad_norm_(all trainable, max_norm 1.0) (the
    2-norm over all tensors together, before clipping; grads scaled by min(1, 1/(total + 1e-6))),
    record loss / lr / total, optimizer.step(), scheduler.step(); the same batch every step.
    "final_loss" is the loss after the 20th update. float32 run: the same from the same float32
    initial values, everything in float32.
  - float64 oracle: every parameter and pixel widened from the float32 values in the files; the
    attention softmax that transformers' Phi-3/Qwen2 take in float32 is taken in float64 (a patched
    F.softmax during float64 runs only), so is their RMSNorm (which widens to float32, i.e. narrows
    float64), and logits / loss are computed from the model's hidden
    states in float64 (transformers casts logits to float32). Rotary cos/sin are transformers'
    float32 values either way.
Initial values: gen_pipeline's randomise() and HLoraLinear, except (1) every hlora_b is scaled by
B_SCALE = 0.2 (at gen_pipeline's size the 20 AdamW steps are chaotic: torch float32 and float64
part by ~0.1 in the loss after 10 steps; at 0.2 they agree to ~1e-6 over 20 steps), (2) qwen2's tied
embedding rows have the head's scale 1/sqrt(E) instead of unit rows.
Asserts: the H-LoRA module (gen_pipeline.HLoraLinear) against a per-expert formula; a hand-written
decoder (explicit q/k/v row split of the fused qkv, gate-first gate_up, rotate-half RoPE, GQA) against
transformers' logits; batched loss against per-example; every stored name and initial value against
the GGUF files read back with gguf-py. Deterministic: fixed seeds, one thread, deterministic algorithms.
"""
import contextlib
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_pipeline as gp  # noqa: E402  (import only: constants, vocabulary, H-LoRA, writers; its main() is not run)

import gguf  # noqa: E402
import transformers  # noqa: E402
from transformers import (CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3ForCausalLM, Qwen2Config,  # noqa: E402
                          Qwen2ForCausalLM, get_cosine_schedule_with_warmup)

OUT = os.path.join(HERE, "..", "fixtures", "train_model")
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

E, FF, LAYERS, HEADS, KV_HEADS = 32, 64, 2, 4, 2
IMG, PATCH = 42, 14
VIS_H, VIS_FF, VIS_LAYERS, VIS_HEADS = 16, 32, 3, 2
RANK, EXPERTS, ALPHA = 8, 4, 16.0
VISION_LAYER = -2
IMAGE_TOKEN, IGNORE = -200, -100
STEPS, WARMUP = 20, 3
LR_HLORA, LR_REST = 1e-3, 2e-4
SEED = 31337
B_SCALE = 0.2

TARGETS = {
    "phi3": [("self_attn", "qkv_proj", "attn_qkv"), ("self_attn", "o_proj", "attn_output"),
             ("mlp", "gate_up_proj", "ffn_up"), ("mlp", "down_proj", "ffn_down")],
    "qwen2": [("self_attn", "q_proj", "attn_q"), ("self_attn", "k_proj", "attn_k"), ("self_attn", "v_proj", "attn_v"),
              ("self_attn", "o_proj", "attn_output"), ("mlp", "gate_proj", "ffn_gate"), ("mlp", "up_proj", "ffn_up"),
              ("mlp", "down_proj", "ffn_down")],
}
CLIP_PARTS = {"layer_norm1": "ln1", "layer_norm2": "ln2", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.out_proj": "attn_out", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}


# ---------------------------------------------------------------------------------------------
# float64 runs: transformers' attention softmax in float64 too, the causal mask in the run's dtype

_softmax = F.softmax


def _softmax_f64(x, dim=None, _stacklevel=3, dtype=None):
    if dtype == torch.float32 and x.dtype == torch.float64:
        dtype = None
    return _softmax(x, dim=dim, _stacklevel=_stacklevel, dtype=dtype)


def _rms_norm_f64(self, hidden_states):
    # transformers' RMSNorm widens to float32 (a narrowing for float64 inputs): keep float64 instead
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


_RMS_CLASSES = [transformers.models.phi3.modeling_phi3.Phi3RMSNorm, transformers.models.qwen2.modeling_qwen2.Qwen2RMSNorm]
_RMS_FORWARD = [c.forward for c in _RMS_CLASSES]


@contextlib.contextmanager
def precision(dtype):
    torch.set_default_dtype(dtype)
    if dtype == torch.float64:
        F.softmax = _softmax_f64
        for c in _RMS_CLASSES:
            c.forward = _rms_norm_f64
    try:
        yield
    finally:
        F.softmax = _softmax
        for c, f in zip(_RMS_CLASSES, _RMS_FORWARD):
            c.forward = f
        torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------------------------------
# GGUF names

def vision_name(key):
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
        return f"v.blk.{layer}.{CLIP_PARTS[mod]}.{kind}"
    return None  # post_layernorm: not in our files, not used by HealthGPT


def decoder_names(lm, arch):
    """[(gguf name, parameter)] of a decoder without plugin, in state-dict order (tied head once)."""
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.PHI3 if arch == "phi3" else gguf.MODEL_ARCH.QWEN2, LAYERS)
    out = []
    for name, p in lm.named_parameters():  # named_parameters lists a tied parameter once
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new is not None, name
        out.append((new, p))
    return out


def hlora_names(lm, arch):
    out = []
    for l, layer in enumerate(lm.model.layers):
        for parent, mod, ours in TARGETS[arch]:
            h = getattr(getattr(layer, parent), mod)
            out += [(f"blk.{l}.{ours}.hlora_a", h.A.weight), (f"blk.{l}.{ours}.hlora_b", h.B.weight),
                    (f"blk.{l}.{ours}.hlora_route", h.route.weight)]
    return out


def projector_names(proj):
    return [("mm.0.weight", proj[0].weight), ("mm.0.bias", proj[0].bias), ("mm.2.weight", proj[2].weight),
            ("mm.2.bias", proj[2].bias)]


def clip_names(clip):
    return [(vision_name(k), p) for k, p in clip.named_parameters() if vision_name(k) is not None]


# ---------------------------------------------------------------------------------------------
# writers (gen_pipeline's, generalised to qwen2)

def write_text(path, lm, arch, tokens, scores, types, chat, n_rows, stops):
    cfg = lm.config
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"healthgpt train test {arch}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    if arch == "phi3":
        w.add_rope_scaling_orig_ctx_len(cfg.original_max_position_embeddings)
        w.add_sliding_window(cfg.sliding_window)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    pad = n_rows - len(tokens)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens + [f"[PAD{i}]" for i in range(len(tokens), n_rows)])
    w.add_token_scores(scores + [-10000.0] * pad)
    w.add_token_types(types + [gguf.TokenType.UNUSED] * pad)
    w.add_bos_token_id(1)
    w.add_eos_token_id(chat["<|endoftext|>"])
    w.add_unk_token_id(0)
    w.add_pad_token_id(chat["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_string("healthgpt.chat_template", "phi3_instruct" if arch == "phi3" else "qwen_2")
    w.add_array("healthgpt.stop_token_ids", stops)
    for name, p in decoder_names(lm, arch):
        w.add_tensor(name, gp.f32(p))
    gp.finish(w)


def write_plugin(path, lm, arch, proj):
    w = gguf.GGUFWriter(path, arch)
    w.add_string("general.type", "adapter")
    w.add_name(f"healthgpt train test {arch} comprehension plugin")
    w.add_string("healthgpt.plugin.task", "comprehension")
    w.add_int32("healthgpt.plugin.vision_layer", VISION_LAYER)
    w.add_uint32("healthgpt.plugin.rank", RANK)
    w.add_float32("healthgpt.plugin.alpha", ALPHA)
    w.add_uint32("healthgpt.plugin.experts", EXPERTS)
    w.add_string("healthgpt.plugin.projector_type", "mlp2x_gelu")
    w.add_string("healthgpt.plugin.base_architecture", arch)
    for name, p in hlora_names(lm, arch) + projector_names(proj):
        w.add_tensor(name, gp.f32(p))
    gp.finish(w)


def gguf_tensors(path):
    r = gguf.GGUFReader(path)
    return {t.name: np.array(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in r.tensors}


# ---------------------------------------------------------------------------------------------
# checks

@torch.no_grad()
def check_hlora(h, g):
    """gen_pipeline.HLoraLinear against y = Wx + b + s·Σ_j g_j·B_j·(A_j·x), per expert, float64."""
    h = copy.deepcopy(h).double()
    x = torch.randn(5, h.A.weight.shape[1], generator=g, dtype=torch.float64)
    y = h(x)
    gate = torch.softmax(x @ h.route.weight.T, -1)
    t = h.t
    ref = h.base(x)
    for j in range(gate.shape[1]):
        Aj, Bj = h.A.weight[j * t:(j + 1) * t], h.B.weight[:, j * t:(j + 1) * t]
        ref = ref + h.s * gate[:, j:j + 1] * ((x @ Aj.T) @ Bj.T)
    assert h.s == ALPHA * EXPERTS / RANK
    err = (y - ref).abs().max().item()
    assert err < 1e-12, err


@torch.no_grad()
def manual_logits(lm, arch, x):
    """A hand-written decoder over embeddings x [L, E] (float64, no plugin): the layout our C++ assumes."""
    cfg = lm.config
    L = x.shape[0]
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    eps = cfg.rms_norm_eps
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))  # float32, as HF
    ang = torch.outer(torch.arange(L).float(), inv)
    cos, sin = torch.cat([ang, ang], -1).cos().double(), torch.cat([ang, ang], -1).sin().double()

    def rms(v, wt):
        return wt * (v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps))

    def rope(v):  # [L, heads, D]
        rot = torch.cat([-v[..., D // 2:], v[..., :D // 2]], -1)
        return v * cos[:, None] + rot * sin[:, None]

    mask = torch.triu(torch.full((L, L), float("-inf"), dtype=torch.float64), 1)
    for layer in lm.model.layers:
        a = layer.self_attn
        hN = rms(x, layer.input_layernorm.weight)
        if arch == "phi3":
            qkv = hN @ a.qkv_proj.weight.T
            q, k, v = qkv[:, :H * D], qkv[:, H * D:H * D + KV * D], qkv[:, H * D + KV * D:]  # q rows, k rows, v rows
        else:
            q, k, v = a.q_proj(hN), a.k_proj(hN), a.v_proj(hN)
        q, k, v = rope(q.view(L, H, D)), rope(k.view(L, KV, D)), v.view(L, KV, D)
        o = torch.empty(L, H, D, dtype=torch.float64)
        for hh in range(H):
            kh = hh // (H // KV)  # GQA: query head hh reads KV head hh / (H / KV)
            s = q[:, hh] @ k[:, kh].T / math.sqrt(D) + mask
            o[:, hh] = torch.softmax(s, -1) @ v[:, kh]
        x = x + o.reshape(L, H * D) @ a.o_proj.weight.T
        hN = rms(x, layer.post_attention_layernorm.weight)
        m = layer.mlp
        if arch == "phi3":
            gu = hN @ m.gate_up_proj.weight.T
            gate, up = gu[:, :cfg.intermediate_size], gu[:, cfg.intermediate_size:]  # gate rows first
        else:
            gate, up = hN @ m.gate_proj.weight.T, hN @ m.up_proj.weight.T
        x = x + (F.silu(gate) * up) @ m.down_proj.weight.T
    return rms(x, lm.model.norm.weight) @ lm.lm_head.weight.T


# ---------------------------------------------------------------------------------------------
# the loss

def embed_example(lm, clip, proj, ids, pixels):
    emb = lm.get_input_embeddings()
    parts, chunk = [], []
    for t in ids + [None]:
        if t is None or t == IMAGE_TOKEN:
            if chunk:
                parts.append(emb(torch.tensor(chunk)))
            chunk = []
            if t == IMAGE_TOKEN:
                hs = clip(pixel_values=pixels[None], output_hidden_states=True).hidden_states
                parts.append(proj(hs[VISION_LAYER][0, 1:, :]))
        else:
            chunk.append(t)
    return torch.cat(parts, 0)


def batch_loss(lm, clip, proj, examples, pixels, pad_id, dtype, check=False):
    """HF semantics: right-padded batch, logits[t] -> labels[t+1], one mean over the batch's targets."""
    with precision(dtype):
        xs = [embed_example(lm, clip, proj, ex["ids"], pixels[k] if pixels else None) for k, ex in enumerate(examples)]
        Lmax = max(x.shape[0] for x in xs)
        pad = lm.get_input_embeddings()(torch.tensor([pad_id]))
        X = torch.stack([torch.cat([x, pad.expand(Lmax - x.shape[0], -1)], 0) for x in xs])
        mask = torch.tensor([[1] * x.shape[0] + [0] * (Lmax - x.shape[0]) for x in xs])
        labels = torch.tensor([ex["spliced_labels"] + [IGNORE] * (Lmax - len(ex["spliced_labels"])) for ex in examples])
        hidden = lm.model(inputs_embeds=X, attention_mask=mask, use_cache=False).last_hidden_state
        logits = lm.lm_head(hidden)  # in the run's dtype (HF's forward would cast to float32)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=IGNORE)
        if check:
            with torch.no_grad():
                total, count = 0.0, 0
                for x, ex in zip(xs, examples):
                    lg = lm(inputs_embeds=x[None], use_cache=False).logits[0]  # HF, logits in float32
                    lg64 = lm.lm_head(lm.model(inputs_embeds=x[None], use_cache=False).last_hidden_state)[0]
                    lab = torch.tensor(ex["spliced_labels"])
                    total += F.cross_entropy(lg64[:-1], lab[1:], ignore_index=IGNORE, reduction="sum").item()
                    count += int((lab[1:] != IGNORE).sum())
                    d = (lg.double() - lg64.double()).abs().max().item()
                    assert d < 1e-4 * lg64.abs().max().item(), d
                    if dtype == torch.float64 and not isinstance(lm.model.layers[0].mlp.down_proj, gp.HLoraLinear):
                        d = (manual_logits(lm, lm.config.model_type, x) - lg64).abs().max().item()
                        assert d < 1e-10, f"hand-written decoder differs from transformers by {d}"
                d = abs(total / count - loss.item())
                tol = 1e-12 if dtype == torch.float64 else 1e-5
                assert d < tol * max(1.0, abs(total / count)), f"batched vs per-example loss differ by {d}"
    return loss


# ---------------------------------------------------------------------------------------------

class Blobs:
    def __init__(self):
        self.parts = {"f64": [], "f32": []}
        self.size = {"f64": 0, "f32": 0}

    def add(self, name, t, kind, ref=None, reached=True):
        a = t.detach().cpu().numpy().astype("<f8" if kind == "f64" else "<f4")
        e = {"name": name, "shape": list(a.shape), "blob": kind, "offset": self.size[kind], "count": int(a.size),
             "max_abs": float(np.abs(a).max()) if a.size else 0.0}
        if ref is not None:
            e["f32_max_abs_err"] = float((ref.detach().double() - t.detach().double()).abs().max())
        if not reached:
            e["reached"] = False
        self.parts[kind].append(a.ravel())
        self.size[kind] += a.size
        return e

    def write(self, d):
        for kind in ("f64", "f32"):
            arr = np.concatenate(self.parts[kind]) if self.parts[kind] else np.zeros(0)
            arr.astype("<f8" if kind == "f64" else "<f4").tofile(os.path.join(d, f"expected.{kind}"))


def grads_of(named, loss):
    ps = [p for _, p in named]
    gs = torch.autograd.grad(loss, ps, allow_unused=True)
    return [(n, g if g is not None else torch.zeros_like(p), g is not None) for (n, p), g in zip(named, gs)]


def run_trajectory(groups, loss_fn):
    """groups: [(name, lr, [(gguf name, param)])]. Returns the record and the final tensors."""
    opt = torch.optim.AdamW([{"params": [p for _, p in ps], "lr": lr} for _, lr, ps in groups], betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.01, foreach=False)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=WARMUP, num_training_steps=STEPS)
    params = [p for _, _, ps in groups for _, p in ps]
    rec = {"loss": [], "lr": [], "grad_norm": []}
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0, foreach=False)
        rec["loss"].append(loss.item())
        rec["lr"].append([g["lr"] for g in opt.param_groups])
        rec["grad_norm"].append(norm.item())
        opt.step()
        sched.step()
    with torch.no_grad():
        rec["final_loss"] = loss_fn().item()
    return rec


def build_case(arch, seed, tokens, scores, types, chat, n_rows, stops):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    common = dict(vocab_size=n_rows, hidden_size=E, intermediate_size=FF, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, bos_token_id=1, eos_token_id=stops[0],
                  pad_token_id=stops[0], attn_implementation="eager", torch_dtype="float32")
    if arch == "phi3":
        cfg = Phi3Config(**common, max_position_embeddings=4096, original_max_position_embeddings=4096,
                         rope_theta=10000.0, rms_norm_eps=1e-5, sliding_window=2047, tie_word_embeddings=False)
        lm = Phi3ForCausalLM(cfg).eval()
    else:
        cfg = Qwen2Config(**common, max_position_embeddings=256, rope_theta=1000000.0, rms_norm_eps=1e-6,
                          use_sliding_window=False, tie_word_embeddings=True)
        lm = Qwen2ForCausalLM(cfg).eval()
        assert lm.lm_head.weight is lm.model.embed_tokens.weight
    # tied (qwen2): the embedding is the head too, so it gets the head's scale (1/sqrt(E)) instead of
    # unit rows, which would make the logits ~sqrt(E) times larger (a loss of ~17 and a stiff problem)
    gp.randomise(lm, g, emb_scale=E ** -0.5 if arch == "qwen2" else 1.0)
    ccfg = CLIPVisionConfig(image_size=IMG, patch_size=PATCH, num_channels=3, hidden_size=VIS_H,
                            num_attention_heads=VIS_HEADS, num_hidden_layers=VIS_LAYERS, intermediate_size=VIS_FF,
                            layer_norm_eps=1e-5, hidden_act="quick_gelu")
    clip = CLIPVisionModel(ccfg).eval()
    gp.randomise(clip.vision_model, g)
    proj = nn.Sequential(nn.Linear(VIS_H, E), nn.GELU(), nn.Linear(E, E)).eval()
    gp.randomise(proj, g)
    base = copy.deepcopy(lm)  # the decoder without plugin (grads_full)
    for layer in lm.model.layers:
        for parent, mod, _ in TARGETS[arch]:
            p = getattr(layer, parent)
            h = gp.HLoraLinear(getattr(p, mod), RANK, EXPERTS, ALPHA, g)
            # gen_pipeline's B (0.5/sqrt(r)) times 0.2: with its full size, 20 AdamW steps at lr 1e-3
            # (s = 8) are chaotic (torch float32 and float64 trajectories part by 0.1 in the loss
            # after 10 steps); at 0.2 they agree to ~1e-6 over all 20 steps, so the float32 run is a
            # usable oracle. B is still non-zero (a trained plugin), so A and the router get gradients.
            with torch.no_grad():
                h.B.weight.mul_(B_SCALE)
            setattr(p, mod, h)
    lm.eval()
    check_hlora(lm.model.layers[0].mlp.down_proj, g)
    rng = np.random.default_rng(seed)
    pixels = [torch.from_numpy(np.clip(rng.normal(0.0, 0.8, size=(3, IMG, IMG)), -1.79, 2.15).astype(np.float32))
              for _ in range(2)]
    return lm, base, clip, proj, pixels


def make_examples(tokens, chat, n_patches):
    def w(s):
        return tokens.index(s)

    nl = tokens.index("<0x0A>")
    sys_ids = [chat["<|system|>"], w("\u2581s"), w("\u2581i"), chat["<|end|>"]]
    tail = [chat["<|end|>"], chat["<|assistant|>"]]
    prompts = [sys_ids + [chat["<|user|>"], IMAGE_TOKEN, nl, w("\u2581what"), w("\u2581is"), w("\u2581this"),
                          w("\u2581image"), w("?")] + tail,
               [chat["<|user|>"], IMAGE_TOKEN, nl, w("\u2581show"), w("\u2581lung"), w("?")] + tail]
    answers = [[w("\u2581the"), w("\u2581chest"), w("\u2581is"), w("\u2581normal"), w("."), chat["<|end|>"]],
               [w("\u2581this"), w("\u2581scan"), w("\u2581is"), w("\u2581normal"), w(","), w("\u2581lung"),
                w("\u2581normal"), w("."), chat["<|end|>"]]]
    examples, text_examples = [], []
    for k, (p, a) in enumerate(zip(prompts, answers)):
        ids = p + a
        labels = [IGNORE] * len(p) + a
        spliced = []
        for t, lab in zip(ids, labels):
            spliced += [IGNORE] * n_patches if t == IMAGE_TOKEN else [lab]
        examples.append({"ids": ids, "labels": labels, "positions": len(spliced), "spliced_labels": spliced})
        tid = [t for t in ids if t != IMAGE_TOKEN]
        tlab = [lab for t, lab in zip(ids, labels) if t != IMAGE_TOKEN]
        text_examples.append({"ids": tid, "labels": tlab, "positions": len(tid), "spliced_labels": tlab})
    assert examples[0]["positions"] != examples[1]["positions"]
    return examples, text_examples


def n_targets(examples):
    return sum(sum(1 for lab in ex["spliced_labels"][1:] if lab != IGNORE) for ex in examples)


def main():
    tokens, scores, types, chat = gp.make_vocab()
    N = len(tokens)
    n_rows = (N + 63) // 64 * 64
    stops = [chat["<|endoftext|>"], chat["<|assistant|>"], chat["<|end|>"]]
    n_patches = (IMG // PATCH) ** 2
    manifest = {"generator": "tests/reference/gen_train_model.py",
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "gguf": "0.10.0"},
                "image_token": IMAGE_TOKEN, "ignore_index": IGNORE, "cases": {}}
    for ci, arch in enumerate(["phi3", "qwen2"]):
        cname = "phi3_gqa" if arch == "phi3" else "qwen2"
        d = os.path.join(OUT, cname)
        os.makedirs(os.path.join(d, "model", "plugins"), exist_ok=True)
        lm, base, clip, proj, pixels = build_case(arch, SEED + 100 * ci, tokens, scores, types, chat, n_rows, stops)
        write_text(os.path.join(d, "model", "text.gguf"), base, arch, tokens, scores, types, chat, n_rows, stops)
        gp.write_vision(os.path.join(d, "model", "vision.gguf"), clip)
        write_plugin(os.path.join(d, "model", "plugins", "com.gguf"), lm, arch, proj)
        for k, px in enumerate(pixels):
            px.numpy().astype("<f4").tofile(os.path.join(d, f"pixels_{k}.f32"))
        examples, text_examples = make_examples(tokens, chat, n_patches)
        for k, ex in enumerate(examples):
            ex["pixels"] = f"{cname}/pixels_{k}.f32"

        # every name we store exists in the files, with the shape and the (float32) values we start from
        files = {}
        for f in ("text.gguf", "vision.gguf", "plugins/com.gguf"):
            files.update(gguf_tensors(os.path.join(d, "model", f)))
        for n, p in decoder_names(base, arch) + clip_names(clip) + projector_names(proj) + hlora_names(lm, arch):
            assert n in files, n
            assert tuple(files[n].shape) == tuple(p.shape), (n, files[n].shape, p.shape)
            assert np.array_equal(files[n], p.detach().numpy()), n
        assert set(files) == {n for n, _ in decoder_names(base, arch) + clip_names(clip) + projector_names(proj)
                              + hlora_names(lm, arch)}, "a file holds a tensor this oracle does not cover"

        m64 = [copy.deepcopy(m).double() for m in (lm, base, clip, proj)]
        px64 = [p.double() for p in pixels]
        blobs = Blobs()
        case = {"model": f"{cname}/model", "load": {"vq_vocabulary": False, "plugin": "com"},
                "hparams": {"arch": arch, "n_vocab": n_rows, "n_tokenizer": N, "n_embd": E, "n_ff": FF,
                            "n_layer": LAYERS, "n_head": HEADS, "n_head_kv": KV_HEADS,
                            "tied_embeddings": arch == "qwen2", "image_size": IMG, "patch_size": PATCH,
                            "n_patches": n_patches, "vision_hidden": VIS_H, "vision_blocks": VIS_LAYERS,
                            "vision_layer": VISION_LAYER, "rank": RANK, "experts": EXPERTS, "alpha": ALPHA},
                "examples": examples, "text_examples": text_examples,
                "blobs": {"f64": f"{cname}/expected.f64", "f32": f"{cname}/expected.f32"}}
        pad_id = chat["<|endoftext|>"]

        # (a) grads_lora
        def lora_set(m_lm, m_clip, m_proj):
            for p in m_lm.parameters():
                p.requires_grad_(False)
            named = clip_names(m_clip) + projector_names(m_proj) + hlora_names(m_lm, arch)
            for _, p in named:
                p.requires_grad_(True)
            return named

        named64 = lora_set(m64[0], m64[2], m64[3])
        named32 = lora_set(lm, clip, proj)
        loss64 = batch_loss(m64[0], m64[2], m64[3], examples, px64, pad_id, torch.float64, check=True)
        loss32 = batch_loss(lm, clip, proj, examples, pixels, pad_id, torch.float32, check=True)
        g64, g32 = grads_of(named64, loss64), grads_of(named32, loss32)
        ents = [blobs.add(n, g, "f64", ref=g2, reached=r) for (n, g, r), (_, g2, _) in zip(g64, g32)]
        for e in ents:
            # softmax(q·(k + b)) = softmax(q·k): the key bias of the (RoPE-less) CLIP attention has a
            # zero gradient in exact arithmetic; float64 gives ~1e-17, float32 rounding noise ~1e-8
            if e["name"].startswith("v.blk.") and e["name"].endswith(".attn_k.bias"):
                e["zero_in_exact_arithmetic"] = True
                assert e["max_abs"] < 1e-12, e
        unreached = [n for n, _, r in g64 if not r]
        assert all(n.startswith(f"v.blk.{VIS_LAYERS - 1}.") for n in unreached) and len(unreached) == 16, unreached
        case["grads_lora"] = {"loss": loss64.item(), "loss_f32": loss32.item(), "n_label_tokens": n_targets(examples),
                              "tensors": ents}

        # (b) grads_full: the decoder without plugin, text-only examples
        for m in (base, m64[1]):
            for p in m.parameters():
                p.requires_grad_(True)
        fl64 = batch_loss(m64[1], None, None, text_examples, None, pad_id, torch.float64, check=True)
        fl32 = batch_loss(base, None, None, text_examples, None, pad_id, torch.float32, check=True)
        f64g, f32g = grads_of(decoder_names(m64[1], arch), fl64), grads_of(decoder_names(base, arch), fl32)
        assert all(r for _, _, r in f64g)
        case["grads_full"] = {"loss": fl64.item(), "loss_f32": fl32.item(), "n_label_tokens": n_targets(text_examples),
                              "tensors": [blobs.add(n, g, "f64", ref=g2) for (n, g, _), (_, g2, _) in zip(f64g, f32g)]}

        # (c) trajectory, float64 then float32
        traj = {"optimizer": {"type": "torch.optim.AdamW", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                              "amsgrad": False, "foreach": False,
                              "schedule": f"get_cosine_schedule_with_warmup(num_warmup_steps={WARMUP}, "
                                          f"num_training_steps={STEPS})",
                              "clip_grad_norm": 1.0, "steps": STEPS},
                "unreached_not_optimised": unreached}
        finals = {}
        for dt, (m_lm, m_clip, m_proj), pxs in ((torch.float64, (m64[0], m64[2], m64[3]), px64),
                                               (torch.float32, (lm, clip, proj), pixels)):
            named = dict(lora_set(m_lm, m_clip, m_proj))
            hl = [(n, named[n]) for n, _ in hlora_names(m_lm, arch)]
            rest = [(n, named[n]) for n, _ in projector_names(m_proj) + clip_names(m_clip) if n not in unreached]
            groups = [("hlora", LR_HLORA, hl), ("projector_vision", LR_REST, rest)]
            traj["param_groups"] = [{"name": gname, "lr": lr, "tensors": [n for n, _ in ps]} for gname, lr, ps in groups]
            rec = run_trajectory(groups, lambda: batch_loss(m_lm, m_clip, m_proj, examples, pxs, pad_id, dt))
            finals[dt] = [(n, p.detach().clone()) for _, _, ps in groups for n, p in ps]
            traj["float64" if dt == torch.float64 else "float32"] = rec
        traj["float64"]["final"] = [blobs.add(n, p, "f64", ref=p2) for (n, p), (_, p2) in
                                    zip(finals[torch.float64], finals[torch.float32])]
        traj["float32"]["final"] = [blobs.add(n, p, "f32") for n, p in finals[torch.float32]]
        assert traj["float64"]["final_loss"] < 0.9 * traj["float64"]["loss"][0], "the trajectory does not learn"
        case["trajectory"] = traj
        blobs.write(d)
        manifest["cases"][cname] = case
        lo = traj["float64"]["loss"]
        print(f"{cname}: loss {loss64.item():.6f} (f32 {loss32.item():.6f}), full {fl64.item():.6f}, trajectory "
              f"{lo[0]:.4f} -> {traj['float64']['final_loss']:.4f} (f32 {traj['float32']['final_loss']:.4f}), "
              f"max |final f32 - f64| {max(e['f32_max_abs_err'] for e in traj['float64']['final']):.3g}")
    tmp = os.path.join(OUT, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(tmp, os.path.join(OUT, "manifest.json"))


if __name__ == "__main__":
    main()
