#!/usr/bin/env python3
"""Reference outputs for the imaging layer (src/imaging), written to tests/fixtures/imaging/.

Oracles (pinned in requirements.txt):
  pydicom 3 + pylibjpeg (libjpeg, openjpeg, rle)  DICOM pixel values, modality LUT (HU), metadata
  nibabel                                          NIfTI data, scaling, closest-canonical orientation
  Pillow 10.3.0                                    decoding of PNG/JPEG/BMP/TIFF, convert("RGB"),
                                                   Image.resize (BICUBIC, LANCZOS, ...), EXIF transpose
  transformers CLIPImageProcessor                  the CLIP input tensor
  numpy                                            the DICOM windowing formula, percentiles, linspace

Large arrays are summarised by CRC-32 of their bytes (float64 or float32, little-endian, C order)
plus a few exact values and stats; lossy DICOM decodes are stored whole (gzip) so the test can
measure the error. Inputs are read in place: the shared data ($HEALTHGPT_SHARED_DATA) and the
Debian test files fetched by scripts/fetch-test-data.sh ($HG_TESTDATA, default build/testdata).
"""
import gzip
import io
import json
import os
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = REPO / "tests" / "fixtures" / "imaging"
SHARED = Path(os.environ.get("HEALTHGPT_SHARED_DATA", REPO.parent.parent / "shared" / "data"))
if not SHARED.exists():
    SHARED = Path("/work/shared/data")
TESTDATA = Path(os.environ.get("HG_TESTDATA", REPO / "build" / "testdata"))
PYDICOM_FILES = TESTDATA / "python3-pydicom/usr/lib/python3/dist-packages/pydicom/data/test_files"
NIBABEL_FILES = TESTDATA / "python3-nibabel/usr/lib/python3/dist-packages/nibabel/tests/data"
DICOM3TOOLS = TESTDATA / "dicom3tools/usr/share/doc/dicom3tools/examples"


def crc(arr, dtype):
    a = np.ascontiguousarray(np.asarray(arr).astype(dtype))
    return zlib.crc32(a.astype(a.dtype.newbyteorder("<")).tobytes())


def samples(flat, n=16):
    """n values at positions spread over the array (i * (size-1) // (n-1))."""
    flat = np.asarray(flat).ravel()
    if flat.size == 0:
        return []
    idx = [i * (flat.size - 1) // max(n - 1, 1) for i in range(n)]
    return [[int(i), float(flat[i])] for i in idx]


def stats(a):
    a = np.asarray(a, dtype=np.float64)
    return {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean())}


