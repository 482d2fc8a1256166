// healthgpt tokenize: text -> token ids (or ids -> text) with a model's tokenizer, exactly as the
// Hugging Face reference does it; optionally the full HealthGPT prompt around the text.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "command.h"
#include "core/error.h"
#include "text/chat.h"
#include "text/tokenizer.h"

namespace {

struct TokenizeOptions {
    std::string tokenizer, config, tmpl;
    int image_slots = 0;
    bool special = false, fast = false, plain = false, generation = false, decode = false;
    std::vector<std::string> args;
};

int run_tokenize(const TokenizeOptions& o) {
    using namespace hg::text;
    std::optional<std::filesystem::path> config;
    if (!o.config.empty()) config = o.config;
    Tokenizer tok = Tokenizer::load(o.tokenizer, config);
    std::optional<ChatTemplate> tmpl;
    if (!o.tmpl.empty()) {
        tmpl = chat_template_from_name(o.tmpl);
        HG_CHECK(tmpl.has_value(), "unknown template '%s' (phi3_instruct, phi4_instruct, qwen_2)", o.tmpl.c_str());
        if (chat_model(*tmpl).vq_vocabulary) add_vq_vocabulary(tok);  // as HealthGPT does after loading
    }
    const Semantics sem = o.fast ? Semantics::fast : Semantics::slow;

    std::string text;
    for (size_t i = 0; i < o.args.size(); ++i) text += (i ? " " : "") + o.args[i];
    if (text == "-") text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());

    if (o.decode) {
        std::vector<int32_t> ids;
        std::istringstream in(text);
        std::string word;
        while (in >> word) {
            size_t used = 0;
            long long id = 0;
            try {
                id = std::stoll(word, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            HG_CHECK(used == word.size() && id >= INT32_MIN && id <= INT32_MAX, "'%s' is not a token id", word.c_str());
            ids.push_back(static_cast<int32_t>(id));
        }
        std::string out = tok.decode(ids, {sem, /*skip_special_tokens=*/!o.special});
        std::printf("%s\n", out.c_str());
        return 0;
    }

    std::vector<int32_t> ids;
    if (tmpl) {
        const ChatTurn turn{text, o.image_slots, std::nullopt};
        ids = tokenize_with_images(tok, build_prompt(*tmpl, {&turn, 1}, o.generation), sem);
    } else {
        EncodeOptions eo;
        eo.semantics = sem;
        eo.add_special_tokens = o.special;
        eo.parse_added_tokens = !o.plain;
        ids = tok.encode(text, eo);
    }
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
    return 0;
}

}  // namespace

HG_COMMAND(tokenize, "Tokenize text into ids (or decode ids) exactly as the Hugging Face reference does") {
    auto o = std::make_shared<TokenizeOptions>();
    app.add_option("--tokenizer", o->tokenizer,
                   "tokenizer.json, tokenizer.model or *.tiktoken file, or a folder holding one; a "
                   "tokenizer_config.json beside it (added tokens, BOS/EOS, legacy) is applied")
        ->required();
    app.add_option("--config", o->config, "tokenizer_config.json to apply instead of the one beside --tokenizer");
    app.add_flag("--special", o->special,
                 "encode: add the BOS/EOS the tokenizer config asks for (Hugging Face add_special_tokens); "
                 "--decode: keep special tokens in the text (default: skip them; without --fast only BOS, EOS, "
                 "UNK, PAD and additional special tokens count, as in transformers, so Phi-3's <|end|> stays)");
    app.add_flag("--plain", o->plain, "treat added-token text such as <|end|> as plain text (split_special_tokens)");
    app.add_flag("--fast", o->fast,
                 "follow the `tokenizers` library (tokenizer.json) instead of transformers' Python tokenizer "
                 "(use_fast=False), which is what HealthGPT uses and the default");
    app.add_option("--template", o->tmpl,
                   "build the HealthGPT prompt (phi3_instruct, phi4_instruct or qwen_2) with TEXT as the user's "
                   "question and tokenize it chunk-wise around <image> (image slots print as -200); phi3/phi4 "
                   "also get HealthGPT's <start_index>/<idx_k> vocabulary");
    app.add_option("--image-slots", o->image_slots, "with --template: number of images before the question")
        ->check(CLI::Range(0, 64));
    app.add_flag("--generation", o->generation, "with --template: end the prompt with <start_index> (image generation)");
    app.add_flag("--decode", o->decode, "decode: the arguments are token ids; print their text");
    app.add_option("text", o->args, "TEXT to tokenize ('-' reads standard input), or the ids with --decode")->required();
    return [o] { return run_tokenize(*o); };
}
