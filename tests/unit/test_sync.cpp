#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "fulcrum/snapshot.hpp"
#include "fulcrum/spsc_ring.hpp"
#include "fulcrum/sync.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using test::ip;
using test::mac;

namespace {

// A keyed stand-in for HMAC-SHA256 (the real one lives in fulcrum_sync_auth and is tested in
// test_sync_auth.cpp): enough to exercise the trailer handling of the core codec, and
// different keys give different tags.
class TestAuth final : public SyncAuth {
public:
    explicit TestAuth(uint8_t key) : key_(key) {}
    void sign(std::span<const uint8_t> data, uint8_t* out) const override {
        uint64_t h[4] = {key_, key_ * 3u + 1, key_ * 7u + 5, key_ * 11u + 9};
        for (size_t i = 0; i < data.size(); ++i) h[i % 4] = (h[i % 4] ^ data[i]) * 0x100000001b3ull;
        std::memcpy(out, h, 32);
    }

private:
    uint8_t key_;
};

fl_sync_record rec_v4_tcp(uint16_t sport, uint8_t state = FL_SYNC_S_ESTABLISHED) {
    const IpAddr c = ip("198.18.0.10"), v = ip("198.18.1.1");
    const FlowKey k = make_key(c.bytes.data(), v.bytes.data(), false, FL_PROTO_TCP, sport, 80);
    return make_sync_record(k, state, 80, ip("198.18.2.1"), 80, 1234);
}

fl_sync_record rec_v6_udp(uint16_t sport) {
    const IpAddr c = ip("2001:db8::10"), v = ip("2001:db8:1::1");
    const FlowKey k = make_key(c.bytes.data(), v.bytes.data(), true, FL_PROTO_UDP, sport, 53);
    return make_sync_record(k, FL_SYNC_S_ESTABLISHED, 53, ip("2001:db8:2::1"), 5353, 77);
}

bool same(const fl_sync_record& a, const fl_sync_record& b) {
    return std::memcmp(&a, &b, sizeof a) == 0;
}

SyncSenderConfig sender(const SyncAuth* auth = nullptr, size_t max = FL_SYNC_DEFAULT_PAYLOAD) {
    SyncSenderConfig c;
    c.boot_id = 0x1122334455667788ull;
    c.config_digest = 0xabcdef;
    c.max_datagram = max;
    c.auth = auth;
    return c;
}

std::vector<uint8_t> one_datagram(const std::vector<fl_sync_record>& recs,
                                  const SyncAuth* auth = nullptr) {
    SyncEncoder enc(sender(auth));
    std::vector<std::vector<uint8_t>> out;
    EXPECT_EQ(enc.encode_records(recs, false, out), 1u);
    return out.at(0);
}

fl_sync_header header_of(const std::vector<uint8_t>& d) {
    fl_sync_header h;
    std::memcpy(&h, d.data(), sizeof h);
    return h;
}
void set_header(std::vector<uint8_t>& d, const fl_sync_header& h) {
    std::memcpy(d.data(), &h, sizeof h);
}

SyncError decode(const std::vector<uint8_t>& d, const SyncDecodeOptions& opt = {}) {
    SyncDatagram out;
    return decode_sync_datagram(d, opt, out);
}

}  // namespace

// ---- wire layout ----------------------------------------------------------------------------

TEST(Sync, HeaderFieldsAreLittleEndianAtFixedOffsets) {
    const auto d = one_datagram({rec_v4_tcp(1000)});
    ASSERT_EQ(d.size(), kSyncHeaderLen + kSyncRecordLen);
    EXPECT_EQ(std::memcmp(d.data(), "FSYC", 4), 0);
    EXPECT_EQ(d[4], FL_SYNC_VERSION);
    EXPECT_EQ(d[5], FL_SYNC_T_RECORDS);
    EXPECT_EQ(d[6] | d[7] << 8, 48);
    EXPECT_EQ(d[8] | d[9] << 8, 112);
    EXPECT_EQ(d[10] | d[11] << 8, 64);
    EXPECT_EQ(d[12] | d[13] << 8, 1);
    EXPECT_EQ(d[14] | d[15] << 8, 0);
    EXPECT_EQ(d[16], 0x88);  // boot id, low byte first
    EXPECT_EQ(d[23], 0x11);
    EXPECT_EQ(d[24], 1);  // first sequence
    // Record: ports little-endian, addresses in network order.
    const uint8_t* r = d.data() + 48;
    EXPECT_EQ(r[0], 4);
    EXPECT_EQ(r[1], 6);
    EXPECT_EQ(r[4] | r[5] << 8, 1000);
    EXPECT_EQ(r[16], 198);
    EXPECT_EQ(r[17], 18);
    EXPECT_EQ(r[19], 10);
}

