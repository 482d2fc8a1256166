// Volumes: assembling DICOM frames and series, raw files, canonical orientation, slices.
#include "imaging/volume.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>

#include "core/error.h"

namespace hg::imaging {

std::array<double, 16> default_affine(double sx, double sy, double sz) {
    // LPS identity orientation (columns → L, rows → P, slices → S) written in RAS.
    return {-sx, 0, 0, 0, 0, -sy, 0, 0, 0, 0, sz, 0, 0, 0, 0, 1};
}

Axis parse_axis(const std::string& s) {
    if (s == "axial") return Axis::Axial;
    if (s == "coronal") return Axis::Coronal;
    if (s == "sagittal") return Axis::Sagittal;
    fail("--axis %s: expected axial, coronal or sagittal", s.c_str());
}

const char* axis_name(Axis a) {
    switch (a) {
        case Axis::Axial: return "axial";
        case Axis::Coronal: return "coronal";
        case Axis::Sagittal: return "sagittal";
    }
    return "?";
}

namespace {

// Which voxel axis runs along each world axis (R, A, S), whether it runs backwards, and its
// spacing: nibabel's io_orientation for non-degenerate affines (largest direction cosine first).
struct Canonical {
    int voxel_axis[3];  // for world axis w
    bool flip[3];
    double spacing[3];  // of voxel axis a
    int size[3];        // voxels along voxel axis a
};

Canonical canonical(const Volume& v) {
    Canonical c{};
    double m[3][3];
    for (int a = 0; a < 3; a++) {
        double len = 0;
        for (int w = 0; w < 3; w++) len += v.affine[w * 4 + a] * v.affine[w * 4 + a];
        len = std::sqrt(len);
        c.spacing[a] = len > 0 ? len : 1;
        for (int w = 0; w < 3; w++) m[w][a] = len > 0 ? v.affine[w * 4 + a] / len : (w == a ? 1 : 0);
    }
    c.size[0] = v.nx, c.size[1] = v.ny, c.size[2] = v.nz;
    bool used_w[3] = {}, used_a[3] = {};
    for (int step = 0; step < 3; step++) {
        int bw = -1, ba = -1;
        double best = -1;
        for (int w = 0; w < 3; w++)
            for (int a = 0; a < 3; a++)
                if (!used_w[w] && !used_a[a] && std::fabs(m[w][a]) > best) best = std::fabs(m[w][a]), bw = w, ba = a;
        used_w[bw] = used_a[ba] = true;
        c.voxel_axis[bw] = ba;
        c.flip[bw] = m[bw][ba] < 0;
    }
    return c;
}

// Voxel index along voxel axis of world axis w for canonical coordinate q.
inline int voxel_index(const Canonical& c, int w, int q) {
    int a = c.voxel_axis[w];
    return c.flip[w] ? c.size[a] - 1 - q : q;
}

}  // namespace

int axis_length(const Volume& v, Axis axis) {
    Canonical c = canonical(v);
    int w = axis == Axis::Sagittal ? 0 : axis == Axis::Coronal ? 1 : 2;
    return c.size[c.voxel_axis[w]];
}

Slice extract_slice(const Volume& v, Axis axis, int index) {
    Canonical c = canonical(v);
    // World axes: fixed one, the one down the rows (shown from its high end), the one across columns.
    int fixed, row_w, col_w;
    switch (axis) {
        case Axis::Axial: fixed = 2, row_w = 1, col_w = 0; break;
        case Axis::Coronal: fixed = 1, row_w = 2, col_w = 0; break;
        default: fixed = 0, row_w = 2, col_w = 1; break;
    }
    int n_fixed = c.size[c.voxel_axis[fixed]];
    if (index < 0 || index >= n_fixed)
        fail("%s: %s slice %d out of range (0..%d)", v.source.c_str(), axis_name(axis), index, n_fixed - 1);
    Slice s;
    s.height = c.size[c.voxel_axis[row_w]];
    s.width = c.size[c.voxel_axis[col_w]];
    s.row_spacing = c.spacing[c.voxel_axis[row_w]];
    s.col_spacing = c.spacing[c.voxel_axis[col_w]];
    s.channels = v.channels;
    s.values.resize(size_t(s.width) * s.height * s.channels);
    int ijk[3];
    ijk[c.voxel_axis[fixed]] = voxel_index(c, fixed, index);
    for (int r = 0; r < s.height; r++) {
        ijk[c.voxel_axis[row_w]] = voxel_index(c, row_w, s.height - 1 - r);
        for (int col = 0; col < s.width; col++) {
            // Columns run from the high end of R (patient right) for axial/coronal, of A for sagittal.
            ijk[c.voxel_axis[col_w]] = voxel_index(c, col_w, s.width - 1 - col);
            for (int ch = 0; ch < s.channels; ch++)
                s.values[(size_t(r) * s.width + col) * s.channels + ch] = v.at(ijk[0], ijk[1], ijk[2], ch);
        }
    }
    return s;
}

Slice stored_slice(const Volume& v, int k) {
    if (k < 0 || k >= v.nz) fail("%s: slice %d out of range (0..%d)", v.source.c_str(), k, v.nz - 1);
    Canonical c = canonical(v);
    Slice s;
    s.width = v.nx, s.height = v.ny, s.channels = v.channels;
    s.col_spacing = c.spacing[0], s.row_spacing = c.spacing[1];
    size_t plane = size_t(v.nx) * v.ny * v.channels;
    s.values.assign(v.data.begin() + k * plane, v.data.begin() + (k + 1) * plane);
    return s;
}

Slice square_pixels(const Slice& s, int64_t max_pixels) {
    double ratio = s.row_spacing / s.col_spacing;
    if (std::fabs(ratio - 1) <= 0.01 || !std::isfinite(ratio) || ratio <= 0) return s;
    // Stretch the coarser direction so that a pixel is as tall as it is wide.
    int out_w = s.width, out_h = s.height;
    if (ratio > 1) out_h = std::max(1, int(std::lround(s.height * ratio)));
    else out_w = std::max(1, int(std::lround(s.width / ratio)));
    if (int64_t(out_w) * out_h > max_pixels || out_w > 65535 || out_h > 65535) return s;
    Slice o;
    o.width = out_w, o.height = out_h, o.channels = s.channels;
    o.row_spacing = o.col_spacing = std::min(s.row_spacing, s.col_spacing);
    o.values.resize(size_t(out_w) * out_h * s.channels);
    const int C = s.channels;
    auto src_coord = [](int o_i, int n_out, int n_in, int& i0, int& i1, double& t) {
        double x = (o_i + 0.5) * n_in / n_out - 0.5;  // pixel centres aligned
        x = std::clamp(x, 0.0, double(n_in - 1));
        i0 = int(std::floor(x));
        i1 = std::min(i0 + 1, n_in - 1);
        t = x - i0;
    };
    for (int y = 0; y < out_h; y++) {
        int y0, y1;
        double ty;
        src_coord(y, out_h, s.height, y0, y1, ty);
        for (int x = 0; x < out_w; x++) {
            int x0, x1;
            double tx;
            src_coord(x, out_w, s.width, x0, x1, tx);
            for (int ch = 0; ch < C; ch++) {
                auto at = [&](int yy, int xx) { return double(s.values[(size_t(yy) * s.width + xx) * C + ch]); };
                double top = at(y0, x0) * (1 - tx) + at(y0, x1) * tx;
                double bot = at(y1, x0) * (1 - tx) + at(y1, x1) * tx;
                o.values[(size_t(y) * out_w + x) * C + ch] = float(top * (1 - ty) + bot * ty);
            }
        }
    }
    return o;
}

std::vector<int> sample_slice_indices(int depth, int n) {
    HG_CHECK(depth >= 1 && n >= 1, "cannot choose %d slices of a volume with %d", n, depth);
    double start = depth >= 3 ? 1 : 0, stop = depth >= 3 ? depth - 2 : depth - 1;
    std::vector<int> idx(n);
    // numpy.linspace: start + i * step, the last value exactly stop; then astype(int) truncates.
    double step = n > 1 ? (stop - start) / (n - 1) : 0;
    for (int i = 0; i < n; i++) idx[i] = int(n > 1 && i == n - 1 ? stop : start + i * step);
    return idx;
}

// ---------------------------------------------------------------------------------------------
// DICOM frames → volume.

namespace {

struct FrameRef {
    const DicomImage* img;
    int frame;
    bool has_pos;
    std::array<double, 3> pos;
    int instance;
    std::string file;
};

Volume assemble(std::vector<FrameRef>& frames, const std::string& source, const Limits& limits) {
    HG_CHECK(!frames.empty(), "%s: no image frames", source.c_str());
    const DicomInfo& first = frames[0].img->info;
    for (const auto& f : frames) {
        const DicomInfo& i = f.img->info;
        if (i.rows != first.rows || i.columns != first.columns)
            fail("%s: %s is %d x %d but %s is %d x %d; one series must have one size", source.c_str(), f.file.c_str(),
                 i.columns, i.rows, frames[0].file.c_str(), first.columns, first.rows);
        if (i.samples_per_pixel != 1) fail("%s: %s is a colour image; volumes are grayscale", source.c_str(), f.file.c_str());
    }
    if (int64_t(first.rows) * first.columns * int64_t(frames.size()) > limits.max_voxels)
        fail("%s: %zu slices of %d x %d is over the limit of %lld voxels", source.c_str(), frames.size(), first.columns,
             first.rows, (long long)limits.max_voxels);
    // Sort along the slice normal (row cosines × column cosines) when every frame has a position.
    bool all_pos = first.orientation && std::all_of(frames.begin(), frames.end(), [](const FrameRef& f) { return f.has_pos; });
    std::array<double, 3> normal{0, 0, 1};
    if (all_pos) {
        const auto& o = *first.orientation;
        normal = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]};
        auto along = [&](const FrameRef& f) { return f.pos[0] * normal[0] + f.pos[1] * normal[1] + f.pos[2] * normal[2]; };
        std::stable_sort(frames.begin(), frames.end(), [&](const FrameRef& a, const FrameRef& b) { return along(a) < along(b); });
    } else if (frames.size() > 1 && frames[0].img != frames[1].img) {
        std::stable_sort(frames.begin(), frames.end(), [](const FrameRef& a, const FrameRef& b) {
            return a.instance != b.instance ? a.instance < b.instance : a.file < b.file;
        });
    }
    Volume v;
    v.source = source;
    v.nx = first.columns, v.ny = first.rows, v.nz = int(frames.size());
    v.modality = first.modality;
    v.hints = frames[0].img->hints();
    v.stored_display = true;
    v.data.resize(size_t(v.nx) * v.ny * v.nz);
    for (int k = 0; k < v.nz; k++) {
        auto plane = frames[k].img->modality_frame(frames[k].frame);
        std::copy(plane.begin(), plane.end(), v.data.begin() + size_t(k) * v.nx * v.ny);
    }
    double row_sp = first.pixel_spacing ? (*first.pixel_spacing)[0] : 1;
    double col_sp = first.pixel_spacing ? (*first.pixel_spacing)[1] : 1;
    if (!all_pos) {
        double sz = first.slice_thickness && *first.slice_thickness > 0 ? *first.slice_thickness : 1;
        v.affine = default_affine(col_sp, row_sp, sz);
        return v;
    }
    const auto& o = *first.orientation;
    std::array<double, 3> step = normal;
    double sz = first.slice_thickness && *first.slice_thickness > 0 ? *first.slice_thickness : 1;
    for (auto& x : step) x *= sz;
    if (v.nz > 1) {
        const auto &p0 = frames.front().pos, &p1 = frames.back().pos;
        for (int i = 0; i < 3; i++) step[i] = (p1[i] - p0[i]) / (v.nz - 1);
        double len = std::sqrt(step[0] * step[0] + step[1] * step[1] + step[2] * step[2]);
        if (len < 1e-6) {  // all at one position (e.g. a time series): keep the normal
            step = normal;
            for (auto& x : step) x *= sz;
        }
    }
    // LPS → RAS: negate x and y.
    const double sign[3] = {-1, -1, 1};
    const auto& p0 = frames.front().pos;
    for (int w = 0; w < 3; w++) {
        v.affine[w * 4 + 0] = sign[w] * o[w] * col_sp;
        v.affine[w * 4 + 1] = sign[w] * o[3 + w] * row_sp;
        v.affine[w * 4 + 2] = sign[w] * step[w];
        v.affine[w * 4 + 3] = sign[w] * p0[w];
    }
    v.affine[15] = 1;
    return v;
}

}  // namespace

