// DICOM through GDCM. GDCM parses the data set and decompresses the pixel data; everything after
// that (bit masking and sign extension, 1-bit unpacking, planar → interleaved, YBR → RGB, palette
// lookup, modality LUT per frame, windows) is done here, following pydicom's semantics, so that
// pydicom is an independent oracle for every step.
#include "imaging/dicom.h"

#include <gdcmDataSet.h>
#include <gdcmFile.h>
#include <gdcmImage.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfItems.h>
#include <gdcmSequenceOfFragments.h>
#include <gdcmTrace.h>
#include <gdcmTransferSyntax.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <istream>
#include <streambuf>

#include "core/error.h"
#include "imaging/dicom_message.h"
#include "imaging/dicom_scan.h"

namespace hg::imaging {

const char* sample_type_name(SampleType t) {
    switch (t) {
        case SampleType::U8: return "uint8";
        case SampleType::I8: return "int8";
        case SampleType::U16: return "uint16";
        case SampleType::I16: return "int16";
        case SampleType::U32: return "uint32";
        case SampleType::I32: return "int32";
        case SampleType::F32: return "float32";
        case SampleType::F64: return "float64";
    }
    return "?";
}

static size_t sample_size(SampleType t) {
    switch (t) {
        case SampleType::U8: case SampleType::I8: return 1;
        case SampleType::U16: case SampleType::I16: return 2;
        case SampleType::U32: case SampleType::I32: case SampleType::F32: return 4;
        case SampleType::F64: return 8;
    }
    return 1;
}

double PixelData::at(size_t i) const {
    const uint8_t* p = bytes.data() + i * sample_size(type);
    switch (type) {
        case SampleType::U8: return *p;
        case SampleType::I8: return int8_t(*p);
        case SampleType::U16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
        case SampleType::I16: { int16_t v; std::memcpy(&v, p, 2); return v; }
        case SampleType::U32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
        case SampleType::I32: { int32_t v; std::memcpy(&v, p, 4); return v; }
        case SampleType::F32: { float v; std::memcpy(&v, p, 4); return v; }
        case SampleType::F64: { double v; std::memcpy(&v, p, 8); return v; }
    }
    return 0;
}

namespace {

// A read-only istream over memory (GDCM reads from a std::istream and seeks in it).
struct MemBuf : std::streambuf {
    MemBuf(const uint8_t* p, size_t n) {
        char* b = const_cast<char*>(reinterpret_cast<const char*>(p));
        setg(b, b, b + n);
    }
    pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
        char* target = dir == std::ios_base::beg ? eback() + off : dir == std::ios_base::cur ? gptr() + off : egptr() + off;
        if (target < eback() || target > egptr()) return pos_type(off_type(-1));
        setg(eback(), target, egptr());
        return pos_type(target - eback());
    }
    pos_type seekpos(pos_type pos, std::ios_base::openmode m) override { return seekoff(off_type(pos), std::ios_base::beg, m); }
};

// GDCM accepts a file whose last value (the pixel data) is cut short, and pads the value. For
// native pixel data, find the element's header in the file (tag, then its length as GDCM read
// it) and check that the whole value is there.
bool native_pixel_value_truncated(std::span<const uint8_t> b, uint32_t vl, bool big_endian) {
    const uint8_t tag_le[4] = {0xE0, 0x7F, 0x10, 0x00}, tag_be[4] = {0x7F, 0xE0, 0x00, 0x10};
    const uint8_t* tag = big_endian ? tag_be : tag_le;
    auto u32 = [&](size_t o) {
        return big_endian ? uint32_t(b[o]) << 24 | uint32_t(b[o + 1]) << 16 | uint32_t(b[o + 2]) << 8 | b[o + 3]
                          : uint32_t(b[o]) | uint32_t(b[o + 1]) << 8 | uint32_t(b[o + 2]) << 16 | uint32_t(b[o + 3]) << 24;
    };
    for (size_t p = b.size() >= 8 ? b.size() - 8 : 0;; p--) {
        if (std::memcmp(&b[p], tag, 4) == 0) {
            // explicit VR OB/OW/UN: tag, VR, 2 reserved, 4-byte length; implicit VR: tag, 4-byte length
            if (p + 12 <= b.size() && (b[p + 5] == 'B' || b[p + 5] == 'W' || b[p + 5] == 'N') && u32(p + 8) == vl)
                return p + 12 + size_t(vl) > b.size();
            if (u32(p + 4) == vl) return p + 8 + size_t(vl) > b.size();
        }
        if (p == 0) break;
    }
    return false;
}

// Encapsulated pixel data ends with a Sequence Delimitation Item (FFFE,E0DD). A file cut inside
// the fragments has none after the last (7FE0,0010) with undefined length: GDCM would pad the
// cut fragment and its decoders would return an image with a made-up part.
bool encapsulated_pixels_truncated(std::span<const uint8_t> b) {
    const uint8_t pix[4] = {0xE0, 0x7F, 0x10, 0x00}, undefined[4] = {0xFF, 0xFF, 0xFF, 0xFF};
    const uint8_t delim[4] = {0xFE, 0xFF, 0xDD, 0xE0};
    size_t start = std::string::npos;
    for (size_t p = 0; p + 12 <= b.size(); p++)
        if (std::memcmp(&b[p], pix, 4) == 0 && std::memcmp(&b[p + 8], undefined, 4) == 0) start = p;
    if (start == std::string::npos) return false;  // not found: leave it to the decoder
    for (size_t p = b.size() >= 4 ? b.size() - 4 : 0; p > start; p--)
        if (std::memcmp(&b[p], delim, 4) == 0) return false;
    return true;
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
    size_t i = 0;
    while (i < s.size() && s[i] == ' ') i++;
    return s.substr(i);
}

// The data set of an item of a sequence. It holds the sequence: when the file stores the sequence
// as bytes (VR UN, or a VR GDCM could not use), GetValueAsSQ parses it into a new object that only
// this SmartPointer owns, and the data set would otherwise be freed on return (found by fuzzing).
struct Item {
    gdcm::SmartPointer<gdcm::SequenceOfItems> sq;
    const gdcm::DataSet* ds = nullptr;
    operator const gdcm::DataSet*() const { return ds; }
};

Item nested(const gdcm::DataSet& ds, uint16_t g, uint16_t e, size_t item = 0) {
    gdcm::Tag t(g, e);
    if (!ds.FindDataElement(t)) return {};
    gdcm::SmartPointer<gdcm::SequenceOfItems> sq = ds.GetDataElement(t).GetValueAsSQ();
    if (!sq || sq->GetNumberOfItems() <= item) return {};
    return {sq, &sq->GetItem(item + 1).GetNestedDataSet()};  // GDCM items are 1-based
}

std::string get_str(const gdcm::DataSet* ds, uint16_t g, uint16_t e) {
    if (!ds) return "";
    gdcm::Tag t(g, e);
    if (!ds->FindDataElement(t)) return "";
    const gdcm::ByteValue* bv = ds->GetDataElement(t).GetByteValue();
    if (!bv || !bv->GetPointer()) return "";
    return trim(std::string(bv->GetPointer(), bv->GetLength()));
}

// Multi-valued decimal string "a\b\c" → numbers (unparseable values dropped).
std::vector<double> get_numbers(const gdcm::DataSet* ds, uint16_t g, uint16_t e) {
    std::vector<double> out;
    std::string s = get_str(ds, g, e);
    size_t start = 0;
    while (start <= s.size() && !s.empty()) {
        size_t end = s.find('\\', start);
        std::string part = trim(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
        char* stop = nullptr;
        double v = std::strtod(part.c_str(), &stop);
        if (!part.empty() && stop == part.c_str() + part.size() && std::isfinite(v)) out.push_back(v);
        if (end == std::string::npos) break;
        start = end + 1;
    }
    return out;
}

std::optional<double> get_number(const gdcm::DataSet* ds, uint16_t g, uint16_t e) {
    auto v = get_numbers(ds, g, e);
    if (v.empty()) return std::nullopt;
    return v[0];
}

// Raw bytes of a binary element (US/SS/OW), little-endian as GDCM keeps them in memory.
std::vector<uint8_t> get_bytes(const gdcm::DataSet* ds, uint16_t g, uint16_t e) {
    if (!ds) return {};
    gdcm::Tag t(g, e);
    if (!ds->FindDataElement(t)) return {};
    const gdcm::ByteValue* bv = ds->GetDataElement(t).GetByteValue();
    if (!bv || !bv->GetPointer()) return {};
    return std::vector<uint8_t>(bv->GetPointer(), bv->GetPointer() + bv->GetLength());
}

std::vector<WindowCW> read_windows(const gdcm::DataSet* ds) {
    std::vector<WindowCW> out;
    auto c = get_numbers(ds, 0x0028, 0x1050), w = get_numbers(ds, 0x0028, 0x1051);
    std::string fn = get_str(ds, 0x0028, 0x1056);
    VoiFunction f = fn == "SIGMOID" ? VoiFunction::Sigmoid : fn == "LINEAR_EXACT" ? VoiFunction::LinearExact : VoiFunction::Linear;
    for (size_t i = 0; i < std::min(c.size(), w.size()); i++) {
        bool valid = f == VoiFunction::Linear ? w[i] >= 1 : w[i] > 0;
        if (valid) out.push_back({c[i], w[i], f});
    }
    return out;
}

// LUT descriptor (US or SS, 3 values): entries (0 means 65536), first mapped value, bits.
bool read_lut_descriptor(const std::vector<uint8_t>& d, bool first_signed, int& entries, int& first, int& bits) {
    if (d.size() != 6) return false;
    uint16_t v[3];
    std::memcpy(v, d.data(), 6);
    entries = v[0] == 0 ? 65536 : v[0];
    first = first_signed ? int(int16_t(v[1])) : int(v[1]);
    bits = v[2];
    return true;
}

std::optional<VoiLut> read_voi_lut(const gdcm::DataSet& ds, bool signed_pixels) {
    Item item = nested(ds, 0x0028, 0x3010);
    if (!item) return std::nullopt;
    int entries, first, bits;
    if (!read_lut_descriptor(get_bytes(item, 0x0028, 0x3002), signed_pixels, entries, first, bits)) return std::nullopt;
    auto data = get_bytes(item, 0x0028, 0x3006);
    if (bits < 1 || bits > 16) return std::nullopt;
    VoiLut lut;
    lut.first_mapped = first;
    lut.bits = bits;
    if (data.size() == size_t(entries) * 2) {
        lut.data.resize(entries);
        std::memcpy(lut.data.data(), data.data(), data.size());
    } else if (bits <= 8 && data.size() == size_t(entries)) {
        lut.data.assign(data.begin(), data.end());
    } else {
        return std::nullopt;  // inconsistent table: ignored, the window is used instead
    }
    return lut;
}

struct Rescale {
    double slope = 1, intercept = 0;
};

Rescale read_rescale(const gdcm::DataSet* ds, Rescale dflt) {
    Rescale r = dflt;
    if (auto s = get_number(ds, 0x0028, 0x1053)) r.slope = *s;
    if (auto i = get_number(ds, 0x0028, 0x1052)) r.intercept = *i;
    return r;
}

void read_metadata(const gdcm::File& file, DicomInfo& info) {
    const gdcm::DataSet& ds = file.GetDataSet();
    const gdcm::DataSet* top = &ds;
    info.sop_class_uid = get_str(top, 0x0008, 0x0016);
    info.modality = get_str(top, 0x0008, 0x0060);
    info.body_part = get_str(top, 0x0018, 0x0015);
    info.study_uid = get_str(top, 0x0020, 0x000D);
    info.series_uid = get_str(top, 0x0020, 0x000E);
    info.series_description = get_str(top, 0x0008, 0x103E);
    info.photometric = get_str(top, 0x0028, 0x0004);
    info.rescale_type = get_str(top, 0x0028, 0x1054);
    if (auto n = get_number(top, 0x0020, 0x0013)) info.instance_number = int(*n);
    if (auto t = get_number(top, 0x0018, 0x0050)) info.slice_thickness = *t;
    auto ps = get_numbers(top, 0x0028, 0x0030);
    if (ps.size() < 2) ps = get_numbers(top, 0x0018, 0x1164);  // Imager Pixel Spacing (projection X-ray)
    if (ps.size() >= 2 && ps[0] > 0 && ps[1] > 0) info.pixel_spacing = std::array<double, 2>{ps[0], ps[1]};
    auto iop = get_numbers(top, 0x0020, 0x0037);
    if (iop.size() == 6) info.orientation = std::array<double, 6>{iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]};
    auto ipp = get_numbers(top, 0x0020, 0x0032);
    if (ipp.size() == 3) info.positions.push_back({ipp[0], ipp[1], ipp[2]});
    info.windows = read_windows(top);
    Rescale base = read_rescale(top, {});
    info.rescale_slope = {base.slope};
    info.rescale_intercept = {base.intercept};

    // Enhanced multi-frame: shared and per-frame functional groups.
    Item shared = nested(ds, 0x5200, 0x9229);
    if (shared) {
        if (Item pm = nested(*shared, 0x0028, 0x9110)) {  // Pixel Measures
            auto s = get_numbers(pm, 0x0028, 0x0030);
            if (s.size() >= 2 && s[0] > 0 && s[1] > 0) info.pixel_spacing = std::array<double, 2>{s[0], s[1]};
            if (auto t = get_number(pm, 0x0018, 0x0050)) info.slice_thickness = *t;
        }
        if (Item po = nested(*shared, 0x0020, 0x9116)) {  // Plane Orientation
            auto o = get_numbers(po, 0x0020, 0x0037);
            if (o.size() == 6) info.orientation = std::array<double, 6>{o[0], o[1], o[2], o[3], o[4], o[5]};
        }
        if (Item pv = nested(*shared, 0x0028, 0x9145)) {  // Pixel Value Transformation
            base = read_rescale(pv, base);
            info.rescale_slope = {base.slope};
            info.rescale_intercept = {base.intercept};
            if (info.rescale_type.empty()) info.rescale_type = get_str(pv, 0x0028, 0x1054);
        }
        if (Item fv = nested(*shared, 0x0028, 0x9132); fv && info.windows.empty())
            info.windows = read_windows(fv);
    }
    gdcm::Tag per_frame_tag(0x5200, 0x9230);
    if (ds.FindDataElement(per_frame_tag)) {
        gdcm::SmartPointer<gdcm::SequenceOfItems> sq = ds.GetDataElement(per_frame_tag).GetValueAsSQ();
        size_t n = sq ? sq->GetNumberOfItems() : 0;
        std::vector<std::array<double, 3>> pos;
        std::vector<double> slopes, intercepts;
        bool rescale_per_frame = false;
        for (size_t f = 0; f < n; f++) {
            const gdcm::DataSet& fr = sq->GetItem(f + 1).GetNestedDataSet();
            if (Item pp = nested(fr, 0x0020, 0x9113)) {
                auto p = get_numbers(pp, 0x0020, 0x0032);
                if (p.size() == 3) pos.push_back({p[0], p[1], p[2]});
            }
            Rescale r = base;
            if (Item pv = nested(fr, 0x0028, 0x9145)) {
                r = read_rescale(pv, base);
                rescale_per_frame = true;
                if (info.rescale_type.empty()) info.rescale_type = get_str(pv, 0x0028, 0x1054);
            }
            slopes.push_back(r.slope);
            intercepts.push_back(r.intercept);
            if (f == 0 && info.windows.empty())
                if (Item fv = nested(fr, 0x0028, 0x9132)) info.windows = read_windows(fv);
            if (f == 0 && !info.orientation)
                if (Item po = nested(fr, 0x0020, 0x9116)) {
                    auto o = get_numbers(po, 0x0020, 0x0037);
                    if (o.size() == 6) info.orientation = std::array<double, 6>{o[0], o[1], o[2], o[3], o[4], o[5]};
                }
            if (f == 0 && !info.pixel_spacing)
                if (Item pm = nested(fr, 0x0028, 0x9110)) {
                    auto s = get_numbers(pm, 0x0028, 0x0030);
                    if (s.size() >= 2 && s[0] > 0 && s[1] > 0) info.pixel_spacing = std::array<double, 2>{s[0], s[1]};
                }
        }
        if (n > 0 && pos.size() == n) info.positions = pos;
        if (rescale_per_frame) {
            info.rescale_slope = slopes;
            info.rescale_intercept = intercepts;
        }
    }
}

std::string ts_name(const gdcm::TransferSyntax& ts) {
    static const std::pair<gdcm::TransferSyntax::TSType, const char*> names[] = {
        {gdcm::TransferSyntax::ImplicitVRLittleEndian, "Implicit VR Little Endian"},
        {gdcm::TransferSyntax::ExplicitVRLittleEndian, "Explicit VR Little Endian"},
        {gdcm::TransferSyntax::ExplicitVRBigEndian, "Explicit VR Big Endian"},
        {gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian, "Deflated Explicit VR Little Endian"},
        {gdcm::TransferSyntax::RLELossless, "RLE Lossless"},
        {gdcm::TransferSyntax::JPEGBaselineProcess1, "JPEG Baseline"},
        {gdcm::TransferSyntax::JPEGExtendedProcess2_4, "JPEG Extended"},
        {gdcm::TransferSyntax::JPEGLosslessProcess14, "JPEG Lossless (process 14)"},
        {gdcm::TransferSyntax::JPEGLosslessProcess14_1, "JPEG Lossless (process 14, SV1)"},
        {gdcm::TransferSyntax::JPEGLSLossless, "JPEG-LS Lossless"},
        {gdcm::TransferSyntax::JPEGLSNearLossless, "JPEG-LS Near-Lossless"},
        {gdcm::TransferSyntax::JPEG2000Lossless, "JPEG 2000 Lossless"},
        {gdcm::TransferSyntax::JPEG2000, "JPEG 2000"},
    };
    for (const auto& [t, n] : names)
        if (ts == t) return n;
    const char* s = gdcm::TransferSyntax::GetTSString(ts);
    return s ? s : "unknown";
}

// YBR_FULL → RGB exactly as pydicom's convert_color_space: float32 matrix, +0.5, floor, clip.
void ybr_full_to_rgb(uint8_t* p, size_t pixels) {
    const float m[3][3] = {{1.000f, 1.000f, 1.000f},
                           {0.000f, float(-0.114 * 1.772 / 0.587), 1.772f},
                           {1.402f, float(-0.299 * 1.402 / 0.587), 0.000f}};
    for (size_t i = 0; i < pixels; i++, p += 3) {
        float y = p[0], cb = float(p[1]) - 128.0f, cr = float(p[2]) - 128.0f;
        for (int c = 0; c < 3; c++) {
            // numpy's matmul of a [N,3] row with [3,3] in float32: y*m0c + cb*m1c + cr*m2c.
            float v = y * m[0][c] + cb * m[1][c] + cr * m[2][c];
            v = std::floor(v + 0.5f);
            p[c] = uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

// RLE Lossless (PS3.5 Annex G), decoded here rather than by GDCM: GDCM's RLE codec asserts on
// 1-bit data. Each frame is one fragment: a 64-byte header (segment count, 15 offsets), then
// PackBits segments, one per byte plane, samples in order, most significant byte first.
bool rle_decode_frame(const uint8_t* frag, size_t n, int rows, int cols, int spp, int bits_allocated, uint8_t* out,
                      std::string& why) {
    auto u32 = [&](size_t o) { return uint32_t(frag[o]) | uint32_t(frag[o + 1]) << 8 | uint32_t(frag[o + 2]) << 16 | uint32_t(frag[o + 3]) << 24; };
    if (n < 64) { why = "RLE fragment shorter than its 64-byte header"; return false; }
    int bytes_per_sample = bits_allocated == 1 ? 1 : bits_allocated / 8;
    uint32_t nseg = u32(0);
    if (nseg != uint32_t(spp * bytes_per_sample)) {
        why = "RLE header has " + std::to_string(nseg) + " segments, expected " + std::to_string(spp * bytes_per_sample);
        return false;
    }
    size_t plane = bits_allocated == 1 ? (size_t(rows) * cols + 7) / 8 : size_t(rows) * cols;
    std::vector<uint8_t> seg(plane);
    for (uint32_t s = 0; s < nseg; s++) {
        size_t start = u32(4 + 4 * s), end = s + 1 < nseg ? u32(4 + 4 * (s + 1)) : n;
        if (start < 64 || start > end || end > n) { why = "RLE segment offsets out of range"; return false; }
        size_t o = 0, p = start;
        while (o < plane && p < end) {
            int c = int8_t(frag[p++]);
            if (c >= 0) {
                size_t k = size_t(c) + 1;
                if (p + k > end) { why = "RLE literal run past the end of its segment"; return false; }
                size_t m = std::min(k, plane - o);
                std::memcpy(&seg[o], &frag[p], m);
                o += m;
                p += k;
            } else if (c != -128) {
                if (p >= end) { why = "RLE replicate run past the end of its segment"; return false; }
                size_t k = size_t(1 - c), m = std::min(k, plane - o);
                std::memset(&seg[o], frag[p++], m);
                o += m;
            }
        }
        if (o < plane) { why = "RLE segment decodes to fewer bytes than the image needs"; return false; }
        int sample = int(s) / bytes_per_sample, byte_index = bytes_per_sample - 1 - int(s) % bytes_per_sample;
        if (bits_allocated == 1) {
            std::memcpy(out, seg.data(), plane);
        } else {
            for (size_t i = 0; i < plane; i++) out[(i * spp + sample) * bytes_per_sample + byte_index] = seg[i];
        }
    }
    return true;
}

void rle_decode(const gdcm::DataSet& ds, const DicomInfo& info, std::vector<uint8_t>& raw, const std::string& name) {
    gdcm::Tag pixel_tag(0x7FE0, 0x0010);
    if (!ds.FindDataElement(pixel_tag)) fail("%s: no pixel data", name.c_str());
    const gdcm::SequenceOfFragments* sf = ds.GetDataElement(pixel_tag).GetSequenceOfFragments();
    if (!sf) fail("%s: RLE pixel data is not encapsulated", name.c_str());
    size_t nfrag = sf->GetNumberOfFragments();
    if (nfrag != size_t(info.frames))
        fail("%s: RLE pixel data has %zu fragments for %d frames", name.c_str(), nfrag, info.frames);
    size_t frame_bytes = raw.size() / size_t(info.frames);
    for (size_t f = 0; f < nfrag; f++) {
        const gdcm::ByteValue* bv = sf->GetFragment(f).GetByteValue();
        std::string why;
        if (!bv || !rle_decode_frame(reinterpret_cast<const uint8_t*>(bv->GetPointer()), bv->GetLength(), info.rows,
                                     info.columns, info.samples_per_pixel, info.bits_allocated,
                                     raw.data() + f * frame_bytes, why))
            fail("%s: frame %zu: %s", name.c_str(), f, why.empty() ? "empty RLE fragment" : why.c_str());
    }
}

// PALETTE COLOR: index → (R, G, B) through the three LUTs, as pydicom's apply_color_lut does
// (index clipped to the table; 8- or 16-bit entries by the data length). Afterwards the pixels
// are RGB with the table's depth, and info says 3 samples of that many bits.
void apply_palette(const gdcm::DataSet& ds, DicomInfo& info, PixelData& px, const std::string& name) {
    if (ds.FindDataElement(gdcm::Tag(0x0028, 0x1221)))
        fail("%s: segmented palette colour tables are not supported", name.c_str());
    int entries = 0, first = 0, bits = 0;
    bool sgn = info.pixel_representation == 1;
    if (!read_lut_descriptor(get_bytes(&ds, 0x0028, 0x1101), sgn, entries, first, bits))
        fail("%s: PALETTE COLOR without a valid Red Palette Color Lookup Table Descriptor", name.c_str());
    std::vector<uint8_t> lut[3] = {get_bytes(&ds, 0x0028, 0x1201), get_bytes(&ds, 0x0028, 0x1202), get_bytes(&ds, 0x0028, 0x1203)};
    size_t bytes_per_entry = lut[0].size() / size_t(entries);
    if ((bytes_per_entry != 1 && bytes_per_entry != 2) || lut[0].size() != bytes_per_entry * entries)
        fail("%s: palette table of %zu bytes does not hold %d entries", name.c_str(), lut[0].size(), entries);
    for (int c = 1; c < 3; c++)
        if (lut[c].size() != lut[0].size()) fail("%s: palette tables differ in length", name.c_str());
    PixelData rgb;
    rgb.type = bytes_per_entry == 1 ? SampleType::U8 : SampleType::U16;
    rgb.count = px.count * 3;
    rgb.bytes.resize(rgb.count * bytes_per_entry);
    for (size_t i = 0; i < px.count; i++) {
        double idx = px.at(i) - first;
        size_t k = idx <= 0 ? 0 : idx >= entries - 1 ? size_t(entries - 1) : size_t(idx);
        for (int c = 0; c < 3; c++)
            std::memcpy(&rgb.bytes[(i * 3 + c) * bytes_per_entry], &lut[c][k * bytes_per_entry], bytes_per_entry);
    }
    px = std::move(rgb);
    info.samples_per_pixel = 3;
    info.bits_allocated = info.bits_stored = int(bytes_per_entry * 8);
    info.high_bit = info.bits_stored - 1;
    info.pixel_representation = 0;
}

}  // namespace

bool looks_like_dicom(std::span<const uint8_t> h) {
    if (h.size() >= 132 && std::memcmp(&h[128], "DICM", 4) == 0) return true;
    // No preamble: a data set starting with group 0002 or 0008 (little or big endian).
    if (h.size() >= 8) {
        uint16_t g_le = uint16_t(h[0] | h[1] << 8), g_be = uint16_t(h[0] << 8 | h[1]);
        if (g_le == 0x0002 || g_le == 0x0008 || g_be == 0x0008) return true;
    }
    return false;
}

// A binary US/SS value of VM 1 (little-endian in GDCM's memory, whatever the file's byte order).
static std::optional<int> get_u16(const gdcm::DataSet& ds, uint16_t g, uint16_t e, const std::string& name) {
    gdcm::Tag t(g, e);
    if (!ds.FindDataElement(t)) return std::nullopt;
    const gdcm::ByteValue* bv = ds.GetDataElement(t).GetByteValue();
    if (!bv || bv->GetLength() == 0) return std::nullopt;
    if (bv->GetLength() != 2) fail("%s: attribute (%04X,%04X) has %u bytes, expected one 16-bit value", name.c_str(), g, e, unsigned(bv->GetLength()));
    uint16_t v;
    std::memcpy(&v, bv->GetPointer(), 2);
    return int(v);
}

// GDCM's parse and decode of one file, our attribute checks and pixel handling: the work of the
// decoder child (or of the caller's process with DecodeIsolation::InProcess). The caller has run
// the pre-checks (size, element structure). Once the image attributes are checked,
// `pixel_memory(bytes)` is told how much the pixel buffers may take (the child raises its memory
// limit by that much).
static DicomImage decode_with_gdcm(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits,
                                   bool pixels, const std::function<void(uint64_t)>& pixel_memory) {
    // 1. GDCM parses the data set (and inflates deflated ones). Its ImageReader is not used: it
    //    asserts on attributes it does not expect; we read and check the image attributes ourselves.
    MemBuf buf(bytes.data(), bytes.size());
    std::istream is(&buf);
    gdcm::Reader reader;
    reader.SetStream(is);
    bool ok = false;
    try {
        ok = reader.Read();
    } catch (const std::exception& e) {
        fail("%s: malformed DICOM file (%s)", name.c_str(), e.what());
    }
    if (!ok) fail("%s: not a readable DICOM file (truncated or malformed data set)", name.c_str());
    const gdcm::File& file = reader.GetFile();
    const gdcm::DataSet& ds = file.GetDataSet();
    const gdcm::TransferSyntax& ts = file.GetHeader().GetDataSetTransferSyntax();

    DicomImage out;
    DicomInfo& info = out.info;
    info.path = name;
    const char* uid = ts.GetString();
    info.transfer_syntax = uid ? uid : "";
    info.transfer_syntax_name = ts_name(ts);
    read_metadata(file, info);

    gdcm::Tag pixel_tag(0x7FE0, 0x0010), float_tag(0x7FE0, 0x0008), double_tag(0x7FE0, 0x0009);
    const gdcm::Tag* ptag = ds.FindDataElement(pixel_tag) ? &pixel_tag : ds.FindDataElement(float_tag) ? &float_tag
                          : ds.FindDataElement(double_tag) ? &double_tag : nullptr;
    if (!ptag)
        fail("%s: DICOM file has no pixel data (modality %s, SOP class %s)", name.c_str(),
             info.modality.empty() ? "?" : info.modality.c_str(), info.sop_class_uid.empty() ? "?" : info.sop_class_uid.c_str());

    // 2. Image attributes, checked.
    auto rows = get_u16(ds, 0x0028, 0x0010, name), cols = get_u16(ds, 0x0028, 0x0011, name);
    auto ba = get_u16(ds, 0x0028, 0x0100, name);
    if (!rows || !cols || !ba) fail("%s: pixel data without Rows, Columns or Bits Allocated", name.c_str());
    info.rows = *rows;
    info.columns = *cols;
    info.bits_allocated = *ba;
    info.samples_per_pixel = get_u16(ds, 0x0028, 0x0002, name).value_or(1);
    info.bits_stored = get_u16(ds, 0x0028, 0x0101, name).value_or(info.bits_allocated);
    info.high_bit = get_u16(ds, 0x0028, 0x0102, name).value_or(info.bits_stored - 1);
    info.pixel_representation = get_u16(ds, 0x0028, 0x0103, name).value_or(0);
    info.planar_configuration = get_u16(ds, 0x0028, 0x0006, name).value_or(0);
    info.float_pixels = *ptag != pixel_tag;
    auto nframes = get_number(&ds, 0x0028, 0x0008);
    if (nframes && (*nframes < 1 || *nframes > 1e7 || *nframes != std::floor(*nframes)))
        fail("%s: Number of Frames %g is not valid", name.c_str(), *nframes);
    info.frames = nframes ? int(*nframes) : 1;
    if (info.photometric.empty()) info.photometric = info.samples_per_pixel == 3 ? "RGB" : "MONOCHROME2";

    check_image_size(info.columns, info.rows, limits, name);
    int bal = info.bits_allocated;
    if (info.float_pixels) {
        if (bal != (*ptag == float_tag ? 32 : 64) || info.samples_per_pixel != 1)
            fail("%s: float pixel data with Bits Allocated %d and %d samples", name.c_str(), bal, info.samples_per_pixel);
        info.bits_stored = bal;
        info.high_bit = bal - 1;
    } else {
        if (bal != 1 && bal != 8 && bal != 16 && bal != 32)
            fail("%s: Bits Allocated %d is not supported (1, 8, 16 or 32)", name.c_str(), bal);
        if (info.bits_stored < 1 || info.bits_stored > bal || info.high_bit < info.bits_stored - 1 || info.high_bit >= bal)
            fail("%s: inconsistent Bits Stored %d / High Bit %d for Bits Allocated %d", name.c_str(), info.bits_stored,
                 info.high_bit, bal);
    }
    if (info.pixel_representation != 0 && info.pixel_representation != 1)
        fail("%s: Pixel Representation %d is not 0 or 1", name.c_str(), info.pixel_representation);
    if (info.samples_per_pixel != 1 && info.samples_per_pixel != 3)
        fail("%s: %d samples per pixel is not supported (only 1 or 3)", name.c_str(), info.samples_per_pixel);
    const std::string& pi = info.photometric;
    bool mono = pi == "MONOCHROME1" || pi == "MONOCHROME2", palette = pi == "PALETTE COLOR";
    bool color = pi == "RGB" || pi == "YBR_FULL" || pi == "YBR_FULL_422" || pi == "YBR_ICT" || pi == "YBR_RCT" ||
                 pi == "YBR_PARTIAL_420" || pi == "YBR_PARTIAL_422";
    if (!mono && !palette && !color) fail("%s: Photometric Interpretation '%s' is not supported", name.c_str(), pi.c_str());
    if ((color ? 3 : 1) != info.samples_per_pixel)
        fail("%s: Photometric Interpretation %s with %d samples per pixel", name.c_str(), pi.c_str(), info.samples_per_pixel);
    if (palette && bal != 8 && bal != 16) fail("%s: PALETTE COLOR with %d bits allocated", name.c_str(), bal);
    if (color && bal != 8 && bal != 16 && bal != 32) fail("%s: colour image with %d bits allocated", name.c_str(), bal);
    int64_t samples = int64_t(info.columns) * info.rows * info.frames * info.samples_per_pixel;
    if (int64_t(info.columns) * info.rows * info.frames > limits.max_voxels)
        fail("%s: %d frames of %d x %d is over the limit of %lld pixels", name.c_str(), info.frames, info.columns,
             info.rows, (long long)limits.max_voxels);
    if (info.positions.size() > 1 && info.positions.size() != size_t(info.frames)) info.positions.resize(1);
    if (info.rescale_slope.size() != 1 && info.rescale_slope.size() != size_t(info.frames)) {
        info.rescale_slope.resize(1);
        info.rescale_intercept.resize(1);
    }
    info.voi_lut = read_voi_lut(ds, info.pixel_representation == 1);
    info.lossy = ts.IsLossy() || get_str(&ds, 0x0028, 0x2110) == "01";
    if (!pixels) return out;

    // 3. Decode into `raw`: native-endian samples, frames one after another.
    SampleType st;
    bool sgn = info.pixel_representation == 1;
    if (info.float_pixels) st = bal == 32 ? SampleType::F32 : SampleType::F64;
    else if (bal <= 8) st = sgn && bal == 8 ? SampleType::I8 : SampleType::U8;
    else if (bal == 16) st = sgn ? SampleType::I16 : SampleType::U16;
    else st = sgn ? SampleType::I32 : SampleType::U32;
    size_t expected = bal == 1 ? (size_t(samples) + 7) / 8 : size_t(samples) * sample_size(st);
    // Native YBR_FULL_422 stores two pixels as Y1 Y2 Cb Cr: two thirds of the interleaved size.
    bool native_422 = pi == "YBR_FULL_422" && !ts.IsEncapsulated();
    if (native_422 && (bal != 8 || info.columns % 2 != 0))
        fail("%s: native YBR_FULL_422 needs 8-bit samples and an even width", name.c_str());
    size_t stored = native_422 ? expected / 3 * 2 : expected;
    // The largest pixel buffer to come: the decoded samples, or RGB through a 16-bit palette.
    pixel_memory(uint64_t(samples) * (palette ? 6 : sample_size(st)));
    std::vector<uint8_t> raw(expected);
    const gdcm::DataElement& pde = ds.GetDataElement(*ptag);
    bool rle = ts == gdcm::TransferSyntax::RLELossless;
    bool decoded_as_rgb = false;  // GDCM's JPEG decoders turn YBR into RGB themselves
    if (!ts.IsEncapsulated()) {
        const gdcm::ByteValue* bv = pde.GetByteValue();
        if (!bv || !bv->GetPointer()) fail("%s: pixel data element is empty or encapsulated in a native transfer syntax", name.c_str());
        if (ts != gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian && native_pixel_value_truncated(bytes, bv->GetLength(), ts.GetSwapCode() == gdcm::SwapCode::BigEndian))
            fail("%s: DICOM file is truncated: the pixel data runs past the end of the file", name.c_str());
        if (bv->GetLength() < stored)
            fail("%s: pixel data is %u bytes, expected %zu for %d frame(s) of %d x %d x %d at %d bits (truncated?)",
                 name.c_str(), unsigned(bv->GetLength()), stored, info.frames, info.columns, info.rows,
                 info.samples_per_pixel, bal);
        if (native_422) {
            const uint8_t* src = reinterpret_cast<const uint8_t*>(bv->GetPointer());
            for (size_t pair = 0; pair < expected / 6; pair++) {
                const uint8_t* q = src + pair * 4;  // Y1 Y2 Cb Cr
                uint8_t* d = raw.data() + pair * 6;
                d[0] = q[0], d[1] = q[2], d[2] = q[3], d[3] = q[1], d[4] = q[2], d[5] = q[3];
            }
        } else {
            std::memcpy(raw.data(), bv->GetPointer(), expected);
        }
        // Big-endian files: GDCM swaps OW values in 16-bit words as it reads and leaves OB/UN bytes
        // in file order; finish the job for the sample size.
        if (ts.GetSwapCode() == gdcm::SwapCode::BigEndian && bal > 8 && !info.float_pixels) {
            size_t k = sample_size(st);
            if (pde.GetVR() == gdcm::VR::OW) {
                if (k == 4)
                    for (size_t i = 0; i + 4 <= raw.size(); i += 4) std::swap_ranges(&raw[i], &raw[i + 2], &raw[i + 2]);
            } else {
                for (size_t i = 0; i + k <= raw.size(); i += k) std::reverse(raw.begin() + i, raw.begin() + i + k);
            }
        }
    } else if (rle) {
        if (encapsulated_pixels_truncated(bytes))
            fail("%s: DICOM file is truncated: the compressed pixel data has no end (sequence delimiter missing)", name.c_str());
        rle_decode(ds, info, raw, name);
    } else {
        bool known = ts == gdcm::TransferSyntax::JPEGBaselineProcess1 || ts == gdcm::TransferSyntax::JPEGExtendedProcess2_4 ||
                     ts == gdcm::TransferSyntax::JPEGLosslessProcess14 || ts == gdcm::TransferSyntax::JPEGLosslessProcess14_1 ||
                     ts == gdcm::TransferSyntax::JPEGLSLossless || ts == gdcm::TransferSyntax::JPEGLSNearLossless ||
                     ts == gdcm::TransferSyntax::JPEG2000Lossless || ts == gdcm::TransferSyntax::JPEG2000;
        if (!known) fail("%s: transfer syntax %s (%s) is not supported", name.c_str(), info.transfer_syntax_name.c_str(), info.transfer_syntax.c_str());
        if (bal == 1 || info.float_pixels) fail("%s: compressed pixel data with %d bits allocated", name.c_str(), bal);
        if (!pde.GetSequenceOfFragments()) fail("%s: compressed pixel data is not encapsulated in fragments", name.c_str());
        if (encapsulated_pixels_truncated(bytes))
            fail("%s: DICOM file is truncated: the compressed pixel data has no end (sequence delimiter missing)", name.c_str());
        gdcm::Image gi;
        gi.SetNumberOfDimensions(info.frames > 1 ? 3 : 2);
        gi.SetDimension(0, unsigned(info.columns));
        gi.SetDimension(1, unsigned(info.rows));
        if (info.frames > 1) gi.SetDimension(2, unsigned(info.frames));
        gi.SetPixelFormat(gdcm::PixelFormat(uint16_t(info.samples_per_pixel), uint16_t(bal), uint16_t(info.bits_stored),
                                            uint16_t(info.high_bit), uint16_t(info.pixel_representation)));
        gi.SetPhotometricInterpretation(gdcm::PhotometricInterpretation::GetPIType(pi.c_str()));
        if (info.samples_per_pixel == 3) gi.SetPlanarConfiguration(unsigned(info.planar_configuration));
        gi.SetTransferSyntax(ts);
        gi.SetDataElement(pde);
        if (gi.GetBufferLength() != expected)
            fail("%s: decoded size %lu differs from the expected %zu bytes", name.c_str(), gi.GetBufferLength(), expected);
        bool got = false;
        try {
            got = gi.GetBuffer(reinterpret_cast<char*>(raw.data()));
        } catch (const std::exception& e) {
            fail("%s: cannot decode pixel data (%s): %s", name.c_str(), info.transfer_syntax_name.c_str(), e.what());
        }
        if (!got)
            fail("%s: cannot decode pixel data (transfer syntax %s): corrupt, truncated or unsupported", name.c_str(),
                 info.transfer_syntax_name.c_str());
        // GDCM's JPEG decoders return RGB when the file says RGB, and keep YCbCr when it says YBR_FULL*.
        bool jpeg = ts == gdcm::TransferSyntax::JPEGBaselineProcess1 || ts == gdcm::TransferSyntax::JPEGExtendedProcess2_4;
        decoded_as_rgb = !(jpeg && (pi == "YBR_FULL" || pi == "YBR_FULL_422"));
    }

    PixelData& px = out.pixels;
    px.type = st;
    px.count = size_t(samples);
    if (bal == 1) {  // 1-bit: unpack, least significant bit first (PS3.5 8.1.1)
        px.bytes.resize(px.count);
        for (size_t i = 0; i < px.count; i++) px.bytes[i] = (raw[i >> 3] >> (i & 7)) & 1;
    } else {
        px.bytes = std::move(raw);
    }
    // Integer samples: keep bits_stored bits below high_bit and sign-extend (pydicom does the same).
    int bs = info.bits_stored;
    if (bal > 1 && !info.float_pixels && bs < bal) {
        int shift = info.high_bit + 1 - bs;
        size_t k = size_t(bal / 8);
        for (size_t i = 0; i < px.count; i++) {
            uint32_t v = 0;
            std::memcpy(&v, px.bytes.data() + i * k, k);
            v = (v >> shift) & ((uint32_t(1) << bs) - 1);
            if (sgn && ((v >> (bs - 1)) & 1)) v |= ~((uint32_t(1) << bs) - 1);
            std::memcpy(px.bytes.data() + i * k, &v, k);
        }
    }
    if (palette) apply_palette(ds, info, px, name);
    if (info.samples_per_pixel == 3 && !palette) {
        size_t ss = sample_size(st), plane = size_t(info.rows) * info.columns;
        // Planar → interleaved (native data only: decoders return interleaved samples).
        if (info.planar_configuration == 1 && !ts.IsEncapsulated()) {
            std::vector<uint8_t> inter(px.bytes.size());
            for (int f = 0; f < info.frames; f++) {
                const uint8_t* src = px.bytes.data() + size_t(f) * plane * 3 * ss;
                uint8_t* dst = inter.data() + size_t(f) * plane * 3 * ss;
                for (size_t i = 0; i < plane; i++)
                    for (int c = 0; c < 3; c++) std::memcpy(dst + (i * 3 + c) * ss, src + (c * plane + i) * ss, ss);
            }
            px.bytes.swap(inter);
        }
        bool ybr = pi == "YBR_FULL" || pi == "YBR_FULL_422";
        if (ybr && st == SampleType::U8 && !decoded_as_rgb) ybr_full_to_rgb(px.bytes.data(), plane * info.frames);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// The decoder child's message (isolated_decode.h has the framing). Frame kInfoFrame: the DicomInfo
// fields, then the pixel sample type and count; frame kPixelsFrame: the pixel bytes. The parent
// reads the first (at most kMaxInfoBytes), checks every field against what it can expect of a
// decoded image under its limits, and only then reads the pixels into a buffer of the size the
// checked fields imply: the child may have been subverted by the file it decoded.

namespace {

constexpr uint16_t kInfoFrame = kFirstUserFrame, kPixelsFrame = kFirstUserFrame + 1;
constexpr uint64_t kMaxInfoBytes = uint64_t(64) << 20;  // ~1.6 M frames of per-frame position and rescale
constexpr uint64_t kMiB = uint64_t(1) << 20;
constexpr uint64_t kDecoderMemoryCap = uint64_t(16) << 30;  // the child's address-space growth, at most

double finite(MessageReader& r) {
    double v = r.f64();
    if (!std::isfinite(v)) invalid_child_message("a value is not finite");
    return v;
}

bool flag(MessageReader& r) {
    uint32_t v = r.u32();
    if (v > 1) invalid_child_message("a flag is %u", v);
    return v == 1;
}

// The sample type our decoder gives for these attributes (after a palette: RGB of the table's depth).
SampleType sample_type_for(const DicomInfo& i) {
    bool sgn = i.pixel_representation == 1;
    int bal = i.bits_allocated;
    if (i.float_pixels) return bal == 32 ? SampleType::F32 : SampleType::F64;
    if (bal <= 8) return sgn && bal == 8 ? SampleType::I8 : SampleType::U8;
    if (bal == 16) return sgn ? SampleType::I16 : SampleType::U16;
    return sgn ? SampleType::I32 : SampleType::U32;
}

}  // namespace

void encode_dicom_info(const DicomImage& d, MessageWriter& w) {
    const DicomInfo& i = d.info;
    for (const std::string* s : {&i.transfer_syntax, &i.transfer_syntax_name, &i.sop_class_uid, &i.modality, &i.body_part,
                                 &i.series_uid, &i.study_uid, &i.series_description, &i.photometric, &i.rescale_type})
        w.str(*s);
    for (int v : {i.rows, i.columns, i.frames, i.samples_per_pixel, i.bits_allocated, i.bits_stored, i.high_bit,
                  i.pixel_representation, i.planar_configuration})
        w.i32(v);
    w.u32(i.float_pixels);
    w.u32(i.lossy);
    for (const auto* v : {&i.rescale_slope, &i.rescale_intercept}) {
        w.u32(uint32_t(v->size()));
        for (double x : *v) w.f64(x);
    }
    w.u32(uint32_t(i.windows.size()));
    for (const WindowCW& c : i.windows) {
        w.f64(c.center);
        w.f64(c.width);
        w.u32(uint32_t(c.function));
    }
    w.u32(i.voi_lut.has_value());
    if (i.voi_lut) {
        w.i32(i.voi_lut->first_mapped);
        w.i32(i.voi_lut->bits);
        w.u32(uint32_t(i.voi_lut->data.size()));
        for (uint16_t x : i.voi_lut->data) w.u32(x);
    }
    w.u32(i.pixel_spacing.has_value());
    if (i.pixel_spacing)
        for (double x : *i.pixel_spacing) w.f64(x);
    w.u32(i.slice_thickness.has_value());
    if (i.slice_thickness) w.f64(*i.slice_thickness);
    w.u32(i.orientation.has_value());
    if (i.orientation)
        for (double x : *i.orientation) w.f64(x);
    w.u32(uint32_t(i.positions.size()));
    for (const auto& p : i.positions)
        for (double x : p) w.f64(x);
    w.u32(i.instance_number.has_value());
    if (i.instance_number) w.i32(*i.instance_number);
    w.u32(uint32_t(d.pixels.type));
    w.u64(d.pixels.count);
}

DicomImage decode_dicom_info(std::span<const uint8_t> body, const Limits& limits, bool pixels) {
    MessageReader r(body);
    DicomImage d;
    DicomInfo& i = d.info;
    for (std::string* s : {&i.transfer_syntax, &i.transfer_syntax_name, &i.sop_class_uid, &i.modality, &i.body_part,
                           &i.series_uid, &i.study_uid, &i.series_description, &i.photometric, &i.rescale_type})
        *s = r.str();
    for (int* v : {&i.rows, &i.columns, &i.frames, &i.samples_per_pixel, &i.bits_allocated, &i.bits_stored, &i.high_bit,
                   &i.pixel_representation, &i.planar_configuration})
        *v = r.i32();
    i.float_pixels = flag(r);
    i.lossy = flag(r);
    // Image attributes: the checks the decoder made, made again.
    if (i.rows < 1 || i.columns < 1 || i.rows > limits.max_side || i.columns > limits.max_side ||
        int64_t(i.rows) * i.columns > limits.max_pixels)
        invalid_child_message("image of %d x %d", i.columns, i.rows);
    if (i.frames < 1 || int64_t(i.rows) * i.columns * i.frames > limits.max_voxels)
        invalid_child_message("%d frames of %d x %d", i.frames, i.columns, i.rows);
    int bal = i.bits_allocated;
    if (i.samples_per_pixel != 1 && i.samples_per_pixel != 3) invalid_child_message("%d samples per pixel", i.samples_per_pixel);
    if (i.float_pixels ? bal != 32 && bal != 64 : bal != 1 && bal != 8 && bal != 16 && bal != 32)
        invalid_child_message("%d bits allocated", bal);
    if (i.bits_stored < 1 || i.bits_stored > bal || i.high_bit < i.bits_stored - 1 || i.high_bit >= bal)
        invalid_child_message("bits stored %d, high bit %d", i.bits_stored, i.high_bit);
    if (i.pixel_representation != 0 && i.pixel_representation != 1)
        invalid_child_message("pixel representation %d", i.pixel_representation);
    // Per-frame values: one, or one per frame.
    std::vector<double>* rescale[2] = {&i.rescale_slope, &i.rescale_intercept};
    for (auto* v : rescale) {
        v->resize(r.count(8));
        for (double& x : *v) x = finite(r);
    }
    if (i.rescale_slope.size() != i.rescale_intercept.size() ||
        (i.rescale_slope.size() != 1 && i.rescale_slope.size() != size_t(i.frames)))
        invalid_child_message("%zu rescale slopes and %zu intercepts for %d frames", i.rescale_slope.size(),
                              i.rescale_intercept.size(), i.frames);
    i.windows.resize(r.count(20));
    for (WindowCW& c : i.windows) {
        c.center = finite(r);
        c.width = finite(r);
        uint32_t f = r.u32();
        if (c.width <= 0 || f > uint32_t(VoiFunction::Sigmoid)) invalid_child_message("window of width %g, function %u", c.width, f);
        c.function = VoiFunction(f);
    }
    if (flag(r)) {
        VoiLut& lut = i.voi_lut.emplace();
        lut.first_mapped = r.i32();
        lut.bits = r.i32();
        lut.data.resize(r.count(4));
        for (uint16_t& x : lut.data) {
            uint32_t v = r.u32();
            if (v > 0xFFFF) invalid_child_message("VOI LUT entry %u", v);
            x = uint16_t(v);
        }
        if (lut.bits < 1 || lut.bits > 16 || lut.data.empty() || lut.data.size() > 65536)
            invalid_child_message("VOI LUT of %zu entries of %d bits", lut.data.size(), lut.bits);
    }
    if (flag(r)) i.pixel_spacing = std::array<double, 2>{finite(r), finite(r)};
    if (flag(r)) i.slice_thickness = finite(r);
    if (flag(r)) {
        std::array<double, 6> o;
        for (double& x : o) x = finite(r);
        i.orientation = o;
    }
    i.positions.resize(r.count(24));
    for (auto& p : i.positions)
        for (double& x : p) x = finite(r);
    if (i.positions.size() > 1 && i.positions.size() != size_t(i.frames))
        invalid_child_message("%zu positions for %d frames", i.positions.size(), i.frames);
    if (flag(r)) i.instance_number = r.i32();
    // Pixels: the type these attributes give, one sample per row x column x frame x sample.
    uint32_t type = r.u32();
    uint64_t count = r.u64();
    r.end();
    uint64_t want = pixels ? uint64_t(i.rows) * i.columns * i.frames * i.samples_per_pixel : 0;
    if (count != want || (pixels && type != uint32_t(sample_type_for(i))))
        invalid_child_message("%llu samples of type %u where %llu of %s were expected", (unsigned long long)count, type,
                              (unsigned long long)want, sample_type_name(sample_type_for(i)));
    d.pixels.type = sample_type_for(i);
    d.pixels.count = size_t(count);
    d.pixels.bytes.resize(size_t(count) * sample_size(d.pixels.type));
    return d;
}

namespace {

void gdcm_quiet() {  // GDCM reports through its own stderr trace; our errors say it all
    static const bool quiet = [] {
        gdcm::Trace::DebugOff();
        gdcm::Trace::WarningOff();
        gdcm::Trace::ErrorOff();
        return true;
    }();
    (void)quiet;
}

// In-process: what the fuzz target and tests of the decoding logic use.
DicomImage decode_here(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits, bool pixels) {
    try {
        return decode_with_gdcm(bytes, name, limits, pixels, [](uint64_t) {});
    } catch (const Error&) {
        throw;
    } catch (const std::bad_alloc&) {
        fail("%s: out of memory while reading the DICOM file", name.c_str());
    } catch (const std::exception& e) {
        fail("%s: malformed DICOM file (%s)", name.c_str(), e.what());
    }
}

// In a child process (isolated_decode.h). Its limits, from the size of what GDCM parses (the
// file, or the inflated data set): address space max(512 MiB, 8 x that) while parsing, raised by
// 6 x the largest pixel buffer once the image attributes are checked, never above 16 GiB; CPU
// time 10 s + 1 s per MiB (at most 600 s); wall time twice the CPU time + 10 s.
DicomImage decode_in_child(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits, bool pixels,
                           int64_t parsed_bytes) {
    ChildLimits lim;
    uint64_t parse_budget = std::min(std::max(512 * kMiB, 8 * uint64_t(parsed_bytes)), kDecoderMemoryCap);
    lim.memory_bytes = parse_budget;
    lim.memory_bytes_max = kDecoderMemoryCap;
    lim.cpu_seconds = int(std::min<uint64_t>(10 + uint64_t(parsed_bytes) / kMiB, 600));
    lim.wall_seconds = 2 * lim.cpu_seconds + 10;
    DicomImage result;
    run_isolated(
        "DICOM decoder", name, lim,
        [&](ChildOutput& out) {  // the child
            DicomImage d;
            try {
                d = decode_with_gdcm(bytes, name, limits, pixels,
                                     [&](uint64_t pixel_bytes) { out.raise_memory_limit(parse_budget + 6 * pixel_bytes); });
            } catch (const Error&) {
                throw;
            } catch (const std::bad_alloc&) {
                throw;
            } catch (const std::exception& e) {
                fail("%s: malformed DICOM file (%s)", name.c_str(), e.what());
            }
            MessageWriter w;
            encode_dicom_info(d, w);
            out.send(kInfoFrame, {w.bytes()});
            out.send(kPixelsFrame, {d.pixels.bytes});
        },
        [&](ChildInput& in) {  // the parent
            result = decode_dicom_info(in.receive(kInfoFrame, kMaxInfoBytes), limits, pixels);
            in.receive_into(kPixelsFrame, result.pixels.bytes);
        });
    result.info.path = name;
    return result;
}

}  // namespace

static DicomImage decode(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits, bool pixels,
                         DecodeIsolation isolation) {
    if (int64_t(bytes.size()) > limits.max_file_bytes)
        fail("%s: file is %zu bytes, over the limit of %lld", name.c_str(), bytes.size(), (long long)limits.max_file_bytes);
    if (bytes.size() < 8) fail("%s: too short to be a DICOM file (%zu bytes)", name.c_str(), bytes.size());
    // 0. Our bounds check of the element structure, here in the caller's process, so that GDCM never
    //    allocates past the file (dicom_scan.h). Then GDCM's parse and decode, in a child by default.
    int64_t parsed_bytes = scan_dicom_structure(bytes, name, limits.max_file_bytes);
    gdcm_quiet();  // before the fork: the child inherits it
    if (isolation == DecodeIsolation::InProcess) return decode_here(bytes, name, limits, pixels);
    return decode_in_child(bytes, name, limits, pixels, parsed_bytes);
}

DicomImage decode_dicom(std::span<const uint8_t> bytes, const std::string& name, const Limits& limits, DecodeIsolation isolation) {
    return decode(bytes, name, limits, true, isolation);
}

DicomImage read_dicom(const std::filesystem::path& path, const Limits& limits, DecodeIsolation isolation) {
    auto bytes = read_file_bytes(path, limits.max_file_bytes);
    return decode(bytes, path.string(), limits, true, isolation);
}

DicomInfo read_dicom_info(const std::filesystem::path& path, const Limits& limits, DecodeIsolation isolation) {
    auto bytes = read_file_bytes(path, limits.max_file_bytes);
    return decode(bytes, path.string(), limits, false, isolation).info;
}

std::vector<float> DicomImage::modality_frame(int frame) const {
    HG_CHECK(frame >= 0 && frame < info.frames, "%s: frame %d out of range (0..%d)", info.path.c_str(), frame, info.frames - 1);
    HG_CHECK(info.samples_per_pixel == 1, "%s: colour image has no modality values", info.path.c_str());
    size_t plane = size_t(info.rows) * info.columns;
    size_t k = info.rescale_slope.size() == 1 ? 0 : size_t(frame);
    double slope = info.rescale_slope[k], intercept = info.rescale_intercept[k];
    std::vector<float> out(plane);
    for (size_t i = 0; i < plane; i++) out[i] = float(pixels.at(size_t(frame) * plane + i) * slope + intercept);
    return out;
}

RgbImage DicomImage::color_frame(int frame) const {
    HG_CHECK(frame >= 0 && frame < info.frames, "%s: frame %d out of range (0..%d)", info.path.c_str(), frame, info.frames - 1);
    HG_CHECK(info.samples_per_pixel == 3, "%s: not a colour image", info.path.c_str());
    RgbImage out(info.columns, info.rows);
    size_t n = size_t(info.rows) * info.columns * 3;
    int bits = info.bits_stored > 0 ? info.bits_stored : info.bits_allocated;
    double maxv = bits >= 32 ? 4294967295.0 : double((uint64_t(1) << bits) - 1);
    for (size_t i = 0; i < n; i++) {
        double v = pixels.at(size_t(frame) * n + i);
        out.rgb[i] = bits <= 8 ? uint8_t(v) : uint8_t(std::floor(std::clamp(v, 0.0, maxv) / maxv * 255 + 0.5));
    }
    return out;
}

DisplayHints DicomImage::hints() const {
    DisplayHints h;
    h.windows = info.windows;
    h.voi_lut = info.voi_lut;
    h.invert = info.monochrome1();
    return h;
}

}  // namespace hg::imaging
