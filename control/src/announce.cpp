// Gratuitous ARP and unsolicited neighbour advertisements (see announce.hpp).
#include "fulcrum/control/announce.hpp"
#include "fulcrum/control/vip_netlink.hpp"

#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fulcrum::control::ha {

namespace {

constexpr uint16_t kEtherTypeArp = 0x0806;
constexpr uint16_t kEtherTypeIpv4 = 0x0800;
constexpr uint16_t kEtherTypeIpv6 = 0x86dd;
constexpr uint8_t kIcmpv6 = 58;
constexpr uint8_t kNeighborAdvert = 136;
constexpr uint8_t kOptTargetLinkLayer = 2;
constexpr uint8_t kFlagOverride = 0x20;  // first byte of the flags word: R=0x80 S=0x40 O=0x20

void put16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}


}  // namespace

std::vector<uint8_t> build_garp(const IpAddr& v4, const Mac& mac) {
    if (!v4.is_v4())
        throw std::invalid_argument("gratuitous ARP: " + v4.str() + " is not an IPv4 address");
    std::vector<uint8_t> f(kGarpFrameLen, 0);
    uint8_t* p = f.data();
    std::memset(p, 0xff, 6);  // Ethernet broadcast
    std::memcpy(p + 6, mac.data(), 6);
    put16(p + 12, kEtherTypeArp);
    uint8_t* a = p + 14;
    put16(a, 1);  // hardware type Ethernet
    put16(a + 2, kEtherTypeIpv4);
    a[4] = 6;                                 // hardware address length
    a[5] = 4;                                 // protocol address length
    put16(a + 6, 1);                          // opcode: request (see the header for why)
    std::memcpy(a + 8, mac.data(), 6);        // sender MAC
    std::memcpy(a + 14, v4.bytes.data(), 4);  // sender IP
    // a + 18: target MAC, zero
    std::memcpy(a + 24, v4.bytes.data(), 4);  // target IP = sender IP
    return f;                                 // bytes 42..59: zero padding
}

uint16_t icmpv6_checksum(const uint8_t* icmp, size_t len, const IpAddr& src, const IpAddr& dst) {
    uint64_t sum = 0;
    auto add_bytes = [&](const uint8_t* b, size_t n) {
        for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t{b[i]} << 8) | b[i + 1];
        if (n & 1) sum += uint32_t{b[n - 1]} << 8;
    };
    add_bytes(src.bytes.data(), 16);
    add_bytes(dst.bytes.data(), 16);
    sum += static_cast<uint32_t>(len);  // upper-layer packet length (32 bits)
    sum += kIcmpv6;                     // next header
    // The message with its checksum field (bytes 2-3) left out, i.e. counted as zero.
    add_bytes(icmp, len < 2 ? len : 2);
    if (len > 4) add_bytes(icmp + 4, len - 4);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum & 0xffff);
}

std::vector<uint8_t> build_unsolicited_na(const IpAddr& target, const Mac& mac, const IpAddr& src) {
    if (!target.is_v6())
        throw std::invalid_argument("unsolicited neighbour advertisement: target " + target.str() +
                                    " is not an IPv6 address");
    if (!src.is_v6())
        throw std::invalid_argument("unsolicited neighbour advertisement: source " + src.str() +
                                    " is not an IPv6 address (pass the link-local address)");
    static constexpr uint8_t kAllNodes[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const IpAddr all_nodes = IpAddr::v6(kAllNodes);
    std::vector<uint8_t> f(kUnsolicitedNaFrameLen, 0);
    uint8_t* p = f.data();
    // Ethernet: the IPv6 multicast MAC of ff02::1 (RFC 2464 7: 33:33 + low 32 bits).
    p[0] = 0x33;
    p[1] = 0x33;
    std::memcpy(p + 2, kAllNodes + 12, 4);
    std::memcpy(p + 6, mac.data(), 6);
    put16(p + 12, kEtherTypeIpv6);
    uint8_t* ip = p + 14;
    ip[0] = 0x60;       // version 6, traffic class 0, flow label 0
    put16(ip + 4, 32);  // payload length: the ICMPv6 message
    ip[6] = kIcmpv6;    // next header
    ip[7] = 255;        // hop limit: RFC 4861 7.1.2 drops anything else
    std::memcpy(ip + 8, src.bytes.data(), 16);
    std::memcpy(ip + 24, kAllNodes, 16);
    uint8_t* icmp = ip + 40;
    icmp[0] = kNeighborAdvert;
    icmp[1] = 0;              // code
    icmp[4] = kFlagOverride;  // R=0 (a VIP owner is not announcing itself as a router), S=0
    std::memcpy(icmp + 8, target.bytes.data(), 16);
    icmp[24] = kOptTargetLinkLayer;
    icmp[25] = 1;  // option length in units of 8 bytes
    std::memcpy(icmp + 26, mac.data(), 6);
    put16(icmp + 2, icmpv6_checksum(icmp, 32, src, all_nodes));
    return f;
}

Announcer::Announcer(int ifindex) : ifindex_(ifindex) {
    if (ifindex <= 0)
        throw std::runtime_error("announcer: no interface (index " + std::to_string(ifindex) +
                                 "); check that the exception interface exists");
    // Protocol 0: the socket sends only, no frame is queued to it.
    fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
        throw std::runtime_error("announcer: cannot open a packet socket for " + if_label(ifindex) +
                                 ": " + std::strerror(errno) +
                                 "; run fulcrumd as root or grant it CAP_NET_RAW");
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = 0;
    sll.sll_ifindex = ifindex;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0) {
        int err = errno;
        ::close(fd_);
        fd_ = -1;
        throw std::runtime_error("announcer: cannot bind a packet socket to " + if_label(ifindex) +
                                 ": " + std::strerror(err) + "; check that the interface exists");
    }
}

Announcer::~Announcer() {
    if (fd_ >= 0) ::close(fd_);
}

void Announcer::send_frame(const std::vector<uint8_t>& frame, const char* what) {
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = ifindex_;
    sll.sll_halen = 6;
    std::memcpy(sll.sll_addr, frame.data(), 6);
    std::memcpy(&sll.sll_protocol, frame.data() + 12, 2);  // already in network order
    ssize_t n;
    do {
        n = ::sendto(fd_, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&sll),
                     sizeof sll);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        throw std::runtime_error(std::string("announcer: sending ") + what + " on " +
                                 if_label(ifindex_) + " failed: " + std::strerror(errno) +
                                 "; check that the interface is up (ENXIO/ENODEV: it is gone, "
                                 "recreate the announcer for the new interface)");
    if (static_cast<size_t>(n) != frame.size())
        throw std::runtime_error(std::string("announcer: ") + what + " on " + if_label(ifindex_) +
                                 " was sent short (" + std::to_string(n) + " of " +
                                 std::to_string(frame.size()) + " bytes); retry");
}

void Announcer::garp(const IpAddr& v4, const Mac& mac) {
    auto f = build_garp(v4, mac);
    std::string what = "a gratuitous ARP for " + v4.str();
    send_frame(f, what.c_str());
}

void Announcer::unsolicited_na(const IpAddr& v6, const Mac& mac, const IpAddr& src) {
    auto f = build_unsolicited_na(v6, mac, src);
    std::string what = "an unsolicited neighbour advertisement for " + v6.str();
    send_frame(f, what.c_str());
}

}  // namespace fulcrum::control::ha
