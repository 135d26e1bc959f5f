#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <random>

#include "fulcrum/bytes.hpp"
#include "fulcrum/forward.hpp"
#include "frame_buf.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using test::FrameBuf;
using test::ip;
using test::mac;
using test::PacketBuilder;

namespace {

const MacAddr kOwn = mac("02:00:00:00:00:aa");

ServerSpec server(uint32_t slot, const std::string& addr, uint32_t weight = 1, bool backup = false) {
    ServerSpec s;
    s.slot = slot;
    s.addr = ip(addr);
    s.mac = MacAddr{{0x02, 0, 0, 0, 0x10, static_cast<uint8_t>(slot)}};
    s.weight = weight;
    s.backup = backup;
    return s;
}

ServiceSpec service(uint32_t id, const std::string& vip, uint16_t port, uint8_t proto,
                    std::vector<ServerSpec> servers, Scheduler sched = Scheduler::maglev,
                    Forwarding fwd = Forwarding::dsr) {
    ServiceSpec s;
    s.id = id;
    s.name = "svc" + std::to_string(id);
    s.vip = ip(vip);
    s.port = port;
    s.proto = proto;
    s.scheduler = sched;
    s.forwarding = fwd;
    s.table_size = 4099;
    s.servers = std::move(servers);
    return s;
}

SnapshotSpec base_spec() {
    SnapshotSpec spec;
    spec.hash_seed = 1234;
    spec.encap.src4 = IpPrefix::parse("198.18.255.0/24");
    spec.encap.src6 = IpPrefix::parse("2001:db8:ffff::/64");
    spec.services.push_back(service(1, "198.18.1.1", 80, FL_PROTO_TCP,
                                    {server(0, "198.18.2.1"), server(1, "198.18.2.2"), server(2, "198.18.2.3")}));
    return spec;
}

std::unique_ptr<LoadedSnapshot> load(const SnapshotSpec& spec) {
    auto b = build_snapshot(spec);
    auto ls = LoadedSnapshot::load(b, 1);
    EXPECT_TRUE(ls) << ls.error();
    return std::move(ls.value());
}

WorkerConfig wcfg() {
    WorkerConfig c;
    c.own_mac = kOwn;
    c.conn_capacity = 1 << 16;
    c.max_servers = 1024;
    c.max_services = 64;
    return c;
}

// The server slot a forwarded DSR/encapsulated frame went to, from its destination MAC.
int server_of(const Frame& f) {
    if (f.data[0] != 0x02 || f.data[4] != 0x10) return -1;
    return f.data[5];
}

struct Fixture : ::testing::Test {
    Worker w{wcfg()};
    std::unique_ptr<LoadedSnapshot> snap = load(base_spec());
    uint32_t now = 1000;

    Verdict run(FrameBuf& fb) { return w.process(fb.f, snap.get(), now); }
    Verdict run(const std::vector<uint8_t>& frame, int* server = nullptr) {
        FrameBuf fb(frame);
        Verdict v = run(fb);
        if (server) *server = server_of(fb.f);
        return v;
    }
    uint64_t drops(Drop d) { return w.counters().drops[static_cast<unsigned>(d)].get(); }
};

PacketBuilder to_vip(uint16_t sport, uint8_t flags = tcpflag::kSyn) {
    PacketBuilder b;
    b.from("198.18.0.7", sport).to("198.18.1.1", 80).tcp(flags);
    return b;
}

}  // namespace

using Forward = Fixture;

TEST_F(Forward, NonVipTrafficGoesToTheKernel) {
    std::vector<uint8_t> arp(60, 0);
    arp[12] = 0x08;
    arp[13] = 0x06;
    EXPECT_EQ(run(arp).action, Action::to_kernel);
    PacketBuilder b;
    b.to("198.18.0.100", 22);
    EXPECT_EQ(run(b.build()).action, Action::to_kernel);
    // VRRP to its multicast group.
    PacketBuilder v;
    v.to("224.0.0.18");
    v.proto = ipproto::kVrrp;
    EXPECT_EQ(run(v.build()).action, Action::to_kernel);
    // Without a snapshot everything goes to the kernel.
    FrameBuf fb(to_vip(1).build());
    EXPECT_EQ(w.process(fb.f, nullptr, now).action, Action::to_kernel);
    EXPECT_EQ(w.counters().to_kernel.get(), 4u);
}

TEST_F(Forward, DsrForwardsAndPinsTheConnection) {
    int s1 = -1, s2 = -1, s3 = -1;
    FrameBuf fb(to_vip(40000).build());
    const auto before = fb.bytes();
    ASSERT_EQ(run(fb).action, Action::forward);
    s1 = server_of(fb.f);
    ASSERT_GE(s1, 0);
    ASSERT_LE(s1, 2);
    auto after = fb.bytes();
    EXPECT_EQ(0, std::memcmp(after.data() + 6, kOwn.bytes.data(), 6));
    EXPECT_TRUE(std::equal(after.begin() + 12, after.end(), before.begin() + 12));  // L3+ untouched
    EXPECT_EQ(run(to_vip(40000, tcpflag::kAck).build(), &s2).action, Action::forward);
    EXPECT_EQ(run(to_vip(40000, tcpflag::kAck | tcpflag::kPsh).build(), &s3).action, Action::forward);
    EXPECT_EQ(s1, s2);
    EXPECT_EQ(s1, s3);
    EXPECT_EQ(w.conns().size(), 1u);
    auto& sc = w.counters().servers[static_cast<size_t>(s1)];
    EXPECT_EQ(sc.packets.get(), 3u);
    EXPECT_EQ(sc.new_conns.get(), 1u);
    EXPECT_EQ(sc.active.get_signed(), 1);
    EXPECT_EQ(w.counters().services[1].packets.get(), 3u);
    EXPECT_EQ(w.counters().services[1].new_conns.get(), 1u);
}

TEST_F(Forward, ConnectionStateFollowsTcpFlags) {
    const auto k = [&] {
        Parsed p;
        auto f = to_vip(40001).build();
        parse_packet(f, p);
        return flow_key_of(p);
    }();
    const uint64_t h = Worker::conn_hash(k);
    run(to_vip(40001, tcpflag::kSyn).build());
    EXPECT_EQ(w.conns().state(w.conns().find(k, h, now)), ConnState::tcp_new);
    run(to_vip(40001, tcpflag::kAck).build());
    EXPECT_EQ(w.conns().state(w.conns().find(k, h, now)), ConnState::tcp_established);
    auto sum = [&](auto member) {
        int64_t t = 0;
        for (int i = 0; i < 3; ++i) t += (w.counters().servers[i].*member).get_signed();
        return t;
    };
    EXPECT_EQ(sum(&ServerCounters::active), 1);
    EXPECT_EQ(sum(&ServerCounters::inactive), 0);
    run(to_vip(40001, tcpflag::kFin | tcpflag::kAck).build());
    EXPECT_EQ(w.conns().state(w.conns().find(k, h, now)), ConnState::tcp_closing);
    EXPECT_EQ(sum(&ServerCounters::active), 0);  // closing connections count as inactive
    EXPECT_EQ(sum(&ServerCounters::inactive), 1);
    run(to_vip(40001, tcpflag::kAck).build());   // the last ACK of the close
    EXPECT_EQ(sum(&ServerCounters::inactive), 1);
    // The closing entry times out much sooner than an established one.
    now += w.conns().timeouts().tcp_closing;
    EXPECT_EQ(w.conns().find(k, h, now), ConnTable::kNone);
    EXPECT_EQ(sum(&ServerCounters::active), 0);
    EXPECT_EQ(sum(&ServerCounters::inactive), 0);
}

// Every flag set a stack may send, on an entry in each TCP state, through the fast lane
// (untagged) and the general parser (VLAN-tagged): the entry moves as the state machine says
// (tcp_next_state; a bare SYN on a closing entry is a new connection), and the servers'
// active and inactive gauges follow. UDP entries stay UDP.
TEST_F(Forward, EveryFlagSetMovesTheEntryAsTheStateMachineSays) {
    struct Start {
        std::vector<uint8_t> flags;  // the packets that bring a new flow's entry to `state`
        ConnState state;
    };
    const Start starts[] = {{{tcpflag::kSyn}, ConnState::tcp_new},
                            {{tcpflag::kAck}, ConnState::tcp_established},
                            {{tcpflag::kAck, tcpflag::kFin | tcpflag::kAck}, ConnState::tcp_closing}};
    const auto key_of = [](const PacketBuilder& b) {
        Parsed p;
        EXPECT_EQ(parse_packet(b.build(), p), Drop::none);
        return flow_key_of(p);
    };
    const auto state_now = [&](const FlowKey& k) {
        const uint32_t i = w.conns().find(k, Worker::conn_hash(k), now);
        return i == ConnTable::kNone ? ConnState::empty : w.conns().state(i);
    };
    const auto gauges_match_table = [&] {
        int64_t active = 0, inactive = 0, closing = 0, live = 0;
        for (int i = 0; i < 3; ++i) {
            active += w.counters().servers[i].active.get_signed();
            inactive += w.counters().servers[i].inactive.get_signed();
        }
        w.conns().for_each([&](const ConnEntry&, ConnState st, uint32_t) {
            ++live;
            closing += st == ConnState::tcp_closing;
        });
        return active == live - closing && inactive == closing;
    };
    uint16_t port = 20000;
    int checked = 0;
    for (const Start& st : starts) {
        for (unsigned flags = 0; flags < 64; ++flags) {
            if ((flags & 0x3F) == 0 || ((flags & tcpflag::kSyn) && (flags & (tcpflag::kFin | tcpflag::kRst))))
                continue;  // dropped before any look-up (tcp_bad_flags)
            for (const bool tagged : {false, true}) {
                auto b = to_vip(++port);
                const FlowKey k = key_of(b);
                for (const uint8_t f : st.flags) {
                    b.tcp(f);
                    ASSERT_EQ(run(b.build()).action, Action::forward);
                }
                ASSERT_EQ(state_now(k), st.state);
                b.tcp(static_cast<uint8_t>(flags));
                if (tagged) b.vlans = {42};
                ASSERT_EQ(run(b.build()).action, Action::forward) << flags;
                const bool reopen = st.state == ConnState::tcp_closing &&
                                    (flags & (tcpflag::kSyn | tcpflag::kAck)) == tcpflag::kSyn;
                const ConnState want =
                    reopen ? ConnState::tcp_new : tcp_next_state(st.state, static_cast<uint8_t>(flags));
                EXPECT_EQ(state_now(k), want) << "from " << int(st.state) << " flags " << flags << " tagged " << tagged;
                EXPECT_TRUE(gauges_match_table()) << "from " << int(st.state) << " flags " << flags;
                ++checked;
            }
        }
    }
    EXPECT_EQ(checked, 3 * 2 * 39);  // 64 flag sets less 25 no stack sends
    auto spec = base_spec();
    spec.services.push_back(service(2, "198.18.1.1", 53, FL_PROTO_UDP, {server(3, "198.18.2.4")}));
    snap = load(spec);
    for (const bool tagged : {false, true}) {
        PacketBuilder u;
        u.from("198.18.0.9", ++port).to("198.18.1.1", 53).udp();
        if (tagged) u.vlans = {42};
        const FlowKey k = key_of(u);
        for (int n = 0; n < 2; ++n) {
            ASSERT_EQ(run(u.build()).action, Action::forward);
            EXPECT_EQ(state_now(k), ConnState::udp) << n;
        }
    }
}

TEST_F(Forward, NoServiceAndNoServerAreCountedDrops) {
    PacketBuilder b;
    b.to("198.18.1.1", 81);
    EXPECT_EQ(run(b.build()).drop, Drop::no_service);
    b.to("198.18.1.1", 80).udp();
    EXPECT_EQ(run(b.build()).drop, Drop::no_service);
    auto spec = base_spec();
    for (auto& s : spec.services[0].servers) s.healthy = false;
    snap = load(spec);
    EXPECT_EQ(run(to_vip(1).build()).drop, Drop::no_server);
    EXPECT_EQ(drops(Drop::no_service), 2u);
    EXPECT_EQ(drops(Drop::no_server), 1u);
    EXPECT_EQ(w.counters().dropped.get(), 3u);
}

