// The evaluation runner on the demo model (runtime/demo_model.h, written into a scratch folder) and
// a tiny VQA-RAD-format data set written here: what a run logs, that a rerun continues the log
// (items done are not run again, a torn last line is dropped), that a log of another run is
// refused, --blind, interruption, MCQ and image-generation runs, the report's aggregation, and a
// handful of real VQA-RAD items when the shared data is present.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>

#include "core/error.h"
#include "eval/benchmark.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "imaging/image.h"
#include "runtime/demo_model.h"
#include "test_util.h"

using namespace hg;
using namespace hg::eval;
namespace fs = std::filesystem;

namespace {

const fs::path& demo_dir() {
    static const fs::path d = [] {
        const fs::path p = hgtest::scratch_dir() / "demo";
        write_demo_model(p);
        return p;
    }();
    return d;
}
std::shared_ptr<const Model> demo() {
    static std::shared_ptr<const Model> m = Model::load(demo_dir());
    return m;
}

void write_text(const fs::path& p, const std::string& s) {
    fs::create_directories(p.parent_path());
    std::ofstream f(p, std::ios::binary);
    f << s;
}

std::string read_text(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

size_t count_lines(const fs::path& p) {
    const std::string s = read_text(p);
    return (size_t)std::count(s.begin(), s.end(), '\n');
}

template <class F>
std::string error_of(F f) {
    try {
        f();
    } catch (const hg::Error& e) {
        return e.what();
    }
    return "";
}

// Four questions about two synthetic radiographs.
Benchmark tiny_vqa_rad() {
    static const fs::path d = [] {
        const fs::path p = hgtest::scratch_dir() / "tiny_vqarad";
        write_text(p / "testset.json", R"([
 {"qid": 1, "image_name": "a.png", "question": "Is there a mass?", "answer": "yes", "answer_type": "CLOSED",
  "question_type": "PRES", "image_organ": "CHEST"},
 {"qid": 2, "image_name": "b.png", "question": "Is the heart enlarged?", "answer": "no", "answer_type": "CLOSED",
  "question_type": "SIZE", "image_organ": "CHEST"},
 {"qid": 3, "image_name": "a.png", "question": "Where is the mass?", "answer": "left lung", "answer_type": "OPEN",
  "question_type": "POS", "image_organ": "CHEST"},
 {"qid": 4, "image_name": "b.png", "question": "What organ is shown?", "answer": "the lungs", "answer_type": "OPEN",
  "question_type": "ORGAN", "image_organ": "CHEST"}])");
        fs::create_directories(p / "images");
        imaging::write_png(p / "images" / "a.png", synthetic_radiograph(64));
        imaging::RgbImage b = synthetic_radiograph(80);
        for (auto& v : b.rgb) v = (uint8_t)(255 - v);
        imaging::write_png(p / "images" / "b.png", b);
        return p;
    }();
    return load_benchmark(BenchKind::vqa_rad, d);
}

RunOptions options(const std::string& log_name) {
    RunOptions o;
    o.max_new_tokens = 6;
    o.log_path = hgtest::scratch_dir() / "logs" / log_name;
    return o;
}

}  // namespace

TEST(EvalRunner, RunsLogsAndResumes) {
    const Benchmark b = tiny_vqa_rad();
    RunOptions o = options("resume.jsonl");
    o.limit = 2;
    size_t calls = 0;
    o.on_item = [&](const ItemResult&, size_t, size_t total) {
        ++calls;
        EXPECT_EQ(total, 2u);
    };
    RunResult r1 = run_benchmark(demo(), b, o);
    EXPECT_EQ(r1.n_run, 2u);
    EXPECT_EQ(calls, 2u);
    ASSERT_EQ(r1.items.size(), 2u);
    EXPECT_EQ(count_lines(o.log_path), 3u);  // header + 2 items
    EXPECT_EQ(r1.header["bench"], "vqa-rad");
    EXPECT_EQ(r1.header["plugin"], "com");
    EXPECT_EQ(r1.header["files"].size(), 3u);  // text, vision, plugin
    EXPECT_EQ(r1.header["files"]["plugins/com.gguf"].get<std::string>().size(), 64u);
    EXPECT_EQ(r1.items[0].id, "vqarad-1");
    EXPECT_EQ(r1.items[0].kind, "CLOSED");
    EXPECT_GT(r1.items[0].n_generated, 0);

    // All four now: the two in the log are not run again.
    o.limit = 0;
    std::set<std::string> ran;
    o.on_item = [&](const ItemResult& it, size_t, size_t) { ran.insert(it.id); };
    RunResult r2 = run_benchmark(demo(), b, o);
    EXPECT_EQ(r2.n_resumed, 2u);
    EXPECT_EQ(r2.n_run, 2u);
    EXPECT_EQ(ran, (std::set<std::string>{"vqarad-3", "vqarad-4"}));
    ASSERT_EQ(r2.items.size(), 4u);
    EXPECT_EQ(r2.items[0].prediction, r1.items[0].prediction);
    EXPECT_EQ(count_lines(o.log_path), 5u);

    // Greedy: a fresh run gives the same answers.
    RunResult r3 = run_benchmark(demo(), b, options("fresh.jsonl"));
    ASSERT_EQ(r3.items.size(), 4u);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(r3.items[i].prediction, r2.items[i].prediction) << i;

    // Nothing left: a third run runs nothing.
    RunResult r4 = run_benchmark(demo(), b, o);
    EXPECT_EQ(r4.n_run, 0u);
    EXPECT_EQ(r4.items.size(), 4u);
}

