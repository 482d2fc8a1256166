#include "update/update_job.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "core/thread_pool.h"
#include "eval/benchmark.h"
#include "eval/metrics.h"
#include "eval/runner.h"
#include "formats/atomic_file.h"
#include "runtime/model.h"
#include "service/audit.h"
#include "service/errors.h"
#include "train/dataset.h"
#include "train/llava_source.h"
#include "train/vqa_import.h"

namespace hg::update {

namespace fs = std::filesystem;
using json = nlohmann::json;
using service::BadInput;
using service::Db;
using service::Role;

// ---------------------------------------------------------------------------------------------
// The split

Split split_by_patient_and_image(const std::vector<DatasetRecord>& records, double fraction, uint64_t seed) {
    const size_t n = records.size();
    std::vector<size_t> parent(n);
    std::iota(parent.begin(), parent.end(), 0);
    auto root = [&](size_t i) {
        while (parent[i] != i) i = parent[i] = parent[parent[i]];
        return i;
    };
    std::map<int64_t, size_t> by_patient;
    std::map<std::string, size_t> by_image;
    for (size_t i = 0; i < n; ++i) {
        for (size_t other : {by_patient.emplace(records[i].patient_id, i).first->second,
                             by_image.emplace(records[i].image_sha256, i).first->second})
            parent[root(i)] = root(other);
    }
    std::map<size_t, std::vector<size_t>> groups;
    for (size_t i = 0; i < n; ++i) groups[root(i)].push_back(i);
    std::vector<std::vector<size_t>> order;
    for (auto& [r, g] : groups) order.push_back(std::move(g));
    // A seeded order of the groups (our own Fisher-Yates: the same on every platform).
    std::mt19937_64 rng(seed);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
    Split s;
    const size_t want = (size_t)std::llround(fraction * (double)n);
    for (size_t g = 0; g < order.size(); ++g) {
        const bool last_for_training = g + 1 == order.size() && s.train.empty();
        auto& dst = (s.held_out.size() < want && !last_for_training) ? s.held_out : s.train;
        dst.insert(dst.end(), order[g].begin(), order[g].end());
    }
    std::sort(s.train.begin(), s.train.end());
    std::sort(s.held_out.begin(), s.held_out.end());
    return s;
}

json JobState::to_json() const {
    json j = {{"id", id},     {"status", status}, {"step", step},  {"total_steps", total_steps},
              {"loss", loss}, {"log", log},       {"report", report}, {"error", error}};
    j["version_id"] = version_id ? json(*version_id) : json(nullptr);
    return j;
}

// ---------------------------------------------------------------------------------------------
// The job

UpdateJob::UpdateJob(Store& store, Principal who, UpdateOptions opt, int64_t id, std::optional<PluginVersion> current)
    : store_(store), who_(std::move(who)), opt_(std::move(opt)), current_(std::move(current)) {
    st_.id = id;
    st_.total_steps = opt_.max_steps;
}

UpdateJob::~UpdateJob() {
    cancel();
    wait();
}

void UpdateJob::start() { thread_ = std::thread([this] { run(); }); }

void UpdateJob::cancel() {
    cancel_ = true;
    if (const int pid = child_.load(); pid > 0) ::kill(pid, SIGKILL);
}

void UpdateJob::wait() {
    if (thread_.joinable()) thread_.join();
}

JobState UpdateJob::state() const {
    std::lock_guard<std::mutex> l(mu_);
    return st_;
}

void UpdateJob::set(const std::string& status) {
    std::lock_guard<std::mutex> l(mu_);
    st_.status = status;
}

void UpdateJob::log(const std::string& line) {
    std::lock_guard<std::mutex> l(mu_);
    st_.log.push_back(line);
    if (st_.log.size() > 200) st_.log.erase(st_.log.begin());
}

namespace {

void write_text(const fs::path& p, const std::string& text) {
    write_file_atomically(p, [&](int fd, const std::string& tmp) { write_all(fd, text.data(), text.size(), tmp); });
}

// A model folder of links: the served base files and `plugin_file` as plugins/<name>.gguf, so the
// trainer and the evaluator load exactly the base the server runs with this plugin.
fs::path link_model(const fs::path& folder, const fs::path& model_dir, const std::string& name, const fs::path& plugin_file) {
    fs::remove_all(folder);
    fs::create_directories(folder / "plugins");
    for (const char* f : {"text.gguf", "vision.gguf"})
        if (fs::exists(model_dir / f)) fs::create_symlink(fs::absolute(model_dir / f), folder / f);
    fs::create_symlink(fs::absolute(plugin_file), folder / "plugins" / (name + ".gguf"));
    return folder;
}

json llava_entry(const std::string& id, const fs::path& image, const std::string& q, const std::string& a) {
    return {{"id", id},
            {"image", image.string()},
            {"conversations", json::array({{{"from", "human"}, {"value", "<image>\n" + q}}, {{"from", "gpt"}, {"value", a}}})}};
}

// Replay: `k` records of the earlier training data, images resolved to absolute paths.
json replay_sample(const fs::path& data, size_t k, uint64_t seed, json* manifest) {
    std::vector<train::LlavaRecord> records;
    fs::path folder;
    if (train::detect_data_format(data) == train::DataFormat::VqaRad) {
        train::ImportResult r = train::import_vqa_rad(data);
        records = std::move(r.records);
        folder = r.image_folder;
    } else {
        const train::LlavaDataset d = train::LlavaDataset::load(data);
        records = d.records();
        folder = d.options().image_folder;
    }
    std::vector<size_t> idx(records.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::mt19937_64 rng(seed ^ 0x5eed);
    for (size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng() % i]);
    idx.resize(std::min(k, idx.size()));
    std::sort(idx.begin(), idx.end());
    json out = json::array(), ids = json::array();
    for (size_t i : idx) {
        json e = {{"id", "replay-" + records[i].id}};
        json conv = json::array();
        for (const auto& t : records[i].conversations) conv.push_back({{"from", t.from}, {"value", t.value}});
        e["conversations"] = conv;
        if (records[i].images.size() == 1) e["image"] = (fs::absolute(folder) / records[i].images[0]).string();
        else if (!records[i].images.empty()) {
            json ims = json::array();
            for (const auto& im : records[i].images) ims.push_back((fs::absolute(folder) / im).string());
            e["image"] = ims;
        }
        out.push_back(e);
        ids.push_back(records[i].id);
    }
    *manifest = {{"file", fs::absolute(data).string()}, {"sha256", file_sha256(data)}, {"count", out.size()}, {"ids", ids}};
    return out;
}

bool is_closed_answer(const std::string& a) {
    const std::string n = normalise_text(a);
    return n == "yes" || n == "no";
}

struct Scores {
    double held_out_accuracy = 0;
    size_t held_out_items = 0;
    std::optional<double> vqa_closed, vqa_open_recall;
    size_t vqa_items = 0;
    json to_json() const {
        json j = {{"held_out_accuracy", held_out_accuracy}, {"held_out_items", held_out_items}};
        j["vqa_rad_closed_accuracy"] = vqa_closed ? json(*vqa_closed) : json(nullptr);
        j["vqa_rad_open_recall"] = vqa_open_recall ? json(*vqa_open_recall) : json(nullptr);
        j["vqa_rad_items"] = vqa_items;
        return j;
    }
};

}  // namespace

void UpdateJob::train_child(const fs::path& dir, const fs::path& data, const fs::path& out) {
    const fs::path model = dir / "model-current";
    std::vector<std::string> args = {opt_.train_binary.string(), "train", "-m", model.string(), "--data", data.string(),
                                     "--stage", "3", "--plugin", opt_.plugin, "--max-steps", std::to_string(opt_.max_steps),
                                     "--epochs", std::to_string(opt_.max_steps > 0 ? 1000000 : opt_.epochs),  // max_steps decides "--batch", std::to_string(opt_.batch),
                                     "--lr", json(opt_.lr).dump(), "--projector-lr", json(opt_.projector_lr).dump(),
                                     "--max-seq", std::to_string(opt_.max_seq), "--seed", std::to_string(opt_.seed),
                                     "--log", (dir / "train.log.jsonl").string(), "-o", out.string()};
    if (opt_.lowercase_answers) args.push_back("--lowercase-answers");
    {
        std::string cmd;
        for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
        log("train: " + cmd);
    }
    HG_CHECK(fs::exists(opt_.train_binary), "update: the healthgpt binary %s does not exist", opt_.train_binary.string().c_str());
    const std::string err_file = (dir / "train.stderr").string();
    const std::string threads = std::to_string(std::max(1, opt_.threads));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Everything the child needs is prepared here: after fork() in a threaded process only
    // async-signal-safe calls are allowed (no setenv, no allocation).
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e)
        if (std::strncmp(*e, "HEALTHGPT_THREADS=", 18) != 0) env_strings.emplace_back(*e);
    env_strings.push_back("HEALTHGPT_THREADS=" + threads);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int fd = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    HG_CHECK(fd >= 0, "update: %s: %s", err_file.c_str(), std::strerror(errno));
    const int nice_value = opt_.nice;
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) ::close(fd);
    HG_CHECK(pid >= 0, "update: fork failed: %s", std::strerror(errno));
    if (pid == 0) {
        // The child: killed with the server (a SIGKILLed server must not leave a trainer running
        // on, writing into the job folder), lower priority, its output to a file, then the trainer.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(126);  // the server died before prctl took effect
        ::setpriority(PRIO_PROCESS, 0, nice_value);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::execve(argv[0], argv.data(), envp.data());
        ::_exit(127);
    }
    ::close(fd);
    child_ = pid;
    if (cancel_) ::kill(pid, SIGKILL);
    int status = 0;
    auto progress = [&] {
        // The last whole line of the trainer's step log.
        std::ifstream lf(dir / "train.log.jsonl");
        std::string line, last;
        while (std::getline(lf, line))
            if (!line.empty() && line.back() == '}') last = line;
        if (!last.empty()) {
            const json j = json::parse(last, nullptr, false);
            if (j.is_object() && j.contains("step")) {
                std::lock_guard<std::mutex> l(mu_);
                st_.step = j["step"].get<int64_t>();
                st_.loss = j.value("loss", 0.0);
            }
        }
    };
    for (;;) {
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) break;
        progress();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    progress();
    child_ = 0;
    if (cancel_) throw hg::Error("cancelled");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::ifstream ef(err_file);
        std::string text((std::istreambuf_iterator<char>(ef)), {});
        const size_t at = text.rfind("error:");
        hg::fail("training failed (%s %d): %s", WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                 at == std::string::npos ? "see train.stderr" : text.substr(at, 500).c_str());
    }
    HG_CHECK(fs::exists(out), "training wrote no %s", out.string().c_str());
}

