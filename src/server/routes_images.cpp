// POST /v1/images/generations: the generation tasks (ct2mri, mri2ct, sr, recon) on an uploaded
// image, through the library's image generation API (runtime/image_generation.h, what `healthgpt
// generate` runs), as an inference job of the shared queue. PNG out, stored as a new upload of the
// input's consultation so that it can be previewed and compared (docs/SERVER.md).
//
//   request  {"task": "ct2mri", "upload_id": 3, "stream": false, "slice": 4, "window": "brain",
//             "plugin": "gen", "seed": 7, "prompt": "..."}          (all but task/upload_id optional)
//   response {"created": ..., "data": [{"b64_json": "<png>", "upload_id": 9}], "plugin": "gen", ...}
//   streamed data: {"type":"progress","stage":"indices","done":n,"total":1024} ...
//            data: {"type":"image","b64_json":...,"upload_id":9,...}   data: [DONE]
//
// Roles are the service layer's: reading the input is ConsultationService::read_upload (owner
// patient or a shared physician; audited as upload.read), storing the output is add_upload
// (the same people; audited as upload.add). Nothing is stored unless the image was made.
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "core/error.h"
#include "imaging/image.h"
#include "runtime/image_generation.h"
#include "server/server_impl.h"

namespace hg::server {

namespace {

// A generation job's exchange with its HTTP thread.
struct ImageExchange : JobExchange {
    std::optional<GeneratedImage> image;
    std::atomic<int64_t> done_indices{0}, total_indices{0};
    bool has_result() const override { return image.has_value(); }
};

}  // namespace

void HttpServer::Impl::routes_images() {
    http.Post("/v1/images/generations",
              wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  generate_images(req, res, *p);
              }));
}

