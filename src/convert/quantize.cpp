// Storage-type rules for converted tensors, row conversion, and GGUF -> GGUF quantization.
#include "convert/quantize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/quants.h"
#include "formats/gguf.h"

namespace hg {

const char* weight_type_name(WeightType t) {
    switch (t) {
        case WeightType::Auto: return "auto";
        case WeightType::F32: return "f32";
        case WeightType::F16: return "f16";
        case WeightType::BF16: return "bf16";
        case WeightType::Q8_0: return "q8_0";
        case WeightType::Q4_K: return "q4_k";
    }
    return "?";
}

std::optional<WeightType> weight_type_from_name(std::string_view s) {
    std::string l(s);
    for (char& c : l) c = (char)std::tolower((unsigned char)c);
    if (l == "auto") return WeightType::Auto;
    if (l == "f32") return WeightType::F32;
    if (l == "f16") return WeightType::F16;
    if (l == "bf16") return WeightType::BF16;
    if (l == "q8_0") return WeightType::Q8_0;
    if (l == "q4_k" || l == "q4_k_m") return WeightType::Q4_K;
    return std::nullopt;
}

uint32_t gguf_file_type(WeightType t, DType source) {
    switch (t) {
        case WeightType::F32: return 0;
        case WeightType::F16: return 1;
        case WeightType::BF16: return 32;
        case WeightType::Q8_0: return 7;
        case WeightType::Q4_K: return 15;
        case WeightType::Auto: return source == DType::F16 ? 1 : source == DType::BF16 ? 32 : 0;
    }
    return 0;
}

const char* tensor_role_name(TensorRole r) {
    switch (r) {
        case TensorRole::Matrix: return "matrix";
        case TensorRole::TokenEmbd: return "token embedding";
        case TensorRole::Output: return "output head";
        case TensorRole::AttnV: return "attn_v";
        case TensorRole::AttnQKV: return "attn_qkv";
        case TensorRole::FfnDown: return "ffn_down";
        case TensorRole::Small: return "small";
        case TensorRole::Router: return "router";
        case TensorRole::LoraA: return "H-LoRA A";
        case TensorRole::LoraB: return "H-LoRA B";
        case TensorRole::Conv: return "convolution";
        case TensorRole::Codebook: return "codebook";
    }
    return "?";
}

namespace {

// llama.cpp's use_more_bits(i_layer, n_layers) of llama_tensor_get_type.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

DType float_of(WeightType want, DType source) {
    switch (want) {
        case WeightType::F32: return DType::F32;
        case WeightType::F16: return DType::F16;
        case WeightType::BF16: return DType::BF16;
        default: return (source == DType::F16 || source == DType::BF16) ? source : DType::F32;
    }
}

// A block type for a row of `cols`, with llama.cpp's fallbacks when the row is not whole blocks.
TypeChoice fit_block(DType want, int64_t cols, std::string note) {
    auto add = [&](const std::string& s) { return note.empty() ? s : note + "; " + s; };
    const int64_t blk = dtype_info(want).block_size;
    if (cols % blk == 0) return {want, note};
    if (cols % QK8_0 == 0 && want != DType::Q8_0)
        return {DType::Q8_0, add("fallback Q8_0: " + std::to_string(cols) + " columns are not a multiple of " +
                                 std::to_string(blk))};
    return {DType::F16, add("fallback F16: " + std::to_string(cols) + " columns are not a multiple of 32")};
}

}  // namespace

TypeChoice choose_type(WeightType want, DType source, TensorRole role, int layer, int n_layer, int64_t cols) {
    const bool block = want == WeightType::Q8_0 || want == WeightType::Q4_K;
    switch (role) {
        case TensorRole::Small:
        case TensorRole::Router: return {DType::F32, {}};
        case TensorRole::Conv: return {block ? DType::F16 : float_of(want, source), {}};
        case TensorRole::Codebook: return {block ? DType::F32 : float_of(want, source), {}};
        default: break;
    }
    if (want == WeightType::Auto) {
        const DTypeInfo& si = dtype_info(source);
        if (si.quantized) return {source, {}};  // already a block type (GGUF input): kept
        return {float_of(want, source), {}};
    }
    if (!block) return {float_of(want, source), {}};
    if (want == WeightType::Q8_0) return fit_block(DType::Q8_0, cols, {});
    // Q4_K_M mix
    switch (role) {
        case TensorRole::Output: return fit_block(DType::Q6_K, cols, "output head: Q6_K");
        case TensorRole::AttnQKV: return fit_block(DType::Q6_K, cols, "fused attn_qkv: Q6_K (llama.cpp Q5_K)");
        case TensorRole::AttnV:
        case TensorRole::FfnDown:
            if (layer >= 0 && n_layer > 0 && use_more_bits(layer, n_layer))
                return fit_block(DType::Q6_K, cols, "use_more_bits layer: Q6_K");
            return fit_block(DType::Q4_K, cols, {});
        default: return fit_block(DType::Q4_K, cols, {});
    }
}

TensorRole classify_tensor(std::string_view arch, bool adapter, std::string_view name, int n_dims, bool tied_head) {
    auto ends = [&](std::string_view s) { return name.size() >= s.size() && name.substr(name.size() - s.size()) == s; };
    if (n_dims <= 1) return TensorRole::Small;
    if (arch == "vqgan") {
        if (name == "quantize.embed.weight") return TensorRole::Codebook;
        return n_dims == 4 ? TensorRole::Conv : TensorRole::Small;
    }
    if (n_dims >= 3) return TensorRole::Conv;
    if (arch == "clip") {
        if (name == "v.class_embd" || name == "v.position_embd.weight") return TensorRole::Small;
        return TensorRole::Matrix;
    }
    if (adapter) {
        if (ends(".hlora_route")) return TensorRole::Router;
        if (ends(".hlora_a")) return TensorRole::LoraA;
        if (ends(".hlora_b")) return TensorRole::LoraB;
        if (name == "token_embd.weight") return TensorRole::TokenEmbd;
        if (name == "output.weight") return TensorRole::Output;
        return TensorRole::Matrix;
    }
    if (name == "output.weight") return TensorRole::Output;
    if (name == "token_embd.weight") return tied_head ? TensorRole::Output : TensorRole::TokenEmbd;
    if (ends(".attn_v.weight")) return TensorRole::AttnV;
    if (ends(".attn_qkv.weight")) return TensorRole::AttnQKV;
    if (ends(".ffn_down.weight")) return TensorRole::FfnDown;
    return TensorRole::Matrix;
}

void convert_rows(DType type, int64_t rows, int64_t cols, const std::function<void(int64_t, float*)>& read,
                  uint8_t* dst, const std::string& what) {
    const DTypeInfo& info = dtype_info(type);
    HG_CHECK(cols > 0 && cols % info.block_size == 0, "%s: %lld columns are not whole %s blocks", what.c_str(),
             (long long)cols, info.name);
    const size_t rb = row_bytes(type, cols);
    // Chunks of about 4 M values: the reader is sequential, quantize_rows spreads a chunk over the pool.
    const int64_t chunk = std::max<int64_t>(1, ((int64_t)1 << 22) / cols);
    std::vector<float> buf((size_t)(std::min(chunk, rows) * cols));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t n = std::min(chunk, rows - r0);
        for (int64_t r = 0; r < n; ++r) read(r0 + r, buf.data() + r * cols);
        // The checks run here, on this thread: an error thrown inside a pool worker could not be reported.
        if (info.quantized || type == DType::F16)
            for (int64_t i = 0; i < n * cols; ++i) {
                const float v = buf[(size_t)i];
                if (info.quantized && !std::isfinite(v))
                    fail("%s: %s cannot represent the non-finite value %g (row %lld, column %lld)", what.c_str(),
                         info.name, (double)v, (long long)(r0 + i / cols), (long long)(i % cols));
                if (type == DType::F16 && std::isfinite(v) && std::fabs(v) >= 65520.0f)
                    fail("%s: the value %g (row %lld, column %lld) is outside the F16 range; use bf16 or f32",
                         what.c_str(), (double)v, (long long)(r0 + i / cols), (long long)(i % cols));
            }
        quantize_rows(type, buf.data(), dst + r0 * rb, n, cols);
    }
}

