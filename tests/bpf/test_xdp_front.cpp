// The XDP front program (ebpf/xdp_front.bpf.c) run by the kernel itself through
// BPF_PROG_TEST_RUN: every verdict, the ACL, the SYN limiter, and frames cut at every header
// boundary. Needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel >= 5.12.
//
// In test-run mode no AF_XDP socket can sit in xsks_map, so an admitted VIP frame comes back
// as XDP_PASS counted as PASS_NO_SOCKET; the redirect into a real socket is covered by
// tests/dp/test_xdp_front.py (the dataplane on net_af_xdp with this program).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fulcrum_xdp.h"
#include "packet_builder.hpp"
#include "xdp_front.skel.h"

using fulcrum::test::PacketBuilder;

namespace {

constexpr uint8_t kSyn = 0x02, kAck = 0x10;

// The program's private fl_syn value (struct fl_syn_bucket in xdp_front.bpf.c): the GCRA
// theoretical arrival time in CLOCK_MONOTONIC nanoseconds.
struct SynBucket {
    uint64_t tat;
};

uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

std::array<uint8_t, 16> addr_bytes(const std::string& text) {
    auto a = fulcrum::test::ip(text);
    std::array<uint8_t, 16> out{};
    std::memcpy(out.data(), a.bytes.data(), a.size());
    return out;
}

struct Result {
    int action = -1;
    int reason = -1;  // the one fl_stats counter that moved
};

std::string reason_name(int r) {
    static const char* names[] = {"PASS_NON_IP",   "PASS_NON_VIP",  "PASS_NO_SOCKET",
                                  "REDIRECT",      "DROP_ACL_DENY", "DROP_ACL_DEFAULT",
                                  "DROP_SYN_RATE", "DROP_MALFORMED"};
    return r >= 0 && r < FL_XDP_REASON_COUNT ? names[r] : "reason " + std::to_string(r);
}

class XdpFront : public ::testing::Test {
  protected:
    void SetUp() override {
        skel_ = xdp_front::open();
        ASSERT_NE(skel_, nullptr) << "opening the xdp_front skeleton failed: " << errno;
        // Small tables keep the test well inside any locked-memory limit; the full sizes are
        // checked by LoadsWithTheAbiSizes.
        ASSERT_EQ(bpf_map__set_max_entries(skel_->maps.fl_syn, 4096), 0);
        ASSERT_EQ(bpf_map__set_max_entries(skel_->maps.fl_acl4, 256), 0);
        ASSERT_EQ(bpf_map__set_max_entries(skel_->maps.fl_acl6, 256), 0);
        int err = xdp_front::load(skel_);
        ASSERT_EQ(err, 0) << "loading xdp_front failed (" << err
                          << "): run as root on a kernel >= 5.12";
        prog_fd_ = bpf_program__fd(skel_->progs.fl_xdp_front);
        ncpu_ = libbpf_num_possible_cpus();
        ASSERT_GT(ncpu_, 0);
    }
    void TearDown() override { xdp_front::destroy(skel_); }

    int fd(bpf_map* m) { return bpf_map__fd(m); }

    void add_vip(const std::string& a) {
        uint32_t one = 1;
        auto b = addr_bytes(a);
        if (a.find(':') == std::string::npos) {
            uint32_t k;
            std::memcpy(&k, b.data(), 4);
            ASSERT_EQ(bpf_map_update_elem(fd(skel_->maps.fl_vip4), &k, &one, BPF_ANY), 0);
        } else {
            fl_in6 k{};
            std::memcpy(k.addr, b.data(), 16);
            ASSERT_EQ(bpf_map_update_elem(fd(skel_->maps.fl_vip6), &k, &one, BPF_ANY), 0);
        }
    }
    void add_acl(const std::string& a, uint32_t prefixlen, fl_acl_action action) {
        fl_acl_rule rule{static_cast<uint32_t>(action), 7};
        auto b = addr_bytes(a);
        if (a.find(':') == std::string::npos) {
            fl_lpm4 k{prefixlen, {}};
            std::memcpy(k.addr, b.data(), 4);
            ASSERT_EQ(bpf_map_update_elem(fd(skel_->maps.fl_acl4), &k, &rule, BPF_ANY), 0);
        } else {
            fl_lpm6 k{prefixlen, {}};
            std::memcpy(k.addr, b.data(), 16);
            ASSERT_EQ(bpf_map_update_elem(fd(skel_->maps.fl_acl6), &k, &rule, BPF_ANY), 0);
        }
    }
    void set_cfg(fl_acl_action def, uint64_t rate, uint64_t burst, uint32_t v6_prefix = 64) {
        fl_front_config c{};
        c.abi_version = FULCRUM_XDP_ABI_VERSION;
        c.acl_default = def;
        c.syn_rate = rate;
        c.syn_burst = burst;
        c.v6_source_prefix = v6_prefix;
        uint32_t zero = 0;
        ASSERT_EQ(bpf_map_update_elem(fd(skel_->maps.fl_cfg), &zero, &c, BPF_ANY), 0);
    }

