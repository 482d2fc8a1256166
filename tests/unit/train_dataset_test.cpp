// The training data layer (src/train/dataset.h, vqa_import.h): ids and labels against the committed
// oracle of tests/reference/gen_train_data.py (real Phi-3 slow tokenizer, LLaVA's preprocessing
// re-written), truncation, bad records, importers, the seeded data order.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

#include "core/error.h"
#include "imaging/load.h"
#include "test_util.h"
#include "text_test_util.h"
#include "train/dataset.h"
#include "train/vqa_import.h"

using namespace hg::train;
using hg::text::ChatTemplate;
using nlohmann::json;

namespace {

std::filesystem::path write_text(const std::string& name, const std::string& text) {
    const auto p = hgtest::scratch_dir() / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
}

// The error message of f(), or "" when it does not throw hg::Error.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const hg::Error& e) {
        return e.what();
    }
    return "";
}

const char* kGood = R"([{"id": "r0", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}])";

}  // namespace

TEST(TrainDataset, MatchesReferenceIdsAndLabels) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const hg::text::Tokenizer tok(hgtest::phi3_from_model());
    const json exp = json::parse(hgtest::read_text(hgtest::fixture("train_data/expected.json")));
    ASSERT_EQ(exp["image_rows"].get<int>(), 576);
    size_t compared = 0, too_long = 0;
    for (const json& c : exp["cases"]) {
        DatasetOptions o;
        o.max_seq = c["max_seq"].get<int64_t>();
        const LlavaDataset d = LlavaDataset::load(hgtest::fixture("train_data/data.json"), o);
        ASSERT_EQ(d.size(), 6u);
        const size_t i = c["index"].get<size_t>();
        const std::string what = c["id"].get<std::string>() + " max_seq " + std::to_string(o.max_seq);
        if (c.contains("too_long")) {
            const std::string msg = error_of([&] { d.get(i, tok, ChatTemplate::phi3_instruct); });
            EXPECT_NE(msg.find("record " + std::to_string(i) + " (id " + c["id"].get<std::string>() + ")"), std::string::npos) << msg;
            EXPECT_NE(msg.find("longer than max_seq"), std::string::npos) << msg;
            ++too_long;
            continue;
        }
        const TrainExample ex = d.get(i, tok, ChatTemplate::phi3_instruct);
        EXPECT_EQ(ex.id, c["id"].get<std::string>());
        EXPECT_EQ(ex.input_ids, hgtest::ids_of(c["input_ids"])) << what << "\n ours " << hgtest::show_ids(ex.input_ids)
                                                               << "\n ref  " << hgtest::show_ids(hgtest::ids_of(c["input_ids"]));
        EXPECT_EQ(ex.labels, hgtest::ids_of(c["labels"])) << what << "\n ours " << hgtest::show_ids(ex.labels)
                                                         << "\n ref  " << hgtest::show_ids(hgtest::ids_of(c["labels"]));
        EXPECT_EQ(ex.n_rows, c["n_rows"].get<int64_t>()) << what;
        EXPECT_EQ(ex.truncated, c["truncated"].get<bool>()) << what;
        EXPECT_EQ(ex.image_paths.size(), c["n_images"].get<size_t>()) << what;
        ++compared;
    }
    EXPECT_EQ(compared, 15u);
    EXPECT_EQ(too_long, 3u);
}

TEST(TrainDataset, LabelsCoverAnswersAndEndToken) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const hg::text::Tokenizer tok(hgtest::phi3_from_model());
    const LlavaDataset d = LlavaDataset::load(hgtest::fixture("train_data/data.json"));
    const TrainExample ex = d.get(1, tok, ChatTemplate::phi3_instruct);  // multi-turn
    // the target tokens decode to the three answers, each closed by <|end|> (32007)
    std::vector<int32_t> targets;
    int n_end = 0;
    for (size_t t = 0; t < ex.labels.size(); ++t) {
        if (ex.labels[t] == kIgnoreIndex) continue;
        EXPECT_EQ(ex.labels[t], ex.input_ids[t]);
        EXPECT_NE(ex.input_ids[t], hg::text::kImageTokenId);
        targets.push_back(ex.labels[t]);
        n_end += ex.labels[t] == 32007;
    }
    EXPECT_EQ(n_end, 3);
    EXPECT_EQ(tok.decode(targets), "The lungs are clear. No effusion.<|end|>No<|end|>Yes, mild.<|end|>");
    EXPECT_EQ(ex.labels.front(), kIgnoreIndex);
    EXPECT_EQ(ex.labels.back(), 32007);
}

