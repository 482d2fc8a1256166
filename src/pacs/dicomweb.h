// A DICOMweb client (DICOM PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store, over
// cpp-httplib. For a hospital's PACS (Orthanc, dcm4chee, a vendor's DICOMweb gateway):
//
//   hg::pacs::PacsEndpoint ep;  ep.url = "http://127.0.0.1:8042/dicom-web";
//   ep.auth = hg::pacs::PacsAuth::basic("alice", read_secret_file("pacs.pw"));
//   hg::pacs::DicomWebClient pacs(ep);
//   auto studies = pacs.search_studies({.patient_id = "12345"});
//   auto series  = pacs.search_series(studies[0].study_uid, {.modality = "CT"});
//   hg::pacs::RetrievedSeries s = pacs.retrieve_series(studies[0].study_uid, series[0].series_uid);
//   s.save("work/series1");            // a folder of .dcm files for imaging::load_medical
//   pacs.store({sr_bytes, sc_bytes});  // STOW-RS
//
// Network behaviour: a connect timeout and a read timeout per request; a request that fails to
// connect or read, or gets a 5xx, is retried (attempts, exponential back-off); a 4xx is not. A
// response is read up to max_response_bytes. Credentials go in headers only: never in the URL
// (refused), in an error message or in a log line.
//
// What is downloaded is untrusted: every instance is decoded by the isolated DICOM decoder
// (imaging/isolated_decode.h, in a child process with limits) before anything is returned or saved,
// and must belong to the study and series asked for.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "imaging/dicom.h"
#include "imaging/image.h"
#include "pacs/multipart.h"

namespace hg::pacs {

struct PacsAuth {
    enum class Kind { None, Basic, Bearer };
    Kind kind = Kind::None;
    std::string user, password, token;
    static PacsAuth basic(std::string user, std::string password) { return {Kind::Basic, std::move(user), std::move(password), {}}; }
    static PacsAuth bearer(std::string token) { return {Kind::Bearer, {}, {}, std::move(token)}; }
};

struct PacsEndpoint {
    std::string name = "pacs";    // in messages and in the server's settings
    std::string url;              // DICOMweb root, e.g. http://pacs.example:8042/dicom-web (http or https)
    PacsAuth auth;
    double connect_timeout_s = 5;
    double read_timeout_s = 30;   // per read on the socket (a stalled server)
    int attempts = 3;             // tries of a request on connection errors and 5xx
    double backoff_s = 0.5;       // before the second try; doubled each time
    uint64_t max_response_bytes = uint64_t(2) << 30;
    size_t max_instances = 2000;  // per retrieved series
    imaging::Limits limits = imaging::default_limits();  // for decoding each instance
};

// The first line of a file holding a secret (a password or a token), without the line end.
// Refuses an empty one; the message names the file, never the content.
std::string read_secret_file(const std::filesystem::path& path);

// Search keys of QIDO-RS (PS3.18 §10.6); empty ones are not sent. limit/offset page (0: server default).
struct QidoQuery {
    std::string patient_id, accession_number, modality, study_date;  // study_date: YYYYMMDD or a range A-B
    int limit = 0, offset = 0;
};

struct StudyInfo {
    std::string study_uid, patient_id, patient_name, patient_birth_date, patient_sex, study_date, study_time,
        accession_number, study_id, description, referring_physician;
    std::vector<std::string> modalities;
    int n_series = -1, n_instances = -1;  // -1: the server did not say
};

struct SeriesInfo {
    std::string study_uid, series_uid, modality, description;
    int series_number = -1, n_instances = -1;
};

struct InstanceInfo {
    std::string study_uid, series_uid, sop_class_uid, sop_instance_uid;
    int instance_number = -1, frames = -1;
};

// DICOM JSON (PS3.18 Annex F) results of QIDO-RS. Throw hg::Error naming `what` when the JSON is not
// an array of objects or a value has the wrong shape; absent attributes stay empty / -1.
std::vector<StudyInfo> parse_studies(const std::string& body, const std::string& what);
std::vector<SeriesInfo> parse_series(const std::string& body, const std::string& what);
std::vector<InstanceInfo> parse_instances(const std::string& body, const std::string& what);
// One attribute's first value as text ("" when absent); PN gives its Alphabetic form.
std::string dicom_json_string(const nlohmann::json& object, const char* tag, const std::string& what);

struct RetrievedInstance {
    std::string bytes;         // the Part 10 file as sent
    imaging::DicomInfo info;   // what the isolated decoder read of it
};

struct RetrievedSeries {
    std::string study_uid, series_uid;
    std::vector<InstanceInfo> references;      // the series' instances as QIDO lists them (SOP class + instance UIDs)
    std::vector<RetrievedInstance> instances;  // as WADO-RS sent them; as many as references
    // Writes the instances as 0001.dcm, 0002.dcm ... into `dir`, which must not exist: they are written
    // into a sibling temporary folder that is renamed at the end, so `dir` is complete or absent.
    void save(const std::filesystem::path& dir) const;
};

// A retrieved series on disk for the imaging layer, removed when this object goes: a fresh folder
// under `parent` (the system's temporary folder by default). path() is what imaging::load_medical
// reads: the one file of a single-instance series (a multi-frame MR), else the folder.
class SeriesOnDisk {
public:
    SeriesOnDisk(const RetrievedSeries& series, const std::filesystem::path& parent = {});
    ~SeriesOnDisk();
    SeriesOnDisk(const SeriesOnDisk&) = delete;
    SeriesOnDisk& operator=(const SeriesOnDisk&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path root_, path_;
};

// Why a request failed, for the server to map to a status (the message says it for people).
struct PacsError : hg::Error {
    enum class Kind { Connection, Timeout, Unauthorized, NotFound, HttpStatus, BadResponse, BadInstance };
    PacsError(Kind k, int status, const std::string& what) : hg::Error(what), kind(k), http_status(status) {}
    Kind kind;
    int http_status;  // 0 when there was no response
};

class DicomWebClient {
public:
    explicit DicomWebClient(PacsEndpoint endpoint);
    ~DicomWebClient();
    DicomWebClient(const DicomWebClient&) = delete;
    DicomWebClient& operator=(const DicomWebClient&) = delete;