void HttpServer::Impl::generate_images(const httplib::Request& req, httplib::Response& res, const Principal& p) {
    const Clock::time_point arrived = Clock::now();
    const ImageGenerationRequest gr = parse_image_generation_request(req.body);
    const GenerationTask task = *generation_task_from_name(gr.task);  // the parser admits only known tasks

    // The plugin: a named one must exist (400) and be a generation plugin (400); with none named, a
    // model without a generation plugin or VQGAN cannot do the task at all (404).
    const Plugin* plugin = nullptr;
    if (!gr.plugin.empty()) {
        plugin = model->plugins().find(gr.plugin);
        if (!plugin) {
            std::string names;
            for (const auto& q : model->plugins().all()) names += (names.empty() ? "" : ", ") + q->name;
            bad_request("plugin: unknown plugin '" + gr.plugin.substr(0, 64) + "' (loaded: " + (names.empty() ? "none" : names) + ")");
        }
        if (plugin->task() != PluginTask::Generation)
            bad_request("plugin: '" + plugin->name + "' is a " + plugin_task_name(plugin->task()) +
                        " plugin; image generation needs a generation plugin");
    } else {
        plugin = model->plugins().first(PluginTask::Generation);
        if (!plugin)
            throw ApiError(404, "not_found_error", "this model has no generation plugin, so it cannot do task " + gr.task);
    }
    try {
        vqgan_path(*model);
    } catch (const hg::Error&) {
        throw ApiError(404, "not_found_error", "this model has no VQGAN decoder (vqgan.gguf), so it cannot do task " + gr.task);
    }
    if (!model->vision()) throw ApiError(404, "not_found_error", "this model has no vision tower, so it cannot take an input image");

    // The input image, read as the user is allowed to (403 + audit otherwise), decoded before the job.
    const service::Upload input = consultations.read_upload(p, gr.upload_id);
    const imaging::ImageOptions io = image_options(gr.window, gr.slice, opt.image_limits);
    imaging::LoadResult lr = load_image_file(opt.data_dir / input.path, io, "upload " + std::to_string(gr.upload_id));
    HG_CHECK(!lr.images.empty(), "upload %lld: no image", (long long)gr.upload_id);
    const std::string input_description = lr.images[0].description;

    GenerateImageOptions gopt;
    gopt.task = task;
    gopt.plugin = plugin->name;
    if (gr.seed) {
        gopt.sampling.do_sample = true;
        gopt.sampling.temperature = 1;
        gopt.sampling.seed = *gr.seed;
    }
    auto ex = std::make_shared<ImageExchange>();
    const double timeout_s = opt.timeout_s;
    const auto delay = opt.test_token_delay;
    gopt.on_index = [ex, delay, arrived, timeout_s](int64_t done, int64_t total) {
        ex->done_indices = done;
        ex->total_indices = total;
        ex->cv.notify_all();
        if (delay.count() > 0) std::this_thread::sleep_for(delay);
        if (seconds_since(arrived) > timeout_s) ex->cancel = true;
        return !ex->cancel.load();
    };
    auto job = [ex, gopt, prompt = gr.prompt, image = std::move(lr.images[0].image)](Session* s) {
        std::optional<GeneratedImage> g;
        std::string err;
        if (!s) err = "the server is shutting down";
        else if (ex->cancel) err = "cancelled before it ran";
        else {
            try {
                g = generate_image(*s, prompt, &image, gopt);
            } catch (const std::exception& e) {
                err = e.what();
            }
        }
        std::lock_guard<std::mutex> l(ex->mu);
        ex->image = std::move(g);
        ex->error = err;
        ex->done = true;
        ex->cv.notify_all();
    };
    submit_or_429(std::move(job), res);

    const int64_t created =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    const std::string plugin_name = plugin->name, plugin_hash = plugin_sha[plugin->name];
    const Principal who = p;
    const int64_t input_id = gr.upload_id, cid = input.consultation_id;
    const std::string task_name = gr.task;

    // The made image as a new upload of the input's consultation; returns the data item.
    auto store_image = [this, who, input_id, cid, task_name, plugin_name, plugin_hash,
                        input_description](const GeneratedImage& g) {
        const std::vector<uint8_t> png = imaging::encode_png(g.image);
        const json meta = {{"kind", imaging::source_kind_name(imaging::SourceKind::Raster)},
                           {"modality", ""},
                           {"width", g.image.width},
                           {"height", g.image.height},
                           {"frames", 1},
                           {"description", task_name + " of upload " + std::to_string(input_id) + " (" +
                                               input_description.substr(0, 200) + ") by plugin " + plugin_name},
                           {"content_type", "image/png"},
                           {"generated", {{"task", task_name}, {"from_upload_id", input_id},
                                          {"plugin", plugin_name}, {"plugin_sha256", plugin_hash},
                                          {"model", model_name}}}};
        const std::string filename = task_name + "-of-upload-" + std::to_string(input_id) + ".png";
        const service::Upload up = consultations.add_upload(who, cid, png, filename, dump(meta));
        return json{{"b64_json", encode_base64(png)}, {"upload_id", up.id}, {"consultation_id", cid},
                    {"sha256", up.sha256}, {"width", g.image.width}, {"height", g.image.height}};
    };

    if (!gr.stream) {
        std::unique_lock<std::mutex> l = await_job(*ex, arrived, "the image", "image generation failed");
        const GeneratedImage g = std::move(*ex->image);
        l.unlock();
        const json item = store_image(g);
        json j = {{"created", created}, {"data", json::array({item})}, {"plugin", plugin_name},
                  {"task", task_name},  {"model", model_name},         {"upload_id", item["upload_id"]},
                  {"consultation_id", cid}};
        res.set_content(dump(j), "application/json");
        return;
    }

    // Streaming: progress events as the indices are made (at most one per poll), keep-alive
    // comments while nothing moves (queue wait, prefill), then the image event and [DONE].
    res.set_header("Cache-Control", "no-cache");
    const double keepalive_s = opt.sse_keepalive_s;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, ex, store_image, arrived, timeout_s, keepalive_s, plugin_name, task_name, cid](size_t,
                                                                                            httplib::DataSink& sink) {
            auto write = [&](const std::string& s) {
                if (sink.write(s.data(), s.size())) return true;
                ex->cancel = true;  // the client went away: stop generating
                metrics.count_error("client_disconnected");
                return false;
            };
            auto sse = [](const json& j) { return "data: " + dump(j) + "\n\n"; };
            int64_t sent = -1;
            Clock::time_point last_write = Clock::now();
            while (true) {
                bool done;
                {
                    std::unique_lock<std::mutex> l(ex->mu);
                    ex->cv.wait_for(l, std::chrono::milliseconds(100),
                                    [&] { return ex->done || ex->done_indices.load() != sent; });
                    done = ex->done;
                }
                const int64_t d = ex->done_indices, total = ex->total_indices;
                if (d != sent && total > 0) {
                    if (!write(sse({{"type", "progress"}, {"stage", "indices"}, {"done", d}, {"total", total}}))) return false;
                    sent = d;
                    last_write = Clock::now();
                } else if (!done && seconds_since(last_write) >= keepalive_s) {
                    if (!write(": keep-alive\n\n")) return false;
                    last_write = Clock::now();
                }
                if (!done && seconds_since(arrived) > timeout_s) ex->cancel = true;
                if (!done && sink.is_writable && !sink.is_writable()) {
                    ex->cancel = true;
                    metrics.count_error("client_disconnected");
                    return false;
                }
                if (done) break;
            }
            std::optional<GeneratedImage> g;
            std::string err;
            {
                std::lock_guard<std::mutex> l(ex->mu);
                g = std::move(ex->image);
                err = ex->error;
            }
            const bool timed_out = seconds_since(arrived) > timeout_s;
            json item;
            if (g && !timed_out) {
                try {
                    item = store_image(*g);
                } catch (const std::exception& e) {
                    err = std::string("storing the image failed: ") + e.what();
                    g.reset();
                }
            }
            if (!g || timed_out) {
                // The status line is gone already: the error travels as an event.
                if (!timed_out) std::fprintf(stderr, "serve: image stream: %s\n", err.c_str());
                const json e = timed_out ? error_body("the image took longer than the timeout (--timeout-s)", "timeout_error", 504)
                                         : error_body("image generation failed (logged on the server)", "server_error", 500);
                metrics.count_error(timed_out ? "timeout_error" : "server_error");
                write(sse(e));
                write("data: [DONE]\n\n");
                sink.done();
                return true;
            }
            json ev = item;
            ev["type"] = "image";
            ev["plugin"] = plugin_name;
            ev["task"] = task_name;
            if (!write(sse(ev))) return false;
            write("data: [DONE]\n\n");
            sink.done();
            return true;
        });
}

}  // namespace hg::server
