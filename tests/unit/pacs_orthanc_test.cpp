// The DICOMweb client against a real Orthanc and against fault injectors. Started and loaded by
// tests/pacs/pacs_test.py, which sets the environment below; without HG_ORTHANC_URL every test skips.
//   HG_ORTHANC_URL            DICOMweb root of an Orthanc holding the test studies (no authentication)
//   HG_PACS_CT_PATIENT, HG_PACS_CT_STUDY, HG_PACS_CT_SERIES, HG_PACS_CT_COUNT, HG_PACS_CT_ROWS
//                             a CT series of COUNT slices of ROWS rows
//   HG_PACS_MR_STUDY, HG_PACS_MR_SERIES, HG_PACS_MR_FRAMES                   a multi-frame MR instance
//   HG_ORTHANC_AUTH_URL, HG_ORTHANC_AUTH_USER, HG_ORTHANC_AUTH_PASSWORD_FILE an Orthanc with basic auth
//   HG_PACS_SLOW_URL          a server that accepts and then stays silent
//   HG_PACS_PROXY             a proxy to the first Orthanc: /pass/, /cut/ (sends half the WADO body,
//                             then closes), /garble/ (a malformed multipart body), /notdicom/ (a part
//                             the DICOM decoder refuses) prefix the DICOMweb root
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <span>
#include <cstdlib>

#include "core/error.h"
#include "pacs/dicom_results.h"
#include "imaging/dicom.h"
#include "imaging/image.h"
#include "pacs/dicomweb.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace hg::pacs;

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

