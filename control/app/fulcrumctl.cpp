// fulcrumctl: the command-line client of fulcrumd's admin API.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <optional>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fulcrum/control/admin.hpp"
#include "fulcrum/control/admin_request.hpp"
#include "fulcrum/control/placement.hpp"
#include "fulcrum_version.h"

using fulcrum::control::AdminCommandSpec;
using nlohmann::json;

namespace {

// An integer argument: a whole decimal number from `min` to `max`. (CLI11's own reading, under
// CLI::Range, takes hex and octal, saturates on overflow and wraps "-1".)
std::optional<uint64_t> decimal_in(const std::string& v, uint64_t min, uint64_t max) {
    uint64_t n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < min || n > max) return std::nullopt;
    return n;
}

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

std::string ago(const json& ms) {
    if (ms.is_null()) return "never";
    std::ostringstream o;
    o << std::fixed << std::setprecision(1) << static_cast<double>(ms.get<int64_t>()) / 1000.0 << " s ago";
    return o.str();
}

// Under a table whose counters may be since a reset: since when, per service.
void reset_footer(const json& rows, const char* service_key) {
    std::map<std::string, std::string> since;
    bool any = false;
    for (const auto& row : rows) {
        const json ms = row.value("counters_reset_ago_ms", json(nullptr));  // null too from an older fulcrumd
        since[row[service_key].get<std::string>()] = ago(ms);
        any = any || !ms.is_null();
    }
    if (!any) return;
    std::string s;
    for (const auto& [name, when] : since) s += (s.empty() ? "" : ", ") + name + " " + when;
    std::cout << "counters reset (fulcrumctl counters): " << s << "\n";
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
        reset_footer(r["services"], "name");
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
        reset_footer(r["servers"], "service");
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
    if (cmd == "counters") {
        const auto& l = r["last_reset"];
        std::cout << "last reset      "
                  << (l.is_null() ? std::string("never (the views show the counters since each source started)")
                                  : (l["scope"] == "all" ? std::string("all counters") : "service " + cell(l["service"])) +
                                        ", " + ago(l["ago_ms"]) + " (" + cell(l["at"]) + ")")
                  << "\n";
        if (!r["all"].is_null() && !l.is_null() && l["scope"] == "service")
            std::cout << "all counters    " << ago(r["all"]["ago_ms"]) << " (" << cell(r["all"]["at"]) << ")\n";
        for (const auto& [name, w] : r["services"].items())
            std::cout << "service " << std::left << std::setw(8) << name << ago(w["ago_ms"]) << " (" << cell(w["at"]) << ")\n";
        for (const auto& [source, x] : r["restarted"].items())
            std::cout << "restarted       " << source << ": " << cell(x["counters"]) << " counters count from zero again, "
                      << ago(x["ago_ms"]) << ": " << cell(x["why"]) << "\n";
        std::cout << "Prometheus metrics (/metrics) are never reset.\n";
        return;
    }
    if (cmd == "counters-reset") {
        std::cout << "zeroed " << cell(r["counters"]) << " counters of "
                  << (r["scope"] == "all" ? std::string("every source") : "service " + cell(r["service"])) << " at "
                  << cell(r["at"]);
        std::string by;
        for (const auto& [source, n] : r["by_source"].items()) by += (by.empty() ? "" : ", ") + source + " " + cell(n);
        std::cout << (by.empty() ? "" : " (" + by + ")") << "; /metrics is not reset\n";
        for (const auto& w : r["warnings"]) std::cout << "warning: " << cell(w) << "\n";
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

    // The admin requests' subcommands come from the request table (admin_request.hpp): one
    // subcommand per request, or a flag of another's subcommand (counters --reset).
    struct Sub {
        CLI::App* app = nullptr;
        const AdminCommandSpec* base = nullptr;                                   // the subcommand alone
        std::vector<std::pair<const AdminCommandSpec*, CLI::Option*>> variants;  // selected by a flag
        std::map<std::string, std::pair<CLI::Option*, std::string>> args;       // by cli spelling
    };
    std::map<std::string, Sub> subs;
    for (const auto& spec : fulcrum::control::admin_command_table()) {
        Sub& sub = subs[spec.cli_command];
        if (!sub.app) sub.app = app.add_subcommand(spec.cli_command, spec.summary);
        if (spec.cli_flag.empty()) {
            sub.base = &spec;
            sub.app->description(spec.summary);
        } else {
            sub.variants.emplace_back(&spec, sub.app->add_flag(spec.cli_flag, spec.cli_flag_help));
            sub.app->description(sub.app->get_description() + "; " + spec.cli_flag + ": " + spec.summary);
        }
        for (const auto& a : spec.args) {
            if (a.cli.empty()) {
                // Filled from another argument: say how.
                sub.app->footer("The request's \"" + a.name + "\" (" + a.help +
                                (a.absent.empty() ? "" : ", default " + a.absent) + "): " + a.cli_note + ".");
                continue;
            }
            if (sub.args.count(a.cli)) continue;
            auto& slot = sub.args[a.cli];
            std::string help = a.help;
            if (a.type == fulcrum::control::AdminArgType::endpoint) help += ": ADDRESS, ADDRESS:PORT or [IPV6]:PORT";
            if (a.type == fulcrum::control::AdminArgType::flow_endpoint) help += ": ADDRESS:PORT or [IPV6]:PORT";
            if (!a.absent.empty()) help += " (default: " + a.absent + ")";
            if (!spec.cli_flag.empty()) help += " (with " + spec.cli_flag + ")";
            CLI::Option* o = sub.app->add_option(a.cli, slot.second, help);
            if (a.required && spec.cli_flag.empty()) o->required();
            if (a.type == fulcrum::control::AdminArgType::integer)
                o->check(CLI::Validator(
                    [min = a.min, max = a.max](std::string& v) -> std::string {
                        return decimal_in(v, min, max) ? std::string()
                                                       : "'" + v + "' is not a decimal integer from " +
                                                             std::to_string(min) + " to " + std::to_string(max);
                    },
                    "INT in [" + std::to_string(a.min) + " - " + std::to_string(a.max) + "]"));
            if (a.type == fulcrum::control::AdminArgType::choice) o->check(CLI::IsMember(a.choices));
            slot.first = o;
        }
    }
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
    Sub& sub = subs.at(cmd);
    const AdminCommandSpec* spec = sub.base;
    for (const auto& [variant, flag] : sub.variants)
        if (flag->count()) spec = variant;
    std::string given_elsewhere;
    for (const auto& given : sub.args) {
        if (!given.second.first->count()) continue;
        if (std::none_of(spec->args.begin(), spec->args.end(), [&](const auto& a) { return a.cli == given.first; }))
            given_elsewhere = given.first;
    }
    if (!given_elsewhere.empty()) {
        std::string with;
        for (const auto& [variant, flag] : sub.variants)
            for (const auto& a : variant->args)
                if (a.cli == given_elsewhere) with += (with.empty() ? "" : " or ") + variant->cli_flag;
        std::cerr << "fulcrumctl " << cmd << ": " << given_elsewhere << " goes with " << with << "\n";
        return 1;
    }
    json req = {{"command", spec->name}};
    for (const auto& a : spec->args) {
        if (a.cli.empty()) continue;
        const auto& [opt, value] = sub.args.at(a.cli);
        if (!opt->count()) {
            if (a.required) {
                std::cerr << "fulcrumctl " << cmd << ": " << a.cli << " is required\n";
                return 1;
            }
            continue;
        }
        if (a.type == fulcrum::control::AdminArgType::integer)
            req[a.name] = *decimal_in(value, a.min, a.max);  // checked while parsing
        else
            req[a.name] = value;
    }
    if (spec->command == fulcrum::control::AdminCommand::lookup) {
        // VIP:PORT[/tcp|/udp]: the suffix is the request's "proto".
        std::string vip = req["vip"].get<std::string>();
        for (const char* p : {"tcp", "udp"})
            if (vip.size() > 4 && vip.substr(vip.size() - 4) == std::string("/") + p) {
                req["proto"] = p;
                vip.resize(vip.size() - 4);
            }
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
    print_human(spec->name, reply);
    if (cmd == "doctor" && reply.value("errors", 0) > 0) return 1;
    return 0;
}
