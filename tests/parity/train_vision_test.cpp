// Training backward of the CLIP vision tower and the mlp2x_gelu projector vs PyTorch autograd in
// float64 (tests/reference/gen_train_vision.py -> tests/fixtures/train_vision/).
//
// Each case: features = tower.forward_train(pixels, layer), y = projector.forward_train(features),
// loss = sum(y * g). Our projector.backward(g) gives d features, which tower.backward takes; every
// parameter's gradient and the pixels' are compared with the oracle as
//   err = max |got - ref| / max |ref|   (per tensor; worst per tensor group reported),
// bound 1e-5, with the scalar reference kernels and with the active ones.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/ops_backward.h"
#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "model/clip_vision.h"
#include "model/grad_sink.h"
#include "model/projector.h"
#include "model/weight_source.h"
#include "test_util.h"

using namespace hg;

namespace {

constexpr double kBound = 1e-5;

// The scalar reference backward table and the active one (core/ops_backward.h).
const BackwardKernels& backward_ref_table() { return backward_kernels_ref(); }
const BackwardKernels& backward_active_table() { return backward_kernels(); }

// manifest.json + data.bin (float32 arrays by name), as tests/parity/clip_fixture.h reads vision/.
class TrainVisionFixture {
public:
    static const TrainVisionFixture& get() {
        static const TrainVisionFixture f = [] {
            TrainVisionFixture v;
            std::ifstream in(hgtest::fixture("train_vision/manifest.json"));
            if (!in) throw std::runtime_error("cannot open tests/fixtures/train_vision/manifest.json (run gen_train_vision.py)");
            v.manifest_ = nlohmann::json::parse(in);
            const std::vector<uint8_t> bytes = hgtest::read_file(hgtest::fixture("train_vision/data.bin"));
            if (bytes.size() % 4) throw std::runtime_error("train_vision/data.bin: size not a multiple of 4");
            v.data_.resize(bytes.size() / 4);
            std::memcpy(v.data_.data(), bytes.data(), bytes.size());
            return v;
        }();
        return f;
    }
    const nlohmann::json& manifest() const { return manifest_; }
    std::span<const float> array(const std::string& name) const {
        if (!manifest_["arrays"].contains(name)) throw std::runtime_error("train_vision fixture has no array " + name);
        const auto& e = manifest_["arrays"][name];
        size_t n = 1;
        for (int64_t d : e["shape"].get<std::vector<int64_t>>()) n *= static_cast<size_t>(d);
        const size_t off = e["offset"].get<size_t>();
        if (off % 4 || off / 4 + n > data_.size()) throw std::runtime_error("train_vision array out of range: " + name);
        return {data_.data() + off / 4, n};
    }

private:
    nlohmann::json manifest_;
    std::vector<float> data_;
};

// One case's tower and projector, loaded from the GGUF files the generator wrote.
struct Models {
    std::unique_ptr<GGUFFile> vision_file, proj_file;
    std::unique_ptr<ClipVision> tower;
    std::unique_ptr<Projector> proj;
    int layer = 0;
    int64_t n_patches = 0, hidden = 0, d_out = 0, n_pixels = 0;

    explicit Models(const std::string& tag) {
        const auto& c = TrainVisionFixture::get().manifest()["cases"][tag];
        vision_file = GGUFFile::open(hgtest::fixture("train_vision/" + c["vision_gguf"].get<std::string>()));
        proj_file = GGUFFile::open(hgtest::fixture("train_vision/" + c["projector_gguf"].get<std::string>()));
        tower = std::make_unique<ClipVision>(ClipVision::load(gguf_source(*vision_file)));
        const ClipVisionConfig& cfg = tower->config();
        proj = std::make_unique<Projector>(gguf_source(*proj_file), cfg.hidden, c["projector_out"].get<int64_t>());
        layer = c["layer"].get<int>();
        n_patches = cfg.n_patches();
        hidden = cfg.hidden;
        d_out = proj->d_out();
        n_pixels = (int64_t)cfg.num_channels * cfg.image_size * cfg.image_size;
    }

    ParamRefs all_parameters() const {
        ParamRefs p = tower->parameters();
        for (ParamRef& r : proj->parameters()) p.push_back(r);
        return p;
    }
};

// Gradient buffers (zeroed) for the parameters `want` accepts, keyed by name.
struct Grads {
    std::map<std::string, std::vector<float>> by_name;
    MapGradSink sink;
    std::vector<float> dpixels, dfeatures, features, y;