    std::array<uint64_t, FL_XDP_REASON_COUNT> stats() {
        std::array<uint64_t, FL_XDP_REASON_COUNT> out{};
        std::vector<uint64_t> per_cpu(ncpu_);
        for (uint32_t r = 0; r < FL_XDP_REASON_COUNT; r++) {
            EXPECT_EQ(bpf_map_lookup_elem(fd(skel_->maps.fl_stats), &r, per_cpu.data()), 0);
            for (auto v : per_cpu) out[r] += v;
        }
        return out;
    }

    // Runs the program `repeat` times on `frame`; returns its action and the reason counter
    // that moved (exactly one must move, by exactly `repeat`).
    Result run(const std::vector<uint8_t>& frame, uint32_t repeat = 1) {
        auto before = stats();
        LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
                    .data_size_in = static_cast<uint32_t>(frame.size()),
                    .repeat = static_cast<int>(repeat));
        Result res;
        int err = bpf_prog_test_run_opts(prog_fd_, &opts);
        EXPECT_EQ(err, 0) << "BPF_PROG_TEST_RUN failed on a " << frame.size() << "-byte frame";
        if (err) return res;
        res.action = static_cast<int>(opts.retval);
        auto after = stats();
        for (int r = 0; r < FL_XDP_REASON_COUNT; r++) {
            if (after[r] == before[r]) continue;
            EXPECT_EQ(res.reason, -1)
                << "two counters moved: " << reason_name(res.reason) << " and " << reason_name(r);
            EXPECT_EQ(after[r] - before[r], repeat) << reason_name(r);
            res.reason = r;
        }
        EXPECT_NE(res.reason, -1) << "no counter moved";
        return res;
    }

    // Expects `frame` to get `reason` with the action that reason implies.
    void expect(const std::vector<uint8_t>& frame, int reason, const std::string& what = "") {
        Result r = run(frame);
        EXPECT_EQ(reason_name(r.reason), reason_name(reason)) << what;
        int action = reason == FL_XDP_REDIRECT         ? XDP_REDIRECT
                     : reason <= FL_XDP_PASS_NO_SOCKET ? XDP_PASS
                                                       : XDP_DROP;
        EXPECT_EQ(r.action, action) << what << " (" << reason_name(reason) << ")";
    }

    std::vector<uint8_t> v4(const std::string& src, const std::string& dst, uint8_t flags = kSyn,
                            uint16_t sport = 40000) {
        PacketBuilder b;
        b.from(src, sport).to(dst, 80).tcp(flags);
        return b.build();
    }
    std::vector<uint8_t> v6(const std::string& src, const std::string& dst, uint8_t flags = kSyn,
                            uint16_t sport = 40000) {
        PacketBuilder b;
        b.from(src, sport).to(dst, 80).tcp(flags);
        return b.build();
    }

    xdp_front* skel_ = nullptr;
    int prog_fd_ = -1;
    int ncpu_ = 0;
};

constexpr const char* kVip4 = "198.18.1.1";
constexpr const char* kVip6 = "2001:db8:1::1";

TEST_F(XdpFront, LoadsWithTheAbiSizes) {
    xdp_front* full = xdp_front::open_and_load();
    ASSERT_NE(full, nullptr) << "the object as DPDK loads it (full map sizes) failed to load";
    EXPECT_EQ(bpf_map__max_entries(full->maps.xsks_map), FL_XDP_MAX_QUEUES);
    EXPECT_EQ(bpf_map__max_entries(full->maps.fl_vip4), FL_XDP_MAX_VIPS);
    EXPECT_EQ(bpf_map__max_entries(full->maps.fl_vip6), FL_XDP_MAX_VIPS);
    EXPECT_EQ(bpf_map__max_entries(full->maps.fl_acl4), FL_XDP_MAX_ACL);
    EXPECT_EQ(bpf_map__max_entries(full->maps.fl_acl6), FL_XDP_MAX_ACL);
    EXPECT_EQ(bpf_map__max_entries(full->maps.fl_syn), FL_XDP_MAX_SYN_SOURCES);
    EXPECT_EQ(bpf_map__max_entries(full->maps.fl_stats), FL_XDP_REASON_COUNT);
    EXPECT_EQ(bpf_map__value_size(full->maps.fl_cfg), sizeof(fl_front_config));
    EXPECT_EQ(bpf_map__key_size(full->maps.fl_syn), sizeof(fl_src_key));
    EXPECT_EQ(bpf_map__value_size(full->maps.fl_syn), sizeof(SynBucket));
    // One program only: DPDK attaches the object's first program.
    int progs = 0;
    bpf_program* p = nullptr;
    while ((p = bpf_object__next_program(full->obj, p)) != nullptr) progs++;
    EXPECT_EQ(progs, 1);
    xdp_front::destroy(full);
}

