// Image generation (runtime/image_generation.h): tasks and their instructions, the prompt, the run on
// the demo model end to end, and every failure path with a clear hg::Error before any heavy work.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "model/vqgan.h"
#include "runtime/demo_model.h"
#include "runtime/image_generation.h"
#include "runtime/pipeline.h"
#include "test_util.h"

using namespace hg;
namespace fs = std::filesystem;

namespace {

// The message of the hg::Error `f` throws ("" if none).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const hg::Error& e) {
        return e.what();
    }
    return "";
}

fs::path demo_dir(const std::string& name) {
    const fs::path dir = hgtest::scratch_dir() / name;
    DemoModelOptions o;
    o.write_example_image = false;
    write_demo_model(dir, o);
    return dir;
}

}  // namespace

// The paper's example instructions (healthgpt-reference.md §5.4) and the CLI's task names.
TEST(ImageGeneration, TasksAndTheirInstructions) {
    for (auto t : {GenerationTask::custom, GenerationTask::ct2mri, GenerationTask::mri2ct, GenerationTask::super_resolution,
                   GenerationTask::reconstruction, GenerationTask::report2xray})
        EXPECT_EQ(generation_task_from_name(generation_task_name(t)), t);
    EXPECT_EQ(generation_task_from_name("sr"), GenerationTask::super_resolution);
    EXPECT_EQ(generation_task_from_name("recon"), GenerationTask::reconstruction);
    EXPECT_FALSE(generation_task_from_name("ct2pet").has_value());
    EXPECT_STREQ(default_instruction(GenerationTask::ct2mri), "I need a version of this CT representation in MRI.");
    EXPECT_STREQ(default_instruction(GenerationTask::mri2ct), "Transform the MRI display into a CT image.");
    EXPECT_STREQ(default_instruction(GenerationTask::super_resolution), "Could you improve the quality of this MRI image?");
    EXPECT_STREQ(default_instruction(GenerationTask::reconstruction), "Reconstruct the image.");
    EXPECT_STREQ(default_instruction(GenerationTask::report2xray), "");

    EXPECT_EQ(resolve_instruction(GenerationTask::ct2mri, "", true), default_instruction(GenerationTask::ct2mri));
    EXPECT_EQ(resolve_instruction(GenerationTask::ct2mri, "  \n", true), default_instruction(GenerationTask::ct2mri));
    EXPECT_EQ(resolve_instruction(GenerationTask::ct2mri, " Make it MRI. ", true), "Make it MRI.");
    EXPECT_EQ(resolve_instruction(GenerationTask::report2xray, "Small left effusion.", false), "Small left effusion.");
    EXPECT_EQ(resolve_instruction(GenerationTask::custom, "Reconstruct.", false), "Reconstruct.");
    EXPECT_EQ(resolve_instruction(GenerationTask::custom, "Reconstruct.", true), "Reconstruct.");

    EXPECT_NE(error_of([] { resolve_instruction(GenerationTask::mri2ct, "", false); }).find("give one (--image)"),
              std::string::npos);
    EXPECT_NE(error_of([] { resolve_instruction(GenerationTask::report2xray, "report", true); }).find("takes no input image"),
              std::string::npos);
    EXPECT_NE(error_of([] { resolve_instruction(GenerationTask::report2xray, " ", false); }).find("radiology report"),
              std::string::npos);
    EXPECT_NE(error_of([] { resolve_instruction(GenerationTask::custom, "", true); }).find("no instruction"),
              std::string::npos);
}

// The exact prompt strings of §3.3 with "<start_index>" appended (gen_infer.py's generation prompt).
TEST(ImageGeneration, PromptIsTheTemplatePlusStartIndex) {
    EXPECT_EQ(image_generation_prompt(text::ChatTemplate::phi3_instruct, "Reconstruct the image.", true),
              "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n<image>\nReconstruct the image.<|end|>\n"
              "<|assistant|>\n<start_index>");
    EXPECT_EQ(image_generation_prompt(text::ChatTemplate::phi3_instruct, "Small left effusion.", false),
              "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\nSmall left effusion.<|end|>\n"
              "<|assistant|>\n<start_index>");
    EXPECT_EQ(image_generation_prompt(text::ChatTemplate::phi4_instruct, "Transform the MRI display into a CT image.", true),
              "<|im_start|>system<|im_sep|>\nYou are a medieval knight and must provide explanations to modern "
              "people.<|im_end|>\n<|im_start|>user<|im_sep|>\n<image>\nTransform the MRI display into a CT "
              "image.<|im_end|>\n<|im_start|>assistant<|im_sep|>\n<start_index>");
}

