// The HA node's OS-facing pieces against the real kernel: AddressManager (rtnetlink),
// Announcer (gratuitous ARP, unsolicited NA) and VrrpSocket (raw IP protocol 112).
//
// Each kernel test runs in a forked child with network namespaces of its own
// (tests/common/netns_child.hpp). Needs root.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/if_addr.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "fulcrum/control/announce.hpp"
#include "fulcrum/control/vip_netlink.hpp"
#include "fulcrum/control/vrrp_packet.hpp"
#include "fulcrum/control/vrrp_socket.hpp"
#include "netns_child.hpp"

namespace {

using fulcrum::Family;
using fulcrum::IpAddr;
using fulcrum::control::ha::AddressManager;
using fulcrum::control::ha::Announcer;
using fulcrum::control::ha::Mac;
using fulcrum::control::ha::VrrpSocket;
namespace vrrp = fulcrum::control::vrrp;
using namespace fulcrum::test::netns;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr Mac kMacA = {0x02, 0x00, 0x5e, 0x20, 0x00, 0x01};
constexpr Mac kMacB = {0x02, 0x00, 0x5e, 0x20, 0x00, 0x02};

IpAddr ip(const char* text) {
    auto a = IpAddr::parse(text);
    if (!a) throw std::invalid_argument(std::string("bad address in test: ") + text);
    return *a;
}

template <typename Fn>
std::string thrown_message(Fn&& fn) {
    try {
        fn();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

constexpr const char* kNeedsRoot = "HaIo kernel tests need root (network namespaces, veth)";

// Clears CAP_NET_ADMIN and CAP_NET_RAW from the calling (single-threaded child) process.
void drop_net_caps() {
    __user_cap_header_struct hdr{};
    hdr.version = _LINUX_CAPABILITY_VERSION_3;
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    require(::syscall(SYS_capget, &hdr, data) == 0, "capget failed");
    for (int cap : {CAP_NET_ADMIN, CAP_NET_RAW})
        data[CAP_TO_INDEX(cap)].effective &= ~CAP_TO_MASK(cap);
    require(::syscall(SYS_capset, &hdr, data) == 0, "capset failed");
}

bool has_address(const std::vector<std::pair<IpAddr, uint8_t>>& l, const IpAddr& a, uint8_t len) {
    return std::find(l.begin(), l.end(), std::make_pair(a, len)) != l.end();
}

std::optional<AddressManager::AddressInfo> find_info(AddressManager& am, int ifindex,
                                                     const IpAddr& a) {
    for (const auto& i : am.addresses(ifindex))
        if (i.addr == a) return i;
    return std::nullopt;
}

std::string hex(const std::vector<uint8_t>& b) {
    std::string s;
    char t[4];
    for (auto x : b) {
        std::snprintf(t, sizeof t, "%02x", x);
        s += t;
    }
    return s;
}

// The RFC 1071 sum of `data`, folded, not complemented: 0xffff over a message whose checksum
// is right. Written independently of announce.cpp: the pseudo-header is laid out in a buffer.
uint16_t folded_sum(const std::vector<uint8_t>& data) {
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < data.size(); i += 2) s += (data[i] << 8) | data[i + 1];
    if (data.size() % 2) s += data.back() << 8;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return static_cast<uint16_t>(s);
}

// An AF_PACKET socket receiving every frame of one interface, in the current namespace.
struct Sniffer {
    int fd = -1;
    explicit Sniffer(const char* dev) {
        fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
        require(fd >= 0, std::string("packet socket: ") + std::strerror(errno));
        sockaddr_ll sll{};
        sll.sll_family = AF_PACKET;
        sll.sll_protocol = htons(ETH_P_ALL);
        sll.sll_ifindex = static_cast<int>(if_nametoindex(dev));
        require(::bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll) == 0,
                std::string("bind packet socket: ") + std::strerror(errno));
    }
    ~Sniffer() { ::close(fd); }
    // The next incoming frame of `ethertype`, skipping others; throws at the deadline.
    std::vector<uint8_t> next(uint16_t ethertype, const std::string& what) {
        const auto deadline = Clock::now() + kWait;
        for (;;) {
            require(readable(fd, deadline), "no " + what + " received on the peer");
            std::vector<uint8_t> f(2048);
            sockaddr_ll from{};
            socklen_t fl = sizeof from;
            ssize_t n =
                ::recvfrom(fd, f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
            require(n >= 0, std::string("recv: ") + std::strerror(errno));
            f.resize(static_cast<size_t>(n));
            if (from.sll_pkttype == PACKET_OUTGOING || f.size() < 14) continue;
            if (((f[12] << 8) | f[13]) == ethertype) return f;
        }
    }
};

// The next good datagram on `s`, waiting at most kWait.
VrrpSocket::Received next_advert(VrrpSocket& s, const std::string& what) {
    const auto deadline = Clock::now() + kWait;
    for (;;) {
        require(readable(s.fd(), deadline), "nothing received for " + what);
        while (auto r = s.receive()) return *r;
    }
}

void require_fd_closed(int fd, const std::string& what) {
    require(::fcntl(fd, F_GETFD) == -1 && errno == EBADF, what + ": descriptor still open");
}

vrrp::Advert sample_advert(Family f) {
    vrrp::Advert a;
    a.vrid = 51;
    a.priority = 200;
    a.max_advert_int_cs = 100;
    a.addresses = {f == Family::v4 ? ip("198.18.1.10") : ip("2001:db8:1::10")};
    return a;
}

// Checks a received advert against what was sent, through the codec as the HA node will.
void require_advert(const VrrpSocket::Received& r, const std::vector<uint8_t>& sent,
                    const IpAddr& src, const IpAddr& dst, Family f) {
    require(r.ok(), "receive error: " + r.error);
    require(r.src == src, "source " + r.src.str() + ", expected " + src.str());
    require(r.dst == dst, "destination " + r.dst.str() + ", expected " + dst.str());
    require(r.ttl == 255, "TTL / hop limit " + std::to_string(r.ttl) + ", expected 255");
    require(r.msg == sent, "message " + hex(r.msg) + ", sent " + hex(sent));
    auto d = vrrp::decode_advert(r.msg, vrrp::IpContext{f, r.src, r.dst, r.ttl});
    require(
        std::holds_alternative<vrrp::Advert>(d),
        "the received advert does not decode: " + (std::holds_alternative<vrrp::DecodeFailure>(d)
                                                       ? std::get<vrrp::DecodeFailure>(d).message
                                                       : std::string()));
    require(std::get<vrrp::Advert>(d).vrid == 51, "decoded VRID differs");
}

// ---------------------------------------------------------------------------------------
// Pure frame builders

TEST(HaIoFrames, GarpIsAnArpRequestAnnouncement) {
    auto f = fulcrum::control::ha::build_garp(ip("198.18.0.10"), kMacA);
    // clang-format off
    const std::vector<uint8_t> expect = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  // Ethernet destination: broadcast
        0x02, 0x00, 0x5e, 0x20, 0x00, 0x01,  // Ethernet source
        0x08, 0x06,                          // ARP
        0x00, 0x01,                          // hardware type Ethernet
        0x08, 0x00,                          // protocol IPv4
        6,    4,                             // address lengths
        0x00, 0x01,                          // opcode request
        0x02, 0x00, 0x5e, 0x20, 0x00, 0x01,  // sender MAC
        198,  18,   0,    10,                // sender IP
        0,    0,    0,    0,    0,    0,     // target MAC
        198,  18,   0,    10,                // target IP = sender IP
        0,    0,    0,    0,    0,    0,    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // padding
    // clang-format on
    ASSERT_EQ(expect.size(), 60u);
    EXPECT_EQ(hex(f), hex(expect));
    EXPECT_THROW(fulcrum::control::ha::build_garp(ip("2001:db8::10"), kMacA),
                 std::invalid_argument);
}

TEST(HaIoFrames, UnsolicitedNaFieldsAndChecksum) {
    const IpAddr src = ip("fe80::1"), target = ip("2001:db8::10");
    auto f = fulcrum::control::ha::build_unsolicited_na(target, kMacA, src);
    // clang-format off
    std::vector<uint8_t> expect = {
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01,  // Ethernet destination: ff02::1's group MAC
        0x02, 0x00, 0x5e, 0x20, 0x00, 0x01,  // Ethernet source
        0x86, 0xdd,                          // IPv6
        0x60, 0x00, 0x00, 0x00,              // version 6, class 0, flow 0
        0x00, 0x20,                          // payload length 32
        58,   255,                           // next header ICMPv6, hop limit 255
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,     // source fe80::1
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,     // destination ff02::1
        136,  0,                             // neighbour advertisement, code 0
        0xca, 0x33,                          // checksum (computed separately in Python)
        0x20, 0x00, 0x00, 0x00,              // R=0 S=0 O=1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,  // target
        2,    1,                             // option: target link-layer address, 8 bytes
        0x02, 0x00, 0x5e, 0x20, 0x00, 0x01};
    // clang-format on
    ASSERT_EQ(expect.size(), fulcrum::control::ha::kUnsolicitedNaFrameLen);
    EXPECT_EQ(hex(f), hex(expect));

    // Independently: pseudo-header + ICMPv6 message, checksum included, sums to 0xffff.
    std::vector<uint8_t> ph(f.begin() + 22, f.begin() + 54);  // source, destination
    for (uint8_t b : {0, 0, 0, 32, 0, 0, 0, 58}) ph.push_back(b);
    ph.insert(ph.end(), f.begin() + 54, f.end());
    EXPECT_EQ(folded_sum(ph), 0xffff);
    // A different source changes the checksum (the pseudo-header is really covered).
    auto g = fulcrum::control::ha::build_unsolicited_na(target, kMacA, ip("fe80::2"));
    EXPECT_NE(hex(std::vector<uint8_t>(g.begin() + 56, g.begin() + 58)), "ca33");

    EXPECT_THROW(fulcrum::control::ha::build_unsolicited_na(ip("198.18.0.10"), kMacA, src),
                 std::invalid_argument);
    EXPECT_THROW(fulcrum::control::ha::build_unsolicited_na(target, kMacA, ip("198.18.0.1")),
                 std::invalid_argument);
}

// The IPv4 datagram splitter behind VrrpSocket::receive(), on inputs the kernel never
// delivers (it validates and trims IPv4 before raw sockets see it).
TEST(HaIoFrames, Ipv4DatagramParsing) {
    // clang-format off
    std::vector<uint8_t> d = {0x45, 0, 0, 28, 0, 0, 0, 0, 255, 112, 0, 0,
                              198, 18, 0, 1, 224, 0, 0, 18,
                              0x31, 0x33, 0x70, 0x01, 0x00, 0x64, 0xde, 0xad};
    // clang-format on
    auto r = VrrpSocket::parse_ipv4_datagram(d);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.src, ip("198.18.0.1"));
    EXPECT_EQ(r.dst, ip("224.0.0.18"));
    EXPECT_EQ(r.ttl, 255);
    EXPECT_EQ(r.msg, std::vector<uint8_t>(d.begin() + 20, d.end()));

    auto padded = d;
    padded.resize(46, 0xee);  // Ethernet padding after the total length
    r = VrrpSocket::parse_ipv4_datagram(padded);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.msg, std::vector<uint8_t>(d.begin() + 20, d.end()));

