// `healthgpt convert`: the files users download -> our model folder (docs/MODELS.md).
//
//   Hugging Face base LLM folder (Phi-3-mini, phi-4, Qwen2.5; safetensors shards)   -> MODEL/text.gguf
//   openai/clip-vit-large-patch14-336 (safetensors or pytorch_model.bin)             -> MODEL/vision.gguf
//   HealthGPT com_hlora_weights*.bin / gen_hlora_weights.bin (+ fusion_layer_weights.bin)
//                                                                                     -> MODEL/plugins/<name>.gguf
//   taming VQGAN last.ckpt (+ model.yaml)                                             -> MODEL/vqgan.gguf
//
// Every part is planned first: its sources are opened (memory-mapped; pickles through the
// restricted unpickler), every source key is accounted for (mapped, ignored by design with the
// reason, or unknown), every expected tensor is present with the expected shape, and plugins are
// checked against the base they will run on. Nothing is written until every requested part has
// been planned. Then each file is produced tensor by tensor from the mapped sources (peak memory
// is one output tensor), into a staging folder beside MODEL, and moved into MODEL at the end:
// a failure leaves MODEL as it was.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convert/quantize.h"
#include "formats/gguf.h"

namespace hg {

// Messages for the user, one line each (the CLI prints them).
using ConvertLog = std::function<void(const std::string& line)>;

// One output file, validated and ready to be written.
struct ConvertPlan {
    std::string what;                 // "text model", "vision tower", "plugin com", "vqgan"
    std::filesystem::path file;       // relative to the model folder: text.gguf, plugins/com.gguf, ...
    GGUFWriter writer;
    std::vector<std::shared_ptr<const void>> sources;  // what the tensor callbacks read; alive until written
    std::vector<std::string> report;  // what was found, mapped, ignored, chosen
    uint64_t data_bytes = 0;          // tensor bytes the file will hold
    std::map<std::string, int> type_counts;  // "Q4_K" -> number of tensors

    void write(const std::filesystem::path& path) const { writer.write(path); }
};

// The base decoder a plugin must fit (from a Hugging Face config.json or an existing text.gguf).
struct BaseShape {
    std::string origin;
    std::string arch;        // phi3 | qwen2 | llama
    int64_t n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;

    static BaseShape from_hf_config(const std::filesystem::path& hf_dir_or_config);
    static BaseShape from_gguf(const std::filesystem::path& text_gguf);
    // [out, in] of the linear a plugin wraps, by llama.cpp name (attn_qkv, ffn_down, ...); nullopt if
    // this architecture has no such linear.
    std::optional<std::pair<int64_t, int64_t>> linear_shape(std::string_view linear) const;
    std::vector<std::string> linears() const;  // the wrapped linears of this architecture, in order
};

struct TextOptions {
    std::filesystem::path hf_dir;   // config.json, generation_config.json, tokenizer files, weights
    WeightType type = WeightType::Auto;
    std::string chat_template;      // phi3_instruct | phi4_instruct | qwen_2; empty: detected
    std::string name;               // general.name; empty: the folder name
    bool allow_unknown = false;     // unknown weight keys are reported and skipped instead of refused
    bool with_tokenizer = true;     // false: no tokenizer.* metadata (folders without tokenizer files,
                                    // e.g. random test models; llama.cpp needs the vocabulary)
};
ConvertPlan plan_text(const TextOptions& o);

struct VisionOptions {
    std::filesystem::path source;   // a CLIP folder (config.json + model.safetensors | pytorch_model.bin) or one weight file
    WeightType type = WeightType::Auto;
    bool allow_unknown = false;
};
ConvertPlan plan_vision(const VisionOptions& o);

struct PluginOptions {
    std::filesystem::path hlora;    // com_hlora_weights*.bin / gen_hlora_weights.bin (a torch.save state dict)
    std::filesystem::path fusion;   // fusion_layer_weights.bin (generation); empty: none
    std::string task;               // comprehension | generation; empty: generation with fusion or gen_* name
    std::string name;               // output plugins/<name>.gguf; empty: com / gen by task
    std::optional<int> vision_layer;   // default -2 (comprehension) / 1 (generation)
    std::optional<int64_t> rank;       // checked against the shapes (the shapes define it)
    std::optional<double> alpha;       // not in the .bin: default for the released shapes, else required
    std::optional<int> experts;        // checked against the router shapes
    WeightType type = WeightType::Auto;  // H-LoRA A/B, projector, fusion rows; routers stay F32
    bool allow_unknown = false;
};
// `vision_hidden` > 0: the projector's input width must equal it (the CLIP hidden size).
ConvertPlan plan_plugin(const PluginOptions& o, const BaseShape& base, int64_t vision_hidden = 0);

struct VqganOptions {
    std::filesystem::path ckpt;     // Lightning last.ckpt (weights under "state_dict"), or a plain state dict
    std::filesystem::path yaml;     // model.yaml; empty: model.yaml beside the checkpoint if present
    WeightType type = WeightType::Auto;
    bool allow_unknown = false;
};
ConvertPlan plan_vqgan(const VqganOptions& o);

struct ModelOptions {
    std::filesystem::path out;      // the model folder (created if needed; other files in it are kept)
    std::optional<TextOptions> text;
    std::optional<VisionOptions> vision;
    std::vector<PluginOptions> plugins;
    std::optional<VqganOptions> vqgan;
};
struct ConvertSummary {
    std::vector<std::filesystem::path> written;  // absolute paths
    uint64_t bytes = 0;
    double seconds = 0;
};
// Plans every part, then writes them (staging + rename). Plugins are checked against the text model
// converted in the same call, else against MODEL/text.gguf (one of the two must exist).
ConvertSummary convert_model(const ModelOptions& o, const ConvertLog& log);

}  // namespace hg
