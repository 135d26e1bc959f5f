#include "fulcrum/control/admin_api.hpp"

#include <optional>

#include "fulcrum/control/admin_request.hpp"
#include "fulcrum/control/daemon.hpp"

namespace fulcrum::control {

using nlohmann::json;

namespace {

json error(const std::string& m) { return {{"ok", false}, {"error", m}}; }

json publish_json(const PublishStatus& p) {
    return {{"state", p.state},
            {"applied_generation", p.applied_generation},
            {"in_flight_generation", p.in_flight_generation ? json(p.in_flight_generation) : json(nullptr)},
            {"changes_pending", p.changes_pending}};
}

}  // namespace

namespace {

json ha_json(const HaStatus& h) {
    json invalid = json::object();
    for (const auto& [k, n] : h.invalid_by_reason) invalid[k] = n;
    json j = {{"ha", h.ha},
              {"state", h.state},
              {"interface", h.interface},
              {"interface_present", h.interface_present},
              {"vips", h.vips},
              {"vips_on_interface", h.vips_on_interface}};
    if (!h.ha) return j;
    j.update({{"vrid", h.vrid},
              {"priority", h.priority},
              {"configured_priority", h.configured_priority},
              {"master", h.master},
              {"master_priority", h.master_priority},
              {"faults", h.faults},
              {"preemption_held", h.held},
              {"hold_reason", h.hold_reason},
              {"operator", h.operator_override},
              {"last_transition",
               h.last_ago_ms < 0 ? json(nullptr)
                                 : json{{"from", h.last_from},
                                        {"to", h.last_to},
                                        {"reason", h.last_reason},
                                        {"ago_ms", h.last_ago_ms}}},
              {"lease", {{"active", h.lease_active}, {"error", h.lease_error},
                         {"renewals", h.lease_renewals}, {"errors", h.lease_errors}}},
              {"counters",
               {{"transitions", h.transitions},
                {"became_master", h.became_master},
                {"left_master", h.left_master},
                {"adverts_sent", h.adverts_sent},
                {"adverts_received", h.adverts_received},
                {"adverts_invalid", h.adverts_invalid},
                {"adverts_invalid_by_reason", invalid},
                {"priority_zero_sent", h.priority_zero_sent},
                {"priority_zero_received", h.priority_zero_received},
                {"split_heals", h.split_heals},
                {"garp_sent", h.garp_sent},
                {"na_sent", h.na_sent},
                {"send_errors", h.send_errors},
                {"address_errors", h.address_errors},
                {"interface_changes", h.interface_changes}}}});
    return j;
}

json latency_json(const SyncLatency& l) {
    return {{"samples", l.samples}, {"p50_us", l.p50_us}, {"p99_us", l.p99_us}, {"max_us", l.max_us}};
}

json sync_json(const SyncPeerStats& y) {
    json refused = json::object();
    for (size_t i = 0; i < kSyncErrorCount; ++i)
        if (y.refused[i]) refused[sync_error_name(static_cast<SyncError>(i))] = y.refused[i];
    return {{"bulk_complete", y.bulk_complete},
            {"records_drained", y.records_drained},
            {"records_sent", y.records_sent},
            {"datagrams_sent", y.datagrams_sent},
            {"send_errors", y.send_errors},
            {"rate_limited", y.rate_limited},
            {"pending", y.pending},
            {"datagrams_received", y.datagrams_received},
            {"receive_overflows", y.receive_overflows},
            {"records_received", y.records_received},
            {"refused", refused},
            {"installed", y.installed},
            {"install_unknown_server", y.install_unknown_server},
            {"install_ring_full", y.install_ring_full},
            {"install_failed", y.install_failed},
            {"seq_gaps", y.seq_gaps},
            {"bulk_requests_sent", y.bulk_requests_sent},
            {"bulk_served", y.bulk_served},
            {"bulk_records_received", y.bulk_records_received},
            {"dataplane_errors", y.dataplane_errors},
            {"config_digest", y.config_digest},
            {"peer_config_digest", y.peer_config_digest},
            {"send_lag", latency_json(y.send_lag)},
            {"install_time", latency_json(y.install_time)}};
}

}  // namespace

json AdminApi::ha(HaAction action) {
    if (action == HaAction::none) {
        const auto st = d_.ha_status();
        if (!st)
            return error("failover is not configured (no 'ha:' or 'interface:' section); see "
                         "docs/configuration.md, \"ha\"");
        json r = ha_json(*st);
        if (auto y = d_.sync_stats()) r["sync"] = sync_json(*y);
        r["ok"] = true;
        return r;
    }
    auto st = d_.ha_action(action);
    if (!st) return error(st.error());
    json r = ha_json(st.value());
    r["ok"] = true;
    return r;
}

json AdminApi::acl() {
    const auto x = d_.xdp_view();
    if (!x)
        return error("the XDP front is not configured (no 'xdp:' section); see docs/configuration.md, \"xdp\"");
    const XdpConfig& c = x->cfg;
    const XdpStatus& s = x->status;
    auto prefixes = [](const std::vector<IpPrefix>& l) {
        json a = json::array();
        for (const auto& p : l) a.push_back(p.str());
        return a;
    };
    json vips = json::array();
    for (const auto& v : x->vips) vips.push_back(v.str());
    json packets = json::array();
    for (size_t r = 0; r < kXdpReasonCount; ++r)
        packets.push_back({{"verdict", kXdpReasons[r].verdict},
                           {"reason", kXdpReasons[r].reason},
                           {"packets", s.packets ? json((*s.packets)[r]) : json(nullptr)}});
    return {{"ok", true},
            {"interface", s.interface},
            {"attached", s.attached},
            {"program_id", s.program_id ? json(s.program_id) : json(nullptr)},
            {"program_name", s.program_name},
            {"applied", s.applied},
            {"error", s.error},
            {"default", c.default_allow ? "allow" : "deny"},
            {"allow", prefixes(c.allow)},
            {"deny", prefixes(c.deny)},
            {"vips", vips},
            {"syn_limit", {{"rate", c.syn_rate}, {"burst", c.syn_burst}, {"ipv6_prefix", c.syn_ipv6_prefix}}},
            {"installed", {{"vips_v4", s.vips4}, {"vips_v6", s.vips6}, {"acl_v4", s.acl4}, {"acl_v6", s.acl6}}},
            {"applies", s.applies},
            {"apply_errors", s.apply_errors},
            {"program_changes", s.program_changes},
            {"packets", packets}};
}

namespace {

json state_file_json(const Daemon::StateFileStatus& s) {
    return {{"path", s.path}, {"overrides", s.overrides}, {"error", s.error}};
}

}  // namespace

json AdminApi::status() {
    const Daemon::View v = d_.view(false);
    size_t up = 0;
    for (const auto& [k, sm] : v.model.servers) up += sm.state() == ServerState::up;
    json dp = {{"socket", v.dataplane.socket}, {"connected", v.dataplane.connected}};
    if (v.dataplane.connected) {
        dp["pid"] = v.dataplane.pid;
        dp["generation"] = v.dataplane.generation;
    } else {
        dp["error"] = v.dataplane.error;
    }
    return {{"ok", true},
            {"config", v.config_path},
            {"uptime_seconds", v.uptime_seconds},
            {"services", v.model.services.size()},
            {"servers", v.model.servers.size()},
            {"servers_up", up},
            {"published_generation", v.publish.applied_generation},
            {"publish_pending", v.publish.state != "idle"},
            {"publish", publish_json(v.publish)},
            {"publishes", v.publish.publishes},
            {"publish_errors", v.publish.publish_errors},
            {"last_publish_error", v.publish.last_error},
            {"reloads", v.reloads},
            {"reload_errors", v.reload_errors},
            {"last_reload_error", v.last_reload_error},
            {"metrics", v.metrics_listen},
            {"dataplane", dp},
            {"state_file", state_file_json(d_.state_file_status())},
            {"ha", v.ha ? json{{"state", v.ha->state}, {"master", v.ha->master},
                               {"vips_on_interface", v.ha->vips_on_interface}}
                        : json(nullptr)},
            {"xdp", v.xdp ? json{{"interface", v.xdp->interface},
                                 {"attached", v.xdp->attached},
                                 {"program_id", v.xdp->program_id ? json(v.xdp->program_id) : json(nullptr)},
                                 {"applied", v.xdp->applied},
                                 {"error", v.xdp->error}}
                          : json(nullptr)}};
}

json AdminApi::services() {
    const Daemon::View v = d_.view(true);
    const auto traffic = v.counters ? v.counters->servers_by_key() : std::unordered_map<std::string, const ServerTraffic*>{};
    json out = json::array();
    for (const auto& svc : v.model.services) {
        size_t up = 0;
        uint64_t active = 0;
        for (const auto& k : svc.servers) {
            up += v.model.servers.at(k).state() == ServerState::up;
            if (auto t = traffic.find(k); t != traffic.end()) active += t->second->active_connections;
        }
        const auto& c = svc.cfg;
        const ServiceTraffic* t = v.counters ? v.counters->find_service(c.name) : nullptr;
        out.push_back({{"name", c.name},
                       {"vip", c.vip.str()},
                       {"port", c.port},
                       {"protocol", proto_name(c.proto)},
                       {"scheduler", scheduler_name(c.scheduler)},
                       {"forwarding", forwarding_name(c.forwarding)},
                       {"servers", svc.servers.size()},
                       {"servers_up", up},
                       {"active_connections", active},
                       {"packets", t ? t->packets : 0},
                       {"bytes", t ? t->bytes : 0},
                       {"new_connections", t ? t->new_connections : 0}});
    }
    return {{"ok", true}, {"services", out}};
}

json AdminApi::servers(const std::string& service) {
    const Daemon::View v = d_.view(true);
    const auto traffic = v.counters ? v.counters->servers_by_key() : std::unordered_map<std::string, const ServerTraffic*>{};
    json out = json::array();
    bool found = service.empty();
    for (const auto& svc : v.model.services) {
        if (!service.empty() && svc.cfg.name != service) continue;
        found = true;
        for (const auto& key : svc.servers) {
            const ServerModel& sm = v.model.servers.at(key);
            const auto slot = v.slots.find(key);
            const auto found_t = traffic.find(key);
            const ServerTraffic* t = found_t != traffic.end() ? found_t->second : nullptr;
            out.push_back({{"service", sm.service},
                           {"address", sm.cfg.address.str()},
                           {"port", sm.port},
                           {"state", server_state_name(sm.state())},
                           {"reason", sm.reason()},
                           {"weight", sm.weight()},
                           {"configured_weight", sm.cfg.weight},
                           // the operator's overrides (kept in admin.state_file across restarts)
                           {"operator_weight", sm.weight_override ? json(*sm.weight_override) : json(nullptr)},
                           {"operator_disabled", sm.admin_disabled},
                           {"backup", sm.cfg.backup},
                           {"health_check", check_type_name(sm.cfg.health.type)},
                           {"healthy", sm.health_up},
                           {"health_held", sm.health_held},
                           {"check_latency_ms", sm.check_latency_ms},
                           {"checks_ok", sm.checks_ok},
                           {"checks_failed", sm.checks_failed},
                           {"mac", sm.mac ? sm.mac->str() : ""},
                           {"slot", slot != v.slots.end() ? json(slot->second) : json(nullptr)},
                           {"in_rotation", t && t->in_rotation},
                           {"active_connections", t ? t->active_connections : 0},
                           {"inactive_connections", t ? t->inactive_connections : 0},
                           {"packets", t ? t->packets : 0},
                           {"bytes", t ? t->bytes : 0},
                           {"new_connections", t ? t->new_connections : 0}});
        }
    }
    if (!found) return error("no service named '" + service + "'");
    return {{"ok", true}, {"servers", out}};
}

void AdminApi::handle(const json& request, Reply reply) {
    try {
        auto parsed = parse_admin_request(request);
        if (!parsed) return reply(error(parsed.error()));
        const AdminRequest& req = parsed.value();
        switch (req.command) {
            case AdminCommand::status: return reply(status());
            case AdminCommand::services: return reply(services());
            case AdminCommand::servers: return reply(servers(req.service));
            case AdminCommand::ha: return reply(ha(req.ha_action));
            case AdminCommand::acl: return reply(acl());
            case AdminCommand::connections: return reply(connections(req));
            case AdminCommand::lookup: return reply(lookup(req));
            case AdminCommand::doctor: return reply(doctor());
            case AdminCommand::reload: {
                json r = d_.reload();
                if (!r.value("ok", false)) return reply(r);
                const uint64_t seq = r["seq"].get<uint64_t>();
                r.erase("seq");
                d_.when_applied(seq, [r, reply](const Applied& a) mutable {
                    if (a.ok) {
                        r["generation"] = a.generation;
                        return reply(r);
                    }
                    reply({{"ok", false},
                           {"error", "configuration reloaded in fulcrumd but not applied in the dataplane: " + a.error},
                           {"reloaded", true},
                           {"warnings", r["warnings"]}});
                });
                return;
            }
            case AdminCommand::set_weight:
            case AdminCommand::drain:
            case AdminCommand::disable:
            case AdminCommand::enable:
                break;
        }
        const Daemon::ServerOp op = req.command == AdminCommand::set_weight ? Daemon::ServerOp::set_weight
                                    : req.command == AdminCommand::drain    ? Daemon::ServerOp::drain
                                    : req.command == AdminCommand::disable  ? Daemon::ServerOp::disable
                                                                            : Daemon::ServerOp::enable;
        auto change = d_.change_server(req.service, req.server, op, req.weight);
        if (!change) return reply(error(change.error()));
        const Daemon::Change c = change.value();
        d_.when_applied(c.seq, [c, reply](const Applied& a) {
            json r = {{"server", c.server}, {"state", c.state}, {"weight", c.weight}};
            if (!c.persist_error.empty())
                r["warning"] = "the change applies but is not saved, a restart of fulcrumd would lose it: " +
                               c.persist_error;
            if (a.ok) {
                r["ok"] = true;
                r["generation"] = a.generation;
            } else {
                r["ok"] = false;
                r["error"] = a.error;
                r["applied"] = false;
            }
            reply(r);
        });
    } catch (const std::exception& e) {
        reply(error(std::string("internal error: ") + e.what()));
    }
}

}  // namespace fulcrum::control
