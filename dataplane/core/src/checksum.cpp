#include "fulcrum/checksum.hpp"

#include <array>
#include <cstring>

#include "fulcrum/bytes.hpp"

namespace fulcrum {

uint32_t csum_partial(const uint8_t* data, size_t len, uint32_t sum) {
    // RFC 1071 2.(B): the ones' complement sum is byte-order independent, so native
    // (little-endian) 64-bit words are summed with end-around carry and the folded result is
    // byte-swapped once at the end, instead of swapping every 16-bit word.
    uint64_t acc = 0;
    auto add = [&acc](uint64_t w) {
        acc += w;
        acc += acc < w;  // end-around carry
    };
    while (len >= 32) {
        add(load_u64(data));
        add(load_u64(data + 8));
        add(load_u64(data + 16));
        add(load_u64(data + 24));
        data += 32;
        len -= 32;
    }
    while (len >= 8) {
        add(load_u64(data));
        data += 8;
        len -= 8;
    }
    if (len >= 4) {
        add(load_u32(data));
        data += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t w;
        std::memcpy(&w, data, 2);
        add(w);
        data += 2;
        len -= 2;
    }
    if (len) add(data[0]);  // the odd byte is the high byte of a big-endian word: low byte here
    acc = (acc & 0xFFFFFFFF) + (acc >> 32);
    acc = (acc & 0xFFFFFFFF) + (acc >> 32);
    uint32_t s = static_cast<uint32_t>(acc);
    s = (s & 0xFFFF) + (s >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    s = static_cast<uint16_t>((s >> 8) | (s << 8));  // back to big-endian word order
    uint64_t t = uint64_t{s} + sum;
    t = (t & 0xFFFF) + (t >> 16);
    t = (t & 0xFFFF) + (t >> 16);
    return static_cast<uint32_t>(t);
}

uint32_t pseudo_sum_v4(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t len) {
    uint32_t sum = csum_partial(src, 4, 0);
    sum = csum_partial(dst, 4, sum);
    return sum + proto + len;
}

uint32_t pseudo_sum_v6(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t len) {
    uint32_t sum = csum_partial(src, 16, 0);
    sum = csum_partial(dst, 16, sum);
    return sum + (len >> 16) + (len & 0xFFFF) + proto;
}

namespace {
constexpr std::array<std::array<uint32_t, 256>, 8> make_crc32c_tables() {
    std::array<std::array<uint32_t, 256>, 8> t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0);
        t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
        for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    return t;
}
constexpr auto kCrcTables = make_crc32c_tables();
}  // namespace

uint32_t crc32c(std::span<const uint8_t> data, uint32_t crc) {
    const uint8_t* p = data.data();
    size_t n = data.size();
    crc = ~crc;
    // Slicing-by-8.
    while (n >= 8) {
        const uint32_t lo = load_u32(p) ^ crc;  // little-endian hosts
        const uint32_t hi = load_u32(p + 4);
        crc = kCrcTables[7][lo & 0xFF] ^ kCrcTables[6][(lo >> 8) & 0xFF] ^
              kCrcTables[5][(lo >> 16) & 0xFF] ^ kCrcTables[4][lo >> 24] ^
              kCrcTables[3][hi & 0xFF] ^ kCrcTables[2][(hi >> 8) & 0xFF] ^
              kCrcTables[1][(hi >> 16) & 0xFF] ^ kCrcTables[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ kCrcTables[0][(crc ^ *p++) & 0xFF];
    return ~crc;
}

}  // namespace fulcrum
