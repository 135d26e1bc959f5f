// Restart handover: the state file format (round trip, every corruption refused), the
// connection table's export and restore (remaining timeouts honoured), and a worker that
// restores another worker's table keeping connections on their servers after a weight change.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "frame_buf.hpp"
#include "fulcrum/checksum.hpp"
#include "fulcrum/conn_state.hpp"
#include "fulcrum/forward.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;

namespace {

FlowKey key(uint32_t n, uint8_t proto = 6) {
    uint8_t s[4] = {198, 18, static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 8)};
    uint8_t d[4] = {198, 19, 0, 1};
    return make_key(s, d, false, proto, static_cast<uint16_t>(n), 80);
}

ConnStateRecord record(uint32_t n, ConnState st, uint32_t idle, uint16_t worker = 0) {
    ConnStateRecord r{};
    r.key = key(n, st == ConnState::udp ? 17 : 6);
    r.server = n % 7;
    r.server_tag = 0x1000 + n;
    r.idle_ms = idle;
    r.worker = worker;
    r.state = static_cast<uint8_t>(st);
    return r;
}

ConnStateData sample() {
    ConnStateData d;
    d.snapshot = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};  // odd length: the section is padded
    for (uint32_t i = 1; i <= 20; ++i)
        d.entries.push_back(record(i, i % 2 ? ConnState::tcp_established : ConnState::udp, i * 10,
                                   static_cast<uint16_t>(i % 3)));
    d.workers = 3;
    d.rss_fingerprint = 0xfeedfacecafebeefull;
    d.written_unix_ms = 1'700'000'000'000ull;
    return d;
}

// Recomputes the checksum after a deliberate edit, so a test reaches the check behind it.
void reseal(std::vector<uint8_t>& b) {
    constexpr size_t off = offsetof(ConnStateHeader, checksum);
    std::memset(b.data() + off, 0, 4);
    uint32_t c = crc32c(std::span<const uint8_t>(b).first(off));
    const uint8_t zero[4] = {};
    c = crc32c(zero, c);
    c = crc32c(std::span<const uint8_t>(b).subspan(off + 4), c);
    std::memcpy(b.data() + off, &c, 4);
}

template <class T>
void set_field(std::vector<uint8_t>& b, size_t off, T v) {
    std::memcpy(b.data() + off, &v, sizeof v);
}

std::string refused(const std::vector<uint8_t>& b) {
    auto d = decode_conn_state(b);
    return d ? std::string("accepted") : d.error();
}

std::string temp_path(const std::string& name) {
    return (std::filesystem::temp_directory_path() / (name + "." + std::to_string(::getpid())))
        .string();
}

}  // namespace

TEST(ConnState, RoundTrip) {
    const ConnStateData d = sample();
    const auto bytes = encode_conn_state(d);
    EXPECT_EQ(bytes.size(), sizeof(ConnStateHeader) + 16 + 20 * sizeof(ConnStateRecord));
    auto back = decode_conn_state(bytes);
    ASSERT_TRUE(back) << back.error();
    EXPECT_EQ(back->snapshot, d.snapshot);
    EXPECT_EQ(back->workers, 3u);
    EXPECT_EQ(back->rss_fingerprint, d.rss_fingerprint);
    EXPECT_EQ(back->written_unix_ms, d.written_unix_ms);
    ASSERT_EQ(back->entries.size(), d.entries.size());
    for (size_t i = 0; i < d.entries.size(); ++i)
        EXPECT_EQ(0, std::memcmp(&back->entries[i], &d.entries[i], sizeof(ConnStateRecord))) << i;
    // No snapshot and no entries is a valid (empty) file too.
    auto empty = decode_conn_state(encode_conn_state(ConnStateData{}));
    ASSERT_TRUE(empty) << empty.error();
    EXPECT_TRUE(empty->snapshot.empty());
    EXPECT_TRUE(empty->entries.empty());
}

