// Decoder loading from llama.cpp-named tensors and metadata (see decoder_loader.h).
#include "model/decoder_loader.h"

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/quants.h"

namespace hg {

// ---------------------------------------------------------------------------------------------
// MemorySource

void MemorySource::add_tensor(const std::string& name, DType type, std::initializer_list<int64_t> shape,
                              const void* data) {
    add_tensor(name, type, std::vector<int64_t>(shape), data);
}

void MemorySource::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& shape,
                              const void* data) {
    Tensor t = Tensor::view(type, shape.data(), (int)shape.size(), nullptr);
    auto buf = std::make_shared<std::vector<uint8_t>>(t.nbytes());
    if (!buf->empty()) std::memcpy(buf->data(), data, buf->size());
    t.data = buf->data();
    owned_.push_back(std::move(buf));
    tensors_[name] = t;
}

std::optional<Tensor> MemorySource::tensor(std::string_view name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return std::nullopt;
    return it->second;
}
std::optional<std::string> MemorySource::get_string(std::string_view key) const {
    auto it = strings_.find(key);
    if (it == strings_.end()) return std::nullopt;
    return it->second;
}
std::optional<int64_t> MemorySource::get_int(std::string_view key) const {
    auto it = ints_.find(key);
    if (it == ints_.end()) return std::nullopt;
    return it->second;
}
std::optional<double> MemorySource::get_float(std::string_view key) const {
    auto it = floats_.find(key);
    if (it != floats_.end()) return it->second;
    if (auto i = get_int(key)) return (double)*i;
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Hyper-parameters

namespace {

constexpr int64_t kMaxDim = int64_t(1) << 24;  // far above any real model, far below overflow

int64_t require_int(const TensorSource& s, const std::string& key) {
    auto v = s.get_int(key);
    HG_CHECK(v.has_value(), "%s: missing metadata key %s", s.name().c_str(), key.c_str());
    return *v;
}

void check_dim(const TensorSource& s, const char* what, int64_t v, int64_t lo = 1) {
    HG_CHECK(v >= lo && v <= kMaxDim, "%s: %s = %lld is out of range", s.name().c_str(), what, (long long)v);
}

}  // namespace

DecoderHParams read_decoder_hparams(const TensorSource& s) {
    const std::string& file = s.name();
    auto arch_s = s.get_string("general.architecture");
    HG_CHECK(arch_s.has_value(), "%s: missing metadata key general.architecture", file.c_str());
    DecoderHParams hp;
    if (*arch_s == "phi3") {
        hp.arch = DecoderArch::Phi3;
        hp.rope_mode = RopeMode::RotateHalf;
    } else if (*arch_s == "qwen2") {
        hp.arch = DecoderArch::Qwen2;
        hp.rope_mode = RopeMode::RotateHalf;
    } else if (*arch_s == "llama") {
        hp.arch = DecoderArch::Llama;
        hp.rope_mode = RopeMode::Interleaved;
    } else {
        fail("%s: architecture '%s' is not a supported text decoder (phi3, qwen2, llama)", file.c_str(),
             arch_s->c_str());
    }
    const std::string a = *arch_s + ".";
    hp.n_embd = require_int(s, a + "embedding_length");
    hp.n_layer = require_int(s, a + "block_count");
    hp.n_ff = require_int(s, a + "feed_forward_length");
    hp.n_head = require_int(s, a + "attention.head_count");
    check_dim(s, "embedding_length", hp.n_embd);
    check_dim(s, "block_count", hp.n_layer);
    check_dim(s, "feed_forward_length", hp.n_ff);
    check_dim(s, "attention.head_count", hp.n_head);
    hp.n_head_kv = s.get_int(a + "attention.head_count_kv").value_or(hp.n_head);
    check_dim(s, "attention.head_count_kv", hp.n_head_kv);
    HG_CHECK(hp.n_head % hp.n_head_kv == 0, "%s: %lld attention heads are not a multiple of %lld KV heads",
             file.c_str(), (long long)hp.n_head, (long long)hp.n_head_kv);
    hp.head_dim = s.get_int(a + "attention.key_length").value_or(hp.n_embd / hp.n_head);
    check_dim(s, "head dimension", hp.head_dim);
    if (auto vl = s.get_int(a + "attention.value_length"))
        HG_CHECK(*vl == hp.head_dim, "%s: value_length %lld differs from key_length %lld (not supported)",
                 file.c_str(), (long long)*vl, (long long)hp.head_dim);
    hp.n_rot = s.get_int(a + "rope.dimension_count").value_or(hp.head_dim);
    HG_CHECK(hp.n_rot >= 2 && hp.n_rot <= hp.head_dim && hp.n_rot % 2 == 0,
             "%s: rope.dimension_count %lld does not fit head dimension %lld", file.c_str(), (long long)hp.n_rot,
             (long long)hp.head_dim);
    auto eps = s.get_float(a + "attention.layer_norm_rms_epsilon");
    HG_CHECK(eps.has_value(), "%s: missing metadata key %sattention.layer_norm_rms_epsilon", file.c_str(), a.c_str());
    HG_CHECK(*eps > 0 && *eps < 1, "%s: layer_norm_rms_epsilon %g is out of range", file.c_str(), *eps);
    hp.rms_eps = (float)*eps;
    hp.rope_theta = (float)s.get_float(a + "rope.freq_base").value_or(10000.0);
    HG_CHECK(hp.rope_theta > 1, "%s: rope.freq_base %g is out of range", file.c_str(), (double)hp.rope_theta);
    hp.n_ctx_train = s.get_int(a + "context_length").value_or(0);
    HG_CHECK(hp.n_ctx_train >= 0, "%s: negative context_length", file.c_str());
    if (hp.arch == DecoderArch::Phi3) {
        hp.sliding_window = s.get_int(a + "attention.sliding_window").value_or(0);
        HG_CHECK(hp.sliding_window >= 0, "%s: negative sliding_window", file.c_str());
    }
    if (auto ft = s.get_string("healthgpt.rope.inv_freq_type")) {
        if (*ft == "f16") hp.rope_inv_freq_type = DType::F16;
        else if (*ft == "bf16") hp.rope_inv_freq_type = DType::BF16;
        else HG_CHECK(*ft == "f32", "%s: healthgpt.rope.inv_freq_type '%s' is not f32, f16 or bf16", file.c_str(),
                      ft->c_str());
    }
    if (auto st = s.get_string(a + "rope.scaling.type"))
        HG_CHECK(*st == "none" || st->empty(), "%s: rope scaling '%s' is not supported", file.c_str(), st->c_str());
    HG_CHECK(!s.tensor("rope_factors_long.weight") && !s.tensor("rope_factors_short.weight"),
             "%s: long-context rope factors (Phi-3 128k 'longrope') are not supported", file.c_str());
    return hp;
}

// ---------------------------------------------------------------------------------------------
// Weights

namespace {

struct Loader {
    const TensorSource& s;
    const DecoderHParams& hp;

    std::optional<Tensor> find(const std::string& name) const {
        auto t = s.tensor(name);
        if (t) {
            const auto info = dtype_info(static_cast<uint32_t>(t->type));
            HG_CHECK(info && info->supported, "%s: tensor %s has type %s, which is not supported", s.name().c_str(),
                     name.c_str(), dtype_name(t->type));
            HG_CHECK(t->is_contiguous(), "%s: tensor %s is not contiguous", s.name().c_str(), name.c_str());
            HG_CHECK(t->data != nullptr || t->numel() == 0, "%s: tensor %s has no data", s.name().c_str(),
                     name.c_str());
        }
        return t;
    }

    void check_shape(const std::string& name, const Tensor& t, std::initializer_list<int64_t> want) const {
        Tensor w = Tensor::view(DType::F32, want, nullptr);
        bool ok = t.n_dims == w.n_dims;
        for (int i = 0; ok && i < w.n_dims; ++i) ok = t.shape[i] == w.shape[i];
        HG_CHECK(ok, "%s: tensor %s has shape %s, expected %s", s.name().c_str(), name.c_str(), t.shape_str().c_str(),
                 w.shape_str().c_str());
    }

    // A weight matrix [rows, cols] that matmul takes (float or block-quantized types).
    Tensor matrix(const std::string& name, int64_t rows, int64_t cols) const {
        auto t = find(name);
        HG_CHECK(t.has_value(), "%s: missing tensor %s", s.name().c_str(), name.c_str());
        check_shape(name, *t, {rows, cols});
        const DType ty = t->type;
        HG_CHECK(ty == DType::F32 || ty == DType::F16 || ty == DType::BF16 || ty == DType::Q8_0 ||
                     ty == DType::Q4_0 || ty == DType::Q4_K || ty == DType::Q6_K,
                 "%s: tensor %s has type %s, which matmul does not take (F32 F16 BF16 Q8_0 Q4_0 Q4_K Q6_K)",
                 s.name().c_str(), name.c_str(), dtype_name(ty));
        return *t;
    }

    // A vector (norm weight, bias) converted to float32.
    std::vector<float> vec(const std::string& name, int64_t n, bool required = true) const {
        auto t = find(name);
        if (!t) {
            HG_CHECK(!required, "%s: missing tensor %s", s.name().c_str(), name.c_str());
            return {};
        }
        check_shape(name, *t, {n});
        HG_CHECK(t->type == DType::F32 || t->type == DType::F16 || t->type == DType::BF16,
                 "%s: tensor %s has type %s; vectors must be F32, F16 or BF16", s.name().c_str(), name.c_str(),
                 dtype_name(t->type));
        std::vector<float> out(n);
        dequantize_row(t->type, t->data, out.data(), n);
        return out;
    }

    Linear linear(const std::string& base, int64_t out, int64_t in, bool allow_bias) const {
        Linear L;
        L.weight = matrix(base + ".weight", out, in);
        if (allow_bias) {
            L.bias = vec(base + ".bias", out, false);
        } else {
            HG_CHECK(!s.tensor(base + ".bias"), "%s: unexpected tensor %s.bias", s.name().c_str(), base.c_str());
        }
        return L;
    }
};

}  // namespace

std::shared_ptr<const Decoder> load_decoder(std::shared_ptr<const TensorSource> src) {
    const TensorSource& s = *src;
    DecoderHParams hp = read_decoder_hparams(s);
    Loader ld{s, hp};
    const int64_t E = hp.n_embd, I = hp.n_ff, QD = hp.q_dim(), KVD = hp.kv_dim();

    DecoderWeights w;
    auto emb = ld.find("token_embd.weight");
    HG_CHECK(emb.has_value(), "%s: missing tensor token_embd.weight", s.name().c_str());
    HG_CHECK(emb->n_dims == 2 && emb->shape[1] == E && emb->shape[0] > 0 && emb->shape[0] <= kMaxDim,
             "%s: tensor token_embd.weight has shape %s, expected [n_vocab, %lld]", s.name().c_str(),
             emb->shape_str().c_str(), (long long)E);
    hp.n_vocab = emb->shape[0];
    w.token_embd = ld.matrix("token_embd.weight", hp.n_vocab, E);
    w.output_norm = ld.vec("output_norm.weight", E);
    w.output = s.tensor("output.weight") ? ld.matrix("output.weight", hp.n_vocab, E) : w.token_embd;

    // Biases: qwen2 has them on q/k/v; llama.cpp allows them on phi3/llama q/k/v too.
    for (int64_t l = 0; l < hp.n_layer; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        DecoderLayer L;
        L.attn_norm = ld.vec(b + "attn_norm.weight", E);
        if (s.tensor(b + "attn_qkv.weight")) {
            L.qkv = ld.linear(b + "attn_qkv", QD + 2 * KVD, E, true);
        } else {
            L.q = ld.linear(b + "attn_q", QD, E, true);
            L.k = ld.linear(b + "attn_k", KVD, E, true);
            L.v = ld.linear(b + "attn_v", KVD, E, true);
        }
        L.o = ld.linear(b + "attn_output", E, QD, false);
        L.ffn_norm = ld.vec(b + "ffn_norm.weight", E);
        if (s.tensor(b + "ffn_gate.weight")) {
            L.gate = ld.linear(b + "ffn_gate", I, E, false);
            L.up = ld.linear(b + "ffn_up", I, E, false);
        } else {
            L.gate_up = ld.linear(b + "ffn_up", 2 * I, E, false);  // fused: gate rows first
        }
        L.down = ld.linear(b + "ffn_down", E, I, false);
        w.layers.push_back(std::move(L));
    }
    HG_CHECK(!s.tensor("blk." + std::to_string(hp.n_layer) + ".attn_norm.weight"),
             "%s: has more layers than block_count = %lld", s.name().c_str(), (long long)hp.n_layer);
    std::string name = s.name();
    return std::make_shared<const Decoder>(hp, std::move(w), std::static_pointer_cast<const void>(src), name);
}

// ---------------------------------------------------------------------------------------------
// llama2.c checkpoints

std::shared_ptr<MemorySource> read_llama2c(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    HG_CHECK(f.good(), "%s: cannot open", path.c_str());
    const std::streamoff size = f.tellg();
    HG_CHECK(size >= 28, "%s: %lld bytes is too small for a llama2.c checkpoint header", path.c_str(),
             (long long)size);
    auto bytes = std::make_shared<std::vector<uint8_t>>((size_t)size);
    f.seekg(0);
    f.read(reinterpret_cast<char*>(bytes->data()), size);
    HG_CHECK(f.good(), "%s: read error", path.c_str());

    int32_t h[7];
    std::memcpy(h, bytes->data(), sizeof h);
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

    auto src = std::make_shared<MemorySource>(path);
    src->keep_alive(bytes);
    src->set_string("general.architecture", "llama");
    src->set_int("llama.embedding_length", dim);
    src->set_int("llama.feed_forward_length", hidden);
    src->set_int("llama.block_count", n_layers);
    src->set_int("llama.attention.head_count", n_heads);
    src->set_int("llama.attention.head_count_kv", n_kv);
    src->set_int("llama.context_length", seq_len);
    src->set_int("llama.rope.dimension_count", hd);
    src->set_float("llama.rope.freq_base", 10000.0);
    src->set_float("llama.attention.layer_norm_rms_epsilon", 1e-5);

    float* p = reinterpret_cast<float*>(bytes->data() + 28);  // 28 is 4-aligned; floats are read as such
    auto take = [&](std::initializer_list<int64_t> shape) {
        Tensor t = Tensor::view(DType::F32, shape, p);
        p += t.numel();
        return t;
    };
    auto per_layer = [&](const char* name, std::initializer_list<int64_t> shape) {
        for (int64_t l = 0; l < n_layers; ++l)
            src->add_tensor_view("blk." + std::to_string(l) + "." + name, take(shape));
    };
    src->add_tensor_view("token_embd.weight", take({vocab, dim}));
    per_layer("attn_norm.weight", {dim});
    per_layer("attn_q.weight", {dim, dim});
    per_layer("attn_k.weight", {kvd, dim});
    per_layer("attn_v.weight", {kvd, dim});
    per_layer("attn_output.weight", {dim, dim});
    per_layer("ffn_norm.weight", {dim});
    per_layer("ffn_gate.weight", {hidden, dim});  // w1
    per_layer("ffn_down.weight", {dim, hidden});  // w2
    per_layer("ffn_up.weight", {hidden, dim});    // w3
    src->add_tensor_view("output_norm.weight", take({dim}));
    p += seq_len * hd;  // freq_cis_real / freq_cis_imag (unused: RoPE is computed)
    if (!shared) src->add_tensor_view("output.weight", take({vocab, dim}));
    return src;
}

std::shared_ptr<const Decoder> load_llama2c(const std::string& path) { return load_decoder(read_llama2c(path)); }

}  // namespace hg
