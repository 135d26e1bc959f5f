// Per-worker connection table: single writer, no locks, fixed capacity.
//
// Layout: 8-way buckets with two choices. Each bucket has one 64-byte metadata line (tags,
// last-seen times, states, and the number of its entry block) and, while it holds an entry, a
// block of eight 48-byte entries (flow key, server slot and server tag) stored apart, so a
// lookup touches a metadata line and, on a tag match, one entry: 56.5 bytes of memory per
// entry in all, with a stack of the free blocks' numbers (4 bytes a bucket). Blocks are taken
// from the stack when a bucket gets its first entry and go back when it loses its last, last
// in first out: a lightly loaded table's entries then lie in the first blocks, on few pages,
// instead of spread over the whole table (fewer TLB entries per packet where the table is on
// 4 KiB pages, as under a hypervisor that backs guests with them). A key may live in either
// of two buckets chosen by its hash; an insert takes an empty way in the emptier of the two (power of two choices), so
// the table fills to about 80% before keys compete for room (0.02% of inserts at 80%, 0.7%
// at 90%; with one bucket per key 4% compete at half load). Among the
// ways an insert may replace, the least recently used goes (approximate LRU). An insert for
// a new TCP connection (SYN) may only replace an expired entry or another new one, so a
// flood of unique SYNs on a full table never evicts established connections.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fulcrum/counter.hpp"
#include "fulcrum/flow.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fulcrum {

enum class ConnState : uint8_t {
    empty = 0,
    tcp_new = 1,          // SYN seen, handshake not yet acknowledged
    tcp_established = 2,  // ACK seen (or picked up mid-stream)
    tcp_closing = 3,      // FIN or RST seen
    udp = 4,
    count_
};

const char* conn_state_name(ConnState s);

namespace detail {
// Bitmask (bit w set) of the ways whose tag equals `tag`.
inline uint32_t match_tags(const uint16_t* tags, uint32_t tag) {
#if defined(__SSE2__)
    const __m128i t = _mm_load_si128(reinterpret_cast<const __m128i*>(tags));
    // The tag into the low lanes, then the low 64 bits into the high ones: from a 32-bit
    // variable, one instruction less than _mm_set1_epi16.
    const __m128i low = _mm_shufflelo_epi16(_mm_cvtsi32_si128(static_cast<int>(tag)), 0);
    const __m128i eq = _mm_cmpeq_epi16(t, _mm_unpacklo_epi64(low, low));
    // Pack the 16-bit lane results to bytes so movemask yields one bit per way.
    return static_cast<uint32_t>(_mm_movemask_epi8(_mm_packs_epi16(eq, _mm_setzero_si128())));
#else
    uint32_t m = 0;
    for (uint32_t w = 0; w < 8; ++w) m |= uint32_t{tags[w] == tag} << w;
    return m;
#endif
}
}  // namespace detail

struct ConnTimeouts {  // milliseconds
    uint32_t tcp_new = 10'000;
    uint32_t tcp_established = 900'000;
    uint32_t tcp_closing = 30'000;
    uint32_t udp = 300'000;

    uint32_t of(ConnState s) const {
        switch (s) {
            case ConnState::tcp_new: return tcp_new;
            case ConnState::tcp_established: return tcp_established;
            case ConnState::tcp_closing: return tcp_closing;
            case ConnState::udp: return udp;
            default: return 0;
        }
    }
};

// State after a packet with `tcp_flags` on a connection in state `s` (TCP only).
constexpr ConnState tcp_next_state(ConnState s, uint8_t flags) {
    if (flags & (tcpflag::kFin | tcpflag::kRst)) return ConnState::tcp_closing;
    if (s == ConnState::tcp_new && (flags & tcpflag::kAck) && !(flags & tcpflag::kSyn))
        return ConnState::tcp_established;
    return s;
}

// Whether `s` is a TCP connection's state (an entry in one has a TCP key).
constexpr bool tcp_state(ConnState s) {
    return s == ConnState::tcp_new || s == ConnState::tcp_established || s == ConnState::tcp_closing;
}

// Whether a packet with `flags` on an entry in state `s` opens a new connection on the reused
// 4-tuple instead: a bare SYN (no ACK) on a closing entry.
constexpr bool tcp_reopens(ConnState s, uint8_t flags) {
    return s == ConnState::tcp_closing && (flags & (tcpflag::kSyn | tcpflag::kAck)) == tcpflag::kSyn;
}

// State of a connection first seen with a packet carrying `flags`: a bare SYN opens a new
// connection; anything else was already underway (picked up mid-stream, e.g. after a
// failover or an eviction) and is treated as established.
inline ConnState tcp_initial_state(uint8_t flags) {
    if (flags & (tcpflag::kFin | tcpflag::kRst)) return ConnState::tcp_closing;
    if ((flags & tcpflag::kSyn) && !(flags & tcpflag::kAck)) return ConnState::tcp_new;
    return ConnState::tcp_established;
}

struct ConnEntry {
    FlowKey key;
    uint32_t server;      // server slot in the forwarding snapshot
    uint32_t server_tag;  // that server's identity tag: detects a slot reused by another server
};
static_assert(sizeof(ConnEntry) == 48);

// A live entry as handed to the next dataplane process at a restart (see conn_state.hpp).
struct ConnExport {
    ConnEntry entry;
    ConnState state;
    uint32_t idle_ms;  // time since its last packet
};

enum class ConnRestore : uint8_t {
    restored,
    expired,    // idle at least as long as this table's timeout for its state
    invalid,    // not a connection state (Worker::restore_connection: or a server slot no snapshot has)
    duplicate,  // the key is in the table already
    full,       // no way this entry may take
};

