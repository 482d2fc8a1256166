// A new HealthGPT-shaped model folder to train from scratch (healthgpt-nano's start): a vocabulary
// learned from the training text, random text.gguf + vision.gguf at the chosen sizes
// (RandomInit::Training), and a fresh comprehension plugin with the reference's initialisation.
//
//   vocabulary  every word of the data's questions and answers that occurs at least `min_count`
//               times (most frequent first, at most `max_words`) becomes one "▁word" piece; other
//               text still tokenises through the word prefixes, single characters and byte fallback
//               (runtime/demo_model.h word_vocab), so no input is ever out of vocabulary
//   weights     GPT-2-style N(0, 0.02) for the decoder and the tower, a plugin whose lora_B are zero
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/demo_model.h"
#include "train/plugin_init.h"

namespace hg::train {

struct ModelInitOptions {
    RandomModelShape shape;
    std::vector<std::filesystem::path> vocab_data;  // LLaVA JSON / VQA-RAD / SLAKE files
    int min_count = 2;
    int max_words = 4000;
    PluginInit plugin;                              // plugins/com.gguf
    uint64_t seed = 1;
};

struct ModelInitResult {
    int64_t words = 0;         // "▁word" pieces taken from the data
    int64_t vocab_size = 0;    // all tokens
    int64_t text_records = 0;  // records read for the vocabulary
};

// The words (most frequent first; ties by first occurrence) of the questions and answers in
// `files`. A word is a run of letters and digits, with inner '-' or '\'' ("x-ray", "patient's").
std::vector<std::string> vocabulary_words(const std::vector<std::filesystem::path>& files, int min_count,
                                          int max_words, int64_t* records = nullptr);

// Writes DIR/text.gguf, DIR/vision.gguf and DIR/plugins/com.gguf. Refuses an existing text.gguf.
ModelInitResult init_model(const std::filesystem::path& dir, const ModelInitOptions& opt);

}  // namespace hg::train