TEST_F(XdpFront, UnconfiguredAdmitsVipTraffic) {
    // A zeroed fl_cfg (fulcrumd not running yet): VIP traffic flows, nothing is limited.
    add_vip(kVip4);
    add_vip(kVip6);
    Result r = run(v4("198.18.0.7", kVip4), 50);
    EXPECT_EQ(r.action, XDP_PASS);
    EXPECT_EQ(reason_name(r.reason), "PASS_NO_SOCKET");
    expect(v6("2001:db8::7", kVip6), FL_XDP_PASS_NO_SOCKET);
}

TEST_F(XdpFront, NoVipsConfiguredPassesEverythingToTheKernel) {
    expect(v4("198.18.0.7", kVip4), FL_XDP_PASS_NON_VIP);
    expect(v6("2001:db8::7", kVip6), FL_XDP_PASS_NON_VIP);
}

TEST_F(XdpFront, VipVersusNonVip) {
    add_vip(kVip4);
    add_vip(kVip6);
    set_cfg(FL_ACL_DENY, 0, 0);  // default deny applies to VIPs only
    add_acl("198.18.0.0", 24, FL_ACL_ALLOW);
    add_acl("2001:db8::", 64, FL_ACL_ALLOW);
    expect(v4("198.18.0.7", kVip4), FL_XDP_PASS_NO_SOCKET, "VIP");
    expect(v4("198.18.0.7", "198.18.1.2"), FL_XDP_PASS_NON_VIP, "neighbour of the VIP");
    expect(v4("198.19.9.9", "198.18.1.2"), FL_XDP_PASS_NON_VIP, "unlisted source, not a VIP");
    expect(v6("2001:db8::7", kVip6), FL_XDP_PASS_NO_SOCKET, "VIP6");
    expect(v6("2001:db8::7", "2001:db8:1::2"), FL_XDP_PASS_NON_VIP, "not a VIP6");
    expect(v6("2001:db8:9::7", "2001:db8:1::2"), FL_XDP_PASS_NON_VIP, "unlisted source6");
    // The same address in the other family is not a VIP.
    PacketBuilder b;
    b.from("2001:db8::7").to("::ffff:198.18.1.1").tcp(kSyn);
    expect(b.build(), FL_XDP_PASS_NON_VIP, "v4-mapped v6");
}

TEST_F(XdpFront, NonIpPasses) {
    add_vip(kVip4);
    PacketBuilder arp;
    arp.ethertype = 0x0806;
    expect(arp.build(), FL_XDP_PASS_NON_IP, "ARP");
    PacketBuilder lldp;
    lldp.ethertype = 0x88CC;
    expect(lldp.build(), FL_XDP_PASS_NON_IP, "LLDP");
    // An ARP frame of exactly an Ethernet header.
    auto f = arp.build();
    f.resize(14);
    expect(f, FL_XDP_PASS_NON_IP, "bare Ethernet header");
    // Three VLAN tags: deeper than the front looks, not IP to it.
    PacketBuilder q3 = PacketBuilder().to(kVip4);
    q3.vlans = {1, 2, 3};
    expect(q3.build(), FL_XDP_PASS_NON_IP, "three tags");
}

TEST_F(XdpFront, VlanTagged) {
    add_vip(kVip4);
    add_vip(kVip6);
    set_cfg(FL_ACL_ALLOW, 0, 0);
    add_acl("198.18.0.66", 32, FL_ACL_DENY);
    PacketBuilder q = PacketBuilder().from("198.18.0.7").to(kVip4);
    q.vlans = {100};
    expect(q.build(), FL_XDP_PASS_NO_SOCKET, "802.1Q");
    q.vlans = {100, 200};
    auto qinq = q.build();
    qinq[12] = 0x88;  // outer tag 802.1ad
    qinq[13] = 0xA8;
    expect(qinq, FL_XDP_PASS_NO_SOCKET, "802.1ad + 802.1Q");
    PacketBuilder q6 = PacketBuilder().from("2001:db8::7").to(kVip6);
    q6.vlans = {100, 200};
    expect(q6.build(), FL_XDP_PASS_NO_SOCKET, "IPv6 in two tags");
    q.from("198.18.0.66");
    q.vlans = {100};
    expect(q.build(), FL_XDP_DROP_ACL_DENY, "tagged frame from a denied source");
    q.to("198.18.1.9");
    expect(q.build(), FL_XDP_PASS_NON_VIP, "tagged, not a VIP");
    PacketBuilder arp;
    arp.vlans = {5};
    arp.ethertype = 0x0806;
    expect(arp.build(), FL_XDP_PASS_NON_IP, "tagged ARP");
}