// ---- round trips ----------------------------------------------------------------------------

TEST(Sync, RoundTripV4TcpAndV6Udp) {
    std::vector<fl_sync_record> recs = {rec_v4_tcp(1000), rec_v4_tcp(1001, FL_SYNC_S_CLOSING),
                                        rec_v4_tcp(1002, FL_SYNC_S_REMOVED), rec_v6_udp(4000)};
    const auto d = one_datagram(recs);
    SyncDatagram out;
    ASSERT_EQ(decode_sync_datagram(d, {}, out), SyncError::ok);
    EXPECT_EQ(out.header.type, FL_SYNC_T_RECORDS);
    EXPECT_EQ(out.header.boot_id, 0x1122334455667788ull);
    EXPECT_EQ(out.header.sequence, 1u);
    EXPECT_EQ(out.header.config_digest, 0xabcdefu);
    ASSERT_EQ(out.count(), recs.size());
    for (size_t i = 0; i < recs.size(); ++i) EXPECT_TRUE(same(out.record(i), recs[i])) << i;

    const fl_sync_record v6 = out.record(3);
    EXPECT_EQ(v6.family, FL_AF_INET6);
    EXPECT_EQ(v6.proto, FL_PROTO_UDP);
    EXPECT_EQ(sync_record_server(v6), ip("2001:db8:2::1"));
    EXPECT_EQ(v6.server_port, 5353);
    EXPECT_EQ(v6.service_port, 53);
    EXPECT_EQ(v6.idle_ms, 77u);
    EXPECT_EQ(conn_state_of(v6), ConnState::udp);
    const IpAddr c = ip("2001:db8::10"), v = ip("2001:db8:1::1");
    EXPECT_EQ(sync_record_key(v6),
              make_key(c.bytes.data(), v.bytes.data(), true, FL_PROTO_UDP, 4000, 53));

    EXPECT_EQ(conn_state_of(out.record(0)), ConnState::tcp_established);
    EXPECT_EQ(conn_state_of(out.record(1)), ConnState::tcp_closing);
    EXPECT_EQ(conn_state_of(out.record(2)), ConnState::empty);
    EXPECT_EQ(sync_record_server(out.record(0)), ip("198.18.2.1"));
}

TEST(Sync, BatchesAcrossDatagramsWithinTheSizeLimit) {
    std::vector<fl_sync_record> recs;
    for (uint16_t i = 0; i < 50; ++i) recs.push_back(i % 2 ? rec_v4_tcp(i) : rec_v6_udp(i));
    SyncEncoder enc(sender(nullptr, 1400));
    EXPECT_EQ(enc.records_per_datagram(), (1400u - 48u) / 64u);  // 21
    std::vector<std::vector<uint8_t>> out;
    ASSERT_EQ(enc.encode_records(recs, true, out), 3u);
    size_t seen = 0;
    for (size_t i = 0; i < out.size(); ++i) {
        EXPECT_LE(out[i].size(), 1400u);
        SyncDatagram d;
        ASSERT_EQ(decode_sync_datagram(out[i], {}, d), SyncError::ok);
        EXPECT_EQ(d.header.sequence, i + 1);
        EXPECT_EQ(d.header.flags, FL_SYNC_F_BULK);
        for (size_t j = 0; j < d.count(); ++j) EXPECT_TRUE(same(d.record(j), recs[seen + j]));
        seen += d.count();
    }
    EXPECT_EQ(seen, recs.size());
    EXPECT_EQ(out[2].size(), 48u + 8u * 64u);

    const auto end = enc.bulk_end(seen);
    SyncDatagram e;
    ASSERT_EQ(decode_sync_datagram(end, {}, e), SyncError::ok);
    EXPECT_EQ(e.header.type, FL_SYNC_T_BULK_END);
    EXPECT_EQ(e.header.aux, 50u);
    EXPECT_EQ(e.header.sequence, 4u);
    EXPECT_EQ(e.count(), 0u);

    const auto req = enc.bulk_request();
    ASSERT_EQ(decode_sync_datagram(req, {}, e), SyncError::ok);
    EXPECT_EQ(e.header.type, FL_SYNC_T_BULK_REQUEST);
    EXPECT_EQ(e.header.sequence, 5u);
}

