// Importers of medical VQA benchmarks into LLaVA records (dataset.h): one record per question,
// human "<image>\n" + question, gpt the answer; the benchmark's metadata kept in LlavaRecord::meta
// for the evaluation harness (answer_type CLOSED/OPEN, question_type, organ, modality, q_lang ...).
//
//   VQA-RAD (trainset.json / testset.json): qid, image_name, question, answer, answer_type,
//     question_type, image_organ, phrase_type; images under images/. answer_type is trimmed and
//     upper-cased ("CLOSED " occurs in the release).
//   SLAKE (train.json / validate.json / test.json): qid, img_id, img_name ("xmlab1/source.jpg"),
//     question, answer, answer_type, q_lang ("en" | "zh"), location, modality, content_type, base_type;
//     images under imgs/. English only unless `all_languages`.
//   PathVQA (the release's pvqa/ layout): qas/<split>/<split>_qa.pkl, a pickled list of
//     {"image": "test_0000", "question", "answer"} (no extension on the image name), and the same
//     list as JSON (<split>_qa.json, e.g. written by json.dump of the pickle); images under
//     images/<split>/<image>.jpg (.png, .jpeg or the name as given also accepted). The pickle is read
//     by our restricted unpickler (formats/pickle.h): plain lists/dicts/strings only, any global is
//     refused. answer_type: the entry's own if present, else CLOSED for yes/no answers and OPEN
//     otherwise (the convention of the PathVQA paper and LLaVA-Med's conversion). No qid: ids are
//     "<split>-<index in file>".
// Record ids are "<prefix><qid>" (prefix "vqarad-" / "slake-" / "pathvqa-"); images relative to the
// data set's image folder (returned in ImportResult::image_folder for DatasetOptions::image_folder).
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/dataset.h"

namespace hg::train {

// A whole JSON file; hg::Error naming the file (and the byte of a syntax error) when unreadable.
nlohmann::json read_json_file(const std::filesystem::path& p);
// A scalar field as text (strings as they are, integers without ".0", floats and booleans dumped);
// "" for null, arrays and objects.
std::string json_text(const nlohmann::json& v);

struct ImportResult {
    std::vector<LlavaRecord> records;
    std::filesystem::path image_folder;  // where the records' image paths are relative to
    SkipReport skipped;                  // with skip_bad: entries dropped, by reason
};

struct ImportOptions {
    bool skip_bad = false;       // drop bad entries (counted) instead of throwing
    bool all_languages = false;  // SLAKE: keep q_lang != "en" too
    bool check_images_exist = true;
};

// `json_path` is e.g. ../shared/data/vqa-rad/trainset.json; images in its folder's images/.
ImportResult import_vqa_rad(const std::filesystem::path& json_path, const ImportOptions& opt = {});
// `json_path` is e.g. SLAKE/train.json; images in its folder's imgs/.
ImportResult import_slake(const std::filesystem::path& json_path, const ImportOptions& opt = {});
// `qa_path` is e.g. pvqa/qas/test/test_qa.pkl (or .json); images in pvqa/images/test/.
ImportResult import_pathvqa(const std::filesystem::path& qa_path, const ImportOptions& opt = {});

}  // namespace hg::train
