// Quantization (`healthgpt quantize`, `convert --type`): the per-tensor type rules against
// llama.cpp's Q4_K_M rule (llama_tensor_get_type, written out by hand below), the fallbacks, and the
// logit error of Q8_0 / Q4_K versions of a tiny Phi-3-shaped model against its F32 version:
// max |err|, max rel, NMSE over 320 positions and the top-1 agreement of the next-token argmax.
// The file sizes of the released models per type are printed (docs/MODELS.md takes them from here).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

#include "convert/convert.h"
#include "convert/quantize.h"
#include "core/quants.h"
#include "formats/gguf.h"
#include "model/decoder.h"
#include "parity/convert_fixture.h"
#include "parity/decoder_fixture.h"

using namespace hg;
namespace fs = std::filesystem;

// llama.cpp's use_more_bits for 32 layers: i < 4, i >= 28, (i - 4) % 3 == 2 -> these 16 layers.
TEST(ConvertQuant, Q4KMixFollowsLlamaCppRule) {
    const std::vector<int> q6 = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
    for (int i = 0; i < 32; ++i) {
        const bool more = std::find(q6.begin(), q6.end(), i) != q6.end();
        const DType want = more ? DType::Q6_K : DType::Q4_K;
        EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::AttnV, i, 32, 5120).type, want) << i;
        EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::FfnDown, i, 32, 8192).type, want) << i;
        EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::Matrix, i, 32, 3072).type, DType::Q4_K) << i;
        EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::AttnQKV, i, 32, 3072).type, DType::Q6_K) << i;
    }
    EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::Output, -1, 32, 3072).type, DType::Q6_K);
    EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::TokenEmbd, -1, 32, 3072).type, DType::Q4_K);
    // fallbacks: not whole 256-blocks -> Q8_0; not whole 32-blocks -> F16
    EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::Matrix, 0, 2, 48).type, DType::F16);
    EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::Matrix, 0, 2, 64).type, DType::Q8_0);
    EXPECT_EQ(choose_type(WeightType::Q4_K, DType::BF16, TensorRole::Output, -1, 2, 96).type, DType::Q8_0);
    EXPECT_EQ(choose_type(WeightType::Q8_0, DType::BF16, TensorRole::Matrix, 0, 2, 48).type, DType::F16);
    EXPECT_EQ(choose_type(WeightType::Q8_0, DType::F32, TensorRole::Output, -1, 2, 64).type, DType::Q8_0);
    // kept in higher precision whatever is asked
    for (WeightType w : {WeightType::F16, WeightType::BF16, WeightType::Q8_0, WeightType::Q4_K}) {
        EXPECT_EQ(choose_type(w, DType::BF16, TensorRole::Small, 0, 2, 4096).type, DType::F32);
        EXPECT_EQ(choose_type(w, DType::BF16, TensorRole::Router, 0, 2, 4096).type, DType::F32);
    }
    EXPECT_EQ(choose_type(WeightType::Q4_K, DType::F32, TensorRole::Conv, -1, 0, 3).type, DType::F16);
    EXPECT_EQ(choose_type(WeightType::Q4_K, DType::F32, TensorRole::Codebook, -1, 0, 256).type, DType::F32);
    // auto keeps the source
    EXPECT_EQ(choose_type(WeightType::Auto, DType::BF16, TensorRole::LoraA, 0, 2, 3072).type, DType::BF16);
    EXPECT_EQ(choose_type(WeightType::Auto, DType::F16, TensorRole::Matrix, 0, 2, 3072).type, DType::F16);
}

