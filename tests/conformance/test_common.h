// Shared helpers of the conformance suite: the optimised tables to check, random data, weights.
#pragma once
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/ops.h"
#include "core/quants.h"
#include "test_util.h"

namespace conf {

// Every optimised level that is compiled in and runs on this CPU (the scalar reference excluded).
// Says once per test binary which levels were checked and which this CPU cannot run.
inline std::vector<const hg::Kernels*> optimised_tables() {
    std::vector<const hg::Kernels*> out;
    std::string ran, lacking;
    for (hg::Isa isa : {hg::Isa::Avx2, hg::Isa::Avx512}) {
        if (const hg::Kernels* k = hg::kernels_for(isa)) {
            out.push_back(k);
            ran += std::string(" ") + k->name;
        } else {
            lacking += std::string(" ") + hg::isa_name(isa);
        }
    }
    static const bool reported = [&] {
        std::printf("[ levels ] checked against the scalar reference:%s; not run (this CPU lacks them):%s\n",
                    ran.empty() ? " none" : ran.c_str(), lacking.empty() ? " none" : lacking.c_str());
        return true;
    }();
    (void)reported;
    return out;
}

#define CONF_FOR_EACH_TABLE(t)                                                        \
    const auto conf_tables = conf::optimised_tables();                                 \
    if (conf_tables.empty()) GTEST_SKIP() << "no optimised kernel level runs on this CPU"; \
    for (const hg::Kernels* t : conf_tables)

inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// A weight matrix [N, K] of type t made from random normal values (quantized by quantize_rows).
struct Weights {
    std::vector<uint8_t> bytes;
    hg::Tensor t;
    Weights(hg::DType type, int64_t N, int64_t K, uint32_t seed, float scale = 0.05f) {
        auto f = randn(N * K, seed, scale);
        bytes.resize(hg::row_bytes(type, K) * N + 64);
        hg::quantize_rows(type, f.data(), bytes.data(), N, K);
        t = hg::Tensor::view(type, {N, K}, bytes.data());
    }
    Weights(hg::DType type, std::vector<uint8_t> raw, int64_t N, int64_t K) : bytes(std::move(raw)) {
        t = hg::Tensor::view(type, {N, K}, bytes.data());
    }
};

inline std::string shape_name(int64_t M, int64_t N, int64_t K) {
    return "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
}

}  // namespace conf