TEST_F(XdpFront, AclAllowDenyBothFamilies) {
    add_vip(kVip4);
    add_vip(kVip6);
    add_acl("198.18.0.66", 32, FL_ACL_DENY);
    add_acl("2001:db8:66::", 48, FL_ACL_DENY);
    add_acl("198.18.0.7", 32, FL_ACL_ALLOW);
    expect(v4("198.18.0.66", kVip4), FL_XDP_DROP_ACL_DENY, "denied /32");
    expect(v4("198.18.0.67", kVip4), FL_XDP_PASS_NO_SOCKET, "next to it, default allow");
    expect(v4("198.18.0.7", kVip4), FL_XDP_PASS_NO_SOCKET, "allowed /32");
    expect(v6("2001:db8:66::1", kVip6), FL_XDP_DROP_ACL_DENY, "denied /48");
    expect(v6("2001:db8:66:ffff::1", kVip6), FL_XDP_DROP_ACL_DENY, "denied /48, far end");
    expect(v6("2001:db8:67::1", kVip6), FL_XDP_PASS_NO_SOCKET, "outside the /48");
    // A deny applies to every protocol and every TCP flag combination, not only SYNs.
    PacketBuilder u = PacketBuilder().from("198.18.0.66").to(kVip4).udp();
    expect(u.build(), FL_XDP_DROP_ACL_DENY, "UDP from a denied source");
    expect(v4("198.18.0.66", kVip4, kAck), FL_XDP_DROP_ACL_DENY, "ACK from a denied source");
}

TEST_F(XdpFront, LongestPrefixWins) {
    add_vip(kVip4);
    add_vip(kVip6);
    add_acl("198.18.0.0", 16, FL_ACL_DENY);
    add_acl("198.18.5.0", 24, FL_ACL_ALLOW);
    add_acl("198.19.0.0", 16, FL_ACL_ALLOW);
    add_acl("198.19.5.0", 24, FL_ACL_DENY);
    expect(v4("198.18.5.9", kVip4), FL_XDP_PASS_NO_SOCKET, "allow /24 inside deny /16");
    expect(v4("198.18.6.9", kVip4), FL_XDP_DROP_ACL_DENY, "deny /16 outside the /24");
    expect(v4("198.19.5.9", kVip4), FL_XDP_DROP_ACL_DENY, "deny /24 inside allow /16");
    expect(v4("198.19.6.9", kVip4), FL_XDP_PASS_NO_SOCKET, "allow /16 outside the /24");

    add_acl("2001:db8::", 32, FL_ACL_DENY);
    add_acl("2001:db8:5::", 48, FL_ACL_ALLOW);
    add_acl("2001:db8:5:1::", 64, FL_ACL_DENY);
    add_acl("2001:db8:5:1::9", 128, FL_ACL_ALLOW);
    expect(v6("2001:db8:6::1", kVip6), FL_XDP_DROP_ACL_DENY, "/32 deny");
    expect(v6("2001:db8:5::1", kVip6), FL_XDP_PASS_NO_SOCKET, "/48 allow");
    expect(v6("2001:db8:5:1::1", kVip6), FL_XDP_DROP_ACL_DENY, "/64 deny");
    expect(v6("2001:db8:5:1::9", kVip6), FL_XDP_PASS_NO_SOCKET, "/128 allow");
}

TEST_F(XdpFront, DefaultDeny) {
    add_vip(kVip4);
    add_vip(kVip6);
    set_cfg(FL_ACL_DENY, 0, 0);
    add_acl("198.18.0.0", 24, FL_ACL_ALLOW);
    add_acl("198.18.0.128", 25, FL_ACL_DENY);
    add_acl("2001:db8::", 64, FL_ACL_ALLOW);
    expect(v4("198.18.0.7", kVip4), FL_XDP_PASS_NO_SOCKET, "allowed");
    expect(v4("198.18.0.200", kVip4), FL_XDP_DROP_ACL_DENY, "matched a deny rule");
    expect(v4("198.18.7.7", kVip4), FL_XDP_DROP_ACL_DEFAULT, "no rule matched");
    expect(v6("2001:db8::7", kVip6), FL_XDP_PASS_NO_SOCKET, "allowed v6");
    expect(v6("2001:db8:1::7", kVip6), FL_XDP_DROP_ACL_DEFAULT, "no v6 rule matched");
    set_cfg(FL_ACL_ALLOW, 0, 0);
    expect(v4("198.18.7.7", kVip4), FL_XDP_PASS_NO_SOCKET, "default back to allow");
}

