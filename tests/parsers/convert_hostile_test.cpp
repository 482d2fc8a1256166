// Malicious and malformed inputs through `healthgpt convert`: each is refused with an error that names
// the file and the problem, nothing is executed, and the model folder is left exactly as it was (no
// partial file, no staging folder). Inputs: tests/fixtures/convert/hostile/ (gen_convert.py) and
// copies of the good fixtures broken here (truncated, edited).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>

#include "convert/convert.h"
#include "convert/quantize.h"
#include "core/error.h"
#include "formats/gguf.h"
#include "parity/convert_fixture.h"

using namespace hg;
using convtest::fix;
using convtest::q;
namespace fs = std::filesystem;

namespace {

// A model folder with the Phi-3-like base converted (shared by the plugin tests; copied per test).
const fs::path& base_folder() {
    static const fs::path dir = [] {
        const fs::path d = convtest::scratch("base");
        ModelOptions o;
        o.out = d;
        TextOptions t;
        t.hf_dir = fix("phi3");
        o.text = t;
        convert_model(o, [](const std::string&) {});
        return d;
    }();
    return dir;
}

fs::path fresh_model(const std::string& name) {
    const fs::path d = convtest::scratch(name);
    convtest::copy_tree(base_folder(), d);
    return d;
}

PluginOptions com(const fs::path& file) {
    PluginOptions p;
    p.hlora = file;
    p.task = "comprehension";
    p.alpha = 16;
    return p;
}

// Converts `o` and expects an hg::Error containing every string of `want`; the folder must not change.
void expect_refused(ModelOptions o, const std::vector<std::string>& want) {
    const auto before = convtest::listing(o.out);
    try {
        convert_model(o, [](const std::string&) {});
        ADD_FAILURE() << "accepted";
    } catch (const hg::Error& e) {
        const std::string msg = e.what();
        std::printf("refused: %s\n", msg.substr(0, 400).c_str());
        for (const auto& w : want) EXPECT_NE(msg.find(w), std::string::npos) << "missing \"" << w << "\" in: " << msg;
    }
    EXPECT_EQ(convtest::listing(o.out), before) << "the model folder changed";
    for (const auto& e : fs::directory_iterator(fs::absolute(o.out).parent_path()))
        EXPECT_EQ(e.path().filename().string().find(".partial-"), std::string::npos) << "staging folder left: " << e.path();
}

void expect_plugin_refused(const std::string& file, const std::vector<std::string>& want, const std::string& name) {
    ModelOptions o;
    o.out = fresh_model(name);
    o.plugins.push_back(com(fix("hostile/" + file)));
    expect_refused(o, want);
}

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const fs::path& p, const std::string& s) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << s;
}

}  // namespace

// --- plugins (torch.save pickles read by the strict unpickler)

TEST(ConvertHostile, PluginCallingOsSystemIsNeverRun) {
    fs::remove("/tmp/healthgpt_pwned");
    expect_plugin_refused("com_os_system.bin", {"com_os_system.bin", "posix.system"}, "os_system");
    EXPECT_FALSE(fs::exists("/tmp/healthgpt_pwned"));
}

TEST(ConvertHostile, PluginWithUnknownGlobal) {
    expect_plugin_refused("com_unknown_global.bin", {"com_unknown_global.bin", "UnknownThing"}, "unknown_global");
}

TEST(ConvertHostile, TruncatedZip) {
    const fs::path d = convtest::scratch("trunc_src");
    const std::string good = slurp(fix("phi3_plugins/com_hlora_weights.bin"));
    for (double frac : {0.2, 0.6, 0.97}) {
        const fs::path f = d / ("com_truncated_" + std::to_string(int(frac * 100)) + ".bin");
        spit(f, good.substr(0, size_t(good.size() * frac)));
        ModelOptions o;
        o.out = fresh_model("trunc_" + std::to_string(int(frac * 100)));
        o.plugins.push_back(com(f));
        expect_refused(o, {f.filename().string()});
    }
}

TEST(ConvertHostile, PluginWithWrongShape) {
    expect_plugin_refused("com_wrong_shape.bin",
                          {"do not have the expected shape", "layers.1.self_attn.o_proj.lora_A.weight", "[9, 48]", "expected [8, 48]"},
                          "wrong_shape");
}

TEST(ConvertHostile, PluginWithDuplicateKey) {
    expect_plugin_refused("com_duplicate_key.bin", {"com_duplicate_key.bin", "duplicate dict key"}, "dup");
}

