// Live snapshot updates under continuous traffic, in process: the real Dataplane on a
// net_ring port fed by this test's main lcore while its worker lcore forwards. Servers are
// added, retired, re-weighted and brought back many times, and corrupt snapshots are sent,
// while flows open, carry data and close.
//
// Checks: no unexplained loss (every frame sent comes back, none dropped); established flows
// keep their server across every swap; a new flow follows the table of the snapshot in force
// when the worker saw it (the previous or the new one while a swap is in progress); corrupt
// snapshots are refused and traffic continues.
#include <gtest/gtest.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>

#include "fulcrum/bytes.hpp"
#include "fulcrum/dpdk/dataplane.hpp"
#include "fulcrum/flow.hpp"
#include "fulcrum/forward.hpp"
#include "packet_builder.hpp"
#include "spdlog/spdlog.h"

using namespace fulcrum;

namespace {

rte_ring* g_rx = nullptr;  // test -> dataplane
rte_ring* g_tx = nullptr;  // dataplane -> test
int g_port = -1;
rte_mempool* g_pool = nullptr;

constexpr unsigned kCandidates = 8;
constexpr uint32_t kVip = 0xC6120101;  // 198.18.1.1
constexpr uint64_t kSeed = 777;

uint32_t client_ip(uint32_t flow) { return 0xC6130000u + (flow >> 14); }
uint16_t client_port(uint32_t flow) { return static_cast<uint16_t>(1024 + (flow & 0x3FFF)); }

// Per candidate server: 0 absent, -1 retired, w > 0 in rotation with weight w.
std::vector<uint8_t> snapshot(uint64_t gen, const std::vector<int>& state) {
    SnapshotSpec spec;
    spec.generation = gen;
    spec.hash_seed = kSeed;
    ServiceSpec svc;
    svc.id = 1;
    svc.name = "web";
    svc.vip = IpAddr::v4(kVip);
    svc.port = 80;
    svc.table_size = 4099;
    for (uint32_t i = 0; i < kCandidates; ++i) {
        if (state[i] == 0) continue;
        ServerSpec s;
        s.slot = i;
        s.addr = IpAddr::v4(0xC6120300u + i + 1);
        s.mac = MacAddr{{0x02, 0, 0, 0, 0x03, static_cast<uint8_t>(i)}};
        s.weight = state[i] > 0 ? static_cast<uint32_t>(state[i]) : 1;
        s.retired = state[i] < 0;
        svc.servers.push_back(s);
    }
    spec.services.push_back(svc);
    return build_snapshot(spec);
}

int expected_server(const LoadedSnapshot& ls, uint32_t flow) {
    const SnapshotView& v = ls.view();
    const fl_snap_service& svc = v.services()[0];
    uint8_t src[4], dst[4];
    store_be32(src, client_ip(flow));
    store_be32(dst, kVip);
    const FlowKey k = make_key(src, dst, false, 6, client_port(flow), 80);
    const uint32_t slot = v.table(svc)[hash_to_range(flow_hash(k, kSeed), svc.table_size)];
    return slot == FL_NO_SERVER ? -1 : static_cast<int>(slot);
}

rte_mbuf* frame(uint32_t flow, uint8_t flags) {
    test::PacketBuilder b;
    b.eth_dst = MacAddr{{0x02, 0x70, 0x63, 0x61, 0x70, 0x00}};
    b.src = IpAddr::v4(client_ip(flow));
    b.sport = client_port(flow);
    b.dst = IpAddr::v4(kVip);
    b.dport = 80;
    b.tcp(flags);
    b.seq = flow;
    const auto bytes = b.build();
    rte_mbuf* m = rte_pktmbuf_alloc(g_pool);
    if (!m) return nullptr;
    auto* p = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(bytes.size())));
    std::memcpy(p, bytes.data(), bytes.size());
    return m;
}

struct Flow {
    int server = -1;
    std::set<int> allowed_first;
    bool open = true;
};

class LiveUpdate : public ::testing::Test {
protected:
    std::map<uint32_t, Flow> flows;
    std::vector<uint32_t> open_flows;
    uint64_t sent = 0, received = 0, sticky_violations = 0, table_violations = 0;
    std::string first_problem;

    void note(const std::string& p) {
        if (first_problem.empty()) first_problem = p;
    }

    void drain() {
        rte_mbuf* out[64];
        const unsigned n = rte_ring_dequeue_burst(g_tx, reinterpret_cast<void**>(out), 64, nullptr);
        for (unsigned i = 0; i < n; ++i) {
            const uint8_t* f = rte_pktmbuf_mtod(out[i], const uint8_t*);
            const uint32_t flow = ((load_be32(f + 26) - 0xC6130000u) << 14) | (load_be16(f + 34) - 1024u);
            const int server = f[5];
            Flow& fl = flows[flow];
            if (fl.server < 0) {
                if (!fl.allowed_first.count(server)) {
                    ++table_violations;
                    note("new flow " + std::to_string(flow) + " went to server " + std::to_string(server));
                }
                fl.server = server;
            } else if (fl.server != server) {
                ++sticky_violations;
                note("flow " + std::to_string(flow) + " moved from server " + std::to_string(fl.server) + " to " +
                     std::to_string(server));
            }
            ++received;
            rte_pktmbuf_free(out[i]);
        }
    }

    void send(rte_mbuf* m) {
        while (sent - received > 512) drain();  // bounded in flight: the ring never overflows
        ASSERT_NE(m, nullptr);
        while (rte_ring_enqueue(g_rx, m) != 0) drain();
        ++sent;
    }
};