// What ConnTable::install did with an entry received from the HA peer (connection sync).
enum class ConnInstall : uint8_t {
    inserted,     // the key was absent: a new entry
    overwritten,  // the key was present: its server and state are the record's now
    expired,      // idle at least as long as this table's timeout for its state: not installed
    invalid,      // not a connection state
    full,         // no way this entry may take (only empty, expired or half-open ways may go)
};

struct ConnTableStats {
    Counter inserts;
    Counter evictions;  // live entries replaced to make room
    Counter expired;    // entries removed after their timeout
    Counter full;       // inserts refused: every way of the bucket was protected
    Counter live;       // entries in the table (expired ones included until swept)
};

class ConnTable {
public:
    static constexpr uint32_t kWays = 8;
    static constexpr uint32_t kNone = 0xFFFFFFFFu;

    struct alignas(64) BucketMeta {
        uint16_t tag[kWays];        // 0 = empty way
        uint32_t last_seen[kWays];  // milliseconds, wrapping
        uint8_t state[kWays];
        // The bucket's entry block (its ways' entries are entries_[block * kWays + way]) while
        // any way holds an entry, else 0: block 0 is never handed out, so an empty bucket's
        // ways name entries no look-up reaches (their tags are 0).
        uint32_t block;
        uint8_t pad[4];
    };
    static_assert(sizeof(BucketMeta) == 64);
    // memory_bytes() is then a whole number of cache lines: a table's 64-aligned memory shares
    // no line with another allocation.
    static_assert(sizeof(ConnEntry) * kWays % 64 == 0);
    static constexpr size_t kBlockBytes = sizeof(ConnEntry) * kWays;

    // Called for every entry that leaves the table (eviction, expiry, erase, clear), except the
    // ones insert_reporting() replaces (it reports them to its caller). For an eviction it
    // runs after the new entry took the way, with a copy of the old entry.
    using RemoveHook = void (*)(void* ctx, const ConnEntry& e, ConnState state);

    static size_t buckets_for(size_t capacity);
    // Per bucket: its metadata line, an entry block and a place on the free stack (452 bytes,
    // 56.5 per entry); plus block 0, and the stack rounded up to whole cache lines.
    static size_t memory_bytes(size_t capacity);

    // `memory`, if given, must hold memory_bytes(capacity) bytes aligned to 64 and outlive the
    // table (the DPDK adapter passes NUMA-local memory); otherwise the table allocates.
    // Throws std::invalid_argument for capacity 0 or above 2^32 - 8 entries.
    explicit ConnTable(size_t capacity, ConnTimeouts timeouts = {}, void* memory = nullptr);
    ~ConnTable();
    ConnTable(const ConnTable&) = delete;
    ConnTable& operator=(const ConnTable&) = delete;

    void set_remove_hook(RemoveHook hook, void* ctx) {
        hook_ = hook;
        hook_ctx_ = ctx;
    }
    void set_timeouts(const ConnTimeouts& t) {
        timeouts_ = t;
        for (unsigned i = 0; i < 256; ++i) timeout_of_[i] = t.of(static_cast<ConnState>(i & 7));
    }
    const ConnTimeouts& timeouts() const { return timeouts_; }

    size_t capacity() const { return size_t{nbuckets_} * kWays; }
    size_t size() const { return stats_.live.get(); }  // includes expired entries not yet swept
    const ConnTableStats& stats() const { return stats_; }

    // Where a key with a given hash lives: its two buckets and its tag. The forwarding path
    // computes it once per packet (probe()) and hands it to prefetch, prefetch_entry and find.
    struct Probe {
        uint32_t b1, b2;
        // The tag (16 bits) in a 32-bit field: matching it against a bucket's tags then starts
        // from one load into a vector register (detail::match_tags).
        uint32_t tag;
    };
    Probe probe(uint64_t hash) const { return probe(arrays(), hash); }

    void prefetch(uint64_t hash) const { prefetch(probe(hash)); }
    void prefetch(const Probe& pr) const { prefetch(arrays(), pr); }

    // A way of the table by address: its bucket's metadata, the way's number in it and its
    // entry; null (entry null) for none. The forwarding path keeps one from pass 1b
    // (prefetch_entry) to its look-up and the entry's touch, which then need no index
    // arithmetic. Valid while the table lives; what the way holds may change (find checks).
    // `block` is the bucket's entry block when the Ref was made: `entry` is the way's entry
    // only while the bucket still has it.
    struct Ref {
        BucketMeta* meta = nullptr;
        ConnEntry* entry = nullptr;
        uint32_t way = 0;
        uint32_t block = 0;
        explicit operator bool() const { return entry != nullptr; }
    };
    Ref ref(uint32_t idx) {
        if (idx == kNone) return {};
        BucketMeta& m = meta_[idx / kWays];
        return {&m, entry_in(entries_, m, idx % kWays), idx % kWays, m.block};
    }
    uint32_t index(const Ref& r) const {
        return r ? static_cast<uint32_t>(r.meta - meta_) * kWays + r.way : kNone;
    }
    // Entry blocks in use (buckets holding an entry), out of buckets().
    uint32_t blocks_in_use() const { return nbuckets_ - nfree_; }
    // The entry block of the bucket holding entry `idx` (0: the bucket is empty).
    uint32_t block_of(uint32_t idx) const { return meta_[idx / kWays].block; }

