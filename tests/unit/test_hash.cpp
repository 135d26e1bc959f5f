#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "fulcrum/flow.hpp"

using namespace fulcrum;

namespace {
FlowKey key4(uint32_t src, uint16_t sport) {
    uint8_t s[4] = {static_cast<uint8_t>(src >> 24), static_cast<uint8_t>(src >> 16),
                    static_cast<uint8_t>(src >> 8), static_cast<uint8_t>(src)};
    uint8_t d[4] = {198, 18, 1, 1};
    return make_key(s, d, false, 6, sport, 80);
}
}  // namespace

TEST(FlowHash, DeterministicAndSeeded) {
    const FlowKey k = key4(0xC6120007, 41000);
    EXPECT_EQ(flow_hash(k, 1), flow_hash(k, 1));
    EXPECT_NE(flow_hash(k, 1), flow_hash(k, 2));
    EXPECT_NE(flow_hash(k, 1), flow_hash(key4(0xC6120007, 41001), 1));
    // Every field contributes.
    FlowKey k2 = k;
    k2.proto = 17;
    EXPECT_NE(flow_hash(k, 1), flow_hash(k2, 1));
    k2 = k;
    k2.dport = 81;
    EXPECT_NE(flow_hash(k, 1), flow_hash(k2, 1));
    k2 = k;
    k2.is_v6 = 1;
    EXPECT_NE(flow_hash(k, 1), flow_hash(k2, 1));
}

TEST(FlowHash, KeyPaddingIsZero) {
    const FlowKey k = key4(1, 2);
    EXPECT_EQ(k.pad[0], 0);
    EXPECT_EQ(k.pad[1], 0);
    for (int i = 4; i < 16; ++i) EXPECT_EQ(k.src[i], 0);
}

TEST(FlowHash, UniformOverRangeChiSquare) {
    // Sequential client ports from one client: the hardest realistic input.
    constexpr uint32_t kBuckets = 251;
    constexpr uint32_t kN = 251 * 400;
    std::vector<uint32_t> c(kBuckets, 0);
    for (uint32_t i = 0; i < kN; ++i)
        ++c[hash_to_range(flow_hash(key4(0xC6120007 + i / 60000, static_cast<uint16_t>(i)), 9), kBuckets)];
    const double e = double(kN) / kBuckets;
    double chi = 0;
    for (auto x : c) chi += (x - e) * (x - e) / e;
    // 250 degrees of freedom: the 99.9th percentile is about 329.
    EXPECT_LT(chi, 330.0);
}

TEST(FlowHash, AvalancheOnSinglePortChange) {
    std::mt19937_64 rng(1);
    double total_bits = 0;
    const int n = 2000;
    for (int i = 0; i < n; ++i) {
        const auto a = static_cast<uint32_t>(rng());
        const auto p = static_cast<uint16_t>(rng());
        const uint64_t h1 = flow_hash(key4(a, p), 5);
        const uint64_t h2 = flow_hash(key4(a, static_cast<uint16_t>(p ^ 1)), 5);
        total_bits += __builtin_popcountll(h1 ^ h2);
    }
    EXPECT_NEAR(total_bits / n, 32.0, 2.0);
}

TEST(FlowHash, HashToRangeStaysInRange) {
    std::mt19937_64 rng(2);
    for (int i = 0; i < 100000; ++i) {
        const uint32_t n = 1 + static_cast<uint32_t>(rng() % 1000000);
        EXPECT_LT(hash_to_range(rng(), n), n);
    }
    EXPECT_EQ(hash_to_range(~0ull, 7), 6u);
    EXPECT_EQ(hash_to_range(0, 7), 0u);
}

TEST(BytesHash, LengthsAndSeeds) {
    std::set<uint64_t> seen;
    const uint8_t data[64] = {};
    for (size_t len = 0; len <= 64; ++len) EXPECT_TRUE(seen.insert(bytes_hash(data, len, 0)).second);
    EXPECT_NE(bytes_hash("abc", 3, 0), bytes_hash("abc", 3, 1));
    EXPECT_EQ(bytes_hash("abc", 3, 0), bytes_hash("abc", 3, 0));
}
