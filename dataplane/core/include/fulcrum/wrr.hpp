// Smooth weighted round robin (the nginx algorithm): on every pick each candidate's
// current weight grows by its weight, the largest is chosen and lowered by the total.
// Picks interleave (weights 5:1:1 give a a b a c a a, not a a a a a b c) and follow the
// weights exactly over every window of sum(weights) picks. O(n) per pick.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fulcrum {

// Returns the index of the chosen candidate, or -1 when every weight is 0. `weight_of(i)`
// gives candidate i's weight; `current` holds one accumulator per candidate (start them at
// 0) and belongs to a single thread.
template <class WeightOf>
inline int32_t swrr_pick(size_t n, WeightOf&& weight_of, int64_t* current) {
    int64_t total = 0;
    int32_t best = -1;
    int64_t best_cur = 0;
    for (size_t i = 0; i < n; ++i) {
        const int64_t w = weight_of(i);
        if (w == 0) continue;
        current[i] += w;
        total += w;
        if (best < 0 || current[i] > best_cur) {
            best = static_cast<int32_t>(i);
            best_cur = current[i];
        }
    }
    if (best >= 0) current[best] -= total;
    return best;
}

inline int32_t swrr_pick(const uint32_t* weights, int64_t* current, size_t n) {
    return swrr_pick(n, [weights](size_t i) { return weights[i]; }, current);
}

}  // namespace fulcrum
