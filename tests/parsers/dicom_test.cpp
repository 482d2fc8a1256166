// DICOM decoding against pydicom 3 + pylibjpeg (an independent decoder stack), on every DICOM file
// in the shared data and in Debian's python3-pydicom test files; lossless files against their
// uncompressed twins; broken files end in clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>

#include "core/error.h"
#include "image_fixtures.h"
#include "imaging/dicom.h"

using namespace hg::imaging;
using nlohmann::json;

#if defined(__SANITIZE_ADDRESS__)
static constexpr bool kSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
static constexpr bool kSanitizer = true;
#else
static constexpr bool kSanitizer = false;
#endif
#else
static constexpr bool kSanitizer = false;
#endif

namespace {

std::vector<double> all_values(const DicomImage& d) {
    std::vector<double> v(d.pixels.count);
    for (size_t i = 0; i < v.size(); i++) v[i] = d.pixels.at(i);
    return v;
}

std::vector<float> all_hu(const DicomImage& d) {
    std::vector<float> out;
    for (int f = 0; f < d.info.frames; f++) {
        auto plane = d.modality_frame(f);
        out.insert(out.end(), plane.begin(), plane.end());
    }
    return out;
}

// Decoders of lossy JPEG may differ: ISO 10918-2 lets IDCTs differ by one step, and a YCbCr
// colour conversion done by different arithmetic (libjpeg's tables vs pydicom's float matrix)
// adds one more. These are the bounds we enforce against pydicom.
double lossy_bound(const std::string& photometric) { return photometric.rfind("YBR", 0) == 0 ? 2.0 : 1.0; }

}  // namespace

