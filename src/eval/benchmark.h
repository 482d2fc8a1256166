// Evaluation benchmarks: a data folder (or file) -> a list of items, every image path resolved and
// checked before anything runs, so a bad data set fails at once and names the file and the item.
//
//   --bench vqa-rad   DATA/testset.json | trainset.json (split test | train), images in DATA/images/
//   --bench slake     DATA/test.json | validate.json | train.json, images in DATA/imgs/; English only
//   --bench pathvqa   DATA/qas/<split>/<split>_qa.pkl or .json, images in DATA/images/<split>/
//                     (split test | val | train)
//     (these three through train/vqa_import.h; DATA may also be the question file itself)
//   --bench mcq       DATA is a JSON list (or DATA/<split>.json), OmniMedVQA style:
//                       {"question_id", "question", "option_A".."option_D", "gt_answer" (option text),
//                        "image_path", "question_type", "modality_type", "dataset"}
//                     also accepted: "options" as a list or {"A": ...}, "answer" as a letter or text,
//                     "image" for the image, "id"/"qid" for the id; images relative to the file's folder.
//   --bench recon | ct2mri | sr   DATA/input/NAME and DATA/target/NAME (same file names; PNG/JPEG/
//                     DICOM/NIfTI inputs, PNG/JPEG targets); an input without a target is an error.
//
// The candidate answer list (LLaVA-Med's candidate.json, VQA-RAD's answer_list.json) is a JSON list
// of answers or {"0": [...]}; every open item's answer must be in it (after LLaVA-Med's
// normalisation), or the run is refused: a list that does not match would score 0 silently.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hg::eval {

enum class BenchKind { vqa_rad, slake, pathvqa, mcq, recon, ct2mri, sr };
std::optional<BenchKind> bench_from_name(std::string_view name);  // "vqa-rad", "slake", ...
const char* bench_name(BenchKind k);
bool is_generation_bench(BenchKind k);

struct EvalItem {
    std::string id;             // unique in the benchmark: the log's key
    size_t source_index = 0;    // position in the source file (messages name it)
    std::string kind;           // "CLOSED" | "OPEN" (VQA), "MCQ", "IMAGE" (generation)
    std::string question;       // as in the file (MCQ: without the options)
    std::string answer;         // ground truth (MCQ: the right option's text)
    std::vector<std::filesystem::path> images;  // resolved; VQA: one per item; generation: the input
    std::vector<std::string> options;           // MCQ: option texts, options[i] is letter 'A' + i
    int answer_option = -1;                     // MCQ: index of the right option
    std::filesystem::path target;               // generation: the target image
    std::map<std::string, std::string> meta;    // question_type, organ, modality, phrase_type, ...
};

struct Benchmark {
    BenchKind kind = BenchKind::vqa_rad;
    std::string split;
    std::filesystem::path file;  // the question file (generation: the data folder)
    std::vector<EvalItem> items;
    std::vector<std::string> answer_list;  // candidate answers (may be empty)
    std::filesystem::path answer_list_file;
};

struct LoadOptions {
    std::string split = "test";
    // Candidate answer list for LLaVA-Med's "open accuracy"; empty: DATA/answer_list.json for
    // vqa-rad when present, none otherwise.
    std::filesystem::path answer_list;
    bool no_answer_list = false;  // ignore DATA/answer_list.json
};

// Throws hg::Error naming the file (and the item: "FILE: entry 12 (qid 34): image ... does not exist").
Benchmark load_benchmark(BenchKind kind, const std::filesystem::path& data, const LoadOptions& opt = {});

// The question file a VQA bench reads for a split (or `data` itself when it is a file).
std::filesystem::path question_file(BenchKind kind, const std::filesystem::path& data, const std::string& split);

// Reads a candidate answer list; throws naming the file when it is not a list of strings/numbers.
std::vector<std::string> read_answer_list(const std::filesystem::path& path);

}  // namespace hg::eval