    auto options = d;  // header length 24 (one option word): the message starts after it
    options[0] = 0x46;
    options[3] = 32;
    options.insert(options.begin() + 20, {1, 1, 1, 0});
    r = VrrpSocket::parse_ipv4_datagram(options);
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(r.msg, std::vector<uint8_t>(d.begin() + 20, d.end()));

    auto cut = d;  // total length says 40, 28 bytes present
    cut[3] = 40;
    r = VrrpSocket::parse_ipv4_datagram(cut);
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(r.truncated);
    EXPECT_NE(r.error.find("total length 40"), std::string::npos) << r.error;

    r = VrrpSocket::parse_ipv4_datagram(std::span<const uint8_t>(d.data(), 19));
    EXPECT_TRUE(r.truncated);
    EXPECT_TRUE(r.msg.empty());

    auto v6 = d;
    v6[0] = 0x65;
    r = VrrpSocket::parse_ipv4_datagram(v6);
    EXPECT_FALSE(r.ok());
    EXPECT_FALSE(r.truncated);
    EXPECT_NE(r.error.find("version 6"), std::string::npos) << r.error;

    auto short_ihl = d;
    short_ihl[0] = 0x44;
    EXPECT_FALSE(VrrpSocket::parse_ipv4_datagram(short_ihl).ok());