namespace {

// The tensor list of a released text model (config.json numbers, healthgpt-reference.md §3.1).
struct Shape {
    const char* name;
    const char* arch;
    int64_t E, L, F, H, KV, D, V;
    bool tied;
};

uint64_t file_bytes(const Shape& s, WeightType w) {
    uint64_t total = 0;
    auto add = [&](const std::string& name, int64_t rows, int64_t cols, int layer) {
        const TensorRole role = classify_tensor(s.arch, false, name, rows == 1 ? 1 : 2, s.tied);
        const TypeChoice c = choose_type(w, DType::BF16, role, layer, (int)s.L, cols);
        total += row_bytes(c.type, cols) * rows;
    };
    add("token_embd.weight", s.V, s.E, -1);
    add("output_norm.weight", 1, s.E, -1);
    if (!s.tied) add("output.weight", s.V, s.E, -1);
    for (int i = 0; i < s.L; ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        add(b + "attn_norm.weight", 1, s.E, i);
        add(b + "ffn_norm.weight", 1, s.E, i);
        if (std::string(s.arch) == "phi3") {
            add(b + "attn_qkv.weight", (s.H + 2 * s.KV) * s.D, s.E, i);
            add(b + "ffn_up.weight", 2 * s.F, s.E, i);
        } else {
            add(b + "attn_q.weight", s.H * s.D, s.E, i);
            add(b + "attn_k.weight", s.KV * s.D, s.E, i);
            add(b + "attn_v.weight", s.KV * s.D, s.E, i);
            for (const char* bb : {"attn_q.bias", "attn_k.bias", "attn_v.bias"}) add(b + bb, 1, s.H * s.D, i);
            add(b + "ffn_gate.weight", s.F, s.E, i);
            add(b + "ffn_up.weight", s.F, s.E, i);
        }
        add(b + "attn_output.weight", s.E, s.H * s.D, i);
        add(b + "ffn_down.weight", s.E, s.F, i);
    }
    return total;
}

}  // namespace

TEST(ConvertQuant, SizesOfTheReleasedBaseModels) {
    const Shape shapes[] = {
        {"Phi-3-mini-4k (M3)", "phi3", 3072, 32, 8192, 32, 32, 96, 32064, false},
        {"phi-4 (L14)", "phi3", 5120, 40, 17920, 40, 10, 128, 100352, false},
        {"Qwen2.5-32B (XL32)", "qwen2", 5120, 64, 27648, 40, 8, 128, 152064, false},
    };
    std::printf("%-20s %10s %10s %10s %10s %10s\n", "text.gguf", "f32", "f16/bf16", "q8_0", "q4_k", "q4_k bpw");
    for (const Shape& s : shapes) {
        const double gib = double(1ull << 30);
        const uint64_t f32 = file_bytes(s, WeightType::F32), q4 = file_bytes(s, WeightType::Q4_K);
        std::printf("%-20s %9.2fG %9.2fG %9.2fG %9.2fG %10.2f\n", s.name, f32 / gib, file_bytes(s, WeightType::BF16) / gib,
                    file_bytes(s, WeightType::Q8_0) / gib, q4 / gib, 32.0 * q4 / f32);
        EXPECT_LT(q4, file_bytes(s, WeightType::Q8_0));
    }
}

namespace {

// A Phi-3-shaped model with every matrix row a whole number of 256-blocks (so Q4_K applies
// everywhere), random weights scaled like tests/reference/gen_decoder.py (O(1) activations).
fs::path write_f32_model(const fs::path& dir) {
    const int64_t E = 256, L = 4, F = 512, H = 4, D = 64, V = 512;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    GGUFWriter w;
    w.set_string("general.architecture", "phi3");
    w.set_u32("phi3.context_length", 512);
    w.set_u32("phi3.embedding_length", E);
    w.set_u32("phi3.feed_forward_length", F);
    w.set_u32("phi3.block_count", L);
    w.set_u32("phi3.attention.head_count", H);
    w.set_u32("phi3.attention.head_count_kv", H);
    w.set_f32("phi3.attention.layer_norm_rms_epsilon", 1e-5f);
    w.set_f32("phi3.rope.freq_base", 10000.f);
    w.set_u32("phi3.rope.dimension_count", D);
    w.set_u32("phi3.attention.sliding_window", 0);
    w.set_u32("general.file_type", 0);
    auto mat = [&](const std::string& name, int64_t rows, int64_t cols, float scale) {
        std::vector<float> v((size_t)(rows * cols));
        for (auto& x : v) x = scale * nd(rng);
        w.add_tensor(name, DType::F32, {rows, cols}, v.data());
    };
    auto norm = [&](const std::string& name) {
        std::vector<float> v((size_t)E);
        for (auto& x : v) x = 1.0f + 0.2f * nd(rng);
        w.add_tensor(name, DType::F32, {E}, v.data());
    };
    mat("token_embd.weight", V, E, 1.0f);
    for (int i = 0; i < L; ++i) {
        const std::string b = "blk." + std::to_string(i) + ".";
        norm(b + "attn_norm.weight");
        mat(b + "attn_qkv.weight", 3 * H * D, E, 1.0f / std::sqrt((float)E));
        mat(b + "attn_output.weight", E, H * D, 1.0f / std::sqrt((float)(H * D)));
        norm(b + "ffn_norm.weight");
        mat(b + "ffn_up.weight", 2 * F, E, 1.0f / std::sqrt((float)E));
        mat(b + "ffn_down.weight", E, F, 1.0f / std::sqrt((float)F));
    }
    norm("output_norm.weight");
    mat("output.weight", V, E, 1.0f / std::sqrt((float)E));
    const fs::path p = dir / "text-f32.gguf";
    w.write(p);
    return p;
}

struct QuantErr {
    hgtest::ErrorStats e;
    double top1 = 0;
    double scale = 0;
};

QuantErr measure(const Decoder& ref_d, const Decoder& q_d, const std::vector<int32_t>& ids) {
    const auto a = dectest::logits_all(ref_d, ids, DType::F32, &kernels());
    const auto b = dectest::logits_all(q_d, ids, DType::F32, &kernels());
    QuantErr r;
    r.e = hgtest::compare(b, a);
    const int64_t V = ref_d.hparams().n_vocab;
    int same = 0;
    for (size_t p = 0; p < ids.size(); ++p) {
        const float* x = a.data() + p * V;
        const float* y = b.data() + p * V;
        same += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
        for (int64_t k = 0; k < V; ++k) r.scale = std::max(r.scale, (double)std::fabs(x[k]));
    }
    r.top1 = (double)same / ids.size();
    return r;
}

}  // namespace

