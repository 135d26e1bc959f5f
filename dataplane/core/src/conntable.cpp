#include "fulcrum/conntable.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <iterator>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>


namespace fulcrum {

const char* conn_state_name(ConnState s) {
    switch (s) {
        case ConnState::empty: return "empty";
        case ConnState::tcp_new: return "tcp_new";
        case ConnState::tcp_established: return "tcp_established";
        case ConnState::tcp_closing: return "tcp_closing";
        case ConnState::udp: return "udp";
        default: return "invalid";
    }
}

size_t ConnTable::buckets_for(size_t capacity) { return (capacity + kWays - 1) / kWays; }

size_t ConnTable::memory_bytes(size_t capacity) {
    const size_t nb = buckets_for(capacity);
    const size_t stack = (nb * sizeof(uint32_t) + 63) / 64 * 64;
    return nb * sizeof(BucketMeta) + (nb + 1) * kBlockBytes + stack;
}

ConnTable::ConnTable(size_t capacity, ConnTimeouts timeouts, void* memory) {
    set_timeouts(timeouts);
    if (capacity == 0 || capacity > size_t{0xFFFFFFFFu} - kWays)
        throw std::invalid_argument("connection table capacity " + std::to_string(capacity) +
                                    " out of range (1 .. 4294967287)");
    nbuckets_ = static_cast<uint32_t>(buckets_for(capacity));
    const size_t bytes = memory_bytes(capacity);
    if (!memory) {
        owned_ = ::operator new(bytes, std::align_val_t{64});
        memory = owned_;
    }
    auto* const base = static_cast<uint8_t*>(memory);
    meta_ = reinterpret_cast<BucketMeta*>(base);
    entries_ = reinterpret_cast<ConnEntry*>(base + size_t{nbuckets_} * sizeof(BucketMeta));
    free_ = reinterpret_cast<uint32_t*>(base + size_t{nbuckets_} * sizeof(BucketMeta) +
                                        (size_t{nbuckets_} + 1) * kBlockBytes);
    // The metadata, block 0 (never handed out) and the stack's padding zeroed: a table's
    // memory then depends only on what was done to it.
    std::memset(meta_, 0, size_t{nbuckets_} * sizeof(BucketMeta));
    std::memset(entries_, 0, kBlockBytes);
    std::memset(free_, 0, memory_bytes(capacity) - static_cast<size_t>(reinterpret_cast<uint8_t*>(free_) - base));
    // Every block but 0 free, block 1 on top: the first buckets to fill take 1, 2, 3...
    nfree_ = nbuckets_;
    for (uint32_t i = 0; i < nbuckets_; ++i) free_[i] = nbuckets_ - i;
}

ConnTable::~ConnTable() {
    if (owned_) ::operator delete(owned_, std::align_val_t{64});
}


void ConnTable::expire_at(uint32_t b, uint32_t w) {
    stats_.expired.add();
    remove(b, w);
}

// ---- insert: the victim choice ----------------------------------------------------------
//
// Over the ways of the key's two buckets (positions 0-7 the first, 8-15 the second): an empty
// way in the emptier bucket (power of two choices keeps both balanced), its first one, the
// first bucket on a tie. Else the oldest (largest now - last_seen) among the expired ways;
// else among the live new ones (tcp_new); else, unless the insert is itself a new connection,
// among the other live ones. Ties go to the first way, the first bucket first. When both
// choices are the same bucket, positions 8-15 repeat 0-7: as many empty ways, and every age
// equal, so they never win a tie and the scans need no special case for it.

ConnTable::Victim ConnTable::scan_portable(const BucketMeta& m0, const BucketMeta& m1, bool is_new,
                                           uint32_t now) const {
    const uint32_t empty0 = detail::match_tags(m0.tag, 0);
    const uint32_t empty1 = detail::match_tags(m1.tag, 0);
    if (empty0 | empty1) {
        const bool second = __builtin_popcount(empty1) > __builtin_popcount(empty0);
        return {second ? kWays + static_cast<uint32_t>(__builtin_ctz(empty1))
                       : static_cast<uint32_t>(__builtin_ctz(empty0)),
                0};
    }
    // Score every way and take the highest: the class (bits 36-37: 3 expired, 2 new, 1 other
    // live, 0 protected), the age (bits 4-35) and 15 - the position (bits 0-3), so one maximum
    // picks the way with ties to the first.
    const uint64_t other = is_new ? 0 : uint64_t{1} << 36;
    uint64_t best = 0;
    for (uint32_t k = 0; k < 2; ++k) {
        const BucketMeta& m = k ? m1 : m0;
        for (uint32_t w = 0; w < kWays; ++w) {
            const uint32_t age = now - m.last_seen[w];
            const uint8_t st = m.state[w];
            uint64_t cls = other;
            if (age >= timeout_of(st))
                cls = uint64_t{3} << 36;
            else if (st == static_cast<uint8_t>(ConnState::tcp_new))
                cls = uint64_t{2} << 36;
            const uint64_t score = cls ? cls | (uint64_t{age} << 4) | (15 - (k * kWays + w)) : 0;
            best = score > best ? score : best;
        }
    }
    if (!best) return {kNone, 0};
    return {static_cast<uint32_t>(15 - (best & 15)), static_cast<uint32_t>(4 - (best >> 36))};
}

#if defined(__SSE2__)
using namespace detail;  // the SSE2 scan's helpers (conntable.hpp)

namespace {
// The oldest way among `cand` (a mask over 16 positions), by a plain loop: for the rare scans
// with expired ways or ages beyond 16 bits.
uint32_t oldest_of(const ConnTable::BucketMeta& m0, const ConnTable::BucketMeta& m1, uint32_t now,
                   uint32_t cand) {
    uint32_t pos = static_cast<uint32_t>(__builtin_ctz(cand));
    uint32_t best = now - (pos < 8 ? m0 : m1).last_seen[pos % 8];
    for (cand &= cand - 1; cand; cand &= cand - 1) {
        const auto p = static_cast<uint32_t>(__builtin_ctz(cand));
        const uint32_t age = now - (p < 8 ? m0 : m1).last_seen[p % 8];
        if (age > best) {  // strictly: ties stay with the first way
            best = age;
            pos = p;
        }
    }
    return pos;
}

}  // namespace

void ConnTable::refresh_tcap() const {
    std::memcpy(tcap_of_, &timeout_of_[1], sizeof tcap_of_);
    const uint32_t tlow = *std::min_element(std::begin(tcap_of_), std::end(tcap_of_));
    for (uint16_t& t : tcap_) t = static_cast<uint16_t>(std::min<uint32_t>(tlow, 32767));
}

// The ways that have expired, exactly: now - last_seen >= the timeout of the state byte, in
// 32-bit lanes, four ways at a time. Each way's timeout is picked by comparing its state
// (the low three bits, as timeout_of) with each valid one: 0 for the others.
uint32_t ConnTable::expired_ways(const BucketMeta& m0, const BucketMeta& m1, uint32_t now) const {
    const __m128i zero = _mm_setzero_si128();
    const __m128i sign = _mm_set1_epi32(static_cast<int>(0x80000000u));
    const __m128i st = _mm_and_si128(
        _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m0.state)),
                           _mm_loadl_epi64(reinterpret_cast<const __m128i*>(m1.state))),
        _mm_set1_epi8(7));
    const __m128i st16[2] = {_mm_unpacklo_epi8(st, zero), _mm_unpackhi_epi8(st, zero)};
    const uint32_t* const seen[4] = {m0.last_seen, m0.last_seen + 4, m1.last_seen,
                                     m1.last_seen + 4};
    const __m128i nowv = _mm_set1_epi32(static_cast<int>(now));
    __m128i live[4];  // all ones where the way has not expired
    for (int i = 0; i < 4; ++i) {
        const __m128i s =
            i % 2 ? _mm_unpackhi_epi16(st16[i / 2], zero) : _mm_unpacklo_epi16(st16[i / 2], zero);
        __m128i timeout = zero;
        for (int state = 1; state <= 4; ++state)
            timeout = _mm_or_si128(
                timeout, _mm_and_si128(_mm_cmpeq_epi32(s, _mm_set1_epi32(state)),
                                       _mm_set1_epi32(static_cast<int>(timeout_of_[state]))));
        const __m128i age =
            _mm_sub_epi32(nowv, _mm_load_si128(reinterpret_cast<const __m128i*>(seen[i])));
        // Unsigned age < timeout, by the signed compare with both sign bits flipped.
        live[i] = _mm_cmpgt_epi32(_mm_xor_si128(timeout, sign), _mm_xor_si128(age, sign));
    }
    const auto live_ways = static_cast<uint32_t>(_mm_movemask_epi8(
        _mm_packs_epi16(_mm_packs_epi32(live[0], live[1]), _mm_packs_epi32(live[2], live[3]))));
    return ~live_ways & 0xFFFF;
}