TEST(ConvertHostile, PluginWithMissingTensor) {
    expect_plugin_refused("com_missing_tensor.bin", {"expected tensors are missing", "blk.1.attn_output.hlora_b"}, "missing");
}

TEST(ConvertHostile, PluginWithUnknownKeyRefusedUnlessAllowed) {
    expect_plugin_refused("com_unknown_key.bin", {"not part of the expected layout", "lora_magnitude", "--allow-unknown"},
                          "unknown_key");
    ModelOptions o;
    o.out = fresh_model("unknown_key_allowed");
    PluginOptions p = com(fix("hostile/com_unknown_key.bin"));
    p.allow_unknown = true;
    o.plugins.push_back(p);
    std::string log;
    convert_model(o, [&](const std::string& l) { log += l + "\n"; });
    EXPECT_NE(log.find("1 UNKNOWN keys skipped (--allow-unknown): base_model.model.model.layers.0.self_attn.o_proj.lora_magnitude.weight"),
              std::string::npos) << log;
    EXPECT_TRUE(fs::exists(o.out / "plugins" / "com.gguf"));
}

TEST(ConvertHostile, PluginMixingKeyLayouts) {
    expect_plugin_refused("com_mixed_layout.bin", {"a different key layout", "lora_A.default.weight"}, "mixed");
}

TEST(ConvertHostile, PluginWithIntegerTensor) {
    expect_plugin_refused("com_int_tensor.bin", {"element type I64"}, "int_tensor");
}

TEST(ConvertHostile, PluginForABaseWithMoreLayers) {
    expect_plugin_refused("com_three_layers.bin", {"layer 2", "has 2 layers", "another base model"}, "three_layers");
}

TEST(ConvertHostile, PluginForAnotherHiddenSize) {
    // the phi-4-like plugin (hidden 64) on the Phi-3-like base (hidden 48)
    ModelOptions o;
    o.out = fresh_model("phi4_on_phi3");
    o.plugins.push_back(com(fix("phi4_plugins/com_hlora_weights_phi4.bin")));
    expect_refused(o, {"hidden size 48", "is 64", "another base model"});
}

TEST(ConvertHostile, QwenPluginOnAPhi3Base) {
    ModelOptions o;
    o.out = fresh_model("qwen_on_phi3");
    o.plugins.push_back(com(fix("qwen2_plugins/com_hlora_weights_QWEN_32B.bin")));
    expect_refused(o, {"self_attn.q_proj", "do not exist in the phi3 base", "another base model"});
}

TEST(ConvertHostile, PluginWithoutBase) {
    ModelOptions o;
    o.out = convtest::scratch("no_base");
    o.plugins.push_back(com(fix("phi3_plugins/com_hlora_weights.bin")));
    expect_refused(o, {"checked against its base model", "text.gguf"});
}

TEST(ConvertHostile, UnreleasedShapesNeedAlpha) {
    ModelOptions o;
    o.out = fresh_model("no_alpha");
    PluginOptions p = com(fix("phi3_plugins/com_hlora_weights.bin"));
    p.alpha.reset();
    o.plugins.push_back(p);
    expect_refused(o, {"not a released HealthGPT plugin", "alpha is not stored in the file", "--alpha"});
    p.alpha = 16;
    p.rank = 64;  // the shapes say 8
    o.plugins = {p};
    expect_refused(o, {"--rank 64, but the tensors have rank 8"});
}

TEST(ConvertHostile, GenerationNeedsFusionAndComprehensionRefusesIt) {
    ModelOptions o;
    o.out = fresh_model("gen_no_fusion");
    PluginOptions p = com(fix("phi3_plugins/gen_hlora_weights.bin"));
    p.task = "generation";
    o.plugins = {p};
    expect_refused(o, {"needs its fusion layers"});
    p = com(fix("phi3_plugins/com_hlora_weights.bin"));
    p.fusion = fix("phi3_plugins/fusion_layer_weights.bin");
    o.plugins = {p};
    expect_refused(o, {"does not load"});
}

