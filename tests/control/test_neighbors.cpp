// NeighborResolver against the real kernel: the test process moves into a private network
// namespace (once, on the first Neighbor test) and builds, per test, a veth pair whose peer
// end lives in a second namespace that answers ARP and neighbour discovery. Needs root.
#include "fulcrum/control/neighbors.hpp"

#include <dirent.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using fulcrum::IpAddr;
using fulcrum::MacAddr;
using fulcrum::control::L2Destination;
using fulcrum::control::NeighborResolver;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kPeerNsPrefix = "fulcrum-nbr-";
constexpr const char* kLocalMac = "02:00:5e:10:00:01";
constexpr const char* kPeerMac = "02:00:5e:10:00:02";

IpAddr ip(const char* text) {
    auto a = IpAddr::parse(text);
    if (!a) throw std::invalid_argument(std::string("bad address in test: ") + text);
    return *a;
}

MacAddr mac(const char* text) {
    auto m = MacAddr::parse(text);
    if (!m) throw std::invalid_argument(std::string("bad MAC in test: ") + text);
    return *m;
}

struct CmdResult {
    int status = -1;  // exit status, -1 if the command could not run or was killed
    std::string output;
};

// Runs a shell command (in the calling thread's network namespace), capturing its output.
CmdResult run(const std::string& cmd) {
    CmdResult r;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (p == nullptr) {
        r.output = "popen: " + std::string(std::strerror(errno));
        return r;
    }
    char buf[512];
    size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    const int st = ::pclose(p);
    if (st != -1 && WIFEXITED(st)) r.status = WEXITSTATUS(st);
    return r;
}

bool write_file(const std::string& path, const std::string& value) {
    std::ofstream f(path);
    f << value;
    f.flush();
    return static_cast<bool>(f);
}

// Peer namespaces of test processes that died without cleaning up (their pid is gone).
void remove_stale_peer_namespaces() {
    DIR* d = ::opendir("/run/netns");
    if (d == nullptr) return;
    std::vector<std::string> stale;
    const std::string prefix = kPeerNsPrefix;
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name.rfind(prefix, 0) != 0) continue;
        const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
        if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
            stale.push_back(name);
    }
    ::closedir(d);
    for (const auto& name : stale) run("ip netns del " + name);
}

struct NetnsState {
    bool ok = false;
    std::string error;
};

// Moves the process (its main thread, and so every later child) into a fresh network
// namespace, once. Other test suites in this binary only use loopback, which is brought up.
const NetnsState& private_netns() {
    static const NetnsState state = [] {
        NetnsState s;
        if (::geteuid() != 0) {
            s.error = "Neighbor tests need root (network namespaces, veth, neighbour tables)";
            return s;
        }
        remove_stale_peer_namespaces();
        if (::unshare(CLONE_NEWNET) != 0) {
            s.error = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
            return s;
        }
        if (auto r = run("ip link set lo up"); r.status != 0) {
            s.error = "ip link set lo up: " + r.output;
            return s;
        }
        s.ok = true;
        return s;
    }();
    return state;
}

// The balancer side "nbr0" (198.18.0.1/24, 2001:db8:1::1/64) and, in its own namespace, a
// peer "nbr1" (198.18.0.2/24, 2001:db8:1::2/64) that also serves as the gateway to
// 198.18.5.0/24, 2001:db8:5::/64 and (over IPv6, RFC 5549) 198.18.6.0/24. The destructor
// deletes the link and the peer namespace whatever happened.
class Topology {
public:
    Topology()
        : ns_(std::string(kPeerNsPrefix) + std::to_string(::getpid()) + "-" +
              std::to_string(next_id_++)) {}
    ~Topology() {
        run("ip route del blackhole 198.18.9.0/24");
        run("ip -6 route del blackhole 2001:db8:9::/64");
        run("ip link del nbr0");
        if (ns_created_) run("ip netns del " + ns_);
    }
    Topology(const Topology&) = delete;
    Topology& operator=(const Topology&) = delete;

    std::string peer(const std::string& cmd) const { return "ip netns exec " + ns_ + " " + cmd; }

