// The model folder: plan every requested part (all validation happens here), then write the files
// into a staging folder beside MODEL and move them into place only when every one was written.
#include <chrono>
#include <cstdio>
#include <set>
#include <unistd.h>

#include "convert/convert.h"
#include "convert/convert_common.h"
#include "core/error.h"
#include "model/clip_vision.h"

namespace fs = std::filesystem;

namespace hg {

namespace {

std::string human_bytes(uint64_t b) {
    char s[32];
    if (b >= (1ull << 30)) std::snprintf(s, sizeof s, "%.2f GiB", b / double(1ull << 30));
    else if (b >= (1ull << 20)) std::snprintf(s, sizeof s, "%.1f MiB", b / double(1ull << 20));
    else std::snprintf(s, sizeof s, "%.1f KiB", b / 1024.0);
    return s;
}

std::optional<int64_t> writer_int(const GGUFWriter& w, const char* key) {
    for (const auto& kv : w.metadata())
        if (kv.key == key) return kv.value.as_int();
    return std::nullopt;
}

}  // namespace

ConvertSummary convert_model(const ModelOptions& o, const ConvertLog& log) {
    const auto t0 = std::chrono::steady_clock::now();
    HG_CHECK(o.text || o.vision || !o.plugins.empty() || o.vqgan,
             "nothing to convert: give --base, --clip, --com/--gen or --vqgan");
    HG_CHECK(!o.out.empty(), "no output folder (-o MODEL_DIR)");
    const fs::path out = fs::absolute(o.out).lexically_normal();
    if (fs::exists(out) && !fs::is_directory(out)) fail("%s: exists and is not a folder", out.c_str());

    // --- plan (validate) every part before writing anything
    std::vector<ConvertPlan> plans;
    std::optional<BaseShape> base;
    int64_t vision_hidden = 0;
    if (o.text) {
        plans.push_back(plan_text(*o.text));
        base = BaseShape::from_hf_config(o.text->hf_dir);
    } else if (!o.plugins.empty()) {
        if (!fs::exists(out / "text.gguf"))
            fail("a plugin is checked against its base model: convert it together with --base, or into a folder that "
                 "already holds text.gguf (%s has none)", out.c_str());
        base = BaseShape::from_gguf(out / "text.gguf");
    }
    if (o.vision) {
        plans.push_back(plan_vision(*o.vision));
        vision_hidden = writer_int(plans.back().writer, clip_keys::kEmbeddingLength).value_or(0);
    } else if (fs::exists(out / "vision.gguf")) {
        auto f = GGUFFile::open(out / "vision.gguf");
        vision_hidden = f->get_int(clip_keys::kEmbeddingLength).value_or(0);
    }
    std::set<fs::path> files;
    for (const PluginOptions& p : o.plugins) plans.push_back(plan_plugin(p, *base, vision_hidden));
    if (o.vqgan) plans.push_back(plan_vqgan(*o.vqgan));
    for (const ConvertPlan& p : plans)
        if (!files.insert(p.file).second) fail("two parts would both be written to %s", (out / p.file).c_str());

    for (const ConvertPlan& p : plans) {
        log("== " + p.what + " -> " + (out / p.file).string());
        for (const auto& line : p.report) log("  " + line);
        std::string types;
        for (const auto& [t, n] : p.type_counts) types += (types.empty() ? "" : ", ") + std::to_string(n) + " " + t;
        log("  " + std::to_string(p.writer.n_tensors()) + " tensors (" + types + "), " + human_bytes(p.data_bytes) + " of tensor data");
    }

    // --- write into a staging folder beside MODEL, then move the files in
    const fs::path staging = out.parent_path() / ("." + out.filename().string() + ".partial-" + std::to_string(::getpid()));
    fs::remove_all(staging);
    ConvertSummary sum;
    try {
        fs::create_directories(staging / "plugins");
        for (const ConvertPlan& p : plans) {
            const auto t1 = std::chrono::steady_clock::now();
            p.write(staging / p.file);
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
            const uint64_t size = fs::file_size(staging / p.file);
            sum.bytes += size;
            char line[256];
            std::snprintf(line, sizeof line, "wrote %s: %s in %.1f s", p.file.c_str(), human_bytes(size).c_str(), s);
            log(line);
        }
        fs::create_directories(out);
        for (const ConvertPlan& p : plans) {
            const fs::path dst = out / p.file;
            fs::create_directories(dst.parent_path());
            const bool replaced = fs::exists(dst);
            fs::rename(staging / p.file, dst);
            if (replaced) log("replaced " + dst.string());
            sum.written.push_back(dst);
        }
        fs::remove_all(staging);
    } catch (...) {
        std::error_code ec;
        fs::remove_all(staging, ec);
        throw;
    }
    sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return sum;
}

}  // namespace hg
