// The VRRP raw socket (see vrrp_socket.hpp).
#include "fulcrum/control/vrrp_socket.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fulcrum::control::ha {

namespace {

constexpr int kVrrpProto = 112;
constexpr int kTtl = 255;
// The largest IP datagram: an advert is at most 8 + 255 * 16 bytes, anything longer than the
// buffer is reported as truncated rather than read in part.
constexpr size_t kBufferSize = 65535;

std::string fam_name(Family f) {
    return f == Family::v4 ? "IPv4" : "IPv6";
}

}  // namespace

IpAddr VrrpSocket::group(Family f) {
    static constexpr uint8_t kV4[4] = {224, 0, 0, 18};
    static constexpr uint8_t kV6[16] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12};
    return f == Family::v4 ? IpAddr::v4(kV4) : IpAddr::v6(kV6);
}

VrrpSocket::VrrpSocket(Family f, const std::string& ifname, std::vector<IpAddr> unicast_peers)
    : family_(f), ifname_(ifname), peers_(std::move(unicast_peers)), buf_(kBufferSize) {
    const std::string where = "VRRP socket on " + ifname;
    if (f != Family::v4 && f != Family::v6)
        throw std::runtime_error(where + ": no address family given; this is a bug in the caller");
    for (const auto& p : peers_)
        if (p.family != f)
            throw std::runtime_error(where + ": unicast peer " + p.str() + " is not " +
                                     fam_name(f) + "; list the peers of each family separately");
    if (ifname.empty() || ifname.size() >= IF_NAMESIZE)
        throw std::runtime_error(where + ": \"" + ifname + "\" is not a valid interface name");
    ifindex_ = static_cast<int>(if_nametoindex(ifname.c_str()));
    if (ifindex_ == 0)
        throw std::runtime_error(where + ": the interface does not exist (" + std::strerror(errno) +
                                 "); start the dataplane, which creates "
                                 "it, or fix the interface name");
    destinations_ = peers_.empty() ? std::vector<IpAddr>{group(f)} : peers_;

    const int af = f == Family::v4 ? AF_INET : AF_INET6;
    fd_ = ::socket(af, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, kVrrpProto);
    if (fd_ < 0)
        throw std::runtime_error(where + ": cannot open a raw " + fam_name(f) +
                                 " socket for protocol 112: " + std::strerror(errno) +
                                 "; run fulcrumd as root or grant it CAP_NET_RAW");
    // From here on, a failure closes the socket before throwing.
    auto opt = [&](int level, int name, const void* val, socklen_t len, const char* what) {
        if (::setsockopt(fd_, level, name, val, len) == 0) return;
        int err = errno;
        ::close(fd_);
        fd_ = -1;
        throw std::runtime_error(where + ": cannot set " + what + ": " + std::strerror(err) +
                                 (err == EPERM ? "; run fulcrumd as root or grant it CAP_NET_RAW"
                                               : "; check the interface and the kernel's "
                                                 "multicast support"));
    };
    opt(SOL_SOCKET, SO_BINDTODEVICE, ifname.c_str(), static_cast<socklen_t>(ifname.size()),
        "SO_BINDTODEVICE");
    const int ttl = kTtl, off = 0, on = 1;
    if (f == Family::v4) {
        opt(IPPROTO_IP, IP_TTL, &ttl, sizeof ttl, "IP_TTL 255");
        opt(IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl, "IP_MULTICAST_TTL 255");
        opt(IPPROTO_IP, IP_MULTICAST_LOOP, &off, sizeof off, "IP_MULTICAST_LOOP 0");
        opt(IPPROTO_IP, IP_MULTICAST_ALL, &off, sizeof off, "IP_MULTICAST_ALL 0");
        ip_mreqn mr{};
        mr.imr_ifindex = ifindex_;
        opt(IPPROTO_IP, IP_MULTICAST_IF, &mr, sizeof mr, "IP_MULTICAST_IF");
        if (peers_.empty()) {
            std::memcpy(&mr.imr_multiaddr, group(f).bytes.data(), 4);
            opt(IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr, "IP_ADD_MEMBERSHIP 224.0.0.18");
        }
    } else {
        opt(IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof ttl, "IPV6_UNICAST_HOPS 255");
        opt(IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &ttl, sizeof ttl, "IPV6_MULTICAST_HOPS 255");
        opt(IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &off, sizeof off, "IPV6_MULTICAST_LOOP 0");
        opt(IPPROTO_IPV6, IPV6_MULTICAST_ALL, &off, sizeof off, "IPV6_MULTICAST_ALL 0");
        opt(IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex_, sizeof ifindex_, "IPV6_MULTICAST_IF");
        opt(IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on, "IPV6_RECVHOPLIMIT");
        opt(IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on, "IPV6_RECVPKTINFO");
        if (peers_.empty()) {
            ipv6_mreq mr{};
            std::memcpy(&mr.ipv6mr_multiaddr, group(f).bytes.data(), 16);
            mr.ipv6mr_interface = static_cast<unsigned>(ifindex_);
            opt(IPPROTO_IPV6, IPV6_ADD_MEMBERSHIP, &mr, sizeof mr, "IPV6_ADD_MEMBERSHIP ff02::12");
        }
    }
}

