// fulcrumd's connection-sync peer: two SyncPeer instances on loopback with in-memory dataplanes,
// and a hand-driven test socket where a test needs to forge the peer (sequence gaps, unknown
// sources, a wrong TTL).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "fulcrum/control/sync_peer.hpp"
#include "fulcrum/sync.hpp"
#include "fulcrum/sync_auth.hpp"

using namespace fulcrum;
using namespace fulcrum::control;
using namespace std::chrono_literals;

namespace {

template <class P>
bool eventually(P pred, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(1ms);  // polling the state, not waiting for time to pass
    }
    return pred();
}

// A flow record for client port `i` (198.18.0.0/15 addresses).
fl_sync_record rec(uint16_t i) {
    fl_sync_record r{};
    r.family = 4;
    r.proto = 6;
    r.state = FL_SYNC_S_ESTABLISHED;
    r.server_family = 4;
    r.src_port = i;
    r.dst_port = 80;
    r.service_port = 80;
    r.server_port = 8080;
    r.idle_ms = 5;
    const uint8_t src[4] = {198, 18, 0, 1}, dst[4] = {198, 18, 1, 1}, srv[4] = {198, 18, 2, 1};
    std::memcpy(r.src, src, 4);
    std::memcpy(r.dst, dst, 4);
    std::memcpy(r.server_addr, srv, 4);
    return r;
}

class FakeDataplane final : public SyncDataplane {
  public:
    void push(std::span<const fl_sync_record> r) {
        std::lock_guard lk(mu_);
        to_drain_.insert(to_drain_.end(), r.begin(), r.end());
    }
    void set_table(std::vector<fl_sync_record> t) {
        std::lock_guard lk(mu_);
        table_ = std::move(t);
    }
    size_t installed() const {
        std::lock_guard lk(mu_);
        return installed_.size();
    }
    std::set<uint16_t> installed_ports() const {
        std::lock_guard lk(mu_);
        std::set<uint16_t> s;
        for (const auto& r : installed_) s.insert(r.src_port);
        return s;
    }
    uint64_t dumps() const {
        std::lock_guard lk(mu_);
        return dumps_;
    }
    uint64_t drains() const {
        std::lock_guard lk(mu_);
        return drains_;
    }

    Expected<std::vector<fl_sync_record>> drain(size_t max, uint32_t) override {
        std::lock_guard lk(mu_);
        ++drains_;
        const size_t n = std::min(max, to_drain_.size());
        std::vector<fl_sync_record> out(to_drain_.begin(),
                                        to_drain_.begin() + static_cast<long>(n));
        to_drain_.erase(to_drain_.begin(), to_drain_.begin() + static_cast<long>(n));
        return out;
    }
    Expected<SyncInstallResult> install(std::span<const fl_sync_record> r) override {
        std::lock_guard lk(mu_);
        installed_.insert(installed_.end(), r.begin(), r.end());
        SyncInstallResult res;
        res.queued = r.size();
        return res;
    }
    Expected<std::vector<fl_sync_record>> dump() override {
        std::lock_guard lk(mu_);
        ++dumps_;
        return table_;
    }

  private:
    mutable std::mutex mu_;
    std::vector<fl_sync_record> to_drain_, installed_, table_;
    uint64_t dumps_ = 0, drains_ = 0;
};

const IpAddr kLo = *IpAddr::parse("127.0.0.1");

// A UDP socket driven by the test.
class TestSocket {
  public:
    TestSocket(const IpAddr& addr, int ttl) {
        fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        EXPECT_GE(fd_, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        std::memcpy(&a.sin_addr, addr.bytes.data(), 4);
        EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0)
            << std::strerror(errno);
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        EXPECT_EQ(::setsockopt(fd_, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl), 0);
    }
    ~TestSocket() { ::close(fd_); }
    uint16_t port() const { return port_; }
    void send(const std::vector<uint8_t>& d, uint16_t to) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(to);
        std::memcpy(&a.sin_addr, kLo.bytes.data(), 4);
        ASSERT_EQ(::sendto(fd_, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof a),
                  static_cast<ssize_t>(d.size()));
    }
    std::optional<fl_sync_header> recv_type(uint8_t type, std::chrono::milliseconds timeout = 5s) {
        const auto bytes = recv_bytes(type, timeout);
        if (!bytes) return std::nullopt;
        fl_sync_header h;
        std::memcpy(&h, bytes->data(), sizeof h);
        return h;
    }
    // The next datagram of `type`, skipping others, within `timeout`.
    std::optional<std::vector<uint8_t>> recv_bytes(uint8_t type, std::chrono::milliseconds timeout = 5s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        std::vector<uint8_t> buf(65536);
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
            if (n < static_cast<ssize_t>(kSyncHeaderLen)) continue;
            SyncDatagram d;
            // Signed ones too: the test reads them without the key.
            const SyncError e = decode_sync_datagram({buf.data(), static_cast<size_t>(n)}, {}, d);
            if (e != SyncError::ok && e != SyncError::hmac_unexpected) continue;
            if (d.header.type == type) return std::vector<uint8_t>(buf.begin(), buf.begin() + n);
        }
    }

  private:
    int fd_ = -1;
    uint16_t port_ = 0;
};

