// The key/value cache of one sequence, and a store of cached prefixes.
//
// KVCache holds, per layer, K and V rows of n_head_kv * head_dim elements for positions
// [0, capacity), F16 by default (as llama.cpp) or F32 (what the parity tests use). It is
// allocated once; decoding a token allocates nothing. Positions are contiguous: the sequence
// can grow (append), shrink to a prefix (truncate), be copied out (snapshot) and back (restore).
//
// Every position also carries a chained 64-bit hash of the inputs up to and including it
// (token ids and embedding rows alike, see prefix_hash_*), so "how much of this new request is
// already in the cache" is common_prefix(hashes of the request). PrefixCache keeps snapshots
// keyed the same way, e.g. the system prompt plus an image asked about again.
#pragma once
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "model/decoder.h"

namespace hg {

// Chained identity of a sequence: h_i = f(h_{i-1}, input_i), starting from kPrefixHashSeed.
constexpr uint64_t kPrefixHashSeed = 0x9e3779b97f4a7c15ull;
uint64_t prefix_hash_token(uint64_t prev, int32_t id);
uint64_t prefix_hash_embedding(uint64_t prev, const float* row, int64_t n);  // hashes the bytes of the row

class KVCache {
public:
    KVCache(int64_t n_layer, int64_t kv_dim, int64_t capacity, DType type = DType::F16);
    KVCache(const DecoderHParams& hp, int64_t capacity, DType type = DType::F16)
        : KVCache(hp.n_layer, hp.kv_dim(), capacity, type) {}
    KVCache(const KVCache&) = delete;
    KVCache& operator=(const KVCache&) = delete;

    int64_t n_layer() const { return n_layer_; }
    int64_t kv_dim() const { return kv_dim_; }
    int64_t capacity() const { return capacity_; }
    DType type() const { return type_; }
    size_t row_bytes() const { return row_bytes_; }
    size_t bytes() const { return (size_t)n_layer_ * 2 * (size_t)capacity_ * row_bytes_; }

    int64_t n_past() const { return (int64_t)hashes_.size(); }
    std::span<const uint64_t> hashes() const { return hashes_; }

    // For Decoder::forward: rows [0, n_past) are valid, the forward writes the next ones.
    KVView view();

    // Makes the positions a forward just wrote part of the sequence; `chained` are their hashes.
    void append(std::span<const uint64_t> chained);
    // Keeps positions [0, n).
    void truncate(int64_t n);
    void clear() { truncate(0); }
    // Number of leading positions of a sequence with these chained hashes that are here.
    int64_t common_prefix(std::span<const uint64_t> chained) const;

    const uint8_t* k_row(int64_t layer, int64_t pos) const { return k_[layer] + (size_t)pos * row_bytes_; }
    const uint8_t* v_row(int64_t layer, int64_t pos) const { return v_[layer] + (size_t)pos * row_bytes_; }

    // A copy of positions [0, n).
    struct Snapshot {
        int64_t n_layer = 0, kv_dim = 0;
        DType type = DType::F16;
        std::vector<uint64_t> hashes;  // n entries
        std::vector<uint8_t> k, v;     // [n_layer][n][row_bytes]
        int64_t n() const { return (int64_t)hashes.size(); }
        size_t bytes() const { return k.size() + v.size() + hashes.size() * sizeof(uint64_t); }
    };
    Snapshot snapshot(int64_t n = -1) const;  // -1: all of n_past
    // Replaces the content with the snapshot's positions (same layout required).
    void restore(const Snapshot& s);

private:
    int64_t n_layer_, kv_dim_, capacity_;
    DType type_;
    size_t row_bytes_;
    std::unique_ptr<uint8_t[]> buf_;
    std::vector<uint8_t*> k_, v_;
    std::vector<uint64_t> hashes_;  // reserved to capacity
};

// Snapshots of sequence prefixes, found by the chained hash of their last position; least
// recently used ones are dropped beyond max_bytes (0: nothing is kept, the cache is off).
// Thread-safe: a server's workers share one, so that a prefix computed by one worker (the system
// prompt and an image) is reused by whichever worker gets the next question about it. A found
// snapshot is immutable and shared (shared_ptr), so a reader keeps it while another thread evicts.
class PrefixCache {
public:
    explicit PrefixCache(size_t max_bytes) : max_bytes_(max_bytes) {}

    void put(KVCache::Snapshot s);
    // The longest stored prefix of a sequence with these chained hashes (nullptr if none).
    std::shared_ptr<const KVCache::Snapshot> find(std::span<const uint64_t> chained);
    // Whether a prefix ending in this chained hash is stored (no LRU refresh, no counting).
    bool contains(uint64_t last_hash) const;

    size_t bytes() const;
    size_t size() const;
    size_t max_bytes() const { return max_bytes_; }

    struct Stats {
        uint64_t lookups = 0;        // find() calls
        uint64_t hits = 0;           // of which found a stored prefix
        uint64_t hit_positions = 0;  // positions in the prefixes found
        uint64_t stores = 0;         // snapshots put (new ones)
        uint64_t evictions = 0;      // dropped for space
    };
    Stats stats() const;

private:
    using Entry = std::shared_ptr<const KVCache::Snapshot>;
    mutable std::mutex mu_;
    size_t max_bytes_, bytes_ = 0;
    std::list<Entry> lru_;  // front = most recently used
    std::unordered_map<uint64_t, std::list<Entry>::iterator> by_hash_;
    Stats stats_;
};

}  // namespace hg
