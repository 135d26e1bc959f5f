#include "fulcrum/sync.hpp"

#include <algorithm>
#include <cstring>
#include <random>
#include <stdexcept>

namespace fulcrum {

const char* sync_error_name(SyncError e) {
    switch (e) {
        case SyncError::ok: return "ok";
        case SyncError::truncated: return "truncated";
        case SyncError::bad_magic: return "bad_magic";
        case SyncError::bad_version: return "bad_version";
        case SyncError::bad_header_len: return "bad_header_len";
        case SyncError::bad_record_len: return "bad_record_len";
        case SyncError::length_mismatch: return "length_mismatch";
        case SyncError::bad_type: return "bad_type";
        case SyncError::bad_flags: return "bad_flags";
        case SyncError::bad_count: return "bad_count";
        case SyncError::count_mismatch: return "count_mismatch";
        case SyncError::bad_aux: return "bad_aux";
        case SyncError::bad_sequence: return "bad_sequence";
        case SyncError::hmac_missing: return "hmac_missing";
        case SyncError::hmac_unexpected: return "hmac_unexpected";
        case SyncError::bad_hmac: return "bad_hmac";
        case SyncError::config_mismatch: return "config_mismatch";
        case SyncError::bad_family: return "bad_family";
        case SyncError::bad_proto: return "bad_proto";
        case SyncError::bad_state: return "bad_state";
        case SyncError::bad_server_family: return "bad_server_family";
        case SyncError::bad_address: return "bad_address";
        case SyncError::bad_ttl: return "bad_ttl";
        case SyncError::unknown_source: return "unknown_source";
        case SyncError::own_boot: return "own_boot";
        case SyncError::count_: break;
    }
    return "unknown";
}

const char* sync_error_text(SyncError e) {
    switch (e) {
        case SyncError::ok: return "valid";
        case SyncError::truncated: return "datagram shorter than its header or its total_len";
        case SyncError::bad_magic: return "not a Fulcrum sync datagram (wrong magic)";
        case SyncError::bad_version:
            return "unsupported sync protocol version (peers must run compatible versions)";
        case SyncError::bad_header_len: return "header_len is not this version's header size";
        case SyncError::bad_record_len: return "record_len is not this version's record size";
        case SyncError::length_mismatch: return "total_len differs from the datagram's length";
        case SyncError::bad_type: return "unknown datagram type";
        case SyncError::bad_flags:
            return "unknown flag bits, or the bulk flag on a control datagram";
        case SyncError::bad_count: return "record count not allowed for this datagram type";
        case SyncError::count_mismatch:
            return "header, record count and HMAC trailer do not add up to total_len";
        case SyncError::bad_aux: return "aux field set on a datagram type that has none";
        case SyncError::bad_sequence: return "boot id 0, or sequence 0 or 2^64-1";
        case SyncError::hmac_missing:
            return "no HMAC, but a sync key is configured (configure the key on the peer too)";
        case SyncError::hmac_unexpected:
            return "HMAC present, but no sync key is configured here (configure the same key on "
                   "both)";
        case SyncError::bad_hmac:
            return "HMAC does not verify (different keys on the two balancers, or a forged "
                   "datagram)";
        case SyncError::config_mismatch:
            return "the peer's configuration digest differs from ours (services or servers differ)";
        case SyncError::bad_family: return "record flow family is not 4 or 6";
        case SyncError::bad_proto: return "record protocol is not TCP (6) or UDP (17)";
        case SyncError::bad_state:
            return "record state is not established/closing/removed (closing is TCP only)";
        case SyncError::bad_server_family: return "record server family is not 4 or 6";
        case SyncError::bad_address: return "IPv4 address with non-zero bytes after its first 4";
        case SyncError::bad_ttl:
            return "TTL / hop limit is not 255 (the peer must be directly attached)";
        case SyncError::unknown_source: return "source address is not the configured sync peer";
        case SyncError::own_boot:
            return "carries this balancer's own boot id: one of its own datagrams sent back (a "
                   "forwarding loop, or someone on the link reflecting them)";
        case SyncError::count_: break;
    }
    return "unknown error";
}

bool SyncAuth::verify(std::span<const uint8_t> data, const uint8_t* tag) const {
    uint8_t want[FL_SYNC_HMAC_LEN];
    sign(data, want);
    // Constant time: the loop does not stop at the first difference.
    uint8_t diff = 0;
    for (size_t i = 0; i < FL_SYNC_HMAC_LEN; ++i)
        diff = static_cast<uint8_t>(diff | (want[i] ^ tag[i]));
    return diff == 0;
}

// ---- encoding -------------------------------------------------------------------------------

namespace {
size_t trailer_len(const SyncAuth* auth) { return auth ? FL_SYNC_HMAC_LEN : 0; }
}  // namespace

SyncEncoder::SyncEncoder(const SyncSenderConfig& cfg) : cfg_(cfg) {
    if (cfg.boot_id == 0)
        throw std::invalid_argument("sync encoder: boot id 0 (use new_sync_boot_id())");
    const size_t fixed = kSyncHeaderLen + trailer_len(cfg.auth);
    if (cfg.max_datagram > FL_SYNC_MAX_DATAGRAM || cfg.max_datagram < fixed + kSyncRecordLen)
        throw std::invalid_argument("sync encoder: datagram size " +
                                    std::to_string(cfg.max_datagram) + " outside " +
                                    std::to_string(fixed + kSyncRecordLen) + ".." +
                                    std::to_string(FL_SYNC_MAX_DATAGRAM) + " bytes");
    per_datagram_ = std::min<size_t>((cfg.max_datagram - fixed) / kSyncRecordLen, UINT16_MAX);
}

std::vector<uint8_t> SyncEncoder::datagram(uint8_t type, uint16_t flags, uint64_t aux,
                                           std::span<const fl_sync_record> records) {
    const size_t body = kSyncHeaderLen + records.size() * kSyncRecordLen;
    std::vector<uint8_t> d(body + trailer_len(cfg_.auth));
    fl_sync_header h{};
    h.magic = FL_SYNC_MAGIC;
    h.version = FL_SYNC_VERSION;
    h.type = type;
    h.header_len = kSyncHeaderLen;
    h.total_len = static_cast<uint16_t>(d.size());
    h.record_len = kSyncRecordLen;
    h.count = static_cast<uint16_t>(records.size());
    h.flags = static_cast<uint16_t>(flags | (cfg_.auth ? FL_SYNC_F_HMAC : 0));
    h.boot_id = cfg_.boot_id;
    h.sequence = next_seq_++;
    h.config_digest = cfg_.config_digest;
    h.aux = aux;
    std::memcpy(d.data(), &h, sizeof h);
    if (!records.empty())
        std::memcpy(d.data() + kSyncHeaderLen, records.data(), records.size() * kSyncRecordLen);
    if (cfg_.auth) cfg_.auth->sign({d.data(), body}, d.data() + body);
    return d;
}

size_t SyncEncoder::encode_records(std::span<const fl_sync_record> records, bool bulk,
                                   std::vector<std::vector<uint8_t>>& out) {
    size_t n = 0;
    for (size_t i = 0; i < records.size(); i += per_datagram_, ++n)
        out.push_back(datagram(FL_SYNC_T_RECORDS, bulk ? FL_SYNC_F_BULK : 0, 0,
                               records.subspan(i, std::min(per_datagram_, records.size() - i))));
    return n;
}

std::vector<uint8_t> SyncEncoder::bulk_request() {
    return datagram(FL_SYNC_T_BULK_REQUEST, 0, 0, {});
}

std::vector<uint8_t> SyncEncoder::bulk_end(uint64_t records_sent) {
    return datagram(FL_SYNC_T_BULK_END, 0, records_sent, {});
}

uint64_t new_sync_boot_id() {
    std::random_device rd;
    for (;;) {
        const uint64_t id = (uint64_t{rd()} << 32) ^ rd();
        if (id) return id;
    }
}

// ---- decoding -------------------------------------------------------------------------------

fl_sync_record SyncDatagram::record(size_t i) const {
    fl_sync_record r;
    std::memcpy(&r, records.data() + i * kSyncRecordLen, sizeof r);
    return r;
}

namespace {
bool valid_family(uint8_t f) { return f == FL_AF_INET || f == FL_AF_INET6; }

// IPv4 addresses live in the first 4 bytes; the rest must be zero so a record maps to exactly
// one flow key (keys are compared as bytes).
bool canonical(uint8_t family, const uint8_t* a) {
    if (family != FL_AF_INET) return true;
    for (size_t i = 4; i < 16; ++i)
        if (a[i]) return false;
    return true;
}
}  // namespace

SyncError validate_sync_record(const fl_sync_record& r) {
    if (!valid_family(r.family)) return SyncError::bad_family;
    if (r.proto != FL_PROTO_TCP && r.proto != FL_PROTO_UDP) return SyncError::bad_proto;
    switch (r.state) {
        case FL_SYNC_S_ESTABLISHED:
        case FL_SYNC_S_REMOVED: break;
        case FL_SYNC_S_CLOSING:
            if (r.proto != FL_PROTO_TCP) return SyncError::bad_state;
            break;
        default: return SyncError::bad_state;
    }
    if (!valid_family(r.server_family)) return SyncError::bad_server_family;
    if (!canonical(r.family, r.src) || !canonical(r.family, r.dst) ||
        !canonical(r.server_family, r.server_addr))
        return SyncError::bad_address;
    return SyncError::ok;
}

SyncError decode_sync_datagram(std::span<const uint8_t> bytes, const SyncDecodeOptions& opt,
                               SyncDatagram& out) {
    out = SyncDatagram{};
    if (bytes.size() < kSyncHeaderLen) return SyncError::truncated;
    fl_sync_header h;
    std::memcpy(&h, bytes.data(), sizeof h);
    out.header = h;
    if (h.magic != FL_SYNC_MAGIC) return SyncError::bad_magic;
    if (h.version != FL_SYNC_VERSION) return SyncError::bad_version;
    if (h.header_len != kSyncHeaderLen) return SyncError::bad_header_len;
    if (h.record_len != kSyncRecordLen) return SyncError::bad_record_len;
    if (bytes.size() < h.total_len) return SyncError::truncated;
    if (bytes.size() != h.total_len) return SyncError::length_mismatch;
    if (h.flags & ~uint32_t{FL_SYNC_F_KNOWN}) return SyncError::bad_flags;
    switch (h.type) {
        case FL_SYNC_T_RECORDS:
            if (h.count == 0) return SyncError::bad_count;
            if (h.aux != 0) return SyncError::bad_aux;
            break;
        case FL_SYNC_T_BULK_REQUEST:
        case FL_SYNC_T_BULK_END:
            if (h.flags & FL_SYNC_F_BULK) return SyncError::bad_flags;
            if (h.count != 0) return SyncError::bad_count;
            if (h.type == FL_SYNC_T_BULK_REQUEST && h.aux != 0) return SyncError::bad_aux;
            break;
        default: return SyncError::bad_type;
    }
    const bool has_hmac = h.flags & FL_SYNC_F_HMAC;
    const size_t body = kSyncHeaderLen + size_t{h.count} * kSyncRecordLen;
    if (body + (has_hmac ? FL_SYNC_HMAC_LEN : 0) != h.total_len) return SyncError::count_mismatch;
    if (h.boot_id == 0 || h.sequence == 0 || h.sequence == UINT64_MAX)
        return SyncError::bad_sequence;
    // Authenticate before looking at any record: an unauthenticated datagram gets no more work.
    if (opt.auth && !has_hmac) return SyncError::hmac_missing;
    if (!opt.auth && has_hmac) return SyncError::hmac_unexpected;
    if (opt.auth && !opt.auth->verify(bytes.first(body), bytes.data() + body))
        return SyncError::bad_hmac;
    if (opt.own_boot_id != 0 && h.boot_id == opt.own_boot_id) return SyncError::own_boot;
    if (opt.check_digest && h.config_digest != opt.config_digest) return SyncError::config_mismatch;
    out.records = bytes.subspan(kSyncHeaderLen, size_t{h.count} * kSyncRecordLen);
    for (size_t i = 0; i < h.count; ++i) {
        const SyncError e = validate_sync_record(out.record(i));
        if (e != SyncError::ok) {
            out.bad_record = static_cast<uint32_t>(i);
            out.records = {};
            return e;
        }
    }
    return SyncError::ok;
}

std::string sync_error_message(SyncError e, const SyncDatagram& d) {
    if (e == SyncError::ok) return "sync datagram valid";
    std::string m =
        std::string("sync datagram refused (") + sync_error_name(e) + "): " + sync_error_text(e);
    switch (e) {
        case SyncError::bad_family:
        case SyncError::bad_proto:
        case SyncError::bad_state:
        case SyncError::bad_server_family:
        case SyncError::bad_address:
            m += " (record " + std::to_string(d.bad_record) + " of " +
                 std::to_string(d.header.count) + ")";
            break;
        default: break;
    }
    return m;
}

SyncError check_sync_source(const IpAddr& source, uint8_t ttl, std::span<const IpAddr> peers) {
    if (std::find(peers.begin(), peers.end(), source) == peers.end())
        return SyncError::unknown_source;
    if (ttl != 255) return SyncError::bad_ttl;
    return SyncError::ok;
}

// ---- conversion -----------------------------------------------------------------------------

std::optional<uint8_t> sync_state_of(ConnState s) {
    switch (s) {
        case ConnState::tcp_established:
        case ConnState::udp: return uint8_t{FL_SYNC_S_ESTABLISHED};
        case ConnState::tcp_closing: return uint8_t{FL_SYNC_S_CLOSING};
        default: return std::nullopt;
    }
}

ConnState conn_state_of(const fl_sync_record& r) {
    switch (r.state) {
        case FL_SYNC_S_ESTABLISHED:
            return r.proto == FL_PROTO_TCP ? ConnState::tcp_established : ConnState::udp;
        case FL_SYNC_S_CLOSING: return ConnState::tcp_closing;
        default: return ConnState::empty;
    }
}

fl_sync_record make_sync_record(const FlowKey& key, uint8_t sync_state, uint16_t service_port,
                                const IpAddr& server, uint16_t server_port, uint32_t idle_ms) {
    fl_sync_record r{};
    r.family = key.is_v6 ? FL_AF_INET6 : FL_AF_INET;
    r.proto = key.proto;
    r.state = sync_state;
    r.server_family = static_cast<uint8_t>(server.family);
    r.src_port = key.sport;
    r.dst_port = key.dport;
    r.service_port = service_port;
    r.server_port = server_port;
    r.idle_ms = idle_ms;
    std::memcpy(r.src, key.src, 16);
    std::memcpy(r.dst, key.dst, 16);
    std::memcpy(r.server_addr, server.bytes.data(), 16);
    return r;
}

FlowKey sync_record_key(const fl_sync_record& r) {
    return make_key(r.src, r.dst, r.family == FL_AF_INET6, r.proto, r.src_port, r.dst_port);
}

IpAddr sync_record_server(const fl_sync_record& r) {
    return r.server_family == FL_AF_INET6 ? IpAddr::v6(r.server_addr) : IpAddr::v4(r.server_addr);
}

bool sync_record_from_entry(const SnapshotView& view, const ConnEntry& e, uint8_t sync_state,
                            uint32_t idle_ms, fl_sync_record& out) {
    const fl_snap_server* srv = view.server(e.server);
    if (!srv || srv->tag != e.server_tag) return false;
    const fl_snap_service& svc = view.services()[srv->service];  // validated by SnapshotView::open
    IpAddr addr;
    addr.family = static_cast<Family>(srv->family);
    std::memcpy(addr.bytes.data(), srv->addr, 16);
    out = make_sync_record(e.key, sync_state, svc.port, addr, srv->port, idle_ms);
    return true;
}

namespace {
// [vip family][vip 16][service port LE 2][proto][server family][server addr 16][server port LE 2]
// and one zero byte: 40 bytes.
std::array<uint8_t, 40> index_key(uint8_t vip_family, const uint8_t* vip, uint16_t service_port,
                                  uint8_t proto, uint8_t server_family, const uint8_t* server,
                                  uint16_t server_port) {
    std::array<uint8_t, 40> k{};
    k[0] = vip_family;
    std::memcpy(&k[1], vip, 16);
    std::memcpy(&k[17], &service_port, 2);
    k[19] = proto;
    k[20] = server_family;
    std::memcpy(&k[21], server, 16);
    std::memcpy(&k[37], &server_port, 2);
    return k;
}
}  // namespace

size_t SyncServerIndex::Hash::operator()(const Key& k) const {
    return static_cast<size_t>(bytes_hash(k.data(), k.size(), 0x73796e63696478ull));
}

SyncServerIndex::SyncServerIndex(const SnapshotView& view) {
    const auto servers = view.servers();
    for (uint32_t slot = 0; slot < servers.size(); ++slot) {
        const fl_snap_server* srv = view.server(slot);
        if (!srv) continue;
        const fl_snap_service& svc = view.services()[srv->service];
        map_.emplace(
            index_key(svc.family, svc.vip, svc.port, svc.proto, srv->family, srv->addr, srv->port),
            Target{slot, srv->tag});
    }
}

std::optional<SyncServerIndex::Target> SyncServerIndex::find(const fl_sync_record& r) const {
    const auto it = map_.find(index_key(r.family, r.dst, r.service_port, r.proto, r.server_family,
                                        r.server_addr, r.server_port));
    if (it == map_.end()) return std::nullopt;
    return it->second;
}

bool conn_entry_from_sync(const fl_sync_record& r, const SyncServerIndex& index, ConnEntry& out,
                          ConnState& state) {
    const auto t = index.find(r);
    if (!t) return false;
    out.key = sync_record_key(r);
    out.server = t->slot;
    out.server_tag = t->tag;
    state = conn_state_of(r);
    return true;
}

uint64_t sync_config_digest(const SnapshotView& view) {
    // A sum of per-pair hashes does not depend on slot numbers or order; services without
    // servers count too, so an extra empty service shows up as a difference.
    constexpr uint64_t kSeed = 0x73796e6364676e31ull;
    uint64_t sum = 0;
    for (const fl_snap_service& svc : view.services()) {
        uint8_t k[20] = {};
        k[0] = svc.family;
        std::memcpy(&k[1], svc.vip, 16);
        std::memcpy(&k[17], &svc.port, 2);
        k[19] = svc.proto;
        sum += bytes_hash(k, sizeof k, kSeed);
    }
    const auto servers = view.servers();
    for (uint32_t slot = 0; slot < servers.size(); ++slot) {
        const fl_snap_server* srv = view.server(slot);
        if (!srv) continue;
        const fl_snap_service& svc = view.services()[srv->service];
        const auto k =
            index_key(svc.family, svc.vip, svc.port, svc.proto, srv->family, srv->addr, srv->port);
        sum += bytes_hash(k.data(), k.size(), kSeed + 1);
    }
    const uint64_t seed = view.header().hash_seed;
    uint8_t fin[16];
    std::memcpy(fin, &sum, 8);
    std::memcpy(fin + 8, &seed, 8);
    return bytes_hash(fin, sizeof fin, kSeed + 2);
}

// ---- sequence tracking ----------------------------------------------------------------------

const char* sync_seq_name(SyncSeq s) {
    switch (s) {
        case SyncSeq::first: return "first";
        case SyncSeq::in_order: return "in_order";
        case SyncSeq::gap: return "gap";
        case SyncSeq::reboot: return "reboot";
        case SyncSeq::old: return "old";
        case SyncSeq::stale_boot: return "stale_boot";
    }
    return "unknown";
}

bool SyncSeqTracker::retired(uint64_t boot) const {
    return std::find(retired_.begin(), retired_.end(), boot) != retired_.end();
}

void SyncSeqTracker::retire(uint64_t boot) {
    retired_[retired_next_] = boot;
    retired_next_ = (retired_next_ + 1) % kRetiredBoots;
}

SyncSeqResult SyncSeqTracker::observe(uint64_t boot_id, uint64_t sequence) {
    // Boot id 0 is never sent (decode refuses it), so the zero-filled retired list matches
    // nothing real.
    if (!have_peer_ || boot_id != boot_) {
        if (retired(boot_id)) {
            ++stats_.stale_boot;
            return {SyncSeq::stale_boot, false, false, 0};
        }
        const bool reboot = have_peer_;
        if (reboot) {
            retire(boot_);
            ++stats_.reboots;
        }
        have_peer_ = true;
        boot_ = boot_id;
        expected_ = sequence + 1;
        ++stats_.accepted;
        return {reboot ? SyncSeq::reboot : SyncSeq::first, true, true, 0};
    }
    if (sequence < expected_) {
        ++stats_.old;
        return {SyncSeq::old, false, false, 0};
    }
    const uint64_t lost = sequence - expected_;
    expected_ = sequence + 1;
    ++stats_.accepted;
    if (lost == 0) return {SyncSeq::in_order, true, false, 0};
    ++stats_.gaps;
    stats_.lost += lost;
    return {SyncSeq::gap, true, true, lost};
}

}  // namespace fulcrum
