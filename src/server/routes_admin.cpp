// The update loop over HTTP (docs/UPDATES.md, "Admin API"): physicians' review queue, admins'
// update jobs, plugin versions, promotion and rollback with an atomic swap of the default
// comprehension plugin. Every call goes through the update layer's role checks and audit.
//
// The swap: a chat request resolves its plugin (Plugin*) once, when it arrives, and runs and is
// recorded with that plugin and its hash to the end; a promotion loads the new file beside the
// loaded ones (PluginRegistry::add_version, never unloaded while the server runs) and then moves
// one atomic pointer, so requests in flight keep their version and new ones get the new one.
#include "server/server_impl.h"

#include <unistd.h>

namespace hg::server {

namespace {

json candidate_json(const update::Candidate& c) {
    json j = {{"id", c.id},
              {"feedback_id", c.feedback_id},
              {"answer_id", c.answer_id},
              {"image_sha256", c.image_sha256},
              {"question", c.question},
              {"answer", c.answer},
              {"status", c.status},
              {"author_id", c.author_id},
              {"note", c.note},
              {"created_at_ms", c.created_at_ms}};
    j["duplicate_of"] = c.duplicate_of ? json(*c.duplicate_of) : json(nullptr);
    j["reviewer_id"] = c.reviewer_id ? json(*c.reviewer_id) : json(nullptr);
    return j;
}

json version_json(const update::PluginVersion& v) {
    json j = {{"id", v.id},           {"name", v.name()},         {"plugin", v.plugin},
              {"path", v.path},       {"sha256", v.sha256},       {"status", v.status},
              {"gate_passed", v.gate_passed}, {"report", v.report}, {"dataset", v.dataset},
              {"train_config", v.train_config}, {"created_at_ms", v.created_at_ms}};
    j["parent_id"] = v.parent_id ? json(*v.parent_id) : json(nullptr);
    j["promoted_at_ms"] = v.promoted_at_ms ? json(*v.promoted_at_ms) : json(nullptr);
    return j;
}

json body_object(const httplib::Request& req) {
    if (req.body.empty()) return json::object();
    json j = json::parse(req.body, nullptr, false);
    if (!j.is_object()) bad_request("body: expected a JSON object");
    return j;
}

}  // namespace

std::string HttpServer::Impl::plugin_hash_of(const Plugin& p) const {
    if (!p.sha256.empty()) return p.sha256;
    const auto it = plugin_sha.find(p.name);
    return it != plugin_sha.end() ? it->second : std::string();
}

const Plugin& HttpServer::Impl::load_version(const update::PluginVersion& v) {
    const fs::path file = opt.data_dir / v.path;
    const std::string sha = update::file_sha256(file);
    HG_CHECK(sha == v.sha256, "%s: the file %s does not match its registered SHA-256", v.name().c_str(), v.path.c_str());
    return model->plugins().add_version(file, v.name(), v.sha256);
}

void HttpServer::Impl::routes_admin() {
    update::UpdateOptions uo = opt.update;
    uo.model_dir = model->path();
    if (uo.train_binary.empty()) {
        std::error_code ec;
        uo.train_binary = fs::read_symlink("/proc/self/exe", ec);
    }
    if (const Plugin* d = model->plugins().first(PluginTask::Comprehension); d && uo.plugin.empty()) uo.plugin = d->name;
    if (uo.plugin.empty()) uo.plugin = "com";
    updates = std::make_unique<update::UpdateManager>(store, uo);

    // The promoted version survives a restart (and a kill -9: the registry commits atomically and
    // files are written before their rows). A file that does not load or match leaves the folder's.
    if (model->plugins().find(uo.plugin)) {
        if (auto v = registry.promoted(uo.plugin)) {
            try {
                model->plugins().set_default(&load_version(*v));
            } catch (const std::exception& e) {
                std::fprintf(stderr, "serve: the promoted %s does not load (%s); serving the folder's %s\n",
                             v->name().c_str(), e.what(), uo.plugin.c_str());
            }
        }
    }

    // --- physicians' review queue ---
    http.Get("/v1/review/candidates", wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                 curation.sync(*p);
                 json out = json::array();
                 for (const auto& c : curation.list(*p, req.has_param("status") ? req.get_param_value("status") : ""))
                     out.push_back(candidate_json(c));
                 res.set_content(dump({{"object", "list"}, {"data", out}}), "application/json");
             }));
    http.Post(R"(/v1/review/candidates/([^/]+)/(approve|reject))",
              wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  const int64_t id = parse_id(req.matches[1].str(), "candidate id");
                  const json b = body_object(req);
                  const std::string note = b.contains("note") && b["note"].is_string() ? b["note"].get<std::string>() : "";
                  const update::Candidate c =
                      req.matches[2].str() == "approve" ? curation.approve(*p, id) : curation.reject(*p, id, note);
                  res.set_content(dump(candidate_json(c)), "application/json");
              }));

    // --- admins: update jobs ---
    http.Post("/v1/admin/updates", wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  const json b = body_object(req);
                  update::UpdateManager::Overrides over;
                  if (b.contains("max_steps")) {
                      if (!b["max_steps"].is_number_integer() || b["max_steps"].get<int64_t>() < 1 ||
                          b["max_steps"].get<int64_t>() > 100000)
                          bad_request("max_steps: an integer 1..100000");
                      over.max_steps = b["max_steps"].get<int64_t>();
                  }
                  if (b.contains("vqa_rad_limit")) {
                      if (!b["vqa_rad_limit"].is_number_integer() || b["vqa_rad_limit"].get<int64_t>() < 1 ||
                          b["vqa_rad_limit"].get<int64_t>() > 100000)
                          bad_request("vqa_rad_limit: an integer 1..100000");
                      over.vqa_rad_limit = size_t(b["vqa_rad_limit"].get<int64_t>());
                  }
                  if (b.contains("lr")) {
                      if (!b["lr"].is_number() || !(b["lr"].get<double>() > 0) || b["lr"].get<double>() > 1)
                          bad_request("lr: a number in (0, 1]");
                      over.lr = b["lr"].get<double>();
                  }
                  const int64_t id = updates->start(*p, over);
                  res.status = 202;
                  res.set_content(dump({{"id", id}, {"status", "queued"}}), "application/json");
              }));
    http.Get(R"(/v1/admin/updates/([^/]+))", wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                 const int64_t id = parse_id(req.matches[1].str(), "update id");
                 res.set_content(dump(updates->get(*p, id).to_json()), "application/json");
             }));
    http.Post(R"(/v1/admin/updates/([^/]+)/cancel)",
              wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  const int64_t id = parse_id(req.matches[1].str(), "update id");
                  updates->cancel(*p, id);
                  res.set_content(dump(updates->get(*p, id).to_json()), "application/json");
              }));

    // --- admins: plugin versions ---
    http.Get("/v1/admin/plugins", wrap(true, [this](const httplib::Request&, httplib::Response& res, const Principal* p) {
                 json out = json::array();
                 for (const auto& v : registry.list(*p)) out.push_back(version_json(v));
                 const Plugin* d = model->plugins().first(PluginTask::Comprehension);
                 res.set_content(dump({{"object", "list"},
                                       {"data", out},
                                       {"serving", d ? json(d->name) : json(nullptr)},
                                       {"serving_sha256", d ? json(plugin_hash_of(*d)) : json(nullptr)}}),
                                 "application/json");
             }));
    http.Post(R"(/v1/admin/plugins/([^/]+)/promote)",
              wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  const int64_t id = parse_id(req.matches[1].str(), "version");
                  std::lock_guard<std::mutex> l(swap_mu);
                  // Loaded (and its hash checked) before the registry commits, so a file that
                  // does not load is never recorded as serving.
                  const update::PluginVersion v = registry.get(*p, id);
                  const Plugin& loaded = load_version(v);
                  const update::PluginVersion done = registry.promote(*p, id);
                  model->plugins().set_default(&loaded);
                  res.set_content(dump(version_json(done)), "application/json");
              }));
    http.Post("/v1/admin/plugins/rollback", wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  const json b = body_object(req);
                  std::optional<int64_t> to;
                  if (b.contains("to")) {
                      if (!b["to"].is_number_integer() || b["to"].get<int64_t>() < 0) bad_request("to: a version id (0: the folder's file)");
                      to = b["to"].get<int64_t>();
                  }
                  std::lock_guard<std::mutex> l(swap_mu);
                  const std::string plugin = updates->defaults().plugin;
                  const auto now = registry.rollback(*p, plugin, to);
                  model->plugins().set_default(now ? &load_version(*now) : nullptr);
                  const Plugin* d = model->plugins().first(PluginTask::Comprehension);
                  res.set_content(dump({{"serving", d ? json(d->name) : json(nullptr)},
                                        {"serving_sha256", d ? json(plugin_hash_of(*d)) : json(nullptr)},
                                        {"version", now ? version_json(*now) : json(nullptr)}}),
                                  "application/json");
              }));
}

}  // namespace hg::server
