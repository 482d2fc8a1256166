#!/usr/bin/env python3
"""Tiny checkpoints in exactly the key layouts of the files HealthGPT users download, and what
PyTorch computes with them, for the converter tests (tests/parity/convert_test.cpp,
tests/parsers/convert_hostile_test.cpp). Writes tests/fixtures/convert/.

  phi3/            Phi-3-mini-like base: Phi3ForCausalLM.save_pretrained in BF16, sharded safetensors +
                   model.safetensors.index.json, config.json / generation_config.json (eos list of
                   Phi-3-mini), a SentencePiece tokenizer.model + tokenizer.json + tokenizer_config.json
                   with Phi-3's added tokens (ids renumbered after the tiny vocabulary)
  phi3_plugins/    com_hlora_weights.bin, gen_hlora_weights.bin, fusion_layer_weights.bin: torch.save of
                   BF16 state dicts keyed like HealthGPT's PEFT wrapper (healthgpt-reference.md §1.3),
                   taken from a module tree with those names
  phi4/            phi-4-like base (phi3 arch, GQA, sliding_window null, byte-level BPE tokenizer with
                   <|im_start|>/<|im_sep|>/<|im_end|>), 2 shards; phi4_plugins/com_hlora_weights_phi4.bin
  qwen2/           Qwen2.5-like base (q/k/v biases, 7 linears, repetition_penalty 1.05), one
                   model.safetensors; qwen2_plugins/com_hlora_weights_QWEN_32B.bin
  clip/            CLIPModel.save_pretrained (vision + text tower, F32 safetensors) + preprocessor_config.json
  clip_bin/        the same as pytorch_model.bin (torch.save of the state dict with the position_ids
                   buffers older transformers kept, as in openai's file)
  vqgan/           model.yaml (OmegaConf) for tests/fixtures/vqgan/f2_attn2/tiny.ckpt, and model_f8.yaml:
                   the released OpenImages f8 config written the same way
  hostile/         converter-level bad inputs (wrong shapes, a missing tensor, extra keys, a duplicate
                   key, mixed key layouts, a plugin for another base, os.system / unknown class pickles)
  reference.json + reference.bin   float32 arrays: decoder logits per base, CLIP hidden states,
                   H-LoRA linear outputs and projector outputs of each plugin, with the inputs

Oracles: transformers 4.41.2 (Phi3/Qwen2ForCausalLM eager fp32 on the BF16 weights, CLIPVisionModel
fp32), torch (projector nn.Sequential, H-LoRA from the spec §4.3 in fp32 on the BF16 weights).
Deterministic (seeded, CPU).
"""
import io
import json
import math
import os
import shutil
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.nn as nn
import transformers
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
from transformers import (AutoTokenizer, CLIPConfig, CLIPModel, CLIPVisionModel, GenerationConfig, GPT2Tokenizer, LlamaTokenizer,
                          LlamaTokenizerFast, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM, Qwen2Tokenizer)

assert transformers.__version__ == "4.41.2", transformers.__version__
assert torch.__version__.startswith("2.3.1"), torch.__version__
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "convert"
VQGAN_FIX = HERE.parent / "fixtures" / "vqgan" / "f2_attn2"

TEXT = ("The chest X-ray shows no focal consolidation. Heart size is normal. "
        "MRI of the brain: no acute infarct, mild periventricular white matter changes. "
        "CT abdomen with contrast demonstrates a 2 cm hypodense lesion in the liver. "
        "Question: is there a pneumothorax? Answer: no. The lungs are clear bilaterally. ") * 20


class Blob:
    def __init__(self):
        self.parts, self.entries, self.offset = [], {}, 0

    def add(self, name, t):
        a = t.detach().to(torch.float32).contiguous().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float32)
        a = np.ascontiguousarray(a, dtype="<f4")
        assert name not in self.entries, name
        self.entries[name] = {"shape": list(a.shape), "offset": self.offset}
        self.parts.append(a.tobytes())
        self.offset += a.nbytes


# ------------------------------------------------------------------------------------------- tokenizers

