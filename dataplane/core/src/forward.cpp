#include "fulcrum/forward.hpp"

#include <algorithm>
#include <array>
#include <bit>

#include "fulcrum/flow.hpp"
#include "fulcrum/sync.hpp"
#include "fulcrum/wrr.hpp"

namespace fulcrum {

// ---- ServiceIndex -------------------------------------------------------------------------

ServiceIndex::Slot& ServiceIndex::insert(std::vector<Slot>& t, const Key& k) {
    const size_t mask = t.size() - 1;
    for (size_t i = hash(k) & mask;; i = (i + 1) & mask) {
        Slot& s = t[i];
        if (s.key.c == 0) {
            s.key = k;
            return s;
        }
        if (s.key == k) return s;
    }
}

void ServiceIndex::build(const SnapshotView& snap) {
    const auto svcs = snap.services();
    const size_t size = std::bit_ceil(std::max<size_t>(16, svcs.size() * 2));
    services_.assign(size, Slot{});
    vips_.assign(size, Slot{});
    mask_ = size - 1;
    std::fill(std::begin(vip_filter_), std::end(vip_filter_), 0);
    for (size_t i = 0; i < svcs.size(); ++i) {
        const fl_snap_service& s = svcs[i];
        const bool v6 = s.family == FL_AF_INET6;
        insert(services_, make(s.vip, v6, s.port, s.proto)).service = static_cast<int32_t>(i);
        Slot& v = insert(vips_, make(s.vip, v6, 0, 0));
        const uint32_t bit = filter_bit(s.vip, v6);
        vip_filter_[bit / 64] |= uint64_t{1} << (bit % 64);
        int32_t& f = s.proto == FL_PROTO_TCP ? v.vip.frag_tcp : v.vip.frag_udp;
        f = f == kNone ? static_cast<int32_t>(i) : kAmbiguous;
    }
}

// ---- LoadedSnapshot -----------------------------------------------------------------------

Expected<std::unique_ptr<LoadedSnapshot>> LoadedSnapshot::load(std::span<const uint8_t> bytes,
                                                               unsigned n_workers, size_t max_bytes) {
    auto ls = std::unique_ptr<LoadedSnapshot>(new LoadedSnapshot());
    if (bytes.size() > max_bytes)
        return Error{"snapshot rejected: it is " + std::to_string(bytes.size()) +
                     " bytes, above the limit of " + std::to_string(max_bytes)};
    ls->buf_ = SnapshotBuffer(bytes);
    auto v = SnapshotView::open(ls->buf_.bytes(), max_bytes);
    if (!v) return Error{v.error()};
    ls->view_ = v.value();
    ls->index_.build(ls->view_);
    ls->encap_ = EncapParams::from(ls->view_.header());
    ls->encap_tpl_ = EncapTemplate::from(ls->encap_);
    const auto servers = ls->view_.servers();
    ls->routes_.assign(kRouteSlots, Route{kNotAdmitted, 0});
    for (size_t i = 0; i < servers.size(); ++i) {
        const fl_snap_server& srv = servers[i];
        Route& r = ls->routes_[i];
        r.mac = load_u32(srv.mac) | (uint64_t{load_u16(srv.mac + 4)} << 32);
        // A server whose MAC was never resolved cannot receive frames (its MAC is all zero).
        if ((srv.flags & FL_SERVER_PRESENT) && r.mac != 0) r.admit = admit_key(srv.tag, srv.service);
    }
    ls->wrr_.resize(std::max(1u, n_workers));
    // Each worker's row is padded by a cache line on both sides: workers write their rows on
    // every WRR pick and must not share lines.
    for (auto& w : ls->wrr_) w.assign(std::max<size_t>(1, ls->view_.header().n_members) + 2 * kWrrPad, 0);
    return ls;
}

namespace {
// By state byte, the packets that do more than refresh an entry's time: bit i set when a TCP
// packet whose FIN, SYN, RST, PSH and ACK flags are i (flags & 0x1F; the state machine reads
// FIN, SYN, RST and ACK only) moves an entry in that state to another state, or reopens a
// closing one (a bare SYN). Five bits, a 32-bit word: shifting it by the flags byte uses their
// low five bits without a mask instruction (x86 takes a 32-bit shift count modulo 32).
// Entries of a UDP flow: none (UDP packets carry flags 0, and a key holds its protocol, so a
// UDP packet finds only a UDP entry: the sync and restore paths install TCP states only with
// TCP keys). Any other byte (empty or invalid, whose timeout is 0: a look-up never returns
// such an entry live): every bit, so such an entry would take the full test.
constexpr uint32_t kFlagBits = tcpflag::kFin | tcpflag::kSyn | tcpflag::kRst | tcpflag::kPsh | tcpflag::kAck;
static_assert(kFlagBits == 31);
constexpr std::array<uint32_t, 256> kStateChanges = [] {
    std::array<uint32_t, 256> t{};
    for (unsigned b = 0; b < 256; ++b) {
        const auto st = static_cast<ConnState>(b);
        if (st == ConnState::udp) continue;
        if (!tcp_state(st)) {
            t[b] = ~uint32_t{0};
            continue;
        }
        for (uint32_t f = 0; f <= kFlagBits; ++f) {
            if ((f & ~kFlagBits) != 0) continue;
            const auto flags = static_cast<uint8_t>(f);
            if (tcp_reopens(st, flags) || tcp_next_state(st, flags) != st) t[b] |= uint32_t{1} << f;
        }
    }
    return t;
}();
}  // namespace

// ---- Worker -------------------------------------------------------------------------------

Worker::Worker(const WorkerConfig& cfg)
    : cfg_(cfg), conns_(cfg.conn_capacity, cfg.timeouts, cfg.conn_memory) {
    popt_.verify_ipv4_checksum = cfg.verify_ipv4_checksum;
    hw_checked_.verify_ipv4_checksum = false;
    ctr_.max_services = cfg.max_services;
    ctr_.max_servers = cfg.max_servers;
    ctr_.services.reset(new ServiceCounters[cfg.max_services]);
    ctr_.servers.reset(new ServerCounters[cfg.max_servers]);
    conns_.set_remove_hook(&Worker::on_remove, this);
    pend_.reset(new Pending[kMaxBurst]());  // zeroed: see Pending::key
    std::copy(kStateChanges.begin(), kStateChanges.end(), state_changes_);
    ip_id_ = static_cast<uint16_t>(cfg.worker_id * 7919);
    if (cfg.sync_ring) sync_out_ = std::make_unique<SpscRing<fl_sync_record>>(cfg.sync_ring);
    sync_in_ = std::make_unique<SpscRing<SyncInstallItem>>(std::max<size_t>(1, cfg.sync_install_ring));
    sync_dump_ = std::make_unique<SpscRing<SyncDumpItem>>(std::max<size_t>(2, cfg.sync_dump_ring));
    sync_refresh_ms_.store(cfg.sync_refresh_ms ? cfg.sync_refresh_ms : 1);
}

void Worker::on_remove(void* ctx, const ConnEntry& e, ConnState st) {
    auto* w = static_cast<Worker*>(ctx);
    if (e.server < w->ctr_.max_servers) {
        ServerCounters& c = w->ctr_.servers[e.server];
        (st == ConnState::tcp_closing ? c.inactive : c.active).sub();
    }
    // Half-open entries were never exported (the common eviction under a SYN flood).
    if (w->export_view_ && st != ConnState::tcp_new) [[unlikely]]
        w->sync_export_removed(e, st);  // last: a tail call, no frame for the common case
}

void Worker::sync_export_removed(const ConnEntry& e, ConnState st) {
    // Entries the peer also holds (a sync state) leave its table too. Idle time 0: the hook
    // does not see it, and the peer removes the entry whatever its age.
    if (sync_state_of(st)) sync_export(*export_view_, e, FL_SYNC_S_REMOVED, 0);
}

// ---- connection sync ----------------------------------------------------------------------

void Worker::sync_export(const SnapshotView& v, const ConnEntry& e, uint8_t sync_state, uint32_t idle_ms) {
    fl_sync_record r;
    // An entry whose slot holds another server now has no identity to send: the next
    // packet re-picks it, and that entry is exported.
    if (!sync_record_from_entry(v, e, sync_state, idle_ms, r)) return;
    if (sync_out_->push(r))
        ctr_.sync_exported.add();
    else
        ctr_.sync_export_ring_full.add();
}

void Worker::idle(uint32_t now, size_t buckets, const LoadedSnapshot* snap) {
    const bool exporting = sync_out_ && active_ && snap;
    export_view_ = exporting ? &snap->view() : nullptr;
    conns_.sweep(now, buckets);
    if (exporting) sync_refresh(now, buckets);
    export_view_ = nullptr;
}

void Worker::sync_refresh(uint32_t now, size_t max_buckets) {
    // One pass over the table per refresh interval, spread over the interval: by `now` the
    // pass is due up to bucket buckets * elapsed / interval. A pass starts no sooner than an
    // interval after the previous one started, and an entry stays in its bucket, so each
    // entry is re-exported at most once per interval (later when the worker falls behind).
    // The first pass begins one interval after the first call: entries made since were
    // exported when they became established.
    const uint32_t nb = conns_.buckets();
    const uint32_t interval = sync_refresh_ms_.load(std::memory_order_relaxed);
    if (!refresh_started_) {
        refresh_started_ = true;
        refresh_pass_start_ = now;
        return;
    }
    if (refresh_bucket_ == 0) {
        if (now - refresh_pass_start_ < interval) return;
        refresh_pass_start_ = now;
    }
    const uint64_t elapsed = now - refresh_pass_start_;
    const uint64_t due = std::min<uint64_t>(nb, uint64_t{nb} * elapsed / interval + 1);
    const SnapshotView& v = *export_view_;
    for (size_t n = 0; refresh_bucket_ < due && n < max_buckets; ++n, ++refresh_bucket_) {
        conns_.visit_bucket(refresh_bucket_, now, 0,
                            [&](uint32_t, const ConnEntry& e, ConnState st, uint32_t idle_ms) {
                                if (st == ConnState::tcp_established || st == ConnState::udp)
                                    sync_export(v, e, FL_SYNC_S_ESTABLISHED, idle_ms);
                                return true;
                            });
    }
    if (refresh_bucket_ >= nb) refresh_bucket_ = 0;
}

unsigned Worker::sync_work(uint32_t now, const LoadedSnapshot* snap) {
    unsigned done = 0;
    SyncInstallItem it;
    while (done < kSyncInstallBatch && sync_in_->pop(it)) {
        sync_install_one(it, now);
        ++done;
    }
    return done + sync_dump_step(now, snap);
}

void Worker::sync_install_one(const SyncInstallItem& it, uint32_t now) {
    const uint64_t h = conn_hash(it.entry.key);
    if (it.state == ConnState::empty) {
        // export_view_ is null here: removing the peer's entry exports nothing back.
        if (conns_.remove_key(it.entry.key, h, now)) ctr_.sync_removed.add();
        return;
    }
    ConnEntry old{};
    ConnState old_st = ConnState::empty;
    switch (conns_.install(it.entry, h, it.state, it.idle_ms, now, &old, &old_st)) {
        case ConnInstall::overwritten:
            gauge(old.server, old_st, false);
            gauge(it.entry.server, it.state, true);
            ctr_.sync_installed.add();
            break;
        case ConnInstall::inserted:
            gauge(it.entry.server, it.state, true);
            ctr_.sync_installed.add();
            break;
        case ConnInstall::full: ctr_.sync_install_table_full.add(); break;
        // The control thread queues only the states of validated records (never invalid):
        // both mean the entry has no life left here.
        case ConnInstall::expired:
        case ConnInstall::invalid: ctr_.sync_install_expired.add(); break;
    }
}

unsigned Worker::sync_dump_step(uint32_t now, const LoadedSnapshot* snap) {
    const uint64_t req = dump_req_.load(std::memory_order_acquire);
    if (req != dump_seq_) {  // a new request (or one that replaces a dump in progress)
        dump_seq_ = req;
        dumping_ = true;
        dump_bucket_ = 0;
        dump_way_ = 0;
    }
    if (!dumping_) return 0;
    const uint32_t nb = conns_.buckets();
    unsigned pushed = 0;
    bool room = true;
    // Without a snapshot no entry has a server identity: the dump is empty.
    if (snap) {
        const SnapshotView& v = snap->view();
        for (unsigned n = 0; n < kSyncDumpBuckets && dump_bucket_ < nb; ++n) {
            const uint32_t w = conns_.visit_bucket(
                dump_bucket_, now, dump_way_, [&](uint32_t, const ConnEntry& e, ConnState st, uint32_t idle_ms) {
                    const auto ss = sync_state_of(st);
                    if (!ss) return true;
                    SyncDumpItem d{};
                    if (!sync_record_from_entry(v, e, *ss, idle_ms, d.record)) return true;
                    d.seq = req;
                    if (!sync_dump_->push(d)) return false;
                    ++pushed;
                    return true;
                });
            if (w < ConnTable::kWays) {  // the ring is full: resume at this way next time
                dump_way_ = w;
                room = false;
                break;
            }
            dump_way_ = 0;
            ++dump_bucket_;
        }
    } else {
        dump_bucket_ = nb;
    }
    if (room && dump_bucket_ >= nb) {
        SyncDumpItem end{};
        end.seq = req;
        end.end = 1;
        if (sync_dump_->push(end)) dumping_ = false;
        ++pushed;
    }
    return pushed ? pushed : 1;  // a dump in progress is work: the loop must not sleep
}

namespace {

// Sources no host may send from (RFC 1812 5.3.7, RFC 1122 3.2.1.3, RFC 4291 2.5.2, 2.5.3, 2.7):
// IPv4 0/8 (0.0.0.0 included), 127/8, 224/4 (multicast) and 240/4 (255.255.255.255
// included); IPv6 ::, ::1 and ff00::/8. Answering one would reach many hosts, nobody, or our
// own stack, and forwarding one hands a server a connection it cannot answer.
inline bool martian_source(const uint8_t* a, bool v6) {
    if (!v6) return a[0] == 0 || a[0] == 127 || a[0] >= 224;
    if (a[0] == 0xFF) return true;
    return load_u64(a) == 0 && load_u32(a + 8) == 0 && load_be32(a + 12) <= 1;
}

// The checks every VIP packet needs, established ones included: two compares on fields the
// parser has loaded. The fast path (a service found in pass 1) sees no fragments and skips
// that test.
template <bool kMayBeFragment = true>
inline Drop packet_check(const Parsed& p) {
    if (p.ttl == 0) [[unlikely]]
        return Drop::ttl_exceeded;
    // Later fragments carry no TCP header (their flags read 0).
    if (p.l4_proto == ipproto::kTcp && (!kMayBeFragment || p.frag != Frag::later) &&
        bad_tcp_flags(p.tcp_flags)) [[unlikely]]
        return Drop::tcp_bad_flags;
    return Drop::none;
}

// The checks of the source address. A connection entry is keyed by the source, so a packet
// that finds a valid entry has a source that passed these when the entry was made: they run
// only for packets that can create state or draw a reply (no entry, fragments, ICMP), and
// established packets do not pay the VIP lookup.
inline Drop source_check(const uint8_t* src, bool v6, const ServiceIndex& index) {
    if (martian_source(src, v6)) return Drop::martian_source;
    if (index.find_vip(src, v6)) return Drop::vip_source;
    return Drop::none;
}
inline Drop source_check(const Parsed& p, const ServiceIndex& index) {
    return source_check(p.src, p.is_v6(), index);
}

// A frame that arrived as link-layer broadcast or multicast gets no ICMP answer (RFC 1122
// 3.2.2 and 3.3.6, RFC 4443 2.4 (e)): one such frame would draw an answer from every
// balancer on the segment.
inline bool l2_group(const Frame& f) {
    return (f.data[0] & 1) != 0;
}

// Fragmentation needed (RFC 1191) or packet too big (RFC 8201) advertising an MTU below the
// smallest the family allows: 68 for IPv4 (RFC 791), 1280 for IPv6 (RFC 8200).
inline bool mtu_below_minimum(const Parsed& p) {
    if (!p.is_v6()) return p.icmp_type == 3 && p.icmp_code == 4 && p.icmp_mtu < 68;
    return p.icmp_type == 2 && p.icmp_mtu < 1280;
}

}  // namespace

Verdict Worker::finish(Frame& f, Pending& k, LoadedSnapshot* snap, uint32_t now) {
    if (k.parse != Drop::none) return drop(k.parse);
    const Parsed& p = k.p;
    if (!p.is_ip() || !snap) return to_kernel();
    const ServiceIndex::Vip* vip = snap->index().find_vip(p.dst, p.is_v6());
    if (!vip) return to_kernel();
    if (Drop d = packet_check(p); d != Drop::none) return drop(d);
    if (Drop d = source_check(p, snap->index()); d != Drop::none) return drop(d);
    switch (p.l4_proto) {
        case ipproto::kTcp:
        case ipproto::kUdp: {
            if (p.frag == Frag::none) return drop(Drop::no_service);
            const int32_t s = p.l4_proto == ipproto::kTcp ? vip->frag_tcp : vip->frag_udp;
            if (s == ServiceIndex::kAmbiguous) return drop(Drop::fragment_ambiguous);
            if (s < 0) return drop(Drop::no_service);
            k.svc = s;
            k.key = flow_key_of(p);
            k.hash = conn_hash(k.key);
            k.probe = conns_.probe(k.hash);
            // Pass 1b passed this packet by (no service then): nothing predicted.
            k.hint = {};
            k.ml = ConnTable::kNone;
            k.victim = {};
            return to_service(f, k, *snap, now);
        }
        case ipproto::kIcmp:
            if (p.is_v6()) return drop(Drop::no_service);
            return icmp_to_vip(f, p, *snap, now);
        case ipproto::kIcmpv6:
            if (!p.is_v6()) return drop(Drop::no_service);
            return icmp_to_vip(f, p, *snap, now);
        default:
            return drop(Drop::no_service);
    }
}

// Inline (as pick): every new connection takes one.
__attribute__((always_inline)) inline uint32_t Worker::maglev_index(const LoadedSnapshot& s,
                                                                    const fl_snap_service& svc, const FlowKey& key) {
    // Maglev hashes with the configured seed, equal on both balancers of a pair, so they pick
    // the same servers.
    const uint64_t h = flow_hash(key, s.view().header().hash_seed);
    return hash_to_range(h, svc.table_size);
}

__attribute__((always_inline)) inline uint32_t Worker::maglev(const LoadedSnapshot& s, const fl_snap_service& svc,
                                                              const FlowKey& key) {
    return s.view().table(svc)[maglev_index(s, svc, key)];
}

__attribute__((always_inline)) inline uint32_t Worker::maglev(const LoadedSnapshot& s, const fl_snap_service& svc,
                                                              const Pending& k) {
    if (predicted(k) && k.ml != ConnTable::kNone) return s.view().table(svc)[k.ml];
    return maglev(s, svc, k.key);
}

// Pass 1b for a packet whose entry it did not find, most likely a new connection's first: the
// way its insert will take and its Maglev table slot, found and prefetched now, so that
// neither waits for memory in pass 2 (open_connection uses both). Inline: out of line, the
// call and its saved registers cost a new connection about 20 instructions, more than the
// two or so the known connections' pass 1b loop gives up for it.
[[gnu::always_inline]] inline void Worker::predict_new(Pending& k, const LoadedSnapshot& s, uint32_t now,
                                                        uint64_t (&misses)[4]) {
    // Absent in pass 2 too unless an earlier miss of the burst may have the same key: the
    // filter holds a bit of each earlier miss's hash (bits 40-47, apart from the bucket and
    // tag bits), so a repeat of a key always finds its bit (and in a burst of 32 new keys
    // about one in sixteen finds another's: those look up again).
    const auto bit = static_cast<uint32_t>(k.hash >> 40) & 255;
    uint64_t& word = misses[bit / 64];
    const uint64_t mask = uint64_t{1} << (bit % 64);
    k.absent = (word & mask) == 0;
    word |= mask;
    k.victim = conns_.prefetch_victim(k.probe, now);
    k.ml = ConnTable::kNone;
    const fl_snap_service& svc = s.view().services()[static_cast<size_t>(k.svc)];
    if (svc.scheduler != FL_SCHED_WRR && svc.n_members != 0) {
        k.ml = maglev_index(s, svc, k.key);
        __builtin_prefetch(&s.view().table(svc)[k.ml]);
    }
}

__attribute__((always_inline)) inline uint32_t Worker::pick(LoadedSnapshot& s, const fl_snap_service& svc,
                                                            const Pending& k) {
    // Pass 1b's Maglev slot (predict_new computes it only for a Maglev service with members).
    if (predicted(k) && k.ml != ConnTable::kNone) return s.view().table(svc)[k.ml];
    if (svc.n_members == 0) return FL_NO_SERVER;
    if (svc.scheduler == FL_SCHED_WRR) {
        const auto members = s.view().members(svc);
        int64_t* cur = s.wrr_state(cfg_.worker_id % s.workers()) + svc.members_off;
        const int32_t m = swrr_pick(
            members.size(), [&](size_t i) { return members[i].weight; }, cur);
        return m < 0 ? FL_NO_SERVER : members[static_cast<size_t>(m)].server;
    }
    return maglev(s, svc, k);
}

// Whether the connection entry `r` still leads to a server of service `svc`: its slot holds
// the server it was made for, with a MAC, and it is not a closing TCP entry that a bare SYN
// reopens. Then the entry is touched and moved to its next state (telling the HA peer about
// the transitions) and the result is true; otherwise the entry is erased (the packet is a new
// connection) and the result is false.
__attribute__((always_inline)) inline bool Worker::use_entry(const ConnTable::Ref& r, const LoadedSnapshot::Route* routes,
                                                             uint32_t svc, uint8_t tcp_flags, uint32_t now) {
    const ConnEntry& e = *r.entry;
    const ConnState st = ConnTable::state(r);
    // The slot holds the entry's server, in service `svc`, with a MAC (LoadedSnapshot::Route).
    // Then the common case, a packet that leaves the state as it is (kStateChanges), in one
    // test; else a bare SYN on a closing entry opens a new connection on a reused 4-tuple, and
    // the next state is TCP's (a TCP state's entry has a TCP key: the packet is TCP), or UDP's.
    ConnState next = ConnState::udp;
    if (!LoadedSnapshot::admits(routes, e, svc)) [[unlikely]]
        goto gone;
    if (((state_changes_[static_cast<uint8_t>(st)] >> (tcp_flags & kFlagBits)) & 1) == 0) [[likely]] {
        ConnTable::touch(r, now);
        return true;
    }
    if (tcp_state(st)) {
        if (tcp_reopens(st, tcp_flags)) goto gone;
        next = tcp_next_state(st, tcp_flags);
    }
    ConnTable::touch(r, now, next);
    if (next != st) {
        // tcp_new -> established, or -> closing (FIN or RST): the peer learns both.
        if (next == ConnState::tcp_closing) {
            gauge(e.server, ConnState::tcp_new, false);
            gauge(e.server, ConnState::tcp_closing, true);
        }
        if (export_view_)
            sync_export(*export_view_, e, next == ConnState::tcp_closing ? FL_SYNC_S_CLOSING : FL_SYNC_S_ESTABLISHED,
                        0);
    }
    return true;
gone:
    conns_.erase(conns_.index(r));
    return false;
}

// A packet of service `svc` with no valid connection entry: its source is checked, a server
// picked (`slot`) and the entry made. `o` is what that needs of the packet. The result is
// the reason to drop the packet, else Drop::none and its server in `slot`; the caller
// forwards it and counts the forward.
__attribute__((always_inline)) inline Drop Worker::open_connection(Pending& k, LoadedSnapshot& s,
                                                                   const fl_snap_service& svc, uint32_t now,
                                                                   const Opening& o, uint32_t& slot) {
    // This packet's source has not been checked yet (see source_check).
    if (const Drop d = source_check(o.src, o.v6, s.index()); d != Drop::none) return d;
    const ConnState st = o.tcp ? tcp_initial_state(o.tcp_flags) : ConnState::udp;
    if (st == ConnState::tcp_closing) {
        // A FIN or RST for a connection we do not know: forward it where Maglev says, but
        // do not let such packets (often spoofed) take room in the table.
        slot = maglev(s, svc, k);
        return slot == FL_NO_SERVER ? Drop::no_server : Drop::none;
    }
    slot = pick(s, svc, k);
    if (slot == FL_NO_SERVER) return Drop::no_server;
    const fl_snap_server& srv = s.view().servers()[slot];
    // The entry this one replaces, if any, comes back in the result instead of through
    // on_remove (under a SYN flood nearly every insert replaces one); its copy, only when
    // its removal is exported.
    ConnEntry gone;
    const ConnTable::Inserted ins =
        conns_.insert_reporting(k.key, k.probe, st, now, slot, srv.tag, export_view_ ? &gone : nullptr,
                                predicted(k) ? &k.victim : nullptr);
    if (ins.replaced) on_replaced(ins, gone);
    const uint32_t ni = ins.idx;
    if (svc.id < ctr_.max_services) ctr_.services[svc.id].new_conns.add();
    if (slot < ctr_.max_servers) {
        ServerCounters& c = ctr_.servers[slot];
        if (ni != ConnTable::kNone) c.active.add();
        c.new_conns.add();
    }
    // A UDP flow, or TCP picked up mid-stream, is established from its first packet.
    if (st != ConnState::tcp_new && export_view_ && ni != ConnTable::kNone) [[unlikely]]
        sync_export(*export_view_, conns_.entry(ni), FL_SYNC_S_ESTABLISHED, 0);
    return Drop::none;
}

// open_connection for a packet whose Parsed record `p` is filled, then its forward.
__attribute__((always_inline)) inline Verdict Worker::new_connection(Frame& f, Pending& k, LoadedSnapshot& s,
                                                                     const fl_snap_service& svc, uint32_t now,
                                                                     const Opening& o, const Parsed& p) {
    uint32_t slot;
    if (const Drop d = open_connection(k, s, svc, now, o, slot); d != Drop::none) return drop(d);
    return send_to_server(f, p, s, svc, slot, k.hash, true);
}

// A packet to a service whose Parsed record is filled (the general parser's packets, and
// fragments): fragments by Maglev, anything else by its connection entry or as a new one.
[[gnu::noinline]] Verdict Worker::to_service(Frame& f, Pending& k, LoadedSnapshot& s, uint32_t now) {
    const Parsed& p = k.p;
    const SnapshotView& view = s.view();
    const fl_snap_service& svc = view.services()[static_cast<size_t>(k.svc)];
    if (p.frag != Frag::none) {
        // Fragments are not tracked: every fragment of a datagram hashes on the 3-tuple.
        const uint32_t slot = maglev(s, svc, k.key);
        if (slot == FL_NO_SERVER) return drop(Drop::no_server);
        return send_to_server(f, p, s, svc, slot, k.hash, true);
    }
    const ConnTable::Ref r = conns_.ref(conns_.find(k.key, k.probe, now));
    if (r && use_entry(r, s.routes(), static_cast<uint32_t>(k.svc), p.tcp_flags, now))
        return send_to_server(f, p, s, svc, r.entry->server, k.hash, true);
    return new_connection(f, k, s, svc, now, Opening{p.src, p.is_v6(), p.l4_proto == ipproto::kTcp, p.tcp_flags}, p);
}

namespace {
// The Parsed record of a fast-lane frame, which pass 1 checked (checksum included) without
// filling it: needed only off the fast lane's common case (new connections, encapsulation).
inline void fill_parsed(const Frame& f, uint8_t tcp_flags, Parsed& p) {
    const uint8_t* ip = f.data + eth::kHeaderLen;
    detail::fill_ipv4_fast({ip, ip + 20, load_be16(ip + 2), load_u16(ip + 6), ip[9], tcp_flags}, p);
}

// What encapsulation reads of a fast-lane packet (as detail::make_room and
// detail::encapsulate_v4 read a Parsed); the rest it reads from the inner header.
struct InnerV4 {
    uint16_t l3_off;
    uint16_t l3_len;
    // Not cut to 16 bits as Parsed's is: pass 1 checked that the packet ends in the frame.
    uint32_t l3_end() const { return uint32_t{l3_off} + l3_len; }
};
}  // namespace

// The fast lane (see process_burst): an IPv4 TCP or UDP packet to a service, parsed, checked
// and hashed in pass 1. The common case, a packet of a known connection forwarded by DSR,
// never fills the Parsed record. Inline: every such packet takes it.
__attribute__((always_inline)) inline void Worker::fast_lane(Frame& f, Pending& k, LoadedSnapshot& s, const BurstView& bv,
                                                               uint32_t now, BurstCounts& bc, Verdict& out) {
    const fl_snap_service& svc = *k.service;
    // A miss of pass 1b whose key no earlier packet of the burst inserted: no look-up.
    const ConnTable::Ref e = predicted(k) && k.absent ? ConnTable::Ref{} : conns_.find<true>(k.key, k.probe, k.hint, now);
    uint32_t slot;
    uint32_t bytes;  // a tunnel's packet counts its size before encapsulation
    if (e && use_entry(e, bv.routes, static_cast<uint32_t>(k.svc), k.tcp_flags, now))
        [[likely]] {
        slot = e.entry->server;
        bytes = f.len;
        if (svc.forwarding != FL_FWD_DSR) [[unlikely]] {
            // A tunnel: the common case, an IPv4 packet that fits the MTU once encapsulated,
            // is send_to_server's without the Parsed record; anything else (too big:
            // fragments or a reply) takes fast_lane_encap.
            const uint8_t* ip = f.data + eth::kHeaderLen;
            const InnerV4 in{eth::kHeaderLen, load_be16(ip + 2)};
            // By forwarding mode (the snapshot holds only valid ones): 0 for all but IPIP and GUE.
            if (in.l3_len > bv.tunnel_max_l3[svc.forwarding & 3]) [[unlikely]] {
                out = fast_lane_encap(f, k, s, svc, slot);
                return;
            }
            // As send_to_server: a fresh outer identification only for a datagram that may be
            // fragmented (RFC 6864).
            const uint16_t ip_id = (ip[6] & 0x40) != 0 ? 0 : ++ip_id_;  // DF
            const fl_snap_server& srv = bv.servers[slot];
            const bool ok = svc.forwarding == FL_FWD_GUE ? detail::encapsulate_v4<true>(f, in, srv.addr, bv.encap->v4[1], k.hash, ip_id)
                                : detail::encapsulate_v4<false>(f, in, srv.addr, bv.encap->v4[0], k.hash, ip_id);
            if (!ok) [[unlikely]] {
                out = drop(Drop::no_headroom);
                return;
            }
            bc.moved = true;
        }
    } else if (svc.forwarding == FL_FWD_DSR) {
        // A new connection (or a stale entry) of a DSR service: forwarded as a known one's
        // packet, from here on. A tunnel's new connection apart, so that this one's result
        // (a server, or a drop) is cheap to hand back.
        const NewSlot r = fast_lane_new(f, k, s, svc, now);
        if (r.slot == FL_NO_SERVER) [[unlikely]] {
            out = {Action::drop, r.drop};
            return;
        }
        slot = r.slot;
        bytes = f.len;
    } else {
        out = fast_lane_new_encap(f, k, s, svc, now);
        return;
    }
    // Forwarded: the packet counts in the burst's run (the service's counts and forwarded),
    // and the server's counts.
    if (k.service != bc.run) [[unlikely]] {
        flush_run(bc);
        bc.run = k.service;
    }
    ++bc.packets;
    bc.bytes += bytes;
    // count_server without its bound: the fast lane runs only for snapshots whose every slot
    // has counters (prepare). Checked in builds with assertions (the tests'; not release).
    assert(slot < ctr_.max_servers);
    ServerCounters& sc = ctr_.servers[slot];
    sc.packets.add();
    sc.bytes.add(bytes);
    // Both MACs in two overlapping stores: the server's (and two zero bytes), then ours and
    // the EtherType over bytes 6-13 (BurstView: the fast lane's frames are untagged IPv4, a
    // tunnel's outer header too). The frame pointer read once: a byte store may alias the
    // Frame, so the compiler would read it again after the first.
    uint8_t* const d = f.data;
    store_u64(d, bv.routes[slot].mac);
    store_u64(d + 6, bv.own_mac_ipv4);
    // The verdict's first eight bytes in one store (assigning the fields would merge them with
    // the other paths' verdicts, a register each); a forward's server and bytes are not read.
    static constexpr Verdict kForward{Action::forward, Drop::none};
    static_assert(offsetof(Verdict, server) == 8);
    std::memcpy(static_cast<void*>(&out), &kForward, offsetof(Verdict, server));
}

// A known connection of a service whose packets the fast lane does not encapsulate inline:
// too big for the MTU once encapsulated (fragments or a reply), or not a tunnel service.
Verdict Worker::fast_lane_encap(Frame& f, Pending& k, LoadedSnapshot& s, const fl_snap_service& svc, uint32_t slot) {
    fill_parsed(f, k.tcp_flags, k.p);
    return send_to_server(f, k.p, s, svc, slot, k.hash, true);
}

// A DSR service's packet needs only its source address from the frame (IPv4, checked in pass
// 1). The result is its server, or FL_NO_SERVER and the reason for the drop, counted here.
Worker::NewSlot Worker::fast_lane_new(Frame& f, Pending& k, LoadedSnapshot& s, const fl_snap_service& svc,
                                      uint32_t now) {
    uint32_t slot;
    const Drop d = open_connection(
        k, s, svc, now, Opening{f.data + eth::kHeaderLen + 12, false, k.key.proto == ipproto::kTcp, k.tcp_flags}, slot);
    if (d != Drop::none) [[unlikely]] {
        drop(d);
        return {FL_NO_SERVER, d};
    }
    return {slot, Drop::none};
}

// A tunnel's encapsulation (or too-big reply) reads the Parsed record.
Verdict Worker::fast_lane_new_encap(Frame& f, Pending& k, LoadedSnapshot& s, const fl_snap_service& svc,
                                    uint32_t now) {
    fill_parsed(f, k.tcp_flags, k.p);
    return new_connection(f, k, s, svc, now, Opening{k.p.src, false, k.key.proto == ipproto::kTcp, k.tcp_flags},
                          k.p);
}

__attribute__((always_inline)) inline Verdict Worker::send_to_server(Frame& f, const Parsed& p, LoadedSnapshot& s,
                               const fl_snap_service& svc, uint32_t slot, uint64_t hash,
                               bool allow_reply) {
    const fl_snap_server& srv = s.view().servers()[slot];
    if (svc.forwarding == FL_FWD_DSR) return forward_dsr(f, srv, svc.id, slot);
    // A tunnel: the frame's size is counted before encapsulation.
    const uint32_t bytes = f.len;
    Action action = Action::forward;
    {
        const uint32_t mtu = encap_mtu(s);
        const uint32_t oh = encap_overhead(svc.forwarding, p.is_v6());
        if (p.l3_len + oh > mtu) {
            if (mtu <= oh + 68) return drop(Drop::too_big);  // nothing useful fits
            if (p.is_v6() || p.df) {
                if (!allow_reply) return drop(Drop::too_big);
                if (l2_group(f)) return drop(Drop::l2_broadcast_no_reply);
                // The entry's source was checked when the entry was made, but a snapshot
                // since may have made it a VIP (or the entry came from elsewhere): a reply is
                // rare enough to check again.
                if (const Drop d = source_check(p, s.index()); d != Drop::none) return drop(d);
                if (!make_too_big_reply(f, p, mtu - oh)) return drop(Drop::no_headroom);
                ctr_.too_big_replies.add();
                ctr_.replied.add();
                return {Action::reply, Drop::none};
            }
            // The client allows fragmentation, if an outer IPv4 header can state the length.
            if (p.l3_len + oh > 0xFFFF) return drop(Drop::too_big);
            action = Action::forward_fragments;
        }
        // Outer IPv4 identification: only a datagram that may be fragmented (inner DF clear)
        // needs a fresh one (RFC 6864); atomic ones carry 0.
        const uint16_t ip_id = p.is_v6() || p.df ? 0 : ++ip_id_;
        if (!encapsulate(f, p, svc.forwarding, srv.addr, s.encap_template(), hash, ip_id))
            return drop(Drop::no_headroom);
        set_macs(f.data, srv.mac, cfg_.own_mac.bytes.data());
    }
    count_forward(svc.id, slot, bytes);
    if (action == Action::forward_fragments) {
        const uint32_t mtu = encap_mtu(s);
        return {action, Drop::none, p.l3_off, static_cast<uint16_t>(mtu), static_cast<uint16_t>(svc.id), slot, bytes};
    }
    return {action, Drop::none};
}

// Pass 1 of process_burst: parse, find the service, hash the flow and prefetch its
// connection buckets. Its own function (as is pass 2, process_burst's loop): each loop gets
// the registers to itself, instead of one allocation over both spilling in each.
[[gnu::noinline]] void Worker::prepare(const Frame* frames, size_t n, const LoadedSnapshot* snap) {
    if (!snap) [[unlikely]] {  // no services: finish() hands every frame to the kernel
        Pending* pend = pend_.get();
        for (size_t i = 0; i < n; ++i) {
            Pending& k = pend[i];
            k.service = nullptr;
            k.svc = ServiceIndex::kNone;
            k.parse = parse_packet(frames[i].bytes(), k.p, frames[i].ipv4_csum_good ? hw_checked_ : popt_);
        }
        return;
    }
    // The fast lane counts by server slot without a bound (fast_lane): a snapshot with slots
    // past this worker's server counters (a dataplane refuses one, see --max-servers) has
    // every frame take the general path, whose counting checks the slot.
    if (snap->view().servers().size() > ctr_.max_servers) [[unlikely]] {
        Pending* pend = pend_.get();
        for (size_t i = 0; i < n; ++i)
            if (prepare_parsed(frames[i], pend[i], *snap)) {
                pend[i].probe = conns_.probe(pend[i].hash);
                conns_.prefetch(pend[i].probe);
            }
        return;
    }
    // The checksum setting as a template argument: one test of the frame's flag per packet.
    if (popt_.verify_ipv4_checksum)
        prepare_services<true>(frames, n, *snap);
    else
        prepare_services<false>(frames, n, *snap);
}

// prepare() with services. kVerify: the IPv4 header checksum of a frame the NIC did not
// check is verified (ParseOptions::verify_ipv4_checksum).
template <bool kVerify>
[[gnu::noinline]] void Worker::prepare_services(const Frame* frames, size_t n, const LoadedSnapshot& s) {
    // The IPv4 service of the previous packet, as (address, port, protocol), when it had one:
    // packets of a burst mostly go to a few services, and a repeat skips the index lookup. The
    // initial key (and the key after a packet without a service) has bits set that no real
    // key has.
    uint64_t memo_key = ~uint64_t{0};
    int32_t memo_svc = ServiceIndex::kNone;
    const fl_snap_service* memo_service = nullptr;  // its record
    // The fast lane, an untagged IPv4 TCP or UDP frame without options or fragmentation to a
    // service, passing the packet checks, reads the few fields it needs straight from the
    // frame; every other frame is parsed into its Parsed record.
    // Pointers, the end as the bound: no index kept across the body.
    Pending* kp = pend_.get();
    const ConnTable::Arrays ca = conns_.arrays();
    for (const Frame *fp = frames, *const fend = frames + n; fp != fend; ++fp, ++kp) {
        Pending& k = *kp;
        const Frame& f = *fp;
        detail::Ipv4Fast q;
        // With the packet checks: a packet that fails them (TTL 0, TCP flags no stack sends)
        // takes the general parser and pass 2's packet_check, which names its drop.
        if (detail::check_ipv4_fast<true>(f.data, f.len, kVerify && !f.ipv4_csum_good, q)) [[likely]] {
            // The destination address and both ports (network order) in one load: the memo key
            // keeps the address and destination port, with the protocol where the source port was.
            const uint64_t dst_ports = load_u64(q.ip + 16);
            const uint64_t mk = (dst_ports & 0xFFFF0000FFFFFFFFull) | (uint64_t{q.proto} << 32);
            if (mk != memo_key) [[unlikely]] {
                const int32_t svc = s.index().find(q.ip + 16, false, load_be16(q.l4 + 2), q.proto);
                // A packet without a service goes to finish() with its Parsed record. Not
                // remembered: a repeat of the memo's key then needs no test of the service.
                if (svc < 0) [[unlikely]] {
                    memo_key = ~uint64_t{0};
                    k.service = nullptr;
                    k.svc = ServiceIndex::kNone;
                    k.parse = Drop::none;
                    // From the frame again: q's lengths then need not be kept for this rare case.
                    fill_parsed(f, q.tcp_flags, k.p);
                    continue;
                }
                memo_key = mk;
                memo_svc = svc;
                memo_service = &s.view().services()[static_cast<size_t>(svc)];
            }
            // (k.parse is not read on the fast lane.)
            k.svc = memo_svc;
            k.service = memo_service;
            k.tcp_flags = q.tcp_flags;
            // The key's words (key_words): ports in host order, source port low.
            const uint64_t w0 = load_u32(q.ip + 12);
            const uint64_t w2 = static_cast<uint32_t>(dst_ports);
            const auto ports = static_cast<uint32_t>(dst_ports >> 32);
            const uint64_t w4 = uint64_t{std::rotl(__builtin_bswap32(ports), 16)} | (uint64_t{q.proto} << 32);
            // Words 1 and 3 (an IPv6 address's second halves) are zero already (Pending::key).
            auto* kw = reinterpret_cast<uint8_t*>(&k.key);
            store_u64(kw, w0);
            store_u64(kw + 16, w2);
            store_u64(kw + 32, w4);
            k.hash = flow_hash_v4(w0, w2, w4, kConnHashSeed);
        } else if (!prepare_parsed(f, k, s)) {
            continue;
        }
        k.probe = ConnTable::probe(ca, k.hash);
        ConnTable::prefetch(ca, k.probe);
    }
}

// Pass 1 for a frame off the fast lane: parsed whole into its Parsed record. For a TCP or UDP
// packet (not a fragment) to a service, also its key and hash, and the result is true (pass
// 2: to_service); anything else goes to finish().
inline bool Worker::prepare_parsed(const Frame& f, Pending& k, const LoadedSnapshot& s) {
    k.service = nullptr;
    k.svc = ServiceIndex::kNone;
    k.parse = parse_packet_full(f.bytes(), k.p, f.ipv4_csum_good ? hw_checked_ : popt_);
    if (k.parse != Drop::none || k.p.frag != Frag::none) return false;
    if (k.p.l4_proto != ipproto::kTcp && k.p.l4_proto != ipproto::kUdp) return false;
    k.svc = s.index().find(k.p.dst, k.p.is_v6(), k.p.dport, k.p.l4_proto);
    if (k.svc < 0) return false;
    k.key = flow_key_of(k.p);
    k.hash = conn_hash(k.key);
    return true;
}

bool Worker::process_burst(std::span<Frame> frames, Verdict* out, LoadedSnapshot* snap, uint32_t now) {
    if (!active_) [[unlikely]] {
        process_burst_inactive(frames, out, snap);
        return false;
    }
    // Export only while active (a standby has nothing to export): set once per burst.
    export_view_ = sync_out_ && snap ? &snap->view() : nullptr;
    Pending* pend = pend_.get();
    const size_t n = std::min<size_t>(frames.size(), kMaxBurst);
    // Every frame counts once in rx: added for the whole burst.
    ctr_.rx.add(n);
    prepare(frames.data(), n, snap);
    // Pass 1b: the bucket lines requested first have had a burst's worth of time to arrive;
    // prefetch the matching entries (and remember them for the look-up), or for a packet
    // whose tag matched nowhere, what its new connection will need (predict_new).
    // The keys pass 1b found absent, as one bit of their hash each (a 256-bit filter:
    // Pending::absent, predict_new).
    uint64_t misses[4] = {};
    const ConnTable::Arrays ca = conns_.arrays();
    for (Pending *kp = pend, *end = pend + n; kp != end; ++kp) {
        Pending& k = *kp;
        if (k.svc < 0) continue;
        if (!ConnTable::prefetch_entry(ca, k.probe, k.hint)) [[unlikely]] predict_new(k, *snap, now, misses);
    }
    // Pass 2: decide and rewrite. The fast lane is inline here; packets to a service with a
    // Parsed record (checked here: they may be fragments) go to to_service, and finish()
    // takes the rest.
    BurstCounts bc;
    BurstView bv{};
    if (snap) {
        bv.services = snap->view().services().data();
        bv.servers = snap->view().servers();
        bv.routes = snap->routes();
        bv.encap = &snap->encap_template();
        // The largest inner IPv4 packet that fits the MTU once encapsulated, IPIP and GUE.
        const uint32_t mtu = encap_mtu(*snap);
        static_assert(FL_FWD_DSR < 4 && FL_FWD_IPIP < 4 && FL_FWD_GUE < 4);
        for (const uint8_t fwd : {FL_FWD_IPIP, FL_FWD_GUE}) {
            const uint32_t oh = encap_overhead(fwd, false);
            bv.tunnel_max_l3[fwd] = mtu > oh ? mtu - oh : 0;
        }
    }
    bv.own_mac_ipv4 = load_u32(cfg_.own_mac.bytes.data()) | uint64_t{load_u16(cfg_.own_mac.bytes.data() + 4)} << 32 |
                      uint64_t{__builtin_bswap16(eth::kIpv4)} << 48;
    // Pointers only, the end as the bound: the loop keeps fewer values across its body.
    Frame* f = frames.data();
    Verdict* o = out;
    for (Pending *k = pend, *end = pend + n; k != end; ++k, ++f, ++o) {
        if (k->service) [[likely]] {
            fast_lane(*f, *k, *snap, bv, now, bc, *o);
        } else {
            if (k->svc >= 0) {
                const Drop d = packet_check<false>(k->p);
                *o = d == Drop::none ? to_service(*f, *k, *snap, now) : drop(d);
            } else {
                *o = finish(*f, *k, snap, now);
            }
            k->key.clear_v6_halves();
        }
    }
    flush_run(bc);
    export_view_ = nullptr;
    return bc.forwards == frames.size() && !bc.moved;
}

Verdict Worker::icmp_to_vip(Frame& f, const Parsed& p, LoadedSnapshot& s, uint32_t now) {
    if (p.frag != Frag::none) return drop(Drop::icmp_unsupported);
    const bool v6 = p.is_v6();
    switch (p.icmp) {
        case IcmpKind::echo_request:
            // finish() dropped martian and VIP sources: the reply goes to a unicast peer.
            if (l2_group(f)) return drop(Drop::l2_broadcast_no_reply);
            make_echo_reply(f, p);
            ctr_.replied.add();
            return {Action::reply, Drop::none};
        case IcmpKind::error: {
            // An error about a packet a server sent from the VIP to a client (DSR replies):
            // the quoted flow is VIP -> client, the connection is client -> VIP.
            if (mtu_below_minimum(p)) return drop(Drop::icmp_bad_mtu);
            const QuotedFlow& q = p.quoted;
            if (std::memcmp(q.src, p.dst, v6 ? 16 : 4) != 0 ||
                (q.proto != ipproto::kTcp && q.proto != ipproto::kUdp))
                return drop(Drop::icmp_no_flow);
            const int32_t si = s.index().find(q.src, v6, q.sport, q.proto);
            if (si < 0) return drop(Drop::icmp_no_flow);
            const SnapshotView& view = s.view();
            const fl_snap_service& svc = view.services()[static_cast<size_t>(si)];
            const FlowKey key = make_key(q.dst, q.src, v6, q.proto, q.dport, q.sport);
            const uint64_t h = conn_hash(key);
            uint32_t slot = FL_NO_SERVER;
            const uint32_t ci = conns_.find(key, h, now);
            if (ci != ConnTable::kNone) {
                const ConnEntry& e = conns_.entry(ci);
                if (LoadedSnapshot::admits(s.routes(), e, static_cast<uint32_t>(si))) slot = e.server;
            }
            if (slot == FL_NO_SERVER) slot = maglev(s, svc, key);
            if (slot == FL_NO_SERVER) return drop(Drop::no_server);
            return send_to_server(f, p, s, svc, slot, h, false);
        }
        default:
            // Neighbour discovery for the VIP address belongs to the kernel that holds it.
            if (v6 && p.icmp_type >= 133 && p.icmp_type <= 137) return to_kernel();
            return drop(Drop::icmp_unsupported);
    }
}

// ---- Inactive (HA standby or lease expired) -----------------------------------------------

namespace {

// The target protocol address of an Ethernet/IPv4 ARP request, or null for any other ARP
// frame (replies, other hardware or protocol types). The parser checked the 28 bytes.
inline const uint8_t* arp_request_target(const Frame& f, const Parsed& p) {
    const uint8_t* a = f.data + p.l3_off;
    if (load_be16(a) != 1 || load_be16(a + 2) != eth::kIpv4 || a[4] != 6 || a[5] != 4 ||
        load_be16(a + 6) != 1)
        return nullptr;
    return a + 24;
}

// The target address of an IPv6 neighbour solicitation (RFC 4861 4.3), or null. It is
// usually sent to the target's solicited-node multicast group, not to the target itself, so
// the target field is what names the VIP.
inline const uint8_t* ns_target(const Frame& f, const Parsed& p) {
    if (!p.is_v6() || p.l4_proto != ipproto::kIcmpv6 || p.frag != Frag::none || p.icmp_type != 135)
        return nullptr;
    if (p.l3_end() < p.l4_off + 24u) return nullptr;
    return f.data + p.l4_off + 8;
}

}  // namespace

void Worker::process_burst_inactive(std::span<Frame> frames, Verdict* out, LoadedSnapshot* snap) {
    const size_t n = std::min<size_t>(frames.size(), kMaxBurst);
    Parsed& p = pend_[0].p;  // scratch
    for (size_t i = 0; i < n; ++i) {
        const Drop d =
            parse_packet(frames[i].bytes(), p, frames[i].ipv4_csum_good ? hw_checked_ : popt_);
        out[i] = finish_inactive(frames[i], p, d, snap);
    }
}

// What an inactive balancer does with one frame: whatever would answer for or forward to a
// VIP is dropped (inactive), so the active peer alone owns the VIPs; the host's own traffic
// (its address's ARP and ND, SSH, health-check replies, VRRP adverts) still reaches the kernel.
Verdict Worker::finish_inactive(const Frame& f, const Parsed& p, Drop parse,
                                const LoadedSnapshot* snap) {
    ctr_.rx.add();
    if (parse != Drop::none) return drop(parse);
    if (!snap) return to_kernel();  // no VIPs configured yet
    const ServiceIndex& index = snap->index();
    if (p.l3 == L3::arp) {
        const uint8_t* t = arp_request_target(f, p);
        if (t && index.find_vip(t, false)) return drop(Drop::inactive);
        return to_kernel();
    }
    if (!p.is_ip()) return to_kernel();
    if (const uint8_t* t = ns_target(f, p); t && index.find_vip(t, true))
        return drop(Drop::inactive);
    if (!index.find_vip(p.dst, p.is_v6())) return to_kernel();
    // Addressed to a VIP. VRRP adverts go to a multicast group, not to a VIP, but one that is
    // unicast to a VIP is still the pair's business, not VIP service traffic.
    if (p.l4_proto == ipproto::kVrrp) return to_kernel();
    // Neighbour discovery other than solicitations (advertisements answering the host's own
    // solicitations, router messages) does not make the host answer for the VIP.
    if (p.is_v6() && p.l4_proto == ipproto::kIcmpv6 && p.frag == Frag::none && p.icmp_type >= 133 &&
        p.icmp_type <= 137)
        return to_kernel();
    return drop(Drop::inactive);
}

ConnRestore Worker::restore_connection(const ConnEntry& e, ConnState st, uint32_t idle_ms, uint32_t now) {
    // No snapshot has such a slot, and the forwarding path indexes its route table by the
    // entry's slot unchecked (LoadedSnapshot::kRouteSlots).
    if (e.server >= LoadedSnapshot::kRouteSlots) return ConnRestore::invalid;
    const ConnRestore r = conns_.restore(e, conn_hash(e.key), st, idle_ms, now);
    if (r == ConnRestore::restored && e.server < ctr_.max_servers) {
        ServerCounters& c = ctr_.servers[e.server];
        (st == ConnState::tcp_closing ? c.inactive : c.active).add();
    }
    return r;
}

}  // namespace fulcrum
