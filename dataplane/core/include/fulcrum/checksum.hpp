// Internet checksum (RFC 1071) helpers with incremental update (RFC 1624), and
// CRC32C for snapshot integrity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

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

// IPv4 header checksum over `ihl` bytes (the checksum field is treated as zero).
uint16_t ipv4_header_checksum(const uint8_t* ip, size_t ihl);

// Pseudo-header sums (not folded) for TCP/UDP/ICMPv6 checksums.
uint32_t pseudo_sum_v4(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t len);
uint32_t pseudo_sum_v6(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t len);

// CRC32C (Castagnoli), as used by iSCSI and ext4: crc32c("123456789") == 0xE3069283.
uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

}  // namespace fulcrum
