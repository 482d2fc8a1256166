// Hugging Face decoder folder (Phi-3-mini / phi-4 / Qwen2.5 / Llama) -> text.gguf with llama.cpp's
// architecture names, metadata keys and tensor names (docs/MODELS.md "Text model"), so llama.cpp
// loads the file unchanged and our decoder loader reads it.
#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "convert/convert.h"
#include "convert/convert_common.h"
#include "core/error.h"
#include "text/chat.h"
#include "text/vocab.h"

namespace fs = std::filesystem;

namespace hg {

using conv::KeyLedger;
using conv::SourceTensors;

namespace {

// The decoder hyper-parameters as transformers reads them from config.json (class defaults of
// Phi3Config / Qwen2Config / LlamaConfig for the optional keys).
struct TextConfig {
    std::string arch;        // phi3 | qwen2 | llama
    int64_t n_embd = 0, n_layer = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_vocab = 0;
    int64_t n_ctx = 0, n_ctx_orig = 0, sliding_window = 0;
    double eps = 0, theta = 10000;
    bool tied = false;
    bool qkv_bias = false;
};

int64_t need_int(const nlohmann::json& j, const char* key, const fs::path& p) {
    if (!j.contains(key) || !j[key].is_number_integer()) fail("%s: \"%s\" is missing or not an integer", p.c_str(), key);
    const int64_t v = j[key].get<int64_t>();
    if (v <= 0 || v > (int64_t{1} << 24)) fail("%s: \"%s\" = %lld is out of range", p.c_str(), key, (long long)v);
    return v;
}

int64_t opt_int(const nlohmann::json& j, const char* key, int64_t def, const fs::path& p) {
    if (!j.contains(key) || j[key].is_null()) return def;
    return need_int(j, key, p);
}

double opt_float(const nlohmann::json& j, const char* key, double def, const fs::path& p) {
    if (!j.contains(key) || j[key].is_null()) return def;
    if (!j[key].is_number()) fail("%s: \"%s\" is not a number", p.c_str(), key);
    const double v = j[key].get<double>();
    if (!std::isfinite(v) || v <= 0) fail("%s: \"%s\" = %g is out of range", p.c_str(), key, v);
    return v;
}

TextConfig read_text_config(const fs::path& p) {
    const nlohmann::json j = conv::read_json(p);
    if (!j.is_object()) fail("%s: not a JSON object", p.c_str());
    const std::string mt = j.value("model_type", std::string());
    TextConfig c;
    if (mt == "phi3") c.arch = "phi3";
    else if (mt == "qwen2") c.arch = "qwen2";
    else if (mt == "llama") c.arch = "llama";
    else fail("%s: model_type \"%s\" is not supported (phi3 for Phi-3/Phi-4, qwen2 for Qwen2.5, llama)", p.c_str(), mt.c_str());
    c.n_embd = need_int(j, "hidden_size", p);
    c.n_layer = need_int(j, "num_hidden_layers", p);
    c.n_ff = need_int(j, "intermediate_size", p);
    c.n_head = need_int(j, "num_attention_heads", p);
    c.n_vocab = need_int(j, "vocab_size", p);
    c.n_head_kv = opt_int(j, "num_key_value_heads", c.n_head, p);
    if (c.n_head % c.n_head_kv != 0)
        fail("%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld", p.c_str(), (long long)c.n_head,
             (long long)c.n_head_kv);
    if (j.contains("head_dim") && !j["head_dim"].is_null()) {
        c.head_dim = need_int(j, "head_dim", p);
    } else {
        if (c.n_embd % c.n_head != 0)
            fail("%s: hidden_size %lld is not a multiple of num_attention_heads %lld", p.c_str(), (long long)c.n_embd,
                 (long long)c.n_head);
        c.head_dim = c.n_embd / c.n_head;
    }
    if (c.head_dim % 2 != 0) fail("%s: head dimension %lld is odd (RoPE rotates pairs)", p.c_str(), (long long)c.head_dim);
    c.theta = opt_float(j, "rope_theta", 10000.0, p);
    c.eps = opt_float(j, "rms_norm_eps", c.arch == "phi3" ? 1e-5 : 1e-6, p);
    c.n_ctx = opt_int(j, "max_position_embeddings", c.arch == "phi3" ? 4096 : c.arch == "qwen2" ? 32768 : 2048, p);
    c.tied = j.value("tie_word_embeddings", false);
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
        fail("%s: rope_scaling %s is not supported (only the plain RoPE of Phi-3-mini-4k, phi-4, Qwen2.5 and Llama-2)",
             p.c_str(), j["rope_scaling"].dump().substr(0, 120).c_str());
    if (j.contains("partial_rotary_factor") && j["partial_rotary_factor"].is_number() && j["partial_rotary_factor"].get<double>() != 1.0)
        fail("%s: partial_rotary_factor %g is not supported", p.c_str(), j["partial_rotary_factor"].get<double>());
    if (c.arch == "phi3") {
        c.n_ctx_orig = opt_int(j, "original_max_position_embeddings", c.n_ctx, p);
        c.sliding_window = opt_int(j, "sliding_window", 0, p);  // null (phi-4) = none
    }
    if (c.arch == "qwen2") {
        c.qkv_bias = true;
        if (j.value("use_sliding_window", false)) {
            const int64_t sw = opt_int(j, "sliding_window", 4096, p);
            if (sw < c.n_ctx)
                fail("%s: use_sliding_window with a window of %lld below max_position_embeddings %lld is not supported",
                     p.c_str(), (long long)sw, (long long)c.n_ctx);
        }
    }
    if (c.arch == "llama") {
        if (j.value("attention_bias", false) || j.value("mlp_bias", false))
            fail("%s: Llama attention_bias / mlp_bias are not supported", p.c_str());
        const std::string act = j.value("hidden_act", std::string("silu"));
        if (act != "silu") fail("%s: hidden_act \"%s\" is not supported (silu)", p.c_str(), act.c_str());
    } else {
        const std::string act = j.value("hidden_act", std::string("silu"));
        if (act != "silu") fail("%s: hidden_act \"%s\" is not supported (silu)", p.c_str(), act.c_str());
    }
    return c;
}

std::vector<int32_t> eos_ids(const nlohmann::json& j) {
    std::vector<int32_t> out;
    if (!j.is_object() || !j.contains("eos_token_id")) return out;
    const auto& e = j["eos_token_id"];
    if (e.is_number_integer()) out.push_back(e.get<int32_t>());
    else if (e.is_array())
        for (const auto& x : e)
            if (x.is_number_integer()) out.push_back(x.get<int32_t>());
    return out;
}

// The chat template name: explicit, else from the architecture and the tokenizer's special tokens.
std::string detect_template(const TextConfig& c, const fs::path& dir, std::string& how) {
    if (c.arch == "qwen2") {
        how = "qwen2 architecture";
        return "qwen_2";
    }
    if (c.arch != "phi3") return {};
    std::string text;
    for (const char* f : {"tokenizer_config.json", "added_tokens.json", "tokenizer.json"}) {
        if (!fs::exists(dir / f)) continue;
        const nlohmann::json j = conv::read_json(dir / f);
        text = j.dump();
        if (text.find("<|im_sep|>") != std::string::npos) {
            how = std::string(f) + " has <|im_sep|>";
            return "phi4_instruct";
        }
        if (text.find("<|assistant|>") != std::string::npos) {
            how = std::string(f) + " has <|assistant|>";
            return "phi3_instruct";
        }
    }
    if (c.n_vocab == 100352) {
        how = "vocab_size 100352 (phi-4)";
        return "phi4_instruct";
    }
    if (c.n_vocab == 32064) {
        how = "vocab_size 32064 (Phi-3-mini)";
        return "phi3_instruct";
    }
    return {};
}

struct Expect {
    std::string hf, gguf;
    std::vector<int64_t> shape;
    int layer = -1;
    std::function<int64_t(int64_t)> row_of;  // llama q/k permutation