// End to end on the demo model (random weights): 1,024 indices in the VQGAN's codebook, progress
// 1..1024, the prompt ending in the <start_index> token, and the image equal to decoding those
// indices with the model folder's vqgan.gguf directly and converting as custom_to_pil.
TEST(ImageGeneration, DemoModelEndToEnd) {
    const fs::path dir = demo_dir("demo-generate");
    auto model = Model::load(dir);
    Session session(model);
    const imaging::RgbImage input = synthetic_radiograph(96);
    GenerateImageOptions opt;
    opt.task = GenerationTask::reconstruction;
    std::vector<int64_t> progress;
    opt.on_index = [&](int64_t done, int64_t total) {
        EXPECT_EQ(total, 1024);
        progress.push_back(done);
        return true;
    };
    std::vector<Stage> stages;
    opt.on_progress = [&](const Progress& p) { stages.push_back(p.stage); };
    const GeneratedImage g = generate_image(session, "", &input, opt);

    EXPECT_EQ(g.plugin, "gen");
    EXPECT_EQ(g.instruction, "Reconstruct the image.");
    ASSERT_FALSE(g.prompt_ids.empty());
    EXPECT_EQ(g.prompt_ids.back(), model->vq().start_index);
    EXPECT_EQ(std::count(g.prompt_ids.begin(), g.prompt_ids.end(), text::kImageTokenId), 1);
    ASSERT_EQ(g.indices.size(), 1024u);
    for (int32_t k : g.indices) ASSERT_TRUE(k >= 0 && k < 8192) << k;
    ASSERT_EQ(progress.size(), 1024u);
    for (size_t i = 0; i < progress.size(); ++i) ASSERT_EQ(progress[i], (int64_t)i + 1);
    EXPECT_NE(std::find(stages.begin(), stages.end(), Stage::Vision), stages.end());
    EXPECT_NE(std::find(stages.begin(), stages.end(), Stage::Prefill), stages.end());
    EXPECT_EQ(g.timings.n_indices, 1024);
    EXPECT_EQ(g.timings.n_prompt, (int64_t)g.prompt_ids.size() - 1 + 576);
    ASSERT_EQ(g.image.width, 256);
    ASSERT_EQ(g.image.height, 256);

    auto vf = GGUFFile::open(dir / "vqgan.gguf");
    Vqgan vq = Vqgan::load(*vf, "vqgan.gguf");
    std::vector<float> x((size_t)3 * 256 * 256);
    vq.decode(g.indices, x.data(), default_pool());
    std::vector<uint8_t> rgb((size_t)3 * 256 * 256);
    vqgan_to_pixels(x.data(), 3, 256, rgb.data());
    EXPECT_EQ(rgb, g.image.rgb);

}

TEST(ImageGeneration, FailsClearlyWithoutAGenerationPlugin) {
    const fs::path dir = demo_dir("demo-no-gen");
    fs::remove(dir / "plugins" / "gen.gguf");
    auto model = Model::load(dir);
    Session s(model);
    const imaging::RgbImage img = synthetic_radiograph(32);
    GenerateImageOptions opt;
    opt.task = GenerationTask::reconstruction;
    const std::string e = error_of([&] { generate_image(s, "", &img, opt); });
    EXPECT_NE(e.find("no generation plugin"), std::string::npos) << e;
    EXPECT_NE(e.find("com (comprehension)"), std::string::npos) << e;  // lists what is loaded
    // naming the comprehension plugin is refused too
    opt.plugin = "com";
    const std::string e2 = error_of([&] { generate_image(s, "", &img, opt); });
    EXPECT_NE(e2.find("is a comprehension plugin"), std::string::npos) << e2;
    opt.plugin = "nope";
    EXPECT_NE(error_of([&] { generate_image(s, "", &img, opt); }).find("no plugin named 'nope'"), std::string::npos);
}