    template <class Want>
    Grads(const Models& m, Want&& want) {
        for (const ParamRef& p : m.all_parameters()) {
            if (!want(p.name)) continue;
            auto& buf = by_name[p.name];
            buf.assign(static_cast<size_t>(p.value.numel()), 0.0f);
            sink.add(p.value.data, buf.data());
        }
    }
};

struct RunOptions {
    const Kernels* K = nullptr;
    const BackwardKernels* BK = nullptr;
    int threads = 2;
    bool want_dpixels = true;
};

// forward_train, projector backward with g, tower backward; gradients accumulate into `gr`.
void run_chain(const Models& m, const std::string& tag, Grads& gr, const RunOptions& o) {
    const auto& fx = TrainVisionFixture::get();
    const std::span<const float> pixels = fx.array(tag + "/pixels");
    const std::span<const float> g = fx.array(tag + "/g");
    ASSERT_EQ(pixels.size(), (size_t)m.n_pixels);
    ASSERT_EQ(g.size(), (size_t)(m.n_patches * m.d_out));
    ThreadPool pool(o.threads);
    Arena arena;
    ClipVisionTrainState vs;
    ProjectorTrainState ps;
    gr.features.assign(m.n_patches * m.hidden, 0.0f);
    gr.y.assign(m.n_patches * m.d_out, 0.0f);
    m.tower->forward_train(gr.features.data(), pixels.data(), m.layer, vs, arena, pool, o.K);
    m.proj->forward_train(gr.y.data(), gr.features.data(), m.n_patches, ps, arena, pool, o.K);
    gr.dfeatures.assign(m.n_patches * m.hidden, 0.0f);
    m.proj->backward(g.data(), ps, gr.sink, gr.dfeatures.data(), arena, pool, o.BK);
    if (o.want_dpixels) gr.dpixels.assign(m.n_pixels, 0.0f);
    m.tower->backward(gr.dfeatures.data(), vs, gr.sink, o.want_dpixels ? gr.dpixels.data() : nullptr, arena, pool,
                      o.BK);
}

// "v.blk.3.attn_q.weight" -> "blk.attn_q.weight": one group per tensor kind across the blocks.
std::string group_of(const std::string& name) {
    const std::string blk = "v.blk.";
    if (name.rfind(blk, 0) != 0) return name;
    return "blk." + name.substr(name.find('.', blk.size()) + 1);
}

// max |got - ref| / scale, scale = max |ref| (or the given one). An all-zero reference with no
// scale (a tensor the loss does not reach) requires exact zeros: returns +inf otherwise.
double rel_err(std::span<const float> got, std::span<const float> ref, double scale = -1) {
    double max_ref = 0, max_diff = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        max_ref = std::max(max_ref, std::fabs((double)ref[i]));
        const double d = std::fabs((double)got[i] - (double)ref[i]);
        max_diff = std::isfinite(d) ? std::max(max_diff, d) : INFINITY;
    }
    if (scale < 0) scale = max_ref;
    if (scale == 0) return max_diff == 0 ? 0 : INFINITY;
    return max_diff / scale;
}

std::string kernel_label(const Kernels* K, const BackwardKernels* BK) {
    return std::string(K == &kernels_ref() ? "scalar reference" : kernels().name) + " forward, " + BK->name +
           " backward";
}

