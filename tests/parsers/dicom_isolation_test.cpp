// GDCM in a child process (isolated_decode.h): a file that makes GDCM assert and the 38 KB file
// that makes it allocate 3 GB end in clear errors while this process goes on; every real file
// decodes to exactly what in-process decoding gives (every DicomInfo field and every pixel byte
// travels through the message); no zombies and no leaked fds after 200 decodes; decoding works
// with a ThreadPool alive and from two threads at once; and the runner itself turns each kind of
// child failure (crash, assert, allocation, CPU loop, hang, garbage message) into its error.
// After every test, the open fds are those before it and no child (zombie) is left.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "core/thread_pool.h"
#include "image_fixtures.h"
#include "imaging/dicom.h"
#include "imaging/dicom_message.h"
#include "imaging/isolated_decode.h"
#include "imaging/load.h"
#include "imaging/volume.h"
#include "test_util.h"

using namespace hg::imaging;

// glibc's assert() failure path (not declared under NDEBUG).
extern "C" [[noreturn]] void __assert_fail(const char* assertion, const char* file, unsigned int line,
                                           const char* function) noexcept;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitizer = true;
#else
constexpr bool kSanitizer = false;
#endif
#else
constexpr bool kSanitizer = false;
#endif

std::filesystem::path dicom_dir() { return hgtest::shared_data() / "medical/dicom"; }

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const hg::Error& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

int open_fd_count() {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) (void)e, n++;
    return n;
}

// True when this process has no child at all (so no zombie either).
bool no_children() {
    siginfo_t si{};
    return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == -1 && errno == ECHILD;
}

void expect_same(const DicomImage& a, const DicomImage& b) {
    const DicomInfo &x = a.info, &y = b.info;
    EXPECT_EQ(x.path, y.path);
    EXPECT_EQ(x.transfer_syntax, y.transfer_syntax);
    EXPECT_EQ(x.transfer_syntax_name, y.transfer_syntax_name);
    EXPECT_EQ(x.sop_class_uid, y.sop_class_uid);
    EXPECT_EQ(x.modality, y.modality);
    EXPECT_EQ(x.body_part, y.body_part);
    EXPECT_EQ(x.series_uid, y.series_uid);
    EXPECT_EQ(x.study_uid, y.study_uid);
    EXPECT_EQ(x.series_description, y.series_description);
    EXPECT_EQ(x.photometric, y.photometric);
    EXPECT_EQ(x.rescale_type, y.rescale_type);
    EXPECT_EQ(x.rows, y.rows);
    EXPECT_EQ(x.columns, y.columns);
    EXPECT_EQ(x.frames, y.frames);
    EXPECT_EQ(x.samples_per_pixel, y.samples_per_pixel);
    EXPECT_EQ(x.bits_allocated, y.bits_allocated);
    EXPECT_EQ(x.bits_stored, y.bits_stored);
    EXPECT_EQ(x.high_bit, y.high_bit);
    EXPECT_EQ(x.pixel_representation, y.pixel_representation);
    EXPECT_EQ(x.planar_configuration, y.planar_configuration);
    EXPECT_EQ(x.float_pixels, y.float_pixels);
    EXPECT_EQ(x.lossy, y.lossy);
    EXPECT_EQ(x.rescale_slope, y.rescale_slope);
    EXPECT_EQ(x.rescale_intercept, y.rescale_intercept);
    ASSERT_EQ(x.windows.size(), y.windows.size());
    for (size_t i = 0; i < x.windows.size(); i++) {
        EXPECT_EQ(x.windows[i].center, y.windows[i].center);
        EXPECT_EQ(x.windows[i].width, y.windows[i].width);
        EXPECT_EQ(x.windows[i].function, y.windows[i].function);
    }
    ASSERT_EQ(x.voi_lut.has_value(), y.voi_lut.has_value());
    if (x.voi_lut) {
        EXPECT_EQ(x.voi_lut->first_mapped, y.voi_lut->first_mapped);
        EXPECT_EQ(x.voi_lut->bits, y.voi_lut->bits);
        EXPECT_EQ(x.voi_lut->data, y.voi_lut->data);
    }
    EXPECT_EQ(x.pixel_spacing, y.pixel_spacing);
    EXPECT_EQ(x.slice_thickness, y.slice_thickness);
    EXPECT_EQ(x.orientation, y.orientation);
    EXPECT_EQ(x.positions, y.positions);
    EXPECT_EQ(x.instance_number, y.instance_number);
    EXPECT_EQ(a.pixels.type, b.pixels.type);
    EXPECT_EQ(a.pixels.count, b.pixels.count);
    EXPECT_TRUE(a.pixels.bytes == b.pixels.bytes) << "pixel bytes differ";
}

