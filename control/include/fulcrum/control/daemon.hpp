// fulcrumd's main loop: keeps the dataplane's forwarding snapshot in line with the
// configuration, the health checks, server reachability and operator commands. It owns the
// model (what fulcrumd believes) and the publishing state (what the dataplane runs); the
// dataplane connection lives in DataplaneLink, the admin commands in AdminApi, the metrics
// in Metrics. If fulcrumd stops, the dataplane keeps forwarding with the last snapshot.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fulcrum/control/admin_request.hpp"
#include "fulcrum/control/config.hpp"
#include "fulcrum/control/ha_node.hpp"
#include "fulcrum/control/sync_peer.hpp"
#include "fulcrum/control/dataplane_link.hpp"
#include "fulcrum/control/publisher.hpp"
#include "fulcrum/control/xdp_front.hpp"
#include "fulcrum/control/state_file.hpp"
#include "fulcrum/snapshot.hpp"

namespace fulcrum::control {

class AdminApi;
class AdminServer;
class HealthChecker;
struct CheckStatus;
class Metrics;
class NeighborResolver;

// Where publishing stands: the generation the dataplane acknowledged (it answers once every
// worker runs it) and the one on its way, if any.
struct PublishStatus {
    uint64_t applied_generation = 0;   // last generation the dataplane acknowledged
    uint64_t in_flight_generation = 0; // sent, not yet acknowledged (0 = none)
    bool changes_pending = false;      // model changes not yet in any sent generation
    uint64_t publishes = 0, publish_errors = 0;
    std::string last_error;
    // "idle" (the dataplane runs everything), "pending" (changes wait for the next publish),
    // "in_flight" (a generation is on its way), "waiting_for_dataplane" (not connected),
    // "waiting_for_health_checks" (first publish held until the first checks finish),
    // "failed" (the model cannot be built into a snapshot: last_error says why).
    std::string state;
};

// The outcome of a state-changing command, given once the dataplane runs a generation
// containing it, or once that cannot happen.
struct Applied {
    bool ok = false;
    uint64_t generation = 0;  // ok: the first generation the dataplane runs with the change
    std::string error;        // !ok: why (dataplane down: the change is kept and applied later)
    bool kept = true;         // !ok: the change stays in fulcrumd's model
};

class Daemon {
public:
    // Takes a validated configuration; opens the admin socket, the metrics endpoint, netlink,
    // and starts health checks. Throws std::runtime_error on startup problems.
    explicit Daemon(Config cfg);
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Runs until SIGINT or SIGTERM (SIGHUP reloads). The caller must have blocked SIGINT,
    // SIGTERM and SIGHUP in every thread (see block_signals()) before constructing the Daemon.
    int run();
    static void block_signals();

    // ---- for the admin API; thread-safe ----

    // A consistent copy of what fulcrumd knows, for views.
    struct View {
        std::string config_path, metrics_listen;
        Model model;
        std::map<std::string, uint32_t> slots;  // server key -> snapshot slot
        PublishStatus publish;
        DataplaneStatus dataplane;
        std::shared_ptr<const DataplaneCounters> counters;  // null while unreachable
        int64_t uptime_seconds = 0;
        uint64_t reloads = 0, reload_errors = 0;
        std::string last_reload_error;
        std::optional<HaStatus> ha;
        std::optional<SyncPeerStats> sync;
        std::optional<XdpStatus> xdp;  // without packet counters
    };
    View view(bool fresh_counters);

    using Done = std::function<void(const Applied&)>;
    enum class ServerOp { set_weight, drain, disable, enable };
    struct Change {
        std::string server, state;
        uint32_t weight = 0;
        uint64_t seq = 0;  // pass to when_applied
        std::string persist_error;  // "": the change is in the state file; else why it is not
    };
    // Changes a server in the model (and the snapshot to come). The error names what was
    // wrong (no such service or server, ambiguous, retiring).
    Expected<Change> change_server(const std::string& service, const std::string& server, ServerOp op,
                                   uint32_t weight = 0);
    // Re-reads the configuration file. On error the running state stays; the reply says why.
    // On success the reply's "seq" is the change to wait for with when_applied.
    nlohmann::json reload();
    // Calls `done` (from the main loop thread, or at once) when the dataplane runs a
    // generation containing change `seq`, or when it cannot (dataplane not connected,
    // snapshot refused, not applied within `wait`).
    void when_applied(uint64_t seq, Done done, std::chrono::milliseconds wait = std::chrono::seconds(8));

    // The failover state (nullopt: neither `interface:` nor `ha:` is configured).
    std::optional<HaStatus> ha_status() const;
    // Connection sync with the peer (nullopt: ha.sync not configured).
    std::optional<SyncPeerStats> sync_stats() const;
    // fulcrumctl ha takeover / release / resume. The error says why it cannot be done.
    Expected<HaStatus> ha_action(HaAction a);
    // The XDP front: the `xdp:` section in force and the program's state with its packet
    // counters (nullopt: no `xdp:` section).
    struct XdpView {
        XdpConfig cfg;
        std::vector<IpAddr> vips;
        XdpStatus status;
    };
    std::optional<XdpView> xdp_view() const;