VrrpSocket::~VrrpSocket() {
    if (fd_ >= 0) ::close(fd_);
}

void VrrpSocket::send_to(std::span<const uint8_t> vrrp_msg, const IpAddr& src, const IpAddr& dst) {
    const std::string what =
        "sending a VRRP advert from " + src.str() + " to " + dst.str() + " on " + ifname_;
    if (src.family != family_ || dst.family != family_) {
        ++stats_.send_errors;
        throw std::runtime_error(what + " failed: the socket is " + fam_name(family_) +
                                 "; this is a bug in the caller");
    }
    iovec iov{const_cast<uint8_t*>(vrrp_msg.data()), vrrp_msg.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) uint8_t control[CMSG_SPACE(sizeof(in6_pktinfo))] = {};
    sockaddr_in sin{};
    sockaddr_in6 sin6{};
    if (family_ == Family::v4) {
        sin.sin_family = AF_INET;
        std::memcpy(&sin.sin_addr, dst.bytes.data(), 4);
        mh.msg_name = &sin;
        mh.msg_namelen = sizeof sin;
        // ipi_spec_dst is the source address of the datagram; ipi_ifindex the way out.
        mh.msg_control = control;
        mh.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
        in_pktinfo pi{};
        pi.ipi_ifindex = ifindex_;
        std::memcpy(&pi.ipi_spec_dst, src.bytes.data(), 4);
        std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
    } else {
        sin6.sin6_family = AF_INET6;
        std::memcpy(&sin6.sin6_addr, dst.bytes.data(), 16);
        // Link-scoped destinations (ff02::12, fe80::) need the interface as their zone.
        sin6.sin6_scope_id = static_cast<uint32_t>(ifindex_);
        mh.msg_name = &sin6;
        mh.msg_namelen = sizeof sin6;
        mh.msg_control = control;
        mh.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo));
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = IPPROTO_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
        in6_pktinfo pi{};
        pi.ipi6_ifindex = static_cast<unsigned>(ifindex_);
        std::memcpy(&pi.ipi6_addr, src.bytes.data(), 16);
        std::memcpy(CMSG_DATA(c), &pi, sizeof pi);
    }
    ssize_t n;
    do {
        n = ::sendmsg(fd_, &mh, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        int err = errno;
        ++stats_.send_errors;
        std::string hint =
            err == EINVAL || err == EADDRNOTAVAIL
                ? "; the source must be an address of this host that is usable now (IPv6: the "
                  "interface's link-local address, not tentative)"
            : err == ENODEV || err == ENXIO
                ? "; the interface is gone: recreate the socket for the new interface"
                : "; check that the interface is up and has a route to the destination";
        throw std::runtime_error(what + " failed: " + std::strerror(err) + hint);
    }
    if (static_cast<size_t>(n) != vrrp_msg.size()) {
        ++stats_.send_errors;
        throw std::runtime_error(what + ": only " + std::to_string(n) + " of " +
                                 std::to_string(vrrp_msg.size()) + " bytes were sent; retry");
    }
    ++stats_.sent;
}

void VrrpSocket::send(std::span<const uint8_t> vrrp_msg, const IpAddr& src) {
    for (const auto& d : destinations_) send_to(vrrp_msg, src, d);
}

