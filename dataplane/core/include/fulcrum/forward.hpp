// The per-packet forwarding pipeline: parse, find the service, find or create the
// connection, pick a server, rewrite. Pure C++ so it runs the same under DPDK, in unit
// tests and in benchmarks. One Worker per dataplane lcore; a LoadedSnapshot is shared
// read-only by all workers (each owns its row of WRR accumulators).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fulcrum/addr.hpp"
#include "fulcrum/bytes.hpp"
#include "fulcrum/conntable.hpp"
#include "fulcrum/counter.hpp"
#include "fulcrum/drop.hpp"
#include "fulcrum/expected.hpp"
#include "fulcrum/flow.hpp"
#include "fulcrum/parse.hpp"
#include "fulcrum/rewrite.hpp"
#include "fulcrum/snapshot.hpp"

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

private:
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
};

inline int32_t ServiceIndex::find(const uint8_t* addr, bool v6, uint16_t port, uint8_t proto) const {
    const Slot* s = lookup(services_, make(addr, v6, port, proto));
    return s ? s->service : kNone;
}

inline const ServiceIndex::Vip* ServiceIndex::find_vip(const uint8_t* addr, bool v6) const {
    const Slot* s = lookup(vips_, make(addr, v6, 0, 0));
    return s ? &s->vip : nullptr;
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

private:
    SnapshotBuffer buf_;
    SnapshotView view_;
    ServiceIndex index_;
    EncapParams encap_;
    std::vector<std::vector<int64_t>> wrr_;
};

// Per-worker counters, read by telemetry threads while the worker writes them.
struct ServiceCounters {
    Counter packets, bytes, new_conns;
};
struct ServerCounters {
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
    // Whether the adapter has an exception port. Without one, frames for the kernel are
    // dropped (no_exception_port) rather than counted to_kernel, so each frame counts once.
    bool exception_path = true;
};

class Worker {
public:
    // Connection-table lookups hash with this fixed seed, not the snapshot's: a new hash seed
    // (which re-deals Maglev tables) must not make established connections unreachable.
    static constexpr uint64_t kConnHashSeed = 0x636f6e6e2d74626cull;

    explicit Worker(const WorkerConfig& cfg);
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    static constexpr unsigned kMaxBurst = 64;

    // Decides what to do with each frame and rewrites it accordingly: out[i] is the verdict
    // for frames[i]. The burst is processed in three passes (parse, hash and prefetch
    // the connection buckets; prefetch the matching entries; then decide), so memory latency
    // overlaps. At most kMaxBurst frames.
    // `snap` may be null (no snapshot yet). `now` is in milliseconds from any fixed origin.
    void process_burst(std::span<Frame> frames, Verdict* out, LoadedSnapshot* snap, uint32_t now);

    Verdict process(Frame& f, LoadedSnapshot* snap, uint32_t now) {
        Verdict v;
        process_burst({&f, 1}, &v, snap, now);
        return v;
    }

    // Housekeeping between bursts: expire a few connection buckets.
    void idle(uint32_t now, size_t buckets = 64) { conns_.sweep(now, buckets); }

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
    struct Pending {
        Parsed p;
        FlowKey key;
        uint64_t hash;
        int32_t svc;  // service index for the fast path, or -1
        Drop parse;
    };
    Verdict finish(Frame& f, Pending& k, LoadedSnapshot* snap, uint32_t now);
    void process_burst_inactive(std::span<Frame> frames, Verdict* out, LoadedSnapshot* snap);
    Verdict finish_inactive(const Frame& f, const Parsed& p, Drop parse,
                            const LoadedSnapshot* snap);
    Verdict to_service(Frame& f, Pending& k, LoadedSnapshot& s, uint32_t now);
    Verdict icmp_to_vip(Frame& f, const Parsed& p, LoadedSnapshot& s, uint32_t now);
    Verdict send_to_server(Frame& f, const Parsed& p, LoadedSnapshot& s, const fl_snap_service& svc,
                           uint32_t slot, uint64_t hash, bool allow_reply);
    uint32_t pick(LoadedSnapshot& s, const fl_snap_service& svc, const FlowKey& key);
    static uint32_t maglev(const LoadedSnapshot& s, const fl_snap_service& svc, const FlowKey& key);
    static void on_remove(void* ctx, const ConnEntry& e, ConnState st);

    WorkerConfig cfg_;
    ParseOptions popt_;
    ParseOptions hw_checked_;  // for frames whose IPv4 checksum the NIC verified
    ConnTable conns_;
    std::unique_ptr<Pending[]> pend_;  // per-burst scratch, allocated once
    WorkerCounters ctr_;
    uint16_t ip_id_ = 0;
    bool active_ = true;
};

}  // namespace fulcrum
