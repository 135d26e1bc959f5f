// fulcrumd's link to the dataplane's control socket: connects (announcing itself as the
// controller, which the dataplane keeps a slot for), watches the dataplane's health, fetches
// its counters, reads the running snapshot for adoption and publishes snapshots.
//
// Threads: poll(), running_snapshot() and publish() belong to the main loop thread (the
// connection is not shared). status(), counters() and fetch_counters() may be called from any
// thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum/dp_counters.hpp"
#include "fulcrum/expected.hpp"

namespace fulcrum::control {

struct DataplaneStatus {
    std::string socket;
    bool connected = false;
    int64_t pid = -1;
    uint64_t generation = 0;  // the generation the dataplane runs (0 = none)
    std::string error;        // why not connected ("" when connected)
    // The dataplane's control-socket refusals by reason (health "control.refused").
    std::map<std::string, uint64_t> control_refused;
    bool uplink_link_up = true;  // the dataplane's uplink port has link
    // When the dataplane process we talk to started (from its uptime).
    std::chrono::steady_clock::time_point up_since{};
};

class DataplaneLink {
public:
    explicit DataplaneLink(std::string socket);
    ~DataplaneLink();
    DataplaneLink(const DataplaneLink&) = delete;
    DataplaneLink& operator=(const DataplaneLink&) = delete;

    // Points the link at another socket; it reconnects on the next poll(). Any thread.
    void set_socket(const std::string& socket);

    // Main loop: connects if needed, reads health and counters. Returns the status; a
    // transport error drops the connection (the next poll reconnects).
    DataplaneStatus poll();
    // Main loop: the dataplane's running snapshot (for adoption), or nothing.
    std::optional<std::vector<uint8_t>> running_snapshot();
    // Main loop: sends a snapshot and waits for the dataplane's answer. The dataplane answers
    // after every worker runs the new generation, so success means "applied". The error says
    // why (refused by the dataplane: its reason; transport: the dataplane went away).
    Expected<uint64_t> publish(const std::vector<uint8_t>& bytes);

    // Any thread.
    DataplaneStatus status() const;
    // The counters of the last poll (null while the dataplane is unreachable).
    std::shared_ptr<const DataplaneCounters> counters() const;
    // Fresh counters over a connection of its own (the admin thread), falling back to the
    // last poll's.
    std::shared_ptr<const DataplaneCounters> fetch_counters();

private:
    void drop_connection(const std::string& why);
    Expected<ctl::Client> connect_controller(const std::string& socket, std::chrono::milliseconds timeout);

    std::optional<ctl::Client> client_;  // main loop only
    mutable std::mutex mu_;              // guards the members below
    DataplaneStatus st_;
    bool reconnect_ = false;
    std::shared_ptr<const DataplaneCounters> counters_;
};

}  // namespace fulcrum::control
