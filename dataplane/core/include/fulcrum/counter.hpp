// A statistics counter with one writer (a worker) and any number of readers (telemetry).
// Updates are a plain load/add/store with relaxed ordering: no locked instruction on the
// packet path, and no data race for readers on other threads.
#pragma once

#include <atomic>
#include <cstdint>

namespace fulcrum {

class Counter {
public:
    void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    void sub(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
    void set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
    uint64_t get() const { return v_.load(std::memory_order_relaxed); }
    // For gauges that go up and down (active connections): may be read as negative while a
    // per-worker share is below zero; sums across workers are what matter.
    int64_t get_signed() const { return static_cast<int64_t>(get()); }

private:
    std::atomic<uint64_t> v_{0};
};

}  // namespace fulcrum