TEST(ConnState, EveryCorruptionIsRefused) {
    const auto good = encode_conn_state(sample());
    ASSERT_EQ(refused(good), "accepted");

    EXPECT_NE(refused({}).find("truncated"), std::string::npos);
    EXPECT_NE(refused({good.begin(), good.begin() + 63}).find("truncated"), std::string::npos);

    auto b = good;
    b[0] = 'X';
    EXPECT_NE(refused(b).find("bad magic"), std::string::npos);

    b = good;
    set_field<uint32_t>(b, offsetof(ConnStateHeader, version), 2);
    reseal(b);
    EXPECT_NE(refused(b).find("version 2"), std::string::npos);

    b = good;
    set_field<uint32_t>(b, offsetof(ConnStateHeader, header_bytes), 72);
    reseal(b);
    EXPECT_NE(refused(b).find("header of 72 bytes"), std::string::npos);

    b = good;
    set_field<uint32_t>(b, offsetof(ConnStateHeader, record_bytes), 48);
    reseal(b);
    EXPECT_NE(refused(b).find("records of 48 bytes"), std::string::npos);

    // Truncated body, at every length from just past the header to one byte short.
    for (size_t len = sizeof(ConnStateHeader); len < good.size(); len += 13) {
        std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<ptrdiff_t>(len));
        EXPECT_NE(refused(t), "accepted") << len;
    }
    EXPECT_NE(refused({good.begin(), good.end() - 1}).find("truncated"), std::string::npos);

    b = good;
    b.push_back(0);
    reseal(b);
    EXPECT_NE(refused(b).find("trailing bytes"), std::string::npos);

    // Counts that would overflow a size computation.
    b = good;
    set_field<uint64_t>(b, offsetof(ConnStateHeader, entries),
                        ~uint64_t{0} / sizeof(ConnStateRecord) + 1);
    reseal(b);
    EXPECT_NE(refused(b).find("more than the file"), std::string::npos);
    b = good;
    set_field<uint64_t>(b, offsetof(ConnStateHeader, snapshot_bytes), ~uint64_t{0});
    reseal(b);
    EXPECT_NE(refused(b).find("more than the file"), std::string::npos);

    // A flipped bit anywhere (header field, snapshot, entry, checksum) fails the checksum.
    for (size_t off :
         {offsetof(ConnStateHeader, workers), offsetof(ConnStateHeader, written_unix_ms),
          offsetof(ConnStateHeader, checksum), sizeof(ConnStateHeader) + 3, good.size() - 5}) {
        b = good;
        b[off] ^= 0x10;
        EXPECT_NE(refused(b).find("checksum mismatch"), std::string::npos) << off;
    }

    // An entry with a state that is no connection state, though the checksum matches.
    for (uint8_t st : {uint8_t{0}, static_cast<uint8_t>(ConnState::count_), uint8_t{0xff}}) {
        b = good;
        const size_t rec0 = sizeof(ConnStateHeader) + 16 + sizeof(ConnStateRecord) * 4;
        b[rec0 + offsetof(ConnStateRecord, state)] = st;
        reseal(b);
        EXPECT_NE(refused(b).find("entry 4 has invalid state"), std::string::npos) << int{st};
    }
    // A state that does not fit the key's protocol (TCP states with TCP keys, UDP with UDP).
    for (const auto& [st, proto] : {std::pair{ConnState::tcp_established, uint8_t{17}},
                                    std::pair{ConnState::tcp_closing, uint8_t{17}},
                                    std::pair{ConnState::udp, uint8_t{6}},
                                    std::pair{ConnState::tcp_new, uint8_t{1}}}) {
        b = good;
        const size_t rec = sizeof(ConnStateHeader) + 16 + sizeof(ConnStateRecord) * 7;
        b[rec + offsetof(ConnStateRecord, state)] = static_cast<uint8_t>(st);
        b[rec + offsetof(ConnStateRecord, key) + offsetof(FlowKey, proto)] = proto;
        reseal(b);
        EXPECT_NE(refused(b).find("entry 7 has state " + std::to_string(int(st)) +
                                  ", which does not fit its protocol " + std::to_string(proto)),
                  std::string::npos)
            << refused(b);
    }
}

