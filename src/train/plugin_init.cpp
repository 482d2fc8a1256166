#include "train/plugin_init.h"

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "formats/gguf.h"
#include "model/clip_vision.h"
#include "model/decoder_loader.h"
#include "model/projector.h"
#include "model/weight_source.h"

namespace hg::train {

namespace {

// U(-b, b) from the top 24 bits of a 64-bit draw: portable, unlike std::uniform_real_distribution.
struct Uniform {
    std::mt19937_64 rng;
    explicit Uniform(uint64_t seed) : rng(seed) {}
    std::vector<float> fill(int64_t n, float bound) {
        std::vector<float> v((size_t)n);
        for (auto& x : v) x = ((float)(rng() >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * bound;
        return v;
    }
};

}  // namespace

void write_new_plugin(const std::filesystem::path& folder, const std::filesystem::path& out, const PluginInit& init) {
    namespace k = plugin_keys;
    HG_CHECK(init.rank > 0 && init.experts > 0 && init.rank % init.experts == 0,
             "new plugin: rank %lld is not a positive multiple of %d experts", (long long)init.rank, init.experts);
    HG_CHECK(init.alpha > 0, "new plugin: alpha %g must be positive", init.alpha);
    auto text = GGUFFile::open(folder / "text.gguf");
    const DecoderHParams hp = read_decoder_hparams(gguf_source(*text));
    HG_CHECK(std::filesystem::exists(folder / "vision.gguf"), "%s: no vision.gguf: a plugin's projector needs the tower",
             folder.string().c_str());
    auto vision = GGUFFile::open(folder / "vision.gguf");
    const ClipVisionConfig vc = ClipVisionConfig::from_metadata(gguf_source(*vision));
    const bool gen = init.task == PluginTask::Generation;

    GGUFWriter w;
    const char* arch = decoder_arch_name(hp.arch);
    w.set_string("general.architecture", arch);
    w.set_string(k::kGeneralType, "adapter");
    w.set_string("general.name", init.name.empty() ? std::string("healthgpt.cpp trained plugin") : init.name);
    w.set_string(k::kTask, plugin_task_name(init.task));
    w.set_i32(k::kVisionLayer, init.vision_layer != 0 ? init.vision_layer : gen ? 1 : -2);
    w.set_u32(k::kRank, (uint32_t)init.rank);
    w.set_f32(k::kAlpha, (float)init.alpha);
    w.set_u32(k::kExperts, (uint32_t)init.experts);
    w.set_string(k::kProjectorType, "mlp2x_gelu");
    w.set_string(k::kBaseArchitecture, arch);

    Uniform u(init.seed);
    const int64_t E = hp.n_embd, I = hp.n_ff, QD = hp.q_dim(), KVD = hp.kv_dim();
    struct Lin { const char* name; int64_t out, in; };
    std::vector<Lin> lins;
    if (std::optional<Tensor> qkv = text->try_tensor("blk.0.attn_qkv.weight")) {
        lins = {{"attn_qkv", QD + 2 * KVD, E}, {"attn_output", E, QD}, {"ffn_up", 2 * I, E}, {"ffn_down", E, I}};
    } else {
        lins = {{"attn_q", QD, E},   {"attn_k", KVD, E}, {"attn_v", KVD, E}, {"attn_output", E, QD},
                {"ffn_gate", I, E},  {"ffn_up", I, E},   {"ffn_down", E, I}};
    }
    const int64_t r = init.rank, n = init.experts;
    for (int64_t l = 0; l < hp.n_layer; ++l)
        for (const Lin& L : lins) {
            const float bound = 1.0f / std::sqrt((float)L.in);
            w.add_tensor(plugin_names::tensor((int)l, L.name, plugin_names::kA), DType::F32, {r, L.in},
                         u.fill(r * L.in, bound).data());
            const std::vector<float> zeros((size_t)(L.out * r), 0.0f);
            w.add_tensor(plugin_names::tensor((int)l, L.name, plugin_names::kB), DType::F32, {L.out, r}, zeros.data());
            w.add_tensor(plugin_names::tensor((int)l, L.name, plugin_names::kRoute), DType::F32, {n, L.in},
                         u.fill(n * L.in, bound).data());
        }
    const int64_t D = vc.hidden;
    const float b0 = 1.0f / std::sqrt((float)D), b2 = 1.0f / std::sqrt((float)E);
    w.add_tensor(projector_names::kW0, DType::F32, {E, D}, u.fill(E * D, b0).data());
    w.add_tensor(projector_names::kB0, DType::F32, {E}, u.fill(E, b0).data());
    w.add_tensor(projector_names::kW2, DType::F32, {E, E}, u.fill(E * E, b2).data());
    w.add_tensor(projector_names::kB2, DType::F32, {E}, u.fill(E, b2).data());
    std::error_code ec;
    std::filesystem::create_directories(out.parent_path(), ec);
    w.write(out);
}

}  // namespace hg::train
