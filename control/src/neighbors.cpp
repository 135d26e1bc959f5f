// Server reachability from the kernel's routing and neighbour tables (see neighbors.hpp).
//
// Two rtnetlink sockets: a blocking one (with a receive timeout) for request/reply
// transactions (RTM_GETROUTE, RTM_GETNEIGH, RTM_GETLINK, RTM_NEWNEIGH with NTF_USE) and a
// non-blocking one subscribed to neighbour, route and link notifications. The event socket and
// a timerfd (retries, refreshes, expiry) sit in an epoll set whose descriptor is event_fd().
#include "fulcrum/control/neighbors.hpp"

#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <netlink/addr.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace fulcrum::control {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kTriggerInterval = 1s;  // at most one resolution trigger per next hop and second
constexpr auto kRetryMin = 1s;         // first automatic retry of an unresolved next hop
constexpr auto kRetryMax = 30s;        // backoff ceiling
constexpr auto kWatchTtl = 10min;      // a next hop resolve() no longer asks about is dropped
constexpr size_t kMaxWatches = 1u << 18;
constexpr int kRequestTimeoutMs = 2000;
constexpr size_t kRecvBufferSize = size_t{64} * 1024;
constexpr int kEventSocketBuffer = 4 << 20;
constexpr uint16_t kDiscardPort = 9;
// States in which an entry holds a link-layer address (the kernel's NUD_VALID).
constexpr unsigned kNudValid =
    NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY;

struct NlSockDeleter {
    void operator()(nl_sock* s) const noexcept { nl_socket_free(s); }
};
struct NlMsgDeleter {
    void operator()(nl_msg* m) const noexcept { nlmsg_free(m); }
};
struct NlAddrDeleter {
    void operator()(nl_addr* a) const noexcept { nl_addr_put(a); }
};
struct NeighDeleter {
    void operator()(rtnl_neigh* n) const noexcept { rtnl_neigh_put(n); }
};
struct RouteDeleter {
    void operator()(rtnl_route* r) const noexcept { rtnl_route_put(r); }
};
using NlSockPtr = std::unique_ptr<nl_sock, NlSockDeleter>;
using NlMsgPtr = std::unique_ptr<nl_msg, NlMsgDeleter>;
using NlAddrPtr = std::unique_ptr<nl_addr, NlAddrDeleter>;
using NeighPtr = std::unique_ptr<rtnl_neigh, NeighDeleter>;
using RoutePtr = std::unique_ptr<rtnl_route, RouteDeleter>;

