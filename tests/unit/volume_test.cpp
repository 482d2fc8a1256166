// Volumes: a real DICOM series folder sorted along the slice normal (against pydicom), HealthGPT-Pro
// slice sampling (against numpy.linspace), raw int16 volumes, reorientation on synthetic affines.
#include <gtest/gtest.h>

#include <algorithm>

#include "../parsers/image_fixtures.h"
#include "core/error.h"
#include "imaging/load.h"
#include "imaging/volume.h"

using namespace hg::imaging;

TEST(Volume, SeriesFolderSortedAlongNormal) {
    IMG_SKIP_WITHOUT_FIXTURES();
    const auto& all = imgtest::expected()["series"];
    if (all.empty()) GTEST_SKIP() << "pydicom test files were not fetched";
    for (const auto& [key, e] : all.items()) {
        auto folder = imgtest::resolve(key);
        if (folder.empty()) GTEST_SKIP() << "pydicom test files not fetched (scripts/fetch-test-data.sh)";
        Volume v = read_dicom_series(folder);
        ASSERT_EQ(v.nz, e["shape"][0].get<int>());
        ASSERT_EQ(v.ny, e["shape"][1].get<int>());
        ASSERT_EQ(v.nx, e["shape"][2].get<int>());
        EXPECT_EQ(imgtest::crc_f32(v.data), e["crc32"].get<uint32_t>()) << "slice order or HU differ from pydicom";
        for (const auto& s : e["samples"]) EXPECT_EQ(v.data[s[0].get<size_t>()], s[1].get<float>());
        // The same files under names that sort the other way round: the order comes from the positions.
        auto shuffled = hgtest::scratch_dir() / "ct2_renamed";
        std::filesystem::create_directories(shuffled);
        std::vector<std::filesystem::path> files;
        for (const auto& f : std::filesystem::directory_iterator(folder)) files.push_back(f.path());
        std::sort(files.begin(), files.end());
        for (size_t i = 0; i < files.size(); i++)
            std::filesystem::copy_file(files[i], shuffled / ("slice_" + std::to_string(files.size() - i)),
                                       std::filesystem::copy_options::overwrite_existing);
        Volume w = read_dicom_series(shuffled);
        EXPECT_EQ(imgtest::crc_f32(w.data), e["crc32"].get<uint32_t>()) << "renamed files sorted differently";
        // The folder through load_medical: three evenly spaced slices.
        ImageOptions o;
        o.n_slices = 3;
        o.window = parse_window("abdomen");
        EXPECT_EQ(load_medical_image(folder, o).size(), 3u);
    }
}

TEST(Volume, SliceSamplingIsNumpyLinspace) {
    IMG_SKIP_WITHOUT_FIXTURES();
    int n = 0;
    for (const auto& [key, e] : imgtest::expected()["linspace"].items()) {
        int d = std::stoi(key.substr(0, key.find(','))), k = std::stoi(key.substr(key.find(',') + 1));
        EXPECT_EQ(sample_slice_indices(d, k), e.get<std::vector<int>>()) << key;
        n++;
    }
    EXPECT_EQ(n, 48);
}

TEST(Volume, RawInt16) {
    IMG_SKIP_WITHOUT_FIXTURES();
    const auto& raw = imgtest::expected()["raw"];
    if (raw.empty()) GTEST_SKIP() << "InVesalius example not fetched";
    std::filesystem::path m = imgtest::testdata() / "cranium/matrix.dat";
    if (!std::filesystem::exists(m)) GTEST_SKIP() << "InVesalius example not fetched (scripts/fetch-test-data.sh)";
    const auto& e = raw["cranium"];
    Volume v = read_raw_volume(m, parse_raw_spec(e["spec"]));
    for (const auto& [n, s] : e["slices"].items()) {
        Slice sl = stored_slice(v, std::stoi(n));
        EXPECT_EQ(imgtest::crc_f32(sl.values), s["crc32"].get<uint32_t>()) << n;
    }
    EXPECT_THROW(read_raw_volume(m, parse_raw_spec("256x256x100:int16")), hg::Error);  // size mismatch
    EXPECT_THROW(parse_raw_spec("256x256"), hg::Error);
    EXPECT_THROW(parse_raw_spec("2x2x2:int17"), hg::Error);
    ImageOptions o;
    o.raw = parse_raw_spec(e["spec"]);
    o.window = parse_window("bone");
    o.axis = Axis::Coronal;
    auto imgs = load_medical_image(m, o);
    ASSERT_EQ(imgs.size(), 1u);
    EXPECT_EQ(imgs[0].width, 256);
    EXPECT_EQ(imgs[0].height, int(std::lround(108 * 1.0)));  // unit spacing: no stretch
}

// A 2×3×4 volume with value 100i + 10j + k, under permuted/flipped affines.
TEST(Volume, ReorientationFollowsTheAffine) {
    Volume v;
    v.nx = 2, v.ny = 3, v.nz = 4;
    v.source = "synthetic";
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++) v.data.push_back(float(100 * i + 10 * j + k));
    // RAS identity: axial slice k; rows run A→P (j from high), columns R→L (i from high).
    v.affine = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    Slice s = extract_slice(v, Axis::Axial, 2);
    ASSERT_EQ(s.width, 2);
    ASSERT_EQ(s.height, 3);
    EXPECT_EQ(s.values[0], 100 * 1 + 10 * 2 + 2);  // top-left: i = 1 (right), j = 2 (anterior)
    EXPECT_EQ(s.values[5], 0 + 0 + 2);
    // Voxel i runs along S, j along R, k along A (a permuted acquisition).
    v.affine = {0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1};
    EXPECT_EQ(axis_length(v, Axis::Axial), 2);
    EXPECT_EQ(axis_length(v, Axis::Sagittal), 3);
    EXPECT_EQ(axis_length(v, Axis::Coronal), 4);
    Slice ax = extract_slice(v, Axis::Axial, 1);  // S = i = 1
    ASSERT_EQ(ax.height, 4);                      // rows along A = k
    ASSERT_EQ(ax.width, 3);                       // columns along R = j
    EXPECT_EQ(ax.values[0], 100 + 10 * 2 + 3);    // R high (j = 2), A high (k = 3)
    // DICOM LPS identity (default_affine): axial slices show as stored.
    v.affine = default_affine(1, 1, 1);
    Slice d = extract_slice(v, Axis::Axial, 3), st = stored_slice(v, 3);
    EXPECT_EQ(d.values, st.values);
    EXPECT_THROW(extract_slice(v, Axis::Axial, 4), hg::Error);
}

TEST(Volume, SquarePixelsStretchThickSlices) {
    Slice s;
    s.width = 4, s.height = 2, s.row_spacing = 5, s.col_spacing = 1;
    s.values = {0, 1, 2, 3, 10, 11, 12, 13};
    Slice q = square_pixels(s, 1 << 20);
    EXPECT_EQ(q.width, 4);
    EXPECT_EQ(q.height, 10);
    EXPECT_EQ(q.values[0], 0);
    EXPECT_EQ(q.values[9 * 4 + 3], 13);
}
