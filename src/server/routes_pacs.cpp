// PACS routes of the server (docs/PACS.md): endpoints come from the operator's settings file
// (--pacs-config), never from a request, so a caller can only name a configured PACS.
//
//   GET  /v1/pacs                                 the configured PACS names (physicians, admins)
//   GET  /v1/pacs/{name}/studies?PatientID=&AccessionNumber=&Modality=&StudyDate=&limit=&offset=
//   GET  /v1/pacs/{name}/studies/{study}/series   QIDO-RS through the server (physicians)
//   POST /v1/uploads/from-pacs {"pacs","study_uid","series_uid","consultation_id"}
//        the series retrieved by WADO-RS, every instance checked by the isolated decoder, then
//        each stored as an upload of the consultation (physicians it is shared with)
//   POST /v1/pacs/{name}/results {"consultation_id","answer_id","study_uid","series_uid",
//                                 "image_upload_ids": [generated uploads, optional]}
//        a stored answer sent back into the study as a Basic Text SR (STOW-RS) referencing the
//        series it is about, and each generated image (made by /v1/images/generations from an
//        upload of that series) as a Secondary Capture in a new series of the study, in the same
//        STOW-RS request (physicians the consultation is shared with)
//
// Every call is audited (pacs.search / pacs.retrieve, allowed or refused); the audit text and the
// log name the PACS by its name, never its credentials. A PACS failure is a 502 (504 for a
// timeout) that says what went wrong, without our paths or secrets.
#include <sys/stat.h>

#include <fstream>

#include "core/error.h"
#include "pacs/dicom_results.h"
#include "pacs/dicomweb.h"
#include "server/server_impl.h"
#include "service/audit.h"

