#include "core/arena.h"

#include <cstdlib>

#include "core/error.h"

namespace hg {

namespace {
constexpr size_t kAlign = 64;
size_t round_up(size_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }
void free_aligned(uint8_t* p) { std::free(p); }
}  // namespace

Arena::Arena(size_t initial_bytes) {
    if (initial_bytes) add_block(initial_bytes);
}

void Arena::add_block(size_t min_bytes) {
    const size_t size = round_up(min_bytes);
    void* p = std::aligned_alloc(kAlign, size);
    HG_CHECK(p != nullptr, "out of memory allocating a %zu-byte activation arena", size);
    Block b;
    b.mem = std::unique_ptr<uint8_t[], void (*)(uint8_t*)>(static_cast<uint8_t*>(p), free_aligned);
    b.size = size;
    blocks_.push_back(std::move(b));
    ++n_heap_allocs_;
}

void* Arena::alloc_bytes(size_t n) {
    n = round_up(n ? n : 1);
    if (blocks_.empty() || blocks_.back().size - blocks_.back().off < n) {
        const size_t grow = blocks_.empty() ? 0 : blocks_.back().size;
        add_block(std::max(n, grow));
    }
    Block& b = blocks_.back();
    void* p = b.mem.get() + b.off;
    b.off += n;
    used_ += n;
    if (used_ > high_water_) high_water_ = used_;
    return p;
}

void Arena::reset() {
    if (blocks_.size() > 1) {
        blocks_.clear();
        add_block(high_water_);
    } else if (!blocks_.empty()) {
        blocks_.back().off = 0;
    }
    used_ = 0;
}

size_t Arena::capacity() const {
    size_t c = 0;
    for (const auto& b : blocks_) c += b.size;
    return c;
}

}  // namespace hg