TEST(TrainDataset, LoadImagesAsAsk) {
    const LlavaDataset d = LlavaDataset::load(hgtest::fixture("train_data/data.json"));
    TrainExample ex;  // images do not need the tokenizer
    ex.id = "two_images";
    ex.index = 3;
    ex.source_index = 3;
    ex.image_paths = {d.resolve_image("a.png"), d.resolve_image("b.png")};
    const auto px = d.load_images(ex, hg::imaging::ClipPreprocess{});
    ASSERT_EQ(px.size(), 2u);
    for (int k = 0; k < 2; ++k) {
        ASSERT_EQ(px[k].size(), 3u * 336 * 336);
        const auto img = hg::imaging::load_medical_image(ex.image_paths[k]);
        EXPECT_EQ(px[k], hg::imaging::clip_preprocess(img.at(0)));
    }
    EXPECT_NE(px[0], px[1]);
    // an unreadable image names the record and the file
    write_text("broken.png", "not a png");
    ex.image_paths = {hgtest::scratch_dir() / "broken.png"};
    const std::string msg = error_of([&] { d.load_images(ex, {}); });
    EXPECT_NE(msg.find("record 3 (id two_images): unreadable image"), std::string::npos) << msg;
    EXPECT_NE(msg.find("broken.png"), std::string::npos) << msg;
}

TEST(TrainDataset, BadRecordsNameIndexAndId) {
    struct Case { const char* name; const char* json; const char* reason; const char* message; };
    const Case cases[] = {
        {"missing_conv", R"([{"id": "a", "image": "x.png"}])", "missing field", "record 0 (id a): has no \"conversations\""},
        {"wrong_type", R"([{"id": "b", "conversations": "hi"}])", "wrong type", "record 0 (id b): \"conversations\" is not a list"},
        {"value_type", R"([{"id": "c", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]}])",
         "wrong type", "must be strings"},
        {"missing_value", R"([{"id": "d", "conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}])",
         "missing field", "lacks \"from\" or \"value\""},
        {"roles", R"([{"id": "e", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}])",
         "roles", "expected \"gpt\""},
        {"no_answer", R"([{"id": "f", "conversations": [{"from": "human", "value": "a"}]}])", "roles", "no gpt answer"},
        {"image_count", R"([{"id": "g", "image": "a.png", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}])",
         "image count", "0 \"<image>\" tag(s) for 1 image(s)"},
        {"missing_image", R"([{"id": "h", "image": "nope.png", "conversations": [{"from": "human", "value": "<image>\na"}, {"from": "gpt", "value": "b"}]}])",
         "missing image", "nope.png does not exist"},
        {"image_type", R"([{"id": "i", "image": 5, "conversations": [{"from": "human", "value": "<image>\na"}, {"from": "gpt", "value": "b"}]}])",
         "wrong type", "\"image\" is not a string"},
    };
    for (const Case& c : cases) {
        // the bad record second, after a good one: the index is 1
        std::string text = std::string(kGood);
        text = text.substr(0, text.size() - 1) + ", " + std::string(c.json).substr(1);
        const auto p = write_text(std::string(c.name) + ".json", text);
        const std::string msg = error_of([&] { LlavaDataset::load(p); });
        std::string want = c.message;
        if (want.rfind("record 0", 0) == 0) want = "record 1" + want.substr(8);
        EXPECT_NE(msg.find(want), std::string::npos) << c.name << ": " << msg;
        EXPECT_NE(msg.find(p.string()), std::string::npos) << c.name << ": " << msg;
        DatasetOptions o;
        o.skip_bad = true;
        const LlavaDataset d = LlavaDataset::load(p, o);
        EXPECT_EQ(d.size(), 1u) << c.name;
        EXPECT_EQ(d.skipped().total(), 1u) << c.name;
        EXPECT_EQ(d.skipped().by_reason.count(c.reason), 1u) << c.name << ": " << d.skipped().summary();
    }
}

TEST(TrainDataset, MessagesKeepFileIndexAfterSkipping) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const hg::text::Tokenizer tok(hgtest::phi3_from_model());
    // record 0 is bad (skipped), record 1 is good, record 2 is too long for max_seq 20
    const auto p = write_text("skip_index.json", R"([{"id": "bad"},
        {"id": "ok", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "long", "conversations": [{"from": "human", "value": "one two three four five six seven eight nine ten"},
                                         {"from": "gpt", "value": "eleven"}]}])");
    DatasetOptions o;
    o.skip_bad = true;
    o.max_seq = 20;
    const LlavaDataset d = LlavaDataset::load(p, o);
    ASSERT_EQ(d.size(), 2u);
    EXPECT_EQ(d.get(0, tok, ChatTemplate::phi3_instruct).source_index, 1u);
    const std::string msg = error_of([&] { d.get(1, tok, ChatTemplate::phi3_instruct); });
    EXPECT_NE(msg.find("record 2 (id long): the prompt is longer than max_seq (20 rows)"), std::string::npos) << msg;
}

