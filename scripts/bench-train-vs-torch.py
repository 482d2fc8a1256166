#!/usr/bin/env python3
"""Side-by-side training benchmark: the same stage-3 run in PyTorch (CPU) and in healthgpt.

One mid-size HealthGPT-shaped model (Phi-3 decoder, CLIP tower, mlp2x_gelu projector, H-LoRA on
every wrapped linear) is built with the training oracle's code (tests/reference/gen_train_model.py,
the model whose gradients and 20-step trajectory the parity tests hold us to), written as our model
folder, and trained for --steps AdamW steps on two image examples in both frameworks:
stage 3 = the H-LoRA tensors (lr 1e-3) and the projector (lr 2e-4) trainable, the decoder base and
the vision tower frozen; weight decay 0.01, cosine schedule with 1 warmup step, clipping at 1.0.

PyTorch runs with `torch.set_num_threads(--threads)`, in float32, the batch right-padded with an
attention mask (transformers' eager attention, and SDPA when --attn both). healthgpt runs
`healthgpt bench --train-manifest` with -t --threads. The first step of each is a warm-up and not
timed. "Equal results" is checked: the per-step losses of the two runs must agree to --rtol.

Needs the reference packages (pip install -r tests/reference/requirements.txt); prints a markdown
table and the ratio. Not a test: a benchmark (docs/PERFORMANCE.md records its results).

  python3 scripts/bench-train-vs-torch.py --healthgpt build/bin/healthgpt --threads 2
"""
import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--healthgpt", default=os.path.join(HERE, "..", "build", "bin", "healthgpt"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="optimiser steps (the first is not timed)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--ff", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--image", type=int, default=336)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--vision-hidden", type=int, default=256)
    ap.add_argument("--vision-layers", type=int, default=4)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--attn", choices=["eager", "sdpa", "both"], default="both")
    ap.add_argument("--rtol", type=float, default=1e-4, help="largest relative loss difference accepted per step")
    ap.add_argument("--keep", help="write the model folder and manifest here instead of a temporary folder")
    ap.add_argument("--no-torch", action="store_true",
                    help="write the files (with --keep) and run healthgpt only, e.g. to profile it")
    return ap.parse_args()


