#!/usr/bin/env python3
"""Reference outputs for the VQGAN (taming GumbelVQ) decoder/encoder and the image quality metrics.

Oracles:
  * taming-transformers (pip `taming-transformers-rom1504`): the real `GumbelVQ` class built from tiny
    configs with random weights, run in float32 on the CPU;
  * scikit-image: `structural_similarity`, `peak_signal_noise_ratio`, `mean_squared_error`;
  * Pillow: LANCZOS resize, JPEG decoding, blur, RGB->L conversion.

Writes only into tests/fixtures/vqgan/, deterministically (seeded):
  <config>/manifest.json, weights.bin   config, tensor names/shapes/offsets; raw float32 weights (state_dict order)
  <config>/indices.i32                  codes in raster order; decode.f32 [3,R,R] decoder output; pixels.u8 [R,R,3]
  <config>/decode_{f16w,bf16w}.f32      decoder output with conv weights rounded to F16 / BF16
  <config>/encode_image.u8 [R,R,3]      a real X-ray, LANCZOS-resized; encode_logits.f32 [n_embed,h,w];
                                        encode_indices.i32 (argmax); encode_prequant.f32 and probe/*.f32 are
                                        intermediate outputs for localising a mismatch
  f2_attn2/tiny.ckpt, tiny.gguf         the Lightning checkpoint layout and our GGUF layout (converter tests)
  f8_openimages_layout.json             every state_dict key and shape of the released full-size model
  metrics/                              degraded images and scikit-image's SSIM/PSNR/MSE (expected.json)
"""
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

warnings.filterwarnings("ignore")
torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)

from taming.models.vqgan import GumbelVQ  # noqa: E402  (real module, prints a deprecation note)
import taming.modules.losses.lpips as taming_lpips  # noqa: E402
from taming.modules.discriminator.model import NLayerDiscriminator  # noqa: E402
import skimage  # noqa: E402
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "fixtures" / "vqgan"
SHARED = Path(os.environ.get("HEALTHGPT_SHARED_DATA", HERE.parent.parent.parent / "shared" / "data"))

# Tiny configs with the structure of the released OpenImages f8 GumbelVQ (ch 128, ch_mult [1,1,2,4],
# 2 res blocks, attention at 32, z = embed = 256, 8192 codes, 256 px). GroupNorm(32) needs channel
# counts that are multiples of 32. GumbelVQ feeds quant_conv's output (embed_dim channels) to
# quantize.proj, which takes z_channels inputs: the reference only runs when embed_dim == z_channels.
CONFIGS = {
    # 3 levels like f8's 4: two upsamplings, num_res_blocks 2 (3 blocks per up level), attention at the
    # lowest resolution only (as in f8), nin_shortcut in encoder.down.2.block.0 and decoder.up.1.block.0.
    "f4_tiny": dict(ch=32, ch_mult=[1, 1, 2], num_res_blocks=2, attn_resolutions=[8], z_channels=32,
                    embed_dim=32, n_embed=64, resolution=32, in_channels=3, out_ch=3),
    # 2 levels, num_res_blocks 1, attention at two resolutions (also at the full-resolution level),
    # z_channels different from the block width. Small, so it also serves as the tiny checkpoint/GGUF.
    "f2_attn2": dict(ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[16, 8], z_channels=16,
                     embed_dim=16, n_embed=48, resolution=16, in_channels=3, out_ch=3),
}


def ddconfig(cfg):
    return dict(double_z=False, z_channels=cfg["z_channels"], resolution=cfg["resolution"],
                in_channels=cfg["in_channels"], out_ch=cfg["out_ch"], ch=cfg["ch"], ch_mult=cfg["ch_mult"],
                num_res_blocks=cfg["num_res_blocks"], attn_resolutions=cfg["attn_resolutions"], dropout=0.0)


# The released HealthGPT VQGAN (taming_transformers/ckpt/model.yaml): OpenImages f8, 8192 codes.
F8_OPENIMAGES = dict(ch=128, ch_mult=[1, 1, 2, 4], num_res_blocks=2, attn_resolutions=[32], z_channels=256,
                     embed_dim=256, n_embed=8192, resolution=256, in_channels=3, out_ch=3)


