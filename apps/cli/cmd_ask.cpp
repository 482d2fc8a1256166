// healthgpt ask: a question about medical images, answered by a HealthGPT model (runtime/pipeline.h).
// The answer streams to stdout; the model notice, the stop reason and the time of every stage go to
// stderr. -i keeps the conversation for follow-up questions about the same images.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "core/error.h"
#include "image_options.h"
#include "imaging/load.h"
#include "runtime/pipeline.h"
#include "session_options.h"

namespace {

struct AskArgs {
    std::vector<std::string> images, question;
    bool interactive = false;
};

std::vector<hg::imaging::RgbImage> load_images(const std::vector<std::string>& paths, const hg::imaging::ImageOptions& io,
                                               double* seconds) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<hg::imaging::RgbImage> out;
    for (const std::string& p : paths) {
        hg::imaging::LoadResult r = hg::imaging::load_medical(p, io);
        for (auto& li : r.images) {
            if (!li.description.empty()) std::fprintf(stderr, "image: %s: %s\n", p.c_str(), li.description.c_str());
            out.push_back(std::move(li.image));
        }
    }
    *seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return out;
}

void report(const hg::Answer& a, double load_seconds) {
    std::fprintf(stderr, "[%s%s | %s]\n", a.plugin.empty() ? "no plugin" : ("plugin " + a.plugin).c_str(),
                 a.reason == hg::StopReason::StopToken ? (", stop id " + std::to_string(a.stop_token)).c_str()
                                                       : (std::string(", ") + hg::stop_reason_name(a.reason)).c_str(),
                 a.timings.n_images ? (std::to_string(a.timings.n_images) + " image(s)").c_str() : "text only");
    std::fprintf(stderr, "[timing: load %.3f s | %s]\n", load_seconds, a.timings.summary().c_str());
}

int run_ask(const hgcli::SessionArgs& s, const hgcli::ImageArgs& ia, const AskArgs& aa) {
    const hg::imaging::ImageOptions io = hgcli::finish_image_options(ia);
    auto model = hgcli::load_model(s);
    hg::Session session(model, hgcli::session_options(s));
    hg::AskOptions opt = hgcli::ask_options(s);
    opt.on_text = [](std::string_view t) {
        std::fwrite(t.data(), 1, t.size(), stdout);
        std::fflush(stdout);
        return true;
    };

    double load_seconds = 0;
    std::vector<hg::imaging::RgbImage> images = load_images(aa.images, io, &load_seconds);
    std::string question;
    for (size_t i = 0; i < aa.question.size(); ++i) question += (i ? " " : "") + aa.question[i];
    HG_CHECK(!question.empty() || aa.interactive, "no question: give one after the options (or use -i)");

    auto ask = [&](const std::string& q) {
        const hg::Answer a = session.ask(q, images, opt);
        std::printf("\n");
        std::fflush(stdout);
        report(a, load_seconds);
        images.clear();  // the images belong to the turn that introduced them
        load_seconds = 0;
    };
    if (!question.empty()) ask(question);
    if (!aa.interactive) return 0;

    std::fprintf(stderr, "Follow-up questions about the same image(s). Commands: /image FILE (add an image to the "
                         "next question), /plugin NAME, /new (new conversation), /quit. An empty line or EOF quits.\n");
    std::string line;
    while (true) {
        std::fprintf(stderr, "> ");
        std::fflush(stderr);
        if (!std::getline(std::cin, line) || line.empty() || line == "/quit") break;
        try {
            if (line.rfind("/image ", 0) == 0) {
                auto more = load_images({line.substr(7)}, io, &load_seconds);
                for (auto& m : more) images.push_back(std::move(m));
                std::fprintf(stderr, "%zu image(s) go with the next question\n", images.size());
            } else if (line.rfind("/plugin ", 0) == 0) {
                opt.plugin = line.substr(8);
                opt.no_plugin = false;
                model->plugins().get(opt.plugin);  // throws listing the loaded ones
                std::fprintf(stderr, "plugin %s\n", opt.plugin.c_str());
            } else if (line == "/new") {
                session.reset();
                std::fprintf(stderr, "new conversation\n");
            } else {
                ask(line);
            }
        } catch (const hg::Error& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
        }
    }
    return 0;
}

}  // namespace

HG_COMMAND(ask, "Ask a HealthGPT model a question about medical images (PNG/JPEG/BMP, DICOM, NIfTI)") {
    auto s = std::make_shared<hgcli::SessionArgs>();
    auto ia = std::make_shared<hgcli::ImageArgs>();
    auto aa = std::make_shared<AskArgs>();
    hgcli::add_session_options(app, s, /*plugin_default_none=*/false);
    app.add_option("--image", aa->images,
                   "an image: PNG/JPEG/BMP/TIFF, a DICOM file or series folder, a NIfTI volume (repeat for several "
                   "images: each gets its own <image> in the question; --slices N makes N images of a volume)");
    hgcli::add_image_options(app, ia);
    app.add_flag("-i,--interactive", aa->interactive,
                 "after the answer, read follow-up questions from standard input (the image's KV cache is reused)");
    app.add_option("question", aa->question, "the question (the rest of the command line)");
    return [s, ia, aa] { return run_ask(*s, *ia, *aa); };
}
