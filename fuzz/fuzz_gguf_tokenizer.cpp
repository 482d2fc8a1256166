// libFuzzer target: a tokenizer read from GGUF metadata (tokenizer.ggml.* and
// healthgpt.tokenizer.hf_config) of arbitrary bytes, then used: encode, decode, and written back.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/error.h"
#include "formats/gguf.h"
#include "text/gguf_tokenizer.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto f = hg::GGUFFile::from_memory(std::span<const uint8_t>(data, size), "fuzz.gguf");
        if (!hg::text::has_tokenizer(*f)) return 0;
        const hg::text::Tokenizer tok = hg::text::load_tokenizer(*f);
        const std::string text = "Hello <|end|> world\n\t 12345 \xC3\xA9";
        for (auto sem : {hg::text::Semantics::slow, hg::text::Semantics::fast}) {
            const auto ids = tok.encode(text, {sem});
            (void)tok.decode(ids, {sem, true});
        }
        hg::GGUFWriter w;
        hg::text::write_tokenizer(w, tok);
    } catch (const hg::Error&) {
    }
    return 0;
}
