// libFuzzer target: tokenizer.json (then, when it loads, the input again as tokenizer_config.json
// on top) -> Tokenizer -> encode/decode. Every input must load or raise hg::Error; nothing may crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        hg::text::Vocab v = hg::text::load_tokenizer_json(text, "fuzz.json");
        try {
            hg::text::Vocab c = v;
            hg::text::apply_tokenizer_config(c, text, "fuzz_config.json");
        } catch (const hg::Error&) {
        }
        hg::text::Tokenizer tok(std::move(v));
        for (auto sem : {hg::text::Semantics::slow, hg::text::Semantics::fast}) {
            const auto ids = tok.encode("Hello <|im_end|> world 123 你好 🫁\n\t", {sem});
            tok.decode(ids, {sem, false});
            tok.decode(ids, {sem, true});
        }
    } catch (const hg::Error&) {
    }
    return 0;
}