def make_gumbelvq(cfg):
    return GumbelVQ(
        ddconfig=ddconfig(cfg),
        lossconfig={"target": "taming.modules.losses.vqperceptual.DummyLoss"},
        n_embed=cfg["n_embed"], embed_dim=cfg["embed_dim"], kl_weight=1e-8,
        temperature_scheduler_config={"target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
                                      "params": {"warm_up_steps": 0, "max_decay_steps": 1000001,
                                                 "lr_start": 0.9, "lr_max": 0.9, "lr_min": 1e-6}})


def write_f8_layout(path):
    """Every state_dict key and shape of the full-size model (built on the meta device: no weights)."""
    with torch.device("meta"):
        model = make_gumbelvq(F8_OPENIMAGES)
    layout = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    path.write_text(json.dumps({"config": F8_OPENIMAGES, "tensors": layout}, indent=0) + "\n")
    print(f"{path.name}: {len(layout)} tensors, longest name {max(len(k) for k, _ in layout)} bytes")


def build_model(cfg, seed):
    """The real GumbelVQ, configured like HealthGPT's taming_transformers/ckpt/model.yaml."""
    torch.manual_seed(seed)
    model = make_gumbelvq(cfg)
    model.eval()
    # PyTorch initialises GroupNorm to weight 1 / bias 0: randomise them so the affine path is tested.
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if ".norm" in name:
            if name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        elif name.endswith("bias"):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def decode_indices(model, idx, lat):
    """HealthGPT's idx2img.decode_to_img: get_codebook_entry (one-hot einsum) -> decode."""
    zq = model.quantize.get_codebook_entry(idx.reshape(-1), shape=(1, lat, lat, model.quantize.embedding_dim))
    return model.decode(zq)


def to_pixels(x):
    """HealthGPT's idx2img.custom_to_pil up to the PIL image: clamp, (x+1)/2, 255*x, astype(uint8)."""
    x = torch.clamp(x, -1., 1.)
    x = (x + 1.) / 2.
    x = x[0].permute(1, 2, 0).numpy()
    return (255 * x).astype(np.uint8)


def round_conv_weights(model, dtype):
    """A copy whose 4-d (conv) weights are rounded to dtype (F16/BF16 GGUF storage); the rest stays F32."""
    import copy
    m = copy.deepcopy(model)
    for name, p in m.named_parameters():
        if p.dim() == 4:
            p.copy_(p.to(dtype).float())
    return m


def save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(arr).tofile(path)


def real_image(size):
    """A real chest X-ray (NIH ChestX-ray14), resized like idx2img.preprocess (PIL LANCZOS), as RGB uint8."""
    src = SHARED / "medical" / "xray" / "nih_cxr14_00000001_000.png"
    img = Image.open(src).convert("RGB")
    img = img.resize((size, size), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def capture(model, names):
    """Forward hooks recording the outputs of the named submodules (for localising a mismatch)."""
    out, hooks = {}, []
    mods = dict(model.named_modules())
    for n in names:
        hooks.append(mods[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.clone())))
    return out, hooks


