// fulcrumctl connections and lookup: the dataplane's connection entries (its conn_list op,
// which reads the workers' tables without touching the packet path) and, for a flow without
// an entry, the choice the scheduler of the running snapshot makes.
#include <string>

#include "fulcrum/conn_query.hpp"
#include "fulcrum/control/admin_api.hpp"
#include "fulcrum/control/daemon.hpp"
#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum/snapshot.hpp"

namespace fulcrum::control {

using nlohmann::json;

namespace {

json error(const std::string& m) {
    return {{"ok", false}, {"error", m}};
}

std::string endpoint(const IpAddr& a, uint16_t port) {
    return (a.is_v6() ? "[" + a.str() + "]" : a.str()) + ":" + std::to_string(port);
}

Expected<ctl::Reply> dataplane_request(const std::string& socket, ctl::Op op,
                                       const std::string& body) {
    auto c = ctl::Client::connect(socket);
    if (!c)
        return Error{"the dataplane cannot be reached: " + c.error() +
                     " (is fulcrum-dataplane running?)"};
    auto r = c.value().request(op, {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
    if (!r)
        return Error{std::string("the dataplane's ") + ctl::op_name(static_cast<uint8_t>(op)) +
                     " request failed: " + r.error()};
    return r;
}

Expected<json> conn_list(const std::string& socket, const json& query) {
    auto r = dataplane_request(socket, ctl::Op::conn_list, query.dump());
    if (!r) return Error{r.error()};
    json j = json::parse(r.value().body.begin(), r.value().body.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return Error{
            "the dataplane's conn_list reply is not a JSON object (an older fulcrum-dataplane? it "
            "needs op 10)"};
    if (r.value().status != ctl::Status::ok)
        return Error{"the dataplane refused conn_list: " +
                     j.value("error", std::string("no reason given"))};
    return j;
}

// The configured service a (VIP, port, protocol) belongs to, or null.
json service_of(const Model& m, const std::string& vip, uint16_t port, const std::string& proto) {
    for (const auto& s : m.services)
        if (s.cfg.vip.str() == vip && s.cfg.port == port && proto == proto_name(s.cfg.proto))
            return s.cfg.name;
    return nullptr;
}

}  // namespace

json AdminApi::connections(const AdminRequest& req) {
    const Daemon::View v = d_.view(false);
    json q = {{"limit", req.limit}, {"cursor", req.cursor}};
    if (!req.service.empty()) {
        const ServiceModel* svc = nullptr;
        for (const auto& s : v.model.services)
            if (s.cfg.name == req.service) svc = &s;
        if (!svc) return error("no service named '" + req.service + "'");
        q["vip"] = svc->cfg.vip.str();
        q["port"] = svc->cfg.port;
        q["proto"] = proto_name(svc->cfg.proto);
    }
    if (req.server_ep) {
        q["server"] = req.server_ep->addr.str();
        if (req.server_ep->port) q["server_port"] = *req.server_ep->port;
    }
    if (req.client_ep) {
        q["client"] = req.client_ep->addr.str();
        if (req.client_ep->port) q["client_port"] = *req.client_ep->port;
    }
    auto r = conn_list(v.dataplane.socket, q);
    if (!r) return error(r.error());
    json out = std::move(r.value());
    for (auto& e : out["entries"])
        e["service"] =
            service_of(v.model, e.value("vip", ""), e.value("port", 0), e.value("proto", ""));
    out["ok"] = true;
    return out;
}

json AdminApi::lookup(const AdminRequest& req) {
    const Daemon::View v = d_.view(false);
    const IpAddr& client = req.client_ep->addr;
    const IpAddr& vip = req.vip_ep->addr;
    const uint16_t cport = *req.client_ep->port, port = *req.vip_ep->port;
    const std::string proto = req.proto == 6 ? "tcp" : "udp";
    json out = {
        {"ok", true},
        {"flow",
         {{"client", endpoint(client, cport)}, {"vip", endpoint(vip, port)}, {"proto", proto}}},
        {"service", service_of(v.model, vip.str(), port, proto)}};
    auto r = conn_list(v.dataplane.socket, {{"limit", 1},
                                            {"vip", vip.str()},
                                            {"port", port},
                                            {"proto", proto},
                                            {"client", client.str()},
                                            {"client_port", cport}});
    if (!r) return error(r.error());
    if (r.value().value("total", 0) > 0 && !r.value()["entries"].empty()) {
        const json& e = r.value()["entries"][0];
        out["verdict"] = "entry";
        out["entry"] = e;
        out["server"] = endpoint(*IpAddr::parse(e["server"].get<std::string>()),
                                 e["server_port"].get<uint16_t>());
        out["reason"] = "an existing connection entry (" + e["state"].get<std::string>() +
                        ", idle " + std::to_string(e["idle_ms"].get<uint64_t>()) +
                        " ms) keeps the flow on this server";
        return out;
    }
    auto snap = dataplane_request(v.dataplane.socket, ctl::Op::get_snapshot, {});
    if (!snap) return error(snap.error());
    if (snap.value().status != ctl::Status::ok)
        return error(
            "the dataplane runs no forwarding snapshot yet: every packet goes to the kernel");
    const SnapshotBuffer buf(snap.value().body);
    auto sv = SnapshotView::open(buf.bytes());
    if (!sv) return error("the dataplane's running snapshot cannot be read: " + sv.error());
    const json choice = scheduler_choice(sv.value(), client, cport, vip, port, req.proto);
    out["generation"] = sv.value().generation();
    out["verdict"] = choice["service"].is_null() ? "not_balanced" : "scheduler";
    out["choice"] = choice;
    out["server"] = choice.contains("server") && !choice["server"].is_null()
                        ? json(endpoint(*IpAddr::parse(choice["server"].get<std::string>()),
                                        choice["server_port"].get<uint16_t>()))
                        : json(nullptr);
    out["reason"] = choice["reason"];
    if (out["verdict"] == "scheduler" && !choice.value("server_has_mac", true))
        out["reason"] = choice["reason"].get<std::string>() +
                        "; that server has no MAC yet: dropped (unresolved)";
    return out;
}

}  // namespace fulcrum::control
