// HaNode, fulcrumd's VRRP node, with two real nodes over a veth pair: each in a network
// namespace of its own (tests/common/netns_child.hpp) on an interface standing in for fl0, with
// a fake dataplane control socket that records the fencing-lease requests. Checks election,
// VIP ownership on the interfaces, the lease, clean stop (priority 0), a dataplane fault,
// and the operator's release / takeover / resume. Waits on states, never on time.
#include <sys/socket.h>
#include <sys/un.h>

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <vector>

#include <nlohmann/json.hpp>

#include "fulcrum/control/ha_node.hpp"
#include "fulcrum/control/vip_netlink.hpp"
#include "fulcrum/ctl_protocol.hpp"
#include "netns_child.hpp"
#include "temp_dir.hpp"

namespace fulcrum::control {
namespace {

using namespace fulcrum::test::netns;
using nlohmann::json;

const IpAddr kVip = *IpAddr::parse("198.18.0.100");

// A dataplane control socket that answers `ha` requests and remembers the last one.
class FakeDataplane {
public:
    explicit FakeDataplane(std::string path) : path_(std::move(path)) {
        ::unlink(path_.c_str());
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
        require(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd_, 8) == 0,
                "fake dataplane: cannot listen on " + path_);
        thread_ = std::thread([this] { serve(); });
    }
    ~FakeDataplane() { close(); }

    // Stops answering (the dataplane died): the socket goes away.
    void close() {
        if (stop_.exchange(true)) return;
        ::shutdown(fd_, SHUT_RDWR);
        thread_.join();
        ::close(fd_);
        ::unlink(path_.c_str());
    }

    json last() const {
        std::lock_guard lk(mu_);
        return last_;
    }
    uint64_t requests() const { return requests_.load(); }

private:
    void serve() {
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) continue;
            std::thread([this, c] { session(c); }).detach();
        }
    }
    void session(int c) {
        timeval tv{0, 100'000};
        ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        std::vector<uint8_t> in;
        while (!stop_) {
            uint8_t buf[4096];
            const ssize_t n = ::recv(c, buf, sizeof buf, 0);
            if (n == 0) break;
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                break;
            }
            in.insert(in.end(), buf, buf + n);
            while (in.size() >= 5) {
                uint32_t len;
                std::memcpy(&len, in.data(), 4);
                if (in.size() < 4 + size_t{len}) break;
                const uint8_t op = in[4];
                const std::string body(in.begin() + 5, in.begin() + 4 + len);
                in.erase(in.begin(), in.begin() + 4 + len);
                json reply = {{"error", "unexpected op"}};
                uint8_t status = 1;
                if (op == static_cast<uint8_t>(ctl::Op::ha)) {
                    std::lock_guard lk(mu_);
                    last_ = json::parse(body);
                    ++requests_;
                    reply = {{"role", last_["role"]}, {"lease_expires_in_ms", 0}, {"generation", 1}};
                    status = 0;
                }
                const std::string r = reply.dump();
                std::vector<uint8_t> out;
                ctl::encode(out, status, {reinterpret_cast<const uint8_t*>(r.data()), r.size()});
                if (::send(c, out.data(), out.size(), MSG_NOSIGNAL) < 0) break;
            }
        }
        ::close(c);
    }

    std::string path_;
    int fd_ = -1;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    mutable std::mutex mu_;
    json last_;
    std::atomic<uint64_t> requests_{0};
};

Config node_config(const std::string& ifname, const char* addr, uint8_t priority, const std::string& dp) {
    Config c;
    c.dataplane_socket = dp;
    c.interface.configured = true;
    c.interface.name = ifname;
    c.interface.addresses = {IpPrefix{*IpAddr::parse(addr), 24}};
    c.ha.enabled = true;
    c.ha.vrid = 51;
    c.ha.priority = priority;
    c.ha.advert_interval_cs = 5;  // 50 ms: the test waits on states, shorter is quicker
    c.ha.garp_count = 1;
    return c;
}

bool has_vip(ha::AddressManager& am, const std::string& ifname) {
    const int idx = am.ifindex(ifname);
    for (const auto& [a, len] : am.list(idx))
        if (a == kVip) return true;
    return false;
}

struct Pair {
    std::unique_ptr<FakeDataplane> dp_a, dp_b;
    std::unique_ptr<HaNode> a, b;
};

// Node A (priority 150) on va in namespace A, node B (100) on vb in namespace B, both links up.
// Each node is created and started inside its own namespace: its thread and sockets stay there.
Pair start_pair(Lab& lab, const std::string& dir) {
    Pair p;
    p.dp_a = std::make_unique<FakeDataplane>(dir + "/a.sock");
    p.dp_b = std::make_unique<FakeDataplane>(dir + "/b.sock");
    lab.a();
    up("va");
    p.a = std::make_unique<HaNode>(node_config("va", "198.18.0.2", 150, dir + "/a.sock"),
                                   std::vector<IpAddr>{kVip});
    p.a->start();
    lab.b();
    up("vb");
    p.b = std::make_unique<HaNode>(node_config("vb", "198.18.0.3", 100, dir + "/b.sock"),
                                   std::vector<IpAddr>{kVip});
    p.b->start();
    return p;
}

