#include <gtest/gtest.h>

#include <map>
#include <random>
#include <unordered_map>

#include "fulcrum/conntable.hpp"

using namespace fulcrum;

namespace {

FlowKey key(uint32_t n, uint16_t port = 80) {
    uint8_t s[4] = {198, 18, static_cast<uint8_t>(n >> 16), static_cast<uint8_t>(n >> 8)};
    uint8_t d[4] = {198, 19, 0, 1};
    return make_key(s, d, false, 6, static_cast<uint16_t>(n), port);
}
uint64_t h(const FlowKey& k) { return flow_hash(k, 77); }

struct Removed {
    std::vector<std::pair<uint32_t, ConnState>> log;
    static void hook(void* ctx, const ConnEntry& e, ConnState s) {
        static_cast<Removed*>(ctx)->log.push_back({e.server, s});
    }
};

}  // namespace

TEST(ConnTable, EntryFitsTheBudget) {
    EXPECT_EQ(sizeof(ConnEntry), 48u);
    EXPECT_LE(ConnTable::bytes_per_entry(), 64u);
    EXPECT_EQ(ConnTable::bytes_per_entry(), 56u);
    EXPECT_EQ(ConnTable::memory_bytes(1000), 125 * 64 + 1000 * 48u);
    ConnTable t(1000);
    EXPECT_EQ(t.capacity(), 1000u);
    ConnTable t2(1001);
    EXPECT_EQ(t2.capacity(), 1008u);
    EXPECT_THROW(ConnTable(0), std::invalid_argument);
}

TEST(ConnTable, InsertFindTouch) {
    ConnTable t(1024);
    const FlowKey k = key(1);
    EXPECT_EQ(t.find(k, h(k), 0), ConnTable::kNone);
    const uint32_t i = t.insert(k, h(k), ConnState::tcp_new, 0, 7, 0xabc);
    ASSERT_NE(i, ConnTable::kNone);
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(t.find(k, h(k), 5), i);
    EXPECT_EQ(t.entry(i).server, 7u);
    EXPECT_EQ(t.entry(i).server_tag, 0xabcu);
    EXPECT_EQ(t.state(i), ConnState::tcp_new);
    t.touch(i, 9, ConnState::tcp_established);
    EXPECT_EQ(t.state(i), ConnState::tcp_established);
    EXPECT_EQ(t.last_seen(i), 9u);
    EXPECT_EQ(t.find(key(2), h(key(2)), 5), ConnTable::kNone);
    // Same hash, different key: still a miss.
    EXPECT_EQ(t.find(key(2), h(k), 5), ConnTable::kNone);
}

TEST(ConnTable, PerStateTimeoutsWithFakeClock) {
    ConnTimeouts to;
    to.tcp_new = 100;
    to.tcp_established = 1000;
    to.tcp_closing = 50;
    to.udp = 300;
    ConnTable t(64, to);
    Removed r;
    t.set_remove_hook(&Removed::hook, &r);
    const ConnState states[] = {ConnState::tcp_new, ConnState::tcp_established, ConnState::tcp_closing,
                                ConnState::udp};
    for (uint32_t s = 0; s < 4; ++s) {
        const FlowKey k = key(100 + s);
        const uint32_t start = 1000;
        ASSERT_NE(t.insert(k, h(k), states[s], start, s, 1), ConnTable::kNone);
        const uint32_t limit = to.of(states[s]);
        EXPECT_NE(t.find(k, h(k), start + limit - 1), ConnTable::kNone) << conn_state_name(states[s]);
        EXPECT_EQ(t.find(k, h(k), start + limit), ConnTable::kNone) << conn_state_name(states[s]);
    }
    ASSERT_EQ(r.log.size(), 4u);
    EXPECT_EQ(r.log[2].second, ConnState::tcp_closing);
    EXPECT_EQ(t.size(), 0u);
    EXPECT_EQ(t.stats().expired.get(), 4u);
}

TEST(ConnTable, ClockWrapAround) {
    ConnTable t(64);
    const FlowKey k = key(5);
    const uint32_t start = 0xFFFFFF00u;
    ASSERT_NE(t.insert(k, h(k), ConnState::tcp_established, start, 1, 1), ConnTable::kNone);
    EXPECT_NE(t.find(k, h(k), start + 1000), ConnTable::kNone);  // wrapped past zero
}

