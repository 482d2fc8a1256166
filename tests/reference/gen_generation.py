#!/usr/bin/env python3
"""End-to-end image generation reference: a tiny HealthGPT with a generation plugin and a tiny VQGAN.

Writes tests/fixtures/generation/:
  model/text.gguf          Phi3ForCausalLM (2 layers, hidden 32, 2 heads) + gen_pipeline.py's small vocabulary
  model/vision.gguf        CLIPVisionModel at the real geometry (336 px, 576 patches), hidden 32, 3 blocks
  model/plugins/gen.gguf   a generation H-LoRA plugin (rank 8, 4 experts, alpha 16, vision layer 1) with its
                           mlp2x_gelu projector and its fusion rows (token_embd.weight / output.weight, F16,
                           len(tokenizer) + 8195 rows: what fusion_layer_weights.bin holds)
  model/vqgan.gguf         taming GumbelVQ decoder half, ch 32, ch_mult [1, 1] (f2), 64 px -> a 32 x 32 latent
                           grid = 1,024 tokens as HealthGPT's, 64 codes (the released one has 8,192),
                           attention at 32; convolution weights F16 (the oracle runs on the same rounded values)
  input.png                the input image of the request (not square)
  case.json                prompt ids (-200 = image slot), the 1,024 indices, step margins, errors
  decode.f32               float32 [3, 64, 64] decoder output for those indices (the float32 taming run)
  output.png               idx2img's custom_to_pil of it (clamp, (x+1)/2*255, truncation), 64 x 64

The oracle, on CPU:
  - HealthGPT's load order (healthgpt-reference.md §1.4): Phi-3 base, H-LoRA (written from §4.3) around
    qkv/o/gate_up/down, resize to len(tokenizer) + 8195 with mean rows (§5.2), then the GEN plugin's
    embedding and head replaced by the fusion rows (F16-rounded, as stored);
  - generation vision path (§2.2): transformers CLIPVisionModel hidden_states[1] without CLS, the GEN
    projector; expand2square + CLIPImageProcessor (§2.3); splicing at the -200 slot (§3.2);
  - decoding (§5.3): greedy in float64 with transformers' KV cache, constrained as the spec recommends:
    only <idx_0>..<idx_511> (the codes this VQGAN has) for 1,024 steps, then <end_index>;
  - pixels (§5.1): taming-transformers-rom1504's GumbelVQ: quantize.get_codebook_entry (raster order)
    -> decode, float32, then idx2img's custom_to_pil.
The float32 run (the same model and pixels in torch float32, without cache) is compared with it at
every step: each step's margin (best minus second best allowed logit) is asserted to exceed 10x that
step's float32 logit error, so a float32 engine must reproduce all 1,024 choices. Deterministic: fixed seeds, one thread.
"""
import copy
import json
import os

import gguf
import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3ForCausalLM

import gen_pipeline as gp  # the vocabulary, the H-LoRA module, the GGUF writers (same checks of versions)
import gen_vqgan as gv     # the real taming GumbelVQ and its GGUF writer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "generation")

E, FF, LAYERS, HEADS = 32, 64, 2, 2
VIS_H, VIS_FF, VIS_LAYERS, VIS_HEADS = 32, 64, 3, 2
RANK, EXPERTS, ALPHA = 8, 4, 16.0
N_VQ = 8195
N_TOKENS = 1024
VQ_CFG = dict(ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[32], z_channels=32, embed_dim=32,
              n_embed=64, resolution=64, in_channels=3, out_ch=3)
SEED = 7070


def write_vqgan_decoder(model, cfg, path):
    """The decoder half in our GGUF layout (docs/MODELS.md "VQGAN"), convolution weights as F16."""
    w = gguf.GGUFWriter(path, "vqgan")
    w.add_name("healthgpt generation test vqgan (decoder)")
    for k in ("ch", "num_res_blocks", "z_channels", "embed_dim", "n_embed", "resolution", "in_channels", "out_ch"):
        w.add_uint32(f"vqgan.{k}", cfg[k])
    w.add_array("vqgan.ch_mult", [int(m) for m in cfg["ch_mult"]])
    w.add_array("vqgan.attn_resolutions", [int(r) for r in cfg["attn_resolutions"]])
    w.add_string("vqgan.quantizer", "gumbel")
    for k, v in model.state_dict().items():
        if k.startswith("decoder.") or k.startswith("post_quant_conv.") or k == "quantize.embed.weight":
            a = v.detach()
            w.add_tensor(k, a.to(torch.float16).numpy() if a.dim() == 4 else a.float().numpy())
    gp.finish(w)


