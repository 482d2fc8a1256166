// Benchmark loaders on small files written here in each benchmark's format (VQA-RAD, SLAKE,
// PathVQA JSON and pickle, OmniMedVQA-style MCQ, paired image folders), and their refusals: a
// missing image, malformed JSON, an answer that matches no option, a candidate answer list that
// does not contain an answer, duplicate ids. Each error must name the file and the item.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "core/error.h"
#include "eval/benchmark.h"
#include "imaging/image.h"
#include "test_util.h"

using namespace hg;
using namespace hg::eval;
namespace fs = std::filesystem;

namespace {

void write_text(const fs::path& p, const std::string& s) {
    fs::create_directories(p.parent_path());
    std::ofstream f(p, std::ios::binary);
    f << s;
}

void write_image(const fs::path& p) {
    fs::create_directories(p.parent_path());
    imaging::RgbImage im(16, 12);
    for (size_t i = 0; i < im.rgb.size(); ++i) im.rgb[i] = (uint8_t)(i * 7);
    imaging::write_png(p, im);
}

// The error message of f(), or "" when it does not throw.
LoadOptions with_split(const std::string& s) {
    LoadOptions o;
    o.split = s;
    return o;
}
LoadOptions with_list(const fs::path& p) {
    LoadOptions o;
    o.answer_list = p;
    return o;
}
LoadOptions without_list() {
    LoadOptions o;
    o.no_answer_list = true;
    return o;
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

fs::path vqa_rad_folder(const std::string& name) {
    const fs::path d = hgtest::scratch_dir() / name;
    write_text(d / "testset.json", R"([
 {"qid": 1, "image_name": "a.png", "question": "Is there a mass?", "answer": "yes", "answer_type": "CLOSED ",
  "question_type": "PRES", "image_organ": "CHEST", "phrase_type": "freeform"},
 {"qid": 2, "image_name": "a.png", "question": "Where is the mass?", "answer": "left lung", "answer_type": "OPEN",
  "question_type": "POS", "image_organ": "CHEST"},
 {"qid": 3, "image_name": "b.png", "question": "Is this an MRI?", "answer": "no", "answer_type": "CLOSED",
  "question_type": "MODALITY", "image_organ": "HEAD"}])");
    write_image(d / "images" / "a.png");
    write_image(d / "images" / "b.png");
    return d;
}

}  // namespace

TEST(EvalBenchmark, VqaRad) {
    const fs::path d = vqa_rad_folder("vqarad");
    const Benchmark b = load_benchmark(BenchKind::vqa_rad, d);
    ASSERT_EQ(b.items.size(), 3u);
    EXPECT_EQ(b.file, d / "testset.json");
    EXPECT_EQ(b.items[0].id, "vqarad-1");
    EXPECT_EQ(b.items[0].kind, "CLOSED");  // "CLOSED " trimmed
    EXPECT_EQ(b.items[1].kind, "OPEN");
    EXPECT_EQ(b.items[1].question, "Where is the mass?");
    EXPECT_EQ(b.items[1].answer, "left lung");
    EXPECT_EQ(b.items[2].images.at(0), d / "images" / "b.png");
    EXPECT_EQ(b.items[2].meta.at("organ"), "HEAD");
    EXPECT_EQ(b.items[2].meta.at("question_type"), "MODALITY");
    EXPECT_EQ(b.items[2].source_index, 2u);
    EXPECT_TRUE(b.answer_list.empty());
    // the file itself works as --data too
    EXPECT_EQ(load_benchmark(BenchKind::vqa_rad, d / "testset.json").items.size(), 3u);
    EXPECT_NE(error_of([&] { load_benchmark(BenchKind::vqa_rad, d, with_split("validate")); }).find("test and train"),
              std::string::npos);
}

TEST(EvalBenchmark, MissingImageNamesFileAndItem) {
    const fs::path d = vqa_rad_folder("vqarad_missing");
    fs::remove(d / "images" / "b.png");
    const std::string e = error_of([&] { load_benchmark(BenchKind::vqa_rad, d); });
    EXPECT_NE(e.find("testset.json"), std::string::npos) << e;
    EXPECT_NE(e.find("entry 2 (qid 3)"), std::string::npos) << e;
    EXPECT_NE(e.find("b.png does not exist"), std::string::npos) << e;
}

TEST(EvalBenchmark, MalformedJson) {
    const fs::path d = hgtest::scratch_dir() / "vqarad_bad";
    write_text(d / "testset.json", R"([{"qid": 1, "image_name": "a.png", )");
    const std::string e = error_of([&] { load_benchmark(BenchKind::vqa_rad, d); });
    EXPECT_NE(e.find("testset.json: malformed JSON"), std::string::npos) << e;
    write_text(d / "testset.json", R"([{"qid": 7, "image_name": "a.png", "question": "Q?"}])");
    const std::string e2 = error_of([&] { load_benchmark(BenchKind::vqa_rad, d); });
    EXPECT_NE(e2.find("entry 0 (qid 7): has no \"answer\""), std::string::npos) << e2;
}

