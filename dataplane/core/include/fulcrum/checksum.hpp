// Internet checksum (RFC 1071) helpers with incremental update (RFC 1624), and
// CRC32C for snapshot integrity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "fulcrum/bytes.hpp"

namespace fulcrum {

// Adds `len` bytes as big-endian 16-bit words to a 32-bit ones'-complement
// accumulator. An odd trailing byte is padded with zero.
uint32_t csum_partial(const uint8_t* data, size_t len, uint32_t sum);

// Folds an accumulator to 16 bits and complements it: the value to store in a
// checksum field (host order). Over data that includes a correct checksum it yields 0.
inline uint16_t csum_fold(uint32_t sum) {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

// RFC 1624 eqn. 3: new checksum after a 16-bit field changed from old_v to new_v.
inline uint16_t csum_update16(uint16_t check, uint16_t old_v, uint16_t new_v) {
    uint32_t sum = static_cast<uint16_t>(~check);
    sum += static_cast<uint16_t>(~old_v);
    sum += new_v;
    return csum_fold(sum);
}

namespace detail {
// Ones'-complement sum of an IPv4 header's 32-bit words in native byte order, folded to 16
// bits (still native order). At most 15 words: the 64-bit accumulator cannot overflow, so no
// end-around carry is needed until the fold.
inline uint32_t ipv4_words_folded(const uint8_t* ip, size_t ihl, uint64_t acc) {
    acc += uint64_t{load_u32(ip)} + load_u32(ip + 4) + load_u32(ip + 8) + load_u32(ip + 12) + load_u32(ip + 16);
    for (size_t i = 20; i < ihl; i += 4) acc += load_u32(ip + i);  // options
    acc = (acc & 0xFFFFFFFF) + (acc >> 32);
    acc = (acc & 0xFFFFFFFF) + (acc >> 32);
    auto s = static_cast<uint32_t>(acc);
    s = (s & 0xFFFF) + (s >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    return s;
}

// Adds with end-around carry: the sum modulo 2^64 - 1 (add, then adc 0). 0xFFFF divides
// 2^64 - 1, so sums of this kind keep every value modulo 0xFFFF.
inline uint64_t add_end_around(uint64_t a, uint64_t b) {
    uint64_t s;
    const bool carry = __builtin_add_overflow(a, b, &s);
    return s + carry;  // cannot wrap: with a carry, s is at most 2^64 - 2
}

// The ones'-complement sum of an IPv4 header's 20 fixed bytes as two 64-bit words and one
// 32-bit word, in native byte order, modulo 2^64 - 1 (add_end_around). It is 0 only for a
// header of zero bytes.
inline uint64_t ipv4_sum64(const uint8_t* ip) {
    return add_end_around(add_end_around(load_u64(ip), load_u64(ip + 8)), load_u32(ip + 16));
}
}  // namespace detail

// True when the IPv4 header of `ihl` bytes (a multiple of 4, 20..60) has a correct checksum:
// its 16-bit words' ones'-complement sum is 0xFFFF, in any byte order. Inline, with the 20
// fixed bytes as three loads; csum_partial gives the same answer.
inline bool ipv4_header_checksum_ok(const uint8_t* ip, size_t ihl) {
    // The words' sum S folds to 0xFFFF exactly when S is a non-zero multiple of 0xFFFF (2^16,
    // 2^32 and 2^64 are 1 modulo 0xFFFF, so every fold keeps S modulo 0xFFFF, and only S = 0
    // folds to 0): one multiply for the divisibility test instead of the folds.
    uint64_t s = detail::ipv4_sum64(ip);
    for (size_t i = 20; i < ihl; i += 4) s = detail::add_end_around(s, load_u32(ip + i));  // options
    return s != 0 && s % 0xFFFF == 0;
}

namespace detail {
// ipv4_header_checksum_ok for a 20-byte header whose first byte is not zero (the version
// field was checked): its sum is not zero, and the test is the divisibility alone.
inline bool ipv4_header_checksum_ok_v4(const uint8_t* ip) {
    return ipv4_sum64(ip) % 0xFFFF == 0;
}
}  // namespace detail

// IPv4 header checksum over `ihl` bytes (a multiple of 4, 20..60; the checksum field is
// treated as zero): the value to store with store_be16.
inline uint16_t ipv4_header_checksum(const uint8_t* ip, size_t ihl) {
    // Subtracting the stored field in ones' complement = adding its complement.
    uint16_t field;
    std::memcpy(&field, ip + 10, 2);
    const auto native = static_cast<uint16_t>(detail::ipv4_words_folded(ip, ihl, static_cast<uint16_t>(~field)));
    // The folded native-order sum, laid out in memory, is the big-endian sum's bytes.
    uint8_t b[2];
    std::memcpy(b, &native, 2);
    return static_cast<uint16_t>(~load_be16(b));
}

// Pseudo-header sums (not folded) for TCP/UDP/ICMPv6 checksums.
uint32_t pseudo_sum_v4(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t len);
uint32_t pseudo_sum_v6(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t len);

// CRC32C (Castagnoli), as used by iSCSI and ext4: crc32c("123456789") == 0xE3069283.
uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

}  // namespace fulcrum
