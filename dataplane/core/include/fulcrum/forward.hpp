// The per-packet forwarding pipeline: parse, find the service, find or create the
// connection, pick a server, rewrite. Pure C++ so it runs the same under DPDK, in unit
// tests and in benchmarks. One Worker per dataplane lcore; a LoadedSnapshot is shared
// read-only by all workers (each owns its row of WRR accumulators).
#pragma once

#include <atomic>
#include <bit>
#include <cassert>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "fulcrum/addr.hpp"
#include "fulcrum/bytes.hpp"
#include "fulcrum/cache_line.hpp"
#include "fulcrum/conntable.hpp"
#include "fulcrum/counter.hpp"
#include "fulcrum/drop.hpp"
#include "fulcrum/expected.hpp"
#include "fulcrum/flow.hpp"
#include "fulcrum/parse.hpp"
#include "fulcrum/rewrite.hpp"
#include "fulcrum/snapshot.hpp"
#include "fulcrum/spsc_ring.hpp"
#include "fulcrum/sync_abi.h"

namespace fulcrum {

// Read-only lookup of services by (VIP, port, protocol) and of VIPs by address.
class ServiceIndex {
public:
    static constexpr int32_t kNone = -1;
    static constexpr int32_t kAmbiguous = -2;

    struct Vip {
        // Service that receives fragments of this VIP, per protocol (fragments after the
        // first carry no port): the only service of that protocol on the VIP, kNone, or
        // kAmbiguous when there are several.
        int32_t frag_tcp = kNone;
        int32_t frag_udp = kNone;
    };

    void build(const SnapshotView& snap);
    int32_t find(const uint8_t* addr, bool v6, uint16_t port, uint8_t proto) const;
    const Vip* find_vip(const uint8_t* addr, bool v6) const;

    // Whether `addr` may be a VIP: false only for addresses that are not. A filter of the VIP
    // addresses, one bit per value of a cheap hash, set for each VIP. The source check of
    // every new connection asks find_vip about addresses that are nearly never VIPs; most miss
    // the filter for a multiply and a bit test, where the table costs a hash and a probe.
    // 1024 bits (two cache lines): with a hundred VIPs, about one other address in ten hits it.
    bool may_be_vip(const uint8_t* addr, bool v6) const {
        const uint32_t bit = filter_bit(addr, v6);
        return (vip_filter_[bit / 64] >> (bit % 64)) & 1;
    }

private:
    friend struct ServiceIndexTest;  // tests/unit/test_forward.cpp
    static constexpr uint32_t kFilterBits = 1024;
    static uint32_t filter_bit(const uint8_t* addr, bool v6) {
        // Multiplicative hashing: the top bits of the product depend on every bit of the
        // address (of both halves of an IPv6 one, the first multiplied in before the second).
        const uint64_t x = v6 ? (load_u64(addr) * detail::kP1) ^ load_u64(addr + 8) : load_u32(addr);
        return static_cast<uint32_t>((x * detail::kP0) >> (64 - std::countr_zero(kFilterBits)));
    }
    // find_vip without the filter.
    const Vip* find_vip_exact(const uint8_t* addr, bool v6) const;
    struct Key {
        uint64_t a = 0, b = 0;  // address
        uint32_t c = 0;         // port << 16 | proto << 8 | v6 << 1 | used
        friend bool operator==(const Key&, const Key&) = default;
    };
    struct Slot {
        Key key;
        int32_t service = kNone;
        Vip vip;
    };
    static Key make(const uint8_t* addr, bool v6, uint16_t port, uint8_t proto) {
        Key k;
        k.a = v6 ? load_u64(addr) : load_u32(addr);
        k.b = v6 ? load_u64(addr + 8) : 0;
        k.c = (uint32_t{port} << 16) | (uint32_t{proto} << 8) | (v6 ? 2u : 0u) | 1u;
        return k;
    }
    static uint64_t hash(const Key& k) {
        return detail::mum(k.a ^ detail::kP0, k.b ^ detail::kP1 ^ (uint64_t{k.c} * detail::kP2));
    }
    // Inline: every packet to a VIP takes one lookup.
    const Slot* lookup(const std::vector<Slot>& t, const Key& k) const {
        if (t.empty()) return nullptr;
        const Slot* slots = t.data();
        for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
            const Slot& s = slots[i];
            if (s.key == k) return &s;
            if (s.key.c == 0) return nullptr;
        }
    }
    static Slot& insert(std::vector<Slot>& t, const Key& k);

