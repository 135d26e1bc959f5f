// fulcrumd's connection-sync peer: the loop around the sync codec (fulcrum/sync.hpp) that moves
// connection records between the dataplane and the other balancer of the pair over UDP.
//
// One thread per SyncPeer. It drains new and refreshed records from the local dataplane (adaptive
// interval: every drain_min while records flow, backing off to drain_max when idle), batches
// them into RECORDS datagrams and sends them to the peer within a records-per-second cap. It
// receives the peer's datagrams, checks source and TTL 255, decodes them (HMAC when a key is
// configured, configuration digest once it is known), tracks sequences, asks for a bulk resync
// on the peer's first datagram, a new boot id or a sequence gap, and installs the records into
// the dataplane. It answers the peer's bulk requests with a dump of the local table. Behaviour,
// bulk resync and the lag figures: docs/sync-protocol.md ("What fulcrumd's sync peer does").
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "fulcrum/addr.hpp"
#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum/expected.hpp"
#include "fulcrum/sync.hpp"
#include "fulcrum/sync_abi.h"

namespace fulcrum::control {

// Dataplane control-socket ops of connection sync (docs/control-protocol.md).
inline constexpr ctl::Op kOpSyncDrain = ctl::Op::sync_drain;
inline constexpr ctl::Op kOpSyncInstall = ctl::Op::sync_install;
inline constexpr ctl::Op kOpSyncDump = ctl::Op::sync_dump;
inline constexpr size_t kSyncInstallMaxRecords = ctl::kMaxSyncRecordsPerRequest;  // per sync_install request

// The dataplane's answer to sync_install.
struct SyncInstallResult {
    uint64_t queued = 0;          // handed to the workers for installation
    uint64_t invalid = 0;         // refused by the dataplane's record checks
    uint64_t unknown_server = 0;  // service or server not in the running snapshot
    uint64_t ring_full = 0;       // dropped: the install ring was full
};

// What the sync peer needs from the dataplane. Implementations may block (bounded); the peer's
// thread is the only caller.
class SyncDataplane {
  public:
    virtual ~SyncDataplane() = default;
    // Up to `max` records made since the last drain; `refresh_ms`: how often the dataplane
    // re-emits live entries (0: the dataplane's default).
    virtual Expected<std::vector<fl_sync_record>> drain(size_t max, uint32_t refresh_ms) = 0;
    // At most kSyncInstallMaxRecords records.
    virtual Expected<SyncInstallResult> install(std::span<const fl_sync_record> records) = 0;
    // Every established or closing entry of the table.
    virtual Expected<std::vector<fl_sync_record>> dump() = 0;
};

// Raw record arrays and the install reply as the control socket carries them. The errors say
// what was malformed.
Expected<std::vector<fl_sync_record>> parse_sync_records(std::span<const uint8_t> body,
                                                         const char* op);
Expected<SyncInstallResult> parse_sync_install_reply(std::span<const uint8_t> body);

// SyncDataplane over the dataplane's control socket, on a connection of its own (fulcrumd's main
// link is separate, so a large dump never delays a snapshot publish). Connects on first use and
// again after any transport error; every request is bounded by `timeout`.
class CtlSyncDataplane final : public SyncDataplane {
  public:
    explicit CtlSyncDataplane(std::string socket_path,
                              std::chrono::milliseconds timeout = std::chrono::seconds(1));
    Expected<std::vector<fl_sync_record>> drain(size_t max, uint32_t refresh_ms) override;
    Expected<SyncInstallResult> install(std::span<const fl_sync_record> records) override;
    Expected<std::vector<fl_sync_record>> dump() override;

  private:
    Expected<ctl::Reply> call(ctl::Op op, std::span<const uint8_t> body);

