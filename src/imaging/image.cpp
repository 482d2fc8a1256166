// Raster decoding. Each decoder is chosen to give the pixels Pillow gives for the same file, because
// the reference opens images with PIL: PNG through libpng with no gamma handling (Pillow ignores
// gAMA), JPEG through libjpeg-turbo with the default islow IDCT and fancy upsampling (what Pillow's
// wheels bundle), TIFF through libtiff, the rarer formats through stb_image.
#include "imaging/image.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <tiffio.h>

#include "core/error.h"

// stb_image, compiled here (Debian's libstb-dev ships the header) with only the formats we route to it,
// and a side limit that matches ours, so a hostile header cannot make it allocate more.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS 65535
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace hg::imaging {

const Limits& default_limits() {
    static const Limits l;
    return l;
}

std::vector<uint8_t> read_file_bytes(const std::filesystem::path& path, int64_t max_bytes) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail("%s: is a folder, not a file", path.c_str());
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) fail("%s: cannot open file", path.c_str());
    std::streamoff size = f.tellg();
    if (size < 0) fail("%s: cannot determine the file size", path.c_str());
    if (size > max_bytes)
        fail("%s: file is %lld bytes, over the limit of %lld", path.c_str(), (long long)size, (long long)max_bytes);
    std::vector<uint8_t> bytes(static_cast<size_t>(size));
    f.seekg(0);
    if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size)) fail("%s: read error", path.c_str());
    return bytes;
}

void check_image_size(int64_t width, int64_t height, const Limits& limits, const std::string& what) {
    if (width <= 0 || height <= 0) fail("%s: empty image (%lld x %lld)", what.c_str(), (long long)width, (long long)height);
    if (width > limits.max_side || height > limits.max_side)
        fail("%s: image is %lld x %lld, over the limit of %d pixels a side", what.c_str(), (long long)width,
             (long long)height, limits.max_side);
    if (width * height > limits.max_pixels)
        fail("%s: image has %lld pixels, over the limit of %lld", what.c_str(), (long long)(width * height),
             (long long)limits.max_pixels);
}

RasterFormat sniff_raster(std::span<const uint8_t> h) {
    auto starts = [&](std::initializer_list<uint8_t> magic) {
        if (h.size() < magic.size()) return false;
        size_t i = 0;
        for (uint8_t m : magic)
            if (h[i++] != m) return false;
        return true;
    };
    if (starts({0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A})) return RasterFormat::Png;
    if (starts({0xFF, 0xD8, 0xFF})) return RasterFormat::Jpeg;
    if (starts({'B', 'M'})) return RasterFormat::Bmp;
    if (starts({'G', 'I', 'F', '8'})) return RasterFormat::Gif;
    if (starts({'I', 'I', 42, 0}) || starts({'M', 'M', 0, 42})) return RasterFormat::Tiff;
    if (h.size() >= 2 && h[0] == 'P' && h[1] >= '1' && h[1] <= '6') return RasterFormat::Pnm;
    return RasterFormat::Unknown;
}

// ---------------------------------------------------------------------------------------------
// EXIF orientation (JPEG APP1 "Exif\0\0" + TIFF header, IFD0 tag 0x0112).

static int exif_orientation_from_tiff(const uint8_t* t, size_t n) {
    if (n < 8) return 1;
    bool le = t[0] == 'I' && t[1] == 'I';
    bool be = t[0] == 'M' && t[1] == 'M';
    if (!le && !be) return 1;
    auto u16 = [&](size_t o) -> uint32_t { return le ? t[o] | t[o + 1] << 8 : t[o] << 8 | t[o + 1]; };
    auto u32 = [&](size_t o) -> uint32_t {
        return le ? uint32_t(t[o]) | uint32_t(t[o + 1]) << 8 | uint32_t(t[o + 2]) << 16 | uint32_t(t[o + 3]) << 24
                  : uint32_t(t[o]) << 24 | uint32_t(t[o + 1]) << 16 | uint32_t(t[o + 2]) << 8 | uint32_t(t[o + 3]);
    };
    if (u16(2) != 42) return 1;
    size_t ifd = u32(4);
    if (ifd > n - 2) return 1;
    uint32_t count = u16(ifd);
    for (uint32_t i = 0; i < count; i++) {
        size_t e = ifd + 2 + size_t(i) * 12;
        if (e + 12 > n) break;
        if (u16(e) == 0x0112) {
            uint32_t v = u16(e + 8);
            return v >= 1 && v <= 8 ? int(v) : 1;
        }
    }
    return 1;
}