TEST(ConnTable, TcpStateMachine) {
    using namespace tcpflag;
    EXPECT_EQ(tcp_initial_state(kSyn), ConnState::tcp_new);
    EXPECT_EQ(tcp_initial_state(kAck), ConnState::tcp_established);
    EXPECT_EQ(tcp_initial_state(kAck | kPsh), ConnState::tcp_established);
    EXPECT_EQ(tcp_initial_state(kSyn | kAck), ConnState::tcp_established);
    EXPECT_EQ(tcp_initial_state(kRst), ConnState::tcp_closing);
    EXPECT_EQ(tcp_next_state(ConnState::tcp_new, kSyn), ConnState::tcp_new);  // retransmitted SYN
    EXPECT_EQ(tcp_next_state(ConnState::tcp_new, kAck), ConnState::tcp_established);
    EXPECT_EQ(tcp_next_state(ConnState::tcp_established, kAck | kPsh), ConnState::tcp_established);
    EXPECT_EQ(tcp_next_state(ConnState::tcp_established, kFin | kAck), ConnState::tcp_closing);
    EXPECT_EQ(tcp_next_state(ConnState::tcp_new, kRst), ConnState::tcp_closing);
    EXPECT_EQ(tcp_next_state(ConnState::tcp_closing, kAck), ConnState::tcp_closing);
}

// All keys given the same hash land in one bucket: exercise eviction order directly.
TEST(ConnTable, EvictsLeastRecentlyUsedEligible) {
    ConnTable t(8);  // one bucket
    Removed r;
    t.set_remove_hook(&Removed::hook, &r);
    const uint64_t hash = 0x1234;
    for (uint32_t i = 0; i < 8; ++i)
        ASSERT_NE(t.insert(key(i), hash, ConnState::tcp_established, 100 + i, i, 1), ConnTable::kNone);
    t.touch(t.find(key(0), hash, 200), 200, ConnState::tcp_established);  // 0 is now the newest
    ASSERT_NE(t.insert(key(8), hash, ConnState::udp, 201, 8, 1), ConnTable::kNone);
    ASSERT_EQ(r.log.size(), 1u);
    EXPECT_EQ(r.log[0].first, 1u);  // 1 was the least recently used
    EXPECT_EQ(t.stats().evictions.get(), 1u);
    EXPECT_EQ(t.find(key(1), hash, 202), ConnTable::kNone);
    EXPECT_NE(t.find(key(0), hash, 202), ConnTable::kNone);
}

TEST(ConnTable, NewConnectionsNeverEvictEstablished) {
    ConnTable t(8);
    const uint64_t hash = 0x99;
    for (uint32_t i = 0; i < 6; ++i)
        ASSERT_NE(t.insert(key(i), hash, ConnState::tcp_established, 10, i, 1), ConnTable::kNone);
    for (uint32_t i = 6; i < 8; ++i)
        ASSERT_NE(t.insert(key(i), hash, ConnState::tcp_new, 10 + i, i, 1), ConnTable::kNone);
    // A SYN replaces the oldest new entry, never an established one.
    ASSERT_NE(t.insert(key(20), hash, ConnState::tcp_new, 30, 20, 1), ConnTable::kNone);
    EXPECT_EQ(t.find(key(6), hash, 31), ConnTable::kNone);
    for (uint32_t i = 0; i < 6; ++i) EXPECT_NE(t.find(key(i), hash, 31), ConnTable::kNone);
    // A bucket of established entries refuses new ones.
    ConnTable full(8);
    for (uint32_t i = 0; i < 8; ++i)
        ASSERT_NE(full.insert(key(i), hash, ConnState::tcp_established, 10, i, 1), ConnTable::kNone);
    EXPECT_EQ(full.insert(key(50), hash, ConnState::tcp_new, 11, 50, 1), ConnTable::kNone);
    EXPECT_EQ(full.stats().full.get(), 1u);
    // ...unless one of them expired.
    EXPECT_NE(full.insert(key(50), hash, ConnState::tcp_new, 10 + full.timeouts().tcp_established, 50, 1),
              ConnTable::kNone);
}

