// libFuzzer target: tiktoken ranks file -> Tokenizer -> encode/decode. Every input must load or
// raise hg::Error; nothing may crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        hg::text::Tokenizer tok(
            hg::text::load_tiktoken(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.tiktoken"));
        const auto ids = tok.encode("Hello world 12345 你好 🫁\n\t", {hg::text::Semantics::fast});
        tok.decode(ids);
    } catch (const hg::Error&) {
    }
    return 0;
}