TEST_F(XdpFront, SynLimiterPerSource) {
    add_vip(kVip4);
    const uint64_t burst = 5;
    set_cfg(FL_ACL_ALLOW, 1, burst);  // 1 SYN/s: no refill within the test's few milliseconds
    for (uint64_t i = 0; i < burst; i++)
        expect(v4("198.18.0.7", kVip4, kSyn, 40000 + i), FL_XDP_PASS_NO_SOCKET,
               "SYN " + std::to_string(i + 1) + " of the burst");
    expect(v4("198.18.0.7", kVip4, kSyn, 41000), FL_XDP_DROP_SYN_RATE, "SYN burst+1");
    expect(v4("198.18.0.7", kVip4, kSyn, 41001), FL_XDP_DROP_SYN_RATE, "SYN burst+2");
    // Another source has its own bucket.
    expect(v4("198.18.0.8", kVip4), FL_XDP_PASS_NO_SOCKET, "another source");
    // Established traffic and UDP from the limited source are not limited.
    for (int i = 0; i < 20; i++) {
        expect(v4("198.18.0.7", kVip4, kAck), FL_XDP_PASS_NO_SOCKET, "ACK");
        expect(v4("198.18.0.7", kVip4, kSyn | kAck), FL_XDP_PASS_NO_SOCKET, "SYN+ACK");
        expect(PacketBuilder().from("198.18.0.7").to(kVip4).udp().build(), FL_XDP_PASS_NO_SOCKET,
               "UDP");
    }
    // A SYN to a non-VIP address is the host's business.
    expect(v4("198.18.0.7", "198.18.1.2"), FL_XDP_PASS_NON_VIP, "SYN to a non-VIP");
}

TEST_F(XdpFront, SynLimiterRefillsFromTheBucketTime) {
    // Rewinding the bucket's time by k intervals gives back exactly k tokens.
    add_vip(kVip4);
    set_cfg(FL_ACL_ALLOW, 1, 3);
    Result r = run(v4("198.18.0.7", kVip4), 3);
    EXPECT_EQ(reason_name(r.reason), "PASS_NO_SOCKET");
    expect(v4("198.18.0.7", kVip4), FL_XDP_DROP_SYN_RATE, "empty");
    fl_src_key key{};
    key.family = 4;
    auto a = addr_bytes("198.18.0.7");
    std::memcpy(key.addr, a.data(), 4);
    SynBucket b{};
    ASSERT_EQ(bpf_map_lookup_elem(fd(skel_->maps.fl_syn), &key, &b), 0);
    EXPECT_GT(b.tat, monotonic_ns() + 2000000000ULL) << "3 SYNs at 1/s: 3 s of credit used";
    b.tat -= 2 * 1000000000ULL;
    ASSERT_EQ(bpf_map_update_elem(fd(skel_->maps.fl_syn), &key, &b, BPF_EXIST), 0);
    expect(v4("198.18.0.7", kVip4), FL_XDP_PASS_NO_SOCKET, "refilled token 1");
    expect(v4("198.18.0.7", kVip4), FL_XDP_PASS_NO_SOCKET, "refilled token 2");
    expect(v4("198.18.0.7", kVip4), FL_XDP_DROP_SYN_RATE, "empty again");
    // A bucket last used long ago is full again, not more than full.
    b.tat = 1;
    ASSERT_EQ(bpf_map_update_elem(fd(skel_->maps.fl_syn), &key, &b, BPF_EXIST), 0);
    r = run(v4("198.18.0.7", kVip4), 3);
    EXPECT_EQ(reason_name(r.reason), "PASS_NO_SOCKET");
    expect(v4("198.18.0.7", kVip4), FL_XDP_DROP_SYN_RATE, "a full bucket holds only the burst");
}

