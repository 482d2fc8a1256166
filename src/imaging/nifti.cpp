// NIfTI reader. Header layouts: NIfTI-1 is 348 bytes (dim int16[8] at 40, datatype at 70, pixdim
// float[8] at 76, vox_offset float at 108, scl_slope/inter at 112/116, qform/sform codes at 252/254,
// quatern_b..d and qoffset at 256..276, srow_x/y/z at 280/296/312, magic "n+1" at 344); NIfTI-2 is
// 540 bytes (magic "n+2" at 4, datatype at 12, dim int64[8] at 16, pixdim double[8] at 104,
// vox_offset int64 at 168, scl at 176/184, qform/sform codes int32 at 344/348, quatern and qoffset
// doubles at 352..392, srows at 400/432/464).
#include "imaging/nifti.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace hg::imaging {

std::vector<uint8_t> gunzip(std::span<const uint8_t> gz, const std::string& name, int64_t max_bytes) {
    std::vector<uint8_t> out;
    z_stream zs{};
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) fail("%s: zlib initialisation failed", name.c_str());
    zs.next_in = const_cast<Bytef*>(gz.data());
    zs.avail_in = uInt(std::min<size_t>(gz.size(), UINT32_MAX));
    std::vector<uint8_t> chunk(1 << 16);
    int rc = Z_OK;
    std::string err;
    while (true) {
        zs.next_out = chunk.data();
        zs.avail_out = uInt(chunk.size());
        rc = inflate(&zs, Z_NO_FLUSH);
        if (rc != Z_OK && rc != Z_STREAM_END) {
            err = zs.msg ? zs.msg : "corrupt data";
            if (rc == Z_BUF_ERROR) err = "compressed data ends early (truncated file)";
            break;
        }
        size_t got = chunk.size() - zs.avail_out;
        if (int64_t(out.size() + got) > max_bytes) {
            err = "inflated size is over the limit of " + std::to_string(max_bytes) + " bytes";
            break;
        }
        out.insert(out.end(), chunk.begin(), chunk.begin() + got);
        if (rc == Z_STREAM_END) {
            if (zs.avail_in == 0) break;
            if (inflateReset(&zs) != Z_OK) { err = "bad gzip member"; break; }  // next member
        }
    }
    inflateEnd(&zs);
    if (!err.empty()) fail("%s: gzip: %s", name.c_str(), err.c_str());
    return out;
}

namespace {

struct Reader {
    std::span<const uint8_t> b;
    bool swap;
    template <typename T>
    T get(size_t off) const {
        T v;
        uint8_t tmp[sizeof(T)];
        std::memcpy(tmp, b.data() + off, sizeof(T));
        if (swap) std::reverse(tmp, tmp + sizeof(T));
        std::memcpy(&v, tmp, sizeof(T));
        return v;
    }
};

int type_size(int datatype) {
    switch (datatype) {
        case 2: case 256: return 1;         // uint8, int8
        case 4: case 512: return 2;         // int16, uint16
        case 8: case 768: case 16: return 4;  // int32, uint32, float32
        case 64: case 1024: case 1280: return 8;  // float64, int64, uint64
        case 128: return 3;                       // RGB24
        case 2304: return 4;                      // RGBA32 (alpha dropped)
    }
    return 0;
}

const char* type_name(int datatype) {
    switch (datatype) {
        case 1: return "binary";
        case 32: return "complex64";
        case 1536: return "float128";
        case 1792: return "complex128";
        case 2048: return "complex256";
    }
    return "unknown";
}

double sample(const Reader& r, size_t off, int datatype) {
    switch (datatype) {
        case 2: return r.b[off];
        case 256: return int8_t(r.b[off]);
        case 4: return r.get<int16_t>(off);
        case 512: return r.get<uint16_t>(off);
        case 8: return r.get<int32_t>(off);
        case 768: return r.get<uint32_t>(off);
        case 16: return r.get<float>(off);
        case 64: return r.get<double>(off);
        case 1024: return double(r.get<int64_t>(off));
        case 1280: return double(r.get<uint64_t>(off));
    }
    return 0;
}

// nibabel's quaternion → rotation, scaled by pixdim with qfac on the third column.
std::array<double, 16> qform_affine(double b, double c, double d, double qx, double qy, double qz,
                                    const std::array<double, 8>& pixdim) {
    double a2 = 1.0 - (b * b + c * c + d * d), a = 0;
    if (a2 < -1e-7) {  // not a unit quaternion: normalise (b, c, d), a = 0 (as nibabel's fillpositive)
        double n = std::sqrt(b * b + c * c + d * d);
        b /= n, c /= n, d /= n;
    } else if (a2 > 0) {
        a = std::sqrt(a2);
    }
    double R[3][3] = {{a * a + b * b - c * c - d * d, 2 * b * c - 2 * a * d, 2 * b * d + 2 * a * c},
                      {2 * b * c + 2 * a * d, a * a + c * c - b * b - d * d, 2 * c * d - 2 * a * b},
                      {2 * b * d - 2 * a * c, 2 * c * d + 2 * a * b, a * a + d * d - c * c - b * b}};
    double qfac = pixdim[0] < 0 ? -1 : 1;
    double z[3] = {pixdim[1], pixdim[2], pixdim[3] * qfac};
    std::array<double, 16> m{};
    for (int r = 0; r < 3; r++)
        for (int col = 0; col < 3; col++) m[r * 4 + col] = R[r][col] * z[col];
    m[3] = qx, m[7] = qy, m[11] = qz, m[15] = 1;
    return m;
}

}  // namespace