    // Once the bucket metadata has arrived (a while after prefetch()): prefetches the entry
    // whose tag matches, so the key comparison of find() does not wait for memory either.
    // Returns that way (a hint for find()), or null when no tag matches.
    Ref prefetch_entry(uint64_t hash) { return prefetch_entry(probe(hash)); }
    Ref prefetch_entry(const Probe& pr) {
        Ref r;
        prefetch_entry(pr, r);
        return r;
    }
    // The same into `out`, returning whether a tag matched; when none did, only out.entry is
    // written (null), one store for the forwarding path's likely new connection.
    bool prefetch_entry(const Probe& pr, Ref& out) { return prefetch_entry(arrays(), pr, out); }
    // The table's two arrays and its number of buckets (fixed for its life), for a loop of
    // probe, prefetch or prefetch_entry calls: passed in, they stay in registers, where the
    // table's own fields would be read again after every store to `out` or to the packets'
    // records (which might alias them for the compiler).
    struct Arrays {
        BucketMeta* meta;
        ConnEntry* entries;
        uint32_t nbuckets;
    };
    Arrays arrays() const { return {meta_, entries_, nbuckets_}; }
    // A key's two buckets and its tag come from three windows of its 64-bit hash (every bit of
    // which the flow hash mixes): the first bucket from bits 0-31 (their top ones: range
    // reduction by multiply and shift), the second from bits 16-47, the tag from bits 48-63.
    // The second choice then never shares a bit with the tag (entries placed in a bucket as
    // their second choice do not have similar tags), and shares at most the bits 16-31 with
    // the first (only tables of more than 2^16 buckets use any of them in both, and then the
    // bucket's low bits in one and the other's high bits), without remixing the hash.
    static Probe probe(const Arrays& a, uint64_t hash) {
        return {bucket_in(static_cast<uint32_t>(hash), a.nbuckets),
                bucket_in(static_cast<uint32_t>(hash >> 16), a.nbuckets), tag_of(hash)};
    }
    static void prefetch(const Arrays& a, const Probe& pr) {
        __builtin_prefetch(&a.meta[pr.b1], 1, 3);
        __builtin_prefetch(&a.meta[pr.b2], 1, 3);
    }
    static bool prefetch_entry(const Arrays& a, const Probe& pr, Ref& out) {
        uint32_t b = pr.b1;
        uint32_t m = detail::match_tags(a.meta[b].tag, pr.tag);
        if (!m) {
            b = pr.b2;
            m = detail::match_tags(a.meta[b].tag, pr.tag);
            if (!m) {
                out.entry = nullptr;
                return false;
            }
        }
#if defined(__GNUC__)
        // GCC 12 at -O2/-O3 deletes the prefetches below when their address comes from this
        // movemask through a branch (checked in the generated code); an empty asm hides the
        // value's origin.
        asm volatile("" : "+r"(m));
#endif
        const auto w = static_cast<uint32_t>(__builtin_ctz(m));
        const uint32_t block = a.meta[b].block;
        ConnEntry* const e = entry_in(a.entries, a.meta[b], w);
        const auto* line = reinterpret_cast<const uint8_t*>(e);
        __builtin_prefetch(line, 1, 3);
        __builtin_prefetch(line + sizeof(ConnEntry) - 1, 1, 3);  // 48-byte entries may straddle two lines
        out.meta = &a.meta[b];
        out.entry = e;
        out.way = w;
#if defined(__GNUC__)
        // GCC 12 merges the way's and the block's stores into one through a vector register
        // (two moves and an unpack more than two plain stores, checked in the generated
        // code); an empty asm between them keeps them apart.
        asm volatile("");
#endif
        out.block = block;
        return true;
    }

    // The way an insert of a key with this probe would take now, found ahead of the insert
    // (by prefetch_victim), with that way's time and the table's epoch then: idx as an entry
    // index (bucket * kWays + way), the oldest new entry of a SYN flood's buckets; kNone when
    // none is predicted.
    struct VictimHint {
        uint32_t idx = kNone;
        uint32_t seen = 0;   // the way's last_seen
        uint32_t epoch = 0;  // the table's epoch_ (changes its ways' times do not show)
        ConnEntry* entry = nullptr;  // the way's entry (its bucket keeps its block while the hint holds)
    };
    // For a key prefetch_entry() did not find (a new connection, most likely): the way a new
    // connection's insert would take now, its lines prefetched, so that the insert a while
    // later waits neither for the replaced entry's server nor for the line it writes. The
    // table may change before that insert (earlier packets of the burst insert, touch and
    // erase): insert_reporting() skips its choice with the hint only when the choice would
    // take the same way (hint_holds), else it chooses again. A hint only for the case worth
    // it, a SYN flood's (no way empty or expired, the oldest new one goes); the others (an
    // empty way, found in a few instructions, or the rare expired one) are prefetched but
    // chosen again. No hint either for a way last seen at `now` (a change to it could not be
    // told from its time).
    inline VictimHint prefetch_victim(const Probe& pr, uint32_t now) const;

    // Returns the index of the live entry for `key`, or kNone. An expired entry for the key
    // is removed and reported as a miss.
    uint32_t find(const FlowKey& key, uint64_t hash, uint32_t now) { return find(key, probe(hash), now); }
    // The same with the probe of the key's hash (probe()). Inline: every packet of a known
    // flow takes one.
    uint32_t find(const FlowKey& key, const Probe& pr, uint32_t now) {
        bool gone = false;
        const uint32_t i = find_in(pr.b1, key, pr.tag, now, gone);
        if (i != kNone || gone) return i;
        return pr.b2 == pr.b1 ? kNone : find_in(pr.b2, key, pr.tag, now, gone);
    }

