#include "serve_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace servetest {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

fs::path healthgpt_cli() { return fs::path(HG_BINARY_DIR) / "bin" / "healthgpt"; }

ServeProcess::ServeProcess(const fs::path& model, const fs::path& data_dir, const fs::path& log_file,
                           const std::vector<std::string>& extra_args)
    : log(log_file) {
    fs::remove(log);
    // The argument vector is made before fork(): the child only redirects stderr and execs.
    std::vector<std::string> args = {healthgpt_cli().string(), "serve", "-m", model.string(), "--data-dir",
                                     data_dir.string(), "--port", "0"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    args.push_back("-q");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log_path = log.string();
    pid = ::fork();
    if (pid == 0) {
        FILE* f = std::freopen(log_path.c_str(), "w", stderr);
        (void)f;
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    // the port from "serve: http://127.0.0.1:PORT ...", within 30 s
    const auto until = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < until && port < 0) {
        std::ifstream in(log);
        std::string line;
        while (std::getline(in, line))
            if (auto at = line.find("serve: http://127.0.0.1:"); at != std::string::npos) port = std::atoi(line.c_str() + at + 24);
        if (port < 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        int st = 0;
        if (port < 0 && ::waitpid(pid, &st, WNOHANG) == pid) {  // it exited: no point waiting
            pid = -1;
            break;
        }
    }
}

ServeProcess::~ServeProcess() { kill9(); }

void ServeProcess::kill9() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    pid = -1;
}

void ServeProcess::stop() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    int st = 0;
    ::waitpid(pid, &st, 0);
    pid = -1;
}

std::string ServeProcess::log_text() const {
    std::ifstream f(log);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace servetest