TEST(EvalBenchmark, AnswerList) {
    const fs::path d = vqa_rad_folder("vqarad_list");
    write_text(d / "answer_list.json", R"(["yes", "no", "Left lung", "right lung"])");
    Benchmark b = load_benchmark(BenchKind::vqa_rad, d);  // found beside testset.json
    EXPECT_EQ(b.answer_list.size(), 4u);
    EXPECT_EQ(b.answer_list_file, d / "answer_list.json");
    EXPECT_TRUE(load_benchmark(BenchKind::vqa_rad, d, without_list()).answer_list.empty());
    // LLaVA-Med's candidate.json form
    write_text(d / "candidate.json", R"({"0": ["left lung", 12]})");
    b = load_benchmark(BenchKind::vqa_rad, d, with_list(d / "candidate.json"));
    EXPECT_EQ(b.answer_list.at(1), "12");
    // a list without the open answer "left lung" is refused, naming both files and the item
    write_text(d / "other.json", R"(["yes", "no", "kidney"])");
    const std::string e = error_of([&] { load_benchmark(BenchKind::vqa_rad, d, with_list(d / "other.json")); });
    EXPECT_NE(e.find("other.json does not match"), std::string::npos) << e;
    EXPECT_NE(e.find("entry 1 (id vqarad-2)"), std::string::npos) << e;
    write_text(d / "notalist.json", R"({"a": 1})");
    const std::string e2 = error_of([&] { load_benchmark(BenchKind::vqa_rad, d, with_list(d / "notalist.json")); });
    EXPECT_NE(e2.find("notalist.json: expected a JSON list"), std::string::npos) << e2;
}

TEST(EvalBenchmark, Slake) {
    const fs::path d = hgtest::scratch_dir() / "slake";
    write_text(d / "test.json", R"([
 {"qid": 10, "img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Which organ is abnormal?", "answer": "Lung",
  "answer_type": "OPEN", "q_lang": "en", "location": "Lung", "modality": "CT", "content_type": "Abnormality"},
 {"qid": 11, "img_id": 1, "img_name": "xmlab1/source.jpg", "question": "哪个器官异常？", "answer": "肺",
  "answer_type": "OPEN", "q_lang": "zh", "location": "Lung", "modality": "CT"},
 {"qid": 12, "img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Is this a CT?", "answer": "Yes",
  "answer_type": "CLOSED", "q_lang": "en", "location": "Lung", "modality": "CT", "content_type": "Modality"}])");
    write_image(d / "imgs" / "xmlab1" / "source.jpg");
    const Benchmark b = load_benchmark(BenchKind::slake, d);
    ASSERT_EQ(b.items.size(), 2u);  // English only
    EXPECT_EQ(b.items[0].id, "slake-10");
    EXPECT_EQ(b.items[1].id, "slake-12");
    EXPECT_EQ(b.items[1].kind, "CLOSED");
    EXPECT_EQ(b.items[0].meta.at("modality"), "CT");
    EXPECT_EQ(b.items[0].meta.at("organ"), "Lung");
    EXPECT_EQ(b.items[0].images.at(0), d / "imgs" / "xmlab1" / "source.jpg");
    EXPECT_EQ(question_file(BenchKind::slake, d, "val"), d / "validate.json");
}

TEST(EvalBenchmark, PathVqaJsonAndPickle) {
    const fs::path d = hgtest::scratch_dir() / "pvqa";
    write_image(d / "images" / "test" / "test_0000.jpg");
    write_image(d / "images" / "test" / "test_0001.png");
    // pickle (the release's format)
    fs::create_directories(d / "qas" / "test");
    fs::copy_file(hgtest::fixture("eval/pathvqa_test_qa.pkl"), d / "qas" / "test" / "test_qa.pkl");
    Benchmark b = load_benchmark(BenchKind::pathvqa, d);
    ASSERT_EQ(b.items.size(), 2u);
    EXPECT_EQ(b.items[0].id, "pathvqa-test-0");
    EXPECT_EQ(b.items[0].kind, "CLOSED");  // a yes/no answer
    EXPECT_EQ(b.items[1].kind, "OPEN");
    EXPECT_EQ(b.items[1].answer, "granulomas");
    EXPECT_EQ(b.items[0].images.at(0), d / "images" / "test" / "test_0000.jpg");
    EXPECT_EQ(b.items[1].images.at(0), d / "images" / "test" / "test_0001.png");  // other extension found
    // the same as JSON
    fs::remove(d / "qas" / "test" / "test_qa.pkl");
    write_text(d / "qas" / "test" / "test_qa.json",
               R"([{"image": "test_0001", "question": "What is present?", "answer": "granulomas"},
                   {"image": "test_0002", "question": "Is it benign?", "answer": "no"}])");
    const std::string e = error_of([&] { load_benchmark(BenchKind::pathvqa, d); });
    EXPECT_NE(e.find("test_qa.json: entry 1 (qid test-1)"), std::string::npos) << e;
    EXPECT_NE(e.find("test_0002"), std::string::npos) << e;
    write_image(d / "images" / "test" / "test_0002.jpeg");
    b = load_benchmark(BenchKind::pathvqa, d);
    ASSERT_EQ(b.items.size(), 2u);
    EXPECT_EQ(b.items[1].kind, "CLOSED");
}

