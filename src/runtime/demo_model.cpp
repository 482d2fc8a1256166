#include "runtime/demo_model.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/gguf.h"
#include "model/clip_vision.h"
#include "model/hlora.h"
#include "model/projector.h"
#include "model/vqgan.h"
#include "runtime/model.h"
#include "runtime/sampler.h"
#include "text/gguf_tokenizer.h"
#include "text/vocab.h"

namespace hg {

namespace {

struct Normal {
    Rng rng;
    explicit Normal(uint64_t seed) : rng(seed) {}
    float operator()() {  // Box-Muller
        const double u1 = std::max(rng.uniform(), 1e-300), u2 = rng.uniform();
        return (float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
    std::vector<float> fill(int64_t n, float scale, float offset = 0.0f) {
        std::vector<float> v((size_t)n);
        for (float& x : v) x = offset + scale * (*this)();
        return v;
    }
};

void add_f32(GGUFWriter& w, const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v) {
    w.add_tensor(name, DType::F32, shape, v.data());
}

// A linear weight [out, in] with O(1) outputs for O(1) inputs.
std::vector<float> linear(Normal& n, int64_t out, int64_t in) { return n.fill(out * in, 1.0f / std::sqrt((float)in)); }

// Words the tokenizer knows as whole pieces (plus every prefix, so BPE can build them).
const char* const kWords[] = {
    "the", "a", "an", "of", "and", "or", "in", "on", "at", "to", "is", "are", "was", "be", "with", "no", "not",
    "this", "that", "there", "what", "which", "where", "how", "does", "do", "show", "shows", "image", "images",
    "scan", "view", "left", "right", "upper", "lower", "middle", "chest", "lung", "lungs", "heart", "rib", "ribs",
    "spine", "liver", "kidney", "brain", "bone", "bones", "tissue", "mass", "lesion", "nodule", "opacity",
    "effusion", "fracture", "normal", "abnormal", "mild", "moderate", "severe", "small", "large", "acute",
    "chronic", "size", "shape", "density", "contrast", "finding", "findings", "sign", "signs", "patient", "study",
    "x-ray", "ray", "radiograph", "CT", "MRI", "MR", "ultrasound", "axial", "slice", "field", "lobe", "cardiac",
    "pleural", "pulmonary", "consolidation", "pneumonia", "edema", "atelectasis", "cardiomegaly", "modality",
    "organ", "yes", "present", "absent", "seen", "visible", "evidence", "suggest", "suggests", "likely",
    "possible", "consistent", "report", "impression", "random", "tiny", "model", "answer", "question", "medical",
    "You", "you", "are", "helpful", "AI", "assistant", "I", "it", "its", "can", "may", "should", "see", "here",
};

// Weights as gen_decoder.py seeds them (Demo: O(1) activations, well separated logits), or as a
// from-scratch training run starts (Training: GPT-2's N(0, 0.02), residual outputs scaled by
// 1/sqrt(2 * layers), norms 1, biases 0).
struct Init {
    Normal& n;
    RandomInit kind;
    int64_t layers;
    std::vector<float> embedding(int64_t rows, int64_t dim) {
        return n.fill(rows * dim, kind == RandomInit::Demo ? 1.0f : 0.02f);
    }
    std::vector<float> lin(int64_t out, int64_t in, bool residual_out = false) {
        if (kind == RandomInit::Demo) return linear(n, out, in);
        return n.fill(out * in, residual_out ? 0.02f / std::sqrt(2.0f * (float)layers) : 0.02f);
    }
    std::vector<float> norm(int64_t dim, float demo_scale) {
        return kind == RandomInit::Demo ? n.fill(dim, demo_scale, 1.0f) : std::vector<float>((size_t)dim, 1.0f);
    }
    std::vector<float> bias(int64_t dim, float demo_scale) {
        return kind == RandomInit::Demo ? n.fill(dim, demo_scale) : std::vector<float>((size_t)dim, 0.0f);
    }
};

void write_text_model(const std::filesystem::path& path, const RandomModelShape& S, const text::Vocab& vocab,
                      Init& in) {
    const int64_t n_rows = (vocab.size() + 63) / 64 * 64;  // padded like Phi-3's 32064 rows for 32011 tokens
    const int32_t eot = vocab.model_size, assistant = eot + 1, end = eot + 3;
    const int64_t E = S.embd, F = S.ff, head_dim = S.embd / S.heads;

    GGUFWriter w;
    w.set_string("general.architecture", "phi3");
    w.set_string("general.name", S.name);
    if (!S.notice.empty()) w.set_string("healthgpt.notice", S.notice);
    w.set_u32("phi3.context_length", (uint32_t)S.ctx);
    w.set_u32("phi3.embedding_length", (uint32_t)E);
    w.set_u32("phi3.feed_forward_length", (uint32_t)F);
    w.set_u32("phi3.block_count", (uint32_t)S.layers);
    w.set_u32("phi3.attention.head_count", (uint32_t)S.heads);
    w.set_u32("phi3.attention.head_count_kv", (uint32_t)S.heads);
    w.set_f32("phi3.attention.layer_norm_rms_epsilon", 1e-5f);
    w.set_f32("phi3.rope.freq_base", 10000.0f);
    w.set_u32("phi3.rope.dimension_count", (uint32_t)head_dim);
    w.set_u32("phi3.rope.scaling.original_context_length", (uint32_t)S.ctx);
    w.set_u32("phi3.attention.sliding_window", 2047);
    w.set_u32("general.file_type", 0);  // all F32
    w.set_string(model_keys::kChatTemplate, "phi3_instruct");
    w.set_i32_array(model_keys::kStopTokenIds, {eot, assistant, end});
    text::TokenizerWriteOptions to;
    to.n_rows = n_rows;
    text::write_tokenizer(w, vocab, to);

    add_f32(w, "token_embd.weight", {n_rows, E}, in.embedding(n_rows, E));
    for (int64_t l = 0; l < S.layers; ++l) {
        const std::string b = "blk." + std::to_string(l) + ".";
        add_f32(w, b + "attn_norm.weight", {E}, in.norm(E, 0.2f));
        add_f32(w, b + "attn_qkv.weight", {3 * E, E}, in.lin(3 * E, E));
        add_f32(w, b + "attn_output.weight", {E, E}, in.lin(E, E, true));
        add_f32(w, b + "ffn_norm.weight", {E}, in.norm(E, 0.2f));
        add_f32(w, b + "ffn_up.weight", {2 * F, E}, in.lin(2 * F, E));
        add_f32(w, b + "ffn_down.weight", {E, F}, in.lin(E, F, true));
    }
    add_f32(w, "output_norm.weight", {E}, in.norm(E, 0.2f));
    add_f32(w, "output.weight", {n_rows, E}, in.lin(n_rows, E));
    w.write(path);
}

void write_vision(const std::filesystem::path& path, const RandomModelShape& S, Init& in) {
    namespace k = clip_keys;
    namespace nm = clip_names;
    GGUFWriter w;
    w.set_string(k::kArchitecture, "clip");
    w.set_string("general.name", S.name + " vision tower");
    w.set_bool(k::kHasVisionEncoder, true);
    w.set_bool(k::kHasTextEncoder, false);
    w.set_bool(k::kHasLlavaProjector, false);
    w.set_bool(k::kUseGelu, false);
    w.set_u32(k::kImageSize, (uint32_t)S.image);
    w.set_u32(k::kPatchSize, (uint32_t)S.patch);
    w.set_u32(k::kEmbeddingLength, (uint32_t)S.vis_hidden);
    w.set_u32(k::kFeedForwardLength, (uint32_t)S.vis_ff);
    w.set_u32(k::kBlockCount, (uint32_t)S.vis_layers);
    w.set_u32(k::kHeadCount, (uint32_t)S.vis_heads);
    w.set_f32(k::kLayerNormEps, 1e-5f);
    w.set_u32(k::kProjectionDim, (uint32_t)S.vis_hidden);
    w.set_f32_array(k::kImageMean, {0.48145466f, 0.4578275f, 0.40821073f});
    w.set_f32_array(k::kImageStd, {0.26862954f, 0.26130258f, 0.27577711f});
    const int64_t H = S.vis_hidden, FF = S.vis_ff, P = S.patch, n_pos = (S.image / P) * (S.image / P) + 1;
    Init vin{in.n, in.kind, S.vis_layers};
    add_f32(w, nm::kPatchEmbd, {H, 3, P, P},
            vin.kind == RandomInit::Demo ? in.n.fill(H * 3 * P * P, 1.0f / std::sqrt(3.0f * P * P))
                                         : in.n.fill(H * 3 * P * P, 0.02f));
    add_f32(w, nm::kClassEmbd, {H}, vin.kind == RandomInit::Demo ? in.n.fill(H, 1.0f) : in.n.fill(H, 0.02f));
    add_f32(w, nm::kPositionEmbd, {n_pos, H},
            vin.kind == RandomInit::Demo ? in.n.fill(n_pos * H, 0.5f) : in.n.fill(n_pos * H, 0.02f));
    add_f32(w, nm::kPreLnWeight, {H}, vin.norm(H, 0.1f));
    add_f32(w, nm::kPreLnBias, {H}, vin.bias(H, 0.1f));
    for (int i = 0; i < S.vis_layers; ++i) {
        for (const char* ln : {"ln1", "ln2"}) {
            add_f32(w, nm::block(i, ln, "weight"), {H}, vin.norm(H, 0.1f));
            add_f32(w, nm::block(i, ln, "bias"), {H}, vin.bias(H, 0.1f));
        }
        for (const char* lin : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
            add_f32(w, nm::block(i, lin, "weight"), {H, H}, vin.lin(H, H, std::string(lin) == "attn_out"));
            add_f32(w, nm::block(i, lin, "bias"), {H}, vin.bias(H, 0.1f));
        }
        add_f32(w, nm::block(i, "ffn_up", "weight"), {FF, H}, vin.lin(FF, H));
        add_f32(w, nm::block(i, "ffn_up", "bias"), {FF}, vin.bias(FF, 0.1f));
        add_f32(w, nm::block(i, "ffn_down", "weight"), {H, FF}, vin.lin(H, FF, true));
        add_f32(w, nm::block(i, "ffn_down", "bias"), {H}, vin.bias(H, 0.1f));
    }
    w.write(path);
}

// A comprehension plugin (vision layer -2), or a generation one (vision layer 1) with its own
// embedding and head rows for the whole extended vocabulary (fusion_layer_weights.bin's role).
void write_plugin(const std::filesystem::path& path, const RandomModelShape& S, int64_t vocab_size, Normal& n,
                  bool generation = false) {
    namespace k = plugin_keys;
    const int64_t E = S.embd, F = S.ff, R = S.rank;
    GGUFWriter w;
    w.set_string("general.architecture", "phi3");
    w.set_string(k::kGeneralType, "adapter");
    w.set_string("general.name", S.name + (generation ? " generation plugin" : " comprehension plugin"));
    w.set_string(k::kTask, generation ? "generation" : "comprehension");
    w.set_i32(k::kVisionLayer, generation ? 1 : -2);
    w.set_u32(k::kRank, (uint32_t)R);
    w.set_f32(k::kAlpha, S.alpha);
    w.set_u32(k::kExperts, (uint32_t)S.experts);
    w.set_string(k::kProjectorType, "mlp2x_gelu");
    w.set_string(k::kBaseArchitecture, "phi3");
    struct Lin { const char* name; int64_t out, in; };
    const Lin lins[] = {{"attn_qkv", 3 * E, E}, {"attn_output", E, E}, {"ffn_up", 2 * F, E}, {"ffn_down", E, F}};
    for (int64_t l = 0; l < S.layers; ++l)
        for (const Lin& L : lins) {
            add_f32(w, plugin_names::tensor((int)l, L.name, plugin_names::kA), {R, L.in}, linear(n, R, L.in));
            add_f32(w, plugin_names::tensor((int)l, L.name, plugin_names::kB), {L.out, R},
                    n.fill(L.out * R, 0.5f / std::sqrt((float)R)));
            add_f32(w, plugin_names::tensor((int)l, L.name, plugin_names::kRoute), {S.experts, L.in},
                    linear(n, S.experts, L.in));
        }
    add_f32(w, projector_names::kW0, {E, S.vis_hidden}, linear(n, E, S.vis_hidden));
    add_f32(w, projector_names::kB0, {E}, n.fill(E, 0.1f));
    add_f32(w, projector_names::kW2, {E, E}, linear(n, E, E));
    add_f32(w, projector_names::kB2, {E}, n.fill(E, 0.1f));
    if (generation) {
        // len(tokenizer) + <start_index>, <idx_0..8191>, <end_index>, <pixel_newline> rows
        const int64_t V = vocab_size + 8195;
        add_f32(w, plugin_names::kTokenEmbd, {V, E}, n.fill(V * E, 1.0f));
        add_f32(w, plugin_names::kOutput, {V, E}, linear(n, V, E));
    }
    w.write(path);
}

// A small taming GumbelVQ (f8, 256 px, 32 x 32 = 1,024 tokens, all 8,192 codes) with random weights:
// the released geometry at a fraction of the width, so `generate` runs end to end in seconds.
void write_vqgan(const std::filesystem::path& path, uint64_t seed) {
    VqganConfig cfg;
    cfg.ch = 32;
    cfg.ch_mult = {1, 1, 1, 1};
    cfg.num_res_blocks = 1;
    cfg.attn_resolutions = {32};
    cfg.z_channels = cfg.embed_dim = 32;
    cfg.n_embed = 8192;
    cfg.resolution = 256;
    cfg.validate("demo VQGAN");
    TensorStore store;
    vqgan_random_weights(cfg, DType::F32, seed, store, /*with_encoder=*/true);
    GGUFWriter w;
    w.set_string("general.architecture", "vqgan");
    w.set_string("general.name", "healthgpt-demo-tiny VQGAN (random weights)");
    vqgan_config_to_gguf(cfg, w);
    for (const auto& spec : vqgan_tensor_layout(cfg, true)) w.add_tensor(spec.name, *store.try_tensor(spec.name));
    w.write(path);
}

}  // namespace

text::Vocab word_vocab(std::span<const std::string> words, const std::string& source) {
    using text::TokenType;
    text::Vocab v;
    v.source = source;
    v.kind = text::VocabKind::spm_bpe;
    auto piece = [&](std::string s, TokenType t, float score) {
        v.tokens.push_back(std::move(s));
        v.types.push_back(t);
        v.scores.push_back(score);
    };
    piece("<unk>", TokenType::unknown, 0.0f);
    piece("<s>", TokenType::control, 0.0f);
    piece("</s>", TokenType::control, 0.0f);
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) piece(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", TokenType::byte, 0.0f);
    // Pieces: single characters, then each word's prefixes ("▁" + w[:k]) in order. A piece's score is
    // minus its position, so shorter prefixes merge first and every word is reachable.
    std::vector<std::string> pieces;
    std::set<std::string> seen;
    auto add_piece = [&](const std::string& s) {
        if (seen.insert(s).second) pieces.push_back(s);
    };
    add_piece("\xE2\x96\x81");  // "▁"
    for (char c = 'a'; c <= 'z'; ++c) add_piece(std::string(1, c));
    for (char c = 'A'; c <= 'Z'; ++c) add_piece(std::string(1, c));
    for (char c = '0'; c <= '9'; ++c) add_piece(std::string(1, c));
    for (char c : std::string(".,?!:;'-()/%\"")) add_piece(std::string(1, c));
    for (const std::string& word : words) {
        for (size_t k = 1; k <= word.size(); ++k) add_piece("\xE2\x96\x81" + word.substr(0, k));
    }
    for (size_t i = 0; i < pieces.size(); ++i) piece(pieces[i], TokenType::normal, -(float)i);
    v.model_size = v.size();

    // Phi-3's chat tokens as added tokens (special, not normalised; rstrip except <|endoftext|>).
    auto added = [&](int32_t id, const std::string& content, bool rstrip) {
        text::AddedToken a;
        a.id = id;
        a.content = content;
        a.special = true;
        a.rstrip = rstrip;
        a.normalized = false;
        v.added.push_back(a);
    };
    added(0, "<unk>", false);
    added(1, "<s>", false);
    added(2, "</s>", false);
    for (const char* s : {"<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"}) {
        const int32_t id = v.size();
        piece(s, TokenType::control, 0.0f);
        added(id, s, std::string(s) != "<|endoftext|>");
    }
    v.byte_fallback = true;
    v.add_dummy_prefix = true;
    v.space_mode = text::SpaceMode::prepend_each;
    v.bos_id = 1;
    v.unk_id = 0;
    v.eos_id = v.pad_id = v.model_size;  // <|endoftext|>
    v.add_bos = v.fast_add_bos = false;  // Phi-3's current tokenizer_config
    v.add_eos = v.fast_add_eos = false;
    v.legacy = false;
    v.add_prefix_space = true;
    v.slow_class = "LlamaTokenizer";
    v.validate();
    return v;
}

imaging::RgbImage synthetic_radiograph(int size) {
    HG_CHECK(size >= 16 && size <= 4096, "synthetic radiograph: size %d out of range", size);
    imaging::RgbImage img(size, size);
    const double S = size, cx = S / 2;
    auto inside = [](double x, double y, double ex, double ey, double rx, double ry) {
        const double dx = (x - ex) / rx, dy = (y - ey) / ry;
        return dx * dx + dy * dy <= 1.0;
    };
    uint64_t noise = 0x2545F4914F6CDD1Dull;
    for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
            double v = 18;
            if (inside(x, y, cx, 0.56 * S, 0.44 * S, 0.47 * S)) v = 115;                       // body
            const bool lung = inside(x, y, cx - 0.19 * S, 0.48 * S, 0.13 * S, 0.3 * S) ||
                              inside(x, y, cx + 0.19 * S, 0.48 * S, 0.13 * S, 0.3 * S);
            if (lung) v = 48;                                                                  // air
            if (inside(x, y, cx + 0.05 * S, 0.63 * S, 0.11 * S, 0.12 * S)) v = 150;            // heart
            if (std::fabs(x - cx) < 0.028 * S && y > 0.12 * S && v > 30) v = 200;              // spine
            const double u = std::fabs(x - cx) / (0.32 * S);
            if (u > 0.12 && u < 1.0 && v > 30)
                for (int k = 0; k < 8; ++k) {                                                  // ribs
                    const double y0 = 0.22 * S + k * 0.065 * S + 0.06 * S * u * u;
                    if (std::fabs(y - y0) < 0.009 * S) v = std::min(255.0, v + 55);
                }
            noise ^= noise << 13, noise ^= noise >> 7, noise ^= noise << 17;
            v += (double)(noise % 9) - 4;
            const uint8_t g = (uint8_t)std::clamp(v, 0.0, 255.0);
            uint8_t* p = img.px(x, y);
            p[0] = p[1] = p[2] = g;
        }
    return img;
}

namespace {

void check_shape(const RandomModelShape& shape) {
    HG_CHECK(shape.embd > 0 && shape.heads > 0 && shape.embd % shape.heads == 0 && (shape.embd / shape.heads) % 2 == 0,
             "model shape: hidden %lld must split into %lld heads of an even size", (long long)shape.embd,
             (long long)shape.heads);
    HG_CHECK(shape.layers > 0 && shape.ff > 0 && shape.vis_layers > 0 && shape.vis_ff > 0, "model shape: empty layer");
    HG_CHECK(shape.vis_heads > 0 && shape.vis_hidden % shape.vis_heads == 0,
             "model shape: vision hidden %d not divisible by %d heads", shape.vis_hidden, shape.vis_heads);
    HG_CHECK(shape.patch > 0 && shape.image % shape.patch == 0, "model shape: image %d not a multiple of patch %d",
             shape.image, shape.patch);
}

// text.gguf and vision.gguf from one random stream (the demo's plugins continue it).
void write_base(const std::filesystem::path& dir, const RandomModelShape& shape, const text::Vocab& vocab, Init& init) {
    check_shape(shape);
    std::error_code ec;
    std::filesystem::create_directories(dir / "plugins", ec);
    HG_CHECK(!ec, "%s: cannot create the folder: %s", dir.string().c_str(), ec.message().c_str());
    write_text_model(dir / "text.gguf", shape, vocab, init);
    write_vision(dir / "vision.gguf", shape, init);
}

}  // namespace

void write_random_model(const std::filesystem::path& dir, const RandomModelShape& shape, const text::Vocab& vocab,
                        RandomInit kind, uint64_t seed) {
    Normal n(seed);
    Init init{n, kind, shape.layers};
    write_base(dir, shape, vocab, init);
}

void write_demo_model(const std::filesystem::path& dir, const DemoModelOptions& opt) {
    const RandomModelShape shape;  // the demo's defaults
    const std::vector<std::string> words(std::begin(kWords), std::end(kWords));
    const text::Vocab vocab = word_vocab(words, "healthgpt demo vocabulary");
    Normal n(opt.seed);
    Init init{n, RandomInit::Demo, shape.layers};
    write_base(dir, shape, vocab, init);
    write_plugin(dir / "plugins" / "com.gguf", shape, vocab.size(), n);
    write_plugin(dir / "plugins" / "gen.gguf", shape, vocab.size(), n, /*generation=*/true);
    write_vqgan(dir / "vqgan.gguf", opt.seed + 1);
    if (opt.write_example_image) imaging::write_png(dir / "example.png", synthetic_radiograph());
}

}  // namespace hg