json UpdateJob::gate(const fs::path& dir, const std::vector<DatasetRecord>& held_out, const fs::path& current_plugin,
                     const fs::path& candidate) {
    const GateOptions& g = opt_.gate;
    // The held-out slice as a benchmark of the harness.
    eval::Benchmark held;
    held.kind = eval::BenchKind::vqa_rad;
    held.split = "held-out";
    held.file = dir / "heldout.json";
    json hj = json::array();
    for (const DatasetRecord& r : held_out) {
        eval::EvalItem it;
        it.id = "hg-" + std::to_string(r.candidate_id);
        it.source_index = held.items.size();
        it.kind = is_closed_answer(r.answer) ? "CLOSED" : "OPEN";
        it.question = r.question;
        it.answer = r.answer;
        it.images = {dir / "images" / r.image_sha256};
        held.items.push_back(it);
        hj.push_back({{"id", it.id}, {"question", r.question}, {"answer", r.answer}, {"image_sha256", r.image_sha256}});
    }
    write_text(held.file, hj.dump(1) + "\n");
    log("job folder: " + dir.string());
    std::optional<eval::Benchmark> vqa;
    std::error_code ec;
    if (!g.vqa_rad_dir.empty() && fs::exists(g.vqa_rad_dir / "testset.json", ec))
        vqa = eval::load_benchmark(eval::BenchKind::vqa_rad, g.vqa_rad_dir);

    ThreadPool pool(std::max(1, opt_.threads));
    auto score = [&](const fs::path& plugin_file, const std::string& tag) {
        const fs::path folder = link_model(dir / ("model-eval-" + tag), opt_.model_dir, opt_.plugin, plugin_file);
        ModelOptions mo;
        mo.plugins = {opt_.plugin};
        std::shared_ptr<const Model> model = Model::load(folder, mo);
        eval::RunOptions ro;
        ro.plugin = opt_.plugin;
        ro.max_new_tokens = g.max_new_tokens;
        ro.pool = &pool;
        ro.stop_requested = [this] { return cancel_.load(); };
        Scores s;
        if (!held.items.empty()) {
            ro.log_path = dir / ("eval-" + tag + "-heldout.jsonl");
            const eval::RunResult r = eval::run_benchmark(model, held, ro);
            HG_CHECK(!r.interrupted, "cancelled");
            for (const auto& it : r.items) {
                s.held_out_accuracy += it.correct ? 1 : 0;
                log("gate: " + tag + " " + it.id + ": expected '" + it.answer + "', answered '" + it.prediction + "'");
            }
            s.held_out_items = r.items.size();
            if (s.held_out_items) s.held_out_accuracy /= (double)s.held_out_items;
        }
        if (vqa) {
            ro.log_path = dir / ("eval-" + tag + "-vqa-rad.jsonl");
            ro.limit = g.vqa_rad_limit;
            const eval::RunResult r = eval::run_benchmark(model, *vqa, ro);
            HG_CHECK(!r.interrupted, "cancelled");
            double closed = 0, recall = 0;
            size_t nc = 0, no = 0;
            for (const auto& it : r.items) {
                if (it.kind == "CLOSED") closed += it.correct ? 1 : 0, ++nc;
                else recall += it.recall, ++no;
            }
            if (nc) s.vqa_closed = closed / (double)nc;
            if (no) s.vqa_open_recall = recall / (double)no;
            s.vqa_items = r.items.size();
        }
        log("gate: " + tag + " " + s.to_json().dump());
        return s;
    };
    const Scores cur = score(current_plugin, "current");
    const Scores cand = score(candidate, "candidate");

    // The rules.
    std::vector<std::string> reasons;
    json checks = json::array();
    bool pass = true;
    if (held.items.empty()) {
        pass = false;
        reasons.push_back("no held-out records: every approved record shares a patient or an image with the others");
    } else {
        const bool improves = cand.held_out_accuracy > cur.held_out_accuracy + g.min_improvement;
        checks.push_back({{"metric", "held_out_accuracy"}, {"rule", "improves by more than " + json(g.min_improvement).dump()},
                          {"current", cur.held_out_accuracy}, {"candidate", cand.held_out_accuracy}, {"pass", improves}});
        if (!improves) {
            pass = false;
            reasons.push_back("the held-out accuracy does not improve (" + json(cur.held_out_accuracy).dump() + " -> " +
                              json(cand.held_out_accuracy).dump() + ")");
        }
    }
    auto guard = [&](const char* name, const std::optional<double>& a, const std::optional<double>& b) {
        if (!a || !b) return;
        const bool ok = *b >= *a - g.vqa_rad_margin;
        checks.push_back({{"metric", name}, {"rule", "drops at most " + json(g.vqa_rad_margin).dump()},
                          {"current", *a}, {"candidate", *b}, {"pass", ok}});
        if (!ok) {
            pass = false;
            reasons.push_back(std::string(name) + " drops by more than the margin (" + json(*a).dump() + " -> " +
                              json(*b).dump() + ")");
        }
    };
    guard("vqa_rad_closed_accuracy", cur.vqa_closed, cand.vqa_closed);
    guard("vqa_rad_open_recall", cur.vqa_open_recall, cand.vqa_open_recall);
    json report = {{"passed", pass},
                   {"reasons", reasons},
                   {"checks", checks},
                   {"current", cur.to_json()},
                   {"candidate", cand.to_json()},
                   {"forgetting_guard", vqa ? json("VQA-RAD test, first " + std::to_string(g.vqa_rad_limit) + " questions")
                                            : json("none: no VQA-RAD test set at " + g.vqa_rad_dir.string())},
                   {"margins", {{"vqa_rad", g.vqa_rad_margin}, {"min_improvement", g.min_improvement}}}};
    return report;
}