TEST(ImageGeneration, FailsClearlyWithoutVqgan) {
    const fs::path dir = demo_dir("demo-no-vqgan");
    fs::remove(dir / "vqgan.gguf");
    auto model = Model::load(dir);
    Session s(model);
    const imaging::RgbImage img = synthetic_radiograph(32);
    GenerateImageOptions opt;
    opt.task = GenerationTask::ct2mri;
    const std::string e = error_of([&] { generate_image(s, "", &img, opt); });
    EXPECT_NE(e.find("vqgan.gguf: no such file"), std::string::npos) << e;
    EXPECT_NE(e.find("healthgpt convert --vqgan"), std::string::npos) << e;
    opt.vqgan = dir / "missing.gguf";
    EXPECT_NE(error_of([&] { generate_image(s, "", &img, opt); }).find("no such VQGAN file"), std::string::npos);
}

// A VQGAN whose latent grid is not 32 x 32 cannot take HealthGPT's 1,024 indices.
TEST(ImageGeneration, FailsClearlyOnAVqganOfAnotherGrid) {
    const fs::path dir = demo_dir("demo-vqgan-16");
    VqganConfig cfg;
    cfg.ch = 32;
    cfg.ch_mult = {1, 1};
    cfg.num_res_blocks = 1;
    cfg.attn_resolutions = {16};
    cfg.z_channels = cfg.embed_dim = 32;
    cfg.n_embed = 64;
    cfg.resolution = 32;  // f2: 16 x 16 = 256 tokens
    TensorStore store;
    vqgan_random_weights(cfg, DType::F32, 5, store, false);
    GGUFWriter w;
    w.set_string("general.architecture", "vqgan");
    w.set_u32("vqgan.ch", 32);
    w.set_i32_array("vqgan.ch_mult", {1, 1});
    w.set_u32("vqgan.num_res_blocks", 1);
    w.set_i32_array("vqgan.attn_resolutions", {16});
    w.set_u32("vqgan.z_channels", 32);
    w.set_u32("vqgan.embed_dim", 32);
    w.set_u32("vqgan.n_embed", 64);
    w.set_u32("vqgan.resolution", 32);
    w.set_u32("vqgan.in_channels", 3);
    w.set_u32("vqgan.out_ch", 3);
    for (const auto& spec : vqgan_tensor_layout(cfg, false)) w.add_tensor(spec.name, *store.try_tensor(spec.name));
    w.write(dir / "vqgan.gguf");
    auto model = Model::load(dir);
    Session s(model);
    const std::string e = error_of([&] { generate_image(s, "Small left effusion.", nullptr, {}); });
    EXPECT_NE(e.find("16 x 16 = 256 tokens; HealthGPT generates 1024"), std::string::npos) << e;
}

TEST(ImageGeneration, FailsClearlyOnWrongInput) {
    const fs::path dir = demo_dir("demo-bad-input");
    auto model = Model::load(dir);
    Session s(model);
    const imaging::RgbImage img = synthetic_radiograph(32);
    GenerateImageOptions opt;
    opt.task = GenerationTask::ct2mri;
    EXPECT_NE(error_of([&] { generate_image(s, "", nullptr, opt); }).find("give one (--image)"), std::string::npos);
    opt.task = GenerationTask::report2xray;
    EXPECT_NE(error_of([&] { generate_image(s, "Normal chest.", &img, opt); }).find("takes no input image"),
              std::string::npos);
    opt.task = GenerationTask::custom;
    imaging::RgbImage empty;
    EXPECT_NE(error_of([&] { generate_image(s, "Reconstruct.", &empty, opt); }).find("empty or inconsistent"),
              std::string::npos);
    // prompt ids that do not end with <start_index>, or whose image slots do not match the input
    EXPECT_NE(error_of([&] { generate_image_from_ids(s, {1, 2, 3}, nullptr, opt); }).find("<start_index>"),
              std::string::npos);
    EXPECT_NE(error_of([&] { generate_image_from_ids(s, {1, model->vq().start_index}, &img, opt); })
                  .find("0 image slots but 1 input images"),
              std::string::npos);
    // cancelled from the progress callback
    opt.on_index = [](int64_t done, int64_t) { return done < 10; };
    EXPECT_NE(error_of([&] { generate_image(s, "Reconstruct.", nullptr, opt); }).find("cancelled after 10 of 1024"),
              std::string::npos);
}

// A text-only model file (no folder, no plugins, no VQ vocabulary) is refused with the reason.
TEST(ImageGeneration, FailsClearlyOnASingleFileModel) {
    const fs::path dir = demo_dir("demo-single");
    auto model = Model::load(dir / "text.gguf");
    Session s(model);
    const std::string e = error_of([&] { generate_image(s, "Small left effusion.", nullptr, {}); });
    EXPECT_NE(e.find("no generation plugin"), std::string::npos) << e;
}