TEST(TrainDataset, MalformedJsonGivesPosition) {
    const auto p = write_text("malformed.json", R"([{"id": "a", "conversations": [}])");
    const std::string msg = error_of([&] { LlavaDataset::load(p); });
    EXPECT_NE(msg.find("malformed JSON at byte 32"), std::string::npos) << msg;  // nlohmann: 1-based
    EXPECT_NE(msg.find("line 1, column 32"), std::string::npos) << msg;
    const auto q = write_text("object.json", R"({"id": 1})");
    EXPECT_NE(error_of([&] { LlavaDataset::load(q); }).find("a JSON list of records"), std::string::npos);
    EXPECT_NE(error_of([&] { LlavaDataset::load(hgtest::scratch_dir() / "absent.json"); }).find("cannot open"),
              std::string::npos);
}

TEST(TrainDataset, TooLongSkippedAndCounted) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const hg::text::Tokenizer tok(hgtest::phi3_from_model());
    DatasetOptions o;
    o.max_seq = 600;
    o.skip_bad = true;
    LlavaDataset d = LlavaDataset::load(hgtest::fixture("train_data/data.json"), o);
    EXPECT_EQ(d.validate(tok, ChatTemplate::phi3_instruct), 4u);  // single and two_images do not fit
    EXPECT_EQ(d.skipped().by_reason.at("too long"), 2u);
    EXPECT_EQ(d.skipped().summary(), "2 skipped (too long 2)");
    o.skip_bad = false;
    LlavaDataset strict = LlavaDataset::load(hgtest::fixture("train_data/data.json"), o);
    const std::string msg = error_of([&] { strict.validate(tok, ChatTemplate::phi3_instruct); });
    EXPECT_NE(msg.find("record 0 (id single): the prompt is longer than max_seq (600 rows)"), std::string::npos) << msg;
}

TEST(TrainDataset, OtherTemplatesTargetTheirSeparators) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/qwen2/tokenizer.json");
    const hg::text::Tokenizer qwen(hgtest::qwen2_from_json());
    const LlavaDataset d = LlavaDataset::load(hgtest::fixture("train_data/data.json"));
    const TrainExample ex = d.get(1, qwen, ChatTemplate::qwen_2);
    std::vector<int32_t> targets;
    for (int32_t l : ex.labels)
        if (l != kIgnoreIndex) targets.push_back(l);
    EXPECT_EQ(qwen.decode(targets),
              "The lungs are clear. No effusion.<|im_end|>\nNo<|im_end|>\nYes, mild.<|im_end|>\n");
}

TEST(TrainDataset, WriteAndReadBack) {
    std::vector<LlavaRecord> recs(2);
    recs[0].id = "x1";
    recs[0].images = {"a.png"};
    recs[0].conversations = {{"human", "<image>\nQ?"}, {"gpt", "A."}};
    recs[0].meta = {{"answer_type", "CLOSED"}, {"organ", "CHEST"}};
    recs[1].id = "x2";
    recs[1].images = {"a.png", "b.png"};
    recs[1].conversations = {{"human", "<image>\n<image>\nQ2"}, {"gpt", "A2"}};
    const auto p = hgtest::scratch_dir() / "written.json";
    write_llava_json(p, recs);
    EXPECT_FALSE(std::filesystem::exists(p.string() + ".tmp"));
    DatasetOptions o;
    o.image_folder = hgtest::fixture("train_data");
    const LlavaDataset d = LlavaDataset::load(p, o);
    ASSERT_EQ(d.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(d.record(i).id, recs[i].id);
        EXPECT_EQ(d.record(i).images, recs[i].images);
        EXPECT_EQ(d.record(i).meta, recs[i].meta);
        ASSERT_EQ(d.record(i).conversations.size(), 2u);
        EXPECT_EQ(d.record(i).conversations[0].value, recs[i].conversations[0].value);
    }
}