TEST(ConnState, FileWriteIsAtomicAndReadChecksEverything) {
    const std::string path = temp_path("fulcrum-conn-state");
    std::remove(path.c_str());
    bool missing = false;
    auto none = read_conn_state_file(path, 1 << 20, missing);
    EXPECT_FALSE(none);
    EXPECT_TRUE(missing);

    const ConnStateData d = sample();
    auto n = write_conn_state_file(path, d);
    ASSERT_TRUE(n) << n.error();
    EXPECT_EQ(n.value(), std::filesystem::file_size(path));
    // Nothing left beside it (the temporary file was renamed).
    for (const auto& e :
         std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
        EXPECT_EQ(e.path().string().find(path + ".tmp"), std::string::npos) << e.path();
    auto back = read_conn_state_file(path, 1 << 20, missing);
    ASSERT_TRUE(back) << back.error();
    EXPECT_FALSE(missing);
    EXPECT_EQ(back->entries.size(), d.entries.size());

    // Larger than the caller can hold: refused before reading.
    auto big = read_conn_state_file(path, 100, missing);
    ASSERT_FALSE(big);
    EXPECT_FALSE(missing);
    EXPECT_NE(big.error().find("above the limit of 100 bytes"), std::string::npos);

    // Truncated on disk: refused with the path in the message.
    std::filesystem::resize_file(path, n.value() - 7);
    auto cut = read_conn_state_file(path, 1 << 20, missing);
    ASSERT_FALSE(cut);
    EXPECT_FALSE(missing);
    EXPECT_NE(cut.error().find(path), std::string::npos);
    EXPECT_NE(cut.error().find("truncated"), std::string::npos);

    // A directory where the file should be.
    std::remove(path.c_str());
    std::filesystem::create_directory(path);
    auto dir = read_conn_state_file(path, 1 << 20, missing);
    EXPECT_FALSE(dir);
    std::filesystem::remove(path);

    // An unwritable place reports the path.
    auto bad = write_conn_state_file("/nonexistent-dir-fulcrum/x.state", d);
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().find("/nonexistent-dir-fulcrum/x.state"), std::string::npos);
}

TEST(ConnState, DowntimeCountsAsIdleTime) {
    const ConnStateRecord r = record(1, ConnState::tcp_established, 1500);
    EXPECT_EQ(restored_idle_ms(r, 10'000, 10'000), 1500u);
    EXPECT_EQ(restored_idle_ms(r, 10'000, 12'500), 4000u);
    EXPECT_EQ(restored_idle_ms(r, 10'000, 9'000), 1500u);  // clock went back: no credit, no debit
    EXPECT_EQ(restored_idle_ms(r, 0, ~uint64_t{0} / 2), 0xFFFFFFFFu);
}

TEST(ConnState, PlacementGoesBackToTheSameWorkerOnlyWhenRssIsKnownAndEqual) {
    ConnStateData d;
    d.workers = 4;
    d.rss_fingerprint = 42;
    EXPECT_EQ(conn_placement(1, 0, d), ConnPlacement::only_worker);
    EXPECT_EQ(conn_placement(1, 42, d), ConnPlacement::only_worker);
    EXPECT_EQ(conn_placement(4, 42, d), ConnPlacement::same_worker);
    EXPECT_EQ(conn_placement(4, 43, d), ConnPlacement::every_worker);  // other key, RETA or driver
    EXPECT_EQ(conn_placement(3, 42, d), ConnPlacement::every_worker);  // other worker count
    EXPECT_EQ(conn_placement(4, 0, d), ConnPlacement::every_worker);   // this device cannot tell
    d.rss_fingerprint = 0;
    EXPECT_EQ(conn_placement(4, 0, d), ConnPlacement::every_worker);  // neither could the old one
}

