// Per-worker placement (docs/architecture.md, "Per-worker placement"): the state two workers
// write on their packet paths shares no cache line, so neither worker's writes evict the
// other's lines (false sharing). Builds two workers the way the DPDK adapter does and checks
// the addresses of everything each writes.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "fulcrum/cache_line.hpp"
#include "fulcrum/forward.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using test::ip;

namespace {

struct Region {
    std::string what;
    uintptr_t begin;
    size_t bytes;
    uintptr_t first_line() const { return begin / kCacheLine; }
    uintptr_t last_line() const { return (begin + bytes - 1) / kCacheLine; }
};

template <class T>
Region region(const std::string& what, const T* p, size_t n = 1) {
    return {what, reinterpret_cast<uintptr_t>(p), n * sizeof(T)};
}

struct AlignedFree {
    void operator()(void* p) const { ::operator delete (p, std::align_val_t{kCacheLine}); }
};

// A worker as the adapter makes one: its own allocation, its connection table in separate
// 64-byte aligned memory (rte_malloc there), the sync export ring on.
struct OneWorker {
    std::unique_ptr<void, AlignedFree> conn_mem;
    std::unique_ptr<Worker> w;

    OneWorker(unsigned id, const WorkerConfig& base) {
        WorkerConfig c = base;
        c.worker_id = id;
        conn_mem.reset(::operator new (ConnTable::memory_bytes(c.conn_capacity),
                                       std::align_val_t{kCacheLine}));
        c.conn_memory = conn_mem.get();
        w = std::make_unique<Worker>(c);
    }

