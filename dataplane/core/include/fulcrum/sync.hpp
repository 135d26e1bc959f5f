// Connection sync between the two balancers of an active-passive pair: encoding and strict
// decoding of the datagrams of sync_abi.h, conversion between connection entries and sync
// records (servers by identity, not slot), and the receiver's sequence tracking.
//
// Nothing here does I/O. Workers build records with sync_record_from_entry() and push them into
// an SpscRing (spsc_ring.hpp); the control thread batches them with SyncEncoder; the receiver
// checks the source (check_sync_source), decodes (decode_sync_datagram), tracks sequences
// (SyncSeqTracker) and maps records back to local slots (SyncServerIndex, conn_entry_from_sync).
// The HMAC itself is computed outside this library (it must not link OpenSSL): see SyncAuth.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "fulcrum/addr.hpp"
#include "fulcrum/conntable.hpp"
#include "fulcrum/flow.hpp"
#include "fulcrum/snapshot.hpp"
#include "fulcrum/sync_abi.h"

namespace fulcrum {

static_assert(std::endian::native == std::endian::little,
              "the sync wire format is little-endian and encoded by copying structs");

inline constexpr size_t kSyncHeaderLen = sizeof(fl_sync_header);
inline constexpr size_t kSyncRecordLen = sizeof(fl_sync_record);

enum class SyncError : uint8_t {
    ok = 0,
    truncated,          // shorter than a header, or than the header's total_len
    bad_magic,
    bad_version,
    bad_header_len,     // header_len is not this version's header size
    bad_record_len,     // record_len is not this version's record size
    length_mismatch,    // total_len differs from the datagram's length
    bad_type,
    bad_flags,          // unknown flag bits, or BULK on a datagram that is not RECORDS
    bad_count,          // RECORDS with no record, or a control datagram with records
    count_mismatch,     // header + count records + trailer does not add up to total_len
    bad_aux,            // aux set on a datagram type where it has no meaning
    bad_sequence,       // boot id 0, sequence 0 or 2^64-1 (the tracker's next would wrap)
    hmac_missing,       // a key is configured but the datagram carries no HMAC
    hmac_unexpected,    // the datagram carries an HMAC but no key is configured
    bad_hmac,
    config_mismatch,    // the sender's configuration digest differs (when checked)
    bad_family,         // a record's flow family is not 4 or 6
    bad_proto,          // not TCP or UDP
    bad_state,          // not a sync state, or CLOSING for UDP
    bad_server_family,
    bad_address,        // an IPv4 address with non-zero bytes after its first 4
    bad_ttl,            // the datagram's IP TTL / hop limit is not 255
    unknown_source,     // not sent from the configured peer address
    own_boot,           // carries the receiver's own boot id: its own datagram sent back
    count_
};
inline constexpr size_t kSyncErrorCount = static_cast<size_t>(SyncError::count_);

// Short snake_case name (for metrics labels) and a sentence saying what was wrong.
const char* sync_error_name(SyncError e);
const char* sync_error_text(SyncError e);

// ---- authentication -------------------------------------------------------------------------

// Computes the HMAC trailer. The implementation (HMAC-SHA256 with a key file) lives in the
// fulcrum_sync_auth library, which links libcrypto; this core library only calls it.
class SyncAuth {
public:
    virtual ~SyncAuth() = default;
    // Writes the 32-byte tag of `data` to `out`.
    virtual void sign(std::span<const uint8_t> data, uint8_t* out) const = 0;
    // Recomputes the tag and compares in constant time.
    bool verify(std::span<const uint8_t> data, const uint8_t* tag) const;
};

// ---- encoding -------------------------------------------------------------------------------

struct SyncSenderConfig {
    uint64_t boot_id = 0;        // non-zero: new_sync_boot_id()
    uint64_t config_digest = 0;  // sync_config_digest() of the running snapshot
    size_t max_datagram = FL_SYNC_DEFAULT_PAYLOAD;  // UDP payload bytes per datagram
    const SyncAuth* auth = nullptr;                 // set: every datagram carries an HMAC
};

// Builds the datagrams of one sender (one boot id, one sequence counter). Control thread only.
class SyncEncoder {
public:
    // Throws std::invalid_argument when boot_id is 0 or max_datagram cannot hold a header, one
    // record and the trailer, or exceeds FL_SYNC_MAX_DATAGRAM.
    explicit SyncEncoder(const SyncSenderConfig& cfg);

    size_t records_per_datagram() const { return per_datagram_; }
    uint64_t next_sequence() const { return next_seq_; }
    uint64_t boot_id() const { return cfg_.boot_id; }
    void set_config_digest(uint64_t d) { cfg_.config_digest = d; }

    // Appends one RECORDS datagram per records_per_datagram() records (the last one may carry
    // fewer) to `out`; `bulk` marks an answer to a bulk request. Returns the datagrams added.
    size_t encode_records(std::span<const fl_sync_record> records, bool bulk,
                          std::vector<std::vector<uint8_t>>& out);
    std::vector<uint8_t> bulk_request();
    std::vector<uint8_t> bulk_end(uint64_t records_sent);

private:
    std::vector<uint8_t> datagram(uint8_t type, uint16_t flags, uint64_t aux,
                                  std::span<const fl_sync_record> records);

