#include "fulcrum/dp_counters.hpp"

#include <algorithm>

namespace fulcrum {

namespace {

template <class T>
void read_field(const nlohmann::json& j, const char* key, T& out) {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null()) it->get_to(out);
}

}  // namespace

#define FULCRUM_X_TO(type, name) j[#name] = c.name;
#define FULCRUM_X_FROM(type, name) read_field(j, #name, c.name);
#define FULCRUM_JSON_MAPPING(Type, LIST)                                   \
    void to_json(nlohmann::json& j, const Type& c) {                       \
        j = nlohmann::json::object();                                      \
        LIST(FULCRUM_X_TO)                                                 \
    }                                                                      \
    void from_json(const nlohmann::json& j, Type& c) {                     \
        c = Type{};                                                        \
        LIST(FULCRUM_X_FROM)                                               \
    }

FULCRUM_JSON_MAPPING(QueueCounters, FULCRUM_QUEUE_COUNTERS)
FULCRUM_JSON_MAPPING(ConnTableCounters, FULCRUM_CONNTABLE_COUNTERS)
FULCRUM_JSON_MAPPING(PortCounters, FULCRUM_PORT_COUNTERS)
FULCRUM_JSON_MAPPING(ServiceTraffic, FULCRUM_SERVICE_COUNTERS)
FULCRUM_JSON_MAPPING(ServerTraffic, FULCRUM_SERVER_COUNTERS)

#define FULCRUM_DATAPLANE_COUNTERS(X)                                                        \
    X(uint64_t, generation) X(uint64_t, tsc_hz) X(uint64_t, rx) X(uint64_t, forwarded)       \
    X(uint64_t, replied) X(uint64_t, to_kernel) X(uint64_t, dropped) X(uint64_t, too_big_replies) \
    X(_, drops)                                                                                \
    X(_, sync_exported) X(_, sync_export_ring_full) X(_, sync_installed)                       \
    X(_, sync_install_ring_full) X(_, sync_install_table_full) X(_, sync_install_unknown)      \
    X(_, sync_install_invalid) X(_, sync_install_expired) X(_, sync_removed)                   \
    X(_, queues) X(_, conntables) X(_, ports) X(_, services) X(_, servers)

FULCRUM_JSON_MAPPING(DataplaneCounters, FULCRUM_DATAPLANE_COUNTERS)

#undef FULCRUM_JSON_MAPPING
#undef FULCRUM_X_FROM
#undef FULCRUM_X_TO

std::string DataplaneCounters::server_key(const ServerTraffic& s) {
    const bool v6 = s.address.find(':') != std::string::npos;
    return s.service + "/" + (v6 ? "[" + s.address + "]" : s.address) + ":" + std::to_string(s.port);
}

const ServerTraffic* DataplaneCounters::find_server(const std::string& key) const {
    auto it = std::find_if(servers.begin(), servers.end(), [&](const ServerTraffic& s) { return server_key(s) == key; });
    return it == servers.end() ? nullptr : &*it;
}

std::unordered_map<std::string, const ServerTraffic*> DataplaneCounters::servers_by_key() const {
    std::unordered_map<std::string, const ServerTraffic*> m;
    m.reserve(servers.size());
    for (const ServerTraffic& s : servers) m.emplace(server_key(s), &s);
    return m;
}

const ServiceTraffic* DataplaneCounters::find_service(const std::string& n) const {
    auto it = std::find_if(services.begin(), services.end(), [&](const ServiceTraffic& s) { return s.name == n; });
    return it == services.end() ? nullptr : &*it;
}

}  // namespace fulcrum