    // The same, trying first the way prefetch_entry() returned for this probe (`hint`, or
    // null), and giving the result as a Ref (null: absent): the common case, a known flow
    // whose tag matched once, costs a compare of the bucket's block and one of the key, and
    // no index arithmetic.
    // The table may have changed since the hint was taken (earlier packets of the burst
    // insert and erase). The hint's entry is its way's only while the bucket still has the
    // block it had then: a bucket that empties gives its block back, and another bucket, even
    // the key's other one with the key back in it, may take it. While the bucket has it, the
    // entry holds the key only if the way does: a removed way's key is poisoned (remove), and
    // a key is in the table at most once. Anything else takes the full look-up.
    // kV4: `key` is an IPv4 key (is_v6 0, words 1 and 3 zero, as make_key builds it): the hint's
    // entry is compared on the three words that can differ (an entry whose last word, with
    // is_v6, equals the key's is an IPv4 key too).
    template <bool kV4 = false>
    Ref find(const FlowKey& key, const Probe& pr, const Ref& hint, uint32_t now) {
        if (hint) [[likely]] {
            BucketMeta& m = *hint.meta;
            const uint32_t w = hint.way;
            if (m.block == hint.block &&
                (kV4 ? same_v4_key(hint.entry->key, key) : hint.entry->key == key)) [[likely]] {
                // A live way, then. Should one be empty anyway, its state 0 has timeout 0, so
                // it never passes: the tag, tested only then, keeps it from being expired.
                if (!expired(m, w, now)) [[likely]]
                    return hint;
                if (m.tag[w] != 0) {
                    expire_at(static_cast<uint32_t>(&m - meta_), w);
                    return {};
                }
            }
        }
        return ref(find(key, pr, now));
    }

    // Inserts `key` (the caller has checked it is absent). Returns its index, or kNone when
    // the bucket holds only entries this insert may not replace.
    uint32_t insert(const FlowKey& key, uint64_t hash, ConnState state, uint32_t now,
                    uint32_t server, uint32_t server_tag);
    // The same with the probe of the key's hash (probe()), which the forwarding path has.
    uint32_t insert(const FlowKey& key, const Probe& pr, ConnState state, uint32_t now, uint32_t server,
                    uint32_t server_tag);

    // What insert_reporting() did: the new entry's index (kNone: not inserted) and the entry
    // whose way it took, if a live or expired one was there.
    struct Inserted {
        uint32_t idx;
        uint32_t gone_server;  // the replaced entry's server slot (when `replaced`)
        ConnState gone_state;  // and its state byte
        bool replaced;         // an entry left the table (an eviction or an expired entry)
    };
    // insert() for the forwarding path's new connections, where under a SYN flood nearly every
    // insert replaces an entry: the replaced entry is reported in the result instead of to the
    // remove hook (no indirect call, no copy of the entry), with the same statistics. `gone`,
    // if not null, receives a copy of the replaced entry when its state is not tcp_new (what
    // the HA peer may hold: the caller exports its removal); half-open entries are not copied.
    // Inline (below): every new connection of the forwarding path takes one.
    // `hint`, if not null, is prefetch_victim()'s for this probe at the same `now`.
    inline Inserted insert_reporting(const FlowKey& key, const Probe& pr, ConnState state, uint32_t now,
                                     uint32_t server, uint32_t server_tag, ConnEntry* gone,
                                     const VictimHint* hint = nullptr);

    const ConnEntry& entry(uint32_t idx) const { return *entry_in(entries_, meta_[idx / kWays], idx % kWays); }
    ConnEntry& entry(uint32_t idx) { return *entry_in(entries_, meta_[idx / kWays], idx % kWays); }
    ConnState state(uint32_t idx) const {
        return static_cast<ConnState>(meta_[idx / kWays].state[idx % kWays]);
    }
    uint32_t last_seen(uint32_t idx) const { return meta_[idx / kWays].last_seen[idx % kWays]; }
    void touch(uint32_t idx, uint32_t now, ConnState s) {
        BucketMeta& m = meta_[idx / kWays];
        m.last_seen[idx % kWays] = now;
        m.state[idx % kWays] = static_cast<uint8_t>(s);
    }
    // The same by Ref (not null).
    static ConnState state(const Ref& r) { return static_cast<ConnState>(r.meta->state[r.way]); }
    static void touch(const Ref& r, uint32_t now, ConnState s) {
        r.meta->last_seen[r.way] = now;
        r.meta->state[r.way] = static_cast<uint8_t>(s);
    }
    // The same keeping the state.
    static void touch(const Ref& r, uint32_t now) { r.meta->last_seen[r.way] = now; }
    // Re-points a live entry at another server (slot reused or server gone).
    void repoint(uint32_t idx, uint32_t server, uint32_t tag) {
        ConnEntry& e = entry(idx);
        e.server = server;
        e.server_tag = tag;
    }
    void erase(uint32_t idx);

    // Removes expired entries from the next `buckets` buckets (round robin over the table)
    // and returns how many it removed. Workers call it a little each idle loop, which also
    // keeps the 32-bit millisecond clock from wrapping onto live entries.
    size_t sweep(uint32_t now, size_t buckets);

    // Removes every entry (each reported to the hook).
    void clear();

    // Restart handover, outside the hot path (the owning worker must not be running).
    // export_live appends every entry still live at `now`, with its idle time; restore puts
    // back one entry of a previous process, idle for `idle_ms` at `now`, so it expires when it
    // would have in the old process (under this table's timeouts). `idx`, if given, receives
    // the restored entry's index.
    void export_live(uint32_t now, std::vector<ConnExport>& out) const;
    ConnRestore restore(const ConnEntry& e, uint64_t hash, ConnState state, uint32_t idle_ms, uint32_t now,
                        uint32_t* idx = nullptr);

    // Connection sync (docs/architecture.md, "Connection sync"), on the owning worker, no
    // allocation. install puts an entry of the HA peer in the table, idle for `idle_ms` at
    // `now`: an entry for the key is overwritten (server, tag, state, last seen); a new one may
    // take only an empty, expired or half-open way, like a new connection, so a flood of sync
    // records never evicts established connections. `old`, when the key was present, receives
    // its previous entry and state (for the per-server gauges). remove erases the key's entry,
    // returning whether there was one.
    ConnInstall install(const ConnEntry& e, uint64_t hash, ConnState state, uint32_t idle_ms,
                        uint32_t now, ConnEntry* old = nullptr, ConnState* old_state = nullptr);
    bool remove_key(const FlowKey& key, uint64_t hash, uint32_t now);

