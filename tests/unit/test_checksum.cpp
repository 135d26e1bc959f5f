#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"

using namespace fulcrum;

TEST(Checksum, Rfc1071Example) {
    // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    const uint8_t d[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    EXPECT_EQ(csum_fold(csum_partial(d, sizeof d, 0)), static_cast<uint16_t>(~0xddf2));
}

TEST(Checksum, KnownIpv4Header) {
    // A well-known example header (Wikipedia "IPv4 header checksum"): checksum b861.
    uint8_t h[] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                   0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
    EXPECT_EQ(ipv4_header_checksum(h, 20), 0xb861);
    store_be16(h + 10, 0xb861);
    EXPECT_EQ(csum_fold(csum_partial(h, 20, 0)), 0);
}

TEST(Checksum, OddLengthPadsWithZero) {
    const uint8_t a[] = {0x12, 0x34, 0x56};
    const uint8_t b[] = {0x12, 0x34, 0x56, 0x00};
    EXPECT_EQ(csum_partial(a, 3, 0), csum_partial(b, 4, 0));
}

TEST(ChecksumProperty, IncrementalUpdateEqualsRecompute) {
    std::mt19937 rng(4);
    for (int i = 0; i < 10000; ++i) {
        uint8_t buf[40];
        for (auto& x : buf) x = static_cast<uint8_t>(rng());
        const uint16_t before = csum_fold(csum_partial(buf, sizeof buf, 0));
        const size_t at = 2 * (rng() % 20);
        const uint16_t old_v = load_be16(buf + at);
        const auto new_v = static_cast<uint16_t>(rng());
        store_be16(buf + at, new_v);
        const uint16_t after = csum_fold(csum_partial(buf, sizeof buf, 0));
        const uint16_t inc = csum_update16(before, old_v, new_v);
        // 0x0000 and 0xFFFF are the same value in ones' complement.
        EXPECT_TRUE(inc == after || (inc == 0xFFFF && after == 0) || (inc == 0 && after == 0xFFFF));
    }
}

TEST(ChecksumProperty, Ipv4HeaderFastPathMatchesGenericSum) {
    std::mt19937 rng(11);
    for (int i = 0; i < 20000; ++i) {
        uint8_t h[60];
        for (auto& x : h) x = static_cast<uint8_t>(rng());
        const size_t ihl = 4 * (5 + rng() % 11);
        // Reference: the generic sum with the checksum field skipped.
        const uint16_t want = csum_fold(csum_partial(h + 12, ihl - 12, csum_partial(h, 10, 0)));
        EXPECT_EQ(ipv4_header_checksum(h, ihl), want) << "ihl " << ihl;
        EXPECT_EQ(ipv4_header_checksum_ok(h, ihl), csum_fold(csum_partial(h, ihl, 0)) == 0);
        store_be16(h + 10, want);
        EXPECT_TRUE(ipv4_header_checksum_ok(h, ihl)) << "ihl " << ihl;
        h[rng() % ihl] ^= static_cast<uint8_t>(1u << (rng() % 8));  // any single bit flip is caught
        EXPECT_FALSE(ipv4_header_checksum_ok(h, ihl)) << "ihl " << ihl;
        if (ihl == 20 && h[0] != 0) {
            EXPECT_EQ(detail::ipv4_header_checksum_ok_v4(h), ipv4_header_checksum_ok(h, 20));
        }
    }
}

// The 64-bit sum's carries: words whose sums wrap 2^64 once or more, all-ones words (a
// multiple of 2^64 - 1), and a header of zeros (sum 0, never valid).
TEST(ChecksumProperty, Ipv4HeaderSumCarries) {
    const auto agree = [](const uint8_t* h, size_t ihl) {
        return ipv4_header_checksum_ok(h, ihl) == (csum_fold(csum_partial(h, ihl, 0)) == 0);
    };
    uint8_t h[60];
    std::memset(h, 0, sizeof h);
    EXPECT_FALSE(ipv4_header_checksum_ok(h, 20));
    EXPECT_FALSE(ipv4_header_checksum_ok(h, 60));
    std::memset(h, 0xFF, sizeof h);
    for (size_t ihl = 20; ihl <= 60; ihl += 4) {
        EXPECT_TRUE(agree(h, ihl)) << "ihl " << ihl;
        EXPECT_TRUE(ipv4_header_checksum_ok(h, ihl)) << "ihl " << ihl;  // every word 0xFFFF
    }
    EXPECT_TRUE(detail::ipv4_header_checksum_ok_v4(h));
    std::mt19937 rng(12);
    for (int i = 0; i < 20000; ++i) {
        // Mostly 0xFF bytes with a few others: sums near 2^64, 2 x 2^64 and their wraps.
        for (auto& x : h) x = (rng() % 4) ? 0xFF : static_cast<uint8_t>(rng());
        const size_t ihl = 4 * (5 + rng() % 11);
        ASSERT_TRUE(agree(h, ihl)) << "case " << i;
        store_be16(h + 10, 0);
        store_be16(h + 10, csum_fold(csum_partial(h, ihl, 0)));
        ASSERT_TRUE(ipv4_header_checksum_ok(h, ihl)) << "case " << i;
        if (ihl == 20) {
            ASSERT_TRUE(detail::ipv4_header_checksum_ok_v4(h)) << "case " << i;
        }
        h[rng() % ihl] ^= static_cast<uint8_t>(1u << (rng() % 8));
        ASSERT_FALSE(ipv4_header_checksum_ok(h, ihl)) << "case " << i;
        if (ihl == 20 && h[0] != 0) {
            ASSERT_FALSE(detail::ipv4_header_checksum_ok_v4(h)) << "case " << i;
        }
    }
}

TEST(Crc32c, KnownVectors) {
    const char* s = "123456789";
    EXPECT_EQ(crc32c({reinterpret_cast<const uint8_t*>(s), 9}), 0xE3069283u);
    uint8_t zeros[32] = {};
    EXPECT_EQ(crc32c(zeros), 0x8A9136AAu);  // RFC 3720 B.4: 32 bytes of zeros
    EXPECT_EQ(crc32c({}), 0u);
}

TEST(Crc32c, IncrementalEqualsWhole) {
    std::vector<uint8_t> d(1000);
    std::mt19937 rng(6);
    for (auto& x : d) x = static_cast<uint8_t>(rng());
    for (size_t cut : {0u, 1u, 7u, 8u, 500u, 999u, 1000u}) {
        const uint32_t part = crc32c(std::span(d).first(cut));
        EXPECT_EQ(crc32c(std::span(d).subspan(cut), part), crc32c(d));
    }
}