    std::vector<Slot> services_;  // open addressing, power-of-two size (mask_ + 1)
    std::vector<Slot> vips_;
    size_t mask_ = 0;
    uint64_t vip_filter_[kFilterBits / 64] = {};  // may_be_vip()
};

inline int32_t ServiceIndex::find(const uint8_t* addr, bool v6, uint16_t port, uint8_t proto) const {
    const Slot* s = lookup(services_, make(addr, v6, port, proto));
    return s ? s->service : kNone;
}

inline const ServiceIndex::Vip* ServiceIndex::find_vip_exact(const uint8_t* addr, bool v6) const {
    const Slot* s = lookup(vips_, make(addr, v6, 0, 0));
    return s ? &s->vip : nullptr;
}

inline const ServiceIndex::Vip* ServiceIndex::find_vip(const uint8_t* addr, bool v6) const {
    if (!may_be_vip(addr, v6)) return nullptr;
    return find_vip_exact(addr, v6);
}

// A validated snapshot with its lookup structures, ready for workers.
class LoadedSnapshot {
public:
    static constexpr size_t kWrrPad = 64 / sizeof(int64_t);
    static Expected<std::unique_ptr<LoadedSnapshot>> load(std::span<const uint8_t> bytes,
                                                         unsigned n_workers,
                                                         size_t max_bytes = kSnapshotDefaultMaxBytes);
    const SnapshotView& view() const { return view_; }
    const ServiceIndex& index() const { return index_; }
    uint64_t generation() const { return view_.generation(); }
    // This worker's smooth-WRR accumulators, one per member (indexed like the members array).
    int64_t* wrr_state(unsigned worker) { return wrr_[worker].data() + kWrrPad; }
    unsigned workers() const { return static_cast<unsigned>(wrr_.size()); }
    // Encapsulation parameters from the header; mtu 0 when the snapshot sets none.
    const EncapParams& encap() const { return encap_; }
    // The same worked out into the outer headers' fixed parts, for encapsulate().
    const EncapTemplate& encap_template() const { return encap_tpl_; }
    // By server slot, what the forwarding path reads of a server besides its address: `admit`,
    // what a connection entry made for that slot must hold for its packets to go there
    // (Worker::use_entry): the server's tag and service as tag << 32 | service, for a slot that
    // holds a server with a MAC, else kNotAdmitted (no entry's value: services are fewer); and
    // `mac`, the server's MAC in the low six bytes of a memory-order word. One load and compare
    // per packet instead of four fields, and a DSR forward never reads the server's record.
    struct Route {
        uint64_t admit;
        uint64_t mac;
    };
    static constexpr uint64_t kNotAdmitted = ~uint64_t{0};
    static constexpr uint64_t admit_key(uint32_t tag, uint32_t service) { return (uint64_t{tag} << 32) | service; }
    // Every snapshot's route table has all kRouteSlots slots, whatever its server count (the
    // slots past it are not admitted), and every connection entry's slot is below it: pick
    // takes a snapshot's slot (n_servers <= FL_MAX_SERVERS), sync installs map a peer's
    // server to one of ours, and restore_connection refuses larger ones. So an entry made
    // under a larger snapshot indexes the table without a bound check on every packet.
    static constexpr uint32_t kRouteSlots = FL_MAX_SERVERS;
    // Whether `routes` (routes() of a snapshot) lets connection entry `e` (server below
    // kRouteSlots) lead to its slot for service `svc`.
    static bool admits(const Route* routes, const ConnEntry& e, uint32_t svc) {
        assert(e.server < kRouteSlots);  // in builds with assertions (the tests'; not release)
        return routes[e.server].admit == admit_key(e.server_tag, svc);
    }
    const Route* routes() const { return routes_.data(); }

private:
    SnapshotBuffer buf_;
    SnapshotView view_;
    ServiceIndex index_;
    EncapParams encap_;
    EncapTemplate encap_tpl_;
    std::vector<Route> routes_;
    std::vector<std::vector<int64_t>> wrr_;
};

