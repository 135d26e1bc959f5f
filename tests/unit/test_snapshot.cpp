#include <gtest/gtest.h>

#include <cstddef>
#include <random>
#include <set>

#include "fulcrum/snapshot.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using test::ip;
using test::mac;

namespace {

ServerSpec server(uint32_t slot, const std::string& addr, uint32_t weight = 1, bool backup = false) {
    ServerSpec s;
    s.slot = slot;
    s.addr = ip(addr);
    s.mac = mac("02:00:00:00:01:0" + std::to_string(slot % 10));
    s.weight = weight;
    s.backup = backup;
    return s;
}

SnapshotSpec sample() {
    SnapshotSpec spec;
    spec.generation = 42;
    spec.hash_seed = 0x5eed;
    spec.encap.src4 = IpPrefix::parse("198.18.255.0/24");
    ServiceSpec web;
    web.id = 3;
    web.name = "web";
    web.vip = ip("198.18.1.1");
    web.port = 80;
    web.table_size = 251;
    web.servers = {server(0, "198.18.2.1", 1), server(1, "198.18.2.2", 2), server(2, "198.18.2.3", 3)};
    ServiceSpec db;
    db.id = 7;
    db.name = "db-write";
    db.vip = ip("198.18.1.2");
    db.port = 5432;
    db.forwarding = Forwarding::ipip;
    db.table_size = 13;
    db.servers = {server(5, "198.18.3.1"), server(6, "198.18.3.2", 1, true)};
    spec.services = {web, db};
    return spec;
}

std::vector<uint8_t> build(const SnapshotSpec& s) { return build_snapshot(s); }

Expected<SnapshotView> open(const std::vector<uint8_t>& b, size_t max = kSnapshotDefaultMaxBytes) {
    return SnapshotView::open(b, max);
}

fl_snap_header& hdr(std::vector<uint8_t>& b) { return *reinterpret_cast<fl_snap_header*>(b.data()); }

}  // namespace

TEST(Snapshot, RoundTrip) {
    auto b = build(sample());
    auto v = open(b);
    ASSERT_TRUE(v) << v.error();
    EXPECT_EQ(v->generation(), 42u);
    EXPECT_EQ(v->header().hash_seed, 0x5eedu);
    ASSERT_EQ(v->services().size(), 2u);
    const auto& web = v->services()[0];
    EXPECT_STREQ(web.name, "web");
    EXPECT_EQ(web.port, 80);
    EXPECT_EQ(web.id, 3u);
    EXPECT_EQ(web.scheduler, FL_SCHED_MAGLEV);
    EXPECT_EQ(web.forwarding, FL_FWD_DSR);
    EXPECT_EQ(web.n_members, 3u);
    EXPECT_EQ(v->servers().size(), 7u);  // slots 0..6, 3 and 4 unused
    EXPECT_EQ(v->server(3), nullptr);
    ASSERT_NE(v->server(2), nullptr);
    EXPECT_EQ(v->server(2)->weight, 3u);
    EXPECT_EQ(v->server(2)->tag, server_tag(ip("198.18.2.3"), 80));
    EXPECT_EQ(v->server(2)->port, 80);
    // Maglev table shares follow weights 1:2:3.
    std::map<uint32_t, int> c;
    for (auto e : v->table(web)) ++c[e];
    EXPECT_NEAR(c[0], 251 / 6.0, 3);
    EXPECT_NEAR(c[2], 251 / 2.0, 3);
    // Encapsulation prefix.
    EXPECT_EQ(v->header().encap_src4_len, 24);
    EXPECT_EQ(v->header().encap_src4[2], 255);
    // Only the primary of db is in rotation; the backup waits.
    const auto& db = v->services()[1];
    ASSERT_EQ(db.n_members, 1u);
    EXPECT_EQ(v->members(db)[0].server, 5u);
    EXPECT_TRUE(v->server(6)->flags & FL_SERVER_BACKUP);
    EXPECT_FALSE(v->server(6)->flags & FL_SERVER_IN_ROTATION);
}

