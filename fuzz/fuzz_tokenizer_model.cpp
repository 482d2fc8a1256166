// libFuzzer target: SentencePiece tokenizer.model bytes -> Vocab -> Tokenizer -> encode/decode.
// Every input must either load or raise hg::Error; nothing may crash.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        hg::text::Tokenizer tok(hg::text::load_sentencepiece_model({data, size}, "fuzz.model"));
        for (auto sem : {hg::text::Semantics::slow, hg::text::Semantics::fast}) {
            const auto ids = tok.encode("Hello <s> world ▁ 你好 🫁\n\t", {sem});
            tok.decode(ids, {sem, false});
            tok.decode(ids, {sem, true});
        }
    } catch (const hg::Error&) {
    }
    return 0;
}