TEST(ConvertHostile, AcceptedVariantLayoutsGiveTheSameFile) {
    // ".default." (modern PEFT) and no "base_model.model." prefix: same tensors, layout reported
    ModelOptions o;
    o.out = fresh_model("layouts");
    o.plugins.push_back(com(fix("phi3_plugins/com_hlora_weights.bin")));
    PluginOptions a = com(fix("hostile/com_default_layout.bin"));
    a.name = "with_default";
    PluginOptions b = com(fix("hostile/com_no_prefix.bin"));
    b.name = "no_prefix";
    o.plugins.push_back(a);
    o.plugins.push_back(b);
    std::string log;
    convert_model(o, [&](const std::string& l) { log += l + "\n"; });
    EXPECT_NE(log.find("key layout: base_model.model.model.layers.{i}.<module>.lora_{A,B,route}.weight (HealthGPT"), std::string::npos);
    EXPECT_NE(log.find("lora_{A,B,route}.default.weight (modern PEFT"), std::string::npos);
    EXPECT_NE(log.find("(no PEFT wrapper prefix)"), std::string::npos);
    auto ref = GGUFFile::open(o.out / "plugins/com.gguf");
    for (const char* n : {"with_default", "no_prefix"}) {
        auto f = GGUFFile::open(o.out / "plugins" / (std::string(n) + ".gguf"));
        ASSERT_EQ(f->tensors().size(), ref->tensors().size()) << n;
        for (const auto& t : ref->tensors()) {
            const auto* o2 = f->find_tensor(t.name);
            ASSERT_NE(o2, nullptr) << n << " " << t.name;
            const auto x = f->tensor_bytes(*o2), y = ref->tensor_bytes(t);
            EXPECT_TRUE(x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size()) == 0) << n << " " << t.name;
        }
    }
}

// --- base model (safetensors shards + config.json)

