// Image generation with a HealthGPT model (see image_generation.h).
#include "runtime/image_generation.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "model/vqgan.h"
#include "runtime/vq_decode.h"
#include "text/chat.h"

namespace hg {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

constexpr int64_t kHealthGptTokens = 1024;  // HealthGPT emits a 32 x 32 grid (§5.1)

struct TaskInfo {
    GenerationTask task;
    const char* name;
    const char* instruction;  // the paper's example (§5.4)
    int takes_image;          // 1 yes, 0 no, -1 either
};

const TaskInfo kTasks[] = {
    {GenerationTask::custom, "custom", "", -1},
    {GenerationTask::ct2mri, "ct2mri", "I need a version of this CT representation in MRI.", 1},
    {GenerationTask::mri2ct, "mri2ct", "Transform the MRI display into a CT image.", 1},
    {GenerationTask::super_resolution, "sr", "Could you improve the quality of this MRI image?", 1},
    {GenerationTask::reconstruction, "recon", "Reconstruct the image.", 1},
    {GenerationTask::report2xray, "report2xray", "", 0},
};

const TaskInfo& info(GenerationTask t) {
    for (const TaskInfo& i : kTasks)
        if (i.task == t) return i;
    fail("image generation: unknown task %d", (int)t);
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

}  // namespace

const char* generation_task_name(GenerationTask t) { return info(t).name; }

std::optional<GenerationTask> generation_task_from_name(std::string_view name) {
    for (const TaskInfo& i : kTasks)
        if (name == i.name) return i.task;
    return std::nullopt;
}

const char* default_instruction(GenerationTask t) { return info(t).instruction; }

std::optional<bool> task_takes_image(GenerationTask t) {
    const int v = info(t).takes_image;
    if (v < 0) return std::nullopt;
    return v == 1;
}

std::string resolve_instruction(GenerationTask t, std::string_view instruction, bool has_image) {
    const TaskInfo& ti = info(t);
    if (ti.takes_image == 1)
        HG_CHECK(has_image, "image generation: task %s transforms an input image; give one (--image)", ti.name);
    if (ti.takes_image == 0)
        HG_CHECK(!has_image, "image generation: task %s makes an image from text only; it takes no input image",
                 ti.name);
    std::string s(trim(instruction));
    if (s.empty()) s = ti.instruction;
    HG_CHECK(!s.empty(), "image generation: no instruction%s",
             t == GenerationTask::report2xray ? " (report2xray: give the radiology report as the instruction)"
                                              : " (give one, or a --task with a default instruction)");
    return s;
}

std::string image_generation_prompt(text::ChatTemplate tmpl, std::string_view instruction, bool has_image) {
    const text::ChatTurn turn{std::string(instruction), has_image ? 1 : 0, std::nullopt};
    return text::build_prompt(tmpl, std::span<const text::ChatTurn>(&turn, 1), /*generation=*/true);
}

double GenerationTimings::indices_per_second() const { return indices > 0 ? (double)n_indices / indices : 0.0; }

std::string GenerationTimings::summary() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "preprocess %.3f s | vision %.3f s | projector %.3f s | prefill %.3f s (%lld positions) | "
                  "indices %.3f s (%lld, %.1f/s) | vqgan load %.3f s | vqgan decode %.3f s",
                  preprocess, vision, projector, prefill, (long long)n_prompt, indices, (long long)n_indices,
                  indices_per_second(), vqgan_load, vqgan_decode);
    return buf;
}