def gen_model(name, cfg, seed):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg, seed)
    lat = cfg["resolution"] // 2 ** (len(cfg["ch_mult"]) - 1)
    L = len(cfg["ch_mult"])

    # Spread the decoder output over [-1, 1] with some saturation, by scaling conv_out (a weight like
    # any other): measured on a first decode, then everything below is computed with the scaled model.
    g = torch.Generator().manual_seed(seed + 2)
    idx = torch.randint(0, cfg["n_embed"], (lat * lat,), generator=g)
    s = 0.9 / float(decode_indices(model, idx, lat).std())
    model.decoder.conv_out.weight.mul_(s)
    model.decoder.conv_out.bias.mul_(s)

    # ---- weights: raw float32 + a manifest (tests load them into an in-memory tensor map)
    tensors, blobs, off = [], [], 0
    for k, v in model.state_dict().items():
        a = v.detach().float().numpy()
        tensors.append({"name": k, "shape": list(a.shape), "offset": off})
        blobs.append(a.tobytes())
        off += a.nbytes
    (d / "weights.bin").write_bytes(b"".join(blobs))

    # ---- decode: random indices (raster order) through the real modules
    probes = ["post_quant_conv", "decoder.conv_in", "decoder.mid.block_2"] + [
        f"decoder.up.{i}.upsample" if i else f"decoder.up.0.block.{cfg['num_res_blocks']}" for i in range(L)]
    rec, hooks = capture(model, probes)
    x = decode_indices(model, idx, lat)
    for h in hooks:
        h.remove()
    save(d / "indices.i32", idx.numpy().astype(np.int32))
    save(d / "decode.f32", x[0].numpy().astype(np.float32))           # [3, R, R] before to-pixels
    save(d / "pixels.u8", to_pixels(x))                               # [R, R, 3] uint8
    for n, t in rec.items():
        save(d / "probe" / (n + ".f32"), t[0].numpy().astype(np.float32))
    # distance of each output value from a truncation boundary of 255*(x+1)/2 (for the report)
    v = 255 * ((torch.clamp(x, -1, 1) + 1) / 2)
    frac = (v - torch.floor(v))[(v > 0) & (v < 255)]
    near = int(((frac < 1e-4) | (frac > 1 - 1e-4)).sum())

    # F16 / BF16 conv weights: the reference with the same rounding applied to its weights
    for tag, dt in (("f16w", torch.float16), ("bf16w", torch.bfloat16)):
        m2 = round_conv_weights(model, dt)
        save(d / f"decode_{tag}.f32", decode_indices(m2, idx, lat)[0].numpy().astype(np.float32))

    # ---- encode: a real X-ray resized with LANCZOS, ToTensor, 2x-1, encoder, quant_conv, proj
    img = real_image(cfg["resolution"])
    save(d / "encode_image.u8", img)
    xin = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float().div(255)   # T.ToTensor
    xin = 2. * xin - 1.                                                            # preprocess_vqgan
    h = model.quant_conv(model.encoder(xin))
    logits = model.quantize.proj(h)
    ind = logits.argmax(1)[0]
    save(d / "encode_prequant.f32", h[0].numpy().astype(np.float32))
    save(d / "encode_logits.f32", logits[0].numpy().astype(np.float32))   # [n_embed, h, w]
    save(d / "encode_indices.i32", ind.reshape(-1).numpy().astype(np.int32))
    top2 = torch.topk(logits[0], 2, dim=0).values
    margin = float((top2[0] - top2[1]).min())
    # The reference forward (GumbelQuantize.forward) adds Gumbel noise even in eval mode:
    torch.manual_seed(0)
    _, _, (_, _, ind_a) = model.encode(xin)
    _, _, (_, _, ind_b) = model.encode(xin)
    stochastic = {"run_a_vs_run_b_differ": int((ind_a != ind_b).sum()),
                  "run_a_vs_argmax_differ": int((ind_a.reshape(-1) != ind.reshape(-1)).sum()),
                  "positions": int(ind.numel())}

    manifest = {
        "config": cfg, "latent": lat, "seed": seed, "tensors": tensors, "dtype": "F32",
        "notes": {
            "decode_values_within_1e-4_of_a_truncation_boundary": near,
            "encode_min_top1_top2_logit_margin": margin,
            "gumbel_forward_is_stochastic": stochastic,
        },
        "versions": {"torch": torch.__version__, "taming-transformers-rom1504": "0.0.6",
                     "numpy": np.__version__},
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{name}: {len(tensors)} tensors, {off} bytes; latent {lat}x{lat}; boundary-near values {near}; "
          f"min logit margin {margin:.3g}; gumbel reruns differ at {stochastic['run_a_vs_run_b_differ']}/"
          f"{stochastic['positions']}")
    return model


