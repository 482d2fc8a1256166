// The trainer's view of a data file: LLaVA conversation JSON, or a VQA-RAD / SLAKE question file
// (imported on the fly), tokenised for the model's template and its images loaded through the same
// preprocessing as `ask` (dataset.h), as a SampleSource.
#pragma once
#include <filesystem>
#include <memory>

#include "train/dataset.h"
#include "train/trainer.h"

namespace hg::train {

struct LlavaSourceOptions {
    std::filesystem::path image_folder;  // empty: the data file's (VQA-RAD: its images/)
    int64_t max_seq = 2048;
    bool skip_bad = false;
    bool lowercase_answers = false;  // DatasetOptions::lowercase_answers
};

// Which format `path` holds: a JSON array whose first element has "conversations" (LLaVA), or
// "image_name" + "answer_type" (VQA-RAD), or "img_name" + "q_lang" (SLAKE).
enum class DataFormat { Llava, VqaRad, Slake };
DataFormat detect_data_format(const std::filesystem::path& path);

// Every record is tokenised up front (validate): a bad one is an error naming it, or with
// skip_bad is dropped and counted (skipped()).
class LlavaSource final : public SampleSource {
public:
    LlavaSource(const std::filesystem::path& path, const TrainableModel& model, const LlavaSourceOptions& opt);
    size_t size() const override { return dataset_->size(); }
    TrainSample get(size_t i, const TrainableModel& model) const override;
    const LlavaDataset& dataset() const { return *dataset_; }
    DataFormat format() const { return format_; }

private:
    std::unique_ptr<LlavaDataset> dataset_;
    DataFormat format_ = DataFormat::Llava;
};

std::unique_ptr<LlavaSource> make_llava_source(const std::filesystem::path& path, const TrainableModel& model,
                                               const LlavaSourceOptions& opt);

}  // namespace hg::train