    uint32_t buckets() const { return nbuckets_; }
    // Visits the entries of bucket `b` (< buckets()) still live at `now`, from way `from`:
    // f(uint32_t way, const ConnEntry&, ConnState, uint32_t idle_ms) returns false to stop;
    // then visit_bucket returns the way it stopped at, else kWays. Incremental scans (sync
    // refresh and dump) use it a few buckets at a time.
    template <class F>
    uint32_t visit_bucket(uint32_t b, uint32_t now, uint32_t from, F&& f) const {
        const BucketMeta& m = meta_[b];
        for (uint32_t w = from; w < kWays; ++w) {
            if (!m.tag[w] || expired(m, w, now)) continue;
            if (!f(w, *entry_in(entries_, m, w), static_cast<ConnState>(m.state[w]),
                   now - m.last_seen[w]))
                return w;
        }
        return kWays;
    }

    // Visits every live entry: f(const ConnEntry&, ConnState, uint32_t last_seen).
    template <class F>
    void for_each(F&& f) const {
        for (uint32_t b = 0; b < nbuckets_; ++b)
            for (uint32_t w = 0; w < kWays; ++w)
                if (meta_[b].tag[w])
                    f(*entry_in(entries_, meta_[b], w),
                      static_cast<ConnState>(meta_[b].state[w]), meta_[b].last_seen[w]);
    }

private:
    // Way `w`'s entry of the bucket with metadata `m`, in the entry array `entries`. The index
    // fits 32 bits (one lea, no widening): blocks go up to the number of buckets, at most
    // 2^29 - 1 (capacity at most 2^32 - 9), so block * 8 + 7 <= 2^32 - 1.
    static ConnEntry* entry_in(ConnEntry* entries, const BucketMeta& m, uint32_t w) {
        return entries + uint32_t{m.block * kWays + w};
    }
    // A block for a bucket getting its first entry (one is always free: there are as many as
    // buckets), and back to the stack for one that lost its last.
    uint32_t take_block() { return free_[--nfree_]; }
    void give_block(BucketMeta& m) {
        free_[nfree_++] = m.block;
        m.block = 0;
    }
    static bool same_v4_key(const FlowKey& a, const FlowKey& b) {
        const auto* pa = reinterpret_cast<const uint8_t*>(&a);
        const auto* pb = reinterpret_cast<const uint8_t*>(&b);
        return ((load_u64(pa) ^ load_u64(pb)) | (load_u64(pa + 16) ^ load_u64(pb + 16)) |
                (load_u64(pa + 32) ^ load_u64(pb + 32))) == 0;
    }
    static uint32_t bucket_in(uint32_t window, uint32_t nbuckets) {
        return static_cast<uint32_t>((uint64_t{window} * nbuckets) >> 32);
    }
    uint32_t find_in(uint32_t b, const FlowKey& key, uint16_t tag, uint32_t now, bool& expired_removed) {
        BucketMeta& m = meta_[b];
        uint32_t mask = detail::match_tags(m.tag, tag);
        while (mask) {
            const uint32_t w = static_cast<uint32_t>(__builtin_ctz(mask));
            mask &= mask - 1;
            const uint32_t idx = b * kWays + w;
            if (entry_in(entries_, m, w)->key == key) {
                if (expired(m, w, now)) [[unlikely]] {
                    expire_at(b, w);
                    expired_removed = true;
                    return kNone;
                }
                return idx;
            }
        }
        return kNone;
    }
    // find() met the key's entry expired: counts and removes it (out of line, rare).
    [[gnu::noinline]] void expire_at(uint32_t b, uint32_t w);
    static uint16_t tag_of(uint64_t hash) {
        const auto t = static_cast<uint16_t>(hash >> 48);
        return t ? t : 1;
    }
    bool expired(const BucketMeta& m, uint32_t w, uint32_t now) const {
        return now - m.last_seen[w] >= timeout_of(m.state[w]);
    }
    // Timeout by stored state byte: a load instead of a switch on the per-packet paths.
    uint32_t timeout_of(uint8_t state) const { return timeout_of_[state]; }
    void remove(uint32_t b, uint32_t w);

    // insert()'s victim choice, in two versions giving the same answer: SSE2 and plain C++
    // (the build's default below; the unit test runs both against a reference). sse2_old is
    // the SSE2 version's rare case, out of line. scan_sse2 and insert_with are defined below
    // the class (insert_reporting() inlines them), the other inline ones in conntable.cpp.
    enum class Scan : uint8_t { portable, sse2, sse2_old };
    static constexpr uint32_t kOld = 0xFFFFFFFEu;  // scan_sse2(): the rare case, see there
#if defined(__SSE2__)
    static constexpr Scan kScan = Scan::sse2;
#else
    static constexpr Scan kScan = Scan::portable;
#endif
    // The way an insert takes, as a position over the key's two buckets (way `pos % kWays` of
    // the first bucket if pos < kWays, else of the second; kNone: every way is protected), and
    // what it held: 0 nothing, 1 an expired entry, 2 a live new one, 3 another live one.
    struct Victim {
        uint32_t pos;
        uint32_t rank;
    };
    Victim scan_portable(const BucketMeta& m0, const BucketMeta& m1, bool is_new, uint32_t now) const;
    // Whether the choice made now would take the VictimHint's way (see prefetch_victim).
    inline bool hint_holds(const VictimHint& h) const;
#if defined(__SSE2__)
    inline Victim scan_sse2(const BucketMeta& m0, const BucketMeta& m1, bool is_new, uint32_t now) const;
    inline Victim scan_sse2_old(const BucketMeta& m0, const BucketMeta& m1, bool is_new, uint32_t now) const;
    inline bool tcap_current() const;
    uint32_t expired_ways(const BucketMeta& m0, const BucketMeta& m1, uint32_t now) const;
    void refresh_tcap() const;
    // `report`: insert_reporting()'s, else insert()'s (the hook) way of handing over the
    // replaced entry.
    [[gnu::noinline]] Inserted insert_old(const FlowKey& key, Probe pr, ConnState state, uint32_t now,
                                          uint32_t server, uint32_t server_tag, bool report, ConnEntry* gone);
#endif
    // kReport: as insert_reporting(), else as insert() (only the result's idx is set).
    template <Scan S, bool kReport>
    inline Inserted insert_with(const FlowKey& key, const Probe& pr, ConnState state, uint32_t now,
                                uint32_t server, uint32_t server_tag, ConnEntry* gone,
                                const VictimHint* hint = nullptr);
    // insert() and insert_reporting() with the portable scan, for the unit test
    // (ConnTableScanTest) on SSE2 builds.
    uint32_t insert_portable(const FlowKey& key, const Probe& pr, ConnState state, uint32_t now, uint32_t server,
                             uint32_t server_tag);
    Inserted insert_reporting_portable(const FlowKey& key, const Probe& pr, ConnState state, uint32_t now,
                                       uint32_t server, uint32_t server_tag, ConnEntry* gone,
                                       const VictimHint* hint = nullptr);
    friend struct ConnTableScanTest;  // tests/unit/test_conntable.cpp