TEST(ConnTableHandover, ExportAndRestoreKeepRemainingTimeouts) {
    ConnTimeouts to;
    to.tcp_new = 1000;
    to.tcp_established = 10'000;
    to.tcp_closing = 2000;
    to.udp = 5000;
    ConnTable old(1024, to);
    const uint32_t t0 = 4'000'000'000u;  // the old process's clock, near its wrap
    struct Want {
        uint32_t n;
        ConnState st;
        uint32_t last;
    };
    const Want want[] = {{1, ConnState::tcp_established, t0 - 9000},  // 1 s left
                         {2, ConnState::tcp_new, t0 - 200},           // 0.8 s left
                         {3, ConnState::tcp_closing, t0 - 1500},      // 0.5 s left
                         {4, ConnState::udp, t0 - 100},               // 4.9 s left
                         {5, ConnState::tcp_new, t0 - 1000}};         // expired at t0
    for (const auto& w : want) {
        const FlowKey k = key(w.n);
        ASSERT_NE(old.insert(k, flow_hash(k, 1), w.st, w.last, w.n, 0x100 + w.n), ConnTable::kNone);
    }
    std::vector<ConnExport> ex;
    old.export_live(t0, ex);
    ASSERT_EQ(ex.size(), 4u);  // the expired one is not handed over
    std::map<uint32_t, ConnExport> by_server;
    for (const auto& e : ex) by_server[e.entry.server] = e;
    EXPECT_EQ(by_server.at(1).idle_ms, 9000u);
    EXPECT_EQ(by_server.at(1).state, ConnState::tcp_established);
    EXPECT_EQ(by_server.at(3).idle_ms, 1500u);
    EXPECT_EQ(by_server.at(4).entry.server_tag, 0x104u);

    // The new process's clock starts near 0: last_seen goes "below" it and wraps.
    ConnTable fresh(1024, to);
    const uint32_t t1 = 50;
    for (const auto& e : ex)
        EXPECT_EQ(fresh.restore(e.entry, flow_hash(e.entry.key, 1), e.state, e.idle_ms, t1),
                  ConnRestore::restored);
    EXPECT_EQ(fresh.size(), 4u);
    auto find = [&](uint32_t n, uint32_t now) {
        return fresh.find(key(n), flow_hash(key(n), 1), now);
    };
    const uint32_t i1 = find(1, t1 + 999);
    ASSERT_NE(i1, ConnTable::kNone);
    EXPECT_EQ(fresh.entry(i1).server, 1u);
    EXPECT_EQ(fresh.entry(i1).server_tag, 0x101u);
    EXPECT_EQ(fresh.state(i1), ConnState::tcp_established);
    EXPECT_EQ(find(1, t1 + 1000), ConnTable::kNone);  // its remaining second is over
    EXPECT_NE(find(2, t1 + 799), ConnTable::kNone);
    EXPECT_EQ(find(2, t1 + 800), ConnTable::kNone);
    EXPECT_NE(find(4, t1 + 4899), ConnTable::kNone);
    // The sweep expires restored entries by their remaining time as well.
    EXPECT_EQ(fresh.sweep(t1 + 600, fresh.capacity()), 1u);  // entry 3 (0.5 s left)
    EXPECT_EQ(fresh.size(), 1u);                             // only 4 remains
    EXPECT_EQ(fresh.sweep(t1 + 4900, fresh.capacity()), 1u);
    EXPECT_EQ(fresh.size(), 0u);

    // Refusals: already expired under this table's timeouts, not a connection state, present.
    const ConnEntry e{key(9), 1, 2};
    EXPECT_EQ(fresh.restore(e, flow_hash(e.key, 1), ConnState::tcp_new, 1000, t1),
              ConnRestore::expired);
    EXPECT_EQ(fresh.restore(e, flow_hash(e.key, 1), ConnState::empty, 0, t1), ConnRestore::invalid);
    EXPECT_EQ(fresh.restore(e, flow_hash(e.key, 1), ConnState::count_, 0, t1),
              ConnRestore::invalid);
    EXPECT_EQ(fresh.restore(e, flow_hash(e.key, 1), ConnState::udp, 0, t1), ConnRestore::restored);
    EXPECT_EQ(fresh.restore(e, flow_hash(e.key, 1), ConnState::udp, 0, t1), ConnRestore::duplicate);
    EXPECT_EQ(fresh.size(), 1u);
}