Volume decode_nifti(std::span<const uint8_t> input, const std::string& name, int volume_index, const Limits& limits,
                    NiftiInfo* info_out) {
    std::vector<uint8_t> inflated;
    std::span<const uint8_t> b = input;
    if (b.size() >= 2 && b[0] == 0x1F && b[1] == 0x8B) {
        inflated = gunzip(b, name, limits.max_file_bytes);
        b = inflated;
    }
    if (b.size() < 348) fail("%s: too short for a NIfTI header (%zu bytes)", name.c_str(), b.size());
    NiftiInfo h;
    int32_t sizeof_hdr;
    std::memcpy(&sizeof_hdr, b.data(), 4);
    int32_t swapped = int32_t(__builtin_bswap32(uint32_t(sizeof_hdr)));
    Reader r{b, false};
    if (sizeof_hdr == 348 || sizeof_hdr == 540) {
        h.version = sizeof_hdr == 348 ? 1 : 2;
    } else if (swapped == 348 || swapped == 540) {
        h.version = swapped == 348 ? 1 : 2;
        r.swap = h.big_endian = true;
    } else {
        fail("%s: not a NIfTI file (header size field is %d, expected 348 or 540)", name.c_str(), sizeof_hdr);
    }
    double quat[3], qoff[3], srow[12];
    if (h.version == 1) {
        if (std::memcmp(&b[344], "n+1", 4) != 0) {
            if (std::memcmp(&b[344], "ni1", 4) == 0)
                fail("%s: NIfTI-1 header/image pair (.hdr/.img) is not supported; convert to a single .nii", name.c_str());
            fail("%s: NIfTI-1 magic is not \"n+1\"", name.c_str());
        }
        for (int i = 0; i < 8; i++) h.dim[i] = r.get<int16_t>(40 + 2 * i);
        h.datatype = r.get<int16_t>(70);
        for (int i = 0; i < 8; i++) h.pixdim[i] = r.get<float>(76 + 4 * i);
        double vox = r.get<float>(108);
        if (!(vox >= 0 && vox < 1e12)) fail("%s: vox_offset %g is not valid", name.c_str(), vox);
        h.vox_offset = int64_t(vox);
        h.scl_slope = r.get<float>(112);
        h.scl_inter = r.get<float>(116);
        h.qform_code = r.get<int16_t>(252);
        h.sform_code = r.get<int16_t>(254);
        for (int i = 0; i < 3; i++) quat[i] = r.get<float>(256 + 4 * i), qoff[i] = r.get<float>(268 + 4 * i);
        for (int i = 0; i < 12; i++) srow[i] = r.get<float>(280 + 4 * i);
    } else {
        if (b.size() < 540) fail("%s: too short for a NIfTI-2 header (%zu bytes)", name.c_str(), b.size());
        if (std::memcmp(&b[4], "n+2", 4) != 0) fail("%s: NIfTI-2 magic is not \"n+2\"", name.c_str());
        h.datatype = r.get<int16_t>(12);
        for (int i = 0; i < 8; i++) h.dim[i] = r.get<int64_t>(16 + 8 * i);
        for (int i = 0; i < 8; i++) h.pixdim[i] = r.get<double>(104 + 8 * i);
        h.vox_offset = r.get<int64_t>(168);
        h.scl_slope = r.get<double>(176);
        h.scl_inter = r.get<double>(184);
        h.qform_code = r.get<int32_t>(344);
        h.sform_code = r.get<int32_t>(348);
        for (int i = 0; i < 3; i++) quat[i] = r.get<double>(352 + 8 * i), qoff[i] = r.get<double>(376 + 8 * i);
        for (int i = 0; i < 12; i++) srow[i] = r.get<double>(400 + 8 * i);
    }
    int ndim = int(h.dim[0]);
    if (ndim < 1 || ndim > 7) fail("%s: dim[0] = %d, expected 1..7", name.c_str(), ndim);
    int64_t n[7];
    for (int i = 0; i < 7; i++) {
        n[i] = i < ndim ? h.dim[i + 1] : 1;
        if (n[i] < 1) fail("%s: dim[%d] = %lld", name.c_str(), i + 1, (long long)n[i]);
    }
    for (int i = 4; i < 7; i++)
        if (n[i] != 1) fail("%s: %d-dimensional NIfTI with dim[%d] = %lld is not supported", name.c_str(), ndim, i + 1, (long long)n[i]);
    int ts = type_size(h.datatype);
    if (!ts) fail("%s: NIfTI datatype %d (%s) is not supported", name.c_str(), h.datatype, type_name(h.datatype));
    check_image_size(n[0], n[1], limits, name);
    if (n[2] > limits.max_voxels || n[0] * n[1] * n[2] > limits.max_voxels)
        fail("%s: volume of %lld x %lld x %lld is over the limit of %lld voxels", name.c_str(), (long long)n[0],
             (long long)n[1], (long long)n[2], (long long)limits.max_voxels);
    if (volume_index < 0 || volume_index >= n[3])
        fail("%s: volume %d requested, the file has %lld", name.c_str(), volume_index, (long long)n[3]);
    int64_t voxels = n[0] * n[1] * n[2];
    int64_t start = h.vox_offset + int64_t(volume_index) * voxels * ts;
    if (h.vox_offset < (h.version == 1 ? 348 : 540) || start < 0 || start + voxels * ts > int64_t(b.size()))
        fail("%s: data of %lld voxels at offset %lld runs past the end of the file (%zu bytes; truncated?)", name.c_str(),
             (long long)voxels, (long long)start, b.size());

    // nibabel: slope 0 or non-finite means no scaling; a non-finite intercept means 0.
    double slope = h.scl_slope, inter = h.scl_inter;
    if (slope == 0 || !std::isfinite(slope)) slope = 1, inter = 0;
    if (!std::isfinite(inter)) inter = 0;

    Volume v;
    v.source = name;
    v.nx = int(n[0]), v.ny = int(n[1]), v.nz = int(n[2]);
    v.data.resize(size_t(voxels));
    bool scaled = slope != 1 || inter != 0;
    if (h.datatype == 128 || h.datatype == 2304) {  // colour: R, G, B bytes per voxel, never scaled
        v.channels = 3;
        v.data.resize(size_t(voxels) * 3);
        for (int64_t i = 0; i < voxels; i++)
            for (int c = 0; c < 3; c++) v.data[size_t(i) * 3 + c] = b[size_t(start + i * ts + c)];
    } else {
        for (int64_t i = 0; i < voxels; i++) {
            double x = sample(r, size_t(start + i * ts), h.datatype);
            v.data[size_t(i)] = float(scaled ? x * slope + inter : x);
        }
    }
    // Orientation: sform, else qform, else pixdim (nibabel's get_best_affine).
    if (h.sform_code > 0) {
        for (int i = 0; i < 12; i++) h.affine[i] = srow[i];
        h.affine[15] = 1;
        h.affine_source = "sform";
    } else if (h.qform_code > 0) {
        h.affine = qform_affine(quat[0], quat[1], quat[2], qoff[0], qoff[1], qoff[2], h.pixdim);
        h.affine_source = "qform";
    } else {
        h.affine = {-std::fabs(h.pixdim[1]), 0, 0, 0, 0, std::fabs(h.pixdim[2]), 0, 0, 0, 0, std::fabs(h.pixdim[3]), 0, 0, 0, 0, 1};
        h.affine_source = "pixdim";
    }
    bool finite = true;
    for (double x : h.affine) finite = finite && std::isfinite(x);
    if (!finite) fail("%s: the %s affine is not finite", name.c_str(), h.affine_source.c_str());
    v.affine = h.affine;
    if (info_out) *info_out = h;
    return v;
}

Volume read_nifti(const std::filesystem::path& path, int volume_index, const Limits& limits, NiftiInfo* info) {
    auto bytes = read_file_bytes(path, limits.max_file_bytes);
    return decode_nifti(bytes, path.string(), volume_index, limits, info);
}

}  // namespace hg::imaging
