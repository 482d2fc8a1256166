// `healthgpt serve` as a child process, for the tests that kill it with SIGKILL and start it again
// on the same data directory (server_crash_test.cpp, update_crash_test.cpp).
#pragma once
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace servetest {

// The healthgpt binary of this build (HG_BINARY_DIR/bin/healthgpt); tests skip when it is absent.
std::filesystem::path healthgpt_cli();

// Runs `healthgpt serve -m MODEL --data-dir DATA --port 0 EXTRA... -q` with its stderr in
// `log_file`, and reads the port from the "serve: http://127.0.0.1:PORT" line of the log, waiting at
// most 30 s. `port` stays -1 when the child exits first (then `pid` is -1 too) or the time runs out.
struct ServeProcess {
    pid_t pid = -1;
    int port = -1;
    std::filesystem::path log;

    ServeProcess(const std::filesystem::path& model, const std::filesystem::path& data_dir,
                 const std::filesystem::path& log_file, const std::vector<std::string>& extra_args = {});
    ~ServeProcess();  // kill9()
    ServeProcess(const ServeProcess&) = delete;
    ServeProcess& operator=(const ServeProcess&) = delete;

    void kill9();  // SIGKILL, then reaps the child
    void stop();   // SIGTERM (a clean stop), then reaps the child
    std::string log_text() const;
};

}  // namespace servetest
