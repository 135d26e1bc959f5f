// A statistics counter with one writer (a worker) and any number of readers (telemetry).
// Updates are a plain read-modify-write without a locked instruction; readers on other threads
// load the value atomically (relaxed) and see it before or after an update, never torn.
#pragma once

#include <cstdint>

namespace fulcrum {

class Counter {
public:
    Counter() = default;
    // Like the std::atomic it replaces: counters live where their worker writes them.
    Counter(const Counter&) = delete;
    Counter& operator=(const Counter&) = delete;

    void add(uint64_t n = 1) {
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
        // One add to memory (no lock prefix): its load and its store are each an aligned
        // 8-byte access, atomic on x86-64, so this is the relaxed load and store below in one
        // instruction instead of three. The single writer makes the pair safe.
        asm("addq %1, %0" : "+m"(v_) : "er"(n) : "cc");
#else
        __atomic_store_n(&v_, __atomic_load_n(&v_, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
#endif
    }
    void sub(uint64_t n = 1) {
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
        asm("subq %1, %0" : "+m"(v_) : "er"(n) : "cc");
#else
        __atomic_store_n(&v_, __atomic_load_n(&v_, __ATOMIC_RELAXED) - n, __ATOMIC_RELAXED);
#endif
    }
    void set(uint64_t n) { __atomic_store_n(&v_, n, __ATOMIC_RELAXED); }
    uint64_t get() const { return __atomic_load_n(&v_, __ATOMIC_RELAXED); }
    // For gauges that go up and down (active connections): may be read as negative while a
    // per-worker share is below zero; sums across workers are what matter.
    int64_t get_signed() const { return static_cast<int64_t>(get()); }

private:
    alignas(8) uint64_t v_ = 0;
};

}  // namespace fulcrum
