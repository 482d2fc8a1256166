// formats/torch_writer: our PyTorch zip checkpoints read back through our reader (torch_checkpoint.h)
// and byte-compared with tests/fixtures/train_optim/writer_ref.pt, a file this writer produced and
// that tests/reference/gen_train_optim.py checks with torch.load(weights_only=True) (exact tensors).
// Regenerate the committed file after an intended format change: HG_WRITE_FIXTURES=1 <this test>,
// then run gen_train_optim.py.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <csignal>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "formats/torch_checkpoint.h"
#include "formats/torch_writer.h"
#include "test_util.h"

using namespace hg;

namespace {

// The content gen_train_optim.py's writer_expected() describes (same formulas).
struct WriterContent {
    std::vector<float> a, big;
    std::vector<uint16_t> h, b;
    float scalar = 3.5f;
    WriterContent() {
        for (int i = 0; i < 6; ++i) a.push_back(i * 0.25f - 1.0f);
        for (int i = 0; i < 8; ++i) h.push_back(fp32_to_fp16(i * 0.5f - 2.0f));
        for (int i = 0; i < 5; ++i) b.push_back(fp32_to_bf16(i * 0.375f - 1.5f));
        for (int i = 0; i < 300; ++i) big.push_back(float(i % 251));  // numel >= 256: a 2-byte pickle int
    }
    TorchWriter writer() const {
        TorchWriter w("writer_ref");
        w.add("layer.0.weight", DType::F32, {2, 3}, a.data());
        w.add("half.x", DType::F16, {2, 2, 2}, h.data());
        w.add_borrowed("bf.y", DType::BF16, {5}, b.data());
        w.add("scalar", DType::F32, {}, &scalar);
        w.add("empty", DType::F32, {0, 4}, nullptr);
        w.add_borrowed("big", DType::F32, {300}, big.data());
        return w;
    }
};

}  // namespace

TEST(TorchWriter, ReadsBackThroughOurReader) {
    const WriterContent c;
    const std::vector<uint8_t> bytes = c.writer().to_bytes();
    auto ck = TorchCheckpoint::from_memory(bytes, "written");
    ASSERT_EQ(ck->format(), TorchCheckpoint::Format::Zip);
    EXPECT_EQ(ck->archive_name(), "writer_ref");
    const auto& ts = ck->tensors();
    ASSERT_EQ(ts.size(), 6u);
    auto same = [&](size_t i, const char* name, ElemType type, std::vector<int64_t> shape, const void* data, size_t nbytes) {
        const CkptTensor& t = ts[i];
        EXPECT_EQ(t.name, name);
        EXPECT_EQ(t.type, type) << name;
        EXPECT_EQ(t.shape, shape) << name;
        EXPECT_TRUE(t.is_contiguous()) << name;
        ASSERT_EQ(t.nbytes, nbytes) << name;
        if (nbytes) {
            EXPECT_EQ(0, std::memcmp(t.data, data, nbytes)) << name;
            EXPECT_EQ((t.data - bytes.data()) % 64, 0) << name << ": storage not 64-byte aligned";
        }
    };
    same(0, "layer.0.weight", ElemType::F32, {2, 3}, c.a.data(), 24);
    same(1, "half.x", ElemType::F16, {2, 2, 2}, c.h.data(), 16);
    same(2, "bf.y", ElemType::BF16, {5}, c.b.data(), 10);
    same(3, "scalar", ElemType::F32, {}, &c.scalar, 4);
    same(4, "empty", ElemType::F32, {0, 4}, nullptr, 0);
    same(5, "big", ElemType::F32, {300}, c.big.data(), 1200);
}

TEST(TorchWriter, BytesMatchTheCommittedFile) {
    const WriterContent c;
    const auto fixture = hgtest::fixture("train_optim/writer_ref.pt");
    const char* regen = std::getenv("HG_WRITE_FIXTURES");
    if (regen && std::string(regen) == "1") c.writer().write(fixture);
    // write() (the atomic file path) and to_bytes() give the same bytes, equal to the committed file
    const auto out = hgtest::scratch_dir() / "w.pt";
    c.writer().write(out);
    const std::vector<uint8_t> mine = hgtest::read_file(out);
    EXPECT_EQ(mine, c.writer().to_bytes());
    ASSERT_TRUE(std::filesystem::exists(fixture)) << fixture;
    EXPECT_EQ(mine, hgtest::read_file(fixture))
        << "the writer's output changed; if intended, regenerate with HG_WRITE_FIXTURES=1 and re-run gen_train_optim.py";
}

TEST(TorchWriter, RefusesBadInput) {
    TorchWriter w;
    float x = 1;
    EXPECT_THROW(w.add("q", DType::Q8_0, {32}, &x), Error);
    w.add("x", DType::F32, {1}, &x);
    EXPECT_THROW(w.add("x", DType::F32, {1}, &x), Error);
    EXPECT_THROW(w.add("n", DType::F32, {-1}, &x), Error);
    EXPECT_THROW(TorchWriter("a/b"), Error);
    try {  // a folder that does not exist: clear error naming the path
        w.write("/nonexistent-dir/x.pt");
        ADD_FAILURE();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x.pt"), std::string::npos) << e.what();
    }
}

TEST(TorchWriter, FailedWriteKeepsThePreviousFile) {
    const WriterContent c;
    const auto path = hgtest::scratch_dir() / "keep.pt";
    TorchWriter small;
    float x = 7;
    small.add("x", DType::F32, {1}, &x);
    small.write(path);
    const std::vector<uint8_t> before = hgtest::read_file(path);
    // a disk that fills up: writes past 1 KiB fail with EFBIG
    struct rlimit old {};
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 1024;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
    std::string msg;
    try {
        c.writer().write(path);  // 3.4 KB
    } catch (const Error& e) {
        msg = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
    ASSERT_FALSE(msg.empty()) << "the write past the size limit did not fail";
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    EXPECT_EQ(hgtest::read_file(path), before);
    for (const auto& e : std::filesystem::directory_iterator(path.parent_path()))
        EXPECT_NE(e.path().filename().string().rfind("keep.pt.tmp", 0), 0u) << "temporary file left: " << e.path();
}
