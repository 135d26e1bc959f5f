#include "fulcrum/control/publisher.hpp"

#include <algorithm>
#include <stdexcept>

namespace fulcrum::control {

std::string server_key(const std::string& service, const IpAddr& addr, uint16_t port) {
    const std::string a = addr.is_v6() ? "[" + addr.str() + "]" : addr.str();
    return service + "/" + a + ":" + std::to_string(port);
}

uint32_t IdAllocator::assign(const std::string& key) {
    if (auto it = ids_.find(key); it != ids_.end()) return it->second;
    uint32_t id;
    while (next_ < limit_ && used_.count(next_)) ++next_;
    if (next_ < limit_) {
        id = next_++;
    } else {
        auto it = std::find_if(released_.begin(), released_.end(), [&](uint32_t r) { return !used_.count(r); });
        if (it == released_.end())
            throw std::runtime_error("no free id for " + key + ": all " + std::to_string(limit_) + " are in use");
        id = *it;
        released_.erase(it);
    }
    ids_[key] = id;
    used_.insert(id);
    return id;
}

std::optional<uint32_t> IdAllocator::find(const std::string& key) const {
    auto it = ids_.find(key);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
}

void IdAllocator::release(const std::string& key) {
    auto it = ids_.find(key);
    if (it == ids_.end()) return;
    used_.erase(it->second);
    released_.push_back(it->second);
    ids_.erase(it);
}

void IdAllocator::adopt(const std::string& key, uint32_t id) {
    if (id >= limit_ || ids_.count(key) || used_.count(id)) return;
    ids_[key] = id;
    used_.insert(id);
}

const char* server_state_name(ServerState s) {
    switch (s) {
        case ServerState::up: return "up";
        case ServerState::down: return "down";
        case ServerState::draining: return "draining";
        case ServerState::disabled: return "disabled";
        case ServerState::retired: return "retired";
    }
    return "?";
}

ServerState ServerModel::state() const {
    if (retired) return ServerState::retired;
    if (!enabled()) return ServerState::disabled;
    if (!healthy()) return ServerState::down;
    if (weight() == 0) return ServerState::draining;
    return ServerState::up;
}

std::string ServerModel::reason() const {
    switch (state()) {
        case ServerState::up: return "";
        case ServerState::retired: return "removed from the configuration; serving its existing connections";
        case ServerState::disabled:
            return admin_disabled ? "disabled by the operator" : "disabled in the configuration";
        case ServerState::draining: return "weight 0: existing connections only";
        case ServerState::down:
            if (!health_up) return health_checked ? health_reason : "not checked yet";
            return l2_reason.empty() ? "unresolved" : l2_reason;
    }
    return "";
}

SnapshotSpec make_snapshot_spec(const Model& m, uint64_t generation, IdAllocator& slots,
                                IdAllocator& service_ids) {
    SnapshotSpec spec;
    spec.generation = generation;
    if (m.config) {
        spec.hash_seed = m.config->hash_seed;
        spec.mtu = m.config->mtu;
        spec.encap = m.config->encap;
    }
    for (const ServiceModel& svc : m.services) {
        ServiceSpec s;
        s.id = service_ids.assign(svc.cfg.name);
        s.name = svc.cfg.name;
        s.vip = svc.cfg.vip;
        s.port = svc.cfg.port;
        s.proto = svc.cfg.proto;
        s.scheduler = svc.cfg.scheduler;
        s.forwarding = svc.cfg.forwarding;
        s.table_size = svc.cfg.table_size;
        for (const std::string& key : svc.servers) {
            auto it = m.servers.find(key);
            if (it == m.servers.end()) continue;
            const ServerModel& sm = it->second;
            ServerSpec out;
            out.slot = slots.assign(key);
            out.addr = sm.cfg.address;
            out.port = sm.port;
            // While unresolved the server takes no new connections, but the connections it
            // has keep reaching its last known MAC.
            if (sm.mac)
                out.mac = *sm.mac;
            else if (sm.last_mac)
                out.mac = *sm.last_mac;
            out.weight = sm.weight();
            out.backup = sm.cfg.backup;
            out.healthy = sm.healthy();
            out.enabled = sm.enabled();
            out.retired = sm.retired;
            s.servers.push_back(out);
        }
        spec.services.push_back(std::move(s));
    }
    return spec;
}

}  // namespace fulcrum::control
