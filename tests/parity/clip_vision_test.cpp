// CLIP vision tower vs transformers 4.41.2 CLIPVisionModel (tests/reference/gen_vision.py).
#include <cmath>
#include <limits>
#include <set>
#include <string>

#include "clip_fixture.h"
#include "core/arena.h"
#include "core/error.h"
#include "core/half.h"
#include "core/ops.h"
#include "core/thread_pool.h"
#include "model/clip_vision.h"
#include "test_util.h"

using namespace hg;
using hgtest::VisionFixture;

namespace {

// Fills `map` with the tower `tag` from the fixture, mapping transformers keys through
// clip_gguf_name exactly as the converter does, plus the clip.vision.* metadata.
// `matrix_type` is used for every tensor of 2+ dims (the converter's F16 choice); 1-D stay F32.
void fill_tower(WeightMap& map, const std::string& tag, DType matrix_type) {
    const auto& fx = VisionFixture::get();
    const auto& m = fx.manifest()["clip"][tag];
    int mapped = 0;
    for (const std::string& hf : m["weights"].get<std::vector<std::string>>()) {
        const std::optional<std::string> name = clip_gguf_name(hf);
        if (!name) {
            EXPECT_EQ(hf.rfind("vision_model.post_layernorm.", 0), 0u) << "unmapped key " << hf;
            continue;
        }
        const std::string arr = tag + "/hf/" + hf;
        fx.add_to(map, arr, *name, fx.shape(arr).size() >= 2 ? matrix_type : DType::F32);
        ++mapped;
    }
    EXPECT_EQ(mapped, 5 + 16 * m["num_hidden_layers"].get<int>());
    map.set_string(clip_keys::kArchitecture, "clip");
    map.set_bool(clip_keys::kHasVisionEncoder, true);
    map.set_int(clip_keys::kImageSize, m["image_size"].get<int>());
    map.set_int(clip_keys::kPatchSize, m["patch_size"].get<int>());
    map.set_int(clip_keys::kEmbeddingLength, m["hidden_size"].get<int>());
    map.set_int(clip_keys::kFeedForwardLength, m["intermediate_size"].get<int>());
    map.set_int(clip_keys::kBlockCount, m["num_hidden_layers"].get<int>());
    map.set_int(clip_keys::kHeadCount, m["num_attention_heads"].get<int>());
    map.set_float(clip_keys::kLayerNormEps, m["layer_norm_eps"].get<double>());
    map.set_bool(clip_keys::kUseGelu, m["hidden_act"].get<std::string>() == "gelu");
}

struct Case {
    const char* tag;
    DType type;
    const char* ref;  // hidden.{k} (fp32 weights) or hidden_f16w.{k} (weights rounded to f16)
    double max_abs;   // bound enforced on every layer
};

void check_tower(const Case& c) {
    const auto& fx = VisionFixture::get();
    WeightMap map;
    fill_tower(map, c.tag, c.type);
    const ClipVision tower = ClipVision::load(map.source(std::string("fixture ") + c.tag));
    const ClipVisionConfig& cfg = tower.config();
    const int N = cfg.n_layer;
    const std::span<const float> pixels = fx.array(std::string(c.tag) + "/pixels");
    ASSERT_EQ(pixels.size(), (size_t)cfg.num_channels * cfg.image_size * cfg.image_size);

    ThreadPool pool(2);
    Arena arena;
    std::vector<float> out((size_t)cfg.n_patches() * cfg.hidden);
    // Every hidden state, addressed both ways (k and k - (N+1)); -2 is HealthGPT's comprehension
    // layer, 1 its generation layer, N the last block.
    for (int k = 0; k <= N; ++k)
        for (int layer : {k, k - (N + 1)}) {
            const int ran = tower.forward(out.data(), pixels.data(), layer, arena, pool);
            arena.reset();
            EXPECT_EQ(ran, k) << "layer " << layer;
            const auto ref = fx.array(std::string(c.tag) + "/" + c.ref + "." + std::to_string(k));
            ASSERT_EQ(ref.size(), out.size());
            const hgtest::ErrorStats e = hgtest::compare(out, ref);
            std::printf("  %s %s weights, layer %3d (hidden_states[%d]): %s\n", c.tag, dtype_name(c.type), layer, k,
                        hgtest::to_string(e).c_str());
            EXPECT_EQ(e.n_nonfinite, 0u);
            EXPECT_LE(e.max_abs, c.max_abs) << c.tag << " layer " << layer;
            EXPECT_LE(e.nmse, 1e-11) << c.tag << " layer " << layer;
        }
}

}  // namespace

