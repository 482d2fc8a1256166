#include "train/model_init.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "train/dataset.h"
#include "train/llava_source.h"
#include "train/vqa_import.h"

namespace hg::train {

namespace {

std::vector<LlavaRecord> read_records(const std::filesystem::path& path) {
    const DataFormat f = detect_data_format(path);
    if (f == DataFormat::Llava) {
        std::ifstream in(path, std::ios::binary);
        HG_CHECK(in, "%s: cannot open", path.string().c_str());
        std::stringstream ss;
        ss << in.rdbuf();
        return parse_llava_json(ss.str(), path.string(), /*skip_bad=*/false, nullptr);
    }
    ImportOptions io;
    io.check_images_exist = false;  // only the text is read here
    return f == DataFormat::VqaRad ? import_vqa_rad(path, io).records : import_slake(path, io).records;
}

bool word_char(unsigned char c) { return std::isalnum(c) != 0; }

}  // namespace

std::vector<std::string> vocabulary_words(const std::vector<std::filesystem::path>& files, int min_count,
                                          int max_words, int64_t* records) {
    std::map<std::string, std::pair<int64_t, int64_t>> counts;  // word -> (count, first occurrence)
    int64_t order = 0, n_records = 0;
    for (const auto& f : files)
        for (const LlavaRecord& r : read_records(f)) {
            ++n_records;
            for (const LlavaTurn& t : r.conversations) {
                const std::string& s = t.value;
                for (size_t i = 0; i < s.size();) {
                    if (!word_char((unsigned char)s[i])) {
                        ++i;
                        continue;
                    }
                    size_t j = i;
                    while (j < s.size() && (word_char((unsigned char)s[j]) ||
                                            ((s[j] == '-' || s[j] == '\'') && j + 1 < s.size() &&
                                             word_char((unsigned char)s[j + 1]) && j > i)))
                        ++j;
                    std::string w = s.substr(i, j - i);
                    if (w != "image" || i == 0 || s[i - 1] != '<') {  // not the "<image>" placeholder
                        auto [it, fresh] = counts.try_emplace(w, 0, order++);
                        it->second.first++;
                    }
                    i = j;
                }
            }
        }
    if (records) *records = n_records;
    std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> v(counts.begin(), counts.end());
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        return a.second.first != b.second.first ? a.second.first > b.second.first : a.second.second < b.second.second;
    });
    std::vector<std::string> words;
    for (const auto& [w, c] : v) {
        if (c.first < min_count || (int)words.size() >= max_words) break;
        words.push_back(w);
    }
    return words;
}

ModelInitResult init_model(const std::filesystem::path& dir, const ModelInitOptions& opt) {
    HG_CHECK(!std::filesystem::exists(dir / "text.gguf"), "%s already holds a model (text.gguf): choose a new folder",
             dir.string().c_str());
    HG_CHECK(!opt.vocab_data.empty(), "init-model: no data file for the vocabulary");
    HG_CHECK(opt.min_count >= 1 && opt.max_words >= 0, "init-model: min_count >= 1 and max_words >= 0");
    ModelInitResult r;
    const std::vector<std::string> words = vocabulary_words(opt.vocab_data, opt.min_count, opt.max_words, &r.text_records);
    std::string source = "healthgpt word vocabulary of";
    for (const auto& f : opt.vocab_data) source += " " + f.filename().string();
    const text::Vocab vocab = word_vocab(words, source);
    r.words = (int64_t)words.size();
    r.vocab_size = vocab.size();
    write_random_model(dir, opt.shape, vocab, RandomInit::Training, opt.seed);
    PluginInit pi = opt.plugin;
    if (pi.name.empty()) pi.name = opt.shape.name + " comprehension plugin";
    write_new_plugin(dir, dir / "plugins" / "com.gguf", pi);
    return r;
}

}  // namespace hg::train
