#include "fulcrum/maglev.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "fulcrum/flow.hpp"

namespace fulcrum {
namespace {
constexpr uint64_t kSeedOffset = 0x6f66667365743a31ull;  // h1
constexpr uint64_t kSeedSkip = 0x736b69703a323a32ull;    // h2
}  // namespace

bool is_prime(uint32_t n) {
    if (n < 2) return false;
    if (n % 2 == 0) return n == 2;
    for (uint32_t d = 3; uint64_t{d} * d <= n; d += 2)
        if (n % d == 0) return false;
    return true;
}

MaglevPerm maglev_permutation(std::span<const uint8_t> id, uint32_t m, uint64_t seed) {
    const uint64_t h1 = bytes_hash(id.data(), id.size(), seed ^ kSeedOffset);
    const uint64_t h2 = bytes_hash(id.data(), id.size(), seed ^ kSeedSkip);
    return {static_cast<uint32_t>(h1 % m), static_cast<uint32_t>(h2 % (m - 1)) + 1};
}

void maglev_fill(std::span<const MaglevSource> backends, uint32_t m, std::span<uint32_t> table) {
    std::fill(table.begin(), table.end(), kMaglevEmpty);
    if (backends.empty()) return;
    struct Turn {
        uint32_t pos;
        uint32_t skip;
        uint64_t credit;
        uint32_t weight;
        uint32_t value;
    };
    std::vector<Turn> st;
    st.reserve(backends.size());
    uint32_t max_w = 0;
    for (const auto& b : backends) {
        st.push_back({b.perm.offset, b.perm.skip, 0, b.weight, b.value});
        max_w = std::max(max_w, b.weight);
    }
    if (max_w == 0) return;
    uint32_t filled = 0;
    for (;;) {
        for (auto& s : st) {
            // Each round a backend earns its weight in credit and claims one slot per
            // `max_w` of credit, so slot counts follow the weights.
            s.credit += s.weight;
            if (s.credit < max_w) continue;
            s.credit -= max_w;
            uint32_t pos = s.pos;
            while (table[pos] != kMaglevEmpty) {  // walk to this backend's next free slot
                pos += s.skip;
                if (pos >= m) pos -= m;
            }
            table[pos] = s.value;
            pos += s.skip;
            if (pos >= m) pos -= m;
            s.pos = pos;
            if (++filled == m) return;
        }
    }
}

void maglev_build(std::span<const MaglevBackend> backends, uint32_t m, uint64_t seed,
                  std::span<uint32_t> table) {
    if (m < 3 || m > kMaglevMaxSize || !is_prime(m))
        throw std::invalid_argument("Maglev table size " + std::to_string(m) +
                                    " must be a prime between 3 and " +
                                    std::to_string(kMaglevMaxSize));
    if (table.size() != m) throw std::invalid_argument("Maglev table span has the wrong size");
    struct Item {
        uint64_t key;  // hash of the identity: defines a canonical processing order
        size_t input;
    };
    std::vector<Item> items;
    items.reserve(backends.size());
    for (size_t i = 0; i < backends.size(); ++i)
        if (backends[i].weight > 0)
            items.push_back({bytes_hash(backends[i].identity.data(), backends[i].identity.size(), seed), i});
    auto id_less = [&](const Item& a, const Item& b) {
        if (a.key != b.key) return a.key < b.key;
        const auto& ia = backends[a.input].identity;
        const auto& ib = backends[b.input].identity;
        return std::lexicographical_compare(ia.begin(), ia.end(), ib.begin(), ib.end());
    };
    // Canonical order, so the table does not depend on the order servers were listed in.
    std::sort(items.begin(), items.end(), id_less);
    for (size_t i = 1; i < items.size(); ++i)
        if (!id_less(items[i - 1], items[i]))
            throw std::invalid_argument("two Maglev backends share an identity (backend #" +
                                        std::to_string(items[i].input) + ")");
    std::vector<MaglevSource> src;
    src.reserve(items.size());
    for (const auto& it : items) {
        const auto& b = backends[it.input];
        src.push_back({maglev_permutation(b.identity, m, seed), b.weight, b.value});
    }
    maglev_fill(src, m, table);
}

}  // namespace fulcrum
