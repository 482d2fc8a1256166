// healthgpt quantize IN.gguf OUT.gguf --type T: re-store a model file's weights (docs/MODELS.md "Quantization").
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "convert/quantize.h"
#include "core/error.h"

HG_COMMAND(quantize, "Store a model file's weights as F16, BF16, Q8_0 or Q4_K (llama.cpp's Q4_K_M mix)") {
    struct Args {
        std::string in, out, type;
        bool keep_lora = false, verbose = false;
    };
    auto a = std::make_shared<Args>();
    app.add_option("input", a->in, "a GGUF written by `healthgpt convert` (text.gguf, vision.gguf, plugins/*.gguf, vqgan.gguf)")
        ->required()
        ->check(CLI::ExistingFile);
    app.add_option("output", a->out, "the new GGUF (written atomically; must differ from the input)")->required();
    app.add_option("-t,--type", a->type, "f32, f16, bf16, q8_0 or q4_k (= q4_k_m; case-insensitive). Norms, biases, routers, class/position embeddings stay F32; "
                                         "convolutions F16 under q8_0/q4_k; q4_k: output, attn_qkv and every few attn_v/ffn_down Q6_K; "
                                         "rows that are not whole blocks fall back to Q8_0 or F16")
        ->required();
    app.add_flag("--keep-lora", a->keep_lora, "plugins: leave H-LoRA A/B in their current type");
    app.add_flag("-v,--verbose", a->verbose, "list every tensor whose type changes");
    return [a] {
        auto wt = hg::weight_type_from_name(a->type);
        if (!wt || *wt == hg::WeightType::Auto) hg::fail("--type %s: expected f32, f16, bf16, q8_0 or q4_k", a->type.c_str());
        hg::QuantizeOptions opt;
        opt.type = *wt;
        opt.quantize_lora = !a->keep_lora;
        const hg::QuantizeReport r = hg::quantize_gguf(a->in, a->out, opt);
        const size_t n_lines = r.lines.size();
        for (size_t i = 0; i < n_lines; ++i) {
            const bool total = r.lines[i].rfind("  ", 0) == 0;
            if (a->verbose || total) std::printf("%s\n", r.lines[i].c_str());
        }
        std::printf("%d tensors, %d converted: %.1f MiB -> %.1f MiB (%.2fx) in %.2f s -> %s\n", r.n_tensors, r.n_changed,
                    r.in_bytes / 1048576.0, r.out_bytes / 1048576.0, r.out_bytes ? (double)r.in_bytes / r.out_bytes : 0.0,
                    r.seconds, a->out.c_str());
        return 0;
    };
}
