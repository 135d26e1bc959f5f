// `fulcrumctl counters --reset` (ipvsadm --zero) without resetting anything Prometheus reads:
// the admin views show each counter minus its value at the last reset. Nothing at the source
// changes, so /metrics stays monotonic.
//
// Every counter a view shows is named by a CounterKey: its source (the dataplane, fulcrumd's
// health checks, publishing, failover, sync, the XDP front), the service it belongs to ("" for
// host-wide counters) and its name. The visit_counters() functions list a source's counters
// and let a visitor read or adjust each; the baseline uses them both to take the reset values
// and to subtract them from the copies the views print.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "fulcrum/control/ha_node.hpp"
#include "fulcrum/control/publisher.hpp"
#include "fulcrum/control/sync_peer.hpp"
#include "fulcrum/control/xdp_front.hpp"
#include "fulcrum/dp_counters.hpp"

namespace fulcrum::control {

struct CounterKey {
    std::string source;   // "dataplane", "health", "fulcrumd", "ha", "sync", "xdp"
    std::string service;  // "" : not a service's counter (reset only with every counter)
    std::string name;     // e.g. "server web/198.18.0.11:80 packets"
    auto operator<=>(const CounterKey&) const = default;
};

using CounterVisitor = std::function<void(const CounterKey&, uint64_t&)>;

// fulcrumd's own counters shown by `status`.
struct FulcrumdCounters {
    uint64_t publishes = 0, publish_errors = 0, reloads = 0, reload_errors = 0;
};

// Each calls `f` on every counter of the source (not on gauges: active connections, pending
// records, latencies stay as they are).
void visit_counters(DataplaneCounters& c, const CounterVisitor& f);  // services' and servers' traffic
void visit_counters(Model& m, const CounterVisitor& f);              // health checks per server
void visit_counters(FulcrumdCounters& c, const CounterVisitor& f);
void visit_counters(HaStatus& h, const CounterVisitor& f);
void visit_counters(SyncPeerStats& s, const CounterVisitor& f);
void visit_counters(XdpStatus& x, const CounterVisitor& f);

class CounterBaseline {
public:
    using Clock = std::chrono::steady_clock;

    // What a reset did: how many counters (by source) now count from zero.
    struct Result {
        size_t counters = 0;
        std::map<std::string, size_t> by_source;
    };
    // Takes the values `visit` reports as the new zero: every counter (service ""), or those of
    // one service. `visit` calls the visitor on the current counters (the visit_counters of
    // each source available now).
    Result reset(const std::function<void(const CounterVisitor&)>& visit, const std::string& service,
                 Clock::time_point now = Clock::now(),
                 std::chrono::system_clock::time_point wall = std::chrono::system_clock::now());

    // A source's identity now (the dataplane's pid, the XDP program's id): when it differs
    // from the one seen before, the source restarted and its counters count from zero, so
    // their reset values are dropped. "" : unknown now (unreachable), nothing is concluded.
    void observe(const std::string& source, const std::string& identity, Clock::time_point now = Clock::now());

    // The visitor the views apply to their copies: value - value at the reset. A value below
    // its reset value means the counter restarted from zero since (the identity change was
    // missed, or the source restarts its counters on its own): it is shown as it is, its reset
    // value becomes 0 and the restart is reported (restarted()).
    CounterVisitor subtract(Clock::time_point now = Clock::now());

    // Milliseconds since the last reset covering `service`'s counters (every counter for
    // service ""), or nullopt if none.
    std::optional<int64_t> reset_ago_ms(const std::string& service, Clock::time_point now = Clock::now()) const;
    // The reset covering `service` ("" : every counter) as {"at", "ago_ms"}, or null.
    nlohmann::json reset_json(const std::string& service, Clock::time_point now = Clock::now()) const;
    // The `counters` request's reply (without "ok").
    nlohmann::json describe(Clock::time_point now = Clock::now()) const;

private:
    struct When {
        Clock::time_point at;
        std::chrono::system_clock::time_point wall;
    };
    struct Restart {
        size_t counters = 0;
        std::string why;
        Clock::time_point at;
    };
    std::optional<When> covering(const std::string& service) const;  // under mu_
    nlohmann::json when_json(const When& w, Clock::time_point now) const;
    void rebase(const std::string& source, const std::string& why, Clock::time_point now);  // under mu_

    mutable std::mutex mu_;
    std::map<CounterKey, uint64_t> base_;
    std::optional<When> all_;                 // the last reset of every counter
    std::map<std::string, When> services_;    // later resets of one service
    std::optional<std::pair<std::string, When>> last_;  // the latest reset: its scope ("" all)
    std::map<std::string, std::string> identity_;  // source -> identity last seen
    std::map<std::string, Restart> restarts_;      // source -> counters re-based since a reset
};

}  // namespace fulcrum::control
