// The registry of plugin versions over a real store (promotion, rollback, roles, the gate's
// verdict and the file hash enforced), the split by patient and image (no held-out patient or
// image in training), and the run-time plugin versions of a loaded model (add, default swap).
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "core/sha256.h"
#include "runtime/demo_model.h"
#include "runtime/model.h"
#include "service_test_util.h"
#include "update/registry.h"
#include "update/update_job.h"

namespace {

using namespace svctest;
using namespace hg::update;

TEST(UpdateSplit, NoHeldOutPatientOrImageIsInTraining) {
    for (uint64_t seed = 1; seed <= 20; ++seed) {
        std::mt19937_64 rng(seed);
        std::vector<DatasetRecord> rs(60);
        for (size_t i = 0; i < rs.size(); ++i) {
            rs[i].candidate_id = (int64_t)i + 1;
            rs[i].patient_id = (int64_t)(rng() % 15);         // patients with several images
            rs[i].image_sha256 = "img" + std::to_string(rng() % 40);  // images seen by several patients
        }
        const Split s = split_by_patient_and_image(rs, 0.25, seed);
        ASSERT_EQ(s.train.size() + s.held_out.size(), rs.size());
        ASSERT_FALSE(s.train.empty());
        std::set<int64_t> train_patients;
        std::set<std::string> train_images;
        for (size_t i : s.train) train_patients.insert(rs[i].patient_id), train_images.insert(rs[i].image_sha256);
        for (size_t i : s.held_out) {
            EXPECT_FALSE(train_patients.count(rs[i].patient_id)) << "seed " << seed << ": held-out patient in training";
            EXPECT_FALSE(train_images.count(rs[i].image_sha256)) << "seed " << seed << ": held-out image in training";
        }
    }
    // Disjoint patients and images: about the fraction is held out, deterministically.
    std::vector<DatasetRecord> rs(40);
    for (size_t i = 0; i < rs.size(); ++i) rs[i].patient_id = (int64_t)i, rs[i].image_sha256 = std::to_string(i);
    const Split a = split_by_patient_and_image(rs, 0.25, 7), b = split_by_patient_and_image(rs, 0.25, 7);
    EXPECT_EQ(a.held_out.size(), 10u);
    EXPECT_EQ(a.held_out, b.held_out);
    // One group only (one patient): nothing can be held out.
    for (auto& r : rs) r.patient_id = 1;
    EXPECT_TRUE(split_by_patient_and_image(rs, 0.25, 7).held_out.empty());
}

void write(const fs::path& p, const std::string& s) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << s;
}

TEST(UpdateRegistry, PromoteRollbackAndRoles) {
    const fs::path dir = fresh_dir("registry");
    Store store(dir);
    VersionRegistry reg(store);
    const Principal admin = make_user(store, "adm", "admin");
    const Principal doc = make_user(store, "doc", "physician");
    const Principal op = Principal::local_operator();
    write(dir / "v/a.gguf", "file a");
    write(dir / "v/b.gguf", "file b");
    write(dir / "v/c.gguf", "file c");
    NewVersion n{.plugin = "com", .path = "v/a.gguf", .gate_passed = true};
    const PluginVersion a = reg.add(admin, n);
    n.path = "v/b.gguf";
    n.parent_id = a.id;
    const PluginVersion b = reg.add(admin, n);
    n.path = "v/c.gguf";
    n.gate_passed = false;
    n.report = {{"passed", false}, {"reasons", {"worse"}}};
    const PluginVersion c = reg.add(op, n);
    EXPECT_EQ(a.status, "candidate");
    EXPECT_EQ(c.status, "rejected");
    EXPECT_EQ(a.sha256, hg::to_hex(hg::sha256(std::string("file a"))));
    EXPECT_EQ(b.name(), "com@v" + std::to_string(b.id));

    // Only admins; each refusal audited.
    for (auto f : std::vector<std::function<void()>>{[&] { reg.list(doc); }, [&] { reg.promote(doc, a.id); },
                                                     [&] { reg.rollback(doc, "com", std::nullopt); },
                                                     [&] { reg.add(doc, n); }, [&] { reg.get(doc, a.id); }}) {
        const int64_t before = audit_rows(store);
        EXPECT_THROW(f(), AccessDenied);
        EXPECT_EQ(audit_rows(store), before + 1);
        EXPECT_FALSE(last_audit(store).allowed);
        EXPECT_EQ(last_audit(store).actor, "doc");
    }
    EXPECT_FALSE(reg.promoted("com"));
    EXPECT_THROW(reg.promote(admin, c.id), BadInput) << "the gate refused it";
    EXPECT_EQ(reg.promote(admin, a.id).status, "promoted");
    EXPECT_EQ(last_audit(store).action, "plugins.promote");
    EXPECT_EQ(reg.promote(admin, b.id).status, "promoted");
    EXPECT_EQ(reg.get(admin, a.id).status, "retired");
    EXPECT_EQ(reg.promoted("com")->id, b.id);
    // Rollback: to the one before, then to the folder's own file, then forward to b again.
    EXPECT_EQ(reg.rollback(admin, "com", std::nullopt)->id, a.id);
    EXPECT_EQ(reg.get(admin, b.id).status, "retired");
    EXPECT_FALSE(reg.rollback(admin, "com", 0).has_value());
    EXPECT_FALSE(reg.promoted("com"));
    EXPECT_THROW(reg.rollback(admin, "com", std::nullopt), BadInput) << "nothing to roll back";
    EXPECT_THROW(reg.rollback(admin, "com", c.id), BadInput) << "never promoted";
    EXPECT_EQ(reg.rollback(admin, "com", b.id)->id, b.id);
    // A file changed after registration is not promoted.
    write(dir / "v/a.gguf", "tampered");
    EXPECT_THROW(reg.promote(admin, a.id), BadInput);
    EXPECT_EQ(reg.promoted("com")->id, b.id);
    // The database itself refuses two promoted versions of one plugin.
    EXPECT_THROW(store.transaction([&](Db& db) {
                     Stmt s(db, "UPDATE plugin_versions SET status = 'promoted' WHERE id = ?");
                     s.bind(a.id);
                     s.run();
                 }),
                 hg::Error);
}

