// healthgpt serve: the HTTP API (OpenAI-compatible chat completions, uploads, consultations,
// feedback, models, health, metrics) over one loaded model; docs/SERVER.md. Thin over
// server::HttpServer. Keys come from `healthgpt keys add --data-dir DIR`.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "command.h"
#include "core/error.h"
#include "runtime/model.h"
#include "server/server.h"

namespace {

struct ServeArgs {
    std::string model, host = "127.0.0.1", data_dir, pacs_config;
    int port = 8080, parallel = 1, queue = 8, max_body_mb = 64, timeout_s = 300, threads_per_worker = 0;
    bool quiet = false;
    std::string replay_data, vqa_rad;  // the update loop (docs/UPDATES.md)
    int64_t update_steps = 30;
    double replay_ratio = 1.0, vqa_margin = 0.05;
};

int run_serve(const ServeArgs& a) {
    HG_CHECK(a.parallel >= 1, "--parallel %d: expected at least 1", a.parallel);
    HG_CHECK(a.queue >= 0, "--queue %d: expected 0 or more", a.queue);
    HG_CHECK(a.max_body_mb >= 1, "--max-body-mb %d: expected at least 1", a.max_body_mb);
    HG_CHECK(a.timeout_s >= 1, "--timeout-s %d: expected at least 1", a.timeout_s);
    HG_CHECK(a.port >= 0 && a.port <= 65535, "--port %d: expected 0..65535", a.port);
    std::string data_dir = a.data_dir;
    if (data_dir.empty()) {
        const char* env = std::getenv("HEALTHGPT_DATA_DIR");
        HG_CHECK(env && *env, "no data directory: give --data-dir DIR (or set HEALTHGPT_DATA_DIR)");
        data_dir = env;
    }
    // SIGINT/SIGTERM are taken by sigwait below, so they must be blocked before any thread starts
    // (threads inherit the mask); a clean stop finishes the running answers.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

    auto model = hg::Model::load(a.model);
    if (!model->notice().empty()) std::fprintf(stderr, "note: %s\n", model->notice().c_str());
    hg::server::ServerOptions o;
    o.data_dir = data_dir;
    o.host = a.host;
    o.port = a.port;
    o.parallel = a.parallel;
    o.queue = size_t(a.queue);
    o.max_body_bytes = size_t(a.max_body_mb) << 20;
    o.timeout_s = a.timeout_s;
    o.threads_per_worker = a.threads_per_worker;
    o.log_requests = !a.quiet;
    o.pacs_config = a.pacs_config;
    o.update.replay_data = a.replay_data;
    o.update.replay_ratio = a.replay_ratio;
    o.update.max_steps = a.update_steps;
    o.update.gate.vqa_rad_dir = a.vqa_rad;
    o.update.gate.vqa_rad_margin = a.vqa_margin;
    hg::server::HttpServer server(model, o);
    const int port = server.bind();
    server.start();
    std::fprintf(stderr, "serve: http://%s:%d (model %s, %d worker(s), queue %d, data %s); Ctrl-C stops\n",
                 a.host.c_str(), port, model->path().c_str(), a.parallel, a.queue, data_dir.c_str());
    int sig = 0;
    sigwait(&sigs, &sig);
    std::fprintf(stderr, "serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    server.stop();
    return 0;
}

}  // namespace

HG_COMMAND(serve, "Serve a model over HTTP: the web page for physicians and patients at /, OpenAI-compatible chat, uploads, consultations, sharing, feedback (docs/SERVER.md)") {
    auto a = std::make_shared<ServeArgs>();
    app.add_option("-m,--model", a->model, "model folder (text.gguf, vision.gguf, plugins/*.gguf)")->required();
    app.add_option("--host", a->host, "address to listen on (loopback by default; use a TLS proxy to expose it)")
        ->capture_default_str();
    app.add_option("--port", a->port, "TCP port (0: any free port, printed at start)")->capture_default_str();
    app.add_option("--data-dir", a->data_dir, "the store: healthgpt.db, uploads/ (default: $HEALTHGPT_DATA_DIR)");
    app.add_option("--pacs-config", a->pacs_config,
                   "the operator's PACS settings (JSON: name, url, auth; docs/PACS.md) for /v1/pacs and /v1/uploads/from-pacs");
    app.add_option("--replay-data", a->replay_data,
                   "update jobs: earlier training data mixed into each update (LLaVA JSON or VQA-RAD trainset.json)");
    app.add_option("--replay-ratio", a->replay_ratio, "update jobs: replayed examples per new one")->capture_default_str();
    app.add_option("--update-steps", a->update_steps, "update jobs: optimiser steps of stage 3")->capture_default_str();
    app.add_option("--vqa-rad", a->vqa_rad, "update jobs: the VQA-RAD folder whose test set guards against forgetting");
    app.add_option("--vqa-margin", a->vqa_margin, "update jobs: largest allowed drop of VQA-RAD closed accuracy / open recall")
        ->capture_default_str();
    app.add_option("--parallel", a->parallel, "inference workers, one session (KV cache) each")->capture_default_str();
    app.add_option("--queue", a->queue, "requests that may wait for a worker; more get 429 with Retry-After")
        ->capture_default_str();
    app.add_option("--max-body-mb", a->max_body_mb, "largest request body in MiB (413 beyond)")->capture_default_str();
    app.add_option("--timeout-s", a->timeout_s, "seconds a chat request may take, queue wait included (504 beyond)")
        ->capture_default_str();
    app.add_option("--threads-per-worker", a->threads_per_worker, "compute threads per worker (0: cores / parallel)");
    app.add_flag("-q,--quiet", a->quiet, "no per-request log lines");
    return [a] { return run_serve(*a); };
}
