// Session behaviour on the project's demo model (runtime/demo_model.h, written into a scratch
// folder): what needs no reference because it compares the engine with itself along two paths.
//   - a follow-up question (KV and image features reused) answers exactly as a fresh session given
//     the whole two-turn prompt at once;
//   - several images per question, text only with the plugin active (and it does change the
//     logits), the base model without a plugin;
//   - the demo model loads as a converted model does (vocabulary extension, plugin, 576 patches);
//   - refusals name the problem.
// The numbers themselves are checked against PyTorch in tests/parity/pipeline_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "formats/gguf.h"
#include "model/hlora.h"
#include "runtime/demo_model.h"
#include "runtime/pipeline.h"
#include "test_util.h"
#include "text/chat.h"

using namespace hg;

namespace {

std::shared_ptr<const Model> demo() {
    static std::shared_ptr<const Model> m = [] {
        const auto dir = hgtest::scratch_dir() / "demo";
        write_demo_model(dir);
        return Model::load(dir);
    }();
    return m;
}

imaging::RgbImage picture(int size, uint8_t shift) {
    imaging::RgbImage img = synthetic_radiograph(size);
    for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x) img.px(x, y)[0] = (uint8_t)(img.px(x, y)[0] + shift);
    return img;
}

AskOptions short_answers() {
    AskOptions o;
    o.max_new_tokens = 12;
    return o;
}

}  // namespace

TEST(Session, DemoModelLoadsLikeAConvertedModel) {
    auto m = demo();
    EXPECT_EQ(m->vq_added(), 8195);
    EXPECT_EQ(m->vq().start_index, m->tokenizer().size() - 8195);
    EXPECT_EQ(m->decoder()->hparams().n_vocab, m->tokenizer().size());
    ASSERT_NE(m->vision(), nullptr);
    EXPECT_EQ(m->vision()->config().n_patches(), 576);
    ASSERT_EQ(m->plugins().all().size(), 2u);  // plugins/com.gguf and plugins/gen.gguf, by name
    EXPECT_EQ(m->plugins().all()[0]->task(), PluginTask::Comprehension);
    EXPECT_EQ(m->plugins().all()[1]->task(), PluginTask::Generation);
    EXPECT_EQ(m->plugins().all()[1]->vision_layer(), 1);
    EXPECT_TRUE(m->plugins().all()[1]->has_fusion_rows());
    EXPECT_EQ(m->chat_template(), text::ChatTemplate::phi3_instruct);
    EXPECT_FALSE(m->notice().empty());
    EXPECT_NE(m->describe().find("plugin  com"), std::string::npos) << m->describe();
}

TEST(Session, FollowUpEqualsAFreshSessionOnTheWholeConversation) {
    auto m = demo();
    const imaging::RgbImage img = picture(300, 0);
    Session a(m);
    const Answer a1 = a.ask("What does this chest x-ray show?", {&img, 1}, short_answers());
    EXPECT_EQ(a1.timings.n_images, 1);
    EXPECT_EQ(a1.timings.n_images_encoded, 1);
    EXPECT_GT(a1.timings.preprocess, 0);
    EXPECT_GT(a1.timings.vision, 0);
    EXPECT_EQ(a1.plugin, "com");
    const Answer a2 = a.ask("Is there a fracture?", {}, short_answers());
    EXPECT_EQ(a2.timings.n_images, 1) << "the first turn's image stays in the conversation";
    EXPECT_EQ(a2.timings.n_images_encoded, 0) << "its features are cached";
    EXPECT_GT(a2.timings.n_prompt_reused, 576) << "the image's KV is reused";
    ASSERT_EQ(a.turns().size(), 2u);

    // the same conversation as one prompt, in a new session: same prompt length, same answer
    std::vector<text::ChatTurn> turns = {{"What does this chest x-ray show?", 1, a1.text}, {"Is there a fracture?", 0, std::nullopt}};
    const std::string prompt = text::build_prompt(m->chat_template(), turns, false);
    const std::vector<int32_t> ids = text::tokenize_with_images(m->tokenizer(), prompt, text::Semantics::slow);
    const std::vector<std::vector<float>> px = {preprocess_image(*m, img)};
    Session b(m);
    const Answer b2 = b.run(ids, px, short_answers());
    EXPECT_EQ(b2.timings.n_prompt, a2.timings.n_prompt);
    EXPECT_EQ(b2.timings.n_prompt_reused, 0);
    EXPECT_EQ(b2.tokens, a2.tokens);
    EXPECT_EQ(b2.text, a2.text);

    // reset() forgets the conversation: the first question answers as the first time
    a.reset();
    const Answer again = a.ask("What does this chest x-ray show?", {&img, 1}, short_answers());
    EXPECT_EQ(again.tokens, a1.tokens);
    EXPECT_EQ(again.timings.n_images_encoded, 0);
}