// No way is empty and some is past the lowest timeout (or has an invalid state, or the
// timeouts changed): each such way against its own timeout, then the oldest of the class, by
// 16-bit lanes when its ages allow.
[[gnu::always_inline]] inline ConnTable::Victim ConnTable::scan_sse2_old(const BucketMeta& m0,
                                                                         const BucketMeta& m1,
                                                                         bool is_new,
                                                                         uint32_t now) const {
    // scan_sse2 handed over its classification, unless it found the threshold out of date.
    Sse2Ways c{handover_.a0, handover_.a1, handover_.newb, handover_.maybe};
    if (!tcap_current()) {
        refresh_tcap();
        c = classify(m0, m1, _mm_load_si128(reinterpret_cast<const __m128i*>(tcap_)), now);
    }
    // The ways past the lowest timeout against their own: one by one when they are few (the
    // usual case: a few idle established connections), else all 16 at once.
    uint32_t expired = 0;
    const uint32_t m2 = c.maybe & (c.maybe - 1), m3 = m2 & (m2 - 1);
    if ((m3 & (m3 - 1)) == 0) {  // at most three
        for (uint32_t m = c.maybe; m; m &= m - 1) {
            const auto p = static_cast<uint32_t>(__builtin_ctz(m));
            const BucketMeta& b = p < kWays ? m0 : m1;
            if (now - b.last_seen[p % kWays] >= timeout_of(b.state[p % kWays])) expired |= 1u << p;
        }
    } else {
        expired = expired_ways(m0, m1, now);
    }
    if (expired) return {oldest_of(m0, m1, now, expired), 1};
    const auto news = static_cast<uint32_t>(_mm_movemask_epi8(c.newb));
    const uint32_t cand = news ? news : is_new ? 0 : 0xFFFF;
    if (!cand) return {kNone, 0};
    const uint32_t rank = news ? 2 : 3;
    // The 16-bit ages are exact when every candidate is under the capped lowest timeout.
    if (cand & c.maybe) return {oldest_of(m0, m1, now, cand), rank};
    return {news ? oldest16(mask16(c.a0, c.a1, c.newb), cand) : oldest16(c.a0, c.a1, cand), rank};
}
#endif

