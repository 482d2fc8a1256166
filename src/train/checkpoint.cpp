#include "train/checkpoint.h"

#include <cstring>

#include "core/error.h"
#include "formats/gguf.h"

namespace hg {

namespace {

constexpr const char* kType = "healthgpt.train_checkpoint";
constexpr const char* kPrefix = "healthgpt.train.";
constexpr int64_t kVersion = 1;

std::string key(const char* k) { return std::string(kPrefix) + k; }

std::vector<uint64_t> u64_array(const GGUFFile& f, const std::string& k) {
    const GGUFValue* v = f.find(k);
    HG_CHECK(v && v->is_array() && v->elem_type == GGUFType::UINT64, "%s: %s is missing or not a UINT64 array",
             f.path().c_str(), k.c_str());
    const auto& b = std::get<std::vector<uint8_t>>(v->v);
    std::vector<uint64_t> out(b.size() / 8);
    std::memcpy(out.data(), b.data(), out.size() * 8);
    return out;
}

}  // namespace

void save_checkpoint(const std::filesystem::path& path, const AdamW& opt, const TrainProgress& pr) {
    const ParamStore& ps = opt.store();
    const AdamWConfig& cfg = opt.config();
    GGUFWriter w;
    w.set_string("general.type", kType);
    w.set_i32(key("version"), (int32_t)kVersion);
    w.set_u64(key("global_step"), pr.global_step);
    w.set_u64(key("epoch"), pr.epoch);
    w.set(key("rng_state"), GGUFValue::make_array(GGUFType::UINT64, std::span<const uint64_t>(pr.rng_state)));
    w.set_string(key("config"), pr.config_json);
    std::vector<std::string> names;
    std::vector<int32_t> groups;
    std::vector<int64_t> steps;
    for (size_t i = 0; i < ps.size(); ++i) {
        names.push_back(ps[i].name);
        groups.push_back(ps[i].group);
        steps.push_back(opt.state()[i].step);
    }
    w.set_string_array(key("param_names"), names);
    w.set_i32_array(key("param_groups"), groups);
    w.set(key("adam_steps"), GGUFValue::make_array(GGUFType::INT64, std::span<const int64_t>(steps)));
    w.set_f64(key("adam.beta1"), cfg.beta1);
    w.set_f64(key("adam.beta2"), cfg.beta2);
    w.set_f64(key("adam.eps"), cfg.eps);
    std::vector<std::string> gnames;
    std::vector<double> glr, gwd;
    for (const auto& g : cfg.groups) {
        gnames.push_back(g.name);
        glr.push_back(g.lr);
        gwd.push_back(g.weight_decay);
    }
    w.set_string_array(key("adam.group_names"), gnames);
    w.set(key("adam.group_lr"), GGUFValue::make_array(GGUFType::FLOAT64, std::span<const double>(glr)));
    w.set(key("adam.group_weight_decay"), GGUFValue::make_array(GGUFType::FLOAT64, std::span<const double>(gwd)));
    for (size_t i = 0; i < ps.size(); ++i) {  // borrowed: the memory lives until write() returns
        w.add_tensor_borrowed("param." + ps[i].name, DType::F32, ps[i].shape, ps[i].value.data());
        w.add_tensor_borrowed("adam_m." + ps[i].name, DType::F32, ps[i].shape, opt.state()[i].exp_avg.data());
        w.add_tensor_borrowed("adam_v." + ps[i].name, DType::F32, ps[i].shape, opt.state()[i].exp_avg_sq.data());
    }
    try {
        w.write(path);
    } catch (const Error& e) {
        fail("training checkpoint %s not written (a previous checkpoint there is unchanged): %s", path.c_str(), e.what());
    }
}

TrainProgress load_checkpoint(const std::filesystem::path& path, AdamW& opt) {
    std::unique_ptr<GGUFFile> f;
    try {
        f = GGUFFile::open(path);  // refuses truncated files (tensor data past the end) and bad structure
    } catch (const Error& e) {
        fail("training checkpoint %s cannot be read: %s", path.c_str(), e.what());
    }
    const char* p = path.c_str();
    HG_CHECK(f->get_string("general.type").value_or("") == kType, "%s: not a training checkpoint (general.type is not %s)", p, kType);
    const int64_t ver = f->get_int(key("version")).value_or(-1);
    HG_CHECK(ver == kVersion, "%s: checkpoint version %lld, this build reads %lld", p, (long long)ver, (long long)kVersion);
    ParamStore& ps = opt.store();
    const AdamWConfig& cfg = opt.config();
    const auto names = f->get_string_array(key("param_names"));
    const auto groups = f->get_int_array(key("param_groups"));
    const auto steps = f->get_int_array(key("adam_steps"));
    HG_CHECK(names && groups && steps && groups->size() == names->size() && steps->size() == names->size(),
             "%s: the parameter list (names, groups, steps) is missing or inconsistent", p);
    HG_CHECK(names->size() == ps.size(), "%s: holds %zu parameters, the model being trained has %zu", p, names->size(), ps.size());
    auto close_to = [](std::optional<double> a, double b) { return a && *a == b; };
    HG_CHECK(close_to(f->get_float(key("adam.beta1")), cfg.beta1) && close_to(f->get_float(key("adam.beta2")), cfg.beta2) &&
                 close_to(f->get_float(key("adam.eps")), cfg.eps),
             "%s: saved with other AdamW betas/eps (%g, %g, %g) than configured (%g, %g, %g)", p,
             f->get_float(key("adam.beta1")).value_or(-1), f->get_float(key("adam.beta2")).value_or(-1),
             f->get_float(key("adam.eps")).value_or(-1), cfg.beta1, cfg.beta2, cfg.eps);
    const auto gnames = f->get_string_array(key("adam.group_names"));
    HG_CHECK(gnames && gnames->size() == cfg.groups.size(), "%s: saved with %zu parameter groups, configured %zu", p,
             gnames ? gnames->size() : 0, cfg.groups.size());
    // verify everything before changing anything
    std::vector<std::array<Tensor, 3>> src(ps.size());
    for (size_t i = 0; i < ps.size(); ++i) {
        const Param& q = ps[i];
        HG_CHECK((*names)[i] == q.name, "%s: parameter %zu is %s, the model's is %s (order or names differ)", p, i,
                 (*names)[i].c_str(), q.name.c_str());
        HG_CHECK((*groups)[i] == q.group, "%s: parameter %s is in group %lld, configured %d", p, q.name.c_str(),
                 (long long)(*groups)[i], q.group);
        HG_CHECK((*steps)[i] >= 0, "%s: parameter %s has a negative AdamW step", p, q.name.c_str());
        const char* kinds[3] = {"param.", "adam_m.", "adam_v."};
        for (int k = 0; k < 3; ++k) {
            const std::string tn = kinds[k] + q.name;
            const GGUFTensorInfo* ti = f->find_tensor(tn);
            HG_CHECK(ti, "%s: tensor %s is missing", p, tn.c_str());
            HG_CHECK(ti->type == DType::F32 && ti->shape() == q.shape, "%s: tensor %s is %s %s, expected F32 %s (the parameter's shape)",
                     p, tn.c_str(), dtype_name(ti->type), f->tensor(*ti).shape_str().c_str(), q.view().shape_str().c_str());
            src[i][k] = f->tensor(*ti);
        }
    }
    for (size_t i = 0; i < ps.size(); ++i) {
        Param& q = ps[i];
        AdamState& s = opt.state()[i];
        const size_t nb = q.value.size() * sizeof(float);
        std::memcpy(q.value.data(), src[i][0].data, nb);
        std::memcpy(s.exp_avg.data(), src[i][1].data, nb);
        std::memcpy(s.exp_avg_sq.data(), src[i][2].data, nb);
        s.step = (*steps)[i];
    }
    TrainProgress pr;
    pr.global_step = static_cast<uint64_t>(f->get_int(key("global_step")).value_or(0));
    pr.epoch = static_cast<uint64_t>(f->get_int(key("epoch")).value_or(0));
    pr.rng_state = u64_array(*f, key("rng_state"));
    pr.config_json = f->get_string(key("config")).value_or("");
    return pr;
}

}  // namespace hg