TEST(Sync, SmallestAndLargestDatagramSizes) {
    std::vector<fl_sync_record> recs(3, rec_v4_tcp(7));
    SyncEncoder small(sender(nullptr, 48 + 64));
    std::vector<std::vector<uint8_t>> out;
    EXPECT_EQ(small.encode_records(recs, false, out), 3u);
    SyncEncoder big(sender(nullptr, FL_SYNC_MAX_DATAGRAM));
    EXPECT_EQ(big.records_per_datagram(), (FL_SYNC_MAX_DATAGRAM - 48u) / 64u);
    EXPECT_THROW(SyncEncoder(sender(nullptr, 48 + 63)), std::invalid_argument);
    TestAuth auth(1);
    EXPECT_THROW(SyncEncoder(sender(&auth, 48 + 64)), std::invalid_argument);
    EXPECT_THROW(SyncEncoder(sender(nullptr, FL_SYNC_MAX_DATAGRAM + 1)), std::invalid_argument);
    SyncSenderConfig zero = sender();
    zero.boot_id = 0;
    EXPECT_THROW(SyncEncoder{zero}, std::invalid_argument);
    EXPECT_NE(new_sync_boot_id(), 0u);
}

// ---- every decode error ---------------------------------------------------------------------

TEST(Sync, HeaderErrors) {
    const auto good = one_datagram({rec_v4_tcp(1)});
    ASSERT_EQ(decode(good), SyncError::ok);

    EXPECT_EQ(decode({}), SyncError::truncated);
    EXPECT_EQ(decode(std::vector<uint8_t>(good.begin(), good.begin() + 47)), SyncError::truncated);
    EXPECT_EQ(decode(std::vector<uint8_t>(good.begin(), good.end() - 1)), SyncError::truncated);
    auto longer = good;
    longer.push_back(0);
    EXPECT_EQ(decode(longer), SyncError::length_mismatch);

    auto mut = [&](auto f) {
        auto d = good;
        auto h = header_of(d);
        f(h);
        set_header(d, h);
        return decode(d);
    };
    EXPECT_EQ(mut([](fl_sync_header& h) { h.magic ^= 1; }), SyncError::bad_magic);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.version = 2; }), SyncError::bad_version);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.header_len = 56; }), SyncError::bad_header_len);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.record_len = 72; }), SyncError::bad_record_len);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.type = 0; }), SyncError::bad_type);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.type = 4; }), SyncError::bad_type);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.flags = 4; }), SyncError::bad_flags);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.count = 0; }), SyncError::bad_count);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.count = 2; }), SyncError::count_mismatch);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.flags = FL_SYNC_F_HMAC; }), SyncError::count_mismatch);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.aux = 1; }), SyncError::bad_aux);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.boot_id = 0; }), SyncError::bad_sequence);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.sequence = 0; }), SyncError::bad_sequence);
    EXPECT_EQ(mut([](fl_sync_header& h) { h.sequence = UINT64_MAX; }), SyncError::bad_sequence);

    SyncEncoder enc(sender());
    auto req = enc.bulk_request();
    auto h = header_of(req);
    h.flags = FL_SYNC_F_BULK;
    set_header(req, h);
    EXPECT_EQ(decode(req), SyncError::bad_flags);
    h.flags = 0;
    h.aux = 5;
    set_header(req, h);
    EXPECT_EQ(decode(req), SyncError::bad_aux);
    h.aux = 0;
    h.count = 1;
    set_header(req, h);
    EXPECT_EQ(decode(req), SyncError::bad_count);
}