VrrpSocket::Received VrrpSocket::parse_ipv4_datagram(std::span<const uint8_t> d) {
    Received r;
    const uint8_t* p = d.data();
    const size_t len = d.size();
    if (len < 20) {
        r.truncated = true;
        r.error = "IPv4 packet of " + std::to_string(len) + " bytes is shorter than an IP header";
        return r;
    }
    const size_t ihl = size_t{p[0] & 0x0fu} * 4;
    const size_t total = (size_t{p[2]} << 8) | p[3];
    r.src = IpAddr::v4(p + 12);
    r.dst = IpAddr::v4(p + 16);
    r.ttl = p[8];
    if ((p[0] >> 4) != 4 || ihl < 20) {
        r.error = "not a valid IPv4 header (version " + std::to_string(p[0] >> 4) +
                  ", header length " + std::to_string(ihl) + ")";
        return r;
    }
    if (ihl > len || total < ihl || total > len) {
        r.truncated = true;
        r.error = "IPv4 packet from " + r.src.str() + " is cut: " + std::to_string(len) +
                  " bytes read, header length " + std::to_string(ihl) + ", total length " +
                  std::to_string(total);
        return r;
    }
    // The total length, not the bytes read, ends the message: no Ethernet padding (the kernel
    // trims it already; this does not rely on that).
    r.msg.assign(p + ihl, p + total);
    return r;
}

std::optional<VrrpSocket::Received> VrrpSocket::receive() {
    sockaddr_storage from{};
    iovec iov{buf_.data(), buf_.size()};
    alignas(cmsghdr) uint8_t control[256];
    msghdr mh{};
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    ssize_t n;
    do {
        n = ::recvmsg(fd_, &mh, MSG_DONTWAIT | MSG_TRUNC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
        // A pending socket error (an ICMP error for an earlier send, for example): reported
        // once, the next read goes on with the queue.
        Received r;
        r.error = std::string("receive error on the VRRP socket of ") + ifname_ + ": " +
                  std::strerror(errno);
        ++stats_.errors;
        return r;
    }
    ++stats_.received;
    Received r;
    const size_t len = static_cast<size_t>(n);
    if (len > buf_.size() || (mh.msg_flags & MSG_TRUNC)) {
        ++stats_.truncated;
        r.truncated = true;
        r.error = "datagram of " + std::to_string(len) + " bytes is larger than the " +
                  std::to_string(buf_.size()) + "-byte buffer; dropped";
        return r;
    }
    if (family_ == Family::v4) {
        // Raw IPv4 sockets deliver the IP header.
        r = parse_ipv4_datagram(std::span<const uint8_t>(buf_.data(), len));
        if (r.truncated)
            ++stats_.truncated;
        else if (!r.ok())
            ++stats_.errors;
        return r;
    }
    // IPv6: the payload only; addresses and hop limit from the ancillary data.
    if (mh.msg_namelen >= sizeof(sockaddr_in6) && from.ss_family == AF_INET6) {
        sockaddr_in6 s6;
        std::memcpy(&s6, &from, sizeof s6);
        r.src = IpAddr::v6(reinterpret_cast<const uint8_t*>(&s6.sin6_addr));
    }
    bool have_dst = false, have_hops = false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != IPPROTO_IPV6) continue;
        if (c->cmsg_type == IPV6_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))) {
            in6_pktinfo pi;
            std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
            r.dst = IpAddr::v6(reinterpret_cast<const uint8_t*>(&pi.ipi6_addr));
            have_dst = true;
        } else if (c->cmsg_type == IPV6_HOPLIMIT && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int hops;
            std::memcpy(&hops, CMSG_DATA(c), sizeof hops);
            r.ttl = static_cast<uint8_t>(hops);
            have_hops = true;
        }
    }
    if (!r.src.is_v6() || !have_dst || !have_hops || (mh.msg_flags & MSG_CTRUNC)) {
        ++stats_.errors;
        r.error = "IPv6 packet without its source, destination or hop limit (ancillary data " +
                  std::string(mh.msg_flags & MSG_CTRUNC ? "cut" : "missing") + "); dropped";
        return r;
    }
    r.msg.assign(buf_.data(), buf_.data() + len);
    return r;
}

}  // namespace fulcrum::control::ha
