// The dataplane's counters as they cross the control socket (the `counters` op): one typed
// structure and its one JSON mapping. The dataplane fills it, fulcrumd reads it for its admin
// views and Prometheus metrics, fulcrumctl shows it, DPDK telemetry serves it. Every field is
// declared once, in the field lists below; to_json/from_json are generated from them, so a
// field cannot be written under one name and read under another.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace fulcrum {

// X(type, name): the JSON key is the field name.
#define FULCRUM_QUEUE_COUNTERS(X)                                                             \
    X(uint32_t, queue) X(uint32_t, lcore) X(uint64_t, rx) X(uint64_t, forwarded)              \
    X(uint64_t, replied) X(uint64_t, to_kernel) X(uint64_t, dropped) X(uint64_t, uplink_tx)    \
    X(uint64_t, kernel_rx) X(uint64_t, kernel_rx_dropped) X(uint64_t, kernel_tx)                \
    X(uint64_t, fragments) X(uint64_t, polls) X(uint64_t, busy_polls) X(uint64_t, busy_cycles)

#define FULCRUM_CONNTABLE_COUNTERS(X)                                                         \
    X(uint32_t, queue) X(uint64_t, capacity) X(uint64_t, entries) X(uint64_t, inserts)         \
    X(uint64_t, evictions) X(uint64_t, expired) X(uint64_t, full)

#define FULCRUM_PORT_COUNTERS(X)                                                              \
    X(std::string, name) X(std::string, role) X(uint32_t, port) X(bool, link_up)               \
    X(uint32_t, speed_mbps) X(uint64_t, rx_packets) X(uint64_t, tx_packets)                    \
    X(uint64_t, rx_bytes) X(uint64_t, tx_bytes) X(uint64_t, rx_missed) X(uint64_t, rx_errors)  \
    X(uint64_t, tx_errors) X(uint64_t, rx_nombuf)

#define FULCRUM_SERVICE_COUNTERS(X)                                                           \
    X(uint32_t, id) X(std::string, name) X(std::string, vip) X(uint32_t, port)                 \
    X(std::string, protocol) X(std::string, scheduler) X(std::string, forwarding)              \
    X(uint64_t, packets) X(uint64_t, bytes) X(uint64_t, new_connections)

#define FULCRUM_SERVER_COUNTERS(X)                                                            \
    X(uint32_t, slot) X(std::string, service) X(std::string, address) X(uint32_t, port)        \
    X(uint32_t, weight) X(bool, in_rotation) X(uint64_t, packets) X(uint64_t, bytes)            \
    X(uint64_t, new_connections) X(uint64_t, active_connections)                               \
    X(uint64_t, inactive_connections)

#define FULCRUM_X_FIELD(type, name) type name{};
struct QueueCounters {
    FULCRUM_QUEUE_COUNTERS(FULCRUM_X_FIELD)
};
struct ConnTableCounters {
    FULCRUM_CONNTABLE_COUNTERS(FULCRUM_X_FIELD)
};
struct PortCounters {
    FULCRUM_PORT_COUNTERS(FULCRUM_X_FIELD)
};
struct ServiceTraffic {
    FULCRUM_SERVICE_COUNTERS(FULCRUM_X_FIELD)
};
struct ServerTraffic {
    FULCRUM_SERVER_COUNTERS(FULCRUM_X_FIELD)
};
#undef FULCRUM_X_FIELD

// Totals count every received frame once in rx and once in exactly one of forwarded,
// replied, to_kernel and dropped; dropped is the sum of drops (by reason name, drop.hpp).
struct DataplaneCounters {
    uint64_t generation = 0;  // of the snapshot the dataplane runs; 0 = none
    uint64_t tsc_hz = 0;      // the TSC's rate: queues' busy_cycles over it are seconds
    uint64_t rx = 0, forwarded = 0, replied = 0, to_kernel = 0, dropped = 0, too_big_replies = 0;
    // Connection sync (docs/control-protocol.md, "Connection sync counters"), summed over the
    // workers; the install-side refusals before a worker sees a record (invalid, unknown
    // server, install ring full) are counted by the control thread.
    uint64_t sync_exported = 0, sync_export_ring_full = 0, sync_installed = 0,
             sync_install_ring_full = 0, sync_install_table_full = 0, sync_install_unknown = 0,
             sync_install_invalid = 0, sync_install_expired = 0, sync_removed = 0;
    std::map<std::string, uint64_t> drops;
    std::vector<QueueCounters> queues;
    std::vector<ConnTableCounters> conntables;
    std::vector<PortCounters> ports;
    std::vector<ServiceTraffic> services;
    std::vector<ServerTraffic> servers;

    // "service/address:port" ("service/[v6]:port"), the key fulcrumd gives its servers.
    static std::string server_key(const ServerTraffic& s);
    // The server with that key, or null (a scan: for one lookup).
    const ServerTraffic* find_server(const std::string& key) const;
    // Every server by its key, for views that look up many (built once per use).
    std::unordered_map<std::string, const ServerTraffic*> servers_by_key() const;
    const ServiceTraffic* find_service(const std::string& name) const;
};

void to_json(nlohmann::json& j, const QueueCounters& c);
void from_json(const nlohmann::json& j, QueueCounters& c);
void to_json(nlohmann::json& j, const ConnTableCounters& c);
void from_json(const nlohmann::json& j, ConnTableCounters& c);
void to_json(nlohmann::json& j, const PortCounters& c);
void from_json(const nlohmann::json& j, PortCounters& c);
void to_json(nlohmann::json& j, const ServiceTraffic& c);
void from_json(const nlohmann::json& j, ServiceTraffic& c);
void to_json(nlohmann::json& j, const ServerTraffic& c);
void from_json(const nlohmann::json& j, ServerTraffic& c);
// from_json throws nlohmann::json::exception on a field of the wrong type; missing fields
// keep their defaults (an older dataplane that lacks a counter reads as 0).
void to_json(nlohmann::json& j, const DataplaneCounters& c);
void from_json(const nlohmann::json& j, DataplaneCounters& c);

}  // namespace fulcrum
