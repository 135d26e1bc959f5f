// A small packet builder for tests and benchmarks: Ethernet (+ VLAN tags), IPv4 (options,
// fragments) or IPv6 (extension headers), TCP / UDP / ICMP / ICMPv6, with correct lengths
// and checksums unless told otherwise.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fulcrum/addr.hpp"

namespace fulcrum::test {

IpAddr ip(const std::string& text);  // aborts the test binary on a bad literal
MacAddr mac(const std::string& text);

struct PacketBuilder {
    // layer 2
    MacAddr eth_src = mac("02:00:00:00:00:01");
    MacAddr eth_dst = mac("02:00:00:00:00:02");
    std::vector<uint16_t> vlans;
    std::optional<uint16_t> ethertype;  // override

    // layer 3
    IpAddr src = ip("198.18.0.1");
    IpAddr dst = ip("198.18.1.1");
    uint8_t ttl = 64;
    uint8_t tos = 0;
    bool df = true;
    uint16_t ip_id = 1;
    uint16_t frag_offset = 0;  // bytes, multiple of 8
    bool more_fragments = false;
    std::vector<uint8_t> ipv4_options;       // padded to 4 bytes by the caller
    std::vector<std::vector<uint8_t>> ipv6_ext;  // raw extension headers, next-header fixed up
    std::vector<uint8_t> ipv6_ext_types;     // their types (0, 43, 60, 44)
    bool ipv6_frag_header = false;           // add a fragment header using frag_offset/more_fragments

    // layer 4
    uint8_t proto = 6;
    uint16_t sport = 40000;
    uint16_t dport = 80;
    uint8_t tcp_flags = 0x02;  // SYN
    uint32_t seq = 1000;
    uint8_t icmp_type = 8;
    uint8_t icmp_code = 0;
    uint32_t icmp_rest = 0;  // id/seq, MTU, unused
    std::vector<uint8_t> payload;

    bool bad_ip_checksum = false;
    bool bad_l4_checksum = false;

    PacketBuilder& from(const std::string& a, uint16_t port = 40000) {
        src = ip(a);
        sport = port;
        return *this;
    }
    PacketBuilder& to(const std::string& a, uint16_t port = 80) {
        dst = ip(a);
        dport = port;
        return *this;
    }
    PacketBuilder& tcp(uint8_t flags) {
        proto = 6;
        tcp_flags = flags;
        return *this;
    }
    PacketBuilder& udp() {
        proto = 17;
        return *this;
    }
    PacketBuilder& icmp_echo(uint16_t id = 1, uint16_t sq = 1);
    // An ICMP error quoting `inner` (an IP packet without L2).
    PacketBuilder& icmp_error(uint8_t type, uint8_t code, uint32_t rest, std::vector<uint8_t> inner);
    PacketBuilder& with_payload(size_t n, uint8_t fill = 0xAB) {
        payload.assign(n, fill);
        return *this;
    }

    std::vector<uint8_t> build() const;       // the Ethernet frame
    std::vector<uint8_t> build_ip() const;    // the IP packet only
};

// Recomputes checksums and returns true if the IP header checksum (IPv4) and the L4 checksum
// (TCP/UDP/ICMP) of the packet at `l3` are correct.
bool checksums_ok(const uint8_t* l3, size_t len);

}  // namespace fulcrum::test