TEST(Snapshot, IdenticalSpecsGiveIdenticalBytes) { EXPECT_EQ(build(sample()), build(sample())); }

TEST(Snapshot, RotationUsesBackupsOnlyWhenNoPrimaryIsUsable) {
    ServiceSpec s;
    s.servers = {server(0, "198.18.2.1"), server(1, "198.18.2.2"), server(2, "198.18.2.3", 1, true),
                 server(3, "198.18.2.4", 1, true)};
    EXPECT_EQ(rotation_of(s), (std::vector<bool>{true, true, false, false}));
    s.servers[0].healthy = false;
    EXPECT_EQ(rotation_of(s), (std::vector<bool>{false, true, false, false}));
    s.servers[1].weight = 0;  // drained
    EXPECT_EQ(rotation_of(s), (std::vector<bool>{false, false, true, true}));
    s.servers[2].enabled = false;
    EXPECT_EQ(rotation_of(s), (std::vector<bool>{false, false, false, true}));
    s.servers[3].retired = true;
    EXPECT_EQ(rotation_of(s), (std::vector<bool>{false, false, false, false}));
    // An empty rotation builds an empty table, which the reader accepts.
    auto spec = sample();
    for (auto& srv : spec.services[0].servers) srv.healthy = false;
    auto b = build(spec);
    auto v = open(b);
    ASSERT_TRUE(v) << v.error();
    EXPECT_EQ(v->services()[0].n_members, 0u);
    for (auto e : v->table(v->services()[0])) EXPECT_EQ(e, FL_NO_SERVER);
}

TEST(Snapshot, BuilderRejectsInconsistentSpecs) {
    auto expect_error = [](SnapshotSpec s, const std::string& part) {
        try {
            build_snapshot(s);
            ADD_FAILURE() << "accepted; expected: " << part;
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
        }
    };
    auto s = sample();
    s.services[1].vip = s.services[0].vip;
    s.services[1].port = 80;
    s.services[1].forwarding = Forwarding::dsr;
    expect_error(s, "is also service #0 'web'");
    s = sample();
    s.services[1].servers[0].slot = 0;
    expect_error(s, "slot 0 used twice");
    s = sample();
    s.services[0].table_size = 250;
    expect_error(s, "must be a prime");
    s = sample();
    s.services[0].servers[0].addr = ip("2001:db8::1");
    expect_error(s, "address family differs");
    s = sample();
    s.encap.src4.reset();
    expect_error(s, "needs an encapsulation source prefix for IPv4");
    s = sample();
    s.services[0].name = std::string(60, 'x');
    expect_error(s, "name longer than");
    s = sample();
    s.services[1].id = 3;
    expect_error(s, "id 3 used twice");
    s = sample();
    s.services[0].servers[0].slot = FL_MAX_SERVERS;
    expect_error(s, "not below");
    s = sample();
    s.services[0].port = 0;
    expect_error(s, "port 0");
    s = sample();
    s.services[0].proto = 1;
    expect_error(s, "tcp or udp");
}

// ---- reader: every rejection has a reason ----

namespace {
void expect_rejected(std::vector<uint8_t> b, const std::string& part, bool reseal = true) {
    if (reseal && b.size() >= sizeof(fl_snap_header)) snapshot_seal(b);
    auto v = SnapshotView::open(b);
    ASSERT_FALSE(v) << "accepted; expected rejection for: " << part;
    EXPECT_NE(v.error().find(part), std::string::npos) << v.error();
}
}  // namespace

TEST(SnapshotReader, RejectsTruncatedAtEveryLength) {
    const auto b = build(sample());
    for (size_t n = 0; n < b.size(); n += (n < 300 ? 1 : 97)) {
        std::vector<uint8_t> t(b.begin(), b.begin() + static_cast<long>(n));
        EXPECT_FALSE(SnapshotView::open(t)) << n;
    }
}