TEST(UpdateRegistry, ModelTakesPluginVersionsAtRunTime) {
    const fs::path dir = hgtest::scratch_dir() / "update-registry-demo";
    if (!fs::exists(dir / "plugins" / "com.gguf")) hg::write_demo_model(dir);
    std::shared_ptr<const hg::Model> model = hg::Model::load(dir);
    const hg::PluginRegistry& plugins = model->plugins();
    const hg::Plugin* original = plugins.default_comprehension();
    const size_t n_folder = plugins.all().size();
    ASSERT_NE(original, nullptr);
    // Readers keep resolving while a version is added and the default swapped.
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::thread reader([&] {
        while (!stop) {
            const hg::Plugin* p = plugins.default_comprehension();
            if (!p || !plugins.find(p->name)) ++bad;
        }
    });
    const fs::path file = dir / "plugins" / "com.gguf";
    const std::string sha = file_sha256(file);
    const hg::Plugin& v = plugins.add_version(file, "com@v1", sha);
    EXPECT_EQ(&plugins.add_version(file, "com@v1", sha), &v) << "adding again is the same plugin";
    EXPECT_THROW(plugins.add_version(file, "com@v1", std::string(64, '0')), hg::Error);
    EXPECT_THROW(plugins.add_version(file, "com", sha), hg::Error) << "a name of the folder's plugins";
    EXPECT_THROW(plugins.add_version(dir / "text.gguf", "bad", sha), hg::Error);
    EXPECT_EQ(plugins.find("com@v1"), &v);
    EXPECT_NE(v.key, original->key);
    plugins.set_default(&v);
    EXPECT_EQ(plugins.default_comprehension(), &v);
    plugins.set_default(nullptr);
    EXPECT_EQ(plugins.default_comprehension(), original);
    stop = true;
    reader.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_EQ(plugins.all().size(), n_folder) << "run-time versions are not listed with the folder's plugins";
}

// kill -9 during promotions: a child promotes two versions in turn as fast as it can and is
// killed at a random moment, five times; after each kill the database is intact and exactly one
// version is promoted (never none half-way, never two).
TEST(UpdateRegistry, KillDuringPromotionLeavesOnePromotedVersion) {
    const fs::path dir = fresh_dir("registry-kill");
    int64_t a = 0, b = 0;
    {
        Store store(dir);
        write(dir / "v/a.gguf", "a");
        write(dir / "v/b.gguf", "b");
        VersionRegistry reg(store);
        const Principal op = Principal::local_operator();
        a = reg.add(op, {.plugin = "com", .path = "v/a.gguf", .gate_passed = true}).id;
        b = reg.add(op, {.plugin = "com", .path = "v/b.gguf", .gate_passed = true}).id;
        reg.promote(op, a);
    }
    std::mt19937 rng(5);
    for (int round = 0; round < 5; ++round) {
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {  // the child never returns into gtest
            try {
                Store store(dir);
                VersionRegistry reg(store);
                const Principal op = Principal::local_operator();
                for (;;) reg.promote(op, reg.promoted("com")->id == a ? b : a);
            } catch (...) {
            }
            _exit(3);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(30 + rng() % 120));
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFSIGNALED(status)) << "the child stopped by itself";
        Store store(dir);
        EXPECT_EQ(query_text(store, "PRAGMA integrity_check"), "ok");
        EXPECT_EQ(query_int(store, "SELECT count(*) FROM plugin_versions WHERE status = 'promoted'"), 1) << "round " << round;
        EXPECT_EQ(query_int(store, "SELECT count(*) FROM plugin_versions WHERE status NOT IN ('promoted', 'retired')"), 0);
    }
    Store store(dir);
    EXPECT_GT(query_int(store, "SELECT count(*) FROM audit_log WHERE action = 'plugins.promote' AND allowed = 1"), 5)
        << "the child promoted between kills";
}

}  // namespace
