// What HealthGPT sends back to a PACS, written with GDCM as DICOM Part 10 files (explicit VR little
// endian, UTF-8 text): a Basic Text SR with the question and the answer, and Secondary Capture
// images. Each goes in a new series of the source study (a series has one modality: the SR in an
// SR series, the images in an OT series), so a viewer shows them beside the images they are about.
//
// The SR (PS3.3 A.35.1, template-free Basic Text SR):
//   root CONTAINER "Diagnostic imaging report" (LOINC 18748-4), COMPLETE, UNVERIFIED
//     CONTAINS TEXT  Question / Answer / Model / Plugin / Plugin SHA-256 / Notice ("not a diagnosis")
//     CONTAINS UIDREF Source series
//   Current Requested Procedure Evidence Sequence: every source instance (study > series > SOP class
//   + instance UID), so that a viewer can resolve what the answer is about.
// The concept names other than the root are codes of our private scheme "99HGPT" (PS3.16 allows
// private schemes starting with 99): no standard code means "a question asked of an AI model".
#pragma once
#include <string>
#include <vector>

#include "imaging/image.h"
#include "pacs/dicomweb.h"

namespace hg::pacs {

// The statement every result carries.
extern const char* const kNotDiagnosisStatement;

struct ResultContext {
    StudyInfo study;                           // patient and study attributes are copied from it
    std::string source_series_uid;
    std::vector<InstanceInfo> source_instances;  // what the model was shown (SOP class + instance UIDs)
    std::string model_name, plugin_name, plugin_sha256;
    std::string software_version = "healthgpt.cpp";
};

// A new globally unique UID (gdcm::UIDGenerator).
std::string new_uid();

// A Basic Text SR as a Part 10 file (its new SOP instance UID in *sop_uid when given). Throws
// hg::Error when the context lacks the study or source UIDs.
std::string make_text_sr(const ResultContext& ctx, const std::string& question, const std::string& answer,
                         const std::string& series_uid, int series_number, std::string* sop_uid = nullptr);

// A Secondary Capture image (8-bit RGB) as a Part 10 file.
std::string make_secondary_capture(const ResultContext& ctx, const imaging::RgbImage& image, const std::string& description,
                                   const std::string& series_uid, int series_number, int instance_number,
                                   std::string* sop_uid = nullptr);

// What send_results stored.
struct SentResults {
    std::string sr_series_uid, sr_sop_uid, sc_series_uid;  // sc_series_uid empty when there were no images
    std::vector<std::string> sc_sop_uids;
};

// The SR and one Secondary Capture per image (descriptions[i] names image i), built first (nothing
// is sent if one cannot be made) and sent by STOW-RS in one request into the study.
SentResults send_results(DicomWebClient& pacs, const ResultContext& ctx, const std::string& question,
                         const std::string& answer, const std::vector<imaging::RgbImage>& images,
                         const std::vector<std::string>& descriptions);

}  // namespace hg::pacs