def spm_tokenizer(d, vocab=300):
    """A SentencePiece BPE model with byte fallback (the Llama-2 / Phi-3 kind), then Phi-3's files."""
    prefix = str(d / "sp")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT.split(". ")), model_prefix=prefix, vocab_size=vocab,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
                                   split_digits=True, allow_whitespace_only_pieces=True,
                                   remove_extra_whitespaces=False, normalization_rule_name="identity",
                                   num_threads=1, minloglevel=2)
    (d / "sp.vocab").unlink()
    os.replace(prefix + ".model", d / "tokenizer.model")
    # Phi-3-mini's tokenizer_config.json (pinned in tests/fixtures/tokenizers/phi3), ids after the tiny vocab.
    real = json.loads((HERE.parent / "fixtures/tokenizers/phi3/tokenizer_config.json").read_text())
    dec = {}
    for k, v in real["added_tokens_decoder"].items():
        i = int(k)
        dec[str(i if i < 3 else vocab + i - 32000)] = v
    cfg = dict(real)
    cfg["added_tokens_decoder"] = dec
    cfg["model_max_length"] = 256
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    slow = LlamaTokenizer.from_pretrained(str(d))
    assert len(slow) == vocab + 11, len(slow)
    fast = LlamaTokenizerFast.from_pretrained(str(d), from_slow=True)
    fast.save_pretrained(str(d))  # tokenizer.json, special_tokens_map.json (+ the config again)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    added = {v["content"]: int(k) for k, v in dec.items() if int(k) >= vocab}
    (d / "added_tokens.json").write_text(json.dumps(added, indent=2) + "\n")
    return LlamaTokenizer.from_pretrained(str(d))


def bpe_tokenizer(d, specials, cls, pad_to=None, vocab=280):
    """A byte-level BPE (GPT-2 / cl100k / Qwen kind) trained on TEXT, with the model's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], tr)
    tok.model.save(str(d))  # vocab.json, merges.txt
    t = cls(vocab_file=str(d / "vocab.json"), merges_file=str(d / "merges.txt"), errors="replace")
    t.add_tokens([transformers.AddedToken(s, special=True, normalized=False) for s in specials], special_tokens=True)
    if pad_to:
        k = 0
        while len(t) < pad_to:
            t.add_tokens([transformers.AddedToken(f"<|dummy_{k}|>", special=True, normalized=False)], special_tokens=True)
            k += 1
    return t


# ------------------------------------------------------------------------------------------- bases

def randomize(model, seed):
    """Seeded weights with O(1) activations and separated logits (as gen_decoder.py)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def save_base(model, gen, d, shard):
    model = model.to(torch.bfloat16)
    model.generation_config = gen
    model.save_pretrained(str(d), safe_serialization=True, max_shard_size=shard)
    return model


@torch.no_grad()
def logits_of(d, cls, ids):
    m = cls.from_pretrained(str(d), torch_dtype=torch.float32, attn_implementation="eager").eval()
    return m(torch.tensor([ids])).logits[0].float()


BASES = {
    # Phi-3-mini layout (fused qkv / gate_up, MHA, sliding_window 2047), BF16, 3 shards.
    "phi3": dict(cls="phi3", hidden=48, heads=3, kv=3, inter=64, layers=2, vocab=320, theta=10000.0, eps=1e-5,
                 sliding_window=2047, shard="60KB", seed=21),
    # phi-4 layout (phi3 arch, GQA 4:1, rope 250000, sliding_window null), BF16, 2 shards.
    "phi4": dict(cls="phi3", hidden=64, heads=4, kv=1, inter=96, layers=2, vocab=None, theta=250000.0, eps=1e-5,
                 sliding_window=None, shard="100KB", seed=22),
    # Qwen2.5 layout (q/k/v biases, GQA 2:1, eps 1e-6, theta 1e6), BF16, one file.
    "qwen2": dict(cls="qwen2", hidden=64, heads=4, kv=2, inter=96, layers=2, vocab=320, theta=1000000.0, eps=1e-6,
                  shard="10MB", seed=23),
}


