// healthgpt make-demo-model DIR: writes the project's own tiny HealthGPT-shaped model (random
// weights, a small real vocabulary, a comprehension and a generation plugin, a small VQGAN, a synthetic
// radiograph), so `ask` and `generate` can run end to end on a fresh clone without any download. Its answers are random
// text and its images random patterns, not medical.
// (Registered with add_command directly: HG_COMMAND's name must be an identifier, this verb has dashes.)
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "runtime/demo_model.h"

namespace {

hgcli::Runner setup_make_demo_model(CLI::App& app) {
    auto dir = std::make_shared<std::string>();
    auto seed = std::make_shared<uint64_t>(hg::DemoModelOptions{}.seed);
    app.add_option("dir", *dir, "folder to write (created): text.gguf, vision.gguf, plugins/com.gguf, plugins/gen.gguf, vqgan.gguf, example.png")
        ->required();
    app.add_option("--seed", *seed, "seed of the random weights")->capture_default_str();
    return [dir, seed] {
        hg::DemoModelOptions o;
        o.seed = *seed;
        hg::write_demo_model(*dir, o);
        std::printf("wrote a tiny random demo model to %s (text.gguf, vision.gguf, plugins/com.gguf, plugins/gen.gguf, "
                    "vqgan.gguf, example.png)\n"
                    "its answers are random text and its images random patterns, not medical; try:\n"
                    "  healthgpt ask -m %s --image %s/example.png \"What does this chest X-ray show?\"\n"
                    "  healthgpt generate -m %s --image %s/example.png --task recon -o out.png\n",
                    dir->c_str(), dir->c_str(), dir->c_str(), dir->c_str(), dir->c_str());
        return 0;
    };
}

[[maybe_unused]] const int registered = hgcli::add_command(
    "make-demo-model", "Write the project's own tiny random HealthGPT-shaped model (for trying the pipeline; not medical)",
    setup_make_demo_model);

}  // namespace
