#include "train/bench_train.h"

#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/hlora.h"
#include "model/weight_source.h"
#include "runtime/bench.h"
#include "train/param_store.h"
#include "train/trainer.h"
#include "train/vqa_import.h"

namespace hg::train {

TrainBenchResult bench_train_hlora(const Decoder& dec, const TrainBenchOptions& o, ThreadPool& pool) {
    const DecoderHParams& hp = dec.hparams();
    HG_CHECK(o.seq > o.answer && o.answer > 0 && o.rank % o.experts == 0 && o.steps >= 1,
             "bench train: seq %lld, answer %lld, rank %lld, experts %d do not fit", (long long)o.seq,
             (long long)o.answer, (long long)o.rank, o.experts);
    // --- an H-LoRA plugin on every linear, its tensors in a parameter store
    ParamStore ps;
    WeightMap wm;
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    auto add = [&](const std::string& name, std::vector<int64_t> shape) {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        std::vector<float> v((size_t)n);
        for (auto& x : v) x = nd(rng);
        Param& p = ps.add(name, shape, v, 0);
        wm.add(name, p.view());
    };
    double linear_weights = 0;
    for (int64_t l = 0; l < hp.n_layer; ++l) {
        const DecoderLayer& L = dec.weights().layers[(size_t)l];
        const auto lins = L.linears();
        for (const auto& [kind, lin] : lins) {
            if (!lin->present()) continue;
            linear_weights += (double)lin->n_out() * (double)lin->n_in();
            const std::string pre = "blk." + std::to_string(l) + "." + linear_kind_name(kind) + ".";
            add(pre + plugin_names::kA, {o.rank, lin->n_in()});
            add(pre + plugin_names::kB, {lin->n_out(), o.rank});
            add(pre + plugin_names::kRoute, {(int64_t)o.experts, lin->n_in()});
        }
    }
    const int64_t E = hp.n_embd, Dv = 1024;
    std::vector<float> w0((size_t)(E * Dv), 0.01f), b0((size_t)E, 0.0f), w2((size_t)(E * E), 0.01f), b2 = b0;
    wm.add(projector_names::kW0, Tensor::view(DType::F32, {E, Dv}, w0.data()));
    wm.add(projector_names::kB0, Tensor::view(DType::F32, {E}, b0.data()));
    wm.add(projector_names::kW2, Tensor::view(DType::F32, {E, E}, w2.data()));
    wm.add(projector_names::kB2, Tensor::view(DType::F32, {E}, b2.data()));
    wm.set_string(plugin_keys::kGeneralType, "adapter");
    wm.set_string(plugin_keys::kTask, "comprehension");
    wm.set_int(plugin_keys::kVisionLayer, -2);
    wm.set_int(plugin_keys::kRank, o.rank);
    wm.set_float(plugin_keys::kAlpha, 2.0 * (double)o.rank);
    wm.set_int(plugin_keys::kExperts, o.experts);
    wm.set_string(plugin_keys::kProjectorType, "mlp2x_gelu");
    const HLoraPlugin plugin = HLoraPlugin::load(wm.source("bench plugin"));
    const std::unique_ptr<AdapterSet> adapters = hlora_adapters(plugin, dec);

    // --- one example: random rows, targets on the last `answer` rows
    const int64_t T = o.seq;
    std::vector<float> embeds((size_t)(T * E));
    std::normal_distribution<float> ne(0.0f, 1.0f);
    for (auto& x : embeds) x = ne(rng);
    std::vector<int32_t> targets((size_t)T, -100);
    for (int64_t t = T - o.answer - 1; t < T - 1; ++t) targets[(size_t)t] = (int32_t)(rng() % (uint32_t)hp.n_vocab);

    ForwardOptions fo;
    fo.pool = &pool;
    fo.adapters = adapters.get();
    TrainBenchResult r;
    r.trainable = ps.total_numel();
    const double attn = 4.0 * (double)hp.n_layer * (double)hp.n_head * (double)hp.head_dim * (double)T * (double)T / 2;
    r.forward_gflop = (2.0 * (double)T * linear_weights + attn) * 1e-9;
    r.step_gflop = 3.0 * r.forward_gflop + 2.0 * attn * 1e-9;  // attention backward is ~2x its forward
    std::vector<float> dh((size_t)(T * E));
    for (int s = 0; s < o.steps + 1; ++s) {
        const auto t0 = std::chrono::steady_clock::now();
        ps.zero_grad();
        DecoderTape tape;
        dec.forward_train(embeds.data(), T, tape, fo);
        int64_t nv = 0;
        r.loss = dec.loss_backward(tape, targets.data(), 1.0f / (float)o.answer, dh.data(), &ps, &nv, fo) / (double)nv;
        dec.backward(dh.data(), tape, nullptr, &ps, fo);
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (s > 0) r.step_seconds.push_back(sec);  // the first step warms the caches and the allocator
    }
    HG_CHECK(std::isfinite(ps.grad_norm()), "bench train: a non-finite gradient");
    r.peak_rss_mib = peak_rss_mib();
    return r;
}

// ---------------------------------------------------------------------------------------------
// bench --train-manifest: the side-by-side run against another framework.

namespace {

std::vector<float> read_f32_file(const std::filesystem::path& p, size_t expect) {
    std::ifstream f(p, std::ios::binary);
    HG_CHECK(f.good(), "%s: cannot open", p.c_str());
    std::vector<float> v(expect);
    f.read(reinterpret_cast<char*>(v.data()), std::streamsize(expect * sizeof(float)));
    HG_CHECK(f.gcount() == std::streamsize(expect * sizeof(float)) && f.peek() == EOF,
             "%s: expected exactly %zu float32 values", p.c_str(), expect);
    return v;
}

}  // namespace

ManifestBenchResult bench_train_manifest(const std::filesystem::path& manifest) {
    using nlohmann::json;
    const json m = read_json_file(manifest);
    const std::filesystem::path dir = manifest.parent_path();
    TrainSpec spec = TrainSpec::stage(m.at("stage").get<int>(), m.at("plugin").get<std::string>());
    spec.vision = m.value("unfreeze_vision", false);
    spec.vq_vocabulary = false;
    auto tm = TrainableModel::load(dir / m.at("model").get<std::string>(), spec);
    const ClipVision* vision = tm->model().vision();
    const int64_t S = vision ? vision->config().image_size : 0;
    std::vector<TrainSample> samples;
    for (const json& e : m.at("examples")) {
        TrainSample s;
        s.id = "example " + std::to_string(samples.size());
        s.input_ids = e.at("ids").get<std::vector<int32_t>>();
        s.labels = e.at("labels").get<std::vector<int32_t>>();
        if (e.contains("pixels")) s.pixels.push_back(read_f32_file(dir / e["pixels"].get<std::string>(), size_t(3 * S * S)));
        samples.push_back(std::move(s));
    }
    ManifestBenchResult r;
    for (const auto& s : samples) r.rows_per_step += tm->sequence_length(s);
    for (size_t i = 0; i < tm->params().size(); ++i) r.trainable += tm->params()[i].numel();
    VectorSource data(std::move(samples));
    TrainOptions o;
    o.epochs = m.at("steps").get<int>();
    o.batch = m.at("batch").get<int>();
    HG_CHECK(o.batch == (int)data.size(), "bench manifest: batch must equal the number of examples (one step = all)");
    const json& lr = m.at("lr");
    o.lr[kGroupHLora] = lr.value("hlora", 0.0);
    o.lr[kGroupProjector] = lr.value("projector", 0.0);
    o.lr[kGroupVision] = lr.value("vision", 0.0);
    o.weight_decay = m.at("weight_decay").get<double>();
    o.schedule = ScheduleKind::Cosine;
    o.warmup_steps = m.at("warmup_steps").get<int64_t>();
    o.max_grad_norm = m.at("max_grad_norm").get<double>();
    o.activation_memory_mb = m.value("activation_memory_mb", o.activation_memory_mb);
    Trainer trainer(*tm, data, o);
    auto cpu_now = [] {
        timespec t{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
        return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
    };
    double cpu0 = cpu_now();
    trainer.run([&](const StepReport& s) {
        const double c = cpu_now();
        r.cpu_seconds.push_back(c - cpu0);
        cpu0 = c;
        r.loss.push_back(s.loss);
        r.grad_norm.push_back(s.grad_norm);
        r.seconds.push_back(s.seconds);
        return true;
    });
    r.peak_rss_mib = hg::peak_rss_mib();
    return r;
}

}  // namespace hg::train
