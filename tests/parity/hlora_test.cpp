// H-LoRA linear vs a PyTorch module written from the specification (tests/reference/gen_vision.py,
// HLoraLinearSpec), plus plugin loading and the HealthGPT key mapping.
#include <algorithm>
#include <cmath>
#include <string>

#include "clip_fixture.h"
#include "core/arena.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/thread_pool.h"
#include "model/hlora.h"
#include "test_util.h"

using namespace hg;
using hgtest::VisionFixture;

namespace {

// The fixture's linear `tag` as weight/bias + blk.0.{linear}.hlora_* in a map, every tensor in `type`.
void fill_linear(WeightMap& map, const std::string& tag, const std::string& linear, DType type) {
    const auto& fx = VisionFixture::get();
    fx.add_to(map, tag + "/weight", "weight", type);
    if (fx.has(tag + "/bias")) fx.add_to(map, tag + "/bias", "bias", type);
    for (const char* part : {plugin_names::kA, plugin_names::kB, plugin_names::kRoute})
        fx.add_to(map, tag + "/" + part, plugin_names::tensor(0, linear, part), type);
}

struct Result {
    std::vector<float> fast, ref;
};

// y = x·Wᵀ + b, then the adapter added by the fast path and (separately) by the reference path.
Result run_linear(const WeightMap& map, const std::string& linear, const nlohmann::json& m, std::span<const float> x,
                  int64_t M) {
    const WeightSource src = map.source("fixture");
    const int n = m["experts"].get<int>();
    const int64_t r = m["rank"].get<int64_t>();
    const float s = hlora_scaling(m["alpha"].get<double>(), r, n);
    const HLoraWeights w = HLoraWeights::bind(src, "blk.0." + linear, r, n, s);
    const Tensor W = *src.tensor("weight");
    w.check_fits(W, "fixture linear");
    std::vector<float> bias;
    if (auto b = src.tensor("bias")) bias = require_f32(src, "bias", {W.shape[0]});

    ThreadPool pool(2);
    Arena arena;
    Result res;
    res.fast.resize(M * W.shape[0]);
    matmul(res.fast.data(), x.data(), W, bias.empty() ? nullptr : bias.data(), M, pool);
    res.ref = res.fast;
    hlora_add(res.fast.data(), x.data(), M, w, arena, pool);
    hlora_add_ref(res.ref.data(), x.data(), M, w);
    return res;
}

struct Linear {
    const char* tag;     // fixture group
    const char* linear;  // llama.cpp name it stands for
};
constexpr Linear kLinears[] = {{"qkv", "attn_qkv"}, {"gate_up", "ffn_up"}, {"down", "ffn_down"}};

void report(const char* what, const char* tag, DType t, int64_t M, const hgtest::ErrorStats& e) {
    std::printf("  %-28s %-8s %-5s M=%-2lld %s\n", what, tag, dtype_name(t), (long long)M, hgtest::to_string(e).c_str());
}

}  // namespace

TEST(HLoraParity, ScalingIsAlphaTimesExpertsOverRank) {
    const auto& hl = VisionFixture::get().manifest()["hlora"];
    for (const auto& lin : kLinears) {
        const auto& m = hl[lin.tag];
        EXPECT_EQ(hlora_scaling(m["alpha"], m["rank"], m["experts"]), m["scaling"].get<float>()) << lin.tag;
    }
    // the released configs (healthgpt-reference.md §4.2): all 8
    EXPECT_EQ(hlora_scaling(128, 64, 4), 8.0f);   // M3 COM
    EXPECT_EQ(hlora_scaling(512, 256, 4), 8.0f);  // M3 GEN
    EXPECT_EQ(hlora_scaling(64, 32, 4), 8.0f);    // L14 / XL32 COM
}

