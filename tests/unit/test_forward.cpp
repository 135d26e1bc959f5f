#include <gtest/gtest.h>

#include <map>
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
    const uint64_t h = flow_hash(k, Worker::kConnHashSeed);
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
    // Slot reused by a different server: the tag tells them apart.
    spec.services[0].servers.push_back(server(2, "198.18.2.99"));
    snap = load(spec);
    for (auto [port, s] : pinned) {
        int now_s = -1;
        run(to_vip(port, tcpflag::kAck).build(), &now_s);
        (void)now_s;
    }
    SUCCEED();
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
        b.src = IpAddr::v4(0xC6120100u + i);
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
