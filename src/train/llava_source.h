// The trainer's SampleSource (trainer.h) over a LlavaDataset: example i tokenised with the model's
// own tokenizer and chat template (text.gguf: healthgpt.chat_template), its images loaded lazily and
// preprocessed as `ask` does (the model's CLIP preprocessing). Nothing is cached: a 10k-record set
// holds only the records in memory.
#pragma once
#include "train/dataset.h"
#include "train/trainer.h"

namespace hg::train {

class LlavaSource final : public SampleSource {
public:
    // `data` must outlive the source.
    LlavaSource(const LlavaDataset& data, imaging::ImageOptions image_options = {})
        : data_(data), io_(std::move(image_options)) {}
    size_t size() const override { return data_.size(); }
    TrainSample get(size_t i, const TrainableModel& model) const override {
        const Model& m = model.model();
        TrainExample ex = data_.get(i, m.tokenizer(), m.chat_template());
        TrainSample s;
        s.id = ex.id;
        if (!ex.image_paths.empty()) s.pixels = data_.load_images(ex, m.preprocess(), io_);
        s.input_ids = std::move(ex.input_ids);
        s.labels = std::move(ex.labels);
        return s;
    }

private:
    const LlavaDataset& data_;
    imaging::ImageOptions io_;
};

}  // namespace hg::train