    auto long_ihl = d;  // header length 60 > 28 bytes present
    long_ihl[0] = 0x4f;
    r = VrrpSocket::parse_ipv4_datagram(long_ihl);
    EXPECT_TRUE(r.truncated);

    auto total_below_ihl = d;
    total_below_ihl[3] = 10;
    EXPECT_TRUE(VrrpSocket::parse_ipv4_datagram(total_below_ihl).truncated);

    EXPECT_TRUE(VrrpSocket::parse_ipv4_datagram({}).truncated);
}

// ---------------------------------------------------------------------------------------
// AddressManager

TEST(HaIoNetlink, LinkFacts) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(false, [](Lab&) {
        AddressManager am;
        const int va = am.ifindex("va");
        require(va > 0, "ifindex(va) is 0");
        require(va == static_cast<int>(if_nametoindex("va")), "ifindex(va) differs from the OS");
        require(am.ifindex("fulcrum-none0") == 0, "ifindex of a missing interface is not 0");
        require(am.ifindex("") == 0, "ifindex of an empty name is not 0");
        require(am.ifindex("a-name-much-too-long-for-linux") == 0, "ifindex of a long name");
        require(!am.link_up(va), "link_up true for a down interface");
        require(!am.link_up(999999), "link_up true for a missing interface");
        auto m = am.mac(va);
        require(m && *m == kMacA, "mac(va) is not 02:00:5e:20:00:01");
        require(!am.mac(999999), "mac of a missing interface");
        require(!am.mac(am.ifindex("lo")), "lo has no 6-byte MAC but mac() returned one");

        up("va");
        // va is up but its peer is down: no carrier.
        wait_for([&] { return !am.link_up(va); }, "va up without carrier to read as down");
        require(sh_out("ip link show dev va").find("NO-CARRIER") != std::string::npos,
                "va should have no carrier while vb is down");
        up("vb");
        wait_for([&] { return am.link_up(va); }, "link_up(va) with both ends up");
        sh("ip link set dev vb down");
        wait_for([&] { return !am.link_up(va); }, "link_up(va) false after losing carrier");
    });
    EXPECT_EQ(err, "");
}