def write_gen_plugin(path, phi, proj, embd16, head16):
    w = gguf.GGUFWriter(path, "phi3")
    w.add_string("general.type", "adapter")
    w.add_name("healthgpt generation test plugin")
    w.add_string("healthgpt.plugin.task", "generation")
    w.add_int32("healthgpt.plugin.vision_layer", 1)
    w.add_uint32("healthgpt.plugin.rank", RANK)
    w.add_float32("healthgpt.plugin.alpha", ALPHA)
    w.add_uint32("healthgpt.plugin.experts", EXPERTS)
    w.add_string("healthgpt.plugin.projector_type", "mlp2x_gelu")
    w.add_string("healthgpt.plugin.base_architecture", "phi3")
    for l, layer in enumerate(phi.model.layers):
        for mod, ours in [("self_attn.qkv_proj", "attn_qkv"), ("self_attn.o_proj", "attn_output"),
                          ("mlp.gate_up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]:
            h = layer.get_submodule(mod)
            w.add_tensor(f"blk.{l}.{ours}.hlora_a", gp.f32(h.A.weight))
            w.add_tensor(f"blk.{l}.{ours}.hlora_b", gp.f32(h.B.weight))
            w.add_tensor(f"blk.{l}.{ours}.hlora_route", gp.f32(h.route.weight))
    w.add_tensor("mm.0.weight", gp.f32(proj[0].weight))
    w.add_tensor("mm.0.bias", gp.f32(proj[0].bias))
    w.add_tensor("mm.2.weight", gp.f32(proj[2].weight))
    w.add_tensor("mm.2.bias", gp.f32(proj[2].bias))
    w.add_tensor("token_embd.weight", embd16.numpy())
    w.add_tensor("output.weight", head16.numpy())
    gp.finish(w)


def main():
    os.makedirs(os.path.join(OUT, "model", "plugins"), exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)

    tokens, scores, types, chat = gp.make_vocab()
    N = len(tokens)
    n_rows = (N + 63) // 64 * 64
    stops = [chat["<|endoftext|>"], chat["<|assistant|>"], chat["<|end|>"]]
    V = N + N_VQ
    start_index, idx0, end_index = N, N + 1, N + 8193

    pcfg = Phi3Config(vocab_size=n_rows, hidden_size=E, intermediate_size=FF, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=4096,
                      original_max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
                      sliding_window=2047, bos_token_id=1, eos_token_id=stops[0], pad_token_id=stops[0],
                      tie_word_embeddings=False, attn_implementation="eager", torch_dtype="float32")
    phi = Phi3ForCausalLM(pcfg).eval()
    gp.randomise(phi, g)
    ccfg = CLIPVisionConfig(image_size=336, patch_size=14, num_channels=3, hidden_size=VIS_H,
                            num_attention_heads=VIS_HEADS, num_hidden_layers=VIS_LAYERS, intermediate_size=VIS_FF,
                            layer_norm_eps=1e-5, hidden_act="quick_gelu")
    clip = CLIPVisionModel(ccfg).eval()
    gp.randomise(clip.vision_model, g)
    proj = nn.Sequential(nn.Linear(VIS_H, E), nn.GELU(), nn.Linear(E, E)).eval()
    gp.randomise(proj, g)

    gp.write_text(os.path.join(OUT, "model", "text.gguf"), phi, tokens, scores, types, chat, n_rows, stops)
    gp.write_vision(os.path.join(OUT, "model", "vision.gguf"), clip)

    # H-LoRA, the vocabulary extension, then the GEN plugin's fusion rows (F16 as stored)
    for layer in phi.model.layers:
        for parent, name in [(layer.self_attn, "qkv_proj"), (layer.self_attn, "o_proj"), (layer.mlp, "gate_up_proj"),
                             (layer.mlp, "down_proj")]:
            setattr(parent, name, gp.HLoraLinear(getattr(parent, name), RANK, EXPERTS, ALPHA, g))
    phi.eval()
    phi.resize_token_embeddings(V)
    embd16 = torch.randn(V, E, generator=g).to(torch.float16)
    head16 = (2.0 * torch.randn(V, E, generator=g) / E ** 0.5).to(torch.float16)
    with torch.no_grad():
        phi.get_input_embeddings().weight.copy_(embd16.float())
        phi.get_output_embeddings().weight.copy_(head16.float())
    write_gen_plugin(os.path.join(OUT, "model", "plugins", "gen.gguf"), phi, proj, embd16, head16)

    # the tiny VQGAN (real taming GumbelVQ)
    vq = gv.round_conv_weights(gv.build_model(VQ_CFG, SEED + 3), torch.float16)
    write_vqgan_decoder(vq, VQ_CFG, os.path.join(OUT, "model", "vqgan.gguf"))

    # the request: phi3_instruct layout, an image, "reconstruct the image", then <start_index>
    gp.make_image(os.path.join(OUT, "input.png"), 50, 37, SEED + 1)
    proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                              do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
                              image_mean=gp.MEAN, image_std=gp.STD, resample=3, do_convert_rgb=True)
    bg = tuple(int(m * 255) for m in gp.MEAN)
    img = Image.open(os.path.join(OUT, "input.png")).convert("RGB")
    pixels = proc(gp.expand2square(img, bg), return_tensors="pt")["pixel_values"]

    def w(s):
        return tokens.index(s)

    recon = [w("\u2581"), w("r"), w("e"), w("c"), w("o"), w("n"), w("s"), w("t"), w("r"), w("u"), w("c"), w("t"),
             w("\u2581the"), w("\u2581image"), w(".")]
    ids = ([chat["<|system|>"], w("\u2581s"), w("\u2581i"), chat["<|end|>"], chat["<|user|>"], gp.IMAGE_TOKEN,
            tokens.index("<0x0A>")] + recon + [chat["<|end|>"], chat["<|assistant|>"], start_index])

    clip64, proj64, phi64 = copy.deepcopy(clip).double(), copy.deepcopy(proj).double(), copy.deepcopy(phi).double()

    @torch.no_grad()
    def embeds(px, c, p, m):
        hs = c(pixel_values=px, output_hidden_states=True).hidden_states
        feats = p(hs[1][0, 1:, :])  # GEN: vision layer 1, CLS dropped -> [576, E]
        k = ids.index(gp.IMAGE_TOKEN)
        emb = m.get_input_embeddings()
        return torch.cat([emb(torch.tensor(ids[:k])), feats, emb(torch.tensor(ids[k + 1:]))], 0)

    x64 = embeds(pixels.double(), clip64, proj64, phi64)
    lo, hi = idx0, idx0 + VQ_CFG["n_embed"]  # allowed ids

    # constrained greedy decoding, float64, KV cache
    torch.set_default_dtype(torch.float64)
    out, margins = [], []
    with torch.no_grad():
        r = phi64(inputs_embeds=x64[None], use_cache=True)
        past, last = r.past_key_values, r.logits[0, -1]
        for step in range(N_TOKENS):
            allowed = last[lo:hi]
            top2 = torch.topk(allowed, 2).values
            margins.append((top2[0] - top2[1]).item())
            k = int(torch.argmax(allowed).item())
            out.append(k)
            if step + 1 < N_TOKENS:
                r = phi64(input_ids=torch.tensor([[idx0 + k]]), past_key_values=past, use_cache=True)
                past, last = r.past_key_values, r.logits[0, -1]
        # the whole sequence without cache, float64 and float32: the float32 rounding scale
        seq = torch.tensor([idx0 + k for k in out[:-1]])
        full64 = torch.cat([x64, phi64.get_input_embeddings()(seq)], 0)
        lg64 = phi64(inputs_embeds=full64[None]).logits[0, x64.shape[0] - 1:, lo:hi]
    torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        x32 = embeds(pixels, clip, proj, phi)
        full32 = torch.cat([x32, phi.get_input_embeddings()(seq)], 0)
        lg32 = phi(inputs_embeds=full32[None]).logits[0, x32.shape[0] - 1:, lo:hi].double()
    assert torch.equal(torch.argmax(lg64, 1), torch.tensor(out)), "cached and uncached float64 choices differ"
    noise = (lg32 - lg64).abs().max().item()
    scale = lg64.abs().max().item()
    step_noise = (lg32 - lg64).abs().max(1).values.tolist()  # per step: the float32 error of its logits
    ratios = [m / max(n, 1e-12) for m, n in zip(margins, step_noise)]
    print(f"scale {scale:.3g} noise {noise:.3g} (first step {step_noise[0]:.3g}), smallest margin/step-noise "
          f"{sorted(ratios)[:5]}, min margin {min(margins):.3g}")
    assert min(ratios) > 10, f"near-tie: a step's margin is {min(ratios):.3g}x its float32 error: change SEED"

    # pixels: the real GumbelVQ in float32
    with torch.no_grad():
        lat = VQ_CFG["resolution"] >> (len(VQ_CFG["ch_mult"]) - 1)
        xdec = gv.decode_indices(vq, torch.tensor(out), lat)
    gp.f32(xdec[0]).astype("<f4").tofile(os.path.join(OUT, "decode.f32"))
    px = gv.to_pixels(xdec)
    Image.fromarray(px, "RGB").save(os.path.join(OUT, "output.png"))

    manifest = {"generator": "tests/reference/gen_generation.py",
                "n_tokenizer": N, "n_vocab": V, "start_index": start_index, "idx0": idx0, "end_index": end_index,
                "vqgan": VQ_CFG, "prompt_ids": ids, "input": "input.png", "positions": int(x64.shape[0]),
                "indices": out, "n_distinct": len(set(out)), "min_margin": min(margins), "logit_scale": scale,
                "torch_f32_max_abs": noise, "min_margin_over_step_f32_error": min(ratios), "decode": "decode.f32", "decode_max_abs": xdec.abs().max().item(),
                "output": "output.png"}
    with open(os.path.join(OUT, "case.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"{x64.shape[0]} prompt positions, {len(out)} indices ({len(set(out))} distinct), min margin "
          f"{min(margins):.4g}, float32 noise {noise:.3g}, logit scale {scale:.3g}")


if __name__ == "__main__":
    main()
