// healthgpt ask: a question about medical images, answered by a HealthGPT model (runtime/pipeline.h).
// The answer streams to stdout; the model notice, the stop reason and the time of every stage go to
// stderr. -i keeps the conversation for follow-up questions about the same images.
// --pacs URL --study UID [--series UID] takes the images from a PACS over DICOMweb (pacs/dicomweb.h)
// instead of files; --pacs-store sends the answer back into the study as a Basic Text SR, with the
// image the model was shown as a Secondary Capture (pacs/dicom_results.h; docs/PACS.md).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "command.h"
#include "core/error.h"
#include "image_options.h"
#include "core/sha256.h"
#include "imaging/load.h"
#include "pacs/dicom_results.h"
#include "pacs/dicomweb.h"
#include "runtime/pipeline.h"
#include "session_options.h"

namespace {

struct AskArgs {
    std::vector<std::string> images, question;
    bool interactive = false;
    // PACS
    std::string pacs, study, series /* = --series of the image options */, pacs_user, pacs_password_file, pacs_token_file;
    double pacs_timeout = 30;
    bool pacs_store = false;
};

// The DICOMweb endpoint of --pacs and its credentials (read from files: never on a command line).
hg::pacs::PacsEndpoint pacs_endpoint(const AskArgs& aa) {
    hg::pacs::PacsEndpoint ep;
    ep.name = "--pacs";
    ep.url = aa.pacs;
    ep.read_timeout_s = aa.pacs_timeout;
    HG_CHECK(aa.pacs_user.empty() == aa.pacs_password_file.empty(), "--pacs-user and --pacs-password-file go together");
    HG_CHECK(aa.pacs_user.empty() || aa.pacs_token_file.empty(), "give --pacs-user/--pacs-password-file or --pacs-token-file, not both");
    if (!aa.pacs_user.empty()) ep.auth = hg::pacs::PacsAuth::basic(aa.pacs_user, hg::pacs::read_secret_file(aa.pacs_password_file));
    if (!aa.pacs_token_file.empty()) ep.auth = hg::pacs::PacsAuth::bearer(hg::pacs::read_secret_file(aa.pacs_token_file));
    return ep;
}

// The series to ask about: --series, else the study's first series of images (not SR/KO/PR/SEG).
std::string pick_series(hg::pacs::DicomWebClient& pacs, const AskArgs& aa) {
    if (!aa.series.empty()) return aa.series;
    for (const auto& s : pacs.search_series(aa.study)) {
        if (s.modality == "SR" || s.modality == "KO" || s.modality == "PR" || s.modality == "SEG") continue;
        std::fprintf(stderr, "pacs: series %s (%s%s%s)\n", s.series_uid.c_str(), s.modality.c_str(),
                     s.description.empty() ? "" : ", ", s.description.c_str());
        return s.series_uid;
    }
    hg::fail("--pacs: study %s has no series of images", aa.study.c_str());
}

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

int run_ask(const hgcli::SessionArgs& s, const hgcli::ImageArgs& ia, AskArgs aa) {
    aa.series = ia.series;  // --series: the series in a folder, or the one to retrieve with --pacs
    const hg::imaging::ImageOptions io = hgcli::finish_image_options(ia);
    HG_CHECK(aa.pacs.empty() == aa.study.empty(), "--pacs and --study go together");
    HG_CHECK(aa.pacs.empty() || aa.images.empty(), "give --image or --pacs, not both");
    HG_CHECK(!aa.pacs_store || !aa.pacs.empty(), "--pacs-store needs --pacs and --study");
    HG_CHECK(!aa.pacs_store || !aa.interactive, "--pacs-store answers one question: it does not go with -i");
    // The series is fetched (and checked by the decoder) before the model loads: a PACS problem
    // is reported in seconds.
    std::unique_ptr<hg::pacs::DicomWebClient> pacs;
    std::unique_ptr<hg::pacs::SeriesOnDisk> on_disk;
    hg::pacs::RetrievedSeries retrieved;
    std::vector<std::string> image_paths = aa.images;
    if (!aa.pacs.empty()) {
        const auto t0 = std::chrono::steady_clock::now();
        pacs = std::make_unique<hg::pacs::DicomWebClient>(pacs_endpoint(aa));
        const std::string series = pick_series(*pacs, aa);
        retrieved = pacs->retrieve_series(aa.study, series);
        on_disk = std::make_unique<hg::pacs::SeriesOnDisk>(retrieved);
        image_paths = {on_disk->path().string()};
        std::fprintf(stderr, "pacs: retrieved %zu instance(s) of series %s in %.2f s\n", retrieved.instances.size(),
                     series.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    auto model = hgcli::load_model(s);
    hg::Session session(model, hgcli::session_options(s));
    hg::AskOptions opt = hgcli::ask_options(s);
    opt.on_text = [](std::string_view t) {
        std::fwrite(t.data(), 1, t.size(), stdout);
        std::fflush(stdout);
        return true;
    };

    double load_seconds = 0;
    std::vector<hg::imaging::RgbImage> images = load_images(image_paths, io, &load_seconds);
    const std::vector<hg::imaging::RgbImage> shown = aa.pacs_store ? images : std::vector<hg::imaging::RgbImage>{};
    std::string question;
    for (size_t i = 0; i < aa.question.size(); ++i) question += (i ? " " : "") + aa.question[i];
    HG_CHECK(!question.empty() || aa.interactive, "no question: give one after the options (or use -i)");

    auto ask = [&](const std::string& q) {
        const hg::Answer a = session.ask(q, images, opt);
        std::printf("\n");
        std::fflush(stdout);
        report(a, load_seconds);
        if (aa.pacs_store) {
            hg::pacs::ResultContext ctx;
            ctx.study = pacs->study(aa.study);
            ctx.source_series_uid = retrieved.series_uid;
            ctx.source_instances = retrieved.references;
            ctx.model_name = model->path().filename().string();
            if (ctx.model_name.empty()) ctx.model_name = model->path().parent_path().filename().string();
            ctx.plugin_name = a.plugin;
            if (!a.plugin.empty()) ctx.plugin_sha256 = hg::sha256_file(model->plugins().get(a.plugin).path);
            std::vector<std::string> descriptions(shown.size(), "the image given to the model with the question");
            const hg::pacs::SentResults sent = hg::pacs::send_results(*pacs, ctx, q, a.text, shown, descriptions);
            std::fprintf(stderr, "pacs: stored SR %s (series %s)", sent.sr_sop_uid.c_str(), sent.sr_series_uid.c_str());
            if (!sent.sc_sop_uids.empty())
                std::fprintf(stderr, " and %zu Secondary Capture(s) (series %s)", sent.sc_sop_uids.size(), sent.sc_series_uid.c_str());
            std::fprintf(stderr, " in study %s\n", aa.study.c_str());
        }
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

HG_COMMAND(ask, "Ask a HealthGPT model a question about medical images (PNG/JPEG/BMP, DICOM, NIfTI, a PACS series)") {
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
    app.add_option("--pacs", aa->pacs,
                   "take the images from a PACS over DICOMweb instead of --image: its DICOMweb root URL, e.g. "
                   "http://127.0.0.1:8042/dicom-web (with --study; docs/PACS.md)");
    app.add_option("--study", aa->study,
                   "with --pacs: the Study Instance UID (--series UID picks its series; default: its first series "
                   "of images)");
    app.add_option("--pacs-user", aa->pacs_user, "with --pacs: HTTP basic authentication user (with --pacs-password-file)");
    app.add_option("--pacs-password-file", aa->pacs_password_file, "with --pacs-user: a file whose first line is the password");
    app.add_option("--pacs-token-file", aa->pacs_token_file, "with --pacs: a file whose first line is a bearer token");
    app.add_option("--pacs-timeout", aa->pacs_timeout, "with --pacs: seconds a PACS may stay silent before a request fails")
        ->capture_default_str()
        ->check(CLI::Range(0.1, 3600.0));
    app.add_flag("--pacs-store", aa->pacs_store,
                 "send the answer back into the study by STOW-RS: a Basic Text SR (question, answer, model, plugin, "
                 "references to the series, 'not a diagnosis') and the image the model saw as a Secondary Capture, "
                 "each in a new series");
    app.add_option("question", aa->question, "the question (the rest of the command line)");
    return [s, ia, aa] { return run_ask(*s, *ia, *aa); };
}
