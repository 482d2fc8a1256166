// load_medical: dispatch by kind, then the same steps for every scalar source:
// choose slices → (square pixels) → window → 8-bit RGB.
#include "imaging/load.h"

#include <algorithm>
#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "imaging/dicom.h"
#include "imaging/nifti.h"

namespace hg::imaging {

const char* source_kind_name(SourceKind k) {
    switch (k) {
        case SourceKind::Raster: return "image";
        case SourceKind::Dicom: return "DICOM";
        case SourceKind::DicomSeries: return "DICOM series";
        case SourceKind::Nifti: return "NIfTI";
        case SourceKind::Raw: return "raw volume";
    }
    return "?";
}

static bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && std::equal(suffix.rbegin(), suffix.rend(), s.rbegin(),
                                                   [](char a, char b) { return std::tolower(a) == b; });
}

SourceKind detect_source(const std::filesystem::path& path, const ImageOptions& opts) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) return SourceKind::DicomSeries;
    if (!std::filesystem::exists(path, ec)) fail("%s: no such file or folder", path.c_str());
    if (opts.raw) return SourceKind::Raw;
    std::string name = path.filename().string();
    if (ends_with(name, ".nii") || ends_with(name, ".nii.gz")) return SourceKind::Nifti;
    uint8_t head[132] = {0};
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("%s: cannot open file", path.c_str());
    f.read(reinterpret_cast<char*>(head), sizeof head);
    size_t got = size_t(f.gcount());
    std::span<const uint8_t> h(head, got);
    // DICOM first: a DICOM preamble may itself be a TIFF header (dual-personality files).
    if (got >= 132 && std::memcmp(head + 128, "DICM", 4) == 0) return SourceKind::Dicom;
    if (sniff_raster(h) != RasterFormat::Unknown) return SourceKind::Raster;
    if (looks_like_dicom(h) || ends_with(name, ".dcm")) return SourceKind::Dicom;
    if (got >= 4) {  // NIfTI without the usual extension: header size 348 / 540 in either order
        int32_t n;
        std::memcpy(&n, head, 4);
        if (n == 348 || n == 540 || __builtin_bswap32(uint32_t(n)) == 348 || __builtin_bswap32(uint32_t(n)) == 540)
            return SourceKind::Nifti;
    }
    if (got >= 2 && head[0] == 0x1F && head[1] == 0x8B) return SourceKind::Nifti;  // gzip: only NIfTI comes gzipped
    fail("%s: unrecognised file (not PNG/JPEG/BMP/GIF/TIFF/PNM, DICOM or NIfTI; for a headerless volume give --raw WxHxD:type)",
         path.c_str());
}

