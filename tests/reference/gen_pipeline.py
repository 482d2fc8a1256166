#!/usr/bin/env python3
"""Whole-pipeline reference: a tiny HealthGPT built in PyTorch, written as our model folder.

Writes tests/fixtures/pipeline/:
  model/text.gguf          Phi3ForCausalLM (2 layers, hidden 64) + a small SentencePiece-style
                           vocabulary (tokenizer.ggml.*, padded to the embedding rows with [PAD{id}]
                           as llama.cpp does), healthgpt.chat_template, healthgpt.stop_token_ids
  model/vision.gguf        CLIPVisionModel at the real geometry (336 px, patch 14 -> 576 patches),
                           hidden 32, 3 blocks, quick_gelu
  model/plugins/com.gguf   a comprehension H-LoRA plugin (rank 8, 4 experts, alpha 16, vision
                           layer -2) on qkv/o/gate_up/down of every layer, with its mlp2x_gelu projector
  image_a.png, image_b.png two small RGB images (not square, so pad-to-square matters)
  case.json                token ids of the requests (-200 = image slot), len(tokenizer), stop ids,
                           greedy continuations, their margins, torch float32's error per request
  logits_<case>.bin        float32 [positions, N + 1]: the float64 run's logits at every position for columns
                           0..N-1 (the tokenizer's own tokens) and column N (<start_index>); the
                           8,195 VQ columns are identical (the mean rows), which this script asserts

Every GGUF is written with gguf-py from the torch tensors (independent of our writer), under the
names docs/MODELS.md lists, so the C++ test loads it with hg::Model::load as a converted model.

Oracles, on CPU, in float64 (the model and the pixels widened; transformers' Phi-3 still takes the
attention softmax in float32), with the float32 run's distance from it recorded as the scale of
float32 rounding on this model:
  - vision: transformers 4.41.2 CLIPVisionModel, hidden_states[-2] without CLS (select_feature='patch');
  - projector: nn.Sequential(Linear, GELU(), Linear) (LLaVA's mlp2x_gelu);
  - H-LoRA: a module written from healthgpt-reference.md §4.3 (y = Wx + B(repeat_interleave(softmax(Rx), r/n)
    * s·Ax), s = alpha·n/r), wrapped around Phi-3's qkv_proj, o_proj, gate_up_proj, down_proj (§1.4);
  - vocabulary extension (§5.2): resize to len(tokenizer) + 8195 rows, the new rows of the embedding
    and of the head each the mean of rows 0..N-1;
  - splicing (§3.2): embeds = concat(E[chunk0], V[576], E[chunk1], ...), positions contiguous;
  - preprocessing (§2.3): expand2square with int(mean*255), then transformers' CLIPImageProcessor
    (shortest edge 336, bicubic, center crop, rescale, normalise);
  - transformers' Phi3ForCausalLM on inputs_embeds; greedy = argmax of the last position, repeated
    with the full sequence (no cache), stopping at a stop id (not emitted).
Deterministic: fixed seeds, one thread.
"""
import copy
import json
import os

import gguf
import numpy as np
import torch
import torch.nn as nn
import transformers
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "pipeline")

assert transformers.__version__ == "4.41.2", transformers.__version__
assert torch.__version__.startswith("2.3.1"), torch.__version__
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

E, FF, LAYERS, HEADS = 64, 128, 2, 4
VIS_H, VIS_FF, VIS_LAYERS, VIS_HEADS = 32, 64, 3, 2
RANK, EXPERTS, ALPHA = 8, 4, 16.0
N_VQ = 8195
IMAGE_TOKEN = -200
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
SEED = 20251


# ---------------------------------------------------------------------------------------------
# Vocabulary: <unk> <s> </s>, 256 byte pieces, a few word pieces, then Phi-3's chat tokens.