TEST(Sync, ConfigDigestCheckedOnlyWhenAsked) {
    const auto d = one_datagram({rec_v4_tcp(1)});
    SyncDecodeOptions opt;
    opt.check_digest = true;
    opt.config_digest = 0xabcdef;
    EXPECT_EQ(decode(d, opt), SyncError::ok);
    opt.config_digest = 0xabcdee;
    EXPECT_EQ(decode(d, opt), SyncError::config_mismatch);
    opt.check_digest = false;
    EXPECT_EQ(decode(d, opt), SyncError::ok);
}

TEST(Sync, RecordErrorsNameTheRecord) {
    auto rec_err = [](auto f) {
        std::vector<fl_sync_record> recs = {rec_v4_tcp(1), rec_v6_udp(2), rec_v4_tcp(3)};
        f(recs[1]);
        const auto d = one_datagram(recs);
        SyncDatagram out;
        const SyncError e = decode_sync_datagram(d, {}, out);
        if (e != SyncError::ok) {
            EXPECT_EQ(out.bad_record, 1u);
            EXPECT_EQ(out.count(), 0u);  // nothing of a refused datagram is handed out
            EXPECT_NE(sync_error_message(e, out).find("record 1 of 3"), std::string::npos)
                << sync_error_message(e, out);
        }
        return e;
    };
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.family = 5; }), SyncError::bad_family);
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.family = 0; }), SyncError::bad_family);
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.proto = 1; }), SyncError::bad_proto);
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.state = 0; }), SyncError::bad_state);
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.state = 4; }), SyncError::bad_state);
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.state = FL_SYNC_S_CLOSING; }),
              SyncError::bad_state);  // UDP
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.server_family = 0; }),
              SyncError::bad_server_family);
    // IPv4 with bytes after the first 4: flow source, VIP, server.
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.family = 4; }), SyncError::bad_address);
    EXPECT_EQ(rec_err([](fl_sync_record& r) {
                  r.server_family = 4;
              }),
              SyncError::bad_address);
    EXPECT_EQ(rec_err([](fl_sync_record& r) {
                  r = rec_v4_tcp(9);
                  r.dst[15] = 1;
              }),
              SyncError::bad_address);
    EXPECT_EQ(rec_err([](fl_sync_record& r) { r.idle_ms = UINT32_MAX; }), SyncError::ok);
}

TEST(Sync, HmacPresentVerifiedAndRequired) {
    TestAuth key1(1), key2(2);
    const auto signed1 = one_datagram({rec_v4_tcp(1), rec_v6_udp(2)}, &key1);
    EXPECT_EQ(signed1.size(), 48u + 2 * 64u + 32u);
    EXPECT_EQ(header_of(signed1).flags, FL_SYNC_F_HMAC);
    SyncDecodeOptions with1, with2;
    with1.auth = &key1;
    with2.auth = &key2;
    SyncDatagram out;
    ASSERT_EQ(decode_sync_datagram(signed1, with1, out), SyncError::ok);
    EXPECT_EQ(out.count(), 2u);
    EXPECT_EQ(decode(signed1, with2), SyncError::bad_hmac);
    EXPECT_EQ(decode(signed1, {}), SyncError::hmac_unexpected);
    EXPECT_EQ(decode(one_datagram({rec_v4_tcp(1)}), with1), SyncError::hmac_missing);

    // Any changed bit, in the header, a record or the tag, fails verification.
    for (size_t i : {size_t{16}, size_t{24}, size_t{32}, size_t{48 + 12}, size_t{48 + 64 + 20},
                     signed1.size() - 1}) {
        auto bad = signed1;
        bad[i] ^= 0x40;
        EXPECT_EQ(decode(bad, with1), SyncError::bad_hmac) << i;
    }
    // An invalid record under a valid HMAC is refused for the record, after authentication.
    std::vector<fl_sync_record> recs = {rec_v4_tcp(1)};
    recs[0].proto = 99;
    EXPECT_EQ(decode(one_datagram(recs, &key1), with1), SyncError::bad_proto);
    EXPECT_EQ(decode(one_datagram(recs, &key1), with2), SyncError::bad_hmac);

    // Our own datagram sent back verifies (one key for both directions): refused by boot id,
    // after the HMAC (a forged one is still bad_hmac).
    SyncDecodeOptions own = with1;
    own.own_boot_id = header_of(signed1).boot_id;
    EXPECT_EQ(decode(signed1, own), SyncError::own_boot);
    auto forged = signed1;
    forged.back() ^= 1;
    EXPECT_EQ(decode(forged, own), SyncError::bad_hmac);
    own.own_boot_id = header_of(signed1).boot_id + 1;  // another balancer's
    EXPECT_EQ(decode(signed1, own), SyncError::ok);
}

