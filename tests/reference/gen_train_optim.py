#!/usr/bin/env python3
"""Oracle for the training layer's optimiser pieces (tests/unit/train_optim_test.cpp).

Writes tests/fixtures/train_optim/optim.json:
  adamw     20 steps of torch.optim.AdamW(foreach=False) on three float32 tensors in two parameter
            groups (own lr / weight_decay), lr from transformers' get_cosine_schedule_with_warmup
            (LambdaLR), gradients clipped with torch.nn.utils.clip_grad_norm_ each step. The gradient
            of each step is g = c * p + b (elementwise, float32, two roundings) for fixed c, b, i.e. the
            gradient of sum(c p^2 / 2 + b p); the C++ test computes it the same way. Recorded: the
            inputs, every step's lr, total norm and parameters, and the final exp_avg / exp_avg_sq.
  schedules the multipliers of transformers' get_{cosine,linear,constant}_schedule_with_warmup
            lambdas for steps 0 .. T + 2.
  clip      clip_grad_norm_ cases (clipping and not): total norm and clipped gradients.
and verifies tests/fixtures/train_optim/writer_ref.pt (written by our C++ TorchWriter, see
torch_writer_test.cpp) loads with torch.load(weights_only=True) to exactly the expected tensors.
float32 values are stored as JSON numbers (Python floats: exact). Deterministic (fixed seeds).
"""
import collections
import json
from pathlib import Path

import numpy as np
import torch
from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                          get_linear_schedule_with_warmup)

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "train_optim"
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


def f32list(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def adamw_case():
    g = torch.Generator().manual_seed(1234)
    shapes = {"a.weight": [5, 7], "a.bias": [13], "mm.0.weight": [3, 4, 2]}
    groups = {"a.weight": 0, "a.bias": 0, "mm.0.weight": 1}
    params, cs, bs = {}, {}, {}
    for n, s in shapes.items():
        params[n] = torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float32))
        cs[n] = torch.rand(s, generator=g, dtype=torch.float32) * 2.0 + 0.1
        bs[n] = torch.randn(s, generator=g, dtype=torch.float32) * 0.5
    init = {n: f32list(p) for n, p in params.items()}
    group_cfg = [dict(lr=2e-2, weight_decay=0.1), dict(lr=5e-3, weight_decay=0.0)]
    opt = torch.optim.AdamW(
        [dict(params=[params[n] for n in shapes if groups[n] == gi], **cfg) for gi, cfg in enumerate(group_cfg)],
        betas=(0.9, 0.999), eps=1e-8, foreach=False, amsgrad=False, maximize=False)
    steps, warmup, max_norm = 20, 3, 1.0
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=steps)
    trace = []
    for _ in range(steps):
        lrs = [pg["lr"] for pg in opt.param_groups]
        for n, p in params.items():
            p.grad = cs[n] * p.detach() + bs[n]
        total = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)
        opt.step()
        sched.step()
        trace.append(dict(lr=lrs, total_norm=float(total), params={n: f32list(p) for n, p in params.items()}))
    state = {n: dict(step=float(opt.state[p]["step"]), exp_avg=f32list(opt.state[p]["exp_avg"]),
                     exp_avg_sq=f32list(opt.state[p]["exp_avg_sq"])) for n, p in params.items()}
    return dict(shapes=shapes, groups=groups, group_cfg=group_cfg, betas=[0.9, 0.999], eps=1e-8, steps=steps,
                warmup=warmup, max_norm=max_norm, init=init, c={n: f32list(t) for n, t in cs.items()},
                b={n: f32list(t) for n, t in bs.items()}, trace=trace, final_state=state)


def schedules():
    out = []
    p = torch.nn.Parameter(torch.zeros(1))
    for warmup, total in [(3, 20), (0, 10), (5, 5), (7, 100)]:
        for kind, make in [("cosine", lambda o: get_cosine_schedule_with_warmup(o, warmup, total)),
                           ("linear", lambda o: get_linear_schedule_with_warmup(o, warmup, total)),
                           ("constant_with_warmup", lambda o: get_constant_schedule_with_warmup(o, warmup))]:
            s = make(torch.optim.SGD([p], lr=1.0))
            out.append(dict(kind=kind, warmup=warmup, total=total,
                            values=[float(s.lr_lambdas[0](k)) for k in range(total + 3)]))
    return out


def clip_cases():
    g = torch.Generator().manual_seed(99)
    out = []
    for max_norm, scale in [(1.0, 1.0), (100.0, 1.0), (0.25, 3.0), (5.0, 1e-3)]:
        grads = [torch.randn(s, generator=g) * scale for s in ([4, 6], [9], [2, 3, 5])]
        ps = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
        for p, x in zip(ps, grads):
            p.grad = x.clone()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        out.append(dict(max_norm=max_norm, shapes=[list(x.shape) for x in grads], grads=[f32list(x) for x in grads],
                        total_norm=float(total), clipped=[f32list(p.grad) for p in ps]))
    return out


def writer_expected():
    """The content torch_writer_test.cpp writes into writer_ref.pt (the same formulas)."""
    a = torch.tensor([(i * 0.25 - 1.0) for i in range(6)], dtype=torch.float32).reshape(2, 3)
    h = torch.tensor([(i * 0.5 - 2.0) for i in range(8)], dtype=torch.float32).reshape(2, 2, 2).to(torch.float16)
    b = torch.tensor([(i * 0.375 - 1.5) for i in range(5)], dtype=torch.float32).to(torch.bfloat16)
    s = torch.tensor(3.5, dtype=torch.float32)
    e = torch.zeros(0, 4, dtype=torch.float32)
    big = torch.tensor([float(i % 251) for i in range(300)], dtype=torch.float32)
    return collections.OrderedDict([("layer.0.weight", a), ("half.x", h), ("bf.y", b), ("scalar", s),
                                    ("empty", e), ("big", big)])


def check_writer_file():
    path = OUT / "writer_ref.pt"
    if not path.exists():
        print(f"{path} not present yet (run the C++ test with HG_WRITE_FIXTURES=1 first)")
        return
    got = torch.load(path, weights_only=True)
    want = writer_expected()
    assert list(got.keys()) == list(want.keys()), (list(got.keys()), list(want.keys()))
    for k, w in want.items():
        t = got[k]
        assert t.dtype == w.dtype and t.shape == w.shape, (k, t.dtype, t.shape, w.dtype, w.shape)
        assert torch.equal(t.view(-1).view(torch.uint8) if t.numel() else t, w.view(-1).view(torch.uint8) if w.numel() else w), k
    print(f"{path}: torch.load(weights_only=True) gives exactly the {len(want)} expected tensors")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    doc = dict(torch=torch.__version__, adamw=adamw_case(), schedules=schedules(), clip=clip_cases())
    (OUT / "optim.json").write_text(json.dumps(doc, indent=None) + "\n")
    print("wrote", OUT / "optim.json")
    check_writer_file()


if __name__ == "__main__":
    main()