def write_gz(name, arr):
    """Deterministic gzip (mtime 0) of the raw little-endian bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as f:
        f.write(np.ascontiguousarray(arr).tobytes())
    (OUT / name).write_bytes(buf.getvalue())


# ---------------------------------------------------------------------------------------------
# DICOM

LOSSY_TS = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}  # JPEG baseline / extended: decoders differ


def frame_rescale(ds, nframes):
    """(slope, intercept) per frame: top level, else functional groups (pydicom's datasets)."""
    slope = [float(ds.get("RescaleSlope", 1.0))] * nframes
    inter = [float(ds.get("RescaleIntercept", 0.0))] * nframes
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and "PixelValueTransformationSequence" in shared[0]:
        pv = shared[0].PixelValueTransformationSequence[0]
        slope = [float(pv.get("RescaleSlope", 1.0))] * nframes
        inter = [float(pv.get("RescaleIntercept", 0.0))] * nframes
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per and len(per) == nframes:
        for f, item in enumerate(per):
            if "PixelValueTransformationSequence" in item:
                pv = item.PixelValueTransformationSequence[0]
                slope[f] = float(pv.get("RescaleSlope", 1.0))
                inter[f] = float(pv.get("RescaleIntercept", 0.0))
    return slope, inter


def dicom_entries():
    import pydicom
    from pydicom.pixels import apply_modality_lut

    files = []
    for p in sorted((SHARED / "medical" / "dicom").glob("*.dcm")):
        files.append(("shared/medical/dicom/" + p.name, p))
    if PYDICOM_FILES.exists():
        for p in sorted(PYDICOM_FILES.glob("*.dcm")):
            files.append(("pydicom/" + p.name, p))
        for p in sorted((PYDICOM_FILES / "dicomdirtests/77654033/CT2").iterdir()):
            files.append(("pydicom/dicomdirtests/77654033/CT2/" + p.name, p))
    else:
        print("note: Debian pydicom test files not fetched; run scripts/fetch-test-data.sh", file=sys.stderr)
    if (DICOM3TOOLS / "0051.dcm").exists():
        files.append(("dicom3tools/0051.dcm", DICOM3TOOLS / "0051.dcm"))

    out = {}
    for key, path in files:
        e = {}
        try:
            ds = pydicom.dcmread(path)
        except Exception as ex:  # noqa: BLE001
            out[key] = {"pydicom": "unreadable", "why": str(ex)[:200]}
            continue
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            out[key] = {"pydicom": "no pixel data"}
            continue
        try:
            arr = ds.pixel_array
        except Exception as ex:  # noqa: BLE001
            out[key] = {"pydicom": "cannot decode", "why": str(ex).splitlines()[0][:200]}
            continue
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1))
        shape = [nframes, int(ds.Rows), int(ds.Columns), spp]
        ts = str(ds.file_meta.TransferSyntaxUID)
        e = {
            "pydicom": "ok",
            "shape": shape,
            "transfer_syntax": ts,
            "photometric": str(ds.get("PhotometricInterpretation", "")),
            "modality": str(ds.get("Modality", "")),
            "series_uid": str(ds.get("SeriesInstanceUID", "")),
            "crc64": crc(arr, "<f8"),
            "samples": samples(arr),
            "stats": stats(arr),
        }
        if "PixelSpacing" in ds:
            e["pixel_spacing"] = [float(x) for x in ds.PixelSpacing]
        if "ImagePositionPatient" in ds:
            e["position"] = [float(x) for x in ds.ImagePositionPatient]
        if "WindowCenter" in ds and "WindowWidth" in ds:
            first = lambda v: v[0] if isinstance(v, pydicom.multival.MultiValue) else v  # noqa: E731
            e["window"] = [float(first(ds.WindowCenter)), float(first(ds.WindowWidth))]
        if ts in LOSSY_TS:
            name = "dicom_" + key.replace("/", "_") + ".bin.gz"
            a = np.asarray(arr)
            a = a.astype("<u1") if a.dtype.itemsize == 1 and a.dtype.kind == "u" else a.astype("<f4")
            write_gz(name, a)
            e["full"] = {"file": name, "dtype": str(a.dtype)}
        if spp == 1 and str(ds.get("PhotometricInterpretation", "")) != "PALETTE COLOR":
            slope, inter = frame_rescale(ds, nframes)
            a = np.asarray(arr, dtype=np.float64).reshape(nframes, int(ds.Rows), int(ds.Columns))
            if "RescaleSlope" in ds or "RescaleIntercept" in ds:
                hu = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64).reshape(a.shape)
            else:
                hu = np.stack([a[f] * slope[f] + inter[f] for f in range(nframes)])
            e["hu_crc32"] = crc(hu, "<f4")
            e["hu_samples"] = samples(hu.astype(np.float32))
            e["rescale"] = [slope[0], inter[0]]
        out[key] = e
    return out


