// Google Benchmark micro-benchmarks of the Fulcrum core library: parser, flow hash, Maglev
// lookup and build, connection table, packet rewrites and the per-packet pipeline
// (Worker::process_burst), and the connection sync path from export to install. Results and the exact commands are in docs/benchmarks.md.
//
// Conventions:
//  - Every benchmark reports items_per_second (packets, lookups, hashes, builds); for the
//    single-item benchmarks the reported time is the time per item.
//  - Benchmarks that rewrite a frame start every iteration from a fresh copy of a template
//    (memcpy into an mbuf-like buffer with 128 bytes of headroom). The cost of that copy
//    alone is measured by the matching ".../copy_only" benchmark, so the net figure is the
//    difference of the two.
//  - The clock given to the connection table and the pipeline is fake (milliseconds).
//  - Fixtures (tables, frame pools) are built lazily the first time a benchmark runs, so a
//    filtered run (--benchmark_filter) only pays for what it measures.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"
#include "fulcrum/conntable.hpp"
#include "fulcrum/flow.hpp"
#include "fulcrum/forward.hpp"
#include "fulcrum/maglev.hpp"
#include "fulcrum/parse.hpp"
#include "fulcrum/rewrite.hpp"
#include "fulcrum/snapshot.hpp"
#include "fulcrum/sync.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using test::ip;
using test::mac;
using test::PacketBuilder;

namespace {

constexpr uint64_t kSeed = 0x5eedf00dcafe0001ull;  // flow hash seed of every benchmark
constexpr uint32_t kNow = 1'000'000;              // fake clock start (ms)
constexpr uint32_t kHeadroom = 128;               // like RTE_PKTMBUF_HEADROOM
constexpr uint32_t kBufSize = 2048;               // like a default mbuf data room
constexpr unsigned kBurst = 32;                   // pipeline burst size

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "core-bench: %s\n", what.c_str());
    std::abort();
}

// An mbuf-like buffer: a frame is copied in after kHeadroom bytes.
struct alignas(64) Mbuf {
    uint8_t mem[kBufSize];
    Frame load(const uint8_t* src, uint32_t len) {
        std::memcpy(mem + kHeadroom, src, len);
        return Frame{mem + kHeadroom, len, kHeadroom, kBufSize};
    }
};

// Ethernet pads frames to 60 bytes (64 with the FCS); the receiver sees the padding.
std::vector<uint8_t> pad60(std::vector<uint8_t> f) {
    if (f.size() < 60) f.resize(60, 0);
    return f;
}

const MacAddr kOwnMac = mac("02:00:00:00:00:aa");
const MacAddr kServerMac = mac("02:00:00:00:10:01");

// ---- flow keys ----------------------------------------------------------------------------

// Client flows to the VIP 198.18.1.1:443: client addresses from 100.64.0.0/10 and client
// ports, distinct for every i below 2^38.
FlowKey key_v4(uint64_t i) {
    uint8_t src[4];
    const uint8_t dst[4] = {198, 18, 1, 1};
    store_be32(src, 0x64400000u + static_cast<uint32_t>(i >> 16));
    return make_key(src, dst, false, ipproto::kTcp, static_cast<uint16_t>(i), 443);
}

// IPv6 clients in 2001:db8:c000::/48 to the VIP 2001:db8:1::1:443.
FlowKey key_v6(uint64_t i) {
    uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8, 0xc0, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    const uint8_t dst[16] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    store_be32(src + 8, static_cast<uint32_t>(i >> 48));
    store_be32(src + 12, static_cast<uint32_t>(i >> 16));
    return make_key(src, dst, true, ipproto::kTcp, static_cast<uint16_t>(i), 443);
}

struct Probe {  // a key with its hash, as the pipeline has them before the table lookup
    FlowKey key;
    uint64_t hash;
};
static_assert(sizeof(Probe) == 48);

Probe probe_v4(uint64_t i) {
    Probe p{key_v4(i), 0};
    p.hash = flow_hash(p.key, kSeed);
    return p;
}

// ---- 1. parser ----------------------------------------------------------------------------

std::vector<uint8_t> frame_ipv4_tcp() {  // a client's ACK to the VIP, padded to 60 bytes
    PacketBuilder b;
    b.from("100.64.3.7", 51234).to("198.18.1.1", 443).tcp(tcpflag::kAck);
    return pad60(b.build());
}

std::vector<uint8_t> frame_ipv6_tcp_ext() {  // hop-by-hop, routing and destination options
    PacketBuilder b;
    b.src = ip("2001:db8:c000::7");
    b.dst = ip("2001:db8:1::1");
    b.sport = 51234;
    b.dport = 443;
    b.tcp(tcpflag::kAck);
    b.ipv6_ext_types = {ipproto::kHopByHop, ipproto::kRouting, ipproto::kDestOpts};
    b.ipv6_ext = {std::vector<uint8_t>(8, 0), std::vector<uint8_t>(24, 0), std::vector<uint8_t>(16, 0)};
    b.ipv6_ext[1][1] = 2;  // (2 + 1) * 8 = 24 bytes
    b.ipv6_ext[2][1] = 1;  // 16 bytes
    return b.build();
}

std::vector<uint8_t> frame_vlan_udp() {  // 802.1Q-tagged DNS-sized UDP datagram
    PacketBuilder b;
    b.vlans = {100};
    b.from("100.64.3.7", 40000).to("198.18.1.1", 53).udp().with_payload(64);
    return b.build();
}

std::vector<uint8_t> frame_icmp_frag_needed() {
    // A router's fragmentation-needed about a server's DSR reply (from the VIP to the
    // client), quoting 548 bytes of it as RFC 1812 routers do (576 bytes in all).
    PacketBuilder reply;
    reply.from("198.18.1.1", 443).to("100.64.3.7", 51234).tcp(tcpflag::kAck).with_payload(1400);
    auto quoted = reply.build_ip();
    quoted.resize(548);
    PacketBuilder b;
    b.from("192.0.2.1").to("198.18.1.1");
    b.icmp_error(3, 4, 1400, quoted);
    return b.build();
}