def make_vocab():
    tokens, scores, types = [], [], []

    def piece(t, typ, score=0.0):
        tokens.append(t)
        types.append(typ)
        scores.append(score)

    T = gguf.TokenType
    piece("<unk>", T.UNKNOWN)
    piece("<s>", T.CONTROL)
    piece("</s>", T.CONTROL)
    for b in range(256):
        piece(f"<0x{b:02X}>", T.BYTE)
    words = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,?")
    for w in ["the", "is", "what", "this", "image", "show", "chest", "lung", "normal", "scan"]:
        for k in range(1, len(w) + 1):
            p = "\u2581" + w[:k]
            if p not in words:
                words.append(p)
    for i, w in enumerate(words):
        piece(w, T.NORMAL, -float(i))
    chat = {}
    for t in ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]:
        chat[t] = len(tokens)
        piece(t, T.CONTROL)
    return tokens, scores, types, chat


# ---------------------------------------------------------------------------------------------
# H-LoRA from the specification (healthgpt-reference.md §4.3)

class HLoraLinear(nn.Module):
    def __init__(self, base, r, n, alpha, g):
        super().__init__()
        self.base = base
        d_in, d_out = base.in_features, base.out_features
        self.route = nn.Linear(d_in, n, bias=False)
        self.A = nn.Linear(d_in, r, bias=False)
        self.B = nn.Linear(r, d_out, bias=False)
        self.t = r // n
        self.s = alpha * n / r
        with torch.no_grad():
            # a router of a few units (gates far from uniform) and a non-zero B (a trained plugin)
            self.route.weight.copy_(2.0 * torch.randn(n, d_in, generator=g) / d_in ** 0.5)
            self.A.weight.copy_(torch.randn(r, d_in, generator=g) / d_in ** 0.5)
            self.B.weight.copy_(0.5 * torch.randn(d_out, r, generator=g) / r ** 0.5)

    def forward(self, x):
        y = self.base(x)
        gate = torch.softmax(self.route(x), dim=-1).to(y.dtype)
        a = self.A(x) * self.s
        return y + self.B(gate.repeat_interleave(self.t, dim=-1) * a)


HLORA_TARGETS = {"qkv_proj": "attn_qkv", "o_proj": "attn_output", "gate_up_proj": "ffn_up", "down_proj": "ffn_down"}


# ---------------------------------------------------------------------------------------------

def randomise(module, g, emb_scale=1.0):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "layrnorm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(emb_scale * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def f32(t):
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_text(path, phi, tokens, scores, types, chat, n_rows, stops):
    cfg = phi.config
    w = gguf.GGUFWriter(path, "phi3")
    w.add_name("healthgpt pipeline test")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_scaling_orig_ctx_len(cfg.original_max_position_embeddings)
    w.add_sliding_window(cfg.sliding_window)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    # tokenizer, padded to the embedding rows as llama.cpp's converter does
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
    w.add_string("healthgpt.chat_template", "phi3_instruct")
    w.add_array("healthgpt.stop_token_ids", stops)
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.PHI3, cfg.num_hidden_layers)
    for name, t in phi.state_dict().items():
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new is not None, name
        w.add_tensor(new, f32(t))
    finish(w)


