// Training checkpoints: everything needed to resume a run bit-exactly, in one GGUF file.
//
//   metadata  general.type = "healthgpt.train_checkpoint", healthgpt.train.version = 1,
//             healthgpt.train.global_step / .epoch (u64), .rng_state (u64 array: the data-order RNG,
//             opaque to this file), .config (the training config as JSON text),
//             .param_names (string array, the store's order), .param_groups (i32), .adam_steps (i64),
//             .adam.beta1 / .beta2 / .eps (f64), .adam.group_names (strings), .adam.group_lr /
//             .group_weight_decay (f64 arrays: the base values, for information)
//   tensors   param.<name>, adam_m.<name>, adam_v.<name>  (float32, the parameter's shape)
//
// save_checkpoint writes atomically (GGUFWriter: temporary file beside the path, fsync, rename):
// a failed write (disk full, ...) throws and leaves the previous checkpoint untouched.
// load_checkpoint verifies before it changes anything: the file is a checkpoint of this version,
// it holds exactly the store's parameters with the same shapes and groups, the optimizer's betas,
// eps and group count agree; a truncated or mismatched file is refused with an hg::Error naming
// the file and what differs. Then the values, the AdamW state and the steps are restored.
// Resume: load, then continue calling step() exactly as the uninterrupted run would have.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "train/optimizer.h"
#include "train/param_store.h"

namespace hg {

struct TrainProgress {
    uint64_t global_step = 0;          // optimizer steps done
    uint64_t epoch = 0;
    std::vector<uint64_t> rng_state;   // the data-order RNG, as the training loop saves it
    std::string config_json;           // the training config (the loop's own format)
};

void save_checkpoint(const std::filesystem::path& path, const AdamW& opt, const TrainProgress& progress);
// Restores opt.store() values and opt's state; returns the progress. Throws without changing
// anything when the file does not fit.
TrainProgress load_checkpoint(const std::filesystem::path& path, AdamW& opt);

}  // namespace hg