void add_parse(const std::string& name, std::vector<uint8_t> frame, bool verify_csum) {
    benchmark::RegisterBenchmark(("Parse/" + name).c_str(), [frame, verify_csum](benchmark::State& st) {
        ParseOptions opt;
        opt.verify_ipv4_checksum = verify_csum;
        Parsed p;
        if (parse_packet(frame, p, opt) != Drop::none) return st.SkipWithError("frame does not parse");
        const std::span<const uint8_t> bytes(frame);
        for (auto _ : st) {
            Drop d = parse_packet(bytes, p, opt);
            benchmark::DoNotOptimize(d);
            benchmark::DoNotOptimize(p);
        }
        st.SetItemsProcessed(st.iterations());
        st.SetLabel(std::to_string(frame.size()) + "B frame");
    });
}

// ---- 2. hash ------------------------------------------------------------------------------

constexpr size_t kHashKeys = 4096;  // a key set that stays in L1/L2: the hash alone

void add_hash() {
    for (const auto& [name, make] : {std::pair{"Hash/flow_hash_v4", &key_v4}, std::pair{"Hash/flow_hash_v6", &key_v6}}) {
        benchmark::RegisterBenchmark(name, [make = make](benchmark::State& st) {
            std::vector<FlowKey> keys;
            for (size_t i = 0; i < kHashKeys; ++i) keys.push_back(make(i * 7919));
            size_t i = 0;
            for (auto _ : st) {
                uint64_t h = flow_hash(keys[i], kSeed);
                benchmark::DoNotOptimize(h);
                i = (i + 1) & (kHashKeys - 1);
            }
            st.SetItemsProcessed(st.iterations());
        });
    }
    benchmark::RegisterBenchmark("Hash/hash_to_range", [](benchmark::State& st) {
        std::vector<uint64_t> hashes;
        for (size_t i = 0; i < kHashKeys; ++i) hashes.push_back(flow_hash(key_v4(i), kSeed));
        uint32_t m = 65537;
        benchmark::DoNotOptimize(m);  // not a compile-time constant, as in the pipeline
        size_t i = 0;
        for (auto _ : st) {
            uint32_t r = hash_to_range(hashes[i], m);
            benchmark::DoNotOptimize(r);
            i = (i + 1) & (kHashKeys - 1);
        }
        st.SetItemsProcessed(st.iterations());
    });
}

// ---- 3-4. Maglev --------------------------------------------------------------------------

struct MaglevServers {
    std::vector<ServerIdentity> ids;
    std::vector<MaglevBackend> backends;
    explicit MaglevServers(size_t n) {
        ids.reserve(n);
        for (size_t i = 0; i < n; ++i)  // 10.0.0.0/8 servers, port 443, equal weights
            ids.push_back(server_identity(IpAddr::v4(0x0A000000u + static_cast<uint32_t>(i) + 1), 443));
        for (size_t i = 0; i < n; ++i) backends.push_back({ids[i], 1, static_cast<uint32_t>(i)});
    }
};

constexpr size_t kLookupKeys = size_t{1} << 20;  // distinct flows per lookup pass (40 MiB)

void add_maglev() {
    for (uint32_t size : {65537u, 655373u}) {
        benchmark::RegisterBenchmark("MaglevLookup", [](benchmark::State& st) {
            static const std::vector<FlowKey> keys = [] {
                std::vector<FlowKey> k(kLookupKeys);
                for (size_t i = 0; i < kLookupKeys; ++i) k[i] = key_v4(i * 40503);
                return k;
            }();
            const auto m = static_cast<uint32_t>(st.range(0));
            const MaglevServers servers(100);
            const std::vector<uint32_t> table = maglev_build(servers.backends, m, kSeed);
            const uint32_t* t = table.data();
            size_t i = 0;
            for (auto _ : st) {
                uint32_t v = t[hash_to_range(flow_hash(keys[i], kSeed), m)];
                benchmark::DoNotOptimize(v);
                i = (i + 1) & (kLookupKeys - 1);
            }
            st.SetItemsProcessed(st.iterations());
            st.SetLabel("100 servers, table " + std::to_string(m * 4 / 1024) + " KiB");
        })->Arg(size)->ArgName("M");
    }
    for (uint32_t size : {65537u, 655373u}) {
        for (int n : {10, 100, 1000}) {
            benchmark::RegisterBenchmark("MaglevBuild", [](benchmark::State& st) {
                const auto n_servers = static_cast<size_t>(st.range(0));
                const auto m = static_cast<uint32_t>(st.range(1));
                const MaglevServers servers(n_servers);
                std::vector<uint32_t> table(m);
                for (auto _ : st) {
                    maglev_build(servers.backends, m, kSeed, table);
                    benchmark::DoNotOptimize(table.data());
                    benchmark::ClobberMemory();
                }
                if (std::count(table.begin(), table.end(), kMaglevEmpty) != 0)
                    return st.SkipWithError("table not full");
                st.SetItemsProcessed(st.iterations());  // builds per second
            })->Args({n, static_cast<int64_t>(size)})->ArgNames({"servers", "M"})->Unit(benchmark::kMillisecond);
        }
    }
}

// ---- 5. connection table ------------------------------------------------------------------

// Pre-faulted memory for a connection table, like the DPDK adapter's NUMA-local memory:
// 4 KiB pages (MADV_NOHUGEPAGE) or transparent huge pages (MADV_HUGEPAGE, 2 MiB).
class Region {
public:
    Region(size_t bytes, bool huge) {
        constexpr size_t k2M = size_t{2} << 20;
        len_ = (bytes + k2M - 1) & ~(k2M - 1);
        map_len_ = len_ + k2M;
        base_ = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base_ == MAP_FAILED) die("mmap of " + std::to_string(map_len_) + " bytes failed");
        const auto a = (reinterpret_cast<uintptr_t>(base_) + k2M - 1) & ~uintptr_t{k2M - 1};
        p_ = reinterpret_cast<void*>(a);
        madvise(p_, len_, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        std::memset(p_, 0, len_);  // fault every page in now, outside the timed loops
    }
    ~Region() { munmap(base_, map_len_); }
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    void* get() const { return p_; }