namespace hg::server {

namespace {

// The settings file: {"pacs": [{"name", "url", "auth": {"type": "none|basic|bearer", "user",
// "password_file" | "password", "token_file" | "token"}, "timeout_s", "attempts", "max_instances"}]}.
// An inline secret is accepted only in a file no one else may read (mode 0600 or stricter).
std::map<std::string, pacs::PacsEndpoint> load_pacs_config(const fs::path& path) {
    std::ifstream f(path);
    HG_CHECK(f.good(), "--pacs-config %s: cannot read the file", path.string().c_str());
    json j = json::parse(f, nullptr, false);
    HG_CHECK(!j.is_discarded() && j.is_object() && j.contains("pacs") && j["pacs"].is_array(),
             "--pacs-config %s: expected a JSON object {\"pacs\": [ ... ]}", path.string().c_str());
    struct stat st {};
    const bool private_file = ::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) == 0;
    std::map<std::string, pacs::PacsEndpoint> out;
    for (const json& e : j["pacs"]) {
        auto str = [&](const json& o, const char* k) -> std::string {
            if (!o.contains(k)) return "";
            HG_CHECK(o[k].is_string(), "--pacs-config %s: '%s' must be a string", path.string().c_str(), k);
            return o[k].get<std::string>();
        };
        HG_CHECK(e.is_object(), "--pacs-config %s: each entry of 'pacs' must be an object", path.string().c_str());
        pacs::PacsEndpoint ep;
        ep.name = str(e, "name");
        ep.url = str(e, "url");
        HG_CHECK(!ep.name.empty() && ep.name.size() <= 64 &&
                     ep.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") ==
                         std::string::npos,
                 "--pacs-config %s: each PACS needs a 'name' of 1 to 64 letters, digits, '-', '_' or '.'", path.string().c_str());
        HG_CHECK(!out.count(ep.name), "--pacs-config %s: PACS '%s' is named twice", path.string().c_str(), ep.name.c_str());
        if (e.contains("timeout_s")) {
            HG_CHECK(e["timeout_s"].is_number() && e["timeout_s"].get<double>() > 0,
                     "--pacs-config %s: PACS '%s': timeout_s must be a positive number", path.string().c_str(), ep.name.c_str());
            ep.read_timeout_s = e["timeout_s"].get<double>();
        }
        if (e.contains("attempts")) {
            HG_CHECK(e["attempts"].is_number_integer(), "--pacs-config %s: PACS '%s': attempts must be an integer",
                     path.string().c_str(), ep.name.c_str());
            ep.attempts = e["attempts"].get<int>();
        }
        if (e.contains("max_instances")) {
            HG_CHECK(e["max_instances"].is_number_unsigned() && e["max_instances"].get<size_t>() > 0,
                     "--pacs-config %s: PACS '%s': max_instances must be a positive integer", path.string().c_str(),
                     ep.name.c_str());
            ep.max_instances = e["max_instances"].get<size_t>();
        }
        if (e.contains("auth")) {
            const json& a = e["auth"];
            HG_CHECK(a.is_object(), "--pacs-config %s: PACS '%s': 'auth' must be an object", path.string().c_str(), ep.name.c_str());
            const std::string type = str(a, "type");
            auto secret = [&](const char* inline_key, const char* file_key) {
                const std::string file = str(a, file_key), value = str(a, inline_key);
                HG_CHECK(file.empty() != value.empty(), "--pacs-config %s: PACS '%s': give '%s' or '%s' (one of them)",
                         path.string().c_str(), ep.name.c_str(), file_key, inline_key);
                if (!file.empty()) return pacs::read_secret_file(file);
                HG_CHECK(private_file, "--pacs-config %s: PACS '%s': an inline '%s' needs the file to be readable by its owner only "
                         "(chmod 600), or use '%s'", path.string().c_str(), ep.name.c_str(), inline_key, file_key);
                return value;
            };
            if (type == "basic") ep.auth = pacs::PacsAuth::basic(str(a, "user"), secret("password", "password_file"));
            else if (type == "bearer") ep.auth = pacs::PacsAuth::bearer(secret("token", "token_file"));
            else HG_CHECK(type == "none" || type.empty(), "--pacs-config %s: PACS '%s': auth type must be none, basic or bearer",
                          path.string().c_str(), ep.name.c_str());
            HG_CHECK(ep.auth.kind != pacs::PacsAuth::Kind::Basic || !ep.auth.user.empty(),
                     "--pacs-config %s: PACS '%s': basic auth needs a 'user'", path.string().c_str(), ep.name.c_str());
        }
        pacs::DicomWebClient check(ep);  // the URL is checked now, not at the first request
        out.emplace(ep.name, ep);
    }
    return out;
}

// A PACS failure as the HTTP status the caller gets.
[[noreturn]] void pacs_failure(const pacs::PacsError& e) {
    using K = pacs::PacsError::Kind;
    switch (e.kind) {
        case K::Timeout: throw ApiError(504, "pacs_timeout", e.what());
        case K::NotFound: throw ApiError(404, "not_found_error", e.what());
        case K::Unauthorized: throw ApiError(502, "pacs_error", std::string(e.what()) + " (check the server's PACS settings)");
        default: throw ApiError(502, "pacs_error", e.what());
    }
}

}  // namespace

const pacs::PacsEndpoint& HttpServer::Impl::pacs_for(const Principal& p, const std::string& name, const char* action) {
    auto it = pacs_endpoints.find(name);
    const bool allowed = p.role == Role::physician && it != pacs_endpoints.end();
    if (!allowed) {
        // refused like an unknown name, so callers do not learn which names exist
        store.transaction([&](service::Db& db) { service::audit_append(db, p, action, "pacs:" + name.substr(0, 64), false, "refused"); });
        throw service::AccessDenied(p.name + " (" + service::role_name(p.role) + ") may not use PACS '" + name.substr(0, 64) +
                                    "' (physicians only, configured PACS only)");
    }
    return it->second;
}