const Plugin& generation_plugin(const Model& model, std::string_view name) {
    auto loaded = [&] {
        std::string s;
        for (const auto& p : model.plugins().all()) s += (s.empty() ? "" : ", ") + p->name + " (" + plugin_task_name(p->task()) + ")";
        return s.empty() ? std::string("none") : s;
    };
    if (!name.empty()) {
        const Plugin* p = model.plugins().find(name);
        HG_CHECK(p, "%s: no plugin named '%.*s' (loaded: %s)", model.path().string().c_str(), (int)name.size(),
                 name.data(), loaded().c_str());
        HG_CHECK(p->task() == PluginTask::Generation,
                 "%s: plugin '%s' is a %s plugin; image generation needs a generation plugin (loaded: %s)",
                 model.path().string().c_str(), p->name.c_str(), plugin_task_name(p->task()), loaded().c_str());
        return *p;
    }
    const Plugin* p = model.plugins().first(PluginTask::Generation);
    HG_CHECK(p, "%s: the model has no generation plugin (plugins/*.gguf with task generation; convert "
             "gen_hlora_weights.bin and fusion_layer_weights.bin with `healthgpt convert`); loaded: %s",
             model.path().string().c_str(), loaded().c_str());
    return *p;
}

std::filesystem::path vqgan_path(const Model& model, const std::filesystem::path& explicit_path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!explicit_path.empty()) {
        HG_CHECK(fs::is_regular_file(explicit_path, ec), "%s: no such VQGAN file", explicit_path.string().c_str());
        return explicit_path;
    }
    HG_CHECK(fs::is_directory(model.path(), ec),
             "%s: a single-file model has no VQGAN; image generation needs a model folder with vqgan.gguf",
             model.path().string().c_str());
    const fs::path p = model.path() / "vqgan.gguf";
    HG_CHECK(fs::is_regular_file(p, ec),
             "%s: no such file: image generation needs the VQGAN decoder (convert taming's last.ckpt with "
             "`healthgpt convert --vqgan last.ckpt -o MODEL`)",
             p.string().c_str());
    return p;
}

GeneratedImage generate_image(Session& session, std::string_view instruction, const imaging::RgbImage* input,
                              const GenerateImageOptions& opt) {
    const Model& model = session.model();
    const bool has_image = input != nullptr;
    const std::string used = resolve_instruction(opt.task, instruction, has_image);
    const std::string prompt = image_generation_prompt(model.chat_template(), used, has_image);
    std::vector<int32_t> ids = text::tokenize_with_images(model.tokenizer(), prompt, text::Semantics::slow);
    GeneratedImage g = generate_image_from_ids(session, std::move(ids), input, opt);
    g.instruction = used;
    g.prompt = prompt;
    return g;
}