    // Empty on success, else what failed.
    std::string setup() {
        ns_created_ = true;  // a failed `ip netns add` may still leave the mount point
        if (auto e = must("ip netns add " + ns_); !e.empty()) return e;
        // Addresses usable at once: no duplicate address detection on either side (also for
        // link-local addresses, which neighbour solicitations are sent from).
        for (const char* conf : {"all", "default"}) {
            const std::string base = std::string("/proc/sys/net/ipv6/conf/") + conf;
            if (!write_file(base + "/disable_ipv6", "0") || !write_file(base + "/accept_dad", "0"))
                return "cannot write " + base + " sysctls";
        }
        if (auto e = must(peer("sysctl -qw net.ipv6.conf.all.disable_ipv6=0 "
                               "net.ipv6.conf.default.disable_ipv6=0 "
                               "net.ipv6.conf.default.accept_dad=0"));
            !e.empty())
            return e;
        if (auto e = must(std::string("ip link add name nbr0 address ") + kLocalMac +
                          " type veth peer name nbr1 address " + kPeerMac + " netns " + ns_);
            !e.empty())
            return e;
        // Quick failure of unanswered solicitations (3 x 200 ms) and quick re-confirmation
        // of STALE entries (DELAY lasts 1 s).
        for (const char* fam : {"ipv4", "ipv6"}) {
            const std::string base = std::string("/proc/sys/net/") + fam + "/neigh/nbr0/";
            if (!write_file(base + "retrans_time_ms", "200") ||
                !write_file(base + "delay_first_probe_time", "1"))
                return std::string("cannot write ") + base + " sysctls";
        }
        for (const std::string& cmd : {
                 std::string("ip link set nbr0 up"),
                 peer("ip link set lo up"),
                 peer("ip link set nbr1 up"),
                 std::string("ip addr add 198.18.0.1/24 dev nbr0"),
                 std::string("ip -6 addr add 2001:db8:1::1/64 dev nbr0 nodad"),
                 peer("ip addr add 198.18.0.2/24 dev nbr1"),
                 peer("ip -6 addr add 2001:db8:1::2/64 dev nbr1 nodad"),
                 std::string("ip route add 198.18.5.0/24 via 198.18.0.2 dev nbr0"),
                 std::string("ip -6 route add 2001:db8:5::/64 via 2001:db8:1::2 dev nbr0"),
                 std::string("ip route add 198.18.6.0/24 via inet6 2001:db8:1::2 dev nbr0"),
                 std::string("ip route replace blackhole 198.18.9.0/24"),
                 std::string("ip -6 route replace blackhole 2001:db8:9::/64"),
             }) {
            if (auto e = must(cmd); !e.empty()) return e;
        }
        return {};
    }

private:
    static std::string must(const std::string& cmd) {
        const CmdResult r = run(cmd);
        return r.status == 0 ? std::string() : cmd + ": " + r.output;
    }

    static inline int next_id_ = 0;
    std::string ns_;
    bool ns_created_ = false;
};

// Capabilities are per thread: clears CAP_NET_ADMIN from the calling thread's effective set.
bool drop_net_admin_in_this_thread() {
    __user_cap_header_struct hdr{};
    hdr.version = _LINUX_CAPABILITY_VERSION_3;
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &hdr, data) != 0) return false;
    data[CAP_TO_INDEX(CAP_NET_ADMIN)].effective &= ~CAP_TO_MASK(CAP_NET_ADMIN);
    return ::syscall(SYS_capset, &hdr, data) == 0;
}

// The kernel's view of a neighbour entry, e.g. "198.18.0.99 dev nbr0 FAILED".
std::string kernel_neighbor(const std::string& addr) {
    return run("ip neigh show " + addr + " dev nbr0 nud all").output;
}

class NeighborResolverTest : public ::testing::Test {
protected:
    void SetUp() override {
        const NetnsState& ns = private_netns();
        if (!ns.ok) GTEST_SKIP() << ns.error;
        topo_ = std::make_unique<Topology>();
        const std::string err = topo_->setup();
        ASSERT_EQ(err, "") << "building the test topology failed";
        resolver_ = std::make_unique<NeighborResolver>();
        // Let notifications from bringing the links up (IPv6 autoconfiguration) pass.
        std::this_thread::sleep_for(200ms);
        drain();
    }
    void TearDown() override {
        resolver_.reset();
        topo_.reset();
    }

