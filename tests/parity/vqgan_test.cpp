// VQGAN (taming GumbelVQ) against the real PyTorch modules: tests/reference/gen_vqgan.py builds tiny
// configs of taming's GumbelVQ with random weights and records the decoder output for given indices,
// the to-pixels step, and the encoder logits/argmax for a real X-ray (tests/fixtures/vqgan/<config>/).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "model/vqgan.h"
#include "test_util.h"

namespace {

using hg::DType;
using hg::TensorStore;
using hg::Vqgan;
using hg::VqganConfig;

const char* kConfigs[] = {"f4_tiny", "f2_attn2"};

// Bounds (float32 model vs float32 PyTorch on the same weights; differences come only from the order
// of float32 accumulation in conv/matmul/attention/GroupNorm; our scalar reference accumulates in double).
constexpr double kDecodeMaxAbs = 5e-5;   // decoder output, values of order 1 (observed <= 1e-5)
constexpr double kLogitsMaxAbs = 2e-5;   // encoder logits, values of order 1 (observed <= 1e-6)

nlohmann::json manifest(const std::string& cfg) {
    std::ifstream f(hgtest::fixture("vqgan/" + cfg + "/manifest.json"));
    return nlohmann::json::parse(f);
}

VqganConfig config_of(const nlohmann::json& m) {
    const auto& c = m["config"];
    VqganConfig v;
    v.ch = c["ch"];
    v.ch_mult = c["ch_mult"].get<std::vector<int>>();
    v.num_res_blocks = c["num_res_blocks"];
    v.attn_resolutions = c["attn_resolutions"].get<std::vector<int>>();
    v.z_channels = c["z_channels"];
    v.embed_dim = c["embed_dim"];
    v.n_embed = c["n_embed"];
    v.resolution = c["resolution"];
    v.in_channels = c["in_channels"];
    v.out_ch = c["out_ch"];
    return v;
}

// The fixture weights (raw float32 + manifest) in an in-memory map; 4-d (conv) weights stored as conv_type.
// skip(name) leaves tensors out (to build a decoder-only model or a broken one).
void load_store(const std::string& cfg, DType conv_type, TensorStore& store,
                const std::function<bool(const std::string&)>& skip = nullptr) {
    const auto m = manifest(cfg);
    hg::vqgan_config_to_metadata(config_of(m), store);
    const auto bytes = hgtest::read_file(hgtest::fixture("vqgan/" + cfg + "/weights.bin"));
    for (const auto& t : m["tensors"]) {
        const std::string name = t["name"];
        if (skip && skip(name)) continue;
        const auto shape = t["shape"].get<std::vector<int64_t>>();
        const size_t off = t["offset"];
        const DType type = shape.size() == 4 ? conv_type : DType::F32;
        hg::Tensor& dst = store.add(name, type, shape);
        const int64_t n = dst.numel();
        ASSERT_LE(off + n * 4, bytes.size()) << name;
        const float* src = reinterpret_cast<const float*>(bytes.data() + off);
        for (int64_t i = 0; i < n; ++i) {
            if (type == DType::F32) dst.ptr<float>()[i] = src[i];
            else if (type == DType::F16) dst.ptr<uint16_t>()[i] = hg::fp32_to_fp16(src[i]);
            else dst.ptr<uint16_t>()[i] = hg::fp32_to_bf16(src[i]);
        }
    }
}

template <class T>
std::vector<T> read_vec(const std::string& rel) {
    const auto b = hgtest::read_file(hgtest::fixture(rel));
    std::vector<T> v(b.size() / sizeof(T));
    std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
    return v;
}

class VqganParity : public ::testing::TestWithParam<const char*> {};

TEST_P(VqganParity, DecoderMatchesTaming) {
    const std::string cfg = GetParam();
    TensorStore store;
    load_store(cfg, DType::F32, store);
    Vqgan model = Vqgan::load(store, cfg);
    const auto& c = model.config();
    const auto idx = read_vec<int32_t>("vqgan/" + cfg + "/indices.i32");
    const auto ref = hgtest::read_f32(hgtest::fixture("vqgan/" + cfg + "/decode.f32"));
    ASSERT_EQ((int64_t)idx.size(), c.n_tokens());
    ASSERT_EQ(ref.size(), (size_t)c.out_ch * c.resolution * c.resolution);
    std::vector<float> out(ref.size());
    model.decode(idx, out.data(), hg::default_pool());
    const auto e = hgtest::compare(out, ref);
    std::printf("[%s] decoder vs taming: %s\n", cfg.c_str(), hgtest::to_string(e).c_str());
    EXPECT_EQ(e.n_nonfinite, 0u);
    EXPECT_LE(e.max_abs, kDecodeMaxAbs);

    // Same indices again: the scratch is reused and the result is identical.
    const size_t scratch = model.scratch_bytes();
    std::vector<float> again(ref.size());
    model.decode(idx, again.data(), hg::default_pool());
    EXPECT_EQ(0, std::memcmp(out.data(), again.data(), out.size() * 4));
    EXPECT_EQ(scratch, model.scratch_bytes());
}

// The to-pixels step alone is exact: applied to the reference's float output it gives the reference's
// uint8 image. Applied to our output, a pixel can differ only where the reference value lies within our
// float error of an integer boundary of 255*(x+1)/2 (truncation); count those.
TEST_P(VqganParity, PixelsMatchTaming) {
    const std::string cfg = GetParam();
    TensorStore store;
    load_store(cfg, DType::F32, store);
    Vqgan model = Vqgan::load(store, cfg);
    const auto& c = model.config();
    const int64_t R = c.resolution;
    const auto ref = hgtest::read_f32(hgtest::fixture("vqgan/" + cfg + "/decode.f32"));
    const auto ref_px = read_vec<uint8_t>("vqgan/" + cfg + "/pixels.u8");
    ASSERT_EQ(ref_px.size(), (size_t)(R * R * 3));

    std::vector<uint8_t> px(ref_px.size());
    hg::vqgan_to_pixels(ref.data(), 3, R, px.data());
    EXPECT_EQ(px, ref_px) << "to-pixels of the reference float output must equal the reference pixels";

    std::vector<float> out(ref.size());
    model.decode(read_vec<int32_t>("vqgan/" + cfg + "/indices.i32"), out.data(), hg::default_pool());
    hg::vqgan_to_pixels(out.data(), 3, R, px.data());
    int differ = 0, clamped = 0;
    for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t p = 0; p < R * R; ++p) {
            const float r = ref[ch * R * R + p];
            clamped += (r <= -1.0f || r >= 1.0f);
            const int a = px[p * 3 + ch], b = ref_px[p * 3 + ch];
            if (a == b) continue;
            ++differ;
            EXPECT_EQ(std::abs(a - b), 1) << "pixel " << p << " channel " << ch;
            const double v = 255.0 * ((std::min(std::max((double)r, -1.0), 1.0) + 1.0) / 2.0);
            const double to_boundary = std::abs(v - std::round(v));
            EXPECT_LT(to_boundary, 255.0 / 2.0 * kDecodeMaxAbs) << "pixel " << p << " is not at a truncation boundary";
        }
    std::printf("[%s] uint8 pixels: %d of %lld differ by 1 (truncation boundary); %d reference values clamped\n",
                cfg.c_str(), differ, (long long)(R * R * 3), clamped);
}