    // Share of the region the kernel backs with huge pages (AnonHugePages in
    // /proc/self/smaps for the mapping): THP can silently fall back to 4 KiB pages.
    double huge_share() const {
        FILE* f = std::fopen("/proc/self/smaps", "r");
        if (!f) return -1;
        char line[512];
        bool in = false;
        size_t huge_kb = 0;
        const auto p = reinterpret_cast<uintptr_t>(p_);
        while (std::fgets(line, sizeof line, f)) {
            unsigned long lo = 0, hi = 0;
            size_t kb = 0;
            if (std::sscanf(line, "%lx-%lx", &lo, &hi) == 2) {  // a mapping's first line
                in = p >= lo && p < hi;
            } else if (in && std::sscanf(line, "AnonHugePages: %zu kB", &kb) == 1) {
                huge_kb += kb;
            }
        }
        std::fclose(f);
        return static_cast<double>(huge_kb) * 1024.0 / static_cast<double>(len_);
    }

private:
    void* base_ = nullptr;
    void* p_ = nullptr;
    size_t len_ = 0;
    size_t map_len_ = 0;
};

constexpr uint32_t kInsertsPerMs = 4096;  // fake clock for inserts: ~4 M new flows per second

// Tables filled to 75% of capacity with established flows (keys 0 .. fill-1), the present
// keys shuffled, and absent keys (never inserted). One table on 4 KiB pages, one on THP,
// filled identically.
struct ConnLookupFixture {
    std::unique_ptr<Region> mem[2];
    std::unique_ptr<ConnTable> table[2];  // [0] 4 KiB pages, [1] THP
    std::vector<Probe> present;
    std::vector<Probe> absent;
};

ConnLookupFixture& conn_lookup_fixture(size_t capacity) {
    static std::map<size_t, std::unique_ptr<ConnLookupFixture>> cache;
    auto& f = cache[capacity];
    if (f) return *f;
    f = std::make_unique<ConnLookupFixture>();
    for (int h = 0; h < 2; ++h) {
        f->mem[h] = std::make_unique<Region>(ConnTable::memory_bytes(capacity), h == 1);
        f->table[h] = std::make_unique<ConnTable>(capacity, ConnTimeouts{}, f->mem[h]->get());
    }
    const size_t fill = capacity / 4 * 3;
    for (size_t i = 0; i < fill; ++i) {
        const Probe p = probe_v4(i);
        for (auto& t : f->table)
            t->insert(p.key, p.hash, ConnState::tcp_established, kNow, static_cast<uint32_t>(i % 100), 1);
    }
    // Full buckets evicted some of the early keys: probe only those still present.
    f->present.reserve(fill);
    for (size_t i = 0; i < fill; ++i) {
        const Probe p = probe_v4(i);
        if (f->table[0]->find(p.key, p.hash, kNow) != ConnTable::kNone) f->present.push_back(p);
    }
    const size_t n_absent = std::min<size_t>(fill, size_t{2} << 20);
    f->absent.reserve(n_absent);
    for (size_t i = 0; i < n_absent; ++i) f->absent.push_back(probe_v4(capacity * 4 + i));
    std::mt19937_64 rng(42);
    std::shuffle(f->present.begin(), f->present.end(), rng);
    std::shuffle(f->absent.begin(), f->absent.end(), rng);
    return *f;
}

// A table filled to every way (2x capacity inserts with an advancing clock), for inserts
// that must evict; `next` continues the key sequence so every insert is a new key.
struct ConnFullFixture {
    std::unique_ptr<Region> mem;
    std::unique_ptr<ConnTable> table;
    uint64_t next = 0;
    uint32_t now = kNow;
};

ConnFullFixture& conn_full_fixture(size_t capacity, bool huge) {
    static std::map<std::pair<size_t, bool>, std::unique_ptr<ConnFullFixture>> cache;
    auto& f = cache[{capacity, huge}];
    if (f) return *f;
    f = std::make_unique<ConnFullFixture>();
    f->mem = std::make_unique<Region>(ConnTable::memory_bytes(capacity), huge);
    f->table = std::make_unique<ConnTable>(capacity, ConnTimeouts{}, f->mem->get());
    f->next = uint64_t{1} << 34;  // disjoint from the other fixtures' keys
    for (size_t i = 0; i < 2 * capacity; ++i) {
        const Probe p = probe_v4(f->next++);
        f->table->insert(p.key, p.hash, ConnState::tcp_established, f->now, 7, 1);
        if ((f->next & (kInsertsPerMs - 1)) == 0) ++f->now;
    }
    return *f;
}

std::string cap_name(size_t capacity) {
    return capacity % 1'000'000 == 0 ? std::to_string(capacity / 1'000'000) + "M" : std::to_string(capacity);
}

void run_lookups(benchmark::State& st, ConnTable& t, const std::vector<Probe>& probes) {
    const size_t n = probes.size();
    size_t i = 0;
    uint64_t hits = 0;
    for (auto _ : st) {
        const Probe& p = probes[i];
        if (++i == n) i = 0;
        uint32_t idx = t.find(p.key, p.hash, kNow + 1);
        hits += idx != ConnTable::kNone;
        benchmark::DoNotOptimize(idx);
    }
    st.SetItemsProcessed(st.iterations());
    st.counters["hit_ratio"] = static_cast<double>(hits) / static_cast<double>(st.iterations());
}

