// Interface facts and VIPs over rtnetlink (see vip_netlink.hpp). Plain netlink messages built
// by hand: the few requests needed here (RTM_GETLINK, RTM_GETADDR, RTM_NEWADDR, RTM_DELADDR)
// are simpler to read this way than through libnl's object cache.
#include "fulcrum/control/vip_netlink.hpp"

// net/if.h before linux/if.h (its own block, so that sorting keeps it first): the kernel
// header then leaves out what glibc defines.
#include <net/if.h>

#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fulcrum::control::ha {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kRecvBufferSize = size_t{64} * 1024;

std::string errno_text(int err) {
    return std::string(std::strerror(err));
}


// What to do about an error the kernel returned for a change request.
std::string advice(int err) {
    switch (err) {
        case EPERM:
        case EACCES:
            return "run fulcrumd as root or grant it CAP_NET_ADMIN";
        case ENODEV:
            return "check that the interface exists (the dataplane creates it; it may be "
                   "restarting)";
        default:
            return "check the interface and the address with `ip addr`";
    }
}

void put_attr(std::vector<uint8_t>& msg, uint16_t type, const void* data, size_t len) {
    size_t off = msg.size();
    msg.resize(off + NLMSG_ALIGN(RTA_LENGTH(len)), 0);
    rtattr rta{};
    rta.rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
    rta.rta_type = type;
    std::memcpy(msg.data() + off, &rta, sizeof rta);
    if (len) std::memcpy(msg.data() + off + RTA_LENGTH(0), data, len);
    nlmsghdr h;
    std::memcpy(&h, msg.data(), sizeof h);
    h.nlmsg_len = static_cast<uint32_t>(msg.size());
    std::memcpy(msg.data(), &h, sizeof h);
}

// A request: the netlink header followed by the fixed family header `T`.
template <typename T>
std::vector<uint8_t> make_request(uint16_t type, uint16_t flags, const T& body) {
    std::vector<uint8_t> msg(NLMSG_SPACE(sizeof(T)), 0);
    nlmsghdr h{};
    h.nlmsg_len = static_cast<uint32_t>(msg.size());
    h.nlmsg_type = type;
    h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
    std::memcpy(msg.data(), &h, sizeof h);
    std::memcpy(msg.data() + NLMSG_HDRLEN, &body, sizeof body);
    return msg;
}

// Calls fn(type, payload, payload_len) for each attribute in [p, p + len), bounds-checked.
template <typename Fn>
void for_each_attr(const uint8_t* p, size_t len, Fn&& fn) {
    while (len >= sizeof(rtattr)) {
        rtattr rta;
        std::memcpy(&rta, p, sizeof rta);
        if (rta.rta_len < sizeof(rtattr) || rta.rta_len > len) return;
        fn(static_cast<uint16_t>(rta.rta_type & NLA_TYPE_MASK), p + RTA_LENGTH(0),
           size_t{rta.rta_len} - RTA_LENGTH(0));
        size_t step = RTA_ALIGN(rta.rta_len);
        if (step >= len) return;
        p += step;
        len -= step;
    }
}

}  // namespace

struct AddressManager::Reply {
    int error = 0;        // positive errno from the kernel's ack, 0 on success
    std::string ext_msg;  // the kernel's extended ack text, if any
    std::vector<std::vector<uint8_t>> messages;  // whole netlink messages of a dump / reply
};

AddressManager::AddressManager() {
    fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0)
        throw std::runtime_error(
            "VIP manager: cannot open an rtnetlink socket: " + errno_text(errno) +
            "; check that the kernel has netlink and "
            "that fulcrumd may open sockets");
    // Bounded waits even if poll() were bypassed; poll() below enforces the total deadline.
    timeval tv{kRequestTimeoutMs / 1000, (kRequestTimeoutMs % 1000) * 1000};
    (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    // The kernel's own explanation of a refused request ("prefix length too long" and the
    // like) makes the error messages useful; older kernels lack it, which is fine.
    int one = 1;
    (void)::setsockopt(fd_, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    (void)::setsockopt(fd_, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    socklen_t sl = sizeof sa;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &sl) != 0) {
        int err = errno;
        ::close(fd_);
        fd_ = -1;
        throw std::runtime_error("VIP manager: cannot bind the rtnetlink socket: " +
                                 errno_text(err) + "; check the process's socket limits");
    }
    port_id_ = sa.nl_pid;
}