static std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static std::string format(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// Slices of a volume → windowed RGB images.
static std::vector<LoadedImage> show_volume(const Volume& v, const ImageOptions& opts) {
    bool stored = !opts.axis && v.stored_display;
    Axis axis = opts.axis.value_or(Axis::Axial);
    int depth = stored ? v.nz : axis_length(v, axis);
    const char* what = stored ? (v.nz > 1 ? "frame" : "image") : axis_name(axis);
    std::vector<int> picks;
    if (opts.n_slices > 0) {
        if (opts.slice) fail("--slice and --slices cannot be used together");
        picks = sample_slice_indices(depth, opts.n_slices);
    } else {
        picks.push_back(opts.slice ? *opts.slice : depth / 2);
    }
    // One window for the whole volume, so that several slices are shown alike; data-driven windows
    // (percentiles, min-max) look at the whole volume (every n-th voxel above 16 M voxels).
    ResolvedWindow w;
    if (v.channels == 1) {
        size_t stride = std::max<size_t>(1, v.data.size() >> 24);
        std::vector<float> sample;
        if (stride == 1) {
            w = resolve_window(opts.window, v.data, v.hints);
        } else {
            for (size_t i = 0; i < v.data.size(); i += stride) sample.push_back(v.data[i]);
            w = resolve_window(opts.window, sample, v.hints);
        }
    }
    std::vector<LoadedImage> out;
    for (int index : picks) {
        Slice s = stored ? stored_slice(v, index) : extract_slice(v, axis, index);
        if (opts.square_pixels) s = square_pixels(s, opts.limits.max_pixels);
        if (s.channels == 3) {  // colour volume: values are already 0..255
            LoadedImage li;
            li.image = RgbImage(s.width, s.height);
            for (size_t i = 0; i < s.values.size(); i++)
                li.image.rgb[i] = uint8_t(std::clamp(std::floor(double(s.values[i]) + 0.5), 0.0, 255.0));
            li.description = format("%s %d of %d (colour)", stored ? what : (std::string(what) + " slice").c_str(), index, depth);
            out.push_back(std::move(li));
            continue;
        }
        LoadedImage li;
        li.image = window_to_rgb(s.values, s.width, s.height, w, v.hints.invert);
        li.description = format("%s %d of %d, window %s", stored ? what : (std::string(what) + " slice").c_str(), index, depth,
                                w.how.c_str());
        out.push_back(std::move(li));
    }
    return out;
}

static std::vector<LoadedImage> show_raster(const RasterImage& r, const ImageOptions& opts) {
    LoadedImage li;
    bool windowed = r.channels == 1 && (r.bits == 16 || opts.window.kind != WindowSpec::Kind::Auto);
    if (windowed) {
        std::vector<float> values(r.samples.begin(), r.samples.end());
        ResolvedWindow w = resolve_window(opts.window, values, {});
        li.image = window_to_rgb(values, r.width, r.height, w, false);
        li.description = format("%s %d-bit grayscale %d x %d, window %s", r.format.c_str(), r.bits, r.width, r.height, w.how.c_str());
    } else {
        li.image = to_rgb8(r);
        li.description = format("%s %d x %d", r.format.c_str(), r.width, r.height);
    }
    return {li};
}

// A single DICOM file: a colour image shows its frame(s) as they are; a grayscale one is a volume
// when it has several frames, else one windowed image.
static std::vector<LoadedImage> show_dicom(const DicomImage& d, const ImageOptions& opts) {
    const DicomInfo& info = d.info;
    if (info.is_color()) {
        if (opts.axis) fail("%s: colour images cannot be reformatted (--axis %s)", info.path.c_str(), axis_name(*opts.axis));
        std::vector<int> picks;
        if (opts.n_slices > 0) picks = sample_slice_indices(info.frames, opts.n_slices);
        else picks.push_back(opts.slice ? *opts.slice : info.frames / 2);
        std::vector<LoadedImage> out;
        for (int f : picks) {
            if (f < 0 || f >= info.frames) fail("%s: frame %d out of range (0..%d)", info.path.c_str(), f, info.frames - 1);
            out.push_back({d.color_frame(f), format("%s frame %d of %d (colour)", info.modality.c_str(), f, info.frames)});
        }
        return out;
    }
    return show_volume(volume_from_dicom(d), opts);
}

LoadResult load_medical(const std::filesystem::path& path, const ImageOptions& opts) {
    LoadResult res;
    res.kind = detect_source(path, opts);
    switch (res.kind) {
        case SourceKind::Raster: {
            if (opts.n_slices > 0 || opts.slice) fail("%s: --slice/--slices apply to volumes, not to a 2-D image", path.c_str());
            res.images = show_raster(read_raster(path, opts.apply_exif, opts.limits), opts);
            break;
        }
        case SourceKind::Dicom: {
            DicomImage d = read_dicom(path, opts.limits);
            res.modality = d.info.modality;
            res.images = show_dicom(d, opts);
            break;
        }
        case SourceKind::DicomSeries: {
            Volume v = read_dicom_series(path, opts.series_uid, opts.limits);
            res.modality = v.modality;
            res.images = show_volume(v, opts);
            break;
        }
        case SourceKind::Nifti: res.images = show_volume(read_nifti(path, opts.volume_index, opts.limits), opts); break;
        case SourceKind::Raw: res.images = show_volume(read_raw_volume(path, *opts.raw, opts.limits), opts); break;
    }
    return res;
}

std::vector<RgbImage> load_medical_image(const std::filesystem::path& path, const ImageOptions& opts) {
    std::vector<RgbImage> out;
    for (auto& li : load_medical(path, opts).images) out.push_back(std::move(li.image));
    return out;
}

}  // namespace hg::imaging
