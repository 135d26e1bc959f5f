// Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4).
//
// Each backend has a permutation of the table's slots derived from its identity:
// offset = h1(id) mod M, skip = h2(id) mod (M - 1) + 1, permutation[j] = (offset + j*skip)
// mod M. Backends take turns claiming their next free preferred slot until the table is
// full. Weights scale the turns: every round each backend adds its weight to a credit and
// claims one slot per `max weight` of credit, so slot counts follow the weights. The table
// depends only on (identities, weights, order-independent) and the seed, so two balancers
// with the same servers build byte-identical tables.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace fulcrum {

inline constexpr uint32_t kMaglevDefaultSize = 65537;
inline constexpr uint32_t kMaglevMaxSize = 16777213;  // largest prime below 2^24
inline constexpr uint32_t kMaglevEmpty = 0xFFFFFFFFu;

struct MaglevBackend {
    std::span<const uint8_t> identity;  // stable identity, e.g. the server address bytes
    uint32_t weight = 1;                // 0: no slots (no new connections)
    uint32_t value = 0;                 // what the table stores for this backend
};

bool is_prime(uint32_t n);

// Offset and skip of a backend for table size m (exposed for tests).
struct MaglevPerm {
    uint32_t offset;
    uint32_t skip;
};
MaglevPerm maglev_permutation(std::span<const uint8_t> identity, uint32_t m, uint64_t seed);

// The population step on its own: backends with explicit permutations take turns in the
// given order (the paper's Pseudocode 1, with weighted turns). Weights must be > 0.
struct MaglevSource {
    MaglevPerm perm;
    uint32_t weight;
    uint32_t value;
};
void maglev_fill(std::span<const MaglevSource> backends, uint32_t m, std::span<uint32_t> table);

// Fills `table` (size m, prime) with backend values. Backends are processed in the order of
// their identities' permutation seeds, not input order, so callers need not sort. If no
// backend has a positive weight every slot is kMaglevEmpty. Throws std::invalid_argument if
// m is not a prime in [3, kMaglevMaxSize] or two backends share an identity.
void maglev_build(std::span<const MaglevBackend> backends, uint32_t m, uint64_t seed,
                  std::span<uint32_t> table);

inline std::vector<uint32_t> maglev_build(std::span<const MaglevBackend> backends, uint32_t m,
                                          uint64_t seed) {
    std::vector<uint32_t> t(m);
    maglev_build(backends, m, seed, t);
    return t;
}

}  // namespace fulcrum
