#include "model/projector.h"

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

}  // namespace hg