def main():
    a = parse()
    import torch
    import gen_train_model as gtm  # the oracle's model builder and writers (sets deterministic mode)
    from transformers import get_cosine_schedule_with_warmup
    from transformers.models.phi3 import modeling_phi3

    torch.use_deterministic_algorithms(False)  # the oracle's setting; a benchmark runs torch as users do
    torch.set_num_threads(a.threads)
    gtm.E, gtm.FF, gtm.LAYERS, gtm.HEADS, gtm.KV_HEADS = a.hidden, a.ff, a.layers, a.heads, a.kv_heads
    gtm.IMG, gtm.PATCH = a.image, a.patch
    gtm.VIS_H, gtm.VIS_FF, gtm.VIS_LAYERS, gtm.VIS_HEADS = a.vision_hidden, 4 * a.vision_hidden, a.vision_layers, max(
        1, a.vision_hidden // 64)
    gtm.RANK, gtm.EXPERTS, gtm.ALPHA = a.rank, a.experts, 2.0 * a.rank
    lr_hlora, lr_proj, wd, warmup, clip_norm = 1e-3, 2e-4, 0.01, 1, 1.0

    tokens, scores, types, chat = gtm.gp.make_vocab()
    n_rows = (len(tokens) + 63) // 64 * 64
    stops = [chat["<|endoftext|>"], chat["<|assistant|>"], chat["<|end|>"]]
    n_patches = (a.image // a.patch) ** 2
    lm, base, clip, proj, pixels = gtm.build_case("phi3", 2024, tokens, scores, types, chat, n_rows, stops)
    examples, _ = gtm.make_examples(tokens, chat, n_patches)

    tmp = None
    out = a.keep
    if not out:
        tmp = tempfile.TemporaryDirectory(prefix="bench-train-vs-torch-")
        out = tmp.name
    os.makedirs(os.path.join(out, "model", "plugins"), exist_ok=True)
    gtm.write_text(os.path.join(out, "model", "text.gguf"), base, "phi3", tokens, scores, types, chat, n_rows, stops)
    gtm.gp.write_vision(os.path.join(out, "model", "vision.gguf"), clip)
    gtm.write_plugin(os.path.join(out, "model", "plugins", "com.gguf"), lm, "phi3", proj)
    for k, px in enumerate(pixels):
        px.numpy().astype("<f4").tofile(os.path.join(out, f"pixels_{k}.f32"))
    manifest = {"model": "model", "plugin": "com", "stage": 3, "steps": a.steps, "batch": len(examples),
                "lr": {"hlora": lr_hlora, "projector": lr_proj}, "weight_decay": wd, "warmup_steps": warmup,
                "max_grad_norm": clip_norm,
                "examples": [{"ids": ex["ids"], "labels": ex["labels"], "pixels": f"pixels_{k}.f32"}
                             for k, ex in enumerate(examples)]}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    rows = sum(ex["positions"] for ex in examples)
    pad_id = chat["<|endoftext|>"]

    def to_sdpa(m):
        for i, layer in enumerate(m.model.layers):
            old = layer.self_attn
            new = modeling_phi3.PHI3_ATTENTION_CLASSES["sdpa"](m.config, layer_idx=i)
            new.qkv_proj, new.o_proj, new.rotary_emb = old.qkv_proj, old.o_proj, old.rotary_emb
            layer.self_attn = new
        m.config._attn_implementation = "sdpa"
        m.model._attn_implementation = "sdpa"

    def torch_run(attn):
        m_lm, m_clip, m_proj = copy.deepcopy(lm), copy.deepcopy(clip), copy.deepcopy(proj)
        if attn == "sdpa":
            to_sdpa(m_lm)
        for p in list(m_lm.parameters()) + list(m_clip.parameters()) + list(m_proj.parameters()):
            p.requires_grad_(False)
        hl = [p for _, p in gtm.hlora_names(m_lm, "phi3")]
        pr = [p for _, p in gtm.projector_names(m_proj)]
        for p in hl + pr:
            p.requires_grad_(True)
        opt = torch.optim.AdamW([{"params": hl, "lr": lr_hlora}, {"params": pr, "lr": lr_proj}], betas=(0.9, 0.999),
                                eps=1e-8, weight_decay=wd)
        sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=a.steps)
        losses, secs, cpus = [], [], []
        for _ in range(a.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad(set_to_none=True)
            loss = gtm.batch_loss(m_lm, m_clip, m_proj, examples, pixels, pad_id, torch.float32)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hl + pr, max_norm=clip_norm)
            opt.step()
            sched.step()
            secs.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            losses.append(loss.item())
        return losses, secs, cpus

    results = {}
    for attn in [] if a.no_torch else (["eager", "sdpa"] if a.attn == "both" else [a.attn]):
        results[f"PyTorch {torch.__version__} ({attn} attention)"] = torch_run(attn)
    torch_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    cmd = [a.healthgpt, "bench", "--train-manifest", os.path.join(out, "manifest.json"), "-t", str(a.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"healthgpt failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    ours = json.loads(proc.stdout.strip().splitlines()[-1])

    cpu = ours["cpu"]
    med = lambda s: statistics.median(s[1:]) if len(s) > 1 else s[0]
    print(f"CPU: {cpu}; threads {a.threads}; decoder {a.layers} x {a.hidden} (FF {a.ff}, {a.heads}/{a.kv_heads} heads), "
          f"tower {a.vision_layers} x {a.vision_hidden} at {a.image} px ({n_patches} patches), H-LoRA rank {a.rank} x "
          f"{a.experts} experts; {len(examples)} examples = {rows} rows per step; {a.steps} steps (first untimed); "
          f"{ours['trainable']:,} trainable values")
    print()
    print("| run | wall s/step (median) | CPU s/step (median) | rows/s (wall) | loss step 1 | loss last step | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (lo, se, cp) in results.items():
        print(f"| {name} | {med(se):.2f} | {med(cp):.2f} | {rows / med(se):.0f} | {lo[0]:.6f} | {lo[-1]:.6f} | "
              f"{torch_rss:.0f} (whole script) |")
    print(f"| healthgpt | {med(ours['seconds']):.2f} | {med(ours['cpu_seconds']):.2f} | {rows / med(ours['seconds']):.0f} | "
          f"{ours['loss'][0]:.6f} | {ours['loss'][-1]:.6f} | {ours['peak_rss_mib']:.0f} |")
    print()
    worst = 0.0
    for name, (lo, se, cp) in results.items():
        d = max(abs(x - y) / abs(y) for x, y in zip(ours["loss"], lo))
        worst = max(worst, d)
        print(f"healthgpt vs {name}: {med(se) / med(ours['seconds']):.2f}x faster per step (wall), "
              f"{med(cp) / med(ours['cpu_seconds']):.2f}x (CPU time); largest relative loss difference over "
              f"{a.steps} steps {d:.2e}")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    if worst > a.rtol:
        sys.exit(f"the runs differ by {worst:.2e} (> --rtol {a.rtol:g}): not the same training run")


if __name__ == "__main__":
    main()
