// `healthgpt serve`: the HTTP API over one loaded model (docs/SERVER.md, "HTTP API").
//
//   auto model = hg::Model::load("models/healthgpt-demo");
//   hg::server::ServerOptions opt;  opt.data_dir = "data";  opt.port = 0;   // 0: any free port
//   hg::server::HttpServer server(model, opt);
//   int port = server.bind();       // 127.0.0.1:port
//   server.start();                 // serves on a background thread (or run() to block)
//   ...
//   server.stop();
//
// The routes are thin: parse (request.h) -> authenticate (KeyService) -> service call or an
// inference job (queue.h) -> JSON. Roles are the service layer's (ConsultationService), which
// audits every allowed and refused call; the HTTP layer maps its errors to statuses
// (Unauthenticated 401, AccessDenied 403, BadInput 400, ApiError its own, anything else 500).
#pragma once
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "imaging/image.h"
#include "runtime/pipeline.h"
#include "server/metrics.h"
#include "server/request.h"
#include "update/update_job.h"

namespace hg::server {

struct ServerOptions {
    std::filesystem::path data_dir = "data";  // the store (healthgpt.db, uploads/) and request temp files
    std::string host = "127.0.0.1";           // loopback by default: put a TLS proxy in front to expose it
    int port = 8080;                          // 0: any free port (bind() returns it)
    int parallel = 1;                         // inference workers, one Session each
    size_t queue = 8;                         // jobs that may wait for a worker; beyond: 429
    size_t max_body_bytes = size_t(64) << 20; // request bodies; beyond: 413
    double timeout_s = 300;                   // per chat request, from arrival (queue wait included): 504
    int http_threads = 0;                     // 0: parallel + queue + 4 (every waiting request holds one)
    int listen_backlog = 1024;                // connections the kernel holds before accept (capped by net.core.somaxconn)
    int threads_per_worker = 0;               // 0: physical cores / parallel
    std::string model_name;                   // "model" in responses; default: the model folder's name
    imaging::Limits image_limits = [] {       // what one uploaded or inline image may be
        imaging::Limits l;
        l.max_side = 16384;
        l.max_pixels = int64_t(1) << 26;       // 67 M pixels
        l.max_voxels = int64_t(1) << 28;       // 1 GiB of float voxels
        return l;
    }();
    ParseLimits parse;
    SessionOptions session;
    update::UpdateOptions update;             // the update loop's jobs (docs/UPDATES.md); model_dir is filled in
    std::filesystem::path pacs_config;        // --pacs-config: the PACS endpoints (docs/PACS.md); empty: none
    double sse_keepalive_s = 15;              // a ": keep-alive" comment when a stream had nothing to say this long
    bool log_requests = true;                 // one line per request on stderr: method, path, status, ms
    // Tests only: a pause after every generated token, to make requests slow (queue-full, timeout
    // and disconnect tests on a model that is otherwise too fast to observe).
    std::chrono::milliseconds test_token_delay{0};
};

// The reminder appended to answers for non-physicians (a final content chunk when streaming).
extern const char* const kNotDiagnosisReminder;

// Debian's cpp-httplib 0.11 is a compiled library that listens with a backlog of 5
// (CPPHTTPLIB_LISTEN_BACKLOG). Twenty clients connecting at once overflow that accept queue: the
// kernel drops their handshakes and such connections fail after about a second with no request
// ever reaching the server (seen as "Read" errors under load in update_swap_stream_test). Linux
// lets listen() be called again on a listening socket to change its backlog, so this finds the
// listening TCP sockets of this process bound to `port` and calls listen(fd, backlog) on each.
// Returns how many it changed (0: none found, or listen() refused).
int raise_listen_backlog(int port, int backlog);

class HttpServer {
public:
    HttpServer(std::shared_ptr<const Model> model, ServerOptions opt);
    ~HttpServer();  // stop()
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // Binds host:port and returns the port (the chosen one for port 0). Throws hg::Error if taken.
    // The socket listens with opt.listen_backlog (see raise_listen_backlog).
    int bind();
    // Serves until stop() (binds first if needed).
    void run();
    // run() on a background thread; returns once the server accepts connections.
    void start();
    // Stops accepting, finishes running inference jobs, releases waiting ones, joins threads.
    void stop();
    int port() const;
    const Metrics& metrics() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hg::server