TEST(ConnTable, SynFloodOnFullTableKeepsEstablished) {
    ConnTable t(1 << 14);
    uint32_t now = 1000;
    std::vector<FlowKey> est;
    for (uint32_t i = 0; i < t.capacity(); ++i) {
        const FlowKey k = key(i, 443);
        t.insert(k, h(k), ConnState::tcp_established, now, i, 1);
    }
    // Those that survived the filling are the established set under test.
    for (uint32_t i = 0; i < t.capacity(); ++i) {
        const FlowKey k = key(i, 443);
        if (t.find(k, h(k), now) != ConnTable::kNone) est.push_back(k);
    }
    ASSERT_GT(est.size(), t.capacity() * 8 / 10);
    const auto evictions_before = t.stats().evictions.get();
    for (uint32_t i = 0; i < 10 * t.capacity(); ++i) {
        const FlowKey k = key(i, 8080);  // unique SYNs
        t.insert(k, h(k), ConnState::tcp_new, now + i / 1000, i, 1);
    }
    now += 10 * static_cast<uint32_t>(t.capacity()) / 1000;
    // Replacing new entries counts as eviction; established ones must all be there.
    EXPECT_GT(t.stats().evictions.get(), evictions_before);
    for (const auto& k : est) ASSERT_NE(t.find(k, h(k), now), ConnTable::kNone);
    EXPECT_GT(t.stats().full.get(), 0u);
}

TEST(ConnTable, SweepExpiresAndReports) {
    ConnTimeouts to;
    to.udp = 10;
    ConnTable t(4096, to);
    Removed r;
    t.set_remove_hook(&Removed::hook, &r);
    for (uint32_t i = 0; i < 1000; ++i) t.insert(key(i), h(key(i)), ConnState::udp, 0, i, 1);
    const size_t live = t.size();
    EXPECT_EQ(t.sweep(5, 1 << 20), 0u);
    EXPECT_EQ(t.sweep(10, 1 << 20), live);
    EXPECT_EQ(t.size(), 0u);
    EXPECT_EQ(r.log.size(), live);
    // Partial sweeps walk round robin: 512 one-bucket sweeps cover the 512 buckets.
    for (uint32_t i = 0; i < 1000; ++i) t.insert(key(i), h(key(i)), ConnState::udp, 100, i, 1);
    const size_t live2 = t.size();
    size_t removed = 0;
    for (int i = 0; i < 512; ++i) removed += t.sweep(200, 1);
    EXPECT_EQ(removed, live2);
    EXPECT_EQ(t.size(), 0u);
}

TEST(ConnTable, ClearAndEraseReport) {
    ConnTable t(256);
    Removed r;
    t.set_remove_hook(&Removed::hook, &r);
    for (uint32_t i = 0; i < 50; ++i) t.insert(key(i), h(key(i)), ConnState::udp, 0, i, 1);
    const uint32_t idx = t.find(key(3), h(key(3)), 0);
    t.erase(idx);
    t.erase(idx);  // twice is harmless
    EXPECT_EQ(r.log.size(), 1u);
    t.clear();
    EXPECT_EQ(t.size(), 0u);
    EXPECT_EQ(r.log.size(), 50u);
}

TEST(ConnTable, ForEachVisitsLive) {
    ConnTable t(256);
    for (uint32_t i = 0; i < 30; ++i) t.insert(key(i), h(key(i)), ConnState::udp, 0, i, 1);
    size_t n = 0;
    t.for_each([&](const ConnEntry&, ConnState s, uint32_t) {
        EXPECT_EQ(s, ConnState::udp);
        ++n;
    });
    EXPECT_EQ(n, 30u);
}

TEST(ConnTableProperty, MatchesAModelWhenNothingIsEvicted) {
    ConnTimeouts to;
    to.udp = 500;
    ConnTable t(1 << 16, to);
    std::unordered_map<uint32_t, std::pair<uint32_t, uint32_t>> model;  // id -> (server, last)
    std::mt19937 rng(8);
    uint32_t now = 0;
    for (int op = 0; op < 100000; ++op) {
        now += rng() % 3;
        const uint32_t id = rng() % 2000;
        const FlowKey k = key(id);
        const uint32_t i = t.find(k, h(k), now);
        auto it = model.find(id);
        const bool live = it != model.end() && now - it->second.second < to.udp;
        ASSERT_EQ(i != ConnTable::kNone, live) << "op " << op;
        if (live) {
            ASSERT_EQ(t.entry(i).server, it->second.first);
            t.touch(i, now, ConnState::udp);
            it->second.second = now;
        } else {
            const uint32_t server = rng() % 50;
            ASSERT_NE(t.insert(k, h(k), ConnState::udp, now, server, 1), ConnTable::kNone);
            model[id] = {server, now};
        }
        if (op % 100 == 0) t.sweep(now, 64);
    }
    EXPECT_EQ(t.stats().evictions.get(), 0u);
}

TEST(ConnTable, TenMillionEntries) {
    ConnTable t(10'000'000);
    EXPECT_EQ(t.capacity(), 10'000'000u);
    for (uint32_t i = 0; i < 100000; ++i) {
        const FlowKey k = key(i * 7919);
        ASSERT_NE(t.insert(k, h(k), ConnState::tcp_established, 0, i, 1), ConnTable::kNone);
    }
    EXPECT_EQ(t.size(), 100000u);
}