// Per-worker counters, read by telemetry threads while the worker writes them. The arrays by
// service and by server are allocated per worker in whole cache lines (CacheLineArrays); the
// scalar ones live in the worker's own 64-byte aligned Worker object.
struct ServiceCounters : CacheLineArrays {
    Counter packets, bytes, new_conns;
};
struct ServerCounters : CacheLineArrays {
    Counter packets, bytes, new_conns;
    // Signed gauges of connection entries pointing at this server, like IPVS's ActiveConn
    // and InActConn: active = opening, established or UDP; inactive = closing (FIN/RST seen).
    Counter active;
    Counter inactive;
};
struct WorkerCounters {
    // Every frame counts once in rx and once in exactly one of forwarded, replied, to_kernel
    // and dropped (dropped is the sum of drops[]).
    Counter rx, forwarded, replied, to_kernel, dropped;
    Counter too_big_replies;  // replied: fragmentation needed / packet too big
    Counter drops[kDropReasons];
    // Connection sync (docs/architecture.md, "Connection sync").
    Counter sync_exported;            // records pushed to the export ring
    Counter sync_export_ring_full;    // records dropped: the export ring was full
    Counter sync_installed;           // peer entries installed (new or overwriting)
    Counter sync_install_table_full;  // peer entries dropped: no way they may take
    Counter sync_install_expired;     // peer entries not installed: already past our timeout
    Counter sync_removed;             // entries removed by a REMOVED record
    std::unique_ptr<ServiceCounters[]> services;  // by service id
    std::unique_ptr<ServerCounters[]> servers;    // by server slot
    uint32_t max_services = 0, max_servers = 0;
};

enum class Action : uint8_t {
    drop,      // reason in Verdict::drop
    forward,   // rewritten for a server: transmit on the uplink
    forward_fragments,  // as forward, but larger than the MTU: fragment_ipv4() it first
    reply,     // answered (echo reply, too-big): transmit on the uplink
    to_kernel  // not VIP traffic: hand to the kernel (exception path)
};

struct Verdict {
    Action action = Action::drop;
    Drop drop = Drop::none;
    uint16_t l3_off = 0;  // forward_fragments: where the outer IPv4 header starts
    uint16_t mtu = 0;     // forward_fragments: largest fragment (IP bytes)
    // forward_fragments: what was counted for the frame, so that an adapter that cannot send
    // it can take the counts back (Worker::uncount_forward).
    uint16_t service = 0;
    // Read for forward_fragments alone: the fast lane's forward writes the fields before
    // these (the first eight bytes, one store) and leaves server and bytes as they were.
    uint32_t server = 0;
    uint32_t bytes = 0;
};

struct WorkerConfig {
    unsigned worker_id = 0;
    MacAddr own_mac;              // source MAC of forwarded frames
    uint16_t mtu = 1500;          // uplink MTU (IP packet size)
    size_t conn_capacity = 1 << 20;
    ConnTimeouts timeouts;
    bool verify_ipv4_checksum = true;  // in software, unless a frame says the NIC verified it
    uint32_t max_services = FL_MAX_SERVICES;
    uint32_t max_servers = FL_MAX_SERVERS;
    void* conn_memory = nullptr;  // optional: ConnTable::memory_bytes(conn_capacity), 64-aligned
    // Connection sync rings (docs/architecture.md, "Connection sync"), allocated once here.
    // sync_ring: records of this worker's connections for the HA peer (0: export disabled);
    // sync_install_ring: peer entries the control thread queues for this worker;
    // sync_dump_ring: the answer to a table dump request.
    size_t sync_ring = 0;
    size_t sync_install_ring = 65536;
    size_t sync_dump_ring = 4096;
    uint32_t sync_refresh_ms = 10'000;  // each established entry re-exported at most this often
    // Whether the adapter has an exception port. Without one, frames for the kernel are
    // dropped (no_exception_port) rather than counted to_kernel, so each frame counts once.
    bool exception_path = true;
};