    std::vector<Region> written(const std::string& who) {
        WorkerCounters& c = w->counters();
        std::vector<Region> r{
            region(who + " Worker (counters, table statistics, sync cursors)", w.get()),
            region(who + " counters by service", c.services.get(), c.max_services),
            region(who + " counters by server", c.servers.get(), c.max_servers),
            {who + " connection table", reinterpret_cast<uintptr_t>(conn_mem.get()),
             ConnTable::memory_bytes(w->config().conn_capacity)},
            region(who + " sync export ring", w->sync_export_ring()),
            region(who + " sync export slots", w->sync_export_ring()->slots(),
                   w->sync_export_ring()->capacity()),
            region(who + " sync install ring", &w->sync_install_ring()),
            region(who + " sync install slots", w->sync_install_ring().slots(),
                   w->sync_install_ring().capacity()),
            region(who + " sync dump ring", &w->sync_dump_ring()),
            region(who + " sync dump slots", w->sync_dump_ring().slots(),
                   w->sync_dump_ring().capacity()),
        };
        return r;
    }
};

WorkerConfig config() {
    WorkerConfig c;
    c.own_mac = MacAddr{{0x02, 0, 0, 0, 0, 0xaa}};
    // Sizes whose arrays do not end on a cache line by themselves (61 x 24 and 37 x 40 bytes,
    // rings of 3 x 56 and 5 x 80 bytes): only the allocation's padding keeps them apart.
    c.conn_capacity = 1000;
    c.max_services = 61;
    c.max_servers = 37;
    c.sync_ring = 4;
    c.sync_install_ring = 3;
    c.sync_dump_ring = 5;
    return c;
}

// Every pair of regions in `all` (of any worker) is in disjoint cache lines, and each starts
// on a line: then its allocation, aligned and padded to whole lines, shares no line with any
// other allocation either.
void expect_line_exclusive(const std::vector<Region>& all) {
    for (const Region& a : all) {
        EXPECT_EQ(a.begin % kCacheLine, 0u) << a.what << " does not start on a cache line";
        for (const Region& b : all) {
            if (&a == &b) continue;
            EXPECT_TRUE(a.last_line() < b.first_line() || b.last_line() < a.first_line())
                << a.what << " [" << std::hex << a.begin << ", +" << std::dec << a.bytes << ") and "
                << b.what << " [" << std::hex << b.begin << ", +" << std::dec << b.bytes
                << ") share a cache line";
        }
    }
}

TEST(WorkerLayout, TypesTakeWholeCacheLines) {
    EXPECT_EQ(alignof(Worker), kCacheLine);
    EXPECT_EQ(sizeof(Worker) % kCacheLine, 0u);
    for (size_t cap : {size_t{1}, size_t{1000}, size_t{8192}, size_t{1} << 20})
        EXPECT_EQ(ConnTable::memory_bytes(cap) % kCacheLine, 0u) << "capacity " << cap;
}

TEST(WorkerLayout, TwoWorkersWriteDisjointCacheLines) {
    const WorkerConfig c = config();
    // Allocated one after the other, as the adapter does: heap neighbours.
    OneWorker a(0, c), b(1, c);
    std::vector<Region> all = a.written("worker 0");
    for (Region& r : b.written("worker 1")) all.push_back(r);
    expect_line_exclusive(all);
}

TEST(WorkerLayout, CounterArraysOfManySmallAllocationsStayApart) {
    // Interleaved with other small heap allocations (what the control thread allocates meanwhile):
    // each counter array still keeps its lines to itself.
    std::vector<std::unique_ptr<ServiceCounters[]>> svc;
    std::vector<std::unique_ptr<ServerCounters[]>> srv;
    std::vector<std::unique_ptr<char[]>> other;
    std::vector<Region> all;
    for (size_t n = 1; n <= 24; ++n) {
        svc.emplace_back(new ServiceCounters[n]);
        other.emplace_back(new char[n * 8]);
        srv.emplace_back(new ServerCounters[n]);
        all.push_back(region("services[" + std::to_string(n) + "]", svc.back().get(), n));
        all.push_back(region("servers[" + std::to_string(n) + "]", srv.back().get(), n));
        all.push_back({"other allocation", reinterpret_cast<uintptr_t>(other.back().get()), n * 8});
    }
    // The plain char arrays may start anywhere: check the counter arrays against everything.
    for (const Region& a : all) {
        if (a.what == "other allocation") continue;
        EXPECT_EQ(a.begin % kCacheLine, 0u) << a.what;
        for (const Region& b : all) {
            if (&a == &b) continue;
            EXPECT_TRUE(a.last_line() < b.first_line() || b.last_line() < a.first_line())
                << a.what << " and " << b.what << " share a cache line";
        }
    }
}

TEST(WorkerLayout, WrrAccumulatorsOfTwoWorkersShareNoLine) {
    // The one piece of a snapshot the workers write: each one's row of smooth-WRR accumulators.
    SnapshotSpec spec;
    spec.hash_seed = 7;
    ServiceSpec s;
    s.id = 1;
    s.name = "wrr";
    s.vip = ip("198.18.1.1");
    s.port = 80;
    s.proto = FL_PROTO_TCP;
    s.scheduler = Scheduler::wrr;
    s.forwarding = Forwarding::dsr;
    for (uint32_t i = 0; i < 3; ++i) {
        ServerSpec v;
        v.slot = i;
        v.addr = ip("198.18.2." + std::to_string(i + 1));
        v.mac = MacAddr{{0x02, 0, 0, 0, 0x10, static_cast<uint8_t>(i)}};
        v.weight = i + 1;
        s.servers.push_back(v);
    }
    spec.services.push_back(s);
    auto bytes = build_snapshot(spec);
    auto ls = LoadedSnapshot::load(bytes, 2);
    ASSERT_TRUE(ls) << ls.error();
    LoadedSnapshot& snap = *ls.value();
    const size_t n = snap.view().header().n_members;
    ASSERT_GT(n, 0u);
    const Region r0 = region("worker 0 WRR row", snap.wrr_state(0), n);
    const Region r1 = region("worker 1 WRR row", snap.wrr_state(1), n);
    EXPECT_TRUE(r0.last_line() < r1.first_line() || r1.last_line() < r0.first_line());
    // Each row is padded by kWrrPad accumulators on both sides (LoadedSnapshot::load): at
    // least a cache line, so no other allocation reaches the lines of the written part.
    EXPECT_GE(LoadedSnapshot::kWrrPad * sizeof(int64_t), kCacheLine);
}

}  // namespace