TEST_F(Forward, MalformedPacketsAreDroppedByReason) {
    auto f = to_vip(1).build();
    f.resize(30);
    EXPECT_EQ(run(f).drop, Drop::ipv4_truncated);
    PacketBuilder b = to_vip(1);
    b.bad_ip_checksum = true;
    EXPECT_EQ(run(b.build()).drop, Drop::ipv4_bad_checksum);
    EXPECT_EQ(drops(Drop::ipv4_truncated), 1u);
    EXPECT_EQ(drops(Drop::ipv4_bad_checksum), 1u);
}

TEST_F(Forward, ChecksumCheckSkippedOnlyForFramesTheNicVerified) {
    PacketBuilder b = to_vip(1);
    b.bad_ip_checksum = true;
    FrameBuf trusted(b.build());
    trusted.f.ipv4_csum_good = true;  // the NIC said good: the parser does not look again
    EXPECT_EQ(run(trusted).action, Action::forward);
    FrameBuf unknown(b.build());      // no verdict from the NIC: verified in software
    EXPECT_EQ(run(unknown).drop, Drop::ipv4_bad_checksum);
    EXPECT_EQ(drops(Drop::ipv4_bad_checksum), 1u);
}

TEST_F(Forward, MaglevSpreadsByWeight) {
    auto spec = base_spec();
    spec.services[0].servers[0].weight = 1;
    spec.services[0].servers[1].weight = 2;
    spec.services[0].servers[2].weight = 3;
    snap = load(spec);
    std::map<int, int> c;
    const int n = 30000;
    for (int i = 0; i < n; ++i) {
        PacketBuilder b = to_vip(static_cast<uint16_t>(i));
        b.src = IpAddr::v4(0xC6120000u + static_cast<uint32_t>(i >> 16) + 7);
        int s = -1;
        ASSERT_EQ(run(b.build(), &s).action, Action::forward);
        ++c[s];
    }
    EXPECT_NEAR(c[0], n / 6.0, n * 0.02);
    EXPECT_NEAR(c[1], n / 3.0, n * 0.02);
    EXPECT_NEAR(c[2], n / 2.0, n * 0.02);
}

TEST_F(Forward, WrrFollowsWeightsExactly) {
    auto spec = base_spec();
    spec.services[0].scheduler = Scheduler::wrr;
    spec.services[0].servers[0].weight = 1;
    spec.services[0].servers[1].weight = 2;
    spec.services[0].servers[2].weight = 3;
    snap = load(spec);
    std::map<int, int> c;
    for (int i = 0; i < 600; ++i) {
        int s = -1;
        ASSERT_EQ(run(to_vip(static_cast<uint16_t>(i)).build(), &s).action, Action::forward);
        ++c[s];
    }
    EXPECT_EQ(c[0], 100);
    EXPECT_EQ(c[1], 200);
    EXPECT_EQ(c[2], 300);
    // Connections stay pinned even though WRR moves on.
    int a = -1, b = -1;
    run(to_vip(5).build(), &a);
    run(to_vip(5, tcpflag::kAck).build(), &b);
    EXPECT_EQ(a, b);
}

TEST_F(Forward, BackupsServeOnlyWhenPrimariesAreDown) {
    auto spec = base_spec();
    spec.services[0].servers = {server(0, "198.18.2.1"), server(1, "198.18.2.2", 1, true)};
    snap = load(spec);
    for (int i = 0; i < 200; ++i) {
        int s = -1;
        run(to_vip(static_cast<uint16_t>(i)).build(), &s);
        EXPECT_EQ(s, 0);
    }
    spec.services[0].servers[0].healthy = false;
    snap = load(spec);
    for (int i = 1000; i < 1200; ++i) {
        int s = -1;
        run(to_vip(static_cast<uint16_t>(i)).build(), &s);
        EXPECT_EQ(s, 1);
    }
}

TEST_F(Forward, DrainKeepsExistingConnectionsAndMovesNewOnes) {
    // Open connections everywhere, then drain server 1.
    std::map<uint16_t, int> pinned;
    for (uint16_t p = 1; p <= 300; ++p) run(to_vip(p).build(), &pinned[p]);
    auto spec = base_spec();
    spec.services[0].servers[1].weight = 0;
    snap = load(spec);
    int on_drained = 0;
    for (auto [port, s] : pinned) {
        int now_s = -1;
        run(to_vip(port, tcpflag::kAck).build(), &now_s);
        EXPECT_EQ(now_s, s);
        on_drained += s == 1;
    }
    EXPECT_GT(on_drained, 0);
    for (uint16_t p = 1000; p < 1300; ++p) {
        int s = -1;
        run(to_vip(p).build(), &s);
        EXPECT_NE(s, 1);
    }
}

TEST_F(Forward, RetiredServerKeepsItsConnectionsAndRemovedOneIsReplaced) {
    std::map<uint16_t, int> pinned;
    for (uint16_t p = 1; p <= 200; ++p) run(to_vip(p).build(), &pinned[p]);
    auto spec = base_spec();
    spec.services[0].servers[2].retired = true;
    snap = load(spec);
    for (auto [port, s] : pinned) {
        int now_s = -1;
        run(to_vip(port, tcpflag::kAck).build(), &now_s);
        EXPECT_EQ(now_s, s);
    }
    // Slot 2 gone altogether (after the grace period): its flows move to live servers.
    spec.services[0].servers.pop_back();
    snap = load(spec);
    for (auto [port, s] : pinned) {
        int now_s = -1;
        ASSERT_EQ(run(to_vip(port, tcpflag::kAck).build(), &now_s).action, Action::forward);
        if (s != 2) {
            EXPECT_EQ(now_s, s);
        }
        EXPECT_NE(now_s, 2);
    }
}

// An entry leads only to the server it was made for: when its slot holds another server (a
// different tag) or a server of another service, the packet is a new connection.
TEST_F(Forward, EntryWhoseSlotHoldsAnotherServerIsANewConnection) {
    std::map<uint16_t, int> pinned;
    for (uint16_t p = 1; p <= 200; ++p) run(to_vip(p).build(), &pinned[p]);
    const auto on_slot2 = static_cast<uint64_t>(std::count_if(pinned.begin(), pinned.end(),
                                                              [](const auto& e) { return e.second == 2; }));
    ASSERT_GT(on_slot2, 0u);
    const uint64_t new_before = w.counters().services[1].new_conns.get();
    // Slot 2 reused at once by a different server: its tag differs, so the flows that were
    // on slot 2 are new connections (the others keep their entries).
    auto spec = base_spec();
    spec.services[0].servers[2] = server(2, "198.18.2.99");
    snap = load(spec);
    for (auto [port, s] : pinned) ASSERT_EQ(run(to_vip(port, tcpflag::kAck).build()).action, Action::forward);
    EXPECT_EQ(w.counters().services[1].new_conns.get() - new_before, on_slot2);
    // The same again is all established.
    for (auto [port, s] : pinned) run(to_vip(port, tcpflag::kAck).build());
    EXPECT_EQ(w.counters().services[1].new_conns.get() - new_before, on_slot2);
}

// The route table has every slot an entry may hold, whatever the snapshot's server count:
// the fast lane indexes it by an entry's slot without a bound check. An entry made for slot
// 200 under a larger snapshot is a new connection under one with three slots.
TEST_F(Forward, RouteTableHasEverySlotAnEntryMayHold) {
    const LoadedSnapshot::Route* routes = snap->routes();
    for (uint32_t slot = 0; slot < 3; ++slot) EXPECT_NE(routes[slot].admit, LoadedSnapshot::kNotAdmitted) << slot;
    size_t admitted_beyond = 0;
    for (uint32_t slot = 3; slot < LoadedSnapshot::kRouteSlots; ++slot)
        admitted_beyond += routes[slot].admit != LoadedSnapshot::kNotAdmitted;
    EXPECT_EQ(admitted_beyond, 0u);

    auto spec = base_spec();
    spec.services[0].servers = {server(200, "198.18.2.200")};
    snap = load(spec);
    int s = -1;
    ASSERT_EQ(run(to_vip(9).build(), &s).action, Action::forward);
    ASSERT_EQ(s, 200);
    snap = load(base_spec());
    const uint64_t new_before = w.counters().services[1].new_conns.get();
    ASSERT_EQ(run(to_vip(9, tcpflag::kAck).build(), &s).action, Action::forward);
    EXPECT_LT(s, 3);
    EXPECT_EQ(w.counters().services[1].new_conns.get() - new_before, 1u);
}

// A worker whose server counters are fewer than the snapshot's slots (a dataplane refuses
// such a snapshot: --max-servers) forwards alike through the general path, counting the
// slots it has: the fast lane, which counts by slot unchecked, is not taken (if it were, its
// count for slot 3 would trip its assertion, which the tests' builds keep).
TEST(ForwardCounters, SnapshotWithMoreSlotsThanCountersTakesTheGeneralPath) {
    auto spec = base_spec();
    spec.services[0].servers[2] = server(3, "198.18.2.3");
    auto snap = load(spec);
    WorkerConfig small = wcfg();
    small.max_servers = 2;
    Worker narrow(small), wide(wcfg());
    for (uint16_t p = 1; p <= 300; ++p)
        for (const uint8_t flags : {tcpflag::kSyn, tcpflag::kAck, static_cast<uint8_t>(tcpflag::kFin | tcpflag::kAck)}) {
            FrameBuf a(to_vip(p, flags).build()), b(to_vip(p, flags).build());
            const Verdict va = narrow.process(a.f, snap.get(), 1000), vb = wide.process(b.f, snap.get(), 1000);
            ASSERT_EQ(va.action, Action::forward) << p;
            ASSERT_EQ(vb.action, Action::forward) << p;
            ASSERT_EQ(a.bytes(), b.bytes()) << p;
        }
    EXPECT_EQ(narrow.counters().forwarded.get(), 900u);
    EXPECT_EQ(narrow.counters().services[1].packets.get(), 900u);
    for (uint32_t slot = 0; slot < 2; ++slot) {
        EXPECT_EQ(narrow.counters().servers[slot].packets.get(), wide.counters().servers[slot].packets.get()) << slot;
        EXPECT_EQ(narrow.counters().servers[slot].new_conns.get(), wide.counters().servers[slot].new_conns.get()) << slot;
    }
    EXPECT_GT(wide.counters().servers[3].packets.get(), 0u);  // slot 3 had traffic, counted by `wide` only
}