// A sync record mapped to this balancer's server slot by the control thread, for one
// worker's install ring.
struct SyncInstallItem {
    ConnEntry entry;
    uint32_t idle_ms;
    ConnState state;  // ConnState::empty: remove the key's entry (a REMOVED record)
    uint8_t pad[3];
};

// One item of a worker's dump ring: a record of the dump `seq`, or its end marker.
struct SyncDumpItem {
    fl_sync_record record;
    uint64_t seq;
    uint8_t end;  // 1: the worker has sent every entry for `seq` (record unused)
    uint8_t pad[7];
};

// alignas(64): a Worker is allocated per worker lcore (make_unique, so aligned new) and its
// counters, connection-table statistics and sync cursors, written per packet, must not share
// a cache line with another worker's (docs/architecture.md, "Per-worker placement").
class alignas(kCacheLine) Worker {
public:
    // Connection-table lookups hash with this fixed seed, not the snapshot's: a new hash seed
    // (which re-deals Maglev tables) must not make established connections unreachable.
    static constexpr uint64_t kConnHashSeed = 0x636f6e6e2d74626cull;
    // The connection table's hash of a key: flow_hash with kConnHashSeed, or for an IPv4 key
    // the cheaper flow_hash_v4 of its non-zero words. Every look-up, insert and install of a
    // worker's table hashes with this (the table's layout is private to the process).
    static uint64_t conn_hash(const FlowKey& k) {
        if (k.is_v6) return flow_hash(k, kConnHashSeed);
        const auto* b = reinterpret_cast<const uint8_t*>(&k);
        return flow_hash_v4(load_u64(b), load_u64(b + 16), load_u64(b + 32), kConnHashSeed);
    }

    explicit Worker(const WorkerConfig& cfg);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    static constexpr unsigned kMaxBurst = 64;

    // Decides what to do with each frame and rewrites it accordingly: out[i] is the verdict
    // for frames[i]. The burst is processed in three passes (parse, hash and prefetch
    // the connection buckets; prefetch the matching entries; then decide), so memory latency
    // overlaps. At most kMaxBurst frames.
    // `snap` may be null (no snapshot yet). `now` is in milliseconds from any fixed origin.
    // Returns true when every frame was forwarded with its start and length unchanged (the
    // fast lane's DSR forwards: only the MACs rewritten), so the caller may send the whole
    // burst as it is without reading the verdicts; false otherwise (read out[]).
    bool process_burst(std::span<Frame> frames, Verdict* out, LoadedSnapshot* snap, uint32_t now);

    Verdict process(Frame& f, LoadedSnapshot* snap, uint32_t now) {
        Verdict v;
        process_burst({&f, 1}, &v, snap, now);
        return v;
    }

    // Housekeeping between bursts: expire a few connection buckets and, when exporting (an
    // export ring, active, a snapshot), re-export a few buckets' established entries so each
    // is refreshed once per refresh interval. `snap` must stay valid for the call.
    void idle(uint32_t now, size_t buckets = 64, const LoadedSnapshot* snap = nullptr);

