// Packet parser over a byte span. It never reads outside the span; every malformed
// case returns a named Drop reason. The parser does not modify the packet.
#pragma once

#include <cstdint>
#include <span>

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

// Parses `pkt` into `out`. Returns Drop::none on success. On failure `out` holds the
// fields parsed before the error.
Drop parse_packet(std::span<const uint8_t> pkt, Parsed& out, const ParseOptions& opt = {});

}  // namespace fulcrum