TEST_F(XdpFront, SynLimiterRefillsWithTime) {
    add_vip(kVip4);
    const uint64_t rate = 20, interval_ns = 1000000000ULL / rate;
    set_cfg(FL_ACL_ALLOW, rate, 2);
    const uint64_t t0 = monotonic_ns();
    Result r = run(v4("198.18.0.7", kVip4), 2);
    EXPECT_EQ(reason_name(r.reason), "PASS_NO_SOCKET");
    // Poll (a dropped SYN takes no token) until one is admitted again, within a bound.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    bool admitted = false;
    int dropped = 0;
    while (!admitted && std::chrono::steady_clock::now() < deadline) {
        Result x = run(v4("198.18.0.7", kVip4));
        if (x.reason == FL_XDP_PASS_NO_SOCKET) {
            admitted = true;
        } else {
            ASSERT_EQ(reason_name(x.reason), "DROP_SYN_RATE");
            dropped++;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    }
    const uint64_t t1 = monotonic_ns();
    ASSERT_TRUE(admitted) << "no token came back within 5 s at " << rate << "/s";
    EXPECT_GT(dropped, 0) << "the bucket was not empty after the burst";
    EXPECT_GE(t1 - t0, interval_ns) << "a token came back sooner than 1/rate";
}

TEST_F(XdpFront, SynLimiterIpv6CountsBySourcePrefix) {
    add_vip(kVip6);
    set_cfg(FL_ACL_ALLOW, 1, 2);  // default /64
    expect(v6("2001:db8:0:1::1", kVip6), FL_XDP_PASS_NO_SOCKET, "first of the /64");
    expect(v6("2001:db8:0:1::2", kVip6), FL_XDP_PASS_NO_SOCKET, "second host, same /64");
    expect(v6("2001:db8:0:1:ffff::3", kVip6), FL_XDP_DROP_SYN_RATE, "third host, same /64");
    expect(v6("2001:db8:0:2::1", kVip6), FL_XDP_PASS_NO_SOCKET, "another /64");
    // The key is the masked prefix.
    fl_src_key key{};
    key.family = 6;
    auto a = addr_bytes("2001:db8:0:1::");
    std::memcpy(key.addr, a.data(), 16);
    SynBucket b{};
    EXPECT_EQ(bpf_map_lookup_elem(fd(skel_->maps.fl_syn), &key, &b), 0) << "no /64 bucket";

    set_cfg(FL_ACL_ALLOW, 1, 1, 128);
    expect(v6("2001:db8:0:3::1", kVip6), FL_XDP_PASS_NO_SOCKET, "/128: host 1");
    expect(v6("2001:db8:0:3::2", kVip6), FL_XDP_PASS_NO_SOCKET, "/128: host 2");
    expect(v6("2001:db8:0:3::1", kVip6), FL_XDP_DROP_SYN_RATE, "/128: host 1 again");

    set_cfg(FL_ACL_ALLOW, 1, 1, 52);  // not a byte boundary
    expect(v6("2001:db8:0:4000::1", kVip6), FL_XDP_PASS_NO_SOCKET, "/52 first");
    expect(v6("2001:db8:0:4fff::1", kVip6), FL_XDP_DROP_SYN_RATE, "/52 same prefix");
    expect(v6("2001:db8:0:5000::1", kVip6), FL_XDP_PASS_NO_SOCKET, "/52 next prefix");
}

TEST_F(XdpFront, SynLimiterHoldsAcrossCpus) {
    // Two threads (on the machine's CPUs) hammer one source's bucket through test-run's
    // in-kernel repeat loop: exactly the burst gets through (plus what 1/s refills meanwhile).
    add_vip(kVip4);
    const uint64_t burst = 5000;
    set_cfg(FL_ACL_ALLOW, 1, burst);
    auto frame = v4("198.18.0.7", kVip4);
    auto before = stats();
    const uint64_t t0 = monotonic_ns();
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    const unsigned nthreads = std::max(2u, std::thread::hardware_concurrency());
    for (unsigned t = 0; t < nthreads; t++) {
        threads.emplace_back([&, t] {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(t % std::thread::hardware_concurrency(), &set);
            pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
            for (int i = 0; i < 4; i++) {
                LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
                            .data_size_in = static_cast<uint32_t>(frame.size()), .repeat = 2000);
                if (bpf_prog_test_run_opts(prog_fd_, &opts) != 0) failures++;
            }
        });
    }
    for (auto& t : threads) t.join();
    const uint64_t elapsed_s = (monotonic_ns() - t0) / 1000000000ULL;
    ASSERT_EQ(failures.load(), 0);
    auto after = stats();
    const uint64_t total = uint64_t(nthreads) * 4 * 2000;
    const uint64_t admitted = after[FL_XDP_PASS_NO_SOCKET] - before[FL_XDP_PASS_NO_SOCKET];
    const uint64_t dropped = after[FL_XDP_DROP_SYN_RATE] - before[FL_XDP_DROP_SYN_RATE];
    EXPECT_EQ(admitted + dropped, total);
    EXPECT_GE(admitted, burst);
    EXPECT_LE(admitted, burst + elapsed_s + 1);
}