def write_lightning_ckpt(model, cfg, path):
    """A tiny checkpoint with the layout of taming's Lightning `last.ckpt`: the model's state_dict plus the
    training-loss modules (LPIPS VGG16 + PatchGAN discriminator) that a training config adds under loss.*,
    and the usual Lightning top-level entries. loss.* tensors are shrunk (they are ignored on conversion)
    except the discriminator, which is a real tiny NLayerDiscriminator (BatchNorm buffers included)."""
    sd = dict(model.state_dict())
    with torch.device("meta"):
        vgg = taming_lpips.vgg16(pretrained=False, requires_grad=False)
        lins = [taming_lpips.NetLinLayer(c) for c in [64, 128, 256, 512, 512]]
    g = torch.Generator().manual_seed(7)
    for k, v in vgg.state_dict().items():
        sd["loss.perceptual_loss.net." + k] = torch.randn(2, generator=g)
    for i, lin in enumerate(lins):
        for k, v in lin.state_dict().items():
            sd[f"loss.perceptual_loss.lin{i}.{k}"] = torch.randn(2, generator=g)
    sd["loss.perceptual_loss.scaling_layer.shift"] = torch.tensor([-.030, -.088, -.188])[None, :, None, None]
    sd["loss.perceptual_loss.scaling_layer.scale"] = torch.tensor([.458, .448, .450])[None, :, None, None]
    torch.manual_seed(8)
    disc = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=2)
    for k, v in disc.state_dict().items():
        sd["loss.discriminator." + k] = v.clone()
    ckpt = {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "1.0.8",
        "callbacks": {},
        "optimizer_states": [{"state": {0: {"step": 1234, "exp_avg": torch.zeros(4), "exp_avg_sq": torch.ones(4)}},
                              "param_groups": [{"lr": 4.5e-06, "betas": (0.5, 0.9), "eps": 1e-08,
                                                "weight_decay": 0, "amsgrad": False, "params": [0]}]}],
        "lr_schedulers": [],
        "state_dict": sd,
    }
    torch.save(ckpt, path)
    ignored = sorted(k for k in sd if k.startswith("loss."))
    print(f"{path.name}: {len(sd)} state_dict keys, {len(ignored)} under loss.*")