// Two distinct free UDP ports on 127.0.0.1.
std::pair<uint16_t, uint16_t> free_ports() {
    TestSocket a(kLo, 64), b(kLo, 64);
    return {a.port(), b.port()};
}

class TempKeys {
  public:
    TempKeys() {
        char tmpl[] = "/tmp/fulcrum-sync-test-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
    }
    ~TempKeys() { std::filesystem::remove_all(dir_); }
    std::string write(const std::string& name, const std::string& key) {
        const std::string p = dir_ + "/" + name;
        std::ofstream(p) << key << "\n";
        ::chmod(p.c_str(), 0600);
        return p;
    }

  private:
    std::string dir_;
};

SyncPeerConfig config(uint16_t port, uint16_t peer_port) {
    SyncPeerConfig c;
    c.local = kLo;
    // The peer is on the same loopback address; distinct ports tell the two apart.
    c.peer = *IpAddr::parse("127.0.0.1");
    c.port = port;
    c.peer_port = peer_port;
    c.drain_min = 1ms;
    c.drain_max = 20ms;
    c.bulk_retry = 50ms;
    c.bulk_timeout = 300ms;
    return c;
}

// The digest both test peers run. A SyncPeer syncs nothing before its first
// set_config_digest (fulcrumd's first publish): run() gives it one and starts it.
constexpr uint64_t kDigest = 0x5eed5eed5eed5eedull;
void run(SyncPeer& p) {
    p.set_config_digest(kDigest);
    p.start();
}

// The sender settings of a peer the test forges: boot id `boot`, the test peers' digest.
SyncSenderConfig forged_peer(uint64_t boot, const SyncAuth* auth = nullptr) {
    SyncSenderConfig sc;
    sc.boot_id = boot;
    sc.config_digest = kDigest;
    sc.auth = auth;
    return sc;
}

}  // namespace

// On loopback both peers are 127.0.0.1 and only the ports differ: validate() refuses only a
// peer that is this very socket (address and port).
TEST(SyncPeer, ConfigValidation) {
    SyncPeerConfig c = config(40000, 40001);
    EXPECT_NO_THROW(validate(c));
    c.peer_port = 40000;
    EXPECT_THROW(validate(c), std::invalid_argument);  // itself
    c = config(40000, 40001);
    c.peer = *IpAddr::parse("::1");
    EXPECT_THROW(validate(c), std::invalid_argument);  // families differ
    c = config(40000, 40001);
    c.local = *IpAddr::parse("fe80::1");
    c.peer = *IpAddr::parse("fe80::2");
    EXPECT_THROW(validate(c), std::invalid_argument);  // link-local: no zone
    c.local = *IpAddr::parse("2001:db8::1");
    c.peer = *IpAddr::parse("2001:db8::2");
    EXPECT_NO_THROW(validate(c));
    c = config(40000, 40001);
    c.rate = 0;
    EXPECT_THROW(validate(c), std::invalid_argument);
    c = config(40000, 40001);
    c.max_datagram = 100;
    EXPECT_THROW(validate(c), std::invalid_argument);
    c = config(40000, 40001);
    c.drain_max = 0ms;
    EXPECT_THROW(validate(c), std::invalid_argument);
}

TEST(SyncPeer, ParsesDataplaneReplies) {
    std::vector<uint8_t> two(2 * kSyncRecordLen);
    const fl_sync_record r = rec(7);
    std::memcpy(two.data() + kSyncRecordLen, &r, sizeof r);
    auto p = parse_sync_records(two, "sync_drain");
    ASSERT_TRUE(p) << p.error();
    ASSERT_EQ(p->size(), 2u);
    EXPECT_EQ((*p)[1].src_port, 7);
    two.pop_back();
    EXPECT_FALSE(parse_sync_records(two, "sync_drain"));
    const std::string ok = R"({"queued": 3, "invalid": 1, "unknown_server": 2, "ring_full": 0})";
    auto i = parse_sync_install_reply({reinterpret_cast<const uint8_t*>(ok.data()), ok.size()});
    ASSERT_TRUE(i) << i.error();
    EXPECT_EQ(i->queued, 3u);
    EXPECT_EQ(i->unknown_server, 2u);
    const std::string bad = R"({"queued": -1})";
    EXPECT_FALSE(
        parse_sync_install_reply({reinterpret_cast<const uint8_t*>(bad.data()), bad.size()}));
}