// process_burst's result, on which the adapter sends a burst without reading its verdicts:
// true exactly when every frame was forwarded with its start and length unchanged.
TEST_F(Forward, BurstResultSaysWhetherEveryFrameWasForwardedInPlace) {
    constexpr size_t kN = 32;
    auto burst = [&](const std::function<std::vector<uint8_t>(size_t)>& make, std::vector<Verdict>& out) {
        std::vector<FrameBuf> bufs;
        bufs.reserve(kN);
        std::vector<Frame> frames;
        for (size_t i = 0; i < kN; ++i) {
            bufs.emplace_back(make(i));
            frames.push_back(bufs.back().f);
        }
        out.assign(kN, Verdict{});
        const bool in_place = w.process_burst(frames, out.data(), snap.get(), now);
        for (size_t i = 0; in_place && i < kN; ++i) {
            EXPECT_EQ(frames[i].data, bufs[i].f.data) << i;
            EXPECT_EQ(frames[i].len, bufs[i].f.len) << i;
        }
        return in_place;
    };
    std::vector<Verdict> out;
    auto all_forwarded = [&] {
        return std::all_of(out.begin(), out.end(), [](const Verdict& v) { return v.action == Action::forward; });
    };
    // New DSR connections, then the same connections established.
    EXPECT_TRUE(burst([](size_t i) { return to_vip(static_cast<uint16_t>(100 + i)).build(); }, out));
    EXPECT_TRUE(all_forwarded());
    EXPECT_TRUE(burst([](size_t i) { return to_vip(static_cast<uint16_t>(100 + i), tcpflag::kAck).build(); }, out));
    EXPECT_TRUE(all_forwarded());
    // One frame for the kernel (not to a VIP): false, though the others are forwarded.
    EXPECT_FALSE(burst(
        [](size_t i) {
            PacketBuilder b;
            b.from("198.18.0.7", static_cast<uint16_t>(100 + i)).to(i == 17 ? "198.18.9.9" : "198.18.1.1", 80).tcp(tcpflag::kAck);
            return b.build();
        },
        out));
    EXPECT_EQ(out[17].action, Action::to_kernel);
    // Pass 1's service memo: frames without a service (a VIP's port without one, an address
    // that is no VIP) between and after frames of the service, repeated. Only the service's
    // frames are forwarded.
    EXPECT_FALSE(burst(
        [](size_t i) {
            PacketBuilder b;
            const char* dst = i % 8 == 5 ? "198.18.9.9" : "198.18.1.1";
            const uint16_t dport = i % 8 == 2 || i % 8 == 3 ? 81 : 80;
            b.from("198.18.0.7", static_cast<uint16_t>(100 + i)).to(dst, dport).tcp(tcpflag::kAck);
            return b.build();
        },
        out));
    for (size_t i = 0; i < kN; ++i) {
        const Action want = i % 8 == 2 || i % 8 == 3 ? Action::drop
                            : i % 8 == 5             ? Action::to_kernel
                                                     : Action::forward;
        EXPECT_EQ(out[i].action, want) << i;
        if (want == Action::drop) {
            EXPECT_EQ(drop_name(out[i].drop), drop_name(Drop::no_service)) << i;
        }
    }
    // One frame with flags no stack sends (SYN and FIN): dropped, false.
    EXPECT_FALSE(burst(
        [](size_t i) {
            return to_vip(static_cast<uint16_t>(100 + i),
                          i == 31 ? static_cast<uint8_t>(tcpflag::kSyn | tcpflag::kFin) : tcpflag::kAck)
                .build();
        },
        out));
    EXPECT_EQ(out[31].action, Action::drop);
    // Encapsulated forwards change the frames' start and length: false, all forwarded.
    auto spec = base_spec();
    spec.services[0].forwarding = Forwarding::ipip;
    snap = load(spec);
    EXPECT_FALSE(burst([](size_t i) { return to_vip(static_cast<uint16_t>(100 + i), tcpflag::kAck).build(); }, out));
    EXPECT_TRUE(all_forwarded());
    // A standby worker forwards nothing.
    snap = load(base_spec());
    w.set_active(false);
    EXPECT_FALSE(burst([](size_t i) { return to_vip(static_cast<uint16_t>(100 + i), tcpflag::kAck).build(); }, out));
}

TEST_F(Forward, SynOnAClosingEntryIsANewConnection) {
    auto spec = base_spec();
    spec.services[0].scheduler = Scheduler::wrr;  // successive picks differ
    snap = load(spec);
    int a = -1, b = -1;
    run(to_vip(7).build(), &a);
    run(to_vip(7, tcpflag::kFin | tcpflag::kAck).build());
    run(to_vip(7).build(), &b);  // port reuse after close
    EXPECT_NE(a, b);
    EXPECT_EQ(w.conns().size(), 1u);
}

TEST_F(Forward, FragmentsOfADatagramTakeOnePath) {
    auto spec = base_spec();
    spec.services.push_back(service(2, "198.18.1.1", 53, FL_PROTO_UDP,
                                    {server(10, "198.18.2.1"), server(11, "198.18.2.2"), server(12, "198.18.2.3")}));
    snap = load(spec);
    for (uint32_t i = 0; i < 50; ++i) {
        PacketBuilder b;
        b.from("198.18.0.7", 5000).to("198.18.1.1", 53).udp().with_payload(200);
        b.src = IpAddr::v4(0xC6120300u + i);  // 198.18.3.x: clients, not the VIP's 198.18.1.x
        b.df = false;
        b.more_fragments = true;
        int first = -1, later = -1;
        ASSERT_EQ(run(b.build(), &first).action, Action::forward);
        b.frag_offset = 208;
        b.more_fragments = false;
        ASSERT_EQ(run(b.build(), &later).action, Action::forward);
        EXPECT_EQ(first, later);
        EXPECT_GE(first, 10);
    }
    EXPECT_EQ(w.conns().size(), 0u);  // fragments are not tracked
    // Two UDP services on the VIP: later fragments are ambiguous.
    spec.services.push_back(service(3, "198.18.1.1", 54, FL_PROTO_UDP, {server(20, "198.18.2.1")}));
    snap = load(spec);
    PacketBuilder b;
    b.to("198.18.1.1", 53).udp().with_payload(100);
    b.df = false;
    b.frag_offset = 512;
    EXPECT_EQ(run(b.build()).drop, Drop::fragment_ambiguous);
}

TEST_F(Forward, EchoToVipIsAnswered) {
    PacketBuilder b;
    b.from("198.18.0.7").to("198.18.1.1").icmp_echo();
    FrameBuf fb(b.build());
    ASSERT_EQ(run(fb).action, Action::reply);
    Parsed p;
    ASSERT_EQ(parse_packet(fb.f.bytes(), p), Drop::none);
    EXPECT_EQ(p.icmp, IcmpKind::echo_reply);
    EXPECT_EQ(w.counters().replied.get(), 1u);
    PacketBuilder r;
    r.to("198.18.1.1").icmp_echo();
    r.icmp_type = 0;  // an echo reply to the VIP: not ours
    EXPECT_EQ(run(r.build()).drop, Drop::icmp_unsupported);
}

TEST_F(Forward, IcmpErrorGoesToTheServerOwningTheFlow) {
    std::map<uint16_t, int> pinned;
    for (uint16_t p = 100; p < 150; ++p) run(to_vip(p).build(), &pinned[p]);
    for (auto [port, s] : pinned) {
        PacketBuilder reply;  // what the server sent (DSR: from the VIP)
        reply.from("198.18.1.1", 80).to("198.18.0.7", port).tcp(tcpflag::kAck).with_payload(1400);
        PacketBuilder icmp;
        icmp.from("198.18.9.1").to("198.18.1.1");
        icmp.icmp_error(3, 4, 1400, reply.build_ip());
        int got = -1;
        ASSERT_EQ(run(icmp.build(), &got).action, Action::forward);
        EXPECT_EQ(got, s) << port;
    }
    // Quoting a flow of no service.
    PacketBuilder reply;
    reply.from("198.18.1.1", 8080).to("198.18.0.7", 1);
    PacketBuilder icmp;
    icmp.to("198.18.1.1").icmp_error(3, 4, 1400, reply.build_ip());
    EXPECT_EQ(run(icmp.build()).drop, Drop::icmp_no_flow);
}

TEST_F(Forward, Ipv6DsrAndNeighbourDiscovery) {
    auto spec = base_spec();
    spec.services.push_back(service(4, "2001:db8:1::1", 443, FL_PROTO_TCP,
                                    {server(30, "2001:db8:2::1"), server(31, "2001:db8:2::2")}));
    snap = load(spec);
    PacketBuilder b;
    b.src = ip("2001:db8::7");
    b.dst = ip("2001:db8:1::1");
    b.dport = 443;
    int s = -1;
    ASSERT_EQ(run(b.build(), &s).action, Action::forward);
    EXPECT_TRUE(s == 30 || s == 31);
    PacketBuilder ns;  // neighbour solicitation addressed to the VIP
    ns.src = ip("2001:db8::7");
    ns.dst = ip("2001:db8:1::1");
    ns.icmp_echo();
    ns.icmp_type = 135;
    EXPECT_EQ(run(ns.build()).action, Action::to_kernel);
}

TEST_F(Forward, IpipEncapsulatesAndHandlesMtu) {
    auto spec = base_spec();
    spec.services[0].forwarding = Forwarding::ipip;
    snap = load(spec);
    auto b = to_vip(9, tcpflag::kAck);
    b.with_payload(1000);
    FrameBuf fb(b.build());
    ASSERT_EQ(run(fb).action, Action::forward);
    Parsed p;
    ASSERT_EQ(parse_packet(fb.f.bytes(), p), Drop::none);
    EXPECT_EQ(p.l4_proto, ipproto::kIpip);
    EXPECT_EQ(p.dst[0], 198);
    EXPECT_EQ(p.dst[2], 2);
    EXPECT_EQ(p.src[2], 255);  // outer source from the configured prefix
    // Too big with DF: ICMP fragmentation needed back to the client, from the VIP.
    b.with_payload(1460);
    FrameBuf big(b.build());
    ASSERT_EQ(run(big).action, Action::reply);
    Parsed q;
    ASSERT_EQ(parse_packet(big.f.bytes(), q), Drop::none);
    EXPECT_EQ(q.icmp_type, 3);
    EXPECT_EQ(q.icmp_code, 4);
    EXPECT_EQ(q.icmp_mtu, 1480u);
    EXPECT_EQ(load_be32(q.dst), 0xC6120007u);
    EXPECT_EQ(w.counters().too_big_replies.get(), 1u);
    EXPECT_EQ(w.counters().replied.get(), 1u);
    EXPECT_EQ(drops(Drop::too_big), 0u);  // answered, not dropped
    // Too big without DF: forwarded for fragmentation.
    b.df = false;
    FrameBuf frag(b.build(), 4096);
    const uint32_t frame_len = frag.f.len;
    const WorkerCounters& c = w.counters();
    const uint64_t fwd = c.forwarded.get(), dropped = c.dropped.get();
    const Verdict v = run(frag);
    ASSERT_EQ(v.action, Action::forward_fragments);
    const uint32_t sid = v.service, slot = v.server;
    ASSERT_LT(slot, 3u);
    EXPECT_EQ(v.bytes, frame_len);  // counted as received, before encapsulation
    const uint64_t spk = c.services[sid].packets.get(), sby = c.services[sid].bytes.get();
    const uint64_t pk = c.servers[slot].packets.get(), by = c.servers[slot].bytes.get();
    // An adapter that cannot send the fragments takes every count back and records a drop.
    w.uncount_forward(v, Drop::alloc_failed);
    EXPECT_EQ(c.forwarded.get(), fwd);
    EXPECT_EQ(c.dropped.get(), dropped + 1);
    EXPECT_EQ(drops(Drop::alloc_failed), 1u);
    EXPECT_EQ(c.services[sid].packets.get(), spk - 1);
    EXPECT_EQ(c.services[sid].bytes.get(), sby - frame_len);
    EXPECT_EQ(c.servers[slot].packets.get(), pk - 1);
    EXPECT_EQ(c.servers[slot].bytes.get(), by - frame_len);
}

// An IPv4 packet near the largest (65535 bytes) without DF: the encapsulated packet's length
// would not fit the outer header's field, so it is dropped as too big rather than forwarded
// for fragmentation with a wrong length (and its TOS overwritten by the carry). One that fits
// is forwarded for fragmentation with the outer length and the inner TOS intact.
TEST_F(Forward, TunnelDropsAPacketNoOuterHeaderCanCarry) {
    for (const Forwarding fwd : {Forwarding::ipip, Forwarding::gue}) {
        auto spec = base_spec();
        spec.services[0].forwarding = fwd;
        snap = load(spec);
        const uint32_t oh = fwd == Forwarding::gue ? 28 : 20;
        // The last: the largest in a frame of 65535 bytes.
        for (const uint32_t l3 : {65535 - oh, 65535 - oh + 1, 65535u - 14}) {
            auto b = to_vip(11, tcpflag::kAck);
            b.df = false;
            b.tos = 0xB8;
            b.with_payload(l3 - 40);  // 40: IPv4 and TCP headers
            FrameBuf fb(b.build(), 70000);
            ASSERT_EQ(load_be16(fb.f.data + 16), l3);
            const uint64_t too_big = drops(Drop::too_big);
            const Verdict v = run(fb);
            if (l3 + oh > 65535) {
                EXPECT_EQ(v.action, Action::drop) << l3;
                EXPECT_EQ(drops(Drop::too_big), too_big + 1) << l3;
            } else {
                ASSERT_EQ(v.action, Action::forward_fragments) << l3;
                const uint8_t* outer = fb.f.data + v.l3_off;
                EXPECT_EQ(load_be16(outer + 2), 65535u);
                EXPECT_EQ(outer[1], 0xB8);
                EXPECT_EQ(outer[0], 0x45);
                EXPECT_TRUE(ipv4_header_checksum_ok(outer, 20));
            }
        }
    }
}