    NeighborResolver& r() { return *resolver_; }

    bool readable(std::chrono::milliseconds timeout) {
        pollfd p{r().event_fd(), POLLIN, 0};
        return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0 && (p.revents & POLLIN);
    }

    void drain() {
        while (readable(0ms)) r().process_events();
    }

    // Polls event_fd() and calls process_events() until it reports a change.
    bool wait_for_change(std::chrono::milliseconds budget) {
        const auto deadline = Clock::now() + budget;
        while (Clock::now() < deadline) {
            if (readable(50ms) && r().process_events()) return true;
        }
        return false;
    }

    // Resolves, and while unresolved waits for a change and tries again.
    L2Destination resolve_eventually(const IpAddr& addr, bool require_onlink,
                                     std::chrono::milliseconds budget = 5000ms) {
        const auto deadline = Clock::now() + budget;
        L2Destination d = r().resolve(addr, require_onlink);
        while (!d.mac && d.reason == "unresolved" && Clock::now() < deadline) {
            if (readable(50ms)) r().process_events();
            d = r().resolve(addr, require_onlink);
        }
        return d;
    }

    // Waits (without processing events) until `pred` holds.
    static bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds budget) {
        const auto deadline = Clock::now() + budget;
        while (Clock::now() < deadline) {
            if (pred()) return true;
            std::this_thread::sleep_for(25ms);
        }
        return pred();
    }

    std::unique_ptr<Topology> topo_;
    std::unique_ptr<NeighborResolver> resolver_;
};

TEST_F(NeighborResolverTest, ResolvesOnLinkIpv4ServerThroughArp) {
    const IpAddr server = ip("198.18.0.2");
    const L2Destination first = r().resolve(server, true);
    EXPECT_FALSE(first.mac);
    EXPECT_EQ(first.reason, "unresolved");
    EXPECT_EQ(first.next_hop, server);
    EXPECT_EQ(first.ifname, "nbr0");
    EXPECT_EQ(r().stats().triggers, 1u);

    ASSERT_TRUE(wait_for_change(5000ms)) << "no notification after triggering ARP";
    const L2Destination d = r().resolve(server, true);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac(kPeerMac));
    EXPECT_EQ(d.next_hop, server);
    EXPECT_EQ(d.ifname, "nbr0");
    EXPECT_EQ(d.reason, "");
    EXPECT_NE(kernel_neighbor("198.18.0.2").find("REACHABLE"), std::string::npos);
}

TEST_F(NeighborResolverTest, ResolvesOnLinkIpv6ServerThroughNeighborDiscovery) {
    const IpAddr server = ip("2001:db8:1::2");
    const L2Destination first = r().resolve(server, true);
    EXPECT_FALSE(first.mac);
    EXPECT_EQ(first.reason, "unresolved");
    EXPECT_EQ(first.ifname, "nbr0");

    ASSERT_TRUE(wait_for_change(5000ms)) << "no notification after triggering ND";
    const L2Destination d = r().resolve(server, true);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac(kPeerMac));
    EXPECT_EQ(d.next_hop, server);
    EXPECT_EQ(d.ifname, "nbr0");
    EXPECT_EQ(d.reason, "");
}