AddressManager::~AddressManager() {
    if (fd_ >= 0) ::close(fd_);
}

AddressManager::Reply AddressManager::transact(std::vector<uint8_t>& request,
                                               const char* what) const {
    uint32_t seq = ++seq_;
    nlmsghdr h;
    std::memcpy(&h, request.data(), sizeof h);
    h.nlmsg_seq = seq;
    h.nlmsg_pid = 0;
    std::memcpy(request.data(), &h, sizeof h);

    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    ssize_t sent;
    do {
        sent = ::sendto(fd_, request.data(), request.size(), 0,
                        reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0)
        throw std::runtime_error(std::string("VIP manager: sending the netlink request to ") +
                                 what + " failed: " + errno_text(errno) +
                                 "; check that rtnetlink is usable in this namespace");

    Reply reply;
    std::vector<uint8_t> buf(kRecvBufferSize);
    const auto deadline = Clock::now() + std::chrono::milliseconds(kRequestTimeoutMs);
    // Bounded: each pass either consumes a datagram or waits for the (fixed) deadline.
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0)
            throw std::runtime_error(std::string("VIP manager: no answer from the kernel to ") +
                                     what + " within " + std::to_string(kRequestTimeoutMs) +
                                     " ms; the system may be overloaded, retry later");
        pollfd pfd{fd_, POLLIN, 0};
        int pr = ::poll(&pfd, 1, static_cast<int>(left.count()));
        if (pr < 0 && errno != EINTR)
            throw std::runtime_error(std::string("VIP manager: waiting for the answer to ") + what +
                                     " failed: " + errno_text(errno));
        if (pr <= 0) continue;
        ssize_t n = ::recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            // ENOBUFS: the socket overran (a huge dump); the answer is incomplete.
            throw std::runtime_error(std::string("VIP manager: receiving the answer to ") + what +
                                     " failed: " + errno_text(errno) + "; retry the operation");
        }
        if (static_cast<size_t>(n) > buf.size())
            throw std::runtime_error(std::string("VIP manager: the answer to ") + what +
                                     " was larger than " + std::to_string(buf.size()) +
                                     " bytes and was cut; this is a bug, report it");
        size_t off = 0;
        const size_t len = static_cast<size_t>(n);
        while (off + sizeof(nlmsghdr) <= len) {
            nlmsghdr m;
            std::memcpy(&m, buf.data() + off, sizeof m);
            if (m.nlmsg_len < sizeof(nlmsghdr) || m.nlmsg_len > len - off) break;
            const uint8_t* p = buf.data() + off;
            off += NLMSG_ALIGN(m.nlmsg_len);
            // Late answers to a request that timed out earlier, or anything not for us.
            if (m.nlmsg_seq != seq || (m.nlmsg_pid != 0 && m.nlmsg_pid != port_id_)) continue;
            if (m.nlmsg_type == NLMSG_DONE) return reply;
            if (m.nlmsg_type == NLMSG_ERROR) {
                nlmsgerr e;
                if (m.nlmsg_len < NLMSG_LENGTH(sizeof e))
                    throw std::runtime_error(std::string("VIP manager: malformed netlink error "
                                                         "message in the answer to ") +
                                             what + "; this is a kernel or library bug");
                std::memcpy(&e, p + NLMSG_HDRLEN, sizeof e);
                reply.error = -e.error;
                if (m.nlmsg_flags & NLM_F_ACK_TLVS) {
                    // With NETLINK_CAP_ACK the echoed request is only its header.
                    size_t tlv_off = NLMSG_HDRLEN + sizeof e;
                    if (!(m.nlmsg_flags & NLM_F_CAPPED))
                        tlv_off += NLMSG_ALIGN(e.msg.nlmsg_len) - sizeof(nlmsghdr);
                    if (tlv_off < m.nlmsg_len)
                        for_each_attr(p + tlv_off, m.nlmsg_len - tlv_off,
                                      [&](uint16_t type, const uint8_t* d, size_t dl) {
                                          if (type == NLMSGERR_ATTR_MSG && dl > 0)
                                              reply.ext_msg.assign(
                                                  reinterpret_cast<const char*>(d),
                                                  strnlen(reinterpret_cast<const char*>(d), dl));
                                      });
                }
                return reply;  // the ack (error 0) or the refusal ends every request
            }
            // A dump ends with NLMSG_DONE, other requests with the ack above.
            reply.messages.emplace_back(p, p + m.nlmsg_len);
        }
    }
}

