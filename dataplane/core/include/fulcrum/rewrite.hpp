// Packet rewrites: DSR MAC rewrite, IPIP / IPv6-in-IPv6 / GUE encapsulation, ICMP echo
// replies, ICMP fragmentation-needed / packet-too-big replies, and IPv4 fragmentation of an
// encapsulated packet. All work in place on a Frame with headroom, as in a DPDK mbuf.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>

#include "fulcrum/bytes.hpp"
#include "fulcrum/parse.hpp"
#include "fulcrum/snapshot_abi.h"

namespace fulcrum {

// A frame inside a larger buffer of `buf_len` bytes: `headroom` free bytes before `data`,
// tailroom() after.
struct Frame {
    uint8_t* data = nullptr;
    uint32_t len = 0;
    uint32_t headroom = 0;
    // The whole buffer's size, headroom + len + tailroom(): what a port adapter has of its
    // buffer as it is (no arithmetic per packet), and what prepend and trim leave unchanged.
    uint32_t buf_len = 0;
    // Set by the port adapter when the NIC verified the IPv4 header checksum as good: the
    // parser then skips its own check. Left false, the checksum is verified in software.
    bool ipv4_csum_good = false;

    std::span<const uint8_t> bytes() const { return {data, len}; }
    uint32_t tailroom() const { return buf_len - headroom - len; }
    bool prepend(uint32_t n) {
        if (n > headroom) return false;
        data -= n;
        len += n;
        headroom -= n;
        return true;
    }
    void trim(uint32_t new_len) {
        if (new_len < len) len = new_len;
    }
};

inline void set_macs(uint8_t* frame, const uint8_t* dst, const uint8_t* src) {
    std::memcpy(frame, dst, 6);
    std::memcpy(frame + 6, src, 6);
}
inline void swap_macs(uint8_t* frame) {
    uint8_t tmp[6];
    std::memcpy(tmp, frame, 6);
    std::memcpy(frame, frame + 6, 6);
    std::memcpy(frame + 6, tmp, 6);
}

// Encapsulation parameters, taken from the snapshot header and the port.
struct EncapParams {
    uint8_t src4[4] = {};
    uint8_t src4_len = 0;
    uint8_t src6[16] = {};
    uint8_t src6_len = 0;
    uint16_t gue_port = 6080;
    uint8_t ttl = 64;
    uint16_t mtu = 0;  // largest IP packet (outer headers included) to send; 0 = the port's