// As the pipeline does: prefetch the buckets of a burst of 32, then look them up.
void run_lookups_burst(benchmark::State& st, ConnTable& t, const std::vector<Probe>& probes) {
    const size_t n = probes.size() / kBurst * kBurst;
    size_t i = 0;
    uint64_t hits = 0;
    for (auto _ : st) {
        const Probe* b = &probes[i];
        i += kBurst;
        if (i == n) i = 0;
        for (unsigned j = 0; j < kBurst; ++j) t.prefetch(b[j].hash);
        for (unsigned j = 0; j < kBurst; ++j) {
            uint32_t idx = t.find(b[j].key, b[j].hash, kNow + 1);
            hits += idx != ConnTable::kNone;
            benchmark::DoNotOptimize(idx);
        }
    }
    st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * kBurst));
    st.counters["hit_ratio"] = static_cast<double>(hits) / static_cast<double>(st.iterations() * kBurst);
    st.counters["ns_per_lookup"] = benchmark::Counter(static_cast<double>(kBurst),
        benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void add_conntable() {
    // The cost of making a key and hashing it, included in the insert benchmarks below
    // (their keys are generated in the loop: a precomputed array would not fit).
    benchmark::RegisterBenchmark("ConnTable/keygen_hash", [](benchmark::State& st) {
        uint64_t i = 0;
        for (auto _ : st) {
            Probe p = probe_v4(i++);
            benchmark::DoNotOptimize(p);
        }
        st.SetItemsProcessed(st.iterations());
    });
    for (size_t capacity : {size_t{1'000'000}, size_t{10'000'000}}) {
        const std::string c = "ConnTable/" + cap_name(capacity) + "/";
        for (int huge = 0; huge < 2; ++huge) {
            const std::string pages = huge ? "/thp" : "/4k";
            benchmark::RegisterBenchmark((c + "hit" + pages).c_str(), [capacity, huge](benchmark::State& st) {
                auto& f = conn_lookup_fixture(capacity);
                run_lookups(st, *f.table[huge], f.present);
                st.counters["huge_share"] = f.mem[huge]->huge_share();
            });
            benchmark::RegisterBenchmark((c + "miss" + pages).c_str(), [capacity, huge](benchmark::State& st) {
                auto& f = conn_lookup_fixture(capacity);
                run_lookups(st, *f.table[huge], f.absent);
            });
            benchmark::RegisterBenchmark((c + "hit_burst32" + pages).c_str(), [capacity, huge](benchmark::State& st) {
                auto& f = conn_lookup_fixture(capacity);
                run_lookups_burst(st, *f.table[huge], f.present);
            });
        }
        for (int huge = 0; huge < 2; ++huge) {
            const std::string pages = huge ? "/thp" : "/4k";
            // Inserts of new keys into an empty table until it is half full: fresh table per
            // run (fixed iteration count) on pre-faulted memory.
            benchmark::RegisterBenchmark((c + "insert_empty_to_50pct" + pages).c_str(), [capacity, huge](benchmark::State& st) {
                static std::map<std::pair<size_t, int>, std::unique_ptr<Region>> mem;
                auto& r = mem[{capacity, huge}];
                if (!r) r = std::make_unique<Region>(ConnTable::memory_bytes(capacity), huge == 1);
                ConnTable t(capacity, ConnTimeouts{}, r->get());
                uint64_t i = uint64_t{1} << 35;
                uint32_t now = kNow;
                for (auto _ : st) {
                    const Probe p = probe_v4(i++);
                    uint32_t idx = t.insert(p.key, p.hash, ConnState::tcp_established, now, 7, 1);
                    benchmark::DoNotOptimize(idx);
                    if ((i & (kInsertsPerMs - 1)) == 0) ++now;
                }
                st.SetItemsProcessed(st.iterations());
                st.counters["evictions"] = static_cast<double>(t.stats().evictions.get());
                st.counters["huge_share"] = r->huge_share();
            })->Iterations(static_cast<benchmark::IterationCount>(capacity / 2));
            // Inserts of new keys into a full table: every insert evicts the least recently
            // used way of its bucket.
            benchmark::RegisterBenchmark((c + "insert_full_evict" + pages).c_str(), [capacity, huge](benchmark::State& st) {
                auto& f = conn_full_fixture(capacity, huge == 1);
                ConnTable& t = *f.table;
                const uint64_t ev0 = t.stats().evictions.get();
                for (auto _ : st) {
                    const Probe p = probe_v4(f.next++);
                    uint32_t idx = t.insert(p.key, p.hash, ConnState::tcp_established, f.now, 7, 1);
                    benchmark::DoNotOptimize(idx);
                    if ((f.next & (kInsertsPerMs - 1)) == 0) ++f.now;
                }
                st.SetItemsProcessed(st.iterations());
                st.counters["evictions_per_insert"] =
                    static_cast<double>(t.stats().evictions.get() - ev0) / static_cast<double>(st.iterations());
                st.counters["load"] = static_cast<double>(t.size()) / static_cast<double>(t.capacity());
                st.counters["huge_share"] = f.mem->huge_share();
            });
        }
    }
}

// ---- 6. rewrites --------------------------------------------------------------------------

EncapParams encap_params() {
    EncapParams e;
    const uint8_t s4[4] = {198, 18, 255, 0};
    std::memcpy(e.src4, s4, 4);
    e.src4_len = 24;
    const auto s6 = ip("2001:db8:ffff::");
    std::memcpy(e.src6, s6.bytes.data(), 16);
    e.src6_len = 64;
    e.gue_port = 6080;
    e.ttl = 64;
    return e;
}

std::vector<uint8_t> frame_ipv6_tcp(size_t payload) {
    PacketBuilder b;
    b.src = ip("2001:db8:c000::7");
    b.dst = ip("2001:db8:1::1");
    b.sport = 51234;
    b.dport = 443;
    b.tcp(tcpflag::kAck).with_payload(payload);
    return pad60(b.build());
}

std::vector<uint8_t> frame_ipv4_tcp_payload(size_t payload) {
    PacketBuilder b;
    b.from("100.64.3.7", 51234).to("198.18.1.1", 443).tcp(tcpflag::kAck).with_payload(payload);
    return pad60(b.build());
}

std::vector<uint8_t> frame_echo(bool v6) {  // ping's default 56 bytes of data
    PacketBuilder b;
    if (v6) {
        b.src = ip("2001:db8:c000::7");
        b.dst = ip("2001:db8:1::1");
    } else {
        b.from("100.64.3.7").to("198.18.1.1");
    }
    b.icmp_echo(0x1234, 1).with_payload(56);
    return b.build();
}

// (frame, its parse, its flow hash, an IP id)
using RewriteFn = bool (*)(Frame&, const Parsed&, uint64_t, uint16_t);

void add_copy_only(const std::string& name, const std::vector<uint8_t>& frame) {
    benchmark::RegisterBenchmark(("Rewrite/copy_only/" + name).c_str(), [frame](benchmark::State& st) {
        auto buf = std::make_unique<Mbuf>();
        const auto len = static_cast<uint32_t>(frame.size());
        for (auto _ : st) {
            Frame f = buf->load(frame.data(), len);
            benchmark::DoNotOptimize(f);
            benchmark::ClobberMemory();
        }
        st.SetItemsProcessed(st.iterations());
        st.SetLabel(std::to_string(len) + "B frame");
    });
}

void add_rewrite(const std::string& name, const std::string& copy_name, const std::vector<uint8_t>& frame,
                 RewriteFn fn) {
    benchmark::RegisterBenchmark(("Rewrite/" + name).c_str(), [frame, fn, copy_name](benchmark::State& st) {
        Parsed p;
        if (parse_packet(frame, p) != Drop::none) return st.SkipWithError("template does not parse");
        const uint64_t hash = flow_hash(flow_key_of(p), kSeed);  // the pipeline has it already
        auto buf = std::make_unique<Mbuf>();
        const auto len = static_cast<uint32_t>(frame.size());
        {
            Frame f = buf->load(frame.data(), len);
            if (!fn(f, p, hash, 1)) return st.SkipWithError("rewrite failed");
            Parsed out;
            if (parse_packet(f.bytes(), out) != Drop::none) return st.SkipWithError("result does not parse");
        }
        uint16_t n = 0;
        for (auto _ : st) {
            Frame f = buf->load(frame.data(), len);  // fresh frame; its own cost: copy_only
            benchmark::ClobberMemory();
            bool ok = fn(f, p, hash, n++);
            benchmark::DoNotOptimize(ok);
            benchmark::DoNotOptimize(f);
            benchmark::ClobberMemory();
        }
        st.SetItemsProcessed(st.iterations());
        st.SetLabel(std::to_string(len) + "B frame; baseline copy_only/" + copy_name);
    });
}

const uint8_t kServer4[4] = {10, 0, 0, 7};
const uint8_t kServer6[16] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7};