class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    ~UniqueFd() {
        if (fd_ >= 0) ::close(fd_);
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    UniqueFd& operator=(UniqueFd&& other) noexcept {
        if (this != &other) {
            if (fd_ >= 0) ::close(fd_);
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    int get() const { return fd_; }

private:
    int fd_ = -1;
};

std::string errno_text(int err) {
    return std::error_code(err, std::generic_category()).message();
}

// Outcome of a netlink transaction: 0 or an errno value, plus the kernel's extended-ack text.
struct Status {
    int error = 0;
    std::string message;

    bool ok() const { return error == 0; }
    std::string text() const {
        if (error == 0) return "success";
        if (message.empty()) return errno_text(error);
        return message + " (" + errno_text(error) + ")";
    }
};

int address_family(const IpAddr& a) {
    return a.is_v4() ? AF_INET : AF_INET6;
}

std::optional<IpAddr> from_nl_addr(nl_addr* a) {
    if (a == nullptr) return std::nullopt;
    const auto* p = static_cast<const uint8_t*>(nl_addr_get_binary_addr(a));
    const unsigned len = nl_addr_get_len(a);
    if (p == nullptr) return std::nullopt;
    if (nl_addr_get_family(a) == AF_INET && len == 4) return IpAddr::v4(p);
    if (nl_addr_get_family(a) == AF_INET6 && len == 16) return IpAddr::v6(p);
    return std::nullopt;
}

NlAddrPtr to_nl_addr(const IpAddr& a) {
    NlAddrPtr out(nl_addr_build(address_family(a), a.bytes.data(), a.size()));
    if (!out) throw std::bad_alloc();
    return out;
}

bool is_ipv6_link_local(const IpAddr& a) {
    return a.is_v6() && a.bytes[0] == 0xfe && (a.bytes[1] & 0xc0) == 0x80;
}

const char* route_type_name(unsigned type) {
    switch (type) {
        case RTN_UNSPEC:
            return "unspecified";
        case RTN_UNICAST:
            return "unicast";
        case RTN_LOCAL:
            return "local";
        case RTN_BROADCAST:
            return "broadcast";
        case RTN_ANYCAST:
            return "anycast";
        case RTN_MULTICAST:
            return "multicast";
        case RTN_BLACKHOLE:
            return "blackhole";
        case RTN_UNREACHABLE:
            return "unreachable";
        case RTN_PROHIBIT:
            return "prohibit";
        case RTN_THROW:
            return "throw";
        case RTN_NAT:
            return "nat";
        default:
            return "unknown";
    }
}

// A neighbour table entry as far as resolution cares.
struct NeighborEntry {
    bool found = false;
    unsigned state = NUD_NONE;
    std::vector<uint8_t> lladdr;
    // Entry maintained by someone else: learned externally (e.g. an EVPN daemon) or
    // "managed" (kept resolved by the kernel). NTF_USE would clear those flags.
    bool foreign = false;
};

NeighborEntry entry_from(rtnl_neigh* n, nlmsghdr* nlh) {
    NeighborEntry e;
    e.found = true;
    const int state = rtnl_neigh_get_state(n);
    e.state = state < 0 ? NUD_NONE : static_cast<unsigned>(state);
    if ((rtnl_neigh_get_flags(n) & NTF_EXT_LEARNED) != 0) e.foreign = true;
    if (const nlattr* ext = nlmsg_find_attr(nlh, sizeof(ndmsg), NDA_FLAGS_EXT);
        ext != nullptr && nla_len(ext) >= static_cast<int>(sizeof(uint32_t)) &&
        (nla_get_u32(ext) & NTF_EXT_MANAGED) != 0)
        e.foreign = true;
    if (nl_addr* ll = rtnl_neigh_get_lladdr(n)) {
        const auto* p = static_cast<const uint8_t*>(nl_addr_get_binary_addr(ll));
        if (p != nullptr) e.lladdr.assign(p, p + nl_addr_get_len(ll));
    }
    return e;
}

// The MAC to forward to, if the entry holds a usable Ethernet address.
std::optional<MacAddr> usable_mac(const NeighborEntry& e) {
    if (!e.found || (e.state & kNudValid) == 0 || e.lladdr.size() != 6) return std::nullopt;
    MacAddr mac;
    std::copy(e.lladdr.begin(), e.lladdr.end(), mac.bytes.begin());
    if (mac.is_zero()) return std::nullopt;
    return mac;
}

}  // namespace

struct NeighborResolver::Impl {
    struct Key {
        int ifindex = 0;
        IpAddr addr;
        friend bool operator<(const Key& a, const Key& b) {
            return a.ifindex != b.ifindex ? a.ifindex < b.ifindex : a.addr < b.addr;
        }
    };
    struct Watch {
        std::string ifname;
        std::optional<MacAddr> mac;  // the entry's usable MAC as last looked up or notified
        bool foreign = false;        // the kernel entry is someone else's (see NeighborEntry)
        Clock::time_point touched;   // last resolve() for this next hop
        std::optional<Clock::time_point> last_trigger;
        Clock::duration backoff = kRetryMin;
        Clock::time_point next_retry;
    };
    struct RouteResult {
        Status status;
        unsigned type = RTN_UNSPEC;
        int oif = 0;
        std::optional<IpAddr> gateway;
    };

    NlSockPtr req;
    NlSockPtr evt;
    UniqueFd timer;
    UniqueFd epoll;
    // Separate buffers: handling a notification may run a request (a trigger).
    std::vector<unsigned char> rxbuf = std::vector<unsigned char>(kRecvBufferSize);
    std::vector<unsigned char> evbuf = std::vector<unsigned char>(kRecvBufferSize);
    std::map<Key, Watch> watches;
    Clock::time_point armed = Clock::time_point::max();
    bool neigh_get_unsupported = false;  // kernel < 5.0: no RTM_GETNEIGH for one entry
    bool use_udp_trigger = false;        // NTF_USE refused (no CAP_NET_ADMIN)
    Stats counters;

    Impl();
    L2Destination resolve(const IpAddr& addr, bool require_onlink);
    bool process_events();

    // --- netlink requests ---------------------------------------------------------------
    Status transact(nl_msg* msg, const std::function<void(nlmsghdr*)>& on_reply);
    RouteResult lookup_route(const IpAddr& addr);
    Status lookup_neighbor(int ifindex, const IpAddr& addr, NeighborEntry& out);
    Status dump_neighbor(int ifindex, const IpAddr& addr, NeighborEntry& out);
    struct LinkInfo {
        std::string name;
        std::vector<uint8_t> lladdr;
    };
    LinkInfo link_info(int ifindex);
    Status send_neigh_use(const Key& key);
    Status send_udp_probe(const Key& key, const std::string& ifname);