TEST(ConvertHostile, SafetensorsHeaderPointingOutsideTheFile) {
    const fs::path src = convtest::scratch("st_outside") / "phi3";
    convtest::copy_tree(fix("phi3"), src);
    const fs::path shard = src / "model-00002-of-00003.safetensors";
    const std::string bytes = slurp(shard);
    spit(shard, bytes.substr(0, bytes.size() - 100));  // the header now points past the end
    const fs::path out = convtest::scratch("st_outside_out") / "model";
    const auto r = convtest::run_cli("convert --base " + q(src) + " -o " + q(out));
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
    EXPECT_NE(r.out.find("model-00002-of-00003.safetensors"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(out));
}

TEST(ConvertHostile, SafetensorsIndexWithDuplicateKey) {
    const fs::path src = convtest::scratch("st_dup") / "phi3";
    convtest::copy_tree(fix("phi3"), src);
    std::string idx = slurp(src / "model.safetensors.index.json");
    const size_t at = idx.find("\"weight_map\": {") + 15;
    idx.insert(at, "\n    \"lm_head.weight\": \"model-00001-of-00003.safetensors\",");
    spit(src / "model.safetensors.index.json", idx);
    ModelOptions o;
    o.out = convtest::scratch("st_dup_out") / "model";
    TextOptions t;
    t.hf_dir = src;
    o.text = t;
    expect_refused(o, {"duplicate", "lm_head.weight"});
    EXPECT_FALSE(fs::exists(o.out));
}

TEST(ConvertHostile, BaseWhoseConfigDisagreesWithTheWeights) {
    const fs::path src = convtest::scratch("cfg") / "phi3";
    convtest::copy_tree(fix("phi3"), src);
    std::string cfg = slurp(src / "config.json");
    const std::string key = "\"intermediate_size\": 64";
    ASSERT_NE(cfg.find(key), std::string::npos);
    cfg.replace(cfg.find(key), key.size(), "\"intermediate_size\": 80");
    spit(src / "config.json", cfg);
    ModelOptions o;
    o.out = fresh_model("cfg_out");
    TextOptions t;
    t.hf_dir = src;
    o.text = t;
    expect_refused(o, {"do not have the expected shape", "gate_up_proj.weight: shape [128, 48], config.json implies [160, 48]"});

    cfg.replace(cfg.find("\"intermediate_size\": 80"), key.size(), key);
    const std::string layers = "\"num_hidden_layers\": 2";
    cfg.replace(cfg.find(layers), layers.size(), "\"num_hidden_layers\": 3");
    spit(src / "config.json", cfg);
    expect_refused(o, {"expected tensors are missing", "model.layers.2."});

    cfg.replace(cfg.find("\"num_hidden_layers\": 3"), layers.size(), layers);
    const std::string rs = "\"rope_scaling\": null";
    ASSERT_NE(cfg.find(rs), std::string::npos);
    cfg.replace(cfg.find(rs), rs.size(), "\"rope_scaling\": {\"type\": \"longrope\", \"long_factor\": [1.0], \"short_factor\": [1.0]}");
    spit(src / "config.json", cfg);
    expect_refused(o, {"rope_scaling", "longrope", "not supported"});
}

TEST(ConvertHostile, BaseWithUnsupportedArchitectureOrExtraLayers) {
    const fs::path src = convtest::scratch("extra") / "phi3";
    convtest::copy_tree(fix("phi3"), src);
    const std::string good = slurp(src / "config.json");
    ModelOptions o;
    o.out = convtest::scratch("extra_out") / "model";
    TextOptions t;
    t.hf_dir = src;
    o.text = t;
    std::string cfg = good;
    const std::string layers = "\"num_hidden_layers\": 2";
    cfg.replace(cfg.find(layers), layers.size(), "\"num_hidden_layers\": 1");
    spit(src / "config.json", cfg);  // layer 1's tensors are now outside the layout
    expect_refused(o, {"keys are not part of the expected layout", "model.layers.1."});
    cfg = good;
    const std::string mt = "\"model_type\": \"phi3\"";
    ASSERT_NE(cfg.find(mt), std::string::npos);
    cfg.replace(cfg.find(mt), mt.size(), "\"model_type\": \"gemma\"");
    spit(src / "config.json", cfg);
    expect_refused(o, {"model_type \"gemma\" is not supported"});
    EXPECT_FALSE(fs::exists(o.out));
}

// --- VQGAN

TEST(ConvertHostile, VqganConfigThatDisagreesWithTheWeights) {
    ModelOptions o;
    o.out = convtest::scratch("vq_mismatch") / "model";
    o.vqgan = VqganOptions{hgtest::fixture("vqgan/f2_attn2/tiny.ckpt"), fix("vqgan/model_f8.yaml"), WeightType::Auto, false};
    expect_refused(o, {"model_f8.yaml says ch = 128", "have 32"});
    EXPECT_FALSE(fs::exists(o.out));
}

TEST(ConvertHostile, VqganYamlWithPythonTag) {
    const fs::path y = convtest::scratch("vq_tag") / "model.yaml";
    std::string text = slurp(fix("vqgan/model.yaml"));
    text.replace(text.find("target: taming.models.vqgan.GumbelVQ"), 37, "target: !!python/name:os.system ''");
    spit(y, text);
    ModelOptions o;
    o.out = convtest::scratch("vq_tag_out") / "model";
    o.vqgan = VqganOptions{hgtest::fixture("vqgan/f2_attn2/tiny.ckpt"), y, WeightType::Auto, false};
    expect_refused(o, {"model.yaml", "tags are not supported"});
}

TEST(ConvertHostile, VqganCheckpointThatIsNotOne) {
    ModelOptions o;
    o.out = convtest::scratch("vq_not") / "model";
    o.vqgan = VqganOptions{fix("phi3_plugins/com_hlora_weights.bin"), {}, WeightType::Auto, false};
    expect_refused(o, {"no decoder.up.* tensors", "not a taming VQGAN"});
}

// --- values the target type cannot hold

TEST(ConvertHostile, NonFiniteAndOutOfRangeValues) {
    std::vector<uint8_t> dst(4096);
    auto rows_of = [](float bad) {
        return [bad](int64_t r, float* o) {
            for (int i = 0; i < 64; ++i) o[i] = 0.1f * i;
            if (r == 1) o[7] = bad;
        };
    };
    for (DType t : {DType::Q8_0, DType::Q4_0})
        try {
            convert_rows(t, 2, 64, rows_of(std::numeric_limits<float>::quiet_NaN()), dst.data(), "w");
            ADD_FAILURE() << dtype_name(t);
        } catch (const hg::Error& e) {
            EXPECT_NE(std::string(e.what()).find("non-finite value nan (row 1, column 7)"), std::string::npos) << e.what();
        }
    try {
        convert_rows(DType::F16, 2, 64, rows_of(1e5f), dst.data(), "blk.0.w");
        ADD_FAILURE();
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("outside the F16 range"), std::string::npos) << e.what();
    }
    convert_rows(DType::F16, 2, 64, rows_of(65504.0f), dst.data(), "w");  // the largest F16 is fine
    convert_rows(DType::BF16, 2, 64, rows_of(1e30f), dst.data(), "w");    // BF16 has float32's range
}
