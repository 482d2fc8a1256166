// taming GumbelVQ encoder/decoder (see vqgan.h). Block by block as in
// taming/modules/diffusionmodules/model.py; shapes in comments are [C, H, W].
#include "model/vqgan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "core/ops.h"
#include "formats/gguf.h"

namespace hg {

// ------------------------------------------------------------------------------------------ config

void throw_missing_vqgan_key(const std::string& origin, const char* key) {
    fail("%s: VQGAN metadata key %s is missing", origin.c_str(), key);
}
void throw_bad_vqgan_arch(const std::string& origin, const std::string& arch) {
    fail("%s: general.architecture is '%s', expected 'vqgan'", origin.c_str(), arch.c_str());
}
void throw_bad_vqgan_quantizer(const std::string& origin, const std::string& q) {
    fail("%s: vqgan.quantizer '%s' is not supported (only 'gumbel', taming's GumbelVQ)", origin.c_str(), q.c_str());
}
int check_vqgan_int(const std::string& origin, const char* key, int64_t v) {
    HG_CHECK(v >= 0 && v <= (1 << 24), "%s: %s = %lld is out of range", origin.c_str(), key, (long long)v);
    return static_cast<int>(v);
}

bool VqganConfig::has_attn(int res) const {
    return std::find(attn_resolutions.begin(), attn_resolutions.end(), res) != attn_resolutions.end();
}

void VqganConfig::validate(const std::string& origin) const {
    const char* o = origin.c_str();
    // Bounds keep a hostile file from asking for absurd allocations; the released model is far inside.
    HG_CHECK(ch > 0 && ch <= 4096 && ch % norm_groups == 0,
             "%s: vqgan.ch = %d must be a positive multiple of %d (GroupNorm groups), at most 4096", o, ch, norm_groups);
    HG_CHECK(!ch_mult.empty() && ch_mult.size() <= 8, "%s: vqgan.ch_mult must have 1 to 8 levels, has %zu", o,
             ch_mult.size());
    for (int m : ch_mult) HG_CHECK(m > 0 && m <= 16, "%s: vqgan.ch_mult entry %d out of range 1..16", o, m);
    HG_CHECK(num_res_blocks > 0 && num_res_blocks <= 16, "%s: vqgan.num_res_blocks = %d out of range 1..16", o,
             num_res_blocks);
    HG_CHECK(resolution > 0 && resolution <= 4096, "%s: vqgan.resolution = %d out of range 1..4096", o, resolution);
    HG_CHECK(resolution % (1 << (levels() - 1)) == 0, "%s: vqgan.resolution %d is not divisible by 2^%d", o,
             resolution, levels() - 1);
    HG_CHECK(z_channels > 0 && z_channels <= 4096, "%s: vqgan.z_channels = %d out of range 1..4096", o, z_channels);
    HG_CHECK(embed_dim > 0 && embed_dim <= 4096, "%s: vqgan.embed_dim = %d out of range 1..4096", o, embed_dim);
    HG_CHECK(n_embed > 0 && n_embed <= (1 << 20), "%s: vqgan.n_embed = %d out of range 1..2^20", o, n_embed);
    HG_CHECK(in_channels > 0 && in_channels <= 16 && out_ch > 0 && out_ch <= 16,
             "%s: vqgan.in_channels %d / out_ch %d out of range 1..16", o, in_channels, out_ch);
}

std::string VqganConfig::to_string() const {
    auto list = [](const std::vector<int>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
        return s + "]";
    };
    return "ch " + std::to_string(ch) + ", ch_mult " + list(ch_mult) + ", num_res_blocks " +
           std::to_string(num_res_blocks) + ", attn_resolutions " + list(attn_resolutions) + ", z_channels " +
           std::to_string(z_channels) + ", embed_dim " + std::to_string(embed_dim) + ", n_embed " +
           std::to_string(n_embed) + ", resolution " + std::to_string(resolution) + " (latent " +
           std::to_string(latent_size()) + "x" + std::to_string(latent_size()) + ")";
}

void vqgan_config_to_metadata(const VqganConfig& c, TensorStore& s) {
    auto ints = [](const std::vector<int>& v) { return std::vector<int64_t>(v.begin(), v.end()); };
    s.set_string("general.architecture", "vqgan");
    s.set_string("vqgan.quantizer", "gumbel");
    s.set_int("vqgan.ch", c.ch);
    s.set_int_array("vqgan.ch_mult", ints(c.ch_mult));
    s.set_int("vqgan.num_res_blocks", c.num_res_blocks);
    s.set_int_array("vqgan.attn_resolutions", ints(c.attn_resolutions));
    s.set_int("vqgan.z_channels", c.z_channels);
    s.set_int("vqgan.embed_dim", c.embed_dim);
    s.set_int("vqgan.n_embed", c.n_embed);
    s.set_int("vqgan.resolution", c.resolution);
    s.set_int("vqgan.in_channels", c.in_channels);
    s.set_int("vqgan.out_ch", c.out_ch);
}

void vqgan_config_to_gguf(const VqganConfig& cfg, GGUFWriter& w) {
    w.set_u32("vqgan.ch", (uint32_t)cfg.ch);
    w.set_i32_array("vqgan.ch_mult", std::vector<int32_t>(cfg.ch_mult.begin(), cfg.ch_mult.end()));
    w.set_u32("vqgan.num_res_blocks", (uint32_t)cfg.num_res_blocks);
    w.set_i32_array("vqgan.attn_resolutions", std::vector<int32_t>(cfg.attn_resolutions.begin(), cfg.attn_resolutions.end()));
    w.set_u32("vqgan.z_channels", (uint32_t)cfg.z_channels);
    w.set_u32("vqgan.embed_dim", (uint32_t)cfg.embed_dim);
    w.set_u32("vqgan.n_embed", (uint32_t)cfg.n_embed);
    w.set_u32("vqgan.resolution", (uint32_t)cfg.resolution);
    w.set_u32("vqgan.in_channels", (uint32_t)cfg.in_channels);
    w.set_u32("vqgan.out_ch", (uint32_t)cfg.out_ch);
    w.set_string("vqgan.quantizer", "gumbel");
}

// ------------------------------------------------------------------------------------- TensorStore

Tensor& TensorStore::add(const std::string& name, DType type, const std::vector<int64_t>& shape) {
    Entry e;
    Tensor probe = Tensor::view(type, shape.data(), static_cast<int>(shape.size()), nullptr);
    const size_t n = probe.nbytes();
    e.data.reset(new uint8_t[n ? n : 1]());
    e.t = Tensor::view(type, shape.data(), static_cast<int>(shape.size()), e.data.get());
    auto [it, inserted] = tensors_.insert_or_assign(name, std::move(e));
    return it->second.t;
}

std::optional<Tensor> TensorStore::try_tensor(std::string_view name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return std::nullopt;
    return it->second.t;
}

std::vector<std::string> TensorStore::names() const {
    std::vector<std::string> v;
    for (const auto& [k, e] : tensors_) v.push_back(k);
    return v;
}

size_t TensorStore::nbytes() const {
    size_t n = 0;
    for (const auto& [k, e] : tensors_) n += e.t.nbytes();
    return n;
}

std::optional<int64_t> TensorStore::get_int(std::string_view key) const {
    auto it = ints_.find(key);
    return it == ints_.end() ? std::nullopt : std::optional<int64_t>(it->second);
}
std::optional<std::vector<int64_t>> TensorStore::get_int_array(std::string_view key) const {
    auto it = int_arrays_.find(key);
    return it == int_arrays_.end() ? std::nullopt : std::optional<std::vector<int64_t>>(it->second);
}
std::optional<std::string> TensorStore::get_string(std::string_view key) const {
    auto it = strings_.find(key);
    return it == strings_.end() ? std::nullopt : std::optional<std::string>(it->second);
}

// ------------------------------------------------------------------------------------ tensor layout

namespace {

enum class Kind { ConvWeight, Bias, NormWeight, NormBias, Codebook };

// Every tensor of the model in taming's state_dict order and naming: fn(name, shape, kind).
template <class Fn>
void for_each_tensor(const VqganConfig& c, bool with_encoder, Fn&& fn) {
    auto conv = [&](const std::string& p, int64_t cin, int64_t cout, int64_t k) {
        fn(p + ".weight", std::vector<int64_t>{cout, cin, k, k}, Kind::ConvWeight);
        fn(p + ".bias", std::vector<int64_t>{cout}, Kind::Bias);
    };
    auto norm = [&](const std::string& p, int64_t ch) {
        fn(p + ".weight", std::vector<int64_t>{ch}, Kind::NormWeight);
        fn(p + ".bias", std::vector<int64_t>{ch}, Kind::NormBias);
    };
    auto resblock = [&](const std::string& p, int64_t cin, int64_t cout) {
        norm(p + ".norm1", cin);
        conv(p + ".conv1", cin, cout, 3);
        norm(p + ".norm2", cout);
        conv(p + ".conv2", cout, cout, 3);
        if (cin != cout) conv(p + ".nin_shortcut", cin, cout, 1);
    };
    auto attn = [&](const std::string& p, int64_t ch) {
        norm(p + ".norm", ch);
        for (const char* n : {".q", ".k", ".v", ".proj_out"}) conv(p + n, ch, ch, 1);
    };
    const int L = c.levels();
    if (with_encoder) {
        conv("encoder.conv_in", c.in_channels, c.ch, 3);
        int res = c.resolution;
        int64_t block_in = c.ch;
        for (int i = 0; i < L; ++i) {
            const int64_t block_out = (int64_t)c.ch * c.ch_mult[i];
            block_in = (int64_t)c.ch * (i ? c.ch_mult[i - 1] : 1);
            for (int j = 0; j < c.num_res_blocks; ++j) {
                resblock("encoder.down." + std::to_string(i) + ".block." + std::to_string(j), block_in, block_out);
                block_in = block_out;
            }
            if (c.has_attn(res))
                for (int j = 0; j < c.num_res_blocks; ++j)
                    attn("encoder.down." + std::to_string(i) + ".attn." + std::to_string(j), block_in);
            if (i != L - 1) {
                conv("encoder.down." + std::to_string(i) + ".downsample.conv", block_in, block_in, 3);
                res /= 2;
            }
        }
        resblock("encoder.mid.block_1", block_in, block_in);
        attn("encoder.mid.attn_1", block_in);
        resblock("encoder.mid.block_2", block_in, block_in);
        norm("encoder.norm_out", block_in);
        conv("encoder.conv_out", block_in, c.z_channels, 3);
    }
    {
        int64_t block_in = (int64_t)c.ch * c.ch_mult[L - 1];
        int res = c.latent_size();
        conv("decoder.conv_in", c.z_channels, block_in, 3);
        resblock("decoder.mid.block_1", block_in, block_in);
        attn("decoder.mid.attn_1", block_in);
        resblock("decoder.mid.block_2", block_in, block_in);
        // state_dict order is up.0 .. up.{L-1}; the widths depend on the level above, so compute them first
        std::vector<int64_t> level_in(L);
        for (int i = L - 1; i >= 0; --i) {
            level_in[i] = block_in;
            block_in = (int64_t)c.ch * c.ch_mult[i];
        }
        std::vector<int> level_res(L);
        for (int i = L - 1; i >= 0; --i, res *= 2) level_res[i] = res;
        for (int i = 0; i < L; ++i) {
            const int64_t block_out = (int64_t)c.ch * c.ch_mult[i];
            int64_t bi = level_in[i];
            for (int j = 0; j <= c.num_res_blocks; ++j) {
                resblock("decoder.up." + std::to_string(i) + ".block." + std::to_string(j), bi, block_out);
                bi = block_out;
            }
            if (c.has_attn(level_res[i]))
                for (int j = 0; j <= c.num_res_blocks; ++j)
                    attn("decoder.up." + std::to_string(i) + ".attn." + std::to_string(j), block_out);
            if (i != 0) conv("decoder.up." + std::to_string(i) + ".upsample.conv", block_out, block_out, 3);
        }
        norm("decoder.norm_out", c.ch * c.ch_mult[0]);
        conv("decoder.conv_out", (int64_t)c.ch * c.ch_mult[0], c.out_ch, 3);
    }
    if (with_encoder) {
        conv("quant_conv", c.z_channels, c.embed_dim, 1);
    }
    conv("post_quant_conv", c.embed_dim, c.z_channels, 1);
    fn("quantize.embed.weight", std::vector<int64_t>{c.n_embed, c.embed_dim}, Kind::Codebook);
    if (with_encoder) conv("quantize.proj", c.z_channels, c.n_embed, 1);
}

// Portable deterministic uniform floats in [-1, 1) (std distributions differ between libraries).
struct Rng {
    uint64_t s;
    float next() {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        const uint64_t r = s * 0x2545F4914F6CDD1DULL;
        return (float)(r >> 40) * (1.0f / 8388608.0f) - 1.0f;
    }
};

}  // namespace

std::vector<VqganTensorSpec> vqgan_tensor_layout(const VqganConfig& cfg, bool with_encoder) {
    std::vector<VqganTensorSpec> out;
    for_each_tensor(cfg, with_encoder, [&](const std::string& name, const std::vector<int64_t>& shape, Kind) {
        out.push_back({name, shape});
    });
    return out;
}

void vqgan_random_weights(const VqganConfig& cfg, DType conv_type, uint64_t seed, TensorStore& store,
                          bool with_encoder) {
    HG_CHECK(conv_type == DType::F32 || conv_type == DType::F16 || conv_type == DType::BF16,
             "VQGAN convolution weights must be F32, F16 or BF16, not %s", dtype_name(conv_type));
    cfg.validate("random VQGAN");
    vqgan_config_to_metadata(cfg, store);
    Rng rng{seed * 0x9E3779B97F4A7C15ULL + 1};
    int64_t fan_in = 1;  // of the last convolution weight, for its bias
    for_each_tensor(cfg, with_encoder, [&](const std::string& name, const std::vector<int64_t>& shape, Kind kind) {
        const DType type = kind == Kind::ConvWeight ? conv_type : DType::F32;
        Tensor& t = store.add(name, type, shape);
        const int64_t n = t.numel();
        std::vector<float> v(n);
        switch (kind) {
            case Kind::ConvWeight: {  // PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                fan_in = shape[1] * shape[2] * shape[3];
                const float bound = 1.0f / std::sqrt((float)fan_in);
                for (auto& x : v) x = bound * rng.next();
                break;
            }
            case Kind::Bias: {
                const float bound = 1.0f / std::sqrt((float)fan_in);
                for (auto& x : v) x = bound * rng.next();
                break;
            }
            case Kind::NormWeight: for (auto& x : v) x = 1.0f + 0.1f * rng.next(); break;
            case Kind::NormBias: for (auto& x : v) x = 0.1f * rng.next(); break;
            case Kind::Codebook: for (auto& x : v) x = rng.next(); break;
        }
        if (type == DType::F32) std::memcpy(t.data, v.data(), n * sizeof(float));
        else if (type == DType::F16) for (int64_t i = 0; i < n; ++i) t.ptr<uint16_t>()[i] = fp32_to_fp16(v[i]);
        else for (int64_t i = 0; i < n; ++i) t.ptr<uint16_t>()[i] = fp32_to_bf16(v[i]);
    });
}

// -------------------------------------------------------------------------------------------- load

Vqgan::Vqgan(const VqganConfig& cfg, const TensorLookup& lookup, const std::string& origin)
    : cfg_(cfg), origin_(origin) {
    cfg_.validate(origin);
    const char* o = origin_.c_str();

    auto get = [&](const std::string& name, const std::vector<int64_t>& shape, bool any_float) -> Tensor {
        auto t = lookup(name);
        HG_CHECK(t.has_value(), "%s: VQGAN tensor %s is missing", o, name.c_str());
        bool same = t->n_dims == (int)shape.size();
        for (size_t i = 0; same && i < shape.size(); ++i) same = t->shape[i] == shape[i];
        std::string want = "[";
        for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
        want += "]";
        HG_CHECK(same, "%s: VQGAN tensor %s has shape %s, expected %s", o, name.c_str(), t->shape_str().c_str(),
                 want.c_str());
        const bool ok = t->type == DType::F32 || (any_float && (t->type == DType::F16 || t->type == DType::BF16));
        HG_CHECK(ok, "%s: VQGAN tensor %s has type %s; expected %s", o, name.c_str(), dtype_name(t->type),
                 any_float ? "F32, F16 or BF16" : "F32");
        HG_CHECK(t->is_contiguous() && t->data != nullptr, "%s: VQGAN tensor %s is not contiguous", o, name.c_str());
        return *t;
    };
    auto conv = [&](const std::string& p, int64_t cin, int64_t cout, int64_t k) {
        Conv c;
        c.w = get(p + ".weight", {cout, cin, k, k}, true);
        c.b = get(p + ".bias", {cout}, false).ptr<const float>();
        c.cin = cin, c.cout = cout, c.k = k;
        return c;
    };
    auto norm = [&](const std::string& p, int64_t ch) {
        Norm n;
        n.w = get(p + ".weight", {ch}, false).ptr<const float>();
        n.b = get(p + ".bias", {ch}, false).ptr<const float>();
        n.c = ch;
        return n;
    };
    auto resblock = [&](const std::string& p, int64_t cin, int64_t cout) {
        ResBlock b;
        b.norm1 = norm(p + ".norm1", cin);
        b.conv1 = conv(p + ".conv1", cin, cout, 3);
        b.norm2 = norm(p + ".norm2", cout);
        b.conv2 = conv(p + ".conv2", cout, cout, 3);
        if (cin != cout) b.nin_shortcut = conv(p + ".nin_shortcut", cin, cout, 1);
        return b;
    };
    auto attn = [&](const std::string& p, int64_t ch) {
        Attn a;
        a.norm = norm(p + ".norm", ch);
        a.q = conv(p + ".q", ch, ch, 1);
        a.k = conv(p + ".k", ch, ch, 1);
        a.v = conv(p + ".v", ch, ch, 1);
        a.proj_out = conv(p + ".proj_out", ch, ch, 1);
        return a;
    };
    const int L = cfg_.levels();
    const int64_t ch = cfg_.ch;

    // Decoder (taming Decoder.__init__): widths from the lowest resolution up.
    {
        int64_t block_in = ch * cfg_.ch_mult[L - 1];
        int res = cfg_.latent_size();
        dec_.conv_in = conv("decoder.conv_in", cfg_.z_channels, block_in, 3);
        dec_.mid_block_1 = resblock("decoder.mid.block_1", block_in, block_in);
        dec_.mid_attn_1 = attn("decoder.mid.attn_1", block_in);
        dec_.mid_block_2 = resblock("decoder.mid.block_2", block_in, block_in);
        dec_.level.resize(L);
        for (int i = L - 1; i >= 0; --i) {
            Level& lv = dec_.level[i];
            const std::string p = "decoder.up." + std::to_string(i);
            const int64_t block_out = ch * cfg_.ch_mult[i];
            for (int j = 0; j <= cfg_.num_res_blocks; ++j) {
                lv.block.push_back(resblock(p + ".block." + std::to_string(j), block_in, block_out));
                block_in = block_out;
                if (cfg_.has_attn(res)) lv.attn.push_back(attn(p + ".attn." + std::to_string(j), block_in));
            }
            if (i != 0) {
                lv.resample = conv(p + ".upsample.conv", block_in, block_in, 3);
                res *= 2;
            }
        }
        dec_.norm_out = norm("decoder.norm_out", block_in);
        dec_.conv_out = conv("decoder.conv_out", block_in, cfg_.out_ch, 3);
    }
    post_quant_conv_ = conv("post_quant_conv", cfg_.embed_dim, cfg_.z_channels, 1);
    embed_ = get("quantize.embed.weight", {cfg_.n_embed, cfg_.embed_dim}, true);

    // Encoder (taming Encoder.__init__), optional: a decoder-only file has no encoder.* tensors.
    has_encoder_ = lookup("encoder.conv_in.weight").has_value();
    if (has_encoder_) {
        HG_CHECK(cfg_.embed_dim == cfg_.z_channels,
                 "%s: the GumbelVQ encoder needs embed_dim == z_channels (quantize.proj takes z_channels inputs "
                 "from quant_conv's embed_dim outputs); got %d and %d",
                 o, cfg_.embed_dim, cfg_.z_channels);
        enc_.conv_in = conv("encoder.conv_in", cfg_.in_channels, ch, 3);
        int res = cfg_.resolution;
        int64_t block_in = ch;
        enc_.level.resize(L);
        for (int i = 0; i < L; ++i) {
            Level& lv = enc_.level[i];
            const std::string p = "encoder.down." + std::to_string(i);
            block_in = ch * (i ? cfg_.ch_mult[i - 1] : 1);
            const int64_t block_out = ch * cfg_.ch_mult[i];
            for (int j = 0; j < cfg_.num_res_blocks; ++j) {
                lv.block.push_back(resblock(p + ".block." + std::to_string(j), block_in, block_out));
                block_in = block_out;
                if (cfg_.has_attn(res)) lv.attn.push_back(attn(p + ".attn." + std::to_string(j), block_in));
            }
            if (i != L - 1) {
                lv.resample = conv(p + ".downsample.conv", block_in, block_in, 3);
                res /= 2;
            }
        }
        enc_.mid_block_1 = resblock("encoder.mid.block_1", block_in, block_in);
        enc_.mid_attn_1 = attn("encoder.mid.attn_1", block_in);
        enc_.mid_block_2 = resblock("encoder.mid.block_2", block_in, block_in);
        enc_.norm_out = norm("encoder.norm_out", block_in);
        enc_.conv_out = conv("encoder.conv_out", block_in, cfg_.z_channels, 3);
        quant_conv_ = conv("quant_conv", cfg_.z_channels, cfg_.embed_dim, 1);
        Tensor pw = get("quantize.proj.weight", {cfg_.n_embed, cfg_.z_channels, 1, 1}, true);
        proj_w_ = Tensor::view(pw.type, {(int64_t)cfg_.n_embed, (int64_t)cfg_.z_channels}, pw.data);
        proj_b_ = get("quantize.proj.bias", {cfg_.n_embed}, false).ptr<const float>();
    }
}

// ------------------------------------------------------------------------------------------ blocks

// out[cout, Ho, Wo] = conv(in[cin, H, W]); padding defaults to k/2 on every side (taming's padding=1 / 0).
void Vqgan::conv(const Conv& c, const float* in, float* out, int64_t H, int64_t W, ThreadPool& pool, int stride,
                 int pad_t, int pad_l, int pad_b, int pad_r) const {
    const int p = static_cast<int>(c.k / 2);
    kernels().conv2d(out, in, c.cin, H, W, c.w, c.b, stride, pad_t < 0 ? p : pad_t, pad_l < 0 ? p : pad_l,
                     pad_b < 0 ? p : pad_b, pad_r < 0 ? p : pad_r, pool);
}

// out = GroupNorm(32, eps 1e-6)(in), then swish x*sigmoid(x) if asked (taming's nonlinearity).
void Vqgan::norm_swish(const Norm& n, const float* in, float* out, int64_t HW, bool swish) const {
    kernels().groupnorm(out, in, n.w, n.b, n.c, HW, VqganConfig::norm_groups, VqganConfig::norm_eps);
    if (swish) kernels().silu(out, out, n.c * HW);
}

// ResnetBlock (temb_channels = 0, dropout 0), in place on x: [cin, H, W] -> [cout, H, W].
//   h = conv1(swish(norm1(x))); h = conv2(swish(norm2(h))); x = shortcut(x) + h
void Vqgan::resnet_block(const ResBlock& b, float* x, int64_t H, int64_t W, float* t1, float* t2,
                         ThreadPool& pool) const {
    const int64_t HW = H * W;
    norm_swish(b.norm1, x, t1, HW, true);      // t1 [cin]
    conv(b.conv1, t1, t2, H, W, pool);         // t2 [cout]
    norm_swish(b.norm2, t2, t1, HW, true);     // t1 [cout]
    conv(b.conv2, t1, t2, H, W, pool);         // t2 [cout] = h
    const int64_t n = b.conv2.cout * HW;
    if (b.nin_shortcut) {
        conv(*b.nin_shortcut, x, t1, H, W, pool);  // t1 [cout] = nin_shortcut(x)
        kernels().add(x, t1, t2, n);
    } else {
        kernels().add(x, x, t2, n);
    }
}

// AttnBlock, in place on x [C, H, W]: single head over the H*W positions,
//   h = norm(x); q, k, v = 1x1 convs; w = softmax(q^T k / sqrt(C)); h = v w^T; x = x + proj_out(h).
// The 1x1 convs run as matmuls on position-major copies [HW, C], which is what attention() takes.
void Vqgan::attn_block(const Attn& a, float* x, int64_t H, int64_t W, float* t1, ThreadPool& pool) {
    const int64_t HW = H * W, C = a.norm.c;
    norm_swish(a.norm, x, t1, HW, false);  // t1 [C, HW]
    float *xt = attn_[0], *qt = attn_[1], *kt = attn_[2], *vt = attn_[3], *ot = attn_[4];
    for (int64_t c = 0; c < C; ++c)  // xt [HW, C]
        for (int64_t p = 0; p < HW; ++p) xt[p * C + c] = t1[c * HW + p];
    auto linear = [&](const Conv& cv, const float* in, float* out) {
        const Tensor w = Tensor::view(cv.w.type, {C, C}, cv.w.data);  // [C, C, 1, 1] as [C, C]
        kernels().matmul(out, in, w, cv.b, HW, pool);                 // out [HW, C]
    };
    linear(a.q, xt, qt);
    linear(a.k, xt, kt);
    linear(a.v, xt, vt);
    AttentionParams ap;
    ap.n_head = 1, ap.n_kv_head = 1, ap.head_dim = static_cast<int>(C);
    ap.scale = static_cast<float>(std::pow((double)C, -0.5));  // int(c)**(-0.5), applied in float32
    ap.causal = false;
    kernels().attention(ot, qt, HW, C, kt, vt, DType::F32, HW, C * sizeof(float), ap, pool);  // ot [HW, C]
    linear(a.proj_out, ot, xt);                                                                // xt [HW, C]
    for (int64_t c = 0; c < C; ++c)
        for (int64_t p = 0; p < HW; ++p) x[c * HW + p] += xt[p * C + c];
}

void Vqgan::middle(const Half& h, float* x, int64_t H, int64_t W, float* t1, float* t2, ThreadPool& pool) {
    resnet_block(h.mid_block_1, x, H, W, t1, t2, pool);
    attn_block(h.mid_attn_1, x, H, W, t1, pool);
    resnet_block(h.mid_block_2, x, H, W, t1, t2, pool);
}

// Largest activation (floats) of a pass, and the largest attention input (HW * C).
size_t Vqgan::max_activation(bool encoder) const {
    const int L = cfg_.levels();
    const size_t ch = cfg_.ch, S = cfg_.latent_size();
    size_t m = 0;
    if (encoder) {
        size_t res = cfg_.resolution;
        m = std::max(m, (size_t)cfg_.in_channels * res * res);
        for (int i = 0; i < L; ++i) {
            const size_t cin = ch * (i ? cfg_.ch_mult[i - 1] : 1), cout = ch * cfg_.ch_mult[i];
            m = std::max(m, std::max(cin, cout) * res * res);
            if (i != L - 1) res /= 2;
        }
        m = std::max(m, (size_t)cfg_.z_channels * S * S);
        m = std::max(m, (size_t)cfg_.embed_dim * S * S);
        m = std::max(m, (size_t)cfg_.n_embed * S * S);  // logits [HW, n_embed]
    } else {
        m = std::max(m, (size_t)std::max(cfg_.embed_dim, cfg_.z_channels) * S * S);
        size_t res = S, block_in = ch * cfg_.ch_mult[L - 1];
        for (int i = L - 1; i >= 0; --i) {
            const size_t block_out = ch * cfg_.ch_mult[i];
            m = std::max(m, std::max(block_in, block_out) * res * res);
            block_in = block_out;
            if (i != 0) {
                res *= 2;
                m = std::max(m, block_in * res * res);
            }
        }
    }
    return m;
}

void Vqgan::alloc_scratch(bool encoder) {
    arena_.reset();
    const size_t n = max_activation(encoder);
    for (auto& b : buf_) b = arena_.alloc<float>(n);
    // attention scratch: the largest H*W*C over the attention blocks of this half
    size_t a = 0;
    const Half& h = encoder ? enc_ : dec_;
    const int L = cfg_.levels();
    size_t res = encoder ? cfg_.resolution : cfg_.latent_size() << (L - 1);
    for (int i = 0; i < L; ++i) {  // level i has side resolution / 2^i in both halves
        if (!h.level[i].attn.empty()) a = std::max(a, (size_t)h.level[i].attn[0].norm.c * res * res);
        res /= 2;
    }
    a = std::max(a, (size_t)h.mid_attn_1.norm.c * cfg_.latent_size() * cfg_.latent_size());
    for (auto& b : attn_) b = arena_.alloc<float>(a);
}

// ----------------------------------------------------------------------------------------- forward

// GumbelVQ.decode(quantize.get_codebook_entry(indices)): codebook rows in raster order -> z_q [E, S, S]
// -> post_quant_conv -> Decoder.
void Vqgan::decode(std::span<const int32_t> indices, float* out, ThreadPool& pool) {
    const int64_t S = cfg_.latent_size(), n = cfg_.n_tokens(), E = cfg_.embed_dim;
    HG_CHECK((int64_t)indices.size() == n, "%s: VQGAN decode needs %lld indices (%lldx%lld), got %zu",
             origin_.c_str(), (long long)n, (long long)S, (long long)S, indices.size());
    for (int64_t i = 0; i < n; ++i)
        HG_CHECK(indices[i] >= 0 && indices[i] < cfg_.n_embed,
                 "%s: VQ index %d at position %lld (row %lld, column %lld) is outside the codebook (%d codes)",
                 origin_.c_str(), indices[i], (long long)i, (long long)(i / S), (long long)(i % S), cfg_.n_embed);
    alloc_scratch(false);
    float *x = buf_[0], *t1 = buf_[1], *t2 = buf_[2];

    embedding_lookup(t1, embed_, indices.data(), n);  // t1 [S*S, E]
    for (int64_t e = 0; e < E; ++e)                    // t2 [E, S, S] = z_q
        for (int64_t p = 0; p < n; ++p) t2[e * n + p] = t1[p * E + e];
    conv(post_quant_conv_, t2, t1, S, S, pool);  // t1 [z, S, S]
    conv(dec_.conv_in, t1, x, S, S, pool);       // x [block_in, S, S]

    int64_t H = S;
    middle(dec_, x, H, H, t1, t2, pool);
    for (int i = cfg_.levels() - 1; i >= 0; --i) {
        const Level& lv = dec_.level[i];
        for (size_t j = 0; j < lv.block.size(); ++j) {
            resnet_block(lv.block[j], x, H, H, t1, t2, pool);
            if (!lv.attn.empty()) attn_block(lv.attn[j], x, H, H, t1, pool);
        }
        if (lv.resample) {  // Upsample: nearest x2, conv3x3
            upsample_nearest2x(t1, x, lv.resample->cin, H, H);
            H *= 2;
            conv(*lv.resample, t1, t2, H, H, pool);
            std::swap(x, t2);
        }
    }
    norm_swish(dec_.norm_out, x, t1, H * H, true);
    conv(dec_.conv_out, t1, out, H, H, pool);  // out [out_ch, R, R]
}

// GumbelVQ.encode up to the logits: Encoder -> quant_conv -> quantize.proj, then argmax per position.
void Vqgan::encode(const float* image, std::span<int32_t> indices, ThreadPool& pool, float* logits) {
    HG_CHECK(has_encoder_, "%s: this VQGAN file has no encoder (encoder.* tensors); it can only decode",
             origin_.c_str());
    const int64_t n = cfg_.n_tokens();
    HG_CHECK((int64_t)indices.size() == n, "%s: VQGAN encode writes %lld indices, got room for %zu",
             origin_.c_str(), (long long)n, indices.size());
    alloc_scratch(true);
    float *x = buf_[0], *t1 = buf_[1], *t2 = buf_[2];

    int64_t H = cfg_.resolution;
    conv(enc_.conv_in, image, x, H, H, pool);  // x [ch, R, R]
    for (int i = 0; i < cfg_.levels(); ++i) {
        const Level& lv = enc_.level[i];
        for (size_t j = 0; j < lv.block.size(); ++j) {
            resnet_block(lv.block[j], x, H, H, t1, t2, pool);
            if (!lv.attn.empty()) attn_block(lv.attn[j], x, H, H, t1, pool);
        }
        if (lv.resample) {  // Downsample: pad (0, 1, 0, 1) with zeros, conv3x3 stride 2, no padding
            conv(*lv.resample, x, t1, H, H, pool, 2, 0, 0, 1, 1);
            H /= 2;
            std::swap(x, t1);
        }
    }
    middle(enc_, x, H, H, t1, t2, pool);
    norm_swish(enc_.norm_out, x, t1, H * H, true);
    conv(enc_.conv_out, t1, t2, H, H, pool);   // t2 [z, S, S]
    conv(quant_conv_, t2, t1, H, H, pool);     // t1 [E, S, S]
    const int64_t E = cfg_.embed_dim;
    for (int64_t p = 0; p < n; ++p)            // t2 [S*S, E]
        for (int64_t e = 0; e < E; ++e) t2[p * E + e] = t1[e * n + p];
    float* lg = logits ? logits : x;           // [S*S, n_embed]
    kernels().matmul(lg, t2, proj_w_, proj_b_, n, pool);
    for (int64_t p = 0; p < n; ++p) indices[p] = static_cast<int32_t>(argmax(lg + p * cfg_.n_embed, cfg_.n_embed));
}

// ------------------------------------------------------------------------------------------- pixels

void vqgan_to_pixels(const float* x, int64_t channels, int64_t size, uint8_t* rgb) {
    const int64_t HW = size * size;
    for (int64_t c = 0; c < channels; ++c)
        for (int64_t p = 0; p < HW; ++p) {
            float v = x[c * HW + p];
            if (std::isnan(v)) v = -1.0f;  // torch.clamp keeps NaN; numpy's cast of it is undefined: use 0
            v = std::min(std::max(v, -1.0f), 1.0f);
            v = (v + 1.0f) / 2.0f;
            const float s = 255.0f * v;  // float32 product, as numpy's 255 * float32 array
            rgb[p * channels + c] = static_cast<uint8_t>(s);  // truncation, s in [0, 255]
        }
}

void vqgan_from_pixels(const uint8_t* pixels, int64_t channels, int64_t size, float* x) {
    const int64_t HW = size * size;
    for (int64_t c = 0; c < channels; ++c)
        for (int64_t p = 0; p < HW; ++p) {
            const float v = static_cast<float>(pixels[p * channels + c]) / 255.0f;  // ToTensor
            x[c * HW + p] = 2.0f * v - 1.0f;                                        // preprocess_vqgan
        }
}

// -------------------------------------------------------------------------------------- index files

std::vector<int32_t> parse_vq_indices(std::string_view text, int64_t n_tokens, int64_t n_embed,
                                      const std::string& origin) {
    std::vector<int32_t> out;
    int line = 1;
    size_t i = 0;
    while (i < text.size()) {
        const char ch = text[i];
        if (ch == '\n') {
            ++line, ++i;
        } else if (ch == ' ' || ch == '\t' || ch == '\r' || ch == ',') {
            ++i;
        } else if (ch == '#') {
            while (i < text.size() && text[i] != '\n') ++i;
        } else if (ch >= '0' && ch <= '9') {
            int64_t v = 0;
            const size_t start = i;
            while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
                v = v * 10 + (text[i] - '0');
                HG_CHECK(v < n_embed, "%s: line %d: VQ index %.*s is outside the codebook (%lld codes)",
                         origin.c_str(), line, (int)std::min<size_t>(20, text.size() - start), text.data() + start,
                         (long long)n_embed);
                ++i;
            }
            HG_CHECK(i == text.size() || !std::isalpha(static_cast<unsigned char>(text[i])),
                     "%s: line %d: '%.*s' is not a VQ index", origin.c_str(), line,
                     (int)std::min<size_t>(20, text.size() - start), text.data() + start);
            HG_CHECK((int64_t)out.size() < n_tokens, "%s: line %d: more than %lld VQ indices", origin.c_str(), line,
                     (long long)n_tokens);
            out.push_back(static_cast<int32_t>(v));
        } else {
            fail("%s: line %d: unexpected character '%c' in a VQ index list (decimal integers separated by "
                 "spaces, commas or newlines; '#' comments)",
                 origin.c_str(), line, std::isprint(static_cast<unsigned char>(ch)) ? ch : '?');
        }
    }
    HG_CHECK((int64_t)out.size() == n_tokens, "%s: %zu VQ indices, expected %lld", origin.c_str(), out.size(),
             (long long)n_tokens);
    return out;
}

std::string format_vq_indices(std::span<const int32_t> indices, int64_t side) {
    std::string s;
    for (size_t i = 0; i < indices.size(); ++i) {
        s += std::to_string(indices[i]);
        s += ((int64_t)(i + 1) % side == 0) ? '\n' : ' ';
    }
    return s;
}

}  // namespace hg
