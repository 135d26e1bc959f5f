// Single-producer single-consumer ring of trivially copyable items: the path from a worker
// (producer, never blocks) to the control thread (consumer). Storage is allocated once, at
// construction; push and pop are lock-free and allocation-free. A full ring refuses the push and
// the producer counts a drop: a worker must never wait for the control thread.
//
// Memory order: the producer writes the slot, then publishes tail_ with release; the consumer
// reads tail_ with acquire before reading the slot, then frees it by publishing head_ with
// release, which the producer reads with acquire before overwriting the slot. Each side keeps a
// cached copy of the other's index and rereads the shared one only when the copy says full
// (producer) or empty (consumer), so the index cache lines move between cores rarely. The
// slots take whole cache lines of their own (aligned and padded), so a worker's writes to its
// ring never touch a line of another allocation.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace fulcrum {

template <class T>
class SpscRing {
    static_assert(std::is_trivially_copyable_v<T>, "SpscRing holds trivially copyable items");

public:
    static constexpr size_t kMaxCapacity = size_t{1} << 30;

    // Holds `capacity` items, rounded up to a power of two (capacity() tells). Throws
    // std::invalid_argument for 0 or more than kMaxCapacity.
    explicit SpscRing(size_t capacity) {
        if (capacity == 0 || capacity > kMaxCapacity)
            throw std::invalid_argument("spsc ring: capacity " + std::to_string(capacity) +
                                        " outside 1.." + std::to_string(kMaxCapacity));
        cap_ = std::bit_ceil(capacity);
        mask_ = cap_ - 1;
        const size_t bytes = (cap_ * sizeof(T) + kLine - 1) & ~(kLine - 1);
        T* p = static_cast<T*>(::operator new(bytes, std::align_val_t{kLine}));
        std::uninitialized_value_construct_n(p, cap_);
        slots_.reset(p);
    }
    SpscRing(const SpscRing&) = delete;
    SpscRing& operator=(const SpscRing&) = delete;

    size_t capacity() const { return cap_; }
    // The slot storage, capacity() items (for placement checks).
    const T* slots() const { return slots_.get(); }

    // Producer only. False when full: nothing is written.
    bool push(const T& v) {
        const uint64_t t = prod_.tail.load(std::memory_order_relaxed);
        if (t - prod_.head_cache >= cap_) {
            prod_.head_cache = head_.load(std::memory_order_acquire);
            if (t - prod_.head_cache >= cap_) return false;
        }
        slots_[t & mask_] = v;
        prod_.tail.store(t + 1, std::memory_order_release);
        return true;
    }

    // Consumer only. False when empty.
    bool pop(T& out) {
        const uint64_t h = head_.load(std::memory_order_relaxed);
        if (h == cons_.tail_cache) {
            cons_.tail_cache = prod_.tail.load(std::memory_order_acquire);
            if (h == cons_.tail_cache) return false;
        }
        out = slots_[h & mask_];
        head_.store(h + 1, std::memory_order_release);
        return true;
    }

    // Consumer only: pops up to `max` items into `out`, returns how many.
    size_t pop_bulk(T* out, size_t max) {
        const uint64_t h = head_.load(std::memory_order_relaxed);
        cons_.tail_cache = prod_.tail.load(std::memory_order_acquire);
        const size_t n = static_cast<size_t>(std::min<uint64_t>(cons_.tail_cache - h, max));
        for (size_t i = 0; i < n; ++i) out[i] = slots_[(h + i) & mask_];
        if (n) head_.store(h + n, std::memory_order_release);
        return n;
    }

    // Items in the ring; exact only from a thread that is the producer or the consumer while
    // the other side is idle, an estimate otherwise.
    size_t size() const {
        const uint64_t t = prod_.tail.load(std::memory_order_acquire);
        const uint64_t h = head_.load(std::memory_order_acquire);
        return static_cast<size_t>(t - h);
    }
    bool empty() const { return size() == 0; }

private:
    static constexpr size_t kLine = 64;
    struct FreeSlots {  // trivially copyable, so trivially destructible: nothing to destroy
        void operator()(T* p) const { ::operator delete(p, std::align_val_t{kLine}); }
    };

    // 64-bit indices that only grow: they cannot wrap in the lifetime of a process, so
    // tail - head is always the fill level.
    struct alignas(64) Producer {
        std::atomic<uint64_t> tail{0};  // next slot to write; written by the producer
        uint64_t head_cache = 0;        // producer's copy of head_
    };
    struct alignas(64) Consumer {
        uint64_t tail_cache = 0;  // consumer's copy of tail
    };

    Producer prod_;
    alignas(64) std::atomic<uint64_t> head_{0};  // next slot to read; written by the consumer
    Consumer cons_;
    // Read-only after construction: kept off the index lines.
    alignas(64) size_t cap_ = 0;
    size_t mask_ = 0;
    std::unique_ptr<T[], FreeSlots> slots_;
};

}  // namespace fulcrum