void HttpServer::Impl::routes_pacs() {
    if (!opt.pacs_config.empty()) pacs_endpoints = load_pacs_config(opt.pacs_config);

    http.Get("/v1/pacs", wrap(true, [this](const httplib::Request&, httplib::Response& res, const Principal* p) {
                 if (p->role == Role::patient) {
                     store.transaction([&](service::Db& db) { service::audit_append(db, *p, "pacs.list", "pacs", false, "refused"); });
                     throw service::AccessDenied(p->name + " (patient) may not list the PACS");
                 }
                 json data = json::array();
                 for (const auto& [name, ep] : pacs_endpoints) data.push_back({{"name", name}, {"object", "pacs"}});
                 res.set_content(dump({{"object", "list"}, {"data", data}}), "application/json");
             }));

    http.Get(R"(/v1/pacs/([^/]+)/studies)", wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                 const std::string name = req.matches[1].str();
                 const pacs::PacsEndpoint& ep = pacs_for(*p, name, "pacs.search");
                 pacs::QidoQuery q;
                 auto param = [&](const char* k) { return req.has_param(k) ? req.get_param_value(k) : std::string(); };
                 q.patient_id = param("PatientID");
                 q.accession_number = param("AccessionNumber");
                 q.modality = param("Modality");
                 q.study_date = param("StudyDate");
                 if (req.has_param("limit")) q.limit = int(parse_id(param("limit"), "limit"));
                 if (req.has_param("offset")) q.offset = param("offset") == "0" ? 0 : int(parse_id(param("offset"), "offset"));
                 std::vector<pacs::StudyInfo> studies;
                 try {
                     pacs::DicomWebClient c(ep);
                     studies = c.search_studies(q);
                 } catch (const pacs::PacsError& e) {
                     pacs_failure(e);
                 }
                 json data = json::array();
                 for (const auto& s : studies)
                     data.push_back({{"study_uid", s.study_uid}, {"patient_id", s.patient_id}, {"patient_name", s.patient_name},
                                     {"study_date", s.study_date}, {"accession_number", s.accession_number},
                                     {"description", s.description}, {"modalities", s.modalities},
                                     {"series", s.n_series}, {"instances", s.n_instances}});
                 store.transaction([&](service::Db& db) {
                     service::audit_append(db, *p, "pacs.search", "pacs:" + name, true, std::to_string(studies.size()) + " studies");
                 });
                 res.set_content(dump({{"object", "list"}, {"data", data}}), "application/json");
             }));

    http.Get(R"(/v1/pacs/([^/]+)/studies/([0-9.]+)/series)",
             wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                 const std::string name = req.matches[1].str(), study = req.matches[2].str();
                 const pacs::PacsEndpoint& ep = pacs_for(*p, name, "pacs.search");
                 std::vector<pacs::SeriesInfo> series;
                 try {
                     pacs::DicomWebClient c(ep);
                     series = c.search_series(study);
                 } catch (const pacs::PacsError& e) {
                     pacs_failure(e);
                 } catch (const hg::Error& e) {
                     bad_request(e.what());
                 }
                 json data = json::array();
                 for (const auto& s : series)
                     data.push_back({{"series_uid", s.series_uid}, {"modality", s.modality}, {"description", s.description},
                                     {"series_number", s.series_number}, {"instances", s.n_instances}});
                 store.transaction([&](service::Db& db) {
                     service::audit_append(db, *p, "pacs.search", "pacs:" + name, true, "study " + study);
                 });
                 res.set_content(dump({{"object", "list"}, {"data", data}}), "application/json");
             }));

    http.Post(R"(/v1/pacs/([^/]+)/results)", wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  const std::string name = req.matches[1].str();
                  const json body = json::parse(req.body, nullptr, false);
                  if (body.is_discarded() || !body.is_object()) bad_request("results: the body must be a JSON object");
                  for (const char* k : {"consultation_id", "answer_id"})
                      if (!body.contains(k) || !body[k].is_number_integer()) bad_request(std::string("results: '") + k + "' (an integer) is required");
                  for (const char* k : {"study_uid", "series_uid"})
                      if (!body.contains(k) || !body[k].is_string()) bad_request(std::string("results: '") + k + "' (a string) is required");
                  const int64_t cid = body["consultation_id"].get<int64_t>(), aid = body["answer_id"].get<int64_t>();
                  const std::string study = body["study_uid"].get<std::string>(), series = body["series_uid"].get<std::string>();
                  const pacs::PacsEndpoint& ep = pacs_for(*p, name, "pacs.store");
                  // The answer and its question, as stored (role-checked and audited by the service).
                  const service::ConsultationView v = consultations.read(*p, cid);
                  const service::Answer* answer = nullptr;
                  for (const auto& a : v.answers)
                      if (a.id == aid) answer = &a;
                  if (!answer) bad_request("results: consultation " + std::to_string(cid) + " has no answer " + std::to_string(aid));
                  std::string question;
                  for (const auto& m : v.messages)
                      if (m.id == answer->question_id) question = m.text;
                  // Generated images of this consultation, each made from an upload of the series
                  // the result is about; decoded now, so nothing is sent if one cannot be read.
                  std::vector<imaging::RgbImage> images;
                  std::vector<std::string> descriptions;
                  if (body.contains("image_upload_ids")) {
                      if (!body["image_upload_ids"].is_array() || body["image_upload_ids"].size() > 16)
                          bad_request("results: 'image_upload_ids' must be an array of at most 16 upload ids");
                      for (const json& idj : body["image_upload_ids"]) {
                          if (!idj.is_number_integer()) bad_request("results: 'image_upload_ids' must hold integers");
                          const int64_t uid = idj.get<int64_t>();
                          const service::Upload* up = nullptr;
                          for (const auto& u : v.uploads)
                              if (u.id == uid) up = &u;
                          if (!up) bad_request("results: upload " + std::to_string(uid) + " is not in consultation " + std::to_string(cid));
                          const json meta = json::parse(up->metadata_json, nullptr, false);
                          const json* gen = meta.is_object() && meta.contains("generated") ? &meta["generated"] : nullptr;
                          if (!gen || !gen->contains("from_upload_id") || !(*gen)["from_upload_id"].is_number_integer())
                              bad_request("results: upload " + std::to_string(uid) + " is not a generated image (/v1/images/generations)");
                          const int64_t src_id = (*gen)["from_upload_id"].get<int64_t>();
                          std::string src_series;
                          for (const auto& u : v.uploads)
                              if (u.id == src_id) {
                                  const json sm = json::parse(u.metadata_json, nullptr, false);
                                  if (sm.is_object() && sm.contains("series_uid") && sm["series_uid"].is_string())
                                      src_series = sm["series_uid"].get<std::string>();
                              }
                          if (src_series != series)
                              bad_request("results: upload " + std::to_string(uid) + " was not generated from an image of series " + series);
                          imaging::ImageOptions io;
                          io.limits = opt.image_limits;
                          const imaging::LoadResult lr = load_image_file(opt.data_dir / up->path, io, "upload " + std::to_string(uid));
                          if (lr.images.empty()) bad_request("results: upload " + std::to_string(uid) + " holds no image");
                          images.push_back(lr.images[0].image);
                          descriptions.push_back(gen->value("task", std::string("generated")) + " of upload " +
                                                 std::to_string(src_id) + " by HealthGPT (not a diagnosis)");
                      }
                  }
                  pacs::ResultContext ctx;
                  ctx.model_name = answer->model;
                  ctx.plugin_sha256 = answer->plugin_sha256;
                  for (const auto& [plugin, sha] : plugin_sha)
                      if (sha == answer->plugin_sha256) ctx.plugin_name = plugin;
                  pacs::SentResults sent;
                  try {
                      pacs::DicomWebClient c(ep);
                      ctx.study = c.study(study);
                      ctx.source_series_uid = series;
                      ctx.source_instances = c.all_instances(study, series);
                      if (ctx.source_instances.empty())
                          throw pacs::PacsError(pacs::PacsError::Kind::NotFound, 0, "PACS '" + name + "': series " + series + " has no instances");
                      sent = pacs::send_results(c, ctx, question, answer->text, images, descriptions);
                  } catch (const pacs::PacsError& e) {
                      std::fprintf(stderr, "serve: results: PACS '%s': %s\n", name.c_str(), e.what());
                      pacs_failure(e);
                  } catch (const hg::Error& e) {
                      bad_request(std::string("results: ") + e.what());
                  }
                  store.transaction([&](service::Db& db) {
                      service::audit_append(db, *p, "pacs.store", "pacs:" + name, true,
                                            "answer:" + std::to_string(aid) + " as SR " + sent.sr_sop_uid + " and " +
                                                std::to_string(sent.sc_sop_uids.size()) + " SC(s) in study " + study);
                  });
                  res.status = 201;
                  res.set_content(dump({{"object", "pacs.result"}, {"study_uid", study}, {"sr_series_uid", sent.sr_series_uid},
                                        {"sr_sop_instance_uid", sent.sr_sop_uid}, {"sc_series_uid", sent.sc_series_uid},
                                        {"sc_sop_instance_uids", sent.sc_sop_uids}}),
                                  "application/json");
              }));

    http.Post("/v1/uploads/from-pacs", wrap(true, [this](const httplib::Request& req, httplib::Response& res, const Principal* p) {
                  upload_from_pacs(req, res, *p);
              }));
}

