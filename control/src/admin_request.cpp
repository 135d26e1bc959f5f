#include "fulcrum/control/admin_request.hpp"

#include <algorithm>
#include <cctype>
#include <limits>
#include <string>
#include <utility>

namespace fulcrum::control {

namespace {

using nlohmann::json;

// ---- argument builders: the table below reads as a list of declarations ---------------

AdminArg text_arg(std::string name, bool required, std::string help, std::string cli,
                  void (*store)(AdminRequest&, const json&), std::string absent = "") {
    AdminArg a;
    a.name = std::move(name);
    a.type = AdminArgType::text;
    a.required = required;
    a.help = std::move(help);
    a.cli = std::move(cli);
    a.store = store;
    a.absent = std::move(absent);
    return a;
}

AdminArg service_arg(bool required, std::string help, std::string cli, std::string absent = "") {
    return text_arg("service", required, std::move(help), std::move(cli),
                    [](AdminRequest& r, const json& v) { r.service = v.get<std::string>(); }, std::move(absent));
}

AdminArg server_arg() {
    return text_arg("server", true, "the server: ADDRESS or ADDRESS:PORT (as `servers` lists it)", "server",
                    [](AdminRequest& r, const json& v) { r.server = v.get<std::string>(); });
}

AdminArg endpoint_arg(std::string name, AdminArgType type, bool required, std::string help, std::string cli,
                      void (*store)(AdminRequest&, const json&), std::string absent = "") {
    AdminArg a = text_arg(std::move(name), required, std::move(help), std::move(cli), store, std::move(absent));
    a.type = type;
    return a;
}

AdminArg integer_arg(std::string name, bool required, uint64_t min, uint64_t max, std::string help,
                     std::string cli, void (*store)(AdminRequest&, const json&), std::string absent = "") {
    AdminArg a = text_arg(std::move(name), required, std::move(help), std::move(cli), store, std::move(absent));
    a.type = AdminArgType::integer;
    a.min = min;
    a.max = max;
    return a;
}

AdminArg choice_arg(std::string name, std::vector<std::string> choices, std::string help, std::string cli,
                    void (*store)(AdminRequest&, const json&), std::string absent) {
    AdminArg a = text_arg(std::move(name), false, std::move(help), std::move(cli), store, std::move(absent));
    a.type = AdminArgType::choice;
    a.choices = std::move(choices);
    return a;
}

AdminCommandSpec spec(std::string name, AdminCommand c, std::string summary, std::vector<AdminArg> args,
                      std::string reply, bool changes_state = false) {
    AdminCommandSpec s;
    s.name = name;
    s.command = c;
    s.summary = std::move(summary);
    s.args = std::move(args);
    s.reply = std::move(reply);
    s.changes_state = changes_state;
    s.cli_command = std::move(name);
    return s;
}

const char* kServerChangeReply =
    "`server` (the server's key), `state`, `weight`, `generation` (the first generation the dataplane runs "
    "with the change); `warning` when the change is not saved in the state file";

std::string lookup_check(const AdminRequest& r) {
    if (r.client_ep->addr.family != r.vip_ep->addr.family)
        return "lookup: the client and the VIP must be of the same address family";
    return "";
}

std::vector<AdminCommandSpec> build_table() {
    std::vector<AdminCommandSpec> t;
    t.push_back(spec("status", AdminCommand::status, "fulcrumd, dataplane and publishing state", {},
                     "`config`, `uptime_seconds`, `services`, `servers`, `servers_up`, `published_generation`, "
                     "`publish_pending`, `publish` (`state`, `applied_generation`, `in_flight_generation`, "
                     "`changes_pending`), `publishes`, `publish_errors`, `last_publish_error`, `reloads`, "
                     "`reload_errors`, `last_reload_error`, `metrics`, `dataplane` (`socket`, `connected`, and "
                     "`pid` and `generation` or `error`), `state_file` (`path`, `overrides`, `error`), `ha` and "
                     "`xdp` (a summary, or null when not configured), `counters_reset` (see `counters`). The "
                     "counts are since the last `counters-reset` of all counters"));
    t.push_back(spec("services", AdminCommand::services, "services with their traffic", {},
                     "`services`: per service `name`, `vip`, `port`, `protocol`, `scheduler`, `forwarding`, "
                     "`servers`, `servers_up`, `active_connections`, and `packets`, `bytes`, `new_connections` "
                     "counted since the service's last `counters-reset` (`counters_reset_ago_ms`, null if "
                     "never); `counters_reset` (see `counters`)"));
    t.push_back(spec("servers", AdminCommand::servers,
                     "servers with health, reason, weight, connections and counters",
                     {service_arg(false, "only this service's servers", "service", "every service's servers")},
                     "`servers`: per server `service`, `address`, `port`, `state`, `reason`, `weight`, "
                     "`configured_weight`, `operator_weight`, `operator_disabled`, `backup`, `health_check`, "
                     "`healthy`, `health_held`, `check_latency_ms`, `mac`, `slot`, `in_rotation`, "
                     "`active_connections`, `inactive_connections`, and `checks_ok`, `checks_failed`, `packets`, "
                     "`bytes`, `new_connections` counted since the service's last `counters-reset` "
                     "(`counters_reset_ago_ms`); `counters_reset` (see `counters`)"));
    t.back().notes = "Refused if `service` names no service.";
    AdminArg weight = integer_arg("weight", true, 0, 65535, "the new weight; 0 drains the server", "weight",
                                  [](AdminRequest& r, const json& v) { r.weight = v.get<uint32_t>(); });
    t.push_back(spec("set-weight", AdminCommand::set_weight, "set a server's weight (0 drains it)",
                     {service_arg(true, "the server's service", "service"), server_arg(), weight}, kServerChangeReply,
                     true));
    t.push_back(spec("drain", AdminCommand::drain, "no new connections; existing ones continue",
                     {service_arg(true, "the server's service", "service"), server_arg()}, kServerChangeReply, true));
    t.push_back(spec("disable", AdminCommand::disable, "take a server out of service",
                     {service_arg(true, "the server's service", "service"), server_arg()}, kServerChangeReply, true));
    t.push_back(spec("enable", AdminCommand::enable, "put a server back in service at its configured weight",
                     {service_arg(true, "the server's service", "service"), server_arg()}, kServerChangeReply, true));
    for (auto* s : {&t[t.size() - 4], &t[t.size() - 3], &t[t.size() - 2], &t[t.size() - 1]})
        s->notes = "An operator override: kept in `admin.state_file` across reloads and restarts until `enable`.";
    t.push_back(spec("reload", AdminCommand::reload,
                     "re-read the configuration file (refused with its errors if invalid)", {},
                     "`services`, `warnings`, `generation`. A refused file: `error` and `messages` (one per "
                     "problem); the running configuration stays",
                     true));
    t.push_back(spec("ha", AdminCommand::ha, "failover state: VRRP role, master, faults, lease, sync",
                     {choice_arg("action", {"takeover", "release", "resume"},
                                 "takeover: become master (priority 254, preempting); release: leave master and stay "
                                 "backup; resume: back to the configured behaviour",
                                 "action",
                                 [](AdminRequest& r, const json& v) {
                                     const std::string a = v.get<std::string>();
                                     r.ha_action = a == "takeover"  ? HaAction::takeover
                                                   : a == "release" ? HaAction::release
                                                                    : HaAction::resume;
                                 },
                                 "show the state")},
                     "`ha`, `state`, `interface`, `interface_present`, `vips`, `vips_on_interface`; with VRRP "
                     "also `vrid`, `priority`, `configured_priority`, `master`, `master_priority`, `faults`, "
                     "`preemption_held`, `hold_reason`, `operator`, `last_transition`, `lease`, `counters`, and "
                     "`sync` (connection sync, with `ha.sync`); `counters_reset` (see `counters`)"));
    t.back().notes = "Refused when neither `ha:` nor `interface:` is configured.";
    t.push_back(spec("acl", AdminCommand::acl,
                     "XDP front: attached program, VIPs, source ACL, SYN limit and packet counters", {},
                     "`interface`, `attached`, `program_id`, `program_name`, `applied`, `error`, `default`, "
                     "`allow`, `deny`, `vips`, `syn_limit`, `installed`, `applies`, `apply_errors`, "
                     "`program_changes`, `packets` (per verdict and reason); `counters_reset` (see `counters`)"));
    t.back().notes = "Refused when no `xdp:` section is configured.";
    t.push_back(spec(
        "connections", AdminCommand::connections, "the dataplane's connection entries (established, closing, UDP)",
        {service_arg(false, "only this service's entries", "--service", "every service"),
         endpoint_arg("server", AdminArgType::endpoint, false, "only entries to this server", "--server",
                      [](AdminRequest& r, const json& v) { r.server_ep = parse_endpoint(v.get<std::string>()); },
                      "every server"),
         endpoint_arg("client", AdminArgType::endpoint, false, "only entries from this client", "--client",
                      [](AdminRequest& r, const json& v) { r.client_ep = parse_endpoint(v.get<std::string>()); },
                      "every client"),
         integer_arg("limit", false, 1, 10000, "entries per page", "--limit",
                     [](AdminRequest& r, const json& v) { r.limit = v.get<uint32_t>(); }, "100"),
         integer_arg("cursor", false, 0, std::numeric_limits<uint64_t>::max(), "where the page starts", "--cursor",
                     [](AdminRequest& r, const json& v) { r.cursor = v.get<uint64_t>(); }, "0: the first page")},
        "`entries` (per entry `service`, `client`, `client_port`, `vip`, `port`, `proto`, `state`, `server`, "
        "`server_port`, `idle_ms`), `total` (entries matching), `next_cursor` (null on the last page)"));
    t.back().args.back().expects = "the previous reply's next_cursor (an integer from 0)";
    t.push_back(spec(
        "lookup", AdminCommand::lookup, "which server a flow goes to, and why",
        {endpoint_arg("client", AdminArgType::flow_endpoint, true, "the flow's client", "client",
                      [](AdminRequest& r, const json& v) { r.client_ep = parse_endpoint(v.get<std::string>()); }),
         endpoint_arg("vip", AdminArgType::flow_endpoint, true, "the flow's VIP", "vip",
                      [](AdminRequest& r, const json& v) { r.vip_ep = parse_endpoint(v.get<std::string>()); }),
         choice_arg("proto", {"tcp", "udp"}, "the flow's protocol", "",
                    [](AdminRequest& r, const json& v) { r.proto = v.get<std::string>() == "tcp" ? 6 : 17; },
                    "tcp")},
        "`flow`, `service` (null if none), `verdict` (`entry`: a connection entry pins the flow; `scheduler`: "
        "the running snapshot's choice, in `choice`; `not_balanced`), `server`, `reason`, and `entry` or "
        "`generation` and `choice`"));
    t.back().args.back().cli_note = "a `/tcp` or `/udp` suffix on VIP";
    t.back().notes = "`client` and `vip` must be of the same address family.";
    t.back().check = lookup_check;
    t.push_back(spec("doctor", AdminCommand::doctor, "check this host for the usual mistakes, and say what to do",
                     {},
                     "`checks` (per check `check`, `status`: ok, warning or error, `detail`, and `fix` when not "
                     "ok), `errors`, `warnings`"));
    t.push_back(spec("counters", AdminCommand::counters, "when the counters the views show were last reset", {},
                     "`last_reset` (the latest reset: `scope` all or service, `service`, `at` UTC, `ago_ms`; null "
                     "if never), `all` (the last reset of every counter: `at`, `ago_ms`; null if never), "
                     "`services` (per service reset since: `at`, `ago_ms`), `baselines` (counters held at a "
                     "reset value), `restarted` (per source whose counters restarted from zero since a reset: "
                     "`counters` re-based, `why`, `ago_ms`)"));
    t.back().notes =
        "The views subtract the values held at the last reset; the Prometheus metrics are never reset.";
    t.push_back(spec("counters-reset", AdminCommand::counters_reset,
                     "zero the counters the views show (Prometheus metrics stay monotonic)",
                     {service_arg(false, "only this service's and its servers' traffic and health check counters",
                                  "--service",
                                  "every counter: traffic, health checks, publishing, reloads, failover, sync and "
                                  "the XDP front")},
                     "`scope` (all or service), `service`, `counters` (how many were zeroed), `by_source`, `at` "
                     "(UTC), `warnings` (e.g. the dataplane was unreachable: its counters were not zeroed)"));
    t.back().cli_command = "counters";
    t.back().cli_flag = "--reset";
    t.back().cli_flag_help = "zero the counters the views show (like ipvsadm --zero); /metrics is not reset";
    t.back().notes =
        "Nothing is cleared: fulcrumd keeps each counter's value at the reset and the views show the "
        "difference. A counter found below its reset value (its source restarted: a dataplane restart, a "
        "server re-added) counts from zero again, and `counters` says so. Refused if `service` names no "
        "service.";
    return t;
}

// The value's own check: "" if `v` fits `a`, else what it must be.
std::string expectation(const AdminArg& a) {
    if (!a.expects.empty()) return a.expects;
    switch (a.type) {
        // Also an optional one: "" (a script's unset variable) would have meant "every service".
        case AdminArgType::text: return "a non-empty string";
        case AdminArgType::endpoint: return "ADDRESS, ADDRESS:PORT or [IPV6]:PORT";
        case AdminArgType::flow_endpoint: return "ADDRESS:PORT or [IPV6]:PORT";
        case AdminArgType::choice: {
            std::string s;
            for (size_t i = 0; i < a.choices.size(); ++i)
                s += (i == 0 ? "" : i + 1 == a.choices.size() ? " or " : ", ") + ("\"" + a.choices[i] + "\"");
            return s;
        }
        case AdminArgType::integer:
            return "an integer from " + std::to_string(a.min) + " to " + std::to_string(a.max);
    }
    return "?";
}

bool fits(const AdminArg& a, const json& v) {
    switch (a.type) {
        case AdminArgType::text:
            return v.is_string() && !v.get_ref<const std::string&>().empty();
        case AdminArgType::endpoint:
        case AdminArgType::flow_endpoint: {
            if (!v.is_string()) return false;
            const auto ep = parse_endpoint(v.get<std::string>());
            return ep && (a.type == AdminArgType::endpoint || ep->port);
        }
        case AdminArgType::choice:
            return v.is_string() &&
                   std::find(a.choices.begin(), a.choices.end(), v.get<std::string>()) != a.choices.end();
        case AdminArgType::integer:
            if (v.is_number_unsigned()) return v.get<uint64_t>() >= a.min && v.get<uint64_t>() <= a.max;
            if (v.is_number_integer()) return v.get<int64_t>() >= 0 && static_cast<uint64_t>(v.get<int64_t>()) >= a.min &&
                                              static_cast<uint64_t>(v.get<int64_t>()) <= a.max;
            return false;
    }
    return false;
}

std::string quoted_list(const std::vector<std::string>& names) {
    std::string s;
    for (size_t i = 0; i < names.size(); ++i)
        s += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + ("\"" + names[i] + "\"");
    return s;
}

std::string type_name(const AdminArg& a) {
    switch (a.type) {
        case AdminArgType::text: return "string";
        case AdminArgType::endpoint: return "string: ADDRESS, ADDRESS:PORT or [IPV6]:PORT";
        case AdminArgType::flow_endpoint: return "string: ADDRESS:PORT or [IPV6]:PORT";
        case AdminArgType::choice: {
            std::string s = "string: ";
            for (size_t i = 0; i < a.choices.size(); ++i) s += (i ? " \\| " : "") + ("`" + a.choices[i] + "`");
            return s;
        }
        case AdminArgType::integer:
            return "integer " + std::to_string(a.min) + ".." +
                   (a.max == std::numeric_limits<uint64_t>::max() ? std::string("2^64-1") : std::to_string(a.max));
    }
    return "?";
}

}  // namespace

const std::vector<AdminCommandSpec>& admin_command_table() {
    static const std::vector<AdminCommandSpec> table = build_table();
    return table;
}

const AdminCommandSpec& admin_command_spec(AdminCommand c) {
    for (const auto& s : admin_command_table())
        if (s.command == c) return s;
    return admin_command_table().front();  // unreachable: every command is in the table
}

const std::string& admin_commands() {
    static const std::string names = [] {
        std::string s;
        for (const auto& c : admin_command_table()) s += (s.empty() ? "" : ", ") + c.name;
        return s;
    }();
    return names;
}

const char* admin_command_name(AdminCommand c) {
    for (const auto& s : admin_command_table())
        if (s.command == c) return s.name.c_str();
    return "?";
}

std::optional<AdminRequest::Endpoint> parse_endpoint(const std::string& text) {
    std::string host = text, port;
    if (!text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string::npos) return std::nullopt;
        host = text.substr(1, close - 1);
        const std::string rest = text.substr(close + 1);
        if (rest.empty() || rest.front() != ':' || rest.size() == 1) return std::nullopt;  // [v6] needs :port
        port = rest.substr(1);
    } else if (std::count(text.begin(), text.end(), ':') == 1) {
        const auto colon = text.find(':');
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (port.empty()) return std::nullopt;
    }
    const auto a = IpAddr::parse(host);
    if (!a) return std::nullopt;
    AdminRequest::Endpoint ep{*a, std::nullopt};
    if (!port.empty()) {
        if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
        const unsigned long p = std::stoul(port);
        if (p > 65535) return std::nullopt;
        ep.port = static_cast<uint16_t>(p);
    }
    return ep;
}

