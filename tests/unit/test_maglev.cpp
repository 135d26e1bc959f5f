#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>

#include "fulcrum/flow.hpp"
#include "fulcrum/maglev.hpp"

using namespace fulcrum;

namespace {

struct Pool {
    std::vector<std::string> names;
    std::vector<MaglevBackend> backends;
    explicit Pool(size_t n, uint32_t weight = 1) {
        names.reserve(n);
        for (size_t i = 0; i < n; ++i) names.push_back("server-" + std::to_string(i));
        for (size_t i = 0; i < n; ++i)
            backends.push_back({std::span(reinterpret_cast<const uint8_t*>(names[i].data()), names[i].size()),
                                weight, static_cast<uint32_t>(i)});
    }
};

std::map<uint32_t, size_t> counts(const std::vector<uint32_t>& t) {
    std::map<uint32_t, size_t> c;
    for (auto v : t) ++c[v];
    return c;
}

}  // namespace

TEST(Maglev, Primes) {
    EXPECT_TRUE(is_prime(2));
    EXPECT_TRUE(is_prime(65537));
    EXPECT_TRUE(is_prime(655373));
    EXPECT_TRUE(is_prime(kMaglevMaxSize));
    EXPECT_FALSE(is_prime(1));
    EXPECT_FALSE(is_prime(65536));
    EXPECT_FALSE(is_prime(655371));
}

// Table 1 of the Maglev paper: B0 (offset 3, skip 4), B1 (0, 2), B2 (3, 1), M = 7.
TEST(Maglev, PaperExampleTable) {
    std::vector<uint32_t> t(7);
    std::vector<MaglevSource> src = {{{3, 4}, 1, 0}, {{0, 2}, 1, 1}, {{3, 1}, 1, 2}};
    maglev_fill(src, 7, t);
    EXPECT_EQ(t, (std::vector<uint32_t>{1, 0, 1, 0, 2, 2, 0}));
    // B1 removed: its slots move, B0's and B2's preferences decide.
    std::vector<MaglevSource> without = {src[0], src[2]};
    maglev_fill(without, 7, t);
    EXPECT_EQ(t, (std::vector<uint32_t>{0, 0, 0, 0, 2, 2, 2}));
}

TEST(Maglev, PermutationsVisitEverySlotOnce) {
    for (uint32_t m : {7u, 13u, 251u, 65537u}) {
        Pool pool(20);
        for (const auto& b : pool.backends) {
            const MaglevPerm p = maglev_permutation(b.identity, m, 99);
            ASSERT_LT(p.offset, m);
            ASSERT_GE(p.skip, 1u);
            ASSERT_LT(p.skip, m);
            if (m > 300) continue;
            std::vector<bool> seen(m, false);
            for (uint32_t j = 0; j < m; ++j) {
                const uint32_t slot = static_cast<uint32_t>((p.offset + uint64_t{j} * p.skip) % m);
                ASSERT_FALSE(seen[slot]);
                seen[slot] = true;
            }
        }
    }
}

// maglev_build == the paper's algorithm run over the canonical order with those permutations.
TEST(Maglev, BuildMatchesReferencePopulation) {
    for (uint32_t m : {13u, 31u, 251u}) {
        Pool pool(5);
        const uint64_t seed = 42;
        auto table = maglev_build(pool.backends, m, seed);
        // Reference: straightforward Pseudocode 1 with modulo arithmetic.
        std::vector<size_t> order(pool.backends.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::vector<uint64_t> key(order.size());
        for (size_t i = 0; i < order.size(); ++i)
            key[i] = bytes_hash(pool.backends[i].identity.data(), pool.backends[i].identity.size(), seed);
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key[a] < key[b]; });
        std::vector<uint32_t> ref(m, kMaglevEmpty);
        std::vector<uint32_t> next(order.size(), 0);
        uint32_t filled = 0;
        while (filled < m) {
            for (size_t k = 0; k < order.size() && filled < m; ++k) {
                const size_t i = order[k];
                const MaglevPerm p = maglev_permutation(pool.backends[i].identity, m, seed);
                uint32_t c;
                do {
                    c = static_cast<uint32_t>((p.offset + uint64_t{next[k]} * p.skip) % m);
                    ++next[k];
                } while (ref[c] != kMaglevEmpty);
                ref[c] = pool.backends[i].value;
                ++filled;
            }
        }
        EXPECT_EQ(table, ref) << "m=" << m;
    }
}