// CR_chest_rsna_jpeg_baseline.dcm with one byte of its JPEG stream changed: the first DQT marker
// FF DB becomes FF FF. Our checks pass (the data set is sound); GDCM's JPEG8Codec::DecodeByStreams
// then reaches its assert(0) (found by mutating files through the subprocess path; the pydicom
// test file SC_rgb_jpeg_dcmtk.dcm with the same change asserts at the same line).
std::vector<uint8_t> jpeg_assert_file() {
    auto b = hgtest::read_file(dicom_dir() / "CR_chest_rsna_jpeg_baseline.dcm");
    const uint8_t soi[] = {0xFF, 0xD8, 0xFF}, dqt[] = {0xFF, 0xDB};
    auto s = std::search(b.begin(), b.end(), std::begin(soi), std::end(soi));
    auto q = std::search(s, b.end(), std::begin(dqt), std::end(dqt));
    if (s == b.end() || q == b.end()) return {};
    q[1] = 0xFF;
    return b;
}

}  // namespace

// Every test: the same open fds after it as before it (/proc/self/fd), and no child left (so no
// zombie): whatever the child did, the runner closed its pipes and pidfd and reaped it.
class DicomIsolation : public ::testing::Test {
protected:
    void SetUp() override {
        fds_before_ = open_fd_count();
        ASSERT_TRUE(no_children());
    }
    void TearDown() override {
        EXPECT_EQ(open_fd_count(), fds_before_) << "leaked file descriptors";
        EXPECT_TRUE(no_children()) << "a child process is left (zombie?)";
    }
    int fds_before_ = 0;
};

TEST_F(DicomIsolation, GdcmAssertBecomesAnErrorAndTheProcessGoesOn) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    auto bytes = jpeg_assert_file();
    ASSERT_FALSE(bytes.empty()) << "JPEG DQT marker not found";
    std::string e = error_of([&] { decode_dicom(bytes, "cr_bad_dqt.dcm"); });
    std::printf("GDCM assert through the child: %s\n", e.c_str());
    EXPECT_TRUE(contains(e, "DICOM decoder failed on cr_bad_dqt.dcm: assertion failed: ")) << e;
    EXPECT_TRUE(contains(e, "gdcm::JPEG8Codec::DecodeByStreams")) << e;
    EXPECT_TRUE(contains(e, "Assertion `0' failed.")) << e;
    // The process goes on: the file unmodified still decodes.
    DicomImage ok = read_dicom(dicom_dir() / "CR_chest_rsna_jpeg_baseline.dcm");
    EXPECT_EQ(ok.info.rows, 1024);
    EXPECT_TRUE(no_children());
}