TEST(TrainDataset, ImportVqaRad) {
    HG_SKIP_WITHOUT_SHARED_DATA("vqa-rad/trainset.json");
    const ImportResult r = import_vqa_rad(hgtest::shared_data() / "vqa-rad/trainset.json");
    ASSERT_EQ(r.records.size(), 1798u);
    EXPECT_EQ(r.skipped.total(), 0u);
    const LlavaRecord& a = r.records[0];  // qid 970, synpic52828.jpg
    EXPECT_EQ(a.id, "vqarad-970");
    EXPECT_EQ(a.images, std::vector<std::string>{"synpic52828.jpg"});
    EXPECT_EQ(a.conversations[0].value, "<image>\nIs this image taken with or without contrast?");
    EXPECT_EQ(a.conversations[1].value, "with contrast");
    EXPECT_EQ(a.meta.at("answer_type"), "OPEN");
    EXPECT_EQ(a.meta.at("question_type"), "MODALITY");
    EXPECT_EQ(a.meta.at("organ"), "ABD");
    std::set<std::string> types;
    for (const LlavaRecord& rec : r.records) types.insert(rec.meta.at("answer_type"));
    EXPECT_EQ(types, (std::set<std::string>{"CLOSED", "OPEN"}));  // "CLOSED " normalised
    // through the dataset (images resolved against images/) and written + read back
    DatasetOptions o;
    o.image_folder = r.image_folder;
    const LlavaDataset d = LlavaDataset::from_records(r.records, o, "vqa-rad");
    EXPECT_EQ(d.size(), 1798u);
    const auto p = hgtest::scratch_dir() / "vqarad.json";
    write_llava_json(p, r.records);
    EXPECT_EQ(LlavaDataset::load(p, o).size(), 1798u);
}

TEST(TrainDataset, ImportSlakeEnglishOnlyAndBadEntries) {
    const auto dir = hgtest::scratch_dir() / "slake";
    std::filesystem::create_directories(dir / "imgs/xmlab1");
    std::filesystem::copy_file(hgtest::fixture("train_data/a.png"), dir / "imgs/xmlab1/source.jpg",
                               std::filesystem::copy_options::overwrite_existing);
    std::ofstream(dir / "train.json") << R"([
      {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Which organ is abnormal?", "answer": "Lung",
       "q_lang": "en", "location": "Lung", "modality": "CT", "answer_type": "OPEN", "base_type": "vqa",
       "content_type": "Organ", "qid": 11},
      {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "哪个器官不正常?", "answer": "肺",
       "q_lang": "zh", "location": "Lung", "modality": "CT", "answer_type": "OPEN", "qid": 12},
      {"img_id": 1, "img_name": "xmlab1/missing.jpg", "question": "Is it CT?", "answer": "Yes", "q_lang": "en", "qid": 13},
      {"img_id": 1, "img_name": "xmlab1/source.jpg", "answer": "Yes", "q_lang": "en", "qid": 14}
    ])";
    ImportOptions o;
    o.skip_bad = true;
    const ImportResult r = import_slake(dir / "train.json", o);
    ASSERT_EQ(r.records.size(), 1u);
    EXPECT_EQ(r.records[0].id, "slake-11");
    EXPECT_EQ(r.records[0].conversations[0].value, "<image>\nWhich organ is abnormal?");
    EXPECT_EQ(r.records[0].meta.at("modality"), "CT");
    EXPECT_EQ(r.records[0].meta.at("organ"), "Lung");
    EXPECT_EQ(r.records[0].meta.at("question_type"), "Organ");
    EXPECT_EQ(r.skipped.by_reason.at("missing image"), 1u);
    EXPECT_EQ(r.skipped.by_reason.at("missing field"), 1u);
    o.all_languages = true;
    EXPECT_EQ(import_slake(dir / "train.json", o).records.size(), 2u);
    const std::string msg = error_of([&] { import_slake(dir / "train.json"); });
    EXPECT_NE(msg.find("entry 2 (qid 13)"), std::string::npos) << msg;
}

TEST(TrainDataset, PermutationIsSeededAndPortable) {
    const std::vector<size_t> p = permutation(10, 42, 0);
    std::vector<size_t> sorted = p;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[i], i);
    EXPECT_EQ(p, permutation(10, 42, 0));
    EXPECT_NE(p, permutation(10, 42, 1));
    EXPECT_NE(p, permutation(10, 43, 0));
    // against the Python oracle (mt19937_64 written out, checked on the standard's 10000th output)
    const json exp = json::parse(hgtest::read_text(hgtest::fixture("train_data/permutations.json")));
    size_t n_cases = 0;
    for (const json& c : exp["permutations"]) {
        EXPECT_EQ(permutation(c["n"].get<size_t>(), c["seed"].get<uint64_t>(), c["epoch"].get<uint64_t>()),
                  c["order"].get<std::vector<size_t>>())
            << "n " << c["n"] << " seed " << c["seed"] << " epoch " << c["epoch"];
        ++n_cases;
    }
    EXPECT_EQ(n_cases, 5u);
}