TEST_F(Forward, ActiveGaugeTracksEvictionAndExpiry) {
    for (uint16_t p = 1; p <= 100; ++p) run(to_vip(p, tcpflag::kAck).build());
    int64_t active = 0;
    for (int s = 0; s < 3; ++s) active += w.counters().servers[s].active.get_signed();
    EXPECT_EQ(active, 100);
    w.idle(now + w.conns().timeouts().tcp_established, 1 << 20);
    active = 0;
    for (int s = 0; s < 3; ++s) active += w.counters().servers[s].active.get_signed();
    EXPECT_EQ(active, 0);
}

TEST_F(Forward, NewHashSeedKeepsEstablishedConnections) {
    std::map<uint16_t, int> pinned;
    for (uint16_t p = 1; p <= 300; ++p) run(to_vip(p).build(), &pinned[p]);
    auto spec = base_spec();
    spec.hash_seed = 999999;  // re-deals the Maglev tables
    snap = load(spec);
    int moved_new = 0;
    for (auto [port, s] : pinned) {
        int now_s = -1;
        run(to_vip(port, tcpflag::kAck).build(), &now_s);
        EXPECT_EQ(now_s, s) << "established connection moved on a seed change";
    }
    // ...while the same ports as brand-new flows now follow the new table somewhere else.
    for (uint16_t p = 1; p <= 300; ++p) {
        int a = -1;
        PacketBuilder b = to_vip(p);
        b.src = ip("198.18.0.8");
        run(b.build(), &a);
        moved_new += a != pinned[p];
    }
    EXPECT_GT(moved_new, 0);
    EXPECT_EQ(w.conns().size(), 600u);
}

TEST_F(Forward, FinOrRstWithoutAConnectionIsForwardedButNotRemembered) {
    int s = -1;
    ASSERT_EQ(run(to_vip(77, tcpflag::kRst).build(), &s).action, Action::forward);
    EXPECT_GE(s, 0);
    ASSERT_EQ(run(to_vip(78, tcpflag::kFin | tcpflag::kAck).build()).action, Action::forward);
    EXPECT_EQ(w.conns().size(), 0u);
}

TEST_F(Forward, ServerWithoutMacIsNotUsedForExistingConnections) {
    std::map<uint16_t, int> pinned;
    for (uint16_t p = 1; p <= 100; ++p) run(to_vip(p).build(), &pinned[p]);
    auto spec = base_spec();
    spec.services[0].servers[0].mac = MacAddr{};  // neighbour entry lost, no MAC known
    spec.services[0].servers[0].healthy = false;
    snap = load(spec);
    for (auto [port, s] : pinned) {
        int now_s = -1;
        ASSERT_EQ(run(to_vip(port, tcpflag::kAck).build(), &now_s).action, Action::forward);
        EXPECT_NE(now_s, 0);
        if (s != 0) {
            EXPECT_EQ(now_s, s);
        }
    }
}

TEST_F(Forward, OuterIpIdOnlyForFragmentableDatagrams) {
    auto spec = base_spec();
    spec.services[0].forwarding = Forwarding::ipip;
    snap = load(spec);
    auto b = to_vip(9, tcpflag::kAck);
    FrameBuf df(b.build());
    ASSERT_EQ(run(df).action, Action::forward);
    EXPECT_EQ(load_be16(df.f.data + 14 + 4), 0);  // DF set: an atomic datagram
    b.df = false;
    FrameBuf a(b.build()), c(b.build());
    run(a);
    run(c);
    EXPECT_NE(load_be16(a.f.data + 14 + 4), load_be16(c.f.data + 14 + 4));
}

// ---- Edge filtering (docs/architecture.md, "Edge filtering") ------------------------------

namespace {

// VIPs: 198.18.1.1 (TCP 80 and UDP 53, DSR), 198.18.1.2 (TCP 80, IPIP), 2001:db8:1::1 (TCP 80,
// DSR), 2001:db8:1::2 (TCP 80, IPv6-in-IPv6).
SnapshotSpec edge_spec() {
    auto spec = base_spec();
    spec.services.push_back(service(2, "198.18.1.1", 53, FL_PROTO_UDP, {server(10, "198.18.2.1")}));
    spec.services.push_back(service(3, "198.18.1.2", 80, FL_PROTO_TCP, {server(20, "198.18.3.1")},
                                    Scheduler::maglev, Forwarding::ipip));
    spec.services.push_back(
        service(4, "2001:db8:1::1", 80, FL_PROTO_TCP, {server(30, "2001:db8:2::1")}));
    spec.services.push_back(service(5, "2001:db8:1::2", 80, FL_PROTO_TCP,
                                    {server(40, "2001:db8:3::1")}, Scheduler::maglev,
                                    Forwarding::ipip));
    return spec;
}

const std::string kVip4 = "198.18.1.1", kTunnel4 = "198.18.1.2";
const std::string kVip6 = "2001:db8:1::1", kTunnel6 = "2001:db8:1::2";
const std::string kClient4 = "198.18.0.7", kClient6 = "2001:db8::7";

PacketBuilder tcp_to(const std::string& src, const std::string& dst,
                     uint8_t flags = tcpflag::kSyn) {
    PacketBuilder b;
    b.from(src, 40000).to(dst, 80).tcp(flags);
    return b;
}

PacketBuilder echo_to(const std::string& src, const std::string& dst) {
    PacketBuilder b;
    b.src = ip(src);
    b.dst = ip(dst);
    b.icmp_echo(9, 1).with_payload(32);
    return b;
}

// A client's DF packet that is too big for the tunnel to `tunnel` once encapsulated: it draws
// a fragmentation-needed / packet-too-big reply toward `src`.
PacketBuilder too_big_to(const std::string& src, const std::string& tunnel) {
    PacketBuilder b = tcp_to(src, tunnel);
    b.with_payload(ip(src).is_v6() ? 1440 : 1460);  // 1500-byte IP packet
    return b;
}

// Fragmentation needed (IPv4) / packet too big (IPv6) from a router, about the server's DSR
// reply VIP:80 -> client:40000, advertising `mtu`.
PacketBuilder mtu_error(const std::string& vip, uint32_t mtu) {
    const bool v6 = ip(vip).is_v6();
    PacketBuilder reply;
    reply.from(vip, 80).to(v6 ? kClient6 : kClient4, 40000).tcp(tcpflag::kAck).with_payload(1200);
    auto quoted = reply.build_ip();
    quoted.resize(v6 ? 200 : 28);
    PacketBuilder b;
    b.src = ip(v6 ? "2001:db8:9::1" : "198.18.9.1");
    b.dst = ip(vip);
    b.icmp_error(v6 ? 2 : 3, v6 ? 0 : 4, mtu, quoted);
    return b;
}

// Tweaks for the case table.
PacketBuilder ttl(PacketBuilder b, uint8_t t) {
    b.ttl = t;
    return b;
}
PacketBuilder udp53(PacketBuilder b) {
    b.udp();
    b.dport = 53;
    return b;
}
PacketBuilder first_fragment(PacketBuilder b) {
    b.df = false;
    b.more_fragments = true;
    b.with_payload(64);
    return b;
}
PacketBuilder later_fragment(PacketBuilder b) {
    b.df = false;
    b.frag_offset = 1480;
    return b;
}
PacketBuilder options(PacketBuilder b, std::vector<uint8_t> o) {
    b.ipv4_options = std::move(o);
    return b;
}
PacketBuilder icmp_code(PacketBuilder b, uint8_t code) {
    b.icmp_code = code;
    return b;
}

struct EdgeCase {
    std::string what;
    PacketBuilder pkt;
    Action action;
    Drop drop;  // Drop::none unless action is drop
};

// Every filtered case next to the closest case that passes, so the table also shows where
// each filter stops.
std::vector<EdgeCase> edge_cases() {
    using A = Action;
    using D = Drop;
    const int syn = tcpflag::kSyn, fin = tcpflag::kFin, rst = tcpflag::kRst, ack = tcpflag::kAck;
    const std::string host4 = "198.18.0.100", host6 = "2001:db8::100";  // not VIPs
    std::vector<EdgeCase> c = {
        // clang-format off
        // TTL / hop limit: 0 never exists on the wire. No mode decrements it, so 1 passes.
        {"IPv4 TTL 0",                   ttl(tcp_to(kClient4, kVip4), 0),      A::drop,    D::ttl_exceeded},
        {"IPv4 TTL 1, DSR",              ttl(tcp_to(kClient4, kVip4), 1),      A::forward, D::none},
        {"IPv4 TTL 1, IPIP",             ttl(tcp_to(kClient4, kTunnel4), 1),   A::forward, D::none},
        {"IPv6 hop limit 0",             ttl(tcp_to(kClient6, kVip6), 0),      A::drop,    D::ttl_exceeded},
        {"IPv6 hop limit 1",             ttl(tcp_to(kClient6, kVip6), 1),      A::forward, D::none},
        {"UDP TTL 0",                    ttl(udp53(tcp_to(kClient4, kVip4)), 0), A::drop,  D::ttl_exceeded},
        {"echo TTL 0",                   ttl(echo_to(kClient4, kVip4), 0),     A::drop,    D::ttl_exceeded},
        // Martian sources (more below, in a loop).
        {"UDP from 255.255.255.255",     udp53(tcp_to("255.255.255.255", kVip4)), A::drop, D::martian_source},
        {"later fragment from 127.0.0.1", later_fragment(tcp_to("127.0.0.1", kVip4)), A::drop, D::martian_source},
        {"from 1.0.0.1 (not 0/8)",       tcp_to("1.0.0.1", kVip4),             A::forward, D::none},
        {"from 126.255.255.255",         tcp_to("126.255.255.255", kVip4),     A::forward, D::none},
        {"from 223.255.255.254",         tcp_to("223.255.255.254", kVip4),     A::forward, D::none},
        {"from 169.254.1.1 (link-local)", tcp_to("169.254.1.1", kVip4),        A::forward, D::none},
        {"from ::2",                     tcp_to("::2", kVip6),                 A::forward, D::none},
        {"from fe80::1 (link-local)",    tcp_to("fe80::1", kVip6),             A::forward, D::none},
        {"from fe00::1 (not ff00::/8)",  tcp_to("fe00::1", kVip6),             A::forward, D::none},
        // Source = a VIP (this one or another), by every path that creates state or a reply.
        {"SYN from its own VIP",         tcp_to(kVip4, kVip4),                 A::drop,    D::vip_source},
        {"SYN from another VIP",         tcp_to(kTunnel4, kVip4),              A::drop,    D::vip_source},
        {"ACK (no entry) from a VIP",    tcp_to(kTunnel4, kVip4, ack),         A::drop,    D::vip_source},
        {"RST (no entry) from a VIP",    tcp_to(kTunnel4, kVip4, rst),         A::drop,    D::vip_source},
        {"UDP from a VIP",               udp53(tcp_to(kVip4, kVip4)),          A::drop,    D::vip_source},
        {"later fragment from a VIP",    later_fragment(tcp_to(kTunnel4, kVip4)), A::drop, D::vip_source},
        {"echo from a VIP",              echo_to(kTunnel4, kVip4),             A::drop,    D::vip_source},
        {"IPv6 SYN from its own VIP",    tcp_to(kVip6, kVip6),                 A::drop,    D::vip_source},
        {"IPv6 SYN from another VIP",    tcp_to(kTunnel6, kVip6),              A::drop,    D::vip_source},
        {"SYN from a VIP's neighbour",   tcp_to("198.18.1.3", kVip4),          A::forward, D::none},
        // TCP flag sets no stack sends (more below, in a loop).
        {"IPv6 SYN+FIN",                 tcp_to(kClient6, kVip6, syn | fin),   A::drop,    D::tcp_bad_flags},
        {"first fragment SYN+FIN",       first_fragment(tcp_to(kClient4, kVip4, syn | fin)), A::drop, D::tcp_bad_flags},
        {"later fragment (no TCP header)", later_fragment(tcp_to(kClient4, kVip4)), A::forward, D::none},
        // Malformed IPv4 options: a parse error, whatever the destination.
        {"option past the header, to a VIP", options(tcp_to(kClient4, kVip4), {7, 11, 4, 0, 0, 0, 0, 0}), A::drop, D::ipv4_bad_options},
        {"option length 0, to the host", options(tcp_to(kClient4, host4), {7, 0, 0, 0}), A::drop, D::ipv4_bad_options},
        {"router alert option",          options(tcp_to(kClient4, kVip4), {0x94, 4, 0, 0}), A::forward, D::none},
        // Fragmentation needed / packet too big below the family's minimum MTU.
        {"frag needed MTU 0",            mtu_error(kVip4, 0),                  A::drop,    D::icmp_bad_mtu},
        {"frag needed MTU 67",           mtu_error(kVip4, 67),                 A::drop,    D::icmp_bad_mtu},
        {"frag needed MTU 68",           mtu_error(kVip4, 68),                 A::forward, D::none},
        {"packet too big MTU 0",         mtu_error(kVip6, 0),                  A::drop,    D::icmp_bad_mtu},
        {"packet too big MTU 1279",      mtu_error(kVip6, 1279),               A::drop,    D::icmp_bad_mtu},
        {"packet too big MTU 1280",      mtu_error(kVip6, 1280),               A::forward, D::none},
        {"port unreachable (no MTU)",    icmp_code(mtu_error(kVip4, 0), 3),    A::forward, D::none},
        // Not VIP traffic: the kernel's business, passed on untouched.
        {"to the host from 127.0.0.1",   tcp_to("127.0.0.1", host4),           A::to_kernel, D::none},
        {"to the host with TTL 0",       ttl(tcp_to(kClient4, host4), 0),      A::to_kernel, D::none},
        {"to the host with SYN+FIN",     tcp_to(kClient4, host4, syn | fin),   A::to_kernel, D::none},
        {"to the host from a VIP",       tcp_to(kVip4, host4),                 A::to_kernel, D::none},
        {"IPv6 to the host from ::",     tcp_to("::", host6),                  A::to_kernel, D::none},
        // clang-format on
    };
    for (const char* src : {"0.0.0.0", "0.1.2.3", "127.0.0.1", "127.9.9.9", "224.0.0.1",
                            "239.255.255.250", "240.0.0.1", "255.255.255.255"})
        c.push_back({std::string("from ") + src, tcp_to(src, kVip4), A::drop, D::martian_source});
    for (const char* src : {"::", "::1", "ff02::1", "ff05::1:3", "ff0e::1"})
        c.push_back({std::string("from ") + src, tcp_to(src, kVip6), A::drop, D::martian_source});
    // Flag sets no stack sends: none (also with only ECE/CWR), SYN with FIN or RST, all.
    for (int flags : {0, 0xC0, syn | fin, syn | rst, syn | fin | ack, syn | rst | ack, 0x3F, 0xFF})
        c.push_back({"TCP flags " + std::to_string(flags),
                     tcp_to(kClient4, kVip4, static_cast<uint8_t>(flags)), A::drop,
                     D::tcp_bad_flags});
    // ... and the ones real stacks send (SYN with ECE+CWR negotiates ECN).
    for (int flags : {syn, syn | ack, ack, fin | ack, rst, rst | ack, syn | 0xC0})
        c.push_back({"TCP flags " + std::to_string(flags) + " pass",
                     tcp_to(kClient4, kVip4, static_cast<uint8_t>(flags)), A::forward, D::none});
    return c;
}

}  // namespace

