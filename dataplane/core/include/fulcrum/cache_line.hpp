// Cache-line placement of per-worker state (docs/architecture.md, "Per-worker placement").
// Every object a worker writes on its packet path lives in cache lines no other thread writes:
// a line shared by two workers' counters would bounce between their cores on every packet
// (false sharing) although neither reads the other's data.
#pragma once

#include <cstddef>
#include <new>

namespace fulcrum {

inline constexpr size_t kCacheLine = 64;  // x86-64 and the Arm server cores DPDK targets

constexpr size_t cache_line_round(size_t n) {
    return (n + kCacheLine - 1) & ~(kCacheLine - 1);
}

// Base of element types that a worker allocates as arrays with new T[n] (its counters by
// service and by server, its per-burst scratch): the array then takes whole cache lines of
// its own, starting on a line and padded to a line's end, so the first and last elements
// never share a line with another allocation (another worker's array, say). The elements keep
// their size: only the allocation is aligned and padded.
struct CacheLineArrays {
    static void* operator new[](size_t bytes) {
        return ::operator new[](cache_line_round(bytes), std::align_val_t{kCacheLine});
    }
    static void operator delete[](void* p) noexcept {
        ::operator delete[](p, std::align_val_t{kCacheLine});
    }
};

}  // namespace fulcrum