Volume volume_from_dicom(const DicomImage& img) {
    std::vector<FrameRef> frames;
    const DicomInfo& info = img.info;
    for (int f = 0; f < info.frames; f++) {
        bool has = info.positions.size() == size_t(info.frames);
        frames.push_back({&img, f, has, has ? info.positions[f] : std::array<double, 3>{}, f, info.path});
    }
    return assemble(frames, info.path, default_limits());
}

Volume read_dicom_series(const std::filesystem::path& folder, const std::string& series_uid, const Limits& limits) {
    std::error_code ec;
    if (!std::filesystem::is_directory(folder, ec)) fail("%s: not a folder", folder.c_str());
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(folder, ec)) {
        if (!e.is_regular_file()) continue;
        std::string n = e.path().filename().string();
        if (n.empty() || n[0] == '.' || n == "DICOMDIR") continue;
        files.push_back(e.path());
    }
    if (ec) fail("%s: cannot list the folder: %s", folder.c_str(), ec.message().c_str());
    std::sort(files.begin(), files.end());
    std::vector<DicomImage> images;
    std::vector<std::string> skipped;
    for (const auto& f : files) {
        auto head = read_file_bytes(f, limits.max_file_bytes);
        if (!looks_like_dicom(head)) {
            skipped.push_back(f.filename().string());
            continue;
        }
        images.push_back(decode_dicom(head, f.string(), limits));
    }
    if (images.empty())
        fail("%s: no DICOM files in the folder (%zu other files)", folder.c_str(), skipped.size());
    std::map<std::string, int> series;
    for (const auto& im : images) series[im.info.series_uid]++;
    std::string pick = series_uid;
    if (pick.empty()) {
        if (series.size() > 1) {
            std::string list;
            for (const auto& [uid, count] : series) list += "\n  " + (uid.empty() ? "(no UID)" : uid) + ": " + std::to_string(count) + " file(s)";
            fail("%s: the folder holds %zu series; choose one with --series UID:%s", folder.c_str(), series.size(), list.c_str());
        }
        pick = series.begin()->first;
    } else if (!series.count(pick)) {
        fail("%s: no series %s in the folder", folder.c_str(), pick.c_str());
    }
    std::vector<FrameRef> frames;
    for (const auto& im : images) {
        if (im.info.series_uid != pick) continue;
        bool per_frame = im.info.positions.size() == size_t(im.info.frames);
        for (int f = 0; f < im.info.frames; f++)
            frames.push_back({&im, f, per_frame, per_frame ? im.info.positions[f] : std::array<double, 3>{},
                              im.info.instance_number.value_or(0), im.info.path});
    }
    return assemble(frames, folder.string(), limits);
}