Expected<AdminRequest> parse_admin_request(const json& req) {
    if (!req.is_object())
        return Error{"a request is a JSON object such as {\"command\": \"status\"}"};
    auto c = req.find("command");
    if (c == req.end() || !c->is_string())
        return Error{"missing \"command\" (one of: " + admin_commands() + ")"};
    const std::string name = c->get<std::string>();
    const auto& table = admin_command_table();
    const auto spec = std::find_if(table.begin(), table.end(), [&](const AdminCommandSpec& s) { return s.name == name; });
    if (spec == table.end())
        return Error{"unknown command '" + name.substr(0, 80) + "' (known: " + admin_commands() + ")"};
    AdminRequest r;
    r.command = spec->command;
    std::vector<std::string> known, required;
    for (const auto& a : spec->args) {
        known.push_back(a.name);
        if (a.required) required.push_back(a.name);
    }
    for (const auto& item : req.items()) {
        const std::string& k = item.key();
        if (k == "command") continue;
        if (std::none_of(spec->args.begin(), spec->args.end(), [&](const AdminArg& a) { return a.name == k; })) {
            std::string known_text;
            for (const auto& n : known) known_text += (known_text.empty() ? "" : ", ") + n;
            return Error{name + ": unknown key \"" + k.substr(0, 80) + "\" (" +
                         (known.empty() ? std::string("it takes no arguments") : "known: " + known_text) + ")"};
        }
    }
    for (const auto& a : spec->args) {
        const auto v = req.find(a.name);
        if (v == req.end()) {
            if (a.required)
                return Error{name + " needs " + quoted_list(required) + " (\"" + a.name + "\" is missing: " +
                             expectation(a) + ", " + a.help + ")"};
            continue;
        }
        if (!fits(a, *v)) {
            std::string got;
            if (v->is_string() && (a.type == AdminArgType::endpoint || a.type == AdminArgType::flow_endpoint))
                got = ", not '" + v->get<std::string>().substr(0, 80) + "'";
            return Error{name + ": \"" + a.name + "\" must be " + expectation(a) + got +
                         (a.absent.empty() ? "" : " (or absent: " + a.absent + ")")};
        }
        a.store(r, *v);
    }
    if (spec->check)
        if (std::string e = spec->check(r); !e.empty()) return Error{e};
    return r;
}

