// Image generation end to end against PyTorch (tests/reference/gen_generation.py): a tiny HealthGPT
// with a generation plugin (transformers CLIPVisionModel hidden_states[1] + the GEN mlp2x_gelu
// projector + Phi3ForCausalLM with H-LoRA written from the spec, the VQ vocabulary extension, then the
// plugin's F16 fusion embedding/head rows) and a tiny taming GumbelVQ decoder (taming-transformers-
// rom1504, F16-rounded convolutions, 64 px, a 32 x 32 grid = 1,024 tokens, 64 codes), written as our
// model folder by gguf-py. The test runs hg::generate_image_from_ids with the reference's prompt ids
// (the phi3 prompt around "<image>\n" + an instruction, ending in <start_index>) and the input PNG:
//   - all 1,024 indices equal the reference's constrained greedy choices (float64 transformers with
//     KV cache, logits restricted to <idx_0>..<idx_63>, the codes the VQGAN has); the generator asserts
//     every step's margin exceeds 4x the float32 rounding error it measures on this model;
//   - the image equals idx2img's custom_to_pil of taming's float32 decode of those indices: the decoder
//     output behind it within 2e-5 (measured 3.8e-6), and every uint8 equal except where taming's
//     255 * (x + 1) / 2 lies within that bound of an integer (measured: 1 of 12,288 values, off by 1).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "imaging/load.h"
#include "model/vqgan.h"
#include "runtime/image_generation.h"
#include "test_util.h"

using namespace hg;
using json = nlohmann::json;

TEST(GenerationParity, IndicesAndPixelsEqualPyTorch) {
    std::ifstream f(hgtest::fixture("generation/case.json"));
    ASSERT_TRUE(f.good());
    const json c = json::parse(f);
    auto model = Model::load(hgtest::fixture("generation/model"));
    EXPECT_EQ(model->vq().start_index, (int32_t)c["start_index"]);
    EXPECT_EQ(model->vq().idx0, (int32_t)c["idx0"]);
    EXPECT_EQ(model->vq().end_index, (int32_t)c["end_index"]);
    EXPECT_EQ(model->tokenizer().size(), (int32_t)c["n_vocab"]);

    auto imgs = imaging::load_medical_image(hgtest::fixture("generation/" + c["input"].get<std::string>()));
    ASSERT_EQ(imgs.size(), 1u);
    SessionOptions so;
    so.kv_type = DType::F32;
    Session session(model, so);
    const std::vector<int32_t> ids = c["prompt_ids"];
    const GeneratedImage g = generate_image_from_ids(session, ids, &imgs[0]);
    EXPECT_EQ(g.plugin, "gen");
    EXPECT_EQ(g.timings.n_prompt, (int64_t)c["positions"]);

    const std::vector<int32_t> want = c["indices"];
    ASSERT_EQ(g.indices.size(), want.size());
    int64_t first_diff = -1, n_diff = 0;
    for (size_t i = 0; i < want.size(); ++i)
        if (g.indices[i] != want[i]) {
            if (first_diff < 0) first_diff = (int64_t)i;
            ++n_diff;
        }
    EXPECT_EQ(n_diff, 0) << "first differing index at step " << first_diff << " of 1024 (reference min margin "
                         << c["min_margin"] << ", torch float32 error " << c["torch_f32_max_abs"] << ")";
    std::printf("generation parity: %zu/%zu indices equal (%lld distinct codes), min margin %.3g, torch f32 error %.3g\n",
                want.size() - (size_t)n_diff, want.size(), (long long)c["n_distinct"], (double)c["min_margin"],
                (double)c["torch_f32_max_abs"]);

    // the decoder output behind the pixels: our VQGAN on the reference's indices vs taming float32
    auto vf = GGUFFile::open(hgtest::fixture("generation/model/vqgan.gguf"));
    Vqgan vq = Vqgan::load(*vf, "vqgan.gguf");
    const int R = vq.config().resolution;
    ASSERT_EQ(R, (int)c["vqgan"]["resolution"]);
    std::vector<float> x((size_t)3 * R * R);
    vq.decode(want, x.data(), default_pool());
    const std::vector<float> ref = hgtest::read_f32(hgtest::fixture("generation/" + c["decode"].get<std::string>()));
    ASSERT_EQ(ref.size(), x.size());
    const hgtest::ErrorStats e = hgtest::compare(x, ref);
    std::printf("generation parity: decoder output vs taming float32: %s\n", hgtest::to_string(e).c_str());
    // float32 convolutions in another summation order (measured 3.8e-6 on this model): bound 2e-5
    const double kDecodeBound = 2e-5;
    EXPECT_LE(e.max_abs, kDecodeBound);

    // the image itself: every uint8 equal, except where taming's value 255 * (x + 1) / 2 lies within
    // our decoder bound of an integer, where truncation may fall either way (by 1)
    auto out = imaging::load_medical_image(hgtest::fixture("generation/" + c["output"].get<std::string>()));
    ASSERT_EQ(out.size(), 1u);
    ASSERT_EQ(g.image.width, R);
    ASSERT_EQ(g.image.height, R);
    ASSERT_EQ(out[0].rgb.size(), g.image.rgb.size());
    int64_t n_px_diff = 0, max_px_diff = 0;
    for (size_t i = 0; i < g.image.rgb.size(); ++i) {
        const int d = std::abs((int)g.image.rgb[i] - (int)out[0].rgb[i]);
        if (d == 0) continue;
        ++n_px_diff;
        max_px_diff = std::max<int64_t>(max_px_diff, d);
        const size_t pix = i / 3, ch = i % 3;  // [S, S, 3] interleaved -> [3, S, S]
        const double v = 255.0 * (std::clamp((double)ref[ch * R * R + pix], -1.0, 1.0) + 1.0) / 2.0;
        EXPECT_LE(std::fabs(v - std::round(v)), 255.0 / 2.0 * kDecodeBound)
            << "pixel value " << i << " differs but taming's " << v << " is not at a truncation boundary";
    }
    std::printf("generation parity: %lld of %zu pixel values differ (max %lld), each at a truncation boundary\n",
                (long long)n_px_diff, g.image.rgb.size(), (long long)max_px_diff);
    EXPECT_LE(max_px_diff, 1);
}
