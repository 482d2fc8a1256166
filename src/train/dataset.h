// The training data layer: LLaVA conversation JSON -> token ids with image slots, labels with -100
// masks, and the images, loaded lazily per record.
//
//   auto data = hg::train::LlavaDataset::load("train.json", {.max_seq = 2048});
//   TrainExample ex = data.get(i, tokenizer, hg::text::ChatTemplate::phi3_instruct);
//   std::vector<std::vector<float>> pixels = data.load_images(ex, model.preprocess());  // [3,336,336] each
//
// Record format (LLaVA's):
//   [{"id": "...", "image": "a.png" | ["a.png", "b.dcm"] (optional: text-only),
//     "conversations": [{"from": "human", "value": "<image>\n..."}, {"from": "gpt", "value": "..."}, ...]}]
// Image paths are relative to DatasetOptions::image_folder (default: the JSON file's folder) and are
// read with imaging::load_medical (PNG/JPEG/DICOM/NIfTI, what `healthgpt ask` accepts).
//
// Tokenisation (what we follow, and why):
//   * Each human value with "<image>" is rewritten as LLaVA's preprocess_multimodal does: every
//     "<image>" removed, the rest stripped of surrounding whitespace, then "<image>\n" once per
//     removed occurrence put in front (LLaVA puts exactly one; for one image that is the same, for
//     several it is what `ask` builds). A first turn from "gpt" is dropped (LLaVA: source[1:]).
//   * The prompt string is the template's Conversation.get_prompt with every turn answered
//     (text::build_prompt, checked), tokenised once with text::tokenize_with_images (slow semantics),
//     exactly what the model is fed.
//   * labels = input_ids on the tokens of every assistant answer and the separator that closes it
//     (phi3_instruct: "<|end|>", phi4_instruct: "<|im_end|>", qwen_2: "<|im_end|>\n"), -100
//     everywhere else (system prompt, user turns, role markers, image slots). The spans are found by
//     tokenising the prompt's prefixes up to each boundary (as LLaVA's preprocess_* does round by
//     round) and checking that each prefix tokenises to a prefix of the whole: a record where it does
//     not is an error ("tokenization mismatch"), where LLaVA would print a warning and mask it all.
//   * We do NOT reproduce LLaVA's per-template off-by-one corrections (preprocess_mpt's
//     `instruction_len - 1`, which un-masks the last token of the instruction when the tokenizer adds
//     no BOS, and `round_len` without the separator, which for Phi-3's rstrip'd "<|end|>" and lone
//     "▁" drifts by a token per round and then masks the whole record): HealthGPT's training code is
//     not public, and the quirks either train on a role marker or silently drop multi-turn records.
//     The exact answer span is what LLaVA intends; see the tests and gen_train_data.py. Measured:
//     gen_train_data.py's re-write of preprocess_mpt (LLaVA v1.5, has_image branch) masks all six
//     fixture records with the Phi-3 tokenizer (its "tokenization mismatch"; expected.json keeps
//     its labels as llava_mpt_labels), so following it literally would train on nothing.
//   * Truncation to max_seq counts sequence rows: a text token is 1 row, an image slot
//     `image_rows` rows (576 for CLIP-L/14 at 336). Ids and labels are cut at max_seq rows (LLaVA:
//     input_ids[:model_max_length] and the expanded embeddings cut again); an image slot that does
//     not fit completely is removed with everything after it (and its image). A record with no
//     target token left is bad ("prompt longer than max_seq").
//
// Bad records (missing/unreadable image, missing field, wrong type, roles out of order, image count
// != "<image>" count, too long) throw hg::Error naming "FILE: record INDEX (id ID): problem"; with
// DatasetOptions::skip_bad they are dropped and counted by reason (skipped()). Structure and image
// existence are checked at load(); length by validate(tokenizer, template); decoding at load_images().
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "imaging/load.h"
#include "imaging/preprocess.h"
#include "text/chat.h"
#include "text/tokenizer.h"

