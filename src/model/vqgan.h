// The taming-transformers VQGAN with a Gumbel quantizer (`GumbelVQ`), as HealthGPT uses it to turn
// 1,024 VQ indices into a 256x256 image (decoder) and images into indices (encoder).
//
// Reads like taming/modules/diffusionmodules/model.py (Encoder, Decoder, ResnetBlock, AttnBlock,
// Upsample, Downsample) and taming/models/vqgan.py (GumbelVQ: quant_conv, post_quant_conv, quantize).
// Tensor names are taming's state_dict keys ("decoder.up.3.block.0.conv1.weight", ...), the config
// comes from `vqgan.*` metadata (docs/MODELS.md, "VQGAN"). Any config of that family runs: the released
// OpenImages f8 one (ch 128, ch_mult [1,1,2,4], 2 res blocks, attention at 32, z = embed = 256, 8192
// codes, 256 px) and the tiny ones the parity tests use.
//
// Activations are float32 [C, H, W] (PyTorch NCHW with N = 1); weights are Tensor views (convolutions in
// F32/F16/BF16, norms and biases F32). A forward pass keeps three ping-pong buffers of the largest
// activation plus attention scratch in an Arena: nothing else is allocated, and no im2col is built.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace hg {

class GGUFWriter;

struct VqganConfig {
    int ch = 128;                          // base width
    std::vector<int> ch_mult{1, 1, 2, 4};  // width multiplier per level; levels - 1 = number of 2x steps
    int num_res_blocks = 2;                // encoder blocks per level (the decoder has one more)
    std::vector<int> attn_resolutions{32}; // side lengths at which an AttnBlock follows every ResnetBlock
    int z_channels = 256;
    int embed_dim = 256;                   // codebook vector size
    int n_embed = 8192;                    // codebook size
    int resolution = 256;                  // image side
    int in_channels = 3, out_ch = 3;

    // Fixed by taming's Normalize(): GroupNorm(32, eps 1e-6, affine).
    static constexpr int norm_groups = 32;
    static constexpr float norm_eps = 1e-6f;

    int levels() const { return static_cast<int>(ch_mult.size()); }
    int latent_size() const { return resolution >> (levels() - 1); }  // 32 for f8 at 256 px
    int n_tokens() const { return latent_size() * latent_size(); }    // 1,024
    bool has_attn(int res) const;

    // Throws hg::Error (naming `origin`) when the config is not one this implementation runs.
    void validate(const std::string& origin) const;
    std::string to_string() const;
};

// Helpers of vqgan_config_from_metadata (they throw hg::Error with the origin and the key).
[[noreturn]] void throw_missing_vqgan_key(const std::string& origin, const char* key);
[[noreturn]] void throw_bad_vqgan_arch(const std::string& origin, const std::string& arch);
[[noreturn]] void throw_bad_vqgan_quantizer(const std::string& origin, const std::string& q);
int check_vqgan_int(const std::string& origin, const char* key, int64_t v);

// Reads `vqgan.*` metadata from anything with GGUFFile's getters (get_int, get_int_array,
// get_string): a GGUFFile, or the in-memory map the tests use. Missing keys are errors.
template <class Meta>
VqganConfig vqgan_config_from_metadata(const Meta& m, const std::string& origin);

// A name -> tensor map that owns its storage: random weights for benchmarks, fixtures in tests.
class TensorStore {
public:
    // Adds a zero-filled tensor (shape in PyTorch order) and returns it for filling.
    Tensor& add(const std::string& name, DType type, const std::vector<int64_t>& shape);
    std::optional<Tensor> try_tensor(std::string_view name) const;
    std::vector<std::string> names() const;
    size_t nbytes() const;  // total tensor bytes

    // Metadata, with the getters vqgan_config_from_metadata() needs.
    void set_int(const std::string& key, int64_t v) { ints_[key] = v; }
    void set_int_array(const std::string& key, std::vector<int64_t> v) { int_arrays_[key] = std::move(v); }
    void set_string(const std::string& key, std::string v) { strings_[key] = std::move(v); }
    std::optional<int64_t> get_int(std::string_view key) const;
    std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;
    std::optional<std::string> get_string(std::string_view key) const;

private:
    struct Entry {
        Tensor t;
        std::unique_ptr<uint8_t[]> data;
    };
    std::map<std::string, Entry, std::less<>> tensors_;
    std::map<std::string, int64_t, std::less<>> ints_;
    std::map<std::string, std::vector<int64_t>, std::less<>> int_arrays_;
    std::map<std::string, std::string, std::less<>> strings_;
};