TEST(SyncPeer, RecordsDrainedOnAAreInstalledOnB) {
    auto [pa, pb] = free_ports();
    FakeDataplane da, db;
    SyncPeer a(config(pa, pb), da), b(config(pb, pa), db);
    run(a);
    run(b);
    std::vector<fl_sync_record> recs;
    for (uint16_t i = 1; i <= 100; ++i) recs.push_back(rec(i));
    da.push(recs);
    // Counters are taken after the send / install they count: wait for them too.
    ASSERT_TRUE(eventually([&] {
        return db.installed() >= 100 && a.stats().records_sent >= 100 && b.stats().installed >= 100;
    }));
    EXPECT_EQ(db.installed_ports().size(), 100u);
    const auto sa = a.stats(), sb = b.stats();
    EXPECT_EQ(sa.records_drained, 100u);
    EXPECT_EQ(sa.records_sent, 100u);
    EXPECT_GE(sa.send_lag.samples, 5u);  // 100 records, at most 21 per datagram
    EXPECT_GE(sb.install_time.samples, 5u);
    EXPECT_EQ(sb.installed, 100u);
    EXPECT_EQ(sb.peer_boot_id, a.boot_id());
    for (size_t e = 0; e < kSyncErrorCount; ++e)
        EXPECT_EQ(sb.refused[e], 0u) << sync_error_name(static_cast<SyncError>(e));
    EXPECT_EQ(da.installed(), 0u);  // nothing flowed back
}

TEST(SyncPeer, NewPeerGetsBulkAndCompletes) {
    auto [pa, pb] = free_ports();
    FakeDataplane da, db;
    std::vector<fl_sync_record> table;
    for (uint16_t i = 1; i <= 500; ++i) table.push_back(rec(i));
    da.set_table(table);
    SyncPeer a(config(pa, pb), da);
    run(a);
    // A is alone: its own bulk request goes unanswered.
    ASSERT_TRUE(eventually([&] { return a.stats().bulk_requests_sent >= 1; }));
    EXPECT_FALSE(a.bulk_complete());

    SyncPeer b(config(pb, pa), db);
    EXPECT_FALSE(b.bulk_complete());
    run(b);
    ASSERT_TRUE(eventually([&] { return b.bulk_complete(); }));
    EXPECT_EQ(db.installed_ports().size(), 500u);
    // A counts what it sent after sending it.
    ASSERT_TRUE(eventually([&] { return a.stats().bulk_served >= 1; }));
    const auto sa = a.stats(), sb = b.stats();
    EXPECT_GE(sa.bulk_requests_received, 1u);
    EXPECT_GE(sa.bulk_records_sent, 500u);
    EXPECT_GE(sb.bulk_records_received, 500u);
    EXPECT_GE(sb.bulk_requests_sent, 1u);
    // B's table (empty) goes to A the same way: A completes too.
    ASSERT_TRUE(eventually([&] { return a.bulk_complete(); }));
}

TEST(SyncPeer, PeerRestartTriggersBulkRequest) {
    auto [pa, pb] = free_ports();
    FakeDataplane da, db;
    da.set_table({rec(1), rec(2), rec(3)});
    SyncPeer b(config(pb, pa), db);
    auto a = std::make_unique<SyncPeer>(config(pa, pb), da);
    run(b);
    run(*a);
    ASSERT_TRUE(eventually([&] { return b.bulk_complete(); }));
    const uint64_t dumps_before = da.dumps();
    const uint64_t requests_before = b.stats().bulk_requests_sent;
    const uint64_t old_boot = a->boot_id();
    a.reset();  // stops A

    da.set_table({rec(1), rec(2), rec(3), rec(4)});
    SyncPeer a2(config(pa, pb), da);
    ASSERT_NE(a2.boot_id(), old_boot);
    run(a2);
    ASSERT_TRUE(eventually([&] {
        const auto s = b.stats();
        return s.peer_boot_id == a2.boot_id() && s.seq_reboots == 1 && b.bulk_complete();
    }));
    EXPECT_GT(b.stats().bulk_requests_sent, requests_before);
    EXPECT_GT(da.dumps(), dumps_before);
    EXPECT_EQ(db.installed_ports().count(4), 1u);
}