// ---------------------------------------------------------------------------------------------
// healthgpt quantize

QuantizeReport quantize_gguf(const std::filesystem::path& in, const std::filesystem::path& out,
                             const QuantizeOptions& opt) {
    const auto t0 = std::chrono::steady_clock::now();
    HG_CHECK(opt.type != WeightType::Auto, "quantize: choose a type (f32, f16, bf16, q8_0, q4_k)");
    HG_CHECK(!std::filesystem::exists(out) || !std::filesystem::equivalent(in, out),
             "%s: the output must be a different file from the input", out.c_str());
    auto f = GGUFFile::open(in);
    const std::string arch = f->get_string("general.architecture").value_or("");
    HG_CHECK(!arch.empty(), "%s: no general.architecture; not one of our model files", in.c_str());
    const bool adapter = f->get_string("general.type").value_or("") == "adapter";
    const bool tied = f->find_tensor("output.weight") == nullptr;
    int n_layer = 0;
    if (auto b = f->get_int(arch + ".block_count")) n_layer = (int)*b;
    if (adapter || n_layer == 0) {  // count blk.N from the names
        for (const auto& t : f->tensors())
            if (t.name.rfind("blk.", 0) == 0) n_layer = std::max(n_layer, std::atoi(t.name.c_str() + 4) + 1);
    }

    QuantizeReport rep;
    GGUFWriter w(f->alignment());
    for (const auto& kv : f->metadata()) {
        if (kv.key == "general.alignment") continue;  // the writer sets it from its alignment
        w.set(kv.key, kv.value);
    }
    bool any_quantized = false;
    std::map<std::string, int> counts;
    for (const auto& ti : f->tensors()) {
        const std::vector<int64_t> shape = ti.shape();
        const int64_t cols = ti.ne[0];
        const TensorRole role = classify_tensor(arch, adapter, ti.name, ti.n_dims, tied);
        int layer = -1;
        if (ti.name.rfind("blk.", 0) == 0) layer = std::atoi(ti.name.c_str() + 4);
        TypeChoice c;
        const bool integer = ti.type == DType::I8 || ti.type == DType::I16 || ti.type == DType::I32 ||
                             ti.type == DType::I64;
        if (!integer && !dtype_info(ti.type).supported)
            fail("%s: tensor %s has type %s, which this tool cannot convert", in.c_str(), ti.name.c_str(),
                 dtype_name(ti.type));
        if (integer) {
            c = {ti.type, "integer tensor kept"};
        } else if (!opt.quantize_lora && (role == TensorRole::LoraA || role == TensorRole::LoraB)) {
            c = {ti.type, "H-LoRA kept"};
        } else {
            c = choose_type(opt.type, ti.type, role, layer, n_layer, cols);
        }
        ++rep.n_tensors;
        ++counts[dtype_name(c.type)];
        if (dtype_info(c.type).quantized) any_quantized = true;
        rep.in_bytes += ti.nbytes;
        rep.out_bytes += row_bytes(c.type, cols) * (ti.numel() / cols);
        if (c.type == ti.type) {
            w.add_tensor_borrowed(ti.name, ti.type, shape, f->tensor_bytes(ti).data());
            continue;
        }
        ++rep.n_changed;
        char line[256];
        std::snprintf(line, sizeof line, "%-36s %-14s %5s -> %-5s %s", ti.name.c_str(), tensor_role_name(role),
                      dtype_name(ti.type), dtype_name(c.type), c.note.c_str());
        rep.lines.emplace_back(line);
        const Tensor view = f->tensor(ti);
        const std::string what = in.string() + ": tensor " + ti.name;
        const DType src_type = ti.type;
        const int64_t rows = ti.numel() / cols;
        const DType dst_type = c.type;
        w.add_tensor_generated(ti.name, c.type, shape, [view, src_type, rows, cols, dst_type, what](uint8_t* dst) {
            const size_t srb = row_bytes(src_type, cols);
            const uint8_t* base = static_cast<const uint8_t*>(view.data);
            convert_rows(dst_type, rows, cols, [&](int64_t r, float* o) { dequantize_row(src_type, base + r * srb, o, cols); },
                         dst, what);
        });
    }
    w.set_u32("general.file_type", gguf_file_type(opt.type));
    if (any_quantized) w.set_u32("general.quantization_version", 2);
    w.write(out);
    for (const auto& [t, n] : counts) {
        char line[96];
        std::snprintf(line, sizeof line, "  %-5s %d tensors", t.c_str(), n);
        rep.lines.emplace_back(line);
    }
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return rep;
}

}  // namespace hg