// The fixture towers: A = ViT-L/14 recipe shrunk (patch 14, 4x4 grid, 64 wide, 4 heads, 5 blocks,
// quick_gelu); B = patch 7, 5x5 grid, 48 wide, 3 heads of 16, 3 blocks, exact GELU.
// Bounds: activations are O(1) (LayerNorm outputs, residual stream up to ~10); fp32 through
// 5 blocks of 64-wide GEMMs gives ~1e-6..1e-5 absolute.
TEST(ClipVisionParity, HiddenStatesTowerA_F32) { check_tower({"clip_a", DType::F32, "hidden", 2e-5}); }
TEST(ClipVisionParity, HiddenStatesTowerB_F32) { check_tower({"clip_b", DType::F32, "hidden", 2e-5}); }
// F16 matrices (what the converter writes), against transformers run on the same f16-rounded
// weights in fp32: the only difference left is arithmetic order, so the same bound holds.
TEST(ClipVisionParity, HiddenStatesTowerA_F16Weights) { check_tower({"clip_a", DType::F16, "hidden_f16w", 2e-5}); }
TEST(ClipVisionParity, HiddenStatesTowerB_F16Weights) { check_tower({"clip_b", DType::F16, "hidden_f16w", 2e-5}); }

// The tower stops after the requested layer: every block past it gets NaN weights, so running
// any of them would poison the residual stream (it is updated in place) and the output.
TEST(ClipVisionParity, StopsAfterRequestedLayer) {
    const auto& fx = VisionFixture::get();
    const int N = fx.manifest()["clip"]["clip_a"]["num_hidden_layers"].get<int>();
    const std::span<const float> pixels = fx.array("clip_a/pixels");
    ThreadPool pool(2);
    for (int k : {1, N - 1}) {
        WeightMap map;
        fill_tower(map, "clip_a", DType::F32);
        std::vector<std::vector<float>> nan_store;
        for (int i = k; i < N; ++i)
            for (const char* part : {"attn_q", "attn_out", "ffn_up", "ffn_down"}) {
                const std::string name = clip_names::block(i, part, "weight");
                const Tensor t = *map.source("").tensor(name);
                nan_store.emplace_back(t.numel(), std::numeric_limits<float>::quiet_NaN());
                map.add_converted(name, DType::F32, {t.shape[0], t.shape[1]}, nan_store.back().data());
            }
        const ClipVision tower = ClipVision::load(map.source("fixture clip_a (NaN past block k)"));
        const int layer = k == 1 ? 1 : -2;
        const std::vector<float> out = tower.forward(pixels.data(), layer, pool);
        const hgtest::ErrorStats e = hgtest::compare(out, fx.array("clip_a/hidden." + std::to_string(k)));
        EXPECT_EQ(e.n_nonfinite, 0u) << "a block past " << k << " ran";
        EXPECT_LE(e.max_abs, 2e-5);
        // and the last layer does see the NaN blocks: the guard itself works
        Arena arena;
        std::vector<float> last(out.size());
        EXPECT_EQ(tower.forward(last.data(), pixels.data(), -1, arena, pool), N);
        EXPECT_TRUE(std::isnan(last[0]));
    }
}

TEST(ClipVisionParity, LayerIndexResolution) {
    WeightMap map;
    fill_tower(map, "clip_a", DType::F32);
    const ClipVision tower = ClipVision::load(map.source("fixture clip_a"));
    const int N = tower.config().n_layer;  // 5: hidden_states[0..5]
    EXPECT_EQ(tower.resolve_layer(0), 0);
    EXPECT_EQ(tower.resolve_layer(1), 1);
    EXPECT_EQ(tower.resolve_layer(-1), N);
    EXPECT_EQ(tower.resolve_layer(-2), N - 1);
    EXPECT_EQ(tower.resolve_layer(-(N + 1)), 0);
    EXPECT_THROW(tower.resolve_layer(N + 1), Error);
    EXPECT_THROW(tower.resolve_layer(-(N + 2)), Error);
}