TEST_F(NeighborResolverTest, SilentOnLinkAddressStaysUnresolvedAndFails) {
    for (const char* text : {"198.18.0.99", "2001:db8:1::99"}) {
        SCOPED_TRACE(text);
        const IpAddr server = ip(text);
        const auto before = r().stats();
        L2Destination d = r().resolve(server, true);
        EXPECT_FALSE(d.mac);
        EXPECT_EQ(d.reason, "unresolved");
        EXPECT_EQ(d.next_hop, server);
        EXPECT_EQ(d.ifname, "nbr0");
        // A second look right away does not solicit again.
        d = r().resolve(server, true);
        EXPECT_EQ(d.reason, "unresolved");
        const auto after = r().stats();
        EXPECT_EQ(after.triggers - before.triggers, 1u);
        EXPECT_EQ(after.triggers_suppressed - before.triggers_suppressed, 1u);
        EXPECT_EQ(after.trigger_errors, 0u) << after.last_error;

        EXPECT_TRUE(wait_until(
            [&] { return kernel_neighbor(text).find("FAILED") != std::string::npos; }, 5000ms))
            << kernel_neighbor(text);
        d = r().resolve(server, true);
        EXPECT_FALSE(d.mac);
        EXPECT_EQ(d.reason, "unresolved");
    }
}

TEST_F(NeighborResolverTest, RetriesUntilAServerComesUp) {
    const IpAddr server = ip("198.18.0.50");
    EXPECT_EQ(r().resolve(server, true).reason, "unresolved");
    ASSERT_TRUE(wait_until(
        [&] { return kernel_neighbor("198.18.0.50").find("FAILED") != std::string::npos; },
        5000ms));
    ASSERT_EQ(run(topo_->peer("ip addr add 198.18.0.50/24 dev nbr1")).status, 0);

    // No resolve() in between: the resolver's own retry finds the server and reports it.
    ASSERT_TRUE(wait_for_change(8000ms)) << kernel_neighbor("198.18.0.50");
    const L2Destination d = r().resolve(server, true);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac(kPeerMac));
    EXPECT_GE(r().stats().triggers, 2u);
}

TEST_F(NeighborResolverTest, GatewayIsRejectedForDsr) {
    L2Destination d = r().resolve(ip("198.18.5.1"), true);
    EXPECT_FALSE(d.mac);
    EXPECT_EQ(d.reason,
              "198.18.5.1 is not on-link (via gateway 198.18.0.2): DSR needs servers on the "
              "balancer's L2 segment");
    EXPECT_EQ(d.next_hop, ip("198.18.0.2"));
    EXPECT_EQ(d.ifname, "nbr0");

    d = r().resolve(ip("2001:db8:5::1"), true);
    EXPECT_FALSE(d.mac);
    EXPECT_EQ(d.reason,
              "2001:db8:5::1 is not on-link (via gateway 2001:db8:1::2): DSR needs servers on "
              "the balancer's L2 segment");
    EXPECT_EQ(d.next_hop, ip("2001:db8:1::2"));

    // Nothing was solicited or followed for a configuration error.
    EXPECT_EQ(r().stats().triggers, 0u);
    EXPECT_EQ(r().stats().watched, 0u);
}

TEST_F(NeighborResolverTest, GatewayMacForEncapsulation) {
    L2Destination d = resolve_eventually(ip("198.18.5.1"), false);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac(kPeerMac));
    EXPECT_EQ(d.next_hop, ip("198.18.0.2"));
    EXPECT_EQ(d.ifname, "nbr0");

    d = resolve_eventually(ip("2001:db8:5::1"), false);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac(kPeerMac));
    EXPECT_EQ(d.next_hop, ip("2001:db8:1::2"));

    // IPv4 route through an IPv6 gateway: the next hop is resolved with ND.
    d = resolve_eventually(ip("198.18.6.1"), false);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac(kPeerMac));
    EXPECT_EQ(d.next_hop, ip("2001:db8:1::2"));
}

TEST_F(NeighborResolverTest, ReportsMissingAndUnusableRoutes) {
    L2Destination d = r().resolve(ip("198.19.77.7"), true);
    EXPECT_FALSE(d.mac);
    EXPECT_EQ(d.reason, "no route to 198.19.77.7");
    EXPECT_EQ(d.ifname, "");

    d = r().resolve(ip("2001:db8:ffff::7"), false);
    EXPECT_FALSE(d.mac);
    EXPECT_EQ(d.reason, "no route to 2001:db8:ffff::7");

    d = r().resolve(ip("198.18.9.1"), false);
    EXPECT_EQ(d.reason, "no route to 198.18.9.1 (blackhole route)");
    d = r().resolve(ip("2001:db8:9::1"), false);
    EXPECT_EQ(d.reason, "no route to 2001:db8:9::1 (blackhole route)");

    d = r().resolve(ip("198.18.0.1"), true);
    EXPECT_FALSE(d.mac);
    EXPECT_EQ(d.reason, "198.18.0.1 is a local address of this host");

    d = r().resolve(IpAddr{}, true);
    EXPECT_FALSE(d.mac);
    EXPECT_NE(d.reason, "");

    EXPECT_EQ(r().stats().triggers, 0u);
}