def window_entries(dicom):
    """8-bit windowed images by the DICOM PS3.3 C.11.2.1.2.1 formula, from pydicom's HU."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    presets = {"lung": (-600, 1500), "brain": (40, 80), "bone": (400, 1800), "mediastinum": (50, 350)}
    out = {}
    for key in ["shared/medical/dicom/CT1_UNC.explicit_little_endian.dcm", "shared/medical/dicom/693_UNCR.dcm"]:
        ds = pydicom.dcmread(SHARED / key[len("shared/"):])
        hu = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
        for name, (c, w) in presets.items():
            cc, ww = c - 0.5, w - 1.0
            y = ((hu - cc) / ww + 0.5) * 255
            y = np.where(hu <= cc - ww / 2, 0, np.where(hu > cc + ww / 2, 255, y))
            g = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
            out[key + "|" + name] = {"crc32": crc(g, "<u1"), "samples": samples(g), "mean": float(g.mean())}
    # MONOCHROME1 with the file's window: inverted after windowing.
    key = "shared/medical/dicom/RG3_J2KR.dcm"
    ds = pydicom.dcmread(SHARED / key[len("shared/"):])
    v = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    cc, ww = c - 0.5, w - 1.0
    y = np.where(v <= cc - ww / 2, 0, np.where(v > cc + ww / 2, 255, ((v - cc) / ww + 0.5) * 255))
    g = 255 - np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
    out[key + "|file"] = {"crc32": crc(g, "<u1"), "samples": samples(g), "mean": float(g.mean())}
    # Percentile window over a whole multi-frame volume (numpy's linear percentile), LINEAR_EXACT.
    key = "shared/medical/dicom/emri_small.dcm"
    ds = pydicom.dcmread(SHARED / key[len("shared/"):])
    vol = np.asarray(ds.pixel_array, dtype=np.float32).astype(np.float64)
    lo, hi = np.percentile(vol, [0.5, 99.5])
    c, w = (lo + hi) / 2, hi - lo
    frames = {}
    for f in [1, 4, 8]:
        x = vol[f]
        y = np.where(x <= c - w / 2, 0, np.where(x > c + w / 2, 255, ((x - c) / w + 0.5) * 255))
        g = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
        frames[str(f)] = {"crc32": crc(g, "<u1"), "samples": samples(g)}
    out[key + "|auto"] = {"percentiles": [float(lo), float(hi)], "frames": frames,
                          "linspace_3": [int(i) for i in np.linspace(1, vol.shape[0] - 2, 3).astype(int)]}
    return out


def series_entries():
    """A folder of DICOM slices: sorted along the slice normal (pydicom positions), HU volume."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    folder = PYDICOM_FILES / "dicomdirtests/77654033/CT2"
    if not folder.exists():
        return {}
    dss = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    o = np.array([float(x) for x in dss[0].ImageOrientationPatient])
    normal = np.cross(o[:3], o[3:])
    dss.sort(key=lambda d: float(np.dot(normal, [float(x) for x in d.ImagePositionPatient])))
    vol = np.stack([np.asarray(apply_modality_lut(d.pixel_array, d), dtype=np.float64) for d in dss])
    return {"pydicom/dicomdirtests/77654033/CT2": {
        "shape": list(vol.shape), "crc32": crc(vol, "<f4"), "samples": samples(vol.astype(np.float32)),
        "order": [str(d.SOPInstanceUID) for d in dss]}}


# ---------------------------------------------------------------------------------------------
# NIfTI (nibabel): closest-canonical slices shown radiologically (see src/imaging/volume.h).

def display(data, axis, n):
    """rows × columns (× channels) of a canonical (R, A, S) volume, as extract_slice shows it."""
    if axis == "axial":
        s = data[::-1, ::-1, n]
    elif axis == "coronal":
        s = data[::-1, n, ::-1]
    else:
        s = data[n, ::-1, ::-1]
    return np.swapaxes(s, 0, 1)


