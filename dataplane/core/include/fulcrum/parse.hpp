// Packet parser over a byte span. It never reads outside the span; every malformed
// case returns a named Drop reason. The parser does not modify the packet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"
#include "fulcrum/drop.hpp"

namespace fulcrum {

namespace eth {
inline constexpr uint16_t kIpv4 = 0x0800;
inline constexpr uint16_t kArp = 0x0806;
inline constexpr uint16_t kVlan = 0x8100;
inline constexpr uint16_t kQinQ = 0x88A8;
inline constexpr uint16_t kIpv6 = 0x86DD;
inline constexpr unsigned kHeaderLen = 14;
inline constexpr unsigned kVlanLen = 4;
}  // namespace eth

namespace ipproto {
inline constexpr uint8_t kHopByHop = 0;
inline constexpr uint8_t kIcmp = 1;
inline constexpr uint8_t kIpip = 4;
inline constexpr uint8_t kTcp = 6;
inline constexpr uint8_t kUdp = 17;
inline constexpr uint8_t kIpv6 = 41;
inline constexpr uint8_t kRouting = 43;
inline constexpr uint8_t kFragment = 44;
inline constexpr uint8_t kIcmpv6 = 58;
inline constexpr uint8_t kNoNext = 59;
inline constexpr uint8_t kDestOpts = 60;
inline constexpr uint8_t kVrrp = 112;
}  // namespace ipproto

namespace tcpflag {
inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kPsh = 0x08;
inline constexpr uint8_t kAck = 0x10;
}  // namespace tcpflag

// Bit i set: the TCP flag set i (FIN, SYN, RST, PSH, ACK, URG: the low six bits) is one no
// stack sends: no flag at all, or SYN with FIN or RST (which includes "all flags"). Scanners
// send them to probe, and they must not open or move connection entries.
inline constexpr uint64_t kBadTcpFlags = [] {
    uint64_t m = 0;
    for (unsigned f = 0; f < 64; ++f) {
        const bool syn = (f & tcpflag::kSyn) != 0;
        if (f == 0 || (syn && (f & (tcpflag::kFin | tcpflag::kRst)) != 0)) m |= uint64_t{1} << f;
    }
    return m;
}();
// Whether the flags byte of a TCP header holds such a set (kBadTcpFlags).
inline bool bad_tcp_flags(uint8_t flags) {
    return ((kBadTcpFlags >> (flags & 0x3F)) & 1) != 0;
}

enum class L3 : uint8_t { other = 0, arp, ipv4, ipv6 };

// Fragment position of the packet's datagram. `first` carries the L4 header; `later`
// fragments carry none, so their ports are zero.
enum class Frag : uint8_t { none = 0, first, later };

enum class IcmpKind : uint8_t {
    none = 0,
    echo_request,
    echo_reply,
    error,  // destination unreachable, time exceeded, packet too big: inner flow parsed
    other,
};

// The flow an ICMP error quotes, exactly as the quoted packet had it (so for an error
// about our own reply traffic, src is the VIP and dst the client).
struct QuotedFlow {
    uint8_t src[16];
    uint8_t dst[16];
    uint16_t sport;
    uint16_t dport;
    uint8_t proto;
    uint8_t is_v6;
};

struct Parsed {
    // layer 2
    uint8_t vlan_count = 0;
    uint16_t vlan_tci[2] = {0, 0};
    uint16_t ethertype = 0;  // innermost
    uint16_t l3_off = 0;     // == length of the L2 header including tags
    L3 l3 = L3::other;

    // layer 3 (ipv4 / ipv6)
    uint16_t l3_len = 0;     // IP header(s) + payload per the IP length field
    uint16_t l4_off = 0;     // offset of the L4 header (after IPv6 extension headers)
    uint8_t l4_proto = 0;    // upper-layer protocol
    uint8_t ttl = 0;         // TTL / hop limit
    uint8_t tos = 0;         // IPv4 TOS / IPv6 traffic class
    bool df = false;         // IPv4 don't-fragment (always true for IPv6: routers never fragment)
    Frag frag = Frag::none;
    uint8_t src[16] = {};    // IPv4 in the first 4 bytes
    uint8_t dst[16] = {};

    // layer 4
    uint16_t sport = 0;
    uint16_t dport = 0;
    uint8_t tcp_flags = 0;

    // ICMP / ICMPv6
    IcmpKind icmp = IcmpKind::none;
    uint8_t icmp_type = 0;
    uint8_t icmp_code = 0;
    uint32_t icmp_mtu = 0;   // fragmentation-needed next-hop MTU / packet-too-big MTU
    uint16_t quoted_off = 0; // offset of the quoted IP header (icmp == error)
    // Last, so that parse_packet() can reset the fields before it without touching this one:
    // it is valid (and set) only when icmp == error.
    QuotedFlow quoted{};

