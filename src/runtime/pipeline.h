// Asking a HealthGPT model about images: the library API behind `healthgpt ask` and `chat`.
//
//   auto model = hg::Model::load("models/healthgpt-m3");          // base + vision + all plugins, once
//   hg::Session session(model);                                     // one conversation
//   auto images = hg::imaging::load_medical_image("chest.dcm");     // PNG/JPEG/DICOM/NIfTI ...
//   hg::AskOptions opt;                                             // greedy, the comprehension plugin
//   opt.on_text = [](std::string_view s) { std::cout << s << std::flush; return true; };
//   hg::Answer a = session.ask("What does this X-ray show?", images, opt);
//   hg::Answer b = session.ask("Is it serious?", {}, opt);          // follow-up: image KV reused
//
// What a request does (healthgpt-reference.md §2-§4, llava's prepare_inputs_labels_for_multimodal):
//   1. the conversation template around the question, "<image>\n" before it once per image;
//   2. chunk-wise tokenisation around "<image>" (one -200 slot per image), slow-tokenizer semantics;
//   3. per image: pad to square + CLIP preprocessing -> vision tower, hidden_states[plugin's layer]
//      without CLS -> the plugin's projector -> n_patches (576) vectors spliced into the slot;
//   4. prefill with the plugin's H-LoRA adapters and vocabulary (cached positions reused), then
//      greedy decoding until a stop id, which is not emitted; text streams as it becomes final.
// Several images in one question work (one "<image>" each; the reference has one slot only); a
// text-only question runs the same path with the plugin active and no slot.
//
// Semantics as the reference: HealthGPT calls generate(inputs_embeds=...), so the repetition
// penalty (Qwen2.5: 1.05, under greedy too) sees only the generated ids (PenaltyScope::OutputOnly).
// Dtypes: the reference casts every weight to fp16 at run time; we compute in float32 with the
// weights as stored (F32/F16/BF16/quantized), so an F32 model matches a float32 PyTorch run.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "imaging/image.h"
#include "runtime/generate.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

namespace hg {

// Seconds per stage of one request (wall clock).
struct StageTimings {
    double preprocess = 0;   // pad to square, resize, normalise (all images)
    double vision = 0;       // CLIP tower
    double projector = 0;    // mlp2x_gelu
    double prefill = 0;      // prompt positions not reused from the KV cache
    double decode = 0;       // token-by-token generation (forward + sampling)
    int64_t n_images = 0;          // images in the prompt
    int64_t n_images_encoded = 0;  // of which run through the tower now (the others were cached)
    int64_t n_prompt = 0;          // prompt positions (text tokens + image vectors)
    int64_t n_prompt_reused = 0;   // of which taken from the KV cache
    int64_t n_generated = 0;       // tokens generated (the stop id not counted)
    int64_t n_decoded = 0;         // single-token forward passes
    double prefill_tokens_per_second() const;
    double decode_tokens_per_second() const;
    std::string summary() const;  // "preprocess 0.012 s | vision 1.31 s | ... "
};

// Progress events, e.g. for a progress bar or a server's event stream. `done` of `total` units.
enum class Stage { Preprocess, Vision, Projector, Prefill, Decode };
const char* stage_name(Stage s);
struct Progress {
    Stage stage;
    int64_t done = 0, total = 0;  // images for the first three, positions for prefill, tokens for decode
                                  // (total = max_new_tokens)
};

struct AskOptions {
    std::string plugin;                // plugin name; empty: the model's first comprehension plugin
                                       // (none if it has none: the base model alone, text only)
    bool no_plugin = false;            // run the base model without any plugin
    int64_t max_new_tokens = 1024;     // com_infer.py's default
    SamplingParams sampling;           // greedy by default
    std::optional<float> repetition_penalty;  // default: the model's (Qwen2.5 1.05)
    PenaltyScope penalty_scope = PenaltyScope::OutputOnly;  // HealthGPT's generate(inputs_embeds)
    bool generation_prompt = false;    // end the prompt with <start_index> (image generation prompt)
    std::vector<std::string> stop_strings;
    // The plugin's version, e.g. the SHA-256 of its file (the server passes the hash it records
    // with the answer): part of the identity of every cached position, so a KV computed under one
    // version of a plugin is never reused under another (a hot-swapped file at the same name).
    std::string plugin_version;
    std::function<bool(std::string_view)> on_text;  // text as it becomes final; false stops
    std::function<bool(int32_t)> on_token;          // every generated id; false stops
    std::function<void(const Progress&)> on_progress;
};

struct Answer {
    std::string text;             // decode(tokens, skip_special_tokens) (fast semantics), = the streamed text
    std::vector<int32_t> tokens;  // generated ids, the stop id excluded
    StopReason reason = StopReason::MaxTokens;
    int32_t stop_token = -1;
    std::string plugin;           // the plugin that ran ("" = none)
    StageTimings timings;
};

struct SessionOptions {
    int64_t n_ctx = 0;               // KV positions; 0: min(the model's context length, 4096)
    DType kv_type = DType::F16;      // F32 for parity runs
    ThreadPool* pool = nullptr;      // default_pool()
    const Kernels* kernels = nullptr;  // tests: pin the scalar reference
    // Shared by sessions (a server's workers): run() stores the KV of a prompt up to the end of
    // its last image, and every request looks its prompt up there, so a second question about the
    // same image (same pixels, same plugin version) skips the image's prefill whichever session
    // runs it. nullptr: each session reuses only its own previous request's KV.
    std::shared_ptr<PrefixCache> prefix_cache;
};

// One conversation with a model. Not thread-safe; a server keeps one per conversation (the Model is
// shared and immutable).
class Session {
public:
    explicit Session(std::shared_ptr<const Model> model, SessionOptions opt = {});
    ~Session();