// Before fulcrumd's first publish the dataplane has no snapshot and the peer's datagrams would
// carry no configuration digest: the peer sends, drains and installs nothing. The records that
// arrive are counted and left to the bulk resync, and the peer's bulk request is answered once
// the digest is set, followed by a request of its own.
TEST(SyncPeer, NothingSyncedBeforeTheFirstPublish) {
    TestSocket t(kLo, 255);  // plays the peer
    auto [pb, unused] = free_ports();
    (void)unused;
    FakeDataplane db;
    db.set_table({rec(7), rec(8)});
    db.push(std::vector<fl_sync_record>{rec(9)});
    auto cb = config(pb, t.port());
    cb.bulk_timeout = 60s;
    SyncPeer b(cb, db);
    b.start();  // no set_config_digest yet

    SyncEncoder enc(forged_peer(0x5151));
    const fl_sync_record r1[] = {rec(1)};
    std::vector<std::vector<uint8_t>> d;
    enc.encode_records(r1, false, d);  // seq 1
    t.send(d[0], b.local_port());
    t.send(enc.bulk_request(), b.local_port());  // seq 2
    ASSERT_TRUE(eventually([&] {
        const auto s = b.stats();
        return s.records_before_publish == 1 && s.bulk_requests_received == 1;
    }));
    auto s = b.stats();
    EXPECT_EQ(s.records_received, 1u);
    EXPECT_EQ(s.datagrams_sent, 0u);
    EXPECT_EQ(s.bulk_requests_sent, 0u);
    EXPECT_EQ(s.install_failed + s.dataplane_errors, 0u);
    EXPECT_EQ(db.installed(), 0u);
    EXPECT_EQ(db.dumps(), 0u);
    EXPECT_EQ(db.drains(), 0u);

    b.set_config_digest(kDigest);  // the first publish
    const auto req = t.recv_type(FL_SYNC_T_BULK_REQUEST);
    ASSERT_TRUE(req) << "no bulk request after the first publish";
    EXPECT_EQ(req->config_digest, kDigest);
    const auto end = t.recv_type(FL_SYNC_T_BULK_END);
    ASSERT_TRUE(end) << "the bulk request that arrived before the publish was not answered";
    EXPECT_EQ(end->aux, 2u);  // the dump taken after the publish
    EXPECT_EQ(db.dumps(), 1u);
    ASSERT_TRUE(eventually([&] { return b.stats().records_drained == 1; }));

    // The peer's bulk answer brings back the record dropped before the publish.
    d.clear();
    enc.encode_records(std::vector<fl_sync_record>{rec(1), rec(2)}, true, d);  // seq 3
    t.send(d[0], b.local_port());
    t.send(enc.bulk_end(2), b.local_port());  // seq 4
    ASSERT_TRUE(eventually([&] { return b.bulk_complete(); }));
    EXPECT_EQ(db.installed_ports(), (std::set<uint16_t>{1, 2}));
    s = b.stats();
    EXPECT_EQ(s.records_before_publish, 1u);
    EXPECT_EQ(s.install_failed + s.dataplane_errors, 0u);
    EXPECT_EQ(s.bulk_requests_sent, 1u);
}

// Both balancers sign with one key, so a datagram of A's sent back to A from B's address
// verifies. It is refused by its boot id: it neither retires B's boot (all of B's datagrams would
// then be refused as stale) nor gets A to answer its own bulk request or complete its resync with
// its own BULK_END.
TEST(SyncPeer, ReflectedDatagramsAreRefused) {
    TempKeys keys;
    TestSocket t(kLo, 255);  // plays the peer, and the reflector
    auto [pa, unused] = free_ports();
    (void)unused;
    FakeDataplane da;
    da.set_table({rec(1)});
    auto ca = config(pa, t.port());
    ca.bulk_timeout = 60s;
    ca.key_file = keys.write("k", "a-shared-sync-key-of-32-bytes-ok");
    SyncPeer a(ca, da);
    run(a);
    const auto request = t.recv_bytes(FL_SYNC_T_BULK_REQUEST);
    ASSERT_TRUE(request);

    auto key = load_sync_key_file(ca.key_file);
    ASSERT_TRUE(key) << key.error();
    HmacSha256Auth auth(*key);
    SyncEncoder enc(forged_peer(0xb0b, &auth));
    std::vector<std::vector<uint8_t>> d;
    enc.encode_records(std::vector<fl_sync_record>{rec(2)}, false, d);  // seq 1: B is known
    t.send(d[0], a.local_port());
    ASSERT_TRUE(eventually([&] { return da.installed() == 1; }));
    const uint64_t served = a.stats().bulk_served;

    t.send(*request, a.local_port());  // A's own request, reflected
    ASSERT_TRUE(eventually([&] { return a.stats().refused[static_cast<size_t>(SyncError::own_boot)] == 1; }));
    d.clear();
    enc.encode_records(std::vector<fl_sync_record>{rec(3)}, false, d);  // seq 2: B goes on
    t.send(d[0], a.local_port());
    ASSERT_TRUE(eventually([&] { return da.installed() == 2; }));
    const auto s = a.stats();
    EXPECT_EQ(s.peer_boot_id, 0xb0bu);
    EXPECT_EQ(s.seq_reboots + s.seq_stale_boot, 0u);
    EXPECT_EQ(s.bulk_requests_received, 0u);
    EXPECT_EQ(s.bulk_served, served);
    EXPECT_EQ(da.dumps(), 0u);  // B's bulk request is the only one A would answer
    EXPECT_FALSE(a.bulk_complete());
}

