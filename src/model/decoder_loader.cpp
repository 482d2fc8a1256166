// Decoder loading from llama.cpp-named tensors and metadata (see decoder_loader.h).
#include "model/decoder_loader.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "formats/gguf.h"

namespace hg {

namespace {

constexpr int64_t kMaxDim = int64_t(1) << 24;  // far above any real model, far below overflow

std::optional<int64_t> opt_int(const WeightSource& s, const std::string& key) {
    return s.get_int ? s.get_int(key) : std::nullopt;
}
std::optional<double> opt_float(const WeightSource& s, const std::string& key) {
    return s.get_float ? s.get_float(key) : std::nullopt;
}
std::optional<std::string> opt_string(const WeightSource& s, const std::string& key) {
    return s.get_string ? s.get_string(key) : std::nullopt;
}
bool has_tensor(const WeightSource& s, const std::string& name) { return s.tensor && s.tensor(name).has_value(); }

void check_dim(const WeightSource& s, const char* what, int64_t v) {
    HG_CHECK(v >= 1 && v <= kMaxDim, "%s: %s = %lld is out of range", s.origin.c_str(), what, (long long)v);
}

}  // namespace

DecoderHParams read_decoder_hparams(const WeightSource& s) {
    const char* file = s.origin.c_str();
    const std::string arch = require_string(s, "general.architecture");
    DecoderHParams hp;
    if (arch == "phi3") {
        hp.arch = DecoderArch::Phi3;
        hp.rope_mode = RopeMode::RotateHalf;
    } else if (arch == "qwen2") {
        hp.arch = DecoderArch::Qwen2;
        hp.rope_mode = RopeMode::RotateHalf;
    } else if (arch == "llama") {
        hp.arch = DecoderArch::Llama;
        hp.rope_mode = RopeMode::Interleaved;
    } else {
        fail("%s: architecture '%s' is not a supported text decoder (phi3, qwen2, llama)", file, arch.c_str());
    }
    const std::string a = arch + ".";
    hp.n_embd = require_int(s, a + "embedding_length");
    hp.n_layer = require_int(s, a + "block_count");
    hp.n_ff = require_int(s, a + "feed_forward_length");
    hp.n_head = require_int(s, a + "attention.head_count");
    check_dim(s, "embedding_length", hp.n_embd);
    check_dim(s, "block_count", hp.n_layer);
    check_dim(s, "feed_forward_length", hp.n_ff);
    check_dim(s, "attention.head_count", hp.n_head);
    hp.n_head_kv = opt_int(s, a + "attention.head_count_kv").value_or(hp.n_head);
    check_dim(s, "attention.head_count_kv", hp.n_head_kv);
    HG_CHECK(hp.n_head % hp.n_head_kv == 0, "%s: %lld attention heads are not a multiple of %lld KV heads", file,
             (long long)hp.n_head, (long long)hp.n_head_kv);
    hp.head_dim = opt_int(s, a + "attention.key_length").value_or(hp.n_embd / hp.n_head);
    check_dim(s, "head dimension", hp.head_dim);
    if (auto vl = opt_int(s, a + "attention.value_length"))
        HG_CHECK(*vl == hp.head_dim, "%s: value_length %lld differs from key_length %lld (not supported)", file,
                 (long long)*vl, (long long)hp.head_dim);
    hp.n_rot = opt_int(s, a + "rope.dimension_count").value_or(hp.head_dim);
    HG_CHECK(hp.n_rot >= 2 && hp.n_rot <= hp.head_dim && hp.n_rot % 2 == 0,
             "%s: rope.dimension_count %lld does not fit head dimension %lld", file, (long long)hp.n_rot,
             (long long)hp.head_dim);
    const double eps = require_float(s, a + "attention.layer_norm_rms_epsilon");
    HG_CHECK(eps > 0 && eps < 1, "%s: layer_norm_rms_epsilon %g is out of range", file, eps);
    hp.rms_eps = (float)eps;
    hp.rope_theta = (float)opt_float(s, a + "rope.freq_base").value_or(10000.0);
    HG_CHECK(hp.rope_theta > 1, "%s: rope.freq_base %g is out of range", file, (double)hp.rope_theta);
    hp.n_ctx_train = opt_int(s, a + "context_length").value_or(0);
    HG_CHECK(hp.n_ctx_train >= 0, "%s: negative context_length", file);
    if (hp.arch == DecoderArch::Phi3) {
        hp.sliding_window = opt_int(s, a + "attention.sliding_window").value_or(0);
        HG_CHECK(hp.sliding_window >= 0, "%s: negative sliding_window", file);
    }
    if (auto ft = opt_string(s, "healthgpt.rope.inv_freq_type")) {
        if (*ft == "f16") hp.rope_inv_freq_type = DType::F16;
        else if (*ft == "bf16") hp.rope_inv_freq_type = DType::BF16;
        else HG_CHECK(*ft == "f32", "%s: healthgpt.rope.inv_freq_type '%s' is not f32, f16 or bf16", file, ft->c_str());
    }
    if (auto st = opt_string(s, a + "rope.scaling.type"))
        HG_CHECK(*st == "none" || st->empty(), "%s: rope scaling '%s' is not supported", file, st->c_str());
    HG_CHECK(!has_tensor(s, "rope_factors_long.weight") && !has_tensor(s, "rope_factors_short.weight"),
             "%s: long-context rope factors (Phi-3 128k 'longrope') are not supported", file);
    return hp;
}

namespace {

Linear bind_linear(const WeightSource& s, const std::string& base, int64_t out, int64_t in, bool allow_bias) {
    Linear L;
    L.weight = require_matrix(s, base + ".weight", {out, in});
    const bool has_bias = has_tensor(s, base + ".bias");
    HG_CHECK(allow_bias || !has_bias, "%s: unexpected tensor %s.bias", s.origin.c_str(), base.c_str());
    if (has_bias) L.bias = require_f32(s, base + ".bias", {out});
    return L;
}

}  // namespace

std::shared_ptr<const Decoder> load_decoder(const WeightSource& s, std::shared_ptr<const void> storage,
                                            std::vector<int32_t> stop_ids) {
    HG_CHECK(s.tensor, "%s: weight source cannot look up tensors", s.origin.c_str());
    DecoderHParams hp = read_decoder_hparams(s);
    const int64_t E = hp.n_embd, I = hp.n_ff, QD = hp.q_dim(), KVD = hp.kv_dim();

    DecoderWeights w;
    auto emb = s.tensor("token_embd.weight");
    HG_CHECK(emb.has_value(), "%s: tensor token_embd.weight is missing", s.origin.c_str());
    HG_CHECK(emb->n_dims == 2 && emb->shape[1] == E && emb->shape[0] > 0 && emb->shape[0] <= kMaxDim,
             "%s: tensor token_embd.weight has shape %s, expected [n_vocab, %lld]", s.origin.c_str(),
             emb->shape_str().c_str(), (long long)E);
    hp.n_vocab = emb->shape[0];
    w.token_embd = require_matrix(s, "token_embd.weight", {hp.n_vocab, E});
    w.output_norm = require_f32(s, "output_norm.weight", {E});
    w.output = has_tensor(s, "output.weight") ? require_matrix(s, "output.weight", {hp.n_vocab, E}) : w.token_embd;

    // Biases: qwen2 has them on q/k/v; llama.cpp allows them on phi3/llama q/k/v too.
    for (int64_t l = 0; l < hp.n_layer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        DecoderLayer L;
        L.attn_norm = require_f32(s, b + "attn_norm.weight", {E});
        if (has_tensor(s, b + "attn_qkv.weight")) {
            L.qkv = bind_linear(s, b + "attn_qkv", QD + 2 * KVD, E, true);
        } else {
            L.q = bind_linear(s, b + "attn_q", QD, E, true);
            L.k = bind_linear(s, b + "attn_k", KVD, E, true);
            L.v = bind_linear(s, b + "attn_v", KVD, E, true);
        }
        L.o = bind_linear(s, b + "attn_output", E, QD, false);
        L.ffn_norm = require_f32(s, b + "ffn_norm.weight", {E});
        if (has_tensor(s, b + "ffn_gate.weight")) {
            L.gate = bind_linear(s, b + "ffn_gate", I, E, false);
            L.up = bind_linear(s, b + "ffn_up", I, E, false);
        } else {
            L.gate_up = bind_linear(s, b + "ffn_up", 2 * I, E, false);  // fused: gate rows first
        }
        L.down = bind_linear(s, b + "ffn_down", E, I, false);
        w.layers.push_back(std::move(L));
    }
    HG_CHECK(!has_tensor(s, "blk." + std::to_string(hp.n_layer) + ".attn_norm.weight"),
             "%s: has more layers than block_count = %lld", s.origin.c_str(), (long long)hp.n_layer);
    if (stop_ids.empty())
        for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"})
            if (auto id = opt_int(s, key)) {
                HG_CHECK(*id >= 0 && *id < hp.n_vocab, "%s: %s = %lld is outside the vocabulary (%lld)",
                         s.origin.c_str(), key, (long long)*id, (long long)hp.n_vocab);
                if (std::find(stop_ids.begin(), stop_ids.end(), (int32_t)*id) == stop_ids.end())
                    stop_ids.push_back((int32_t)*id);
            }
    for (int32_t id : stop_ids)
        HG_CHECK(id >= 0 && id < hp.n_vocab, "%s: stop token id %d is outside the vocabulary (%lld)", s.origin.c_str(),
                 id, (long long)hp.n_vocab);
    return std::make_shared<const Decoder>(hp, std::move(w), std::move(storage), s.origin, std::move(stop_ids));
}

std::shared_ptr<const Decoder> Decoder::load(const std::string& gguf_path) {
    std::shared_ptr<const GGUFFile> f = GGUFFile::open(gguf_path);
    std::vector<int32_t> stops;
    if (auto a = f->get_int_array("healthgpt.stop_token_ids"))
        for (int64_t id : *a) {
            HG_CHECK(id >= 0 && id <= INT32_MAX, "%s: healthgpt.stop_token_ids holds %lld", gguf_path.c_str(),
                     (long long)id);
            stops.push_back((int32_t)id);
        }
    return load_decoder(gguf_source(*f), f, std::move(stops));
}

// ---------------------------------------------------------------------------------------------
// llama2.c checkpoints

std::shared_ptr<const Llama2cCheckpoint> read_llama2c(const std::string& path) {
    auto ck = std::make_shared<Llama2cCheckpoint>();
    ck->path = path;
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    HG_CHECK(f.good(), "%s: cannot open", path.c_str());
    const std::streamoff size = f.tellg();
    HG_CHECK(size >= 28, "%s: %lld bytes is too small for a llama2.c checkpoint header", path.c_str(),
             (long long)size);
    ck->bytes.resize((size_t)size);
    f.seekg(0);
    f.read(reinterpret_cast<char*>(ck->bytes.data()), size);
    HG_CHECK(f.good(), "%s: read error", path.c_str());

    int32_t h[7];
    std::memcpy(h, ck->bytes.data(), sizeof h);
    const int64_t dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4], seq_len = h[6];
    const bool shared = h[5] > 0;
    const int64_t vocab = h[5] < 0 ? -(int64_t)h[5] : h[5];
    auto bad = [&](const char* what, int64_t v) {
        fail("%s: llama2.c header: %s = %lld is out of range", path.c_str(), what, (long long)v);
    };
    if (dim <= 0 || dim > 65536) bad("dim", dim);
    if (hidden <= 0 || hidden > 262144) bad("hidden_dim", hidden);
    if (n_layers <= 0 || n_layers > 1024) bad("n_layers", n_layers);
    if (n_heads <= 0 || dim % n_heads != 0) bad("n_heads", n_heads);
    if (n_kv <= 0 || n_heads % n_kv != 0) bad("n_kv_heads", n_kv);
    if (vocab <= 0 || vocab > 1 << 20) bad("vocab_size", vocab);
    if (seq_len <= 0 || seq_len > 1 << 20) bad("seq_len", seq_len);
    const int64_t hd = dim / n_heads;
    if (hd % 2 != 0) bad("head dimension", hd);
    const int64_t kvd = n_kv * hd;