def write_gguf(model, cfg, path, name):
    """The same tiny model in our GGUF layout (docs/MODELS.md "VQGAN"), written by gguf-py."""
    import gguf
    w = gguf.GGUFWriter(str(path), "vqgan")
    w.add_name(name)
    w.add_uint32("vqgan.ch", cfg["ch"])
    w.add_array("vqgan.ch_mult", [int(m) for m in cfg["ch_mult"]])
    w.add_uint32("vqgan.num_res_blocks", cfg["num_res_blocks"])
    w.add_array("vqgan.attn_resolutions", [int(r) for r in cfg["attn_resolutions"]])
    w.add_uint32("vqgan.z_channels", cfg["z_channels"])
    w.add_uint32("vqgan.embed_dim", cfg["embed_dim"])
    w.add_uint32("vqgan.n_embed", cfg["n_embed"])
    w.add_uint32("vqgan.resolution", cfg["resolution"])
    w.add_uint32("vqgan.in_channels", cfg["in_channels"])
    w.add_uint32("vqgan.out_ch", cfg["out_ch"])
    w.add_string("vqgan.quantizer", "gumbel")
    for k, v in model.state_dict().items():
        w.add_tensor(k, v.detach().float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ------------------------------------------------------------------------------------------ metrics

def skimage_metrics(a, b, channel_axis):
    """scikit-image with its defaults: 7x7 uniform window, K1 0.01, K2 0.03, sample covariance, data_range
    from the integer dtype (255 for uint8, 65535 for uint16); RGB = mean of per-channel SSIM."""
    kw = {} if channel_axis is None else {"channel_axis": channel_axis}
    return {"ssim": float(structural_similarity(a, b, **kw)),
            "psnr": float(peak_signal_noise_ratio(a, b)),
            "mse": float(mean_squared_error(a, b))}


def save_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        Image.fromarray(arr, mode="I;16").save(path, optimize=True)
    else:
        Image.fromarray(arr).save(path, optimize=True)


def gen_metrics():
    d = OUT / "metrics"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    cases = []

    def add(case, a_ref, a_path, b, b_path, channel_axis, **extra):
        save_png(d / b_path, b)
        m = skimage_metrics(a_ref, b, channel_axis)
        cases.append({"name": case, "a": a_path, "b": b_path, "shape": list(b.shape), "dtype": str(b.dtype),
                      **extra, **m})

    # 1) NIH chest X-ray PNG (512x512, 8-bit gray), read by the test from the shared data folder.
    for fname in ["nih_cxr14_00000001_000.png", "nih_cxr14_00027426_000.png"]:
        src = SHARED / "medical" / "xray" / fname
        img = Image.open(src)
        a = np.asarray(img)
        assert a.dtype == np.uint8 and a.ndim == 2, (fname, a.dtype, a.shape)
        stem = fname[:-4]
        a_path = "shared:medical/xray/" + fname
        blur = np.asarray(img.filter(ImageFilter.GaussianBlur(2)))
        add(stem + "_blur2", a, a_path, blur, stem + "_blur2.png", None)
        noisy = np.clip(a.astype(np.float64) + rng.normal(0, 12, a.shape), 0, 255).round().astype(np.uint8)
        add(stem + "_noise12", a, a_path, noisy, stem + "_noise12.png", None)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=25)
        jpg = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        add(stem + "_jpeg25", a, a_path, jpg, stem + "_jpeg25.png", None)

    # 2) VQA-RAD JPEGs decoded by Pillow (as RGB), cropped to an odd-sized region; the decoded crop is saved
    #    (C++ has no bit-exact libjpeg here), plus a colour-noised copy: RGB SSIM = mean over channels.
    for fname, box in [("synpic100132.jpg", (40, 30, 40 + 301, 30 + 257)), ("synpic16520.jpg", (0, 0, 199, 131))]:
        img = Image.open(SHARED / "vqa-rad" / "images" / fname).convert("RGB").crop(box)
        a = np.asarray(img)
        stem = fname[:-4]
        save_png(d / (stem + "_rgb.png"), a)
        noisy = np.clip(a.astype(np.float64) + rng.normal(0, 8, a.shape), 0, 255).round().astype(np.uint8)
        add(stem + "_rgb_noise8", a, stem + "_rgb.png", noisy, stem + "_rgb_noise8.png", -1)
        # the gray convention: PIL convert("L") of both, then single-channel metrics
        la = np.asarray(img.convert("L"))
        lb = np.asarray(Image.fromarray(noisy).convert("L"))
        m = skimage_metrics(la, lb, None)
        cases.append({"name": stem + "_rgb_noise8_as_L", "a": stem + "_rgb.png", "b": stem + "_rgb_noise8.png",
                      "shape": list(la.shape), "dtype": "uint8", "gray": True, **m})

    # 3) 16-bit: the X-ray widened to uint16 (x*257) and noised; data_range 65535 (uint16 default).
    a8 = np.asarray(Image.open(SHARED / "medical" / "xray" / "nih_cxr14_00027426_000.png"))[100:228, 64:197]
    a16 = (a8.astype(np.uint32) * 257).astype(np.uint16)
    b16 = np.clip(a16.astype(np.float64) + rng.normal(0, 900, a16.shape), 0, 65535).round().astype(np.uint16)
    save_png(d / "cxr_u16_a.png", a16)
    add("cxr_u16_noise900", a16, "cxr_u16_a.png", b16, "cxr_u16_noise900.png", None)

    (d / "expected.json").write_text(json.dumps({"skimage": skimage.__version__, "cases": cases}, indent=1) + "\n")
    for c in cases:
        print(f"  {c['name']:40s} ssim {c['ssim']:.6f} psnr {c['psnr']:.4f} mse {c['mse']:.4f}")


def main():
    if not (SHARED / "medical" / "xray").exists():
        sys.exit(f"shared data not found at {SHARED}; set HEALTHGPT_SHARED_DATA")
    models = {}
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        models[name] = gen_model(name, cfg, seed=100 + i)
    write_lightning_ckpt(models["f2_attn2"], CONFIGS["f2_attn2"], OUT / "f2_attn2" / "tiny.ckpt")
    write_gguf(models["f2_attn2"], CONFIGS["f2_attn2"], OUT / "f2_attn2" / "tiny.gguf", "vqgan-f2-attn2-tiny")
    write_f8_layout(OUT / "f8_openimages_layout.json")
    gen_metrics()


if __name__ == "__main__":
    main()