TEST_F(NeighborResolverTest, ChangesOfAWatchedNeighborAreReported) {
    const IpAddr server = ip("198.18.0.77");
    EXPECT_EQ(r().resolve(server, true).reason, "unresolved");
    drain();

    ASSERT_EQ(
        run("ip neigh replace 198.18.0.77 lladdr 02:00:5e:10:00:77 dev nbr0 nud permanent").status,
        0);
    EXPECT_TRUE(readable(2000ms)) << "event_fd did not become readable";
    ASSERT_TRUE(wait_for_change(2000ms));
    L2Destination d = r().resolve(server, true);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac("02:00:5e:10:00:77"));

    // The server's MAC changes.
    ASSERT_EQ(
        run("ip neigh replace 198.18.0.77 lladdr 02:00:5e:10:00:78 dev nbr0 nud permanent").status,
        0);
    ASSERT_TRUE(wait_for_change(2000ms));
    d = r().resolve(server, true);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac("02:00:5e:10:00:78"));

    // The entry goes away.
    ASSERT_EQ(run("ip neigh del 198.18.0.77 dev nbr0").status, 0);
    ASSERT_TRUE(wait_for_change(2000ms));
    d = r().resolve(server, true);
    EXPECT_FALSE(d.mac);
    EXPECT_EQ(d.reason, "unresolved");
}

TEST_F(NeighborResolverTest, NeighborsNobodyAskedAboutAreNotReported) {
    ASSERT_EQ(run("ip neigh replace 198.18.0.123 lladdr 02:00:5e:10:01:23 dev nbr0").status, 0);
    ASSERT_TRUE(readable(2000ms));
    EXPECT_FALSE(r().process_events());
    EXPECT_GE(r().stats().events, 1u);
}

TEST_F(NeighborResolverTest, RouteAndLinkChangesAreReported) {
    ASSERT_EQ(run("ip route add 198.18.7.0/24 via 198.18.0.2").status, 0);
    ASSERT_TRUE(readable(2000ms));
    EXPECT_TRUE(r().process_events());
    drain();

    ASSERT_EQ(run("ip -6 route add 2001:db8:7::/64 via 2001:db8:1::2").status, 0);
    ASSERT_TRUE(readable(2000ms));
    EXPECT_TRUE(r().process_events());
    drain();

    ASSERT_EQ(run("ip link set nbr0 mtu 1400").status, 0);
    ASSERT_TRUE(readable(2000ms));
    EXPECT_TRUE(r().process_events());
    drain();
    EXPECT_FALSE(readable(0ms));
}

TEST_F(NeighborResolverTest, StaleEntryIsReconfirmed) {
    const IpAddr server = ip("198.18.0.2");
    const L2Destination d = resolve_eventually(server, true);
    ASSERT_TRUE(d.mac) << d.reason;
    // Past the per-next-hop trigger rate limit.
    std::this_thread::sleep_for(1100ms);
    drain();
    const auto before = r().stats().triggers;

    ASSERT_EQ(
        run(std::string("ip neigh change 198.18.0.2 dev nbr0 lladdr ") + kPeerMac + " nud stale")
            .status,
        0);
    ASSERT_NE(kernel_neighbor("198.18.0.2").find("STALE"), std::string::npos);
    // STALE -> DELAY (1 s) -> PROBE -> REACHABLE, driven by the resolver; the MAC never
    // changed, so the caller is not bothered.
    bool reported = false;
    const bool confirmed = wait_until(
        [&] {
            while (readable(0ms)) reported = r().process_events() || reported;
            return kernel_neighbor("198.18.0.2").find("REACHABLE") != std::string::npos;
        },
        5000ms);
    EXPECT_TRUE(confirmed) << kernel_neighbor("198.18.0.2");
    EXPECT_FALSE(reported);
    EXPECT_EQ(r().stats().triggers, before + 1);
    const L2Destination again = r().resolve(server, true);
    ASSERT_TRUE(again.mac) << again.reason;
    EXPECT_EQ(*again.mac, mac(kPeerMac));
}