std::string admin_reference_markdown() {
    std::string md =
        "# fulcrumd's admin API\n\n"
        "<!-- Generated by `fulcrumd --admin-reference` from the request table in control/src/admin_request.cpp;\n"
        "     do not edit: change the table and regenerate (a test keeps this file equal to it). -->\n\n"
        "fulcrumd answers requests on its admin socket (`admin.socket`, default `/run/fulcrum/admin.sock`,\n"
        "mode 0600: root or the owner only). A request is one JSON object on one line with a `command` and\n"
        "its arguments; the reply is one JSON object on one line: `{\"ok\": true, ...}` or\n"
        "`{\"ok\": false, \"error\": \"what is wrong and what to do\"}`. Keys a request does not take are\n"
        "refused, as are values of the wrong type. fulcrumctl sends the same requests (`fulcrumctl --json\n"
        "...` prints the raw reply). A state change replies once the dataplane runs a generation containing\n"
        "it (`generation`), or with `\"ok\": false` saying why not (the dataplane is down: the change is kept\n"
        "and applied when it reconnects). The socket serves 32 clients (when full, the one idle the longest\n"
        "is closed to make room), closes clients idle for 30 s and refuses lines over 1 MiB; its policy is\n"
        "the dataplane control socket's (docs/control-protocol.md, \"Clients and limits\").\n\n"
        "Counters in the replies count since the last `counters-reset` of their scope (ipvsadm --zero);\n"
        "the Prometheus metrics (docs/metrics.md) are never reset.\n\n";
    md += "| request | fulcrumctl | what it does |\n|---|---|---|\n";
    auto usage = [](const AdminCommandSpec& s) {
        std::string u = "fulcrumctl " + s.cli_command + (s.cli_flag.empty() ? "" : " " + s.cli_flag);
        for (const auto& a : s.args) {
            if (a.cli.empty()) continue;
            std::string word = a.cli.rfind("--", 0) == 0 ? a.cli + " " : "";
            std::string meta = a.cli.rfind("--", 0) == 0 ? a.cli.substr(2) : a.cli;
            std::transform(meta.begin(), meta.end(), meta.begin(), [](unsigned char ch) { return std::toupper(ch); });
            word += meta;
            u += " " + (a.required ? word : "[" + word + "]");
        }
        return u;
    };
    for (const auto& s : admin_command_table())
        md += "| [`" + s.name + "`](#" + s.name + ") | `" + usage(s) + "` | " + s.summary + " |\n";
    for (const auto& s : admin_command_table()) {
        std::string summary = s.summary;
        summary[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(summary[0])));
        md += "\n### `" + s.name + "`\n\n" + summary + ".";
        if (s.changes_state)
            md += " A state change: the reply comes once the dataplane runs a generation containing it.";
        md += "\n\n";
        md += "Request: `{\"command\": \"" + s.name + "\"}`";
        md += s.args.empty() ? ", no other keys.\n\n" : " and these keys:\n\n";
        if (!s.args.empty()) {
            md += "| key | type | required | meaning | when absent | fulcrumctl |\n|---|---|---|---|---|---|\n";
            for (const auto& a : s.args) {
                std::string cli = a.cli.empty() ? a.cli_note : "`" + a.cli + "`";
                md += "| `" + a.name + "` | " + type_name(a) + " | " + (a.required ? "yes" : "no") + " | " + a.help +
                      " | " + (a.required ? "refused" : a.absent) + " | " + cli + " |\n";
            }
            md += "\n";
        }
        md += "fulcrumctl: `" + usage(s) + "`.\n\n";
        md += "Reply: " + s.reply + ".\n";
        if (!s.notes.empty()) md += "\n" + s.notes + "\n";
    }
    return md;
}

}  // namespace fulcrum::control