TEST(SnapshotReader, RejectsHeaderProblems) {
    const auto good = build(sample());
    auto b = good;
    hdr(b).magic ^= 1;
    expect_rejected(b, "bad magic");
    b = good;
    hdr(b).version = 2;
    expect_rejected(b, "format version 2 is not supported");
    b = good;
    hdr(b).total_size += 1;
    expect_rejected(b, "were received");
    b = good;
    b.push_back(0);
    expect_rejected(b, "were received", false);
    b = good;
    hdr(b).header_size = 100;
    expect_rejected(b, "header size");
    b = good;
    hdr(b).flags = 1;
    expect_rejected(b, "unknown header flags");
    b = good;
    hdr(b).n_services = FL_MAX_SERVICES + 1;
    expect_rejected(b, "too many services");
    b = good;
    hdr(b).encap_src4_len = 33;
    expect_rejected(b, "prefix length");
    EXPECT_FALSE(SnapshotView::open(good, good.size() - 1));
    EXPECT_NE(SnapshotView::open(good, 100).error().find("above the limit"), std::string::npos);
}

TEST(SnapshotReader, ChecksumCatchesEveryFlippedByte) {
    const auto good = build(sample());
    for (size_t i = 0; i < good.size(); ++i) {
        auto b = good;
        b[i] ^= 0x40;
        auto v = SnapshotView::open(b);
        ASSERT_FALSE(v) << "byte " << i;
    }
}

TEST(SnapshotReader, RejectsBadSections) {
    const auto good = build(sample());
    auto b = good;
    hdr(b).servers_off += 8;
    expect_rejected(b, "servers section out of bounds or misaligned");
    b = good;
    hdr(b).tables_off = static_cast<uint32_t>(b.size() + 64);
    expect_rejected(b, "tables section");
    b = good;
    hdr(b).n_table_entries = 1u << 25;
    expect_rejected(b, "tables section");
    b = good;
    hdr(b).members_off = hdr(b).servers_off;
    expect_rejected(b, "overlap");
}