// fp32 weights: the fast path and the reference path against torch. Outputs are O(1);
// fp32 GEMMs of width <= 160 plus a rank-64 adapter: bound 1e-5 absolute.
// BF16 weights (the released plugins are BF16) against torch on the same bf16-rounded weights in
// fp32 arithmetic: our BF16 path widens exactly, so the same bound holds.
TEST(HLoraParity, LinearMatchesTorch) {
    const auto& fx = VisionFixture::get();
    int n_cases = 0;
    for (const auto& lin : kLinears) {
        const auto& m = fx.manifest()["hlora"][lin.tag];
        for (DType type : {DType::F32, DType::BF16}) {
            WeightMap map;
            fill_linear(map, lin.tag, lin.linear, type);
            for (int64_t M : m["rows"].get<std::vector<int64_t>>()) {
                const std::string sfx = "." + std::to_string(M);
                const Result r = run_linear(map, lin.linear, m, fx.array(std::string(lin.tag) + "/x" + sfx), M);
                const auto ref = fx.array(std::string(lin.tag) + (type == DType::F32 ? "/y" : "/y_bf16w") + sfx);
                ASSERT_EQ(ref.size(), r.fast.size());
                const hgtest::ErrorStats ef = hgtest::compare(r.fast, ref), er = hgtest::compare(r.ref, ref);
                report("fast path vs torch", lin.tag, type, M, ef);
                report("reference path vs torch", lin.tag, type, M, er);
                for (const auto* e : {&ef, &er}) {
                    EXPECT_EQ(e->n_nonfinite, 0u);
                    EXPECT_LE(e->max_abs, 1e-5) << lin.tag << " M=" << M;
                    EXPECT_LE(e->nmse, 1e-12) << lin.tag << " M=" << M;
                }
                // The adapter is not negligible in these cases: without it the error would be large.
                const hgtest::ErrorStats eb = hgtest::compare(fx.array(std::string(lin.tag) + "/base" + sfx), ref);
                EXPECT_GT(eb.max_abs, 0.05) << lin.tag;
                ++n_cases;
            }
        }
    }
    EXPECT_EQ(n_cases, 12);
}