TEST_F(NeighborResolverTest, InterfaceWithoutArpHasNoNeighborMac) {
    // With ARP off the kernel maps every neighbour to the interface's own MAC.
    ASSERT_EQ(run("ip link set nbr0 arp off").status, 0);
    const IpAddr server = ip("198.18.0.2");
    L2Destination d = r().resolve(server, true);
    const auto deadline = Clock::now() + 3000ms;
    while (d.reason == "unresolved" && Clock::now() < deadline) {
        if (readable(50ms)) r().process_events();
        d = r().resolve(server, true);
    }
    EXPECT_FALSE(d.mac) << d.mac->str();
    EXPECT_EQ(d.reason,
              "198.18.0.2 on nbr0: the interface does not resolve neighbours (NOARP), so there "
              "is no neighbour MAC");
    EXPECT_NE(kernel_neighbor("198.18.0.2").find("NOARP"), std::string::npos)
        << kernel_neighbor("198.18.0.2");
}

TEST_F(NeighborResolverTest, EntriesOfOtherAgentsKeepTheirFlags) {
    // An externally learned entry (e.g. from an EVPN daemon) is re-confirmed with a UDP
    // datagram: NTF_USE would clear its extern_learn flag.
    ASSERT_EQ(run(std::string("ip neigh replace 198.18.0.2 lladdr ") + kPeerMac +
                  " dev nbr0 extern_learn nud stale")
                  .status,
              0);
    const L2Destination d = r().resolve(ip("198.18.0.2"), true);
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac(kPeerMac));
    EXPECT_EQ(r().stats().triggers, 1u);
    EXPECT_EQ(r().stats().udp_probes, 1u);
    EXPECT_EQ(r().stats().trigger_errors, 0u) << r().stats().last_error;
    EXPECT_NE(kernel_neighbor("198.18.0.2").find("extern_learn"), std::string::npos)
        << kernel_neighbor("198.18.0.2");
}

TEST_F(NeighborResolverTest, FallsBackToUdpProbesWithoutNetAdmin) {
    // A resolver in a thread without CAP_NET_ADMIN: the kernel refuses NTF_USE, and an empty
    // datagram to the discard port resolves the server instead.
    std::string error;
    L2Destination d;
    NeighborResolver::Stats stats;
    std::thread worker([&] {
        if (!drop_net_admin_in_this_thread()) {
            error = std::string("capset: ") + std::strerror(errno);
            return;
        }
        try {
            NeighborResolver nr;
            const IpAddr server = ip("198.18.0.2");
            const auto deadline = Clock::now() + 5000ms;
            d = nr.resolve(server, true);
            while (!d.mac && d.reason == "unresolved" && Clock::now() < deadline) {
                pollfd p{nr.event_fd(), POLLIN, 0};
                if (::poll(&p, 1, 50) > 0) nr.process_events();
                d = nr.resolve(server, true);
            }
            stats = nr.stats();
        } catch (const std::exception& e) {
            error = e.what();
        }
    });
    worker.join();
    ASSERT_EQ(error, "");
    ASSERT_TRUE(d.mac) << d.reason;
    EXPECT_EQ(*d.mac, mac(kPeerMac));
    EXPECT_GE(stats.udp_probes, 1u);
    EXPECT_EQ(stats.trigger_errors, 0u) << stats.last_error;
}

TEST_F(NeighborResolverTest, NothingPendingMeansNoChange) {
    EXPECT_GE(r().event_fd(), 0);
    EXPECT_FALSE(readable(0ms));
    EXPECT_FALSE(r().process_events());
}

}  // namespace