TEST(Sync, ErrorNamesAndTexts) {
    for (size_t i = 0; i < kSyncErrorCount; ++i) {
        const auto e = static_cast<SyncError>(i);
        EXPECT_STRNE(sync_error_name(e), "unknown");
        EXPECT_STRNE(sync_error_text(e), "unknown error");
    }
    SyncDatagram d;
    EXPECT_EQ(sync_error_message(SyncError::ok, d), "sync datagram valid");
    EXPECT_EQ(sync_error_message(SyncError::bad_magic, d),
              "sync datagram refused (bad_magic): not a Fulcrum sync datagram (wrong magic)");
}

TEST(Sync, SourceAndTtlChecks) {
    const std::vector<IpAddr> peers = {ip("198.18.9.2"), ip("2001:db8:9::2")};
    EXPECT_EQ(check_sync_source(ip("198.18.9.2"), 255, peers), SyncError::ok);
    EXPECT_EQ(check_sync_source(ip("2001:db8:9::2"), 255, peers), SyncError::ok);
    EXPECT_EQ(check_sync_source(ip("198.18.9.2"), 254, peers), SyncError::bad_ttl);
    EXPECT_EQ(check_sync_source(ip("198.18.9.2"), 64, peers), SyncError::bad_ttl);
    EXPECT_EQ(check_sync_source(ip("198.18.9.3"), 255, peers), SyncError::unknown_source);
    EXPECT_EQ(check_sync_source(ip("198.18.9.2"), 255, {}), SyncError::unknown_source);
}

// ---- conversion with a snapshot -------------------------------------------------------------

namespace {
ServerSpec server(uint32_t slot, const std::string& addr, uint16_t port = 0) {
    ServerSpec s;
    s.slot = slot;
    s.addr = ip(addr);
    s.port = port;
    s.mac = mac("02:00:00:00:01:01");
    return s;
}

// Node A and node B configure the same services and servers under different slot numbers.
SnapshotSpec spec(bool node_b) {
    SnapshotSpec sp;
    sp.hash_seed = 0x5eed;
    sp.encap.src4 = IpPrefix::parse("198.18.255.0/24");
    sp.encap.src6 = IpPrefix::parse("2001:db8:ff::/64");
    ServiceSpec web;
    web.id = 1;
    web.name = "web";
    web.vip = ip("198.18.1.1");
    web.port = 80;
    web.table_size = 251;
    web.servers = {server(node_b ? 7 : 0, "198.18.2.1"),
                   server(node_b ? 3 : 1, "198.18.2.2", 8080)};
    ServiceSpec dns;
    dns.id = 2;
    dns.name = "dns";
    dns.vip = ip("2001:db8:1::1");
    dns.port = 53;
    dns.proto = FL_PROTO_UDP;
    dns.forwarding = Forwarding::ipip;
    dns.table_size = 251;
    dns.servers = {server(node_b ? 0 : 2, "2001:db8:2::1", 5353)};
    sp.services = {web, dns};
    return sp;
}

struct Loaded {
    std::vector<uint8_t> raw;
    SnapshotBuffer buf;
    SnapshotView view;
    explicit Loaded(const SnapshotSpec& s)
        : raw(build_snapshot(s)), buf(raw), view(SnapshotView::open(buf.bytes()).value()) {}
};
}  // namespace