void UpdateJob::run() {
    // The job's own thread at low priority; threads it creates (the evaluation pool) inherit it.
    ::setpriority(PRIO_PROCESS, (id_t)::syscall(SYS_gettid), opt_.nice);
    try {
        set("exporting");
        const fs::path data_dir = store_.data_dir();
        const fs::path dir = data_dir / "updates" / ("job-" + std::to_string(service::now_ms()) + "-" + std::to_string(st_.id));
        fs::create_directories(dir);
        CurationService cur(store_);
        const ExportResult ex = cur.export_dataset(who_, dir / "approved.json", opt_.since_ms);
        HG_CHECK(!ex.records.empty(), "no approved records to train on");
        const Split split = split_by_patient_and_image(ex.records, opt_.gate.held_out_fraction, opt_.seed);
        std::vector<DatasetRecord> held;
        for (size_t i : split.held_out) held.push_back(ex.records[i]);
        json data = json::array(), manifest = json::array(), held_ids = json::array();
        for (size_t i : split.train) {
            const DatasetRecord& r = ex.records[i];
            data.push_back(llava_entry("hg-" + std::to_string(r.candidate_id), fs::absolute(dir / "images" / r.image_sha256),
                                       r.question, r.answer));
            manifest.push_back({{"id", r.candidate_id}, {"sha256", r.record_sha256}});
        }
        for (const DatasetRecord& r : held) held_ids.push_back({{"id", r.candidate_id}, {"sha256", r.record_sha256}});
        json replay = nullptr;
        if (!opt_.replay_data.empty()) {
            const size_t k = (size_t)std::llround(opt_.replay_ratio * (double)split.train.size());
            for (auto& e : replay_sample(opt_.replay_data, k, opt_.seed, &replay)) data.push_back(std::move(e));
        }
        write_text(dir / "train.json", data.dump(1) + "\n");
        log("data: " + std::to_string(split.train.size()) + " new training records, " + std::to_string(held.size()) +
            " held out, " + (replay.is_null() ? std::string("no replay") : std::to_string(replay["count"].get<size_t>()) + " replayed"));

        set("training");
        const fs::path current_plugin =
            current_ ? data_dir / current_->path : opt_.model_dir / "plugins" / (opt_.plugin + ".gguf");
        link_model(dir / "model-current", opt_.model_dir, opt_.plugin, current_plugin);
        const fs::path candidate = dir / "candidate.gguf";
        train_child(dir, dir / "train.json", candidate);

        set("evaluating");
        const json report = gate(dir, held, current_plugin, candidate);
        {
            std::lock_guard<std::mutex> l(mu_);
            st_.report = report;
        }
        NewVersion v;
        v.plugin = opt_.plugin;
        if (current_) v.parent_id = current_->id;
        v.path = fs::relative(candidate, data_dir).string();
        v.dataset = {{"train", manifest}, {"held_out", held_ids}, {"replay", replay}, {"since_ms", opt_.since_ms}};
        v.train_config = {{"stage", 3},          {"max_steps", opt_.max_steps}, {"epochs", opt_.epochs},
                          {"batch", opt_.batch}, {"lr", opt_.lr},               {"projector_lr", opt_.projector_lr},
                          {"seed", opt_.seed},   {"replay_ratio", opt_.replay_ratio}, {"threads", opt_.threads},
                          {"parent_sha256", file_sha256(current_plugin)}};
        v.report = report;
        v.gate_passed = report["passed"].get<bool>();
        const PluginVersion pv = VersionRegistry(store_).add(who_, v);
        {
            std::lock_guard<std::mutex> l(mu_);
            st_.version_id = pv.id;
        }
        log(std::string("registered ") + pv.name() + (pv.gate_passed ? ": the gate passed it" : ": the gate refused it"));
        set("done");
    } catch (const std::exception& e) {
        std::lock_guard<std::mutex> l(mu_);
        st_.error = e.what();
        st_.status = cancel_ ? "cancelled" : "failed";
        st_.log.push_back(std::string("error: ") + e.what());
    }
}