    // --- watches ------------------------------------------------------------------------
    Watch* watch(const Key& key, const std::string& ifname, Clock::time_point now);
    void trigger(const Key& key, Watch& w, Clock::time_point now);
    void schedule_retry(Watch& w, Clock::time_point now);
    bool on_neighbor_event(nlmsghdr* nlh, Clock::time_point now);
    bool drain_notifications(Clock::time_point now);
    bool maintain(Clock::time_point now);
    void arm(Clock::time_point when, Clock::time_point now);
    void arm_if_earlier(Clock::time_point when, Clock::time_point now) {
        if (when < armed) arm(when, now);
    }
    void note_error(std::string text) { counters.last_error = std::move(text); }
};

// ------------------------------------------------------------------------------------------
// Setup

NeighborResolver::Impl::Impl() {
    auto open = [](const char* what) {
        NlSockPtr sk(nl_socket_alloc());
        if (!sk)
            throw std::runtime_error(std::string("neighbour resolver: cannot allocate ") + what +
                                     " netlink socket");
        if (int err = nl_connect(sk.get(), NETLINK_ROUTE); err < 0)
            throw std::runtime_error(std::string("neighbour resolver: cannot open ") + what +
                                     " rtnetlink socket: " + nl_geterror(err));
        return sk;
    };

    req = open("request");
    nl_socket_disable_auto_ack(req.get());  // transact() asks for acks itself
    const int rfd = nl_socket_get_fd(req.get());
    const int one = 1;
    // Best effort: error messages from the kernel, and acks without the echoed request.
    (void)setsockopt(rfd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    (void)setsockopt(rfd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    timeval tv{};
    tv.tv_sec = kRequestTimeoutMs / 1000;
    tv.tv_usec = static_cast<suseconds_t>(kRequestTimeoutMs % 1000) * 1000;
    if (setsockopt(rfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
        throw std::runtime_error("neighbour resolver: cannot set the netlink receive timeout: " +
                                 errno_text(errno));

    evt = open("event");
    nl_socket_disable_seq_check(evt.get());
    if (int err = nl_socket_add_memberships(evt.get(), RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE,
                                            RTNLGRP_IPV6_ROUTE, RTNLGRP_LINK, 0);
        err < 0)
        throw std::runtime_error(
            std::string("neighbour resolver: cannot subscribe to rtnetlink notifications: ") +
            nl_geterror(err));
    if (int err = nl_socket_set_nonblocking(evt.get()); err < 0)
        throw std::runtime_error(
            std::string("neighbour resolver: cannot make the event socket non-blocking: ") +
            nl_geterror(err));
    const int efd = nl_socket_get_fd(evt.get());
    // A large buffer rides out bursts (a link going down flushes many neighbours). FORCE
    // needs CAP_NET_ADMIN; the plain option is capped by net.core.rmem_max.
    if (setsockopt(efd, SOL_SOCKET, SO_RCVBUFFORCE, &kEventSocketBuffer,
                   sizeof kEventSocketBuffer) != 0)
        (void)setsockopt(efd, SOL_SOCKET, SO_RCVBUF, &kEventSocketBuffer,
                         sizeof kEventSocketBuffer);

    timer = UniqueFd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (timer.get() < 0)
        throw std::runtime_error("neighbour resolver: timerfd_create: " + errno_text(errno));
    epoll = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
    if (epoll.get() < 0)
        throw std::runtime_error("neighbour resolver: epoll_create1: " + errno_text(errno));
    for (int fd : {efd, timer.get()}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
            throw std::runtime_error("neighbour resolver: epoll_ctl: " + errno_text(errno));
    }
}

// ------------------------------------------------------------------------------------------
// Netlink requests

// Sends `msg` and hands every reply to `on_reply` until the kernel's ack, error or end of
// dump. Replies to earlier (timed-out) requests are recognised by their sequence number and
// skipped.
Status NeighborResolver::Impl::transact(nl_msg* msg,
                                        const std::function<void(nlmsghdr*)>& on_reply) {
    nlmsghdr* hdr = nlmsg_hdr(msg);
    const bool dump = (hdr->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
    if (!dump) hdr->nlmsg_flags |= NLM_F_ACK;
    if (int err = nl_send_auto(req.get(), msg); err < 0)
        return {EIO, std::string("netlink send failed: ") + nl_geterror(err)};
    const uint32_t seq = hdr->nlmsg_seq;
    const int fd = nl_socket_get_fd(req.get());

    for (;;) {
        const ssize_t n = ::recv(fd, rxbuf.data(), rxbuf.size(), MSG_TRUNC);
        if (n < 0) {
            const int err = errno;
            if (err == EINTR) continue;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return {ETIMEDOUT,
                        "no netlink reply within " + std::to_string(kRequestTimeoutMs) + " ms"};
            return {err, "netlink receive failed"};
        }
        if (static_cast<size_t>(n) > rxbuf.size()) return {EMSGSIZE, "netlink reply truncated"};
        int remaining = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<nlmsghdr*>(rxbuf.data()); nlmsg_ok(nlh, remaining);
             nlh = nlmsg_next(nlh, &remaining)) {
            if (nlh->nlmsg_seq != seq) continue;
            switch (nlh->nlmsg_type) {
                case NLMSG_NOOP:
                case NLMSG_OVERRUN:
                    break;
                case NLMSG_DONE: {
                    Status st;
                    if (nlmsg_datalen(nlh) >= static_cast<int>(sizeof(int))) {
                        int code = 0;
                        std::memcpy(&code, nlmsg_data(nlh), sizeof code);
                        if (code < 0) st.error = -code;
                    }
                    return st;
                }
                case NLMSG_ERROR: {
                    if (nlmsg_datalen(nlh) < static_cast<int>(sizeof(nlmsgerr)))
                        return {EPROTO, "malformed netlink error message"};
                    const auto* e = static_cast<const nlmsgerr*>(nlmsg_data(nlh));
                    Status st;
                    st.error = -e->error;
                    if (st.error != 0 && (nlh->nlmsg_flags & NLM_F_ACK_TLVS) != 0) {
                        size_t off = sizeof(nlmsgerr);
                        if ((nlh->nlmsg_flags & NLM_F_CAPPED) == 0)
                            off += e->msg.nlmsg_len - NLMSG_HDRLEN;
                        off = NLMSG_ALIGN(off);
                        const int datalen = nlmsg_datalen(nlh);
                        if (off < static_cast<size_t>(datalen)) {
                            auto* head = reinterpret_cast<nlattr*>(
                                static_cast<unsigned char*>(nlmsg_data(nlh)) + off);
                            const nlattr* text =
                                nla_find(head, datalen - static_cast<int>(off), NLMSGERR_ATTR_MSG);
                            if (text != nullptr && nla_len(text) > 0) {
                                const auto* s = static_cast<const char*>(nla_data(text));
                                st.message.assign(s,
                                                  strnlen(s, static_cast<size_t>(nla_len(text))));
                            }
                        }
                    }
                    return st;
                }
                default:
                    on_reply(nlh);
                    break;
            }
        }
    }
}

NeighborResolver::Impl::RouteResult NeighborResolver::Impl::lookup_route(const IpAddr& addr) {
    RouteResult out;
    NlMsgPtr msg(nlmsg_alloc_simple(RTM_GETROUTE, 0));
    if (!msg) throw std::bad_alloc();
    rtmsg rtm{};
    rtm.rtm_family = static_cast<unsigned char>(address_family(addr));
    rtm.rtm_dst_len = static_cast<unsigned char>(addr.size() * 8);
    if (nlmsg_append(msg.get(), &rtm, sizeof rtm, NLMSG_ALIGNTO) < 0 ||
        nla_put(msg.get(), RTA_DST, static_cast<int>(addr.size()), addr.bytes.data()) < 0)
        throw std::bad_alloc();

    bool got = false;
    std::string parse_error;
    out.status = transact(msg.get(), [&](nlmsghdr* nlh) {
        if (nlh->nlmsg_type != RTM_NEWROUTE || got) return;
        rtnl_route* raw = nullptr;
        if (int err = rtnl_route_parse(nlh, &raw); err < 0 || raw == nullptr) {
            parse_error = std::string("cannot parse the route reply: ") + nl_geterror(err);
            return;
        }
        RoutePtr route(raw);
        got = true;
        out.type = rtnl_route_get_type(route.get());
        if (rtnl_route_get_nnexthops(route.get()) > 0) {
            rtnl_nexthop* nh = rtnl_route_nexthop_n(route.get(), 0);
            out.oif = rtnl_route_nh_get_ifindex(nh);
            if (auto gw = from_nl_addr(rtnl_route_nh_get_gateway(nh)))
                out.gateway = gw;
            else if (auto via = from_nl_addr(rtnl_route_nh_get_via(nh)))
                out.gateway = via;  // RFC 5549: IPv4 route via an IPv6 gateway
        }
    });
    if (out.status.ok() && !got)
        out.status = {EPROTO, parse_error.empty() ? "no route in the kernel's reply" : parse_error};
    return out;
}

// The kernel's entry for (ifindex, addr): RTM_GETNEIGH for that one entry (kernel 5.0+),
// else a dump of the family's table.
Status NeighborResolver::Impl::lookup_neighbor(int ifindex, const IpAddr& addr,
                                               NeighborEntry& out) {
    out = NeighborEntry{};
    if (neigh_get_unsupported) return dump_neighbor(ifindex, addr, out);

    NlMsgPtr msg(nlmsg_alloc_simple(RTM_GETNEIGH, 0));
    if (!msg) throw std::bad_alloc();
    ndmsg ndm{};
    ndm.ndm_family = static_cast<uint8_t>(address_family(addr));
    ndm.ndm_ifindex = ifindex;
    if (nlmsg_append(msg.get(), &ndm, sizeof ndm, NLMSG_ALIGNTO) < 0 ||
        nla_put(msg.get(), NDA_DST, static_cast<int>(addr.size()), addr.bytes.data()) < 0)
        throw std::bad_alloc();

    Status st = transact(msg.get(), [&](nlmsghdr* nlh) {
        if (nlh->nlmsg_type != RTM_NEWNEIGH) return;
        rtnl_neigh* raw = nullptr;
        if (rtnl_neigh_parse(nlh, &raw) < 0 || raw == nullptr) return;
        NeighPtr n(raw);
        out = entry_from(n.get(), nlh);
    });
    if (st.error == ENOENT) return {};  // no entry: out.found stays false
    if (st.error == EOPNOTSUPP) {
        neigh_get_unsupported = true;
        return dump_neighbor(ifindex, addr, out);
    }
    if (st.ok() && !out.found) return {EPROTO, "no neighbour in the kernel's reply"};
    return st;
}

Status NeighborResolver::Impl::dump_neighbor(int ifindex, const IpAddr& addr, NeighborEntry& out) {
    out = NeighborEntry{};
    NlMsgPtr msg(nlmsg_alloc_simple(RTM_GETNEIGH, NLM_F_DUMP));
    if (!msg) throw std::bad_alloc();
    ndmsg ndm{};
    ndm.ndm_family = static_cast<uint8_t>(address_family(addr));
    if (nlmsg_append(msg.get(), &ndm, sizeof ndm, NLMSG_ALIGNTO) < 0) throw std::bad_alloc();
    return transact(msg.get(), [&](nlmsghdr* nlh) {
        if (nlh->nlmsg_type != RTM_NEWNEIGH || out.found) return;
        rtnl_neigh* raw = nullptr;
        if (rtnl_neigh_parse(nlh, &raw) < 0 || raw == nullptr) return;
        NeighPtr n(raw);
        if (rtnl_neigh_get_ifindex(n.get()) != ifindex) return;
        if ((rtnl_neigh_get_flags(n.get()) & NTF_PROXY) != 0) return;
        if (from_nl_addr(rtnl_neigh_get_dst(n.get())) != addr) return;
        out = entry_from(n.get(), nlh);
    });
}

NeighborResolver::Impl::LinkInfo NeighborResolver::Impl::link_info(int ifindex) {
    LinkInfo info;
    NlMsgPtr msg(nlmsg_alloc_simple(RTM_GETLINK, 0));
    if (!msg) throw std::bad_alloc();
    ifinfomsg ifi{};
    ifi.ifi_family = AF_UNSPEC;
    ifi.ifi_index = ifindex;
    if (nlmsg_append(msg.get(), &ifi, sizeof ifi, NLMSG_ALIGNTO) < 0 ||
        nla_put_u32(msg.get(), IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS) < 0)
        throw std::bad_alloc();
    const Status st = transact(msg.get(), [&](nlmsghdr* nlh) {
        if (nlh->nlmsg_type != RTM_NEWLINK) return;
        if (nlattr* a = nlmsg_find_attr(nlh, sizeof(ifinfomsg), IFLA_IFNAME)) {
            const auto* s = static_cast<const char*>(nla_data(a));
            info.name.assign(s, strnlen(s, static_cast<size_t>(std::max(nla_len(a), 0))));
        }
        if (nlattr* a = nlmsg_find_attr(nlh, sizeof(ifinfomsg), IFLA_ADDRESS)) {
            const auto* p = static_cast<const uint8_t*>(nla_data(a));
            info.lladdr.assign(p, p + std::max(nla_len(a), 0));
        }
    });
    if (!st.ok()) note_error("interface of ifindex " + std::to_string(ifindex) + ": " + st.text());
    if (info.name.empty()) info.name = "ifindex " + std::to_string(ifindex);
    return info;
}

// `ip neigh replace ADDR dev DEV use`: creates the entry if needed (state NONE, so it is
// neither permanent nor exempt from garbage collection) and makes the kernel resolve it:
// NONE/FAILED entries go INCOMPLETE and are solicited, STALE ones are re-confirmed.
Status NeighborResolver::Impl::send_neigh_use(const Key& key) {
    NeighPtr n(rtnl_neigh_alloc());
    if (!n) throw std::bad_alloc();
    NlAddrPtr dst = to_nl_addr(key.addr);
    rtnl_neigh_set_ifindex(n.get(), key.ifindex);
    if (int err = rtnl_neigh_set_dst(n.get(), dst.get()); err < 0)
        return {EINVAL, std::string("cannot build the neighbour request: ") + nl_geterror(err)};
    rtnl_neigh_set_state(n.get(), NUD_NONE);
    rtnl_neigh_set_flags(n.get(), NTF_USE);
    nl_msg* raw = nullptr;
    if (int err = rtnl_neigh_build_add_request(n.get(), NLM_F_CREATE | NLM_F_REPLACE, &raw);
        err < 0)
        return {EINVAL, std::string("cannot build the neighbour request: ") + nl_geterror(err)};
    NlMsgPtr msg(raw);
    return transact(msg.get(), [](nlmsghdr*) {});
}

// Fallback without CAP_NET_ADMIN: an empty datagram to the next hop's discard port makes the
// kernel resolve the next hop to transmit it.
Status NeighborResolver::Impl::send_udp_probe(const Key& key, const std::string& ifname) {
    const int af = address_family(key.addr);
    UniqueFd s(::socket(af, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (s.get() < 0) return {errno, "cannot open a UDP socket"};
    // Pins the datagram to the route's interface; needs CAP_NET_RAW on older kernels, and
    // the route lookup picks the same interface anyway, so failure is not fatal.
    if (!ifname.empty())
        (void)setsockopt(s.get(), SOL_SOCKET, SO_BINDTODEVICE, ifname.c_str(),
                         static_cast<socklen_t>(ifname.size()));
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (af == AF_INET) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(kDiscardPort);
        std::memcpy(&sin.sin_addr, key.addr.bytes.data(), 4);
        std::memcpy(&ss, &sin, sizeof sin);
        len = sizeof sin;
    } else {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(kDiscardPort);
        std::memcpy(&sin6.sin6_addr, key.addr.bytes.data(), 16);
        if (is_ipv6_link_local(key.addr)) sin6.sin6_scope_id = static_cast<uint32_t>(key.ifindex);
        std::memcpy(&ss, &sin6, sizeof sin6);
        len = sizeof sin6;
    }
    if (::sendto(s.get(), "", 0, 0, reinterpret_cast<const sockaddr*>(&ss), len) < 0 &&
        errno != EAGAIN && errno != EWOULDBLOCK)
        return {errno, "UDP probe failed"};
    return {};
}

// ------------------------------------------------------------------------------------------
// Watches

NeighborResolver::Impl::Watch* NeighborResolver::Impl::watch(const Key& key,
                                                             const std::string& ifname,
                                                             Clock::time_point now) {
    auto it = watches.find(key);
    if (it == watches.end()) {
        if (watches.size() >= kMaxWatches) {
            std::erase_if(watches,
                          [&](const auto& kv) { return now - kv.second.touched >= kWatchTtl; });
            if (watches.size() >= kMaxWatches) {
                note_error("too many next hops to follow (" + std::to_string(kMaxWatches) + "); " +
                           key.addr.str() + " is resolved but not followed");
                return nullptr;
            }
        }
        it = watches.emplace(key, Watch{}).first;
    }
    Watch& w = it->second;
    w.ifname = ifname;
    w.touched = now;
    arm_if_earlier(now + kWatchTtl, now);
    return &w;
}

void NeighborResolver::Impl::trigger(const Key& key, Watch& w, Clock::time_point now) {
    if (w.last_trigger && now - *w.last_trigger < kTriggerInterval) {
        ++counters.triggers_suppressed;
        return;
    }
    w.last_trigger = now;
    Status st;
    const bool udp = use_udp_trigger || w.foreign;
    if (!udp) {
        st = send_neigh_use(key);
        if (st.error == EPERM || st.error == EACCES) use_udp_trigger = true;
    }
    if (udp || use_udp_trigger) {
        st = send_udp_probe(key, w.ifname);
        if (st.ok()) ++counters.udp_probes;
    }
    if (st.ok()) {
        ++counters.triggers;
    } else {
        ++counters.trigger_errors;
        note_error("resolution trigger for " + key.addr.str() + " on " + w.ifname + ": " +
                   st.text());
    }
}

void NeighborResolver::Impl::schedule_retry(Watch& w, Clock::time_point now) {
    w.next_retry = now + w.backoff;
    arm_if_earlier(w.next_retry, now);
}

bool NeighborResolver::Impl::on_neighbor_event(nlmsghdr* nlh, Clock::time_point now) {
    rtnl_neigh* raw = nullptr;
    if (rtnl_neigh_parse(nlh, &raw) < 0 || raw == nullptr) return false;
    NeighPtr n(raw);
    const int family = rtnl_neigh_get_family(n.get());
    if (family != AF_INET && family != AF_INET6) return false;  // bridge FDB and the like
    if ((rtnl_neigh_get_flags(n.get()) & NTF_PROXY) != 0) return false;
    const auto dst = from_nl_addr(rtnl_neigh_get_dst(n.get()));
    if (!dst) return false;
    const Key key{rtnl_neigh_get_ifindex(n.get()), *dst};
    auto it = watches.find(key);
    if (it == watches.end()) return false;
    Watch& w = it->second;

    NeighborEntry e;
    if (nlh->nlmsg_type == RTM_NEWNEIGH) e = entry_from(n.get(), nlh);
    const auto mac = usable_mac(e);
    const bool changed = mac != w.mac;
    w.mac = mac;
    w.foreign = e.foreign;
    if (mac) {
        w.backoff = kRetryMin;
        // The dataplane sends to the server without the kernel, so nothing would ever
        // re-confirm a STALE entry: do it while the caller still asks about this next hop.
        if ((e.state & NUD_STALE) != 0 && now - w.touched < kWatchTtl) trigger(key, w, now);
    } else if (changed) {
        schedule_retry(w, now);
    }
    return changed;
}

bool NeighborResolver::Impl::drain_notifications(Clock::time_point now) {
    bool changed = false;
    const int fd = nl_socket_get_fd(evt.get());
    for (;;) {
        const ssize_t n = ::recv(fd, evbuf.data(), evbuf.size(), MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) {
            const int err = errno;
            if (err == EINTR) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) break;
            if (err == ENOBUFS) {  // the kernel dropped notifications: state is unknown
                ++counters.overruns;
                changed = true;
                continue;
            }
            note_error("reading rtnetlink notifications: " + errno_text(err));
            return true;
        }
        if (static_cast<size_t>(n) > evbuf.size()) {  // cannot happen with 64 KiB; be safe
            changed = true;
            continue;
        }
        int remaining = static_cast<int>(n);
        for (auto* nlh = reinterpret_cast<nlmsghdr*>(evbuf.data()); nlmsg_ok(nlh, remaining);
             nlh = nlmsg_next(nlh, &remaining)) {
            ++counters.events;
            switch (nlh->nlmsg_type) {
                case RTM_NEWNEIGH:
                case RTM_DELNEIGH:
                    if (on_neighbor_event(nlh, now)) changed = true;
                    break;
                case RTM_NEWROUTE:
                case RTM_DELROUTE:
                case RTM_NEWLINK:
                case RTM_DELLINK:
                    changed = true;
                    break;
                default:
                    break;
            }
        }
    }
    return changed;
}

// Timer work: drop next hops resolve() no longer asks about, retry unresolved ones, re-arm.
bool NeighborResolver::Impl::maintain(Clock::time_point now) {
    bool changed = false;
    Clock::time_point next = Clock::time_point::max();
    for (auto it = watches.begin(); it != watches.end();) {
        Watch& w = it->second;
        if (now - w.touched >= kWatchTtl) {
            it = watches.erase(it);
            changed = true;  // the caller re-resolves what it still needs
            continue;
        }
        if (!w.mac) {
            if (now >= w.next_retry) {
                trigger(it->first, w, now);
                w.backoff = std::min<Clock::duration>(w.backoff * 2, kRetryMax);
                w.next_retry = now + w.backoff;
            }
            next = std::min(next, w.next_retry);
        }
        next = std::min(next, w.touched + kWatchTtl);
        ++it;
    }
    arm(next, now);
    return changed;
}

void NeighborResolver::Impl::arm(Clock::time_point when, Clock::time_point now) {
    armed = when;
    itimerspec its{};  // all zero: disarm
    if (when != Clock::time_point::max()) {
        const auto delay = std::max<Clock::duration>(when - now, 1ms);
        const auto secs = std::chrono::duration_cast<std::chrono::seconds>(delay);
        its.it_value.tv_sec = static_cast<time_t>(secs.count());
        its.it_value.tv_nsec = static_cast<long>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(delay - secs).count());
    }
    if (timerfd_settime(timer.get(), 0, &its, nullptr) != 0)
        note_error("timerfd_settime: " + errno_text(errno));
}

// ------------------------------------------------------------------------------------------
// resolve / process_events

L2Destination NeighborResolver::Impl::resolve(const IpAddr& addr, bool require_onlink) {
    ++counters.resolves;
    L2Destination out;
    out.next_hop = addr;
    if (!addr.is_v4() && !addr.is_v6()) {
        out.reason = "invalid server address (no address family)";
        return out;
    }
    const std::string a = addr.str();

    const RouteResult route = lookup_route(addr);
    if (!route.status.ok()) {
        switch (route.status.error) {
            case ENETUNREACH:
                out.reason = "no route to " + a;
                break;
            case EHOSTUNREACH:
                out.reason = "no route to " + a + " (unreachable route)";
                break;
            case EACCES:
                out.reason = "no route to " + a + " (prohibit route)";
                break;
            case EINVAL:
                // What the kernel answers for a blackhole route; a rejected request would come
                // with an explanation.
                out.reason = route.status.message.empty()
                                 ? "no route to " + a + " (blackhole route)"
                                 : "route lookup for " + a + " failed: " + route.status.text();
                break;
            default:
                out.reason = "route lookup for " + a + " failed: " + route.status.text();
                break;
        }
        return out;
    }
    if (route.type == RTN_LOCAL) {
        out.reason = a + " is a local address of this host";
        return out;
    }
    if (route.type != RTN_UNICAST) {
        out.reason = "no route to " + a + " (" + route_type_name(route.type) + " route)";
        return out;
    }
    if (route.oif <= 0) {
        out.reason = "the route to " + a + " has no output interface";
        return out;
    }
    const LinkInfo link = link_info(route.oif);
    out.ifname = link.name;
    if (route.gateway && *route.gateway != addr) {
        out.next_hop = *route.gateway;
        if (require_onlink) {
            out.reason = a + " is not on-link (via gateway " + route.gateway->str() +
                         "): DSR needs servers on the balancer's L2 segment";
            return out;
        }
    }

    NeighborEntry entry;
    if (const Status st = lookup_neighbor(route.oif, out.next_hop, entry); !st.ok()) {
        out.reason = "neighbour lookup for " + out.next_hop.str() + " on " + out.ifname +
                     " failed: " + st.text();
        note_error(out.reason);
        return out;
    }

    const auto now = Clock::now();
    const Key key{route.oif, out.next_hop};
    Watch* w = watch(key, out.ifname, now);
    out.mac = usable_mac(entry);
    if (w != nullptr) {
        w->mac = out.mac;  // as the kernel has it, so notifications compare like for like
        w->foreign = entry.foreign;
    }
    if (out.mac && (entry.state & NUD_NOARP) != 0 && entry.lladdr == link.lladdr) {
        // On an interface with ARP turned off the kernel "resolves" every neighbour to the
        // interface's own address: sending there would loop back to the balancer.
        out.mac.reset();
        out.reason = out.next_hop.str() + " on " + out.ifname +
                     ": the interface does not resolve neighbours (NOARP), so there is no "
                     "neighbour MAC";
        return out;
    }
    if (out.mac) {
        if (w != nullptr) {
            w->backoff = kRetryMin;
            if ((entry.state & NUD_STALE) != 0) trigger(key, *w, now);  // re-confirm
        }
        return out;
    }
    if (entry.found && (entry.state & kNudValid) != 0) {
        // A valid entry without a usable Ethernet address (e.g. a NOARP interface that is
        // not Ethernet): asking the kernel again would not change it.
        out.reason = out.next_hop.str() + " on " + out.ifname +
                     " has no Ethernet address in the neighbour table (" +
                     std::to_string(entry.lladdr.size()) + "-byte link-layer address)";
        return out;
    }
    out.reason = "unresolved";
    if (w != nullptr) {
        trigger(key, *w, now);
        if (now >= w->next_retry) schedule_retry(*w, now);
    }
    return out;
}

bool NeighborResolver::Impl::process_events() {
    bool changed = drain_notifications(Clock::now());
    uint64_t expirations = 0;
    while (::read(timer.get(), &expirations, sizeof expirations) < 0 && errno == EINTR) {
    }
    const auto now = Clock::now();
    if (now >= armed && maintain(now)) changed = true;
    return changed;
}

// ------------------------------------------------------------------------------------------
// Public interface: no exceptions escape (the constructor excepted).

NeighborResolver::NeighborResolver() : impl_(std::make_unique<Impl>()) {}
NeighborResolver::~NeighborResolver() = default;

L2Destination NeighborResolver::resolve(const IpAddr& addr, bool require_onlink) {
    try {
        return impl_->resolve(addr, require_onlink);
    } catch (const std::exception& e) {
        L2Destination out;
        out.next_hop = addr;
        out.reason = "resolving " + addr.str() + " failed: " + e.what();
        impl_->note_error(out.reason);
        return out;
    } catch (...) {
        L2Destination out;
        out.next_hop = addr;
        out.reason = "resolving " + addr.str() + " failed";
        return out;
    }
}

int NeighborResolver::event_fd() const {
    return impl_->epoll.get();
}

bool NeighborResolver::process_events() {
    try {
        return impl_->process_events();
    } catch (const std::exception& e) {
        impl_->note_error(std::string("processing rtnetlink notifications: ") + e.what());
        return true;  // state unknown: have the caller re-resolve
    } catch (...) {
        return true;
    }
}

NeighborResolver::Stats NeighborResolver::stats() const {
    Stats s = impl_->counters;
    s.watched = impl_->watches.size();
    return s;
}

}  // namespace fulcrum::control