    // The state file holding the operator's overrides, and its last problem ("" if none).
    struct StateFileStatus {
        std::string path, error;
        size_t overrides = 0;  // servers with an override in the file
    };
    StateFileStatus state_file_status() const;

private:
    struct Waiter {
        uint64_t seq;
        std::chrono::steady_clock::time_point deadline;
        Done done;
    };

    void apply_config(Config cfg);
    void mark_changed();  // under mu_
    void on_health(const std::string& key, const CheckStatus& st);
    void settle_health();
    void release_held_health();
    void tick();
    void resolve_all();
    void adopt(const std::vector<uint8_t>& running);
    void adopt_retired(const SnapshotView& v);
    void sync_dataplane();
    void publish();
    void expire_waiters();
    void finish_waiters(uint64_t up_to_seq, const Applied& a);  // takes mu_
    void update_metrics();
    void update_ha();  // faults from the dataplane and the tracked services
    void wake();
    PublishStatus publish_status() const;  // under mu_
    // Operator overrides (admin.state_file): read once at start, written on every change.
    void load_state();           // at start, under mu_: applies the file's overrides to the model
    Overrides overrides() const;  // under mu_: the model's overrides, by server key
    std::string persist_state();  // takes state_mu_ then mu_; writes if changed; returns the error

    mutable std::mutex mu_;  // guards everything below but the link's own state
    Config cfg_;
    Model model_;
    IdAllocator slots_{FL_MAX_SERVERS};
    IdAllocator service_ids_{FL_MAX_SERVICES};
    // Publishing: every model change takes the next sequence number; a generation carries
    // the sequence it was built at; the dataplane's acknowledgement applies it.
    uint64_t change_seq_ = 1;      // the model as it is now
    uint64_t applied_seq_ = 0;     // contained in the generation the dataplane runs
    uint64_t in_flight_seq_ = 0;   // contained in the generation on its way (0 = none)
    uint64_t in_flight_gen_ = 0;
    uint64_t unbuildable_seq_ = 0; // the model at this sequence cannot become a snapshot
    bool republish_ = false;       // the dataplane runs something else: send ours again
    uint64_t published_gen_ = 0;
    uint64_t publishes_ = 0, publish_errors_ = 0, reloads_ = 0, reload_errors_ = 0;
    std::string last_publish_error_;
    std::string last_reload_error_;
    std::vector<Waiter> waiters_;
    std::chrono::steady_clock::time_point started_;
    std::chrono::steady_clock::time_point checks_deadline_;
    bool first_publish_done_ = false;
    bool stopping_ = false;
    // Health held while fulcrumd's own path through the dataplane (fl0) was away: per server,
    // the checker's failure count when the dataplane came back.
    std::map<std::string, uint64_t> held_failures_at_return_;
    bool health_pending_ = false;  // down verdicts wait for settle_health()
    int64_t adopted_pid_ = -1;
    bool adopted_any_ = false;

    // The state file: writes are serialised by state_mu_ (taken before mu_, never inside it)
    // so that an older set of overrides is never written over a newer one.
    mutable std::mutex state_mu_;
    std::unique_ptr<StateFile> state_file_;  // under state_mu_
    Overrides state_saved_;                  // under state_mu_: what the file holds
    std::string state_error_;                // under state_mu_: the last load or write problem
    bool state_write_failed_ = false;        // under state_mu_: the last write failed (retried)

    std::thread reload_thread_;  // SIGHUP reloads run here, not on the main loop
    std::atomic<bool> reloading_{false};

    int wake_fd_ = -1;
    std::unique_ptr<DataplaneLink> link_;
    std::unique_ptr<HaNode> ha_;
    std::unique_ptr<CtlSyncDataplane> sync_dp_;
    std::unique_ptr<SyncPeer> sync_;
    // Preemption held until the first publish (the servers' health known) and, with sync,
    // the first bulk sync completed; hold_set_: what HaNode was last told.
    static constexpr const char* kHoldPublish = "waiting for the first publish of the servers' health";
    static constexpr const char* kHoldSync = "waiting for the bulk connection sync from the peer";
    bool publish_hold_ = false;
    bool sync_hold_ = false;
    bool hold_set_ = true;
    // The services whose "no server up" faults HaNode was told about (ha.track_services
    // follows reloads: a name dropped from it has its fault cleared).
    std::set<std::string> tracked_;
    std::unique_ptr<XdpFront> xdp_;  // `xdp:` configured
    std::unique_ptr<NeighborResolver> neighbors_;
    std::unique_ptr<HealthChecker> health_;
    std::unique_ptr<Metrics> metrics_;
    std::unique_ptr<AdminApi> api_;
    std::unique_ptr<AdminServer> admin_;
};

}  // namespace fulcrum::control