// A bulk request held until the first publish is answered only if it came from a peer with the
// same configuration: after the publish, the digests are compared as for every datagram.
TEST(SyncPeer, EarlyBulkRequestOfAnotherConfigurationIsNotAnswered) {
    TestSocket t(kLo, 255);
    auto [pb, unused] = free_ports();
    (void)unused;
    FakeDataplane db;
    auto cb = config(pb, t.port());
    cb.bulk_timeout = 60s;
    SyncPeer b(cb, db);
    b.start();
    SyncSenderConfig other = forged_peer(0x6161);
    other.config_digest = kDigest + 1;
    SyncEncoder enc(other);
    t.send(enc.bulk_request(), b.local_port());
    ASSERT_TRUE(eventually([&] { return b.stats().bulk_requests_received == 1; }));
    b.set_config_digest(kDigest);
    ASSERT_TRUE(t.recv_type(FL_SYNC_T_BULK_REQUEST)) << "no bulk request of its own after the publish";
    ASSERT_TRUE(eventually(
        [&] { return b.stats().refused[static_cast<size_t>(SyncError::config_mismatch)] == 1; }));
    EXPECT_EQ(db.dumps(), 0u);
    EXPECT_EQ(b.stats().bulk_served, 0u);
}

TEST(SyncPeer, SequenceGapTriggersBulkRequest) {
    TestSocket t(kLo, 255);  // plays the peer
    auto [pb, unused] = free_ports();
    (void)unused;
    FakeDataplane db;
    auto cb = config(pb, t.port());
    cb.bulk_timeout = 60s;  // no re-request on a slow host: every request counted is the test's
    SyncPeer b(cb, db);
    run(b);
    ASSERT_TRUE(t.recv_type(FL_SYNC_T_BULK_REQUEST)) << "no start-up bulk request";

    SyncEncoder enc(forged_peer(0x1234));
    t.send(enc.bulk_end(0), b.local_port());  // seq 1: an empty table
    ASSERT_TRUE(eventually([&] { return b.bulk_complete(); }));
    const fl_sync_record r1[] = {rec(1)}, r2[] = {rec(2)}, r3[] = {rec(3)};
    std::vector<std::vector<uint8_t>> d;
    enc.encode_records(r1, false, d);  // seq 2
    enc.encode_records(r2, false, d);  // seq 3: lost
    enc.encode_records(r3, false, d);  // seq 4
    t.send(d[0], b.local_port());
    ASSERT_TRUE(eventually([&] { return db.installed() == 1; }));
    EXPECT_EQ(b.stats().seq_gaps, 0u);
    t.send(d[2], b.local_port());
    ASSERT_TRUE(t.recv_type(FL_SYNC_T_BULK_REQUEST)) << "no bulk request after the gap";
    const auto s = b.stats();
    EXPECT_EQ(s.seq_gaps, 1u);
    EXPECT_EQ(s.seq_lost, 1u);
    EXPECT_EQ(s.bulk_requests_sent, 2u);
    EXPECT_EQ(db.installed_ports(), (std::set<uint16_t>{1, 3}));  // a gap still installs
    // A replay of seq 2 is refused by the tracker.
    t.send(d[0], b.local_port());
    ASSERT_TRUE(eventually([&] { return b.stats().seq_old == 1; }));
    EXPECT_EQ(db.installed(), 2u);
}

TEST(SyncPeer, MatchingKeysWork) {
    TempKeys keys;
    auto [pa, pb] = free_ports();
    FakeDataplane da, db;
    auto ca = config(pa, pb), cb = config(pb, pa);
    ca.key_file = cb.key_file = keys.write("k", "a-shared-sync-key-of-32-bytes-ok");
    SyncPeer a(ca, da), b(cb, db);
    run(a);
    run(b);
    da.push(std::vector<fl_sync_record>{rec(1), rec(2)});
    ASSERT_TRUE(eventually([&] { return db.installed() == 2 && b.bulk_complete(); }));
    for (size_t e = 0; e < kSyncErrorCount; ++e)
        EXPECT_EQ(b.stats().refused[e], 0u) << sync_error_name(static_cast<SyncError>(e));
}

namespace {
// Runs A (key file `ka`, or none) and B (`kb`) until A has sent two records and every datagram
// either sent has reached the other, and returns B's and A's stats.
std::pair<SyncPeerStats, SyncPeerStats> run_keys(const std::string& ka, const std::string& kb,
                                                 FakeDataplane& db) {
    auto [pa, pb] = free_ports();
    FakeDataplane da;
    auto ca = config(pa, pb), cb = config(pb, pa);
    ca.key_file = ka;
    cb.key_file = kb;
    SyncPeer a(ca, da), b(cb, db);
    run(a);
    run(b);
    da.push(std::vector<fl_sync_record>{rec(1), rec(2)});
    EXPECT_TRUE(eventually([&] {
        // The sender's count first: what the receiver has received can only be more.
        const auto sa = a.stats();
        const bool a_to_b =
            sa.records_sent == 2 && b.stats().datagrams_received >= sa.datagrams_sent;
        const auto sb = b.stats();
        const bool b_to_a =
            sb.datagrams_sent >= 1 && a.stats().datagrams_received >= sb.datagrams_sent;
        return a_to_b && b_to_a;
    }));
    b.stop();
    a.stop();
    return {b.stats(), a.stats()};
}
}  // namespace