static int jpeg_exif_orientation(std::span<const uint8_t> b) {
    size_t p = 2;
    while (p + 4 <= b.size()) {
        if (b[p] != 0xFF) return 1;
        uint8_t marker = b[p + 1];
        if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01) { p += 2; continue; }
        if (marker == 0xDA || marker == 0xD9) return 1;  // scan data: no more headers
        size_t len = size_t(b[p + 2]) << 8 | b[p + 3];
        if (len < 2 || p + 2 + len > b.size()) return 1;
        if (marker == 0xE1 && len >= 8 && std::memcmp(&b[p + 4], "Exif\0\0", 6) == 0)
            return exif_orientation_from_tiff(&b[p + 10], len - 8);
        p += 2 + len;
    }
    return 1;
}

RasterImage apply_exif_orientation(const RasterImage& r, int o) {
    if (o <= 1 || o > 8) return r;
    RasterImage out = r;
    bool transpose = o >= 5;
    int W = r.width, H = r.height, C = r.channels;
    out.width = transpose ? H : W;
    out.height = transpose ? W : H;
    // For each output pixel find the source pixel (ImageOps.exif_transpose: 2 mirror, 3 rotate 180,
    // 4 flip, 5 transpose, 6 rotate 270 (clockwise 90), 7 transverse, 8 rotate 90).
    for (int y = 0; y < out.height; y++) {
        for (int x = 0; x < out.width; x++) {
            int sx = 0, sy = 0;
            switch (o) {
                case 2: sx = W - 1 - x; sy = y; break;
                case 3: sx = W - 1 - x; sy = H - 1 - y; break;
                case 4: sx = x; sy = H - 1 - y; break;
                case 5: sx = y; sy = x; break;
                case 6: sx = y; sy = H - 1 - x; break;
                case 7: sx = W - 1 - y; sy = H - 1 - x; break;
                case 8: sx = W - 1 - y; sy = x; break;
            }
            for (int c = 0; c < C; c++)
                out.samples[(size_t(y) * out.width + x) * C + c] = r.samples[(size_t(sy) * W + sx) * C + c];
        }
    }
    out.exif_orientation = 1;
    return out;
}

// ---------------------------------------------------------------------------------------------
// PNG (libpng). libpng reports errors by longjmp; nothing with a destructor is created between
// setjmp and the calls that may jump, and the message is copied out before we throw.

namespace {
struct PngSource {
    const uint8_t* data;
    size_t size, pos;
};
struct PngErr {
    char msg[256];
};
void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
    auto* s = static_cast<PngSource*>(png_get_io_ptr(png));
    if (n > s->size - s->pos) png_error(png, "file is truncated");
    std::memcpy(out, s->data + s->pos, n);
    s->pos += n;
}
void png_on_error(png_structp png, png_const_charp msg) {
    auto* e = static_cast<PngErr*>(png_get_error_ptr(png));
    std::snprintf(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(png, 1);
}
void png_on_warning(png_structp, png_const_charp) {}
}  // namespace

