// healthgpt inspect FILE: what a model file holds, without loading or executing anything.
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "formats/inspect.h"

HG_COMMAND(inspect, "Describe a model file: GGUF, safetensors, Hugging Face folder, or PyTorch .bin/.pt/.ckpt") {
    struct Args {
        std::string path;
        hg::InspectOptions opt;
    };
    auto a = std::make_shared<Args>();
    app.add_option("file", a->path,
                   "A .gguf file (metadata and tensors like gguf-dump; tensor dims in ggml order), a .safetensors file or "
                   "model.safetensors.index.json, a Hugging Face model folder (config.json + safetensors or pytorch_model*.bin), "
                   "or a PyTorch checkpoint (.bin/.pt/.ckpt, zip or legacy format, Lightning included). Checkpoints are read "
                   "with a restricted unpickler: nothing in the file is executed; objects of unknown classes are listed, not built.")
        ->required();
    app.add_flag("--json", a->opt.json, "Print one JSON document instead of text");
    app.add_option("--max-items", a->opt.max_array_items, "Array items shown before abbreviating with the count (default 8)");
    app.add_flag("--all", a->opt.all_tensors, "PyTorch checkpoints: also list tensors outside the state dict (optimizer state, ...)");
    return [a] {
        const std::string out = hg::inspect(a->path, a->opt);
        std::fwrite(out.data(), 1, out.size(), stdout);
        return 0;
    };
}
