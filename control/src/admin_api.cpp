#include "fulcrum/control/admin_api.hpp"

#include <future>
#include <optional>

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

const char* AdminApi::commands() { return "status, services, servers, set-weight, drain, disable, enable, reload"; }

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
            {"dataplane", dp}};
}

json AdminApi::services() {
    const Daemon::View v = d_.view(true);
    json out = json::array();
    for (const auto& svc : v.model.services) {
        size_t up = 0;
        uint64_t active = 0;
        for (const auto& k : svc.servers) {
            up += v.model.servers.at(k).state() == ServerState::up;
            if (const ServerTraffic* t = v.counters ? v.counters->find_server(k) : nullptr) active += t->active_connections;
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
    json out = json::array();
    bool found = service.empty();
    for (const auto& svc : v.model.services) {
        if (!service.empty() && svc.cfg.name != service) continue;
        found = true;
        for (const auto& key : svc.servers) {
            const ServerModel& sm = v.model.servers.at(key);
            const auto slot = v.slots.find(key);
            const ServerTraffic* t = v.counters ? v.counters->find_server(key) : nullptr;
            out.push_back({{"service", sm.service},
                           {"address", sm.cfg.address.str()},
                           {"port", sm.port},
                           {"state", server_state_name(sm.state())},
                           {"reason", sm.reason()},
                           {"weight", sm.weight()},
                           {"configured_weight", sm.cfg.weight},
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

void AdminApi::handle(const json& req, Reply reply) {
    try {
        if (!req.is_object() || !req.contains("command") || !req["command"].is_string())
            return reply(error(std::string("missing \"command\" (one of: ") + commands() + ")"));
        const std::string cmd = req["command"].get<std::string>();
        auto str_arg = [&](const char* k) -> std::optional<std::string> {
            if (!req.contains(k) || !req[k].is_string()) return std::nullopt;
            return req[k].get<std::string>();
        };
        if (cmd == "status") return reply(status());
        if (cmd == "services") return reply(services());
        if (cmd == "servers") return reply(servers(str_arg("service").value_or("")));
        if (cmd == "reload") {
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
        Daemon::ServerOp op;
        if (cmd == "set-weight") op = Daemon::ServerOp::set_weight;
        else if (cmd == "drain") op = Daemon::ServerOp::drain;
        else if (cmd == "disable") op = Daemon::ServerOp::disable;
        else if (cmd == "enable") op = Daemon::ServerOp::enable;
        else return reply(error("unknown command '" + cmd + "' (known: " + commands() + ")"));
        const auto service = str_arg("service");
        const auto server = str_arg("server");
        if (!service || !server) return reply(error(cmd + " needs \"service\" and \"server\" (strings)"));
        uint32_t weight = 0;
        if (op == Daemon::ServerOp::set_weight) {
            if (!req.contains("weight") || !req["weight"].is_number_integer() || req["weight"].get<int64_t>() < 0 ||
                req["weight"].get<int64_t>() > 65535)
                return reply(error("set-weight needs \"weight\": an integer from 0 to 65535"));
            weight = static_cast<uint32_t>(req["weight"].get<int64_t>());
        }
        auto change = d_.change_server(*service, *server, op, weight);
        if (!change) return reply(error(change.error()));
        const Daemon::Change c = change.value();
        d_.when_applied(c.seq, [c, reply](const Applied& a) {
            json r = {{"server", c.server}, {"state", c.state}, {"weight", c.weight}};
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

json AdminApi::handle_sync(const json& req) {
    auto p = std::make_shared<std::promise<json>>();
    auto f = p->get_future();
    handle(req, [p](json r) { p->set_value(std::move(r)); });
    return f.get();
}

}  // namespace fulcrum::control