TEST(TrainDataset, DataOrderBatchesAndResumes) {
    DataOrder order(7, 3, {.seed = 5});
    EXPECT_EQ(order.batches_per_epoch(), 3u);
    std::vector<std::vector<size_t>> all;
    for (int k = 0; k < 6; ++k) all.push_back(order.next_batch());
    const auto e0 = permutation(7, 5, 0), e1 = permutation(7, 5, 1);
    EXPECT_EQ(all[0], (std::vector<size_t>{e0[0], e0[1], e0[2]}));
    EXPECT_EQ(all[2], (std::vector<size_t>{e0[6]}));  // the last micro-batch of an epoch is shorter
    EXPECT_EQ(all[3], (std::vector<size_t>{e1[0], e1[1], e1[2]}));
    // resume from a serialised state continues exactly
    DataOrder a(7, 3, {.seed = 5});
    a.next_batch();
    a.next_batch();
    const std::string saved = a.state().to_json();
    DataOrder b(7, 3, DataOrderState::from_json(saved));
    EXPECT_EQ(b.state(), a.state());
    for (int k = 0; k < 5; ++k) EXPECT_EQ(a.next_batch(), b.next_batch());
    EXPECT_NE(error_of([] { DataOrderState::from_json("{\"seed\": 1}"); }).find("data order state"), std::string::npos);
    EXPECT_NE(error_of([] { DataOrder(3, 0); }).find("batch must be positive"), std::string::npos);
}

TEST(TrainDataset, MatchesReferenceWithBos) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/phi3/tokenizer.model");
    const hg::text::Tokenizer tok(hgtest::phi3_from_model("phi3/tokenizer_config.add_bos.json"));
    const json exp = json::parse(hgtest::read_text(hgtest::fixture("train_data/expected_bos.json")));
    const LlavaDataset d = LlavaDataset::load(hgtest::fixture("train_data/data.json"));
    size_t compared = 0;
    for (const json& c : exp["bos_cases"]) {
        const TrainExample ex = d.get(c["index"].get<size_t>(), tok, ChatTemplate::phi3_instruct);
        EXPECT_EQ(ex.input_ids, hgtest::ids_of(c["input_ids"])) << c["id"];
        EXPECT_EQ(ex.labels, hgtest::ids_of(c["labels"])) << c["id"];
        EXPECT_EQ(ex.input_ids.at(0), 1);  // <s>
        ++compared;
    }
    EXPECT_EQ(compared, 6u);
}

TEST(TrainDataset, Phi4TargetsImEnd) {
    HG_SKIP_WITHOUT_SHARED_DATA("tokenizers/cl100k/tokenizer.json");
    const hg::text::Tokenizer phi4(hgtest::phi4_from_json());
    const LlavaDataset d = LlavaDataset::load(hgtest::fixture("train_data/data.json"));
    const TrainExample ex = d.get(3, phi4, ChatTemplate::phi4_instruct);  // two images
    std::vector<int32_t> targets;
    int slots = 0;
    for (size_t t = 0; t < ex.labels.size(); ++t) {
        if (ex.labels[t] != kIgnoreIndex) targets.push_back(ex.labels[t]);
        slots += ex.input_ids[t] == hg::text::kImageTokenId;
    }
    EXPECT_EQ(slots, 2);
    EXPECT_EQ(phi4.decode(targets), "The second shows a new opacity in the right lower lobe.<|im_end|>");
    EXPECT_EQ(targets.back(), 100265);
}

// --lowercase-answers: gpt turns lower-cased, human turns untouched (VQA-RAD spells one answer "No"
// and "no": two different targets for the same meaning).
TEST(TrainDataset, LowercaseAnswersOnlyTouchesGptTurns) {
    std::vector<LlavaRecord> recs(1);
    recs[0].id = "c1";
    recs[0].conversations = {{"human", "Is There A Mass?"}, {"gpt", "No, Left LOBE"}};
    DatasetOptions o;
    o.lowercase_answers = true;
    const LlavaDataset d = LlavaDataset::from_records(recs, o, "mem");
    EXPECT_EQ(d.record(0).conversations[0].value, "Is There A Mass?");
    EXPECT_EQ(d.record(0).conversations[1].value, "no, left lobe");
    o.lowercase_answers = false;
    EXPECT_EQ(LlavaDataset::from_records(recs, o, "mem").record(0).conversations[1].value, "No, Left LOBE");
}