TEST(HaIoNetlink, AddRemoveListIpv4) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(false, [](Lab&) {
        AddressManager am;
        const int va = am.ifindex("va");
        up("va");
        up("vb");
        const IpAddr primary = ip("198.18.0.1"), vip = ip("198.18.0.10");
        require(!am.first_v4(va), "first_v4 of an interface without IPv4");
        am.add(va, primary, 24, false);
        am.add(va, vip, 32, false);
        am.add(va, vip, 32, false);  // already there: fine
        auto l = am.list(va);
        require(has_address(l, primary, 24) && has_address(l, vip, 32),
                "list() lacks 198.18.0.1/24 or 198.18.0.10/32");
        require(std::count(l.begin(), l.end(), std::make_pair(vip, uint8_t{32})) == 1,
                "the VIP is listed twice after adding it twice");
        // Independently, as the kernel reports it to `ip`.
        std::string shown = sh_out("ip -4 addr show dev va");
        require(contains(shown, "198.18.0.10/32") && contains(shown, "198.18.0.1/24"),
                "ip addr does not show the addresses: " + shown);
        require(am.first_v4(va) == primary, "first_v4 is not the primary 198.18.0.1");
        std::vector<IpAddr> ex = {primary};
        require(am.first_v4(va, ex) == vip, "first_v4 excluding the primary");
        require(!has_address(am.list(am.ifindex("vb")), vip, 32), "the VIP appears on vb");

        am.remove(va, vip, 32);
        am.remove(va, vip, 32);  // absent: fine
        l = am.list(va);
        require(!has_address(l, vip, 32), "the VIP is still listed after remove");
        require(has_address(l, primary, 24), "removing the VIP removed the primary");
        require(!contains(sh_out("ip -4 addr show dev va"), "198.18.0.10"),
                "ip addr still shows the VIP");
        am.remove(999999, vip, 32);  // interface gone: its addresses went with it

        std::string e = thrown_message([&] { am.add(999999, vip, 32, false); });
        require(contains(e, "198.18.0.10/32") && contains(e, "999999") &&
                    contains(e, "No such device") && contains(e, "interface exists"),
                "unexpected error for a missing interface: " + e);
        e = thrown_message([&] { am.add(va, vip, 33, false); });
        require(contains(e, "prefix length") && contains(e, "va"),
                "unexpected error for /33: " + e);
        e = thrown_message([&] { am.add(va, IpAddr{}, 32, false); });
        require(contains(e, "without a family"), "unexpected error for an empty address: " + e);
    });
    EXPECT_EQ(err, "");
}

TEST(HaIoNetlink, AddRemoveListIpv6Nodad) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(false, [](Lab&) {
        AddressManager am;
        const int va = am.ifindex("va");
        up("va");
        up("vb");
        const IpAddr vip = ip("2001:db8::10"), other = ip("2001:db8::11");
        am.add(va, vip, 128, true);
        // Right away, no waiting: nodad means usable at once.
        auto info = find_info(am, va, vip);
        require(info.has_value(), "the IPv6 VIP is not listed");
        require(info->prefix_len == 128, "prefix length is not 128");
        require((info->flags & IFA_F_NODAD) != 0, "IFA_F_NODAD is not set");
        require((info->flags & IFA_F_TENTATIVE) == 0, "the nodad VIP is tentative");
        std::string shown = sh_out("ip -6 addr show dev va");
        require(contains(shown, "2001:db8::10/128") && contains(shown, "nodad"),
                "ip -6 addr does not show the nodad VIP: " + shown);
        // Without nodad on a link with carrier, the same kind of address is tentative: the
        // check above can fail.
        am.add(va, other, 128, false);
        info = find_info(am, va, other);
        require(info && (info->flags & IFA_F_TENTATIVE) != 0,
                "an address added without nodad is not tentative (DAD off in this kernel?)");

        am.add(va, vip, 128, true);  // already there: fine
        auto l = am.list(va);
        require(std::count(l.begin(), l.end(), std::make_pair(vip, uint8_t{128})) == 1,
                "the IPv6 VIP is listed twice");
        am.remove(va, vip, 128);
        am.remove(va, vip, 128);  // absent: fine
        require(!has_address(am.list(va), vip, 128), "the IPv6 VIP is still listed");
        require(has_address(am.list(va), other, 128), "removing one address removed another");

        // The link-local address becomes usable once DAD is done; until then it is withheld.
        wait_for([&] { return am.link_local(va).has_value(); }, "va's link-local address");
        auto ll = *am.link_local(va);
        require(ll.bytes[0] == 0xfe && ll.bytes[1] == 0x80, "link_local is not fe80::/10");
        require(contains(sh_out("ip -6 addr show dev va scope link"), ll.str() + "/64"),
                "link_local " + ll.str() + " is not what ip shows");
        require(!am.link_local(am.ifindex("lo")), "lo has a link-local address?");
    });
    EXPECT_EQ(err, "");
}

