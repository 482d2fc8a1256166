// Sharing a consultation with a physician and reading physicians' feedback back (docs/SERVER.md):
//
//   GET  /v1/physicians                  every physician's id and name (any authenticated user:
//                                        a patient chooses from it; names only, nothing else)
//   POST /v1/consultations/{id}/shares   {"physician_id": N} or {"physician": "name"}: the owner
//                                        patient or an admin; answers the consultation
//   GET  /v1/answers/{id}/feedback       the ratings, corrections and comments filed on an answer:
//                                        physicians the consultation is shared with (patients do
//                                        not see corrections; admins read no consultation content)
//
// The role rules and the audit rows are the service's (service/consultations.h); this file parses
// and formats only.
#include <cstdint>
#include <string>

#include "server/server_impl.h"

namespace hg::server {

namespace {

// The share request: exactly one of physician_id (a positive integer) or physician (a name).
struct ShareRequest {
    std::optional<int64_t> physician_id;
    std::optional<std::string> physician_name;
};

ShareRequest parse_share_request(const std::string& body) {
    const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) bad_request("malformed JSON: expected an object");
    ShareRequest r;
    if (auto it = j.find("physician_id"); it != j.end()) {
        const bool too_big = it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX);
        if (!it->is_number_integer() || too_big || it->get<int64_t>() < 1)
            bad_request("physician_id: expected a positive integer (a user id from GET /v1/physicians)");
        r.physician_id = it->get<int64_t>();
    }
    if (auto it = j.find("physician"); it != j.end()) {
        if (!it->is_string() || it->get<std::string>().empty()) bad_request("physician: expected a physician's name");
        r.physician_name = it->get<std::string>();
    }
    if (r.physician_id.has_value() == r.physician_name.has_value())
        bad_request("give exactly one of physician_id or physician (a name from GET /v1/physicians)");
    return r;
}

json physician_json(const service::PhysicianEntry& e) { return {{"id", e.id}, {"object", "physician"}, {"name", e.name}}; }

}  // namespace

void HttpServer::Impl::routes_share() {
    http.Get("/v1/physicians", wrap(true, [this](const httplib::Request&, httplib::Response& res, const Principal* p) {
                 json data = json::array();
                 for (const auto& e : consultations.list_physicians(*p)) data.push_back(physician_json(e));
                 res.set_header("Cache-Control", "no-store");
                 res.set_content(dump({{"object", "list"}, {"data", data}}), "application/json");
             }));

    http.Post(R"(/v1/consultations/([^/]+)/shares)",
              wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  const int64_t id = parse_id(req.matches[1].str(), "consultation id");
                  const ShareRequest r = parse_share_request(req.body);
                  // Name or id, the lookup is the same list a patient is shown; the share itself checks
                  // the caller's right to share and that the target is a physician (and audits both).
                  const auto physicians = consultations.list_physicians(*p);
                  int64_t physician_id = r.physician_id.value_or(0);
                  if (r.physician_name) {
                      for (const auto& e : physicians)
                          if (e.name == *r.physician_name) physician_id = e.id;
                      if (physician_id == 0) bad_request("physician: no physician of that name (see GET /v1/physicians)");
                  }
                  const std::vector<int64_t> ids = consultations.share(*p, id, physician_id);
                  // The answer is who it is shared with (names from the same list), not its content:
                  // an admin may assign a consultation but reads none of it.
                  json shared = json::array();
                  for (int64_t pid : ids)
                      for (const auto& e : physicians)
                          if (e.id == pid) shared.push_back(physician_json(e));
                  res.set_content(dump({{"object", "consultation.shares"},
                                        {"consultation_id", id},
                                        {"physician_ids", ids},
                                        {"physicians", shared}}),
                                  "application/json");
              }));

    http.Get(R"(/v1/answers/([^/]+)/feedback)",
             wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                 const int64_t id = parse_id(req.matches[1].str(), "answer id");
                 json data = json::array();
                 for (const auto& f : consultations.list_feedback(*p, id))
                     data.push_back({{"id", f.id},
                                     {"object", "feedback"},
                                     {"answer_id", f.answer_id},
                                     {"physician_id", f.physician_id},
                                     {"rating", f.rating ? json(*f.rating) : json(nullptr)},
                                     {"correction", f.correction ? json(*f.correction) : json(nullptr)},
                                     {"comment", f.comment ? json(*f.comment) : json(nullptr)},
                                     {"created_at_ms", f.created_at_ms}});
                 res.set_header("Cache-Control", "no-store");
                 res.set_content(dump({{"object", "list"}, {"data", data}}), "application/json");
             }));
}

}  // namespace hg::server
