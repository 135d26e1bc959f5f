#include <gtest/gtest.h>

#include <random>
#include <string>

#include "fulcrum/wrr.hpp"

using namespace fulcrum;

TEST(SmoothWrr, NginxSequence) {
    // nginx's example: weights a=5, b=1, c=1 give a a b a c a a.
    const uint32_t w[] = {5, 1, 1};
    int64_t cur[3] = {};
    std::string seq;
    for (int i = 0; i < 7; ++i) seq += static_cast<char>('a' + swrr_pick(w, cur, 3));
    EXPECT_EQ(seq, "aabacaa");
    // and the state returns to zero after a full cycle
    EXPECT_EQ(cur[0], 0);
    EXPECT_EQ(cur[1], 0);
    EXPECT_EQ(cur[2], 0);
}

TEST(SmoothWrr, ZeroWeightsAreSkipped) {
    const uint32_t w[] = {0, 3, 0, 1};
    int64_t cur[4] = {};
    int counts[4] = {};
    for (int i = 0; i < 400; ++i) ++counts[swrr_pick(w, cur, 4)];
    EXPECT_EQ(counts[0], 0);
    EXPECT_EQ(counts[2], 0);
    EXPECT_EQ(counts[1], 300);
    EXPECT_EQ(counts[3], 100);
    const uint32_t none[] = {0, 0};
    int64_t c2[2] = {};
    EXPECT_EQ(swrr_pick(none, c2, 2), -1);
    EXPECT_EQ(swrr_pick(none, c2, 0), -1);
}

TEST(SmoothWrrProperty, EveryWindowFollowsTheWeightsExactly) {
    std::mt19937 rng(3);
    for (int iter = 0; iter < 200; ++iter) {
        const size_t n = 1 + rng() % 12;
        std::vector<uint32_t> w(n);
        uint64_t total = 0;
        for (auto& x : w) {
            x = rng() % 10;
            total += x;
        }
        std::vector<int64_t> cur(n, 0);
        if (total == 0) {
            EXPECT_EQ(swrr_pick(w.data(), cur.data(), n), -1);
            continue;
        }
        for (int round = 0; round < 3; ++round) {
            std::vector<uint64_t> c(n, 0);
            for (uint64_t k = 0; k < total; ++k) ++c[static_cast<size_t>(swrr_pick(w.data(), cur.data(), n))];
            for (size_t i = 0; i < n; ++i) EXPECT_EQ(c[i], w[i]);
        }
    }
}

TEST(SmoothWrrProperty, PicksInterleave) {
    // With weights 1:1:...:1 the picks are strictly round robin.
    const uint32_t w[] = {1, 1, 1, 1};
    int64_t cur[4] = {};
    for (int i = 0; i < 40; ++i) EXPECT_EQ(swrr_pick(w, cur, 4), i % 4);
    // With 2:1 the heavy one never runs more than twice in a row.
    const uint32_t w2[] = {2, 1};
    int64_t cur2[2] = {};
    int run = 0;
    for (int i = 0; i < 300; ++i) {
        if (swrr_pick(w2, cur2, 2) == 0)
            EXPECT_LE(++run, 2);
        else
            run = 0;
    }
}