GeneratedImage generate_image_from_ids(Session& session, std::vector<int32_t> prompt_ids,
                                       const imaging::RgbImage* input, const GenerateImageOptions& opt) {
    const Model& model = session.model();
    GeneratedImage g;
    GenerationTimings& t = g.timings;
    g.prompt_ids = std::move(prompt_ids);

    // Everything that can be checked before minutes of work: plugin, VQGAN, vocabulary, input.
    const Plugin& plugin = generation_plugin(model, opt.plugin);
    g.plugin = plugin.name;
    const bool has_image = input != nullptr;
    const int64_t n_slots = std::count(g.prompt_ids.begin(), g.prompt_ids.end(), text::kImageTokenId);
    HG_CHECK(n_slots == (has_image ? 1 : 0), "image generation: the prompt has %lld image slots but %d input images",
             (long long)n_slots, has_image ? 1 : 0);
    if (has_image) {
        HG_CHECK(input->width > 0 && input->height > 0 &&
                     input->rgb.size() == (size_t)input->width * (size_t)input->height * 3,
                 "image generation: the input image is empty or inconsistent (%d x %d, %zu bytes)", input->width,
                 input->height, input->rgb.size());
        HG_CHECK(model.vision(), "%s: this model has no vision tower (vision.gguf), so it cannot take an input image",
                 model.path().string().c_str());
    }
    const text::VqVocabulary& vq = model.vq();
    HG_CHECK(vq.valid(), "%s: the vocabulary has no <start_index>/<idx_k>/<end_index> tokens, so the model cannot "
             "generate images (HealthGPT's VQ extension applies to Phi-3/Phi-4 bases)",
             model.path().string().c_str());

    auto t0 = Clock::now();
    const std::filesystem::path vpath = vqgan_path(model, opt.vqgan);
    std::unique_ptr<GGUFFile> vfile = GGUFFile::open(vpath);
    Vqgan vqgan = Vqgan::load(*vfile, vpath.string());
    t.vqgan_load = seconds_since(t0);
    const VqganConfig& vc = vqgan.config();
    HG_CHECK(vc.n_tokens() == kHealthGptTokens,
             "%s: the VQGAN's latent grid is %d x %d = %d tokens; HealthGPT generates %lld (a 32 x 32 grid)",
             vpath.string().c_str(), vc.latent_size(), vc.latent_size(), vc.n_tokens(), (long long)kHealthGptTokens);
    HG_CHECK(vc.n_embed <= vq.n_idx,
             "%s: the VQGAN has %d codes but the vocabulary only <idx_0>..<idx_%d>", vpath.string().c_str(),
             vc.n_embed, vq.n_idx - 1);
    HG_CHECK(vc.out_ch == 3, "%s: the VQGAN outputs %d channels; an RGB image needs 3", vpath.string().c_str(),
             vc.out_ch);

    // 1. prompt
    HG_CHECK(!g.prompt_ids.empty() && g.prompt_ids.back() == vq.start_index,
             "image generation: the prompt does not end with the <start_index> token (id %d): the tokenizer "
             "splits it",
             vq.start_index);

    // 2. input image -> CLIP pixels (the vision tower and projector run inside begin())
    std::vector<std::vector<float>> pixels;
    if (has_image) {
        if (opt.on_progress) opt.on_progress({Stage::Preprocess, 0, 1});
        t0 = Clock::now();
        pixels.push_back(preprocess_image(model, *input));
        t.preprocess = seconds_since(t0);
        if (opt.on_progress) opt.on_progress({Stage::Preprocess, 1, 1});
    }

    // 3. prefill with the generation plugin
    AskOptions ask;
    ask.plugin = plugin.name;
    ask.sampling = opt.sampling;
    ask.repetition_penalty = opt.repetition_penalty;
    ask.on_progress = opt.on_progress;
    StageTimings st;
    const int64_t n_positions =
        (int64_t)g.prompt_ids.size() + (has_image ? model.vision()->config().n_patches() - 1 : 0);
    if (opt.on_progress) opt.on_progress({Stage::Prefill, 0, n_positions});
    std::span<float> logits = session.begin(g.prompt_ids, pixels, ask, &st);
    t.vision = st.vision;
    t.projector = st.projector;
    t.prefill = st.prefill;
    t.n_prompt = st.n_prompt;
    if (opt.on_progress) opt.on_progress({Stage::Prefill, st.n_prompt, st.n_prompt});

    // 4. constrained decoding over the codes this VQGAN has
    text::VqVocabulary allowed = vq;
    allowed.n_idx = vc.n_embed;
    SamplingParams sp = opt.sampling;
    sp.repetition_penalty = opt.repetition_penalty.value_or(model.repetition_penalty());
    Sampler sampler(sp, (int64_t)logits.size());
    VqDecodeOptions vo;
    vo.n_tokens = kHealthGptTokens;
    vo.on_progress = opt.on_index;
    const auto step = [&session](int32_t id) { return session.step(id); };
    VqDecodeResult r = decode_vq(logits, g.prompt_ids.back(), step, allowed, sampler, vo);
    HG_CHECK(!r.cancelled, "image generation: cancelled after %zu of %lld indices", r.indices.size(),
             (long long)kHealthGptTokens);
    t.indices = r.seconds;
    t.n_indices = (int64_t)r.indices.size();
    g.n_overridden = r.n_overridden;
    g.indices = std::move(r.indices);

    // 5. indices -> pixels
    t0 = Clock::now();
    const int R = vc.resolution;
    std::vector<float> x((size_t)3 * R * R);
    vqgan.decode(g.indices, x.data(), session.options().pool ? *session.options().pool : default_pool());
    g.image = imaging::RgbImage(R, R);
    vqgan_to_pixels(x.data(), 3, R, g.image.rgb.data());
    t.vqgan_decode = seconds_since(t0);
    return g;
}

}  // namespace hg
