// From fulcrumd's view of the world (configuration, health, reachability, operator
// overrides) to a forwarding snapshot. Pure logic: no I/O, so it is unit-tested directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fulcrum/control/config.hpp"
#include "fulcrum/snapshot.hpp"

namespace fulcrum::control {

// "service/address:port", with IPv6 addresses in brackets: the identity of a server across
// reloads, restarts and both balancers.
std::string server_key(const std::string& service, const IpAddr& addr, uint16_t port);

// Stable small integers for keys: a key keeps its number while it exists; a released number
// is reused only after every never-used one (so a slot is not handed to another server while
// connections to the previous one may linger in the dataplane; tags catch the rest).
class IdAllocator {
public:
    explicit IdAllocator(uint32_t limit) : limit_(limit) {}
    // The key's number, assigning the lowest free one. Throws std::runtime_error when full.
    uint32_t assign(const std::string& key);
    std::optional<uint32_t> find(const std::string& key) const;
    void release(const std::string& key);
    // Takes over assignments (from the dataplane's running snapshot) for keys not yet known.
    void adopt(const std::string& key, uint32_t id);
    const std::map<std::string, uint32_t>& assigned() const { return ids_; }

private:
    uint32_t limit_;
    std::map<std::string, uint32_t> ids_;
    std::set<uint32_t> used_;
    std::vector<uint32_t> released_;  // FIFO: reused last
    uint32_t next_ = 0;
};

enum class ServerState { up, down, draining, disabled, retired };
const char* server_state_name(ServerState s);

struct ServerModel {
    std::string service;
    ServerConfig cfg;             // as configured (for retired servers: the last configuration)
    uint16_t port = 0;            // effective port
    std::string key;
    // health
    bool health_up = false;
    bool health_checked = false;
    std::string health_reason;
    double check_latency_ms = 0;
    uint64_t checks_ok = 0, checks_failed = 0;
    // The checker says down, but its checks ran while fulcrumd's path through the dataplane
    // was away: health_up keeps the last state until checks can run again.
    bool health_held = false;
    bool health_down_pending = false;  // a down verdict the main loop has not settled yet
    // reachability
    std::optional<MacAddr> mac;       // resolved now
    std::optional<MacAddr> last_mac;  // last resolved: established connections keep using it
    std::string l2_reason;
    // operator overrides (survive reloads while the server exists)
    std::optional<uint32_t> weight_override;
    bool admin_disabled = false;
    // removed from the configuration: kept for its established connections until expiry
    bool retired = false;
    std::chrono::steady_clock::time_point retired_at{};

    uint32_t weight() const { return weight_override ? *weight_override : cfg.weight; }
    bool enabled() const { return cfg.enabled && !admin_disabled; }
    bool healthy() const { return health_up && mac.has_value(); }
    ServerState state() const;
    std::string reason() const;  // why it is not up ("" when up)
};

struct ServiceModel {
    ServiceConfig cfg;
    std::vector<std::string> servers;  // keys, configured order, then retired ones
};

struct Model {
    const Config* config = nullptr;
    std::vector<ServiceModel> services;        // configuration order
    std::map<std::string, ServerModel> servers;  // by key
};

// Builds the snapshot of `m`, assigning slots and service ids through the allocators.
// Throws std::invalid_argument (from the snapshot builder) if the model is inconsistent.
SnapshotSpec make_snapshot_spec(const Model& m, uint64_t generation, IdAllocator& slots,
                                IdAllocator& service_ids);

}  // namespace fulcrum::control