// The fast lane (untagged IPv4 TCP/UDP without options, keyed and hashed from the frame's
// words) and the general parser's path (VLAN tags, IPv4 options) must find the same
// connection entry: a flow may switch between them mid-connection.
TEST_F(Forward, FastLaneAndGeneralParserShareConnections) {
    auto spec = base_spec();
    spec.services.push_back(service(2, "198.18.1.1", 53, FL_PROTO_UDP, {server(3, "198.18.2.4"), server(4, "198.18.2.5")}));
    snap = load(spec);
    auto tagged = [](PacketBuilder b) {
        b.vlans = {100};
        return b;
    };
    auto with_options = [](PacketBuilder b) {
        b.ipv4_options = {1, 1, 1, 0};  // NOP NOP NOP EOL
        return b;
    };
    for (int order = 0; order < 2; ++order) {
        for (uint16_t port = 41000; port < 41064; ++port) {
            const uint16_t sport = static_cast<uint16_t>(port + order * 100);
            // Opened on one path, continued on the other and back.
            PacketBuilder syn = to_vip(sport);
            int first = -1, second = -1, third = -1;
            ASSERT_EQ(run((order ? tagged(syn) : syn).build(), &first).action, Action::forward);
            PacketBuilder ack = to_vip(sport, tcpflag::kAck);
            ASSERT_EQ(run((order ? ack : with_options(ack)).build(), &second).action, Action::forward);
            ASSERT_EQ(run((order ? tagged(ack) : ack).build(), &third).action, Action::forward);
            EXPECT_EQ(first, second);
            EXPECT_EQ(first, third);
            PacketBuilder u;
            u.from("198.18.0.9", sport).to("198.18.1.1", 53).udp();
            int a = -1, b = -1;
            ASSERT_EQ(run((order ? u : tagged(u)).build(), &a).action, Action::forward);
            ASSERT_EQ(run((order ? with_options(u) : u).build(), &b).action, Action::forward);
            EXPECT_EQ(a, b);
        }
    }
    // One entry per flow: the later packets found the first one's entry on either path.
    EXPECT_EQ(w.conns().size(), 4u * 64);
    EXPECT_EQ(w.counters().services[1].new_conns.get(), 128u);
    EXPECT_EQ(w.counters().services[2].new_conns.get(), 128u);
    EXPECT_EQ(w.counters().services[1].packets.get(), 3u * 128);
    EXPECT_EQ(w.counters().services[2].packets.get(), 2u * 128);
}

// The fast lane encapsulates an established flow's packets itself (without a Parsed record);
// the general parser's path goes through send_to_server. Both must write the same packet: the
// same frames, untagged (fast lane) and VLAN-tagged (general path), through two workers.
TEST_F(Forward, FastLaneEncapsulationMatchesTheGeneralPath) {
    for (const uint16_t snap_mtu : {uint16_t{0}, uint16_t{1400}}) {
        auto spec = base_spec();
        spec.mtu = snap_mtu;
        spec.services[0].forwarding = Forwarding::ipip;
        spec.services.push_back(service(2, "198.18.1.1", 443, FL_PROTO_TCP, {server(3, "198.18.2.4"), server(4, "198.18.2.5")},
                                        Scheduler::maglev, Forwarding::gue));
        snap = load(spec);
        Worker fast{wcfg()}, general{wcfg()};
        std::mt19937 rng(5 + snap_mtu);
        int forwards = 0, fragmented = 0;
        for (int n = 0; n < 600; ++n) {
            PacketBuilder b;
            b.from("198.18.0." + std::to_string(1 + rng() % 50), static_cast<uint16_t>(30000 + rng() % 40))
                .to("198.18.1.1", rng() % 2 ? 80 : 443)
                .tcp(rng() % 4 ? tcpflag::kAck : tcpflag::kSyn);
            b.df = rng() % 3 != 0;
            b.tos = static_cast<uint8_t>(rng());
            b.ttl = static_cast<uint8_t>(1 + rng() % 255);
            // Small, large, and every size at an edge: the largest inner packet that IPIP (20
            // bytes more) or GUE (28) sends whole under either MTU, and one byte more.
            static constexpr uint16_t kEdges[] = {1480, 1472, 1380, 1372};
            const uint32_t pick = rng() % 4;
            b.with_payload(pick == 0   ? rng() % 100
                           : pick == 1 ? 1300 + rng() % 200
                                       : kEdges[rng() % 4] - 40 + rng() % 2);  // 40: IPv4 + TCP
            FrameBuf a(b.build(), 4096);
            b.vlans = {42};
            FrameBuf t(b.build(), 4096);
            const Verdict va = fast.process(a.f, snap.get(), now);
            const Verdict vt = general.process(t.f, snap.get(), now);
            ASSERT_EQ(static_cast<int>(va.action), static_cast<int>(vt.action)) << n;
            ASSERT_EQ(static_cast<int>(va.drop), static_cast<int>(vt.drop)) << n;
            if (va.action != Action::forward && va.action != Action::forward_fragments) continue;
            ++(va.action == Action::forward ? forwards : fragmented);
            // Equal but for the tag: MACs, then everything after the (inner) ethertype.
            ASSERT_EQ(a.f.len + 4, t.f.len) << n;
            ASSERT_EQ(0, std::memcmp(a.f.data, t.f.data, 12)) << n;
            ASSERT_EQ(0, std::memcmp(a.f.data + 12, t.f.data + 16, a.f.len - 12)) << n;
            if (va.action == Action::forward_fragments) {  // what the adapter fragments with
                ASSERT_EQ(va.l3_off + 4, vt.l3_off) << n;
                ASSERT_EQ(va.mtu, vt.mtu) << n;
                ASSERT_EQ(va.bytes + 4, vt.bytes) << n;
            }
        }
        EXPECT_GT(forwards, 200);
        EXPECT_GT(fragmented, 20);
        EXPECT_EQ(fast.counters().forwarded.get(), general.counters().forwarded.get());
        EXPECT_EQ(fast.counters().replied.get(), general.counters().replied.get());
        EXPECT_GT(fast.counters().replied.get(), 0u);
        for (uint32_t sv = 0; sv < 5; ++sv)
            EXPECT_EQ(fast.counters().servers[sv].packets.get(), general.counters().servers[sv].packets.get()) << sv;
    }
}

