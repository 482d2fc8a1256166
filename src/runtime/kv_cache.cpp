#include "runtime/kv_cache.h"

#include <cstring>

#include "core/error.h"

namespace hg {

namespace {
// murmur3's 64-bit finaliser: every input bit affects every output bit.
uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}
}  // namespace

uint64_t prefix_hash_token(uint64_t prev, int32_t id) {
    return mix64(prev ^ mix64(0x746f6b656e000000ull ^ (uint64_t)(uint32_t)id));  // "token" tag
}

uint64_t prefix_hash_embedding(uint64_t prev, const float* row, int64_t n) {
    uint64_t h = 0x656d626564000000ull ^ (uint64_t)n;  // "embed" tag
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, row + i, 4);
        h = mix64(h ^ u) + 0x9e3779b97f4a7c15ull;
    }
    return mix64(prev ^ h);
}

// ---------------------------------------------------------------------------------------------

KVCache::KVCache(int64_t n_layer, int64_t kv_dim, int64_t capacity, DType type)
    : n_layer_(n_layer), kv_dim_(kv_dim), capacity_(capacity), type_(type) {
    HG_CHECK(type == DType::F32 || type == DType::F16, "KV cache type %s is not supported (F16, F32)",
             dtype_name(type));
    HG_CHECK(n_layer > 0 && kv_dim > 0 && capacity > 0, "KV cache: bad size %lld layers x %lld x %lld positions",
             (long long)n_layer, (long long)kv_dim, (long long)capacity);
    row_bytes_ = hg::row_bytes(type, kv_dim);
    // new[] without () leaves the pages untouched until used: a large context costs memory
    // only as positions fill.
    buf_.reset(new (std::nothrow) uint8_t[bytes()]);
    HG_CHECK(buf_ != nullptr, "out of memory allocating a %zu-byte KV cache (%lld positions)", bytes(),
             (long long)capacity);
    const size_t layer_bytes = (size_t)capacity_ * row_bytes_;
    for (int64_t l = 0; l < n_layer_; ++l) {
        k_.push_back(buf_.get() + (size_t)(2 * l) * layer_bytes);
        v_.push_back(buf_.get() + (size_t)(2 * l + 1) * layer_bytes);
    }
    hashes_.reserve((size_t)capacity_);
}

KVView KVCache::view() {
    KVView v;
    v.type = type_;
    v.n_past = n_past();
    v.capacity = capacity_;
    v.row_bytes = row_bytes_;
    v.k = k_.data();
    v.v = v_.data();
    return v;
}

void KVCache::append(std::span<const uint64_t> chained) {
    HG_CHECK(n_past() + (int64_t)chained.size() <= capacity_, "KV cache full: %lld + %zu positions > %lld",
             (long long)n_past(), chained.size(), (long long)capacity_);
    hashes_.insert(hashes_.end(), chained.begin(), chained.end());
}

void KVCache::truncate(int64_t n) {
    HG_CHECK(n >= 0 && n <= n_past(), "KV cache: cannot truncate %lld positions to %lld", (long long)n_past(),
             (long long)n);
    hashes_.resize((size_t)n);
}

int64_t KVCache::common_prefix(std::span<const uint64_t> chained) const {
    const size_t n = std::min(chained.size(), hashes_.size());
    size_t i = 0;
    while (i < n && chained[i] == hashes_[i]) ++i;
    return (int64_t)i;
}

KVCache::Snapshot KVCache::snapshot(int64_t n) const {
    if (n < 0) n = n_past();
    HG_CHECK(n <= n_past(), "KV cache: snapshot of %lld positions, only %lld filled", (long long)n,
             (long long)n_past());
    Snapshot s;
    s.n_layer = n_layer_;
    s.kv_dim = kv_dim_;
    s.type = type_;
    s.hashes.assign(hashes_.begin(), hashes_.begin() + n);
    const size_t lb = (size_t)n * row_bytes_;
    s.k.resize((size_t)n_layer_ * lb);
    s.v.resize((size_t)n_layer_ * lb);
    for (int64_t l = 0; l < n_layer_; ++l) {
        if (lb == 0) break;
        std::memcpy(s.k.data() + l * lb, k_[l], lb);
        std::memcpy(s.v.data() + l * lb, v_[l], lb);
    }
    return s;
}

void KVCache::restore(const Snapshot& s) {
    HG_CHECK(s.n_layer == n_layer_ && s.kv_dim == kv_dim_ && s.type == type_,
             "KV cache: snapshot layout (%lld layers x %lld, %s) does not match the cache (%lld x %lld, %s)",
             (long long)s.n_layer, (long long)s.kv_dim, dtype_name(s.type), (long long)n_layer_, (long long)kv_dim_,
             dtype_name(type_));
    HG_CHECK(s.n() <= capacity_, "KV cache: snapshot of %lld positions exceeds capacity %lld", (long long)s.n(),
             (long long)capacity_);
    const size_t lb = (size_t)s.n() * row_bytes_;
    for (int64_t l = 0; l < n_layer_; ++l) {
        if (lb == 0) break;
        std::memcpy(k_[l], s.k.data() + l * lb, lb);
        std::memcpy(v_[l], s.v.data() + l * lb, lb);
    }
    hashes_.assign(s.hashes.begin(), s.hashes.end());
}

// ---------------------------------------------------------------------------------------------

void PrefixCache::put(KVCache::Snapshot s) {
    if (s.n() == 0 || s.bytes() > max_bytes_) return;
    const uint64_t key = s.hashes.back();
    auto entry = std::make_shared<const KVCache::Snapshot>(std::move(s));
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = by_hash_.find(key); it != by_hash_.end()) {  // already stored: refresh
        lru_.splice(lru_.begin(), lru_, it->second);
        return;
    }
    bytes_ += entry->bytes();
    lru_.push_front(std::move(entry));
    by_hash_[key] = lru_.begin();
    stats_.stores++;
    while (bytes_ > max_bytes_ && !lru_.empty()) {
        const Entry& last = lru_.back();
        bytes_ -= last->bytes();
        by_hash_.erase(last->hashes.back());
        lru_.pop_back();
        stats_.evictions++;
    }
}

std::shared_ptr<const KVCache::Snapshot> PrefixCache::find(std::span<const uint64_t> chained) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.lookups++;
    if (lru_.empty()) return nullptr;
    for (size_t n = chained.size(); n > 0; --n) {
        auto it = by_hash_.find(chained[n - 1]);
        if (it == by_hash_.end()) continue;
        const Entry e = *it->second;
        if (e->n() != (int64_t)n) continue;  // same hash at another length: a collision, ignore
        lru_.splice(lru_.begin(), lru_, it->second);
        stats_.hits++;
        stats_.hit_positions += (uint64_t)n;
        return e;
    }
    return nullptr;
}

bool PrefixCache::contains(uint64_t last_hash) const {
    std::lock_guard<std::mutex> lock(mu_);
    return by_hash_.count(last_hash) != 0;
}

size_t PrefixCache::bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return bytes_;
}

size_t PrefixCache::size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return lru_.size();
}

PrefixCache::Stats PrefixCache::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
}

}  // namespace hg