TEST(EvalBenchmark, MultipleChoice) {
    const fs::path d = hgtest::scratch_dir() / "mcq";
    write_image(d / "Images" / "x.png");
    write_text(d / "test.json", R"([
 {"question_id": "q1", "question": "What modality is this?", "option_A": "CT", "option_B": "MRI", "option_C": "X-ray",
  "option_D": "Ultrasound", "gt_answer": "X-ray", "image_path": "Images/x.png", "question_type": "Modality Recognition",
  "modality_type": "X-Ray"},
 {"id": "q2", "question": "Which side?", "options": {"A": "left", "B": "right"}, "answer": "B", "image": "Images/x.png"},
 {"question": "Normal?", "options": ["yes", "no"], "answer": "No", "image": "Images/x.png"}])");
    Benchmark b = load_benchmark(BenchKind::mcq, d / "test.json");
    ASSERT_EQ(b.items.size(), 3u);
    EXPECT_EQ(b.items[0].id, "mcq-q1");
    EXPECT_EQ(b.items[0].answer_option, 2);
    EXPECT_EQ(b.items[0].options.size(), 4u);
    EXPECT_EQ(b.items[0].meta.at("modality"), "X-Ray");
    EXPECT_EQ(b.items[1].answer_option, 1);
    EXPECT_EQ(b.items[1].answer, "right");
    EXPECT_EQ(b.items[2].id, "mcq-2");
    EXPECT_EQ(b.items[2].answer_option, 1);  // "No" == "no" after normalisation
    EXPECT_EQ(load_benchmark(BenchKind::mcq, d).items.size(), 3u);  // DATA/<split>.json
    // an answer that is none of the options
    write_text(d / "bad.json", R"([{"question_id": "q9", "question": "Q?", "option_A": "CT", "option_B": "MRI",
                                    "gt_answer": "PET", "image_path": "Images/x.png"}])");
    const std::string e = error_of([&] { load_benchmark(BenchKind::mcq, d / "bad.json"); });
    EXPECT_NE(e.find("bad.json: entry 0 (id q9): the answer \"PET\" matches none of the options"), std::string::npos) << e;
    write_text(d / "noimg.json", R"([{"question_id": "q9", "question": "Q?", "option_A": "CT", "option_B": "MRI",
                                      "gt_answer": "CT", "image_path": "Images/none.png"}])");
    const std::string e2 = error_of([&] { load_benchmark(BenchKind::mcq, d / "noimg.json"); });
    EXPECT_NE(e2.find("entry 0 (id q9): image"), std::string::npos) << e2;
    write_text(d / "dup.json", R"([{"id": "z", "question": "Q?", "options": ["a", "b"], "answer": "A", "image": "Images/x.png"},
                                    {"id": "z", "question": "R?", "options": ["a", "b"], "answer": "B", "image": "Images/x.png"}])");
    const std::string e3 = error_of([&] { load_benchmark(BenchKind::mcq, d / "dup.json"); });
    EXPECT_NE(e3.find("occurs twice"), std::string::npos) << e3;
}

TEST(EvalBenchmark, ImagePairs) {
    const fs::path d = hgtest::scratch_dir() / "pairs";
    write_image(d / "input" / "p1.png");
    write_image(d / "input" / "p2.png");
    write_image(d / "target" / "p1.png");
    const std::string e = error_of([&] { load_benchmark(BenchKind::ct2mri, d); });
    EXPECT_NE(e.find("item 1 (p2.png): no target image"), std::string::npos) << e;
    write_image(d / "target" / "p2.png");
    const Benchmark b = load_benchmark(BenchKind::ct2mri, d);
    ASSERT_EQ(b.items.size(), 2u);
    EXPECT_EQ(b.items[1].target, d / "target" / "p2.png");
    EXPECT_EQ(b.items[0].kind, "IMAGE");
    EXPECT_NE(error_of([&] { load_benchmark(BenchKind::sr, d / "input"); }).find("input/ and target/"), std::string::npos);
}