TEST(EvalRunner, TornLastLineIsDroppedAndRerun) {
    const Benchmark b = tiny_vqa_rad();
    RunOptions o = options("torn.jsonl");
    o.limit = 3;
    run_benchmark(demo(), b, o);
    // the process died while writing item 4
    { std::ofstream f(o.log_path, std::ios::app | std::ios::binary); f << R"({"type":"item","id":"vqarad-4","ind)"; }
    const std::string before = read_text(o.log_path);
    o.limit = 0;
    RunResult r = run_benchmark(demo(), b, o);
    EXPECT_EQ(r.n_resumed, 3u);
    EXPECT_EQ(r.n_run, 1u);
    const LogContents log = read_log(o.log_path, false);
    EXPECT_FALSE(log.dropped_torn_line);
    EXPECT_EQ(log.items.size(), 4u);
    EXPECT_EQ(count_lines(o.log_path), 5u);
    EXPECT_EQ(read_text(o.log_path).find("\"ind\n"), std::string::npos);  // the torn bytes are gone
    EXPECT_GT(before.size(), 0u);
}

TEST(EvalRunner, DamagedLogIsAnError) {
    const Benchmark b = tiny_vqa_rad();
    RunOptions o = options("damaged.jsonl");
    o.limit = 2;
    run_benchmark(demo(), b, o);
    std::string s = read_text(o.log_path);
    const size_t second = s.find('\n') + 1;
    s.insert(second, "garbage\n");
    write_text(o.log_path, s);
    const std::string e = error_of([&] { run_benchmark(demo(), b, o); });
    EXPECT_NE(e.find("damaged.jsonl: line 2 is not valid JSON"), std::string::npos) << e;
    write_text(o.log_path, "{\"hello\": 1}\n");
    const std::string e2 = error_of([&] { run_benchmark(demo(), b, o); });
    EXPECT_NE(e2.find("not an evaluation log"), std::string::npos) << e2;
}

TEST(EvalRunner, RefusesALogOfAnotherRun) {
    const Benchmark b = tiny_vqa_rad();
    RunOptions o = options("other.jsonl");
    o.limit = 1;
    run_benchmark(demo(), b, o);
    RunOptions more = o;
    more.max_new_tokens = 7;
    std::string e = error_of([&] { run_benchmark(demo(), b, more); });
    EXPECT_NE(e.find("written by a different run"), std::string::npos) << e;
    EXPECT_NE(e.find("max_new_tokens 6 in the log, 7 now"), std::string::npos) << e;
    RunOptions blind = o;
    blind.blind = true;
    e = error_of([&] { run_benchmark(demo(), b, blind); });
    EXPECT_NE(e.find("blind false in the log, true now"), std::string::npos) << e;
    // other plugin weights: same file name, different bytes
    const fs::path other = hgtest::scratch_dir() / "demo_other";
    fs::copy(demo_dir(), other, fs::copy_options::recursive);
    write_demo_model(hgtest::scratch_dir() / "demo_seed7", DemoModelOptions{7, false});
    fs::copy_file(hgtest::scratch_dir() / "demo_seed7" / "plugins" / "com.gguf", other / "plugins" / "com.gguf",
                  fs::copy_options::overwrite_existing);
    e = error_of([&] { run_benchmark(Model::load(other), b, o); });
    EXPECT_NE(e.find("files"), std::string::npos) << e;
    EXPECT_NE(e.find("plugins/com.gguf"), std::string::npos) << e;
    // other data
    write_text(o.log_path.parent_path() / "foreign.jsonl",
               read_text(o.log_path) + R"({"type":"item","id":"vqarad-99"})" + "\n");
    RunOptions f = o;
    f.log_path = o.log_path.parent_path() / "foreign.jsonl";
    e = error_of([&] { run_benchmark(demo(), b, f); });
    EXPECT_NE(e.find("foreign.jsonl: line 3"), std::string::npos) << e;  // an item line lacking fields
}

