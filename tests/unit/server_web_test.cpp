// The web page's routes (src/server/routes_web.cpp) on an in-process server over the demo model:
// the embedded files are served byte for byte as in web/, with their content types, the
// Content-Security-Policy and nosniff headers; unknown names and traversal attempts are 404s that
// reveal nothing; GET /v1/me tells a key's owner and role and needs a key. The page itself is
// driven in a real browser by tests/web/web_page_test.py.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>

#include "runtime/demo_model.h"
#include "runtime/pipeline.h"
#include "server/server.h"
#include "service_test_util.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace hg::server;
using hg::service::Principal;

std::shared_ptr<const hg::Model> web_demo_model() {
    static std::shared_ptr<const hg::Model> m = [] {
        // per process: ctest may run several of these tests at once
        const fs::path dir = hgtest::scratch_dir() / ("web-demo-model-" + std::to_string(::getpid()));
        if (!fs::exists(dir / "plugins" / "com.gguf")) hg::write_demo_model(dir);
        return hg::Model::load(dir);
    }();
    return m;
}

std::string read_source(const std::string& name) {
    std::ifstream f(fs::path(HG_SOURCE_DIR) / "web" / name, std::ios::binary);
    EXPECT_TRUE(f.good()) << name;
    return std::string(std::istreambuf_iterator<char>(f), {});
}

struct WebFixture {
    fs::path dir;
    std::string patient, physician, admin;
    std::unique_ptr<HttpServer> server;
    WebFixture() {
        dir = svctest::fresh_dir("web");
        hg::service::Store store(dir);
        hg::service::KeyService keys(store);
        const auto op = Principal::local_operator();
        patient = keys.add_key(op, "pat-web", "patient").key;
        physician = keys.add_key(op, "doc-web", "physician").key;
        admin = keys.add_key(op, "adm-web", "admin").key;
        ServerOptions o;
        o.data_dir = dir;
        o.port = 0;
        o.log_requests = false;
        server = std::make_unique<HttpServer>(web_demo_model(), o);
        server->bind();
        server->start();
    }
    ~WebFixture() { server->stop(); }
    httplib::Result get(const std::string& path, const std::string& key = "") const {
        httplib::Client c("127.0.0.1", server->port());
        c.set_read_timeout(10, 0);
        httplib::Headers h;
        if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
        return c.Get(path.c_str(), h);
    }
    // The request line exactly as given (a client library might normalise "..").
    std::string raw_get(const std::string& target) const {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(uint16_t(server->port()));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        const std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        EXPECT_EQ(::send(fd, req.data(), req.size(), 0), ssize_t(req.size()));
        std::string out;
        char buf[4096];
        for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, size_t(n));
        ::close(fd);
        return out;
    }
};

void expect_page_headers(const httplib::Result& r, const std::string& type) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->get_header_value("Content-Type"), type);
    EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff");
    const std::string csp = r->get_header_value("Content-Security-Policy");
    EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos) << csp;
    EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
    EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos) << csp;
    EXPECT_EQ(csp.find("unsafe-eval"), std::string::npos) << csp;
    EXPECT_EQ(csp.find("http"), std::string::npos) << "no other origin: " << csp;
}

}  // namespace

TEST(ServerWeb, ServesTheEmbeddedFilesWithTheirTypesAndHeaders) {
    WebFixture f;
    const std::pair<const char*, const char*> files[] = {
        {"index.html", "text/html; charset=utf-8"},
        {"app.js", "text/javascript; charset=utf-8"},
        {"style.css", "text/css; charset=utf-8"},
        {"favicon.svg", "image/svg+xml"},
    };
    for (const auto& [name, type] : files) {
        SCOPED_TRACE(name);
        const auto r = f.get(std::string("/") + name);  // no key: the page comes before signing in
        expect_page_headers(r, type);
        if (r) {
            EXPECT_EQ(r->body, read_source(name)) << "the binary serves the web/ file as it is in the tree";
        }
    }
    const auto root = f.get("/");
    expect_page_headers(root, "text/html; charset=utf-8");
    ASSERT_TRUE(root);
    EXPECT_EQ(root->body, read_source("index.html"));
}