void HttpServer::Impl::upload_from_pacs(const httplib::Request& req, httplib::Response& res, const Principal& p) {
    const json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) bad_request("from-pacs: the body must be a JSON object");
    auto field = [&](const char* k, bool required) -> std::string {
        if (!body.contains(k)) {
            if (required) bad_request(std::string("from-pacs: '") + k + "' is required");
            return "";
        }
        if (!body[k].is_string()) bad_request(std::string("from-pacs: '") + k + "' must be a string");
        return body[k].get<std::string>();
    };
    const std::string name = field("pacs", true), study = field("study_uid", true), series = field("series_uid", true);
    if (!body.contains("consultation_id") || !body["consultation_id"].is_number_integer())
        bad_request("from-pacs: 'consultation_id' (an integer: a consultation shared with you) is required");
    const int64_t cid = body["consultation_id"].get<int64_t>();
    const pacs::PacsEndpoint& ep = pacs_for(p, name, "pacs.retrieve");
    // The consultation must be one this physician may write to, before anything is fetched.
    consultations.read(p, cid);

    pacs::RetrievedSeries rs;
    try {
        pacs::PacsEndpoint e = ep;
        e.limits = opt.image_limits;
        pacs::DicomWebClient c(e);
        rs = c.retrieve_series(study, series);
    } catch (const pacs::PacsError& e) {
        std::fprintf(stderr, "serve: from-pacs: PACS '%s': %s\n", name.c_str(), e.what());
        pacs_failure(e);
    } catch (const hg::Error& e) {
        bad_request(std::string("from-pacs: ") + e.what());
    }
    // Every instance decoded already (in the child process); each becomes one upload.
    json data = json::array();
    for (size_t i = 0; i < rs.instances.size(); ++i) {
        const auto& in = rs.instances[i];
        json meta = {{"kind", "dicom"},
                     {"modality", in.info.modality},
                     {"width", in.info.columns},
                     {"height", in.info.rows},
                     {"rows", in.info.rows},
                     {"columns", in.info.columns},
                     {"frames", in.info.frames},
                     {"description", "PACS " + name + ", series " + series + ", instance " + std::to_string(i + 1) + " of " +
                                         std::to_string(rs.instances.size())},
                     {"pacs", name},
                     {"study_uid", study},
                     {"series_uid", series},
                     {"content_type", "application/dicom"}};
        char filename[40];
        std::snprintf(filename, sizeof filename, "pacs-%04zu.dcm", i + 1);
        const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(in.bytes.data()), in.bytes.size());
        data.push_back(upload_json(consultations.add_upload(p, cid, bytes, filename, dump(meta))));
    }
    store.transaction([&](service::Db& db) {
        service::audit_append(db, p, "pacs.retrieve", "pacs:" + name, true,
                              "study " + study + " series " + series + ": " + std::to_string(rs.instances.size()) +
                                  " instance(s) to consultation:" + std::to_string(cid));
    });
    res.status = 201;
    res.set_content(dump({{"object", "list"}, {"study_uid", study}, {"series_uid", series}, {"data", data}}), "application/json");
}

}  // namespace hg::server