TEST_F(XdpFront, FragmentsSkipTheTcpCheck) {
    add_vip(kVip4);
    set_cfg(FL_ACL_ALLOW, 1, 1);
    // A non-first fragment carries no TCP header: 8 bytes of data are fine, never SYN-limited.
    PacketBuilder nf = PacketBuilder().from("198.18.0.7").to(kVip4).udp();
    nf.df = false;
    nf.frag_offset = 1480;
    auto f = nf.build();
    f[14 + 9] = 6;  // protocol TCP, 8 bytes of (UDP-shaped) payload
    for (int i = 0; i < 3; i++) expect(f, FL_XDP_PASS_NO_SOCKET, "non-first TCP fragment");
    // A first fragment must hold the whole TCP header.
    PacketBuilder ff = PacketBuilder().from("198.18.0.7").to(kVip4).tcp(kAck);
    ff.df = false;
    ff.more_fragments = true;
    auto g = ff.build();
    expect(g, FL_XDP_PASS_NO_SOCKET, "first fragment, whole header");
    g.resize(14 + 20 + 12);
    g[14 + 2] = 0;
    g[14 + 3] = 32;  // tot_len consistent with the cut
    expect(g, FL_XDP_DROP_MALFORMED, "first fragment, 12 bytes of TCP header");
}

TEST_F(XdpFront, Ipv6ExtensionHeadersGoOn) {
    add_vip(kVip6);
    PacketBuilder b = PacketBuilder().from("2001:db8::7").to(kVip6).tcp(kSyn);
    b.ipv6_ext = {std::vector<uint8_t>(8, 0)};
    b.ipv6_ext_types = {0};  // hop-by-hop
    expect(b.build(), FL_XDP_PASS_NO_SOCKET, "hop-by-hop then TCP");
    // Behind an extension header the front does not look for the TCP header: the dataplane
    // parses and refuses it.
    auto f = b.build();
    f.resize(14 + 40 + 8 + 4);
    f[14 + 4] = 0;
    f[14 + 5] = 12;
    expect(f, FL_XDP_PASS_NO_SOCKET, "truncated TCP behind an extension header");
}

TEST_F(XdpFront, MalformedIpv4) {
    add_vip(kVip4);
    const auto good = v4("198.18.0.7", kVip4);
    expect(good, FL_XDP_PASS_NO_SOCKET, "the unmodified frame");
    auto f = good;
    f[14] = 0x44;  // ihl 4
    expect(f, FL_XDP_DROP_MALFORMED, "ihl 4");
    f = good;
    f[14] = 0x65;  // version 6 under the IPv4 ethertype
    expect(f, FL_XDP_DROP_MALFORMED, "version 6");
    f = good;
    f[14] = 0x4F;  // ihl 15: 60-byte header in a 40-byte packet
    expect(f, FL_XDP_DROP_MALFORMED, "ihl beyond the frame");
    f = good;
    f[16] = 0;
    f[17] = 19;  // tot_len < ihl * 4
    expect(f, FL_XDP_DROP_MALFORMED, "tot_len below the header");
    f = good;
    f[17] = uint8_t(f[17] + 1);  // tot_len one beyond the frame
    expect(f, FL_XDP_DROP_MALFORMED, "tot_len beyond the frame");
    f = good;
    f[14 + 20 + 12] = 0x40;  // doff 4
    expect(f, FL_XDP_DROP_MALFORMED, "TCP doff 4");
    f = good;
    f[14 + 20 + 12] = 0x60;  // doff 6: 24 bytes, 20 present
    expect(f, FL_XDP_DROP_MALFORMED, "TCP doff beyond the packet");
    // Ethernet padding after the IP packet is fine.
    f = good;
    f.resize(good.size() + 6, 0);
    expect(f, FL_XDP_PASS_NO_SOCKET, "padded frame");
    // A TCP header cut short inside a consistent IP packet.
    for (size_t tcp_len = 0; tcp_len < 20; tcp_len++) {
        f = good;
        f.resize(14 + 20 + tcp_len);
        f[16] = 0;
        f[17] = uint8_t(20 + tcp_len);
        expect(f, FL_XDP_DROP_MALFORMED, "TCP header of " + std::to_string(tcp_len) + " bytes");
    }
    // The TCP header present but outside the IP packet (in the Ethernet padding).
    f = good;
    f[16] = 0;
    f[17] = 30;
    expect(f, FL_XDP_DROP_MALFORMED, "TCP header beyond tot_len");
}

