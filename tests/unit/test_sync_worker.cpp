// Connection sync on the worker side (docs/architecture.md, "Connection sync"): the table's
// install / overwrite / remove, the worker's export on establish, close, removal and refresh,
// counted drops on full rings and tables, and the incremental dump.
#include <gtest/gtest.h>

#include <iterator>
#include <map>
#include <random>
#include <string>
#include <set>
#include <vector>

#include "frame_buf.hpp"
#include "fulcrum/forward.hpp"
#include "fulcrum/sync.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using test::FrameBuf;
using test::ip;
using test::mac;
using test::PacketBuilder;

namespace {

const MacAddr kOwn = mac("02:00:00:00:00:aa");

ServerSpec server(uint32_t slot, const std::string& addr, uint32_t weight = 1) {
    ServerSpec s;
    s.slot = slot;
    s.addr = ip(addr);
    s.mac = MacAddr{{0x02, 0, 0, 0, 0x10, static_cast<uint8_t>(slot)}};
    s.weight = weight;
    return s;
}

ServiceSpec service(uint32_t id, const std::string& vip, uint16_t port, uint8_t proto,
                    std::vector<ServerSpec> servers) {
    ServiceSpec s;
    s.id = id;
    s.name = "svc" + std::to_string(id);
    s.vip = ip(vip);
    s.port = port;
    s.proto = proto;
    s.scheduler = Scheduler::maglev;
    s.forwarding = Forwarding::dsr;
    s.table_size = 251;
    s.servers = std::move(servers);
    return s;
}

// Web (TCP 80) and dns (UDP 53) on one VIP. `weights` of the two web servers: a zero weight
// keeps the server present (entries may point at it) but out of the Maglev table.
SnapshotSpec spec(uint32_t w0 = 1, uint32_t w1 = 1, bool swap_slots = false) {
    SnapshotSpec s;
    s.hash_seed = 99;
    const uint32_t a = swap_slots ? 1 : 0, b = swap_slots ? 0 : 1;
    s.services.push_back(service(1, "198.18.1.1", 80, FL_PROTO_TCP,
                                 {server(a, "198.18.2.1", w0), server(b, "198.18.2.2", w1)}));
    s.services.push_back(service(2, "198.18.1.1", 53, FL_PROTO_UDP, {server(2, "198.18.2.9")}));
    return s;
}

std::unique_ptr<LoadedSnapshot> load(const SnapshotSpec& s) {
    auto b = build_snapshot(s);
    auto ls = LoadedSnapshot::load(b, 1);
    EXPECT_TRUE(ls) << ls.error();
    return std::move(ls.value());
}

WorkerConfig wcfg(size_t ring = 64, size_t capacity = 1 << 12) {
    WorkerConfig c;
    c.own_mac = kOwn;
    c.conn_capacity = capacity;
    c.max_servers = 64;
    c.max_services = 8;
    c.sync_ring = ring;
    c.sync_install_ring = 256;
    c.sync_dump_ring = 16;
    return c;
}

int server_of(const Frame& f) {
    if (f.data[0] != 0x02 || f.data[4] != 0x10) return -1;
    return f.data[5];
}

std::vector<uint8_t> tcp(uint16_t sport, uint8_t flags) {
    PacketBuilder b;
    b.from("198.18.0.7", sport).to("198.18.1.1", 80).tcp(flags);
    return b.build();
}

std::vector<uint8_t> udp(uint16_t sport) {
    PacketBuilder b;
    b.from("198.18.0.7", sport).to("198.18.1.1", 53).udp();
    return b.build();
}

FlowKey key_of(uint16_t sport, bool is_udp = false) {
    const IpAddr s = ip("198.18.0.7"), d = ip("198.18.1.1");
    return make_key(s.bytes.data(), d.bytes.data(), false, is_udp ? FL_PROTO_UDP : FL_PROTO_TCP,
                    sport, is_udp ? 53 : 80);
}

uint64_t h(const FlowKey& k) {
    return Worker::conn_hash(k);
}

std::vector<fl_sync_record> drain(Worker& w) {
    std::vector<fl_sync_record> out;
    fl_sync_record r;
    while (w.sync_export_ring()->pop(r)) out.push_back(r);
    return out;
}

struct SyncWorker : ::testing::Test {
    Worker w{wcfg()};
    std::unique_ptr<LoadedSnapshot> snap = load(spec());
    uint32_t now = 1000;