def gen_base(name, c, blob, ref):
    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if name == "phi3":
        tok = spm_tokenizer(d)
        V = c["vocab"]
        eos = [tok.convert_tokens_to_ids(t) for t in ["<|endoftext|>", "<|assistant|>", "<|end|>"]]
        bos = 1
    elif name == "phi4":
        tok = bpe_tokenizer(d, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_sep|>"], GPT2Tokenizer, pad_to=300)
        tok.bos_token, tok.eos_token, tok.pad_token = "<|endoftext|>", "<|im_end|>", "<|dummy_3|>"
        V = len(tok)  # phi-4: vocab_size = len(tokenizer)
        tok.save_pretrained(str(d))
        eos = [tok.convert_tokens_to_ids("<|im_end|>")]
        bos = tok.convert_tokens_to_ids("<|endoftext|>")
    else:
        tok = bpe_tokenizer(d, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], Qwen2Tokenizer)
        tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
        tok.save_pretrained(str(d))
        V = c["vocab"]
        eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
        bos = None
    if name != "phi3":  # the published phi-4 / Qwen2.5 folders also carry the fast tokenizer.json
        fast = transformers.AutoTokenizer.from_pretrained(str(d), use_fast=True)
        saved = (d / "tokenizer_config.json").read_text()
        fast.save_pretrained(str(d))
        (d / "tokenizer_config.json").write_text(saved)
    common = dict(vocab_size=V, hidden_size=c["hidden"], intermediate_size=c["inter"], num_hidden_layers=c["layers"],
                  num_attention_heads=c["heads"], num_key_value_heads=c["kv"], max_position_embeddings=512,
                  rope_theta=c["theta"], rms_norm_eps=c["eps"], tie_word_embeddings=False, torch_dtype="bfloat16")
    if c["cls"] == "phi3":
        cfg = Phi3Config(**common, sliding_window=c["sliding_window"], original_max_position_embeddings=512,
                         bos_token_id=bos, eos_token_id=eos[0], pad_token_id=eos[0])
        model, cls = Phi3ForCausalLM(cfg), Phi3ForCausalLM
        gen = GenerationConfig(bos_token_id=bos, eos_token_id=eos if len(eos) > 1 else eos[0], pad_token_id=eos[0])
    else:
        cfg = Qwen2Config(**common, bos_token_id=eos[1], eos_token_id=eos[0], use_sliding_window=False,
                          sliding_window=4096, max_window_layers=c["layers"])
        model, cls = Qwen2ForCausalLM(cfg), Qwen2ForCausalLM
        gen = GenerationConfig(bos_token_id=eos[1], eos_token_id=eos, pad_token_id=eos[1], do_sample=True,
                               temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    randomize(model, c["seed"])
    model = save_base(model, gen, d, c["shard"])
    files = sorted(p.name for p in d.iterdir())
    ids = tok(TEXT[:400])["input_ids"][:48]
    g = torch.Generator().manual_seed(c["seed"] + 100)
    ids = ids + torch.randint(0, V, (64 - len(ids),), generator=g).tolist()
    logits = logits_of(d, cls, ids)
    blob.add(f"{name}/logits", logits)
    # the tokenizer HealthGPT loads (AutoTokenizer, use_fast=False) on texts with the chat markers
    slow = transformers.AutoTokenizer.from_pretrained(str(d), use_fast=False)
    marks = ["<|user|>", "<|end|>", "<|assistant|>"] if name == "phi3" else ["<|im_start|>", "<|im_end|>", "<|im_sep|>" if name == "phi4" else "<|endoftext|>"]
    texts = [TEXT[:300], f"{marks[0]}\nWhat does this  X-ray show?{marks[1]}\n{marks[2]}", " leading space, caf\u00e9 \u2014 \u6f22\u5b57 \U0001F600\n\n  tabs\tend ",
             "Numbers 12345 and 3.14159; CAPS and mixed-Case words.", ""]
    tok_cases = [{"text": t, "ids": slow(t)["input_ids"]} for t in texts]
    ref[name] = {"arch": c["cls"], "files": files, "prompt_ids": ids, "n_vocab": V, "tokenizer_len": len(tok),
                 "slow_tokenizer_len": len(slow), "tok_cases": tok_cases,
                 "stop_ids": eos, "hidden": c["hidden"], "layers": c["layers"], "heads": c["heads"], "kv_heads": c["kv"],
                 "head_dim": c["hidden"] // c["heads"], "inter": c["inter"], "theta": c["theta"], "eps": c["eps"],
                 "sliding_window": c.get("sliding_window") or 0,
                 "repetition_penalty": 1.05 if c["cls"] == "qwen2" else None,
                 "logits_scale": float(logits.abs().max())}
    print(f"{name}: {files}, vocab {V}, tokenizer {len(tok)}, logits scale {ref[name]['logits_scale']:.2f}")
    return model


# ------------------------------------------------------------------------------------------- plugins

class HLoraLinear(nn.Module):
    """The H-LoRA Linear of HealthGPT's vendored PEFT as its state dict names it: the wrapped
    Linear's weight/bias plus lora_A, lora_B, lora_route (nn.Linear without bias)."""

    def __init__(self, d_in, d_out, r, n):
        super().__init__()
        self.lora_A = nn.Linear(d_in, r, bias=False)
        self.lora_B = nn.Linear(r, d_out, bias=False)
        self.lora_route = nn.Linear(d_in, n, bias=False)


class Holder(nn.Module):
    pass


LINEARS = {"phi3": [("self_attn", "qkv_proj"), ("self_attn", "o_proj"), ("mlp", "gate_up_proj"), ("mlp", "down_proj")],
           "qwen2": [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
                     ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj")]}


def linear_weight(base, layer, parent, module):
    m = getattr(getattr(base.model.layers[layer], parent), module)
    return m.weight.detach().float(), (m.bias.detach().float() if m.bias is not None else None)


def build_plugin(base, arch, r, n, d_vis, seed, layers=None):
    """base_model (PeftModel) -> model (LoraModel) -> model (Llava*ForCausalLM) -> model.layers / mm_projector.
    Returns the BF16 state dict of the H-LoRA and projector parameters, keyed as the live module tree."""
    cfg = base.config
    layers = cfg.num_hidden_layers if layers is None else layers
    g = torch.Generator().manual_seed(seed)
    llava = Holder()
    llava.model = Holder()
    llava.model.layers = nn.ModuleList()
    for i in range(layers):
        blk = Holder()
        blk.self_attn, blk.mlp = Holder(), Holder()
        for parent, module in LINEARS[arch]:
            w, _ = linear_weight(base, min(i, cfg.num_hidden_layers - 1), parent, module)
            lin = HLoraLinear(w.shape[1], w.shape[0], r, n)
            with torch.no_grad():
                lin.lora_A.weight.copy_(torch.randn(lin.lora_A.weight.shape, generator=g) / math.sqrt(w.shape[1]))
                lin.lora_B.weight.copy_(0.5 * torch.randn(lin.lora_B.weight.shape, generator=g) / math.sqrt(r))
                lin.lora_route.weight.copy_(2.0 * torch.randn(lin.lora_route.weight.shape, generator=g) / math.sqrt(w.shape[1]))
            setattr(getattr(blk, parent), module, lin)
        llava.model.layers.append(blk)
    H = cfg.hidden_size
    llava.model.mm_projector = nn.Sequential(nn.Linear(d_vis, H), nn.GELU(), nn.Linear(H, H))
    with torch.no_grad():
        for p in llava.model.mm_projector.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]) if p.dim() == 2
                    else 0.1 * torch.randn(p.shape, generator=g))
    peft = Holder()
    peft.base_model = Holder()
    peft.base_model.model = llava
    peft = peft.to(torch.bfloat16)
    sd = OrderedDict((k, v.detach().clone()) for k, v in peft.state_dict().items()
                     if "lora_" in k or "mm_projector" in k)
    return sd


