// fulcrum-dataplane's engine: DPDK ports, one worker lcore per uplink RX queue running the
// core pipeline to completion, the exception path to the kernel (TAP), RCU-protected
// snapshot swaps, counters and DPDK telemetry. Construct after rte_eal_init().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fulcrum/conntable.hpp"
#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum/dp_counters.hpp"
#include "fulcrum/expected.hpp"

struct rte_mempool;
struct rte_rcu_qsbr;

namespace fulcrum {
class LoadedSnapshot;
class SyncServerIndex;
}

namespace fulcrum::dpdk {

struct DataplaneOptions {
    std::string uplink;          // DPDK port name or index
    std::string exception_iface; // kernel interface name of the TAP exception port ("" = none)
    size_t conn_capacity = 1 << 20;  // per worker
    ConnTimeouts timeouts;
    uint16_t mtu = 0;            // 0: keep the device's
    uint16_t rx_desc = 1024;
    uint16_t tx_desc = 1024;
    uint32_t mbufs = 0;          // 0: sized from queues and descriptors
    bool promiscuous = false;
    uint32_t tx_drain_us = 100;  // buffered TX is flushed at least this often
    uint32_t idle_sleep_us = 0;  // >0: sleep this long after 256 empty polls (small hosts, tests)
    uint32_t max_services = 4096;
    uint32_t max_servers = 65536;
    // What one control-socket frame can carry; fulcrumd --check refuses configurations whose
    // snapshot would not fit (config.cpp, snapshot_layout).
    size_t max_snapshot_bytes = ctl::kMaxFrame;
    // HA-managed start: standby (no VIP traffic, no ARP/ND answers for VIPs) until fulcrumd's
    // first `ha` request, instead of standalone. For the nodes of an active-passive pair, so
    // that a (re)started dataplane never answers for VIPs its peer owns.
    bool ha_managed = false;
    // Connection sync: records each worker's export ring holds (a power of two; 0 disables
    // export). docs/architecture.md, "Connection sync".
    size_t sync_ring = 65536;
};

struct WorkerSlot;  // per-lcore state, defined in the implementation

class Dataplane {
public:
    explicit Dataplane(const DataplaneOptions& opt);  // throws std::runtime_error
    ~Dataplane();
    Dataplane(const Dataplane&) = delete;
    Dataplane& operator=(const Dataplane&) = delete;

    void start();  // launches the workers on the EAL worker lcores
    void stop();   // stops them, flushing transmit buffers; idempotent

    // Validates and publishes a snapshot; on error the running one stays. Any non-worker
    // thread; serialized internally.
    Expected<uint64_t> load_snapshot(std::span<const uint8_t> bytes);
    std::vector<uint8_t> snapshot_bytes() const;  // empty if none
    uint64_t generation() const;

    // Restart handover (docs/architecture.md, "Restart handover"). save_state, after stop():
    // writes the running snapshot and every live connection entry to `path` (atomically) and
    // returns how many entries it wrote. restore_state, before start(): loads such a file if
    // there is one (its snapshot becomes the running one unless a newer one is loaded) and
    // puts its entries back into the workers' tables. The file is renamed to PATH.consumed
    // first, so a restart after a crash during the restore does not find it again; a damaged
    // or foreign file, or one whose snapshot does not load, is refused with a log line and
    // renamed to PATH.rejected. Returns how many entries it restored. restore_done(), once
    // the process is up (after start()), removes PATH.consumed; a Dataplane destroyed before
    // that (a failed start) renames it back to PATH for the next start.
    Expected<size_t> save_state(const std::string& path);
    size_t restore_state(const std::string& path);
    void restore_done();

    DataplaneCounters counters() const;
    nlohmann::json health() const;

    // HA fencing lease (docs/architecture.md, "HA lease (fencing)"). Until the first call the
    // dataplane is standalone: always active. After it, the workers forward and answer for
    // VIPs only while the role is active and the lease (renewed by each call) has not
    // expired; standby deactivates them at once. Returns the reply of the `ha` op, or an
    // error naming the bad field. Any non-worker thread.
    static constexpr uint64_t kMaxHaLeaseMs = 60000;
    Expected<nlohmann::json> set_ha(const nlohmann::json& req);
    nlohmann::json ha_status() const;  // the "ha" object of health()