namespace hg::train {

constexpr int32_t kIgnoreIndex = -100;  // IGNORE_INDEX: no loss at this position

struct LlavaTurn {
    std::string from;   // "human" | "gpt"
    std::string value;
};

// One record as stored. `meta` keeps any other string/number fields (answer_type, question_type,
// organ, modality, ...) as strings, for the evaluation harness.
struct LlavaRecord {
    std::string id;
    std::vector<std::string> images;  // as written in the file (relative to the image folder)
    std::vector<LlavaTurn> conversations;
    std::map<std::string, std::string> meta;
    size_t source_index = 0;  // position in the file (messages name it; it survives skipping)
};

struct DatasetOptions {
    std::filesystem::path image_folder;  // empty: the JSON file's folder
    int64_t max_seq = 2048;              // sequence rows (text tokens + image_rows per image)
    int64_t image_rows = 576;            // rows one image slot occupies in the decoder
    bool skip_bad = false;               // drop bad records (counted) instead of throwing
    bool check_images_exist = true;      // load(): every image path must exist
    bool lowercase_answers = false;      // gpt turns lower-cased (ASCII): VQA-RAD has "No" and "no"
};

// One example ready for the trainer (images not yet loaded).
struct TrainExample {
    std::string id;
    size_t index = 0;                       // record index in the dataset (after skipping)
    size_t source_index = 0;                // record index in the file
    std::vector<int32_t> input_ids;         // text ids and text::kImageTokenId slots
    std::vector<int32_t> labels;            // same length; kIgnoreIndex where no loss
    std::vector<std::filesystem::path> image_paths;  // resolved, one per slot, in order
    int64_t n_rows = 0;                     // sequence rows (image slots expanded)
    int64_t n_targets = 0;                  // labels != kIgnoreIndex
    bool truncated = false;
};

// Counts of dropped records by reason ("missing field", "wrong type", "missing image",
// "unreadable image", "image count", "too long", "roles", "tokenization mismatch").
struct SkipReport {
    std::map<std::string, size_t> by_reason;
    size_t total() const;
    std::string summary() const;  // "3 skipped (missing image 2, too long 1)" or "none skipped"
};

class LlavaDataset {
public:
    // Reads and checks a LLaVA JSON file. Malformed JSON -> hg::Error with the byte position.
    static LlavaDataset load(const std::filesystem::path& json_path, const DatasetOptions& options = {});
    // Records already in memory (the importers); `source` names them in messages.
    static LlavaDataset from_records(std::vector<LlavaRecord> records, const DatasetOptions& options,
                                     std::string source = "records");

    size_t size() const { return records_.size(); }
    const LlavaRecord& record(size_t i) const { return records_.at(i); }
    const std::vector<LlavaRecord>& records() const { return records_; }
    const SkipReport& skipped() const { return skipped_; }
    const DatasetOptions& options() const { return options_; }

    // Tokenises record i for `tmpl`. Throws hg::Error naming the record when it is bad.
    TrainExample get(size_t i, const text::Tokenizer& tok, text::ChatTemplate tmpl) const;

    // Tokenises every record: without skip_bad throws at the first bad one, with skip_bad drops the
    // bad ones (counted in skipped()). Returns the number of records kept.
    size_t validate(const text::Tokenizer& tok, text::ChatTemplate tmpl);

    // The example's images through the same loading and CLIP preprocessing as `ask`
    // (imaging::load_medical + clip_preprocess): one [3, S, S] tensor per slot, in order. A file that
    // gives several images (a DICOM series with --slices) counts as one slot per image, as in ask,
    // and must match the slot count. Throws naming the record and the file when unreadable.
    std::vector<std::vector<float>> load_images(const TrainExample& ex, const imaging::ClipPreprocess& pre,
                                                const imaging::ImageOptions& io = {}) const;

    std::filesystem::path resolve_image(const std::string& rel) const;
    const std::string& source() const { return source_; }

private:
    std::string source_;
    DatasetOptions options_;
    std::vector<LlavaRecord> records_;
    SkipReport skipped_;
    static LlavaDataset checked_records(std::vector<LlavaRecord> records, const DatasetOptions& options,
                                        std::string source);  // image checks, source_index kept
    std::string where(size_t i) const;  // "FILE: record I (id X)", I the index in the file
};

// Parses LLaVA JSON text (exposed for tests and importers). `source` names it in messages.
// Structure errors carry the record index and id; skip_bad drops them into `skipped`.
std::vector<LlavaRecord> parse_llava_json(const std::string& text, const std::string& source, bool skip_bad,
                                          SkipReport* skipped);

// Writes records as LLaVA JSON (meta fields included at the top level), atomically (temp + rename).
void write_llava_json(const std::filesystem::path& path, const std::vector<LlavaRecord>& records);

// ---------------------------------------------------------------------------------------------
// Data order: epoch e visits permutation(n, seed, e); micro-batches are `batch` consecutive indices
// of it (the last may be shorter).

// Fisher-Yates driven by std::mt19937_64 seeded with seed ^ (epoch * golden ratio constant), with our
// own bounded draw (rejection sampling on the raw 64-bit output), so every standard library gives
// the same order.
std::vector<size_t> permutation(size_t n, uint64_t seed, uint64_t epoch);

// Where the data order stands: serialisable for resume.
struct DataOrderState {
    uint64_t seed = 42;
    uint64_t epoch = 0;
    uint64_t cursor = 0;  // position in the epoch's permutation
    std::string to_json() const;
    static DataOrderState from_json(const std::string& text);  // throws on a malformed state
    bool operator==(const DataOrderState&) const = default;
};

class DataOrder {
public:
    DataOrder(size_t n, int batch, DataOrderState state = {});
    // The next micro-batch of dataset indices; at the end of an epoch it moves to the next one
    // (a micro-batch never spans two epochs).
    std::vector<size_t> next_batch();
    const DataOrderState& state() const { return state_; }
    size_t batches_per_epoch() const;

private:
    size_t n_;
    int batch_;
    DataOrderState state_;
    std::vector<size_t> perm_;
    uint64_t perm_epoch_ = UINT64_MAX;
};

}  // namespace hg::train