TEST(Session, SeveralImagesTextOnlyAndNoPlugin) {
    auto m = demo();
    const imaging::RgbImage imgs[2] = {picture(256, 0), picture(200, 40)};
    Session s(m);
    const Answer two = s.ask("Compare the two images.", imgs, short_answers());
    EXPECT_EQ(two.timings.n_images, 2);
    EXPECT_EQ(two.timings.n_images_encoded, 2);
    s.reset();

    // text only: the plugin is still active (as in the reference), and it matters
    const std::string prompt = text::build_prompt(m->chat_template(), std::vector<text::ChatTurn>{{"Hello", 0, std::nullopt}}, false);
    const std::vector<int32_t> ids = text::tokenize_with_images(m->tokenizer(), prompt, text::Semantics::slow);
    const Answer t = s.run(ids, {}, short_answers());
    EXPECT_EQ(t.plugin, "com");
    AskOptions none = short_answers();
    none.no_plugin = true;
    const Answer base = s.run(ids, {}, none);
    EXPECT_EQ(base.plugin, "");
    const std::vector<float> with = s.logits(ids, {}), without = s.logits(ids, {}, none);
    ASSERT_EQ(with.size(), without.size());
    double diff = 0;
    for (size_t i = 0; i < with.size(); ++i) diff = std::max(diff, (double)std::fabs(with[i] - without[i]));
    EXPECT_GT(diff, 1e-3) << "the H-LoRA plugin changes text-only logits";
}

TEST(Session, StreamsWhatItReturns) {
    auto m = demo();
    const imaging::RgbImage img = picture(128, 7);
    Session s(m);
    std::string streamed;
    int64_t decode_events = 0;
    AskOptions o = short_answers();
    o.on_text = [&](std::string_view t) {
        streamed += t;
        return true;
    };
    o.on_progress = [&](const Progress& p) { decode_events += p.stage == Stage::Decode; };
    const Answer a = s.ask("What is this?", {&img, 1}, o);
    EXPECT_EQ(streamed, a.text);
    EXPECT_EQ(decode_events, (int64_t)a.tokens.size() + (a.reason == StopReason::StopToken ? 1 : 0));
    // on_text returning false stops generation after that piece
    Session s2(m);
    int calls = 0;
    std::string got;
    o.on_text = [&](std::string_view t) {
        got += t;
        return ++calls < 2;
    };
    o.on_progress = nullptr;
    o.max_new_tokens = 64;
    const Answer cut = s2.ask("What is this?", {&img, 1}, o);
    if (calls == 2) {  // (a random model may stop by itself before its second piece of text)
        EXPECT_EQ(cut.reason, StopReason::Callback);
        EXPECT_EQ(cut.text.substr(0, got.size()), got);
        EXPECT_LT(cut.tokens.size(), 64u);
    }
}

