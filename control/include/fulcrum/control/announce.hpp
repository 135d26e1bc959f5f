// Gratuitous ARP and unsolicited neighbour advertisements for VIPs taken over by this node,
// sent as whole Ethernet frames on one interface (the dataplane's exception interface, whose
// frames leave through the uplink), so that neighbours and switches learn the new owner.
//
// The frames are built by pure functions, tested byte by byte; Announcer only sends them.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "fulcrum/addr.hpp"

namespace fulcrum::control::ha {

using Mac = std::array<uint8_t, 6>;

inline constexpr size_t kGarpFrameLen = 60;  // 42 bytes of ARP, padded to the Ethernet minimum
inline constexpr size_t kUnsolicitedNaFrameLen = 86;  // 14 Ethernet + 40 IPv6 + 32 ICMPv6

// A gratuitous ARP for `v4` owned by `mac`: Ethernet broadcast from `mac`, ARP *request*
// (opcode 1) with sender MAC = `mac`, sender IP = target IP = `v4`, target MAC 0 (RFC 5227
// section 3 "ARP Announcement", the form keepalived and the Linux kernel send). The request
// form is used because every host processes a broadcast request and, per RFC 826, refreshes
// an existing cache entry for the sender; unsolicited replies are ignored by some stacks
// (Linux with arp_accept=0 does not create entries from either, but updates existing ones
// from both). Zero-padded to the 60-byte Ethernet minimum so that no NIC or dataplane on the
// way has to pad a runt frame. Throws std::invalid_argument if `v4` is not IPv4.
std::vector<uint8_t> build_garp(const IpAddr& v4, const Mac& mac);

// An unsolicited neighbour advertisement (RFC 4861 4.4, 7.2.6) for `target` owned by `mac`,
// from `src` (the interface's link-local address) to all-nodes ff02::1 (Ethernet
// 33:33:00:00:00:01), hop limit 255, flags Router 0, Solicited 0, Override 1, with a target
// link-layer address option carrying `mac`, and the ICMPv6 checksum over the RFC 8200
// pseudo-header. Throws std::invalid_argument if `target` or `src` is not IPv6.
std::vector<uint8_t> build_unsolicited_na(const IpAddr& target, const Mac& mac, const IpAddr& src);

// The Internet checksum (RFC 1071) of the ICMPv6 message `icmp` (its checksum field counted
// as zero) under the IPv6 pseudo-header for `src`, `dst`: the value to store big-endian.
uint16_t icmpv6_checksum(const uint8_t* icmp, size_t len, const IpAddr& src, const IpAddr& dst);

// An AF_PACKET socket that sends frames on one interface. Needs CAP_NET_RAW. It receives
// nothing (protocol 0), so its buffer never fills.
class Announcer {
  public:
    // Throws std::runtime_error if the socket cannot be opened or bound to the interface.
    explicit Announcer(int ifindex);
    ~Announcer();
    Announcer(const Announcer&) = delete;
    Announcer& operator=(const Announcer&) = delete;

    int ifindex() const { return ifindex_; }

    // Send one frame each; throw std::runtime_error if the kernel refuses it (interface down
    // or gone, no buffer space).
    void garp(const IpAddr& v4, const Mac& mac);
    void unsolicited_na(const IpAddr& v6, const Mac& mac, const IpAddr& src);
    // Sends any whole Ethernet frame (destination MAC first, no FCS); `what` names it in
    // errors.
    void send_frame(const std::vector<uint8_t>& frame, const char* what);

  private:
    int fd_ = -1;
    int ifindex_ = 0;
};

}  // namespace fulcrum::control::ha