TEST(SyncPeer, MismatchedKeyRefused) {
    TempKeys keys;
    FakeDataplane db;
    auto [sb, sa] = run_keys(keys.write("a", "key-of-balancer-a-0123456789abcdef"),
                             keys.write("b", "key-of-balancer-b-0123456789abcdef"), db);
    EXPECT_GE(sb.datagrams_received, 2u);
    EXPECT_EQ(sb.refused[static_cast<size_t>(SyncError::bad_hmac)], sb.datagrams_received);
    EXPECT_EQ(sb.datagrams_accepted, 0u);
    EXPECT_EQ(db.installed(), 0u);
    EXPECT_FALSE(sb.bulk_complete);
    EXPECT_GE(sa.refused[static_cast<size_t>(SyncError::bad_hmac)], 1u);
}

TEST(SyncPeer, MissingKeyRefused) {
    TempKeys keys;
    FakeDataplane db;
    // A signs nothing, B requires a key.
    auto [sb, sa] = run_keys("", keys.write("b", "key-of-balancer-b-0123456789abcdef"), db);
    EXPECT_GE(sb.datagrams_received, 2u);
    EXPECT_EQ(sb.refused[static_cast<size_t>(SyncError::hmac_missing)], sb.datagrams_received);
    EXPECT_EQ(db.installed(), 0u);
    // and A refuses B's signed datagrams
    EXPECT_GE(sa.refused[static_cast<size_t>(SyncError::hmac_unexpected)], 1u);
    EXPECT_EQ(sa.datagrams_accepted, 0u);
}

TEST(SyncPeer, UnknownSourceAndWrongTtlRefused) {
    auto [pa, pb] = free_ports();
    FakeDataplane db;
    SyncPeer b(config(pb, pa), db);
    run(b);
    SyncEncoder enc(forged_peer(0x77));
    const fl_sync_record r[] = {rec(9)};
    std::vector<std::vector<uint8_t>> d;
    enc.encode_records(r, false, d);

    TestSocket stranger(*IpAddr::parse("127.0.0.3"), 255);  // TTL right, address wrong
    stranger.send(d[0], b.local_port());
    ASSERT_TRUE(eventually(
        [&] { return b.stats().refused[static_cast<size_t>(SyncError::unknown_source)] == 1; }));
    TestSocket far(kLo, 64);  // the peer's address, but a TTL a router would have lowered
    far.send(d[0], b.local_port());
    ASSERT_TRUE(eventually(
        [&] { return b.stats().refused[static_cast<size_t>(SyncError::bad_ttl)] == 1; }));
    const auto s = b.stats();
    EXPECT_EQ(s.datagrams_received, 2u);
    EXPECT_EQ(s.datagrams_accepted, 0u);
    EXPECT_EQ(db.installed(), 0u);
}

TEST(SyncPeer, ConfigDigestMismatchRefusedUntilEqual) {
    auto [pa, pb] = free_ports();
    FakeDataplane da, db;
    SyncPeer a(config(pa, pb), da), b(config(pb, pa), db);
    a.set_config_digest(0x1111);
    b.set_config_digest(0x2222);
    a.start();
    b.start();
    da.push(std::vector<fl_sync_record>{rec(1)});
    ASSERT_TRUE(eventually([&] {
        const auto sa = a.stats();
        return sa.records_sent == 1 && b.stats().datagrams_received >= sa.datagrams_sent;
    }));
    auto s = b.stats();
    EXPECT_EQ(s.refused[static_cast<size_t>(SyncError::config_mismatch)], s.datagrams_received);
    EXPECT_EQ(s.peer_config_digest, 0x1111u);
    EXPECT_EQ(s.config_digest, 0x2222u);
    EXPECT_EQ(db.installed(), 0u);
    EXPECT_FALSE(b.bulk_complete());

    b.set_config_digest(0x1111);  // B now runs A's configuration
    da.push(std::vector<fl_sync_record>{rec(2)});
    ASSERT_TRUE(eventually([&] { return db.installed() == 1 && b.bulk_complete(); }));
    EXPECT_EQ(db.installed_ports(), (std::set<uint16_t>{2}));
}

TEST(SyncPeer, RateCapRespected) {
    auto [pa, pb] = free_ports();
    FakeDataplane da, db;
    auto ca = config(pa, pb);
    ca.rate = 2000;  // records/s; 21 records per datagram at the default size
    constexpr size_t kRecords = 3000;
    std::vector<fl_sync_record> recs;
    for (size_t i = 0; i < kRecords; ++i) recs.push_back(rec(static_cast<uint16_t>(i + 1)));
    da.push(recs);
    SyncPeer b(config(pb, pa), db);
    run(b);
    const auto t0 = std::chrono::steady_clock::now();
    SyncPeer a(ca, da);
    run(a);
    // Whenever looked at, A has sent no more than its burst (20 ms of the rate, at least one
    // datagram) plus the rate times the time since it started.
    const double burst = std::max(21.0, 2000.0 / 50.0);
    bool within = true;
    ASSERT_TRUE(eventually(
        [&] {
            const auto s = a.stats();
            const double elapsed =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (static_cast<double>(s.records_sent) > burst + 2000.0 * elapsed + 1) within = false;
            return db.installed() == kRecords && s.records_sent == kRecords;
        },
        15s));
    EXPECT_TRUE(within);
    const auto s = a.stats();
    EXPECT_EQ(s.records_sent, kRecords);
    EXPECT_GE(s.rate_limited, kRecords / 2);  // most records had to wait
    EXPECT_GT(s.send_lag.p99_us, 0u);
    // Sending 3000 records at 2000/s takes at least (3000 - burst) / 2000 s.
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(took, (static_cast<double>(kRecords) - burst) / 2000.0);
}

