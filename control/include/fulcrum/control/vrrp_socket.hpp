// The raw IP socket (protocol 112) that carries VRRP adverts on one interface, for one family.
//
// Multicast mode (no unicast peers): joins 224.0.0.18 / ff02::12 on the interface and sends
// there with TTL / hop limit 255 and loopback off. Unicast mode: sends to each peer with TTL /
// hop limit 255 and receives what arrives for this host's addresses on the interface. The
// socket is bound to the interface (SO_BINDTODEVICE), so it sees only that interface's
// traffic, and has IP(V6)_MULTICAST_ALL off, so it sees only the group it joined itself.
//
// The caller encodes each message (vrrp_packet.hpp) for its destination: the checksum covers
// the destination address (always for IPv6, and for IPv4 in the RFC 5798 form), so send_to()
// one message per entry of destinations().
//
// When the interface disappears (the dataplane restarting recreates `fl0` with a new index)
// the socket stays open but receives nothing more and sends fail: destroy it and construct a
// new one for the new interface. Destruction closes the socket, leaving the groups with it.
// Needs CAP_NET_RAW. Not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fulcrum/addr.hpp"

namespace fulcrum::control::ha {

class VrrpSocket {
  public:
    struct Received {
        IpAddr src;
        IpAddr dst;
        uint8_t ttl = 0;           // IPv4 TTL or IPv6 hop limit
        std::vector<uint8_t> msg;  // the VRRP message only: no IP header, no Ethernet padding
        std::string error;         // set (and the fields above partial) for a malformed packet
        bool truncated = false;    // the packet is shorter than its header says (with error)
        bool ok() const { return error.empty(); }
    };

    struct Stats {
        uint64_t received = 0;     // datagrams read, good or bad
        uint64_t truncated = 0;    // shorter than their IP header says, or cut by the buffer
        uint64_t errors = 0;       // other malformed packets and receive errors
        uint64_t sent = 0;         // messages sent
        uint64_t send_errors = 0;  // sends that failed (each also threw)
    };

    // Throws std::runtime_error (with what to do) if the interface does not exist, the family
    // is not v4/v6, a peer is of another family, or a socket option cannot be set.
    VrrpSocket(Family f, const std::string& ifname, std::vector<IpAddr> unicast_peers);
    ~VrrpSocket();
    VrrpSocket(const VrrpSocket&) = delete;
    VrrpSocket& operator=(const VrrpSocket&) = delete;

    int fd() const { return fd_; }
    Family family() const { return family_; }
    int ifindex() const { return ifindex_; }  // at construction
    const std::string& ifname() const { return ifname_; }
    bool multicast() const { return peers_.empty(); }

    // Where adverts go: the group (224.0.0.18 or ff02::12) or the unicast peers.
    const std::vector<IpAddr>& destinations() const { return destinations_; }
    static IpAddr group(Family f);

    // Sends one encoded VRRP message to `dst` from `src` (IPv4: an address of this host, set
    // with IP_PKTINFO; IPv6: the interface's link-local address, set with IPV6_PKTINFO). Throws
    // std::runtime_error if the kernel refuses it (counted in send_errors).
    void send_to(std::span<const uint8_t> vrrp_msg, const IpAddr& src, const IpAddr& dst);
    // send_to() every destination with the same bytes: right for multicast (one destination)
    // and for unicast only if the checksum does not depend on the destination (IPv4
    // message-only form); otherwise encode per destination and use send_to().
    void send(std::span<const uint8_t> vrrp_msg, const IpAddr& src);

    // Reads one pending datagram without blocking; empty if there is none. A malformed one
    // comes back with `error` set and is counted in stats(); keep reading until empty.
    std::optional<Received> receive();

    const Stats& stats() const { return stats_; }

    // The IPv4 part of receive(): splits a whole IPv4 datagram (header included) into the IP
    // facts and the message, which ends at the total length (Ethernet padding dropped).
    // Malformed input (short, bad version or header length, total length beyond the data)
    // comes back with `error` set and `truncated` where it applies. Never reads outside `d`.
    static Received parse_ipv4_datagram(std::span<const uint8_t> d);

  private:
    Family family_;
    std::string ifname_;
    std::vector<IpAddr> peers_;
    std::vector<IpAddr> destinations_;
    int ifindex_ = 0;
    int fd_ = -1;
    std::vector<uint8_t> buf_;
    Stats stats_;
};

}  // namespace fulcrum::control::ha