void check_case(const std::string& tag, const Kernels* K, const BackwardKernels* BK) {
    const auto& fx = TrainVisionFixture::get();
    const auto& c = fx.manifest()["cases"][tag];
    const Models m(tag);
    Grads gr(m, [](const std::string&) { return true; });

    // parameters() names every tensor of the files, once, with the oracle's shapes.
    std::set<std::string> ours, theirs;
    for (const auto& [name, buf] : gr.by_name) {
        ours.insert(name);
        EXPECT_EQ(buf.size(), fx.array(tag + "/grad/" + name).size()) << name;
    }
    for (const std::string& n : c["params"].get<std::vector<std::string>>()) theirs.insert(n);
    EXPECT_EQ(ours, theirs);
    EXPECT_EQ(m.all_parameters().size(), ours.size()) << "a parameter name repeats";

    run_chain(m, tag, gr, {K, BK, 2, true});

    std::map<std::string, double> worst;  // per group
    std::set<std::string> unreached;
    for (const std::string& n : c["unreached"].get<std::vector<std::string>>()) unreached.insert(n);
    const auto& sym = c["zero_by_symmetry"];
    for (const std::string& name : theirs) {
        const std::span<const float> ref = fx.array(tag + "/grad/" + name);
        const std::vector<float>& got = gr.by_name.at(name);
        double e;
        if (sym.contains(name)) {
            // True gradient 0 (softmax ignores the key bias): ours must be rounding noise on the
            // scale of the same block's key-weight gradient.
            const std::span<const float> scale_ref = fx.array(tag + "/grad/" + sym[name].get<std::string>());
            double scale = 0;
            for (float v : scale_ref) scale = std::max(scale, std::fabs((double)v));
            e = rel_err(got, ref, scale);
        } else {
            e = rel_err(got, ref);
        }
        if (unreached.count(name)) {
            EXPECT_EQ(e, 0.0) << tag << " " << name << ": the loss does not reach it, its buffer must stay zero";
            continue;
        }
        EXPECT_LE(e, kBound) << tag << " " << name << " (" << kernel_label(K, BK) << ")";
        double& w = worst[group_of(name)];
        w = std::max(w, e);
    }
    const double e_px = rel_err(gr.dpixels, fx.array(tag + "/grad/pixels"));
    const double e_df = rel_err(gr.dfeatures, fx.array(tag + "/dfeatures"));
    EXPECT_LE(e_px, kBound) << tag << " pixels";
    EXPECT_LE(e_df, kBound) << tag << " d features";
    worst["pixels"] = e_px;
    worst["d features (projector dx)"] = e_df;
    // The forward itself, against the float64 oracle (scale-relative as the gradients).
    const double e_f = rel_err(gr.features, fx.array(tag + "/features"));
    const double e_y = rel_err(gr.y, fx.array(tag + "/y"));
    EXPECT_LE(e_f, kBound) << tag << " features";
    EXPECT_LE(e_y, kBound) << tag << " projector output";

    std::printf("  case %s (layer %d, %s, %zu tensors, %zu unreached), %s kernels: forward %.2e, projector out %.2e\n",
                tag.c_str(), m.layer, c["hidden_act"].get<std::string>().c_str(), theirs.size(), unreached.size(),
                kernel_label(K, BK).c_str(), e_f, e_y);
    for (const auto& [group, e] : worst) std::printf("    %-28s worst rel err %.2e\n", group.c_str(), e);
}

}  // namespace

TEST(TrainVision, GradientsMatchAutogradScalarReference) {
    for (const char* tag : {"a", "b"}) check_case(tag, &kernels_ref(), &backward_ref_table());
}

TEST(TrainVision, GradientsMatchAutogradActiveKernels) {
    for (const char* tag : {"a", "b"}) check_case(tag, &kernels(), &backward_active_table());
}

// forward_train returns exactly what inference's forward() returns (same kernels, same order).
TEST(TrainVision, ForwardTrainEqualsForwardBitForBit) {
    const auto& fx = TrainVisionFixture::get();
    for (const char* tag : {"a", "b"}) {
        const Models m(tag);
        const std::span<const float> pixels = fx.array(std::string(tag) + "/pixels");
        ThreadPool pool(2);
        const int n_states = m.tower->config().n_layer + 1;
        for (int layer = -n_states; layer < n_states; ++layer) {
            Arena arena;
            std::vector<float> a(m.n_patches * m.hidden), b(m.n_patches * m.hidden);
            const int ran = m.tower->forward(a.data(), pixels.data(), layer, arena, pool);
            ClipVisionTrainState st;
            EXPECT_EQ(m.tower->forward_train(b.data(), pixels.data(), layer, st, arena, pool), ran);
            EXPECT_EQ(st.n_blocks, ran);
            EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << tag << " layer " << layer;
            std::vector<float> ya(m.n_patches * m.d_out), yb(m.n_patches * m.d_out);
            m.proj->forward(ya.data(), a.data(), m.n_patches, arena, pool);
            ProjectorTrainState ps;
            m.proj->forward_train(yb.data(), a.data(), m.n_patches, ps, arena, pool);
            EXPECT_EQ(std::memcmp(ya.data(), yb.data(), ya.size() * sizeof(float)), 0) << tag << " projector";
        }
    }
}

// The same gradients, bit for bit, on 1 and 2 threads (both kernel levels).
TEST(TrainVision, ThreadCountDoesNotChangeGradients) {
    for (const char* tag : {"a", "b"})
        for (const auto& [K, BK] : {std::pair{&kernels_ref(), &backward_ref_table()},
                                    std::pair{&kernels(), &backward_active_table()}}) {
            const Models m(tag);
            auto all = [](const std::string&) { return true; };
            Grads one(m, all), two(m, all);
            run_chain(m, tag, one, {K, BK, 1, true});
            run_chain(m, tag, two, {K, BK, 2, true});
            for (const auto& [name, buf] : one.by_name)
                EXPECT_EQ(std::memcmp(buf.data(), two.by_name.at(name).data(), buf.size() * sizeof(float)), 0)
                    << tag << " " << name << " (" << kernel_label(K, BK) << ")";
            EXPECT_EQ(std::memcmp(one.dpixels.data(), two.dpixels.data(), one.dpixels.size() * sizeof(float)), 0)
                << tag << " pixels";
        }
}