// ---------------------------------------------------------------------------------------------
// Raw volumes.

RawSpec parse_raw_spec(const std::string& text) {
    RawSpec s;
    std::string dims = text.substr(0, text.find(':'));
    long long a = 0, b = 0, c = 0;
    char x1 = 0, x2 = 0;
    int consumed = 0;
    if (std::sscanf(dims.c_str(), "%lld%c%lld%c%lld%n", &a, &x1, &b, &x2, &c, &consumed) != 5 || x1 != 'x' || x2 != 'x' ||
        consumed != int(dims.size()) || a < 1 || b < 1 || c < 1 || a > 65535 || b > 65535 || c > 65535)
        fail("--raw %s: expected WxHxD[:type][:be], e.g. 256x256x108:int16", text.c_str());
    s.nx = int(a), s.ny = int(b), s.nz = int(c);
    size_t p = text.find(':');
    while (p != std::string::npos) {
        size_t q = text.find(':', p + 1);
        std::string part = text.substr(p + 1, q == std::string::npos ? std::string::npos : q - p - 1);
        if (part == "uint8") s.type = SampleType::U8;
        else if (part == "int8") s.type = SampleType::I8;
        else if (part == "uint16") s.type = SampleType::U16;
        else if (part == "int16") s.type = SampleType::I16;
        else if (part == "int32") s.type = SampleType::I32;
        else if (part == "uint32") s.type = SampleType::U32;
        else if (part == "float32") s.type = SampleType::F32;
        else if (part == "float64") s.type = SampleType::F64;
        else if (part.rfind("sp=", 0) == 0) {
            if (std::sscanf(part.c_str() + 3, "%lf,%lf,%lf", &s.sx, &s.sy, &s.sz) != 3 || !(s.sx > 0 && s.sy > 0 && s.sz > 0))
                fail("--raw %s: expected sp=X,Y,Z voxel spacing in mm", text.c_str());
        }
        else if (part == "be") s.big_endian = true;
        else if (part == "le") s.big_endian = false;
        else fail("--raw %s: unknown part '%s' (types: uint8 int8 uint16 int16 uint32 int32 float32 float64; be/le; sp=X,Y,Z)", text.c_str(), part.c_str());
        p = q;
    }
    return s;
}

