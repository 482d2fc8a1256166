// KVCache bookkeeping (append / truncate / snapshot / restore / prefix identity) and the
// PrefixCache store. The decoder-level consequences (identical logits when a prefix is reused)
// are in tests/parity/decoder_parity_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/half.h"
#include "runtime/kv_cache.h"

using namespace hg;

namespace {

std::vector<uint64_t> chain(const std::vector<int32_t>& ids, uint64_t seed = kPrefixHashSeed) {
    std::vector<uint64_t> h;
    for (int32_t id : ids) h.push_back(seed = prefix_hash_token(seed, id));
    return h;
}

// Fills rows [n_past, n_past + n) of every layer with a value that names (layer, pos, k/v).
void write_rows(KVCache& c, int64_t n) {
    KVView v = c.view();
    for (int64_t l = 0; l < c.n_layer(); ++l)
        for (int64_t p = v.n_past; p < v.n_past + n; ++p)
            for (int64_t i = 0; i < c.kv_dim(); ++i) {
                const float kval = (float)(l * 100 + p) + 0.5f, vval = -kval;  // exact in F16
                if (c.type() == DType::F32) {
                    reinterpret_cast<float*>(v.k[l] + p * v.row_bytes)[i] = kval;
                    reinterpret_cast<float*>(v.v[l] + p * v.row_bytes)[i] = vval;
                } else {
                    reinterpret_cast<uint16_t*>(v.k[l] + p * v.row_bytes)[i] = fp32_to_fp16(kval);
                    reinterpret_cast<uint16_t*>(v.v[l] + p * v.row_bytes)[i] = fp32_to_fp16(vval);
                }
            }
}

float k_at(const KVCache& c, int64_t l, int64_t p) {
    const uint8_t* r = c.k_row(l, p);
    return c.type() == DType::F32 ? reinterpret_cast<const float*>(r)[0]
                                  : fp16_to_fp32(reinterpret_cast<const uint16_t*>(r)[0]);
}

}  // namespace

TEST(KVCache, LayoutIsPreallocatedAndStable) {
    KVCache c(3, 8, 16, DType::F16);
    EXPECT_EQ(c.row_bytes(), 16u);
    EXPECT_EQ(c.bytes(), 3u * 2 * 16 * 16);
    KVView a = c.view();
    const auto h = chain({1, 2, 3, 4});
    write_rows(c, 4);
    c.append(h);
    KVView b = c.view();
    EXPECT_EQ(b.n_past, 4);
    EXPECT_EQ(b.capacity, 16);
    for (int l = 0; l < 3; ++l) {  // growing never moves the rows
        EXPECT_EQ(a.k[l], b.k[l]);
        EXPECT_EQ(a.v[l], b.v[l]);
    }
    EXPECT_THROW(c.append(std::vector<uint64_t>(13, 0)), Error);  // beyond capacity
    EXPECT_THROW(KVCache(1, 8, 4, DType::Q8_0), Error);
}

TEST(KVCache, TruncateAndCommonPrefix) {
    KVCache c(2, 4, 32, DType::F32);
    const auto h = chain({5, 6, 7, 8, 9});
    write_rows(c, 5);
    c.append(h);
    EXPECT_EQ(c.common_prefix(h), 5);
    EXPECT_EQ(c.common_prefix(chain({5, 6, 7})), 3);
    EXPECT_EQ(c.common_prefix(chain({5, 6, 0, 8, 9})), 2);      // differs at 2: later equal ids do not count
    EXPECT_EQ(c.common_prefix(chain({5, 6, 7}, 12345)), 0);    // another seed (adapter) shares nothing
    c.truncate(2);
    EXPECT_EQ(c.n_past(), 2);
    EXPECT_EQ(c.common_prefix(h), 2);
    EXPECT_EQ(k_at(c, 1, 1), 101.5f);
    EXPECT_THROW(c.truncate(3), Error);
}

TEST(KVCache, EmbeddingRowsHaveIdentities) {
    std::vector<float> a(16), b(16);
    std::iota(a.begin(), a.end(), 0.0f);
    b = a;
    EXPECT_EQ(prefix_hash_embedding(1, a.data(), 16), prefix_hash_embedding(1, b.data(), 16));
    b[15] = std::nextafter(b[15], 100.0f);  // one ulp in one element of an image vector
    EXPECT_NE(prefix_hash_embedding(1, a.data(), 16), prefix_hash_embedding(1, b.data(), 16));
    EXPECT_NE(prefix_hash_embedding(1, a.data(), 16), prefix_hash_embedding(2, a.data(), 16));
}

TEST(KVCache, SnapshotRestoreRoundTrip) {
    for (DType t : {DType::F16, DType::F32}) {
        KVCache c(2, 4, 32, t);
        const auto h = chain({1, 2, 3, 4, 5, 6});
        write_rows(c, 6);
        c.append(h);
        const KVCache::Snapshot s = c.snapshot(4);
        EXPECT_EQ(s.n(), 4);
        // Overwrite, then restore: the first 4 positions come back, the rest is gone.
        c.truncate(0);
        KVView v = c.view();
        std::memset(v.k[0], 0, c.row_bytes() * 6);
        c.append(chain({9, 9}));
        c.restore(s);
        EXPECT_EQ(c.n_past(), 4);
        EXPECT_EQ(c.common_prefix(h), 4);
        EXPECT_EQ(k_at(c, 0, 3), 3.5f);
        EXPECT_EQ(k_at(c, 1, 0), 100.5f);
        KVCache other(3, 4, 32, t);
        EXPECT_THROW(other.restore(s), Error);
    }
}

TEST(KVCache, PrefixCacheFindsTheLongestStoredPrefixAndEvicts) {
    KVCache c(1, 4, 64, DType::F32);
    const auto h = chain({1, 2, 3, 4, 5, 6, 7, 8});
    write_rows(c, 8);
    c.append(h);
    auto s2 = c.snapshot(2), s5 = c.snapshot(5);
    const size_t each5 = s5.bytes();
    PrefixCache pc(s2.bytes() + each5);
    pc.put(s2);
    pc.put(s5);
    EXPECT_EQ(pc.size(), 2u);
    auto got = pc.find(h);
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->n(), 5);
    got = pc.find(chain({1, 2, 3}));
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->n(), 2);
    EXPECT_EQ(pc.find(chain({7, 7})), nullptr);
    // A third snapshot over budget evicts the least recently used one (s5, found before s2).
    pc.put(c.snapshot(1));
    EXPECT_EQ(pc.size(), 2u);
    EXPECT_LE(pc.bytes(), s2.bytes() + each5);
    got = pc.find(h);
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->n(), 2);
}
