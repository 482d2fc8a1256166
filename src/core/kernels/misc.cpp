// Small ops with a single implementation (not hot enough for SIMD variants).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "core/quants.h"

namespace hg {

void embedding_lookup(float* out, const Tensor& table, const int32_t* ids, int64_t n) {
    const int64_t V = table.rows(), D = table.cols();
    for (int64_t i = 0; i < n; ++i) {
        HG_CHECK(ids[i] >= 0 && ids[i] < V, "token id %d is outside the embedding table (%lld rows)", ids[i],
                 (long long)V);
        dequantize_row(table.type, table.row(ids[i]), out + i * D, D);
    }
}

void upsample_nearest2x(float* out, const float* in, int64_t C, int64_t H, int64_t W) {
    for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < 2 * H; ++y) {
            const float* src = in + (c * H + y / 2) * W;
            float* dst = out + (c * 2 * H + y) * 2 * W;
            for (int64_t x = 0; x < W; ++x) dst[2 * x] = dst[2 * x + 1] = src[x];
        }
}

int64_t argmax(const float* x, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i)
        if (!std::isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;
}

int64_t topk(const float* x, int64_t n, int64_t k, int64_t* idx_out) {
    k = std::min(k, n);
    if (k <= 0) return 0;
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    auto better = [x](int64_t a, int64_t b) {
        const bool na = std::isnan(x[a]), nb = std::isnan(x[b]);
        if (na != nb) return nb;  // non-NaN first
        if (!na && x[a] != x[b]) return x[a] > x[b];
        return a < b;
    };
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
    std::copy(idx.begin(), idx.begin() + k, idx_out);
    return k;
}

}  // namespace hg