// Two bucket choices per key (power of two choices): the table fills to three quarters of its
// capacity without a single eviction, and to 90% losing under 1% of inserts to competition
// (with one bucket per key, 4% of flows already compete at half load).
TEST(ConnTable, TwoChoicesHoldMostOfTheCapacity) {
    for (const uint32_t pct : {75u, 90u}) {
        ConnTable t(1 << 16);
        const uint32_t n = static_cast<uint32_t>(t.capacity() * pct / 100);
        for (uint32_t i = 0; i < n; ++i) {
            const FlowKey k = key(i, 443);
            ASSERT_NE(t.insert(k, h(k), ConnState::tcp_established, 0, i, 1), ConnTable::kNone);
        }
        const uint64_t evicted = t.stats().evictions.get();
        if (pct == 75) {
            EXPECT_EQ(evicted, 0u);
        } else {
            EXPECT_LT(evicted, n / 100) << evicted << " of " << n;
        }
        EXPECT_EQ(t.size(), n - evicted);
        uint32_t found = 0;
        for (uint32_t i = 0; i < n; ++i) {
            const FlowKey k = key(i, 443);
            found += t.find(k, h(k), 1) != ConnTable::kNone;
        }
        EXPECT_EQ(found, n - evicted);
    }
}

// find() with the hint prefetch_entry() returned: the table may have changed in between (the
// forwarding path takes hints for a whole burst before it looks up), and every hint, stale or
// not, must give what the plain look-up gives.
TEST(ConnTable, FindWithAHintAgreesWithThePlainLookUp) {
    ConnTable t(64, ConnTimeouts{100, 1000, 100, 1000});
    std::mt19937 rng(7);
    std::vector<FlowKey> keys;
    for (uint32_t n = 0; n < 200; ++n) keys.push_back(key(n));
    uint32_t now = 0;
    for (int round = 0; round < 20000; ++round) {
        now += rng() % 20;
        const FlowKey& k = keys[rng() % keys.size()];
        const ConnTable::Probe pr = t.probe(h(k));
        const uint32_t hint = t.prefetch_entry(pr);
        // What happens between the prefetch and the look-up: other keys come and go.
        for (int j = 0, m = static_cast<int>(rng() % 4); j < m; ++j) {
            const FlowKey& o = keys[rng() % keys.size()];
            const uint32_t oi = t.find(o, h(o), now);
            if (oi == ConnTable::kNone)
                t.insert(o, h(o), rng() % 2 ? ConnState::tcp_new : ConnState::tcp_established, now, 1, 1);
            else if (rng() % 3 == 0)
                t.erase(oi);
        }
        // The plain look-up may expire the entry; look at a copy of the state first.
        uint32_t expect = ConnTable::kNone;
        t.for_each([&](const ConnEntry& e, ConnState st, uint32_t seen) {
            if (e.key == k && now - seen < t.timeouts().of(st)) expect = 1;
        });
        const uint32_t got = t.find(k, pr, hint, now);
        ASSERT_EQ(got != ConnTable::kNone, expect != ConnTable::kNone) << "round " << round;
        if (got != ConnTable::kNone) {
            ASSERT_TRUE(t.entry(got).key == k);
            ASSERT_EQ(t.find(k, h(k), now), got);
        } else {
            ASSERT_EQ(t.find(k, h(k), now), ConnTable::kNone);
            if (rng() % 2) t.insert(k, h(k), ConnState::tcp_new, now, 2, 2);
        }
    }
}

// A hint that points at a way whose entry expired: the look-up removes it and misses, as the
// plain look-up does.
TEST(ConnTable, FindWithAHintExpiresTheEntry) {
    ConnTable t(64, ConnTimeouts{100, 1000, 100, 1000});
    const FlowKey k = key(3);
    const uint32_t i = t.insert(k, h(k), ConnState::tcp_new, 0, 1, 1);
    const ConnTable::Probe pr = t.probe(h(k));
    ASSERT_EQ(t.prefetch_entry(pr), i);
    EXPECT_EQ(t.find(k, pr, i, 99), i);
    EXPECT_EQ(t.find(k, pr, i, 199), ConnTable::kNone);
    EXPECT_EQ(t.size(), 0u);
    EXPECT_EQ(t.stats().expired.get(), 1u);
    EXPECT_EQ(t.prefetch_entry(pr), ConnTable::kNone);
}
