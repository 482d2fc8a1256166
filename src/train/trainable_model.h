// A HealthGPT model folder set up for training: the same hg::Model that `ask` runs, loaded with
// its trainable tensors bound to float32 parameters in a ParamStore, and one example's loss and
// gradients through the whole path
//
//   pixels -> vision tower (layer of the plugin) -> projector -> spliced into the token embeddings
//          -> decoder with the plugin's H-LoRA -> next-token cross-entropy on the answer tokens.
//
// What is trainable follows HealthGPT's three stages (healthgpt-reference.md §6), and more:
//   stage 1  the plugin's projector (mm.*) — alignment; for a generation plugin also its H-LoRA
//   stage 2  the word embedding and the output head (token_embd / output of text.gguf, or a
//            generation plugin's fusion rows)
//   stage 3  the plugin's H-LoRA (every hlora_a/_b/_route) and its projector
//   options  unfreeze the vision tower; train every decoder weight (a small model from scratch)
// Parameter groups (each with its own learning rate in the optimiser): kGroupHLora,
// kGroupProjector, kGroupVision, kGroupDecoder.
//
// Loss semantics (HF / LLaVA): labels carry -100 on every position that is not answer text (the
// image rows always); position t predicts labels[t + 1]; the loss of a batch is the mean over all
// its answer tokens, so each example's summed loss is scaled by 1 / (answer tokens in the batch).
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model.h"
#include "train/param_store.h"

namespace hg::train {

inline constexpr int kGroupHLora = 0;
inline constexpr int kGroupProjector = 1;
inline constexpr int kGroupVision = 2;
inline constexpr int kGroupDecoder = 3;
inline constexpr int kNumGroups = 4;
const char* group_name(int group);  // "hlora", "projector", "vision", "decoder"

struct TrainSpec {
    std::string plugin;            // plugins/<plugin>.gguf of the model folder; empty = no plugin
    bool hlora = false;            // the plugin's H-LoRA tensors
    bool projector = false;        // the plugin's mm.* projector
    bool embeddings = false;       // token_embd + output (stage 2)
    bool vision = false;           // every tensor of vision.gguf
    bool decoder = false;          // every tensor of text.gguf (full training)
    std::optional<bool> vq_vocabulary;  // ModelOptions::vq_vocabulary (unset: as `ask` loads it)

    // The paper's stages as flags (1, 2, 3); throws on another number.
    static TrainSpec stage(int stage, std::string plugin);
};

// One training example in the model's terms: token ids with kImageTokenId slots, labels of the
// same length (-100 = no loss; an image slot's label is ignored: its rows never carry a loss),
// and one CLIP-preprocessed pixel tensor [3, S, S] per slot, in order.
struct TrainSample {
    std::string id;
    std::vector<int32_t> input_ids;
    std::vector<int32_t> labels;
    std::vector<std::vector<float>> pixels;
};

class TrainableModel {
public:
    // Loads the model folder with the trainable tensors (spec) as float32 copies in the store,
    // bound in place of the files' own, so an optimiser step changes what the next forward uses.
    static std::unique_ptr<TrainableModel> load(const std::filesystem::path& folder, const TrainSpec& spec);

    const Model& model() const { return *model_; }
    ParamStore& params() { return params_; }
    const ParamStore& params() const { return params_; }
    const Plugin* plugin() const { return plugin_; }
    const TrainSpec& spec() const { return spec_; }
    const Decoder& decoder() const;  // the decoder the plugin runs with (or the model's)

    // Rows of the expanded sequence (each image slot becomes n_patches rows).
    int64_t sequence_length(const TrainSample& s) const;
    // The shifted targets of the expanded sequence: targets[t] = label of row t + 1, -100 where
    // none (image rows, the last row). Their count of non -100 entries is the example's tokens.
    std::vector<int32_t> targets(const TrainSample& s) const;
    static int64_t count_targets(const std::vector<int32_t>& targets);

    // The summed cross-entropy of one example (double) and, if `backward`, its gradient times
    // grad_scale accumulated into the store. *n_valid: the example's target tokens.
    double loss_and_grad(const TrainSample& s, float grad_scale, int64_t* n_valid, bool backward = true,
                         const ForwardOptions& opt = {});

    // Training forwards keep the internals of as many decoder blocks as fit in `bytes` (the
    // backward then skips recomputing them; results bit-identical); 0: checkpoint every block.
    // Used when the call's ForwardOptions asks for nothing itself.
    void set_activation_memory(size_t bytes) { activation_bytes_ = bytes; }
    size_t activation_memory() const { return activation_bytes_; }

    // After an optimiser step: copies the new values into the components' own float32 copies
    // (norm weights and biases they copied at load).
    void sync() { params_.sync_aliases(); }

    // The trained tensors of one file ("text", "vision", "plugins/<stem>"), by their GGUF names.
    std::vector<const Param*> params_of(const std::string& file) const;

private:
    TrainableModel() = default;

    TrainSpec spec_;
    ParamStore params_;
    std::map<std::pair<std::string, std::string>, Param*> by_file_;  // (file, tensor name) -> parameter
    std::vector<std::shared_ptr<const GGUFFile>> files_;
    std::shared_ptr<const Model> model_;
    const Plugin* plugin_ = nullptr;
    size_t activation_bytes_ = 0;
};

}  // namespace hg::train