TEST(Sync, EntriesTravelByServerIdentityNotSlot) {
    const Loaded a(spec(false)), b(spec(true));
    const SyncServerIndex index_b(b.view);
    EXPECT_EQ(index_b.size(), 3u);

    const IpAddr c4 = ip("198.18.0.10"), v4 = ip("198.18.1.1");
    const IpAddr c6 = ip("2001:db8::10"), v6 = ip("2001:db8:1::1");
    struct Case {
        ConnEntry e;
        ConnState st;
        uint32_t slot_b;
    };
    const Case cases[] = {
        {{make_key(c4.bytes.data(), v4.bytes.data(), false, FL_PROTO_TCP, 40000, 80), 1,
          server_tag(ip("198.18.2.2"), 8080)},
         ConnState::tcp_established, 3},
        {{make_key(c4.bytes.data(), v4.bytes.data(), false, FL_PROTO_TCP, 40001, 80), 0,
          server_tag(ip("198.18.2.1"), 80)},
         ConnState::tcp_closing, 7},
        {{make_key(c6.bytes.data(), v6.bytes.data(), true, FL_PROTO_UDP, 5000, 53), 2,
          server_tag(ip("2001:db8:2::1"), 5353)},
         ConnState::udp, 0},
    };
    for (const Case& c : cases) {
        const auto st = sync_state_of(c.st);
        ASSERT_TRUE(st);
        fl_sync_record r;
        ASSERT_TRUE(sync_record_from_entry(a.view, c.e, *st, 500, r));
        EXPECT_EQ(validate_sync_record(r), SyncError::ok);
        EXPECT_EQ(r.idle_ms, 500u);
        ConnEntry got;
        ConnState got_state;
        ASSERT_TRUE(conn_entry_from_sync(r, index_b, got, got_state));
        EXPECT_EQ(got.key, c.e.key);
        EXPECT_EQ(got.server, c.slot_b);
        EXPECT_EQ(got.server_tag, c.e.server_tag);  // tags derive from identity: equal on both
        EXPECT_EQ(got_state, c.st);
    }

    // A stale entry (slot reused by another server, or gone) has no identity to send.
    ConnEntry stale = cases[0].e;
    stale.server_tag ^= 1;
    fl_sync_record r;
    EXPECT_FALSE(sync_record_from_entry(a.view, stale, FL_SYNC_S_ESTABLISHED, 0, r));
    stale = cases[0].e;
    stale.server = 9;
    EXPECT_FALSE(sync_record_from_entry(a.view, stale, FL_SYNC_S_ESTABLISHED, 0, r));

    // Unknown here: another server port, another service port, another VIP.
    ASSERT_TRUE(sync_record_from_entry(a.view, cases[0].e, FL_SYNC_S_ESTABLISHED, 0, r));
    ConnEntry got;
    ConnState gs;
    for (int i = 0; i < 3; ++i) {
        fl_sync_record u = r;
        if (i == 0) u.server_port = 8081;
        if (i == 1) u.service_port = 81;
        if (i == 2) u.dst[3] = 2;
        EXPECT_FALSE(conn_entry_from_sync(u, index_b, got, gs)) << i;
    }

    EXPECT_FALSE(sync_state_of(ConnState::tcp_new));
    EXPECT_FALSE(sync_state_of(ConnState::empty));
}

TEST(Sync, ConfigDigestIgnoresSlotsButNotIdentities) {
    const Loaded a(spec(false)), b(spec(true));
    EXPECT_EQ(sync_config_digest(a.view), sync_config_digest(b.view));
    auto other = spec(true);
    other.services[0].servers[1].port = 8081;
    EXPECT_NE(sync_config_digest(Loaded(other).view), sync_config_digest(a.view));
    other = spec(true);
    other.hash_seed = 1;
    EXPECT_NE(sync_config_digest(Loaded(other).view), sync_config_digest(a.view));
    other = spec(true);
    other.services[1].port = 54;
    EXPECT_NE(sync_config_digest(Loaded(other).view), sync_config_digest(a.view));
    other = spec(true);
    other.generation = 99;
    other.services[0].servers[0].weight = 5;
    EXPECT_EQ(sync_config_digest(Loaded(other).view), sync_config_digest(a.view));
}

// ---- sequence tracking ----------------------------------------------------------------------