#define NEED_ENV(name)                                                                                  \
    const std::string name##_value = env(#name);                                                        \
    if (name##_value.empty()) GTEST_SKIP() << #name " not set: run through tests/pacs/pacs_test.py (ctest -L pacs)";

PacsEndpoint endpoint(const std::string& url) {
    PacsEndpoint ep;
    ep.name = "test-orthanc";
    ep.url = url;
    ep.connect_timeout_s = 2;
    ep.read_timeout_s = 10;
    ep.attempts = 2;
    ep.backoff_s = 0.05;
    return ep;
}

template <typename F>
PacsError expect_pacs_error(F f) {
    try {
        f();
    } catch (const PacsError& e) {
        return e;
    }
    ADD_FAILURE() << "no PacsError";
    return PacsError(PacsError::Kind::BadResponse, -1, "none");
}

TEST(PacsOrthanc, SearchByPatientModalityAndPaging) {
    NEED_ENV(HG_ORTHANC_URL);
    DicomWebClient c(endpoint(HG_ORTHANC_URL_value));
    QidoQuery q;
    q.patient_id = env("HG_PACS_CT_PATIENT");
    const auto studies = c.search_studies(q);
    ASSERT_EQ(studies.size(), 1u);
    EXPECT_EQ(studies[0].study_uid, env("HG_PACS_CT_STUDY"));
    EXPECT_EQ(studies[0].patient_id, q.patient_id);

    QidoQuery ct;
    ct.modality = "CT";
    const auto ct_series = c.search_series(env("HG_PACS_CT_STUDY"), ct);
    ASSERT_GE(ct_series.size(), 1u);
    EXPECT_EQ(ct_series[0].modality, "CT");
    QidoQuery mr;
    mr.modality = "MR";
    EXPECT_TRUE(c.search_series(env("HG_PACS_CT_STUDY"), mr).empty());

    QidoQuery nobody;
    nobody.patient_id = "no-such-patient-hg";
    EXPECT_TRUE(c.search_studies(nobody).empty());

    // paging: one instance per page gives every instance once
    const int count = std::atoi(env("HG_PACS_CT_COUNT").c_str());
    ASSERT_GE(count, 2);
    const auto all = c.all_instances(env("HG_PACS_CT_STUDY"), env("HG_PACS_CT_SERIES"), /*page=*/1);
    EXPECT_EQ(int(all.size()), count);
    std::set<std::string> uids;
    for (const auto& i : all) uids.insert(i.sop_instance_uid);
    EXPECT_EQ(int(uids.size()), count);
    QidoQuery page;
    page.limit = 1;
    page.offset = 1;
    const auto second = c.search_instances(env("HG_PACS_CT_STUDY"), env("HG_PACS_CT_SERIES"), page);
    ASSERT_EQ(second.size(), 1u);
    EXPECT_EQ(second[0].sop_instance_uid, all[1].sop_instance_uid);
}

TEST(PacsOrthanc, RetrieveCtSeriesAndMultiFrameMr) {
    NEED_ENV(HG_ORTHANC_URL);
    DicomWebClient c(endpoint(HG_ORTHANC_URL_value));
    const RetrievedSeries ct = c.retrieve_series(env("HG_PACS_CT_STUDY"), env("HG_PACS_CT_SERIES"));
    EXPECT_EQ(int(ct.instances.size()), std::atoi(env("HG_PACS_CT_COUNT").c_str()));
    EXPECT_EQ(ct.references.size(), ct.instances.size());
    for (const auto& i : ct.instances) {
        EXPECT_EQ(i.info.modality, "CT");
        EXPECT_EQ(i.info.series_uid, env("HG_PACS_CT_SERIES"));
        EXPECT_EQ(i.info.rows, std::atoi(env("HG_PACS_CT_ROWS").c_str()));
    }
    {
        SeriesOnDisk disk(ct, hgtest::scratch_dir() / "pacs-tmp");
        EXPECT_TRUE(fs::is_directory(disk.path()));
        EXPECT_EQ(size_t(std::distance(fs::directory_iterator(disk.path()), fs::directory_iterator())), ct.instances.size());
    }
    EXPECT_TRUE(fs::is_empty(hgtest::scratch_dir() / "pacs-tmp"));  // removed with the object

    const RetrievedSeries mr = c.retrieve_series(env("HG_PACS_MR_STUDY"), env("HG_PACS_MR_SERIES"));
    ASSERT_EQ(mr.instances.size(), 1u);
    EXPECT_EQ(mr.instances[0].info.modality, "MR");
    EXPECT_EQ(mr.instances[0].info.frames, std::atoi(env("HG_PACS_MR_FRAMES").c_str()));
    const RetrievedInstance one = c.retrieve_instance(mr.study_uid, mr.series_uid, mr.references[0].sop_instance_uid);
    EXPECT_EQ(one.bytes, mr.instances[0].bytes);

    const PacsError e = expect_pacs_error([&] { c.retrieve_series(env("HG_PACS_CT_STUDY"), "1.2.3.4.5.6.7.8.9"); });
    EXPECT_EQ(e.kind, PacsError::Kind::NotFound) << e.what();
}

// WADO-RS frames and rendered: the MR's frames are the stored pixel data of the instance, frame by
// frame, in the order asked; a rendered CT slice is a PNG of the slice's size.
TEST(PacsOrthanc, FramesAndRenderedOfAnInstance) {
    NEED_ENV(HG_ORTHANC_URL);
    DicomWebClient c(endpoint(HG_ORTHANC_URL_value));
    const RetrievedSeries mr = c.retrieve_series(env("HG_PACS_MR_STUDY"), env("HG_PACS_MR_SERIES"));
    ASSERT_EQ(mr.instances.size(), 1u);
    const hg::imaging::DicomInfo& info = mr.instances[0].info;
    const int n = std::atoi(env("HG_PACS_MR_FRAMES").c_str());
    ASSERT_GE(n, 2);
    const size_t frame_bytes = size_t(info.rows) * info.columns * info.samples_per_pixel * (info.bits_allocated / 8);
    const std::string& uid = mr.references[0].sop_instance_uid;
    const auto decoded = hg::imaging::decode_dicom(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(mr.instances[0].bytes.data()), mr.instances[0].bytes.size()),
        "mr");
    ASSERT_EQ(decoded.pixels.bytes.size(), frame_bytes * n) << "stored samples, frame after frame";
    std::vector<int> order;
    for (int f = n; f >= 1; --f) order.push_back(f);  // last to first: the parts must follow the request
    const std::vector<std::string> frames = c.retrieve_frames(mr.study_uid, mr.series_uid, uid, order, frame_bytes);
    ASSERT_EQ(frames.size(), order.size());
    ASSERT_NE(frames.front(), frames.back()) << "the MR's first and last frames must differ, or the order check proves nothing";
    for (size_t i = 0; i < frames.size(); ++i) {
        const std::string stored(reinterpret_cast<const char*>(decoded.pixels.bytes.data()) + (order[i] - 1) * frame_bytes,
                                 frame_bytes);
        EXPECT_EQ(frames[i], stored) << "frame " << order[i];
    }
    EXPECT_EQ(c.retrieve_frames(mr.study_uid, mr.series_uid, uid, {2})[0], frames[n - 2]);
    // the wrong size, a frame the instance lacks, frame 0: clear errors
    const PacsError size = expect_pacs_error([&] { c.retrieve_frames(mr.study_uid, mr.series_uid, uid, {1}, frame_bytes + 2); });
    EXPECT_EQ(size.kind, PacsError::Kind::BadResponse) << size.what();
    EXPECT_NE(std::string(size.what()).find("expected " + std::to_string(frame_bytes + 2)), std::string::npos) << size.what();
    EXPECT_THROW(c.retrieve_frames(mr.study_uid, mr.series_uid, uid, {n + 1}), PacsError);
    EXPECT_THROW(c.retrieve_frames(mr.study_uid, mr.series_uid, uid, {0}), hg::Error);
    EXPECT_THROW(c.retrieve_frames(mr.study_uid, mr.series_uid, uid, {}), hg::Error);

    const auto ct = c.all_instances(env("HG_PACS_CT_STUDY"), env("HG_PACS_CT_SERIES"));
    ASSERT_FALSE(ct.empty());
    const hg::imaging::RasterImage slice = c.retrieve_rendered(env("HG_PACS_CT_STUDY"), env("HG_PACS_CT_SERIES"), ct[0].sop_instance_uid);
    EXPECT_EQ(slice.format, "png");
    EXPECT_EQ(slice.height, std::atoi(env("HG_PACS_CT_ROWS").c_str()));
    EXPECT_GT(slice.width, 0);
    uint16_t lo = 65535, hi = 0;
    for (uint16_t v : slice.samples) lo = std::min(lo, v), hi = std::max(hi, v);
    EXPECT_LT(lo, hi) << "a rendered slice is not one flat colour";
    const hg::imaging::RasterImage frame2 = c.retrieve_rendered(mr.study_uid, mr.series_uid, uid, 2);
    EXPECT_EQ(frame2.height, info.rows);
    EXPECT_EQ(frame2.width, info.columns);
}

