#include "fulcrum/conntable.hpp"

#include <cstdlib>
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
    return nb * sizeof(BucketMeta) + nb * kWays * sizeof(ConnEntry);
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
    meta_ = static_cast<BucketMeta*>(memory);
    entries_ = reinterpret_cast<ConnEntry*>(static_cast<uint8_t*>(memory) +
                                            size_t{nbuckets_} * sizeof(BucketMeta));
    std::memset(meta_, 0, size_t{nbuckets_} * sizeof(BucketMeta));
}

ConnTable::~ConnTable() {
    if (owned_) ::operator delete(owned_, std::align_val_t{64});
}


void ConnTable::expire_at(uint32_t b, uint32_t w) {
    stats_.expired.add();
    remove(b, w);
}

uint32_t ConnTable::insert(const FlowKey& key, uint64_t hash, ConnState state, uint32_t now,
                           uint32_t server, uint32_t server_tag) {
    // Victim choice over both buckets' ways: an empty way; else an expired one; else the least
    // recently used way this insert may replace (a new connection may only replace another
    // new one). Ties favour the first bucket.
    const bool is_new = state == ConnState::tcp_new;
    const uint32_t buckets[2] = {bucket_of(hash), bucket2_of(hash)};
    const int nb = buckets[0] == buckets[1] ? 1 : 2;
    int vb = -1, vw = -1;
    int rank = 4;
    // Power of two choices: an empty way in the emptier bucket keeps both balanced.
    const uint32_t empty0 = detail::match_tags(meta_[buckets[0]].tag, 0);
    const uint32_t empty1 = nb == 2 ? detail::match_tags(meta_[buckets[1]].tag, 0) : 0;
    if (empty0 | empty1) {
        const bool second = __builtin_popcount(empty1) > __builtin_popcount(empty0);
        vb = second ? 1 : 0;
        vw = __builtin_ctz(second ? empty1 : empty0);
        rank = 0;
    }
    if (rank > 0) {
        // No empty way: score every way of both buckets and take the highest score. Expired
        // ways score above new ones, new above other live ones, and within a class the older
        // way scores higher; a way this insert may not replace scores 0. Branch-free per
        // way: this scan is the bulk of a new connection's cost under a SYN flood. The score
        // packs the class (bits 36-37), the age (bits 4-35) and 15 - the way's position over
        // both buckets (bits 0-3), so one maximum picks the way, ties going to the first
        // way (bucket 0 first).
        const uint64_t other = is_new ? 0 : uint64_t{1} << 36;  // a live, not new way
        uint64_t best = 0;
        for (int k = 0; k < nb; ++k) {
            const BucketMeta& m = meta_[buckets[k]];
            for (uint32_t w = 0; w < kWays; ++w) {
                const uint32_t age = now - m.last_seen[w];
                const uint8_t st = m.state[w];
                const uint64_t cls = age >= timeout_of(st)                                ? uint64_t{3} << 36
                                     : st == static_cast<uint8_t>(ConnState::tcp_new) ? uint64_t{2} << 36
                                                                                       : other;
                const uint64_t score = cls ? cls | (uint64_t{age} << 4) | (15 - (static_cast<uint32_t>(k) * kWays + w)) : 0;
                best = score > best ? score : best;
            }
        }
        if (best) {
            const auto at = static_cast<int>(15 - (best & 15));
            vb = at / static_cast<int>(kWays);
            vw = at % static_cast<int>(kWays);
            rank = 4 - static_cast<int>(best >> 36);
        }
    }
    if (vb < 0) {
        stats_.full.add();
        return kNone;
    }
    const uint32_t b = buckets[vb];
    const auto w = static_cast<uint32_t>(vw);
    BucketMeta& m = meta_[b];
    if (rank == 1) {
        stats_.expired.add();
        remove(b, w);
    } else if (rank >= 2) {
        stats_.evictions.add();
        remove(b, w);
    }
    const uint32_t idx = b * kWays + w;
    entries_[idx].key = key;
    entries_[idx].server = server;
    entries_[idx].server_tag = server_tag;
    m.tag[w] = tag_of(hash);
    m.last_seen[w] = now;
    m.state[w] = static_cast<uint8_t>(state);
    stats_.live.add();
    stats_.inserts.add();
    return idx;
}

void ConnTable::remove(uint32_t b, uint32_t w) {
    BucketMeta& m = meta_[b];
    if (hook_) hook_(hook_ctx_, entries_[size_t{b} * kWays + w], static_cast<ConnState>(m.state[w]));
    m.tag[w] = 0;
    m.state[w] = 0;
    stats_.live.sub();
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
            out.push_back({entries_[size_t{b} * kWays + w], static_cast<ConnState>(m.state[w]), now - m.last_seen[w]});
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
        if (old) *old = entries_[i];
        if (old_state) *old_state = this->state(i);
        entries_[i].server = e.server;
        entries_[i].server_tag = e.server_tag;
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