TEST(SyncSeq, InOrderGapsOldAndReboots) {
    SyncSeqTracker t;
    EXPECT_FALSE(t.has_peer());
    auto r = t.observe(100, 1);
    EXPECT_EQ(r.verdict, SyncSeq::first);
    EXPECT_TRUE(r.accept);
    EXPECT_TRUE(r.resync);  // a node learning of its peer asks for the whole table
    r = t.observe(100, 2);
    EXPECT_EQ(r.verdict, SyncSeq::in_order);
    EXPECT_TRUE(r.accept);
    EXPECT_FALSE(r.resync);
    r = t.observe(100, 6);
    EXPECT_EQ(r.verdict, SyncSeq::gap);
    EXPECT_TRUE(r.accept);
    EXPECT_TRUE(r.resync);
    EXPECT_EQ(r.lost, 3u);
    EXPECT_EQ(t.observe(100, 7).verdict, SyncSeq::in_order);
    for (uint64_t s : {7u, 4u, 1u}) {
        r = t.observe(100, s);
        EXPECT_EQ(r.verdict, SyncSeq::old) << s;
        EXPECT_FALSE(r.accept);
        EXPECT_FALSE(r.resync);
    }
    EXPECT_EQ(t.expected(), 8u);

    r = t.observe(200, 1);  // the peer restarted
    EXPECT_EQ(r.verdict, SyncSeq::reboot);
    EXPECT_TRUE(r.accept);
    EXPECT_TRUE(r.resync);
    EXPECT_EQ(t.peer_boot_id(), 200u);
    r = t.observe(100, 8);  // the old boot's datagrams (late or replayed) are refused
    EXPECT_EQ(r.verdict, SyncSeq::stale_boot);
    EXPECT_FALSE(r.accept);
    EXPECT_EQ(t.observe(200, 2).verdict, SyncSeq::in_order);
    // A restarted peer's first datagram need not be sequence 1 (it may have been lost).
    EXPECT_EQ(t.observe(300, 5).verdict, SyncSeq::reboot);
    EXPECT_EQ(t.observe(300, 6).verdict, SyncSeq::in_order);

    const auto& s = t.stats();
    EXPECT_EQ(s.accepted, 8u);
    EXPECT_EQ(s.gaps, 1u);
    EXPECT_EQ(s.lost, 3u);
    EXPECT_EQ(s.old, 3u);
    EXPECT_EQ(s.reboots, 2u);
    EXPECT_EQ(s.stale_boot, 1u);

    t.reset();  // e.g. after this node's own restart of sync
    EXPECT_EQ(t.observe(300, 9).verdict, SyncSeq::first);
    EXPECT_EQ(t.observe(200, 3).verdict, SyncSeq::stale_boot);
}

TEST(SyncSeq, RetiredBootsAreBounded) {
    SyncSeqTracker t;
    for (uint64_t b = 1; b <= SyncSeqTracker::kRetiredBoots + 2; ++b) t.observe(b, 1);
    // The most recent kRetiredBoots boots before the current one are remembered; older ones are
    // forgotten (bounded memory) and would count as a reboot.
    EXPECT_EQ(t.observe(SyncSeqTracker::kRetiredBoots + 1, 2).verdict, SyncSeq::stale_boot);
    EXPECT_EQ(t.observe(3, 2).verdict, SyncSeq::stale_boot);
    EXPECT_EQ(t.observe(1, 2).verdict, SyncSeq::reboot);
}

TEST(SyncSeq, EncoderSequencesTrackCleanly) {
    SyncEncoder enc(sender());
    SyncSeqTracker t;
    std::vector<std::vector<uint8_t>> out;
    std::vector<fl_sync_record> recs(100, rec_v4_tcp(1));
    enc.encode_records(recs, false, out);
    out.push_back(enc.bulk_end(100));
    size_t resyncs = 0;
    for (size_t i = 0; i < out.size(); ++i) {
        if (i == 2) continue;  // lost on the way
        SyncDatagram d;
        ASSERT_EQ(decode_sync_datagram(out[i], {}, d), SyncError::ok);
        const auto r = t.observe(d.header.boot_id, d.header.sequence);
        EXPECT_TRUE(r.accept);
        resyncs += r.resync;
    }
    EXPECT_EQ(resyncs, 2u);  // the first datagram and the gap
    EXPECT_EQ(t.stats().lost, 1u);
}

// ---- SPSC ring ------------------------------------------------------------------------------