// Every key of the real openai/clip-vit-large-patch14-336 vision tower (listed by transformers)
// maps to a GGUF name, and the mapped set is exactly what the ViT-L/14-336 loader binds.
TEST(ClipVisionParity, RealViTL14KeysMapToLoaderNames) {
    const auto& keys = VisionFixture::get().manifest()["clip"]["vit_l14_336_keys"];
    ASSERT_EQ(keys.size(), 391u);
    std::vector<uint16_t> zeros(4096 * 1024, 0);  // every view aliases this (F16 zeros)
    WeightMap map;
    std::set<std::string> names;
    for (const auto& [hf, shape_json] : keys.items()) {
        const std::optional<std::string> name = clip_gguf_name(hf);
        if (!name) {
            EXPECT_EQ(hf.rfind("vision_model.post_layernorm.", 0), 0u) << hf;
            continue;
        }
        EXPECT_TRUE(names.insert(*name).second) << "two keys map to " << *name;
        const std::vector<int64_t> shape = shape_json.get<std::vector<int64_t>>();
        Tensor t = Tensor::view(DType::F16, shape.data(), (int)shape.size(), zeros.data());
        ASSERT_LE(t.nbytes(), zeros.size() * 2) << hf;
        map.add(*name, t);
    }
    EXPECT_EQ(names.size(), 5u + 16u * 24u);
    EXPECT_NO_THROW(ClipVision(ClipVisionConfig::vit_l14_336(), map.source("ViT-L/14-336 key list")));
    EXPECT_EQ(ClipVisionConfig::vit_l14_336().n_patches(), 576);
    // keys that are not the vision tower's
    EXPECT_FALSE(clip_gguf_name("text_model.encoder.layers.0.mlp.fc1.weight"));
    EXPECT_FALSE(clip_gguf_name("visual_projection.weight"));
    EXPECT_FALSE(clip_gguf_name("logit_scale"));
    EXPECT_FALSE(clip_gguf_name("vision_model.encoder.layers.01.mlp.fc1.weight"));
    EXPECT_FALSE(clip_gguf_name("vision_model.encoder.layers.0.mlp.fc1.scale"));
    EXPECT_EQ(*clip_gguf_name("vision_model.encoder.layers.23.mlp.fc2.bias"), "v.blk.23.ffn_down.bias");
}

TEST(ClipVisionParity, BadWeightsFailWithNames) {
    auto message = [](const WeightMap& map) -> std::string {
        try {
            ClipVision::load(map.source("vision.gguf"));
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    };
    {
        WeightMap map;
        fill_tower(map, "clip_a", DType::F32);
        map.erase("v.blk.3.attn_k.bias");
        EXPECT_EQ(message(map), "vision.gguf: tensor v.blk.3.attn_k.bias is missing");
    }
    {
        WeightMap map;
        fill_tower(map, "clip_a", DType::F32);
        std::vector<float> w(64 * 65);
        map.add_converted("v.blk.0.attn_q.weight", DType::F32, {64, 65}, w.data());
        EXPECT_EQ(message(map), "vision.gguf: tensor v.blk.0.attn_q.weight has shape [64, 65], expected [64, 64]");
    }
    {
        WeightMap map;
        fill_tower(map, "clip_a", DType::F32);
        map.set_int(clip_keys::kHeadCount, 3);  // 64 % 3 != 0
        EXPECT_NE(message(map).find("not a multiple of the head count 3"), std::string::npos) << message(map);
    }
    {
        WeightMap map;
        fill_tower(map, "clip_a", DType::F32);
        map.set_string(clip_keys::kArchitecture, "phi3");
        EXPECT_NE(message(map).find("expected 'clip'"), std::string::npos) << message(map);
    }
    {
        WeightMap map;
        fill_tower(map, "clip_a", DType::F32);
        map.set_int(clip_keys::kImageSize, 1 << 20);
        map.set_int(clip_keys::kPatchSize, 1);
        EXPECT_EQ(message(map), "vision.gguf: CLIP image size 1048576 / patch size 1 give too many patches");
    }
    {
        WeightMap map;
        fill_tower(map, "clip_a", DType::F32);
        map.set_float(clip_keys::kLayerNormEps, -1.0);
        EXPECT_EQ(message(map), "vision.gguf: CLIP layer-norm epsilon -1 is invalid");
    }
    {
        WeightMap map;
        fill_tower(map, "clip_a", DType::F32);
        map.set_int(clip_keys::kImageSize, 112);  // position table no longer fits the grid
        EXPECT_EQ(message(map), "vision.gguf: tensor v.position_embd.weight has shape [17, 64], expected [65, 64]");
    }
}