TEST(Dicom, MatchesPydicomOnEveryFile) {
    IMG_SKIP_WITHOUT_FIXTURES();
    int decoded = 0, exact = 0, lossy = 0, hu_equal = 0, hu_checked = 0, missing = 0, clear_errors = 0;
    int decoded_where_pydicom_fails = 0, sanitizer_oom = 0;
    double worst_lossy = 0;
    for (const auto& [key, e] : imgtest::expected()["dicom"].items()) {
        auto path = imgtest::resolve(key);
        if (path.empty()) {
            missing++;
            continue;
        }
        SCOPED_TRACE(key);
        std::string status = e["pydicom"];
        if (status != "ok") {
            // pydicom found no image (or could not decode one): we must either decode it or say why.
            try {
                DicomImage d = read_dicom(path);
                decoded_where_pydicom_fails++;
                EXPECT_NE(status, "no pixel data") << "decoded a file without pixel data";
                std::printf("  note: %s: pydicom: %s; we decode %d x %d x %d (%s)\n", key.c_str(), status.c_str(),
                            d.info.columns, d.info.rows, d.info.frames, d.info.transfer_syntax_name.c_str());
            } catch (const hg::Error& err) {
                clear_errors++;
                std::string msg = err.what();
                EXPECT_NE(msg.find(path.string()), std::string::npos) << "error does not name the file: " << msg;
                if (status == "no pixel data") {
                    EXPECT_TRUE(msg.find("no pixel data") != std::string::npos || msg.find("truncated") != std::string::npos) << msg;
                }
            }
            continue;
        }
        DicomImage d;
        try {
            d = read_dicom(path);
        } catch (const hg::Error& err) {
            // GDCM decodes a few files only after recovering from a failed huge allocation (e.g.
            // SC_rgb_jpeg.dcm: a 1.3 GB length read from "TECO" text). Under AddressSanitizer that
            // recovery cannot happen (ASan's operator new aborts rather than throw), so there, and
            // only there, such a file ends in the child's out-of-memory error.
            std::string msg = err.what();
            if (kSanitizer && msg.find(": out of memory (") != std::string::npos) {
                sanitizer_oom++;
                std::printf("  note: %s: out of memory under the sanitizer: %s\n", key.c_str(), msg.c_str());
                continue;
            }
            throw;
        }
        decoded++;
        const auto& shape = e["shape"];
        ASSERT_EQ(d.info.frames, shape[0].get<int>());
        ASSERT_EQ(d.info.rows, shape[1].get<int>());
        ASSERT_EQ(d.info.columns, shape[2].get<int>());
        ASSERT_EQ(d.info.samples_per_pixel, shape[3].get<int>());
        EXPECT_EQ(d.info.modality, e["modality"].get<std::string>());
        EXPECT_EQ(d.info.series_uid, e["series_uid"].get<std::string>());
        if (e.contains("pixel_spacing")) {
            ASSERT_TRUE(d.info.pixel_spacing.has_value());
            EXPECT_DOUBLE_EQ((*d.info.pixel_spacing)[0], e["pixel_spacing"][0].get<double>());
            EXPECT_DOUBLE_EQ((*d.info.pixel_spacing)[1], e["pixel_spacing"][1].get<double>());
        }
        if (e.contains("position")) {
            ASSERT_FALSE(d.info.positions.empty());
            for (int i = 0; i < 3; i++) EXPECT_DOUBLE_EQ(d.info.positions[0][i], e["position"][i].get<double>());
        }
        if (e.contains("window")) {
            ASSERT_FALSE(d.info.windows.empty());
            EXPECT_DOUBLE_EQ(d.info.windows[0].center, e["window"][0].get<double>());
            EXPECT_DOUBLE_EQ(d.info.windows[0].width, e["window"][1].get<double>());
        }
        auto values = all_values(d);
        bool same = imgtest::crc_f64(values) == e["crc64"].get<uint32_t>();
        if (e.contains("full")) {
            // Lossy JPEG: compare every value with pydicom's decode.
            lossy++;
            auto bytes = imgtest::fixture_gz(e["full"]["file"]);
            bool u8 = e["full"]["dtype"] == "uint8";
            ASSERT_EQ(bytes.size(), values.size() * (u8 ? 1 : 4));
            double max_err = 0;
            for (size_t i = 0; i < values.size(); i++) {
                float r;
                if (u8) r = bytes[i];
                else std::memcpy(&r, &bytes[i * 4], 4);
                max_err = std::max(max_err, std::fabs(values[i] - double(r)));
            }
            worst_lossy = std::max(worst_lossy, max_err);
            EXPECT_LE(max_err, lossy_bound(e["photometric"])) << "lossy decode differs from pydicom by " << max_err;
            if (same) exact++;
        } else {
            EXPECT_TRUE(same) << "pixel values differ from pydicom (" << e["stats"].dump() << ")";
            for (const auto& s : e["samples"]) EXPECT_EQ(values[s[0].get<size_t>()], s[1].get<double>());
            if (same) exact++;
        }
        if (e.contains("hu_crc32")) {
            hu_checked++;
            auto hu = all_hu(d);
            bool hu_same = imgtest::crc_f32(hu) == e["hu_crc32"].get<uint32_t>();
            if (!e.contains("full")) {
                EXPECT_TRUE(hu_same) << "modality LUT values differ from pydicom's apply_modality_lut";
                for (const auto& s : e["hu_samples"]) EXPECT_EQ(hu[s[0].get<size_t>()], s[1].get<float>());
            }
            if (hu_same) hu_equal++;
        }
    }
    std::printf("DICOM vs pydicom: %d decoded (%d bit-exact, %d lossy JPEG within bound, worst error %g); "
                "modality LUT equal on %d of %d; %d pydicom failures decoded by us, %d clear errors; %d files not present\n",
                decoded, exact, lossy, worst_lossy, hu_equal, hu_checked, decoded_where_pydicom_fails, clear_errors, missing);
    EXPECT_LE(sanitizer_oom, 1) << "more files than SC_rgb_jpeg.dcm need GDCM's allocation-failure recovery";
    if (decoded == 0) GTEST_SKIP() << "no DICOM data present";
}

TEST(Dicom, LosslessEqualsUncompressedTwin) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    const std::pair<const char*, const char*> twins[] = {
        {"MR2_J2KR.dcm", "MR2_UNCR.dcm"},
        {"693_J2KR.dcm", "693_UNCR.dcm"},
        {"US1_J2KR.dcm", "US1_UNCR.dcm"},
        {"emri_small_RLE.dcm", "emri_small.dcm"},
        {"emri_small_big_endian.dcm", "emri_small.dcm"},
        {"emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"},
        {"emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"},
        {"liver_rle.dcm", "liver.dcm"},  // 1-bit RLE: pydicom cannot decode it; its twin is the oracle
        {"CT1_UNC.fragmented_bot_jpeg_ls.dcm", "CT1_UNC.explicit_little_endian.dcm"},
        {"CT1_UNC.implicit_little_endian.dcm", "CT1_UNC.explicit_little_endian.dcm"},
    };
    auto dir = hgtest::shared_data() / "medical/dicom";
    int equal = 0;
    for (auto [a, b] : twins) {
        SCOPED_TRACE(a);
        DicomImage x = read_dicom(dir / a), y = read_dicom(dir / b);
        ASSERT_EQ(x.pixels.count, y.pixels.count);
        size_t diff = 0;
        for (size_t i = 0; i < x.pixels.count; i++) diff += x.pixels.at(i) != y.pixels.at(i);
        EXPECT_EQ(diff, 0u) << "values differ from the uncompressed twin " << b;
        equal += diff == 0;
    }
    // Lossy JPEG 2000 against the original: the compression error, reported.
    DicomImage l = read_dicom(dir / "MR2_J2KI.dcm"), u = read_dicom(dir / "MR2_UNCR.dcm");
    double max_err = 0, sq = 0;
    for (size_t i = 0; i < l.pixels.count; i++) {
        double d = l.pixels.at(i) - u.pixels.at(i);
        max_err = std::max(max_err, std::fabs(d));
        sq += d * d;
    }
    std::printf("lossless twins equal: %d of %zu; MR2_J2KI (lossy) vs MR2_UNCR: max |err| %g, RMS %.3f (of 0..4095)\n", equal,
                std::size(twins), max_err, std::sqrt(sq / double(l.pixels.count)));
    EXPECT_GT(max_err, 0);  // it is lossy
}