// Gradients accumulate (+=): a second backward on the same buffers doubles them (up to the
// rounding of adding into a non-zero buffer, which the kernels may do row by row).
TEST(TrainVision, GradientsAccumulate) {
    const Models m("a");
    auto all = [](const std::string&) { return true; };
    Grads once(m, all), twice(m, all);
    run_chain(m, "a", once, {});
    run_chain(m, "a", twice, {});
    run_chain(m, "a", twice, {});  // run_chain resets dpixels / d features; weight buffers keep adding
    for (const auto& [name, buf] : once.by_name) {
        std::vector<float> doubled(buf.size());
        for (size_t i = 0; i < buf.size(); ++i) doubled[i] = 2.0f * buf[i];
        EXPECT_LE(rel_err(twice.by_name.at(name), doubled), 1e-6) << name;
    }
    EXPECT_EQ(std::memcmp(twice.dpixels.data(), once.dpixels.data(), once.dpixels.size() * sizeof(float)), 0);
}

// Frozen parts: a frozen tower without dpixels does nothing (no scratch either); training only the
// top block that ran gives that block's gradients exactly as the full backward does, and no
// other buffer is touched; dpixels == nullptr does not change the weight gradients.
TEST(TrainVision, FrozenPartsAndEarlyStop) {
    const auto& fx = TrainVisionFixture::get();
    for (const char* tag : {"a", "b"}) {
        const Models m(tag);
        const std::span<const float> pixels = fx.array(std::string(tag) + "/pixels");
        ThreadPool pool(2);
        {
            Arena arena;
            ClipVisionTrainState st;
            std::vector<float> f(m.n_patches * m.hidden), d(m.n_patches * m.hidden, 1.0f);
            m.tower->forward_train(f.data(), pixels.data(), m.layer, st, arena, pool);
            const size_t used = arena.used();
            MapGradSink none;
            m.tower->backward(d.data(), st, none, nullptr, arena, pool);
            EXPECT_EQ(arena.used(), used) << tag << ": a frozen tower's backward must cost nothing";
        }
        auto all = [](const std::string&) { return true; };
        Grads full(m, all);
        run_chain(m, tag, full, {});
        Grads no_px(m, all);
        run_chain(m, tag, no_px, {nullptr, nullptr, 2, false});
        for (const auto& [name, buf] : full.by_name)
            EXPECT_EQ(std::memcmp(buf.data(), no_px.by_name.at(name).data(), buf.size() * sizeof(float)), 0)
                << tag << " " << name << " without dpixels";

        const int top = m.tower->resolve_layer(m.layer) - 1;
        const std::string prefix = "v.blk." + std::to_string(top) + ".";
        Grads top_only(m, [&](const std::string& n) { return n.rfind(prefix, 0) == 0; });
        ASSERT_EQ(top_only.by_name.size(), 16u);
        run_chain(m, tag, top_only, {nullptr, nullptr, 2, false});
        for (const auto& [name, buf] : top_only.by_name)
            EXPECT_EQ(std::memcmp(buf.data(), full.by_name.at(name).data(), buf.size() * sizeof(float)), 0)
                << tag << " " << name << " trained alone";
    }
}

TEST(TrainVision, BackwardWithoutForwardTrainThrows) {
    const Models m("a");
    ThreadPool pool(1);
    Arena arena;
    std::vector<float> d(m.n_patches * m.hidden, 0.0f), dx(m.n_patches * m.hidden, 0.0f);
    MapGradSink sink;
    std::vector<float> gbuf(m.tower->parameters()[0].value.numel());
    sink.add(m.tower->parameters()[0].value.data, gbuf.data());
    const ClipVisionTrainState empty;
    EXPECT_THROW(m.tower->backward(d.data(), empty, sink, nullptr, arena, pool), hg::Error);
    const ProjectorTrainState pempty_but_wrong{3, {}, {}, &kernels()};
    EXPECT_THROW(m.proj->backward(d.data(), pempty_but_wrong, sink, dx.data(), arena, pool), hg::Error);
}