    uint32_t nbuckets_;
    BucketMeta* meta_;
    ConnEntry* entries_;  // nbuckets_ + 1 blocks of kWays entries, block 0 unused
    // The free blocks' numbers (a stack, the next one taken on top) and how many there are.
    uint32_t* free_;
    uint32_t nfree_;
    void* owned_ = nullptr;
    ConnTimeouts timeouts_;
    // timeouts_ by state byte, which the table reads by its low three bits (as the victim scans
    // do); 0 (always expired) for invalid states. One entry per byte value: the look-up needs
    // no mask of the byte.
    uint32_t timeout_of_[256] = {};
    uint32_t sweep_cursor_ = 0;
    // Counts the changes to ways that do not set their time to the caller's `now`: removals
    // (which empty a way) and the restores and installs of entries idle for a while. Every
    // other change (insert, touch) sets the way's time to `now`. hint_holds reads it.
    uint32_t epoch_ = 0;
    ConnTableStats stats_;
    RemoveHook hook_ = nullptr;
    void* hook_ctx_ = nullptr;
    // The SSE2 scan's expiry threshold: the lowest timeout of a valid state, capped to 32767,
    // in eight 16-bit lanes; computed from timeout_of_[1..4] as they were in tcap_of_, and
    // again when they differ (set_timeouts), checked at each use (conntable.cpp).
    alignas(16) mutable uint32_t tcap_of_[4] = {};
    alignas(16) mutable uint16_t tcap_[8] = {};
#if defined(__SSE2__)
    // What the SSE2 scan learnt of the ways, handed to insert_old (conntable.cpp).
    struct Handover {
        __m128i a0, a1, newb;
        uint32_t maybe;
    };
    mutable Handover handover_{};
#endif
};

// ---- insert: the common case, inline ----------------------------------------------------
//
// The victim choice's SSE2 scan and the insert around it are defined here so that the
// forwarding path's insert_reporting() (one per new connection) is inlined into it: no call,
// no arguments through memory. The rare cases stay out of line in conntable.cpp, which
// describes the choice.

#if defined(__SSE2__)
namespace detail {
// Zeroes the 16-bit ages a[0] (positions 0-7), a[1] (8-15) where `lanes` has a zero byte:
// below or equal to every candidate's age; an equal one then loses to the candidate in
// oldest16 through its mask.
struct Ages16 {
    __m128i a0, a1;
};
inline Ages16 mask16(__m128i a0, __m128i a1, __m128i lanes) {
    return {_mm_and_si128(a0, _mm_unpacklo_epi8(lanes, lanes)),
            _mm_and_si128(a1, _mm_unpackhi_epi8(lanes, lanes))};
}

// The oldest way among `cand`, from the exact 16-bit ages (all under 32767) of positions 0-7
// (a0) and 8-15 (a1), those outside cand at most as large as the candidates' (zeroed by
// mask16, or cand is every position): one maximum over 16 lanes, then the first lane holding
// it.
inline uint32_t oldest16(__m128i a0, __m128i a1, uint32_t cand) {
    __m128i mx = _mm_max_epi16(a0, a1);
    mx = _mm_max_epi16(mx, _mm_shuffle_epi32(mx, 0x4E));  // swap 64-bit halves
    mx = _mm_max_epi16(mx, _mm_shuffle_epi32(mx, 0xB1));  // swap 32-bit pairs
    mx = _mm_max_epi16(mx,
                       _mm_shufflehi_epi16(_mm_shufflelo_epi16(mx, 0xB1), 0xB1));  // 16-bit pairs
    const auto at = static_cast<uint32_t>(
        _mm_movemask_epi8(_mm_packs_epi16(_mm_cmpeq_epi16(a0, mx), _mm_cmpeq_epi16(a1, mx))));
    return static_cast<uint32_t>(__builtin_ctz(at & cand));
}
inline uint32_t oldest16(Ages16 a, uint32_t cand) {
    return oldest16(a.a0, a.a1, cand);
}

// What the SSE2 scan learns of the 16 ways (positions 0-7 the first bucket, 8-15 the second)
// once it knows none is empty.
struct Sse2Ways {
    __m128i a0, a1;  // 16-bit ages of positions 0-7 and 8-15 (see classify)
    __m128i newb;    // a byte 0xFF per new way (state tcp_new)
    uint32_t maybe;  // ways that may have expired (see classify): a closer look needed
};

[[gnu::always_inline]] inline Sse2Ways classify(const ConnTable::BucketMeta& m0,
                                                const ConnTable::BucketMeta& m1, __m128i tcap,
                                                uint32_t now) {
    const auto load = [](const void* p) { return _mm_load_si128(static_cast<const __m128i*>(p)); };
    const __m128i zero = _mm_setzero_si128();
    Sse2Ways r;
    // Ages (now - last_seen, wrapping), packed to 16 bits with signed saturation: an age below
    // 32767 stays exact, one from 32767 to 2^31 becomes 32767 and a larger one negative; so
    // read as unsigned, a packed age is below any x <= 32767 exactly when the age is.
    const __m128i nowv = _mm_set1_epi32(static_cast<int>(now));
    r.a0 = _mm_packs_epi32(_mm_sub_epi32(nowv, load(m0.last_seen)),
                           _mm_sub_epi32(nowv, load(m0.last_seen + 4)));
    r.a1 = _mm_packs_epi32(_mm_sub_epi32(nowv, load(m1.last_seen)),
                           _mm_sub_epi32(nowv, load(m1.last_seen + 4)));
    // Ways that may have expired: age >= tcap, the lowest timeout of a valid state capped to
    // 32767 for the 16-bit compare (the cap only sends more ways to the exact check).
    // Unsigned 16-bit a < t is subs(t, a) != 0: `old` has a byte 0xFF per such way.
    const __m128i old = _mm_packs_epi16(_mm_cmpeq_epi16(_mm_subs_epu16(tcap, r.a0), zero),
                                        _mm_cmpeq_epi16(_mm_subs_epu16(tcap, r.a1), zero));
    // The state bytes, as timeout_of reads them (the low three bits): those outside 1-4 have
    // timeout 0, always expired. Shifted to the top of each byte (a 16-bit shift: the bits it
    // brings into the low five of a byte do not matter), the valid ones are 0x20-0x9F, so
    // minus 0x20 they are exactly the bytes with the top bit clear.
    const __m128i st =
        _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m0.state)),
                           _mm_loadl_epi64(reinterpret_cast<const __m128i*>(m1.state)));
    const __m128i invalid = _mm_add_epi8(_mm_slli_epi16(st, 5), _mm_set1_epi8(-0x20));
    r.newb = _mm_cmpeq_epi8(st, _mm_set1_epi8(static_cast<char>(ConnState::tcp_new)));
    r.maybe = static_cast<uint32_t>(_mm_movemask_epi8(_mm_or_si128(old, invalid)));
    return r;
}
}  // namespace detail

