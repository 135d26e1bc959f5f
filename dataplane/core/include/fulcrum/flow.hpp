// Flow keys and the seeded flow hash. Both balancers of a pair must use the same seed
// so that Maglev lookups agree; the hash is defined here (not std::hash) so it is the
// same on every build of Fulcrum.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fulcrum/bytes.hpp"
#include "fulcrum/parse.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fulcrum {

static_assert(std::endian::native == std::endian::little,
              "Fulcrum's hashes and snapshot format assume a little-endian host");

// A 5-tuple key: 40 bytes, zero-padded so it can be hashed and compared as words.
// IPv4 addresses occupy the first 4 bytes of src/dst.
struct FlowKey {
    uint8_t src[16];
    uint8_t dst[16];
    uint16_t sport;  // host order
    uint16_t dport;
    uint8_t proto;
    uint8_t is_v6;
    uint8_t pad[2];

    // Zeroes bytes 8-15 of both addresses, as they are in every IPv4 key.
    void clear_v6_halves() {
        std::memset(src + 8, 0, 8);
        std::memset(dst + 8, 0, 8);
    }

    friend bool operator==(const FlowKey& a, const FlowKey& b) {
#if defined(__SSE2__)
        // Two 16-byte compares and one 8-byte: every packet of a known flow makes one.
        const auto* pa = reinterpret_cast<const uint8_t*>(&a);
        const auto* pb = reinterpret_cast<const uint8_t*>(&b);
        const __m128i x = _mm_or_si128(
            _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pa)),
                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb))),
            _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + 16)),
                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb + 16))));
        uint64_t ta, tb;
        std::memcpy(&ta, pa + 32, 8);
        std::memcpy(&tb, pb + 32, 8);
        return _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_setzero_si128())) == 0xFFFF && ta == tb;
#else
        return std::memcmp(&a, &b, sizeof(FlowKey)) == 0;
#endif
    }
};
static_assert(sizeof(FlowKey) == 40);

// The five 64-bit words of a key (its memory image), for make_key.
inline void key_words(const uint8_t* src, const uint8_t* dst, bool v6, uint8_t proto, uint16_t sport,
                      uint16_t dport, uint64_t w[5]) {
    if (v6) {
        w[0] = load_u64(src);
        w[1] = load_u64(src + 8);
        w[2] = load_u64(dst);
        w[3] = load_u64(dst + 8);
    } else {
        w[0] = load_u32(src);
        w[1] = 0;
        w[2] = load_u32(dst);
        w[3] = 0;
    }
    // sport, dport, proto, is_v6, pad in their little-endian places (asserted below).
    w[4] = uint64_t{sport} | (uint64_t{dport} << 16) | (uint64_t{proto} << 32) | (uint64_t{v6} << 40);
}

inline FlowKey make_key(const uint8_t* src, const uint8_t* dst, bool v6, uint8_t proto,
                        uint16_t sport, uint16_t dport) {
    // Built as five 64-bit words and stored whole: flow_hash reads the key back as 64-bit
    // words, and narrow stores followed by wide loads would stall store forwarding.
    uint64_t w[5];
    key_words(src, dst, v6, proto, sport, dport, w);
    FlowKey k;
    std::memcpy(&k, w, sizeof k);
    return k;
}
static_assert(offsetof(FlowKey, sport) == 32 && offsetof(FlowKey, dport) == 34 &&
              offsetof(FlowKey, proto) == 36 && offsetof(FlowKey, is_v6) == 37);

// The key of a parsed packet. Fragments (first and later) are keyed on
// (source, destination, protocol) with zero ports, so every fragment of a datagram
// hashes alike and takes one path. The consequence: a fragmented datagram of a flow may
// be sent to a different server than the flow's unfragmented packets (see
// docs/architecture.md).
inline FlowKey flow_key_of(const Parsed& p) {
    const bool frag = p.frag != Frag::none;
    return make_key(p.src, p.dst, p.is_v6(), p.l4_proto, frag ? 0 : p.sport, frag ? 0 : p.dport);
}

namespace detail {
__extension__ typedef unsigned __int128 u128;
inline uint64_t mum(uint64_t a, uint64_t b) {
    const u128 r = static_cast<u128>(a) * b;
    return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}
inline constexpr uint64_t kP0 = 0xa0761d6478bd642full;
inline constexpr uint64_t kP1 = 0xe7037ed1a0b428dbull;
inline constexpr uint64_t kP2 = 0x8ebc6af09c88c6e3ull;
inline constexpr uint64_t kP3 = 0x589965cc75374cc3ull;
}  // namespace detail

// Seeded 64-bit hash of a key's five words (multiply-fold construction in the style of
// wyhash).
inline uint64_t flow_hash_words(const uint64_t w[5], uint64_t seed) {
    using namespace detail;
    uint64_t h = seed ^ kP0;
    h = mum(w[0] ^ kP1, w[1] ^ h);
    h = mum(w[2] ^ kP2, w[3] ^ h);
    h = mum(w[4] ^ kP3, h ^ kP1);
    return mum(h ^ kP0, 40 ^ kP1);
}

// Seeded 64-bit hash of an IPv4 key from its three words that are not zero (key_words: w[0]
// source, w[2] destination, w[4] ports and protocol): two multiply-folds instead of four. Only
// for hashes private to one process (the connection table's), never for Maglev, whose hash
// both balancers of a pair must agree on across versions.
inline uint64_t flow_hash_v4(uint64_t src, uint64_t dst, uint64_t w4, uint64_t seed) {
    using namespace detail;
    const uint64_t h = mum(src ^ seed ^ kP1, dst ^ kP2);
    return mum(h ^ kP0, w4 ^ kP3);
}

// Seeded 64-bit hash of a flow key.
inline uint64_t flow_hash(const FlowKey& k, uint64_t seed) {
    const auto* b = reinterpret_cast<const uint8_t*>(&k);
    const uint64_t w[5] = {load_u64(b), load_u64(b + 8), load_u64(b + 16), load_u64(b + 24), load_u64(b + 32)};
    return flow_hash_words(w, seed);
}

// Seeded hash of arbitrary bytes (server identities for Maglev, names).
uint64_t bytes_hash(const void* data, size_t len, uint64_t seed);

// Maps a 64-bit hash uniformly onto [0, n) without a division (Lemire's reduction).
inline uint32_t hash_to_range(uint64_t h, uint32_t n) {
    return static_cast<uint32_t>(((h >> 32) * uint64_t{n}) >> 32);
}

}  // namespace fulcrum
