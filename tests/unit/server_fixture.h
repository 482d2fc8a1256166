// The in-process HTTP server fixture of the server tests (server_http_test.cpp,
// server_images_test.cpp, server_prefix_test.cpp): an HttpServer on 127.0.0.1 (an ephemeral port)
// over a demo model and a fresh data directory, with users made through the real key path, talked
// to with httplib::Client. Every server is stopped when its fixture goes.
#pragma once
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "runtime/pipeline.h"
#include "server/server.h"
#include "service/auth.h"
#include "service/store.h"

namespace servertest {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The project's demo model (hg::write_demo_model: plugins "com" and "gen", a VQGAN, example.png),
// written once into hgtest::scratch_dir()/<folder> and loaded once per process. Each test file
// names its own folder; the folder's name is the model's name in answers.
fs::path demo_model_dir(const std::string& folder);
std::shared_ptr<const hg::Model> demo_model(const std::string& folder);

std::string read_bytes(const fs::path& p);
std::string b64(const std::string& s);
// The model's example.png as a data URL for a chat message.
std::string png_data_url(const hg::Model& m);
// A user message of the chat API: the text, then each URL as an image_url part.
json user_message(const std::string& text, const std::vector<std::string>& urls = {});

// The error body's parts; fails the test when it is not a JSON {"error": {"message", "type"}}.
json error_of(const httplib::Result& r);

// A server on a fresh data dir (svctest::fresh_dir(tag)), with a patient ("pat"), a second patient
// ("pat2"), a physician ("doc") and an admin ("adm"). The options' data_dir, port (0) and
// log_requests (off) are the fixture's.
struct ServerFixture {
    fs::path dir;
    std::unique_ptr<hg::service::Store> store;  // the test's own connection to the same database
    std::string patient, other, physician, admin;  // keys
    hg::service::Principal patient_p, physician_p;
    std::unique_ptr<hg::server::HttpServer> server;
    int read_timeout_s;

    ServerFixture(const std::string& tag, std::shared_ptr<const hg::Model> model, hg::server::ServerOptions o,
                  int read_timeout_s);
    ~ServerFixture();
    ServerFixture(const ServerFixture&) = delete;
    ServerFixture& operator=(const ServerFixture&) = delete;

    httplib::Client client() const;  // read timeout read_timeout_s
    // An empty key sends no Authorization header.
    httplib::Result post(const std::string& path, const json& body, const std::string& key) const;
    httplib::Result post_raw(const std::string& path, const std::string& body, const std::string& type,
                             const std::string& key) const;
    httplib::Result get(const std::string& path, const std::string& key) const;
    int64_t count(const char* table) const;  // rows of a table of the store
    size_t stored_files() const;             // files under DATA_DIR/uploads and DATA_DIR/tmp
};

}  // namespace servertest
