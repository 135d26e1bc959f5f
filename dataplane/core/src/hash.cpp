#include <cstddef>

#include "fulcrum/flow.hpp"

namespace fulcrum {

uint64_t bytes_hash(const void* data, size_t len, uint64_t seed) {
    using namespace detail;
    const auto* p = static_cast<const uint8_t*>(data);
    uint64_t h = seed ^ kP0 ^ mum(len ^ kP1, kP2);
    size_t n = len;
    while (n >= 16) {
        h = mum(load_u64(p) ^ kP1, load_u64(p + 8) ^ h);
        p += 16;
        n -= 16;
    }
    uint64_t a = 0, b = 0;
    if (n >= 8) {
        a = load_u64(p);
        p += 8;
        n -= 8;
    }
    for (size_t i = 0; i < n; ++i) b |= uint64_t{p[i]} << (8 * i);
    h = mum(a ^ kP2, b ^ h ^ kP3);
    return mum(h ^ kP0, len ^ kP1);
}

}  // namespace fulcrum