TEST_F(LiveUpdate, SwapsUnderContinuousTraffic) {
    dpdk::DataplaneOptions opt;
    opt.uplink = std::to_string(g_port);
    opt.conn_capacity = 1 << 16;
    opt.timeouts.tcp_new = 600'000;
    dpdk::Dataplane dp(opt);
    dp.start();

    std::mt19937 rng(2024);
    std::vector<int> state(kCandidates, 0);
    state[0] = state[1] = state[2] = 1;
    uint64_t gen = 1;
    auto bytes = snapshot(gen, state);
    ASSERT_TRUE(dp.load_snapshot(bytes));
    auto cur = std::move(LoadedSnapshot::load(bytes, 1).value());

    uint32_t next_flow = 0;
    unsigned corrupt_refused = 0;
    unsigned swaps_in_flight = 0;  // swaps made while frames were queued or being forwarded
    const int rounds = 120;
    for (int round = 0; round < rounds; ++round) {
        for (int op = 0; op < 300; ++op) {
            const unsigned r = rng() % 10;
            if (r < 3 || open_flows.empty()) {
                const uint32_t id = next_flow++;
                Flow& f = flows[id];
                f.allowed_first.insert(expected_server(*cur, id));
                open_flows.push_back(id);
                send(frame(id, tcpflag::kSyn));
            } else {
                const size_t pick = rng() % open_flows.size();
                const uint32_t id = open_flows[pick];
                if (r == 9) {
                    send(frame(id, tcpflag::kFin | tcpflag::kAck));
                    open_flows.erase(open_flows.begin() + static_cast<long>(pick));
                } else {
                    send(frame(id, tcpflag::kAck | tcpflag::kPsh));
                }
            }
            if (op % 16 == 0) drain();
        }
        // Next state: some servers join or come back, some retire (their connections stay),
        // weights change; at least one server is in rotation.
        std::vector<int> next = state;
        for (unsigned i = 0; i < kCandidates; ++i) {
            const unsigned r = rng() % 6;
            if (r == 0 && next[i] > 0) next[i] = -1;
            else if (r == 1) next[i] = 1 + static_cast<int>(rng() % 4);
        }
        if (std::none_of(next.begin(), next.end(), [](int s) { return s > 0; })) next[rng() % kCandidates] = 2;
        auto nb = snapshot(++gen, next);
        auto nls = std::move(LoadedSnapshot::load(nb, 1).value());
        // Frames already queued may be handled under either table.
        for (auto& [id, f] : flows)
            if (f.server < 0) f.allowed_first.insert(expected_server(*nls, id));
        if (sent > received) ++swaps_in_flight;
        auto res = dp.load_snapshot(nb);
        ASSERT_TRUE(res) << res.error();
        ASSERT_EQ(res.value(), gen);
        cur = std::move(nls);
        state = next;

        if (round % 10 == 5) {
            auto bad = snapshot(gen + 1, state);
            bad[bad.size() / 2] ^= 0x5A;
            auto r2 = dp.load_snapshot(bad);
            ASSERT_FALSE(r2);
            EXPECT_NE(r2.error().find("checksum"), std::string::npos);
            EXPECT_EQ(dp.generation(), gen);
            ++corrupt_refused;
        }
    }
    // Everything sent comes back.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (received < sent && std::chrono::steady_clock::now() < deadline) {
        drain();
        usleep(1000);
    }
    dp.stop();
    drain();
    const auto c = dp.counters();
    EXPECT_EQ(received, sent) << "frames lost; dataplane counters: " << nlohmann::json(c).dump();
    EXPECT_EQ(c.dropped, 0u) << nlohmann::json(c.drops).dump();
    EXPECT_EQ(sticky_violations, 0u) << first_problem;
    EXPECT_EQ(table_violations, 0u) << first_problem;
    EXPECT_EQ(corrupt_refused, static_cast<unsigned>(rounds / 10));
    EXPECT_GT(next_flow, 10000u);
    EXPECT_GT(swaps_in_flight, static_cast<unsigned>(rounds / 2)) << "swaps did not overlap traffic";
    EXPECT_EQ(dp.generation(), gen);
    std::cout << "sent " << sent << " frames over " << next_flow << " flows, " << gen << " snapshots, "
              << corrupt_refused << " corrupt ones refused\n";
}

}  // namespace

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    const std::string prefix = "fl-live-" + std::to_string(getpid());
    std::vector<std::string> args = {"live-update-test", "--no-huge", "-m", "256", "--no-pci",
                                     "--file-prefix", prefix, "-l", "0-1", "--log-level", "*:warning"};
    std::vector<char*> av;
    for (auto& a : args) av.push_back(a.data());
    if (rte_eal_init(static_cast<int>(av.size()), av.data()) < 0) {
        std::fprintf(stderr, "EAL init failed: %s\n", rte_strerror(rte_errno));
        return 1;
    }
    g_pool = rte_pktmbuf_pool_create("test_pool", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    g_rx = rte_ring_create("to_dp", 4096, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    g_tx = rte_ring_create("from_dp", 4096, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!g_pool || !g_rx || !g_tx) {
        std::fprintf(stderr, "cannot create the test pool or rings\n");
        return 1;
    }
    g_port = rte_eth_from_rings("fl_live", &g_rx, 1, &g_tx, 1, 0);
    if (g_port < 0) {
        std::fprintf(stderr, "cannot create the ring port\n");
        return 1;
    }
    spdlog::set_level(spdlog::level::warn);
    const int rc = RUN_ALL_TESTS();
    // EAL leaves its runtime directory (/var/run/dpdk/PREFIX) behind: remove it.
    const std::string runtime_dir = rte_eal_get_runtime_dir();
    rte_eal_cleanup();
    std::error_code ec;
    std::filesystem::remove_all(runtime_dir, ec);
    return rc;
}
