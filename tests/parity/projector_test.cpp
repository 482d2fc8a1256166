// mlp2x_gelu projector vs torch nn.Sequential(Linear, GELU(), Linear) (tests/reference/gen_vision.py).
#include <string>

#include "clip_fixture.h"
#include "core/arena.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/clip_vision.h"
#include "model/projector.h"
#include "test_util.h"

using namespace hg;
using hgtest::VisionFixture;

namespace {

void fill_projector(WeightMap& map, DType type) {
    const auto& fx = VisionFixture::get();
    for (const char* n : {"mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"})
        fx.add_to(map, std::string("proj_a/") + n, n, type);
}

std::vector<float> run(const Projector& p, std::span<const float> x, int64_t M) {
    ThreadPool pool(2);
    Arena arena;
    std::vector<float> y(M * p.d_out());
    p.forward(y.data(), x.data(), M, arena, pool);
    return y;
}

}  // namespace

// fp32 weights: bound 1e-5 absolute on outputs of magnitude ~1 (two 64/96-wide GEMMs).
// BF16 weights (as released) vs torch on the same bf16-rounded weights in fp32: same bound, since
// our BF16 path widens the weights exactly and computes in fp32.
TEST(ProjectorParity, MatchesTorch) {
    const auto& fx = VisionFixture::get();
    const auto& m = fx.manifest()["projector"]["proj_a"];
    const int64_t M = m["rows"].get<int64_t>();
    for (DType type : {DType::F32, DType::BF16}) {
        WeightMap map;
        fill_projector(map, type);
        const Projector p(map.source("fixture proj_a"), 64, 96);
        EXPECT_EQ(p.d_in(), m["d_in"].get<int64_t>());
        EXPECT_EQ(p.d_out(), m["d_out"].get<int64_t>());
        const std::vector<float> y = run(p, fx.array("proj_a/x"), M);
        const hgtest::ErrorStats e = hgtest::compare(y, fx.array(type == DType::F32 ? "proj_a/y" : "proj_a/y_bf16w"));
        std::printf("  projector %s weights, M=%lld: %s\n", dtype_name(type), (long long)M, hgtest::to_string(e).c_str());
        EXPECT_EQ(e.n_nonfinite, 0u);
        EXPECT_LE(e.max_abs, 1e-5);
        EXPECT_LE(e.nmse, 1e-12);
    }
}

// The comprehension path end to end on the tiny tower: our hidden_states[-2] through our projector
// against transformers' hidden_states[-2] through torch's projector.
TEST(ProjectorParity, VisionTowerThenProjector) {
    const auto& fx = VisionFixture::get();
    const auto& c = fx.manifest()["clip"]["clip_a"];
    WeightMap vmap;
    for (const std::string& hf : c["weights"].get<std::vector<std::string>>())
        if (auto name = clip_gguf_name(hf)) fx.add_to(vmap, "clip_a/hf/" + hf, *name, DType::F32);
    ClipVisionConfig cfg;
    cfg.image_size = c["image_size"];
    cfg.patch_size = c["patch_size"];
    cfg.hidden = c["hidden_size"];
    cfg.n_head = c["num_attention_heads"];
    cfg.n_layer = c["num_hidden_layers"];
    cfg.n_ff = c["intermediate_size"];
    const ClipVision tower(cfg, vmap.source("fixture clip_a"));
    WeightMap pmap;
    fill_projector(pmap, DType::F32);
    const Projector proj(pmap.source("fixture proj_a"), cfg.hidden);

    ThreadPool pool(2);
    const std::vector<float> feats = tower.forward(fx.array("clip_a/pixels").data(), -2, pool);
    const std::vector<float> y = run(proj, feats, cfg.n_patches());
    const hgtest::ErrorStats e = hgtest::compare(y, fx.array("proj_a/y"));
    std::printf("  tower[-2] -> projector: %s\n", hgtest::to_string(e).c_str());
    EXPECT_LE(e.max_abs, 2e-5);
    EXPECT_LE(e.nmse, 1e-11);
}

TEST(ProjectorParity, BadWeightsFailWithNames) {
    auto message = [](const WeightMap& map, int64_t in, int64_t out) -> std::string {
        try {
            Projector p(map.source("plugin.gguf"), in, out);
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    };
    WeightMap map;
    fill_projector(map, DType::F32);
    EXPECT_EQ(message(map, 64, 96), "");
    EXPECT_EQ(message(map, 1024, 0), "plugin.gguf: projector takes 64-wide features, the vision tower gives 1024");
    EXPECT_EQ(message(map, 0, 3072),
              "plugin.gguf: projector gives 96-wide embeddings, the text model's hidden size is 3072");
    map.erase("mm.2.bias");
    EXPECT_EQ(message(map, 64, 96), "plugin.gguf: tensor mm.2.bias is missing");
    WeightMap empty;
    EXPECT_EQ(message(empty, 64, 96), "plugin.gguf: projector tensor mm.0.weight is missing");
}
