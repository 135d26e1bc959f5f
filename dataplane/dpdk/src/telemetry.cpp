// DPDK telemetry commands, readable with dpdk-telemetry.py (-f FILE_PREFIX):
//   /fulcrum/stats     totals, connection sync counters and drops by reason
//   /fulcrum/services  per service counters
//   /fulcrum/servers   per server counters, keyed SERVICE_slotN (optionally: ,SERVICE_NAME)
//   /fulcrum/ports     port counters
//   /fulcrum/health    process health
#include <rte_telemetry.h>

#include <cctype>
#include <mutex>
#include <string>

#include "fulcrum/dpdk/dataplane.hpp"

namespace fulcrum::dpdk {

namespace {
std::mutex g_mu;
Dataplane* g_dp = nullptr;
bool g_registered = false;

// Adds a JSON scalar to a telemetry dict.
void add_value(rte_tel_data* d, const std::string& key, const nlohmann::json& v) {
    if (v.is_number_unsigned())
        rte_tel_data_add_dict_u64(d, key.c_str(), v.get<uint64_t>());
    else if (v.is_number_integer())
        rte_tel_data_add_dict_int(d, key.c_str(), static_cast<int>(v.get<int64_t>()));
    else if (v.is_boolean())
        rte_tel_data_add_dict_u64(d, key.c_str(), v.get<bool>() ? 1 : 0);
    else if (v.is_string())
        rte_tel_data_add_dict_string(d, key.c_str(), v.get<std::string>().c_str());
}

// Telemetry names may only hold letters, digits and '_' (DPDK refuses others silently).
std::string tel_name(const std::string& in) {
    std::string out = in;
    for (char& c : out)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    return out;
}

// A dict of dicts: one container per array element, named by `key_of`.
template <class KeyOf>
void add_table(rte_tel_data* d, const nlohmann::json& arr, KeyOf key_of, const std::string& filter = {}) {
    rte_tel_data_start_dict(d);
    unsigned n = 0;
    for (const auto& e : arr) {
        if (!filter.empty() && e.value("service", "") != filter && e.value("name", "") != filter) continue;
        if (++n > RTE_TEL_MAX_DICT_ENTRIES) break;
        rte_tel_data* c = rte_tel_data_alloc();
        if (!c) break;
        rte_tel_data_start_dict(c);
        for (auto it = e.begin(); it != e.end(); ++it) add_value(c, it.key(), it.value());
        if (rte_tel_data_add_dict_container(d, tel_name(key_of(e)).c_str(), c, 0) != 0) rte_tel_data_free(c);
    }
}

int cmd_stats(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (!g_dp) return -1;
    const DataplaneCounters c = g_dp->counters();
    rte_tel_data_start_dict(d);
    for (const auto& [k, v] : {std::pair<const char*, uint64_t>{"rx", c.rx}, {"forwarded", c.forwarded}, {"replied", c.replied},
                               {"to_kernel", c.to_kernel}, {"dropped", c.dropped}, {"generation", c.generation},
                               {"sync_exported", c.sync_exported}, {"sync_export_ring_full", c.sync_export_ring_full},
                               {"sync_installed", c.sync_installed}, {"sync_install_ring_full", c.sync_install_ring_full},
                               {"sync_install_table_full", c.sync_install_table_full},
                               {"sync_install_unknown", c.sync_install_unknown},
                               {"sync_install_invalid", c.sync_install_invalid},
                               {"sync_install_expired", c.sync_install_expired}, {"sync_removed", c.sync_removed}})
        add_value(d, k, v);
    for (const auto& [reason, n] : c.drops) add_value(d, "drop_" + reason, n);
    return 0;
}

int cmd_services(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (!g_dp) return -1;
    add_table(d, nlohmann::json(g_dp->counters().services), [](const nlohmann::json& e) { return e["name"].get<std::string>(); });
    return 0;
}

int cmd_servers(const char*, const char* params, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (!g_dp) return -1;
    add_table(
        d, nlohmann::json(g_dp->counters().servers),
        [](const nlohmann::json& e) {
            return e["service"].get<std::string>() + "_slot" + std::to_string(e["slot"].get<unsigned>());
        },
        params ? params : "");
    return 0;
}

int cmd_ports(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (!g_dp) return -1;
    add_table(d, nlohmann::json(g_dp->counters().ports), [](const nlohmann::json& e) { return e["role"].get<std::string>(); });
    return 0;
}

int cmd_health(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (!g_dp) return -1;
    const auto h = g_dp->health();
    rte_tel_data_start_dict(d);
    for (auto it = h.begin(); it != h.end(); ++it) add_value(d, it.key(), it.value());
    return 0;
}
}  // namespace

void register_telemetry(Dataplane* dp) {
    std::lock_guard lk(g_mu);
    g_dp = dp;
    if (g_registered) return;
    g_registered = true;
    rte_telemetry_register_cmd("/fulcrum/stats", cmd_stats, "Fulcrum totals and drops by reason. No parameters");
    rte_telemetry_register_cmd("/fulcrum/services", cmd_services, "Fulcrum per-service counters. No parameters");
    rte_telemetry_register_cmd("/fulcrum/servers", cmd_servers,
                               "Fulcrum per-server counters. Parameter: optional service name");
    rte_telemetry_register_cmd("/fulcrum/ports", cmd_ports, "Fulcrum port counters. No parameters");
    rte_telemetry_register_cmd("/fulcrum/health", cmd_health, "Fulcrum dataplane health. No parameters");
}

void unregister_telemetry() {
    std::lock_guard lk(g_mu);
    g_dp = nullptr;
}

}  // namespace fulcrum::dpdk
