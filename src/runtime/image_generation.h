// Generating an image with a HealthGPT model: the library API behind `healthgpt generate`
// (healthgpt-reference.md §5.3, §5.4).
//
//   auto model = hg::Model::load("models/healthgpt-m3");        // with plugins/gen.gguf and vqgan.gguf
//   hg::Session session(model);
//   auto ct = hg::imaging::load_medical_image("ct.png")[0];
//   hg::GenerateImageOptions opt;
//   opt.task = hg::GenerationTask::ct2mri;                       // default instruction of the task
//   opt.on_index = [](int64_t done, int64_t total) { draw_bar(done, total); return true; };
//   hg::GeneratedImage g = hg::generate_image(session, "", &ct, opt);
//   hg::imaging::write_png("mri.png", g.image);                  // 256 x 256 for the released VQGAN
//
// What a request does, as the reference's gen_infer.py / HealthGPT_Agent (generation mode):
//   1. the conversation template around the instruction ("<image>\n" before it with an input
//      image), then the literal "<start_index>" after the assistant tag (one added token);
//   2. the input image: pad to square + CLIP preprocessing -> vision tower hidden_states[1]
//      (the generation plugin's layer) without CLS -> the generation projector -> 576 vectors;
//   3. prefill with the generation plugin (H-LoRA adapters + fusion embedding/head rows);
//   4. constrained greedy decoding (runtime/vq_decode.h): exactly n_tokens (1,024) <idx_k> ids,
//      then <end_index>, where the reference decodes unconstrained and its reshape fails on any
//      other count. Only the codes the VQGAN has are allowed (all 8,192 for the released one);
//   5. MODEL/vqgan.gguf: codebook rows in raster order -> post_quant_conv -> decoder -> pixels as
//      idx2img's custom_to_pil (clamp to [-1,1], (x+1)/2*255, truncation to uint8).
// Each session request is independent: the conversation (Session::turns) is not touched.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "imaging/image.h"
#include "runtime/pipeline.h"
#include "runtime/sampler.h"

namespace hg {

// The generation tasks of the paper (§5.4). `custom`: the instruction as given, image optional.
enum class GenerationTask : uint8_t { custom, ct2mri, mri2ct, super_resolution, reconstruction, report2xray };

const char* generation_task_name(GenerationTask t);  // "ct2mri", "mri2ct", "sr", "recon", "report2xray", "custom"
std::optional<GenerationTask> generation_task_from_name(std::string_view name);
// The paper's example instruction for the task (§5.4), used when the caller gives none; empty for
// custom and report2xray (the report is the instruction; the reference's training prompt for it is
// not published).
const char* default_instruction(GenerationTask t);
// Whether the task takes an input image: yes for the image->image tasks, no for report2xray,
// either for custom.
std::optional<bool> task_takes_image(GenerationTask t);

// The instruction a request uses: `instruction` if not empty (whitespace-only counts as empty),
// else the task's default. Throws hg::Error when neither exists or when the presence of an input
// image contradicts the task (ct2mri without an image, report2xray with one).
std::string resolve_instruction(GenerationTask t, std::string_view instruction, bool has_image);

// The prompt text of a generation request: the model's template with one user turn
// ("<image>\n" + instruction with an input image) and "<start_index>" after the assistant tag.
std::string image_generation_prompt(text::ChatTemplate tmpl, std::string_view instruction, bool has_image);

struct GenerationTimings {
    double preprocess = 0;    // pad to square, resize, normalise the input image
    double vision = 0;        // CLIP tower
    double projector = 0;     // generation projector
    double prefill = 0;       // the prompt through the decoder
    double indices = 0;       // the 1,024 constrained decoding steps
    double vqgan_load = 0;    // opening MODEL/vqgan.gguf
    double vqgan_decode = 0;  // indices -> decoder output -> pixels
    int64_t n_prompt = 0;     // prompt positions (text tokens + image vectors)
    int64_t n_indices = 0;    // indices generated
    double indices_per_second() const;
    std::string summary() const;  // "preprocess 0.01 s | vision ... | indices 12.3 s (83.1/s) | vqgan 2.1 s"
};

struct GenerateImageOptions {
    GenerationTask task = GenerationTask::custom;
    std::string plugin;      // generation plugin (a file stem in MODEL/plugins/); empty: the first one
    SamplingParams sampling; // greedy by default, as the reference
    std::optional<float> repetition_penalty;  // default: the model's
    std::filesystem::path vqgan;  // VQGAN file; empty: vqgan.gguf in the model folder
    // After each index: done of total (1,024). Returning false cancels (hg::Error "cancelled").
    std::function<bool(int64_t done, int64_t total)> on_index;
    // Stage events before decoding: preprocess, vision, projector, prefill (see pipeline.h).
    std::function<void(const Progress&)> on_progress;
};

struct GeneratedImage {
    std::vector<int32_t> indices;   // n_tokens codebook indices, raster order (row-major 32x32)
    imaging::RgbImage image;        // resolution x resolution (256 x 256 for the released VQGAN)
    std::string instruction;        // the instruction used (the task's default if none was given)
    std::string prompt;             // the prompt text (ending in <start_index>)
    std::vector<int32_t> prompt_ids;  // its token ids (-200 = the image slot)
    std::string plugin;             // the generation plugin that ran
    int64_t n_overridden = 0;       // steps where the unconstrained argmax was not an allowed <idx_*>
    GenerationTimings timings;
};

// Generates one image. `input` is the image of an image->image task (nullptr for text->image).
// Throws hg::Error with what is missing: no generation plugin in the model, no vqgan.gguf, no
// vision tower for an input image, a VQGAN whose grid is not 1,024 tokens or whose codebook is
// larger than the vocabulary's <idx_*> range, an empty instruction, an input that contradicts the
// task, an empty image, or cancellation from on_index.
GeneratedImage generate_image(Session& session, std::string_view instruction, const imaging::RgbImage* input,
                              const GenerateImageOptions& opt = {});

// The same from prompt token ids (text::kImageTokenId marks the input image's slot; the last id
// must be <start_index>), e.g. golden ids from the PyTorch reference. instruction/prompt stay empty.
GeneratedImage generate_image_from_ids(Session& session, std::vector<int32_t> prompt_ids,
                                       const imaging::RgbImage* input, const GenerateImageOptions& opt = {});

// The generation plugin a request with these options uses; throws naming the loaded plugins when
// there is none (or `name` is not a generation plugin).
const Plugin& generation_plugin(const Model& model, std::string_view name);

// The VQGAN file of a model: `explicit_path` if given, else vqgan.gguf next to text.gguf. Throws
// when it does not exist, saying how to make one.
std::filesystem::path vqgan_path(const Model& model, const std::filesystem::path& explicit_path = {});

}  // namespace hg
