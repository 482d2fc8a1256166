// An update job (docs/UPDATES.md, "Update jobs" and "The gate"):
//
//   approved records ──split by patient AND image──► held-out slice (never trained on)
//          │                                          │
//          └─ training slice + replay sample ──► `healthgpt train --stage 3` from the serving plugin
//                                                     │ (child process: nice 19, HEALTHGPT_THREADS=1, killable)
//                                                     ▼
//          gate: candidate vs serving plugin on the held-out slice and on VQA-RAD test (a limit)
//                ──► registered as a candidate (gate passed) or rejected, with the report
//
// Training runs as a child process of the `healthgpt` binary (train_binary): its threads are
// bounded by HEALTHGPT_THREADS, its priority lowered by nice before exec, it can be killed at any
// time without harming the server, and a crash of it is only a failed job. The gate's evaluation
// runs in the job's thread (nice'd, its own pool of `threads` threads). Nothing is promoted here:
// promotion is an admin's act (registry.h), allowed only for a version whose gate passed.
#pragma once
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "update/curation.h"
#include "update/registry.h"

namespace hg::update {

struct GateOptions {
    double held_out_fraction = 0.25;   // share of the approved records held out (whole patient/image groups)
    double min_improvement = 0.0;      // the held-out accuracy must exceed the serving plugin's by more than this
    double vqa_rad_margin = 0.05;      // guarded: VQA-RAD closed accuracy and open recall may drop at most this
    std::filesystem::path vqa_rad_dir; // empty or absent: no forgetting guard (the report says so)
    size_t vqa_rad_limit = 40;         // the first N VQA-RAD test questions
    int64_t max_new_tokens = 16;
};

struct UpdateOptions {
    std::filesystem::path model_dir;    // the served model folder
    std::string plugin = "com";         // the comprehension plugin to update
    std::filesystem::path train_binary; // the healthgpt executable
    std::filesystem::path replay_data;  // earlier training data (LLaVA JSON or VQA-RAD file); empty: none
    double replay_ratio = 1.0;          // replay examples per new training example
    int64_t max_steps = 30;
    int epochs = 1;                     // used only when max_steps is 0
    int batch = 1;
    double lr = 2e-4, projector_lr = 2e-5;
    int64_t max_seq = 2048;
    bool lowercase_answers = false;
    uint64_t seed = 42;
    int threads = 1;                    // training and evaluation threads
    int nice = 19;                      // priority of the child and of the job's thread
    int64_t since_ms = 0;               // approved records reviewed since
    GateOptions gate;
};

// Held-out / training indices of records: records sharing a patient or an image are one group
// (union-find), and whole groups are held out (at least one group stays for training), so no
// held-out patient or image is ever in the training slice. Deterministic for a seed.
struct Split {
    std::vector<size_t> train, held_out;
};
Split split_by_patient_and_image(const std::vector<DatasetRecord>& records, double held_out_fraction, uint64_t seed);

struct JobState {
    int64_t id = 0;
    std::string status = "queued";  // queued | exporting | training | evaluating | done | failed | cancelled
    int64_t step = 0, total_steps = 0;
    double loss = 0;
    std::vector<std::string> log;   // the last lines
    nlohmann::json report;          // the gate's report (null until evaluated)
    std::optional<int64_t> version_id;
    std::string error;
    nlohmann::json to_json() const;
};

class UpdateJob {
public:
    // `current`: the serving version (nullopt: the folder's own plugin file).
    UpdateJob(Store& store, Principal who, UpdateOptions opt, int64_t id, std::optional<PluginVersion> current);
    ~UpdateJob();  // cancels and joins
    void start();
    void cancel();
    void wait();
    JobState state() const;

private:
    void run();
    void set(const std::string& status);
    void log(const std::string& line);
    void train_child(const std::filesystem::path& dir, const std::filesystem::path& data,
                     const std::filesystem::path& out);
    nlohmann::json gate(const std::filesystem::path& dir, const std::vector<DatasetRecord>& held_out,
                        const std::filesystem::path& current_plugin, const std::filesystem::path& candidate);

    Store& store_;
    Principal who_;
    UpdateOptions opt_;
    std::optional<PluginVersion> current_;
    mutable std::mutex mu_;
    JobState st_;
    std::atomic<bool> cancel_{false};
    std::atomic<int> child_{0};
    std::thread thread_;
};

// The jobs of one server: admins start and read them (updates.start, updates.read, audited).
class UpdateManager {
public:
    // Removes temp files that a job killed with its server left in DATA_DIR/updates/.
    UpdateManager(Store& store, UpdateOptions defaults);
    // What one job may change from the defaults (0: keep the default).
    struct Overrides {
        int64_t max_steps = 0;
        size_t vqa_rad_limit = 0;  // the first N VQA-RAD test questions of the forgetting guard
        double lr = 0;             // H-LoRA learning rate (the projector's scales with it)
    };
    // Starts a job with the defaults and `o`. One job at a time: BadInput while one runs.
    int64_t start(const Principal& p, Overrides o);
    int64_t start(const Principal& p, int64_t max_steps = 0) { return start(p, Overrides{max_steps, 0, 0}); }
    JobState get(const Principal& p, int64_t id);
    void cancel(const Principal& p, int64_t id);
    UpdateOptions& defaults() { return defaults_; }

private:
    Store& store_;
    UpdateOptions defaults_;
    std::mutex mu_;
    std::map<int64_t, std::unique_ptr<UpdateJob>> jobs_;
    int64_t next_id_ = 1;
};

}  // namespace hg::update