const EncapParams kEncap = encap_params();
// What the worker keeps per snapshot (see EncapTemplate): the *_template cases below.
const EncapTemplate kEncapTemplate = EncapTemplate::from(kEncap);

void add_rewrites() {
    const auto v4 = frame_ipv4_tcp();
    const auto v6 = frame_ipv6_tcp(0);
    const auto v6_big = frame_ipv6_tcp(1400);
    const auto v4_1500 = frame_ipv4_tcp_payload(1460);  // 1500-byte IP packet, DF
    const auto v6_1500 = frame_ipv6_tcp(1440);
    const auto echo4 = frame_echo(false);
    const auto echo6 = frame_echo(true);
    add_copy_only("v4_ack_60B", v4);
    add_copy_only("v6_ack_74B", v6);
    add_copy_only("v6_1474B", v6_big);
    add_copy_only("v4_1514B", v4_1500);
    add_copy_only("v6_1514B", v6_1500);
    add_copy_only("echo_v4_98B", echo4);
    add_copy_only("echo_v6_118B", echo6);

    add_rewrite("dsr_set_macs", "v4_ack_60B", v4, [](Frame& f, const Parsed&, uint64_t, uint16_t) {
        set_macs(f.data, kServerMac.bytes.data(), kOwnMac.bytes.data());
        return true;
    });
    add_rewrite("ipip_v4", "v4_ack_60B", v4, [](Frame& f, const Parsed& p, uint64_t h, uint16_t id) {
        return encapsulate(f, p, FL_FWD_IPIP, kServer4, kEncap, h, id);
    });
    add_rewrite("ipip_v4_template", "v4_ack_60B", v4, [](Frame& f, const Parsed& p, uint64_t h, uint16_t id) {
        return encapsulate(f, p, FL_FWD_IPIP, kServer4, kEncapTemplate, h, id);
    });
    add_rewrite("gue_v4_template", "v4_ack_60B", v4, [](Frame& f, const Parsed& p, uint64_t h, uint16_t id) {
        return encapsulate(f, p, FL_FWD_GUE, kServer4, kEncapTemplate, h, id);
    });
    add_rewrite("ip6ip6", "v6_ack_74B", v6, [](Frame& f, const Parsed& p, uint64_t h, uint16_t id) {
        return encapsulate(f, p, FL_FWD_IPIP, kServer6, kEncap, h, id);
    });
    add_rewrite("gue_v4", "v4_ack_60B", v4, [](Frame& f, const Parsed& p, uint64_t h, uint16_t id) {
        return encapsulate(f, p, FL_FWD_GUE, kServer4, kEncap, h, id);
    });
    add_rewrite("gue_v6", "v6_ack_74B", v6, [](Frame& f, const Parsed& p, uint64_t h, uint16_t id) {
        return encapsulate(f, p, FL_FWD_GUE, kServer6, kEncap, h, id);
    });
    add_rewrite("gue_v6_1400B_payload", "v6_1474B", v6_big, [](Frame& f, const Parsed& p, uint64_t h, uint16_t id) {
        return encapsulate(f, p, FL_FWD_GUE, kServer6, kEncap, h, id);
    });
    add_rewrite("echo_reply_v4", "echo_v4_98B", echo4, [](Frame& f, const Parsed& p, uint64_t, uint16_t) {
        make_echo_reply(f, p);
        return true;
    });
    add_rewrite("echo_reply_v6", "echo_v6_118B", echo6, [](Frame& f, const Parsed& p, uint64_t, uint16_t) {
        make_echo_reply(f, p);
        return true;
    });
    add_rewrite("too_big_reply_v4", "v4_1514B", v4_1500, [](Frame& f, const Parsed& p, uint64_t, uint16_t) {
        return make_too_big_reply(f, p, 1480);
    });
    add_rewrite("too_big_reply_v6", "v6_1514B", v6_1500, [](Frame& f, const Parsed& p, uint64_t, uint16_t) {
        return make_too_big_reply(f, p, 1460);
    });
}

// ---- 7. pipeline --------------------------------------------------------------------------

// Templates stored back to back, each starting on a cache line (like mbuf data).
struct FramePool {
    std::vector<uint8_t> bytes;
    std::vector<uint32_t> off;
    std::vector<uint16_t> len;
    void add(const std::vector<uint8_t>& f) {
        const size_t o = bytes.size();
        bytes.resize(o + ((f.size() + 63) & ~size_t{63}), 0);
        std::memcpy(bytes.data() + o, f.data(), f.size());
        off.push_back(static_cast<uint32_t>(o));
        len.push_back(static_cast<uint16_t>(f.size()));
    }
    size_t size() const { return off.size(); }
};

ServiceSpec service(uint32_t id, const std::string& vip, Forwarding fwd, uint32_t first_slot,
                    uint32_t server_net) {
    ServiceSpec s;
    s.id = id;
    s.name = "svc" + std::to_string(id);
    s.vip = ip(vip);
    s.port = 443;
    s.proto = FL_PROTO_TCP;
    s.scheduler = Scheduler::maglev;
    s.forwarding = fwd;
    s.table_size = 65537;
    for (uint32_t i = 0; i < 100; ++i) {
        ServerSpec srv;
        srv.slot = first_slot + i;
        srv.addr = IpAddr::v4(server_net + i + 1);
        srv.mac = MacAddr{{0x02, 0, 0, 0, static_cast<uint8_t>(srv.slot >> 8), static_cast<uint8_t>(srv.slot)}};
        s.servers.push_back(srv);
    }
    return s;
}