// F16 / BF16 convolution weights: the reference ran with the same rounding applied to its conv weights.
TEST_P(VqganParity, DecoderHalfWeightsMatchTaming) {
    const std::string cfg = GetParam();
    for (auto [type, file] : {std::pair{DType::F16, "decode_f16w.f32"}, std::pair{DType::BF16, "decode_bf16w.f32"}}) {
        TensorStore store;
        load_store(cfg, type, store);
        Vqgan model = Vqgan::load(store, cfg);
        const auto ref = hgtest::read_f32(hgtest::fixture("vqgan/" + cfg + "/" + file));
        std::vector<float> out(ref.size());
        model.decode(read_vec<int32_t>("vqgan/" + cfg + "/indices.i32"), out.data(), hg::default_pool());
        const auto e = hgtest::compare(out, ref);
        std::printf("[%s] decoder, %s conv weights, vs taming: %s\n", cfg.c_str(), hg::dtype_name(type),
                    hgtest::to_string(e).c_str());
        EXPECT_LE(e.max_abs, kDecodeMaxAbs) << hg::dtype_name(type);
    }
}

// Encoder: a real X-ray (LANCZOS-resized by PIL) -> ToTensor, 2x-1 -> encoder -> quant_conv -> proj.
// Indices are the argmax of the logits; where the reference's top-2 logits are closer than our logit
// error, either is correct (counted and printed), otherwise they must be identical.
TEST_P(VqganParity, EncoderMatchesTaming) {
    const std::string cfg = GetParam();
    TensorStore store;
    load_store(cfg, DType::F32, store);
    Vqgan model = Vqgan::load(store, cfg);
    ASSERT_TRUE(model.has_encoder());
    const auto& c = model.config();
    const int64_t R = c.resolution, n = c.n_tokens(), K = c.n_embed;
    const auto img = read_vec<uint8_t>("vqgan/" + cfg + "/encode_image.u8");
    ASSERT_EQ(img.size(), (size_t)(R * R * 3));
    std::vector<float> x(3 * R * R);
    hg::vqgan_from_pixels(img.data(), 3, R, x.data());

    std::vector<int32_t> idx(n);
    std::vector<float> logits(n * K);
    model.encode(x.data(), idx, hg::default_pool(), logits.data());

    const auto ref_logits = hgtest::read_f32(hgtest::fixture("vqgan/" + cfg + "/encode_logits.f32"));  // [K, n]
    const auto ref_idx = read_vec<int32_t>("vqgan/" + cfg + "/encode_indices.i32");
    ASSERT_EQ(ref_logits.size(), (size_t)(n * K));
    std::vector<float> ours_kn(n * K);
    for (int64_t p = 0; p < n; ++p)
        for (int64_t k = 0; k < K; ++k) ours_kn[k * n + p] = logits[p * K + k];
    const auto e = hgtest::compare(ours_kn, ref_logits);
    std::printf("[%s] encoder logits vs taming: %s\n", cfg.c_str(), hgtest::to_string(e).c_str());
    EXPECT_LE(e.max_abs, kLogitsMaxAbs);

    int near_ties = 0, same = 0;
    for (int64_t p = 0; p < n; ++p) {
        const float best = ref_logits[ref_idx[p] * n + p];
        const float ours_in_ref = ref_logits[idx[p] * n + p];
        if (idx[p] == ref_idx[p]) {
            ++same;
            continue;
        }
        ++near_ties;
        EXPECT_LE(best - ours_in_ref, 2 * e.max_abs) << "position " << p << ": index " << idx[p] << " vs "
                                                     << ref_idx[p] << " is not a near tie";
    }
    std::printf("[%s] encoder indices: %d of %lld identical, %d near ties\n", cfg.c_str(), same, (long long)n,
                near_ties);
}

