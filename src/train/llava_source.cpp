#include "train/llava_source.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "train/vqa_import.h"

namespace hg::train {

DataFormat detect_data_format(const std::filesystem::path& path) {
    std::ifstream f(path);
    HG_CHECK(f.good(), "%s: cannot read the data file", path.string().c_str());
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
        fail("%s: not valid JSON: %s", path.string().c_str(), e.what());
    }
    HG_CHECK(j.is_array(), "%s: the data file must hold a JSON array of records", path.string().c_str());
    HG_CHECK(!j.empty(), "%s: the data file holds no records", path.string().c_str());
    const auto& r = j.front();
    HG_CHECK(r.is_object(), "%s: record 0 is not a JSON object", path.string().c_str());
    if (r.contains("conversations")) return DataFormat::Llava;
    if (r.contains("image_name") && r.contains("answer_type")) return DataFormat::VqaRad;
    if (r.contains("img_name") && r.contains("q_lang")) return DataFormat::Slake;
    fail("%s: record 0 is neither LLaVA (conversations), VQA-RAD (image_name, answer_type) nor SLAKE "
         "(img_name, q_lang)", path.string().c_str());
}

LlavaSource::LlavaSource(const std::filesystem::path& path, const TrainableModel& model, const LlavaSourceOptions& opt) {
    format_ = detect_data_format(path);
    DatasetOptions d;
    d.image_folder = opt.image_folder;
    d.max_seq = opt.max_seq;
    d.skip_bad = opt.skip_bad;
    d.lowercase_answers = opt.lowercase_answers;
    const ClipVision* vision = model.model().vision();
    d.image_rows = vision ? vision->config().n_patches() : 0;
    if (format_ == DataFormat::Llava) {
        dataset_ = std::make_unique<LlavaDataset>(LlavaDataset::load(path, d));
    } else {
        ImportOptions io;
        io.skip_bad = opt.skip_bad;
        ImportResult r = format_ == DataFormat::VqaRad ? import_vqa_rad(path, io) : import_slake(path, io);
        if (d.image_folder.empty()) d.image_folder = r.image_folder;
        dataset_ = std::make_unique<LlavaDataset>(LlavaDataset::from_records(std::move(r.records), d, path.string()));
    }
    dataset_->validate(model.model().tokenizer(), model.model().chat_template());
}

TrainSample LlavaSource::get(size_t i, const TrainableModel& model) const {
    TrainExample ex = dataset_->get(i, model.model().tokenizer(), model.model().chat_template());
    TrainSample s;
    s.id = ex.id;
    s.input_ids = std::move(ex.input_ids);
    s.labels = std::move(ex.labels);
    if (!ex.image_paths.empty()) {
        HG_CHECK(model.model().vision(), "%s: record %zu (id %s) has images but the model has no vision tower",
                 dataset_->source().c_str(), i, s.id.c_str());
        s.pixels = dataset_->load_images(ex, model.model().preprocess());
    }
    return s;
}

std::unique_ptr<LlavaSource> make_llava_source(const std::filesystem::path& path, const TrainableModel& model,
                                               const LlavaSourceOptions& opt) {
    return std::make_unique<LlavaSource>(path, model, opt);
}

}  // namespace hg::train
