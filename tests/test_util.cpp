#include "test_util.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hgtest {

namespace fs = std::filesystem;

fs::path fixture(const std::string& rel) { return fs::path(HG_FIXTURES_DIR) / rel; }

fs::path shared_data() {
    if (const char* env = std::getenv("HEALTHGPT_SHARED_DATA"); env && *env) {
        fs::path p(env);
        return fs::exists(p) ? p : fs::path();
    }
    fs::path p = fs::path(HG_SOURCE_DIR).parent_path() / "shared" / "data";
    return fs::exists(p) ? p : fs::path();
}

namespace {
struct ScratchDir {
    fs::path path;
    ~ScratchDir() {
        std::error_code ec;
        if (!path.empty()) fs::remove_all(path, ec);
    }
};
ScratchDir g_scratch;
}  // namespace

fs::path scratch_dir() {
    if (g_scratch.path.empty()) {
        std::string tmpl = (fs::temp_directory_path() / "hgtest-XXXXXX").string();
        if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        g_scratch.path = tmpl;
    }
    return g_scratch.path;
}

std::vector<uint8_t> read_file(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + p.string());
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::vector<float> read_f32(const fs::path& p) {
    auto bytes = read_file(p);
    if (bytes.size() % 4) throw std::runtime_error(p.string() + ": size is not a multiple of 4");
    std::vector<float> v(bytes.size() / 4);
    std::memcpy(v.data(), bytes.data(), bytes.size());
    return v;
}

void write_file(const fs::path& p, std::span<const uint8_t> bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw std::runtime_error("cannot write " + p.string());
}

ErrorStats compare(std::span<const float> got, std::span<const float> ref) {
    ErrorStats e;
    e.n = std::min(got.size(), ref.size());
    double ref_max = 0;
    for (size_t i = 0; i < e.n; ++i)
        if (std::isfinite(ref[i])) ref_max = std::max(ref_max, (double)std::fabs(ref[i]));
    double num = 0, den = 0;
    for (size_t i = 0; i < e.n; ++i) {
        const double a = got[i], b = ref[i];
        if (!std::isfinite(a) || !std::isfinite(b)) {
            if (std::isfinite(a) != std::isfinite(b) || (std::isnan(a) != std::isnan(b))) e.n_nonfinite++;
            continue;
        }
        const double d = std::fabs(a - b);
        e.max_abs = std::max(e.max_abs, d);
        if (std::fabs(b) > 1e-3 * ref_max) e.max_rel = std::max(e.max_rel, d / std::max(std::fabs(b), 1e-6));
        num += d * d;
        den += b * b;
    }
    e.nmse = den > 0 ? num / den : num;
    return e;
}

std::string to_string(const ErrorStats& e) {
    std::ostringstream s;
    s << "n=" << e.n << " max_abs=" << e.max_abs << " max_rel=" << e.max_rel << " nmse=" << e.nmse;
    if (e.n_nonfinite) s << " nonfinite_mismatch=" << e.n_nonfinite;
    return s.str();
}

}  // namespace hgtest
