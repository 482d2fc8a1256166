// Reading tests/fixtures/decoder/<case>/ (written by tests/reference/gen_decoder.py).
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "runtime/kv_cache.h"
#include "test_util.h"

namespace dectest {

inline nlohmann::json read_json(const std::filesystem::path& p) {
    std::ifstream f(p);
    if (!f) throw std::runtime_error("cannot open " + p.string());
    return nlohmann::json::parse(f);
}

// A text-model GGUF through the production loader.
inline std::shared_ptr<const hg::Decoder> load_gguf(const std::filesystem::path& p) {
    return hg::Decoder::load(p.string());
}

inline std::vector<int32_t> ids(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

struct Case {
    std::string name;
    nlohmann::json j;
    std::filesystem::path dir;
    std::vector<int32_t> prompt;
    std::filesystem::path gguf(const std::string& wtype) const { return dir / ("model-" + wtype + ".gguf"); }
    std::vector<float> logits(const std::string& wtype) const { return hgtest::read_f32(dir / ("logits-" + wtype + ".bin")); }
    double scale(const std::string& wtype) const { return j["logits_scale_" + wtype].get<double>(); }
    std::vector<int32_t> greedy(const std::string& wtype) const { return ids(j["greedy_" + wtype]["ids"]); }
};

inline Case load_case(const std::string& name) {
    Case c;
    c.name = name;
    c.dir = hgtest::fixture("decoder/" + name);
    c.j = read_json(c.dir / "case.json");
    c.prompt = ids(c.j["prompt_ids"]);
    return c;
}

// A one-thread pool: on a loaded 2-core machine waking workers for tiny matmuls costs far more
// than the work. Results do not depend on the thread count.
inline hg::ThreadPool& serial_pool() {
    static hg::ThreadPool pool(1);
    return pool;
}

// Runs `tokens` through the decoder in chunks of `chunk` positions (0: all at once) with a
// fresh cache and returns the logits of every position [n, n_vocab].
inline std::vector<float> logits_all(const hg::Decoder& d, const std::vector<int32_t>& tokens, hg::DType kv_type,
                                     const hg::Kernels* kernels, int64_t chunk = 0) {
    const auto& hp = d.hparams();
    const int64_t n = (int64_t)tokens.size(), V = hp.n_vocab, E = hp.n_embd;
    hg::KVCache cache(hp, n, kv_type);
    hg::Arena arena;
    hg::ForwardOptions fo;
    fo.kernels = kernels;
    fo.pool = &serial_pool();
    std::vector<float> out((size_t)(n * V)), emb;
    if (chunk <= 0) chunk = n;
    for (int64_t p = 0; p < n; p += chunk) {
        const int64_t m = std::min(chunk, n - p);
        emb.resize((size_t)(m * E));
        d.embed(std::span<const int32_t>(tokens).subspan(p, m), emb.data());
        d.forward(emb.data(), m, cache.view(), hg::LogitRows::All, out.data() + p * V, arena, fo);
        std::vector<uint64_t> h((size_t)m, 0);
        uint64_t prev = cache.n_past() ? cache.hashes().back() : hg::kPrefixHashSeed;
        for (int64_t i = 0; i < m; ++i) h[i] = prev = hg::prefix_hash_token(prev, tokens[p + i]);
        cache.append(h);
    }
    return out;
}

}  // namespace dectest