def write_vision(path, clip):
    cfg = clip.config
    w = gguf.GGUFWriter(path, "clip")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_llava_projector", False)
    w.add_bool("clip.use_gelu", False)
    w.add_uint32("clip.vision.image_size", cfg.image_size)
    w.add_uint32("clip.vision.patch_size", cfg.patch_size)
    w.add_uint32("clip.vision.embedding_length", cfg.hidden_size)
    w.add_uint32("clip.vision.feed_forward_length", cfg.intermediate_size)
    w.add_uint32("clip.vision.block_count", cfg.num_hidden_layers)
    w.add_uint32("clip.vision.attention.head_count", cfg.num_attention_heads)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", cfg.layer_norm_eps)
    w.add_uint32("clip.vision.projection_dim", cfg.hidden_size)
    w.add_array("clip.vision.image_mean", MEAN)
    w.add_array("clip.vision.image_std", STD)
    parts = {"layer_norm1": "ln1", "layer_norm2": "ln2", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.out_proj": "attn_out", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
    for k, t in clip.state_dict().items():
        s = k[len("vision_model."):]
        if s == "embeddings.patch_embedding.weight":
            name = "v.patch_embd.weight"
        elif s == "embeddings.class_embedding":
            name = "v.class_embd"
        elif s == "embeddings.position_embedding.weight":
            name = "v.position_embd.weight"
        elif s.startswith("pre_layrnorm."):
            name = "v.pre_ln." + s.split(".")[-1]
        elif s.startswith("encoder.layers."):
            rest = s[len("encoder.layers."):]
            layer, rest = rest.split(".", 1)
            mod, kind = rest.rsplit(".", 1)
            name = f"v.blk.{layer}.{parts[mod]}.{kind}"
        else:
            continue  # post_layernorm and position_ids: not used by the tower HealthGPT runs
        w.add_tensor(name, f32(t))
    finish(w)


def write_plugin(path, phi, proj):
    w = gguf.GGUFWriter(path, "phi3")
    w.add_string("general.type", "adapter")
    w.add_name("healthgpt pipeline test comprehension plugin")
    w.add_string("healthgpt.plugin.task", "comprehension")
    w.add_int32("healthgpt.plugin.vision_layer", -2)
    w.add_uint32("healthgpt.plugin.rank", RANK)
    w.add_float32("healthgpt.plugin.alpha", ALPHA)
    w.add_uint32("healthgpt.plugin.experts", EXPERTS)
    w.add_string("healthgpt.plugin.projector_type", "mlp2x_gelu")
    w.add_string("healthgpt.plugin.base_architecture", "phi3")
    for l, layer in enumerate(phi.model.layers):
        for mod, ours in [("self_attn.qkv_proj", "attn_qkv"), ("self_attn.o_proj", "attn_output"),
                          ("mlp.gate_up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]:
            h = layer.get_submodule(mod)
            w.add_tensor(f"blk.{l}.{ours}.hlora_a", f32(h.A.weight))
            w.add_tensor(f"blk.{l}.{ours}.hlora_b", f32(h.B.weight))
            w.add_tensor(f"blk.{l}.{ours}.hlora_route", f32(h.route.weight))
    w.add_tensor("mm.0.weight", f32(proj[0].weight))
    w.add_tensor("mm.0.bias", f32(proj[0].bias))
    w.add_tensor("mm.2.weight", f32(proj[2].weight))
    w.add_tensor("mm.2.bias", f32(proj[2].bias))
    finish(w)


def expand2square(img, background):
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


def make_image(path, w, h, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) * 7) % 256], -1)
    noise = rng.integers(-40, 41, size=(h, w, 3))
    a = np.clip(base + noise, 0, 255).astype(np.uint8)
    Image.fromarray(a, "RGB").save(path)