#if defined(__SSE2__)
ConnTable::Inserted ConnTable::insert_old(const FlowKey& key, Probe pr, ConnState state, uint32_t now,
                                          uint32_t server, uint32_t server_tag, bool report, ConnEntry* gone) {
    return report ? insert_with<Scan::sse2_old, true>(key, pr, state, now, server, server_tag, gone)
                  : insert_with<Scan::sse2_old, false>(key, pr, state, now, server, server_tag, nullptr);
}
#endif

uint32_t ConnTable::insert_portable(const FlowKey& key, const Probe& pr, ConnState state,
                                    uint32_t now, uint32_t server, uint32_t server_tag) {
    return insert_with<Scan::portable, false>(key, pr, state, now, server, server_tag, nullptr).idx;
}

ConnTable::Inserted ConnTable::insert_reporting_portable(const FlowKey& key, const Probe& pr, ConnState state,
                                                         uint32_t now, uint32_t server, uint32_t server_tag,
                                                         ConnEntry* gone, const VictimHint* hint) {
    return insert_with<Scan::portable, true>(key, pr, state, now, server, server_tag, gone, hint);
}

uint32_t ConnTable::insert(const FlowKey& key, uint64_t hash, ConnState state, uint32_t now,
                           uint32_t server, uint32_t server_tag) {
    return insert_with<kScan, false>(key, probe(hash), state, now, server, server_tag, nullptr).idx;
}

uint32_t ConnTable::insert(const FlowKey& key, const Probe& pr, ConnState state, uint32_t now,
                           uint32_t server, uint32_t server_tag) {
    return insert_with<kScan, false>(key, pr, state, now, server, server_tag, nullptr).idx;
}