    // One user turn: `images` go before the question ("<image>\n" each). The answer joins the
    // conversation, so the next ask() is a follow-up in the template's multi-turn form; the KV of
    // everything before (the image included) is reused and image features are not recomputed.
    Answer ask(const std::string& question, std::span<const imaging::RgbImage> images = {}, const AskOptions& opt = {});
    // Forget the conversation (cached KV stays and is reused by a new one with the same start).
    void reset();
    const std::vector<text::ChatTurn>& turns() const { return turns_; }

    // --- lower level (tests, custom prompts, the generation task) ---

    // A request as token ids with text::kImageTokenId slots and, per slot, CLIP pixels
    // [3, S, S] (already preprocessed). Generates as ask() does; the conversation is not touched.
    Answer run(std::span<const int32_t> ids, std::span<const std::vector<float>> pixels, const AskOptions& opt = {});
    // Logits [n_positions, n_vocab] of such a request at every position (no generation).
    std::vector<float> logits(std::span<const int32_t> ids, std::span<const std::vector<float>> pixels,
                              const AskOptions& opt = {});
    // The plugin a request with these options uses (nullptr: none).
    const Plugin* plugin_for(const AskOptions& opt) const;
    // The projected image vectors [n_patches, n_embd] for CLIP pixels under a plugin (cached).
    const std::vector<float>& image_features(const std::vector<float>& pixels, const Plugin& plugin,
                                             StageTimings* t = nullptr);
    // For callers that drive decoding themselves (constrained <idx_*> decoding for image generation):
    // prefill a request and get the last position's logits; then step() one token at a time. The
    // spans are valid until the next call. Timings of the prefill land in *t.
    std::span<float> begin(std::span<const int32_t> ids, std::span<const std::vector<float>> pixels,
                           const AskOptions& opt, StageTimings* t = nullptr);
    std::span<float> step(int32_t token);
    const Decoder& decoder() const;  // the decoder of the last begin()/run() (vocabulary size etc.)

    const Model& model() const { return *model_; }
    const SessionOptions& options() const { return opt_; }

private:
    Prompt build_prompt(std::span<const int32_t> ids, std::span<const std::vector<float>> pixels, const Plugin* p,
                        const AskOptions& opt, StageTimings& t);
    Generator& generator_for(const std::shared_ptr<const Decoder>& d);
    GenerateOptions generate_options(const Plugin* p, const AskOptions& opt) const;

    std::shared_ptr<const Model> model_;
    SessionOptions opt_;
    std::unique_ptr<Generator> gen_;
    GenerateOptions step_opt_;  // of the last begin()
    std::vector<text::ChatTurn> turns_;
    std::vector<std::vector<float>> pixels_;  // CLIP pixels of the conversation's images, in order
    // (plugin, pixels hash) -> projected features
    std::map<std::pair<const Plugin*, uint64_t>, std::vector<float>> features_;
};

// CLIP pixels for a model's vision tower (pad to square with the tower's mean colour, PIL bicubic
// resize, normalise): what Session::ask does to each image.
std::vector<float> preprocess_image(const Model& model, const imaging::RgbImage& image);

}  // namespace hg