    // Connection sync ops (docs/control-protocol.md, "Connection sync"): sync_drain,
    // sync_install and sync_dump, and conn_list (which reads the tables as sync_dump does).
    // Fills `out` with the reply body (raw records, or JSON) and returns its status. Any
    // non-worker thread; serialized internally.
    ctl::Status sync_op(ctl::Op op, std::span<const uint8_t> body, std::vector<uint8_t>& out);
    static constexpr size_t kSyncMaxRecords = ctl::kMaxSyncRecordsPerRequest;  // per drain or install
    static constexpr uint64_t kSyncDumpDeadlineMs = 10000;      // workers finish a dump within

    unsigned workers() const { return static_cast<unsigned>(workers_.size()); }
    uint16_t uplink_port() const { return uplink_; }
    int exception_port() const { return tap_; }

private:
    void setup_port(uint16_t port, uint16_t queues, bool rss, const char* role);
    void free_snapshot_after_grace(LoadedSnapshot* old);
    uint64_t read_rss_fingerprint(uint16_t port, uint16_t nq, const char* driver, uint64_t rss_hf);
    uint32_t now_ms() const;  // the workers' connection-table clock
    Expected<std::vector<uint8_t>> sync_drain(std::span<const uint8_t> body);
    Expected<nlohmann::json> sync_install(std::span<const uint8_t> body);
    Expected<std::vector<uint8_t>> sync_dump();

    DataplaneOptions opt_;
    uint16_t uplink_ = 0;
    int tap_ = -1;
    std::string uplink_name_;
    std::string tap_name_;
    uint16_t mtu_ = 1500;
    bool rx_ipv4_cksum_ = false;
    rte_mempool* pool_ = nullptr;
    std::vector<std::unique_ptr<WorkerSlot>> workers_;
    // Read by every worker on every poll, written rarely (a snapshot swap, stop, an HA lease
    // renewal): a cache line of their own, apart from what the control thread writes on every
    // request (its mutexes, the sync counters), which would otherwise take the line away from
    // the workers' caches each time (docs/architecture.md, "Per-worker placement").
    alignas(64) std::atomic<LoadedSnapshot*> current_{nullptr};
    std::atomic<bool> quit_{false};
    // HA lease: the workers are active while rte_rdtsc() < ha_deadline_tsc_ (one relaxed load
    // per poll). UINT64_MAX: standalone (never managed) or not yet expiring; 0: standby.
    std::atomic<uint64_t> ha_deadline_tsc_{UINT64_MAX};
    uint64_t started_tsc_ = 0;
    rte_rcu_qsbr* qsbr_ = nullptr;
    alignas(64) mutable std::mutex control_mu_;  // snapshot swaps vs. readers of snapshot metadata
    std::atomic<bool> running_{false};
    std::atomic<uint64_t> generation_{0};  // of the published snapshot
    std::atomic<bool> ha_managed_{false};
    bool ha_active_role_ = true;  // under control_mu_: the role of the last ha op
    bool ports_started_ = false;
    uint64_t rss_fingerprint_ = 0;  // of the uplink; 0: unknown (see conn_state.hpp)
    std::string restored_from_;     // PATH of a restore not yet confirmed by restore_done()
    // Connection sync. sync_index_ maps record identities to the running snapshot's slots:
    // rebuilt by load_snapshot, read under control_mu_. sync_mu_ makes the control side of
    // the workers' single-producer / single-consumer rings one thread at a time.
    std::unique_ptr<SyncServerIndex> sync_index_;
    std::mutex sync_mu_;
    uint64_t sync_dump_seq_ = 0;  // under sync_mu_
    std::atomic<uint64_t> sync_install_ring_full_{0}, sync_install_unknown_{0}, sync_install_invalid_{0};

    friend int worker_main(void* arg);
};

}  // namespace fulcrum::dpdk