TEST(PacsOrthanc, SrAndSecondaryCaptureGoBackIntoTheStudy) {
    NEED_ENV(HG_ORTHANC_URL);
    DicomWebClient c(endpoint(HG_ORTHANC_URL_value));
    ResultContext ctx;
    ctx.study = c.study(env("HG_PACS_CT_STUDY"));
    EXPECT_EQ(ctx.study.patient_id, env("HG_PACS_CT_PATIENT"));
    ctx.source_series_uid = env("HG_PACS_CT_SERIES");
    ctx.source_instances = c.all_instances(ctx.study.study_uid, ctx.source_series_uid);
    ctx.model_name = "unit-test";
    hg::imaging::RgbImage img(8, 6);
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t(i);
    const SentResults sent = send_results(c, ctx, "Is this a CT?", "Yes.", {img}, {"test image"});

    // Orthanc now lists an SR series and an OT series in the study, with our instances.
    QidoQuery sr;
    sr.modality = "SR";
    bool found_sr = false, found_sc = false;
    for (const auto& s : c.search_series(ctx.study.study_uid)) {
        if (s.series_uid == sent.sr_series_uid) found_sr = s.modality == "SR";
        if (s.series_uid == sent.sc_series_uid) found_sc = s.modality == "OT";
    }
    EXPECT_TRUE(found_sr);
    EXPECT_TRUE(found_sc);
    const auto sr_instances = c.all_instances(ctx.study.study_uid, sent.sr_series_uid);
    ASSERT_EQ(sr_instances.size(), 1u);
    EXPECT_EQ(sr_instances[0].sop_instance_uid, sent.sr_sop_uid);
    EXPECT_EQ(sr_instances[0].sop_class_uid, "1.2.840.10008.5.1.4.1.1.88.11");
    // The SC comes back through WADO-RS and our decoder with the same pixels.
    const RetrievedSeries back = c.retrieve_series(ctx.study.study_uid, sent.sc_series_uid);
    ASSERT_EQ(back.instances.size(), 1u);
    hg::imaging::DicomImage d = hg::imaging::decode_dicom(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(back.instances[0].bytes.data()), back.instances[0].bytes.size()),
        "sc");
    EXPECT_EQ(d.color_frame(0).rgb, img.rgb);
}