    static EncapParams from(const fl_snap_header& h);
};

// Bytes an encapsulation adds in front of the inner IP packet.
inline uint32_t encap_overhead(uint8_t forwarding, bool v6) {
    const uint32_t ip = v6 ? 40 : 20;
    return forwarding == FL_FWD_IPIP ? ip : forwarding == FL_FWD_GUE ? ip + 8 : 0;
}

// Removes Ethernet padding after the IP packet.
inline void trim_to_ip(Frame& f, const Parsed& p) {
    f.trim(p.l3_end());
}

namespace detail {
// Wide big-endian stores and loads: the outer headers are assembled in registers as
// big-endian values and written with a few 8-byte stores (memcpy: unaligned-safe, one
// instruction each). Bytes are swapped only on little-endian hosts.
inline uint64_t to_be64(uint64_t v) {
    if constexpr (std::endian::native == std::endian::big) return v;
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap64(v);
#else
    v = ((v & 0x00FF00FF00FF00FFull) << 8) | ((v >> 8) & 0x00FF00FF00FF00FFull);
    v = ((v & 0x0000FFFF0000FFFFull) << 16) | ((v >> 16) & 0x0000FFFF0000FFFFull);
    return (v << 32) | (v >> 32);
#endif
}
inline uint32_t to_be32(uint32_t v) {
    if constexpr (std::endian::native == std::endian::big) return v;
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap32(v);
#else
    return static_cast<uint32_t>(to_be64(v) >> 32);
#endif
}
inline void store_be64_wide(uint8_t* p, uint64_t v) {
    v = to_be64(v);
    std::memcpy(p, &v, 8);
}
inline uint32_t load_be32_wide(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return to_be32(v);
}
inline uint64_t load_be64_wide(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return to_be64(v);
}

// Ones' complement sum (RFC 1071) of a 64-bit value's four 16-bit halves, folded: their sum
// modulo 0xFFFF in 1..0xFFFF (0 only for 0). Adding a value rotated by half its width puts
// the end-around-carry sum of its two halves in the upper half: two such steps (64 -> 32 -> 16
// bits) instead of repeated masks and shifts.
inline uint32_t csum_fold64(uint64_t s) {
    s += (s << 32) | (s >> 32);
    auto h = static_cast<uint32_t>(s >> 32);
    h += (h << 16) | (h >> 16);
    return h >> 16;
}

// The host bits of a prefix (the low 32 - len bits; none from /32 on), host order.
inline uint32_t host_mask_v4(unsigned len) {
    return static_cast<uint32_t>(0xFFFFFFFFull >> (len < 32 ? len : 32));
}
// The same for one 64-bit half of an IPv6 prefix (none from /64 on).
inline uint64_t host_mask64(unsigned len) {
    return len >= 64 ? 0 : ~uint64_t{0} >> len;
}
}  // namespace detail

// Everything of the outer headers that depends only on the EncapParams, worked out once per
// snapshot instead of per packet: the fixed header words, the source prefix already masked,
// the masks of the source's host bits and the fixed fields' checksum sum. Indexed by mode:
// [0] IPIP / IPv6-in-IPv6, [1] GUE.
struct EncapTemplate {
    struct V4 {
        uint64_t w1 = 0;         // bytes 8-15, big-endian value: TTL, protocol, checksum 0, prefix
        uint64_t sum = 0;        // TTL/protocol word + the prefix (any 32-bit value is congruent
                                 // to the sum of its 16-bit halves modulo 0xFFFF)
        uint32_t host_mask = 0;  // source bits taken from the flow hash, host order
        uint64_t udp = 0;        // GUE UDP header, big-endian value: the destination port only
    };
    struct V6 {
        uint64_t w0 = 0;          // bytes 0-7, big-endian value: version, next header, hop limit
        uint64_t prefix[2] = {};  // source prefix bits, memory order (as memcpy'd from the bytes)
        uint64_t host_mask[2] = {};
        uint64_t udp = 0;  // as in V4
    };
    V4 v4[2];
    V6 v6[2];