TEST(ServerWeb, ThePageHasNoInlineScriptAndNothingFromOutside) {
    WebFixture f;
    const auto r = f.get("/");
    ASSERT_TRUE(r);
    const std::string& html = r->body;
    // every <script> has a src of our own; no inline handlers (the CSP would block them anyway)
    const std::regex script("<script([^>]*)>"), handler("\\son[a-z]+\\s*=", std::regex::icase);
    int scripts = 0;
    for (std::sregex_iterator it(html.begin(), html.end(), script), end; it != end; ++it) {
        ++scripts;
        EXPECT_NE((*it)[1].str().find("src=\"/"), std::string::npos) << (*it)[0];
    }
    EXPECT_EQ(scripts, 1);
    EXPECT_FALSE(std::regex_search(html, handler));
    for (const char* name : {"index.html", "app.js", "style.css"}) {
        const std::string body = f.get(std::string("/") + name)->body;
        EXPECT_EQ(body.find("http://"), std::string::npos) << name;
        EXPECT_EQ(body.find("https://"), std::string::npos) << name;
        EXPECT_EQ(body.find("//cdn"), std::string::npos) << name;
    }
    // the key is never put into a URL: the page sends it only as a header
    const std::string js = f.get("/app.js")->body;
    EXPECT_NE(js.find("Authorization: \"Bearer \" + state.key"), std::string::npos);
    EXPECT_NE(js.find("sessionStorage"), std::string::npos);
    EXPECT_EQ(js.find("localStorage"), std::string::npos) << "the key must not outlive the tab";
}

TEST(ServerWeb, UnknownNamesAndTraversalAre404AndRevealNothing) {
    WebFixture f;
    for (const char* path : {"/nope.js", "/app.js.map", "/web/app.js", "/embed.cmake", "/APP.JS", "/app.js/",
                             "/index.htm", "/style.css%00.js"}) {
        SCOPED_TRACE(path);
        const auto r = f.get(path);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 404);
        EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
        EXPECT_EQ(json::parse(r->body)["error"]["type"], "not_found_error");
    }
    const std::string secret_bits[] = {"cmake_minimum_required", "root:x:0:0", "hg_layer("};
    for (const char* target : {"/../CMakeLists.txt", "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
                               "/..%2fCMakeLists.txt", "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "//etc/passwd",
                               "/app.js/../../CMakeLists.txt", "/./../CMakeLists.txt", "/web/../CMakeLists.txt",
                               "/....//....//etc/passwd", "/%252e%252e/etc/passwd"}) {
        SCOPED_TRACE(target);
        const std::string resp = f.raw_get(target);
        ASSERT_GE(resp.size(), 12u);
        const std::string status = resp.substr(9, 3);
        EXPECT_TRUE(status == "404" || status == "400") << resp.substr(0, 200);
        for (const auto& s : secret_bits) EXPECT_EQ(resp.find(s), std::string::npos) << s;
    }
    // the server still works after all that
    EXPECT_EQ(f.get("/health")->status, 200);
}

TEST(ServerWeb, MeTellsTheKeysOwnerAndRoleAndNeedsAKey) {
    WebFixture f;
    const auto none = f.get("/v1/me");
    ASSERT_TRUE(none);
    EXPECT_EQ(none->status, 401);
    EXPECT_EQ(none->get_header_value("WWW-Authenticate"), "Bearer");
    EXPECT_EQ(f.get("/v1/me", "hgk_0123456789abcdef_" + std::string(64, '0'))->status, 401);
    const std::tuple<std::string, const char*, const char*> who[] = {
        {f.patient, "pat-web", "patient"}, {f.physician, "doc-web", "physician"}, {f.admin, "adm-web", "admin"}};
    for (const auto& [key, name, role] : who) {
        const auto r = f.get("/v1/me", key);
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 200) << r->body;
        const json j = json::parse(r->body);
        EXPECT_EQ(j["name"], name);
        EXPECT_EQ(j["role"], role);
        EXPECT_GT(j["id"].get<int64_t>(), 0);
        // the public key id is the key's second part; the secret part is never sent back
        EXPECT_EQ(key.substr(4, 16), j["key_id"].get<std::string>());
        EXPECT_EQ(r->body.find(key.substr(21)), std::string::npos);
        EXPECT_EQ(r->get_header_value("Cache-Control"), "no-store");
    }
}