def nifti_entries():
    import nibabel as nib

    files = [("shared/medical/nifti/FLAIR.nii.gz", SHARED / "medical/nifti/FLAIR.nii.gz"),
             ("shared/medical/nifti/ct_perfusion.nii.gz", SHARED / "medical/nifti/ct_perfusion.nii.gz")]
    for n in ["anatomical.nii", "example_nifti2.nii.gz", "example4d.nii.gz", "standard.nii.gz",
              "reoriented_anat_moved.nii", "functional.nii"]:
        if (NIBABEL_FILES / n).exists():
            files.append(("nibabel/" + n, NIBABEL_FILES / n))
    out = {}
    for key, path in files:
        img = nib.load(str(path))
        if img.ndim == 4:
            img = img.slicer[..., 0]
        can = nib.as_closest_canonical(img)
        dt = can.get_data_dtype()
        if dt.names:  # RGB24: structured (R, G, B)
            raw = np.asanyarray(can.dataobj)
            data = np.stack([raw["R"], raw["G"], raw["B"]], axis=-1).astype(np.float64)
        else:
            data = np.asarray(can.get_fdata(dtype=np.float64))
        e = {"shape": list(data.shape[:3]), "axcodes": list(nib.aff2axcodes(img.affine)), "slices": {}}
        for axis, ax in [("axial", 2), ("coronal", 1), ("sagittal", 0)]:
            size = data.shape[ax]
            for n in sorted({0, size // 2, size - 1}):
                s = display(data, axis, n)
                e["slices"][f"{axis}:{n}"] = {"shape": list(s.shape), "crc32": crc(s, "<f4"),
                                             "samples": samples(s.astype(np.float32))}
        out[key] = e
    return out


def raw_entries():
    m = TESTDATA / "cranium/matrix.dat"
    if not m.exists():
        return {}
    vol = np.fromfile(m, dtype="<i2").reshape(108, 256, 256)
    out = {"cranium": {"spec": "256x256x108:int16", "slices": {}}}
    for n in [0, 54, 107]:
        out["cranium"]["slices"][str(n)] = {"crc32": crc(vol[n].astype(np.float32), "<f4"), "samples": samples(vol[n])}
    return out


# ---------------------------------------------------------------------------------------------
# Raster decoding and preprocessing (Pillow, transformers).

def pattern(w, h, seed):
    """The synthetic test image the C++ test rebuilds: a deterministic integer pattern."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 7 + y * 13 + seed * 31 + (x * y) % 17) % 256
    g = (x * x + 3 * y + seed * 5) % 256
    b = ((x ^ y) * 11 + seed) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def clip_tensor(img):
    from transformers import CLIPImageProcessor
    proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                              image_mean=[0.48145466, 0.4578275, 0.40821073],
                              image_std=[0.26862954, 0.26130258, 0.27577711], resample=3)
    # channels_last stated explicitly: transformers guesses the layout from the shape and takes a
    # 1x1x3 array for channels-first (the reference would fail on a 1x1 image).
    return proc.preprocess(img, return_tensors="np", input_data_format="channels_last")["pixel_values"][0]


def expand2square(pil_img, background_color):
    from PIL import Image
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


BG = tuple(int(x * 255) for x in [0.48145466, 0.4578275, 0.40821073])


def preprocess_entry(pil_rgb, full=False):
    from PIL import Image
    sq = expand2square(pil_rgb, BG)
    # The resize CLIPImageProcessor does: shortest edge 336 with BICUBIC, then center crop.
    w, h = sq.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(336 * long / short)
    nw, nh = (336, new_long) if w <= h else (new_long, 336)
    resized = np.asarray(sq.resize((nw, nh), Image.BICUBIC))
    t = clip_tensor(sq)
    e = {"decoded_crc32": crc(np.asarray(pil_rgb), "<u1"), "size": list(pil_rgb.size),
         "resized_crc32": crc(resized, "<u1"), "tensor_crc32": crc(t, "<f4"), "tensor_samples": samples(t)}
    lz = np.asarray(pil_rgb.resize((256, 256), Image.LANCZOS))
    e["lanczos256_crc32"] = crc(lz, "<u1")
    return e, resized, t


def preprocess_entries():
    from PIL import Image
    out = {"real": {}, "synthetic": {}, "resize": {}}
    real = [("shared/medical/xray/" + p.name, p) for p in sorted((SHARED / "medical/xray").iterdir())]
    real += [("shared/vqa-rad/images/" + p.name, p) for p in sorted((SHARED / "vqa-rad/images").glob("*.jpg"))]
    for key, p in real:
        img = Image.open(p).convert("RGB")
        e, _, _ = preprocess_entry(img)
        out["real"][key] = e
    for (w, h, seed) in [(1, 1, 1), (3, 500, 2), (337, 336, 3), (1000, 17, 4), (336, 336, 5), (500, 3, 6), (640, 480, 7)]:
        img = Image.fromarray(pattern(w, h, seed), "RGB")
        e, resized, t = preprocess_entry(img)
        name = f"preprocess_{w}x{h}.u8.gz"
        write_gz(name, resized.astype(np.uint8))
        if (OUT / name).stat().st_size < 50000:  # keep whole arrays only where they compress
            e["resized_file"] = name
        else:
            (OUT / name).unlink()
        out["synthetic"][f"{w}x{h}:{seed}"] = e
    # Image.resize on its own: every filter, down and up, odd sizes.
    filters = {"box": Image.BOX, "bilinear": Image.BILINEAR, "hamming": Image.HAMMING,
               "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    for (w, h, seed) in [(97, 61, 8), (5, 3, 9), (400, 300, 10)]:
        src = Image.fromarray(pattern(w, h, seed), "RGB")
        for fname, f in filters.items():
            for (ow, oh) in [(31, 17), (256, 256), (w * 2 + 1, h + 3), (1, 1), (w, h + 7)]:
                r = np.asarray(src.resize((ow, oh), f))
                out["resize"][f"{w}x{h}:{seed}|{fname}|{ow}x{oh}"] = {"crc32": crc(r, "<u1"), "samples": samples(r)}
    return out


def raster_fixtures():
    """Small files made with Pillow, and what Pillow's convert("RGB") (+ exif_transpose) gives."""
    from PIL import Image, ImageOps
    out = {}
    base = pattern(37, 23, 11)

    def save(name, img, **kw):
        img.save(OUT / name, **kw)

    gray = Image.fromarray(base[..., 0], "L")
    rgb = Image.fromarray(base, "RGB")
    save("raster_rgb.png", rgb)
    save("raster_gray.png", gray)
    save("raster_rgba.png", Image.fromarray(np.dstack([base, base[..., :1]]), "RGBA"))
    save("raster_la.png", Image.fromarray(np.dstack([base[..., 0], base[..., 1]]), "LA"))
    save("raster_palette.png", rgb.quantize(colors=50, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    save("raster_1bit.png", gray.point(lambda v: 255 if v > 127 else 0).convert("1"))
    save("raster_rgb.jpg", rgb, quality=85)
    save("raster_gray.jpg", gray, quality=90)
    save("raster_cmyk.jpg", rgb.convert("CMYK"), quality=90)
    save("raster_rgb.bmp", rgb)
    save("raster_palette.bmp", rgb.quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    save("raster_rgb.tif", rgb)
    save("raster_rgb_lzw.tif", rgb, compression="tiff_lzw")
    save("raster_gray.tif", gray)
    save("raster_rgb.gif", rgb.quantize(colors=64, dither=Image.Dither.NONE))
    # EXIF orientation 6 (rotate 90° clockwise to display).
    exif = Image.Exif()
    exif[0x0112] = 6
    save("raster_exif6.jpg", rgb, quality=90, exif=exif.tobytes())
    for name in ["raster_rgb.png", "raster_gray.png", "raster_rgba.png", "raster_la.png", "raster_palette.png",
                 "raster_1bit.png", "raster_rgb.jpg", "raster_gray.jpg", "raster_cmyk.jpg", "raster_rgb.bmp",
                 "raster_palette.bmp", "raster_rgb.tif", "raster_rgb_lzw.tif", "raster_gray.tif", "raster_rgb.gif",
                 "raster_exif6.jpg"]:
        im = Image.open(OUT / name)
        a = np.asarray(im.convert("RGB"))
        e = {"rgb_crc32": crc(a, "<u1"), "size": list(im.size), "samples": samples(a)}
        if name == "raster_exif6.jpg":
            t = np.asarray(ImageOps.exif_transpose(Image.open(OUT / name)).convert("RGB"))
            e["transposed_crc32"] = crc(t, "<u1")
            e["transposed_size"] = [t.shape[1], t.shape[0]]
        out[name] = e
    # 16-bit: gray (windowed by percentiles, numpy formula) and RGB (Pillow keeps the high byte).
    g16 = ((np.arange(29 * 19).reshape(19, 29) * 97) % 65536).astype(np.uint16)
    Image.fromarray(g16.astype(np.int32), "I").save(OUT / "raster_gray16.png")
    chk = np.asarray(Image.open(OUT / "raster_gray16.png"))
    assert (chk.astype(np.int64) == g16).all(), "16-bit PNG round trip"
    lo, hi = np.percentile(g16.astype(np.float64), [0.5, 99.5])
    c, w = (lo + hi) / 2, hi - lo
    x = g16.astype(np.float64)
    y = np.where(x <= c - w / 2, 0, np.where(x > c + w / 2, 255, ((x - c) / w + 0.5) * 255))
    g = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
    out["raster_gray16.png"] = {"window_crc32": crc(g, "<u1"), "size": [29, 19], "percentiles": [float(lo), float(hi)]}
    return out


def palette_dicom():
    """A PALETTE COLOR DICOM written with pydicom, and pydicom's apply_color_lut of it."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import apply_color_lut
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(5)
    idx = rng.integers(0, 40, size=(12, 10), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = idx.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    lut = (np.arange(32) * 2047 % 65536).astype("<u2")
    for c, mult in zip(["Red", "Green", "Blue"], [1, 3, 7]):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [32, 4, 16])
        setattr(ds, f"{c}PaletteColorLookupTableData", ((lut.astype(np.int64) * mult) % 65536).astype("<u2").tobytes())
    ds.PixelData = idx.tobytes()
    ds.save_as(OUT / "palette16.dcm", enforce_file_format=True)
    ds2 = pydicom.dcmread(OUT / "palette16.dcm")
    rgb = apply_color_lut(ds2.pixel_array, ds2)
    return {"palette16.dcm": {"dtype": str(rgb.dtype), "crc64": crc(rgb, "<f8"), "samples": samples(rgb)}}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.glob("*"):
        if not p.name.startswith("fuzz_"):  # fuzz_*: regression inputs found by fuzzing, not generated
            p.unlink()
    import PIL, pydicom, nibabel, transformers  # noqa: E401
    ref = {
        "versions": {"Pillow": PIL.__version__, "pydicom": pydicom.__version__, "nibabel": nibabel.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "dicom": dicom_entries(),
        "series": series_entries(),
        "nifti": nifti_entries(),
        "raw": raw_entries(),
        "raster": raster_fixtures(),
        "palette": palette_dicom(),
        "preprocess": preprocess_entries(),
    }
    ref["window"] = window_entries(ref["dicom"])
    ref["linspace"] = {f"{d},{n}": [int(i) for i in np.linspace(1, d - 2, n).astype(int)]
                       for d in [3, 4, 5, 10, 17, 64, 108, 301] for n in [1, 2, 3, 7, 10, 16]}
    with open(OUT / "expected.json", "w") as f:
        json.dump(ref, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {OUT}: {len(ref['dicom'])} DICOM, {len(ref['nifti'])} NIfTI, "
          f"{len(ref['preprocess']['real'])} real + {len(ref['preprocess']['synthetic'])} synthetic preprocess, "
          f"{len(ref['preprocess']['resize'])} resize cases")


if __name__ == "__main__":
    main()
