// The converter fixtures (tests/reference/gen_convert.py -> tests/fixtures/convert/) and helpers to
// run `healthgpt convert` / `healthgpt quantize` as a user would. Shared by tests/parity/convert_test.cpp
// and tests/parsers/convert_hostile_test.cpp.
//
// To reuse a converted tiny model elsewhere (e.g. the whole-model tests): convtest::convert_m3(dir)
// writes text.gguf + vision.gguf + plugins/{com,gen}.gguf of the Phi-3-like fixtures into `dir`.
#pragma once
#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "test_util.h"

namespace convtest {

namespace fs = std::filesystem;

inline fs::path fix(const std::string& rel) { return hgtest::fixture("convert/" + rel); }
inline fs::path cli() { return fs::path(HG_BINARY_DIR) / "bin" / "healthgpt"; }

struct CliResult {
    int rc = -1;
    std::string out;  // stdout + stderr
};

// Runs `healthgpt <args>` (arguments are passed to the shell as written: quote paths with spaces).
inline CliResult run_cli(const std::string& args) {
    CliResult r;
    const std::string cmd = "'" + cli().string() + "' " + args + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int st = ::pclose(p);
    r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

inline std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// reference.json + reference.bin (named float32 arrays).
class Reference {
public:
    static const Reference& get() {
        static const Reference r;
        return r;
    }
    const nlohmann::json& json() const { return j_; }
    std::span<const float> array(const std::string& name) const {
        const auto& e = j_["arrays"].at(name);
        size_t n = 1;
        for (auto d : e["shape"]) n *= d.get<size_t>();
        return {data_.data() + e["offset"].get<size_t>() / 4, n};
    }
    std::vector<int64_t> shape(const std::string& name) const {
        return j_["arrays"].at(name)["shape"].get<std::vector<int64_t>>();
    }

private:
    Reference() {
        std::ifstream f(fix("reference.json"));
        j_ = nlohmann::json::parse(f);
        data_ = hgtest::read_f32(fix("reference.bin"));
    }
    nlohmann::json j_;
    std::vector<float> data_;
};

// A fresh scratch folder for one model.
inline fs::path scratch(const std::string& name) {
    const fs::path d = hgtest::scratch_dir() / name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

inline void copy_tree(const fs::path& from, const fs::path& to) {
    fs::create_directories(to);
    fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
}

// Files under `dir` (relative paths), for "nothing was left behind" checks.
inline std::vector<std::string> listing(const fs::path& dir) {
    std::vector<std::string> out;
    if (!fs::exists(dir)) return out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(fs::relative(e.path(), dir).string());
    std::sort(out.begin(), out.end());
    return out;
}

// The tiny HealthGPT-M3-like model (Phi-3 base, CLIP, COM and GEN plugins) converted with the CLI.
inline CliResult convert_m3(const fs::path& out, const std::string& extra = "") {
    return run_cli("convert --base " + q(fix("phi3")) + " --clip " + q(fix("clip")) + " --com " +
                   q(fix("phi3_plugins/com_hlora_weights.bin")) + " --gen " + q(fix("phi3_plugins/gen_hlora_weights.bin")) +
                   " --fusion " + q(fix("phi3_plugins/fusion_layer_weights.bin")) + " --com-alpha 16 --gen-alpha 32 -o " +
                   q(out) + " " + extra);
}

}  // namespace convtest