// A burst is decided as its frames one at a time would be: flows that open, continue and
// close inside one burst (hints taken before earlier frames changed the table), frames for
// several services in runs and interleaved, frames for a VIP's port without a service and for
// an address that is no VIP among them (pass 1's service memo), the general parser's frames
// among them.
// A worker given bursts and one given the same packets one at a time decide alike: verdicts,
// frames, counters and connections. `capacity` connections, `ports` source ports per client
// (3 clients), `syn_share` in 6 packets a bare SYN, the clock advancing up to `max_step` ms
// between bursts.
static void expect_bursts_as_single_packets(LoadedSnapshot* snap, uint32_t now, uint32_t capacity, uint32_t ports,
                                            uint32_t syn_share, uint32_t max_step, int bursts) {
    WorkerConfig cfg = wcfg();
    cfg.conn_capacity = capacity;
    Worker w{cfg}, single{cfg};
    std::mt19937 rng(11);
    const uint8_t flags[] = {tcpflag::kSyn, tcpflag::kAck, tcpflag::kAck | tcpflag::kPsh, tcpflag::kFin | tcpflag::kAck,
                             tcpflag::kRst, tcpflag::kSyn | tcpflag::kFin};
    for (int burst = 0; burst < bursts; ++burst) {
        std::vector<FrameBuf> a, b;
        for (int i = 0; i < 32; ++i) {
            PacketBuilder p;
            const char* dst = rng() % 4 ? "198.18.1.1" : rng() % 4 ? "198.18.1.2" : "198.18.9.9";
            const uint16_t dport = rng() % 8 ? 80 : 81;
            p.from("198.18.0." + std::to_string(1 + rng() % 3), static_cast<uint16_t>(20000 + rng() % ports))
                .to(dst, dport)
                .tcp(rng() % 6 < syn_share ? tcpflag::kSyn : flags[rng() % 6]);
            if (rng() % 10 == 0) p.vlans = {7};
            if (rng() % 20 == 0) p.ttl = 0;
            a.emplace_back(p.build());
            b.emplace_back(p.build());
        }
        std::vector<Frame> frames;
        for (auto& fb : a) frames.push_back(fb.f);
        Verdict out[32];
        now += static_cast<uint32_t>(rng() % (max_step + 1));
        w.process_burst(frames, out, snap, now);
        for (int i = 0; i < 32; ++i) {
            const Verdict v = single.process(b[static_cast<size_t>(i)].f, snap, now);
            ASSERT_EQ(static_cast<int>(out[i].action), static_cast<int>(v.action)) << "burst " << burst << " frame " << i;
            ASSERT_EQ(static_cast<int>(out[i].drop), static_cast<int>(v.drop)) << "burst " << burst << " frame " << i;
            ASSERT_EQ(frames[static_cast<size_t>(i)].len, b[static_cast<size_t>(i)].f.len);
            ASSERT_EQ(0, std::memcmp(frames[static_cast<size_t>(i)].data, b[static_cast<size_t>(i)].f.data, b[static_cast<size_t>(i)].f.len))
                << "burst " << burst << " frame " << i;
        }
    }
    const WorkerCounters& x = w.counters();
    const WorkerCounters& y = single.counters();
    EXPECT_EQ(x.rx.get(), y.rx.get());
    EXPECT_EQ(x.forwarded.get(), y.forwarded.get());
    EXPECT_EQ(x.dropped.get(), y.dropped.get());
    EXPECT_GT(x.forwarded.get(), 0u);
    for (unsigned d = 0; d < kDropReasons; ++d) EXPECT_EQ(x.drops[d].get(), y.drops[d].get()) << d;
    for (uint32_t s = 0; s < 3; ++s) {
        EXPECT_EQ(x.services[s].packets.get(), y.services[s].packets.get()) << s;
        EXPECT_EQ(x.services[s].bytes.get(), y.services[s].bytes.get()) << s;
        EXPECT_EQ(x.services[s].new_conns.get(), y.services[s].new_conns.get()) << s;
    }
    for (uint32_t s = 0; s < 5; ++s) {
        EXPECT_EQ(x.servers[s].packets.get(), y.servers[s].packets.get()) << s;
        EXPECT_EQ(x.servers[s].active.get(), y.servers[s].active.get()) << s;
        EXPECT_EQ(x.servers[s].inactive.get(), y.servers[s].inactive.get()) << s;
        EXPECT_EQ(x.servers[s].new_conns.get(), y.servers[s].new_conns.get()) << s;
    }
    EXPECT_EQ(w.conns().size(), single.conns().size());
    const ConnTableStats &cx = w.conns().stats(), &cy = single.conns().stats();
    EXPECT_EQ(cx.inserts.get(), cy.inserts.get());
    EXPECT_EQ(cx.evictions.get(), cy.evictions.get());
    EXPECT_EQ(cx.full.get(), cy.full.get());
    if (capacity < 1024) {
        EXPECT_GT(cx.evictions.get(), static_cast<uint64_t>(bursts) * 2);
    }
}

TEST_F(Forward, BurstsDecideAsSinglePacketsDo) {
    auto spec = base_spec();
    spec.services.push_back(service(2, "198.18.1.2", 80, FL_PROTO_TCP, {server(3, "198.18.2.4"), server(4, "198.18.2.5")}));
    snap = load(spec);
    expect_bursts_as_single_packets(snap.get(), now, 1 << 16, 24, 0, 2999, 300);
}

// The same with a table too small for the flows, mostly SYNs: nearly every new connection
// replaces one, and a burst's new connections share buckets (pass 1b's victim hints, which
// earlier packets of the burst outdate).
TEST_F(Forward, BurstsOfNewConnectionsInAFullTableDecideAsSinglePacketsDo) {
    auto spec = base_spec();
    spec.services.push_back(service(2, "198.18.1.2", 80, FL_PROTO_TCP, {server(3, "198.18.2.4"), server(4, "198.18.2.5")}));
    snap = load(spec);
    expect_bursts_as_single_packets(snap.get(), now, 64, 4000, 4, 2, 2000);
}

TEST(EdgeFilter, EachCaseHasItsVerdictAndReason) {
    auto snap = load(edge_spec());
    for (const EdgeCase& c : edge_cases()) {
        SCOPED_TRACE(c.what);
        Worker w(wcfg());
        const auto frame = c.pkt.build();
        FrameBuf fb(frame);
        const Verdict v = w.process(fb.f, snap.get(), 1000);
        EXPECT_EQ(v.action, c.action);
        EXPECT_EQ(drop_name(v.drop), drop_name(c.drop));
        const WorkerCounters& k = w.counters();
        EXPECT_EQ(k.rx.get(), 1u);
        EXPECT_EQ(k.forwarded.get() + k.replied.get() + k.to_kernel.get() + k.dropped.get(), 1u);
        if (c.action == Action::drop) {
            EXPECT_EQ(k.drops[static_cast<unsigned>(c.drop)].get(), 1u);
            EXPECT_EQ(w.conns().size(), 0u) << "a dropped packet created a connection entry";
        }
        if (c.action == Action::to_kernel) {
            EXPECT_EQ(fb.bytes(), frame) << "frames for the kernel go unchanged";
        }
    }
}

TEST(EdgeFilter, TtlOneKeepsItsTtlThroughEveryMode) {
    // No mode decrements the TTL: DSR rewrites MACs only, encapsulation adds an outer header
    // with its own TTL and leaves the inner one as the client sent it.
    Worker w(wcfg());
    auto snap = load(edge_spec());
    for (const std::string& vip : {kVip4, kTunnel4, kVip6, kTunnel6}) {
        PacketBuilder b = tcp_to(ip(vip).is_v6() ? kClient6 : kClient4, vip);
        b.ttl = 1;
        FrameBuf fb(b.build());
        ASSERT_EQ(w.process(fb.f, snap.get(), 1000).action, Action::forward) << vip;
        Parsed p;
        ASSERT_EQ(parse_packet(fb.f.bytes(), p), Drop::none);
        const bool encap = vip == kTunnel4 || vip == kTunnel6;
        if (!encap) {
            EXPECT_EQ(p.ttl, 1) << vip;
            continue;
        }
        EXPECT_EQ(p.ttl, 64) << vip << ": outer TTL";
        const uint8_t* inner = fb.f.data + p.l4_off;
        EXPECT_EQ(ip(vip).is_v6() ? inner[7] : inner[8], 1) << vip << ": inner TTL";
    }
}

namespace {
struct EdgeWorker {
    Worker w;
    std::unique_ptr<LoadedSnapshot> snap = load(edge_spec());
    explicit EdgeWorker(const WorkerConfig& c = wcfg()) : w(c) {}
    Verdict run(const PacketBuilder& b, std::vector<uint8_t>* out = nullptr) {
        FrameBuf fb(b.build());
        const Verdict v = w.process(fb.f, snap.get(), 1000);
        if (out) *out = fb.bytes();
        return v;
    }
    ConnState state_of(const PacketBuilder& b) {
        Parsed p;
        auto f = b.build();
        if (parse_packet(f, p) != Drop::none) return ConnState::empty;
        const FlowKey key = flow_key_of(p);
        const uint32_t ci = w.conns().find(key, Worker::conn_hash(key), 1000);
        return ci == ConnTable::kNone ? ConnState::empty : w.conns().state(ci);
    }
};
}  // namespace

TEST(EdgeFilter, EstablishedFlowsAreFilteredPerPacket) {
    EdgeWorker e;
    ASSERT_EQ(e.run(tcp_to(kClient4, kVip4)).action, Action::forward);
    ASSERT_EQ(e.run(tcp_to(kClient4, kVip4, tcpflag::kAck)).action, Action::forward);
    ASSERT_EQ(e.state_of(tcp_to(kClient4, kVip4)), ConnState::tcp_established);
    EXPECT_EQ(e.run(tcp_to(kClient4, kVip4, tcpflag::kSyn | tcpflag::kFin)).drop,
              Drop::tcp_bad_flags);
    EXPECT_EQ(e.run(tcp_to(kClient4, kVip4, tcpflag::kSyn | tcpflag::kRst)).drop,
              Drop::tcp_bad_flags);
    EXPECT_EQ(e.run(tcp_to(kClient4, kVip4, 0)).drop, Drop::tcp_bad_flags);
    PacketBuilder ttl0 = tcp_to(kClient4, kVip4, tcpflag::kAck);
    ttl0.ttl = 0;
    EXPECT_EQ(e.run(ttl0).drop, Drop::ttl_exceeded);
    // None of them touched the entry (an RST would have moved it to closing).
    EXPECT_EQ(e.state_of(tcp_to(kClient4, kVip4)), ConnState::tcp_established);
    EXPECT_EQ(e.run(tcp_to(kClient4, kVip4, tcpflag::kAck)).action, Action::forward);
    EXPECT_EQ(e.w.counters().dropped.get(), 4u);
}

TEST(EdgeFilter, NoTooBigReplyToASourceThatBecameAVip) {
    EdgeWorker e;
    ASSERT_EQ(e.run(tcp_to(kClient4, kTunnel4)).action, Action::forward);
    // A new configuration makes the client's address a VIP. Its established packets still
    // pass (the source was checked when the entry was made), but nothing is answered to it.
    auto spec = edge_spec();
    spec.services.push_back(service(6, kClient4, 443, FL_PROTO_TCP, {server(50, "198.18.2.9")}));
    e.snap = load(spec);
    EXPECT_EQ(e.run(tcp_to(kClient4, kTunnel4, tcpflag::kAck)).action, Action::forward);
    PacketBuilder big = too_big_to(kClient4, kTunnel4);
    big.tcp(tcpflag::kAck);
    EXPECT_EQ(e.run(big).drop, Drop::vip_source);
    EXPECT_EQ(e.w.counters().replied.get(), 0u);
    // A new flow from it is refused outright.
    PacketBuilder fresh = tcp_to(kClient4, kTunnel4);
    fresh.sport = 40001;
    EXPECT_EQ(e.run(fresh).drop, Drop::vip_source);
}

// The amplifier case: echo requests (answered) and DF packets too big for a tunnel (answered
// with fragmentation needed / packet too big) from every kind of address a reply must not go
// to, in one burst with the same two from a unicast client, which are answered.
TEST(EdgeFilter, NoIcmpTowardNonUnicastLoopbackUnspecifiedOrOwnAddresses) {
    struct Src {
        std::string addr;
        Drop reason;
    };
    const std::vector<Src> sources = {
        {"255.255.255.255", Drop::martian_source},
        {"224.0.0.1", Drop::martian_source},
        {"0.0.0.0", Drop::martian_source},
        {"127.0.0.1", Drop::martian_source},
        {"240.0.0.1", Drop::martian_source},
        {kVip4, Drop::vip_source},
        {kTunnel4, Drop::vip_source},
        {"::", Drop::martian_source},
        {"::1", Drop::martian_source},
        {"ff02::1", Drop::martian_source},
        {kVip6, Drop::vip_source},
        {kTunnel6, Drop::vip_source},
    };
    std::vector<PacketBuilder> pkts;
    std::vector<Drop> expect;
    for (const Src& s : sources) {
        const bool v6 = ip(s.addr).is_v6();
        pkts.push_back(echo_to(s.addr, v6 ? kVip6 : kVip4));
        expect.push_back(s.reason);
        pkts.push_back(too_big_to(s.addr, v6 ? kTunnel6 : kTunnel4));
        expect.push_back(s.reason);
    }
    for (const std::string& client : {kClient4, kClient6}) {
        const bool v6 = ip(client).is_v6();
        pkts.push_back(echo_to(client, v6 ? kVip6 : kVip4));
        expect.push_back(Drop::none);
        pkts.push_back(too_big_to(client, v6 ? kTunnel6 : kTunnel4));
        expect.push_back(Drop::none);
    }
    ASSERT_LE(pkts.size(), Worker::kMaxBurst);
    EdgeWorker e;
    std::vector<FrameBuf> bufs;
    bufs.reserve(pkts.size());
    for (const auto& b : pkts) bufs.emplace_back(b.build());
    std::vector<Frame> frames;
    for (auto& b : bufs) frames.push_back(b.f);
    std::vector<Verdict> out(frames.size());
    e.w.process_burst(frames, out.data(), e.snap.get(), 1000);
    for (size_t i = 0; i < frames.size(); ++i) {
        SCOPED_TRACE(std::to_string(i) + ": from " + pkts[i].src.str());
        if (expect[i] != Drop::none) {
            EXPECT_EQ(out[i].action, Action::drop);
            EXPECT_EQ(drop_name(out[i].drop), drop_name(expect[i]));
            continue;
        }
        ASSERT_EQ(out[i].action, Action::reply);
        Parsed p;
        ASSERT_EQ(parse_packet(frames[i].bytes(), p), Drop::none);
        EXPECT_TRUE(p.icmp == IcmpKind::echo_reply || p.icmp == IcmpKind::error);
        EXPECT_EQ(0, std::memcmp(p.dst, pkts[i].src.bytes.data(), pkts[i].src.size()))
            << "reply to the client";
    }
    EXPECT_EQ(e.w.counters().replied.get(), 4u);
    EXPECT_EQ(e.w.counters().too_big_replies.get(), 2u);
}