// classify()'s threshold, kept between inserts: comparing the four timeouts with those it was
// computed from costs less than computing it (and set_timeouts, inline, cannot say it changed).
// When they differ, insert goes on in insert_old, which computes it again: no call here.
[[gnu::always_inline]] inline bool ConnTable::tcap_current() const {
    const __m128i now_of = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&timeout_of_[1]));
    const __m128i then_of = _mm_load_si128(reinterpret_cast<const __m128i*>(tcap_of_));
    return _mm_movemask_epi8(_mm_cmpeq_epi32(now_of, then_of)) == 0xFFFF;
}

// The same choice as scan_portable, shaped by the common case of a SYN flood on a full table:
// no empty way, no expired one, the oldest new way goes. The classes come from the 16 state
// bytes at once (two 64-bit loads); expiry from the 16 ages against the lowest timeout,
// saturated to 16 bits (all under 32767 ms in that case: the new ones are younger than the
// tcp_new timeout), so the oldest is one 16-lane maximum. Ways past the lowest timeout, or
// with a state byte outside the valid ones (timeout 0), take the rare path: pos kOld, and
// insert goes on in insert_old, out of line, so that insert's common path keeps nothing live
// across a call (fewer registers to save).
[[gnu::always_inline]] inline ConnTable::Victim ConnTable::scan_sse2(const BucketMeta& m0,
                                                                     const BucketMeta& m1,
                                                                     bool is_new,
                                                                     uint32_t now) const {
    const __m128i zero = _mm_setzero_si128();
    const auto load = [](const void* p) { return _mm_load_si128(static_cast<const __m128i*>(p)); };
    // Empty ways: a byte 0xFF per empty position, and as a mask.
    const __m128i eb =
        _mm_packs_epi16(_mm_cmpeq_epi16(load(m0.tag), zero), _mm_cmpeq_epi16(load(m1.tag), zero));
    const auto empty = static_cast<uint32_t>(_mm_movemask_epi8(eb));
    if (empty) {
        // Empty ways per bucket: the byte sums of each half, 255 per empty way (without the
        // POPCNT instruction, beyond baseline x86-64, __builtin_popcount is a library call).
        const __m128i sums = _mm_sad_epu8(eb, zero);
        const bool second = _mm_extract_epi16(sums, 4) > _mm_cvtsi128_si32(sums);
        return {static_cast<uint32_t>(__builtin_ctz(second ? empty & 0xFF00 : empty)), 0};
    }
    if (!tcap_current()) [[unlikely]]
        return {kOld, 0};
    const detail::Sse2Ways c =
        detail::classify(m0, m1, _mm_load_si128(reinterpret_cast<const __m128i*>(tcap_)), now);
    if (c.maybe) [[unlikely]] {
        handover_ = {c.a0, c.a1, c.newb, c.maybe};  // insert_old needs not classify again
        return {kOld, 0};
    }
    // Nothing expired, every age under 32767: the oldest new way, else (not for a new
    // connection) the oldest of all.
    const auto news = static_cast<uint32_t>(_mm_movemask_epi8(c.newb));
    if (news == 0xFFFF) return {detail::oldest16(c.a0, c.a1, news), 2};  // a SYN flood's buckets: no mask
    if (news) return {detail::oldest16(detail::mask16(c.a0, c.a1, c.newb), news), 2};
    if (is_new) return {kNone, 0};
    return {detail::oldest16(c.a0, c.a1, 0xFFFF), 3};
}
#endif