TEST(SyncPeer, StopIsPrompt) {
    auto [pa, pb] = free_ports();
    FakeDataplane da;
    auto c = config(pa, pb);
    c.drain_min = c.drain_max = 30s;  // the loop would otherwise sleep this long
    c.bulk_timeout = 60s;
    SyncPeer a(c, da);
    run(a);
    ASSERT_TRUE(eventually([&] { return a.stats().bulk_requests_sent == 1; }));
    const auto t0 = std::chrono::steady_clock::now();
    a.stop();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
    a.stop();  // idempotent
}

// A bulk answer that lost a datagram does not complete the resync: the peer is asked again,
// and a whole answer completes it.
TEST(SyncPeer, IncompleteBulkIsRequestedAgain) {
    TestSocket t(kLo, 255);  // plays the peer
    auto [pb, unused] = free_ports();
    (void)unused;
    FakeDataplane db;
    auto cb = config(pb, t.port());
    cb.bulk_timeout = 60s;  // every request counted below is an answer to the test's datagrams
    SyncPeer b(cb, db);
    run(b);
    ASSERT_TRUE(t.recv_type(FL_SYNC_T_BULK_REQUEST));

    SyncEncoder enc(forged_peer(0x4321));
    const fl_sync_record r1[] = {rec(1)}, r2[] = {rec(2)};
    std::vector<std::vector<uint8_t>> d;
    enc.encode_records(r1, true, d);  // seq 1
    enc.encode_records(r2, true, d);  // seq 2: lost
    t.send(d[0], b.local_port());
    t.send(enc.bulk_end(2), b.local_port());  // seq 3: announces 2 records, 1 arrived
    ASSERT_TRUE(t.recv_type(FL_SYNC_T_BULK_REQUEST)) << "no second request after a lossy bulk";
    auto s = b.stats();
    EXPECT_EQ(s.bulk_incomplete, 1u);
    EXPECT_EQ(s.bulk_ends_received, 1u);
    EXPECT_FALSE(b.bulk_complete());

    d.clear();
    enc.encode_records(std::vector<fl_sync_record>{rec(1), rec(2)}, true, d);  // seq 4
    t.send(d[0], b.local_port());
    t.send(enc.bulk_end(2), b.local_port());  // seq 5
    ASSERT_TRUE(eventually([&] { return b.bulk_complete(); }));
    s = b.stats();
    EXPECT_EQ(s.bulk_requests_sent, 2u);
    EXPECT_EQ(s.bulk_incomplete, 1u);
    EXPECT_EQ(db.installed_ports(), (std::set<uint16_t>{1, 2}));
}

TEST(SyncPeer, RecordsFlowOverIpv6) {
    const IpAddr lo6 = *IpAddr::parse("::1");
    auto [pa, pb] = free_ports();  // free on 127.0.0.1; IPv6 ports are a separate space on a
                                   // V6ONLY socket, and bind() says so if one is taken
    FakeDataplane da, db;
    auto ca = config(pa, pb), cb = config(pb, pa);
    ca.local = ca.peer = cb.local = cb.peer = lo6;
    SyncPeer a(ca, da), b(cb, db);
    run(a);
    run(b);
    da.push(std::vector<fl_sync_record>{rec(1), rec(2), rec(3)});
    ASSERT_TRUE(eventually([&] { return db.installed() == 3 && b.bulk_complete(); }));
    for (size_t e = 0; e < kSyncErrorCount; ++e)  // the hop limit 255 was seen
        EXPECT_EQ(b.stats().refused[e], 0u) << sync_error_name(static_cast<SyncError>(e));
}

namespace {
// A stand-in for the dataplane's control socket: serves `conns` connections one after the
// other, answering hello, sync_drain (two records), sync_install ({"queued": n, ...}) and
// sync_dump (an error reply); closes a connection after `per_conn` frames.
class FakeCtlServer {
  public:
    FakeCtlServer(const std::string& path, int conns, int per_conn) : path_(path) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        EXPECT_EQ(::listen(fd_, 4), 0);
        thread_ = std::thread([this, conns, per_conn] { serve(conns, per_conn); });
    }
    ~FakeCtlServer() {
        thread_.join();
        ::close(fd_);
    }
    std::vector<std::pair<int, std::string>> seen() {  // (connection, "op:body")
        std::lock_guard lk(mu_);
        return seen_;
    }