static RasterImage decode_png(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits) {
    RasterImage img;
    img.format = "png";
    PngErr err{};
    PngSource src{bytes.data(), bytes.size(), 0};
    std::vector<png_bytep> rows;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
    if (!png) fail("%s: out of memory", name.c_str());
    png_infop info = png_create_info_struct(png);
    volatile bool ok = false;
    if (info && setjmp(png_jmpbuf(png)) == 0) {
        png_set_read_fn(png, &src, png_read_mem);
        png_set_user_limits(png, uint32_t(limits.max_side), uint32_t(limits.max_side));
        png_set_chunk_malloc_max(png, 64u << 20);
        png_read_info(png, info);
        uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
        int depth = png_get_bit_depth(png, info), ctype = png_get_color_type(png, info);
        if (int64_t(w) * h > limits.max_pixels) png_error(png, "image has more pixels than the limit");
        if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
        if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (ctype & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
        if (depth == 16) png_set_swap(png);  // little-endian uint16 in memory
        png_set_interlace_handling(png);
        png_read_update_info(png, info);
        img.width = int(w);
        img.height = int(h);
        img.channels = png_get_channels(png, info);
        img.bits = png_get_bit_depth(png, info);
        if ((img.channels != 1 && img.channels != 3) || (img.bits != 8 && img.bits != 16))
            png_error(png, "unsupported PNG layout");
        size_t rowbytes = png_get_rowbytes(png, info);
        img.samples.resize(size_t(w) * h * img.channels);
        // 8-bit rows are read into the tail of a uint16 buffer's bytes, then widened below.
        rows.resize(h);
        uint8_t* base = reinterpret_cast<uint8_t*>(img.samples.data());
        size_t offset8 = img.bits == 8 ? img.samples.size() : 0;  // bytes, second half of the buffer
        for (uint32_t y = 0; y < h; y++) rows[y] = base + offset8 + size_t(y) * rowbytes;
        png_read_image(png, rows.data());
        ok = true;
    }
    png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
    if (!ok) fail("%s: PNG: %s", name.c_str(), err.msg[0] ? err.msg : "cannot decode");
    if (img.bits == 8) {  // widen in place, front to back (source bytes sit after the destination)
        uint8_t* base = reinterpret_cast<uint8_t*>(img.samples.data());
        size_t n = img.samples.size();
        for (size_t i = 0; i < n; i++) img.samples[i] = base[n + i];
    }
    return img;
}

// ---------------------------------------------------------------------------------------------
// JPEG (libjpeg-turbo), the way Pillow's JpegDecode drives it.

namespace {
struct JpegErr {
    jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    bool truncated;
};
void jpeg_on_error(j_common_ptr cinfo) {
    auto* e = reinterpret_cast<JpegErr*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}
// Warnings (level −1) are counted by libjpeg; a stream that ends early is one (JWRN_JPEG_EOF), and
// then libjpeg fills the rest of the image with grey. Pillow refuses such files; so do we.
void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) reinterpret_cast<JpegErr*>(cinfo->err)->truncated = true;
}
}  // namespace

static RasterImage decode_jpeg(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits) {
    RasterImage img;
    img.format = "jpeg";
    jpeg_decompress_struct cinfo;
    JpegErr err;
    std::memset(&err, 0, sizeof err);
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = jpeg_on_error;
    err.mgr.emit_message = jpeg_on_message;
    std::vector<uint8_t> row;
    volatile bool ok = false, too_big = false, cmyk_inverted = false;
    if (setjmp(err.jump) == 0) {
        jpeg_create_decompress(&cinfo);
        jpeg_mem_src(&cinfo, bytes.data(), (unsigned long)bytes.size());
        jpeg_read_header(&cinfo, TRUE);
        if (int64_t(cinfo.image_width) > limits.max_side || int64_t(cinfo.image_height) > limits.max_side ||
            int64_t(cinfo.image_width) * cinfo.image_height > limits.max_pixels) {
            too_big = true;
        } else {
            if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
                cinfo.out_color_space = JCS_GRAYSCALE;
            } else if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
                cinfo.out_color_space = JCS_CMYK;
                cmyk_inverted = cinfo.saw_Adobe_marker;  // Pillow reads Adobe CMYK as "CMYK;I"
            } else {
                cinfo.out_color_space = JCS_RGB;
            }
            jpeg_start_decompress(&cinfo);
            int outc = cinfo.output_components;
            img.width = int(cinfo.output_width);
            img.height = int(cinfo.output_height);
            img.channels = outc == 1 ? 1 : 3;
            img.samples.resize(size_t(img.width) * img.height * img.channels);
            row.resize(size_t(img.width) * outc);
            while (cinfo.output_scanline < cinfo.output_height) {
                JSAMPROW rp = row.data();
                size_t y = cinfo.output_scanline;
                jpeg_read_scanlines(&cinfo, &rp, 1);
                uint16_t* dst = &img.samples[y * img.width * img.channels];
                if (outc == 4) {
                    // Pillow's cmyk2rgb: r = clip(nk - c*nk/255) with nk = 255 - k (MULDIV255 rounding).
                    for (int x = 0; x < img.width; x++) {
                        int c4[4];
                        for (int c = 0; c < 4; c++) c4[c] = cmyk_inverted ? 255 - row[x * 4 + c] : row[x * 4 + c];
                        int nk = 255 - c4[3];
                        for (int c = 0; c < 3; c++) {
                            int t = c4[c] * nk + 128;
                            int v = nk - (((t >> 8) + t) >> 8);
                            dst[x * 3 + c] = uint16_t(v < 0 ? 0 : v > 255 ? 255 : v);
                        }
                    }
                } else {
                    for (size_t i = 0; i < row.size(); i++) dst[i] = row[i];
                }
            }
            jpeg_finish_decompress(&cinfo);
            ok = true;
        }
    }
    jpeg_destroy_decompress(&cinfo);
    if (too_big) check_image_size(cinfo.image_width, cinfo.image_height, limits, name);
    if (!ok) fail("%s: JPEG: %s", name.c_str(), err.msg[0] ? err.msg : "cannot decode");
    if (err.truncated) fail("%s: JPEG: image data is truncated (the file ends before the image does)", name.c_str());
    img.exif_orientation = jpeg_exif_orientation(bytes);
    return img;
}