std::optional<std::vector<uint8_t>> AddressManager::get_link(int ifindex,
                                                             const char* ifname) const {
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = ifindex;
    auto req = make_request(RTM_GETLINK, 0, ifi);
    if (ifname != nullptr) put_attr(req, IFLA_IFNAME, ifname, std::strlen(ifname) + 1);
    // Only the link's own attributes, not per-VF statistics and the like.
    uint32_t mask = RTEXT_FILTER_SKIP_STATS;
    put_attr(req, IFLA_EXT_MASK, &mask, sizeof mask);
    std::string what = ifname != nullptr ? "look up interface " + std::string(ifname)
                                         : "look up " + if_label(ifindex);
    Reply r = transact(req, what.c_str());
    if (r.error == ENODEV) return std::nullopt;
    if (r.error != 0)
        throw std::runtime_error("VIP manager: cannot " + what + ": " + errno_text(r.error) +
                                 (r.ext_msg.empty() ? "" : " (" + r.ext_msg + ")") +
                                 "; check that the interface exists");
    for (auto& m : r.messages) {
        nlmsghdr h;
        std::memcpy(&h, m.data(), sizeof h);
        if (h.nlmsg_type == RTM_NEWLINK && m.size() >= NLMSG_SPACE(sizeof(ifinfomsg)))
            return std::move(m);
    }
    return std::nullopt;
}

int AddressManager::ifindex(const std::string& ifname) const {
    if (ifname.empty() || ifname.size() >= IF_NAMESIZE || ifname.find('\0') != std::string::npos)
        return 0;
    auto m = get_link(0, ifname.c_str());
    if (!m) return 0;
    ifinfomsg ifi;
    std::memcpy(&ifi, m->data() + NLMSG_HDRLEN, sizeof ifi);
    return ifi.ifi_index;
}

bool AddressManager::link_up(int ifindex) {
    if (ifindex <= 0) return false;
    auto m = get_link(ifindex, nullptr);
    if (!m) return false;
    ifinfomsg ifi;
    std::memcpy(&ifi, m->data() + NLMSG_HDRLEN, sizeof ifi);
    return (ifi.ifi_flags & IFF_UP) && (ifi.ifi_flags & IFF_LOWER_UP);
}

std::optional<std::array<uint8_t, 6>> AddressManager::mac(int ifindex) {
    if (ifindex <= 0) return std::nullopt;
    auto m = get_link(ifindex, nullptr);
    if (!m) return std::nullopt;
    std::optional<std::array<uint8_t, 6>> out;
    const size_t attrs = NLMSG_SPACE(sizeof(ifinfomsg));
    for_each_attr(m->data() + attrs, m->size() - attrs,
                  [&](uint16_t type, const uint8_t* d, size_t dl) {
                      // lo and some tunnels report 00:00:00:00:00:00: no usable MAC.
                      if (type == IFLA_ADDRESS && dl == 6 &&
                          std::any_of(d, d + 6, [](uint8_t b) { return b != 0; })) {
                          std::array<uint8_t, 6> a{};
                          std::memcpy(a.data(), d, 6);
                          out = a;
                      }
                  });
    return out;
}