// Two services of 100 servers each: 198.18.1.1:443 (DSR) and 198.18.1.2:443 (IPIP).
LoadedSnapshot& pipeline_snapshot() {
    static std::unique_ptr<LoadedSnapshot> snap = [] {
        SnapshotSpec spec;
        spec.hash_seed = kSeed;
        spec.encap.src4 = IpPrefix::parse("198.18.255.0/24");
        spec.encap.src6 = IpPrefix::parse("2001:db8:ffff::/64");
        spec.services.push_back(service(1, "198.18.1.1", Forwarding::dsr, 0, 0x0A000000u));
        spec.services.push_back(service(2, "198.18.1.2", Forwarding::ipip, 100, 0x0A010000u));
        auto ls = LoadedSnapshot::load(build_snapshot(spec), 1);
        if (!ls) die("snapshot: " + ls.error());
        return std::move(ls.value());
    }();
    return *snap;
}

// A client's ACK (or SYN) to `vip`:443 from 100.64.0.0/10, padded to 60 bytes.
std::vector<uint8_t> client_frame(uint32_t client, const char* vip, uint8_t flags) {
    PacketBuilder b;
    b.src = IpAddr::v4(0x64400000u + client);
    b.sport = static_cast<uint16_t>(1024 + (client * 7919) % 64000);
    b.dst = ip(vip);
    b.dport = 443;
    b.tcp(flags);
    return pad60(b.build());
}

// Traffic for the host itself (not a VIP): SSH and DNS to its address, ARP, a ping.
std::vector<uint8_t> kernel_frame(uint32_t i) {
    PacketBuilder b;
    b.src = IpAddr::v4(0xC6120000u + 2 + (i & 0xFF));  // 198.18.0.x neighbours
    b.dst = ip("198.18.0.1");
    switch (i % 4) {
        case 0: b.sport = static_cast<uint16_t>(40000 + i); b.dport = 22; b.tcp(tcpflag::kAck); break;
        case 1: b.sport = static_cast<uint16_t>(40000 + i); b.dport = 53; b.udp().with_payload(40); break;
        case 2: b.icmp_echo(static_cast<uint16_t>(i), 1).with_payload(56); break;
        default: {  // ARP request for the host's address
            std::vector<uint8_t> f(60, 0);
            std::memset(f.data(), 0xFF, 6);
            std::memcpy(f.data() + 6, mac("02:00:00:00:00:01").bytes.data(), 6);
            store_be16(f.data() + 12, eth::kArp);
            store_be16(f.data() + 14, 1);       // Ethernet
            store_be16(f.data() + 16, 0x0800);  // IPv4
            f[18] = 6;
            f[19] = 4;
            store_be16(f.data() + 20, 1);  // request
            return f;
        }
    }
    return pad60(b.build());
}

enum class Case { established_dsr, established_ipip, unique_syn, mix, established_dsr_500k };

struct PipelineCase {
    std::unique_ptr<Region> conn_mem;  // the worker's connection table memory
    std::unique_ptr<Worker> worker;
    LoadedSnapshot* snap = nullptr;
    FramePool pool;
    size_t next = 0;
    bool unique = false;   // patch every frame into a new flow
    uint64_t serial = 0;   // unique: next (client address, port)
    uint32_t now = kNow;
    uint32_t bursts = 0;
    std::unique_ptr<Mbuf[]> bufs{new Mbuf[kBurst]};
    Frame frames[kBurst];
    Verdict verdicts[kBurst];
};

// unique_syn: makes the frame a SYN of client (serial), keeping every checksum correct
// (RFC 1624 updates for TCP, the IPv4 header checksum recomputed).
inline void make_unique_syn(uint8_t* f, uint64_t serial) {
    uint8_t* iph = f + eth::kHeaderLen;
    uint8_t* tcp = iph + 20;
    const uint32_t src = 0x64400000u + static_cast<uint32_t>((serial >> 16) & 0x3FFFFF);
    const auto sport = static_cast<uint16_t>(serial);
    uint16_t c = load_be16(tcp + 16);
    c = csum_update16(c, load_be16(iph + 12), static_cast<uint16_t>(src >> 16));
    c = csum_update16(c, load_be16(iph + 14), static_cast<uint16_t>(src));
    c = csum_update16(c, load_be16(tcp), sport);
    store_be16(tcp + 16, c);
    store_be32(iph + 12, src);
    store_be16(tcp, sport);
    store_be16(iph + 10, 0);
    store_be16(iph + 10, ipv4_header_checksum(iph, 20));
}

// Restores a burst of frames from the templates (the "copy_only" cost). Not inlined, so
// callgrind can attribute its instructions (--toggle-collect=*restore_burst*).
__attribute__((noinline)) void restore_burst(PipelineCase& c) {
    const uint8_t* base = c.pool.bytes.data();
    for (unsigned i = 0; i < kBurst; ++i) {
        const size_t t = c.next;
        if (++c.next == c.pool.size()) c.next = 0;
        c.frames[i] = c.bufs[i].load(base + c.pool.off[t], c.pool.len[t]);
        if (c.unique) make_unique_syn(c.frames[i].data, c.serial++);
    }
}

// One timed burst through the pipeline (--toggle-collect=*pipeline_burst* for callgrind).
// The fake clock advances 1 ms every 256 bursts: 8192 packets/ms, about 8 Mpps.
__attribute__((noinline)) void pipeline_burst(PipelineCase& c) {
    c.worker->process_burst({c.frames, kBurst}, c.verdicts, c.snap, c.now);
    if ((++c.bursts & 255) == 0) ++c.now;
}

