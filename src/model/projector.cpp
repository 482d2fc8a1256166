#include "model/projector.h"

#include <cstring>

#include "core/error.h"
#include "core/ops.h"

namespace hg {

Projector::Projector(const WeightSource& src, int64_t expect_in, int64_t expect_out) {
    namespace n = projector_names;
    HG_CHECK(src.tensor, "%s: weight source cannot look up tensors", src.origin.c_str());
    std::optional<Tensor> w0 = src.tensor(n::kW0);
    HG_CHECK(w0.has_value(), "%s: projector tensor %s is missing", src.origin.c_str(), n::kW0);
    HG_CHECK(w0->n_dims == 2, "%s: tensor %s has shape %s, expected [H, d_vis]", src.origin.c_str(), n::kW0,
             w0->shape_str().c_str());
    d_out_ = w0->shape[0];
    d_in_ = w0->shape[1];
    HG_CHECK(expect_in <= 0 || d_in_ == expect_in, "%s: projector takes %lld-wide features, the vision tower gives %lld",
             src.origin.c_str(), (long long)d_in_, (long long)expect_in);
    HG_CHECK(expect_out <= 0 || d_out_ == expect_out,
             "%s: projector gives %lld-wide embeddings, the text model's hidden size is %lld", src.origin.c_str(),
             (long long)d_out_, (long long)expect_out);
    w0_ = require_matrix(src, n::kW0, {d_out_, d_in_});
    b0_ = require_f32(src, n::kB0, {d_out_});
    w2_ = require_matrix(src, n::kW2, {d_out_, d_out_});
    b2_ = require_f32(src, n::kB2, {d_out_});
}

void Projector::forward(float* y, const float* x, int64_t M, Arena& arena, ThreadPool& pool) const {
    const Kernels& K = kernels();
    float* h = arena.alloc<float>(M * d_out_);  // [M, H]
    K.matmul(h, x, w0_, b0_.data(), M, pool);
    K.gelu_erf(h, h, M * d_out_);
    K.matmul(y, h, w2_, b2_.data(), M, pool);
}

ParamRefs Projector::parameters() const {
    namespace n = projector_names;
    auto vec = [](const std::vector<float>& v) {
        return Tensor::view(DType::F32, {static_cast<int64_t>(v.size())}, const_cast<float*>(v.data()));
    };
    return {{n::kW0, w0_}, {n::kB0, vec(b0_)}, {n::kW2, w2_}, {n::kB2, vec(b2_)}};
}

void Projector::forward_train(float* y, const float* x, int64_t M, ProjectorTrainState& saved, Arena& arena,
                              ThreadPool& pool, const Kernels* kernels_in) const {
    const Kernels& K = kernels_in ? *kernels_in : kernels();
    saved.M = M;
    saved.kernels = &K;
    saved.x.assign(x, x + M * d_in_);
    saved.pre.resize(static_cast<size_t>(M * d_out_));
    float* h = arena.alloc<float>(M * d_out_);  // [M, H]
    K.matmul(saved.pre.data(), x, w0_, b0_.data(), M, pool);
    K.gelu_erf(h, saved.pre.data(), M * d_out_);
    K.matmul(y, h, w2_, b2_.data(), M, pool);
}

void Projector::backward(const float* dy, const ProjectorTrainState& saved, const GradSink& sink, float* dx,
                         Arena& arena, ThreadPool& pool, const BackwardKernels* bk) const {
    const int64_t M = saved.M, H = d_out_;
    HG_CHECK(saved.kernels != nullptr && saved.x.size() == static_cast<size_t>(M * d_in_) &&
                 saved.pre.size() == static_cast<size_t>(M * H),
             "Projector::backward: the training state does not come from this projector's forward_train");
    float* dw0 = sink.find(w0_.data);
    float* db0 = sink.find(b0_.data());
    float* dw2 = sink.find(w2_.data);
    float* db2 = sink.find(b2_.data());
    if (!dw0 && !db0 && !dw2 && !db2 && !dx) return;  // frozen and nothing below wants a gradient
    const BackwardKernels& BK = bk ? *bk : backward_kernels();

    // y = a·W2ᵀ + b2 with a = gelu(pre): dW2 += dyᵀ·a, db2 += Σ dy, da = dy·W2
    float* a = arena.alloc<float>(M * H);
    saved.kernels->gelu_erf(a, saved.pre.data(), M * H);
    if (dw2 || db2) BK.matmul_backward_w(dw2, db2, dy, a, M, H, H, pool);
    if (!dw0 && !db0 && !dx) return;
    float* da = arena.alloc<float>(M * H);
    std::memset(da, 0, M * H * sizeof(float));
    BK.matmul_backward_x(da, dy, w2_, M, pool);
    // a = gelu(pre): dpre = da ⊙ gelu'(pre)  (reusing a's buffer)
    float* dpre = a;
    std::memset(dpre, 0, M * H * sizeof(float));
    BK.gelu_erf_backward(dpre, da, saved.pre.data(), M * H);
    // pre = x·W0ᵀ + b0
    if (dw0 || db0) BK.matmul_backward_w(dw0, db0, dpre, saved.x.data(), M, H, d_in_, pool);
    if (dx) BK.matmul_backward_x(dx, dpre, w0_, M, pool);
}

}  // namespace hg