TEST(SnapshotReader, RejectsBadRecords) {
    const auto good = build(sample());
    auto v = open(good);
    ASSERT_TRUE(v);
    const size_t so = hdr(const_cast<std::vector<uint8_t>&>(good)).services_off;
    const size_t vo = hdr(const_cast<std::vector<uint8_t>&>(good)).servers_off;
    const size_t mo = hdr(const_cast<std::vector<uint8_t>&>(good)).members_off;
    const size_t to = hdr(const_cast<std::vector<uint8_t>&>(good)).tables_off;
    auto svc = [&](std::vector<uint8_t>& b, size_t i) -> fl_snap_service& {
        return reinterpret_cast<fl_snap_service*>(b.data() + so)[i];
    };
    auto srv = [&](std::vector<uint8_t>& b, size_t i) -> fl_snap_server& {
        return reinterpret_cast<fl_snap_server*>(b.data() + vo)[i];
    };
    auto b = good;
    svc(b, 0).proto = 1;
    expect_rejected(b, "service #0 'web': bad protocol");
    b = good;
    svc(b, 0).scheduler = 9;
    expect_rejected(b, "bad scheduler");
    b = good;
    svc(b, 1).forwarding = 0;
    expect_rejected(b, "bad forwarding mode");
    b = good;
    std::memset(svc(b, 0).name, 'x', FL_NAME_LEN);
    expect_rejected(b, "name not terminated");
    b = good;
    svc(b, 1).port = 80;
    std::memcpy(svc(b, 1).vip, svc(b, 0).vip, 16);
    svc(b, 1).forwarding = FL_FWD_DSR;
    expect_rejected(b, "duplicate VIP");
    b = good;
    svc(b, 0).table_size = 250;
    expect_rejected(b, "not a prime");
    b = good;
    svc(b, 0).n_members = 2;
    expect_rejected(b, "member count differs");
    b = good;
    svc(b, 0).members_off = 1000;
    expect_rejected(b, "members out of range");
    b = good;
    svc(b, 0).id = FL_MAX_SERVICES;
    expect_rejected(b, "bad or duplicate id");
    b = good;
    hdr(b).encap_src4_len = 0;
    expect_rejected(b, "encapsulation without a source prefix");
    b = good;
    srv(b, 0).flags |= 0x80;
    expect_rejected(b, "server slot 0: unknown flags");
    b = good;
    srv(b, 0).service = 9;
    expect_rejected(b, "service index out of range");
    b = good;
    srv(b, 1).family = 6;
    expect_rejected(b, "address family differs");
    b = good;
    srv(b, 1).tag = 0;
    expect_rejected(b, "zero tag");
    b = good;
    reinterpret_cast<fl_snap_member*>(b.data() + mo)[0].weight = 0;
    expect_rejected(b, "member slot 0 invalid");
    b = good;
    reinterpret_cast<uint32_t*>(b.data() + to)[5] = 5;  // db's server in web's table
    expect_rejected(b, "is not a member");
    b = good;
    reinterpret_cast<uint32_t*>(b.data() + to)[5] = FL_NO_SERVER;
    expect_rejected(b, "has holes");
    b = good;
    svc(b, 0).vip[9] = 1;
    expect_rejected(b, "IPv4 VIP with non-zero padding");
    b = good;
    srv(b, 0).addr[12] = 1;
    expect_rejected(b, "IPv4 address with non-zero padding");
    b = good;
    svc(b, 0).name[1] = '"';
    expect_rejected(b, "name has characters other than");
    b = good;
    svc(b, 1).forwarding = FL_FWD_GUE;
    hdr(b).gue_port = 0;
    expect_rejected(b, "GUE without a GUE port");
    b = good;
    hdr(b).mtu = 500;
    expect_rejected(b, "MTU 500 below 576");
}

TEST(SnapshotReader, EmptySectionsDoNotHideOverlaps) {
    // No members at all (every server down), so the members section is empty; put the
    // Maglev tables inside the server records: still an overlap.
    auto spec = sample();
    for (auto& svc : spec.services)
        for (auto& srv : svc.servers) srv.healthy = false;
    auto b = build(spec);
    ASSERT_EQ(hdr(b).n_members, 0u);
    hdr(b).members_off = hdr(b).servers_off + 64;
    hdr(b).tables_off = hdr(b).servers_off + 128;
    expect_rejected(b, "overlap");
}

TEST(SnapshotReaderProperty, RandomCorruptionNeverCrashes) {
    const auto good = build(sample());
    std::mt19937 rng(10);
    int accepted = 0;
    for (int iter = 0; iter < 3000; ++iter) {
        auto b = good;
        const int flips = 1 + static_cast<int>(rng() % 8);
        for (int k = 0; k < flips; ++k) {
            // Bias towards the header and records, where structure lives.
            const size_t at = rng() % 2 ? rng() % std::min<size_t>(b.size(), 1200) : rng() % b.size();
            b[at] = static_cast<uint8_t>(rng());
        }
        snapshot_seal(b);
        auto v = SnapshotView::open(b);
        if (v) {
            ++accepted;
            // Anything accepted is internally consistent: every table entry is a member.
            for (const auto& s : v->services())
                for (auto e : v->table(s)) {
                    if (e == FL_NO_SERVER) continue;
                    ASSERT_NE(v->server(e), nullptr);
                }
        }
    }
    EXPECT_LT(accepted, 3000);
}

TEST(SnapshotBuffer, IsAligned) {
    std::vector<uint8_t> b(1000, 1);
    SnapshotBuffer buf(std::span<const uint8_t>(b).subspan(1));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf.bytes().data()) % 64, 0u);
    EXPECT_EQ(buf.bytes().size(), 999u);
}