// Bounds, derived from the formats' step on N(0, s^2) weights (not from our output): a block of 32
// spans about +-2.1 s, so the weight NMSE of one matrix is step^2/12 / s^2 with step = 4.2 s / 255
// (Q8_0: 2.3e-5) or 4.2 s / 15 (Q4_K: 6.5e-3). The logits pass through 18 quantized matrices (4
// layers x 4 + embedding + head) whose errors add in variance at most: NMSE <= 18 x that, i.e.
// 4.2e-4 (bound 1e-3) for Q8_0 and 0.12 (bound 0.1: some of them are Q6_K) for Q4_K. Top-1
// agreement of the argmax: >= 95% for Q8_0; for Q4_K >= 60%, a gross-error guard only (a mis-typed
// or mis-ordered tensor gives ~1/512). Measured values are printed (docs/MODELS.md, "Quantization").
TEST(ConvertQuant, LogitErrorOfQ8AndQ4KAgainstF32) {
    const fs::path dir = convtest::scratch("quant");
    const fs::path f32 = write_f32_model(dir);
    std::mt19937 rng(11);
    std::vector<int32_t> ids(320);
    for (auto& t : ids) t = (int32_t)(rng() % 512);
    auto ref_d = Decoder::load(f32.string());
    struct Row {
        WeightType w;
        double nmse_bound, top1_bound;
    };
    for (const Row& row : {Row{WeightType::Q8_0, 1e-3, 0.95}, Row{WeightType::Q4_K, 0.1, 0.60}}) {
        const fs::path out = dir / (std::string("text-") + weight_type_name(row.w) + ".gguf");
        QuantizeOptions opt;
        opt.type = row.w;
        const auto t0 = std::chrono::steady_clock::now();
        const QuantizeReport rep = quantize_gguf(f32, out, opt);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        auto q = Decoder::load(out.string());
        const QuantErr m = measure(*ref_d, *q, ids);
        std::printf("%-5s %6.2f MiB -> %6.2f MiB (%.2fx) in %.2f s; %zu positions: max_abs %.4f (%.2e of the logit scale %.2f), "
                    "max_rel %.3g, NMSE %.3e, top-1 agreement %.1f%%\n",
                    weight_type_name(row.w), fs::file_size(f32) / 1048576.0, fs::file_size(out) / 1048576.0,
                    (double)fs::file_size(f32) / fs::file_size(out), secs, ids.size(), m.e.max_abs, m.e.max_abs / m.scale,
                    m.scale, m.e.max_rel, m.e.nmse, 100 * m.top1);
        for (const auto& l : rep.lines)
            if (l.rfind("  ", 0) == 0) std::printf("%s\n", l.c_str());
        EXPECT_EQ(m.e.n_nonfinite, 0u);
        EXPECT_LE(m.e.nmse, row.nmse_bound);
        EXPECT_GE(m.top1, row.top1_bound);
    }
    // the mix of the Q4_K file
    auto f = GGUFFile::open(dir / "text-q4_k.gguf");
    EXPECT_EQ(f->tensor("output.weight").type, DType::Q6_K);
    EXPECT_EQ(f->tensor("blk.0.attn_qkv.weight").type, DType::Q6_K);
    // 4 layers: use_more_bits(i, 4) = i < 0 || i >= 3 || i % 3 == 2 -> layers 2 and 3
    EXPECT_EQ(f->tensor("blk.0.ffn_down.weight").type, DType::Q4_K);
    EXPECT_EQ(f->tensor("blk.1.ffn_down.weight").type, DType::Q4_K);
    EXPECT_EQ(f->tensor("blk.2.ffn_down.weight").type, DType::Q6_K);
    EXPECT_EQ(f->tensor("blk.3.ffn_down.weight").type, DType::Q6_K);
    EXPECT_EQ(f->tensor("blk.1.ffn_up.weight").type, DType::Q4_K);
    EXPECT_EQ(f->tensor("token_embd.weight").type, DType::Q4_K);
    EXPECT_EQ(f->tensor("blk.1.attn_norm.weight").type, DType::F32);
    EXPECT_EQ(f->get_int("general.file_type").value_or(0), 15);
    EXPECT_EQ(f->get_int("general.quantization_version").value_or(0), 2);
}

