// fulcrumd's side of the active-passive pair: the exception interface (fl0) and, with an `ha:`
// section, VRRPv3 over it (docs/architecture.md, "Failover").
//
// One thread of its own runs everything here, so that neither the main loop (which waits on
// publishes) nor the admin server can delay an advert or a lease renewal:
// - the interface: finds it (the dataplane recreates it, with a new index, every time it
//   starts), keeps the configured host addresses on it, and the VIPs while this node owns them
//   (always without `ha:`; as VRRP master with it). Addresses go through rtnetlink, IPv6 ones
//   without duplicate address detection so that they answer at once.
// - one VRRP router per address family that has VIPs (vrrp::Router), its adverts sent and
//   received on a raw socket bound to the interface: they leave through the dataplane, so a
//   stuck dataplane silences them and the peer takes over.
// - the dataplane's fencing lease (control-socket op `ha`, over a connection of its own): while
//   master it is renewed with every advert, so if fulcrumd dies the dataplane stops answering
//   for the VIPs within the lease; as backup the dataplane is told `standby`.
// - gratuitous ARP / unsolicited NA for the VIPs: a burst on becoming master, the burst again
//   after garp.repeat_delay, and whenever a lower-priority master is heard (a healed split).
// Faults (dataplane unreachable, interface missing or down, uplink down, a tracked service with
// no server up, an operator release) make a master resign with a priority-0 advert.
//
// The public methods may be called from any thread: they queue a command for the HA thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fulcrum/addr.hpp"
#include "fulcrum/control/config.hpp"

namespace fulcrum::control {

// What `fulcrumctl ha` and the metrics show. All counters count since fulcrumd started.
struct HaStatus {
    bool ha = false;  // VRRP configured (else: standalone, the interface is only kept)
    std::string interface;
    bool interface_present = false;
    // "master", "backup", "initialize" (not started, or no interface yet), "fault" (a fault
    // keeps it out of master), "standalone" (no ha: section).
    std::string state = "initialize";
    uint8_t vrid = 0;
    uint8_t priority = 0;             // what our adverts carry now
    uint8_t configured_priority = 0;
    std::string master;               // the master as far as this node knows ("" unknown)
    uint8_t master_priority = 0;
    std::vector<std::string> faults;
    bool held = false;                // preemption held (bulk sync not complete)
    std::string hold_reason;
    std::string operator_override;    // "", "takeover" or "release"
    std::string last_from, last_to, last_reason;
    int64_t last_ago_ms = -1;         // -1: no transition yet
    std::vector<std::string> vips;    // the VIPs this node announces (all families)
    bool vips_on_interface = false;   // they are on the interface now
    bool lease_active = false;        // the dataplane was last told "active"
    std::string lease_error;          // last failure to reach the dataplane ("" none)
    uint64_t transitions = 0, became_master = 0, left_master = 0;
    uint64_t adverts_sent = 0, adverts_received = 0, adverts_invalid = 0;
    uint64_t priority_zero_sent = 0, priority_zero_received = 0;
    uint64_t split_heals = 0, garp_sent = 0, na_sent = 0;
    uint64_t lease_renewals = 0, lease_errors = 0;
    uint64_t send_errors = 0, interface_changes = 0, address_errors = 0;
    // Invalid adverts by decode error name (vrrp::to_string(DecodeError)).
    std::vector<std::pair<std::string, uint64_t>> invalid_by_reason;
};

class HaNode {
public:
    // `cfg` (validated by the configuration loader) must have an `interface:` or an `ha:`
    // section.
    HaNode(const Config& cfg, std::vector<IpAddr> vips);
    ~HaNode();  // stop(false) if still running
    HaNode(const HaNode&) = delete;
    HaNode& operator=(const HaNode&) = delete;

    void start();
    // Stops the thread. clean: a master resigns (priority-0 advert, so that the peer takes over
    // after its skew time), the dataplane is told standby and the VIPs leave the interface.
    // Not clean (fulcrumd is being replaced in place): nothing is announced; the lease runs out.
    void stop(bool clean);

    // The VIPs of the running configuration (reload, services added or removed).
    void set_vips(std::vector<IpAddr> vips);
    // Sets or clears a named fault ("uplink", "no server up in web", ...).
    void set_fault(const std::string& source, bool active);
    // Holds preemption (until the bulk connection sync is complete).
    void set_hold(bool on, const std::string& reason);
    // Operator maintenance: takeover (priority 254 and preemption: this node becomes master),
    // release (a fault: leaves master and stays backup), resume (the configured behaviour).
    // Each returns the status once the HA thread has applied it (or after 2 s).
    HaStatus takeover();
    HaStatus release();
    HaStatus resume();

    HaStatus status() const;
    const HaConfig& config() const { return cfg_.ha; }

    struct Impl;  // the HA thread's state (ha_node.cpp)

private:
    uint64_t post(std::function<void(Impl&)> cmd);  // returns the command's number
    HaStatus wait_applied(uint64_t cmd);
    void run();

    Config cfg_;
    std::unique_ptr<Impl> impl_;
    std::thread thread_;
    mutable std::mutex mu_;  // guards cmds_ and status_
    std::vector<std::function<void(Impl&)>> cmds_;
    uint64_t posted_ = 0, applied_ = 0;  // commands queued / run by the HA thread
    std::condition_variable applied_cv_;
    HaStatus status_;
    int wake_fd_ = -1;
    std::atomic<bool> stop_{false};
    bool clean_stop_ = false;
};

}  // namespace fulcrum::control