// How far the reference run entirely in bfloat16 (weights, activations, every intermediate
// rounded to bf16 as torch does on CPU) sits from our fp32 arithmetic on the same BF16 weights.
// bf16 keeps 8 significant bits (one ulp = 2^-7 relative at most); the bf16 chain rounds the base
// output, A·x, the scaled and gated rank vector, B·(…) and the sum, each to half an ulp of its own
// magnitude. Bounds: max_abs <= 2 bf16 ulps of the largest output (2 · 2^-7 · max|y|), nmse <= 1e-4
// (1 % rms); observed <= 0.81 ulp and nmse <= 2.8e-5. A formula difference (gate, scaling, expert order)
// moves outputs by O(1) and fails both.
TEST(HLoraParity, Bf16ReferenceWithinBf16Precision) {
    const auto& fx = VisionFixture::get();
    for (const auto& lin : kLinears) {
        const auto& m = fx.manifest()["hlora"][lin.tag];
        WeightMap map;
        fill_linear(map, lin.tag, lin.linear, DType::BF16);
        for (int64_t M : m["rows"].get<std::vector<int64_t>>()) {
            const std::string sfx = "." + std::to_string(M);
            const Result r = run_linear(map, lin.linear, m, fx.array(std::string(lin.tag) + "/x" + sfx), M);
            const auto ref = fx.array(std::string(lin.tag) + "/y_bf16" + sfx);
            double ymax = 0;
            for (float v : ref) ymax = std::max(ymax, (double)std::fabs(v));
            const hgtest::ErrorStats e = hgtest::compare(r.fast, ref);
            report("fast path vs torch in bf16", lin.tag, DType::BF16, M, e);
            std::printf("    max|y| = %.3f, max_abs = %.2f bf16 ulps of max|y|\n", ymax,
                        e.max_abs / (std::ldexp(1.0, -7) * ymax));
            EXPECT_LE(e.nmse, 1e-4) << lin.tag << " M=" << M;
            EXPECT_LE(e.max_abs, 2 * std::ldexp(1.0, -7) * ymax) << lin.tag << " M=" << M;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plugin files

namespace {

// A two-layer plugin over the fixture's qkv linear (rank 16, alpha 32, 4 experts) and projector.
void fill_plugin(WeightMap& map) {
    const auto& fx = VisionFixture::get();
    for (int layer : {0, 1})
        for (const char* part : {plugin_names::kA, plugin_names::kB, plugin_names::kRoute})
            fx.add_to(map, std::string("qkv/") + part, plugin_names::tensor(layer, "attn_qkv", part), DType::BF16);
    for (const char* n : {"mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"})
        fx.add_to(map, std::string("proj_a/") + n, n, DType::BF16);
    map.set_string(plugin_keys::kGeneralType, "adapter");
    map.set_string(plugin_keys::kTask, "comprehension");
    map.set_int(plugin_keys::kVisionLayer, -2);
    map.set_int(plugin_keys::kRank, 16);
    map.set_float(plugin_keys::kAlpha, 32);
    map.set_int(plugin_keys::kExperts, 4);
    map.set_string(plugin_keys::kProjectorType, "mlp2x_gelu");
}

std::string load_error(const WeightMap& map) {
    try {
        HLoraPlugin::load(map.source("plugin.gguf"));
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(HLoraPlugin, LoadsAdaptersProjectorAndMetadata) {
    WeightMap map;
    fill_plugin(map);
    const HLoraPlugin p = HLoraPlugin::load(map.source("plugin.gguf"));
    EXPECT_EQ(p.task(), PluginTask::Comprehension);
    EXPECT_EQ(p.vision_layer(), -2);
    EXPECT_EQ(p.rank(), 16);
    EXPECT_EQ(p.experts(), 4);
    EXPECT_EQ(p.scaling(), 8.0f);
    EXPECT_EQ(p.adapters().size(), 2u);
    ASSERT_NE(p.find(1, "attn_qkv"), nullptr);
    EXPECT_EQ(p.find(1, "attn_qkv")->d_out(), 288);
    EXPECT_EQ(p.find(1, "attn_qkv")->per_expert(), 4);
    EXPECT_EQ(p.find(2, "attn_qkv"), nullptr);
    EXPECT_EQ(p.find(0, "ffn_up"), nullptr);
    EXPECT_EQ(p.projector().d_in(), 64);
    EXPECT_EQ(p.projector().d_out(), 96);
    EXPECT_FALSE(p.token_embd().has_value());

    // The loaded adapter computes what torch computes (BF16 weights, fp32 arithmetic).
    const auto& fx = VisionFixture::get();
    WeightMap lin;
    fill_linear(lin, "qkv", "attn_qkv", DType::BF16);
    const Tensor W = *lin.source("").tensor("weight");
    p.find(0, "attn_qkv")->check_fits(W, "blk.0.attn_qkv.weight");
    ThreadPool pool(2);
    Arena arena;
    std::vector<float> y(9 * 288);
    matmul(y.data(), fx.array("qkv/x.9").data(), W, nullptr, 9, pool);
    hlora_add(y.data(), fx.array("qkv/x.9").data(), 9, *p.find(0, "attn_qkv"), arena, pool);
    EXPECT_LE(hgtest::compare(y, fx.array("qkv/y_bf16w.9")).max_abs, 1e-5);
}

TEST(HLoraPlugin, BadFilesFailWithNames) {
    {
        WeightMap map;
        fill_plugin(map);
        EXPECT_EQ(load_error(map), "");
        map.erase("blk.1.attn_qkv.hlora_route");
        EXPECT_EQ(load_error(map), "plugin.gguf: tensor blk.1.attn_qkv.hlora_route is missing (its adapter is incomplete)");
    }
    {
        WeightMap map;
        fill_plugin(map);
        map.set_int(plugin_keys::kRank, 32);
        EXPECT_EQ(load_error(map), "plugin.gguf: tensor blk.0.attn_qkv.hlora_a has shape [16, 96], expected [32, 96]");
    }
    {
        WeightMap map;
        fill_plugin(map);
        map.set_int(plugin_keys::kRank, 18);
        EXPECT_EQ(load_error(map), "plugin.gguf: H-LoRA rank 18 is not a positive multiple of the expert count 4");
    }
    {
        WeightMap map;
        fill_plugin(map);
        map.set_int(plugin_keys::kExperts, 2);
        EXPECT_EQ(load_error(map),
                  "plugin.gguf: tensor blk.0.attn_qkv.hlora_route has shape [4, 96], expected [2, 96]");
    }
    {
        WeightMap map;
        fill_plugin(map);
        std::vector<float> z(16 * 96);
        map.add_converted("blk.0.attn_qkvx.hlora_a", DType::F32, {16, 96}, z.data());
        EXPECT_EQ(load_error(map), "plugin.gguf: tensor blk.0.attn_qkvx.hlora_a wraps an unknown linear 'attn_qkvx'");
    }
    {
        WeightMap map;
        fill_plugin(map);
        std::vector<float> z(4);
        map.add_converted("v.blk.0.ln1.weight", DType::F32, {4}, z.data());
        EXPECT_EQ(load_error(map), "plugin.gguf: unexpected tensor v.blk.0.ln1.weight in a plugin file");
    }
    {
        WeightMap map;
        fill_plugin(map);
        map.set_string(plugin_keys::kTask, "segmentation");
        EXPECT_EQ(load_error(map),
                  "plugin.gguf: healthgpt.plugin.task is 'segmentation', expected 'comprehension' or 'generation'");
    }
    {
        WeightMap map;
        fill_plugin(map);
        map.set_string(plugin_keys::kGeneralType, "model");
        EXPECT_EQ(load_error(map), "plugin.gguf: general.type is 'model', expected 'adapter' (a plugin file)");
    }
    {
        WeightMap map;
        fill_plugin(map);
        map.erase("mm.0.weight");
        EXPECT_EQ(load_error(map), "plugin.gguf: projector tensor mm.0.weight is missing");
    }
    {
        WeightMap map;
        fill_plugin(map);
        std::vector<float> z(8 * 96);
        map.add_converted("token_embd.weight", DType::F32, {8, 96}, z.data());
        EXPECT_EQ(load_error(map), "plugin.gguf: a plugin carries both token_embd.weight and output.weight or neither");
    }
    {
        WeightMap map;
        fill_plugin(map);
        // The adapter does not fit the linear the decoder would give it
        const HLoraPlugin p = HLoraPlugin::load(map.source("plugin.gguf"));
        std::vector<float> w(96 * 96);
        const Tensor W = Tensor::view(DType::F32, {96, 96}, w.data());
        try {
            p.find(0, "attn_qkv")->check_fits(W, "text.gguf: blk.0.attn_qkv.weight");
            FAIL() << "no error";
        } catch (const Error& e) {
            EXPECT_STREQ(e.what(),
                         "text.gguf: blk.0.attn_qkv.weight: the H-LoRA adapter maps 96 -> 288 but the linear is [96, 96]");
        }
    }
}

// The HealthGPT .bin key layout (healthgpt-reference.md §1.3) -> our plugin GGUF names.
TEST(HLoraPlugin, HealthGptKeyMapping) {
    const std::pair<const char*, const char*> cases[] = {
        {"base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight", "blk.0.attn_qkv.hlora_a"},
        {"base_model.model.model.layers.31.self_attn.qkv_proj.lora_B.weight", "blk.31.attn_qkv.hlora_b"},
        {"base_model.model.model.layers.7.self_attn.qkv_proj.lora_route.weight", "blk.7.attn_qkv.hlora_route"},
        {"base_model.model.model.layers.7.self_attn.o_proj.lora_A.weight", "blk.7.attn_output.hlora_a"},
        {"base_model.model.model.layers.7.mlp.gate_up_proj.lora_B.weight", "blk.7.ffn_up.hlora_b"},
        {"base_model.model.model.layers.39.mlp.down_proj.lora_route.weight", "blk.39.ffn_down.hlora_route"},
        {"base_model.model.model.layers.63.self_attn.q_proj.lora_A.weight", "blk.63.attn_q.hlora_a"},
        {"base_model.model.model.layers.63.self_attn.k_proj.lora_A.weight", "blk.63.attn_k.hlora_a"},
        {"base_model.model.model.layers.63.self_attn.v_proj.lora_B.weight", "blk.63.attn_v.hlora_b"},
        {"base_model.model.model.layers.2.mlp.gate_proj.lora_A.weight", "blk.2.ffn_gate.hlora_a"},
        {"base_model.model.model.layers.2.mlp.up_proj.lora_route.weight", "blk.2.ffn_up.hlora_route"},
        {"base_model.model.model.mm_projector.0.weight", "mm.0.weight"},
        {"base_model.model.model.mm_projector.0.bias", "mm.0.bias"},
        {"base_model.model.model.mm_projector.2.weight", "mm.2.weight"},
        {"base_model.model.model.mm_projector.2.bias", "mm.2.bias"},
        {"base_model.model.model.embed_tokens.weight", "token_embd.weight"},
        {"base_model.model.lm_head.weight", "output.weight"},
    };
    for (const auto& [key, want] : cases) {
        const auto got = plugin_gguf_name(key);
        ASSERT_TRUE(got.has_value()) << key;
        EXPECT_EQ(*got, want) << key;
    }
    for (const char* key : {
             "base_model.model.model.layers.0.self_attn.qkv_proj.weight",  // a base weight, not the plugin's
             "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.default.weight",  // modern peft layout
             "base_model.model.model.layers.00.self_attn.qkv_proj.lora_A.weight",
             "base_model.model.model.layers.x.self_attn.qkv_proj.lora_A.weight",
             "base_model.model.model.layers.0.mlp.qkv_proj.lora_A.weight",
             "base_model.model.model.mm_projector.1.weight",
             "model.layers.0.self_attn.qkv_proj.lora_A.weight",
             "base_model.model.model.norm.weight",
         })
        EXPECT_FALSE(plugin_gguf_name(key).has_value()) << key;
}