  private:
    static bool read_all(int fd, uint8_t* p, size_t n) {
        while (n) {
            pollfd pf{fd, POLLIN, 0};
            if (::poll(&pf, 1, 5000) <= 0) return false;  // bounded: a stuck test ends
            const ssize_t r = ::recv(fd, p, n, 0);
            if (r <= 0) return false;
            p += r;
            n -= static_cast<size_t>(r);
        }
        return true;
    }
    void serve(int conns, int per_conn) {
        for (int c = 0; c < conns; ++c) {
            pollfd pf{fd_, POLLIN, 0};
            if (::poll(&pf, 1, 5000) <= 0) return;
            const int cfd = ::accept(fd_, nullptr, nullptr);
            for (int i = 0; i < per_conn; ++i) {
                uint8_t hdr[5];
                if (!read_all(cfd, hdr, 5)) break;
                uint32_t len;
                std::memcpy(&len, hdr, 4);
                std::vector<uint8_t> body(len - 1);
                if (!read_all(cfd, body.data(), body.size())) break;
                {
                    std::lock_guard lk(mu_);
                    seen_.emplace_back(c,
                                       std::to_string(hdr[4]) + ":" +
                                           (hdr[4] == 8 ? std::to_string(body.size() / 64)
                                                        : std::string(body.begin(), body.end())));
                }
                std::vector<uint8_t> reply;
                uint8_t status = 0;
                if (hdr[4] == 7) {
                    reply.resize(2 * kSyncRecordLen);
                    const fl_sync_record r = rec(42);
                    std::memcpy(reply.data() + kSyncRecordLen, &r, sizeof r);
                } else if (hdr[4] == 8) {
                    const std::string j =
                        "{\"queued\": " + std::to_string(body.size() / 64) +
                        ", \"invalid\": 0, \"unknown_server\": 1, \"ring_full\": 0}";
                    reply.assign(j.begin(), j.end());
                } else if (hdr[4] == 9) {
                    status = 1;
                    const std::string j = R"({"error": "no connection table in this test"})";
                    reply.assign(j.begin(), j.end());
                } else {
                    const std::string j = "{}";
                    reply.assign(j.begin(), j.end());
                }
                std::vector<uint8_t> out;
                ctl::encode(out, status, reply);
                EXPECT_EQ(::send(cfd, out.data(), out.size(), MSG_NOSIGNAL),
                          static_cast<ssize_t>(out.size()));
            }
            ::close(cfd);
        }
    }

    std::string path_;
    int fd_ = -1;
    std::thread thread_;
    std::mutex mu_;
    std::vector<std::pair<int, std::string>> seen_;
};
}  // namespace

TEST(CtlSyncDataplane, SpeaksTheSyncOpsAndReconnects) {
    TempKeys dir;  // a private directory for the socket
    const std::string path = dir.write("unused", "x") + ".sock";
    // Connection 0 takes hello and three requests, then closes; connection 1 takes the rest.
    FakeCtlServer srv(path, 2, 4);
    CtlSyncDataplane dp(path, 2s);

    auto d = dp.drain(5, 100);
    ASSERT_TRUE(d) << d.error();
    ASSERT_EQ(d->size(), 2u);
    EXPECT_EQ((*d)[1].src_port, 42);
    const std::vector<fl_sync_record> three{rec(1), rec(2), rec(3)};
    auto i = dp.install(three);
    ASSERT_TRUE(i) << i.error();
    EXPECT_EQ(i->queued, 3u);
    EXPECT_EQ(i->unknown_server, 1u);
    auto dump = dp.dump();
    ASSERT_FALSE(dump);
    EXPECT_NE(dump.error().find("no connection table in this test"), std::string::npos)
        << dump.error();
    EXPECT_NE(dump.error().find("op 9"), std::string::npos) << dump.error();
    // The server closed the connection: this request fails, the next one reconnects.
    EXPECT_FALSE(dp.drain(5, 0));
    d = dp.drain(5, 0);
    ASSERT_TRUE(d) << d.error();
    EXPECT_EQ(d->size(), 2u);

    const auto seen = srv.seen();
    ASSERT_EQ(seen.size(), 6u);
    EXPECT_EQ(seen[0].first, 0);
    EXPECT_EQ(seen[0].second.rfind("5:", 0), 0u);  // hello first
    EXPECT_NE(seen[0].second.find("controller"), std::string::npos);
    EXPECT_EQ(seen[1].second, R"(7:{"max":5,"refresh_ms":100})");
    EXPECT_EQ(seen[2].second, "8:3");
    EXPECT_EQ(seen[3].second, "9:");
    EXPECT_EQ(seen[4], (std::pair<int, std::string>{1, seen[0].second}));  // hello again
    EXPECT_EQ(seen[5].second, R"(7:{"max":5,"refresh_ms":0})");
    EXPECT_FALSE(CtlSyncDataplane(dir.write("nothing", "x") + ".none", 100ms).dump());
}