    // ---- connection sync (docs/architecture.md, "Connection sync") ----
    static constexpr unsigned kSyncInstallBatch = 64;  // install ring items per sync_poll
    static constexpr unsigned kSyncDumpBuckets = 64;   // table buckets dumped per sync_poll
    // Worker side, every poll iteration: installs up to kSyncInstallBatch queued peer entries
    // and serves a pending dump request a few buckets further. Returns the items handled (0:
    // nothing to do). No allocation. The common poll, with nothing queued and no dump to
    // serve, is decided inline: the call to the full function cost tens of instructions.
    unsigned sync_poll(uint32_t now, const LoadedSnapshot* snap) {
        if (sync_in_->empty() && !dumping_ && dump_req_.load(std::memory_order_acquire) == dump_seq_) [[likely]]
            return 0;
        return sync_work(now, snap);
    }
    // The rings, for the control thread (the other end of each): null export ring when
    // export is disabled.
    SpscRing<fl_sync_record>* sync_export_ring() { return sync_out_.get(); }
    SpscRing<SyncInstallItem>& sync_install_ring() { return *sync_in_; }
    SpscRing<SyncDumpItem>& sync_dump_ring() { return *sync_dump_; }
    // Control thread: asks for a dump of every entry in a sync state, answered in the dump
    // ring as items tagged `seq` (non-zero, a new one per request) and an end marker. A new
    // request restarts a dump in progress.
    void request_sync_dump(uint64_t seq) { dump_req_.store(seq, std::memory_order_release); }
    void set_sync_refresh_ms(uint32_t ms) { sync_refresh_ms_.store(ms, std::memory_order_relaxed); }
    uint32_t sync_refresh_ms() const { return sync_refresh_ms_.load(std::memory_order_relaxed); }

    ConnTable& conns() { return conns_; }
    const ConnTable& conns() const { return conns_; }
    WorkerCounters& counters() { return ctr_; }
    const WorkerConfig& config() const { return cfg_; }
    void set_parse_checksum(bool verify) { popt_.verify_ipv4_checksum = verify; }
    void set_exception_path(bool present) { cfg_.exception_path = present; }
    // HA fencing (docs/architecture.md, "HA lease"): an inactive worker drops VIP traffic and
    // the ARP requests and neighbour solicitations for VIPs with Drop::inactive, and still
    // hands everything else to the kernel. The adapter sets it once per burst; process_burst
    // tests it once per burst, so the active path costs nothing per packet.
    void set_active(bool active) { active_ = active; }
    bool active() const { return active_; }

    // A forward_fragments frame the adapter could not send (no buffers, fragmentation
    // failed): takes back its forwarded, service and server counts, which then count it as a
    // drop with `reason`.
    void uncount_forward(const Verdict& v, Drop reason) {
        ctr_.forwarded.sub();
        if (v.service < ctr_.max_services) {
            ctr_.services[v.service].packets.sub();
            ctr_.services[v.service].bytes.sub(v.bytes);
        }
        if (v.server < ctr_.max_servers) {
            ctr_.servers[v.server].packets.sub();
            ctr_.servers[v.server].bytes.sub(v.bytes);
        }
        ctr_.drops[static_cast<unsigned>(reason)].add();
        ctr_.dropped.add();
    }