// The public entry points decode in the child by default: the file that makes GDCM assert ends in
// the child's "assertion failed" error (in this process, the assert would abort it) through
// read_dicom, a series folder (read_dicom_series) and load_medical (what `healthgpt view` calls),
// each time naming the file; read_dicom_info (GDCM's parse only) ends the 3 GB allocation of the
// fuzz file in the child's "out of memory".
TEST_F(DicomIsolation, EveryPublicEntryPointUsesTheChild) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    auto bytes = jpeg_assert_file();
    ASSERT_FALSE(bytes.empty()) << "JPEG DQT marker not found";
    auto dir = hgtest::scratch_dir() / "series_with_bad_file";
    std::filesystem::create_directories(dir);
    auto bad = dir / "2_bad_dqt.dcm";
    hgtest::write_file(bad, bytes);
    std::filesystem::copy_file(dicom_dir() / "CR_chest_rsna_jpeg_baseline.dcm", dir / "1_good.dcm",
                               std::filesystem::copy_options::overwrite_existing);
    const std::string want = "DICOM decoder failed on " + bad.string() + ": assertion failed: ";
    const std::pair<const char*, std::function<void()>> entries[] = {
        {"read_dicom", [&] { read_dicom(bad); }},
        {"read_dicom_series", [&] { read_dicom_series(dir); }},
        {"load_medical (file)", [&] { load_medical(bad); }},
        {"load_medical (folder)", [&] { load_medical(dir); }},
    };
    for (const auto& [what, call] : entries) {
        std::string e = error_of(call);
        EXPECT_TRUE(contains(e, want)) << what << ": " << e;
    }
    auto oom = hgtest::fixture("imaging/fuzz_gdcm_fallback_oom.dcm");
    std::string e = error_of([&] { read_dicom_info(oom); });
    EXPECT_TRUE(contains(e, "DICOM decoder failed on " + oom.string() + ": out of memory")) << "read_dicom_info: " << e;
}

TEST_F(DicomIsolation, HugeAllocationEndsInOutOfMemoryQuickly) {
    auto path = hgtest::fixture("imaging/fuzz_gdcm_fallback_oom.dcm");
    auto t0 = std::chrono::steady_clock::now();
    std::string e = error_of([&] { read_dicom(path); });
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("38 KB file declaring a 3 GB value: %.1f ms: %s\n", ms, e.c_str());
    // Under AddressSanitizer a failed allocation ends the child with ASan's own out-of-memory report
    // (its operator new aborts instead of throwing), which the parent reports as "out of memory (<ASan's line>)".
    std::string expected = "DICOM decoder failed on " + path.string() + ": out of memory (";
    if (!kSanitizer) expected += "an allocation failed under the limit of 512 MiB";
    EXPECT_TRUE(contains(e, expected)) << e;
    EXPECT_FALSE(contains(e, "took too long")) << e;
    EXPECT_TRUE(no_children());
}

TEST_F(DicomIsolation, EveryFileDecodesAsInProcess) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    int same = 0, errors = 0;
    std::vector<std::filesystem::path> files;
    for (const auto& f : std::filesystem::directory_iterator(dicom_dir())) files.push_back(f.path());
    files.push_back(hgtest::fixture("imaging/palette16.dcm"));
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
        SCOPED_TRACE(f.string());
        DicomImage child = read_dicom(f), here = read_dicom(f, default_limits(), DecodeIsolation::InProcess);
        expect_same(child, here);
        DicomInfo info = read_dicom_info(f), info_here = read_dicom_info(f, default_limits(), DecodeIsolation::InProcess);
        EXPECT_EQ(info.rows, info_here.rows);
        EXPECT_EQ(info.positions, info_here.positions);
        same++;
    }
    // Errors found by the decoder travel unchanged: truncated files give the same message either way.
    for (const char* n : {"CT1_UNC.explicit_little_endian.dcm", "US1_J2KR.dcm", "emri_small_RLE.dcm"}) {
        auto b = hgtest::read_file(dicom_dir() / n);
        for (size_t len : {b.size() / 2, b.size() - 1}) {
            std::span<const uint8_t> cut(b.data(), len);
            std::string a = error_of([&] { decode_dicom(cut, n); });
            std::string c = error_of([&] { decode_dicom(cut, n, default_limits(), DecodeIsolation::InProcess); });
            EXPECT_FALSE(a.empty());
            EXPECT_EQ(a, c);
            errors++;
        }
    }
    Limits small;
    small.max_pixels = 1000;
    auto ct = dicom_dir() / "CT1_UNC.explicit_little_endian.dcm";
    EXPECT_EQ(error_of([&] { read_dicom(ct, small); }),
              error_of([&] { read_dicom(ct, small, DecodeIsolation::InProcess); }));
    std::printf("subprocess vs in-process: %d files identical (every field, every pixel byte), %d error messages identical\n",
                same, errors);
}

