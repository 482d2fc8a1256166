// The server's internals, shared by the route files (server.cpp: plumbing and the chat routes;
// further route groups each in their own server/routes_*.cpp as HttpServer::Impl members). Not
// part of the library's API: include server/server.h.
#pragma once
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "imaging/load.h"
#include "pacs/dicomweb.h"
#include "server/metrics.h"
#include "server/queue.h"
#include "server/request.h"
#include "server/server.h"
#include "service/auth.h"
#include "service/consultations.h"
#include "service/store.h"
#include "update/curation.h"
#include "update/registry.h"
#include "update/update_job.h"

namespace hg::server {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using service::Principal;
using service::Role;

double seconds_since(Clock::time_point t);

// JSON text that never throws on odd bytes (model text is valid UTF-8 already; this is a guard).
std::string dump(const json& j);

json error_body(const std::string& message, const std::string& type, int status);

void send_error(httplib::Response& res, int status, const std::string& type, const std::string& message);

// The stored copy of a model answer: the store refuses control characters other than tab and
// newlines (validate.h), which a model's byte-fallback tokens can produce; they become U+FFFD.
// The response carries the text as generated (JSON escapes them).
std::string storable(std::string_view s);

// A request's bytes on disk for the imaging layer (which reads files and decodes DICOM in a child
// process), under DATA_DIR/tmp (0700), removed when the request is done.
class TempFile {
public:
    TempFile(const fs::path& dir, std::span<const uint8_t> bytes);
    ~TempFile();  // removes the file
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

// What the imaging layer makes of a file; its errors become 400 naming `what` (never our path).
imaging::LoadResult load_image_file(const fs::path& path, const imaging::ImageOptions& io, const std::string& what);

imaging::ImageOptions image_options(const std::string& window, std::optional<int> slice, const imaging::Limits& limits);

// What every inference job (chat, image generation) shares with the HTTP thread that waits for it.
struct JobExchange {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::string error;               // the job failed: why (500)
    std::atomic<bool> cancel{false}; // client gone or timed out: the job stops at its next token or index
    virtual ~JobExchange() = default;
    virtual bool has_result() const = 0;  // with mu held: the job made what was asked for
};

// The bytes of a chat job's exchange with its HTTP thread.
struct Exchange : JobExchange {
    std::deque<std::string> deltas;  // streamed text not yet written
    std::optional<hg::Answer> answer;
    std::atomic<bool> first_text{false};
    bool has_result() const override { return answer.has_value(); }
};

std::string finish_reason(StopReason r);

struct HttpServer::Impl {
    std::shared_ptr<const Model> model;
    ServerOptions opt;
    std::string model_name;
    service::Store store;
    service::KeyService keys;
    service::ConsultationService consultations;
    InferenceQueue queue;
    Metrics metrics;
    httplib::Server http;
    std::map<std::string, std::string> plugin_sha;  // plugin name -> SHA-256 of its file
    std::string base_sha;                           // of text.gguf: recorded when no plugin ran
    std::thread thread;
    int port = -1;
    std::atomic<bool> stopped{false};
    std::atomic<bool> listen_returned{false};  // start(): the accept loop ended (or never began)

    Impl(std::shared_ptr<const Model> m, ServerOptions o);

    // --- plumbing ---

    Principal authenticate(const httplib::Request& req);

    // Every route: errors to JSON statuses; nothing escapes into httplib.
    using Handler = std::function<void(const httplib::Request&, httplib::Response&, const Principal*)>;
    httplib::Server::Handler wrap(bool needs_auth, Handler h);

    static std::string route_of(const httplib::Request& req);

    // --- routes ---

    void routes();
    void routes_web();  // routes_web.cpp: the web page's static files and GET /v1/me

    static json consultation_json(const service::Consultation& c);
    static json upload_json(const service::Upload& u);

    // A consultation for a request without consultation_id. Patients get a new one, made only once
    // the request has succeeded (a refused, timed-out or 429'd request leaves nothing); for any other
    // role the service is asked now, which refuses and audits it.
    void check_can_create(const Principal& p);

    // --- POST /v1/uploads ---

    void upload(const httplib::Request& req, httplib::Response& res, const Principal& p);

    // --- GET /v1/uploads/{id}/preview.png ---

    void preview(const httplib::Request& req, httplib::Response& res, const Principal& p);

    // --- an inference job's life, shared by the chat and image generation routes ---

    // Queues the job, or answers 429 (Retry-After: 1) when `queue` is full.
    void submit_or_429(InferenceQueue::Job job, httplib::Response& res);
    // An unstreamed request: waits for its job until `arrived` + --timeout-s and returns with ex.mu
    // held by the lock, the job done and its result there. Otherwise throws: 504 when the time is up
    // (the job is cancelled: it stops at its next step, or is skipped if still queued) or the job was
    // cancelled without a result; hg::Error (500) "<failure>: <why>" when the job failed. `what`
    // names the result in the timeout message ("the answer", "the image").
    std::unique_lock<std::mutex> await_job(JobExchange& ex, Clock::time_point arrived, const char* what,
                                           const char* failure);

    // --- POST /v1/chat/completions ---

    void chat(const httplib::Request& req, httplib::Response& res, const Principal& p);

    // --- POST /v1/images/generations (routes_images.cpp) ---

    // --- the update loop: review queue, update jobs, plugin versions, hot swap (routes_admin.cpp) ---

    update::CurationService curation{store};
    update::VersionRegistry registry{store};
    std::unique_ptr<update::UpdateManager> updates;
    std::mutex swap_mu;  // one promotion or rollback at a time
    void routes_admin();
    // The SHA-256 a request records for the plugin that ran (a run-time version carries its own).
    std::string plugin_hash_of(const Plugin& p) const;
    const Plugin& load_version(const update::PluginVersion& v);

    void routes_images();
    void generate_images(const httplib::Request& req, httplib::Response& res, const Principal& p);

    // --- PACS: GET /v1/pacs..., POST /v1/uploads/from-pacs (routes_pacs.cpp) ---

    std::map<std::string, pacs::PacsEndpoint> pacs_endpoints;  // from opt.pacs_config, by name
    void routes_pacs();
    const pacs::PacsEndpoint& pacs_for(const Principal& p, const std::string& name, const char* action);
    void upload_from_pacs(const httplib::Request& req, httplib::Response& res, const Principal& p);

    // --- sharing and feedback readback: /v1/physicians, /v1/consultations/{id}/shares,
    //     /v1/answers/{id}/feedback (routes_share.cpp) ---

    void routes_share();
};

}  // namespace hg::server