TEST(Maglev, BalanceHundredServersWithinOnePercent) {
    Pool pool(100);
    auto t = maglev_build(pool.backends, 65537, 1);
    auto c = counts(t);
    ASSERT_EQ(c.size(), 100u);
    const double ideal = 65537.0 / 100;
    for (auto [v, n] : c) EXPECT_NEAR(static_cast<double>(n), ideal, ideal * 0.01) << "server " << v;
}

TEST(Maglev, WeightedBalanceWithinOnePercent) {
    Pool pool(100);
    uint32_t total = 0;
    for (size_t i = 0; i < pool.backends.size(); ++i) {
        pool.backends[i].weight = 1 + static_cast<uint32_t>(i % 4);  // weights 1:2:3:4
        total += pool.backends[i].weight;
    }
    for (uint32_t m : {65537u, 655373u}) {
        auto c = counts(maglev_build(pool.backends, m, 7));
        for (size_t i = 0; i < pool.backends.size(); ++i) {
            const double ideal = double(m) * pool.backends[i].weight / total;
            EXPECT_NEAR(static_cast<double>(c[static_cast<uint32_t>(i)]), ideal, ideal * 0.01)
                << "server " << i << " weight " << pool.backends[i].weight << " m=" << m;
        }
    }
}

TEST(Maglev, MinimalDisruptionWhenOneServerLeaves) {
    for (size_t n : {10u, 100u, 1000u}) {
        Pool pool(n);
        auto before = maglev_build(pool.backends, 65537, 3);
        const uint32_t gone = static_cast<uint32_t>(n / 2);
        auto fewer = pool.backends;
        fewer.erase(fewer.begin() + gone);
        auto after = maglev_build(fewer, 65537, 3);
        size_t others = 0, moved = 0;
        for (size_t i = 0; i < before.size(); ++i) {
            EXPECT_NE(after[i], gone);
            if (before[i] == gone) continue;
            ++others;
            if (after[i] != before[i]) ++moved;
        }
        EXPECT_LE(double(moved), 0.01 * double(others)) << n << " servers: " << moved << " of " << others << " moved";
    }
}

TEST(Maglev, DeterministicAndOrderIndependent) {
    Pool pool(50);
    auto a = maglev_build(pool.backends, 65537, 11);
    auto shuffled = pool.backends;
    std::mt19937 rng(5);
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    EXPECT_EQ(a, maglev_build(shuffled, 65537, 11));
    EXPECT_EQ(a, maglev_build(pool.backends, 65537, 11));
    EXPECT_NE(a, maglev_build(pool.backends, 65537, 12));  // the seed matters
}

TEST(Maglev, ZeroWeightsGetNoSlots) {
    Pool pool(4);
    pool.backends[2].weight = 0;
    auto c = counts(maglev_build(pool.backends, 251, 1));
    EXPECT_EQ(c.count(2), 0u);
    EXPECT_EQ(c.size(), 3u);
    for (auto& b : pool.backends) b.weight = 0;
    auto t = maglev_build(pool.backends, 251, 1);
    EXPECT_TRUE(std::all_of(t.begin(), t.end(), [](uint32_t v) { return v == kMaglevEmpty; }));
    EXPECT_TRUE(std::all_of(t.begin(), t.end(), [](uint32_t v) { return v == kMaglevEmpty; }));
}

TEST(Maglev, RejectsBadInput) {
    Pool pool(3);
    EXPECT_THROW(maglev_build(pool.backends, 65536, 1), std::invalid_argument);
    EXPECT_THROW(maglev_build(pool.backends, 1, 1), std::invalid_argument);
    auto dup = pool.backends;
    dup.push_back(dup[0]);
    dup.back().value = 9;
    EXPECT_THROW(maglev_build(dup, 251, 1), std::invalid_argument);
}

TEST(MaglevProperty, RandomPoolsFillEveryslotWithPositiveWeights) {
    std::mt19937 rng(99);
    for (int iter = 0; iter < 50; ++iter) {
        Pool pool(1 + rng() % 60);
        for (auto& b : pool.backends) b.weight = rng() % 5;
        const uint32_t m = std::vector<uint32_t>{251, 1021, 4099}[rng() % 3];
        auto t = maglev_build(pool.backends, m, rng());
        const bool any = std::any_of(pool.backends.begin(), pool.backends.end(),
                                     [](const MaglevBackend& b) { return b.weight > 0; });
        for (auto v : t) {
            if (!any) {
                EXPECT_EQ(v, kMaglevEmpty);
                continue;
            }
            ASSERT_NE(v, kMaglevEmpty);
            EXPECT_GT(pool.backends[v].weight, 0u);
        }
    }
}