// The same over every DICOM file of the imaging reference (pydicom's and dicom3tools' test files
// from build/testdata, the shared files): an image decodes identically in the child and
// in-process (what the decoder gave before the child existed), and an error of our own checks has
// the same text. A failure only the child can report (GDCM assert, crash, allocation) is counted
// and not tried in-process, where it would end this process.
TEST_F(DicomIsolation, EveryReferenceFileDecodesAsInProcess) {
    IMG_SKIP_WITHOUT_FIXTURES();
    int same = 0, same_error = 0, child_only = 0, missing = 0;
    for (const auto& [key, e] : imgtest::expected()["dicom"].items()) {
        auto path = imgtest::resolve(key);
        if (path.empty()) {
            missing++;
            continue;
        }
        SCOPED_TRACE(key);
        std::string child_error;
        DicomImage child;
        try {
            child = read_dicom(path);
        } catch (const hg::Error& err) {
            child_error = err.what();
        }
        if (contains(child_error, "DICOM decoder failed on ")) {
            std::printf("  child only: %s\n", child_error.c_str());
            child_only++;
            continue;
        }
        if (!child_error.empty()) {
            EXPECT_EQ(child_error, error_of([&] { read_dicom(path, default_limits(), DecodeIsolation::InProcess); }));
            same_error++;
            continue;
        }
        expect_same(child, read_dicom(path, default_limits(), DecodeIsolation::InProcess));
        same++;
    }
    std::printf("reference files: %d decoded identically in the child and in-process, %d identical errors, "
                "%d failures only the child reports, %d files not present\n", same, same_error, child_only, missing);
    EXPECT_GT(same, 0);
}

TEST_F(DicomIsolation, NoZombiesNoLeakedFdsAfter200Decodes) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    auto bytes = hgtest::read_file(dicom_dir() / "emri_small.dcm");
    DicomImage first = decode_dicom(bytes, "emri_small.dcm");  // warm up (lazy initialisations)
    int fds_before = open_fd_count();
    auto bad = jpeg_assert_file();
    for (int i = 0; i < 200; i++) {
        DicomImage d = decode_dicom(bytes, "emri_small.dcm");
        ASSERT_TRUE(d.pixels.bytes == first.pixels.bytes);
        if (i % 50 == 0) {  // and failures
            EXPECT_FALSE(error_of([&] { decode_dicom(bad, "bad.dcm"); }).empty());
        }
    }
    int fds_after = open_fd_count();
    std::printf("open fds before %d, after 200 decodes (and 4 asserts) %d\n", fds_before, fds_after);
    EXPECT_EQ(fds_before, fds_after);
    EXPECT_TRUE(no_children());
}

TEST_F(DicomIsolation, WorksWithAThreadPoolAlive) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    hg::ThreadPool pool(2);
    pool.run([](int, int) {});  // its worker is started and waiting
    auto path = dicom_dir() / "MR2_J2KR.dcm";
    DicomImage here = read_dicom(path, default_limits(), DecodeIsolation::InProcess);
    expect_same(read_dicom(path), here);
    // And from inside the pool: both of its threads decode at once.
    std::vector<DicomImage> got(2);
    pool.run([&](int ith, int) { got[size_t(ith)] = read_dicom(path); });
    for (const auto& g : got) expect_same(g, here);
    EXPECT_TRUE(no_children());
}

TEST_F(DicomIsolation, TwoThreadsAtOnce) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    const char* names[2] = {"CT1_UNC.explicit_little_endian.dcm", "US1_J2KR.dcm"};
    DicomImage want[2] = {read_dicom(dicom_dir() / names[0], default_limits(), DecodeIsolation::InProcess),
                          read_dicom(dicom_dir() / names[1], default_limits(), DecodeIsolation::InProcess)};
    int ok[2] = {0, 0};
    std::string fail[2];
    auto work = [&](int t) {
        for (int i = 0; i < 20; i++) {
            try {
                DicomImage d = read_dicom(dicom_dir() / names[t]);
                ok[t] += d.pixels.bytes == want[t].pixels.bytes && d.info.rows == want[t].info.rows;
            } catch (const hg::Error& e) {
                fail[t] = e.what();
            }
        }
    };
    std::thread a(work, 0), b(work, 1);
    a.join();
    b.join();
    EXPECT_EQ(ok[0], 20) << fail[0];
    EXPECT_EQ(ok[1], 20) << fail[1];
    EXPECT_TRUE(no_children());
}