// Writes the config as `vqgan.*` metadata (the keys vqgan_config_from_metadata reads).
void vqgan_config_to_metadata(const VqganConfig& cfg, TensorStore& store);
// The same keys written into a GGUF file (what `convert` and the demo model write).
void vqgan_config_to_gguf(const VqganConfig& cfg, GGUFWriter& w);

// Every tensor of `cfg` in taming's state_dict order and naming, with its shape (PyTorch order):
// what a converter expects in a checkpoint. The decoder-only layout without `with_encoder`.
struct VqganTensorSpec {
    std::string name;
    std::vector<int64_t> shape;
};
std::vector<VqganTensorSpec> vqgan_tensor_layout(const VqganConfig& cfg, bool with_encoder = true);

// Random weights with the full tensor layout of `cfg` (PyTorch-like uniform init, GroupNorm affine
// around 1/0), convolution weights stored as conv_type (F32, F16 or BF16). For benchmarks and tests.
void vqgan_random_weights(const VqganConfig& cfg, DType conv_type, uint64_t seed, TensorStore& store,
                          bool with_encoder = true);

class Vqgan {
public:
    // Looks every tensor up by its taming state_dict name and checks its shape and type.
    // The encoder half (encoder.*, quant_conv, quantize.proj) is optional: without it encode() throws.
    using TensorLookup = std::function<std::optional<Tensor>(std::string_view)>;
    Vqgan(const VqganConfig& cfg, const TensorLookup& lookup, const std::string& origin);

    // Any source with try_tensor(name) -> optional<Tensor> and the metadata getters (GGUFFile, TensorStore).
    // The source must outlive the model (tensors are views into it).
    template <class Source>
    static Vqgan load(const Source& src, const std::string& origin) {
        return Vqgan(vqgan_config_from_metadata(src, origin),
                     [&src](std::string_view name) { return src.try_tensor(name); }, origin);
    }

    const VqganConfig& config() const { return cfg_; }
    bool has_encoder() const { return has_encoder_; }

    // indices: n_tokens() codebook ids in raster order (row-major latent grid, top-left first).
    // out: [out_ch, resolution, resolution] decoder output (before the to-pixels step).
    void decode(std::span<const int32_t> indices, float* out, ThreadPool& pool);

    // image: [in_channels, resolution, resolution] in [-1, 1] (to_model_input()).
    // indices: n_tokens() deterministic codes argmax(quantize.proj(quant_conv(encoder(x)))) per position.
    // The reference GumbelQuantize samples gumbel_softmax(hard=True) even in eval mode (random);
    // the argmax is its noise-free mode. logits (optional): [n_tokens, n_embed], position-major.
    void encode(const float* image, std::span<int32_t> indices, ThreadPool& pool, float* logits = nullptr);

    // Bytes of activation scratch the last forward pass used (the arena's high-water mark).
    size_t scratch_bytes() const { return arena_.high_water(); }

private:
    struct Conv {
        Tensor w;
        const float* b = nullptr;
        int64_t cin = 0, cout = 0, k = 0;
    };
    struct Norm {
        const float* w = nullptr;
        const float* b = nullptr;
        int64_t c = 0;
    };
    struct ResBlock {
        Norm norm1, norm2;
        Conv conv1, conv2;
        std::optional<Conv> nin_shortcut;
    };
    struct Attn {
        Norm norm;
        Conv q, k, v, proj_out;
    };
    struct Level {
        std::vector<ResBlock> block;
        std::vector<Attn> attn;
        std::optional<Conv> resample;  // encoder: downsample.conv; decoder: upsample.conv
    };
    struct Half {  // encoder or decoder
        Conv conv_in;
        std::vector<Level> level;  // indexed like taming's down[i] / up[i]
        ResBlock mid_block_1, mid_block_2;
        Attn mid_attn_1;
        Norm norm_out;
        Conv conv_out;
    };

