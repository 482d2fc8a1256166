// NIfTI against nibabel: scaling and closest-canonical orientation, slice by slice along each axis
// (first, middle, last), on the shared volumes and nibabel's own test files (NIfTI-1/2, 4-D,
// big-endian, oblique); malformed headers end in clear errors.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "image_fixtures.h"
#include "imaging/nifti.h"

using namespace hg::imaging;

TEST(Nifti, SlicesMatchNibabel) {
    IMG_SKIP_WITHOUT_FIXTURES();
    int files = 0, slices = 0, equal = 0;
    for (const auto& [key, e] : imgtest::expected()["nifti"].items()) {
        auto path = imgtest::resolve(key);
        if (path.empty()) continue;
        SCOPED_TRACE(key);
        NiftiInfo info;
        Volume v = read_nifti(path, 0, default_limits(), &info);
        files++;
        for (const auto& [what, s] : e["slices"].items()) {
            Axis axis = parse_axis(what.substr(0, what.find(':')));
            int n = std::stoi(what.substr(what.find(':') + 1));
            Slice sl = extract_slice(v, axis, n);
            SCOPED_TRACE(what);
            ASSERT_EQ(sl.height, s["shape"][0].get<int>());
            ASSERT_EQ(sl.width, s["shape"][1].get<int>());
            slices++;
            bool same = imgtest::crc_f32(sl.values) == s["crc32"].get<uint32_t>();
            EXPECT_TRUE(same) << "slice differs from nibabel's as_closest_canonical";
            for (const auto& p : s["samples"]) EXPECT_EQ(sl.values[p[0].get<size_t>()], p[1].get<float>());
            equal += same;
        }
    }
    std::printf("NIfTI vs nibabel: %d files, %d of %d slices identical\n", files, equal, slices);
    if (files == 0) GTEST_SKIP() << "no NIfTI data present";
}

TEST(Nifti, MalformedHeadersGiveClearErrors) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/nifti");
    auto gz = hgtest::read_file(hgtest::shared_data() / "medical/nifti/FLAIR.nii.gz");
    auto raw = gunzip(gz, "FLAIR", int64_t(1) << 30);
    auto expect_error = [](std::vector<uint8_t> bytes, const char* what, const char* needle) {
        try {
            decode_nifti(bytes, what);
            ADD_FAILURE() << what << ": decoded";
        } catch (const hg::Error& e) {
            std::string m = e.what();
            EXPECT_NE(m.find(what), std::string::npos) << m;
            EXPECT_NE(m.find(needle), std::string::npos) << what << ": " << m;
        }
    };
    auto set16 = [](std::vector<uint8_t> b, size_t off, int16_t v) { std::memcpy(&b[off], &v, 2); return b; };
    auto setf = [](std::vector<uint8_t> b, size_t off, float v) { std::memcpy(&b[off], &v, 4); return b; };
    expect_error(std::vector<uint8_t>(raw.begin(), raw.begin() + 200), "short", "too short");
    expect_error(std::vector<uint8_t>(raw.begin(), raw.begin() + raw.size() / 2), "half", "runs past the end");
    expect_error(std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2), "halfgz", "gzip");
    expect_error(set16(raw, 40, 9), "dim0", "dim[0]");
    expect_error(set16(raw, 42, -5), "negdim", "dim[1]");
    expect_error(set16(raw, 42, 32767), "bigdim", "runs past the end");
    expect_error(set16(raw, 70, 32), "complex", "not supported");
    expect_error(setf(raw, 108, -1.0f), "voxoffset", "vox_offset");
    std::vector<uint8_t> magic = raw;
    std::memcpy(&magic[344], "ni1", 4);
    expect_error(magic, "pair", "not supported");
    std::vector<uint8_t> junk(400, 7);
    expect_error(junk, "junk", "not a NIfTI");
    // Every cut of the compressed file: an error or a decode, never a crash.
    for (int cut = 1; cut < 20; cut++) {
        std::vector<uint8_t> part(gz.begin(), gz.begin() + gz.size() * cut / 20);
        EXPECT_THROW(decode_nifti(part, "cut"), hg::Error);
    }
    Limits small;
    small.max_voxels = 1000;
    EXPECT_THROW(decode_nifti(raw, "limit", 0, small), hg::Error);
}

TEST(Nifti, FourDimensionalVolumeIndex) {
    auto path = imgtest::resolve("nibabel/example4d.nii.gz");
    if (path.empty()) GTEST_SKIP() << "nibabel test files not fetched (scripts/fetch-test-data.sh)";
    NiftiInfo info;
    Volume v0 = read_nifti(path, 0, default_limits(), &info);
    ASSERT_EQ(info.dim[0], 4);
    Volume v1 = read_nifti(path, 1);
    EXPECT_EQ(v0.data.size(), v1.data.size());
    EXPECT_NE(v0.data, v1.data);
    EXPECT_THROW(read_nifti(path, int(info.dim[4])), hg::Error);
}