    Expect(std::string h, std::string g, std::vector<int64_t> s, int l = -1, std::function<int64_t(int64_t)> r = {})
        : hf(std::move(h)), gguf(std::move(g)), shape(std::move(s)), layer(l), row_of(std::move(r)) {}
};

// llama.cpp's LlamaModel.permute: new row h·D + 2i + j = HF row h·D + j·D/2 + i.
std::function<int64_t(int64_t)> llama_permute(int64_t D) {
    return [D](int64_t r) {
        const int64_t h = r / D, rem = r % D, i = rem / 2, j = rem % 2;
        return h * D + j * (D / 2) + i;
    };
}

std::vector<Expect> expected_tensors(const TextConfig& c) {
    const int64_t E = c.n_embd, V = c.n_vocab, F = c.n_ff, D = c.head_dim;
    const int64_t QD = c.n_head * D, KVD = c.n_head_kv * D;
    std::vector<Expect> x;
    x.push_back({"model.embed_tokens.weight", "token_embd.weight", {V, E}});
    for (int64_t i = 0; i < c.n_layer; ++i) {
        const std::string h = "model.layers." + std::to_string(i) + ".";
        const std::string g = "blk." + std::to_string(i) + ".";
        const int L = (int)i;
        x.push_back({h + "input_layernorm.weight", g + "attn_norm.weight", {E}, L});
        if (c.arch == "phi3") {
            x.push_back({h + "self_attn.qkv_proj.weight", g + "attn_qkv.weight", {QD + 2 * KVD, E}, L});
        } else {
            const bool perm = c.arch == "llama";
            x.push_back({h + "self_attn.q_proj.weight", g + "attn_q.weight", {QD, E}, L, perm ? llama_permute(D) : nullptr});
            x.push_back({h + "self_attn.k_proj.weight", g + "attn_k.weight", {KVD, E}, L, perm ? llama_permute(D) : nullptr});
            x.push_back({h + "self_attn.v_proj.weight", g + "attn_v.weight", {KVD, E}, L});
            if (c.qkv_bias) {
                x.push_back({h + "self_attn.q_proj.bias", g + "attn_q.bias", {QD}, L});
                x.push_back({h + "self_attn.k_proj.bias", g + "attn_k.bias", {KVD}, L});
                x.push_back({h + "self_attn.v_proj.bias", g + "attn_v.bias", {KVD}, L});
            }
        }
        x.push_back({h + "self_attn.o_proj.weight", g + "attn_output.weight", {E, QD}, L});
        x.push_back({h + "post_attention_layernorm.weight", g + "ffn_norm.weight", {E}, L});
        if (c.arch == "phi3") {
            x.push_back({h + "mlp.gate_up_proj.weight", g + "ffn_up.weight", {2 * F, E}, L});
        } else {
            x.push_back({h + "mlp.gate_proj.weight", g + "ffn_gate.weight", {F, E}, L});
            x.push_back({h + "mlp.up_proj.weight", g + "ffn_up.weight", {F, E}, L});
        }
        x.push_back({h + "mlp.down_proj.weight", g + "ffn_down.weight", {E, F}, L});
    }
    x.push_back({"model.norm.weight", "output_norm.weight", {E}});
    if (!c.tied) x.push_back({"lm_head.weight", "output.weight", {V, E}});
    return x;
}

bool is_rotary_buffer(const std::string& k) {
    return k.size() > 26 && k.rfind("model.layers.", 0) == 0 && k.find(".self_attn.rotary_emb.inv_freq") != std::string::npos;
}

}  // namespace

ConvertPlan plan_text(const TextOptions& o) {
    const fs::path dir = o.hf_dir;
    if (!fs::is_directory(dir)) fail("%s: the base model must be a Hugging Face folder (config.json, weights, tokenizer)", dir.c_str());
    const TextConfig c = read_text_config(dir / "config.json");
    ConvertPlan plan;
    plan.what = "text model";
    plan.file = "text.gguf";
    auto& rep = plan.report;

    auto src = SourceTensors::open(dir);
    plan.sources.push_back(src);
    rep.push_back("weights: " + src->describe());
    for (const auto& n : src->notes()) rep.push_back(n);

    // --- hyper-parameters -> llama.cpp keys
    GGUFWriter& w = plan.writer;
    const std::string A = c.arch;
    std::string name = o.name.empty() ? fs::absolute(dir).lexically_normal().filename().string() : o.name;
    if (name.empty()) name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
    conv::add_general(w, A, name);
    w.set_u32(A + ".context_length", (uint32_t)c.n_ctx);
    w.set_u32(A + ".embedding_length", (uint32_t)c.n_embd);
    w.set_u32(A + ".feed_forward_length", (uint32_t)c.n_ff);
    w.set_u32(A + ".block_count", (uint32_t)c.n_layer);
    w.set_u32(A + ".attention.head_count", (uint32_t)c.n_head);
    w.set_u32(A + ".attention.head_count_kv", (uint32_t)c.n_head_kv);
    w.set_f32(A + ".attention.layer_norm_rms_epsilon", (float)c.eps);
    w.set_f32(A + ".rope.freq_base", (float)c.theta);
    w.set_u32(A + ".rope.dimension_count", (uint32_t)c.head_dim);
    if (c.head_dim * c.n_head != c.n_embd) {
        w.set_u32(A + ".attention.key_length", (uint32_t)c.head_dim);
        w.set_u32(A + ".attention.value_length", (uint32_t)c.head_dim);
    }
    w.set_u32(A + ".vocab_size", (uint32_t)c.n_vocab);
    if (A == "phi3") {
        w.set_u32(A + ".rope.scaling.original_context_length", (uint32_t)c.n_ctx_orig);
        w.set_u32(A + ".attention.sliding_window", (uint32_t)c.sliding_window);
    }
    char line[256];
    std::snprintf(line, sizeof line,
                  "%s: %lld layers, hidden %lld, ff %lld, heads %lld/%lld (head dim %lld), vocab %lld, rope theta %g, "
                  "eps %g, context %lld%s%s",
                  A.c_str(), (long long)c.n_layer, (long long)c.n_embd, (long long)c.n_ff, (long long)c.n_head,
                  (long long)c.n_head_kv, (long long)c.head_dim, (long long)c.n_vocab, c.theta, c.eps, (long long)c.n_ctx,
                  A == "phi3" ? (c.sliding_window ? (", sliding window " + std::to_string(c.sliding_window)).c_str() : ", no sliding window") : "",
                  c.tied ? ", tied head" : "");
    rep.push_back(line);

    // --- generation settings: stop ids (eos of generation_config.json, else config.json), template
    nlohmann::json gen;
    if (fs::exists(dir / "generation_config.json")) gen = conv::read_json(dir / "generation_config.json");
    std::vector<int32_t> stops = eos_ids(gen);
    std::string stop_from = "generation_config.json";
    if (stops.empty()) {
        stops = eos_ids(conv::read_json(dir / "config.json"));
        stop_from = "config.json";
    }
    if (stops.empty()) fail("%s: no eos_token_id in generation_config.json or config.json (the stop tokens)", dir.c_str());
    for (int32_t s : stops)
        if (s < 0 || s >= c.n_vocab) fail("%s: eos_token_id %d is outside the vocabulary (%lld)", dir.c_str(), s, (long long)c.n_vocab);
    w.set_i32_array("healthgpt.stop_token_ids", stops);
    std::string ids;
    for (int32_t s : stops) ids += (ids.empty() ? "" : ", ") + std::to_string(s);
    rep.push_back("stop ids (" + stop_from + "): " + ids);
    if (gen.is_object() && gen.contains("repetition_penalty") && gen["repetition_penalty"].is_number()) {
        const double rp = gen["repetition_penalty"].get<double>();
        if (!(rp > 0) || !std::isfinite(rp)) fail("%s: repetition_penalty %g is out of range", (dir / "generation_config.json").c_str(), rp);
        w.set_f32("healthgpt.repetition_penalty", (float)rp);
        std::snprintf(line, sizeof line, "repetition_penalty %g (generation_config.json; applies to greedy decoding too)", rp);
        rep.push_back(line);
    }
    std::string how = "--template";
    std::string tmpl = o.chat_template.empty() ? detect_template(c, dir, how) : o.chat_template;
    if (!tmpl.empty()) {
        if (!text::chat_template_from_name(tmpl))
            fail("chat template \"%s\" is not one of phi3_instruct, phi4_instruct, qwen_2", tmpl.c_str());
        w.set_string("healthgpt.chat_template", tmpl);
        rep.push_back("chat template " + tmpl + " (" + how + ")");
    } else {
        rep.push_back("no HealthGPT chat template for this model (--template sets one)");
    }

    // --- tokenizer
    if (o.with_tokenizer) rep.push_back("tokenizer: " + conv::add_tokenizer(w, dir, c.n_vocab));
    else rep.push_back("no tokenizer written (with_tokenizer = false)");

    // --- tensors
    KeyLedger led;
    led.origin = dir.string();
    std::set<std::string> used;
    const std::vector<Expect> want = expected_tensors(c);
    DType main_type = DType::F32;
    for (const Expect& e : want) {
        const CkptTensor* t = src->find(e.hf);
        if (!t) {
            led.missing.push_back(e.hf);
            continue;
        }
        used.insert(e.hf);
        if (t->shape != e.shape) {
            led.bad.push_back(e.hf + ": shape " + t->shape_str() + ", config.json implies " + conv::shape_str(e.shape));
            continue;
        }
        if (!elem_to_dtype(t->type) || !(t->type == ElemType::F32 || t->type == ElemType::F16 || t->type == ElemType::BF16 || t->type == ElemType::F64)) {
            led.bad.push_back(e.hf + ": element type " + std::string(elem_type_name(t->type)) + " (a float type is expected)");
            continue;
        }
        ++led.mapped;
    }
    for (const CkptTensor* t : src->tensors()) {
        if (used.count(t->name)) continue;
        if (is_rotary_buffer(t->name)) led.ignored["RoPE inv_freq buffer, recomputed"].push_back(t->name);
        else if (c.tied && t->name == "lm_head.weight") led.ignored["tie_word_embeddings: the head is token_embd"].push_back(t->name);
        else led.unknown.push_back(t->name);
    }
    led.finish(o.allow_unknown, rep);

    for (const Expect& e : want) {
        const CkptTensor& t = *src->find(e.hf);
        const DType st = conv::float_source_type(t, plan.what);
        if (e.gguf == "token_embd.weight") main_type = st;
        const TensorRole role = classify_tensor(A, false, e.gguf, (int)e.shape.size(), c.tied);
        const TypeChoice tc = choose_type(o.type, st, role, e.layer, (int)c.n_layer, e.shape.back());
        conv::add_tensor(plan, e.gguf, t, e.shape, tc, e.row_of);
    }
    if (A == "llama") rep.push_back("q/k rows permuted to llama.cpp's interleaved RoPE order");
    conv::set_file_type(plan, gguf_file_type(o.type, main_type));
    return plan;
}

}  // namespace hg