// The source address the kernel picks to reach `dst` (a UDP connect sends nothing).
IpAddr source_for(const IpAddr& dst) {
    int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    require(fd >= 0, std::string("udp socket: ") + std::strerror(errno));
    sockaddr_in6 to{};
    to.sin6_family = AF_INET6;
    to.sin6_port = htons(80);
    std::memcpy(&to.sin6_addr, dst.bytes.data(), 16);
    sockaddr_in6 me{};
    socklen_t len = sizeof me;
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len) == 0;
    const int err = errno;
    ::close(fd);
    require(ok, "no source for " + dst.str() + ": " + std::strerror(err));
    return IpAddr::v6(reinterpret_cast<const uint8_t*>(&me.sin6_addr));
}

// An IPv6 VIP added with source=false is deprecated: the host's own connections to its
// neighbours leave from its interface address, not from the VIP, which a /128 would
// otherwise win by the longest-match rule (the VIP holder's health checks were answered to
// the VIP, that is to the DSR servers themselves). It stays an address of the host.
TEST(HaIoNetlink, Ipv6VipIsNeverASource) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(false, [](Lab&) {
        AddressManager am;
        const int va = am.ifindex("va");
        up("va");
        up("vb");
        const IpAddr host = ip("2001:db8::2"), vip = ip("2001:db8::100"),
                     server = ip("2001:db8::11");
        am.add(va, host, 64, true);
        require(source_for(server) == host, "the source before any VIP is not 2001:db8::2");
        // As a usable address (an older fulcrumd's VIP), the /128 takes over as the source.
        am.add(va, vip, 128, true);
        require(source_for(server) == vip,
                "a preferred /128 VIP is not the source: this test no longer shows the problem");
        // The VIP's add updates the address already there.
        am.add(va, vip, 128, true, false);
        auto info = find_info(am, va, vip);
        require(info && (info->flags & IFA_F_DEPRECATED) != 0, "the VIP is not deprecated");
        require((info->flags & IFA_F_TENTATIVE) == 0, "the VIP is tentative");
        require(source_for(server) == host,
                "the source is " + source_for(server).str() + ", not 2001:db8::2");
        am.add(va, vip, 128, true, false);  // already there: fine
        auto l = am.list(va);
        require(std::count(l.begin(), l.end(), std::make_pair(vip, uint8_t{128})) == 1,
                "the VIP is listed twice");
        const std::string shown = sh_out("ip -6 addr show dev va to 2001:db8::100/128");
        require(contains(shown, "2001:db8::100/128") && contains(shown, "deprecated") &&
                    contains(shown, "valid_lft forever preferred_lft 0sec"),
                "ip does not show the VIP deprecated and valid forever: " + shown);
        // Still the host's own: a local route, so its traffic is taken in.
        require(contains(sh_out("ip -6 route show table local"), "local 2001:db8::100"),
                "no local route for the deprecated VIP");
        am.remove(va, vip, 128);
        require(!find_info(am, va, vip), "the VIP is still there after remove");
        // IPv4 ignores the flag (its source is the subnet route's preferred source).
        am.add(va, ip("198.18.0.10"), 32, true, false);
        require(has_address(am.list(va), ip("198.18.0.10"), 32), "the IPv4 VIP is missing");
    });
    EXPECT_EQ(err, "");
}

// Without the capabilities, every refusal says what to grant.
TEST(HaIoNetlink, WithoutCapabilities) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(true, [](Lab&) {
        AddressManager am;
        const int va = am.ifindex("va");
        drop_net_caps();
        require(am.ifindex("va") == va, "lookups need no capability");
        std::string e = thrown_message([&] { am.add(va, ip("198.18.0.10"), 32, false); });
        require(contains(e, "198.18.0.10/32") && contains(e, "va") &&
                    contains(e, "Operation not permitted") && contains(e, "CAP_NET_ADMIN"),
                "unexpected error without CAP_NET_ADMIN: " + e);
        e = thrown_message([&] { Announcer a(va); });
        require(contains(e, "va") && contains(e, "CAP_NET_RAW"),
                "unexpected announcer error without CAP_NET_RAW: " + e);
        e = thrown_message([] { VrrpSocket s(Family::v4, "va", {}); });
        require(contains(e, "va") && contains(e, "CAP_NET_RAW"),
                "unexpected VRRP socket error without CAP_NET_RAW: " + e);
    });
    EXPECT_EQ(err, "");
}

