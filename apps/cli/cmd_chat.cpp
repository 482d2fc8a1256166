// healthgpt chat: a text conversation with a model's decoder (a model folder or a bare text GGUF,
// llama.cpp's files included), in the model's chat template, tokens streamed as they come, and
// prompt / generation speed at the end of every answer.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "command.h"
#include "core/error.h"
#include "runtime/pipeline.h"
#include "session_options.h"

namespace {

struct ChatArgs {
    std::string prompt;
};

int run_chat(const hgcli::SessionArgs& s, const ChatArgs& c) {
    auto model = hgcli::load_model(s);
    hg::Session session(model, hgcli::session_options(s));
    hg::AskOptions opt = hgcli::ask_options(s);
    // Without a plugin this is the plain text model, which transformers drives with
    // generate(input_ids): the repetition penalty sees the prompt too. With a plugin it is
    // HealthGPT's path (generate(inputs_embeds)), where it sees only the output.
    opt.no_plugin = s.plugin.empty();
    opt.penalty_scope = opt.no_plugin ? hg::PenaltyScope::PromptAndOutput : hg::PenaltyScope::OutputOnly;
    opt.on_text = [](std::string_view t) {
        std::fwrite(t.data(), 1, t.size(), stdout);
        std::fflush(stdout);
        return true;
    };
    auto turn = [&](const std::string& q) {
        const hg::Answer a = session.ask(q, {}, opt);
        std::printf("\n");
        std::fflush(stdout);
        const hg::StageTimings& t = a.timings;
        std::fprintf(stderr, "[prompt: %lld tokens (%lld reused), %.1f tokens/s | generation: %lld tokens, %.2f tokens/s | %s]\n",
                     (long long)t.n_prompt, (long long)t.n_prompt_reused, t.prefill_tokens_per_second(),
                     (long long)t.n_generated, t.decode_tokens_per_second(),
                     a.reason == hg::StopReason::StopToken ? ("stop id " + std::to_string(a.stop_token)).c_str()
                                                           : hg::stop_reason_name(a.reason));
    };
    if (!c.prompt.empty()) {
        turn(c.prompt);
        return 0;
    }
    std::fprintf(stderr, "Chat with %s (%s template). /new starts over; an empty line, /quit or EOF ends.\n",
                 s.model.c_str(), hg::text::chat_template_name(model->chat_template()));
    std::string line;
    while (true) {
        std::fprintf(stderr, "> ");
        std::fflush(stderr);
        if (!std::getline(std::cin, line) || line.empty() || line == "/quit") break;
        if (line == "/new") {
            session.reset();
            continue;
        }
        try {
            turn(line);
        } catch (const hg::Error& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
        }
    }
    return 0;
}

}  // namespace

HG_COMMAND(chat, "Chat with a model's text decoder (streaming; prompt and generation speed at the end)") {
    auto s = std::make_shared<hgcli::SessionArgs>();
    auto c = std::make_shared<ChatArgs>();
    hgcli::add_session_options(app, s, /*plugin_default_none=*/true);
    app.add_option("-p,--prompt", c->prompt, "answer this one message and exit (default: interactive)");
    return [s, c] { return run_chat(*s, *c); };
}