TEST(Session, RefusalsNameTheProblem) {
    auto m = demo();
    const imaging::RgbImage img = picture(64, 0);
    Session s(m);
    AskOptions o = short_answers();
    o.plugin = "nope";  // (the demo model has com and gen)
    try {
        s.ask("x", {&img, 1}, o);
        ADD_FAILURE() << "no error for a missing plugin";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("loaded: com"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(s.turns().empty()) << "a failed question leaves the conversation as it was";
    o.plugin.clear();
    o.no_plugin = true;
    EXPECT_THROW(s.ask("x", {&img, 1}, o), hg::Error);  // images need a plugin's projector
    const std::vector<int32_t> ids = {1, text::kImageTokenId, 5};
    EXPECT_THROW(s.run(ids, {}, short_answers()), hg::Error);  // one slot, no pixels
    EXPECT_THROW(Model::load(hgtest::scratch_dir() / "no-such-model"), hg::Error);
    // a plugin that is not in the folder
    const auto dir = hgtest::scratch_dir() / "demo";
    ModelOptions mo;
    mo.plugins = {"nope"};
    try {
        Model::load(dir, mo);
        ADD_FAILURE() << "no error for a missing plugin file";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("found: com"), std::string::npos) << e.what();
    }
}

// A generation plugin's fusion rows (its own embedding and head, healthgpt-reference.md §1.4 step 6)
// replace the mean-initialised extension for requests that use it. The demo model gets a "gen"
// plugin: the same H-LoRA weights and projector as "com", vision layer 1, and fusion rows that are
// the base rows plus the mean rows written out in full -- so it must give com's logits -- except
// that the head row of <idx_5> is set to token 7's and the embedding row of token 9 to token 11's.
TEST(Session, GenerationPluginUsesItsFusionRows) {
    auto demo_model = demo();
    const auto dir = hgtest::scratch_dir() / "demo-gen";
    write_demo_model(dir);
    const auto text = GGUFFile::open(dir / "text.gguf");
    const auto com = GGUFFile::open(dir / "plugins" / "com.gguf");
    const int64_t N = demo_model->tokenizer().size() - demo_model->vq_added();  // rows before the extension
    const int64_t V = demo_model->tokenizer().size();
    const Tensor te = text->tensor("token_embd.weight"), out = text->tensor("output.weight");
    ASSERT_EQ(te.type, DType::F32);
    const int64_t E = te.cols();
    auto fused = [&](const Tensor& base) {
        std::vector<float> rows((size_t)(V * E));
        const float* b = (const float*)base.data;
        std::vector<double> mean((size_t)E, 0.0);
        for (int64_t r = 0; r < N; ++r)
            for (int64_t j = 0; j < E; ++j) mean[(size_t)j] += b[r * E + j];
        for (int64_t r = 0; r < V; ++r)
            for (int64_t j = 0; j < E; ++j)
                rows[(size_t)(r * E + j)] = r < N ? b[r * E + j] : (float)(mean[(size_t)j] / (double)N);
        return rows;
    };
    std::vector<float> embd = fused(te), head = fused(out);
    const int32_t idx5 = demo_model->vq().idx0 + 5;
    std::copy_n(head.begin() + 7 * E, E, head.begin() + idx5 * E);
    std::copy_n(embd.begin() + 11 * E, E, embd.begin() + 9 * E);

    GGUFWriter w;
    for (const auto& kv : com->metadata()) w.set(kv.key, kv.value);
    w.set_string(plugin_keys::kTask, "generation");
    w.set_i32(plugin_keys::kVisionLayer, 1);
    for (const auto& ti : com->tensors()) w.add_tensor(ti.name, com->tensor(ti.name));
    w.add_tensor(plugin_names::kTokenEmbd, DType::F32, {V, E}, embd.data());
    w.add_tensor(plugin_names::kOutput, DType::F32, {V, E}, head.data());
    w.write(dir / "plugins" / "gen.gguf");

    auto m = Model::load(dir);
    ASSERT_EQ(m->plugins().all().size(), 2u);
    const Plugin& gen = m->plugins().get("gen");
    EXPECT_EQ(gen.task(), PluginTask::Generation);
    EXPECT_TRUE(gen.has_fusion_rows());
    EXPECT_EQ(gen.decoder->hparams().n_vocab, V);
    EXPECT_EQ(m->plugins().first(PluginTask::Comprehension)->name, "com");

    Session s(m);
    AskOptions with_com, with_gen;
    with_com.plugin = "com";
    with_gen.plugin = "gen";
    const std::vector<int32_t> ids = {1, 30, 9, 40, 50, 9, 60};
    const std::vector<float> a = s.logits(ids, {}, with_com), b = s.logits(ids, {}, with_gen);
    ASSERT_EQ(a.size(), b.size());
    ASSERT_EQ((int64_t)a.size(), (int64_t)ids.size() * V);
    // positions before the first token 9 see the same rows: equal logits, except column <idx_5>,
    // which now scores with token 7's head row
    double differ = 0, scale = 0;
    for (int64_t j = 0; j < 2 * V; ++j) {
        scale = std::max(scale, (double)std::fabs(a[j]));
        if (j % V != idx5) differ = std::max(differ, (double)std::fabs(a[j] - b[j]));
    }
    EXPECT_LE(differ, 1e-5 * scale);  // the mean rows' logit: one double dot product vs a float matmul row
    for (int64_t p = 0; p < (int64_t)ids.size(); ++p) EXPECT_EQ(b[p * V + idx5], b[p * V + 7]) << p;
    // from the first token 9 on, the embedding row differs
    double later = 0;
    for (int64_t j = 2 * V; j < (int64_t)a.size(); ++j) later = std::max(later, (double)std::fabs(a[j] - b[j]));
    EXPECT_GT(later, 1e-3 * scale);

    // and images go through the generation plugin's vision layer and projector inputs
    const std::vector<float> px = preprocess_image(*m, picture(96, 3));
    const std::vector<float> fc = s.image_features(px, m->plugins().get("com"));
    const std::vector<float> fg = s.image_features(px, gen);
    ASSERT_EQ(fc.size(), fg.size());
    double fdiff = 0;
    for (size_t i = 0; i < fc.size(); ++i) fdiff = std::max(fdiff, (double)std::fabs(fc[i] - fg[i]));
    EXPECT_GT(fdiff, 1e-3) << "vision layer 1 vs -2";
}