// ---------------------------------------------------------------------------------------
// Announcer

TEST(HaIoAnnounce, GarpAndNaReachThePeer) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(true, [](Lab& lab) {
        lab.b();
        up("vb");
        Sniffer sniff("vb");
        lab.a();
        up("va");
        AddressManager am;
        const int va = am.ifindex("va");
        wait_for([&] { return am.link_up(va); }, "va up");
        Announcer an(va);
        require(an.ifindex() == va, "announcer ifindex");
        const IpAddr v4 = ip("198.18.0.10"), v6 = ip("2001:db8::10"), src = ip("fe80::1");
        an.garp(v4, *am.mac(va));
        an.unsolicited_na(v6, *am.mac(va), src);

        auto arp = sniff.next(ETH_P_ARP, "gratuitous ARP");
        require(arp == fulcrum::control::ha::build_garp(v4, kMacA),
                "the ARP frame on the wire differs: " + hex(arp));
        // The link's own IPv6 traffic (router solicitations, MLD) is skipped by content.
        const auto want = fulcrum::control::ha::build_unsolicited_na(v6, kMacA, src);
        const auto deadline = Clock::now() + kWait;
        for (;;) {
            auto f = sniff.next(ETH_P_IPV6, "unsolicited NA");
            if (f == want) break;
            require(Clock::now() < deadline, "the NA frame never arrived unchanged");
        }
        std::string e = thrown_message([] { Announcer bad(999999); });
        require(contains(e, "999999") && contains(e, "interface exists"),
                "unexpected error for a missing interface: " + e);
    });
    EXPECT_EQ(err, "");
}

// ---------------------------------------------------------------------------------------
// VrrpSocket

TEST(HaIoVrrp, MulticastIpv4) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(true, [](Lab& lab) {
        lab.b();
        up("vb");
        sh("ip addr add 198.18.0.2/24 dev vb");
        VrrpSocket rx(Family::v4, "vb", {});
        // A unicast-mode socket on the same interface must not see the group's traffic,
        // although the host is a member (IP_MULTICAST_ALL off).
        VrrpSocket rx_unicast(Family::v4, "vb", {ip("198.18.0.1")});
        lab.a();
        up("va");
        sh("ip addr add 198.18.0.1/24 dev va");
        VrrpSocket tx(Family::v4, "va", {});
        const IpAddr src = ip("198.18.0.1"), grp = ip("224.0.0.18");
        require(tx.multicast() && tx.destinations() == std::vector<IpAddr>{grp},
                "multicast destinations are not {224.0.0.18}");
        auto msg = vrrp::encode_advert(sample_advert(Family::v4), src, grp);
        tx.send(msg, src);
        require(tx.stats().sent == 1, "sent counter");
        auto r = next_advert(rx, "the IPv4 multicast advert");
        require_advert(r, msg, src, grp, Family::v4);
        require(!rx.receive(), "a second datagram arrived");
        // Raw delivery to every matching socket happens in the same pass, so had the unicast
        // socket matched, the advert would be queued there by now.
        require(!rx_unicast.receive(), "the unicast-mode socket received the multicast advert");
        require(rx.stats().received == 1 && rx.stats().errors == 0, "receive counters");
        // Loopback is off: the sender does not hear itself.
        require(!tx.receive(), "the sender received its own advert");
    });
    EXPECT_EQ(err, "");
}

TEST(HaIoVrrp, MulticastIpv6) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(true, [](Lab& lab) {
        lab.b();
        up("vb");
        VrrpSocket rx(Family::v6, "vb", {});
        AddressManager am_b;
        lab.a();
        up("va");
        VrrpSocket tx(Family::v6, "va", {});
        AddressManager am_a;
        const int va = am_a.ifindex("va");
        // The source is the link-local address, usable once DAD is done.
        wait_for([&] { return am_a.link_local(va).has_value(); }, "va's link-local address");
        const IpAddr src = *am_a.link_local(va), grp = ip("ff02::12");
        require(tx.destinations() == std::vector<IpAddr>{grp}, "destinations are not {ff02::12}");
        auto msg = vrrp::encode_advert(sample_advert(Family::v6), src, grp);
        tx.send(msg, src);
        auto r = next_advert(rx, "the IPv6 multicast advert");
        require_advert(r, msg, src, grp, Family::v6);
        require(!tx.receive(), "the sender received its own advert");
        // A source that is not the interface's is refused with a hint, and counted.
        std::string e = thrown_message([&] { tx.send(msg, ip("2001:db8::99")); });
        require(contains(e, "2001:db8::99") && contains(e, "va") && contains(e, "link-local"),
                "unexpected error for a foreign source: " + e);
        require(tx.stats().send_errors == 1 && tx.stats().sent == 1, "send counters");
        e = thrown_message([&] { tx.send(msg, ip("198.18.0.1")); });
        require(contains(e, "IPv6"), "unexpected error for an IPv4 source: " + e);
    });
    EXPECT_EQ(err, "");
}