TEST(Dicom, PaletteColourMatchesPydicom) {
    IMG_SKIP_WITHOUT_FIXTURES();
    DicomImage d = read_dicom(hgtest::fixture("imaging/palette16.dcm"));
    const auto& e = imgtest::expected()["palette"]["palette16.dcm"];
    ASSERT_EQ(d.info.samples_per_pixel, 3);
    EXPECT_EQ(d.pixels.type, SampleType::U16);
    auto v = all_values(d);
    EXPECT_EQ(imgtest::crc_f64(v), e["crc64"].get<uint32_t>());
    for (const auto& s : e["samples"]) EXPECT_EQ(v[s[0].get<size_t>()], s[1].get<double>());
}

TEST(Dicom, TruncatedAndCorruptFilesGiveClearErrors) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    // Every file cut at many lengths, and with bytes overwritten: decoded or an hg::Error, never a crash.
    const char* names[] = {"CT1_UNC.explicit_little_endian.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm",
                           "US1_J2KR.dcm", "CR_chest_rsna_jpeg_baseline.dcm", "eCT_Supplemental.dcm", "liver.dcm",
                           "MR_JPEGLossless_p14_1024.dcm", "emri_small_big_endian.dcm"};
    int errors = 0, decoded = 0;
    for (const char* n : names) {
        auto bytes = hgtest::read_file(hgtest::shared_data() / "medical/dicom" / n);
        for (int cut = 1; cut <= 12; cut++) {
            size_t len = bytes.size() * cut / 13;
            try {
                decode_dicom(std::span(bytes.data(), len), n);
                ADD_FAILURE() << n << " cut to " << len << " bytes decoded without an error";
            } catch (const hg::Error& e) {
                errors++;
                EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
            }
        }
        std::vector<uint8_t> bad = bytes;
        for (size_t i = bytes.size() / 2; i < bytes.size(); i += 97) bad[i] ^= 0x5A;  // corrupt the pixel data
        try {
            decode_dicom(bad, n);
            decoded++;
        } catch (const hg::Error&) {
            errors++;
        }
    }
    std::printf("truncated DICOM: %d cuts, all clear errors; pixel data corrupted: %d decoded, %d errors\n",
                int(std::size(names)) * 12, decoded, errors - int(std::size(names)) * 12);
    EXPECT_GT(errors, 0);
}

TEST(Dicom, LimitsAreEnforced) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    Limits small;
    small.max_pixels = 1000;
    try {
        read_dicom(hgtest::shared_data() / "medical/dicom/CT1_UNC.explicit_little_endian.dcm", small);
        FAIL() << "expected a size-limit error";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("over the limit"), std::string::npos) << e.what();
    }
    EXPECT_THROW(decode_dicom(std::vector<uint8_t>{1, 2, 3}, "tiny.dcm"), hg::Error);
    std::vector<uint8_t> zeros(4096, 0);
    EXPECT_THROW(decode_dicom(zeros, "zeros.dcm"), hg::Error);
}

// Found by fuzz_dicom: a 38 KB file on which GDCM's fallback parse (after its normal parse fails)
// reads a 3 GB value length and allocates it. The decoder child's memory limit turns that into an
// error (dicom_isolation_test.cpp checks the message and the time).
TEST(Dicom, FuzzRegressionHugeAllocationInGdcmFallback) {
    try {
        read_dicom(hgtest::fixture("imaging/fuzz_gdcm_fallback_oom.dcm"));
        FAIL() << "decoded";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("fuzz_gdcm_fallback_oom.dcm"), std::string::npos) << e.what();
    }
}