TEST(ConnTableHandover, RestoreIntoAFullTableSaysSo) {
    ConnTable t(8);  // one bucket
    uint32_t restored = 0, full = 0;
    for (uint32_t n = 1; n <= 12; ++n) {
        const ConnEntry e{key(n), n, n};
        const ConnRestore r = t.restore(e, flow_hash(e.key, 1), ConnState::tcp_new, 0, 10);
        restored += r == ConnRestore::restored;
        full += r == ConnRestore::full;
    }
    EXPECT_EQ(restored, 12u);  // new entries may replace older new ones (least recent first)
    EXPECT_EQ(full, 0u);
    EXPECT_EQ(t.size(), 8u);
    // An established table refuses new connections rather than evicting established ones.
    ConnTable est(8);
    for (uint32_t n = 1; n <= 8; ++n) {
        const ConnEntry e{key(n), n, n};
        ASSERT_EQ(est.restore(e, flow_hash(e.key, 1), ConnState::tcp_established, 0, 10),
                  ConnRestore::restored);
    }
    const ConnEntry extra{key(99), 1, 1};
    EXPECT_EQ(est.restore(extra, flow_hash(extra.key, 1), ConnState::tcp_new, 0, 10),
              ConnRestore::full);
}

namespace {

ServerSpec server(uint32_t slot, const std::string& addr, uint32_t weight) {
    ServerSpec s;
    s.slot = slot;
    s.addr = test::ip(addr);
    s.mac = MacAddr{{0x02, 0, 0, 0, 0x10, static_cast<uint8_t>(slot)}};
    s.weight = weight;
    return s;
}

SnapshotSpec spec_with_weights(uint64_t gen, uint32_t w0, uint32_t w1, uint32_t w2) {
    SnapshotSpec spec;
    spec.generation = gen;
    spec.hash_seed = 1234;
    ServiceSpec s;
    s.id = 1;
    s.name = "web";
    s.vip = test::ip("198.18.1.1");
    s.port = 80;
    s.proto = FL_PROTO_TCP;
    s.table_size = 4099;
    s.servers = {server(0, "198.18.2.1", w0), server(1, "198.18.2.2", w1),
                 server(2, "198.18.2.3", w2)};
    spec.services.push_back(s);
    return spec;
}

WorkerConfig wcfg() {
    WorkerConfig c;
    c.own_mac = test::mac("02:00:00:00:00:aa");
    c.conn_capacity = 1 << 14;
    c.max_servers = 64;
    c.max_services = 8;
    return c;
}

int send(Worker& w, LoadedSnapshot& snap, uint16_t sport, uint8_t flags, uint32_t now) {
    test::PacketBuilder b;
    b.from("198.18.0.7", sport).to("198.18.1.1", 80).tcp(flags);
    test::FrameBuf fb(b.build());
    const Verdict v = w.process(fb.f, &snap, now);
    if (v.action != Action::forward) return -1;
    return fb.f.data[5];  // server slot, from the destination MAC
}

}  // namespace

