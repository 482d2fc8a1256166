#include "runtime/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "model/decoder_loader.h"
#include "model/weight_source.h"
#include "text/gguf_tokenizer.h"

namespace hg {

std::optional<text::ChatTemplate> detect_chat_template(const GGUFFile& f, const text::Tokenizer& tok) {
    if (auto name = f.get_string(model_keys::kChatTemplate)) {
        auto t = text::chat_template_from_name(*name);
        HG_CHECK(t.has_value(), "%s: %s '%s' is not one of phi3_instruct, phi4_instruct, qwen_2",
                 f.path().string().c_str(), model_keys::kChatTemplate, name->c_str());
        return t;
    }
    if (tok.token_to_id("<|user|>") >= 0 && tok.token_to_id("<|assistant|>") >= 0) return text::ChatTemplate::phi3_instruct;
    if (tok.token_to_id("<|im_sep|>") >= 0) return text::ChatTemplate::phi4_instruct;
    if (tok.token_to_id("<|im_start|>") >= 0) return text::ChatTemplate::qwen_2;
    return std::nullopt;
}

std::shared_ptr<const Model> Model::load(const std::filesystem::path& path, const ModelOptions& opt) {
    namespace fs = std::filesystem;
    std::error_code ec;
    HG_CHECK(fs::exists(path, ec), "%s: no such model folder or file", path.string().c_str());
    const bool folder = fs::is_directory(path, ec);
    const fs::path text_path = folder ? path / "text.gguf" : path;
    HG_CHECK(fs::exists(text_path, ec), "%s: no text.gguf in this model folder (healthgpt convert writes one)",
             path.string().c_str());

    std::shared_ptr<Model> m(new Model());
    m->path_ = path;

    // --- text model: decoder and tokenizer from one mapped file
    m->text_file_ = GGUFFile::open(text_path);
    const GGUFFile& tf = *m->text_file_;
    const std::string tsrc = text_path.string();
    std::vector<int32_t> file_stops;
    if (auto a = tf.get_int_array(model_keys::kStopTokenIds))
        for (int64_t id : *a) {
            HG_CHECK(id >= 0 && id <= INT32_MAX, "%s: %s holds %lld", tsrc.c_str(), model_keys::kStopTokenIds, (long long)id);
            file_stops.push_back((int32_t)id);
        }
    auto override_for = [&opt](const std::string& file) -> TensorOverride {
        if (!opt.tensor_override) return {};
        return [f = opt.tensor_override, file](std::string_view n) { return f(file, n); };
    };
    m->base_ = load_decoder(with_override(gguf_source(tf), override_for("text")), m->text_file_, file_stops);
    HG_CHECK(text::has_tokenizer(tf), "%s: the text model has no tokenizer (tokenizer.ggml.* keys)", tsrc.c_str());
    m->tokenizer_.emplace(text::load_tokenizer(tf));
    text::Tokenizer& tok = *m->tokenizer_;
    HG_CHECK(tok.size() <= m->base_->hparams().n_vocab,
             "%s: the tokenizer has %d tokens but the embedding only %lld rows", tsrc.c_str(), tok.size(),
             (long long)m->base_->hparams().n_vocab);

    auto tmpl = opt.chat_template ? opt.chat_template : detect_chat_template(tf, tok);
    HG_CHECK(tmpl.has_value(), "%s: no %s key and no known chat tokens in the vocabulary: pass a template "
             "(phi3_instruct, phi4_instruct, qwen_2)", tsrc.c_str(), model_keys::kChatTemplate);
    m->template_ = *tmpl;
    if (auto rp = tf.get_float(model_keys::kRepetitionPenalty)) {
        HG_CHECK(*rp > 0 && std::isfinite(*rp), "%s: %s = %g", tsrc.c_str(), model_keys::kRepetitionPenalty, *rp);
        m->repetition_penalty_ = (float)*rp;
    } else {
        m->repetition_penalty_ = m->template_ == text::ChatTemplate::qwen_2 ? 1.05f : 1.0f;
    }

    m->notice_ = tf.get_string(model_keys::kNotice).value_or("");

    // --- HealthGPT's vocabulary extension (reference order: before the plugins)
    m->decoder_ = m->base_;
    const bool vq = opt.vq_vocabulary.value_or(folder && text::chat_model(m->template_).vq_vocabulary);
    if (vq) {
        const int32_t n_before = tok.size();
        m->vq_added_ = text::add_vq_vocabulary(tok);
        if (m->vq_added_ > 0) m->decoder_ = with_mean_rows(m->base_, n_before, m->vq_added_);
    }
    HG_CHECK(tok.size() <= m->decoder_->hparams().n_vocab, "%s: %d tokens after the vocabulary extension, %lld rows",
             tsrc.c_str(), tok.size(), (long long)m->decoder_->hparams().n_vocab);
    m->vq_ = text::vq_vocabulary(tok);

    // --- stop ids: the file's, plus the template's end-of-turn token
    m->stop_ids_ = m->base_->stop_ids();
    const char* end_token = m->template_ == text::ChatTemplate::phi3_instruct ? "<|end|>" : "<|im_end|>";
    const int32_t end_id = tok.token_to_id(end_token);
    if (end_id >= 0 && std::find(m->stop_ids_.begin(), m->stop_ids_.end(), end_id) == m->stop_ids_.end())
        m->stop_ids_.push_back(end_id);
    HG_CHECK(!m->stop_ids_.empty(), "%s: no stop token (healthgpt.stop_token_ids, tokenizer.ggml.eos_token_id, %s)",
             tsrc.c_str(), end_token);

    // --- vision tower
    int64_t vision_hidden = 0;
    if (folder && opt.vision && fs::exists(path / "vision.gguf", ec)) {
        m->vision_file_ = GGUFFile::open(path / "vision.gguf");
        m->vision_.emplace(ClipVision::load(with_override(gguf_source(*m->vision_file_), override_for("vision"))));
        const ClipVisionConfig& vc = m->vision_->config();
        vision_hidden = vc.hidden;
        imaging::ClipPreprocess pp;
        pp.size = vc.image_size;
        const std::string vsrc = (path / "vision.gguf").string();
        if (auto mean = m->vision_file_->get_float_array(clip_keys::kImageMean)) {
            HG_CHECK(mean->size() == 3, "%s: %s has %zu values", vsrc.c_str(), clip_keys::kImageMean, mean->size());
            for (int c = 0; c < 3; ++c) {
                HG_CHECK((*mean)[c] >= 0 && (*mean)[c] <= 1, "%s: image mean %g outside [0, 1]", vsrc.c_str(), (*mean)[c]);
                pp.mean[c] = (float)(*mean)[c];
                pp.pad_color[c] = (uint8_t)(int)((*mean)[c] * 255);  // int(m * 255): truncation, as the reference
            }
        }
        if (auto sd = m->vision_file_->get_float_array(clip_keys::kImageStd)) {
            HG_CHECK(sd->size() == 3, "%s: %s has %zu values", vsrc.c_str(), clip_keys::kImageStd, sd->size());
            for (int c = 0; c < 3; ++c) {
                HG_CHECK((*sd)[c] > 0, "%s: image std %g is not positive", vsrc.c_str(), (*sd)[c]);
                pp.std[c] = (float)(*sd)[c];
            }
        }
        m->preprocess_ = pp;
    }

    // --- plugins
    if (folder && fs::is_directory(path / "plugins", ec)) {
        m->plugins_.load_folder(path / "plugins", opt.plugins, m->decoder_, tok.size(), vision_hidden,
                                opt.tensor_override);
        if (m->vision_)
            for (const auto& p : m->plugins_.all()) m->vision_->resolve_layer(p->vision_layer());  // throws when out of range
    } else {
        HG_CHECK(opt.plugins.empty(), "%s: no plugins folder, so no plugin '%s'", path.string().c_str(),
                 opt.plugins.front().c_str());
    }
    return m;
}

std::string Model::describe() const {
    std::string s;
    char buf[512];
    const DecoderHParams& hp = decoder_->hparams();
    std::snprintf(buf, sizeof buf, "model   %s\ntext    %s\n", path_.string().c_str(), hp.describe().c_str());
    s += buf;
    std::snprintf(buf, sizeof buf, "vocab   %d tokens (%s), template %s, stop ids", tokenizer_->size(),
                  tokenizer_->vocab().kind == text::VocabKind::spm_bpe ? "SentencePiece BPE" : "byte-level BPE",
                  text::chat_template_name(template_));
    s += buf;
    for (int32_t id : stop_ids_) s += " " + std::to_string(id);
    s += "\n";
    if (vq_added_ > 0) {
        std::snprintf(buf, sizeof buf, "        + %d VQ tokens from id %d (<start_index>), embedding/head %lld rows\n",
                      vq_added_, vq_.start_index, (long long)hp.n_vocab);
        s += buf;
    }
    if (vision_) {
        const ClipVisionConfig& c = vision_->config();
        std::snprintf(buf, sizeof buf, "vision  CLIP %dx%d, patch %d -> %d vectors of %d, %d blocks\n", c.image_size,
                      c.image_size, c.patch_size, c.n_patches(), c.hidden, c.n_layer);
        s += buf;
    } else {
        s += "vision  none (text only)\n";
    }
    for (const auto& p : plugins_.all()) s += "plugin  " + p->describe() + "\n";
    if (plugins_.empty()) s += "plugin  none\n";
    return s;
}

}  // namespace hg