TEST(PacsOrthanc, WrongPasswordIs401AndStoresNothing) {
    NEED_ENV(HG_ORTHANC_AUTH_URL);
    PacsEndpoint ep = endpoint(HG_ORTHANC_AUTH_URL_value);
    const std::string good = read_secret_file(env("HG_ORTHANC_AUTH_PASSWORD_FILE"));
    ep.auth = PacsAuth::basic(env("HG_ORTHANC_AUTH_USER"), good + "-wrong");
    DicomWebClient bad(ep);
    const PacsError e = expect_pacs_error([&] { bad.search_studies({}); });
    EXPECT_EQ(e.kind, PacsError::Kind::Unauthorized);
    EXPECT_EQ(e.http_status, 401);
    const std::string m = e.what();
    EXPECT_NE(m.find("HTTP 401"), std::string::npos) << m;
    EXPECT_EQ(m.find(good), std::string::npos) << m;  // neither password in the message
    ResultContext ctx;
    ctx.study.study_uid = new_uid();
    ctx.source_series_uid = new_uid();
    ctx.source_instances = {{ctx.study.study_uid, ctx.source_series_uid, "1.2.840.10008.5.1.4.1.1.7", new_uid(), 1, 1}};
    EXPECT_EQ(expect_pacs_error([&] { send_results(bad, ctx, "q", "a", {}, {}); }).kind, PacsError::Kind::Unauthorized);

    ep.auth = PacsAuth::basic(env("HG_ORTHANC_AUTH_USER"), good);
    DicomWebClient ok(ep);
    EXPECT_TRUE(ok.search_studies({}).empty());  // the authenticated Orthanc holds nothing: the refused STOW stored nothing
    ep.auth = {};
    DicomWebClient none(ep);
    EXPECT_EQ(expect_pacs_error([&] { none.search_studies({}); }).http_status, 401);
}

TEST(PacsOrthanc, SlowServerTimesOut) {
    NEED_ENV(HG_PACS_SLOW_URL);
    PacsEndpoint ep = endpoint(HG_PACS_SLOW_URL_value);
    ep.read_timeout_s = 0.5;
    ep.attempts = 2;
    DicomWebClient c(ep);
    const auto t0 = std::chrono::steady_clock::now();
    const PacsError e = expect_pacs_error([&] { c.search_studies({}); });
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(e.kind, PacsError::Kind::Timeout) << e.what();
    EXPECT_NE(std::string(e.what()).find("did not answer within the read timeout"), std::string::npos) << e.what();
    EXPECT_LT(took, 5.0);  // bounded: two attempts of 0.5 s and a back-off, not the server's sleep
}

TEST(PacsOrthanc, FaultsInTheTransferAreClearErrorsAndSaveNothing) {
    NEED_ENV(HG_PACS_PROXY);
    const std::string study = env("HG_PACS_CT_STUDY"), series = env("HG_PACS_CT_SERIES");
    {
        DicomWebClient pass(endpoint(HG_PACS_PROXY_value + "/pass/dicom-web"));
        EXPECT_EQ(int(pass.retrieve_series(study, series).instances.size()), std::atoi(env("HG_PACS_CT_COUNT").c_str()));
    }
    struct Case {
        const char* mode;
        PacsError::Kind kind;
        const char* fragment;
    };
    for (const Case& k : {Case{"cut", PacsError::Kind::Connection, "failed during the transfer"},
                          Case{"garble", PacsError::Kind::BadResponse, "not closed by a boundary"},
                          Case{"notdicom", PacsError::Kind::BadInstance, "the DICOM decoder refused"}}) {
        DicomWebClient c(endpoint(HG_PACS_PROXY_value + "/" + k.mode + "/dicom-web"));
        const PacsError e = expect_pacs_error([&] { c.retrieve_series(study, series); });
        EXPECT_EQ(e.kind, k.kind) << k.mode << ": " << e.what();
        EXPECT_NE(std::string(e.what()).find(k.fragment), std::string::npos) << k.mode << ": " << e.what();
    }
}

}  // namespace