namespace {

// The fixed header and the address attributes of RTM_NEWADDR / RTM_DELADDR.
std::vector<uint8_t> address_request(uint16_t type, uint16_t flags, int ifindex, const IpAddr& a,
                                     uint8_t prefix_len, uint32_t ifa_flags,
                                     bool deprecated = false) {
    ifaddrmsg ifa{};
    ifa.ifa_family = a.is_v4() ? AF_INET : AF_INET6;
    ifa.ifa_prefixlen = prefix_len;
    ifa.ifa_flags = static_cast<uint8_t>(ifa_flags & 0xff);
    bool link_local = a.is_v6() && a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80;
    ifa.ifa_scope = link_local ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
    ifa.ifa_index = static_cast<uint32_t>(ifindex);
    auto req = make_request(type, flags, ifa);
    put_attr(req, IFA_LOCAL, a.bytes.data(), a.size());
    put_attr(req, IFA_ADDRESS, a.bytes.data(), a.size());
    if (ifa_flags != 0) put_attr(req, IFA_FLAGS, &ifa_flags, sizeof ifa_flags);
    if (deprecated) {
        ifa_cacheinfo ci{};
        ci.ifa_prefered = 0;
        ci.ifa_valid = 0xffffffffu;  // INFINITY_LIFE_TIME: never expires
        put_attr(req, IFA_CACHEINFO, &ci, sizeof ci);
    }
    return req;
}

void check_address(const char* op, int ifindex, const IpAddr& a, uint8_t prefix_len) {
    if (!a.is_v4() && !a.is_v6())
        throw std::runtime_error(std::string("VIP manager: cannot ") + op +
                                 " an address without a family on " + if_label(ifindex) +
                                 "; this is a bug in the caller");
    if (prefix_len > a.size() * 8)
        throw std::runtime_error(std::string("VIP manager: cannot ") + op + " " + a.str() + "/" +
                                 std::to_string(prefix_len) + " on " + if_label(ifindex) +
                                 ": the prefix length is longer than the address; use at most " +
                                 std::to_string(a.size() * 8));
    if (ifindex <= 0)
        throw std::runtime_error(std::string("VIP manager: cannot ") + op + " " + a.str() +
                                 ": no interface (index " + std::to_string(ifindex) +
                                 "); check that the exception interface exists");
}

}  // namespace

void AddressManager::add(int ifindex, const IpAddr& a, uint8_t prefix_len, bool nodad,
                         bool source) {
    check_address("add", ifindex, a, prefix_len);
    uint32_t flags = (nodad && a.is_v6()) ? IFA_F_NODAD : 0;
    const bool deprecated = !source && a.is_v6();
    // A deprecated address replaces one already there (its lifetimes and flags are updated),
    // so it cannot stay a source; any other add leaves an existing address as it is.
    auto req =
        address_request(RTM_NEWADDR, NLM_F_CREATE | (deprecated ? NLM_F_REPLACE : NLM_F_EXCL),
                        ifindex, a, prefix_len, flags, deprecated);
    std::string what =
        "add " + a.str() + "/" + std::to_string(prefix_len) + " to " + if_label(ifindex);
    Reply r = transact(req, what.c_str());
    if (r.error == 0 || r.error == EEXIST) return;
    throw std::runtime_error("VIP manager: cannot " + what + ": " + errno_text(r.error) +
                             (r.ext_msg.empty() ? "" : " (" + r.ext_msg + ")") + "; " +
                             advice(r.error));
}

void AddressManager::remove(int ifindex, const IpAddr& a, uint8_t prefix_len) {
    check_address("remove", ifindex, a, prefix_len);
    auto req = address_request(RTM_DELADDR, 0, ifindex, a, prefix_len, 0);
    std::string what =
        "remove " + a.str() + "/" + std::to_string(prefix_len) + " from " + if_label(ifindex);
    Reply r = transact(req, what.c_str());
    // EADDRNOTAVAIL: no such address; ENODEV: the interface is gone, and its addresses too.
    if (r.error == 0 || r.error == EADDRNOTAVAIL || r.error == ENODEV) return;
    throw std::runtime_error("VIP manager: cannot " + what + ": " + errno_text(r.error) +
                             (r.ext_msg.empty() ? "" : " (" + r.ext_msg + ")") + "; " +
                             advice(r.error));
}

