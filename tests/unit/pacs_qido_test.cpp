// QIDO-RS results (DICOM JSON, PS3.18 Annex F) as the DICOMweb client reads them, and the client's
// refusals that need no server (URLs with credentials, bad UIDs).
#include <gtest/gtest.h>

#include "core/error.h"
#include "pacs/dicomweb.h"

namespace {

using namespace hg::pacs;

// What Orthanc's DICOMweb plugin answers to GET /studies?PatientID=... (shape as in PS3.18 F.2).
const char* kStudies = R"([
  {"00080020": {"vr": "DA", "Value": ["20010101"]},
   "00080050": {"vr": "SH"},
   "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
   "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
   "00100020": {"vr": "LO", "Value": ["PAT-1"]},
   "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
   "00201206": {"vr": "IS", "Value": [2]},
   "00201208": {"vr": "IS", "Value": ["7"]}},
  {"0020000D": {"vr": "UI", "Value": ["1.2.3.5"]}}
])";

TEST(PacsQido, ParsesStudies) {
    const auto s = parse_studies(kStudies, "studies");
    ASSERT_EQ(s.size(), 2u);
    EXPECT_EQ(s[0].study_uid, "1.2.3.4");
    EXPECT_EQ(s[0].patient_id, "PAT-1");
    EXPECT_EQ(s[0].patient_name, "Doe^Jane");
    EXPECT_EQ(s[0].study_date, "20010101");
    EXPECT_EQ(s[0].accession_number, "");  // present without a value
    EXPECT_EQ(s[0].modalities, (std::vector<std::string>{"CT", "SR"}));
    EXPECT_EQ(s[0].n_series, 2);
    EXPECT_EQ(s[0].n_instances, 7);  // IS as a string is accepted too
    EXPECT_EQ(s[1].patient_id, "");
    EXPECT_EQ(s[1].n_series, -1);
    EXPECT_TRUE(parse_studies("", "empty (204)").empty());
    EXPECT_TRUE(parse_studies("[]", "none").empty());
}

TEST(PacsQido, ParsesSeriesAndInstances) {
    const auto se = parse_series(R"([{"0020000E": {"vr": "UI", "Value": ["9.8"]}, "00080060": {"vr": "CS", "Value": ["MR"]},
                                      "00200011": {"vr": "IS", "Value": [301]}}])", "series");
    ASSERT_EQ(se.size(), 1u);
    EXPECT_EQ(se[0].series_uid, "9.8");
    EXPECT_EQ(se[0].modality, "MR");
    EXPECT_EQ(se[0].series_number, 301);
    const auto in = parse_instances(R"([{"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                                         "00080018": {"vr": "UI", "Value": ["7.7.7"]},
                                         "00280008": {"vr": "IS", "Value": [12]}}])", "instances");
    ASSERT_EQ(in.size(), 1u);
    EXPECT_EQ(in[0].sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
    EXPECT_EQ(in[0].sop_instance_uid, "7.7.7");
    EXPECT_EQ(in[0].frames, 12);
    EXPECT_EQ(in[0].instance_number, -1);
}

TEST(PacsQido, MalformedJsonIsAClearError) {
    auto fails = [](const std::string& body, const std::string& fragment) {
        try {
            parse_studies(body, "PACS 'x': studies");
            ADD_FAILURE() << "no error for " << body;
        } catch (const hg::Error& e) {
            EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("PACS 'x': studies"), std::string::npos) << e.what();
        }
    };
    fails("{not json", "does not parse");
    fails(R"({"0020000D": {}})", "not an array");
    fails("[1]", "not a DICOM JSON object");
    fails(R"([{"00100020": {"vr": "LO", "Value": ["P"]}}])", "without StudyInstanceUID");
    fails(R"([{"0020000D": "1.2"}])", "not a DICOM JSON object");
    fails(R"([{"0020000D": {"vr": "UI", "Value": "1.2"}}])", "'Value' is not an array");
    fails(R"([{"0020000D": {"vr": "UI", "Value": [true]}}])", "unexpected JSON type");
    fails(R"([{"0020000D": {"vr": "UI", "Value": ["1.2"]}, "00201206": {"vr": "IS", "Value": ["two"]}}])", "not an integer");
    fails(R"([{"0020000D": {"vr": "UI", "Value": ["1.2"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": 5}]}}])",
          "'Alphabetic' is not a string");
}

TEST(PacsClient, RefusesCredentialsInTheUrlAndBadUids) {
    PacsEndpoint ep;
    ep.name = "h";
    ep.url = "http://alice:secret@127.0.0.1:1/dicom-web";
    try {
        DicomWebClient c(ep);
        ADD_FAILURE() << "accepted a URL with credentials";
    } catch (const hg::Error& e) {
        EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("credentials in the URL"), std::string::npos) << e.what();
    }
    ep.url = "ftp://127.0.0.1/x";
    EXPECT_THROW(DicomWebClient{ep}, hg::Error);
    ep.url = "http://127.0.0.1:1/dicom-web";
    DicomWebClient c(ep);
    EXPECT_THROW(c.search_series("1.2/../../admin"), hg::Error);  // never part of a URL path
    EXPECT_THROW(c.search_instances("1.2", ""), hg::Error);
}

TEST(PacsClient, ConnectionRefusedIsRetriedThenAClearErrorWithoutTheSecret) {
    PacsEndpoint ep;
    ep.name = "closed";
    ep.url = "http://127.0.0.1:1/dicom-web";  // port 1: nothing listens
    ep.auth = PacsAuth::basic("alice", "s3cret-pw");
    ep.attempts = 2;
    ep.backoff_s = 0.01;
    ep.connect_timeout_s = 1;
    DicomWebClient c(ep);
    try {
        QidoQuery q;
        q.patient_id = "P";
        c.search_studies(q);
        ADD_FAILURE() << "no error";
    } catch (const PacsError& e) {
        EXPECT_EQ(e.kind, PacsError::Kind::Connection);
        const std::string m = e.what();
        EXPECT_NE(m.find("cannot connect"), std::string::npos) << m;
        EXPECT_NE(m.find("after 2 attempts"), std::string::npos) << m;
        EXPECT_NE(m.find("PACS 'closed'"), std::string::npos) << m;
        EXPECT_EQ(m.find("s3cret"), std::string::npos) << m;
        EXPECT_EQ(m.find("alice"), std::string::npos) << m;
    }
}

}  // namespace