    std::string path_;
    std::chrono::milliseconds timeout_;
    ctl::Client client_;
};

struct SyncPeerConfig {
    IpAddr local;            // bound; its family is the socket's
    IpAddr peer;             // same family; the only accepted source
    uint16_t port = 8450;    // local UDP port
    uint16_t peer_port = 0;  // the peer's UDP port; 0: the same as `port`
    std::string key_file;    // empty: no HMAC. Set: every datagram signed, and required
    std::chrono::milliseconds refresh{10000};  // passed to sync_drain as refresh_ms
    uint64_t rate = 100000;  // records per second sent at most (incremental and bulk)
    size_t max_datagram = FL_SYNC_DEFAULT_PAYLOAD;  // UDP payload bytes
    std::chrono::milliseconds drain_min{2};         // drain interval while records flow
    std::chrono::milliseconds drain_max{50};        // drain interval when idle / after errors
    size_t drain_batch = 8192;                      // records per sync_drain at most
    size_t max_pending = 262144;                    // records waiting for the rate cap at most
    std::chrono::milliseconds bulk_timeout{3000};   // no bulk traffic this long: ask again
    std::chrono::milliseconds bulk_retry{1000};     // minimum time between two bulk requests
};

// Send and receive buffer of the sync socket (SO_RCVBUF/SO_SNDBUF, forced where permitted):
// about 3500 full datagrams, a bulk answer of ~70 000 records in flight.
inline constexpr size_t kSyncSocketBuffer = 8u << 20;

// The rate cap's bucket holds 20 ms of the rate, but at most this many full datagrams.
inline constexpr size_t kSyncMaxBurstDatagrams = 128;

// Throws std::invalid_argument naming the field, its value and what is allowed.
void validate(const SyncPeerConfig& c);

// p50/p99/max over the most recent samples (a window of kSyncLatencyWindow).
inline constexpr size_t kSyncLatencyWindow = 4096;
struct SyncLatency {
    uint64_t samples = 0;                         // all samples ever taken
    uint64_t p50_us = 0, p99_us = 0, max_us = 0;  // over the window; 0 without samples
};

struct SyncPeerStats {
    // sending
    uint64_t records_drained = 0;    // handed over by sync_drain
    uint64_t datagrams_sent = 0;     // every type
    uint64_t records_sent = 0;       // in RECORDS datagrams, bulk included
    uint64_t bulk_records_sent = 0;  // with the BULK flag
    uint64_t send_errors = 0;        // sendto() failed (the datagram is lost; the peer resyncs)
    uint64_t rate_limited = 0;       // records that had to wait for the rate cap (once each)
    uint64_t pending = 0;            // records waiting to be sent now (bulk included)
    uint64_t pending_full = 0;       // drains skipped because max_pending records wait
    // receiving
    uint64_t datagrams_received = 0;                  // read from the socket, before any check
    uint64_t receive_overflows = 0;                   // dropped by the kernel: receive buffer full
    uint64_t datagrams_accepted = 0;                  // passed every check and the sequence tracker
    uint64_t records_received = 0;                    // in accepted datagrams
    uint64_t records_before_publish = 0;  // received before set_config_digest: not installed
    std::array<uint64_t, kSyncErrorCount> refused{};  // by SyncError (sync_error_name)
    uint64_t seq_gaps = 0, seq_lost = 0, seq_reboots = 0, seq_old = 0, seq_stale_boot = 0;
    // installing (the dataplane's sync_install answers)
    uint64_t installed = 0;  // queued by the dataplane
    uint64_t install_invalid = 0, install_unknown_server = 0, install_ring_full = 0;
    uint64_t install_failed = 0;  // records lost to a failed sync_install
    // bulk resync
    uint64_t bulk_requests_sent = 0;
    uint64_t bulk_requests_received = 0;
    uint64_t bulk_served = 0;   // BULK_END sent (a whole dump answered)
    uint64_t bulk_aborted = 0;  // an answer cut short by a newer request
    uint64_t bulk_records_received = 0;
    uint64_t bulk_ends_received = 0;
    uint64_t bulk_incomplete = 0;  // a BULK_END that did not complete the resync
    bool bulk_complete = false;
    uint64_t dataplane_errors = 0;  // failed drain / install / dump requests
    // identity
    uint64_t boot_id = 0;
    uint64_t peer_boot_id = 0;        // 0 until the peer's first accepted datagram
    uint64_t config_digest = 0;       // ours (0: not set yet)
    uint64_t peer_config_digest = 0;  // in the peer's last authenticated datagram
    // Lag: from a record's sync_drain reply arriving in fulcrumd to the sendto() of the
    // datagram carrying it returning, one sample per incremental datagram (its oldest record).
    // It includes the wait for the rate cap; it excludes the time in the dataplane's rings
    // before the drain, the network, and the peer. Bulk records are not sampled.
    SyncLatency send_lag;
    // Receiver side, per accepted RECORDS datagram: from recvmsg() returning it to the
    // dataplane acknowledging the sync_install that carried its records.
    SyncLatency install_time;
};

class SyncPeer {
  public:
    // Creates and binds the socket and loads the key file. Throws std::runtime_error (bind,
    // key file) or std::invalid_argument (configuration) with what to fix. `dataplane` must
    // outlive the peer.
    SyncPeer(const SyncPeerConfig& cfg, SyncDataplane& dataplane);
    ~SyncPeer();  // stop()
    SyncPeer(const SyncPeer&) = delete;
    SyncPeer& operator=(const SyncPeer&) = delete;

    // Starts the thread. It sends, drains and installs nothing until the first
    // set_config_digest() (the dataplane runs a snapshot): records received before are counted
    // (records_before_publish) and left to the bulk resync, a bulk request of the peer is
    // answered then, and the first thing it sends is its own BULK_REQUEST.
    void start();
    // Wakes the thread and joins it: prompt, bounded by one dataplane request in progress
    // (CtlSyncDataplane's timeout). Records not yet sent are dropped. Idempotent.
    void stop();

    // The digest of the running snapshot (sync_config_digest); call on every publish. Sent in
    // every datagram from now on; from the first call on, the peer's datagrams must carry the
    // same digest (config_mismatch otherwise). The first call starts the syncing (start()).
    void set_config_digest(uint64_t digest);
    // Asks the peer for its whole table (sent as soon as bulk_retry allows).
    void request_bulk();
    // True once a BULK_END from the peer's current boot answered our request completely (as
    // many bulk records as it announced, no sequence gap, every install accepted by the
    // dataplane). False again when the peer restarts (new boot id).
    bool bulk_complete() const { return bulk_complete_.load(std::memory_order_acquire); }

    SyncPeerStats stats() const;
    uint64_t boot_id() const { return boot_id_; }
    uint16_t local_port() const { return local_port_; }  // the bound port (cfg.port, or chosen)

  private:
    struct Impl;
    void run();

    SyncPeerConfig cfg_;
    SyncDataplane& dp_;
    uint64_t boot_id_;
    uint16_t local_port_ = 0;
    int fd_ = -1;
    int wake_fd_ = -1;
    std::unique_ptr<SyncAuth> auth_;
    std::unique_ptr<Impl> impl_;  // the thread's state
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> bulk_complete_{false};
    std::atomic<bool> want_bulk_{false};
    std::atomic<bool> digest_set_{false};
    std::atomic<uint64_t> digest_{0};

    mutable std::mutex stats_mu_;
    SyncPeerStats stats_;
    std::vector<uint32_t> lag_window_, install_window_;  // microseconds, ring buffers
};

}  // namespace fulcrum::control