    bool is_ip() const { return l3 == L3::ipv4 || l3 == L3::ipv6; }
    bool is_v6() const { return l3 == L3::ipv6; }
    uint16_t l3_end() const { return static_cast<uint16_t>(l3_off + l3_len); }
};

struct ParseOptions {
    bool verify_ipv4_checksum = true;  // off when the NIC already verified it
};

// The general parser: every layout and every malformed case. Returns Drop::none on success.
// On failure `out` holds the fields parsed before the error.
Drop parse_packet_full(std::span<const uint8_t> pkt, Parsed& out, const ParseOptions& opt = {});

namespace detail {
// The headers of the common case, as check_ipv4_fast found them.
struct Ipv4Fast {
    const uint8_t* ip;  // the IPv4 header (20 bytes, no options)
    const uint8_t* l4;  // the TCP or UDP header
    uint32_t tot;       // IPv4 total length
    uint32_t frag_raw;  // flags and fragment offset as a native load of the wire bytes (only DF may be set)
    uint8_t proto;      // ipproto::kTcp or ipproto::kUdp
    uint8_t tcp_flags;  // 0 for UDP
};

// The common case in a few loads and compares: an untagged Ethernet frame with an IPv4 header
// without options, not fragmented, carrying a TCP or UDP header that passes every check of
// the general parser. Then `o` locates the headers and the result is true. Anything else
// (VLAN tags, options, fragments, IPv6, ICMP, any malformed field, a bad checksum) returns
// false: the caller runs the general parser, which names the drop reason. The forwarding
// path's fast lane reads the few fields it needs from `o`; parse_ipv4_fast fills a Parsed.
// kPacketChecks: also false for a packet the forwarding path's packet checks drop (TTL 0, TCP
// flags in kBadTcpFlags), so that the fast lane sees only packets that pass them.
template <bool kPacketChecks = false>
inline bool check_ipv4_fast(const uint8_t* p, size_t n, bool verify_checksum, Ipv4Fast& o) {
    if (n < eth::kHeaderLen + 20 || n > 65535) [[unlikely]]
        return false;
    const uint8_t* ip = p + eth::kHeaderLen;
    // Ethertype 0x0800 and version 4 with a 20-byte header, in one 32-bit compare.
    if ((load_u32(p + 12) & 0xFFFFFF) != 0x450008) [[unlikely]]
        return false;
    const uint32_t tot = load_be16(ip + 2);
    // The fragment offset and MF (network order 0x3FFF) tested on the bytes as loaded
    // (little-endian, as above): no byte swap.
    const uint32_t frag_raw = load_u16(ip + 6);
    if (tot > n - eth::kHeaderLen || (frag_raw & 0xFF3F) != 0) [[unlikely]]
        return false;
    const uint8_t proto = ip[9];
    const uint8_t* l4 = ip + 20;
    uint8_t flags = 0;
    // Each range check lo <= x <= hi below is one unsigned compare, x - lo > hi - lo (x below
    // lo wraps to a large value); hi >= lo by the length check before it.
    if (proto == ipproto::kTcp) {
        if (tot < 40) [[unlikely]]
            return false;
        const uint32_t doff = static_cast<uint32_t>(l4[12] >> 4) * 4;
        if (doff - 20 > tot - 40) [[unlikely]]  // 20 <= doff <= tot - 20
            return false;
        flags = l4[13];
        if (kPacketChecks && bad_tcp_flags(flags)) [[unlikely]]
            return false;
    } else if (proto == ipproto::kUdp) {
        if (tot < 28) [[unlikely]]
            return false;
        const uint32_t ulen = load_be16(l4 + 4);
        if (ulen - 8 > tot - 28) [[unlikely]]  // 8 <= ulen <= tot - 20
            return false;
    } else {
        return false;
    }
    if (kPacketChecks && ip[8] == 0) [[unlikely]]
        return false;
    // Version 4 (checked above): the header's sum is not zero.
    if (verify_checksum && !ipv4_header_checksum_ok_v4(ip)) [[unlikely]]
        return false;
    o = {ip, l4, tot, frag_raw, proto, flags};
    return true;
}

// `o` filled from the headers check_ipv4_fast found, exactly as parse_packet_full fills it
// for that frame (the unit tests compare the two on every case, malformed frames included).
inline void fill_ipv4_fast(const Ipv4Fast& q, Parsed& o) {
    static constexpr Parsed kEmpty{};
    std::memcpy(static_cast<void*>(&o), &kEmpty, offsetof(Parsed, quoted));
    o.ethertype = eth::kIpv4;
    o.l3_off = eth::kHeaderLen;
    o.l3 = L3::ipv4;
    o.l3_len = static_cast<uint16_t>(q.tot);
    o.l4_off = eth::kHeaderLen + 20;
    o.l4_proto = q.proto;
    o.ttl = q.ip[8];
    o.tos = q.ip[1];
    o.df = (q.frag_raw & 0x0040) != 0;  // DF, 0x4000 in network order
    std::memcpy(o.src, q.ip + 12, 4);
    std::memcpy(o.dst, q.ip + 16, 4);
    o.sport = load_be16(q.l4);
    o.dport = load_be16(q.l4 + 2);
    o.tcp_flags = q.tcp_flags;
}

// check_ipv4_fast and fill_ipv4_fast: true with `o` filled as parse_packet_full fills it,
// or false with `o` untouched (the caller runs the general parser).
inline bool parse_ipv4_fast(const uint8_t* p, size_t n, Parsed& o, bool verify_checksum) {
    Ipv4Fast q;
    if (!check_ipv4_fast(p, n, verify_checksum, q)) return false;
    fill_ipv4_fast(q, o);
    return true;
}
}  // namespace detail

// Parses `pkt` into `out`: the common case (detail::parse_ipv4_fast) inline, everything else
// by the general parser. Returns Drop::none on success. On failure `out` holds the fields
// parsed before the error.
inline Drop parse_packet(std::span<const uint8_t> pkt, Parsed& out, const ParseOptions& opt = {}) {
    if (detail::parse_ipv4_fast(pkt.data(), pkt.size(), out, opt.verify_ipv4_checksum)) [[likely]]
        return Drop::none;
    return parse_packet_full(pkt, out, opt);
}

}  // namespace fulcrum
