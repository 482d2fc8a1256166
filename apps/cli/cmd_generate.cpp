// healthgpt generate: an image from an instruction (and an input image), by a HealthGPT model's
// generation plugin and its VQGAN (runtime/image_generation.h). A progress bar of the 1,024 VQ
// indices and the time of every stage go to stderr; the image goes to -o as PNG.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "core/error.h"
#include "image_options.h"
#include "imaging/image.h"
#include "imaging/load.h"
#include "model/vqgan.h"
#include "runtime/image_generation.h"
#include "runtime/pipeline.h"

namespace {

struct GenerateArgs {
    std::string model, plugin, image, task = "custom", out, vqgan, indices_out;
    std::vector<std::string> instruction;
    bool verbose = false;
};

// "\r[##########----------] 512/1024 indices  41.2/s" on a terminal; a line per 10% otherwise.
class ProgressBar {
public:
    ProgressBar() : tty_(isatty(fileno(stderr)) != 0), t0_(std::chrono::steady_clock::now()) {}
    bool operator()(int64_t done, int64_t total) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
        const int width = 40, filled = (int)(width * done / (total ? total : 1));
        if (tty_) {
            std::string bar(filled, '#');
            bar.append(width - filled, '-');
            std::fprintf(stderr, "\r[%s] %lld/%lld indices  %.1f/s", bar.c_str(), (long long)done, (long long)total,
                         secs > 0 ? done / secs : 0.0);
            if (done == total) std::fprintf(stderr, "\n");
        } else if (done * 10 / total != last_tenth_ || done == total) {
            last_tenth_ = done * 10 / total;
            std::fprintf(stderr, "%lld/%lld indices\n", (long long)done, (long long)total);
        }
        std::fflush(stderr);
        return true;
    }

private:
    bool tty_;
    std::chrono::steady_clock::time_point t0_;
    int64_t last_tenth_ = 0;
};

int run_generate(const GenerateArgs& a, const hgcli::ImageArgs& ia) {
    const auto task = hg::generation_task_from_name(a.task);
    HG_CHECK(task.has_value(), "--task %s: expected ct2mri, mri2ct, sr, recon, report2xray or custom", a.task.c_str());
    std::string instruction;
    for (size_t i = 0; i < a.instruction.size(); ++i) instruction += (i ? " " : "") + a.instruction[i];
    // Cheap checks before loading anything.
    hg::resolve_instruction(*task, instruction, !a.image.empty());

    auto t0 = std::chrono::steady_clock::now();
    std::vector<hg::imaging::RgbImage> images;
    if (!a.image.empty()) {
        hg::imaging::LoadResult r = hg::imaging::load_medical(a.image, hgcli::finish_image_options(ia));
        HG_CHECK(r.images.size() == 1, "%s: %zu images; generation takes one (pick one with --slice)", a.image.c_str(),
                 r.images.size());
        if (!r.images[0].description.empty())
            std::fprintf(stderr, "image: %s: %s\n", a.image.c_str(), r.images[0].description.c_str());
        images.push_back(std::move(r.images[0].image));
    }
    auto model = hg::Model::load(a.model);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (a.verbose) std::fprintf(stderr, "%s", model->describe().c_str());
    if (!model->notice().empty()) std::fprintf(stderr, "note: %s\n", model->notice().c_str());

    hg::Session session(model);
    hg::GenerateImageOptions opt;
    opt.task = *task;
    opt.plugin = a.plugin;
    opt.vqgan = a.vqgan;
    ProgressBar bar;
    opt.on_index = [&bar](int64_t done, int64_t total) { return bar(done, total); };
    opt.on_progress = [](const hg::Progress& p) {
        if (p.stage == hg::Stage::Prefill && p.done == 0)
            std::fprintf(stderr, "prefill: %lld prompt positions\n", (long long)p.total);
    };
    const hg::GeneratedImage g = hg::generate_image(session, instruction, images.empty() ? nullptr : &images[0], opt);
    hg::imaging::write_png(a.out, g.image);
    if (!a.indices_out.empty()) {
        std::ofstream f(a.indices_out, std::ios::binary);
        HG_CHECK(f.good(), "%s: cannot write", a.indices_out.c_str());
        f << hg::format_vq_indices(g.indices, 32);
        HG_CHECK(f.good(), "%s: write failed", a.indices_out.c_str());
    }
    std::fprintf(stderr, "[plugin %s | task %s | \"%s\" | %lld indices%s]\n", g.plugin.c_str(),
                 hg::generation_task_name(*task), g.instruction.c_str(), (long long)g.indices.size(),
                 g.n_overridden ? (", " + std::to_string(g.n_overridden) + " steps constrained to <idx_*>").c_str() : "");
    std::fprintf(stderr, "[timing: load %.3f s | %s]\n", load_s, g.timings.summary().c_str());
    std::printf("%s (%dx%d)\n", a.out.c_str(), g.image.width, g.image.height);
    return 0;
}

}  // namespace

HG_COMMAND(generate, "Generate an image (CT<->MRI, super-resolution, reconstruction, report->X-ray) with a HealthGPT model") {
    auto a = std::make_shared<GenerateArgs>();
    auto ia = std::make_shared<hgcli::ImageArgs>();
    app.add_option("-m,--model", a->model,
                   "model folder with a generation plugin (plugins/*.gguf, task generation) and vqgan.gguf")
        ->required();
    app.add_option("-o,--output", a->out, "output PNG (256x256 with the released VQGAN)")->required();
    app.add_option("--image", a->image,
                   "input image for image->image tasks: PNG/JPEG/BMP/TIFF, a DICOM file or series folder, a NIfTI "
                   "volume (one slice: --slice)");
    app.add_option("--task", a->task,
                   "ct2mri, mri2ct, sr (super-resolution), recon (reconstruction): need --image and default to the "
                   "paper's instruction; report2xray: text only, the report is the instruction; custom: as given")
        ->capture_default_str();
    app.add_option("--plugin", a->plugin, "generation plugin (a file stem in MODEL/plugins/); default: the first one");
    app.add_option("--vqgan", a->vqgan, "VQGAN file (default: MODEL/vqgan.gguf)");
    app.add_option("--indices", a->indices_out,
                   "also write the 1,024 VQ indices (32 rows of 32; `healthgpt vqgan decode` reads them)");
    hgcli::add_image_options(app, ia);
    app.add_flag("-v,--verbose", a->verbose, "describe the loaded model on stderr");
    app.add_option("instruction", a->instruction,
                   "the instruction (the rest of the command line), e.g. \"Transform the MRI display into a CT "
                   "image.\"");
    return [a, ia] { return run_generate(*a, *ia); };
}