// The parent's check of the info message: what a subverted child could send is refused.
TEST_F(DicomIsolation, ParentRefusesInconsistentInfo) {
    HG_SKIP_WITHOUT_SHARED_DATA("medical/dicom");
    DicomImage good = read_dicom(dicom_dir() / "emri_small.dcm", default_limits(), DecodeIsolation::InProcess);
    auto encode = [](const DicomImage& d) {
        MessageWriter w;
        encode_dicom_info(d, w);
        return std::vector<uint8_t>(w.bytes().begin(), w.bytes().end());
    };
    DicomImage back = decode_dicom_info(encode(good), default_limits(), true);
    back.info.path = good.info.path;
    back.pixels.bytes = good.pixels.bytes;
    expect_same(back, good);
    EXPECT_EQ(decode_dicom_info(encode(good), default_limits(), true).pixels.bytes.size(), good.pixels.bytes.size());

    const std::pair<const char*, std::function<void(DicomImage&)>> lies[] = {
        {"rows over the limit", [](DicomImage& d) { d.info.rows = 70000; }},
        {"zero columns", [](DicomImage& d) { d.info.columns = 0; }},
        {"frames x pixels over max_voxels", [](DicomImage& d) { d.info.frames = 1 << 30; }},
        {"more samples than the attributes", [](DicomImage& d) { d.pixels.count *= 2; }},
        {"sample type not of the attributes", [](DicomImage& d) { d.pixels.type = SampleType::F64; }},
        {"bits stored above bits allocated", [](DicomImage& d) { d.info.bits_stored = 17; }},
        {"12 bits allocated", [](DicomImage& d) { d.info.bits_allocated = 12; }},
        {"2 samples per pixel", [](DicomImage& d) { d.info.samples_per_pixel = 2; }},
        {"NaN slope", [](DicomImage& d) { d.info.rescale_slope = {std::nan("")}; }},
        {"3 slopes for 10 frames", [](DicomImage& d) { d.info.rescale_slope = {1, 1, 1}; d.info.rescale_intercept = {0, 0, 0}; }},
        {"4 positions for 10 frames", [](DicomImage& d) { d.info.positions.assign(4, {0, 0, 0}); }},
        {"infinite position", [](DicomImage& d) { d.info.positions.assign(1, {0, HUGE_VAL, 0}); }},
        {"zero window width", [](DicomImage& d) { d.info.windows = {{40, 0, VoiFunction::Linear}}; }},
        {"empty VOI LUT", [](DicomImage& d) { d.info.voi_lut = VoiLut{0, 16, {}}; }},
        {"pixel representation 2", [](DicomImage& d) { d.info.pixel_representation = 2; }},
    };
    for (const auto& [what, lie] : lies) {
        DicomImage d = good;
        lie(d);
        EXPECT_THROW(decode_dicom_info(encode(d), default_limits(), true), InvalidChildMessage) << what;
    }
    // Pixels where only the info was asked for, a message cut anywhere, and extra bytes.
    EXPECT_THROW(decode_dicom_info(encode(good), default_limits(), false), InvalidChildMessage);
    auto m = encode(good);
    for (size_t len = 0; len < m.size(); len += 7)
        EXPECT_THROW(decode_dicom_info(std::span(m.data(), len), default_limits(), true), InvalidChildMessage) << len;
    m.push_back(0);
    EXPECT_THROW(decode_dicom_info(m, default_limits(), true), InvalidChildMessage);
    // A string count larger than the message.
    m = encode(good);
    uint32_t huge = 0xFFFFFFF0;
    std::memcpy(m.data(), &huge, 4);
    EXPECT_THROW(decode_dicom_info(m, default_limits(), true), InvalidChildMessage);
}