std::vector<AddressManager::AddressInfo> AddressManager::addresses(int ifindex) {
    std::vector<AddressInfo> out;
    if (ifindex <= 0) return out;
    ifaddrmsg ifa{};
    ifa.ifa_family = AF_UNSPEC;
    auto req = make_request(RTM_GETADDR, NLM_F_DUMP, ifa);
    std::string what = "list the addresses of " + if_label(ifindex);
    Reply r = transact(req, what.c_str());
    if (r.error != 0)
        throw std::runtime_error("VIP manager: cannot " + what + ": " + errno_text(r.error) +
                                 (r.ext_msg.empty() ? "" : " (" + r.ext_msg + ")") +
                                 "; retry later");
    for (const auto& m : r.messages) {
        nlmsghdr h;
        std::memcpy(&h, m.data(), sizeof h);
        if (h.nlmsg_type != RTM_NEWADDR || m.size() < NLMSG_SPACE(sizeof(ifaddrmsg))) continue;
        ifaddrmsg am;
        std::memcpy(&am, m.data() + NLMSG_HDRLEN, sizeof am);
        if (static_cast<int>(am.ifa_index) != ifindex) continue;
        if (am.ifa_family != AF_INET && am.ifa_family != AF_INET6) continue;
        const size_t alen = am.ifa_family == AF_INET ? 4 : 16;
        std::optional<IpAddr> local, address;
        uint32_t flags = am.ifa_flags;
        const size_t attrs = NLMSG_SPACE(sizeof(ifaddrmsg));
        for_each_attr(m.data() + attrs, m.size() - attrs,
                      [&](uint16_t type, const uint8_t* d, size_t dl) {
                          if ((type == IFA_LOCAL || type == IFA_ADDRESS) && dl == alen) {
                              IpAddr x = alen == 4 ? IpAddr::v4(d) : IpAddr::v6(d);
                              (type == IFA_LOCAL ? local : address) = x;
                          } else if (type == IFA_FLAGS && dl == 4) {
                              std::memcpy(&flags, d, 4);
                          }
                      });
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on a
        // point-to-point link); IPv6 sends only IFA_ADDRESS unless there is a peer.
        std::optional<IpAddr> own = local ? local : address;
        if (own) out.push_back(AddressInfo{*own, am.ifa_prefixlen, flags});
    }
    return out;
}

std::vector<std::pair<IpAddr, uint8_t>> AddressManager::list(int ifindex) {
    std::vector<std::pair<IpAddr, uint8_t>> out;
    for (const auto& a : addresses(ifindex)) out.emplace_back(a.addr, a.prefix_len);
    return out;
}

std::optional<IpAddr> AddressManager::link_local(int ifindex) {
    for (const auto& a : addresses(ifindex)) {
        if (!a.addr.is_v6() || a.addr.bytes[0] != 0xfe || (a.addr.bytes[1] & 0xc0) != 0x80)
            continue;
        if (a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)) continue;
        return a.addr;
    }
    return std::nullopt;
}

std::optional<IpAddr> AddressManager::first_v4(int ifindex, std::span<const IpAddr> exclude) {
    for (const auto& a : addresses(ifindex)) {
        if (!a.addr.is_v4()) continue;
        if (std::find(exclude.begin(), exclude.end(), a.addr) != exclude.end()) continue;
        return a.addr;
    }
    return std::nullopt;
}

std::string if_label(int ifindex) {
    char name[IF_NAMESIZE] = {};
    std::string s = "interface index " + std::to_string(ifindex);
    if (ifindex > 0 && if_indextoname(static_cast<unsigned>(ifindex), name) != nullptr)
        s += " (" + std::string(name) + ")";
    return s;
}

}  // namespace fulcrum::control::ha