    static V4 make_v4(const EncapParams& e, bool gue) {
        const uint8_t proto = gue ? ipproto::kUdp : ipproto::kIpip;
        const uint32_t hm = detail::host_mask_v4(e.src4_len);
        const uint32_t prefix = detail::load_be32_wide(e.src4) & ~hm;
        return {(uint64_t{e.ttl} << 56) | (uint64_t{proto} << 48) | prefix,
                ((uint32_t{e.ttl} << 8) | proto) + uint64_t{prefix}, hm, make_udp(e)};
    }
    static V6 make_v6(const EncapParams& e, bool gue) {
        const uint8_t proto = gue ? ipproto::kUdp : ipproto::kIpv6;
        const unsigned len = e.src6_len;
        V6 v;
        v.w0 = (uint64_t{6} << 60) | (uint32_t{proto} << 8) | e.ttl;
        v.host_mask[0] = detail::to_be64(detail::host_mask64(len));
        v.host_mask[1] = detail::to_be64(detail::host_mask64(len > 64 ? len - 64 : 0));
        std::memcpy(v.prefix, e.src6, 16);
        v.prefix[0] &= ~v.host_mask[0];
        v.prefix[1] &= ~v.host_mask[1];
        v.udp = make_udp(e);
        return v;
    }
    static uint64_t make_udp(const EncapParams& e) { return uint64_t{e.gue_port} << 32; }
    static EncapTemplate from(const EncapParams& e) {
        EncapTemplate t;
        for (int gue = 0; gue < 2; ++gue) {
            t.v4[gue] = make_v4(e, gue);
            t.v6[gue] = make_v6(e, gue);
        }
        return t;
    }
};

// The outer source address for a flow: the configured prefix with host bits from the hash,
// so servers' RSS spreads encapsulated flows over their queues.
inline void encap_source_v4(const EncapParams& e, uint64_t hash, uint8_t out[4]) {
    const uint32_t hm = detail::host_mask_v4(e.src4_len);
    const auto host = static_cast<uint32_t>(hash ^ (hash >> 32));
    const uint32_t v = detail::to_be32((detail::load_be32_wide(e.src4) & ~hm) | (host & hm));
    std::memcpy(out, &v, 4);
}
// The host bits are the hash and a remix of it as laid out in memory (as in earlier releases,
// so a flow keeps its outer source across an upgrade): in memory order they are the two values
// themselves, and only the masks are byte-swapped.
inline void encap_source_v6(const EncapParams& e, uint64_t hash, uint8_t out[16]) {
    const EncapTemplate::V6 t = EncapTemplate::make_v6(e, false);
    const uint64_t w[2] = {t.prefix[0] | (hash & t.host_mask[0]),
                           t.prefix[1] | ((hash * 0x9E3779B97F4A7C15ull) & t.host_mask[1])};
    std::memcpy(out, w, 16);
}

namespace detail {
// Trims the Ethernet padding and makes room for `oh` bytes of outer headers between the L2
// header and the IP packet: the L2 header (14, 18 or 22 bytes) moves to the new front with
// two fixed-size copies (16 bytes, and 8 overlapping them), both loaded before either is
// stored as the areas overlap; the bytes carried past the header land where the outer header
// is written next. Returns the new start of the frame, or null (frame trimmed, nothing moved)
// without the headroom. The frame's fields are written before any packet byte: byte stores
// may alias them, and the callers keep working from the returned pointer.
// `P` is Parsed, or any record with its l3_off, l3_len, tos, df and l3_end() (the forwarding
// path's fast lane passes the few fields of an IPv4 header it read, not a whole Parsed).
template <class P>
inline uint8_t* make_room(Frame& f, const P& p, uint32_t oh) {
    static_assert(eth::kHeaderLen + 2 * eth::kVlanLen == 22);
    const uint32_t end = p.l3_end();
    uint32_t len = f.len;
    if (end < len) len = end;
    if (oh > f.headroom) {
        f.len = len;
        return nullptr;
    }
    uint8_t* const old = f.data;
    uint8_t* const d = old - oh;
    f.data = d;
    f.len = len + oh;
    f.headroom -= oh;
    uint8_t a[16];
    uint64_t b;
    std::memcpy(a, old, 16);
    std::memcpy(&b, old + 14, 8);
    std::memcpy(d, a, 16);
    std::memcpy(d + 14, &b, 8);
    return d;
}

// IPv4 in IPv4, or GUE over IPv4 (`gue`). Inline: it runs for every such packet, and out of
// line the call cost 13 instructions more per packet in core-bench's Pipeline/established_ipip.
template <bool gue, class P = Parsed>
inline bool encapsulate_v4(Frame& f, const P& p, const uint8_t* server_addr,
                           const EncapTemplate::V4& v, uint64_t hash, uint16_t ip_id) {
    const uint32_t oh = gue ? 28 : 20;
    // The frame first: the values below are then computed where they are stored, which keeps
    // few of them live at once (this is inlined into the big burst loop, where registers are
    // scarce). The packet fields they need are loaded again after make_room's byte stores.
    uint8_t* const d = make_room(f, p, oh);
    if (!d) return false;
    const uint32_t inner_len = p.l3_len;
    uint8_t* const ip = d + p.l3_off;
    // Bytes 0-7 from the inner header's (it follows the outer one): its TOS, its total length
    // plus the outer header, DF alone of its flags and offset, version 4 with 20 bytes, and the
    // new identification. The length cannot carry into the TOS: the callers checked that the
    // outer packet's length fits its field (encapsulate).
    const uint64_t w0 = ((load_be64_wide(ip + oh) & 0x00FFFFFF00004000ull) + (uint64_t{oh} << 32)) |
                        (uint64_t{0x45} << 56) | (uint32_t{ip_id} << 16);
    const uint32_t host = static_cast<uint32_t>(hash ^ (hash >> 32)) & v.host_mask;
    uint32_t dst_raw;
    std::memcpy(&dst_raw, server_addr, 4);
    // The fixed fields' sum comes from the template, with the source's host bits, the
    // destination and bytes 0-7 as one word (csum_fold64 folds the sum modulo 2^64 - 1, which
    // 0xFFFF divides). No carry out: bytes 0-7 start with 0x45, the other terms are under 2^41.
    // The destination as loaded, without a byte swap: modulo 0xFFFF, a native (little-endian)
    // load of big-endian words is 256 times their value, and 256 * 256 = 65536 is 1, so shifted
    // left by 8 it counts as the swapped value.
    const uint64_t sum = v.sum + host + (uint64_t{dst_raw} << 8) + w0;
    const uint64_t check = ~csum_fold64(sum) & 0xFFFF;
    store_be64_wide(ip, w0);
    store_be64_wide(ip + 8, v.w1 | host | (check << 32));
    std::memcpy(ip + 16, &dst_raw, 4);
    // GUE variant 1 (draft-ietf-intarea-gue): the inner IP packet follows the UDP header
    // directly; Linux's fou in gue mode decapsulates it. UDP checksum 0 over IPv4.
    if constexpr (gue)
        store_be64_wide(ip + 20, (uint64_t{0xC000 | ((hash >> 20) & 0x3FFF)} << 48) | v.udp |
                                     (uint64_t{static_cast<uint16_t>(inner_len + 8)} << 16));
    // The ethertype in front (innermost, after any VLAN tags) already names IPv4: the parser
    // took the packet as IPv4 for it, and the outer family is the inner one.
    return true;
}

// IPv6 in IPv6 or GUE over IPv6: out of line, as 40-byte headers (and for GUE a checksum
// over the whole packet) make a call's cost small beside them.
bool encapsulate_v6(Frame& f, const Parsed& p, bool gue, const uint8_t* server_addr,
                    const EncapTemplate::V6& v, uint64_t hash);
bool encapsulate_v6(Frame& f, const Parsed& p, bool gue, const uint8_t* server_addr,
                    const EncapParams& e, uint64_t hash);
}  // namespace detail

// Encapsulates the IP packet of `f` (parsed as `p`) for `server` (same family as the
// packet) with `forwarding` FL_FWD_IPIP or FL_FWD_GUE. The L2 header (with any VLAN tags)
// is kept in front; MACs are not touched. Returns false if the frame lacks headroom (the frame
// is then trimmed to its IP packet but otherwise unchanged) or for another `forwarding` (the
// frame is untouched). The caller has checked that the encapsulated packet's length fits the
// outer header: at most 65535 bytes over IPv4 (the forwarding path drops a longer one as
// too_big).
//
// The per-packet form: `t` is EncapTemplate::from(the EncapParams), made once per snapshot.
inline bool encapsulate(Frame& f, const Parsed& p, uint8_t forwarding, const uint8_t* server_addr,
                        const EncapTemplate& t, uint64_t hash, uint16_t ip_id) {
    const bool gue = forwarding == FL_FWD_GUE;
    if (!gue && forwarding != FL_FWD_IPIP) [[unlikely]]
        return false;
    if (p.is_v6()) return detail::encapsulate_v6(f, p, gue, server_addr, t.v6[gue], hash);
    return gue ? detail::encapsulate_v4<true>(f, p, server_addr, t.v4[1], hash, ip_id)
               : detail::encapsulate_v4<false>(f, p, server_addr, t.v4[0], hash, ip_id);
}

// The same from the EncapParams: the IPv4 template is worked out on the way (inlined, a
// dozen instructions more per packet), the IPv6 one in the out-of-line part.
inline bool encapsulate(Frame& f, const Parsed& p, uint8_t forwarding, const uint8_t* server_addr,
                        const EncapParams& e, uint64_t hash, uint16_t ip_id) {
    const bool gue = forwarding == FL_FWD_GUE;
    if (!gue && forwarding != FL_FWD_IPIP) [[unlikely]]
        return false;
    if (p.is_v6()) return detail::encapsulate_v6(f, p, gue, server_addr, e, hash);
    return gue ? detail::encapsulate_v4<true>(f, p, server_addr, EncapTemplate::make_v4(e, true),
                                              hash, ip_id)
               : detail::encapsulate_v4<false>(f, p, server_addr, EncapTemplate::make_v4(e, false),
                                               hash, ip_id);
}

// Turns an ICMP / ICMPv6 echo request into its reply in place (addresses and MACs swapped).
void make_echo_reply(Frame& f, const Parsed& p);

// Replaces `f` with an ICMP fragmentation-needed (IPv4) or packet-too-big (IPv6) message to
// the packet's sender, from the address it was sent to, quoting the packet and advertising
// `mtu`. Returns false if the frame lacks headroom.
bool make_too_big_reply(Frame& f, const Parsed& p, uint32_t mtu);

// Splits the IPv4 packet at `l3_off` of `f` (no IP options, as our outer headers) into
// fragments of at most `mtu` bytes. `f` keeps the first fragment; the rest are written to
// `out[0..]`, whose `data` must point at empty buffers with enough tailroom. Returns the
// number of frames used in `out`, or -1 if they are too few or too small.
int fragment_ipv4(Frame& f, uint32_t l3_off, uint32_t mtu, std::span<Frame> out);

}  // namespace fulcrum
