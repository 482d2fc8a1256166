// A bump allocator for activations. A forward pass allocates its scratch buffers from an
// arena and resets it at the end; after the first (largest) pass it never touches the heap
// again, so decoding a token allocates nothing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace hg {

class Arena {
public:
    explicit Arena(size_t initial_bytes = 0);
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;

    // 64-byte aligned, uninitialised. Valid until reset().
    void* alloc_bytes(size_t n);
    template <typename T>
    T* alloc(size_t count) { return static_cast<T*>(alloc_bytes(count * sizeof(T))); }

    // Frees everything allocated since construction (or the last reset). If the arena had
    // to grow, its blocks are merged into one of the high-water size so the next pass
    // fits in a single block.
    void reset();

    size_t used() const { return used_; }
    size_t capacity() const;
    size_t high_water() const { return high_water_; }
    size_t n_heap_allocations() const { return n_heap_allocs_; }  // for tests: steady state adds none

private:
    struct Block {
        std::unique_ptr<uint8_t[], void (*)(uint8_t*)> mem{nullptr, nullptr};
        size_t size = 0, off = 0;
    };
    void add_block(size_t min_bytes);
    std::vector<Block> blocks_;
    size_t used_ = 0, high_water_ = 0, n_heap_allocs_ = 0;
};

}  // namespace hg