// The runner: every way a child can end badly becomes an hg::Error naming the file.
TEST_F(DicomIsolation, RunnerReportsEachKindOfFailure) {
    ChildLimits lim;
    lim.memory_bytes = 256 << 20;
    lim.cpu_seconds = 1;
    lim.wall_seconds = 3;
    auto run = [&](const std::function<void(ChildOutput&)>& child, const ChildLimits& l) {
        return error_of([&] {
            run_isolated("test decoder", "x.bin", l, child, [](ChildInput& in) { in.receive(kFirstUserFrame, 16); });
        });
    };
    auto prefix = [](const std::string& e, const std::string& p) { return e.rfind("test decoder failed on x.bin: " + p, 0) == 0; };

    // A normal result, and an hg::Error thrown in the child, which travels as it is.
    EXPECT_EQ(run([](ChildOutput& o) { uint8_t b[4] = {1, 2, 3, 4}; o.send(kFirstUserFrame, {b}); }, lim), "");
    EXPECT_EQ(run([](ChildOutput&) { hg::fail("x.bin: bad thing at byte 7"); }, lim), "x.bin: bad thing at byte 7");
    EXPECT_EQ(run([](ChildOutput&) { hg::fail("no name"); }, lim), "x.bin: no name");

    std::string e = run([](ChildOutput&) { __assert_fail("1 == 2", "some_file.cxx", 42, "f"); }, lim);
    EXPECT_TRUE(prefix(e, "assertion failed: some_file.cxx:42: f: Assertion `1 == 2' failed.")) << e;

    e = run([](ChildOutput&) {
        std::vector<uint8_t> v(size_t(4) << 30, 1);  // 4 GiB under a 256 MiB limit
        std::printf("%d\n", v[12345]);
    }, lim);
    EXPECT_TRUE(prefix(e, "out of memory")) << e;

    e = run([](ChildOutput&) { abort(); }, lim);
    EXPECT_TRUE(prefix(e, "crashed with signal 6 (SIGABRT)")) << e;
    e = run([](ChildOutput&) { raise(SIGKILL); }, lim);  // as the kernel's OOM killer would
    EXPECT_TRUE(prefix(e, "was killed (signal 9")) << e;
    e = run([](ChildOutput&) {
        std::fprintf(stderr, "about to crash\n");
        if (kSanitizer) raise(SIGILL);  // the sanitizer would report a SEGV as a bug in this test
        *static_cast<volatile int*>(nullptr) = 1;
    }, lim);
    EXPECT_TRUE(prefix(e, kSanitizer ? "crashed with signal 4 (SIGILL)" : "crashed with signal 11 (SIGSEGV)")) << e;
    EXPECT_TRUE(contains(e, "its last message: about to crash")) << e;

    auto t0 = std::chrono::steady_clock::now();
    e = run([](ChildOutput&) {
        for (;;) asm volatile("");
    }, lim);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_TRUE(prefix(e, "took too long")) << e;
    EXPECT_LT(s, lim.wall_seconds + 1.0);  // bounded by the limits, not by the loop
    t0 = std::chrono::steady_clock::now();
    e = run([](ChildOutput&) { sleep(100); }, lim);  // no CPU used: the wall-clock deadline
    s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_TRUE(prefix(e, "took too long (more than 3 s; stopped)")) << e;
    EXPECT_GE(s, lim.wall_seconds - 0.1);
    EXPECT_LT(s, lim.wall_seconds + 1.0);
    std::printf("CPU loop stopped (1 s CPU limit); sleeping child stopped after %.2f s (3 s deadline)\n", s);

    // Garbage instead of a frame, a frame longer than the parent accepts, nothing at all.
    e = run([](ChildOutput&) { (void)!write(3, "garbage garbage garbage", 23); }, lim);
    EXPECT_TRUE(prefix(e, "it sent an invalid result (bad frame header")) << e;
    e = run([](ChildOutput& o) { std::vector<uint8_t> big(100); o.send(kFirstUserFrame, {big}); }, lim);
    EXPECT_TRUE(prefix(e, "it sent an invalid result (frame of 100 bytes, more than the 16 expected")) << e;
    e = run([](ChildOutput&) {}, lim);
    EXPECT_TRUE(prefix(e, "it sent an invalid result (its result ends early")) << e;
    EXPECT_TRUE(no_children());
}