TEST(EdgeFilter, NoReplyToALinkLayerBroadcastOrMulticast) {
    EdgeWorker e;
    for (const char* group : {"ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01"}) {
        SCOPED_TRACE(group);
        for (const std::string& client : {kClient4, kClient6}) {
            const bool v6 = ip(client).is_v6();
            PacketBuilder echo = echo_to(client, v6 ? kVip6 : kVip4);
            echo.eth_dst = mac(group);
            EXPECT_EQ(e.run(echo).drop, Drop::l2_broadcast_no_reply);
            PacketBuilder big = too_big_to(client, v6 ? kTunnel6 : kTunnel4);
            big.eth_dst = mac(group);
            EXPECT_EQ(e.run(big).drop, Drop::l2_broadcast_no_reply);
        }
    }
    EXPECT_EQ(e.w.counters().replied.get(), 0u);
    // Only answers are withheld: such a frame that fits is forwarded as before.
    PacketBuilder small = tcp_to(kClient4, kTunnel4);
    small.eth_dst = mac("ff:ff:ff:ff:ff:ff");
    EXPECT_EQ(e.run(small).action, Action::forward);
    // And the same echo sent to our MAC is answered.
    EXPECT_EQ(e.run(echo_to(kClient4, kVip4)).action, Action::reply);
}

TEST(EdgeFilter, WithoutAnExceptionPortKernelFramesAreOneDrop) {
    WorkerConfig cfg = wcfg();
    cfg.exception_path = false;
    EdgeWorker e(cfg);
    std::vector<uint8_t> arp(60, 0);
    arp[12] = 0x08;
    arp[13] = 0x06;
    FrameBuf a(arp);
    EXPECT_EQ(e.w.process(a.f, e.snap.get(), 1000).drop, Drop::no_exception_port);
    EXPECT_EQ(e.run(tcp_to(kClient4, "198.18.0.100", tcpflag::kAck)).drop, Drop::no_exception_port);
    PacketBuilder ns = echo_to(kClient6, kVip6);  // neighbour solicitation to a VIP: the kernel's
    ns.icmp_type = 135;
    EXPECT_EQ(e.run(ns).drop, Drop::no_exception_port);
    FrameBuf nosnap(tcp_to(kClient4, kVip4).build());
    EXPECT_EQ(e.w.process(nosnap.f, nullptr, 1000).drop, Drop::no_exception_port);
    const WorkerCounters& c = e.w.counters();
    EXPECT_EQ(c.rx.get(), 4u);
    EXPECT_EQ(c.to_kernel.get(), 0u);
    EXPECT_EQ(c.dropped.get(), 4u);
    EXPECT_EQ(c.drops[static_cast<unsigned>(Drop::no_exception_port)].get(), 4u);
    e.w.set_exception_path(true);
    FrameBuf again(arp);
    EXPECT_EQ(e.w.process(again.f, e.snap.get(), 1000).action, Action::to_kernel);
    EXPECT_EQ(c.to_kernel.get(), 1u);
}

TEST(EdgeFilter, KernelFramesTheAdapterCannotSendBecomeDrops) {
    EdgeWorker e;
    for (int i = 0; i < 3; ++i)
        ASSERT_EQ(e.run(tcp_to(kClient4, "198.18.0.100", tcpflag::kAck)).action, Action::to_kernel);
    // The exception port's queue took one of the three.
    e.w.uncount_to_kernel(Drop::kernel_full, 2);
    const WorkerCounters& c = e.w.counters();
    EXPECT_EQ(c.to_kernel.get(), 1u);
    EXPECT_EQ(c.dropped.get(), 2u);
    EXPECT_EQ(c.drops[static_cast<unsigned>(Drop::kernel_full)].get(), 2u);
    EXPECT_EQ(c.rx.get(),
              c.forwarded.get() + c.replied.get() + c.to_kernel.get() + c.dropped.get());
}

TEST(EdgeFilter, EveryFrameCountsOnceWithAndWithoutAnExceptionPort) {
    const auto cases = edge_cases();
    size_t kernel = 0;
    for (const auto& c : cases) kernel += c.action == Action::to_kernel;
    ASSERT_GT(kernel, 0u);
    for (const bool exception : {true, false}) {
        SCOPED_TRACE(exception ? "with exception port" : "without exception port");
        WorkerConfig cfg = wcfg();
        cfg.exception_path = exception;
        EdgeWorker e(cfg);
        for (size_t i = 0; i < cases.size(); i += Worker::kMaxBurst) {
            const size_t n = std::min<size_t>(Worker::kMaxBurst, cases.size() - i);
            std::vector<FrameBuf> bufs;
            bufs.reserve(n);
            std::vector<Frame> frames;
            for (size_t j = 0; j < n; ++j) {
                bufs.emplace_back(cases[i + j].pkt.build());
                frames.push_back(bufs.back().f);
            }
            std::vector<Verdict> out(n);
            e.w.process_burst(frames, out.data(), e.snap.get(), 1000);
        }
        const WorkerCounters& c = e.w.counters();
        uint64_t by_reason = 0;
        for (unsigned d = 0; d < kDropReasons; ++d) by_reason += c.drops[d].get();
        EXPECT_EQ(c.rx.get(), cases.size());
        EXPECT_EQ(c.rx.get(),
                  c.forwarded.get() + c.replied.get() + c.to_kernel.get() + c.dropped.get());
        EXPECT_EQ(by_reason, c.dropped.get());
        EXPECT_EQ(c.to_kernel.get(), exception ? kernel : 0u);
        EXPECT_EQ(c.drops[static_cast<unsigned>(Drop::no_exception_port)].get(),
                  exception ? 0u : kernel);
    }
}

TEST(LoadedSnapshotTest, RejectsCorruptAndOversized) {
    auto b = build_snapshot(base_spec());
    b[200] ^= 1;
    auto ls = LoadedSnapshot::load(b, 2);
    ASSERT_FALSE(ls);
    EXPECT_NE(ls.error().find("checksum"), std::string::npos);
    auto ok = build_snapshot(base_spec());
    EXPECT_FALSE(LoadedSnapshot::load(ok, 2, 100));
    EXPECT_TRUE(LoadedSnapshot::load(ok, 2));
}

TEST(ForwardProperty, RandomFramesNeverCrashTheWorker) {
    Worker w(wcfg());
    auto snap = load(base_spec());
    std::mt19937 rng(21);
    PacketBuilder seeds[4];
    seeds[0] = to_vip(1);
    seeds[1].to("198.18.1.1").icmp_error(3, 4, 1000, to_vip(2).build_ip());
    seeds[2].to("198.18.1.1", 80).udp();
    seeds[3].src = ip("2001:db8::1");
    seeds[3].dst = ip("2001:db8::2");
    for (int i = 0; i < 20000; ++i) {
        auto f = seeds[i % 4].build();
        for (int k = 0; k < 3; ++k) f[rng() % f.size()] = static_cast<uint8_t>(rng());
        if (rng() % 4 == 0) f.resize(rng() % (f.size() + 1));
        FrameBuf fb(f);
        const Verdict v = w.process(fb.f, snap.get(), static_cast<uint32_t>(i));
        EXPECT_LE(fb.f.len, fb.mem.size());
        if (v.action == Action::drop) {
            EXPECT_NE(v.drop, Drop::none);
        }
    }
    uint64_t sum = 0;
    for (unsigned d = 0; d < kDropReasons; ++d) sum += w.counters().drops[d].get();
    EXPECT_EQ(sum, w.counters().dropped.get());
    EXPECT_EQ(w.counters().rx.get(), 20000u);
}

// ---- HA fencing: an inactive worker (standby, or its lease expired) ----------------------

namespace {

// An Ethernet/IPv4 ARP frame (`op` 1 request, 2 reply) asking for `target`.
std::vector<uint8_t> arp_frame(const std::string& target, uint16_t op = 1) {
    std::vector<uint8_t> f(60, 0);
    std::fill(f.begin(), f.begin() + 6, 0xFF);
    f[6] = 0x02;
    f[11] = 0x01;
    f[12] = 0x08;
    f[13] = 0x06;
    const uint8_t hdr[8] = {0, 1, 0x08, 0x00, 6, 4, 0, static_cast<uint8_t>(op)};
    std::copy(hdr, hdr + 8, f.begin() + 14);
    f[14 + 8] = 0x02;  // sender MAC 02:00:00:00:00:01
    f[14 + 13] = 0x01;
    const IpAddr sender = ip("198.18.0.7");
    std::copy(sender.bytes.begin(), sender.bytes.begin() + 4, f.begin() + 14 + 14);
    const IpAddr t = ip(target);
    std::copy(t.bytes.begin(), t.bytes.begin() + 4, f.begin() + 14 + 24);
    return f;
}

// A neighbour solicitation for `target`, sent to its solicited-node multicast group.
std::vector<uint8_t> ns_frame(const std::string& target) {
    PacketBuilder ns;
    ns.src = ip("2001:db8::7");
    const IpAddr t = ip(target);
    IpAddr group = ip("ff02::1:ff00:0");
    std::copy(t.bytes.begin() + 13, t.bytes.begin() + 16, group.bytes.begin() + 13);
    ns.dst = group;
    ns.ttl = 255;
    ns.icmp_echo();
    ns.icmp_type = 135;
    ns.icmp_rest = 0;
    ns.payload.assign(t.bytes.begin(), t.bytes.begin() + 16);
    return ns.build();
}

struct Inactive : Fixture {
    void SetUp() override {
        auto spec = base_spec();
        spec.services.push_back(
            service(2, "198.18.1.1", 53, FL_PROTO_UDP, {server(5, "198.18.2.5")}));
        spec.services.push_back(
            service(4, "2001:db8:1::1", 443, FL_PROTO_TCP, {server(30, "2001:db8:2::1")}));
        snap = load(spec);
    }
};

}  // namespace

TEST_F(Inactive, WorkersStartActive) {
    EXPECT_TRUE(w.active());
    EXPECT_EQ(run(to_vip(1).build()).action, Action::forward);
}