INSTANTIATE_TEST_SUITE_P(Tiny, VqganParity, ::testing::ValuesIn(kConfigs));

// ------------------------------------------------------------------------------ loading and errors

TEST(Vqgan, DecoderOnlyFileDecodesAndRefusesToEncode) {
    TensorStore store;
    load_store("f2_attn2", DType::F32, store, [](const std::string& n) {
        return n.rfind("encoder.", 0) == 0 || n.rfind("quant_conv.", 0) == 0 || n.rfind("quantize.proj.", 0) == 0;
    });
    Vqgan model = Vqgan::load(store, "decoder-only");
    EXPECT_FALSE(model.has_encoder());
    const auto idx = read_vec<int32_t>("vqgan/f2_attn2/indices.i32");
    const auto ref = hgtest::read_f32(hgtest::fixture("vqgan/f2_attn2/decode.f32"));
    std::vector<float> out(ref.size());
    model.decode(idx, out.data(), hg::default_pool());
    EXPECT_LE(hgtest::compare(out, ref).max_abs, kDecodeMaxAbs);
    std::vector<float> x(3 * 16 * 16, 0.0f);
    std::vector<int32_t> codes(64);
    try {
        model.encode(x.data(), codes, hg::default_pool());
        FAIL() << "encode without encoder tensors must throw";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("no encoder"), std::string::npos) << e.what();
    }
}

