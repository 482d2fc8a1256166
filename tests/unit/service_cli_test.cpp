// healthgpt keys add|list|revoke end to end through the binary: the key is printed once (stdout,
// alone), it authenticates, `list` shows its id but no secret, `revoke` disables it, bad input
// exits 1 with an error naming the field. Skips when the CLI was not built beside the tests.
#include <cstdio>
#include <sys/wait.h>

#include <regex>

#include "service_test_util.h"

using namespace svctest;

namespace {

struct CliRun {
    int rc = -1;
    std::string out;
};

fs::path cli() { return fs::path(HG_BINARY_DIR) / "bin" / "healthgpt"; }

// stdout only, or stdout+stderr with merge.
CliRun run(const std::string& args, bool merge = false) {
    CliRun r;
    const std::string cmd = "'" + cli().string() + "' " + args + (merge ? " 2>&1" : " 2>/dev/null");
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    const int status = ::pclose(p);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

}  // namespace

TEST(ServiceCli, KeysAddListRevoke) {
    if (!fs::exists(cli())) GTEST_SKIP() << "healthgpt not built at " << cli();
    const fs::path dir = fresh_dir("cli");
    const std::string dd = " --data-dir '" + dir.string() + "'";
    const CliRun add = run("keys add --role physician --name 'Dr Who'" + dd);
    ASSERT_EQ(add.rc, 0);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(add.out, m, std::regex("(hgk_([0-9a-f]{16})_([0-9a-f]{64}))\n"))) << add.out;
    const std::string key = m[1], key_id = m[2], secret = m[3];
    {
        Store store(dir);
        const Principal p = KeyService(store).authenticate(key);
        EXPECT_EQ(p.name, "Dr Who");
        EXPECT_EQ(p.role, Role::physician);
    }
    const CliRun list = run("keys list" + dd, true);
    ASSERT_EQ(list.rc, 0);
    EXPECT_NE(list.out.find(key_id), std::string::npos) << list.out;
    EXPECT_NE(list.out.find("Dr Who"), std::string::npos);
    EXPECT_NE(list.out.find("active"), std::string::npos);
    EXPECT_EQ(list.out.find(secret), std::string::npos) << "list printed the secret";

    EXPECT_EQ(run("keys revoke " + key_id + dd).rc, 0);
    EXPECT_NE(run("keys list" + dd).out.find("revoked"), std::string::npos);
    {
        Store store(dir);
        EXPECT_THROW(KeyService(store).authenticate(key), Unauthenticated);
    }
    const CliRun again = run("keys revoke " + key_id + dd, true);
    EXPECT_EQ(again.rc, 1);
    EXPECT_NE(again.out.find("no such active key"), std::string::npos) << again.out;
    const CliRun bad_role = run("keys add --role nurse --name x" + dd, true);
    EXPECT_NE(bad_role.rc, 0);
    const CliRun bad_name = run("keys add --role patient --name ''" + dd, true);
    EXPECT_EQ(bad_name.rc, 1);
    EXPECT_NE(bad_name.out.find("error: name"), std::string::npos) << bad_name.out;
}