TEST(SpscRing, CapacityRoundsUpAndFullPushesAreRefused) {
    EXPECT_THROW(SpscRing<uint32_t>(0), std::invalid_argument);
    EXPECT_THROW(SpscRing<uint32_t>(SpscRing<uint32_t>::kMaxCapacity + 1), std::invalid_argument);
    SpscRing<fl_sync_record> ring(5);
    ASSERT_EQ(ring.capacity(), 8u);
    EXPECT_TRUE(ring.empty());
    fl_sync_record out;
    EXPECT_FALSE(ring.pop(out));
    for (uint16_t i = 0; i < 8; ++i) EXPECT_TRUE(ring.push(rec_v4_tcp(i)));
    EXPECT_EQ(ring.size(), 8u);
    EXPECT_FALSE(ring.push(rec_v4_tcp(99)));  // full: refused, nothing overwritten
    ASSERT_TRUE(ring.pop(out));
    EXPECT_EQ(out.src_port, 0);
    EXPECT_TRUE(ring.push(rec_v4_tcp(8)));  // one slot freed, one push fits
    EXPECT_FALSE(ring.push(rec_v4_tcp(99)));
    fl_sync_record bulk[16];
    ASSERT_EQ(ring.pop_bulk(bulk, 16), 8u);
    for (uint16_t i = 0; i < 8; ++i) EXPECT_EQ(bulk[i].src_port, i + 1);
    EXPECT_EQ(ring.pop_bulk(bulk, 16), 0u);
    EXPECT_TRUE(ring.empty());
}

TEST(SpscRing, TwoThreadsEveryItemOnceInOrder) {
    // The producer retries a refused push (bounded by a deadline), so nothing is dropped and the
    // consumer must see 0..N-1 exactly once, in order, across many wraps of a small ring.
    constexpr uint64_t kN = 500'000;
    SpscRing<uint64_t> ring(64);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::atomic<bool> timed_out{false};
    uint64_t refused = 0;
    std::thread producer([&] {
        for (uint64_t i = 0; i < kN && !timed_out.load(std::memory_order_relaxed);) {
            if (ring.push(i)) {
                ++i;
            } else {
                ++refused;
                if ((refused & 0xFFF) == 0 && std::chrono::steady_clock::now() > deadline)
                    timed_out = true;
            }
        }
    });
    uint64_t expect = 0, errors = 0, polls = 0;
    uint64_t buf[32];
    while (expect < kN && !timed_out.load(std::memory_order_relaxed)) {
        const size_t n = (polls++ & 1) ? ring.pop_bulk(buf, 32) : (ring.pop(buf[0]) ? 1 : 0);
        for (size_t i = 0; i < n; ++i) errors += buf[i] != expect++;
        if (n == 0 && (polls & 0xFFF) == 0 && std::chrono::steady_clock::now() > deadline)
            timed_out = true;
    }
    producer.join();
    ASSERT_FALSE(timed_out.load());
    EXPECT_EQ(expect, kN);
    EXPECT_EQ(errors, 0u);
    EXPECT_TRUE(ring.empty());
}

TEST(SpscRing, TwoThreadsDropsAreCountedNeverDuplicated) {
    // The producer never waits (as a worker): refused pushes are counted drops. Whatever the
    // consumer gets must be strictly increasing (no duplicate, no reordering), and received +
    // dropped must be everything pushed.
    constexpr uint64_t kN = 1'000'000;
    SpscRing<uint64_t> ring(16);
    std::atomic<bool> done{false};
    uint64_t dropped = 0;
    std::thread producer([&] {
        for (uint64_t i = 0; i < kN; ++i) dropped += !ring.push(i);
        done.store(true, std::memory_order_release);
    });
    uint64_t received = 0, disorder = 0;
    int64_t last = -1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool timed_out = false;
    for (uint64_t polls = 0;; ++polls) {
        const bool finished = done.load(std::memory_order_acquire);
        uint64_t v;
        bool any = false;
        while (ring.pop(v)) {
            any = true;
            disorder += static_cast<int64_t>(v) <= last;
            last = static_cast<int64_t>(v);
            ++received;
        }
        if (finished && !any) break;  // producer done and ring drained after it finished
        if ((polls & 0xFFF) == 0 && std::chrono::steady_clock::now() > deadline) {
            timed_out = true;
            break;
        }
    }
    producer.join();
    ASSERT_FALSE(timed_out);
    EXPECT_EQ(disorder, 0u);
    EXPECT_EQ(received + dropped, kN);
    EXPECT_GT(received, 0u);
}