    int send(const std::vector<uint8_t>& frame) {
        FrameBuf fb(frame);
        const Verdict v = w.process(fb.f, snap.get(), now);
        return v.action == Action::forward ? server_of(fb.f) : -1;
    }
};

}  // namespace

// ---- the table ----------------------------------------------------------------------------

TEST(ConnTableSync, InstallInsertsOverwritesAndRemoves) {
    ConnTable t(1024, ConnTimeouts{});
    const FlowKey k = key_of(1000);
    const uint32_t now = 50'000;
    EXPECT_EQ(t.install({k, 3, 33}, h(k), ConnState::tcp_established, 2000, now),
              ConnInstall::inserted);
    uint32_t i = t.find(k, h(k), now);
    ASSERT_NE(i, ConnTable::kNone);
    EXPECT_EQ(t.entry(i).server, 3u);
    EXPECT_EQ(t.entry(i).server_tag, 33u);
    EXPECT_EQ(t.state(i), ConnState::tcp_established);
    EXPECT_EQ(t.last_seen(i), now - 2000);  // last seen = now - idle

    // An entry for the key is overwritten: server, tag, state and last seen are the record's.
    ConnEntry old{};
    ConnState old_st = ConnState::empty;
    EXPECT_EQ(t.install({k, 5, 55}, h(k), ConnState::tcp_closing, 10, now, &old, &old_st),
              ConnInstall::overwritten);
    EXPECT_EQ(old.server, 3u);
    EXPECT_EQ(old_st, ConnState::tcp_established);
    i = t.find(k, h(k), now);
    EXPECT_EQ(t.entry(i).server, 5u);
    EXPECT_EQ(t.entry(i).server_tag, 55u);
    EXPECT_EQ(t.state(i), ConnState::tcp_closing);
    EXPECT_EQ(t.last_seen(i), now - 10);
    EXPECT_EQ(t.size(), 1u);

    // An entry already past this table's timeout is not installed.
    EXPECT_EQ(t.install({key_of(1001), 1, 1}, h(key_of(1001)), ConnState::tcp_closing, 30'000, now),
              ConnInstall::expired);
    EXPECT_EQ(t.install({key_of(1001), 1, 1}, h(key_of(1001)), ConnState::empty, 0, now),
              ConnInstall::invalid);

    EXPECT_TRUE(t.remove_key(k, h(k), now));
    EXPECT_EQ(t.find(k, h(k), now), ConnTable::kNone);
    EXPECT_FALSE(t.remove_key(k, h(k), now));
    EXPECT_EQ(t.size(), 0u);
}

TEST(ConnTableSync, InstallNeverEvictsEstablishedEntries) {
    // 8 ways, 1 bucket: fill it with established entries; installs find no room.
    ConnTable t(8, ConnTimeouts{});
    const uint32_t now = 1000;
    for (uint16_t p = 1; p <= 8; ++p) {
        const FlowKey k = key_of(p);
        ASSERT_NE(t.insert(k, h(k), ConnState::tcp_established, now, 0, 0), ConnTable::kNone);
    }
    const FlowKey k = key_of(100);
    EXPECT_EQ(t.install({k, 1, 1}, h(k), ConnState::tcp_established, 0, now), ConnInstall::full);
    EXPECT_EQ(t.stats().full.get(), 1u);
    EXPECT_EQ(t.size(), 8u);
    // An existing key is still overwritten in a full table.
    EXPECT_EQ(t.install({key_of(3), 1, 1}, h(key_of(3)), ConnState::tcp_established, 0, now),
              ConnInstall::overwritten);
}

// ---- export -------------------------------------------------------------------------------

TEST_F(SyncWorker, ExportsOnEstablishAndCloseNotOnSyn) {
    const int s = send(tcp(2000, tcpflag::kSyn));
    ASSERT_GE(s, 0);
    EXPECT_TRUE(drain(w).empty());  // half-open: nothing for the peer yet
    EXPECT_EQ(send(tcp(2000, tcpflag::kAck)), s);
    auto recs = drain(w);
    ASSERT_EQ(recs.size(), 1u);
    const fl_sync_record& r = recs[0];
    EXPECT_EQ(validate_sync_record(r), SyncError::ok);
    EXPECT_EQ(r.state, FL_SYNC_S_ESTABLISHED);
    EXPECT_EQ(sync_record_key(r), key_of(2000));
    EXPECT_EQ(r.service_port, 80);
    EXPECT_EQ(sync_record_server(r), ip(s == 0 ? "198.18.2.1" : "198.18.2.2"));
    EXPECT_EQ(r.idle_ms, 0u);
    // More data on the established connection: no record.
    EXPECT_EQ(send(tcp(2000, tcpflag::kAck | tcpflag::kPsh)), s);
    EXPECT_TRUE(drain(w).empty());
    EXPECT_EQ(send(tcp(2000, tcpflag::kFin | tcpflag::kAck)), s);
    recs = drain(w);
    ASSERT_EQ(recs.size(), 1u);
    EXPECT_EQ(recs[0].state, FL_SYNC_S_CLOSING);
    EXPECT_EQ(sync_record_key(recs[0]), key_of(2000));
    EXPECT_EQ(send(tcp(2000, tcpflag::kAck)), s);  // closing stays closing
    EXPECT_TRUE(drain(w).empty());
    EXPECT_EQ(w.counters().sync_exported.get(), 2u);
    // The gauges moved as before: one inactive (closing) connection.
    EXPECT_EQ(w.counters().servers[s].inactive.get_signed(), 1);
    EXPECT_EQ(w.counters().servers[s].active.get_signed(), 0);
}

TEST_F(SyncWorker, ExportsUdpAndMidStreamTcpWhenCreated) {
    ASSERT_GE(send(udp(3000)), 0);
    ASSERT_GE(send(tcp(3001, tcpflag::kAck)), 0);  // picked up mid-stream
    const auto recs = drain(w);
    ASSERT_EQ(recs.size(), 2u);
    EXPECT_EQ(recs[0].proto, FL_PROTO_UDP);
    EXPECT_EQ(recs[0].state, FL_SYNC_S_ESTABLISHED);
    EXPECT_EQ(sync_record_server(recs[0]), ip("198.18.2.9"));
    EXPECT_EQ(recs[1].proto, FL_PROTO_TCP);
    EXPECT_EQ(recs[1].state, FL_SYNC_S_ESTABLISHED);
    ASSERT_GE(send(udp(3000)), 0);  // the flow's next datagram: no record
    EXPECT_TRUE(drain(w).empty());
}

TEST_F(SyncWorker, ExportsRemovedWhenAnEntryExpires) {
    ASSERT_GE(send(udp(3100)), 0);
    ASSERT_EQ(drain(w).size(), 1u);
    now += w.conns().timeouts().udp;
    w.idle(now, 1 << 12, snap.get());  // the sweep removes it
    const auto recs = drain(w);
    ASSERT_EQ(recs.size(), 1u);
    EXPECT_EQ(recs[0].state, FL_SYNC_S_REMOVED);
    EXPECT_EQ(sync_record_key(recs[0]), key_of(3100, true));
}

TEST_F(SyncWorker, NoExportWhileInactiveOrDisabled) {
    w.set_active(false);
    send(udp(3200));
    w.idle(now, 1 << 12, snap.get());
    EXPECT_TRUE(drain(w).empty());
    w.set_active(true);

    Worker off(wcfg(0));
    EXPECT_EQ(off.sync_export_ring(), nullptr);
    FrameBuf fb(udp(3201));
    EXPECT_EQ(off.process(fb.f, snap.get(), now).action, Action::forward);
    off.idle(now + 20'000, 1 << 12, snap.get());
    EXPECT_EQ(off.counters().sync_exported.get(), 0u);
}

TEST_F(SyncWorker, ExportRingFullIsACountedDrop) {
    Worker small(wcfg(4));
    ASSERT_EQ(small.sync_export_ring()->capacity(), 4u);
    for (uint16_t p = 0; p < 10; ++p) {
        FrameBuf fb(udp(static_cast<uint16_t>(4000 + p)));
        ASSERT_EQ(small.process(fb.f, snap.get(), now).action, Action::forward);
    }
    EXPECT_EQ(small.counters().sync_exported.get(), 4u);
    EXPECT_EQ(small.counters().sync_export_ring_full.get(), 6u);
    EXPECT_EQ(small.sync_export_ring()->size(), 4u);
}

TEST_F(SyncWorker, RefreshReexportsEstablishedEntriesOncePerInterval) {
    w.set_sync_refresh_ms(1000);
    for (uint16_t p = 0; p < 5; ++p) ASSERT_GE(send(udp(static_cast<uint16_t>(5000 + p))), 0);
    ASSERT_GE(send(tcp(5100, tcpflag::kSyn)), 0);  // half-open: never refreshed
    drain(w);
    const uint32_t start = now;
    std::map<uint16_t, std::vector<uint32_t>> when;
    // 3.5 intervals in 10 ms steps.
    for (now = start; now < start + 3500; now += 10) {
        w.idle(now, 1 << 12, snap.get());
        for (const auto& r : drain(w)) {
            EXPECT_EQ(r.state, FL_SYNC_S_ESTABLISHED);
            EXPECT_EQ(r.proto, FL_PROTO_UDP);
            when[r.src_port].push_back(now);
        }
    }
    ASSERT_EQ(when.size(), 5u);
    for (const auto& [port, times] : when) {
        // The first pass begins an interval after the first call (at 1000 ms), later ones at
        // least an interval apart (about 2010, 3020 ms: the third may not reach every bucket).
        EXPECT_GE(times.front(), start + 1000) << port;
        EXPECT_GE(times.size(), 2u) << port;
        EXPECT_LE(times.size(), 3u) << port;
        for (size_t i = 1; i < times.size(); ++i) EXPECT_GE(times[i] - times[i - 1], 1000u) << port;
    }
}

TEST_F(SyncWorker, RefreshCarriesIdleTime) {
    w.set_sync_refresh_ms(1000);
    ASSERT_GE(send(udp(5200)), 0);
    drain(w);
    const uint32_t start = now + 1234;
    // Exactly one pass: it begins an interval after the first call, at start + 1000, and is
    // spread over the interval.
    for (now = start; now <= start + 2000; now += 10) w.idle(now, 1 << 12, snap.get());
    const auto recs = drain(w);
    ASSERT_EQ(recs.size(), 1u);
    EXPECT_GE(recs[0].idle_ms, 2234u);
    EXPECT_LE(recs[0].idle_ms, 3234u);
}

// ---- install ------------------------------------------------------------------------------

namespace {
SyncInstallItem item(const fl_sync_record& r, const SyncServerIndex& index) {
    SyncInstallItem it{};
    ConnState st{};
    EXPECT_TRUE(conn_entry_from_sync(r, index, it.entry, st));
    it.state = st;
    it.idle_ms = r.idle_ms;
    return it;
}
}  // namespace

TEST_F(SyncWorker, InstalledEntriesWinOverTheLocalScheduler) {
    // The peer (this snapshot with server 198.18.2.2 out of Maglev, slots swapped) has the
    // flows on 198.18.2.1; here Maglev would pick 198.18.2.2 for every one of them.
    auto here = load(spec(0, 1, true));  // slot 1 = .1 (weight 0), slot 0 = .2
    const SyncServerIndex index(here->view());
    Worker b(wcfg());
    std::vector<fl_sync_record> recs;
    for (uint16_t p = 0; p < 20; ++p) {
        const IpAddr srv = ip("198.18.2.1");
        recs.push_back(make_sync_record(key_of(static_cast<uint16_t>(6000 + p)),
                                        FL_SYNC_S_ESTABLISHED, 80, srv, 80, 5));
    }
    for (const auto& r : recs) ASSERT_TRUE(b.sync_install_ring().push(item(r, index)));
    // A bounded number per poll.
    EXPECT_EQ(b.sync_poll(now, here.get()), 20u);
    EXPECT_EQ(b.counters().sync_installed.get(), 20u);
    EXPECT_EQ(b.counters().servers[1].active.get_signed(), 20);
    for (uint16_t p = 0; p < 20; ++p) {
        FrameBuf fb(tcp(static_cast<uint16_t>(6000 + p), tcpflag::kAck));
        ASSERT_EQ(b.process(fb.f, here.get(), now).action, Action::forward);
        EXPECT_EQ(server_of(fb.f), 1) << p;  // slot 1 here = 198.18.2.1, the peer's choice
    }
    // A flow the peer did not send goes where this balancer's scheduler says.
    FrameBuf fb(tcp(6999, tcpflag::kSyn));
    ASSERT_EQ(b.process(fb.f, here.get(), now).action, Action::forward);
    EXPECT_EQ(server_of(fb.f), 0);
    // Installing exports nothing back, nor do packets on installed established entries (no
    // state change), nor the new SYN (half-open).
    EXPECT_EQ(b.counters().sync_exported.get(), 0u);
}

TEST_F(SyncWorker, InstallBatchIsBoundedAndOverwriteAndRemoveWork) {
    const SyncServerIndex index(snap->view());
    const IpAddr s1 = ip("198.18.2.1"), s2 = ip("198.18.2.2");
    for (unsigned i = 0; i < Worker::kSyncInstallBatch + 10; ++i)
        ASSERT_TRUE(w.sync_install_ring().push(
            item(make_sync_record(key_of(static_cast<uint16_t>(7000 + i)), FL_SYNC_S_ESTABLISHED,
                                  80, s1, 80, 0),
                 index)));
    EXPECT_EQ(w.sync_poll(now, snap.get()), Worker::kSyncInstallBatch);
    EXPECT_EQ(w.sync_poll(now, snap.get()), 10u);
    EXPECT_EQ(w.sync_poll(now, snap.get()), 0u);
    EXPECT_EQ(w.counters().sync_installed.get(), Worker::kSyncInstallBatch + 10);

    // Overwrite: the same key now on .2, closing.
    const fl_sync_record c = make_sync_record(key_of(7000), FL_SYNC_S_CLOSING, 80, s2, 80, 0);
    ASSERT_TRUE(w.sync_install_ring().push(item(c, index)));
    w.sync_poll(now, snap.get());
    const uint32_t i = w.conns().find(key_of(7000), h(key_of(7000)), now);
    ASSERT_NE(i, ConnTable::kNone);
    EXPECT_EQ(w.conns().entry(i).server, 1u);
    EXPECT_EQ(w.conns().state(i), ConnState::tcp_closing);
    EXPECT_EQ(w.counters().servers[0].active.get_signed(), int64_t{Worker::kSyncInstallBatch + 9});
    EXPECT_EQ(w.counters().servers[1].inactive.get_signed(), 1);

    // Remove: the entry goes and the gauge follows; a second remove finds nothing.
    SyncInstallItem rm{};
    rm.entry.key = key_of(7000);
    rm.state = ConnState::empty;
    ASSERT_TRUE(w.sync_install_ring().push(rm));
    ASSERT_TRUE(w.sync_install_ring().push(rm));
    w.sync_poll(now, snap.get());
    EXPECT_EQ(w.conns().find(key_of(7000), h(key_of(7000)), now), ConnTable::kNone);
    EXPECT_EQ(w.counters().sync_removed.get(), 1u);
    EXPECT_EQ(w.counters().servers[1].inactive.get_signed(), 0);
    EXPECT_EQ(w.counters().sync_exported.get(), 0u);  // nothing echoed back to the peer
}

TEST_F(SyncWorker, InstallTableFullAndExpiredAreCounted) {
    Worker tiny(wcfg(64, 8));  // one bucket of 8 ways
    const SyncServerIndex index(snap->view());
    const IpAddr s1 = ip("198.18.2.1");
    for (uint16_t p = 0; p < 10; ++p)
        ASSERT_TRUE(tiny.sync_install_ring().push(
            item(make_sync_record(key_of(static_cast<uint16_t>(8000 + p)), FL_SYNC_S_ESTABLISHED,
                                  80, s1, 80, 0),
                 index)));
    ASSERT_TRUE(tiny.sync_install_ring().push(
        item(make_sync_record(key_of(8100), FL_SYNC_S_CLOSING, 80, s1, 80, 3'600'000), index)));
    tiny.sync_poll(now, snap.get());
    EXPECT_EQ(tiny.counters().sync_installed.get(), 8u);
    EXPECT_EQ(tiny.counters().sync_install_table_full.get(), 2u);
    EXPECT_EQ(tiny.counters().sync_install_expired.get(), 1u);
}

// ---- dump ---------------------------------------------------------------------------------

namespace {
// Serves a dump request to the end, as the control thread does: poll, drain, until the end
// marker of `seq` arrives (bounded).
std::vector<fl_sync_record> dump(Worker& w, uint64_t seq, const LoadedSnapshot* snap,
                                 uint32_t now) {
    w.request_sync_dump(seq);
    std::vector<fl_sync_record> out;
    SyncDumpItem d;
    for (int i = 0; i < 100'000; ++i) {
        w.sync_poll(now, snap);
        while (w.sync_dump_ring().pop(d)) {
            if (d.seq != seq) continue;
            if (d.end) return out;
            out.push_back(d.record);
        }
    }
    ADD_FAILURE() << "dump " << seq << " never ended";
    return out;
}
}  // namespace

TEST_F(SyncWorker, DumpReturnsEveryEntryInASyncStateThroughASmallRing) {
    for (uint16_t p = 0; p < 40; ++p) ASSERT_GE(send(udp(static_cast<uint16_t>(9000 + p))), 0);
    for (uint16_t p = 0; p < 5; ++p)
        ASSERT_GE(send(tcp(static_cast<uint16_t>(9100 + p), tcpflag::kSyn)), 0);
    ASSERT_GE(send(tcp(9200, tcpflag::kAck)), 0);
    ASSERT_GE(send(tcp(9200, tcpflag::kRst)), 0);
    // The dump ring holds 16 items: the worker pauses and resumes where it stopped.
    const auto recs = dump(w, 1, snap.get(), now);
    std::set<uint16_t> udp_ports;
    int closing = 0;
    for (const auto& r : recs) {
        if (r.proto == FL_PROTO_UDP) {
            EXPECT_EQ(r.state, FL_SYNC_S_ESTABLISHED);
            udp_ports.insert(r.src_port);
        } else {
            EXPECT_EQ(r.src_port, 9200);  // the half-open SYNs are not in a sync state
            EXPECT_EQ(r.state, FL_SYNC_S_CLOSING);
            ++closing;
        }
    }
    EXPECT_EQ(recs.size(), 41u);
    EXPECT_EQ(udp_ports.size(), 40u);
    EXPECT_EQ(closing, 1);
    // A second request gets the whole table again; without a snapshot the dump is empty.
    EXPECT_EQ(dump(w, 2, snap.get(), now).size(), 41u);
    EXPECT_TRUE(dump(w, 3, nullptr, now).empty());
}

TEST_F(SyncWorker, ANewDumpRequestRestartsOneInProgress) {
    for (uint16_t p = 0; p < 40; ++p) ASSERT_GE(send(udp(static_cast<uint16_t>(9300 + p))), 0);
    w.request_sync_dump(7);
    // Nobody drains: the ring fills with items of dump 7 and the worker stalls.
    for (int i = 0; i < 100 && w.sync_dump_ring().size() < 16; ++i) w.sync_poll(now, snap.get());
    EXPECT_EQ(w.sync_dump_ring().size(), 16u);
    // The control thread gave up on 7 and asks again: leftovers of 7 are skipped by seq.
    EXPECT_EQ(dump(w, 8, snap.get(), now).size(), 40u);
}

// A small table under random traffic (SYNs, mid-stream ACKs, FINs, RSTs, UDP) with time
// passing and sweeps: nearly every new connection replaces an entry, a new, expired or (for
// UDP and mid-stream TCP) established one. Whichever way an entry leaves the table (replaced
// by an insert, expired, swept, erased), the per-server gauges must count exactly the entries
// in the table, and the export stream must tell the peer of exactly the entries it holds: a
// key's last record is live (established or closing) exactly when the table holds the key in
// a sync state, and a REMOVED record only follows a live one.
TEST(SyncWorkerChurn, GaugesAndRemovedRecordsFollowEveryReplacedEntry) {
    WorkerConfig c = wcfg(1 << 16, 64);
    c.timeouts = ConnTimeouts{400, 3000, 800, 2000};
    Worker w(c);
    auto snap = load(spec());
    std::mt19937_64 rng(77);
    uint32_t now = 5000;
    std::map<std::string, uint8_t> last;  // key bytes -> state of its last record
    const auto key_bytes = [](const FlowKey& k) { return std::string(reinterpret_cast<const char*>(&k), sizeof k); };
    uint64_t removed_records = 0;
    const auto check = [&](int step) {
        for (const fl_sync_record& r : drain(w)) {
            const std::string k = key_bytes(sync_record_key(r));
            if (r.state == FL_SYNC_S_REMOVED) {
                ASSERT_TRUE(last.count(k) && last[k] != FL_SYNC_S_REMOVED) << "step " << step;
                ++removed_records;
            }
            last[k] = r.state;
        }
        std::map<uint32_t, int64_t> active, inactive;
        std::map<std::string, bool> synced;  // keys in the table in a sync state
        w.conns().for_each([&](const ConnEntry& e, ConnState st, uint32_t) {
            ++(st == ConnState::tcp_closing ? inactive : active)[e.server];
            if (st != ConnState::tcp_new) synced[key_bytes(e.key)] = true;
        });
        for (uint32_t s = 0; s < 3; ++s) {
            ASSERT_EQ(w.counters().servers[s].active.get_signed(), active[s]) << "server " << s << " step " << step;
            ASSERT_EQ(w.counters().servers[s].inactive.get_signed(), inactive[s]) << "server " << s << " step " << step;
        }
        for (const auto& [k, st] : last)
            ASSERT_EQ(st != FL_SYNC_S_REMOVED, synced.count(k) == 1) << "step " << step;
        for (const auto& [k, in] : synced) ASSERT_TRUE(last.count(k)) << "step " << step;
    };
    const uint8_t flags[] = {tcpflag::kSyn, tcpflag::kSyn, tcpflag::kSyn, tcpflag::kAck,
                             tcpflag::kAck | tcpflag::kPsh, tcpflag::kFin | tcpflag::kAck, tcpflag::kRst};
    for (int step = 0; step < 20'000; ++step) {
        now += static_cast<uint32_t>(rng() % 20);
        const auto sport = static_cast<uint16_t>(1000 + rng() % 400);
        FrameBuf fb(rng() % 5 == 0 ? udp(sport) : tcp(sport, flags[rng() % std::size(flags)]));
        w.process(fb.f, snap.get(), now);
        if (step % 64 == 0) w.idle(now, 2, snap.get());
        if (step % 16 == 0) check(step);
        if (HasFatalFailure()) return;
    }
    check(-1);
    EXPECT_GT(w.conns().stats().evictions.get(), 2000u);
    EXPECT_GT(w.conns().stats().expired.get(), 200u);
    EXPECT_GT(removed_records, 500u);
}