TEST(EvalRunner, BlindImagesAreUniformGray) {
    const imaging::RgbImage src = synthetic_radiograph(50);
    const imaging::RgbImage g = blind_image(src);
    EXPECT_EQ(g.width, 50);
    EXPECT_EQ(g.height, 50);
    for (uint8_t v : g.rgb) ASSERT_EQ(v, 128);
    // A blind run is its own run (header), and the image does reach the model: the demo model's
    // logits depend on the pixels, so at least one of four answers differs.
    const Benchmark b = tiny_vqa_rad();
    RunOptions o = options("blind.jsonl");
    o.blind = true;
    RunResult rb = run_benchmark(demo(), b, o);
    EXPECT_TRUE(rb.header["blind"].get<bool>());
    RunResult rs = run_benchmark(demo(), b, options("seeing.jsonl"));
    bool differs = false;
    for (size_t i = 0; i < 4; ++i) differs |= rb.items[i].prediction != rs.items[i].prediction;
    EXPECT_TRUE(differs);
}

TEST(EvalRunner, StopsBetweenItemsAndContinues) {
    const Benchmark b = tiny_vqa_rad();
    RunOptions o = options("stop.jsonl");
    size_t n = 0;
    o.on_item = [&](const ItemResult&, size_t, size_t) { ++n; };
    o.stop_requested = [&] { return n >= 1; };
    RunResult r = run_benchmark(demo(), b, o);
    EXPECT_TRUE(r.interrupted);
    EXPECT_EQ(r.items.size(), 1u);
    EXPECT_EQ(count_lines(o.log_path), 2u);
    o.stop_requested = {};
    r = run_benchmark(demo(), b, o);
    EXPECT_FALSE(r.interrupted);
    EXPECT_EQ(r.n_resumed, 1u);
    EXPECT_EQ(r.items.size(), 4u);
}

TEST(EvalRunner, MultipleChoiceAndPrompt) {
    const fs::path d = hgtest::scratch_dir() / "mcq_run";
    fs::create_directories(d);
    imaging::write_png(d / "x.png", synthetic_radiograph(40));
    write_text(d / "q.json", R"([{"question_id": "1", "question": "What modality?", "option_A": "CT",
        "option_B": "X-ray", "gt_answer": "X-ray", "image_path": "x.png", "question_type": "Modality"}])");
    const Benchmark b = load_benchmark(BenchKind::mcq, d / "q.json");
    EXPECT_EQ(item_prompt(b.items[0], ""),
              "What modality?\nA. CT\nB. X-ray\nAnswer with the option's letter from the given choices directly.");
    RunResult r = run_benchmark(demo(), b, options("mcq.jsonl"));
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].kind, "MCQ");
    EXPECT_EQ(r.items[0].answer_option, 1);
    EXPECT_EQ(r.items[0].chosen, choose_option(r.items[0].prediction, b.items[0].options));
    EXPECT_EQ(r.items[0].correct, r.items[0].chosen == 1);
}

TEST(EvalRunner, ImageGenerationPairs) {
    const fs::path d = hgtest::scratch_dir() / "gen_pairs";
    fs::create_directories(d / "input");
    fs::create_directories(d / "target");
    imaging::write_png(d / "input" / "p.png", synthetic_radiograph(64));
    imaging::write_png(d / "target" / "p.png", synthetic_radiograph(300));  // resized to the output size
    const Benchmark b = load_benchmark(BenchKind::recon, d);
    RunOptions o = options("gen.jsonl");
    RunResult r = run_benchmark(demo(), b, o);
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.header["plugin"], "gen");
    EXPECT_TRUE(r.header["files"].contains("vqgan.gguf"));
    EXPECT_EQ(r.items[0].n_generated, 1024);
    EXPECT_TRUE(fs::exists(r.items[0].output));
    EXPECT_GT(r.items[0].mse, 0.0);
    EXPECT_LT(r.items[0].ssim, 1.0);
    // resumed from the log, PSNR round-trips
    RunResult again = run_benchmark(demo(), b, o);
    EXPECT_EQ(again.n_run, 0u);
    EXPECT_DOUBLE_EQ(again.items[0].psnr, r.items[0].psnr);
}

