// Options shared by `ask` and `chat` (a model, a plugin, decoding): declared on a verb with
// add_session_options(app, opts), turned into library options by the helpers below.
#pragma once
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include "core/error.h"
#include "runtime/pipeline.h"
#include "text/chat.h"

namespace hgcli {

struct SessionArgs {
    std::string model, plugin, tmpl, kv = "f16";
    bool no_plugin = false, verbose = false;
    int64_t max_new_tokens = 1024, ctx = 0;
    float temperature = 0, top_p = 1, repetition_penalty = 0;
    int top_k = 0;
    uint64_t seed = 0;
};

inline void add_session_options(CLI::App& app, const std::shared_ptr<SessionArgs>& a, bool plugin_default_none) {
    app.add_option("-m,--model", a->model,
                   "model folder (text.gguf, vision.gguf, plugins/*.gguf; docs/MODELS.md) or a text-model .gguf")
        ->required();
    app.add_option("--plugin", a->plugin,
                   plugin_default_none ? "run with this H-LoRA plugin (a file stem in MODEL/plugins/); default: none"
                                       : "H-LoRA plugin to use (a file stem in MODEL/plugins/); default: the "
                                         "model's first comprehension plugin");
    if (!plugin_default_none) app.add_flag("--no-plugin", a->no_plugin, "run the base model without any plugin");
    app.add_option("--template", a->tmpl,
                   "chat template when the file declares none: phi3_instruct, phi4_instruct or qwen_2");
    app.add_option("-n,--max-new-tokens", a->max_new_tokens, "most tokens to generate")->capture_default_str();
    app.add_option("--ctx", a->ctx, "context size in positions (default: the model's, at most 4096)");
    app.add_option("--kv", a->kv, "KV cache type: f16 or f32")->capture_default_str();
    app.add_option("--temperature", a->temperature, "sample with this temperature (default 0: greedy, as HealthGPT)");
    app.add_option("--top-k", a->top_k, "with --temperature: keep the k most likely tokens (0: all)");
    app.add_option("--top-p", a->top_p, "with --temperature: nucleus sampling threshold (1: off)");
    app.add_option("--seed", a->seed, "with --temperature: random seed (our xoshiro256**; not torch's stream)");
    app.add_option("--repetition-penalty", a->repetition_penalty,
                   "override the model's repetition penalty (Qwen2.5: 1.05, others 1)");
    app.add_flag("-v,--verbose", a->verbose, "describe the loaded model on stderr");
}

inline std::shared_ptr<const hg::Model> load_model(const SessionArgs& a) {
    hg::ModelOptions mo;
    if (!a.tmpl.empty()) {
        mo.chat_template = hg::text::chat_template_from_name(a.tmpl);
        HG_CHECK(mo.chat_template.has_value(), "unknown template '%s' (phi3_instruct, phi4_instruct, qwen_2)",
                 a.tmpl.c_str());
    }
    auto m = hg::Model::load(a.model, mo);
    if (a.verbose) std::fprintf(stderr, "%s", m->describe().c_str());
    if (!m->notice().empty()) std::fprintf(stderr, "note: %s\n", m->notice().c_str());
    return m;
}

inline hg::SessionOptions session_options(const SessionArgs& a) {
    hg::SessionOptions so;
    so.n_ctx = a.ctx;
    HG_CHECK(a.kv == "f16" || a.kv == "f32", "--kv %s: expected f16 or f32", a.kv.c_str());
    so.kv_type = a.kv == "f32" ? hg::DType::F32 : hg::DType::F16;
    return so;
}

inline hg::AskOptions ask_options(const SessionArgs& a) {
    hg::AskOptions o;
    o.plugin = a.plugin;
    o.no_plugin = a.no_plugin;
    o.max_new_tokens = a.max_new_tokens;
    if (a.temperature > 0) {
        o.sampling.do_sample = true;
        o.sampling.temperature = a.temperature;
        o.sampling.top_k = a.top_k;
        o.sampling.top_p = a.top_p;
        o.sampling.seed = a.seed;
    }
    if (a.repetition_penalty > 0) o.repetition_penalty = a.repetition_penalty;
    return o;
}

}  // namespace hgcli