// convert --type q4_k on the tiny Phi-3-like base: its 48-wide rows are not whole blocks, so every
// matrix falls back (F16 for 48, Q8_0 for 64-wide ffn_down rows), and the model still matches
// transformers within the F16 rounding.
TEST(ConvertQuant, ConvertTypeFallbacksOnTheTinyBase) {
    const fs::path d = convtest::scratch("tiny_q4k");
    const auto r = convtest::run_cli("convert --base " + convtest::q(convtest::fix("phi3")) + " --type q4_k -o " + convtest::q(d));
    ASSERT_EQ(r.rc, 0) << r.out;
    auto f = GGUFFile::open(d / "text.gguf");
    EXPECT_EQ(f->tensor("blk.0.attn_qkv.weight").type, DType::F16);
    EXPECT_EQ(f->tensor("blk.0.ffn_down.weight").type, DType::Q8_0);
    EXPECT_EQ(f->tensor("output.weight").type, DType::F16);
    EXPECT_EQ(f->get_int("general.file_type").value_or(0), 15);
    const auto& ref = convtest::Reference::get();
    auto dec = Decoder::load((d / "text.gguf").string());
    const auto ids = ref.json()["phi3"]["prompt_ids"].get<std::vector<int32_t>>();
    const auto got = dectest::logits_all(*dec, ids, DType::F32, &kernels());
    const auto e = hgtest::compare(got, ref.array("phi3/logits"));
    std::printf("tiny phi3 --type q4_k (fallbacks): %s\n", hgtest::to_string(e).c_str());
    EXPECT_LE(e.nmse, 1e-3);
}