TEST(WorkerHandover, RestoredConnectionsKeepTheirServersAfterAWeightChange) {
    auto s1 = LoadedSnapshot::load(build_snapshot(spec_with_weights(1, 1, 1, 1)), 1);
    ASSERT_TRUE(s1) << s1.error();
    Worker old(wcfg());
    std::map<uint16_t, int> first;
    constexpr uint16_t kFlows = 300;
    for (uint16_t i = 0; i < kFlows; ++i) {
        const uint16_t sport = static_cast<uint16_t>(20000 + i);
        first[sport] = send(old, *s1.value(), sport, tcpflag::kSyn, 100);
        ASSERT_GE(first[sport], 0);
        ASSERT_GE(send(old, *s1.value(), sport, tcpflag::kAck, 101), 0);
    }
    // Through the file format, as a restart does.
    ConnStateData d;
    std::vector<ConnExport> ex;
    old.conns().export_live(5000, ex);
    ASSERT_EQ(ex.size(), kFlows);
    for (const auto& e : ex) {
        ConnStateRecord r{};
        r.key = e.entry.key;
        r.server = e.entry.server;
        r.server_tag = e.entry.server_tag;
        r.idle_ms = e.idle_ms;
        r.state = static_cast<uint8_t>(e.state);
        d.entries.push_back(r);
    }
    auto back = decode_conn_state(encode_conn_state(d));
    ASSERT_TRUE(back) << back.error();

    // The same slots with very different weights: Maglev would move many flows.
    auto s2 = LoadedSnapshot::load(build_snapshot(spec_with_weights(2, 1, 1, 20)), 1);
    ASSERT_TRUE(s2) << s2.error();
    size_t moved_by_maglev = 0;
    {
        Worker blank(wcfg());
        for (const auto& [sport, srv] : first)
            moved_by_maglev += send(blank, *s2.value(), sport, tcpflag::kAck, 7) != srv;
    }
    EXPECT_GT(moved_by_maglev, kFlows / 4);  // what a restart without handover breaks

    Worker fresh(wcfg());
    for (const auto& r : back->entries)
        EXPECT_EQ(fresh.restore_connection({r.key, r.server, r.server_tag},
                                           static_cast<ConnState>(r.state), r.idle_ms, 7),
                  ConnRestore::restored);
    int64_t active = 0;
    for (uint32_t s = 0; s < 3; ++s) active += fresh.counters().servers[s].active.get_signed();
    EXPECT_EQ(active, kFlows);
    for (const auto& [sport, srv] : first)
        EXPECT_EQ(send(fresh, *s2.value(), sport, tcpflag::kAck, 8), srv) << sport;
    // A FIN moves the gauge from active to inactive, and expiry takes it back.
    send(fresh, *s2.value(), 20000, tcpflag::kFin | tcpflag::kAck, 9);
    EXPECT_EQ(fresh.counters().servers[first[20000]].inactive.get_signed(), 1);
    fresh.conns().clear();
    for (uint32_t s = 0; s < 3; ++s) {
        EXPECT_EQ(fresh.counters().servers[s].active.get_signed(), 0);
        EXPECT_EQ(fresh.counters().servers[s].inactive.get_signed(), 0);
    }
}

// A state file's slot is not trusted: the forwarding path indexes its route table by an
// entry's slot unchecked (LoadedSnapshot::kRouteSlots), so one that no snapshot has is refused;
// a slot the running snapshot lacks is restored and its flow picked again on its next packet.
TEST(WorkerHandover, RestoredSlotsBeyondEverySnapshotAreRefused) {
    auto s1 = LoadedSnapshot::load(build_snapshot(spec_with_weights(1, 1, 1, 1)), 1);
    ASSERT_TRUE(s1) << s1.error();
    Worker old(wcfg());
    const int picked = send(old, *s1.value(), 30000, tcpflag::kSyn, 100);
    ASSERT_GE(picked, 0);
    std::vector<ConnExport> ex;
    old.conns().export_live(200, ex);
    ASSERT_EQ(ex.size(), 1u);
    ConnEntry e = ex[0].entry;

    Worker fresh(wcfg());
    for (const uint32_t slot : {LoadedSnapshot::kRouteSlots, LoadedSnapshot::kRouteSlots + 1, ~uint32_t{0}}) {
        e.server = slot;
        EXPECT_EQ(fresh.restore_connection(e, ConnState::tcp_established, 0, 7), ConnRestore::invalid) << slot;
    }
    EXPECT_EQ(fresh.conns().size(), 0u);
    e.server = LoadedSnapshot::kRouteSlots - 1;
    ASSERT_EQ(fresh.restore_connection(e, ConnState::tcp_established, 0, 7), ConnRestore::restored);
    EXPECT_EQ(send(fresh, *s1.value(), 30000, tcpflag::kAck, 8), picked);
    ex.clear();
    fresh.conns().export_live(200, ex);
    ASSERT_EQ(ex.size(), 1u);
    EXPECT_EQ(ex[0].entry.server, static_cast<uint32_t>(picked));
}