def main():
    os.makedirs(os.path.join(OUT, "model", "plugins"), exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)

    tokens, scores, types, chat = make_vocab()
    N = len(tokens)                       # len(tokenizer): where the VQ extension starts
    n_rows = (N + 63) // 64 * 64          # the base embedding's rows (Phi-3: 32064 for 32011 tokens)
    stops = [chat["<|endoftext|>"], chat["<|assistant|>"], chat["<|end|>"]]

    # --- base models
    pcfg = Phi3Config(vocab_size=n_rows, hidden_size=E, intermediate_size=FF, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=4096,
                      original_max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
                      sliding_window=2047, bos_token_id=1, eos_token_id=stops[0], pad_token_id=stops[0],
                      tie_word_embeddings=False, attn_implementation="eager", torch_dtype="float32")
    phi = Phi3ForCausalLM(pcfg).eval()
    randomise(phi, g)
    ccfg = CLIPVisionConfig(image_size=336, patch_size=14, num_channels=3, hidden_size=VIS_H,
                            num_attention_heads=VIS_HEADS, num_hidden_layers=VIS_LAYERS, intermediate_size=VIS_FF,
                            layer_norm_eps=1e-5, hidden_act="quick_gelu")
    clip = CLIPVisionModel(ccfg).eval()
    randomise(clip.vision_model, g)
    proj = nn.Sequential(nn.Linear(VIS_H, E), nn.GELU(), nn.Linear(E, E)).eval()
    randomise(proj, g)

    write_text(os.path.join(OUT, "model", "text.gguf"), phi, tokens, scores, types, chat, n_rows, stops)
    write_vision(os.path.join(OUT, "model", "vision.gguf"), clip)

    # --- HealthGPT's load order (§1.4): wrap the linears with H-LoRA, extend the vocabulary
    for layer in phi.model.layers:
        for parent, name in [(layer.self_attn, "qkv_proj"), (layer.self_attn, "o_proj"), (layer.mlp, "gate_up_proj"),
                             (layer.mlp, "down_proj")]:
            setattr(parent, name, HLoraLinear(getattr(parent, name), RANK, EXPERTS, ALPHA, g))
    phi.eval()
    write_plugin(os.path.join(OUT, "model", "plugins", "com.gguf"), phi, proj)

    phi.resize_token_embeddings(N + N_VQ)
    with torch.no_grad():
        for m in (phi.get_input_embeddings().weight, phi.get_output_embeddings().weight):
            m[-N_VQ:] = m[:-N_VQ].to(torch.float64).mean(dim=0, keepdim=True).to(torch.float32)
    V = N + N_VQ

    # --- images and preprocessing
    make_image(os.path.join(OUT, "image_a.png"), 61, 40, SEED + 1)
    make_image(os.path.join(OUT, "image_b.png"), 33, 70, SEED + 2)
    proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                              do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
                              image_mean=MEAN, image_std=STD, resample=3, do_convert_rgb=True)
    bg = tuple(int(m * 255) for m in MEAN)
    pixels = {}
    for k in ("a", "b"):
        img = Image.open(os.path.join(OUT, f"image_{k}.png")).convert("RGB")
        pixels[k] = proc(expand2square(img, bg), return_tensors="pt")["pixel_values"]

    # The reference runs twice: float32 (as torch computes) and float64 (the same model and pixels
    # widened; transformers' Phi-3 still takes the attention softmax in float32). Stored logits
    # and greedy ids are the float64 run's; how far the float32 run sits from it is recorded, the
    # scale of rounding error a float32 implementation has on this model.
    clip64, proj64, phi64 = copy.deepcopy(clip).double(), copy.deepcopy(proj).double(), copy.deepcopy(phi).double()

    @torch.no_grad()
    def image_vectors(px, c, p):
        hs = c(pixel_values=px, output_hidden_states=True).hidden_states
        return p(hs[-2][0, 1:, :])  # [576, E]

    feats = {k: image_vectors(p, clip, proj) for k, p in pixels.items()}
    feats64 = {k: image_vectors(p.double(), clip64, proj64) for k, p in pixels.items()}
    dbg = os.environ.get("HG_PIPELINE_DEBUG_DIR")  # intermediate arrays for diagnosing a mismatch
    if dbg:
        for k in pixels:
            f32(pixels[k][0]).astype("<f4").tofile(os.path.join(dbg, f"pixels_{k}.bin"))
            f32(feats[k]).astype("<f4").tofile(os.path.join(dbg, f"features_{k}.bin"))
            f32(feats64[k]).astype("<f4").tofile(os.path.join(dbg, f"features64_{k}.bin"))
    assert feats["a"].shape == (576, E)

    def embeds_of(ids, images, wide=False):
        emb = (phi64 if wide else phi).get_input_embeddings()
        fs = feats64 if wide else feats
        parts, k, chunk = [], 0, []
        for t in ids + [None]:
            if t is None or t == IMAGE_TOKEN:
                if chunk:
                    parts.append(emb(torch.tensor(chunk)))
                chunk = []
                if t == IMAGE_TOKEN:
                    parts.append(fs[images[k]])
                    k += 1
            else:
                chunk.append(t)
        assert k == len(images)
        return torch.cat(parts, 0)

    @torch.no_grad()
    def logits_of(x, m):
        # transformers 4.41.2 builds the causal mask with torch.full(finfo(dtype).min) in the
        # default dtype: float64 needs float64 as the default
        torch.set_default_dtype(x.dtype)
        try:
            return m(inputs_embeds=x[None]).logits[0]  # [L, V]
        finally:
            torch.set_default_dtype(torch.float32)

    # --- requests: the phi3_instruct prompt layout, words from the small vocabulary
    def w(s):
        return tokens.index(s)

    sys_ids = [chat["<|system|>"], w("\u2581s"), w("\u2581i"), chat["<|end|>"]]
    user = [chat["<|user|>"]]
    tail = [chat["<|end|>"], chat["<|assistant|>"]]
    question = [w("\u2581what"), w("\u2581is"), w("\u2581this"), w("\u2581image"), w("?")]
    nl = tokens.index("<0x0A>")
    cases = {
        "one_image": (sys_ids + user + [IMAGE_TOKEN, nl] + question + tail, ["a"]),
        "two_images": (sys_ids + user + [IMAGE_TOKEN, nl, IMAGE_TOKEN, nl] + question + tail, ["a", "b"]),
        "text_only": (sys_ids + user + [w("\u2581what"), w("\u2581is"), w("\u2581normal"), w("?")] + tail, []),
    }

    manifest = {"generator": "tests/reference/gen_pipeline.py",
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "gguf": getattr(gguf, "__version__", "0.10.0")},
                "n_tokenizer": N, "n_rows_base": n_rows, "n_vocab": V, "n_vq": N_VQ, "stop_ids": stops,
                "n_new": 32, "images": {"a": "image_a.png", "b": "image_b.png"}, "cases": {}}
    for name, (ids, imgs) in cases.items():
        x = embeds_of(ids, imgs, wide=True)
        lg = logits_of(x, phi64)
        lg32 = logits_of(embeds_of(ids, imgs), phi).double()
        noise = (lg32 - lg).abs().max().item()
        # the 8,195 new columns are one mean row: identical logits
        vq = lg[:, N:]
        assert (vq - vq[:, :1]).abs().max().item() <= 1e-5 * lg.abs().max().item(), name
        stored = torch.cat([lg[:, :N], lg[:, N:N + 1]], 1)
        f32(stored).astype("<f4").tofile(os.path.join(OUT, f"logits_{name}.bin"))

        # greedy continuation; margin between the best and the second best distinct column
        seq, out, margins = x, [], []
        for _ in range(manifest["n_new"]):
            last = logits_of(seq, phi64)[-1]
            distinct = torch.cat([last[:N], last[N:N + 1]])
            top2 = torch.topk(distinct, 2).values
            margins.append((top2[0] - top2[1]).item())
            nxt = int(torch.argmax(last).item())
            if nxt in stops:
                break
            out.append(nxt)
            seq = torch.cat([seq, phi64.get_input_embeddings()(torch.tensor([nxt]))], 0)
        scale = lg.abs().max().item()
        assert min(margins) > 1e-3 * scale, f"{name}: greedy near-tie {min(margins)} (scale {scale}): change SEED"
        manifest["cases"][name] = {"ids": ids, "images": imgs, "positions": int(x.shape[0]),
                                   "logits": f"logits_{name}.bin", "columns": N + 1, "logit_scale": scale,
                                   "greedy": out, "greedy_stopped": len(out) < manifest["n_new"],
                                   "greedy_min_margin": min(margins), "torch_f32_max_abs": noise}
        print(f"{name}: {x.shape[0]} positions, logit scale {scale:.3f}, torch f32 vs f64 {noise:.3g}, greedy {len(out)} tokens, "
              f"min margin {min(margins):.4f}")
    with open(os.path.join(OUT, "case.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