TEST_F(Inactive, DropsEveryKindOfVipTraffic) {
    // An established connection made while active.
    ASSERT_EQ(run(to_vip(5000).build()).action, Action::forward);
    w.set_active(false);
    std::vector<std::vector<uint8_t>> vip_frames;
    vip_frames.push_back(to_vip(5000, tcpflag::kAck).build());  // established
    vip_frames.push_back(to_vip(5001).build());                 // new connection
    PacketBuilder udp;
    udp.from("198.18.0.7", 999).to("198.18.1.1", 53).udp();
    vip_frames.push_back(udp.build());
    PacketBuilder noport;  // a VIP port without a service
    noport.from("198.18.0.7", 999).to("198.18.1.1", 81);
    vip_frames.push_back(noport.build());
    PacketBuilder echo;
    echo.from("198.18.0.7").to("198.18.1.1").icmp_echo();
    vip_frames.push_back(echo.build());
    PacketBuilder reply;  // an ICMP error about a flow a server sent from the VIP
    reply.from("198.18.1.1", 80).to("198.18.0.7", 5000);
    PacketBuilder err;
    err.from("198.18.9.9").to("198.18.1.1").icmp_error(3, 4, 1400, reply.build_ip());
    vip_frames.push_back(err.build());
    PacketBuilder frag = udp;  // a later fragment
    frag.frag_offset = 8;
    frag.df = false;
    vip_frames.push_back(frag.build());
    PacketBuilder v6;
    v6.src = ip("2001:db8::7");
    v6.dst = ip("2001:db8:1::1");
    v6.dport = 443;
    vip_frames.push_back(v6.build());
    PacketBuilder echo6;
    echo6.src = ip("2001:db8::7");
    echo6.dst = ip("2001:db8:1::1");
    echo6.icmp_echo();
    echo6.icmp_type = 128;
    vip_frames.push_back(echo6.build());
    for (size_t i = 0; i < vip_frames.size(); ++i) {
        FrameBuf fb(vip_frames[i]);
        const auto before = fb.bytes();
        const Verdict v = run(fb);
        EXPECT_EQ(v.action, Action::drop) << "frame " << i;
        EXPECT_EQ(v.drop, Drop::inactive) << "frame " << i;
        EXPECT_EQ(fb.bytes(), before) << "frame " << i << " was rewritten";
    }
    EXPECT_EQ(drops(Drop::inactive), vip_frames.size());
    EXPECT_EQ(w.counters().forwarded.get(), 1u);  // the one sent while active
    EXPECT_EQ(w.counters().replied.get(), 0u);
    EXPECT_EQ(w.counters().rx.get(), vip_frames.size() + 1);
    EXPECT_EQ(w.conns().size(), 1u);  // nothing created, the entry kept
}

TEST_F(Inactive, NeighbourResolutionForVipsIsDropped) {
    w.set_active(false);
    Verdict v = run(arp_frame("198.18.1.1"));
    EXPECT_EQ(v.action, Action::drop);
    EXPECT_EQ(v.drop, Drop::inactive);
    v = run(ns_frame("2001:db8:1::1"));
    EXPECT_EQ(v.action, Action::drop);
    EXPECT_EQ(v.drop, Drop::inactive);
    EXPECT_EQ(drops(Drop::inactive), 2u);
    // The same while active goes to the kernel, which holds the VIPs.
    w.set_active(true);
    EXPECT_EQ(run(arp_frame("198.18.1.1")).action, Action::to_kernel);
    EXPECT_EQ(run(ns_frame("2001:db8:1::1")).action, Action::to_kernel);
}

TEST_F(Inactive, HostTrafficStillGoesToTheKernel) {
    w.set_active(false);
    EXPECT_EQ(run(arp_frame("198.18.0.100")).action, Action::to_kernel);   // the host's address
    EXPECT_EQ(run(arp_frame("198.18.1.1", 2)).action, Action::to_kernel);  // a reply, not a request
    EXPECT_EQ(run(ns_frame("2001:db8::100")).action, Action::to_kernel);   // the host's address
    PacketBuilder ssh;
    ssh.from("198.18.0.7", 5000).to("198.18.0.100", 22);
    EXPECT_EQ(run(ssh.build()).action, Action::to_kernel);
    PacketBuilder hc;  // a health-check reply from a server to the host
    hc.from("198.18.2.1", 80).to("198.18.0.100", 41000).tcp(tcpflag::kSyn | tcpflag::kAck);
    EXPECT_EQ(run(hc.build()).action, Action::to_kernel);
    PacketBuilder vrrp;  // the pair's adverts
    vrrp.from("198.18.0.101").to("224.0.0.18");
    vrrp.proto = ipproto::kVrrp;
    vrrp.ttl = 255;
    EXPECT_EQ(run(vrrp.build()).action, Action::to_kernel);
    PacketBuilder vrrp_vip = vrrp;  // even unicast to a VIP
    vrrp_vip.to("198.18.1.1");
    EXPECT_EQ(run(vrrp_vip.build()).action, Action::to_kernel);
    // Without a snapshot there are no VIPs: everything goes to the kernel.
    FrameBuf fb(to_vip(1).build());
    EXPECT_EQ(w.process(fb.f, nullptr, now).action, Action::to_kernel);
    EXPECT_EQ(w.counters().to_kernel.get(), 8u);
    EXPECT_EQ(w.counters().dropped.get(), 0u);
    // Malformed frames keep their own reasons.
    std::vector<uint8_t> runt(10, 0);
    EXPECT_EQ(run(runt).drop, Drop::eth_truncated);
}

TEST_F(Inactive, ActiveAgainForwardsAndKeepsConnections) {
    int s1 = -1, s2 = -1;
    ASSERT_EQ(run(to_vip(6000).build(), &s1).action, Action::forward);
    w.set_active(false);
    EXPECT_EQ(run(to_vip(6000, tcpflag::kAck).build()).drop, Drop::inactive);
    w.set_active(true);
    EXPECT_EQ(run(to_vip(6000, tcpflag::kAck).build(), &s2).action, Action::forward);
    EXPECT_EQ(s1, s2);
    EXPECT_EQ(w.counters().forwarded.get(), 2u);
}

TEST_F(Inactive, WholeBurstsFollowTheFlag) {
    std::vector<FrameBuf> bufs;
    bufs.reserve(3);
    bufs.emplace_back(to_vip(7000).build());
    bufs.emplace_back(arp_frame("198.18.1.1"));
    bufs.emplace_back(arp_frame("198.18.0.100"));
    Frame frames[3] = {bufs[0].f, bufs[1].f, bufs[2].f};
    Verdict out[3];
    w.set_active(false);
    w.process_burst({frames, 3}, out, snap.get(), now);
    EXPECT_EQ(out[0].drop, Drop::inactive);
    EXPECT_EQ(out[1].drop, Drop::inactive);
    EXPECT_EQ(out[2].action, Action::to_kernel);
}

// ---- ServiceIndex: the VIP filter ----------------------------------------------------------

namespace fulcrum {
// Friend of ServiceIndex (forward.hpp): the VIP look-up without its filter.
struct ServiceIndexTest {
    static const ServiceIndex::Vip* find_vip_exact(const ServiceIndex& x, const uint8_t* addr, bool v6) {
        return x.find_vip_exact(addr, v6);
    }
};
}  // namespace fulcrum

// find_vip with its filter against the look-up without it and against the snapshot's VIPs,
// for a snapshot of many IPv4 and IPv6 VIPs (some with several services): every VIP, each
// one's bytes under the other family, addresses one bit away from a VIP and random ones. Both
// of the filter's outcomes come up for addresses that are not VIPs.
TEST(ServiceIndex, VipFilterKeepsFindVipExact) {
    SnapshotSpec spec = base_spec();
    std::mt19937_64 rng(11);
    std::vector<IpAddr> vips;
    for (uint32_t i = 0; i < 150; ++i) {
        const bool v6 = i % 3 == 0;
        IpAddr a;
        if (v6) {
            a = ip("2001:db8:5::");
            for (int b = 8; b < 16; ++b) a.bytes[b] = static_cast<uint8_t>(rng());
        } else {
            a = IpAddr::v4(0xC6330000u + static_cast<uint32_t>(rng() % 0x10000));  // 198.51.x.x
        }
        vips.push_back(a);
        // One service each, a second on one VIP in four (which may share the address).
        for (uint32_t j = 0; j < (i % 4 == 0 ? 2u : 1u); ++j) {
            const uint32_t id = 100 + i * 2 + j;
            ServiceSpec s = service(id, "198.18.9.9", static_cast<uint16_t>(1000 + j), FL_PROTO_TCP,
                                    {server(id, v6 ? "2001:db8:9::1" : "198.18.3.1")});
            s.vip = a;
            spec.services.push_back(s);
        }
    }
    auto snap = load(spec);
    ASSERT_TRUE(snap);
    const ServiceIndex& index = snap->index();
    std::set<std::pair<bool, std::array<uint8_t, 16>>> is_vip;
    for (const fl_snap_service& s : snap->view().services()) {
        std::array<uint8_t, 16> a{};
        const bool v6 = s.family == FL_AF_INET6;
        std::memcpy(a.data(), s.vip, v6 ? 16 : 4);
        is_vip.insert({v6, a});
    }
    int filtered = 0, passed_not_vip = 0, found = 0;
    const auto check = [&](std::array<uint8_t, 16> a, bool v6) {
        if (!v6) std::fill(a.begin() + 4, a.end(), 0);
        const ServiceIndex::Vip* got = index.find_vip(a.data(), v6);
        const ServiceIndex::Vip* exact = ServiceIndexTest::find_vip_exact(index, a.data(), v6);
        ASSERT_EQ(got, exact);
        ASSERT_EQ(got != nullptr, is_vip.count({v6, a}) == 1);
        found += got != nullptr;
        if (!got) ++(index.may_be_vip(a.data(), v6) ? passed_not_vip : filtered);
    };
    for (const IpAddr& v : vips) {
        const bool v6 = v.family == Family::v6;
        ASSERT_TRUE(index.may_be_vip(v.bytes.data(), v6));
        check(v.bytes, v6);
        check(v.bytes, !v6);
        for (int bit = 0; bit < (v6 ? 128 : 32); ++bit) {
            std::array<uint8_t, 16> a = v.bytes;
            a[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
            check(a, v6);
        }
    }
    for (int i = 0; i < 200'000; ++i) {
        std::array<uint8_t, 16> a;
        for (auto& b : a) b = static_cast<uint8_t>(rng());
        if (i % 2 == 0) a[0] = 198, a[1] = 51;  // near the IPv4 VIPs
        check(a, i % 4 < 2);
    }
    EXPECT_GE(found, static_cast<int>(vips.size()));  // every VIP, and random addresses that are one
    EXPECT_GT(filtered, 100'000);
    EXPECT_GT(passed_not_vip, 1000);
}

// The fast lane writes three of an IPv4 key's five words in its Pending record: the other two
// (the addresses' bytes 8-15) must not keep an IPv6 key's from an earlier packet there. Each
// frame below is a burst of one, so both use the same record.
TEST_F(Forward, AnIpv4KeyAfterAnIpv6PacketKeepsNoneOfItsAddresses) {
    snap = load(edge_spec());
    const auto key_of = [](const PacketBuilder& b) {
        Parsed p;
        EXPECT_EQ(parse_packet(b.build(), p), Drop::none);
        return flow_key_of(p);
    };
    const PacketBuilder v6 = tcp_to(kClient6, kVip6), v4 = tcp_to(kClient4, kVip4);
    // Both addresses of the IPv6 packet have bytes 8-15 that are not zero.
    ASSERT_NE(ip(kClient6).bytes[15], 0);
    ASSERT_NE(ip(kVip6).bytes[15], 0);
    for (int round = 0; round < 2; ++round) {
        ASSERT_EQ(run(v6.build()).action, Action::forward);
        ASSERT_EQ(run(v4.build()).action, Action::forward);
    }
    std::vector<FlowKey> keys;
    w.conns().for_each([&](const ConnEntry& e, ConnState, uint32_t) {
        keys.push_back(e.key);
        return true;
    });
    ASSERT_EQ(keys.size(), 2u);
    const FlowKey k6 = key_of(v6), k4 = key_of(v4);
    EXPECT_TRUE((keys[0] == k6 && keys[1] == k4) || (keys[0] == k4 && keys[1] == k6));
    // The IPv4 connection's second packet found its entry: one new connection each.
    EXPECT_EQ(w.counters().services[1].new_conns.get(), 1u);
    EXPECT_EQ(w.counters().services[4].new_conns.get(), 1u);
}