// The DPDK adapter's defaults (1 Mi connections, 4096 services, 65536 servers), with the
// connection table in pre-faulted memory: transparent huge pages standing in for DPDK's
// hugepage memory, or 4 KiB pages for comparison. `capacity`, if not 0, replaces the default
// table size (the table-span cases, add_pipeline).
PipelineCase& pipeline_case(Case k, bool huge, size_t capacity = 0) {
    static std::map<std::tuple<Case, bool, size_t>, std::unique_ptr<PipelineCase>> cache;
    auto& cp = cache[{k, huge, capacity}];
    if (cp) return *cp;
    cp = std::make_unique<PipelineCase>();
    PipelineCase& c = *cp;
    WorkerConfig cfg;
    cfg.own_mac = kOwnMac;
    if (capacity) cfg.conn_capacity = capacity;
    c.conn_mem = std::make_unique<Region>(ConnTable::memory_bytes(cfg.conn_capacity), huge);
    cfg.conn_memory = c.conn_mem->get();
    c.worker = std::make_unique<Worker>(cfg);
    c.snap = &pipeline_snapshot();
    std::mt19937_64 rng(7);
    auto established_pool = [&](uint32_t flows, const char* vip) {
        std::vector<uint32_t> order(flows);
        for (uint32_t i = 0; i < flows; ++i) order[i] = i;
        std::shuffle(order.begin(), order.end(), rng);
        std::vector<std::vector<uint8_t>> v;
        v.reserve(flows);
        for (uint32_t i : order) v.push_back(client_frame(i, vip, tcpflag::kAck));
        return v;
    };
    switch (k) {
        case Case::established_dsr:
            for (auto& f : established_pool(10'000, "198.18.1.1")) c.pool.add(f);
            break;
        case Case::established_dsr_500k:
            for (auto& f : established_pool(500'000, "198.18.1.1")) c.pool.add(f);
            break;
        case Case::established_ipip:
            for (auto& f : established_pool(10'000, "198.18.1.2")) c.pool.add(f);
            break;
        case Case::mix: {  // 3 of 4 packets: established DSR flows; 1 of 4: for the kernel
            const auto vip = established_pool(10'000, "198.18.1.1");
            size_t v = 0;
            for (uint32_t j = 0; j < 40'000; ++j)
                c.pool.add(j % 4 == 3 ? kernel_frame(j / 4) : vip[v++ % vip.size()]);
            break;
        }
        case Case::unique_syn: {
            c.pool.add(client_frame(0, "198.18.1.1", tcpflag::kSyn));
            c.unique = true;
            Mbuf tmp;
            Frame f = tmp.load(c.pool.bytes.data(), c.pool.len[0]);
            make_unique_syn(f.data, 123456789);
            if (!test::checksums_ok(f.data + eth::kHeaderLen, 40)) die("unique SYN checksums");
            break;
        }
    }
    // Warm-up (untimed): every established flow enters the table; for unique SYNs the table
    // fills (1.25x its capacity in SYNs) so the timed bursts run in the evicting regime.
    const size_t warm = c.unique ? c.worker->conns().capacity() * 5 / 4 : c.pool.size() + kBurst;
    for (size_t n = 0; n < warm; n += kBurst) {
        restore_burst(c);
        c.worker->process_burst({c.frames, kBurst}, c.verdicts, c.snap, c.now);
        if ((++c.bursts & 255) == 0) ++c.now;
    }
    return c;
}

void add_pipeline_case(const std::string& name, Case k, bool huge = true, bool copy_only = true, size_t capacity = 0) {
    benchmark::RegisterBenchmark(("Pipeline/" + name).c_str(), [k, huge, capacity](benchmark::State& st) {
        PipelineCase& c = pipeline_case(k, huge, capacity);
        const WorkerCounters& w = c.worker->counters();
        const ConnTableStats& ts = c.worker->conns().stats();
        const uint64_t fwd0 = w.forwarded.get(), kern0 = w.to_kernel.get(), drop0 = w.dropped.get();
        const uint64_t ins0 = ts.inserts.get(), ev0 = ts.evictions.get();
        for (auto _ : st) {
            restore_burst(c);  // see Pipeline/<case>/copy_only
            pipeline_burst(c);
            benchmark::DoNotOptimize(c.verdicts);
            benchmark::ClobberMemory();
        }
        const auto pkts = static_cast<double>(st.iterations() * kBurst);
        st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * kBurst));
        st.counters["ns_per_pkt"] = benchmark::Counter(static_cast<double>(kBurst),
            benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
        st.counters["fwd"] = static_cast<double>(w.forwarded.get() - fwd0) / pkts;
        st.counters["kernel"] = static_cast<double>(w.to_kernel.get() - kern0) / pkts;
        st.counters["drop"] = static_cast<double>(w.dropped.get() - drop0) / pkts;
        st.counters["new"] = static_cast<double>(ts.inserts.get() - ins0) / pkts;
        st.counters["evict"] = static_cast<double>(ts.evictions.get() - ev0) / pkts;
        st.counters["huge_share"] = c.conn_mem->huge_share();
        st.counters["table_mib"] = static_cast<double>(ConnTable::memory_bytes(c.worker->conns().capacity())) / (1 << 20);
    });
    if (!copy_only) return;
    benchmark::RegisterBenchmark(("Pipeline/" + name + "/copy_only").c_str(), [k, huge, capacity](benchmark::State& st) {
        PipelineCase& c = pipeline_case(k, huge, capacity);
        for (auto _ : st) {
            restore_burst(c);
            benchmark::DoNotOptimize(c.frames);
            benchmark::ClobberMemory();
        }
        st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * kBurst));
        st.counters["ns_per_pkt"] = benchmark::Counter(static_cast<double>(kBurst),
            benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
    });
}

void add_pipeline() {
    add_pipeline_case("established_dsr", Case::established_dsr);
    add_pipeline_case("established_ipip", Case::established_ipip);
    add_pipeline_case("unique_syn", Case::unique_syn);
    add_pipeline_case("mix_25pct_kernel", Case::mix);
    add_pipeline_case("established_dsr_500k", Case::established_dsr_500k);
    // The same on 4 KiB pages (copy costs as above).
    add_pipeline_case("established_dsr_4kpages", Case::established_dsr, false, false);
    add_pipeline_case("established_dsr_500k_4kpages", Case::established_dsr_500k, false, false);
    // The table's span: the same 10,000 flows in tables of other sizes (established_dsr has the
    // default, 1 Mi entries). From 512 Ki entries up nearly every flow has its bucket lines and
    // entry to itself, so a burst reads about as many lines in each of those tables while the
    // memory they are spread over, and its pages, grow (docs/benchmarks.md).
    for (const auto& [suffix, cap] : {std::pair{"32k", size_t{1} << 15}, std::pair{"128k", size_t{1} << 17},
                                      std::pair{"512k", size_t{1} << 19}, std::pair{"4m", size_t{1} << 22}})
        add_pipeline_case(std::string("established_dsr_table") + suffix, Case::established_dsr, true, false, cap);
}


// ---- connection sync --------------------------------------------------------------------------
// The whole path of a synced connection on one core, as the pair runs it split over two
// balancers: balancer A's worker establishes new flows (mid-stream TCP ACKs, each a new
// established entry) and exports a record per flow into its ring; the control side drains the
// ring, encodes RECORDS datagrams, decodes them as the peer does (every check), maps each
// record's server to a local slot and queues it on balancer B's worker install ring, and B's
// worker installs them (sync_poll). Control sockets, UDP and the network are left out: they
// are measured end to end by bench/sync.sh.
//
// Each run starts from empty tables and runs a fixed number of bursts (no eviction, no table
// full), so every iteration does the same work. "Sync/forward_only" is the same traffic through
// a worker with export disabled: the difference is what sync adds to the forwarding core.
constexpr uint32_t kSyncBursts = 4096;  // 131072 flows per run
constexpr size_t kSyncCapacity = 1u << 19;

struct SyncCase {
    std::unique_ptr<Region> mem_a, mem_b;
    std::unique_ptr<Worker> a, b;
    LoadedSnapshot* snap = nullptr;
    std::unique_ptr<SyncServerIndex> index;
    std::unique_ptr<SyncEncoder> enc;
    PipelineCase frames;  // the unique-ACK frame source (its worker is unused)
    std::vector<fl_sync_record> drained;
    std::vector<std::vector<uint8_t>> datagrams;
    uint64_t records = 0, installed = 0, refused = 0;
};

std::unique_ptr<SyncCase> make_sync_case(bool export_enabled) {
    auto c = std::make_unique<SyncCase>();
    c->snap = &pipeline_snapshot();
    WorkerConfig cfg;
    cfg.own_mac = kOwnMac;
    cfg.conn_capacity = kSyncCapacity;
    cfg.sync_ring = export_enabled ? 4096 : 0;
    c->mem_a = std::make_unique<Region>(ConnTable::memory_bytes(cfg.conn_capacity), true);
    cfg.conn_memory = c->mem_a->get();
    c->a = std::make_unique<Worker>(cfg);
    if (export_enabled) {
        WorkerConfig bcfg = cfg;
        bcfg.sync_ring = 0;
        c->mem_b = std::make_unique<Region>(ConnTable::memory_bytes(bcfg.conn_capacity), true);
        bcfg.conn_memory = c->mem_b->get();
        c->b = std::make_unique<Worker>(bcfg);
        c->index = std::make_unique<SyncServerIndex>(c->snap->view());
        SyncSenderConfig sc;
        sc.boot_id = 0x0123456789abcdefull;
        sc.config_digest = sync_config_digest(c->snap->view());
        c->enc = std::make_unique<SyncEncoder>(sc);
        c->drained.reserve(4096);
    }
    c->frames.pool.add(client_frame(0, "198.18.1.1", tcpflag::kAck));
    c->frames.unique = true;  // every frame a new flow (new client address and port)
    c->frames.serial = 1;
    return c;
}

// One burst of new flows through A, and (with export) everything A exported through the
// encoder, the decoder and B's install ring into B's table.
void sync_burst(SyncCase& c) {
    restore_burst(c.frames);
    c.a->process_burst({c.frames.frames, kBurst}, c.frames.verdicts, c.snap, c.frames.now);
    if (!c.b) return;
    c.drained.clear();
    fl_sync_record r;
    while (c.a->sync_export_ring()->pop(r)) c.drained.push_back(r);
    c.records += c.drained.size();
    c.datagrams.clear();
    c.enc->encode_records(c.drained, false, c.datagrams);
    const SyncDecodeOptions opt{nullptr, true, c.enc->boot_id() ? sync_config_digest(c.snap->view()) : 0};
    for (const auto& d : c.datagrams) {
        SyncDatagram dg;
        if (decode_sync_datagram(d, opt, dg) != SyncError::ok) die("sync bench: datagram refused");
        for (size_t i = 0; i < dg.count(); ++i) {
            const fl_sync_record rec = dg.record(i);
            SyncInstallItem it{};
            ConnState st{};
            if (!conn_entry_from_sync(rec, *c.index, it.entry, st)) {
                ++c.refused;
                continue;
            }
            it.state = st;
            it.idle_ms = rec.idle_ms;
            if (!c.b->sync_install_ring().push(it)) die("sync bench: install ring full");
        }
    }
    while (c.b->sync_poll(c.frames.now, c.snap) != 0) {
    }
}

void add_sync() {
    for (const bool exp : {true, false}) {
        const std::string name = exp ? "Sync/export_install" : "Sync/forward_only";
        benchmark::RegisterBenchmark(name.c_str(), [exp](benchmark::State& st) {
            auto c = make_sync_case(exp);  // fresh, empty tables for every run
            for (auto _ : st) {
                sync_burst(*c);
                benchmark::ClobberMemory();
            }
            const auto flows = static_cast<int64_t>(st.iterations() * kBurst);
            st.SetItemsProcessed(flows);
            st.counters["ns_per_flow"] = benchmark::Counter(static_cast<double>(kBurst),
                benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
            if (exp) {
                const WorkerCounters& a = c->a->counters();
                const WorkerCounters& b = c->b->counters();
                if (a.sync_export_ring_full.get() != 0 || c->refused != 0 ||
                    b.sync_installed.get() != c->records || c->records != static_cast<uint64_t>(flows))
                    st.SkipWithError("sync bench: records lost or refused on the way");
                st.counters["records"] = static_cast<double>(c->records);
                st.counters["installed"] = static_cast<double>(b.sync_installed.get());
                st.counters["ring_full"] = static_cast<double>(a.sync_export_ring_full.get());
            }
        })->Iterations(kSyncBursts);
    }
}

}  // namespace

int main(int argc, char** argv) {
    add_parse("ipv4_tcp", frame_ipv4_tcp(), true);
    add_parse("ipv4_tcp_no_csum_check", frame_ipv4_tcp(), false);
    add_parse("ipv6_tcp_ext_headers", frame_ipv6_tcp_ext(), true);
    add_parse("vlan_udp", frame_vlan_udp(), true);
    add_parse("icmp_frag_needed", frame_icmp_frag_needed(), true);
    add_hash();
    add_maglev();
    add_conntable();
    add_rewrites();
    add_pipeline();
    add_sync();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