// ---------------------------------------------------------------------------------------------
// TIFF (libtiff) from memory. 8-bit images of any photometric go through libtiff's RGBA reader
// (palette, YCbCr, CMYK, min-is-white handled there); 16-bit one-sample gray is read as samples.

namespace {
struct TiffMem {
    const uint8_t* data;
    toff_t size, pos;
};
thread_local char tiff_last_error[512];
void tiff_on_error(const char* module, const char* fmt, va_list ap) {
    char msg[400];
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    std::snprintf(tiff_last_error, sizeof tiff_last_error, "%s%s%s", module ? module : "", module ? ": " : "", msg);
}
void tiff_on_warning(const char*, const char*, va_list) {}
tsize_t tiff_read(thandle_t h, tdata_t buf, tsize_t n) {
    auto* m = static_cast<TiffMem*>(h);
    if (n < 0) return 0;
    toff_t avail = m->pos < m->size ? m->size - m->pos : 0;
    toff_t k = std::min<toff_t>(toff_t(n), avail);
    std::memcpy(buf, m->data + m->pos, k);
    m->pos += k;
    return tsize_t(k);
}
tsize_t tiff_write(thandle_t, tdata_t, tsize_t) { return 0; }
toff_t tiff_seek(thandle_t h, toff_t off, int whence) {
    auto* m = static_cast<TiffMem*>(h);
    toff_t base = whence == SEEK_CUR ? m->pos : whence == SEEK_END ? m->size : 0;
    m->pos = base + off;
    return m->pos;
}
int tiff_close(thandle_t) { return 0; }
toff_t tiff_size(thandle_t h) { return static_cast<TiffMem*>(h)->size; }
int tiff_map(thandle_t, tdata_t*, toff_t*) { return 0; }
void tiff_unmap(thandle_t, tdata_t, toff_t) {}
struct TiffCloser {
    TIFF* t;
    ~TiffCloser() {
        if (t) TIFFClose(t);
    }
};
}  // namespace

