// healthgpt dataset and plugins through the binary: export writes the approved records, a bad
// --since or an unknown version exits 1 with a message and writes nothing. Skips without the binary.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>

#include "service/consultations.h"
#include "service_test_util.h"
#include "update/curation.h"

namespace {

using namespace svctest;
fs::path cli() { return fs::path(HG_BINARY_DIR) / "bin" / "healthgpt"; }

int run(const std::string& args) {
    const int rc = std::system((cli().string() + " " + args + " >/dev/null 2>&1").c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(UpdateCli, DatasetExportAndPlugins) {
    if (!fs::exists(cli())) GTEST_SKIP() << "healthgpt not built at " << cli();
    const fs::path dir = fresh_dir("update-cli");
    {
        Store store(dir);
        ConsultationService svc(store);
        const Principal pat = make_user(store, "pat", "patient"), doc = make_user(store, "doc", "physician");
        const int64_t c = svc.create(pat, "c");
        svc.share(pat, c, doc.user_id);
        const std::vector<uint8_t> img = {1, 2, 3};
        svc.add_upload(pat, c, img, "x.png", "{}");
        const int64_t m = svc.add_message(pat, c, "Is it normal?");
        const int64_t a = svc.record_answer(pat, c, m, "no", "demo", std::string(64, 'a'));
        svc.add_feedback(doc, a, std::nullopt, "yes", std::nullopt);
    }
    const std::string d = "--data-dir " + dir.string();
    EXPECT_EQ(run("dataset list " + d), 0);
    EXPECT_EQ(run("dataset approve " + d + " 1"), 0);
    EXPECT_EQ(run("dataset export " + d + " -o " + (dir / "out" / "data.json").string()), 0);
    std::ifstream f(dir / "out" / "data.json");
    const nlohmann::json j = nlohmann::json::parse(f);
    ASSERT_EQ(j.size(), 1u);
    EXPECT_EQ(j[0]["conversations"][1]["value"], "yes");
    EXPECT_EQ(run("dataset export " + d + " --since yesterday -o " + (dir / "bad.json").string()), 1);
    EXPECT_FALSE(fs::exists(dir / "bad.json"));
    EXPECT_EQ(run("plugins list " + d), 0);
    EXPECT_EQ(run("plugins promote " + d + " 7"), 1);
    EXPECT_EQ(run("plugins rollback " + d), 1) << "nothing to roll back";
}

}  // namespace