    // Forward pieces over x[C, H, W]; t1, t2 are scratch buffers of the largest activation.
    void conv(const Conv& c, const float* in, float* out, int64_t H, int64_t W, ThreadPool& pool, int stride = 1,
              int pad_t = -1, int pad_l = -1, int pad_b = -1, int pad_r = -1) const;
    void norm_swish(const Norm& n, const float* in, float* out, int64_t HW, bool swish) const;
    void resnet_block(const ResBlock& b, float* x, int64_t H, int64_t W, float* t1, float* t2,
                      ThreadPool& pool) const;
    void attn_block(const Attn& a, float* x, int64_t H, int64_t W, float* t1, ThreadPool& pool);
    void middle(const Half& h, float* x, int64_t H, int64_t W, float* t1, float* t2, ThreadPool& pool);
    size_t max_activation(bool encoder) const;  // floats
    void alloc_scratch(bool encoder);

    VqganConfig cfg_;
    std::string origin_;
    Half enc_, dec_;
    bool has_encoder_ = false;
    Conv quant_conv_, post_quant_conv_;
    Tensor embed_;       // quantize.embed.weight [n_embed, embed_dim]
    Tensor proj_w_;      // quantize.proj.weight viewed [n_embed, embed_dim]
    const float* proj_b_ = nullptr;

    Arena arena_;
    float* buf_[3] = {};  // ping-pong activation buffers
    float* attn_[5] = {}; // attention scratch: x^T, q^T, k^T, v^T, out^T (each HW*C)
};

// Decoder output -> pixels exactly as HealthGPT's idx2img.custom_to_pil: clamp to [-1, 1],
// (x + 1) / 2, 255 * x in float32, truncation to uint8. x: [3, S, S] -> rgb: [S, S, 3] interleaved.
void vqgan_to_pixels(const float* x, int64_t channels, int64_t size, uint8_t* rgb);

// Interleaved 8-bit [S, S, C] -> model input [C, S, S]: ToTensor (v / 255) then 2x - 1, in float32.
void vqgan_from_pixels(const uint8_t* pixels, int64_t channels, int64_t size, float* x);

// Parses an index list: decimal integers separated by whitespace or commas; '#' starts a comment
// that runs to the end of the line. Each must lie in [0, n_embed) and there must be exactly
// n_tokens of them. Errors name `origin`, the line and the offending text.
std::vector<int32_t> parse_vq_indices(std::string_view text, int64_t n_tokens, int64_t n_embed,
                                      const std::string& origin);
// One row of the latent grid per line (side values per line), space-separated.
std::string format_vq_indices(std::span<const int32_t> indices, int64_t side);

// ---------------------------------------------------------------------------------------------------

template <class Meta>
VqganConfig vqgan_config_from_metadata(const Meta& m, const std::string& origin) {
    auto need_int = [&](const char* key) -> int {
        auto v = m.get_int(key);
        if (!v) throw_missing_vqgan_key(origin, key);
        return check_vqgan_int(origin, key, *v);
    };
    auto need_ints = [&](const char* key) {
        auto v = m.get_int_array(key);
        if (!v) throw_missing_vqgan_key(origin, key);
        std::vector<int> out;
        for (int64_t x : *v) out.push_back(check_vqgan_int(origin, key, x));
        return out;
    };
    if (auto arch = m.get_string("general.architecture"); !arch || *arch != "vqgan")
        throw_bad_vqgan_arch(origin, arch ? *arch : std::string("(missing)"));
    if (auto q = m.get_string("vqgan.quantizer"); q && *q != "gumbel")
        throw_bad_vqgan_quantizer(origin, *q);
    VqganConfig c;
    c.ch = need_int("vqgan.ch");
    c.ch_mult = need_ints("vqgan.ch_mult");
    c.num_res_blocks = need_int("vqgan.num_res_blocks");
    c.attn_resolutions = need_ints("vqgan.attn_resolutions");
    c.z_channels = need_int("vqgan.z_channels");
    c.embed_dim = need_int("vqgan.embed_dim");
    c.n_embed = need_int("vqgan.n_embed");
    c.resolution = need_int("vqgan.resolution");
    c.in_channels = need_int("vqgan.in_channels");
    c.out_ch = need_int("vqgan.out_ch");
    c.validate(origin);
    return c;
}


}  // namespace hg
