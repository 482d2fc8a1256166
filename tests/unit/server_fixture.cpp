#include "server_fixture.h"

#include <fstream>
#include <map>

#include "runtime/demo_model.h"
#include "server/request.h"
#include "service_test_util.h"
#include "test_util.h"

namespace servertest {

using hg::service::Principal;

fs::path demo_model_dir(const std::string& folder) {
    const fs::path dir = hgtest::scratch_dir() / folder;
    if (!fs::exists(dir / "plugins" / "com.gguf") || !fs::exists(dir / "plugins" / "gen.gguf"))
        hg::write_demo_model(dir);
    return dir;
}

std::shared_ptr<const hg::Model> demo_model(const std::string& folder) {
    static std::map<std::string, std::shared_ptr<const hg::Model>> loaded;
    auto& m = loaded[folder];
    if (!m) m = hg::Model::load(demo_model_dir(folder));
    return m;
}

std::string read_bytes(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string b64(const std::string& s) {
    return hg::server::encode_base64(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

std::string png_data_url(const hg::Model& m) { return "data:image/png;base64," + b64(read_bytes(m.path() / "example.png")); }

json user_message(const std::string& text, const std::vector<std::string>& urls) {
    json content = json::array({{{"type", "text"}, {"text", text}}});
    for (const auto& u : urls) content.push_back({{"type", "image_url"}, {"image_url", {{"url", u}}}});
    return {{"role", "user"}, {"content", content}};
}

json error_of(const httplib::Result& r) {
    EXPECT_TRUE(r);
    if (!r) return {};
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    json j = json::parse(r->body, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("error") && j["error"]["message"].is_string() && j["error"]["type"].is_string())
        << r->body;
    return j.is_object() && j.contains("error") ? j["error"] : json();
}

ServerFixture::ServerFixture(const std::string& tag, std::shared_ptr<const hg::Model> model, hg::server::ServerOptions o,
                             int read_timeout)
    : read_timeout_s(read_timeout) {
    dir = svctest::fresh_dir(tag);
    store = std::make_unique<hg::service::Store>(dir);
    hg::service::KeyService keys(*store);
    const auto op = Principal::local_operator();
    patient = keys.add_key(op, "pat", "patient").key;
    other = keys.add_key(op, "pat2", "patient").key;
    physician = keys.add_key(op, "doc", "physician").key;
    admin = keys.add_key(op, "adm", "admin").key;
    patient_p = keys.authenticate(patient);
    physician_p = keys.authenticate(physician);
    o.data_dir = dir;
    o.port = 0;
    o.log_requests = false;
    server = std::make_unique<hg::server::HttpServer>(std::move(model), o);
    server->bind();
    server->start();
}

ServerFixture::~ServerFixture() { server->stop(); }

httplib::Client ServerFixture::client() const {
    httplib::Client c("127.0.0.1", server->port());
    c.set_read_timeout(read_timeout_s, 0);
    return c;
}

httplib::Result ServerFixture::post(const std::string& path, const json& body, const std::string& key) const {
    httplib::Headers h;
    if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
    return client().Post(path.c_str(), h, body.dump(), "application/json");
}

httplib::Result ServerFixture::post_raw(const std::string& path, const std::string& body, const std::string& type,
                                        const std::string& key) const {
    httplib::Headers h{{"Authorization", "Bearer " + key}};
    return client().Post(path.c_str(), h, body, type.c_str());
}

httplib::Result ServerFixture::get(const std::string& path, const std::string& key) const {
    httplib::Headers h;
    if (!key.empty()) h.emplace("Authorization", "Bearer " + key);
    return client().Get(path.c_str(), h);
}

int64_t ServerFixture::count(const char* table) const {
    return svctest::query_int(*store, (std::string("SELECT count(*) FROM ") + table).c_str());
}

size_t ServerFixture::stored_files() const {
    size_t n = 0;
    std::error_code ec;
    if (fs::exists(dir / "uploads"))
        for (auto& e : fs::recursive_directory_iterator(dir / "uploads", ec)) n += e.is_regular_file();
    if (fs::exists(dir / "tmp"))
        for (auto& e : fs::directory_iterator(dir / "tmp", ec)) n += e.is_regular_file();
    return n;
}

}  // namespace servertest
