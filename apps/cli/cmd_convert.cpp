// healthgpt convert: the downloaded checkpoints -> a model folder that `-m` takes (docs/MODELS.md).
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "convert/convert.h"
#include "core/error.h"

HG_COMMAND(convert, "Convert downloaded checkpoints (Hugging Face base, CLIP, HealthGPT plugins, VQGAN) into a model folder") {
    struct Args {
        std::string base, clip, com, gen, fusion, vqgan, vqgan_config, out;
        std::string type = "auto", plugin_type = "auto", tmpl;
        struct Plugin {
            double alpha = 0;
            int64_t rank = 0;
            int vision_layer = 0;
            bool has_vision_layer = false;
            std::string name;
        } com_opt, gen_opt;
        int experts = 0;
        bool allow_unknown = false;
    };
    auto a = std::make_shared<Args>();
    app.footer(
        "Each part is optional, so a part can be (re)converted alone into an existing folder, e.g. a retrained plugin:\n"
        "  healthgpt convert --com my_com_hlora_weights.bin --com-alpha 128 -o MODEL\n"
        "Plugins are checked against the base converted in the same call, else against MODEL/text.gguf.\n"
        "Output: MODEL/text.gguf, MODEL/vision.gguf, MODEL/plugins/{com,gen}.gguf, MODEL/vqgan.gguf.\n"
        "Everything is validated before anything is written; files are written to a staging folder beside MODEL\n"
        "and moved in at the end, so a failed conversion leaves MODEL as it was.");
    app.add_option("--base", a->base, "Hugging Face folder of the base LLM (config.json, generation_config.json, tokenizer files, "
                                      "model*.safetensors [+ index] or pytorch_model*.bin): Phi-3-mini-4k-instruct, phi-4, Qwen2.5-32B-Instruct")
        ->check(CLI::ExistingDirectory);
    app.add_option("--clip", a->clip, "CLIP folder (openai/clip-vit-large-patch14-336: config.json, preprocessor_config.json, "
                                      "model.safetensors or pytorch_model.bin) or one weight file; only the vision tower is kept")
        ->check(CLI::ExistingPath);
    app.add_option("--com", a->com, "comprehension plugin: com_hlora_weights.bin (M3), com_hlora_weights_phi4.bin (L14), "
                                     "com_hlora_weights_QWEN_32B.bin (XL32) -> plugins/com.gguf")
        ->check(CLI::ExistingFile);
    app.add_option("--gen", a->gen, "generation plugin: gen_hlora_weights.bin (M3) -> plugins/gen.gguf; needs --fusion")
        ->check(CLI::ExistingFile);
    app.add_option("--fusion", a->fusion, "fusion_layer_weights.bin: the generation plugin's embedding and head rows")
        ->check(CLI::ExistingFile);
    app.add_option("--vqgan", a->vqgan, "taming VQGAN Lightning checkpoint last.ckpt (OpenImages f=8, 8192, Gumbel) -> vqgan.gguf")
        ->check(CLI::ExistingFile);
    app.add_option("--vqgan-config", a->vqgan_config, "its model.yaml (default: model.yaml beside last.ckpt; without it the config "
                                                      "is inferred from the shapes with resolution 256)")
        ->check(CLI::ExistingFile);
    app.add_option("-o,--output", a->out, "the model folder to create or update")->required();
    app.add_option("--type", a->type, "storage of the base, vision tower and VQGAN weights: auto (as in the checkpoint), f32, f16, "
                                      "bf16, q8_0, q4_k (llama.cpp's Q4_K_M mix; the vision tower gets Q8_0, the VQGAN F16)")
        ->default_val("auto");
    app.add_option("--plugin-type", a->plugin_type, "storage of H-LoRA A/B, projector and fusion rows: auto (BF16 as released), "
                                                    "f32, f16, bf16, q8_0, q4_k; routers are always F32")
        ->default_val("auto");
    app.add_option("--template", a->tmpl, "chat template: phi3_instruct, phi4_instruct, qwen_2 (default: detected from the base)");
    for (auto [which, po] : {std::pair{"com", &a->com_opt}, std::pair{"gen", &a->gen_opt}}) {
        const std::string w = which;
        const char* task = w == "com" ? "comprehension" : "generation";
        app.add_option("--" + w + "-alpha", po->alpha,
                       std::string("H-LoRA alpha of the ") + task + " plugin (not stored in the .bin; default for the released shapes: " +
                           (w == "com" ? "M3 128, L14 and XL32 64" : "M3 512") + "; required for other shapes)");
        app.add_option("--" + w + "-rank", po->rank, "expected total H-LoRA rank (checked against the shapes, which define it)");
        app.add_option("--" + w + "-vision-layer", po->vision_layer,
                       std::string("CLIP hidden state the plugin reads (default ") + (w == "com" ? "-2" : "1") + ")")
            ->each([p = po](const std::string&) { p->has_vision_layer = true; });  // init-capture: clang 14 cannot capture a binding
        app.add_option("--" + w + "-name", po->name, "output file plugins/NAME.gguf (default " + w + ")");
    }
    app.add_option("--experts", a->experts, "expected H-LoRA expert count (checked against the router shapes; 4 in every release)");
    app.add_flag("--allow-unknown", a->allow_unknown, "convert even when a source holds keys outside the expected layout "
                                                      "(they are listed and left out; without this flag they are an error)");
    return [a] {
        auto wt = hg::weight_type_from_name(a->type);
        if (!wt) hg::fail("--type %s: expected auto, f32, f16, bf16, q8_0 or q4_k", a->type.c_str());
        auto pt = hg::weight_type_from_name(a->plugin_type);
        if (!pt) hg::fail("--plugin-type %s: expected auto, f32, f16, bf16, q8_0 or q4_k", a->plugin_type.c_str());
        if (!a->fusion.empty() && a->gen.empty()) hg::fail("--fusion belongs to a generation plugin: give --gen too");
        if (!a->vqgan_config.empty() && a->vqgan.empty()) hg::fail("--vqgan-config without --vqgan");

        hg::ModelOptions mo;
        mo.out = a->out;
        if (!a->base.empty()) {
            hg::TextOptions t;
            t.hf_dir = a->base;
            t.type = *wt;
            t.chat_template = a->tmpl;
            t.allow_unknown = a->allow_unknown;
            mo.text = t;
        } else if (!a->tmpl.empty()) {
            hg::fail("--template applies to the base model (--base)");
        }
        if (!a->clip.empty()) mo.vision = hg::VisionOptions{a->clip, *wt, a->allow_unknown};
        auto plugin = [&](const std::string& file, const char* task, const std::string& fusion, const Args::Plugin& po) {
            hg::PluginOptions p;
            p.hlora = file;
            p.fusion = fusion;
            p.task = task;
            p.name = po.name;
            if (po.has_vision_layer) p.vision_layer = po.vision_layer;
            if (po.rank > 0) p.rank = po.rank;
            if (po.alpha > 0) p.alpha = po.alpha;
            if (a->experts > 0) p.experts = a->experts;
            p.type = *pt;
            p.allow_unknown = a->allow_unknown;
            mo.plugins.push_back(p);
        };
        if (!a->com.empty()) plugin(a->com, "comprehension", "", a->com_opt);
        if (!a->gen.empty()) plugin(a->gen, "generation", a->fusion, a->gen_opt);
        if (!a->vqgan.empty()) mo.vqgan = hg::VqganOptions{a->vqgan, a->vqgan_config, *wt, a->allow_unknown};

        const hg::ConvertSummary s = hg::convert_model(mo, [](const std::string& line) { std::printf("%s\n", line.c_str()); });
        std::printf("done: %zu files, %.2f GiB, %.1f s -> %s\n", s.written.size(), s.bytes / double(1ull << 30), s.seconds,
                    a->out.c_str());
        return 0;
    };
}