void expect_error(const std::function<void()>& fn, const std::string& needle) {
    try {
        fn();
        ADD_FAILURE() << "expected an hg::Error containing '" << needle << "'";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

TEST(Vqgan, MissingOrMisshapenTensorsAreNamed) {
    {
        TensorStore store;
        load_store("f2_attn2", DType::F32, store, [](const std::string& n) { return n == "decoder.up.1.attn.1.k.bias"; });
        expect_error([&] { Vqgan::load(store, "broken.gguf"); }, "broken.gguf: VQGAN tensor decoder.up.1.attn.1.k.bias is missing");
    }
    {
        TensorStore store;
        load_store("f2_attn2", DType::F32, store);
        store.add("decoder.mid.block_1.conv1.weight", DType::F32, {32, 32, 1, 1});
        expect_error([&] { Vqgan::load(store, "m"); },
                     "decoder.mid.block_1.conv1.weight has shape [32, 32, 1, 1], expected [32, 32, 3, 3]");
    }
    {
        TensorStore store;
        load_store("f2_attn2", DType::F32, store);
        store.add("decoder.norm_out.weight", DType::F16, {32});
        expect_error([&] { Vqgan::load(store, "m"); }, "decoder.norm_out.weight has type F16; expected F32");
    }
}

TEST(Vqgan, MetadataIsValidated) {
    TensorStore store;
    load_store("f2_attn2", DType::F32, store);
    store.set_string("general.architecture", "llama");
    expect_error([&] { Vqgan::load(store, "x.gguf"); }, "x.gguf: general.architecture is 'llama', expected 'vqgan'");
    store.set_string("general.architecture", "vqgan");
    store.set_string("vqgan.quantizer", "vq");
    expect_error([&] { Vqgan::load(store, "x.gguf"); }, "vqgan.quantizer 'vq' is not supported");
    store.set_string("vqgan.quantizer", "gumbel");
    store.set_int("vqgan.ch", 48);
    expect_error([&] { Vqgan::load(store, "x.gguf"); }, "vqgan.ch = 48 must be a positive multiple of 32");
    store.set_int("vqgan.ch", 32);
    store.set_int("vqgan.resolution", 17);
    expect_error([&] { Vqgan::load(store, "x.gguf"); }, "vqgan.resolution 17 is not divisible by 2^1");
    store.set_int("vqgan.resolution", -5);
    expect_error([&] { Vqgan::load(store, "x.gguf"); }, "vqgan.resolution = -5 is out of range");
    TensorStore empty;
    empty.set_string("general.architecture", "vqgan");
    expect_error([&] { Vqgan::load(empty, "e.gguf"); }, "e.gguf: VQGAN metadata key vqgan.ch is missing");
}

TEST(Vqgan, BadIndicesAreRefused) {
    TensorStore store;
    load_store("f2_attn2", DType::F32, store);
    Vqgan model = Vqgan::load(store, "m");
    std::vector<float> out(3 * 16 * 16);
    std::vector<int32_t> idx(63, 0);
    expect_error([&] { model.decode(idx, out.data(), hg::default_pool()); }, "needs 64 indices (8x8), got 63");
    idx.assign(64, 0);
    idx[9] = 48;
    expect_error([&] { model.decode(idx, out.data(), hg::default_pool()); },
                 "VQ index 48 at position 9 (row 1, column 1) is outside the codebook (48 codes)");
    idx[9] = -1;
    expect_error([&] { model.decode(idx, out.data(), hg::default_pool()); }, "VQ index -1 at position 9");
}

// ----------------------------------------------------------------------------------- pixels, index files

TEST(Vqgan, ToPixelsTruncatesLikeNumpy) {
    // 255 * ((x + 1) / 2) in float32, then truncation: values just under an integer stay below it.
    const float x[6] = {-2.0f, -1.0f, 0.0f, 1.0f, 5.0f, 0.9999999f};
    uint8_t px[6];
    hg::vqgan_to_pixels(x, 6, 1, px);
    EXPECT_EQ(px[0], 0);
    EXPECT_EQ(px[1], 0);
    EXPECT_EQ(px[2], 127);  // 127.5 -> 127
    EXPECT_EQ(px[3], 255);
    EXPECT_EQ(px[4], 255);
    EXPECT_EQ(px[5], 254);  // 254.99998...
}

TEST(Vqgan, FromPixelsIsToTensorThenTwoXMinusOne) {
    const uint8_t px[3] = {0, 128, 255};
    float x[3];
    hg::vqgan_from_pixels(px, 3, 1, x);
    EXPECT_EQ(x[0], -1.0f);
    EXPECT_EQ(x[1], 2.0f * (128.0f / 255.0f) - 1.0f);
    EXPECT_EQ(x[2], 1.0f);
}

TEST(Vqgan, IndexFilesRoundTripAndRejectGarbage) {
    std::vector<int32_t> idx(16);
    for (int i = 0; i < 16; ++i) idx[i] = (i * 37) % 100;
    const std::string text = hg::format_vq_indices(idx, 4);
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 4);
    EXPECT_EQ(hg::parse_vq_indices(text, 16, 100, "t"), idx);
    EXPECT_EQ(hg::parse_vq_indices("# grid\n1,2, 3\r\n4 5 6 7 8 9 10 11 12 13 14 15 16", 16, 100, "t")[15], 16);
    expect_error([] { hg::parse_vq_indices("1 2 3", 4, 10, "idx.txt"); }, "idx.txt: 3 VQ indices, expected 4");
    expect_error([] { hg::parse_vq_indices("1 2 3 4 5", 4, 10, "idx.txt"); }, "idx.txt: line 1: more than 4 VQ indices");
    expect_error([] { hg::parse_vq_indices("1 2\n3 10", 4, 10, "idx.txt"); }, "idx.txt: line 2: VQ index 10 is outside");
    expect_error([] { hg::parse_vq_indices("1 2 -3 4", 4, 10, "idx.txt"); }, "line 1: unexpected character '-'");
    expect_error([] { hg::parse_vq_indices("1 2 3x 4", 4, 10, "idx.txt"); }, "'3x 4' is not a VQ index");
    expect_error([] { hg::parse_vq_indices("99999999999999999999", 1, 8192, "i"); }, "is outside the codebook");
}

// The released OpenImages f8 model: our tensor layout (names, shapes) for the default config is exactly
// the state_dict of taming's GumbelVQ built with HealthGPT's model.yaml (301 tensors), and it loads.
TEST(Vqgan, FullSizeLayoutIsTamingsStateDict) {
    std::ifstream f(hgtest::fixture("vqgan/f8_openimages_layout.json"));
    const auto ref = nlohmann::json::parse(f);
    const VqganConfig def;
    const VqganConfig c = config_of(ref);
    EXPECT_EQ(def.to_string(), c.to_string()) << "VqganConfig defaults are the released model's";
    TensorStore store;
    hg::vqgan_random_weights(c, DType::F16, 3, store);
    std::map<std::string, std::vector<int64_t>> theirs;
    for (const auto& t : ref["tensors"]) theirs[t[0].get<std::string>()] = t[1].get<std::vector<int64_t>>();
    EXPECT_EQ(theirs.size(), 301u);
    const auto ours = store.names();
    EXPECT_EQ(ours.size(), theirs.size());
    for (const auto& name : ours) {
        ASSERT_TRUE(theirs.count(name)) << name << " is not a taming state_dict key";
        const hg::Tensor t = *store.try_tensor(name);
        EXPECT_EQ(std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.n_dims), theirs[name]) << name;
        EXPECT_LT(name.size(), 64u) << "GGUF names are at most 63 bytes";
    }
    Vqgan model = Vqgan::load(store, "random f8");
    EXPECT_TRUE(model.has_encoder());
    EXPECT_EQ(model.config().n_tokens(), 1024);
}

// Random weights cover every tensor the loader asks for, in every supported conv type.
TEST(Vqgan, RandomWeightsLoadAndRun) {
    VqganConfig c;
    c.ch = 32, c.ch_mult = {1, 2}, c.num_res_blocks = 1, c.attn_resolutions = {4};
    c.z_channels = c.embed_dim = 8, c.n_embed = 16, c.resolution = 8;
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        TensorStore store;
        hg::vqgan_random_weights(c, t, 1, store);
        Vqgan model = Vqgan::load(store, "random");
        std::vector<int32_t> idx(c.n_tokens());
        for (size_t i = 0; i < idx.size(); ++i) idx[i] = (int32_t)(i % c.n_embed);
        std::vector<float> out(3 * 8 * 8);
        model.decode(idx, out.data(), hg::default_pool());
        for (float v : out) ASSERT_TRUE(std::isfinite(v));
        std::vector<int32_t> codes(c.n_tokens());
        std::vector<float> x(3 * 8 * 8, 0.25f);
        model.encode(x.data(), codes, hg::default_pool());
        for (int32_t k : codes) EXPECT_TRUE(k >= 0 && k < c.n_embed);
    }
}

}  // namespace
