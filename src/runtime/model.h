// A HealthGPT model, loaded once: the folder `healthgpt convert` writes (docs/MODELS.md)
//
//   MODEL/text.gguf        decoder + tokenizer (tokenizer.ggml.*, healthgpt.tokenizer.hf_config),
//                          healthgpt.chat_template, healthgpt.stop_token_ids
//   MODEL/vision.gguf      CLIP vision tower (optional: without it, text only)
//   MODEL/plugins/*.gguf   H-LoRA plugins, each with its projector and vision layer
//   MODEL/vqgan.gguf       image decoder (generation; not loaded here)
//
// or a single text-model GGUF (llama.cpp's files included), which is a model without vision or
// plugins. Weights stay memory-mapped; nothing is copied but norms, biases and two mean rows.
//
// Load order follows the reference (healthgpt-reference.md §1.4): base decoder, tokenizer, then
// HealthGPT's vocabulary extension for Phi bases (<start_index>, <idx_0..8191>, <end_index>,
// <pixel_newline> from len(tokenizer) on; embedding and head grown to len(tokenizer) rows, the new
// rows the mean of the old ones; skipped when the tokenizer already lists additional special
// tokens, and never for Qwen), then the plugins (a generation plugin's fusion rows override it).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "imaging/preprocess.h"
#include "model/clip_vision.h"
#include "model/decoder.h"
#include "runtime/plugin_registry.h"
#include "text/chat.h"
#include "text/tokenizer.h"

namespace hg {

namespace model_keys {
inline constexpr const char* kChatTemplate = "healthgpt.chat_template";          // phi3_instruct | phi4_instruct | qwen_2
inline constexpr const char* kStopTokenIds = "healthgpt.stop_token_ids";         // i32[]
inline constexpr const char* kRepetitionPenalty = "healthgpt.repetition_penalty"; // f32 (generation_config)
inline constexpr const char* kNotice = "healthgpt.notice";                     // string shown before answers
}  // namespace model_keys

struct ModelOptions {
    std::vector<std::string> plugins;          // load only these plugins (file stems); empty: all
    bool vision = true;                        // load vision.gguf when present
    // HealthGPT's VQ vocabulary extension. Unset: on for a model folder whose template is a Phi
    // one, off for a bare text GGUF (a plain llama.cpp model is not a HealthGPT model).
    std::optional<bool> vq_vocabulary;
    std::optional<text::ChatTemplate> chat_template;  // overrides the file's / the inferred one
    // Training: tensors bound instead of the files' (the trainer's float32 parameters). Called
    // with the file ("text", "vision" or "plugins/<stem>") and the tensor name; nullopt = the
    // file's own tensor.
    std::function<std::optional<Tensor>(const std::string& file, std::string_view name)> tensor_override;
};

class Model {
public:
    // `path`: a model folder or a text-model .gguf file. Throws hg::Error naming the file and the
    // problem (missing text.gguf, a plugin for another base, shapes that do not fit ...).
    static std::shared_ptr<const Model> load(const std::filesystem::path& path, const ModelOptions& opt = {});

    const std::filesystem::path& path() const { return path_; }
    const text::Tokenizer& tokenizer() const { return *tokenizer_; }
    text::ChatTemplate chat_template() const { return template_; }
    // The decoder without a plugin: the base with the vocabulary extension when it applies.
    const std::shared_ptr<const Decoder>& decoder() const { return decoder_; }
    const ClipVision* vision() const { return vision_ ? &*vision_ : nullptr; }
    // The CLIP input for this tower: its image size, mean/std and the pad colour derived from the mean.
    const imaging::ClipPreprocess& preprocess() const { return preprocess_; }
    const PluginRegistry& plugins() const { return plugins_; }
    // Ids that end an answer: healthgpt.stop_token_ids (else the file's eos/eot), plus the
    // template's end-of-turn token (<|end|>, <|im_end|>).
    const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
    // The ids of <start_index>, <idx_k>, <end_index> (invalid() when the vocabulary has none).
    const text::VqVocabulary& vq() const { return vq_; }
    int32_t vq_added() const { return vq_added_; }  // tokens the extension added at load (0 if none)
    // generation_config's repetition_penalty: healthgpt.repetition_penalty, else 1.05 for the
    // qwen_2 template (Qwen2.5-Instruct's), else 1.
    float repetition_penalty() const { return repetition_penalty_; }
    std::string describe() const;  // a few lines: files, shapes, vocabulary, plugins
    // healthgpt.notice of text.gguf (e.g. the demo model's "random, not medical"); empty if none.
    const std::string& notice() const { return notice_; }

private:
    Model() = default;
    std::filesystem::path path_;
    std::shared_ptr<const GGUFFile> text_file_, vision_file_;
    std::optional<text::Tokenizer> tokenizer_;
    text::ChatTemplate template_ = text::ChatTemplate::phi3_instruct;
    std::shared_ptr<const Decoder> base_, decoder_;
    std::optional<ClipVision> vision_;
    imaging::ClipPreprocess preprocess_;
    PluginRegistry plugins_;
    std::vector<int32_t> stop_ids_;
    text::VqVocabulary vq_;
    int32_t vq_added_ = 0;
    float repetition_penalty_ = 1.0f;
    std::string notice_;
};

// The chat template a text GGUF declares (healthgpt.chat_template), else the one its tokenizer's
// special tokens identify (<|user|> -> phi3_instruct, <|im_sep|> -> phi4_instruct, <|im_start|>
// -> qwen_2); nullopt if neither.
std::optional<text::ChatTemplate> detect_chat_template(const GGUFFile& text_file, const text::Tokenizer& tok);

}  // namespace hg
