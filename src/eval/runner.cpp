// The resumable benchmark runner. See runner.h.
#include "eval/runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "core/error.h"
#include "eval/metrics.h"
#include "core/sha256.h"
#include "imaging/load.h"
#include "imaging/quality_metrics.h"
#include "imaging/resample.h"
#include "runtime/image_generation.h"
#include "runtime/pipeline.h"

namespace hg::eval {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- items as JSON ----------------------------------------------------------------------------

json item_to_json(const ItemResult& r) {
    json j;
    j["type"] = "item";
    j["id"] = r.id;
    j["index"] = r.source_index;
    j["kind"] = r.kind;
    j["question"] = r.question;
    j["answer"] = r.answer;
    j["prediction"] = r.prediction;
    j["meta"] = r.meta;
    j["seconds"] = r.seconds;
    j["n_generated"] = r.n_generated;
    if (r.kind == "CLOSED") {
        j["correct"] = r.correct;
        j["llava_closed"] = r.llava_closed ? json(*r.llava_closed) : json(nullptr);
    } else if (r.kind == "OPEN") {
        j["exact"] = r.exact;
        j["f1"] = r.f1, j["precision"] = r.precision, j["recall"] = r.recall;
        j["llava_f1"] = r.llava_f1, j["llava_precision"] = r.llava_precision, j["llava_recall"] = r.llava_recall;
        j["llava_exact"] = r.llava_exact;
        j["llava_open_hit"] = r.llava_open_hit ? json(*r.llava_open_hit) : json(nullptr);
    } else if (r.kind == "MCQ") {
        j["correct"] = r.correct;
        j["chosen"] = r.chosen;
        j["answer_option"] = r.answer_option;
    } else if (r.kind == "IMAGE") {
        j["ssim"] = r.ssim;
        j["psnr"] = std::isfinite(r.psnr) ? json(r.psnr) : json(nullptr);  // JSON has no inf
        j["mse"] = r.mse;
        j["output"] = r.output;
    }
    return j;
}

ItemResult item_from_json(const json& j, const std::string& where) {
    try {
        ItemResult r;
        r.id = j.at("id").get<std::string>();
        r.source_index = j.at("index").get<size_t>();
        r.kind = j.at("kind").get<std::string>();
        r.question = j.at("question").get<std::string>();
        r.answer = j.at("answer").get<std::string>();
        r.prediction = j.at("prediction").get<std::string>();
        r.meta = j.at("meta").get<std::map<std::string, std::string>>();
        r.seconds = j.at("seconds").get<double>();
        r.n_generated = j.at("n_generated").get<int64_t>();
        if (r.kind == "CLOSED") {
            r.correct = j.at("correct").get<bool>();
            if (!j.at("llava_closed").is_null()) r.llava_closed = j["llava_closed"].get<int>();
        } else if (r.kind == "OPEN") {
            r.exact = j.at("exact").get<bool>();
            r.correct = r.exact;
            r.f1 = j.at("f1").get<double>(), r.precision = j.at("precision").get<double>();
            r.recall = j.at("recall").get<double>();
            r.llava_f1 = j.at("llava_f1").get<double>(), r.llava_precision = j.at("llava_precision").get<double>();
            r.llava_recall = j.at("llava_recall").get<double>(), r.llava_exact = j.at("llava_exact").get<double>();
            if (!j.at("llava_open_hit").is_null()) r.llava_open_hit = j["llava_open_hit"].get<double>();
        } else if (r.kind == "MCQ") {
            r.correct = j.at("correct").get<bool>();
            r.chosen = j.at("chosen").get<int>();
            r.answer_option = j.at("answer_option").get<int>();
        } else if (r.kind == "IMAGE") {
            r.ssim = j.at("ssim").get<double>();
            r.psnr = j.at("psnr").is_null() ? std::numeric_limits<double>::infinity() : j["psnr"].get<double>();
            r.mse = j.at("mse").get<double>();
            r.output = j.at("output").get<std::string>();
        } else {
            fail("unknown kind \"%s\"", r.kind.c_str());
        }
        return r;
    } catch (const json::exception& e) {
        fail("%s: %s", where.c_str(), e.what());
    } catch (const Error& e) {
        fail("%s: %s", where.c_str(), e.what());
    }
}

ItemResult score_item(const EvalItem& item, const std::string& prediction, std::span<const std::string> answer_list) {
    ItemResult r;
    r.id = item.id;
    r.source_index = item.source_index;
    r.kind = item.kind;
    r.question = item.question;
    r.answer = item.answer;
    r.prediction = prediction;
    r.meta = item.meta;
    if (item.kind == "CLOSED") {
        r.correct = closed_correct(prediction, item.answer);
        r.exact = exact_match(prediction, item.answer);
        r.llava_closed = llava::closed_hit(prediction, item.answer);
    } else if (item.kind == "OPEN") {
        r.exact = r.correct = exact_match(prediction, item.answer);
        const TokenScores t = token_scores(prediction, item.answer);
        r.f1 = t.f1, r.precision = t.precision, r.recall = t.recall;
        const llava::OpenScores l = llava::open_scores(prediction, item.answer, answer_list);
        r.llava_f1 = l.f1, r.llava_precision = l.precision, r.llava_recall = l.recall, r.llava_exact = l.exact;
        r.llava_open_hit = l.open_hit;
    } else if (item.kind == "MCQ") {
        r.chosen = choose_option(prediction, item.options);
        r.answer_option = item.answer_option;
        r.correct = r.chosen == item.answer_option;
    }
    return r;
}

// ---- the log ------------------------------------------------------------------------------------

LogContents read_log(const fs::path& path, bool repair) {
    LogContents out;
    if (!fs::exists(path)) return out;
    std::string text;
    {
        std::ifstream f(path, std::ios::binary);
        HG_CHECK(f.good(), "%s: cannot open", path.string().c_str());
        std::ostringstream ss;
        ss << f.rdbuf();
        text = ss.str();
    }
    // Whole lines end in '\n'; what follows the last one was being written when the run stopped.
    size_t keep = text.rfind('\n');
    keep = keep == std::string::npos ? 0 : keep + 1;
    if (keep < text.size()) out.dropped_torn_line = true;
    std::vector<std::pair<size_t, std::string>> lines;  // (start offset, text)
    for (size_t b = 0; b < keep;) {
        const size_t e = text.find('\n', b);
        lines.emplace_back(b, text.substr(b, e - b));
        b = e + 1;
    }
    while (!lines.empty() && lines.back().second.find_first_not_of(" \t\r") == std::string::npos) lines.pop_back();
    // A last whole line that does not parse is torn too (written up to a newline of its own text).
    if (!lines.empty() && !json::accept(lines.back().second)) {
        keep = lines.back().first;
        lines.pop_back();
        out.dropped_torn_line = true;
    }
    if (out.dropped_torn_line && repair) fs::resize_file(path, keep);
    for (size_t n = 0; n < lines.size(); ++n) {
        const std::string& line = lines[n].second;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = path.string() + ": line " + std::to_string(n + 1);
        json j;
        try {
            j = json::parse(line);
        } catch (const json::parse_error& e) {
            fail("%s is not valid JSON (%s); the log is damaged: delete it to start over", where.c_str(), e.what());
        }
        if (out.header.is_null()) {
            HG_CHECK(j.is_object() && j.value("type", "") == "header",
                     "%s: not an evaluation log (its first line is not a healthgpt eval header)", path.string().c_str());
            out.header = j;
            continue;
        }
        out.items.push_back(item_from_json(j, where));
    }
    return out;
}

namespace {

const Plugin* pick_plugin(const Model& model, const std::string& name, bool generation) {
    if (generation) return &generation_plugin(model, name);
    if (!name.empty()) {
        const Plugin* p = model.plugins().find(name);
        std::string names;
        for (const auto& q : model.plugins().all()) names += (names.empty() ? "" : ", ") + q->name;
        HG_CHECK(p != nullptr, "no plugin named %s in %s (loaded: %s)", name.c_str(), model.path().string().c_str(),
                 names.empty() ? "none" : names.c_str());
        return p;
    }
    for (const auto& q : model.plugins().all())
        if (q->task() == PluginTask::Comprehension) return q.get();
    return nullptr;
}

// Fields of the header that must agree before a log is continued.
constexpr const char* kIdentity[] = {"format", "bench", "split", "data_sha256", "files", "plugin", "blind",
                                     "max_new_tokens", "instruction", "answer_list_sha256"};

void check_same_run(const json& have, const json& want, const fs::path& log) {
    std::string diffs;
    for (const char* k : kIdentity) {
        const json a = have.contains(k) ? have[k] : json(nullptr), b = want.contains(k) ? want[k] : json(nullptr);
        if (a != b) diffs += std::string(diffs.empty() ? "" : "; ") + k + " " + a.dump() + " in the log, " + b.dump() + " now";
    }
    HG_CHECK(diffs.empty(),
             "%s was written by a different run (%s); its results cannot be continued with this one: use another -o "
             "or delete the log",
             log.string().c_str(), diffs.c_str());
}

std::string trim(const std::string& s) {
    const char* ws = " \t\n\r\v\f";
    const size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// One appending, flushing writer: a line is on disk (fsync) before the next item starts.
class LogWriter {
public:
    explicit LogWriter(const fs::path& p) : path_(p), f_(std::fopen(p.string().c_str(), "ab")) {
        HG_CHECK(f_ != nullptr, "%s: cannot open for appending", p.string().c_str());
    }
    ~LogWriter() { std::fclose(f_); }
    LogWriter(const LogWriter&) = delete;
    LogWriter& operator=(const LogWriter&) = delete;
    void write(const json& j) {
        // replace: a model may emit bytes that are not UTF-8; the log must still be written.
        const std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        HG_CHECK(std::fwrite(line.data(), 1, line.size(), f_) == line.size() && std::fflush(f_) == 0,
                 "%s: write failed", path_.string().c_str());
        ::fsync(fileno(f_));
    }

private:
    fs::path path_;
    std::FILE* f_;
};

MetricImage to_metric(const imaging::RgbImage& im) {
    MetricImage m;
    m.height = im.height, m.width = im.width, m.channels = 3;
    m.samples.assign(im.rgb.begin(), im.rgb.end());
    return m;
}

std::vector<imaging::RgbImage> load_item_images(const EvalItem& it, const Benchmark& b, bool blind) {
    std::vector<imaging::RgbImage> out;
    for (const fs::path& p : it.images) {
        try {
            for (auto& im : imaging::load_medical_image(p)) out.push_back(blind ? blind_image(im) : std::move(im));
        } catch (const Error& e) {
            fail("%s: entry %zu (id %s): %s", b.file.string().c_str(), it.source_index, it.id.c_str(), e.what());
        }
    }
    return out;
}

double since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

imaging::RgbImage blind_image(const imaging::RgbImage& like) {
    imaging::RgbImage g(like.width, like.height);
    std::fill(g.rgb.begin(), g.rgb.end(), uint8_t(128));
    return g;
}

std::string item_prompt(const EvalItem& item, const std::string& instruction) {
    std::string q = item.question;
    if (item.kind == "MCQ") {
        // LLaVA-1.5's multiple-choice prompt: options as "A. text" lines, then the instruction.
        for (size_t k = 0; k < item.options.size(); ++k) q += "\n" + std::string(1, char('A' + k)) + ". " + item.options[k];
        q += "\n" + (instruction.empty() ? std::string("Answer with the option's letter from the given choices directly.")
                                         : instruction);
        return q;
    }
    if (!instruction.empty()) q += "\n" + instruction;
    return q;
}

json log_header(const Model& model, const Benchmark& bench, const RunOptions& opt) {
    const bool gen = is_generation_bench(bench.kind);
    json h;
    h["type"] = "header";
    h["format"] = "healthgpt-eval-log/1";
    h["bench"] = bench_name(bench.kind);
    h["split"] = gen ? "" : bench.split;
    h["data"] = fs::absolute(bench.file).string();
    if (gen) {  // the pairs, by name: a different folder content is a different benchmark
        std::string names;
        for (const EvalItem& it : bench.items) names += it.id + "\n";
        h["data_sha256"] = to_hex(sha256(std::string_view(names)));
    } else {
        h["data_sha256"] = sha256_file(bench.file);
    }
    h["answer_list_sha256"] = bench.answer_list_file.empty() ? "" : sha256_file(bench.answer_list_file);
    json files = json::object();
    const fs::path mp = model.path();
    if (fs::is_directory(mp)) {
        for (const char* f : {"text.gguf", "vision.gguf"})
            if (fs::exists(mp / f)) files[f] = sha256_file(mp / f);
    } else {
        files[mp.filename().string()] = sha256_file(mp);
    }
    const Plugin* p = pick_plugin(model, opt.plugin, gen);
    h["plugin"] = p ? p->name : "";
    if (p) files["plugins/" + p->path.filename().string()] = sha256_file(p->path);
    if (gen) {
        const fs::path vq = vqgan_path(model);
        files[vq.filename().string()] = sha256_file(vq);
    }
    h["files"] = files;
    h["model"] = fs::absolute(mp).string();
    h["blind"] = opt.blind;
    h["max_new_tokens"] = gen ? 0 : opt.max_new_tokens;
    h["instruction"] = opt.instruction;
    return h;
}

RunResult run_benchmark(std::shared_ptr<const Model> model, const Benchmark& bench, const RunOptions& opt) {
    HG_CHECK(!opt.log_path.empty(), "run_benchmark: no log path");
    const bool gen = is_generation_bench(bench.kind);
    HG_CHECK(gen || model->vision() != nullptr, "%s has no vision tower (vision.gguf); %s questions are about images",
             model->path().string().c_str(), bench_name(bench.kind));
    RunResult res;
    res.header = log_header(*model, bench, opt);

    const size_t n_sel = opt.limit ? std::min(opt.limit, bench.items.size()) : bench.items.size();
    res.n_selected = n_sel;

    // Resume: what the log already has.
    LogContents log = read_log(opt.log_path, /*repair=*/true);
    if (log.dropped_torn_line)
        std::fprintf(stderr, "note: %s: dropped an incomplete last line (the previous run stopped while writing it)\n",
                     opt.log_path.string().c_str());
    std::map<std::string, ItemResult> done;
    if (!log.header.is_null()) {
        check_same_run(log.header, res.header, opt.log_path);
        std::set<std::string> ids;
        for (const EvalItem& it : bench.items) ids.insert(it.id);
        for (ItemResult& r : log.items) {
            HG_CHECK(ids.count(r.id), "%s: item %s is not in %s (a log of other data?)", opt.log_path.string().c_str(),
                     r.id.c_str(), bench.file.string().c_str());
            done[r.id] = std::move(r);
        }
    }
    if (!opt.log_path.parent_path().empty()) fs::create_directories(opt.log_path.parent_path());
    LogWriter writer(opt.log_path);
    if (log.header.is_null()) writer.write(res.header);

    std::vector<const EvalItem*> to_run;
    size_t n_done = 0;
    for (size_t i = 0; i < n_sel; ++i) {
        if (done.count(bench.items[i].id)) ++n_done;
        else to_run.push_back(&bench.items[i]);
    }
    res.n_resumed = n_done;
    // Questions about the same image next to each other: its vision features are computed once.
    std::stable_sort(to_run.begin(), to_run.end(), [](const EvalItem* a, const EvalItem* b) {
        return (a->images.empty() ? std::string() : a->images[0].string()) <
               (b->images.empty() ? std::string() : b->images[0].string());
    });

    auto stop = [&] { return opt.stop_requested && opt.stop_requested(); };
    SessionOptions so;
    so.n_ctx = opt.n_ctx;
    so.kv_type = opt.kv_type;
    so.pool = opt.pool;
    const fs::path image_dir = opt.image_dir.empty() ? fs::path(opt.log_path.string() + ".images") : opt.image_dir;
    if (gen) fs::create_directories(image_dir);

    const auto t_run = std::chrono::steady_clock::now();
    std::unique_ptr<Session> session;
    std::string session_image;  // the image the current session's feature cache holds
    std::vector<imaging::RgbImage> images;
    for (const EvalItem* it : to_run) {
        if (stop()) { res.interrupted = true; break; }
        const std::string key = it->images.empty() ? "" : it->images[0].string();
        if (!session || key != session_image) {
            // A fresh session per image bounds the feature cache to one image's vectors.
            session = std::make_unique<Session>(model, so);
            session_image = key;
            images = load_item_images(*it, bench, opt.blind);
        }
        const auto t0 = std::chrono::steady_clock::now();
        ItemResult r;
        if (gen) {
            GenerateImageOptions g;
            g.task = bench.kind == BenchKind::recon    ? GenerationTask::reconstruction
                     : bench.kind == BenchKind::ct2mri ? GenerationTask::ct2mri
                                                       : GenerationTask::super_resolution;
            g.plugin = opt.plugin;
            bool cancelled = false;
            g.on_index = [&](int64_t, int64_t) { return !(cancelled = stop()); };
            HG_CHECK(images.size() == 1, "%s: item %s: %zu images in %s; generation takes one", bench.file.string().c_str(),
                     it->id.c_str(), images.size(), it->images[0].string().c_str());
            GeneratedImage out;
            try {
                out = generate_image(*session, "", &images[0], g);
            } catch (const Error&) {
                if (cancelled) { res.interrupted = true; break; }
                throw;
            }
            r.id = it->id, r.source_index = it->source_index, r.kind = "IMAGE", r.meta = it->meta;
            r.question = default_instruction(g.task);
            r.answer = it->target.string();
            r.n_generated = (int64_t)out.indices.size();
            const fs::path png = image_dir / (fs::path(it->id).stem().string() + ".png");
            imaging::write_png(png, out.image);
            r.output = png.string();
            r.prediction = png.string();
            imaging::RgbImage target;
            try {
                auto t = imaging::load_medical_image(it->target);
                HG_CHECK(t.size() == 1, "%zu images; a target is one image", t.size());
                target = std::move(t[0]);
            } catch (const Error& e) {
                fail("%s: item %s: target %s: %s", bench.file.string().c_str(), it->id.c_str(), it->target.string().c_str(),
                     e.what());
            }
            // The model's output size is fixed (256 with the released VQGAN): a target of another size is
            // brought to it with PIL's bicubic filter (docs/EVALUATION.md).
            if (target.width != out.image.width || target.height != out.image.height)
                target = imaging::resize_pil(target, out.image.width, out.image.height, imaging::ResampleFilter::Bicubic);
            const QualityMetrics q = compare_images(to_metric(target), to_metric(out.image), 255.0);
            r.ssim = q.ssim, r.psnr = q.psnr, r.mse = q.mse;
        } else {
            AskOptions a;
            a.plugin = opt.plugin;
            a.max_new_tokens = opt.max_new_tokens;
            a.on_text = [&](std::string_view) { return !stop(); };
            session->reset();
            const Answer ans = session->ask(item_prompt(*it, opt.instruction), images, a);
            if (stop()) { res.interrupted = true; break; }  // a cut answer is not a result
            r = score_item(*it, trim(ans.text), bench.answer_list);
            r.n_generated = ans.timings.n_generated;
        }
        r.seconds = since(t0);
        writer.write(item_to_json(r));
        ++res.n_run;
        ++n_done;
        if (opt.on_item) opt.on_item(r, n_done, n_sel);
        done[r.id] = std::move(r);
    }
    res.seconds_run = since(t_run);
    for (size_t i = 0; i < n_sel; ++i)
        if (auto f = done.find(bench.items[i].id); f != done.end()) res.items.push_back(f->second);
    return res;
}

}  // namespace hg::eval
