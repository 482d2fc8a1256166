// HealthGPT plugin files -> plugins/<name>.gguf (docs/MODELS.md "Plugins").
//
// A plugin .bin is a torch.save of a BF16 state dict (read with the strict unpickler). Its keys,
// inferred in healthgpt-reference.md §1.3 from the PEFT wrapper nesting (not verified on the real
// files), are
//   base_model.model.model.layers.{i}.{parent}.{module}.lora_{A,B,route}.weight
//   base_model.model.model.mm_projector.{0,2}.{weight,bias}
// and fusion_layer_weights.bin holds base_model.model.model.embed_tokens.weight and
// base_model.model.lm_head.weight. Two justified variants are accepted too, and the layout found is
// reported: without the "base_model.model." wrapper prefix (a state dict of the inner LLaVA model,
// as LLaVA's own loaders strip it), and with modern PEFT's adapter segment ("lora_A.default.weight").
// One layout per file; every key must fit it, the base's layer count and linear shapes.
#include <cmath>
#include <map>
#include <set>

#include "convert/convert.h"
#include "convert/convert_common.h"
#include "core/error.h"
#include "model/hlora.h"
#include "model/projector.h"

namespace fs = std::filesystem;

namespace hg {

using conv::KeyLedger;
using conv::SourceTensors;

// ---------------------------------------------------------------------------------------------
// BaseShape

namespace {

struct ArchLinear {
    const char* hf;    // "self_attn.qkv_proj"
    const char* gguf;  // "attn_qkv"
};
constexpr ArchLinear kPhi3Linears[] = {
    {"self_attn.qkv_proj", "attn_qkv"}, {"self_attn.o_proj", "attn_output"},
    {"mlp.gate_up_proj", "ffn_up"},     {"mlp.down_proj", "ffn_down"}};
constexpr ArchLinear kQwenLinears[] = {
    {"self_attn.q_proj", "attn_q"},  {"self_attn.k_proj", "attn_k"},  {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"}};

std::vector<ArchLinear> arch_linears(const std::string& arch) {
    if (arch == "phi3") return {std::begin(kPhi3Linears), std::end(kPhi3Linears)};
    return {std::begin(kQwenLinears), std::end(kQwenLinears)};
}

}  // namespace

std::vector<std::string> BaseShape::linears() const {
    std::vector<std::string> out;
    for (const auto& l : arch_linears(arch)) out.push_back(l.gguf);
    return out;
}

std::optional<std::pair<int64_t, int64_t>> BaseShape::linear_shape(std::string_view linear) const {
    const int64_t E = n_embd, QD = n_head * head_dim, KVD = n_head_kv * head_dim, F = n_ff;
    if (linear == "attn_output") return std::pair{E, QD};
    if (linear == "ffn_down") return std::pair{E, F};
    if (arch == "phi3") {
        if (linear == "attn_qkv") return std::pair{QD + 2 * KVD, E};
        if (linear == "ffn_up") return std::pair{2 * F, E};
        return std::nullopt;
    }
    if (linear == "attn_q") return std::pair{QD, E};
    if (linear == "attn_k" || linear == "attn_v") return std::pair{KVD, E};
    if (linear == "ffn_gate" || linear == "ffn_up") return std::pair{F, E};
    return std::nullopt;
}

BaseShape BaseShape::from_hf_config(const fs::path& p) {
    const fs::path cfg = fs::is_directory(p) ? p / "config.json" : p;
    const nlohmann::json j = conv::read_json(cfg);
    BaseShape b;
    b.origin = cfg.string();
    const std::string mt = j.is_object() ? j.value("model_type", std::string()) : std::string();
    if (mt != "phi3" && mt != "qwen2" && mt != "llama") fail("%s: model_type \"%s\" is not a supported base (phi3, qwen2, llama)", cfg.c_str(), mt.c_str());
    b.arch = mt;
    auto geti = [&](const char* k, int64_t def) -> int64_t {
        if (!j.contains(k) || j[k].is_null()) {
            if (def >= 0) return def;
            fail("%s: \"%s\" is missing", cfg.c_str(), k);
        }
        if (!j[k].is_number_integer() || j[k].get<int64_t>() <= 0) fail("%s: \"%s\" is not a positive integer", cfg.c_str(), k);
        return j[k].get<int64_t>();
    };
    b.n_embd = geti("hidden_size", -1);
    b.n_layer = geti("num_hidden_layers", -1);
    b.n_ff = geti("intermediate_size", -1);
    b.n_head = geti("num_attention_heads", -1);
    b.n_head_kv = geti("num_key_value_heads", b.n_head);
    b.n_vocab = geti("vocab_size", -1);
    b.head_dim = geti("head_dim", b.n_embd / b.n_head);
    return b;
}

BaseShape BaseShape::from_gguf(const fs::path& p) {
    auto f = GGUFFile::open(p);
    BaseShape b;
    b.origin = p.string();
    b.arch = f->get_string("general.architecture").value_or("");
    if (b.arch != "phi3" && b.arch != "qwen2" && b.arch != "llama") fail("%s: general.architecture \"%s\" is not a text model", p.c_str(), b.arch.c_str());
    auto need = [&](const std::string& k) {
        auto v = f->get_int(b.arch + "." + k);
        if (!v || *v <= 0) fail("%s: %s.%s is missing", p.c_str(), b.arch.c_str(), k.c_str());
        return *v;
    };
    b.n_embd = need("embedding_length");
    b.n_layer = need("block_count");
    b.n_ff = need("feed_forward_length");
    b.n_head = need("attention.head_count");
    b.n_head_kv = f->get_int(b.arch + ".attention.head_count_kv").value_or(b.n_head);
    b.head_dim = f->get_int(b.arch + ".attention.key_length").value_or(b.n_embd / b.n_head);
    const GGUFTensorInfo* emb = f->find_tensor("token_embd.weight");
    if (!emb) fail("%s: no token_embd.weight", p.c_str());
    b.n_vocab = emb->ne[1];
    return b;
}

// ---------------------------------------------------------------------------------------------
// Key layouts

namespace {

struct Layout {
    const char* prefix;   // before "model.layers..." / "model.mm_projector..." / "lm_head"
    const char* adapter;  // between lora_X and ".weight"
    const char* what;
};
constexpr Layout kLayouts[] = {
    {"base_model.model.", "", "base_model.model.model.layers.{i}.<module>.lora_{A,B,route}.weight (HealthGPT's vendored PEFT, reference §1.3)"},
    {"base_model.model.", ".default", "base_model.model.model.layers.{i}.<module>.lora_{A,B,route}.default.weight (modern PEFT adapter name)"},
    {"", "", "model.layers.{i}.<module>.lora_{A,B,route}.weight (no PEFT wrapper prefix)"},
    {"", ".default", "model.layers.{i}.<module>.lora_{A,B,route}.default.weight (no wrapper prefix, PEFT adapter name)"},
};

struct ParsedKey {
    enum Kind { None, Lora, Projector, Embed, Head } kind = None;
    int layer = -1;
    std::string module;  // "self_attn.qkv_proj"
    std::string part;    // A | B | route ; projector: "0.weight" ...
};

bool eat(std::string_view& s, std::string_view p) {
    if (s.substr(0, p.size()) != p) return false;
    s.remove_prefix(p.size());
    return true;
}

ParsedKey parse_key(std::string_view k, const Layout& L) {
    ParsedKey r;
    if (!eat(k, L.prefix)) return r;
    if (k == "model.embed_tokens.weight") return {ParsedKey::Embed, -1, {}, {}};
    if (k == "lm_head.weight") return {ParsedKey::Head, -1, {}, {}};
    if (eat(k, "model.mm_projector.")) {
        for (const char* p : {"0.weight", "0.bias", "2.weight", "2.bias"})
            if (k == p) return {ParsedKey::Projector, -1, {}, p};
        return r;
    }
    if (!eat(k, "model.layers.")) return r;
    size_t n = 0;
    while (n < k.size() && n < 6 && k[n] >= '0' && k[n] <= '9') ++n;
    if (n == 0 || n >= 6 || n >= k.size() || k[n] != '.' || (n > 1 && k[0] == '0')) return r;
    const int layer = std::stoi(std::string(k.substr(0, n)));
    k.remove_prefix(n + 1);
    for (const char* parent : {"self_attn.", "mlp."}) {
        std::string_view s = k;
        if (!eat(s, parent)) continue;
        const size_t dot = s.find('.');
        if (dot == std::string_view::npos) return r;
        const std::string module = std::string(parent) + std::string(s.substr(0, dot));
        s.remove_prefix(dot + 1);
        for (const char* part : {"A", "B", "route"}) {
            const std::string want = std::string("lora_") + part + L.adapter + ".weight";
            if (s == want) return {ParsedKey::Lora, layer, module, part};
        }
        return r;
    }
    return r;
}

struct Released {
    const char* label;
    const char* arch;
    int64_t n_embd, n_layer, rank;
    int experts;
    double alpha;
    const char* task;
};
// healthgpt-reference.md §1.1 / §8: hlora_r / hlora_alpha / hlora_nums of each release.
constexpr Released kReleased[] = {
    {"HealthGPT-M3 comprehension", "phi3", 3072, 32, 64, 4, 128.0, "comprehension"},
    {"HealthGPT-M3 generation", "phi3", 3072, 32, 256, 4, 512.0, "generation"},
    {"HealthGPT-L14 comprehension", "phi3", 5120, 40, 32, 4, 64.0, "comprehension"},
    {"HealthGPT-XL32 comprehension", "qwen2", 5120, 64, 32, 4, 64.0, "comprehension"},
};

}  // namespace

ConvertPlan plan_plugin(const PluginOptions& o, const BaseShape& base, int64_t vision_hidden) {
    ConvertPlan plan;
    auto& rep = plan.report;
    // --- task, name
    std::string task = o.task;
    const std::string fname = o.hlora.filename().string();
    if (task.empty()) task = (!o.fusion.empty() || fname.rfind("gen", 0) == 0) ? "generation" : "comprehension";
    if (task == "com") task = "comprehension";
    if (task == "gen") task = "generation";
    if (task != "comprehension" && task != "generation")
        fail("plugin task \"%s\" is neither comprehension nor generation", o.task.c_str());
    const bool gen = task == "generation";
    std::string name = o.name.empty() ? (gen ? "gen" : "com") : o.name;
    for (char ch : name)
        if (!(std::isalnum((unsigned char)ch) || ch == '_' || ch == '-' || ch == '.'))
            fail("plugin name \"%s\": use letters, digits, '_', '-', '.'", name.c_str());
    if (name.empty() || name[0] == '.') fail("plugin name \"%s\" is not a plain file name", name.c_str());
    plan.what = "plugin " + name;
    plan.file = fs::path("plugins") / (name + ".gguf");
    if (gen && o.fusion.empty())
        fail("%s: a generation plugin needs its fusion layers (--fusion fusion_layer_weights.bin): the reference "
             "replaces the embeddings and the head with them", o.hlora.c_str());
    if (!gen && !o.fusion.empty())
        fail("%s: fusion layers were given for a comprehension plugin; the released comprehension path does not load "
             "them (healthgpt-reference.md §1.4) - use --task generation if this plugin is one", o.fusion.c_str());

    // --- sources
    auto hl = SourceTensors::open_torch(o.hlora, TorchLoadMode::StateDict);
    plan.sources.push_back(hl);
    rep.push_back("H-LoRA: " + hl->describe());
    for (const auto& n : hl->notes()) rep.push_back(n);
    std::shared_ptr<SourceTensors> fu;
    if (!o.fusion.empty()) {
        fu = SourceTensors::open_torch(o.fusion, TorchLoadMode::StateDict);
        plan.sources.push_back(fu);
        rep.push_back("fusion layers: " + fu->describe());
        for (const auto& n : fu->notes()) rep.push_back(n);
    }

    // --- the layout: the first one that parses the first H-LoRA-looking key; then every key must fit it
    std::vector<std::pair<const CkptTensor*, const SourceTensors*>> all;
    for (const auto* t : hl->tensors()) all.emplace_back(t, hl.get());
    if (fu)
        for (const auto* t : fu->tensors()) all.emplace_back(t, fu.get());
    if (all.empty()) fail("%s: the state dict holds no tensors", o.hlora.c_str());
    const Layout* layout = nullptr;
    for (const auto& [t, s] : all) {
        for (const Layout& L : kLayouts)
            if (parse_key(t->name, L).kind == ParsedKey::Lora) {
                layout = &L;
                break;
            }
        if (layout) break;
    }
    if (!layout)
        fail("%s: no H-LoRA key in any known layout (expected e.g. base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight); "
             "first keys: %s", o.hlora.c_str(), [&] {
                 std::vector<std::string> ks;
                 for (size_t i = 0; i < all.size() && i < 4; ++i) ks.push_back(all[i].first->name);
                 return conv::list_some(ks, 4);
             }().c_str());
    rep.push_back("key layout: " + std::string(layout->what));

    KeyLedger led;
    led.origin = o.hlora.string() + (fu ? " + " + o.fusion.string() : "");
    // canonical GGUF name -> source tensor
    std::map<std::string, const CkptTensor*> by_gguf;
    std::set<int> layers_seen;
    std::map<std::string, int> foreign_modules;  // modules of another architecture
    const auto lins = arch_linears(base.arch);
    auto module_gguf = [&](const std::string& module) -> const char* {
        for (const auto& l : lins)
            if (module == l.hf) return l.gguf;
        return nullptr;
    };
    for (const auto& [t, s] : all) {
        const ParsedKey pk = parse_key(t->name, *layout);
        const bool from_fusion = s == fu.get();
        std::string canon;
        switch (pk.kind) {
            case ParsedKey::None: {
                // a key of another layout is an inconsistency, not an unknown module
                bool other = false;
                for (const Layout& L : kLayouts)
                    if (&L != layout && parse_key(t->name, L).kind != ParsedKey::None) other = true;
                if (other) led.bad.push_back(t->name + ": a different key layout than the rest of the files");
                else led.unknown.push_back(t->name);
                continue;
            }
            case ParsedKey::Lora: {
                const char* g = module_gguf(pk.module);
                if (!g) {
                    ++foreign_modules[pk.module];
                    continue;
                }
                if (from_fusion) {
                    led.bad.push_back(t->name + ": an H-LoRA tensor in the fusion file");
                    continue;
                }
                canon = "base_model.model.model.layers." + std::to_string(pk.layer) + "." + pk.module + ".lora_" + pk.part + ".weight";
                layers_seen.insert(pk.layer);
                break;
            }
            case ParsedKey::Projector: canon = "base_model.model.model.mm_projector." + pk.part; break;
            case ParsedKey::Embed: canon = "base_model.model.model.embed_tokens.weight"; break;
            case ParsedKey::Head: canon = "base_model.model.lm_head.weight"; break;
        }
        const std::optional<std::string> gname = plugin_gguf_name(canon);
        if (!gname) {
            led.unknown.push_back(t->name);
            continue;
        }
        if ((pk.kind == ParsedKey::Embed || pk.kind == ParsedKey::Head) && !gen) {
            led.bad.push_back(t->name + ": embedding / head rows in a comprehension plugin (the reference does not load them for comprehension)");
            continue;
        }
        if (!by_gguf.emplace(*gname, t).second) led.bad.push_back(t->name + ": given twice (both files hold " + *gname + ")");
    }
    if (!foreign_modules.empty()) {
        std::vector<std::string> m;
        for (const auto& [k, n] : foreign_modules) m.push_back(k + " (" + std::to_string(n) + " tensors)");
        fail("%s: H-LoRA modules %s do not exist in the %s base %s (its linears: %s): this plugin belongs to another base model",
             o.hlora.c_str(), conv::list_some(m).c_str(), base.arch.c_str(), base.origin.c_str(),
             conv::list_some(base.linears(), 8).c_str());
    }
    if (!layers_seen.empty() && *layers_seen.rbegin() >= base.n_layer)
        fail("%s: H-LoRA tensors for layer %d, but the base %s has %lld layers: this plugin belongs to another base model",
             o.hlora.c_str(), *layers_seen.rbegin(), base.origin.c_str(), (long long)base.n_layer);

    // --- rank, experts, hidden from the shapes; then every tensor
    const std::string first_a = plugin_names::tensor(0, lins[0].gguf, plugin_names::kA);
    const std::string first_r = plugin_names::tensor(0, lins[0].gguf, plugin_names::kRoute);
    int64_t rank = 0, experts = 0;
    if (by_gguf.count(first_a) && by_gguf[first_a]->shape.size() == 2) rank = by_gguf[first_a]->shape[0];
    if (by_gguf.count(first_r) && by_gguf[first_r]->shape.size() == 2) experts = by_gguf[first_r]->shape[0];
    if (by_gguf.count(first_a) && by_gguf[first_a]->shape.size() == 2 && by_gguf[first_a]->shape[1] != base.linear_shape(lins[0].gguf)->second)
        fail("%s: the plugin's input width at layer 0 %s is %lld, the base %s has hidden size %lld: this plugin belongs "
             "to another base model", o.hlora.c_str(), lins[0].hf, (long long)by_gguf[first_a]->shape[1], base.origin.c_str(),
             (long long)base.n_embd);
    if (o.rank && rank && *o.rank != rank)
        fail("%s: --rank %lld, but the tensors have rank %lld", o.hlora.c_str(), (long long)*o.rank, (long long)rank);
    if (o.experts && experts && *o.experts != experts)
        fail("%s: --experts %d, but the routers have %lld experts", o.hlora.c_str(), *o.experts, (long long)experts);
    if (rank > 0 && experts > 0 && rank % experts != 0)
        fail("%s: rank %lld is not a multiple of the expert count %lld", o.hlora.c_str(), (long long)rank, (long long)experts);

    struct Want {
        std::string gguf;
        std::vector<int64_t> shape;
        TensorRole role;
        int layer;
        std::string linear;  // H-LoRA tensors: the wrapped linear
    };
    std::vector<Want> want;
    for (int64_t i = 0; i < base.n_layer; ++i)
        for (const auto& l : lins) {
            const auto [out, in] = *base.linear_shape(l.gguf);
            want.push_back({plugin_names::tensor((int)i, l.gguf, plugin_names::kRoute), {experts, in}, TensorRole::Router, (int)i, l.gguf});
            want.push_back({plugin_names::tensor((int)i, l.gguf, plugin_names::kA), {rank, in}, TensorRole::LoraA, (int)i, l.gguf});
            want.push_back({plugin_names::tensor((int)i, l.gguf, plugin_names::kB), {out, rank}, TensorRole::LoraB, (int)i, l.gguf});
        }
    // projector: [H, d_vis], [H], [H, H], [H]
    int64_t d_vis = vision_hidden;
    if (auto it = by_gguf.find(projector_names::kW0); it != by_gguf.end() && it->second->shape.size() == 2 && d_vis <= 0)
        d_vis = it->second->shape[1];
    const int64_t E = base.n_embd;
    want.push_back({projector_names::kW0, {E, d_vis}, TensorRole::Matrix, -1, {}});
    want.push_back({projector_names::kB0, {E}, TensorRole::Small, -1, {}});
    want.push_back({projector_names::kW2, {E, E}, TensorRole::Matrix, -1, {}});
    want.push_back({projector_names::kB2, {E}, TensorRole::Small, -1, {}});
    int64_t fusion_rows = 0;
    if (gen) {
        if (auto it = by_gguf.find(plugin_names::kTokenEmbd); it != by_gguf.end() && it->second->shape.size() == 2)
            fusion_rows = it->second->shape[0];
        want.push_back({plugin_names::kTokenEmbd, {fusion_rows, E}, TensorRole::TokenEmbd, -1, {}});
        want.push_back({plugin_names::kOutput, {fusion_rows, E}, TensorRole::Output, -1, {}});
    }
    std::set<std::string> wanted;
    for (const Want& x : want) {
        wanted.insert(x.gguf);
        auto it = by_gguf.find(x.gguf);
        if (it == by_gguf.end()) {
            led.missing.push_back(x.gguf);
            continue;
        }
        const CkptTensor& t = *it->second;
        if (t.shape != x.shape) {
            std::string why;
            if (!x.linear.empty()) {
                const auto [out, in] = *base.linear_shape(x.linear);
                why = " (rank " + std::to_string(rank) + ", " + std::to_string(experts) + " experts; the base's " + x.linear +
                      " is " + conv::shape_str({out, in}) + ")";
            } else if (x.gguf == projector_names::kW0 && vision_hidden > 0)
                why = " (the vision tower's hidden size is " + std::to_string(vision_hidden) + ")";
            led.bad.push_back(t.name + " -> " + x.gguf + ": shape " + t.shape_str() + ", expected " + conv::shape_str(x.shape) + why);
            continue;
        }
        if (!(t.type == ElemType::F32 || t.type == ElemType::F16 || t.type == ElemType::BF16 || t.type == ElemType::F64)) {
            led.bad.push_back(t.name + ": element type " + elem_type_name(t.type));
            continue;
        }
        ++led.mapped;
    }
    for (const auto& [g, t] : by_gguf)
        if (!wanted.count(g)) led.unknown.push_back(t->name);
    led.finish(o.allow_unknown, rep);
    if (fusion_rows > 0 && fusion_rows < base.n_vocab)
        fail("%s: the fusion layers have %lld rows, fewer than the base vocabulary (%lld)", o.fusion.c_str(),
             (long long)fusion_rows, (long long)base.n_vocab);

    const size_t n_lora = (size_t)base.n_layer * lins.size() * 3;
    char line[320];
    std::snprintf(line, sizeof line, "%lld layers x %zu linears x {route, A, B} = %zu H-LoRA tensors + 4 projector%s = %zu tensors",
                  (long long)base.n_layer, lins.size(), n_lora, gen ? " + 2 fusion" : "", n_lora + 4 + (gen ? 2 : 0));
    rep.push_back(line);

    // --- hyper-parameters: alpha is not in the file
    const Released* rel = nullptr;
    for (const Released& r : kReleased)
        if (base.arch == r.arch && base.n_embd == r.n_embd && base.n_layer == r.n_layer && rank == r.rank && experts == r.experts)
            rel = &r;
    double alpha = 0;
    if (o.alpha) {
        alpha = *o.alpha;
        if (!(alpha > 0) || !std::isfinite(alpha)) fail("--alpha %g must be positive", alpha);
        if (rel && alpha != rel->alpha) {
            std::snprintf(line, sizeof line, "note: --alpha %g differs from the released %s (%g)", alpha, rel->label, rel->alpha);
            rep.push_back(line);
        }
    } else if (rel) {
        alpha = rel->alpha;
        std::snprintf(line, sizeof line, "recognised %s shapes: alpha %g (rank %lld, %lld experts; --alpha overrides)",
                      rel->label, alpha, (long long)rank, (long long)experts);
        rep.push_back(line);
        if (task != rel->task) rep.push_back(std::string("note: these are the shapes of the released ") + rel->label + " plugin, converted as " + task);
    } else {
        fail("%s: rank %lld / %lld experts on a %s base with hidden %lld and %lld layers is not a released HealthGPT "
             "plugin, and alpha is not stored in the file: give --alpha (the released plugins use alpha = 2 x rank)",
             o.hlora.c_str(), (long long)rank, (long long)experts, base.arch.c_str(), (long long)base.n_embd,
             (long long)base.n_layer);
    }
    const int vision_layer = o.vision_layer.value_or(gen ? 1 : -2);
    std::snprintf(line, sizeof line, "task %s, vision layer %d, rank %lld, alpha %g, %lld experts: scaling alpha/rank*experts = %g",
                  task.c_str(), vision_layer, (long long)rank, alpha, (long long)experts, alpha / (double)rank * (double)experts);
    rep.push_back(line);

    GGUFWriter& w = plan.writer;
    conv::add_general(w, base.arch, name);
    w.set_string(plugin_keys::kGeneralType, "adapter");
    w.set_string(plugin_keys::kTask, task);
    w.set_i32(plugin_keys::kVisionLayer, vision_layer);
    w.set_u32(plugin_keys::kRank, (uint32_t)rank);
    w.set_f32(plugin_keys::kAlpha, (float)alpha);
    w.set_u32(plugin_keys::kExperts, (uint32_t)experts);
    w.set_string(plugin_keys::kProjectorType, "mlp2x_gelu");
    w.set_string(plugin_keys::kBaseArchitecture, base.arch);
    w.set_string("healthgpt.plugin.source", fname + (o.fusion.empty() ? "" : " + " + o.fusion.filename().string()));
    w.set_string("healthgpt.plugin.key_layout", layout->what);

    DType main_type = DType::BF16;
    for (const Want& x : want) {
        const CkptTensor& t = *by_gguf.at(x.gguf);
        const DType st = conv::float_source_type(t, plan.what);
        if (x.role == TensorRole::LoraA) main_type = st;
        conv::add_tensor(plan, x.gguf, t, x.shape, choose_type(o.type, st, x.role, x.layer, (int)base.n_layer, x.shape.back()));
    }
    conv::set_file_type(plan, gguf_file_type(o.type, main_type));
    return plan;
}

}  // namespace hg