def hlora_ref(x, W, b, A, B, R, alpha, n):
    """y = x W^T + b + B (repeat_interleave(softmax(R x), r/n) * s A x), s = alpha n / r (spec §4.3), fp32."""
    r = A.shape[0]
    s = alpha * n / r
    y = x @ W.T
    if b is not None:
        y = y + b
    gate = torch.softmax(x @ R.T, dim=-1).repeat_interleave(r // n, dim=-1)
    return y + (gate * (s * (x @ A.T))) @ B.T


def record_plugin(blob, ref, tag, base, arch, sd, alpha, n, prefix, probe, d_vis, g):
    """Reference outputs of one wrapped linear and of the projector, on bf16 weights in fp32."""
    layer, parent, module, gguf_linear = probe
    W, b = linear_weight(base, layer, parent, module)
    k = f"{prefix}model.layers.{layer}.{parent}.{module}."
    A, B, R = (sd[k + f"lora_{p}.weight"].float() for p in ("A", "B", "route"))
    x = torch.randn(5, W.shape[1], generator=g)
    blob.add(f"{tag}/hlora_x", x)
    blob.add(f"{tag}/hlora_y", hlora_ref(x, W, b, A, B, R, alpha, n))
    mp = f"{prefix}model.mm_projector."
    H = base.config.hidden_size
    proj = nn.Sequential(nn.Linear(d_vis, H), nn.GELU(), nn.Linear(H, H))
    with torch.no_grad():
        for i in (0, 2):
            proj[i].weight.copy_(sd[mp + f"{i}.weight"].float())
            proj[i].bias.copy_(sd[mp + f"{i}.bias"].float())
        xv = torch.randn(6, d_vis, generator=g)
        blob.add(f"{tag}/proj_x", xv)
        blob.add(f"{tag}/proj_y", proj(xv))
    ref[tag] = {"layer": layer, "linear": gguf_linear, "rank": A.shape[0], "experts": n, "alpha": alpha,
                "n_tensors": len(sd), "keys_sample": list(sd.keys())[:3]}


def gen_plugins(bases, blob, ref, d_vis):
    g = torch.Generator().manual_seed(77)
    # M3: COM r=8/alpha 16, GEN r=16/alpha 32 (alpha = 2r as every release), 4 experts.
    d = OUT / "phi3_plugins"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    base = bases["phi3"].float()
    com = build_plugin(base, "phi3", 8, 4, d_vis, 31)
    torch.save(com, d / "com_hlora_weights.bin")
    record_plugin(blob, ref, "phi3_com", base, "phi3", com, 16.0, 4, "base_model.model.",
                  (1, "self_attn", "qkv_proj", "attn_qkv"), d_vis, g)
    gen = build_plugin(base, "phi3", 16, 4, d_vis, 32)
    torch.save(gen, d / "gen_hlora_weights.bin")
    record_plugin(blob, ref, "phi3_gen", base, "phi3", gen, 32.0, 4, "base_model.model.",
                  (0, "mlp", "down_proj", "ffn_down"), d_vis, g)
    # fusion_layer_weights.bin: embed_tokens + lm_head resized to len(tokenizer) + 8195 rows.
    rows = ref["phi3"]["tokenizer_len"] + 8195
    H = base.config.hidden_size
    fusion = OrderedDict([("base_model.model.model.embed_tokens.weight", torch.randn(rows, H, generator=g).to(torch.bfloat16)),
                          ("base_model.model.lm_head.weight", (torch.randn(rows, H, generator=g) / math.sqrt(H)).to(torch.bfloat16))])
    torch.save(fusion, d / "fusion_layer_weights.bin")
    blob.add("phi3_gen/fusion_embd_row_40", fusion["base_model.model.model.embed_tokens.weight"][40])
    blob.add("phi3_gen/fusion_head_row_last", fusion["base_model.model.lm_head.weight"][-1])
    ref["phi3_gen"]["fusion_rows"] = rows

    d = OUT / "phi4_plugins"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    base = bases["phi4"].float()
    com = build_plugin(base, "phi3", 8, 4, d_vis, 33)
    torch.save(com, d / "com_hlora_weights_phi4.bin")
    record_plugin(blob, ref, "phi4_com", base, "phi3", com, 16.0, 4, "base_model.model.",
                  (1, "mlp", "gate_up_proj", "ffn_up"), d_vis, g)

    d = OUT / "qwen2_plugins"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    base = bases["qwen2"].float()
    com = build_plugin(base, "qwen2", 8, 4, d_vis, 34)
    torch.save(com, d / "com_hlora_weights_QWEN_32B.bin")
    record_plugin(blob, ref, "qwen2_com", base, "qwen2", com, 16.0, 4, "base_model.model.",
                  (1, "self_attn", "k_proj", "attn_k"), d_vis, g)
    return {"phi3": bases["phi3"].float()}


# ------------------------------------------------------------------------------------------- CLIP

def gen_clip(blob, ref):
    d = OUT / "clip"
    shutil.rmtree(d, ignore_errors=True)
    vcfg = dict(image_size=56, patch_size=14, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                num_hidden_layers=3, projection_dim=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    tcfg = dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_attention_heads=2, num_hidden_layers=1,
                max_position_embeddings=16, projection_dim=32)
    cfg = CLIPConfig(text_config=tcfg, vision_config=vcfg, projection_dim=32)
    torch.manual_seed(41)
    model = CLIPModel(cfg).eval()
    g = torch.Generator().manual_seed(42)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif "layer_norm" in name or "layrnorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    model.save_pretrained(str(d), safe_serialization=True)
    pre = {"crop_size": {"height": 56, "width": 56}, "do_center_crop": True, "do_convert_rgb": True,
           "do_normalize": True, "do_rescale": True, "do_resize": True,
           "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
           "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "rescale_factor": 0.00392156862745098,
           "size": {"shortest_edge": 56}}
    (d / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    # pytorch_model.bin variant, with the position_ids buffers openai's file carries
    b = OUT / "clip_bin"
    shutil.rmtree(b, ignore_errors=True)
    b.mkdir(parents=True)
    sd = OrderedDict(model.state_dict())
    sd["vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
    sd["text_model.embeddings.position_ids"] = torch.arange(16).unsqueeze(0)
    torch.save(sd, b / "pytorch_model.bin")
    shutil.copy(d / "config.json", b / "config.json")
    shutil.copy(d / "preprocessor_config.json", b / "preprocessor_config.json")

    # HealthGPT builds CLIPVisionModel.from_pretrained on the CLIPModel folder
    vm = CLIPVisionModel.from_pretrained(str(d), torch_dtype=torch.float32).eval()
    pixels = torch.randn(1, 3, 56, 56, generator=g)
    with torch.no_grad():
        hs = vm(pixel_values=pixels, output_hidden_states=True).hidden_states
    blob.add("clip/pixels", pixels[0])
    for k, h in enumerate(hs):
        blob.add(f"clip/hidden.{k}", h[0, 1:])
    with torch.no_grad():  # F16 storage of the matrices and the patch kernel (convert --type f16);
        # position and class embeddings stay F32 (quantize.h: "class and position embeddings: F32 always")
        for n, p in vm.vision_model.named_parameters():
            if p.dim() >= 2 and "position_embedding" not in n:
                p.copy_(p.to(torch.float16).float())
        hs16 = vm(pixel_values=pixels, output_hidden_states=True).hidden_states
    for k, h in enumerate(hs16):
        blob.add(f"clip/hidden_f16w.{k}", h[0, 1:])
    ref["clip"] = {"layers": 3, "hidden": 64, "n_patches": 16, "files": sorted(p.name for p in d.iterdir()),
                   "n_state_dict": len(model.state_dict()), "n_vision": sum(1 for k in model.state_dict() if k.startswith("vision_model."))}
    print(f"clip: {ref['clip']}")
    return 64


# ------------------------------------------------------------------------------------------- VQGAN

def gen_vqgan(ref):
    d = OUT / "vqgan"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    man = json.loads((VQGAN_FIX / "manifest.json").read_text())
    c = man["config"]

    def cfg_yaml(c, path):
        conf = {"model": {"base_learning_rate": 4.5e-06, "target": "taming.models.vqgan.GumbelVQ",
                          "params": {"kl_weight": 1.0e-08, "embed_dim": c["embed_dim"], "n_embed": c["n_embed"],
                                     "monitor": "val/rec_loss",
                                     "temperature_scheduler_config": {
                                         "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
                                         "params": {"warm_up_steps": 0, "max_decay_steps": 1000001, "lr_start": 0.9,
                                                    "lr_max": 0.9, "lr_min": 1.0e-06}},
                                     "ddconfig": {"double_z": False, "z_channels": c["z_channels"],
                                                  "resolution": c["resolution"], "in_channels": c["in_channels"],
                                                  "out_ch": c["out_ch"], "ch": c["ch"], "ch_mult": c["ch_mult"],
                                                  "num_res_blocks": c["num_res_blocks"],
                                                  "attn_resolutions": c["attn_resolutions"], "dropout": 0.0},
                                     "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"}}}}
        OmegaConf.save(OmegaConf.create(conf), str(path))

    cfg_yaml(c, d / "model.yaml")
    f8 = dict(ch=128, ch_mult=[1, 1, 2, 4], num_res_blocks=2, attn_resolutions=[32], z_channels=256, embed_dim=256,
              n_embed=8192, resolution=256, in_channels=3, out_ch=3)
    cfg_yaml(f8, d / "model_f8.yaml")
    ref["vqgan"] = {"config": c, "f8": f8}


# ------------------------------------------------------------------------------------------- hostile

def rezip(src, dst, edit):
    """Rewrites a torch.save zip with data.pkl passed through edit(bytes) (stored, CRCs recomputed)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = edit(data)
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))  # deterministic output
            zout.writestr(fixed, data)


class EvilSystem:
    def __reduce__(self):
        return (os.system, ("echo converted-a-malicious-checkpoint > /tmp/healthgpt_pwned",))


class UnknownThing:  # pickled by reference as gen_convert.UnknownThing / __main__.UnknownThing
    pass


def gen_hostile(ref):
    d = OUT / "hostile"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    com = torch.load(OUT / "phi3_plugins/com_hlora_weights.bin")  # our own file, written above
    k = "base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight"

    bad = OrderedDict(com)
    bad[k] = torch.zeros(bad[k].shape[0] + 1, bad[k].shape[1], dtype=torch.bfloat16)
    torch.save(bad, d / "com_wrong_shape.bin")
    miss = OrderedDict((kk, v) for kk, v in com.items() if kk != k.replace("lora_A", "lora_B"))
    torch.save(miss, d / "com_missing_tensor.bin")
    extra = OrderedDict(com)
    extra["base_model.model.model.layers.0.self_attn.o_proj.lora_magnitude.weight"] = torch.zeros(4, dtype=torch.bfloat16)
    torch.save(extra, d / "com_unknown_key.bin")
    mixed = OrderedDict(com)
    v = mixed.pop(k)
    mixed[k.replace("lora_A.weight", "lora_A.default.weight")] = v
    torch.save(mixed, d / "com_mixed_layout.bin")
    # the same plugin in the modern-PEFT layout (".default." segment) and without the wrapper prefix
    torch.save(OrderedDict((kk.replace(".weight", ".default.weight") if "lora_" in kk else kk, vv) for kk, vv in com.items()),
               d / "com_default_layout.bin")
    torch.save(OrderedDict((kk[len("base_model.model."):], vv) for kk, vv in com.items()), d / "com_no_prefix.bin")
    # a plugin for a base with 3 layers
    deeper = OrderedDict(com)
    for kk, vv in com.items():
        if ".layers.1." in kk:
            deeper[kk.replace(".layers.1.", ".layers.2.")] = vv.clone()
    torch.save(deeper, d / "com_three_layers.bin")
    # a float tensor replaced by int64
    ints = OrderedDict(com)
    ints[k] = torch.zeros(ints[k].shape, dtype=torch.int64)
    torch.save(ints, d / "com_int_tensor.bin")
    # duplicate key: two same-length keys, the second renamed to the first inside data.pkl
    dup = OrderedDict(com)
    k2 = k.replace("lora_A", "lora_Z")
    dup[k2] = dup[k].clone()
    torch.save(dup, d / "tmp.bin")
    rezip(d / "tmp.bin", d / "com_duplicate_key.bin", lambda b: b.replace(k2.encode(), k.encode()))
    (d / "tmp.bin").unlink()
    # code execution and unknown classes inside a plugin-shaped dict
    evil = OrderedDict(com)
    evil["base_model.model.model.mm_projector.0.bias"] = EvilSystem()
    torch.save(evil, d / "com_os_system.bin")
    odd = OrderedDict(com)
    odd["extra"] = UnknownThing()
    torch.save(odd, d / "com_unknown_global.bin")
    # Lightning checkpoint whose state_dict holds a non-GumbelVQ quantizer key
    ref["hostile"] = sorted(p.name for p in d.iterdir())
    print(f"hostile: {ref['hostile']}")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    blob, ref = Blob(), {"transformers": transformers.__version__, "torch": torch.__version__}
    bases = {name: gen_base(name, c, blob, ref) for name, c in BASES.items()}
    d_vis = gen_clip(blob, ref)
    gen_plugins(bases, blob, ref, d_vis)
    gen_vqgan(ref)
    gen_hostile(ref)
    ref["arrays"] = blob.entries
    (OUT / "reference.bin").write_bytes(b"".join(blob.parts))
    (OUT / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