void wait_state(HaNode& n, const std::string& state, const std::string& who) {
    wait_for([&] { return n.status().state == state; }, who + " " + state);
}

constexpr const char* kNeedsRoot = "HaNode tests need root (network namespaces, veth)";

TEST(HaNode, ElectsTheHigherPriorityOwnsTheVipAndRenewsTheLease) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    const std::string err = run_isolated(true, [](Lab& lab) {
        // Declared before the Pair: the directory outlives the sockets in it.
        const TempDir dir("fulcrum-ha-node-");
        Pair p = start_pair(lab, dir.path());
        wait_state(*p.a, "master", "A");
        wait_state(*p.b, "backup", "B");
        const HaStatus sa = p.a->status(), sb = p.b->status();
        require(sb.master == "198.18.0.2" && sb.master_priority == 150,
                "B should know A as master, knows '" + sb.master + "'");
        require(sa.vips_on_interface && !sb.vips_on_interface, "only A holds the VIP");
        lab.a();
        ha::AddressManager am_a;
        require(has_vip(am_a, "va"), "the VIP is on va");
        lab.b();
        ha::AddressManager am_b;
        require(!has_vip(am_b, "vb"), "the VIP is not on vb");
        // The master keeps its dataplane active with a lease of 3 advert intervals, renewed
        // with each advert; the backup's dataplane is told standby.
        const uint64_t before = p.dp_a->requests();
        wait_for([&] { return p.dp_a->requests() >= before + 3; }, "lease renewals");
        require(p.dp_a->last() == json{{"role", "active"}, {"lease_ms", 150}},
                "A's lease request: " + p.dp_a->last().dump());
        wait_for([&] { return p.dp_b->requests() > 0; }, "B's standby");
        require(p.dp_b->last() == json{{"role", "standby"}}, "B's request: " + p.dp_b->last().dump());
        require(sa.adverts_sent > 0 && sb.adverts_received > 0, "adverts flow from A to B");

        // A clean stop: priority 0, standby, VIP removed; B takes over.
        p.a->stop(true);
        wait_state(*p.b, "master", "B");
        require(p.dp_a->last() == json{{"role", "standby"}}, "A ends standby: " + p.dp_a->last().dump());
        lab.a();
        require(!has_vip(am_a, "va"), "A removed the VIP on a clean stop");
        lab.b();
        require(has_vip(am_b, "vb"), "B added the VIP");
        require(p.b->status().priority_zero_received >= 1, "B heard A resign with priority 0");
        p.b->stop(true);
    });
    EXPECT_EQ(err, "");
}

TEST(HaNode, DataplaneFaultHandsOverAndOperatorCommandsWork) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    const std::string err = run_isolated(true, [](Lab& lab) {
        // Declared before the Pair: the directory outlives the sockets in it.
        const TempDir dir("fulcrum-ha-node-");
        Pair p = start_pair(lab, dir.path());
        wait_state(*p.a, "master", "A");
        wait_state(*p.b, "backup", "B");

        // A's dataplane goes away: A can no longer renew its lease, resigns, B takes over.
        p.dp_a->close();
        wait_state(*p.b, "master", "B");
        wait_for([&] { return p.a->status().state == "fault"; }, "A in fault");
        const auto faults = p.a->status().faults;
        require(faults == std::vector<std::string>{"dataplane unreachable"},
                "A's faults: " + (faults.empty() ? std::string("none") : faults.front()));
        // It comes back: A (higher priority, preempting) takes over again.
        p.dp_a = std::make_unique<FakeDataplane>(dir.path().string() + "/a.sock");
        wait_state(*p.a, "master", "A");
        wait_state(*p.b, "backup", "B");

        // Operator: release A (a fault: it leaves master and stays backup), B takes over;
        // B's takeover raises it to 254, so A's resume does not win it back.
        HaStatus s = p.a->release();
        require(s.operator_override == "release", "release applied");
        wait_state(*p.b, "master", "B");
        wait_for([&] { return p.a->status().state == "fault"; }, "A released");
        s = p.b->takeover();
        require(s.priority == 254, "B's takeover priority: " + std::to_string(s.priority));
        s = p.a->resume();
        require(s.operator_override.empty(), "resume clears the override");
        // A (150) is back but B now advertises 254: B stays master, A backup.
        wait_state(*p.a, "backup", "A");
        require(p.b->status().state == "master", "B keeps master after its takeover");
        s = p.b->resume();
        require(s.priority == 100, "B back at its configured priority");
        // A preempts B at 100 again.
        wait_state(*p.a, "master", "A");
        wait_state(*p.b, "backup", "B");
        p.a->stop(true);
        p.b->stop(true);
    });
    EXPECT_EQ(err, "");
}

}  // namespace
}  // namespace fulcrum::control