static RasterImage decode_tiff(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits) {
    TIFFSetErrorHandler(tiff_on_error);
    TIFFSetWarningHandler(tiff_on_warning);
    tiff_last_error[0] = 0;
    TiffMem mem{bytes.data(), bytes.size(), 0};
    TiffCloser tif{TIFFClientOpen(name.c_str(), "rm", &mem, tiff_read, tiff_write, tiff_seek, tiff_close, tiff_size,
                                  tiff_map, tiff_unmap)};
    if (!tif.t) fail("%s: TIFF: %s", name.c_str(), tiff_last_error[0] ? tiff_last_error : "cannot open");
    uint32_t w = 0, h = 0;
    uint16_t bps = 1, spp = 1, photometric = 0, planar = 1, orientation = 1;
    TIFFGetField(tif.t, TIFFTAG_IMAGEWIDTH, &w);
    TIFFGetField(tif.t, TIFFTAG_IMAGELENGTH, &h);
    TIFFGetFieldDefaulted(tif.t, TIFFTAG_BITSPERSAMPLE, &bps);
    TIFFGetFieldDefaulted(tif.t, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(tif.t, TIFFTAG_PLANARCONFIG, &planar);
    TIFFGetFieldDefaulted(tif.t, TIFFTAG_ORIENTATION, &orientation);
    TIFFGetField(tif.t, TIFFTAG_PHOTOMETRIC, &photometric);
    check_image_size(w, h, limits, name);
    RasterImage img;
    img.format = "tiff";
    img.width = int(w);
    img.height = int(h);
    img.exif_orientation = orientation >= 1 && orientation <= 8 ? orientation : 1;
    if (bps == 16 && spp == 1 && !TIFFIsTiled(tif.t) &&
        (photometric == PHOTOMETRIC_MINISBLACK || photometric == PHOTOMETRIC_MINISWHITE)) {
        img.channels = 1;
        img.bits = 16;
        img.samples.resize(size_t(w) * h);
        if (TIFFScanlineSize(tif.t) != tsize_t(w) * 2) fail("%s: TIFF: unexpected scanline size", name.c_str());
        for (uint32_t y = 0; y < h; y++) {
            if (TIFFReadScanline(tif.t, &img.samples[size_t(y) * w], y, 0) < 0)
                fail("%s: TIFF: %s", name.c_str(), tiff_last_error[0] ? tiff_last_error : "cannot read row");
        }
        if (photometric == PHOTOMETRIC_MINISWHITE)
            for (auto& v : img.samples) v = uint16_t(65535 - v);
        return img;
    }
    if (bps > 8 && bps != 16) fail("%s: TIFF with %u bits per sample is not supported", name.c_str(), unsigned(bps));
    char emsg[1024] = {0};
    if (!TIFFRGBAImageOK(tif.t, emsg)) fail("%s: TIFF: %s", name.c_str(), emsg);
    TIFFRGBAImage rgba;
    if (!TIFFRGBAImageBegin(&rgba, tif.t, 0, emsg)) fail("%s: TIFF: %s", name.c_str(), emsg);
    rgba.req_orientation = ORIENTATION_TOPLEFT;
    rgba.orientation = ORIENTATION_TOPLEFT;  // rows in file order; the orientation tag is applied below
    std::vector<uint32_t> raster(size_t(w) * h);
    int got = TIFFRGBAImageGet(&rgba, raster.data(), w, h);
    TIFFRGBAImageEnd(&rgba);
    if (!got) fail("%s: TIFF: %s", name.c_str(), tiff_last_error[0] ? tiff_last_error : "cannot decode");
    bool gray = spp == 1 && (photometric == PHOTOMETRIC_MINISBLACK || photometric == PHOTOMETRIC_MINISWHITE);
    img.channels = gray ? 1 : 3;
    img.bits = 8;
    img.samples.resize(size_t(w) * h * img.channels);
    for (size_t i = 0; i < raster.size(); i++) {
        uint32_t p = raster[i];
        if (gray) {
            img.samples[i] = uint16_t(TIFFGetR(p));
        } else {
            img.samples[i * 3 + 0] = uint16_t(TIFFGetR(p));
            img.samples[i * 3 + 1] = uint16_t(TIFFGetG(p));
            img.samples[i * 3 + 2] = uint16_t(TIFFGetB(p));
        }
    }
    return img;
}

// ---------------------------------------------------------------------------------------------
// BMP / GIF / PNM (stb_image).

static RasterImage decode_stb(std::span<const uint8_t> bytes, const std::string& name, const char* fmt,
                              const Limits& limits) {
    if (bytes.size() > size_t(INT32_MAX)) fail("%s: file too large for the %s decoder", name.c_str(), fmt);
    int w = 0, h = 0, n = 0;
    if (!stbi_info_from_memory(bytes.data(), int(bytes.size()), &w, &h, &n))
        fail("%s: %s: %s", name.c_str(), fmt, stbi_failure_reason() ? stbi_failure_reason() : "cannot decode");
    check_image_size(w, h, limits, name);
    int want = (n == 1 || n == 2) ? 1 : 3;  // alpha dropped, as Pillow's convert("RGB") does
    stbi_uc* p = stbi_load_from_memory(bytes.data(), int(bytes.size()), &w, &h, &n, want);
    if (!p) fail("%s: %s: %s", name.c_str(), fmt, stbi_failure_reason() ? stbi_failure_reason() : "cannot decode");
    RasterImage img;
    img.format = fmt;
    img.width = w;
    img.height = h;
    img.channels = want;
    img.bits = 8;
    img.samples.assign(p, p + size_t(w) * h * want);
    stbi_image_free(p);
    return img;
}

RasterImage decode_raster(std::span<const uint8_t> bytes, const std::string& name, bool apply_exif,
                          const Limits& limits) {
    RasterImage img;
    switch (sniff_raster(bytes)) {
        case RasterFormat::Png: img = decode_png(bytes, name, limits); break;
        case RasterFormat::Jpeg: img = decode_jpeg(bytes, name, limits); break;
        case RasterFormat::Tiff: img = decode_tiff(bytes, name, limits); break;
        case RasterFormat::Bmp: img = decode_stb(bytes, name, "bmp", limits); break;
        case RasterFormat::Gif: img = decode_stb(bytes, name, "gif", limits); break;
        case RasterFormat::Pnm: img = decode_stb(bytes, name, "pnm", limits); break;
        case RasterFormat::Unknown:
            fail("%s: not a PNG, JPEG, BMP, GIF, TIFF or PNM image (unrecognised signature)", name.c_str());
    }
    if (apply_exif && img.exif_orientation != 1) img = apply_exif_orientation(img, img.exif_orientation);
    return img;
}

RasterImage read_raster(const std::filesystem::path& path, bool apply_exif, const Limits& limits) {
    auto bytes = read_file_bytes(path, limits.max_file_bytes);
    return decode_raster(bytes, path.string(), apply_exif, limits);
}

RgbImage to_rgb8(const RasterImage& r) {
    if (r.bits == 16 && r.channels == 1)
        fail("%s image is 16-bit grayscale: it needs a window (window.h) to become 8-bit RGB", r.format.c_str());
    RgbImage out(r.width, r.height);
    size_t n = size_t(r.width) * r.height;
    int shift = r.bits == 16 ? 8 : 0;
    for (size_t i = 0; i < n; i++) {
        for (int c = 0; c < 3; c++) {
            uint16_t v = r.channels == 1 ? r.samples[i] : r.samples[i * 3 + c];
            out.rgb[i * 3 + c] = uint8_t(v >> shift);
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// PNG writing (libpng).

namespace {
void png_write_vec(png_structp png, png_bytep data, png_size_t n) {
    auto* v = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
    v->insert(v->end(), data, data + n);
}
void png_flush_noop(png_structp) {}
}  // namespace

std::vector<uint8_t> encode_png(const RgbImage& img) {
    HG_CHECK(img.width > 0 && img.height > 0 && img.rgb.size() == size_t(img.width) * img.height * 3,
             "encode_png: empty or inconsistent image (%d x %d)", img.width, img.height);
    std::vector<uint8_t> out;
    std::vector<png_bytep> rows(img.height);
    for (int y = 0; y < img.height; y++) rows[y] = const_cast<png_bytep>(img.px(0, y));
    PngErr err{};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
    if (!png) fail("encode_png: out of memory");
    png_infop info = png_create_info_struct(png);
    volatile bool ok = false;
    if (info && setjmp(png_jmpbuf(png)) == 0) {
        png_set_write_fn(png, &out, png_write_vec, png_flush_noop);
        png_set_IHDR(png, info, uint32_t(img.width), uint32_t(img.height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        png_write_image(png, rows.data());
        png_write_end(png, info);
        ok = true;
    }
    png_destroy_write_struct(&png, info ? &info : nullptr);
    if (!ok) fail("encode_png: %s", err.msg);
    return out;
}

void write_png(const std::filesystem::path& path, const RgbImage& img) {
    auto bytes = encode_png(img);
    std::ofstream f(path, std::ios::binary);
    if (!f) fail("%s: cannot create file", path.c_str());
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!f) fail("%s: write error", path.c_str());
}

}  // namespace hg::imaging