    // run.c's memory_map_weights order; sizes in floats.
    const int64_t n_floats = vocab * dim + n_layers * dim + n_layers * dim * dim + 2 * n_layers * kvd * dim +
                             n_layers * dim * dim + n_layers * dim + 3 * n_layers * hidden * dim + dim +
                             seq_len * hd + (shared ? 0 : vocab * dim);
    HG_CHECK(size == 28 + n_floats * 4, "%s: llama2.c checkpoint is %lld bytes, its header implies %lld",
             path.c_str(), (long long)size, (long long)(28 + n_floats * 4));

    WeightMap& m = ck->map;
    m.set_string("general.architecture", "llama");
    m.set_int("llama.embedding_length", dim);
    m.set_int("llama.feed_forward_length", hidden);
    m.set_int("llama.block_count", n_layers);
    m.set_int("llama.attention.head_count", n_heads);
    m.set_int("llama.attention.head_count_kv", n_kv);
    m.set_int("llama.context_length", seq_len);
    m.set_int("llama.rope.dimension_count", hd);
    m.set_float("llama.rope.freq_base", 10000.0);
    m.set_float("llama.attention.layer_norm_rms_epsilon", 1e-5);

    float* p = reinterpret_cast<float*>(ck->bytes.data() + 28);  // 4-byte aligned
    auto take = [&](std::initializer_list<int64_t> shape) {
        Tensor t = Tensor::view(DType::F32, shape, p);
        p += t.numel();
        return t;
    };
    auto per_layer = [&](const char* name, std::initializer_list<int64_t> shape) {
        for (int64_t l = 0; l < n_layers; ++l) m.add("blk." + std::to_string(l) + "." + name, take(shape));
    };
    m.add("token_embd.weight", take({vocab, dim}));
    per_layer("attn_norm.weight", {dim});
    per_layer("attn_q.weight", {dim, dim});
    per_layer("attn_k.weight", {kvd, dim});
    per_layer("attn_v.weight", {kvd, dim});
    per_layer("attn_output.weight", {dim, dim});
    per_layer("ffn_norm.weight", {dim});
    per_layer("ffn_gate.weight", {hidden, dim});  // w1
    per_layer("ffn_down.weight", {dim, hidden});  // w2
    per_layer("ffn_up.weight", {hidden, dim});    // w3
    m.add("output_norm.weight", take({dim}));
    p += seq_len * hd;  // freq_cis_real / freq_cis_imag (unused: RoPE is computed)
    if (!shared) m.add("output.weight", take({vocab, dim}));
    return ck;
}

std::shared_ptr<const Decoder> load_llama2c(const std::string& path) {
    auto ck = read_llama2c(path);
    return load_decoder(ck->source(), ck);
}

}  // namespace hg