TEST(EvalReport, Aggregates) {
    // Hand-made results: closed ours 2/3; LLaVA-Med counts items 1 and 3 (1 hit) and drops item 2.
    std::vector<ItemResult> v(5);
    v[0].kind = "CLOSED", v[0].correct = true, v[0].llava_closed = 1, v[0].meta["organ"] = "CHEST";
    v[1].kind = "CLOSED", v[1].correct = false, v[1].llava_closed = std::nullopt, v[1].meta["organ"] = "CHEST";
    v[2].kind = "CLOSED", v[2].correct = true, v[2].llava_closed = 0, v[2].meta["organ"] = "HEAD";
    v[3].kind = "OPEN", v[3].recall = 1.0, v[3].exact = true, v[3].f1 = 1.0, v[3].llava_recall = 1.0, v[3].meta["organ"] = "HEAD";
    v[4].kind = "OPEN", v[4].recall = 0.5, v[4].f1 = 0.4, v[4].llava_recall = 2.0 / 3.0, v[4].llava_open_hit = 1.0,
    v[4].meta["organ"] = "HEAD";
    std::vector<const ItemResult*> p;
    for (auto& r : v) p.push_back(&r);
    const auto a = aggregate(p);
    EXPECT_NEAR(a["closed_accuracy"].get<double>(), 2.0 / 3.0, 1e-12);
    EXPECT_NEAR(a["llava_closed_accuracy"].get<double>(), 0.5, 1e-12);
    EXPECT_EQ(a["llava_closed_counted"].get<size_t>(), 2u);
    EXPECT_EQ(a["llava_closed_dropped"].get<size_t>(), 1u);
    EXPECT_NEAR(a["open_recall"].get<double>(), 0.75, 1e-12);
    EXPECT_NEAR(a["open_exact"].get<double>(), 0.5, 1e-12);
    EXPECT_NEAR(a["open_f1"].get<double>(), 0.7, 1e-12);
    EXPECT_NEAR(a["llava_open_recall"].get<double>(), 5.0 / 6.0, 1e-12);
    EXPECT_NEAR(a["llava_open_accuracy"].get<double>(), 1.0, 1e-12);  // over the 1 item with a candidate list
    RunResult run;
    run.items = v;
    run.n_selected = 5;
    run.header = {{"bench", "vqa-rad"}, {"split", "test"}, {"files", nlohmann::json::object()}};
    const auto rep = build_report(run);
    EXPECT_EQ(rep["by"]["organ"]["HEAD"]["n"].get<size_t>(), 3u);
    EXPECT_NEAR(rep["by"]["organ"]["CHEST"]["closed_accuracy"].get<double>(), 0.5, 1e-12);
    EXPECT_EQ(rep["by"]["answer_type"]["OPEN"]["n_open"].get<size_t>(), 2u);
    const std::string md = report_markdown(rep);
    EXPECT_NE(md.find("| CHEST | 2 | 2 | 50.0 |"), std::string::npos) << md;
    EXPECT_NE(md.find("| all | 5 | 3 | 66.7 | 2 | 75.0 | 50.0 | 70.0 | 50.0 (2/1) |"), std::string::npos) << md;
}

TEST(EvalRunner, RealVqaRadItems) {
    HG_SKIP_WITHOUT_SHARED_DATA("vqa-rad/testset.json");
    const Benchmark b = load_benchmark(BenchKind::vqa_rad, hgtest::shared_data() / "vqa-rad");
    EXPECT_EQ(b.items.size(), 450u);
    EXPECT_EQ(b.answer_list.size(), 557u);  // answer_list.json matches every open answer
    RunOptions o = options("real.jsonl");
    o.limit = 4;
    RunResult r = run_benchmark(demo(), b, o);
    ASSERT_EQ(r.items.size(), 4u);
    for (const ItemResult& it : r.items) EXPECT_TRUE(it.kind == "CLOSED" || it.kind == "OPEN");
    const auto rep = build_report(r);
    EXPECT_EQ(rep["n_scored"].get<size_t>(), 4u);
    EXPECT_TRUE(rep["complete"].get<bool>());
}
