// The DICOMweb client (dicomweb.h).
#include "pacs/dicomweb.h"

#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>

#include "core/error.h"

namespace hg::pacs {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

// A UID as DICOM defines it (PS3.5 §9.1): digits and dots, at most 64 characters. Checked before a
// UID becomes part of a URL path.
void check_uid(const std::string& uid, const char* what) {
    HG_CHECK(!uid.empty() && uid.size() <= 64, "%s: a DICOM UID of 1 to 64 characters is required", what);
    for (char c : uid) HG_CHECK((c >= '0' && c <= '9') || c == '.', "%s: '%s' is not a DICOM UID (digits and dots)", what,
                                uid.substr(0, 64).c_str());
}

std::string percent_encode(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '_' || c == '~') {
            out += char(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

std::string query_string(const QidoQuery& q, const std::vector<std::pair<std::string, std::string>>& more) {
    std::vector<std::pair<std::string, std::string>> kv;
    if (!q.patient_id.empty()) kv.push_back({"PatientID", q.patient_id});
    if (!q.accession_number.empty()) kv.push_back({"AccessionNumber", q.accession_number});
    if (!q.modality.empty()) kv.push_back({"Modality", q.modality});
    if (!q.study_date.empty()) kv.push_back({"StudyDate", q.study_date});
    HG_CHECK(q.limit >= 0 && q.offset >= 0, "QIDO: limit and offset must not be negative");
    if (q.limit > 0) kv.push_back({"limit", std::to_string(q.limit)});
    if (q.offset > 0) kv.push_back({"offset", std::to_string(q.offset)});
    for (const auto& m : more) kv.push_back(m);
    std::string out;
    for (const auto& [k, v] : kv) out += (out.empty() ? "?" : "&") + k + "=" + percent_encode(v);
    return out;
}

int json_int(const json& obj, const char* tag, const std::string& what) {
    const std::string s = dicom_json_string(obj, tag, what);
    if (s.empty()) return -1;
    try {
        size_t used = 0;
        const long v = std::stol(s, &used);
        if (used == s.size() && v >= -1 && v <= INT32_MAX) return int(v);
    } catch (const std::exception&) {
    }
    fail("%s: attribute %s is not an integer ('%s')", what.c_str(), tag, s.substr(0, 40).c_str());
}

json parse_array(const std::string& body, const std::string& what) {
    if (body.empty()) return json::array();  // 204 No Content: no matches
    json j = json::parse(body, nullptr, false);
    HG_CHECK(!j.is_discarded(), "%s: the PACS answered with JSON that does not parse (%zu bytes)", what.c_str(), body.size());
    HG_CHECK(j.is_array(), "%s: the PACS answered with JSON that is not an array of DICOM objects", what.c_str());
    for (const auto& o : j) HG_CHECK(o.is_object(), "%s: an element of the result array is not a DICOM JSON object", what.c_str());
    return j;
}

}  // namespace

std::string read_secret_file(const fs::path& path) {
    std::ifstream f(path, std::ios::binary);
    HG_CHECK(f.good(), "%s: cannot read the secret file", path.string().c_str());
    std::string line;
    std::getline(f, line);
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
    HG_CHECK(!line.empty(), "%s: the secret file is empty", path.string().c_str());
    return line;
}

std::string dicom_json_string(const json& object, const char* tag, const std::string& what) {
    auto it = object.find(tag);
    if (it == object.end()) return "";
    HG_CHECK(it->is_object(), "%s: attribute %s is not a DICOM JSON object", what.c_str(), tag);
    auto v = it->find("Value");
    if (v == it->end()) return "";  // present, empty
    HG_CHECK(v->is_array(), "%s: attribute %s: 'Value' is not an array", what.c_str(), tag);
    if (v->empty() || (*v)[0].is_null()) return "";
    const json& first = (*v)[0];
    if (first.is_string()) return first.get<std::string>();
    if (first.is_number_integer()) return std::to_string(first.get<int64_t>());
    if (first.is_number()) return json(first).dump();
    if (first.is_object()) {  // PN
        auto a = first.find("Alphabetic");
        if (a == first.end()) return "";
        HG_CHECK(a->is_string(), "%s: attribute %s: 'Alphabetic' is not a string", what.c_str(), tag);
        return a->get<std::string>();
    }
    fail("%s: attribute %s has a value of an unexpected JSON type", what.c_str(), tag);
}

std::vector<StudyInfo> parse_studies(const std::string& body, const std::string& what) {
    std::vector<StudyInfo> out;
    for (const auto& o : parse_array(body, what)) {
        StudyInfo s;
        s.study_uid = dicom_json_string(o, "0020000D", what);
        HG_CHECK(!s.study_uid.empty(), "%s: a study without StudyInstanceUID (0020,000D)", what.c_str());
        s.patient_id = dicom_json_string(o, "00100020", what);
        s.patient_name = dicom_json_string(o, "00100010", what);
        s.patient_birth_date = dicom_json_string(o, "00100030", what);
        s.patient_sex = dicom_json_string(o, "00100040", what);
        s.study_date = dicom_json_string(o, "00080020", what);
        s.study_time = dicom_json_string(o, "00080030", what);
        s.accession_number = dicom_json_string(o, "00080050", what);
        s.study_id = dicom_json_string(o, "00200010", what);
        s.description = dicom_json_string(o, "00081030", what);
        s.referring_physician = dicom_json_string(o, "00080090", what);
        if (auto m = o.find("00080061"); m != o.end() && m->is_object() && m->contains("Value") && (*m)["Value"].is_array())
            for (const auto& x : (*m)["Value"])
                if (x.is_string()) s.modalities.push_back(x.get<std::string>());
        s.n_series = json_int(o, "00201206", what);
        s.n_instances = json_int(o, "00201208", what);
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<SeriesInfo> parse_series(const std::string& body, const std::string& what) {
    std::vector<SeriesInfo> out;
    for (const auto& o : parse_array(body, what)) {
        SeriesInfo s;
        s.study_uid = dicom_json_string(o, "0020000D", what);
        s.series_uid = dicom_json_string(o, "0020000E", what);
        HG_CHECK(!s.series_uid.empty(), "%s: a series without SeriesInstanceUID (0020,000E)", what.c_str());
        s.modality = dicom_json_string(o, "00080060", what);
        s.description = dicom_json_string(o, "0008103E", what);
        s.series_number = json_int(o, "00200011", what);
        s.n_instances = json_int(o, "00201209", what);
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<InstanceInfo> parse_instances(const std::string& body, const std::string& what) {
    std::vector<InstanceInfo> out;
    for (const auto& o : parse_array(body, what)) {
        InstanceInfo s;
        s.study_uid = dicom_json_string(o, "0020000D", what);
        s.series_uid = dicom_json_string(o, "0020000E", what);
        s.sop_class_uid = dicom_json_string(o, "00080016", what);
        s.sop_instance_uid = dicom_json_string(o, "00080018", what);
        HG_CHECK(!s.sop_instance_uid.empty(), "%s: an instance without SOPInstanceUID (0008,0018)", what.c_str());
        s.instance_number = json_int(o, "00200013", what);
        s.frames = json_int(o, "00280008", what);
        out.push_back(std::move(s));
    }
    return out;
}

void RetrievedSeries::save(const fs::path& dir) const {
    HG_CHECK(!fs::exists(dir), "%s: already exists (a retrieved series is saved into a new folder)", dir.string().c_str());
    const fs::path tmp = dir.parent_path() / (dir.filename().string() + ".partial-" + std::to_string(getpid()));
    fs::remove_all(tmp);
    try {
        fs::create_directories(tmp);
        for (size_t i = 0; i < instances.size(); ++i) {
            char name[32];
            std::snprintf(name, sizeof name, "%04zu.dcm", i + 1);
            std::ofstream f(tmp / name, std::ios::binary);
            f.write(instances[i].bytes.data(), std::streamsize(instances[i].bytes.size()));
            f.close();
            HG_CHECK(f.good(), "%s: cannot write %s", tmp.string().c_str(), name);
        }
        fs::rename(tmp, dir);
    } catch (...) {
        std::error_code ec;
        fs::remove_all(tmp, ec);
        throw;
    }
}

SeriesOnDisk::SeriesOnDisk(const RetrievedSeries& series, const fs::path& parent) {
    const fs::path base = parent.empty() ? fs::temp_directory_path() : parent;
    fs::create_directories(base);
    std::string tmpl = (base / "healthgpt-pacs-XXXXXX").string();
    HG_CHECK(mkdtemp(tmpl.data()) != nullptr, "%s: cannot make a temporary folder", base.string().c_str());
    root_ = tmpl;
    try {
        series.save(root_ / "series");
    } catch (...) {
        std::error_code ec;
        fs::remove_all(root_, ec);
        throw;
    }
    path_ = series.instances.size() == 1 ? root_ / "series" / "0001.dcm" : root_ / "series";
}

SeriesOnDisk::~SeriesOnDisk() {
    std::error_code ec;
    fs::remove_all(root_, ec);
}

// ---------------------------------------------------------------------------------------------

struct DicomWebClient::Http {
    std::unique_ptr<httplib::Client> client;
};

DicomWebClient::DicomWebClient(PacsEndpoint endpoint) : ep_(std::move(endpoint)), http_(std::make_unique<Http>()) {
    const std::string& u = ep_.url;
    const size_t scheme_end = u.find("://");
    HG_CHECK(scheme_end != std::string::npos, "PACS '%s': the URL must start with http:// or https://", ep_.name.c_str());
    const std::string scheme = u.substr(0, scheme_end);
    HG_CHECK(scheme == "http" || scheme == "https", "PACS '%s': the URL must start with http:// or https://", ep_.name.c_str());
    const size_t path_start = u.find('/', scheme_end + 3);
    const std::string authority = u.substr(scheme_end + 3, path_start == std::string::npos ? std::string::npos : path_start - scheme_end - 3);
    // user:password@host would put the secret wherever the URL is printed.
    HG_CHECK(authority.find('@') == std::string::npos,
             "PACS '%s': credentials in the URL are refused; give them as basic or bearer authentication", ep_.name.c_str());
    HG_CHECK(!authority.empty(), "PACS '%s': the URL has no host", ep_.name.c_str());
    base_path_ = path_start == std::string::npos ? "" : u.substr(path_start);
    while (!base_path_.empty() && base_path_.back() == '/') base_path_.pop_back();
    HG_CHECK(base_path_.find_first_of("?#") == std::string::npos, "PACS '%s': the URL must not have a query or fragment",
             ep_.name.c_str());
    HG_CHECK(ep_.attempts >= 1 && ep_.attempts <= 10, "PACS '%s': attempts must be 1 to 10", ep_.name.c_str());
    HG_CHECK(ep_.connect_timeout_s > 0 && ep_.read_timeout_s > 0, "PACS '%s': timeouts must be positive", ep_.name.c_str());

    http_->client = std::make_unique<httplib::Client>(scheme + "://" + authority);
    auto usec = [](double s) { return std::chrono::microseconds(int64_t(s * 1e6)); };
    http_->client->set_connection_timeout(usec(ep_.connect_timeout_s));
    http_->client->set_read_timeout(usec(ep_.read_timeout_s));
    http_->client->set_write_timeout(usec(ep_.read_timeout_s));
    http_->client->set_keep_alive(true);
    if (ep_.auth.kind == PacsAuth::Kind::Basic) http_->client->set_basic_auth(ep_.auth.user, ep_.auth.password);
    if (ep_.auth.kind == PacsAuth::Kind::Bearer) http_->client->set_bearer_token_auth(ep_.auth.token);
}

DicomWebClient::~DicomWebClient() = default;

namespace {

// One request with retries. `send` performs it and returns httplib's result.
httplib::Result with_retries(const PacsEndpoint& ep, const std::string& label, const std::function<httplib::Result()>& send,
                             const std::function<void()>& reset) {
    double backoff = ep.backoff_s;
    for (int attempt = 1;; ++attempt) {
        reset();
        const auto t0 = Clock::now();
        httplib::Result r = send();
        const double took = std::chrono::duration<double>(Clock::now() - t0).count();
        const bool last = attempt >= ep.attempts;
        if (r) {
            const int st = r->status;
            if (st >= 500 && !last) {
                std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
                backoff *= 2;
                continue;
            }
            return r;
        }
        const httplib::Error e = r.error();
        if (e == httplib::Error::Canceled) return r;  // our own refusal (the size limit): no retry
        if (last) {
            const std::string tries = attempt > 1 ? " (after " + std::to_string(attempt) + " attempts)" : "";
            if (e == httplib::Error::Connection || e == httplib::Error::ConnectionTimeout)
                throw PacsError(PacsError::Kind::Connection, 0,
                                label + ": cannot connect to the PACS" + tries + " (" + httplib::to_string(e) + ")");
            if (took >= ep.read_timeout_s * 0.9)
                throw PacsError(PacsError::Kind::Timeout, 0,
                                label + ": the PACS did not answer within the read timeout of " +
                                    json(ep.read_timeout_s).dump() + " s" + tries);
            throw PacsError(PacsError::Kind::Connection, 0,
                            label + ": the connection to the PACS failed during the transfer" + tries + " (" +
                                httplib::to_string(e) + ")");
        }
        std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
        backoff *= 2;
    }
}

void check_status(int status, const std::string& label) {
    if (status >= 200 && status < 300) return;
    const char* reason = status == 400   ? "Bad Request"
                         : status == 401 ? "Unauthorized"
                         : status == 403 ? "Forbidden"
                         : status == 404 ? "Not Found"
                         : status == 409 ? "Conflict"
                         : status == 415 ? "Unsupported Media Type"
                         : status >= 500 ? "Server Error"
                                         : "";
    if (status == 401 || status == 403)
        throw PacsError(PacsError::Kind::Unauthorized, status,
                        label + ": HTTP " + std::to_string(status) + " " + reason + " (the PACS refused our credentials)");
    if (status == 404)
        throw PacsError(PacsError::Kind::NotFound, status, label + ": HTTP 404 Not Found (no such study, series or instance)");
    throw PacsError(PacsError::Kind::HttpStatus, status, label + ": HTTP " + std::to_string(status) + " " + reason);
}

}  // namespace

std::string DicomWebClient::get(const std::string& path_and_query, const std::string& accept, std::string* content_type) {
    // The label of every message: the endpoint's name and the path, never the credentials.
    const std::string path = base_path_ + path_and_query;
    const std::string label = "PACS '" + ep_.name + "': GET " + path;
    std::string body;
    bool too_big = false;
    httplib::Headers headers = {{"Accept", accept}};
    httplib::Result r = with_retries(
        ep_, label,
        [&] {
            return http_->client->Get(path, headers, [&](const char* data, size_t n) {
                if (body.size() + n > ep_.max_response_bytes) {
                    too_big = true;
                    return false;
                }
                body.append(data, n);
                return true;
            });
        },
        [&] {
            body.clear();
            too_big = false;
        });
    if (too_big)
        throw PacsError(PacsError::Kind::BadResponse, 0,
                        label + ": the response is larger than the limit of " + std::to_string(ep_.max_response_bytes) + " bytes");
    HG_CHECK(bool(r), "%s: the request was cancelled", label.c_str());
    check_status(r->status, label);
    if (content_type) *content_type = r->get_header_value("Content-Type");
    return body;
}

std::vector<StudyInfo> DicomWebClient::search_studies(const QidoQuery& query) {
    const std::string q = query_string(query, {{"includefield", "00100030,00100040,00080090,00200010,00081030,00080061,"
                                                                "00201206,00201208"}});
    return parse_studies(get("/studies" + q, "application/dicom+json", nullptr), "PACS '" + ep_.name + "': studies");
}

std::vector<SeriesInfo> DicomWebClient::search_series(const std::string& study_uid, const QidoQuery& query) {
    check_uid(study_uid, "study UID");
    const std::string q = query_string(query, {{"includefield", "0008103E,00201209"}});
    return parse_series(get("/studies/" + study_uid + "/series" + q, "application/dicom+json", nullptr),
                        "PACS '" + ep_.name + "': series of study " + study_uid);
}

std::vector<InstanceInfo> DicomWebClient::search_instances(const std::string& study_uid, const std::string& series_uid,
                                                           const QidoQuery& query) {
    check_uid(study_uid, "study UID");
    check_uid(series_uid, "series UID");
    const std::string q = query_string(query, {{"includefield", "00280008"}});
    return parse_instances(get("/studies/" + study_uid + "/series/" + series_uid + "/instances" + q,
                               "application/dicom+json", nullptr),
                           "PACS '" + ep_.name + "': instances of series " + series_uid);
}

std::vector<InstanceInfo> DicomWebClient::all_instances(const std::string& study_uid, const std::string& series_uid, int page) {
    HG_CHECK(page > 0, "page size must be positive");
    std::vector<InstanceInfo> all;
    while (true) {
        QidoQuery q;
        q.limit = page;
        q.offset = int(all.size());
        std::vector<InstanceInfo> got = search_instances(study_uid, series_uid, q);
        for (auto& i : got) all.push_back(std::move(i));
        HG_CHECK(all.size() <= ep_.max_instances, "PACS '%s': series %s has more than %zu instances (the limit)",
                 ep_.name.c_str(), series_uid.c_str(), ep_.max_instances);
        if (int(got.size()) < page) return all;
    }
}

StudyInfo DicomWebClient::study(const std::string& study_uid) {
    check_uid(study_uid, "study UID");
    const std::string q = "?StudyInstanceUID=" + study_uid +
                          "&includefield=00100030,00100040,00080090,00200010,00081030,00080061";
    std::vector<StudyInfo> s = parse_studies(get("/studies" + q, "application/dicom+json", nullptr),
                                             "PACS '" + ep_.name + "': study " + study_uid);
    if (s.empty()) throw PacsError(PacsError::Kind::NotFound, 0, "PACS '" + ep_.name + "': no study " + study_uid);
    HG_CHECK(s.size() == 1 && s[0].study_uid == study_uid, "PACS '%s': the search for study %s returned another study",
             ep_.name.c_str(), study_uid.c_str());
    return s[0];
}

namespace {

// A WADO-RS body's parts; every problem a BadResponse naming `what` once.
std::vector<MultipartPart> parse_wado_body(const std::string& body, const std::string& content_type, const std::string& what) {
    std::string boundary;
    try {
        boundary = multipart_boundary(content_type);
    } catch (const hg::Error& e) {
        throw PacsError(PacsError::Kind::BadResponse, 0, what + ": " + e.what());
    }
    try {
        return parse_multipart(body, boundary, what);
    } catch (const hg::Error& e) {
        throw PacsError(PacsError::Kind::BadResponse, 0, e.what());
    }
}

RetrievedInstance check_instance(std::string bytes, const std::string& name, const std::string& study_uid,
                                 const std::string& series_uid, const imaging::Limits& limits) {
    RetrievedInstance ri;
    ri.bytes = std::move(bytes);
    try {
        const std::span<const uint8_t> b(reinterpret_cast<const uint8_t*>(ri.bytes.data()), ri.bytes.size());
        ri.info = imaging::decode_dicom(b, name, limits).info;
    } catch (const hg::Error& e) {
        throw PacsError(PacsError::Kind::BadInstance, 0, std::string("the DICOM decoder refused it: ") + e.what());
    }
    if (ri.info.study_uid != study_uid || ri.info.series_uid != series_uid)
        throw PacsError(PacsError::Kind::BadInstance, 0,
                        name + ": belongs to study " + ri.info.study_uid + " series " + ri.info.series_uid +
                            ", not to the one asked for");
    return ri;
}

}  // namespace

RetrievedSeries DicomWebClient::retrieve_series(const std::string& study_uid, const std::string& series_uid) {
    RetrievedSeries out;
    out.study_uid = study_uid;
    out.series_uid = series_uid;
    out.references = all_instances(study_uid, series_uid);
    if (out.references.empty())
        throw PacsError(PacsError::Kind::NotFound, 0, "PACS '" + ep_.name + "': series " + series_uid + " of study " +
                                                          study_uid + " has no instances (or does not exist)");
    const std::string what = "PACS '" + ep_.name + "': series " + series_uid;
    std::string ct;
    const std::string body = get("/studies/" + study_uid + "/series/" + series_uid,
                                 "multipart/related; type=\"application/dicom\"", &ct);
    const std::vector<MultipartPart> parts = parse_wado_body(body, ct, what);
    if (parts.size() != out.references.size())
        throw PacsError(PacsError::Kind::BadResponse, 0,
                        what + ": WADO-RS sent " + std::to_string(parts.size()) + " instances, QIDO-RS lists " +
                            std::to_string(out.references.size()));
    for (size_t i = 0; i < parts.size(); ++i) {
        const std::string pct = parts[i].header("content-type");
        const std::string name = what + " instance " + std::to_string(i + 1);
        if (media_type(pct) != "application/dicom")
            throw PacsError(PacsError::Kind::BadResponse, 0, name + ": part of type '" + pct.substr(0, 80) + "', not application/dicom");
        out.instances.push_back(check_instance(std::string(parts[i].body), name, study_uid, series_uid, ep_.limits));
    }
    return out;
}

// "/studies/S/series/R/instances/I" after checking the three UIDs (they go into the URL).
static std::string instance_path(const std::string& study_uid, const std::string& series_uid, const std::string& sop_instance_uid) {
    check_uid(study_uid, "study UID");
    check_uid(series_uid, "series UID");
    check_uid(sop_instance_uid, "SOP instance UID");
    return "/studies/" + study_uid + "/series/" + series_uid + "/instances/" + sop_instance_uid;
}

RetrievedInstance DicomWebClient::retrieve_instance(const std::string& study_uid, const std::string& series_uid,
                                                    const std::string& sop_instance_uid) {
    const std::string instance = instance_path(study_uid, series_uid, sop_instance_uid);
    const std::string what = "PACS '" + ep_.name + "': instance " + sop_instance_uid;
    std::string ct;
    const std::string body = get(instance,
                                 "multipart/related; type=\"application/dicom\"", &ct);
    const std::vector<MultipartPart> parts = parse_wado_body(body, ct, what);
    if (parts.size() != 1)
        throw PacsError(PacsError::Kind::BadResponse, 0, what + ": " + std::to_string(parts.size()) + " parts, expected 1");
    if (media_type(parts[0].header("content-type")) != "application/dicom")
        throw PacsError(PacsError::Kind::BadResponse, 0, what + ": the part is not application/dicom");
    return check_instance(std::string(parts[0].body), what, study_uid, series_uid, ep_.limits);
}

std::vector<std::string> DicomWebClient::retrieve_frames(const std::string& study_uid, const std::string& series_uid,
                                                         const std::string& sop_instance_uid,
                                                         const std::vector<int>& frames, size_t frame_bytes) {
    const std::string instance = instance_path(study_uid, series_uid, sop_instance_uid);
    HG_CHECK(!frames.empty() && frames.size() <= 4096, "WADO-RS frames: between 1 and 4096 frames, not %zu", frames.size());
    std::string list;
    for (int f : frames) {
        HG_CHECK(f >= 1, "WADO-RS frames: frame numbers start at 1 (got %d)", f);
        list += (list.empty() ? "" : ",") + std::to_string(f);
    }
    const std::string what = "PACS '" + ep_.name + "': frames " + (list.size() > 40 ? list.substr(0, 40) + "..." : list) +
                             " of instance " + sop_instance_uid;
    std::string ct;
    const std::string body = get(instance + "/frames/" + list,
                                 "multipart/related; type=\"application/octet-stream\"", &ct);
    const std::vector<MultipartPart> parts = parse_wado_body(body, ct, what);
    if (parts.size() != frames.size())
        throw PacsError(PacsError::Kind::BadResponse, 0,
                        what + ": " + std::to_string(parts.size()) + " parts for " + std::to_string(frames.size()) + " frames");
    std::vector<std::string> out;
    for (size_t i = 0; i < parts.size(); ++i) {
        const std::string pct = parts[i].header("content-type");
        if (media_type(pct) != "application/octet-stream")
            throw PacsError(PacsError::Kind::BadResponse, 0,
                            what + ": frame " + std::to_string(frames[i]) + " is of type '" + pct.substr(0, 80) +
                                "', not application/octet-stream");
        if (frame_bytes > 0 && parts[i].body.size() != frame_bytes)
            throw PacsError(PacsError::Kind::BadResponse, 0,
                            what + ": frame " + std::to_string(frames[i]) + " has " + std::to_string(parts[i].body.size()) +
                                " bytes, expected " + std::to_string(frame_bytes));
        out.emplace_back(parts[i].body);
    }
    return out;
}

imaging::RasterImage DicomWebClient::retrieve_rendered(const std::string& study_uid, const std::string& series_uid,
                                                       const std::string& sop_instance_uid, int frame) {
    const std::string instance = instance_path(study_uid, series_uid, sop_instance_uid);
    HG_CHECK(frame >= 0, "WADO-RS rendered: frame numbers start at 1 (0: the instance), not %d", frame);
    const std::string what = "PACS '" + ep_.name + "': rendered " + (frame ? "frame " + std::to_string(frame) + " of " : "") +
                             "instance " + sop_instance_uid;
    std::string ct;
    const std::string body = get(instance + (frame ? "/frames/" + std::to_string(frame) : "") + "/rendered",
                                 "image/png", &ct);
    if (media_type(ct) != "image/png")
        throw PacsError(PacsError::Kind::BadResponse, 0, what + ": the response is '" + ct.substr(0, 80) + "', not image/png");
    try {
        const std::span<const uint8_t> b(reinterpret_cast<const uint8_t*>(body.data()), body.size());
        return imaging::decode_raster(b, what, /*apply_exif=*/false, ep_.limits);
    } catch (const hg::Error& e) {
        throw PacsError(PacsError::Kind::BadResponse, 0, std::string("the image decoder refused it: ") + e.what());
    }
}

void DicomWebClient::store(const std::vector<std::string>& files, const std::string& study_uid) {
    HG_CHECK(!files.empty(), "STOW-RS: nothing to store");
    if (!study_uid.empty()) check_uid(study_uid, "study UID");
    std::vector<OutgoingPart> parts;
    for (const auto& f : files) parts.push_back({"application/dicom", f});
    const std::string boundary = make_boundary(parts);
    const std::string body = build_multipart(parts, boundary);
    const std::string path = base_path_ + "/studies" + (study_uid.empty() ? "" : "/" + study_uid);
    const std::string label = "PACS '" + ep_.name + "': STOW-RS POST " + path;
    const std::string ct = "multipart/related; type=\"application/dicom\"; boundary=" + boundary;
    httplib::Headers headers = {{"Accept", "application/dicom+json"}};
    httplib::Result r = with_retries(
        ep_, label, [&] { return http_->client->Post(path, headers, body, ct); }, [] {});
    HG_CHECK(bool(r), "%s: the request was cancelled", label.c_str());
    check_status(r->status, label);
    // The response lists what was stored (0008,1199) and what failed (0008,1198).
    json j = json::parse(r->body, nullptr, false);
    if (j.is_array() && j.size() == 1) j = j[0];
    if (!j.is_object())
        throw PacsError(PacsError::Kind::BadResponse, r->status, label + ": the response is not a DICOM JSON object");
    auto count = [&](const char* tag) -> size_t {
        auto it = j.find(tag);
        if (it == j.end() || !it->is_object() || !it->contains("Value") || !(*it)["Value"].is_array()) return 0;
        return (*it)["Value"].size();
    };
    const size_t failed = count("00081198"), stored = count("00081199");
    if (failed > 0 || stored != files.size())
        throw PacsError(PacsError::Kind::BadResponse, r->status,
                        label + ": the PACS stored " + std::to_string(stored) + " of " + std::to_string(files.size()) +
                            " instances (" + std::to_string(failed) + " failed)");
}

}  // namespace hg::pacs