template <ConnTable::Scan S, bool kReport>
[[gnu::always_inline]] inline ConnTable::Inserted ConnTable::insert_with(const FlowKey& key, const Probe& pr,
                                                                         ConnState state, uint32_t now,
                                                                         uint32_t server, uint32_t server_tag,
                                                                         ConnEntry* gone, const VictimHint* hint) {
    const bool is_new = state == ConnState::tcp_new;
    // The way taken, as an entry index, and its Victim rank.
    uint32_t idx;
    uint32_t rank;
    ConnEntry* ep;
    if (hint && hint->idx != kNone && hint_holds(*hint)) {
        idx = hint->idx;
        rank = 2;
        ep = hint->entry;
    } else {
        Victim v;
#if defined(__SSE2__)
        if constexpr (S == Scan::sse2) {
            v = scan_sse2(meta_[pr.b1], meta_[pr.b2], is_new, now);
            if (v.pos == kOld) [[unlikely]]
                return insert_old(key, pr, state, now, server, server_tag, kReport, gone);
        } else if constexpr (S == Scan::sse2_old) {
            v = scan_sse2_old(meta_[pr.b1], meta_[pr.b2], is_new, now);
        } else
#endif
        {
            v = scan_portable(meta_[pr.b1], meta_[pr.b2], is_new, now);
        }
        if (v.pos == kNone) {
            stats_.full.add();
            return {kNone, 0, ConnState::empty, false};
        }
        idx = (v.pos < kWays ? pr.b1 : pr.b2) * kWays + v.pos % kWays;
        rank = v.rank;
        // An empty way of a bucket without entries gets the bucket a block first (an empty
        // way of a bucket with others, or any other way, is in the bucket's block; a hint's
        // way holds a live entry).
        BucketMeta& mb = meta_[idx / kWays];
        if (rank == 0 && mb.block == 0) mb.block = take_block();
        ep = entry_in(entries_, mb, idx % kWays);
    }
    const uint32_t w = idx % kWays;
    BucketMeta& m = meta_[idx / kWays];
    ConnEntry& e = *ep;
    const auto place = [&] {
        e.key = key;
        e.server = server;
        e.server_tag = server_tag;
        m.tag[w] = static_cast<uint16_t>(pr.tag);
        m.last_seen[w] = now;
        m.state[w] = static_cast<uint8_t>(state);
        stats_.inserts.add();
    };
    if (rank == 0) {
        place();
        stats_.live.add();
        return {idx, 0, ConnState::empty, false};
    }
    // What remove() does, less clearing the way and the live count's -1 +1, the new entry
    // taking it at once.
    const auto gone_state = static_cast<ConnState>(m.state[w]);
    if constexpr (kReport) {
        // The caller learns of the old entry from the result: its server is read before the
        // new entry overwrites it, and the whole entry copied only when asked and rare.
        const Inserted r{idx, e.server, gone_state, true};
        if (gone && gone_state != ConnState::tcp_new) [[unlikely]]
            *gone = e;
        place();
        (rank == 1 ? stats_.expired : stats_.evictions).add();
        return r;
    } else {
        // The hook gets a copy of the old entry, called last: only the index lives across the
        // call, nothing of the new entry.
        const ConnEntry old = e;
        place();
        (rank == 1 ? stats_.expired : stats_.evictions).add();
        if (hook_) hook_(hook_ctx_, old, gone_state);
        return {idx, 0, ConnState::empty, false};
    }
}

[[gnu::always_inline]] inline ConnTable::Inserted ConnTable::insert_reporting(const FlowKey& key, const Probe& pr,
                                                                               ConnState state, uint32_t now,
                                                                               uint32_t server, uint32_t server_tag,
                                                                               ConnEntry* gone,
                                                                               const VictimHint* hint) {
    return insert_with<kScan, true>(key, pr, state, now, server, server_tag, gone, hint);
}

// Whether the choice made afresh now would take the hint's way (a SYN flood's, rank 2),
// without making it. The hint holds when the table's epoch_ is the hint's (no way was emptied,
// restored or installed since) and its way's time is as the hint saw it. Every other change an
// insert or touch makes to a way sets its time to `now`, and the hint names no way last seen
// at `now`: so the hint's way is unchanged, no way is empty (none was when the hint was made:
// rank 2), and every other way changed only by becoming younger (age 0, below the hint's);
// nothing expires at the same `now`. The oldest new way is then still the oldest, and the
// first of its age.
[[gnu::always_inline]] inline bool ConnTable::hint_holds(const VictimHint& h) const {
    return h.epoch == epoch_ && meta_[h.idx / kWays].last_seen[h.idx % kWays] == h.seen;
}

inline ConnTable::VictimHint ConnTable::prefetch_victim(const Probe& pr, uint32_t now) const {
    const BucketMeta& m0 = meta_[pr.b1];
    const BucketMeta& m1 = meta_[pr.b2];
#if defined(__SSE2__)
    const Victim v = scan_sse2(m0, m1, true, now);
#else
    const Victim v = scan_portable(m0, m1, true, now);
#endif
    if (v.pos >= 2 * kWays) return {};  // every way protected (kNone), or the rare case (kOld)
    const uint32_t b = v.pos < kWays ? pr.b1 : pr.b2;
    const uint32_t w = v.pos % kWays;
    const uint32_t idx = b * kWays + w;
    const BucketMeta& m = meta_[b];
    // The way's entry; for an empty bucket, in block 0 (no block yet): a line that costs
    // nothing to prefetch again, where testing for it would cost every new connection.
    ConnEntry* const ent = entry_in(entries_, m, w);
    const auto* e = reinterpret_cast<const uint8_t*>(ent);
    __builtin_prefetch(e, 1, 3);
    __builtin_prefetch(e + sizeof(ConnEntry) - 1, 1, 3);  // 48-byte entries may straddle two lines
    if (v.rank != 2 || m.last_seen[w] == now) return {};
    return {idx, m.last_seen[w], epoch_, ent};
}

}  // namespace fulcrum
