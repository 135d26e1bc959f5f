#include "fulcrum/control/admin_api.hpp"

#include <algorithm>
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
            {"records_before_publish", y.records_before_publish},
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
    std::optional<HaStatus> st;
    if (action == HaAction::none) {
        st = d_.ha_status();
        if (!st)
            return error("failover is not configured (no 'ha:' or 'interface:' section); see "
                         "docs/configuration.md, \"ha\"");
    } else {
        auto done = d_.ha_action(action);
        if (!done) return error(done.error());
        st = std::move(done.value());
    }
    const CounterVisitor since_reset = baseline_.subtract();
    visit_counters(*st, since_reset);
    json r = ha_json(*st);
    if (action == HaAction::none)
        if (auto y = d_.sync_stats()) {
            visit_counters(*y, since_reset);
            r["sync"] = sync_json(*y);
        }
    r["counters_reset"] = baseline_.reset_json("");
    r["ok"] = true;
    return r;
}

json AdminApi::acl() {
    auto x = d_.xdp_view();
    if (!x)
        return error("the XDP front is not configured (no 'xdp:' section); see docs/configuration.md, \"xdp\"");
    if (x->status.program_id) baseline_.observe("xdp_packets", "program " + std::to_string(x->status.program_id));
    visit_counters(x->status, baseline_.subtract());
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
            {"packets", packets},
            {"counters_reset", baseline_.reset_json("")}};
}

namespace {

json state_file_json(const Daemon::StateFileStatus& s) {
    return {{"path", s.path}, {"overrides", s.overrides}, {"error", s.error}};
}

}  // namespace

json AdminApi::status() {
    const Daemon::View v = d_.view(false);
    FulcrumdCounters fc{v.publish.publishes, v.publish.publish_errors, v.reloads, v.reload_errors};
    visit_counters(fc, baseline_.subtract());
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
            {"publishes", fc.publishes},
            {"publish_errors", fc.publish_errors},
            {"last_publish_error", v.publish.last_error},
            {"reloads", fc.reloads},
            {"reload_errors", fc.reload_errors},
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
                          : json(nullptr)},
            {"counters_reset", baseline_.reset_json("")}};
}

void AdminApi::observe_dataplane(int64_t pid, bool connected) {
    // The pid tells one dataplane process from the next; a new one counts from zero.
    if (connected && pid > 0) baseline_.observe("dataplane", "pid " + std::to_string(pid));
}

namespace {

// The dataplane's counters since the last reset (a copy: the shared ones feed /metrics).
std::optional<DataplaneCounters> since_reset(const Daemon::View& v, const CounterVisitor& subtract) {
    if (!v.counters) return std::nullopt;
    DataplaneCounters c = *v.counters;
    visit_counters(c, subtract);
    return c;
}

json ago(std::optional<int64_t> ms) { return ms ? json(*ms) : json(nullptr); }

}  // namespace

json AdminApi::services() {
    const Daemon::View v = d_.view(true);
    observe_dataplane(v.dataplane.pid, v.dataplane.connected);
    const auto counters = since_reset(v, baseline_.subtract());
    const auto traffic = counters ? counters->servers_by_key() : std::unordered_map<std::string, const ServerTraffic*>{};
    json out = json::array();
    for (const auto& svc : v.model.services) {
        size_t up = 0;
        uint64_t active = 0;
        for (const auto& k : svc.servers) {
            up += v.model.servers.at(k).state() == ServerState::up;
            if (auto t = traffic.find(k); t != traffic.end()) active += t->second->active_connections;
        }
        const auto& c = svc.cfg;
        const ServiceTraffic* t = counters ? counters->find_service(c.name) : nullptr;
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
                       {"new_connections", t ? t->new_connections : 0},
                       {"counters_reset_ago_ms", ago(baseline_.reset_ago_ms(c.name))}});
    }
    return {{"ok", true}, {"services", out}, {"counters_reset", baseline_.reset_json("")}};
}

json AdminApi::servers(const std::string& service) {
    Daemon::View v = d_.view(true);
    observe_dataplane(v.dataplane.pid, v.dataplane.connected);
    const CounterVisitor subtract = baseline_.subtract();
    visit_counters(v.model, subtract);  // the health checks' counts
    const auto counters = since_reset(v, subtract);
    const auto traffic = counters ? counters->servers_by_key() : std::unordered_map<std::string, const ServerTraffic*>{};
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
                           {"new_connections", t ? t->new_connections : 0},
                           {"counters_reset_ago_ms", ago(baseline_.reset_ago_ms(sm.service))}});
        }
    }
    if (!found) return error("no service named '" + service + "'");
    return {{"ok", true}, {"servers", out}, {"counters_reset", baseline_.reset_json("")}};
}

json AdminApi::counters() {
    json r = baseline_.describe();
    r["ok"] = true;
    return r;
}

json AdminApi::counters_reset(const std::string& service) {
    Daemon::View v = d_.view(true);
    if (!service.empty() &&
        std::none_of(v.model.services.begin(), v.model.services.end(),
                     [&](const ServiceModel& s) { return s.cfg.name == service; }))
        return error("no service named '" + service + "' (fulcrumctl services lists them)");
    observe_dataplane(v.dataplane.pid, v.dataplane.connected);
    json warnings = json::array();
    if (!v.counters)
        warnings.push_back("the dataplane is not reachable (" + v.dataplane.error +
                           "): its traffic counters were not zeroed; reset again once it is back");
    std::optional<HaStatus> ha;
    std::optional<SyncPeerStats> sync;
    std::optional<XdpStatus> xdp;
    if (service.empty()) {
        ha = d_.ha_status();
        sync = d_.sync_stats();
        if (auto x = d_.xdp_view()) {
            xdp = std::move(x->status);
            if (xdp->program_id) baseline_.observe("xdp_packets", "program " + std::to_string(xdp->program_id));
            if (!xdp->packets)
                warnings.push_back("the XDP front's packet counters cannot be read (" + xdp->error +
                                   "): they were not zeroed");
        }
    }
    FulcrumdCounters fc{v.publish.publishes, v.publish.publish_errors, v.reloads, v.reload_errors};
    std::optional<DataplaneCounters> dp;
    if (v.counters) dp = *v.counters;
    const auto done = baseline_.reset(
        [&](const CounterVisitor& take) {
            if (dp) visit_counters(*dp, take);
            visit_counters(v.model, take);
            visit_counters(fc, take);
            if (ha) visit_counters(*ha, take);
            if (sync) visit_counters(*sync, take);
            if (xdp) visit_counters(*xdp, take);
        },
        service);
    json by_source = json::object();
    for (const auto& [source, n] : done.by_source) by_source[source] = n;
    const json when = baseline_.reset_json(service);
    return {{"ok", true},
            {"scope", service.empty() ? "all" : "service"},
            {"service", service.empty() ? json(nullptr) : json(service)},
            {"counters", done.counters},
            {"by_source", by_source},
            {"at", when.is_object() ? when["at"] : json(nullptr)},
            {"warnings", warnings}};
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
            case AdminCommand::counters: return reply(counters());
            case AdminCommand::counters_reset: return reply(counters_reset(req.service));
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