Volume read_raw_volume(const std::filesystem::path& path, const RawSpec& spec, const Limits& limits) {
    HG_CHECK(spec.nx > 0 && spec.ny > 0 && spec.nz > 0, "%s: raw volume needs its dimensions", path.c_str());
    int64_t voxels = int64_t(spec.nx) * spec.ny * spec.nz;
    if (voxels > limits.max_voxels) fail("%s: %lld voxels is over the limit of %lld", path.c_str(), (long long)voxels, (long long)limits.max_voxels);
    PixelData probe;
    probe.type = spec.type;
    size_t ts = spec.type == SampleType::U8 || spec.type == SampleType::I8 ? 1
              : spec.type == SampleType::U16 || spec.type == SampleType::I16 ? 2
              : spec.type == SampleType::F64 ? 8 : 4;
    auto bytes = read_file_bytes(path, limits.max_file_bytes);
    int64_t need = spec.offset + voxels * int64_t(ts);
    if (int64_t(bytes.size()) != need)
        fail("%s: file is %zu bytes; %d x %d x %d samples of %zu bytes after offset %lld need %lld", path.c_str(), bytes.size(),
             spec.nx, spec.ny, spec.nz, ts, (long long)spec.offset, (long long)need);
    probe.bytes.assign(bytes.begin() + spec.offset, bytes.end());
    if (spec.big_endian && ts > 1)
        for (size_t i = 0; i + ts <= probe.bytes.size(); i += ts) std::reverse(probe.bytes.begin() + i, probe.bytes.begin() + i + ts);
    probe.count = size_t(voxels);
    Volume v;
    v.source = path.string();
    v.nx = spec.nx, v.ny = spec.ny, v.nz = spec.nz;
    v.data.resize(size_t(voxels));
    for (size_t i = 0; i < size_t(voxels); i++) v.data[i] = float(probe.at(i));
    v.affine = default_affine(spec.sx, spec.sy, spec.sz);
    v.stored_display = true;
    return v;
}

}  // namespace hg::imaging