    const PacsEndpoint& endpoint() const { return ep_; }

    // QIDO-RS: one page (query.limit/offset) of studies, series of a study, instances of a series.
    std::vector<StudyInfo> search_studies(const QidoQuery& query);
    std::vector<SeriesInfo> search_series(const std::string& study_uid, const QidoQuery& query = {});
    std::vector<InstanceInfo> search_instances(const std::string& study_uid, const std::string& series_uid,
                                               const QidoQuery& query = {});
    // Every instance of a series, paging `page` at a time (up to max_instances).
    std::vector<InstanceInfo> all_instances(const std::string& study_uid, const std::string& series_uid, int page = 500);
    // The study's own record (QIDO by StudyInstanceUID), for the patient and study attributes of results.
    StudyInfo study(const std::string& study_uid);

    // WADO-RS: every instance of a series (one multipart request), each checked by the isolated
    // decoder and matched to the QIDO list of the series.
    RetrievedSeries retrieve_series(const std::string& study_uid, const std::string& series_uid);
    // WADO-RS: one instance's Part 10 bytes, checked the same way (and against the study and series).
    RetrievedInstance retrieve_instance(const std::string& study_uid, const std::string& series_uid,
                                        const std::string& sop_instance_uid);

    // WADO-RS frames (PS3.18 §10.4.1.1.2): the pixel data of the listed frames (1-based, at most
    // 4096) of one instance, uncompressed (Accept application/octet-stream: the PACS transcodes a
    // compressed instance), one string per frame in the order asked. With frame_bytes > 0 every frame
    // must be that long (rows × columns × samples × bits allocated / 8); a frame of another size, a
    // part count that differs from the frames asked, or a part of another type is a BadResponse.
    std::vector<std::string> retrieve_frames(const std::string& study_uid, const std::string& series_uid,
                                             const std::string& sop_instance_uid, const std::vector<int>& frames,
                                             size_t frame_bytes = 0);
    // WADO-RS rendered (PS3.18 §10.4.1.1.3): one instance, or one frame of it (frame >= 1; 0: the
    // instance), as the PACS renders it for display (its own windowing), in PNG. The bytes are
    // decoded here within the endpoint's image limits; what the decoder refuses is a BadResponse.
    imaging::RasterImage retrieve_rendered(const std::string& study_uid, const std::string& series_uid,
                                           const std::string& sop_instance_uid, int frame = 0);

    // STOW-RS: Part 10 files into one study (all in one request). Throws unless the server stored every one.
    void store(const std::vector<std::string>& files, const std::string& study_uid = "");

private:
    struct Http;
    std::string get(const std::string& path_and_query, const std::string& accept, std::string* content_type);
    std::string base_path_;
    PacsEndpoint ep_;
    std::unique_ptr<Http> http_;
};

}  // namespace hg::pacs