    // `n` to_kernel frames the adapter could not hand to the kernel (its exception queue was
    // full): they count as drops with `reason` instead.
    void uncount_to_kernel(Drop reason, uint64_t n = 1) {
        ctr_.to_kernel.sub(n);
        ctr_.drops[static_cast<unsigned>(reason)].add(n);
        ctr_.dropped.add(n);
    }
    // Restart handover, while the worker does not run: puts back a connection entry of the
    // previous dataplane process, idle for `idle_ms` at `now`, and counts it in its server's
    // active or inactive gauge (which its removal will take back).
    ConnRestore restore_connection(const ConnEntry& e, ConnState st, uint32_t idle_ms, uint32_t now);

private:
    Verdict drop(Drop d) {
        ctr_.drops[static_cast<unsigned>(d)].add();
        ctr_.dropped.add();
        return {Action::drop, d};
    }
    Verdict to_kernel() {
        if (!cfg_.exception_path) return drop(Drop::no_exception_port);
        ctr_.to_kernel.add();
        return {Action::to_kernel, Drop::none};
    }
    // Per-packet state between the passes of process_burst. The fields of the fast lane
    // (pass 2 reads them for every packet) come first, in the first cache line.
    struct Pending : CacheLineArrays {
        // Between bursts, words 1 and 3 (bytes 8-15 of each address) are zero, as in every
        // IPv4 key: the fast lane writes the other three words only. A packet off the fast
        // lane may write a whole key (IPv6): pass 2 clears those words again after it.
        FlowKey key;
        uint64_t hash;
        ConnTable::Probe probe;  // of hash, for the connection table
        int32_t svc;             // service index for the fast path, or -1
        // The fast lane, whose Parsed record `p` is not filled (fill_parsed fills it): the
        // record of service `svc`; null for every other packet.
        const fl_snap_service* service;
        ConnTable::Ref hint;     // the way whose tag matched (pass 1b), or null
        // When hint is null (most likely a new connection), pass 1b's predict_new: the way the
        // insert will take and the Maglev table index (ConnTable::kNone: not a Maglev service).
        uint32_t ml;
        ConnTable::VictimHint victim;
        uint8_t tcp_flags;       // fast lane: the TCP flags (0 for UDP)
        // When hint is null: the key is still absent from the table in pass 2, where the fast
        // lane then skips the look-up. Only an earlier packet of the burst with the same key
        // (itself a miss in pass 1b) could have inserted it since: none may have (predict_new).
        bool absent;
        Drop parse;
        Parsed p;
    };
    // Everything but the common case (a packet whose service pass 1 found): parse drops,
    // traffic for the kernel, fragments and ICMP to a VIP, packets to a VIP without a service.
    [[gnu::noinline]] Verdict finish(Frame& f, Pending& k, LoadedSnapshot* snap, uint32_t now);
    void process_burst_inactive(std::span<Frame> frames, Verdict* out, LoadedSnapshot* snap);
    Verdict finish_inactive(const Frame& f, const Parsed& p, Drop parse,
                            const LoadedSnapshot* snap);
    Verdict to_service(Frame& f, Pending& k, LoadedSnapshot& s, uint32_t now);
    // Counts of the fast lane's forwards, added to the counters once per run of one service
    // (and at the end of the burst) instead of per packet; and what process_burst returns:
    // whether all of the burst's frames were such forwards, none of them encapsulated.
    struct BurstCounts {
        const fl_snap_service* run = nullptr;  // the service of the current run, or none
        uint64_t packets = 0, bytes = 0;
        uint64_t forwards = 0;  // the burst's fast-lane forwards, summed per run
        bool moved = false;     // a fast-lane forward changed its frame's start or length
    };
    void flush_run(BurstCounts& bc) {
        if (bc.packets == 0) return;
        bc.forwards += bc.packets;
        const uint32_t id = bc.run->id;
        if (id < ctr_.max_services) {
            ServiceCounters& c = ctr_.services[id];
            c.packets.add(bc.packets);
            c.bytes.add(bc.bytes);
        }
        ctr_.forwarded.add(bc.packets);
        bc.packets = bc.bytes = 0;
    }
    // The snapshot's arrays, copied once per burst: the frame writes of each packet (byte
    // stores, which may alias anything) would otherwise make the compiler load them again.
    struct BurstView {
        const fl_snap_service* services;
        std::span<const fl_snap_server> servers;
        const LoadedSnapshot::Route* routes;  // kRouteSlots of them
        const EncapTemplate* encap;       // LoadedSnapshot::encap_template()
        // The largest inner IPv4 packet each forwarding mode sends whole, by FL_FWD_* value
        // (masked with 3): IPIP's and GUE's; 0 for the others, so that none passes.
        uint32_t tunnel_max_l3[4];
        // Bytes 6-13 of a forwarded IPv4 frame, in memory order: our MAC and EtherType 0x0800.
        uint64_t own_mac_ipv4;
    };
    void fast_lane(Frame& f, Pending& k, LoadedSnapshot& s, const BurstView& bv, uint32_t now, BurstCounts& bc,
                   Verdict& out);
    [[gnu::noinline]] Verdict fast_lane_encap(Frame& f, Pending& k, LoadedSnapshot& s, const fl_snap_service& svc,
                                              uint32_t slot);
    // fast_lane_new's result: the server, or FL_NO_SERVER and why the packet was dropped (in
    // one register).
    struct NewSlot {
        uint32_t slot;
        Drop drop;
    };
    [[gnu::noinline]] NewSlot fast_lane_new(Frame& f, Pending& k, LoadedSnapshot& s, const fl_snap_service& svc,
                                            uint32_t now);
    [[gnu::noinline]] Verdict fast_lane_new_encap(Frame& f, Pending& k, LoadedSnapshot& s, const fl_snap_service& svc,
                                                  uint32_t now);
    void prepare(const Frame* frames, size_t n, const LoadedSnapshot* snap);
    template <bool kVerify>
    void prepare_services(const Frame* frames, size_t n, const LoadedSnapshot& s);
    bool prepare_parsed(const Frame& f, Pending& k, const LoadedSnapshot& s);
    bool use_entry(const ConnTable::Ref& r, const LoadedSnapshot::Route* routes, uint32_t svc, uint8_t tcp_flags,
                   uint32_t now);
    // What a new connection needs of its first packet.
    struct Opening {
        const uint8_t* src;  // source address (IPv4: 4 bytes)
        bool v6;
        bool tcp;
        uint8_t tcp_flags;
    };
    Drop open_connection(Pending& k, LoadedSnapshot& s, const fl_snap_service& svc, uint32_t now, const Opening& o,
                         uint32_t& slot);
    Verdict new_connection(Frame& f, Pending& k, LoadedSnapshot& s, const fl_snap_service& svc, uint32_t now,
                           const Opening& o, const Parsed& p);
    Verdict icmp_to_vip(Frame& f, const Parsed& p, LoadedSnapshot& s, uint32_t now);
    Verdict send_to_server(Frame& f, const Parsed& p, LoadedSnapshot& s, const fl_snap_service& svc,
                           uint32_t slot, uint64_t hash, bool allow_reply);
    uint32_t pick(LoadedSnapshot& s, const fl_snap_service& svc, const Pending& k);
    static uint32_t maglev_index(const LoadedSnapshot& s, const fl_snap_service& svc, const FlowKey& key);
    static uint32_t maglev(const LoadedSnapshot& s, const fl_snap_service& svc, const FlowKey& key);
    // maglev() for a pending packet: with pass 1b's index when predict_new computed it.
    static uint32_t maglev(const LoadedSnapshot& s, const fl_snap_service& svc, const Pending& k);
    void predict_new(Pending& k, const LoadedSnapshot& s, uint32_t now, uint64_t (&misses)[4]);
    // Whether k.ml and k.victim are this packet's: pass 1b found no entry and ran predict_new
    // (or finish() cleared them).
    static bool predicted(const Pending& k) { return !k.hint; }
    static void on_remove(void* ctx, const ConnEntry& e, ConnState st);
    // on_remove for the entry a new connection's insert_reporting() replaced: `gone` is its
    // copy, filled only when exporting and its state is not tcp_new.
    void on_replaced(const ConnTable::Inserted& ins, const ConnEntry& gone) {
        gauge(ins.gone_server, ins.gone_state, false);
        // Half-open entries were never exported (the common eviction under a SYN flood).
        if (export_view_ && ins.gone_state != ConnState::tcp_new) [[unlikely]]
            sync_export_removed(gone, ins.gone_state);
    }
    // Pushes the record of `e` to the export ring (out of line: state transitions only).
    [[gnu::noinline]] void sync_export(const SnapshotView& v, const ConnEntry& e, uint8_t sync_state,
                                       uint32_t idle_ms);
    [[gnu::noinline]] void sync_export_removed(const ConnEntry& e, ConnState st);
    void sync_refresh(uint32_t now, size_t max_buckets);
    void sync_install_one(const SyncInstallItem& it, uint32_t now);
    unsigned sync_work(uint32_t now, const LoadedSnapshot* snap);
    unsigned sync_dump_step(uint32_t now, const LoadedSnapshot* snap);
    // A frame forwarded to server `slot` of service `svc`: its packet and byte counts.
    // (Each array element is addressed once: the compiler would load the array pointer again
    // after every counter store.)
    void count_forward(uint32_t svc, uint32_t slot, uint32_t bytes) {
        if (svc < ctr_.max_services) {
            ServiceCounters& c = ctr_.services[svc];
            c.packets.add();
            c.bytes.add(bytes);
        }
        count_server(slot, bytes);
        ctr_.forwarded.add();
    }
    // The server's part of count_forward.
    void count_server(uint32_t slot, uint32_t bytes) {
        if (slot < ctr_.max_servers) {
            ServerCounters& c = ctr_.servers[slot];
            c.packets.add();
            c.bytes.add(bytes);
        }
    }
    // A DSR forward: counted, then the MACs written last (the frame's byte stores may alias
    // everything above, which the compiler would otherwise load again).
    Verdict forward_dsr(Frame& f, const fl_snap_server& srv, uint32_t svc, uint32_t slot) {
        count_forward(svc, slot, f.len);
        set_macs(f.data, srv.mac, cfg_.own_mac.bytes.data());
        return {Action::forward, Drop::none};
    }
    // The MTU encapsulated packets must fit: the snapshot's, if it sets one, within ours.
    uint32_t encap_mtu(const LoadedSnapshot& s) const {
        return s.encap().mtu ? std::min<uint32_t>(s.encap().mtu, cfg_.mtu) : cfg_.mtu;
    }
    void gauge(uint32_t slot, ConnState st, bool add) {
        if (slot >= ctr_.max_servers) return;
        Counter& c = st == ConnState::tcp_closing ? ctr_.servers[slot].inactive : ctr_.servers[slot].active;
        add ? c.add() : c.sub();
    }

