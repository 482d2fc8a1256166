// healthgpt init-model DIR --data FILE: a new HealthGPT-shaped model folder to train from scratch
// (train/model_init.h): a vocabulary learned from the data's text, random weights at the chosen
// sizes, and a fresh comprehension plugin. Then: healthgpt train -m DIR --full --unfreeze-vision ...
// (Registered with add_command directly: HG_COMMAND's name must be an identifier, this verb has dashes.)
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "train/model_init.h"

namespace {

struct InitArgs {
    std::string dir, name = "healthgpt-untrained";
    std::vector<std::string> data;
    hg::train::ModelInitOptions o;
};

hgcli::Runner setup_init_model(CLI::App& app) {
    auto a = std::make_shared<InitArgs>();
    auto& s = a->o.shape;
    s.embd = 256, s.ff = 512, s.layers = 4, s.heads = 4, s.ctx = 2048;
    s.image = 224, s.patch = 16, s.vis_hidden = 192, s.vis_ff = 384, s.vis_layers = 4, s.vis_heads = 4;
    a->o.plugin.rank = 16, a->o.plugin.alpha = 32, a->o.plugin.experts = 4;
    app.add_option("dir", a->dir, "model folder to create: text.gguf, vision.gguf, plugins/com.gguf")->required();
    app.add_option("--data", a->data, "training data for the vocabulary (LLaVA JSON, VQA-RAD, SLAKE; repeatable)")
        ->required();
    app.add_option("--name", a->name, "general.name of the model")->capture_default_str();
    app.add_option("--min-count", a->o.min_count, "a word occurring this often becomes one token")->capture_default_str();
    app.add_option("--max-words", a->o.max_words, "at most this many word tokens")->capture_default_str();
    app.add_option("--embd", s.embd, "decoder hidden size")->capture_default_str();
    app.add_option("--ff", s.ff, "decoder feed-forward size (SwiGLU: ffn_up has 2x rows)")->capture_default_str();
    app.add_option("--layers", s.layers, "decoder blocks")->capture_default_str();
    app.add_option("--heads", s.heads, "decoder attention heads")->capture_default_str();
    app.add_option("--ctx", s.ctx, "context length")->capture_default_str();
    app.add_option("--image", s.image, "vision input size in pixels")->capture_default_str();
    app.add_option("--patch", s.patch, "vision patch size")->capture_default_str();
    app.add_option("--vis-hidden", s.vis_hidden, "vision hidden size")->capture_default_str();
    app.add_option("--vis-ff", s.vis_ff, "vision feed-forward size")->capture_default_str();
    app.add_option("--vis-layers", s.vis_layers, "vision blocks")->capture_default_str();
    app.add_option("--vis-heads", s.vis_heads, "vision attention heads")->capture_default_str();
    app.add_option("--rank", a->o.plugin.rank, "plugin: total H-LoRA rank")->capture_default_str();
    app.add_option("--alpha", a->o.plugin.alpha, "plugin: H-LoRA alpha")->capture_default_str();
    app.add_option("--experts", a->o.plugin.experts, "plugin: experts per linear")->capture_default_str();
    app.add_option("--vision-layer", a->o.plugin.vision_layer,
                   "plugin: hidden state of the tower it reads (0: the comprehension default -2; -1: the last)")
        ->capture_default_str();
    app.add_option("--seed", a->o.seed, "seed of the random weights (the plugin uses seed + 1)")->capture_default_str();
    return [a] {
        a->o.shape.name = a->name;
        a->o.shape.notice = "";
        for (const auto& d : a->data) a->o.vocab_data.emplace_back(d);
        a->o.plugin.seed = a->o.seed + 1;
        const auto r = hg::train::init_model(a->dir, a->o);
        std::printf("wrote %s: vocabulary of %lld tokens (%lld words from %lld records), decoder %lld x %lld, "
                    "tower %d px / %d patch x %d, plugin rank %lld\n"
                    "train it with: healthgpt train -m %s --data TRAIN.json --full --unfreeze-vision -o OUT_DIR\n",
                    a->dir.c_str(), (long long)r.vocab_size, (long long)r.words, (long long)r.text_records,
                    (long long)a->o.shape.layers, (long long)a->o.shape.embd, a->o.shape.image, a->o.shape.patch,
                    a->o.shape.vis_layers, (long long)a->o.plugin.rank, a->dir.c_str());
        return 0;
    };
}

[[maybe_unused]] const int registered = hgcli::add_command(
    "init-model", "Create a new HealthGPT-shaped model to train from scratch (vocabulary from the data, random weights)",
    setup_init_model);

}  // namespace