    SyncSenderConfig cfg_;
    size_t per_datagram_;
    uint64_t next_seq_ = 1;
};

// A random non-zero boot id for this process.
uint64_t new_sync_boot_id();

// ---- decoding -------------------------------------------------------------------------------

struct SyncDecodeOptions {
    const SyncAuth* auth = nullptr;  // set: the HMAC is required and checked
    bool check_digest = false;       // refuse datagrams whose digest differs from config_digest
    uint64_t config_digest = 0;
    // Non-zero: the receiver's own boot id, refused (own_boot) after the HMAC check. Both
    // balancers sign with the same key, so a datagram of ours reflected back from the peer's
    // address would verify; taken as the peer's it would look like a peer restart (retiring
    // the real peer's boot id) or answer our own bulk request.
    uint64_t own_boot_id = 0;
};

// A decoded datagram. `records` points into the decoded bytes, which must outlive it.
struct SyncDatagram {
    fl_sync_header header{};
    std::span<const uint8_t> records;
    uint32_t bad_record = 0;  // index of the refused record for the record errors

    size_t count() const { return records.size() / kSyncRecordLen; }
    fl_sync_record record(size_t i) const;  // i < count()
};

// Checks every field of the header, the lengths, the HMAC (when `opt.auth`), the digest (when
// asked) and every record, in that order; all or nothing. Never reads outside `bytes`.
SyncError decode_sync_datagram(std::span<const uint8_t> bytes, const SyncDecodeOptions& opt,
                               SyncDatagram& out);

// The checks a record passes in decode_sync_datagram().
SyncError validate_sync_record(const fl_sync_record& r);

// What was wrong, naming the record for record errors.
std::string sync_error_message(SyncError e, const SyncDatagram& d);

// The socket-level checks of a received datagram: TTL / hop limit 255 (a datagram that crossed
// a router is not from the directly attached peer) and a source among `peers`.
SyncError check_sync_source(const IpAddr& source, uint8_t ttl, std::span<const IpAddr> peers);

// ---- conversion -----------------------------------------------------------------------------

// The sync state of a table state; nullopt for states that are not synced (tcp_new, empty).
std::optional<uint8_t> sync_state_of(ConnState s);
// The table state of a validated record (ConnState::empty for REMOVED).
ConnState conn_state_of(const fl_sync_record& r);

// A record for a flow with the given service port and server identity.
fl_sync_record make_sync_record(const FlowKey& key, uint8_t sync_state, uint16_t service_port,
                                const IpAddr& server, uint16_t server_port, uint32_t idle_ms);
FlowKey sync_record_key(const fl_sync_record& r);
IpAddr sync_record_server(const fl_sync_record& r);

// Worker side, no allocation: the record of a table entry under `view`. False when the entry's
// slot is not present in `view` or holds another server (the tag differs): such an entry has
// no identity to send.
bool sync_record_from_entry(const SnapshotView& view, const ConnEntry& e, uint8_t sync_state,
                            uint32_t idle_ms, fl_sync_record& out);

// Receiver side: (service identity, server identity) -> local slot and tag, built once per
// snapshot (allocates; not for the packet path).
class SyncServerIndex {
public:
    struct Target {
        uint32_t slot;
        uint32_t tag;
    };
    SyncServerIndex() = default;
    explicit SyncServerIndex(const SnapshotView& view);
    std::optional<Target> find(const fl_sync_record& r) const;
    size_t size() const { return map_.size(); }

private:
    using Key = std::array<uint8_t, 40>;
    struct Hash {
        size_t operator()(const Key& k) const;
    };
    std::unordered_map<Key, Target, Hash> map_;
};

// The table entry a validated record installs: false when its service or server is unknown
// here (the caller counts it). `state` receives conn_state_of(r).
bool conn_entry_from_sync(const fl_sync_record& r, const SyncServerIndex& index, ConnEntry& out,
                          ConnState& state);

// Digest of what both balancers must agree on for synced entries to mean the same thing: the
// flow hash seed and every (service, server) identity pair, independent of slot numbers and of
// order. Generation, weights and health are left out: they differ legitimately.
uint64_t sync_config_digest(const SnapshotView& view);

// ---- sequence tracking ----------------------------------------------------------------------

enum class SyncSeq : uint8_t {
    first,       // first datagram from the peer: accept, resync
    in_order,    // the expected sequence: accept
    gap,         // datagrams were lost: accept, resync
    reboot,      // a new boot id: the peer restarted; accept, resync
    old,         // sequence already seen (duplicate, reordered or replayed): refuse
    stale_boot,  // a boot id the peer has left behind (replay): refuse
};
const char* sync_seq_name(SyncSeq s);

struct SyncSeqResult {
    SyncSeq verdict;
    bool accept;     // install the datagram's records
    bool resync;     // ask the peer for a bulk resync
    uint64_t lost;   // datagrams missed (gap only)
};

struct SyncSeqStats {
    uint64_t accepted = 0, gaps = 0, lost = 0, reboots = 0, old = 0, stale_boot = 0;
};

// Receiver-side sequence state of one peer. Sequences count from 1 per boot id.
class SyncSeqTracker {
public:
    static constexpr size_t kRetiredBoots = 8;

    SyncSeqResult observe(uint64_t boot_id, uint64_t sequence);
    // Forgets the peer (its next datagram is `first` again); retired boot ids are kept.
    void reset() { have_peer_ = false; }
    const SyncSeqStats& stats() const { return stats_; }
    bool has_peer() const { return have_peer_; }
    uint64_t peer_boot_id() const { return boot_; }
    uint64_t expected() const { return expected_; }

private:
    bool retired(uint64_t boot) const;
    void retire(uint64_t boot);

    bool have_peer_ = false;
    uint64_t boot_ = 0;
    uint64_t expected_ = 0;
    std::array<uint64_t, kRetiredBoots> retired_{};
    size_t retired_next_ = 0;
    SyncSeqStats stats_;
};

}  // namespace fulcrum