namespace {

// Every tensor of `out` against `in`: same names, order and shapes; a tensor whose type changed holds
// exactly the bytes of core/quants' quantize_row (bit-exact with ggml, tests/conformance) applied to
// the input's values row by row; an unchanged one is byte-identical. Metadata: every key of `in`
// with the same value, except general.file_type / general.quantization_version. Returns the number
// of changed tensors.
int expect_requantized(const fs::path& in, const fs::path& out, const std::string& what) {
    auto a = GGUFFile::open(in);
    auto b = GGUFFile::open(out);
    EXPECT_EQ(a->tensors().size(), b->tensors().size()) << what;
    int changed = 0;
    for (size_t i = 0; i < std::min(a->tensors().size(), b->tensors().size()); ++i) {
        const GGUFTensorInfo& ta = a->tensors()[i];
        const GGUFTensorInfo& tb = b->tensors()[i];
        EXPECT_EQ(ta.name, tb.name) << what;
        EXPECT_EQ(ta.shape(), tb.shape()) << what << " " << ta.name;
        const Tensor xa = a->tensor(ta), xb = b->tensor(tb);
        const auto* pa = static_cast<const uint8_t*>(xa.data);
        const auto* pb = static_cast<const uint8_t*>(xb.data);
        if (ta.type == tb.type) {
            EXPECT_EQ(ta.nbytes, tb.nbytes) << what << " " << ta.name;
            EXPECT_EQ(std::memcmp(pa, pb, std::min(ta.nbytes, tb.nbytes)), 0) << what << " " << ta.name << " changed bytes";
            continue;
        }
        ++changed;
        const int64_t cols = ta.ne[0], rows = ta.numel() / cols;
        const size_t rb_in = row_bytes(ta.type, cols), rb_out = row_bytes(tb.type, cols);
        if (tb.nbytes != rb_out * rows) {
            ADD_FAILURE() << what << " " << ta.name << ": " << tb.nbytes << " bytes for " << rows << " rows of " << rb_out;
            continue;
        }
        std::vector<float> row((size_t)cols);
        std::vector<uint8_t> want(rb_out);
        int64_t bad_rows = 0;
        for (int64_t r = 0; r < rows; ++r) {
            dequantize_row(ta.type, pa + r * rb_in, row.data(), cols);
            quantize_row(tb.type, row.data(), want.data(), cols);
            bad_rows += std::memcmp(want.data(), pb + r * rb_out, rb_out) != 0;
        }
        EXPECT_EQ(bad_rows, 0) << what << " " << ta.name << " " << dtype_name(ta.type) << " -> " << dtype_name(tb.type);
    }
    size_t keys = 0;
    for (const GGUFKV& kv : a->metadata()) {
        if (kv.key == "general.file_type" || kv.key == "general.quantization_version") continue;
        const GGUFValue* v = b->find(kv.key);
        EXPECT_TRUE(v && *v == kv.value) << what << " metadata " << kv.key;
        ++keys;
    }
    std::printf("%s: %zu tensors (%d re-stored bit-exactly, %zu byte-identical), %zu metadata keys kept\n", what.c_str(),
                a->tensors().size(), changed, a->tensors().size() - changed, keys);
    return changed;
}

}  // namespace

// `healthgpt quantize` through the CLI on the 4-layer F32 model (every matrix whole blocks) for each
// type, then on the converted M3-like folder's files (BF16 text model with fallbacks, F32 CLIP, a
// plugin whose routers must stay F32).
TEST(ConvertQuant, QuantizedBytesEqualTheQuantizerAndTheRestIsUntouched) {
    const fs::path dir = convtest::scratch("quant_bytes");
    const fs::path f32 = write_f32_model(dir);
    for (const char* t : {"F16", "BF16", "Q8_0", "Q4_K_M"}) {
        const fs::path out = dir / (std::string("text-") + t + ".gguf");
        const auto r = convtest::run_cli("quantize " + convtest::q(f32) + " " + convtest::q(out) + " --type " + t);
        ASSERT_EQ(r.rc, 0) << r.out;
        EXPECT_NE(r.out.find("MiB ->"), std::string::npos) << r.out;  // size and time are reported
        EXPECT_GT(expect_requantized(f32, out, std::string("tiny f32 -> ") + t), 0);
    }
    auto q4 = GGUFFile::open(dir / "text-Q4_K_M.gguf");
    EXPECT_EQ(q4->get_int("general.file_type").value_or(0), 15);
    EXPECT_EQ(q4->tensor("blk.0.attn_norm.weight").type, DType::F32);

    const fs::path m3 = dir / "m3";
    const auto c = convtest::convert_m3(m3);
    ASSERT_EQ(c.rc, 0) << c.out;
    for (const char* f : {"text.gguf", "vision.gguf", "plugins/com.gguf"}) {
        const fs::path out = dir / (std::string("m3-") + fs::path(f).filename().string());
        const auto r = convtest::run_cli("quantize " + convtest::q(m3 / f) + " " + convtest::q(out) + " --type q8_0");
        ASSERT_EQ(r.rc, 0) << r.out;
        expect_requantized(m3 / f, out, std::string("m3 ") + f + " -> q8_0");
    }
    auto com = GGUFFile::open(dir / "m3-com.gguf");
    for (const auto& t : com->tensors())
        if (t.name.find("route") != std::string::npos) {
            EXPECT_EQ(t.type, DType::F32) << t.name;
        }
}