void ConnTable::remove(uint32_t b, uint32_t w) {
    BucketMeta& m = meta_[b];
    ConnEntry& e = *entry_in(entries_, m, w);
    if (hook_) hook_(hook_ctx_, e, static_cast<ConnState>(m.state[w]));
    // The key's last word (ports, protocol, family, padding) all ones: no packet's key has
    // these padding bytes, so a look-up's hint into this way, made before the removal, can
    // never match it, even after the block passes to another bucket (find).
    static_assert(offsetof(FlowKey, sport) == 32 && sizeof(FlowKey) == 40);
    std::memset(reinterpret_cast<uint8_t*>(&e.key) + 32, 0xFF, 8);
    m.tag[w] = 0;
    m.state[w] = 0;
    ++epoch_;
    stats_.live.sub();
    // The bucket's last entry: its block goes back to the stack.
    if (detail::match_tags(m.tag, 0) == (1u << kWays) - 1) give_block(m);
}

void ConnTable::erase(uint32_t idx) {
    if (meta_[idx / kWays].tag[idx % kWays]) remove(idx / kWays, idx % kWays);
}

size_t ConnTable::sweep(uint32_t now, size_t buckets) {
    size_t removed = 0;
    if (buckets > nbuckets_) buckets = nbuckets_;
    for (size_t i = 0; i < buckets; ++i) {
        const uint32_t b = sweep_cursor_;
        if (++sweep_cursor_ == nbuckets_) sweep_cursor_ = 0;
        BucketMeta& m = meta_[b];
        for (uint32_t w = 0; w < kWays; ++w) {
            if (m.tag[w] && expired(m, w, now)) {
                stats_.expired.add();
                remove(b, w);
                ++removed;
            }
        }
    }
    return removed;
}

void ConnTable::export_live(uint32_t now, std::vector<ConnExport>& out) const {
    for (uint32_t b = 0; b < nbuckets_; ++b) {
        const BucketMeta& m = meta_[b];
        for (uint32_t w = 0; w < kWays; ++w) {
            if (!m.tag[w] || expired(m, w, now)) continue;
            out.push_back({*entry_in(entries_, m, w), static_cast<ConnState>(m.state[w]), now - m.last_seen[w]});
        }
    }
}

ConnRestore ConnTable::restore(const ConnEntry& e, uint64_t hash, ConnState state, uint32_t idle_ms, uint32_t now,
                               uint32_t* idx) {
    if (state == ConnState::empty || state >= ConnState::count_) return ConnRestore::invalid;
    if (idle_ms >= timeout_of(static_cast<uint8_t>(state))) return ConnRestore::expired;
    if (find(e.key, hash, now) != kNone) return ConnRestore::duplicate;
    const uint32_t i = insert(e.key, hash, state, now, e.server, e.server_tag);
    if (i == kNone) return ConnRestore::full;
    // The 32-bit clock wraps: now - idle_ms may lie "before" the new process's origin, and
    // expiry (now - last_seen >= timeout) still comes out right.
    meta_[i / kWays].last_seen[i % kWays] = now - idle_ms;
    ++epoch_;
    if (idx) *idx = i;
    return ConnRestore::restored;
}

ConnInstall ConnTable::install(const ConnEntry& e, uint64_t hash, ConnState state, uint32_t idle_ms,
                               uint32_t now, ConnEntry* old, ConnState* old_state) {
    if (state == ConnState::empty || state >= ConnState::count_) return ConnInstall::invalid;
    if (idle_ms >= timeout_of(static_cast<uint8_t>(state))) return ConnInstall::expired;
    uint32_t i = find(e.key, hash, now);
    ConnInstall r = ConnInstall::overwritten;
    if (i != kNone) {
        if (old) *old = entry(i);
        if (old_state) *old_state = this->state(i);
        repoint(i, e.server, e.server_tag);
    } else {
        // Inserted as a new connection, which may replace only empty, expired or half-open
        // ways; its real state is set below.
        i = insert(e.key, hash, ConnState::tcp_new, now, e.server, e.server_tag);
        if (i == kNone) return ConnInstall::full;
        r = ConnInstall::inserted;
    }
    meta_[i / kWays].state[i % kWays] = static_cast<uint8_t>(state);
    // As in restore(): the wrapping clock keeps expiry right even before this clock's origin.
    meta_[i / kWays].last_seen[i % kWays] = now - idle_ms;
    ++epoch_;
    return r;
}

bool ConnTable::remove_key(const FlowKey& key, uint64_t hash, uint32_t now) {
    const uint32_t i = find(key, hash, now);
    if (i == kNone) return false;
    erase(i);
    return true;
}

void ConnTable::clear() {
    for (uint32_t b = 0; b < nbuckets_; ++b)
        for (uint32_t w = 0; w < kWays; ++w)
            if (meta_[b].tag[w]) remove(b, w);
}

}  // namespace fulcrum
