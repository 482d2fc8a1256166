// Block quantization against golden vectors from gguf-py and llama.cpp's ggml reference
// quantizers (tests/reference/gen_quants.py): our bytes must equal theirs exactly, and our
// dequantization of their bytes must equal theirs bit for bit.
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/quants.h"
#include "test_util.h"

namespace {

using hg::DType;

struct Case {
    std::string name;
    int64_t n;
    std::vector<std::string> types;
};

std::vector<Case> load_manifest() {
    std::ifstream f(hgtest::fixture("quants/manifest.json"));
    if (!f) throw std::runtime_error("tests/fixtures/quants/manifest.json missing: run gen_quants.py");
    nlohmann::json j = nlohmann::json::parse(f);
    std::vector<Case> out;
    for (const auto& c : j["cases"]) out.push_back({c["name"], c["n"], c["types"].get<std::vector<std::string>>()});
    return out;
}

TEST(QuantsGolden, BytesAndDequantizationMatchTheReference) {
    const auto cases = load_manifest();
    ASSERT_GE(cases.size(), 15u);
    int checked = 0;
    for (const Case& c : cases) {
        const std::vector<float> x = hgtest::read_f32(hgtest::fixture("quants/in_" + c.name + ".f32"));
        ASSERT_EQ((int64_t)x.size(), c.n) << c.name;
        for (const std::string& tn : c.types) {
            SCOPED_TRACE(c.name + " " + tn);
            const DType t = *hg::dtype_from_name(tn);
            const auto golden = hgtest::read_file(hgtest::fixture("quants/" + c.name + "." + tn + ".q"));
            const auto golden_deq = hgtest::read_f32(hgtest::fixture("quants/" + c.name + "." + tn + ".deq.f32"));
            ASSERT_EQ(golden.size(), hg::row_bytes(t, c.n));

            std::vector<uint8_t> q(golden.size());
            hg::quantize_row(t, x.data(), q.data(), c.n);
            size_t first_diff = q.size();
            for (size_t i = 0; i < q.size(); ++i)
                if (q[i] != golden[i]) {
                    first_diff = i;
                    break;
                }
            EXPECT_EQ(first_diff, q.size()) << "first differing byte " << first_diff << " of " << q.size() << " (block "
                                            << first_diff / hg::dtype_info(t).block_bytes << ")";

            std::vector<float> deq(c.n);
            hg::dequantize_row(t, golden.data(), deq.data(), c.n);
            int64_t mismatches = 0;
            for (int64_t i = 0; i < c.n; ++i)
                if (std::memcmp(&deq[i], &golden_deq[i], 4) != 0) ++mismatches;
            EXPECT_EQ(mismatches, 0) << "dequantized values differ from the reference";
            ++checked;
        }
    }
    EXPECT_GE(checked, 90);
}

TEST(QuantsGolden, BlockTypesRefuseNonFiniteInput) {
    for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::Q8_K}) {
        for (float bad : {NAN, INFINITY, -INFINITY}) {
            std::vector<float> x(256, 1.0f);
            x[77] = bad;
            std::vector<uint8_t> q(hg::row_bytes(t, 256));
            try {
                hg::quantize_row(t, x.data(), q.data(), 256);
                ADD_FAILURE() << hg::dtype_name(t) << " accepted " << bad;
            } catch (const hg::Error& e) {
                EXPECT_NE(std::string(e.what()).find("index 77"), std::string::npos) << e.what();
            }
        }
    }
}

TEST(QuantsGolden, PartialBlocksAreRefused) {
    std::vector<float> x(100, 1.0f);
    std::vector<uint8_t> q(1024);
    EXPECT_THROW(hg::quantize_row(DType::Q4_K, x.data(), q.data(), 100), hg::Error);
    EXPECT_THROW(hg::quantize_row(DType::Q8_0, x.data(), q.data(), 40), hg::Error);
    EXPECT_THROW(hg::dequantize_row(DType::Q6_K, q.data(), x.data(), 100), hg::Error);
}

TEST(QuantsGolden, Q8KBlockSumsAreTheSumsOfTheQuants) {
    std::vector<float> x(512);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i) * (1 + i % 7);
    std::vector<hg::block_q8_K> q(2);
    hg::quantize_row_q8_K(x.data(), q.data(), 512);
    for (const auto& b : q)
        for (int j = 0; j < 16; ++j) {
            int s = 0;
            for (int i = 0; i < 16; ++i) s += b.qs[16 * j + i];
            EXPECT_EQ(b.bsums[j], s);
        }
}

TEST(QuantsGolden, VecDotTypes) {
    EXPECT_EQ(hg::vec_dot_type(DType::Q4_0), DType::Q8_0);
    EXPECT_EQ(hg::vec_dot_type(DType::Q8_0), DType::Q8_0);
    EXPECT_EQ(hg::vec_dot_type(DType::Q4_K), DType::Q8_K);
    EXPECT_EQ(hg::vec_dot_type(DType::Q6_K), DType::Q8_K);
    EXPECT_EQ(hg::vec_dot_type(DType::F16), DType::F32);
    EXPECT_THROW(hg::vec_dot_type(DType::Q5_K), hg::Error);
}

}  // namespace
