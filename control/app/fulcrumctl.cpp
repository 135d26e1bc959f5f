// fulcrumctl: the command-line client of fulcrumd's admin API.
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fulcrum/control/admin.hpp"
#include "fulcrum/control/placement.hpp"
#include "fulcrum_version.h"

using nlohmann::json;

namespace {

std::string cell(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
    if (v.is_number_float()) {
        std::ostringstream o;
        o << std::fixed << std::setprecision(1) << v.get<double>();
        return o.str();
    }
    if (v.is_null()) return "-";
    return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string human_bytes(uint64_t b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(b);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    std::ostringstream o;
    o << std::fixed << std::setprecision(u ? 1 : 0) << v << " " << units[u];
    return o.str();
}

void table(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows) {
    std::vector<size_t> w(headers.size());
    for (size_t i = 0; i < headers.size(); ++i) w[i] = headers[i].size();
    for (const auto& r : rows)
        for (size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
    auto line = [&](const std::vector<std::string>& r) {
        for (size_t i = 0; i < r.size(); ++i) std::cout << std::left << std::setw(static_cast<int>(w[i] + 2)) << r[i];
        std::cout << "\n";
    };
    line(headers);
    for (const auto& r : rows) line(r);
}

void print_human(const std::string& cmd, const json& r) {
    if (cmd == "status") {
        const auto& dp = r["dataplane"];
        std::cout << "config          " << cell(r["config"]) << "\n"
                  << "uptime          " << cell(r["uptime_seconds"]) << " s\n"
                  << "services        " << cell(r["services"]) << "\n"
                  << "servers up      " << cell(r["servers_up"]) << " of " << cell(r["servers"]) << "\n"
                  << "dataplane       " << (dp["connected"].get<bool>() ? "connected (pid " + cell(dp["pid"]) + ", generation " + cell(dp["generation"]) + ")" : "NOT connected: " + cell(dp["error"])) << " at " << cell(dp["socket"]) << "\n"
                  << "published       generation " << cell(r["published_generation"]) << " applied (" << cell(r["publishes"]) << " publishes, " << cell(r["publish_errors"]) << " errors)\n";
        if (r.contains("publish")) {
            const auto& p = r["publish"];
            std::string s = cell(p["state"]);
            if (!p["in_flight_generation"].is_null()) s += " (generation " + cell(p["in_flight_generation"]) + " being loaded)";
            else if (p["changes_pending"].get<bool>()) s += " (changes not yet sent)";
            std::cout << "publish         " << s << "\n";
        }
        if (!r["last_publish_error"].get<std::string>().empty())
            std::cout << "last publish error  " << cell(r["last_publish_error"]) << "\n";
        std::cout << "reloads         " << cell(r["reloads"]) << " applied, " << cell(r["reload_errors"]) << " refused\n";
        if (!r["last_reload_error"].get<std::string>().empty())
            std::cout << "last reload error:\n" << cell(r["last_reload_error"]) << "\n";
        if (r.contains("state_file") && r["state_file"].is_object()) {
            const auto& f = r["state_file"];
            std::cout << "state file      " << cell(f["path"]) << " (" << cell(f["overrides"]) << " servers overridden)"
                      << (f["error"].get<std::string>().empty() ? "" : "; ERROR: " + cell(f["error"])) << "\n";
        }
        std::cout << "metrics         " << (r["metrics"].get<std::string>().empty() ? "off" : "http://" + cell(r["metrics"]) + "/metrics") << "\n";
        if (r.contains("ha") && r["ha"].is_object())
            std::cout << "ha              " << cell(r["ha"]["state"])
                      << (r["ha"]["master"].get<std::string>().empty() ? "" : ", master " + cell(r["ha"]["master"]))
                      << " (fulcrumctl ha)\n";
        if (r.contains("xdp") && r["xdp"].is_object()) {
            const auto& x = r["xdp"];
            std::cout << "xdp front       ";
            if (x["attached"].get<bool>())
                std::cout << "program " << cell(x["program_id"]) << " on " << cell(x["interface"])
                          << (x["applied"].get<bool>() ? "" : ", NOT updated: " + cell(x["error"]));
            else
                std::cout << cell(x["error"]);
            std::cout << " (fulcrumctl acl)\n";
        }
        return;
    }
    if (cmd == "services") {
        std::vector<std::vector<std::string>> rows;
        for (const auto& s : r["services"])
            rows.push_back({cell(s["name"]), cell(s["vip"]) + ":" + cell(s["port"]) + "/" + cell(s["protocol"]),
                            cell(s["scheduler"]), cell(s["forwarding"]),
                            cell(s["servers_up"]) + "/" + cell(s["servers"]), cell(s["active_connections"]),
                            cell(s["new_connections"]), cell(s["packets"]), human_bytes(s["bytes"].get<uint64_t>())});
        table({"SERVICE", "VIP", "SCHEDULER", "FORWARDING", "UP", "ACTIVE", "CONNECTIONS", "PACKETS", "BYTES"}, rows);
        return;
    }
    if (cmd == "servers") {
        std::vector<std::vector<std::string>> rows;
        for (const auto& s : r["servers"]) {
            std::string weight = cell(s["weight"]);
            // Operator overrides are marked: they outlive reloads and restarts (fulcrumctl enable).
            const bool op_weight = s.contains("operator_weight") && !s["operator_weight"].is_null();
            if (op_weight) weight += " (operator; config " + cell(s["configured_weight"]) + ")";
            else if (s["weight"] != s["configured_weight"]) weight += " (config " + cell(s["configured_weight"]) + ")";
            std::string state = cell(s["state"]) + (s["backup"].get<bool>() ? " (backup)" : "");
            if (s.value("operator_disabled", false)) state += " (operator)";
            rows.push_back({cell(s["service"]), cell(s["address"]) + ":" + cell(s["port"]), state, weight,
                            cell(s["health_check"]) + " " + cell(s["check_latency_ms"]) + " ms",
                            cell(s["active_connections"]), cell(s["inactive_connections"]),
                            cell(s["new_connections"]), cell(s["packets"]), cell(s["reason"])});
        }
        table({"SERVICE", "SERVER", "STATE", "WEIGHT", "CHECK", "ACTIVE", "INACTIVE", "CONNECTIONS", "PACKETS",
               "REASON"},
              rows);
        return;
    }
    if (cmd == "ha") {
        std::cout << "state           " << cell(r["state"]) << "\n"
                  << "interface       " << cell(r["interface"])
                  << (r["interface_present"].get<bool>() ? "" : " (missing: is the dataplane running?)") << "\n";
        std::string vips;
        for (const auto& v : r["vips"]) vips += (vips.empty() ? "" : ", ") + cell(v);
        std::cout << "VIPs            " << (vips.empty() ? "-" : vips)
                  << (r["vips_on_interface"].get<bool>() ? " (on the interface)" : " (not on the interface)") << "\n";
        if (!r["ha"].get<bool>()) return;
        std::cout << "virtual router  " << cell(r["vrid"]) << ", priority " << cell(r["priority"]);
        if (r["priority"] != r["configured_priority"]) std::cout << " (configured " << cell(r["configured_priority"]) << ")";
        std::cout << "\n"
                  << "master          "
                  << (r["master"].get<std::string>().empty() ? std::string("unknown")
                                                              : cell(r["master"]) + " (priority " + cell(r["master_priority"]) + ")")
                  << "\n";
        if (!r["faults"].empty()) {
            std::string f;
            for (const auto& x : r["faults"]) f += (f.empty() ? "" : "; ") + cell(x);
            std::cout << "faults          " << f << "\n";
        }
        if (r["preemption_held"].get<bool>()) std::cout << "preemption      held: " << cell(r["hold_reason"]) << "\n";
        if (!r["operator"].get<std::string>().empty()) std::cout << "operator        " << cell(r["operator"]) << "\n";
        if (!r["last_transition"].is_null()) {
            const auto& t = r["last_transition"];
            std::cout << "last transition " << cell(t["from"]) << " -> " << cell(t["to"]) << ", "
                      << cell(t["ago_ms"]) << " ms ago: " << cell(t["reason"]) << "\n";
        }
        const auto& l = r["lease"];
        std::cout << "dataplane lease " << (l["active"].get<bool>() ? "active" : "standby")
                  << (l["error"].get<std::string>().empty() ? "" : " (error: " + cell(l["error"]) + ")") << "\n";
        const auto& c = r["counters"];
        std::cout << "adverts         " << cell(c["adverts_sent"]) << " sent, " << cell(c["adverts_received"])
                  << " received, " << cell(c["adverts_invalid"]) << " invalid\n"
                  << "transitions     " << cell(c["became_master"]) << " to master, " << cell(c["left_master"])
                  << " from master\n";
        if (r.contains("sync") && r["sync"].is_object()) {
            const auto& y = r["sync"];
            uint64_t refused = 0;
            for (const auto& [k, v] : y["refused"].items()) refused += v.get<uint64_t>();
            std::cout << "sync            bulk sync " << (y["bulk_complete"].get<bool>() ? "complete" : "NOT complete") << "; "
                      << cell(y["records_sent"]) << " records sent, " << cell(y["records_received"]) << " received, "
                      << cell(y["installed"]) << " installed, " << refused << " datagrams refused\n"
                      << "sync lag        p50 " << cell(y["send_lag"]["p50_us"]) << " us, p99 " << cell(y["send_lag"]["p99_us"])
                      << " us (drain to send); install p99 " << cell(y["install_time"]["p99_us"]) << " us\n";
            if (y["dataplane_errors"].get<uint64_t>() || y["install_failed"].get<uint64_t>())
                std::cout << "sync errors     " << cell(y["dataplane_errors"]) << " dataplane requests failed, "
                          << cell(y["install_failed"]) << " records lost to failed installs (a bulk resync follows)\n";
        }
        return;
    }
    if (cmd == "acl") {
        std::cout << "interface       " << cell(r["interface"]) << "\n"
                  << "program         "
                  << (r["attached"].get<bool>() ? cell(r["program_id"]) + " (" + cell(r["program_name"]) + ")"
                                                : std::string("none"))
                  << "\n";
        if (!r["error"].get<std::string>().empty()) std::cout << "error           " << cell(r["error"]) << "\n";
        else std::cout << "maps            hold the configuration (" << cell(r["applies"]) << " updates)\n";
        auto list = [](const json& a) {
            std::string s;
            for (const auto& p : a) s += (s.empty() ? "" : ", ") + cell(p);
            return s.empty() ? std::string("-") : s;
        };
        const auto& syn = r["syn_limit"];
        std::cout << "VIPs            " << list(r["vips"]) << "\n"
                  << "default         " << cell(r["default"]) << "\n"
                  << "allow           " << list(r["allow"]) << "\n"
                  << "deny            " << list(r["deny"]) << "\n"
                  << "SYN limit       "
                  << (syn["rate"].get<uint64_t>() ? cell(syn["rate"]) + "/s per source, burst " + cell(syn["burst"]) +
                                                        ", IPv6 sources per /" + cell(syn["ipv6_prefix"])
                                                  : std::string("off"))
                  << "\n";
        std::vector<std::vector<std::string>> rows;
        for (const auto& p : r["packets"])
            rows.push_back({cell(p["verdict"]), cell(p["reason"]), p["packets"].is_null() ? "-" : cell(p["packets"])});
        table({"VERDICT", "REASON", "PACKETS"}, rows);
        return;
    }
    if (cmd == "doctor") {
        for (const auto& c : r["checks"]) {
            const std::string st = c["status"] == "ok" ? "ok   " : c["status"] == "warning" ? "WARN " : "ERROR";
            std::cout << "[" << st << "] " << cell(c["check"]) << ": " << cell(c["detail"]) << "\n";
            if (c.contains("fix")) std::cout << "        what to do: " << cell(c["fix"]) << "\n";
        }
        std::cout << cell(r["errors"]) << " errors, " << cell(r["warnings"]) << " warnings\n";
        return;
    }
    if (cmd == "connections") {
        std::vector<std::vector<std::string>> rows;
        auto ep = [](const json& a, const json& p) {
            const std::string s = cell(a);
            return (s.find(':') != std::string::npos ? "[" + s + "]" : s) + ":" + cell(p);
        };
        for (const auto& e : r["entries"])
            rows.push_back({cell(e["service"]), ep(e["client"], e["client_port"]), ep(e["vip"], e["port"]),
                            cell(e["proto"]), cell(e["state"]), ep(e["server"], e["server_port"]),
                            cell(e["idle_ms"]) + " ms"});
        table({"SERVICE", "CLIENT", "VIP", "PROTO", "STATE", "SERVER", "IDLE"}, rows);
        std::cout << r["entries"].size() << " of " << cell(r["total"]) << " matching entries";
        if (!r["next_cursor"].is_null()) std::cout << "; next page: --cursor " << cell(r["next_cursor"]);
        std::cout << "\n";
        return;
    }
    if (cmd == "lookup") {
        const auto& f = r["flow"];
        std::cout << "flow            " << cell(f["client"]) << " -> " << cell(f["vip"]) << "/" << cell(f["proto"]) << "\n"
                  << "service         " << cell(r["service"]) << "\n"
                  << "server          " << cell(r["server"]) << "\n"
                  << "why             " << cell(r["reason"]) << "\n";
        if (r["verdict"] == "scheduler" && r["choice"]["scheduler"] == "wrr") {
            std::string c;
            for (const auto& x : r["choice"]["candidates"])
                c += (c.empty() ? "" : ", ") + cell(x["server"]) + ":" + cell(x["server_port"]) + " (weight " +
                     cell(x["weight"]) + ")";
            std::cout << "candidates      " << c << "\n";
        }
        return;
    }
    if (cmd == "reload") {
        std::cout << "configuration reloaded (" << cell(r["services"]) << " services), dataplane runs generation "
                  << cell(r["generation"]) << "\n";
        for (const auto& w : r["warnings"]) std::cout << "warning: " << cell(w) << "\n";
        return;
    }
    std::cout << cell(r["server"]) << ": " << cell(r["state"]) << ", weight " << cell(r["weight"])
              << ", applied in generation " << cell(r["generation"]) << "\n";
    if (r.contains("warning")) std::cout << "warning: " << cell(r["warning"]) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"fulcrumctl: inspect and steer a running fulcrumd"};
    app.name("fulcrumctl");
    app.set_version_flag("--version", std::string("fulcrumctl ") + FULCRUM_VERSION);
    std::string socket = "/run/fulcrum/admin.sock";
    bool as_json = false;
    app.add_option("-s,--socket", socket, "fulcrumd's admin socket")->capture_default_str();
    app.add_flag("--json", as_json, "print the raw JSON reply (for scripts)");
    app.require_subcommand(1);
    std::string service, server;
    int64_t weight = -1;
    app.add_subcommand("status", "fulcrumd, dataplane and publishing state");
    app.add_subcommand("services", "services with their traffic");
    auto* servers = app.add_subcommand("servers", "servers with health, reason, weight, connections and counters");
    servers->add_option("service", service, "only this service");
    auto* sw = app.add_subcommand("set-weight", "set a server's weight (0 drains it)");
    sw->add_option("service", service)->required();
    sw->add_option("server", server, "address or address:port")->required();
    sw->add_option("weight", weight, "0..65535")->required()->check(CLI::Range(0, 65535));
    for (const char* c : {"drain", "disable", "enable"}) {
        auto* sc = app.add_subcommand(c, std::string(c) == "drain" ? "no new connections; existing ones continue"
                                         : std::string(c) == "disable" ? "take a server out of service"
                                                                       : "put a server back in service at its configured weight");
        sc->add_option("service", service)->required();
        sc->add_option("server", server, "address or address:port")->required();
    }
    app.add_subcommand("reload", "re-read the configuration file (refused with its errors if invalid)");
    std::string ha_action;
    auto* ha = app.add_subcommand("ha", "failover state: VRRP role, master, faults, lease, sync");
    ha->add_option("action", ha_action,
                   "takeover: become master (priority 254, preempting); release: leave master and stay "
                   "backup; resume: back to the configured behaviour")
        ->check(CLI::IsMember({"takeover", "release", "resume"}));
    app.add_subcommand("acl", "XDP front: attached program, VIPs, source ACL, SYN limit and packet counters");
    std::string client, flow_client, flow_vip;
    uint32_t limit = 0;
    int64_t cursor = -1;
    auto* conns = app.add_subcommand("connections", "the dataplane's connection entries (established, closing, UDP)");
    conns->add_option("--service", service, "only this service");
    conns->add_option("--server", server, "only to this server: address or address:port");
    conns->add_option("--client", client, "only from this client: address or address:port");
    conns->add_option("--limit", limit, "entries per page (1..10000, default 100)")->check(CLI::Range(1, 10000));
    conns->add_option("--cursor", cursor, "the next page (the previous page's --cursor hint)")->check(CLI::NonNegativeNumber);
    app.add_subcommand("doctor", "check this host for the usual mistakes, and say what to do");
    auto* lk = app.add_subcommand("lookup", "which server a flow goes to, and why");
    lk->add_option("client", flow_client, "CLIENT:PORT (IPv6: [ADDRESS]:PORT)")->required();
    lk->add_option("vip", flow_vip, "VIP:PORT[/tcp|/udp] (default tcp)")->required();
    std::string nic;
    unsigned workers = 0;
    auto* topo = app.add_subcommand("topology", "plan the dataplane's cores next to a NIC (hwloc; runs locally)");
    topo->add_option("--nic", nic, "interface name or PCI address of the uplink NIC");
    topo->add_option("--workers", workers, "worker count (default: one per physical core near the NIC, but one)");
    int numa = -1;
    topo->add_option("--numa-node", numa, "place near this NUMA node (when the NIC's node is unknown)");
    CLI11_PARSE(app, argc, argv);

    const std::string cmd = app.get_subcommands().front()->get_name();
    if (cmd == "topology") {
        try {
            const auto p = fulcrum::control::plan_placement({nic, workers, numa, ""});
            if (as_json) {
                std::cout << p.to_json().dump(2) << "\n";
                return 0;
            }
            auto list = [](const std::vector<unsigned>& v) {
                std::string s;
                for (unsigned x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
                return s;
            };
            std::cout << "NIC             " << p.nic << "\n"
                      << "NUMA node       " << (p.numa_node < 0 ? std::string("unknown") : std::to_string(p.numa_node))
                      << " (" << p.cores_on_node << " physical cores near the NIC)\n"
                      << "main lcore      cpu " << p.main_cpu << "\n"
                      << "workers         cpus " << list(p.worker_cpus) << " (one per physical core)\n"
                      << "fulcrumd        taskset -c " << list(p.control_cpus) << "\n"
                      << "EAL options     " << p.eal_args() << "\n";
            for (const auto& n : p.notes) std::cout << "note: " << n << "\n";
            return 0;
        } catch (const std::exception& e) {
            std::cerr << "fulcrumctl: " << e.what() << "\n";
            return 1;
        }
    }
    json req = {{"command", cmd}};
    if (!service.empty()) req["service"] = service;
    if (!server.empty()) req["server"] = server;
    if (weight >= 0) req["weight"] = weight;
    if (!ha_action.empty()) req["action"] = ha_action;
    if (cmd == "connections") {
        if (!client.empty()) req["client"] = client;
        if (limit) req["limit"] = limit;
        if (cursor >= 0) req["cursor"] = cursor;
    }
    if (cmd == "lookup") {
        std::string vip = flow_vip;
        for (const char* p : {"tcp", "udp"})
            if (vip.size() > 4 && vip.substr(vip.size() - 4) == std::string("/") + p) {
                req["proto"] = p;
                vip.resize(vip.size() - 4);
            }
        req["client"] = flow_client;
        req["vip"] = vip;
    }
    auto r = fulcrum::control::admin_request(socket, req);
    if (!r) {
        std::cerr << "fulcrumctl: " << r.error() << "\n";
        return 2;
    }
    const json& reply = r.value();
    if (as_json) {
        std::cout << reply.dump(2) << "\n";
        if (cmd == "doctor" && reply.value("errors", 0) > 0) return 1;  // problems found: scripts see them
        return reply.value("ok", false) ? 0 : 1;
    }
    if (!reply.value("ok", false)) {
        std::cerr << "fulcrumctl: " << reply.value("error", std::string("request refused")) << "\n";
        if (reply.contains("messages"))
            for (const auto& m : reply["messages"]) std::cerr << "  " << m.get<std::string>() << "\n";
        return 1;
    }
    print_human(cmd, reply);
    if (cmd == "doctor" && reply.value("errors", 0) > 0) return 1;
    return 0;
}
