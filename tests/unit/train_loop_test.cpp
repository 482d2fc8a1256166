// The training loop end to end on a tiny HealthGPT (tests/fixtures/train_model/phi3_gqa: random
// weights, HealthGPT's layout, a 42-px CLIP tower so a step takes milliseconds): a new H-LoRA plugin learns 8 image-question-answer triples until `ask` (the inference
// path, on the saved plugin file) answers each with exactly its target; a run stopped after 10 steps
// and resumed from its checkpoint equals 20 uninterrupted steps bit for bit; a NaN loss stops the
// run before the step, leaving the parameters as they were.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "imaging/image.h"
#include "runtime/pipeline.h"
#include "test_util.h"
#include "train/dataset.h"
#include "train/llava_source.h"
#include "train/plugin_init.h"
#include "train/save_trained.h"
#include "train/trainer.h"

namespace {

using namespace hg;
using namespace hg::train;
namespace fs = std::filesystem;

// Eight distinct synthetic pictures (a bright disc at a different place and size on each).
imaging::RgbImage picture(int k) {
    imaging::RgbImage im(112, 112);
    const int cx = 20 + (k % 4) * 24, cy = 28 + (k / 4) * 48, r = 10 + 3 * k;
    for (int y = 0; y < im.height; ++y)
        for (int x = 0; x < im.width; ++x) {
            const bool in = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
            uint8_t* p = im.px(x, y);
            p[0] = p[1] = p[2] = in ? (uint8_t)(200 + 6 * k) : (uint8_t)(20 + 4 * k);
        }
    return im;
}

const char* kAnswers[8] = {"lung", "normal", "chest", "scan", "image", "this", "what", "the chest"};

// The demo model, a new comprehension plugin "learn" (rank 8) and the 8 triples as LLaVA JSON.
struct Case {
    fs::path dir, data;
};
Case make_setup(const std::string& name) {
    Case s;
    s.dir = hgtest::scratch_dir() / name;
    fs::create_directories(s.dir);
    fs::copy(hgtest::fixture("train_model/phi3_gqa/model"), s.dir, fs::copy_options::recursive);
    PluginInit init;
    init.rank = 8;
    init.alpha = 16;
    init.experts = 4;
    init.seed = 7;
    write_new_plugin(s.dir, s.dir / "plugins" / "learn.gguf", init);
    std::vector<LlavaRecord> recs;
    for (int k = 0; k < 8; ++k) {
        const std::string img = "img" + std::to_string(k) + ".png";
        imaging::write_png(s.dir / img, picture(k));
        LlavaRecord r;
        r.id = "case" + std::to_string(k);
        r.images = {img};
        r.conversations = {{"human", "<image>\nWhat is the finding?"}, {"gpt", kAnswers[k]}};
        recs.push_back(r);
    }
    s.data = s.dir / "train.json";
    write_llava_json(s.data, recs);
    return s;
}

TrainSpec stage3() {
    TrainSpec spec = TrainSpec::stage(3, "learn");
    spec.vq_vocabulary = false;  // this model folder has no VQ vocabulary extension
    return spec;
}

TEST(TrainLoop, NewPluginMemorisesEightTriplesAndAskAnswersThemExactly) {
    const Case s = make_setup("memorise");
    auto tm = TrainableModel::load(s.dir, stage3());
    auto data = make_llava_source(s.data, *tm, {});
    ASSERT_EQ(data->size(), 8u);
    TrainOptions o;
    o.epochs = 150;
    o.batch = 8;
    o.lr[kGroupHLora] = 1e-2;
    o.lr[kGroupProjector] = 1e-2;
    o.schedule = ScheduleKind::ConstantWithWarmup;
    o.warmup_steps = 5;
    Trainer trainer(*tm, *data, o);
    double first = 0, last = 0;
    trainer.run([&](const StepReport& r) {
        if (r.step == 1) first = r.loss;
        last = r.loss;
        return true;
    });
    std::printf("  loss %.4f -> %.4f over %lld steps\n", first, last, (long long)trainer.total_steps());
    // The frozen head of this 32-wide random decoder bounds how far the logits can separate, so the
    // loss levels off near 1 per token; what must hold is that every greedy answer is the target.
    EXPECT_LT(last, 0.2 * first);

    // The saved plugin, used by the inference path as a user would.
    fs::copy_file(s.dir / "plugins" / "learn.gguf", s.dir / "learn-initial.gguf");
    save_trained_file(s.dir / "learn-initial.gguf", tm->params_of("plugins/learn"), s.dir / "plugins" / "learn.gguf");
    ModelOptions mo;
    mo.plugins = {"learn"};
    mo.vq_vocabulary = false;
    auto model = Model::load(s.dir, mo);
    int exact = 0;
    for (int k = 0; k < 8; ++k) {
        Session session(model);
        AskOptions ao;
        ao.plugin = "learn";
        ao.max_new_tokens = 16;
        const imaging::RgbImage img = picture(k);
        const Answer a = session.ask("What is the finding?", {&img, 1}, ao);
        EXPECT_EQ(a.text, kAnswers[k]) << "case " << k;
        exact += a.text == kAnswers[k];
    }
    std::printf("  %d of 8 answers exact\n", exact);
}

// Runs `steps` steps of a fresh trainer (optionally resumed from `resume`), returns the values.
std::vector<std::vector<float>> run_steps(const Case& s, int64_t steps, const fs::path& resume, const fs::path& save,
                                          int64_t stop_after = 0) {
    auto tm = TrainableModel::load(s.dir, stage3());
    auto data = make_llava_source(s.data, *tm, {});
    TrainOptions o;
    o.epochs = 10;
    o.max_steps = steps;
    o.batch = 2;
    o.accum = 2;
    o.lr[kGroupHLora] = 5e-3;
    o.warmup_steps = 3;
    o.weight_decay = 0.01;
    Trainer t(*tm, *data, o);
    if (!resume.empty()) t.resume(resume);
    t.run([&](const StepReport& r) { return stop_after == 0 || r.step < stop_after; });
    if (!save.empty()) t.save_checkpoint(save);
    std::vector<std::vector<float>> v;
    for (size_t i = 0; i < tm->params().size(); ++i) v.push_back(tm->params()[i].value);
    return v;
}

TEST(TrainLoop, StopAfterTenThenResumeEqualsTwentyUninterruptedBitForBit) {
    const Case s = make_setup("resume");
    const auto full = run_steps(s, 20, {}, {});
    const fs::path ckpt = s.dir / "run.ckpt";
    run_steps(s, 20, {}, ckpt, /*stop_after=*/10);
    const auto resumed = run_steps(s, 20, ckpt, {});
    ASSERT_EQ(full.size(), resumed.size());
    for (size_t i = 0; i < full.size(); ++i)
        ASSERT_EQ(0, std::memcmp(full[i].data(), resumed[i].data(), full[i].size() * sizeof(float))) << "tensor " << i;
}

TEST(TrainLoop, ResumeWithOtherOptionsIsRefused) {
    const Case s = make_setup("resume_other");
    const fs::path ckpt = s.dir / "run.ckpt";
    run_steps(s, 4, {}, ckpt);
    auto tm = TrainableModel::load(s.dir, stage3());
    auto data = make_llava_source(s.data, *tm, {});
    TrainOptions o;
    o.max_steps = 4;
    o.batch = 3;  // not what the checkpoint was made with
    Trainer t(*tm, *data, o);
    EXPECT_THROW(t.resume(ckpt), hg::Error);
}

TEST(TrainLoop, NonFiniteLossStopsBeforeTheStepAndKeepsTheParameters) {
    const Case s = make_setup("nan");
    auto tm = TrainableModel::load(s.dir, stage3());
    auto good = make_llava_source(s.data, *tm, {});
    std::vector<TrainSample> samples;
    for (size_t i = 0; i < good->size(); ++i) samples.push_back(good->get(i, *tm));
    samples[1].pixels[0][123] = std::nanf("");  // a corrupt input reaches the loss as NaN
    VectorSource data(samples);
    TrainOptions o;
    o.epochs = 1;
    o.batch = 8;
    Trainer t(*tm, data, o);
    std::vector<std::vector<float>> before;
    for (size_t i = 0; i < tm->params().size(); ++i) before.push_back(tm->params()[i].value);
    try {
        t.run();
        FAIL() << "a NaN loss did not stop training";
    } catch (const hg::Error& e) {
        EXPECT_NE(std::string(e.what()).find("step 1"), std::string::npos) << e.what();
    }
    for (size_t i = 0; i < before.size(); ++i)
        EXPECT_EQ(0, std::memcmp(before[i].data(), tm->params()[i].value.data(), before[i].size() * sizeof(float)));
    EXPECT_EQ(t.step(), 0);
}

}  // namespace
