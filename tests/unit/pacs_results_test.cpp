// The DICOM objects sent back to a PACS (pacs/dicom_results.h): a Basic Text SR and a Secondary
// Capture, re-read with GDCM (the SR's content tree and references) and decoded by our own DICOM
// decoder (the SC's pixels).
#include <gtest/gtest.h>

#include <gdcmAttribute.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfItems.h>

#include <sstream>

#include "core/error.h"
#include "imaging/dicom.h"
#include "pacs/dicom_results.h"

namespace {

using namespace hg::pacs;

ResultContext context() {
    ResultContext c;
    c.study.study_uid = "1.2.826.0.1.3680043.2.1143.1";
    c.study.patient_id = "PAT-7";
    c.study.patient_name = "Doe^Jane";
    c.study.study_date = "20240102";
    c.study.accession_number = "ACC\\1";  // a backslash would split the value: it must not
    c.source_series_uid = "1.2.826.0.1.3680043.2.1143.2";
    c.source_instances = {{c.study.study_uid, c.source_series_uid, "1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.2.1143.3", 1, 1},
                          {c.study.study_uid, c.source_series_uid, "1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.2.1143.4", 2, 1}};
    c.model_name = "healthgpt-demo";
    c.plugin_name = "com";
    c.plugin_sha256 = std::string(64, 'a');
    return c;
}

gdcm::DataSet read(const std::string& bytes) {
    std::istringstream is(bytes);
    gdcm::Reader r;
    r.SetStream(is);
    EXPECT_TRUE(r.Read());
    return r.GetFile().GetDataSet();
}

std::string str(const gdcm::DataSet& ds, uint16_t g, uint16_t e) {
    if (!ds.FindDataElement(gdcm::Tag(g, e))) return "<absent>";
    const gdcm::ByteValue* bv = ds.GetDataElement(gdcm::Tag(g, e)).GetByteValue();
    if (!bv) return "";
    std::string s(bv->GetPointer(), bv->GetLength());
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
    return s;
}

gdcm::SmartPointer<gdcm::SequenceOfItems> seq(const gdcm::DataSet& ds, uint16_t g, uint16_t e) {
    EXPECT_TRUE(ds.FindDataElement(gdcm::Tag(g, e))) << std::hex << g << "," << e;
    return ds.GetDataElement(gdcm::Tag(g, e)).GetValueAsSQ();
}

TEST(PacsResults, BasicTextSrHasTheAnswerReferencesAndNotice) {
    const ResultContext c = context();
    const std::string sr_series = new_uid();
    const std::string bytes = make_text_sr(c, "Is there a fracture?", "No fracture is seen.\nLine two", sr_series, 901);
    ASSERT_GT(bytes.size(), 132u);
    EXPECT_EQ(bytes.substr(128, 4), "DICM");
    const gdcm::DataSet ds = read(bytes);
    EXPECT_EQ(str(ds, 0x0008, 0x0016), "1.2.840.10008.5.1.4.1.1.88.11");
    EXPECT_EQ(str(ds, 0x0008, 0x0060), "SR");
    EXPECT_EQ(str(ds, 0x0020, 0x000D), c.study.study_uid);
    EXPECT_EQ(str(ds, 0x0020, 0x000E), sr_series);
    EXPECT_NE(str(ds, 0x0008, 0x0018), str(ds, 0x0020, 0x000E));
    EXPECT_EQ(str(ds, 0x0010, 0x0020), "PAT-7");
    EXPECT_EQ(str(ds, 0x0010, 0x0010), "Doe^Jane");
    EXPECT_EQ(str(ds, 0x0008, 0x0050), "ACC/1");
    EXPECT_EQ(str(ds, 0x0040, 0xA040), "CONTAINER");
    EXPECT_EQ(str(ds, 0x0040, 0xA493), "UNVERIFIED");

    // content items: concept code value -> text
    std::map<std::string, std::string> items;
    auto content = seq(ds, 0x0040, 0xA730);
    for (size_t i = 1; i <= content->GetNumberOfItems(); ++i) {
        const gdcm::DataSet& it = content->GetItem(i).GetNestedDataSet();
        auto name = seq(it, 0x0040, 0xA043);
        const std::string code = str(name->GetItem(1).GetNestedDataSet(), 0x0008, 0x0100);
        EXPECT_EQ(str(it, 0x0040, 0xA010), "CONTAINS");
        items[code] = str(it, 0x0040, 0xA040) == "UIDREF" ? str(it, 0x0040, 0xA124) : str(it, 0x0040, 0xA160);
    }
    EXPECT_EQ(items["QUESTION"], "Is there a fracture?");
    EXPECT_EQ(items["ANSWER"], "No fracture is seen.\nLine two");
    EXPECT_EQ(items["MODEL"], "healthgpt-demo");
    EXPECT_EQ(items["PLUGIN"], "com");
    EXPECT_EQ(items["PLUGIN-SHA256"], c.plugin_sha256);
    EXPECT_EQ(items["NOTICE"], kNotDiagnosisStatement);
    EXPECT_NE(items["NOTICE"].find("Not a diagnosis"), std::string::npos);
    EXPECT_EQ(items["SOURCE-SERIES"], c.source_series_uid);

    // evidence: study > series > both source instances
    auto ev = seq(ds, 0x0040, 0xA375);
    ASSERT_EQ(ev->GetNumberOfItems(), 1u);
    const gdcm::DataSet& st = ev->GetItem(1).GetNestedDataSet();
    EXPECT_EQ(str(st, 0x0020, 0x000D), c.study.study_uid);
    auto se = seq(st, 0x0008, 0x1115);
    const gdcm::DataSet& s1 = se->GetItem(1).GetNestedDataSet();
    EXPECT_EQ(str(s1, 0x0020, 0x000E), c.source_series_uid);
    auto sops = seq(s1, 0x0008, 0x1199);
    ASSERT_EQ(sops->GetNumberOfItems(), 2u);
    EXPECT_EQ(str(sops->GetItem(2).GetNestedDataSet(), 0x0008, 0x1155), c.source_instances[1].sop_instance_uid);
    EXPECT_EQ(str(sops->GetItem(2).GetNestedDataSet(), 0x0008, 0x1150), c.source_instances[1].sop_class_uid);
}

TEST(PacsResults, SrRefusesAContextWithoutSources) {
    ResultContext c = context();
    c.source_instances.clear();
    EXPECT_THROW(make_text_sr(c, "q", "a", new_uid(), 1), hg::Error);
    c = context();
    c.study.study_uid.clear();
    EXPECT_THROW(make_text_sr(c, "q", "a", new_uid(), 1), hg::Error);
}

TEST(PacsResults, SecondaryCaptureDecodesToTheSamePixels) {
    hg::imaging::RgbImage img(5, 3);  // odd sizes: the pixel data is padded to even length
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t(i * 7);
    const std::string series = new_uid();
    const std::string bytes = make_secondary_capture(context(), img, "image given to the model", series, 902, 1);
    const std::span<const uint8_t> b(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    const hg::imaging::DicomImage d = hg::imaging::decode_dicom(b, "sc.dcm");
    EXPECT_EQ(d.info.sop_class_uid, "1.2.840.10008.5.1.4.1.1.7");
    EXPECT_EQ(d.info.study_uid, context().study.study_uid);
    EXPECT_EQ(d.info.series_uid, series);
    EXPECT_EQ(d.info.modality, "OT");
    ASSERT_EQ(d.info.rows, 3);
    ASSERT_EQ(d.info.columns, 5);
    const hg::imaging::RgbImage back = d.color_frame(0);
    EXPECT_EQ(back.rgb, img.rgb);
    EXPECT_THROW(make_secondary_capture(context(), hg::imaging::RgbImage(), "x", series, 1, 1), hg::Error);
}

TEST(PacsResults, UidsAreNewEachTime) {
    const std::string a = new_uid(), b = new_uid();
    EXPECT_NE(a, b);
    EXPECT_LE(a.size(), 64u);
}

}  // namespace