TEST_F(XdpFront, MalformedIpv6) {
    add_vip(kVip6);
    const auto good = v6("2001:db8::7", kVip6);
    expect(good, FL_XDP_PASS_NO_SOCKET, "the unmodified frame");
    auto f = good;
    f[14] = 0x40;  // version 4 under the IPv6 ethertype
    expect(f, FL_XDP_DROP_MALFORMED, "version 4");
    f = good;
    f[14 + 5] = uint8_t(f[14 + 5] + 1);  // payload_len one beyond the frame
    expect(f, FL_XDP_DROP_MALFORMED, "payload_len beyond the frame");
    f = good;
    f[14 + 40 + 12] = 0x30;  // doff 3
    expect(f, FL_XDP_DROP_MALFORMED, "TCP doff 3");
    for (size_t tcp_len = 0; tcp_len < 20; tcp_len++) {
        f = good;
        f.resize(14 + 40 + tcp_len);
        f[14 + 4] = 0;
        f[14 + 5] = uint8_t(tcp_len);
        expect(f, FL_XDP_DROP_MALFORMED, "TCP header of " + std::to_string(tcp_len) + " bytes");
    }
    // UDP behind the fixed header is not checked by the front.
    PacketBuilder u = PacketBuilder().from("2001:db8::7").to(kVip6).udp();
    expect(u.build(), FL_XDP_PASS_NO_SOCKET, "UDP");
}

TEST_F(XdpFront, EveryTruncationOfAVipFrameIsDropped) {
    // Cut at every byte: never to the socket, never to the kernel as VIP traffic.
    add_vip(kVip4);
    add_vip(kVip6);
    std::vector<std::pair<std::string, std::vector<uint8_t>>> frames = {
        {"IPv4", v4("198.18.0.7", kVip4)},
        {"IPv6", v6("2001:db8::7", kVip6)},
    };
    PacketBuilder q = PacketBuilder().from("198.18.0.7").to(kVip4).tcp(kSyn);
    q.vlans = {10, 20};
    frames.push_back({"IPv4 in two tags", q.build()});
    PacketBuilder q6 = PacketBuilder().from("2001:db8::7").to(kVip6).tcp(kSyn);
    q6.vlans = {10};
    frames.push_back({"IPv6 in a tag", q6.build()});
    for (const auto& [name, full] : frames) {
        expect(full, FL_XDP_PASS_NO_SOCKET, name + " whole");
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header itself.
        for (size_t len = 14; len < full.size(); len++) {
            std::vector<uint8_t> f(full.begin(), full.begin() + len);
            expect(f, FL_XDP_DROP_MALFORMED, name + " cut to " + std::to_string(len) + " bytes");
        }
    }
}

TEST_F(XdpFront, FramesShorterThanEthernetCannotBeTestRun) {
    // The program drops them as MALFORMED, but the kernel's test-run refuses to build an
    // xdp_buff under ETH_HLEN bytes, so that branch is only reachable from a real device.
    std::vector<uint8_t> f(13, 0);
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = f.data(), .data_size_in = 13);
    EXPECT_NE(bpf_prog_test_run_opts(prog_fd_, &opts), 0);
}

TEST_F(XdpFront, RedirectNeedsASocketOnTheQueue) {
    // With no AF_XDP socket in xsks_map at the frame's RX queue, bpf_redirect_map falls back
    // to XDP_PASS: the admitted frame goes to the kernel, counted as PASS_NO_SOCKET, never as
    // REDIRECT. (A socket cannot be put into xsks_map here: it must be bound to a device
    // queue; the dp test does that through DPDK.)
    add_vip(kVip4);
    auto frame = v4("198.18.0.7", kVip4);
    xdp_md ctx{};
    ctx.data_end = static_cast<uint32_t>(frame.size());
    ctx.ingress_ifindex = 1;  // lo, RX queue 0
    ctx.rx_queue_index = 0;
    auto before = stats();
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
                .data_size_in = static_cast<uint32_t>(frame.size()), .ctx_in = &ctx,
                .ctx_size_in = sizeof(ctx));
    ASSERT_EQ(bpf_prog_test_run_opts(prog_fd_, &opts), 0);
    EXPECT_EQ(opts.retval, XDP_PASS);
    auto after = stats();
    EXPECT_EQ(after[FL_XDP_PASS_NO_SOCKET] - before[FL_XDP_PASS_NO_SOCKET], 1u);
    EXPECT_EQ(after[FL_XDP_REDIRECT], before[FL_XDP_REDIRECT]);
}

}  // namespace