TEST(HaIoVrrp, UnicastIpv4AndIpv6) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(true, [](Lab& lab) {
        lab.b();
        up("vb");
        sh("ip addr add 198.18.0.2/24 dev vb");
        sh("ip addr add 2001:db8::2/64 dev vb nodad");
        VrrpSocket rx4(Family::v4, "vb", {ip("198.18.0.1")});
        VrrpSocket rx6(Family::v6, "vb", {ip("2001:db8::1")});
        lab.a();
        up("va");
        sh("ip addr add 198.18.0.1/24 dev va");
        sh("ip addr add 2001:db8::1/64 dev va nodad");
        AddressManager am;
        const int va = am.ifindex("va");
        wait_for([&] { return am.link_up(va); }, "va up");
        wait_for([&] { return am.link_local(va).has_value(); }, "va's link-local address");

        const IpAddr src4 = ip("198.18.0.1"), peer4 = ip("198.18.0.2");
        const IpAddr peer6 = ip("2001:db8::2"), src6 = *am.link_local(va);
        VrrpSocket tx4(Family::v4, "va", {peer4});
        VrrpSocket tx6(Family::v6, "va", {peer6});
        require(!tx4.multicast() && tx4.destinations() == std::vector<IpAddr>{peer4},
                "unicast destinations");
        for (const auto& d : tx4.destinations())
            tx4.send_to(vrrp::encode_advert(sample_advert(Family::v4), src4, d), src4, d);
        auto r = next_advert(rx4, "the IPv4 unicast advert");
        require_advert(r, vrrp::encode_advert(sample_advert(Family::v4), src4, peer4), src4, peer4,
                       Family::v4);

        auto msg6 = vrrp::encode_advert(sample_advert(Family::v6), src6, peer6);
        tx6.send_to(msg6, src6, peer6);
        r = next_advert(rx6, "the IPv6 unicast advert");
        require_advert(r, msg6, src6, peer6, Family::v6);

        std::string e =
            thrown_message([] { VrrpSocket bad(Family::v4, "va", {ip("2001:db8::2")}); });
        require(contains(e, "2001:db8::2") && contains(e, "not IPv4"),
                "unexpected error for a peer of the other family: " + e);
    });
    EXPECT_EQ(err, "");
}