// ---------------------------------------------------------------------------------------------
// The manager

UpdateManager::UpdateManager(Store& store, UpdateOptions defaults) : store_(store), defaults_(std::move(defaults)) {
    // A server killed during a job leaves that job's folder unregistered, possibly with a temp file
    // of an atomic write in it (the trainer's candidate.gguf.tmp-XXXXXX). No row names such a file,
    // so it is removed here; the folder stays as the record of the unfinished job.
    const fs::path updates = store_.data_dir() / "updates";
    std::error_code ec;
    if (!fs::is_directory(updates, ec)) return;
    std::vector<fs::path> leftovers;
    for (auto it = fs::recursive_directory_iterator(updates, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec))
        if (it->is_regular_file(ec) && it->path().filename().string().find(".tmp-") != std::string::npos)
            leftovers.push_back(it->path());
    for (const fs::path& f : leftovers) {
        std::fprintf(stderr, "update: removing %s, left by an interrupted job\n", f.c_str());
        fs::remove(f, ec);
    }
}

int64_t UpdateManager::start(const Principal& p, Overrides over) {
    std::lock_guard<std::mutex> l(mu_);
    const int64_t id = next_id_;
    service::guarded(store_, p, "updates.start", "plugin:" + defaults_.plugin, [&](Db&) { return p.role == Role::admin; },
                     [&](Db&, std::string& detail) {
                         for (const auto& [jid, j] : jobs_) {
                             const std::string s = j->state().status;
                             if (s != "done" && s != "failed" && s != "cancelled")
                                 throw BadInput("update job " + std::to_string(jid) + " is still " + s);
                         }
                         detail = "job " + std::to_string(id);
                     });
    UpdateOptions o = defaults_;
    if (over.max_steps > 0) o.max_steps = over.max_steps;
    if (over.vqa_rad_limit > 0) o.gate.vqa_rad_limit = over.vqa_rad_limit;
    if (over.lr > 0) {
        o.projector_lr = o.projector_lr * over.lr / o.lr;
        o.lr = over.lr;
    }
    auto job = std::make_unique<UpdateJob>(store_, p, o, id, VersionRegistry(store_).promoted(o.plugin));
    job->start();
    jobs_[id] = std::move(job);
    ++next_id_;
    return id;
}

JobState UpdateManager::get(const Principal& p, int64_t id) {
    std::lock_guard<std::mutex> l(mu_);
    return service::guarded(store_, p, "updates.read", "update_job:" + std::to_string(id),
                            [&](Db&) { return p.role == Role::admin && jobs_.count(id); },
                            [&](Db&, std::string&) { return jobs_.at(id)->state(); });
}

void UpdateManager::cancel(const Principal& p, int64_t id) {
    std::lock_guard<std::mutex> l(mu_);
    service::guarded(store_, p, "updates.cancel", "update_job:" + std::to_string(id),
                     [&](Db&) { return p.role == Role::admin && jobs_.count(id); },
                     [&](Db&, std::string&) { jobs_.at(id)->cancel(); });
}

}  // namespace hg::update