    WorkerConfig cfg_;
    ParseOptions popt_;
    ParseOptions hw_checked_;  // for frames whose IPv4 checksum the NIC verified
    ConnTable conns_;
    std::unique_ptr<Pending[]> pend_;  // per-burst scratch, allocated once
    WorkerCounters ctr_;
    uint16_t ip_id_ = 0;
    bool active_ = true;
    // A copy of forward.cpp's kStateChanges (use_entry): as a member, read relative to the
    // worker's address already in a register.
    uint32_t state_changes_[256];

    // Connection sync. export_view_ is set only while this worker may export (active, with a
    // snapshot, inside process_burst or idle): the remove hook exports REMOVED records then,
    // and never for the entries it removes on the peer's behalf (sync_poll).
    std::unique_ptr<SpscRing<fl_sync_record>> sync_out_;
    std::unique_ptr<SpscRing<SyncInstallItem>> sync_in_;
    std::unique_ptr<SpscRing<SyncDumpItem>> sync_dump_;
    const SnapshotView* export_view_ = nullptr;
    std::atomic<uint32_t> sync_refresh_ms_{10'000};
    uint32_t refresh_bucket_ = 0;      // next bucket of the refresh pass
    uint32_t refresh_pass_start_ = 0;  // when the current pass began
    bool refresh_started_ = false;
    std::atomic<uint64_t> dump_req_{0};  // written by the control thread
    uint64_t dump_seq_ = 0;              // the request this worker serves or served last
    bool dumping_ = false;
    uint32_t dump_bucket_ = 0, dump_way_ = 0;  // where the dump resumes
};

// Placement checks (tests/unit/test_worker_layout.cpp checks the addresses at run time).
static_assert(alignof(Worker) == kCacheLine && sizeof(Worker) % kCacheLine == 0,
              "a Worker takes whole cache lines");
static_assert(std::is_trivially_destructible_v<ServiceCounters> && std::is_trivially_destructible_v<ServerCounters>,
              "no array cookie: new T[n] starts the array on its allocation's first cache line");

}  // namespace fulcrum