// Frames the kernel passes up although they are no advert: a 3-byte payload, and an 8-byte
// payload in a frame padded with junk beyond the IP total length.
TEST(HaIoVrrp, GarbageAndPaddingAreSafe) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(true, [](Lab& lab) {
        lab.b();
        up("vb");
        sh("ip addr add 198.18.0.2/24 dev vb");
        sh("ip addr add 2001:db8::2/64 dev vb nodad");
        VrrpSocket rx4(Family::v4, "vb", {});
        VrrpSocket rx6(Family::v6, "vb", {ip("2001:db8::1")});
        lab.a();
        up("va");
        sh("ip addr add 198.18.0.1/24 dev va");
        sh("ip addr add 2001:db8::1/64 dev va nodad");
        AddressManager am;
        wait_for([&] { return am.link_up(am.ifindex("va")); }, "va up");

        // An IPv4 frame built by hand: total length 28 (8 bytes of VRRP-ish payload), then 24
        // bytes of 0xee the receiver must not see.
        // clang-format off
        std::vector<uint8_t> f = {0x01, 0x00, 0x5e, 0x00, 0x00, 0x12,  // 224.0.0.18's MAC
                                  0x02, 0x00, 0x5e, 0x20, 0x00, 0x01, 0x08, 0x00,
                                  0x45, 0, 0, 28, 0, 0, 0, 0, 255, 112, 0, 0,
                                  198, 18, 0, 1, 224, 0, 0, 18,
                                  0x31, 0x33, 0x70, 0x01, 0x00, 0x64, 0xde, 0xad};
        // clang-format on
        std::vector<uint8_t> iph(f.begin() + 14, f.begin() + 34);
        uint16_t c = static_cast<uint16_t>(~folded_sum(iph));
        f[24] = static_cast<uint8_t>(c >> 8);
        f[25] = static_cast<uint8_t>(c);
        f.resize(60, 0xee);
        Announcer raw(am.ifindex("va"));
        raw.send_frame(f, "a padded IPv4 frame");
        auto r = next_advert(rx4, "the padded IPv4 frame");
        require(r.ok(), "padded frame: " + r.error);
        require(r.msg == std::vector<uint8_t>(f.begin() + 34, f.begin() + 42),
                "padding not removed: " + hex(r.msg));
        require(r.ttl == 255 && r.src == ip("198.18.0.1") && r.dst == ip("224.0.0.18"),
                "padded frame's IP facts");
        auto d = vrrp::decode_advert(r.msg, {Family::v4, r.src, r.dst, r.ttl});
        require(std::holds_alternative<vrrp::DecodeFailure>(d), "garbage decoded as an advert");

        // Short garbage through a plain raw socket, both families.
        const uint8_t junk[3] = {0xff, 0x00, 0x42};
        int s4 = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, 112);
        int s6 = ::socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, 112);
        require(s4 >= 0 && s6 >= 0, "raw sockets");
        sockaddr_in to4{};
        to4.sin_family = AF_INET;
        inet_pton(AF_INET, "198.18.0.2", &to4.sin_addr);
        sockaddr_in6 to6{};
        to6.sin6_family = AF_INET6;
        inet_pton(AF_INET6, "2001:db8::2", &to6.sin6_addr);
        bool sent4 = ::sendto(s4, junk, 3, 0, reinterpret_cast<sockaddr*>(&to4), sizeof to4) == 3;
        bool sent6 = ::sendto(s6, junk, 3, 0, reinterpret_cast<sockaddr*>(&to6), sizeof to6) == 3;
        ::close(s4);
        ::close(s6);
        require(sent4 && sent6, "sending garbage failed");
        r = next_advert(rx4, "the IPv4 garbage");
        // TTL 64 (the raw socket's default): read from the header, not assumed.
        require(r.ok() && r.msg.size() == 3 && r.src == ip("198.18.0.1") &&
                    r.dst == ip("198.18.0.2") && r.ttl == 64,
                "IPv4 garbage: " + r.error + " ttl " + std::to_string(r.ttl));
        d = vrrp::decode_advert(r.msg, {Family::v4, r.src, r.dst, r.ttl});
        require(std::holds_alternative<vrrp::DecodeFailure>(d) &&
                    std::get<vrrp::DecodeFailure>(d).error == vrrp::DecodeError::truncated,
                "IPv4 garbage not refused as truncated");
        r = next_advert(rx6, "the IPv6 garbage");
        require(r.ok() && r.msg.size() == 3 && r.src == ip("2001:db8::1") &&
                    r.dst == ip("2001:db8::2") && r.ttl == 64,
                "IPv6 garbage: " + r.error + " ttl " + std::to_string(r.ttl));
        require(rx4.stats().received == 2 && rx6.stats().received == 1, "receive counters");
    });
    EXPECT_EQ(err, "");
}

// The dataplane restarting recreates the interface with a new index: the old socket fails
// cleanly, a new one works, and destruction closes the descriptor.
TEST(HaIoVrrp, InterfaceRecreated) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    std::string err = run_isolated(false, [](Lab&) {
        up("va");
        up("vb");
        sh("ip addr add 198.18.0.1/24 dev va");
        AddressManager am;
        const int old_index = am.ifindex("va");
        auto s = std::make_unique<VrrpSocket>(Family::v4, "va", std::vector<IpAddr>{});
        const int fd = s->fd();
        require(s->ifindex() == old_index, "socket ifindex");
        sh("ip link del dev va");
        require(am.ifindex("va") == 0, "va still has an index after deletion");
        auto msg =
            vrrp::encode_advert(sample_advert(Family::v4), ip("198.18.0.1"), ip("224.0.0.18"));
        std::string e = thrown_message([&] { s->send(msg, ip("198.18.0.1")); });
        require(contains(e, "va") && contains(e, "failed"), "send on a deleted interface: " + e);
        require(!s->receive(), "a deleted interface delivered something");
        s.reset();
        require_fd_closed(fd, "destroyed VrrpSocket");

        e = thrown_message([] { VrrpSocket none(Family::v4, "va", {}); });
        require(contains(e, "does not exist") && contains(e, "va"),
                "unexpected error for a missing interface: " + e);

        sh("ip link add name va type veth peer name vc");
        up("va");
        up("vc");
        sh("ip addr add 198.18.0.1/24 dev va");
        require(am.ifindex("va") != old_index && am.ifindex("va") > 0, "va was not recreated");
        VrrpSocket fresh(Family::v4, "va", {});
        require(fresh.ifindex() == am.ifindex("va"), "new socket's ifindex");
        fresh.send(msg, ip("198.18.0.1"));
        require(fresh.stats().sent == 1, "the new socket could not send");
    });
    EXPECT_EQ(err, "");
}

}  // namespace
