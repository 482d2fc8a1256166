// init-model (train/model_init.h): the vocabulary taken from the data's text (counts, order, the
// "<image>" placeholder left out, hyphenated words kept whole), a folder that loads as a model whose
// tokenizer gives each learned word one token, and the from-scratch path end to end: a tiny random
// model trained with every tensor unfrozen (decoder, tower, plugin) until `ask` answers each of four
// picture questions with its target.
#include <gtest/gtest.h>

#include "core/error.h"
#include "imaging/image.h"
#include "runtime/pipeline.h"
#include "test_util.h"
#include "train/dataset.h"
#include "train/llava_source.h"
#include "train/model_init.h"
#include "train/save_trained.h"
#include "train/trainer.h"

namespace {

using namespace hg;
using namespace hg::train;
namespace fs = std::filesystem;

// Four pictures that differ in where a bright square sits.
imaging::RgbImage picture(int k) {
    imaging::RgbImage im(64, 64);
    for (int y = 0; y < 64; ++y)
        for (int x = 0; x < 64; ++x) {
            const bool in = (x / 32) == (k % 2) && (y / 32) == (k / 2);
            uint8_t* p = im.px(x, y);
            p[0] = p[1] = p[2] = in ? 230 : 25;
        }
    return im;
}
const char* kAnswers[4] = {"upper left", "upper right", "x-ray lower left", "lower right"};

fs::path write_data(const fs::path& dir) {
    fs::create_directories(dir);
    std::vector<LlavaRecord> recs;
    for (int k = 0; k < 4; ++k) {
        const std::string img = "img" + std::to_string(k) + ".png";
        imaging::write_png(dir / img, picture(k));
        LlavaRecord r;
        r.id = "q" + std::to_string(k);
        r.images = {img};
        r.conversations = {{"human", "<image>\nWhere is the bright square?"}, {"gpt", kAnswers[k]}};
        recs.push_back(r);
    }
    write_llava_json(dir / "train.json", recs);
    return dir / "train.json";
}

RandomModelShape tiny_shape() {
    RandomModelShape s;
    s.name = "init-test";
    s.notice = "";
    s.embd = 32, s.ff = 64, s.layers = 2, s.heads = 2, s.ctx = 256;
    s.image = 32, s.patch = 16, s.vis_hidden = 32, s.vis_ff = 64, s.vis_layers = 2, s.vis_heads = 2;
    return s;
}

TEST(ModelInit, VocabularyWordsByCountThenFirstOccurrence) {
    const fs::path data = write_data(hgtest::scratch_dir() / "init_vocab");
    int64_t records = 0;
    // Counts: Where 4, is 4, the 4, bright 4, square 4, upper 2, left 2, lower 2, right 2, x-ray 1.
    const auto all = vocabulary_words({data}, 1, 100, &records);
    EXPECT_EQ(records, 4);
    const std::vector<std::string> expect = {"Where", "is", "the", "bright", "square", "upper", "left",
                                             "right", "lower", "x-ray"};
    EXPECT_EQ(all, expect);  // "image" of "<image>" is not a word; "x-ray" stays whole
    EXPECT_EQ(vocabulary_words({data}, 2, 100).size(), 9u);  // x-ray occurs once
    EXPECT_EQ(vocabulary_words({data}, 1, 3).size(), 3u);
}

TEST(ModelInit, FolderLoadsAndEachWordIsOneToken) {
    const fs::path dir = hgtest::scratch_dir() / "init_load";
    fs::remove_all(dir);
    const fs::path data = write_data(hgtest::scratch_dir() / "init_load_data");
    ModelInitOptions o;
    o.shape = tiny_shape();
    o.vocab_data = {data};
    o.min_count = 1;
    o.plugin.rank = 4, o.plugin.alpha = 8, o.plugin.experts = 2, o.plugin.vision_layer = -1;
    const ModelInitResult r = init_model(dir, o);
    EXPECT_EQ(r.words, 10);
    auto model = Model::load(dir);
    ASSERT_TRUE(model->vision());
    EXPECT_EQ(model->vision()->config().n_patches(), 4);
    EXPECT_EQ(model->tokenizer().encode("square").size(), 1u);
    EXPECT_EQ(model->tokenizer().encode("x-ray").size(), 1u);
    EXPECT_GT(model->tokenizer().encode("pneumothorax").size(), 1u);  // unknown: pieces, not <unk>
    // A second init over the same folder is refused (nothing overwritten).
    EXPECT_THROW(init_model(dir, o), Error);
    RandomModelShape bad = tiny_shape();
    bad.image = 40;  // not a multiple of the patch
    o.shape = bad;
    EXPECT_THROW(init_model(hgtest::scratch_dir() / "init_bad", o), Error);
}

TEST(ModelInit, FromScratchEveryTensorTrainedAnswersExactly) {
    const fs::path dir = hgtest::scratch_dir() / "init_train";
    fs::remove_all(dir);
    const fs::path data = write_data(hgtest::scratch_dir() / "init_train_data");
    ModelInitOptions o;
    o.shape = tiny_shape();
    o.vocab_data = {data};
    o.min_count = 1;
    o.plugin.rank = 4, o.plugin.alpha = 8, o.plugin.experts = 2, o.plugin.vision_layer = -1;
    init_model(dir, o);
    TrainSpec spec;
    spec.plugin = "com";
    spec.hlora = spec.projector = spec.decoder = spec.vision = true;
    auto tm = TrainableModel::load(dir, spec);
    auto src = make_llava_source(data, *tm, {});
    TrainOptions t;
    t.epochs = 250;
    t.batch = 4;
    for (double& lr : t.lr) lr = 3e-3;
    t.schedule = ScheduleKind::ConstantWithWarmup;
    t.warmup_steps = 5;
    Trainer trainer(*tm, *src, t);
    double first = 0, last = 0;
    trainer.run([&](const StepReport& r) {
        if (r.step == 1) first = r.loss;
        last = r.loss;
        return true;
    });
    std::printf("  loss %.4f -> %.4f over %lld steps\n", first, last, (long long)trainer.total_steps());
    EXPECT_LT(last, 0.05 * first);
    const fs::path out = hgtest::scratch_dir() / "init_train_out";
    fs::remove_all(out);
    fs::create_directories(out / "plugins");
    for (const char* f : {"text", "vision"})
        save_trained_file(dir / (std::string(f) + ".gguf"), tm->params_of(f), out / (std::string(f) + ".gguf"));
    save_trained_file(dir / "plugins/com.gguf", tm->params_of("plugins/com"), out / "plugins/com.gguf");
    auto model = Model::load(out);
    for (int k = 0; k < 4; ++k) {
        Session session(model);
        AskOptions ao;
        ao.max_new_tokens = 8;
        const imaging::RgbImage img = picture(k);
        EXPECT_EQ(session.ask("Where is the bright square?", {&img, 1}, ao).text, kAnswers[k]) << "picture " << k;
    }
}

}  // namespace
