#include "fulcrum/control/admin_request.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <utility>

namespace fulcrum::control {

namespace {

constexpr std::array<std::pair<const char*, AdminCommand>, 13> kCommands{{
    {"status", AdminCommand::status},
    {"services", AdminCommand::services},
    {"servers", AdminCommand::servers},
    {"set-weight", AdminCommand::set_weight},
    {"drain", AdminCommand::drain},
    {"disable", AdminCommand::disable},
    {"enable", AdminCommand::enable},
    {"reload", AdminCommand::reload},
    {"ha", AdminCommand::ha},
    {"acl", AdminCommand::acl},
    {"connections", AdminCommand::connections},
    {"lookup", AdminCommand::lookup},
    {"doctor", AdminCommand::doctor},
}};

// A string argument: absent is nullopt-like (false), present but not a string is an error.
bool string_arg(const nlohmann::json& req, const char* key, std::string& out, std::string& error) {
    auto it = req.find(key);
    if (it == req.end()) return false;
    if (!it->is_string()) {
        error = std::string("\"") + key + "\" must be a string";
        return false;
    }
    out = it->get<std::string>();
    return true;
}

// connections and lookup: the flow or the filters, each checked for its shape.
Expected<AdminRequest> parse_inspection(const nlohmann::json& req, AdminRequest r) {
    const bool lookup = r.command == AdminCommand::lookup;
    const std::string cmd = lookup ? "lookup" : "connections";
    for (const auto& [k, v] : req.items()) {
        if (k == "command") continue;
        const bool known = lookup ? (k == "client" || k == "vip" || k == "proto")
                                  : (k == "service" || k == "server" || k == "client" || k == "limit" || k == "cursor");
        if (!known)
            return Error{cmd + ": unknown key \"" + k + "\" (known: " +
                         (lookup ? "client, vip, proto" : "service, server, client, limit, cursor") + ")"};
        if (k == "limit") {
            if (!v.is_number_unsigned() || v.get<uint64_t>() < 1 || v.get<uint64_t>() > 10000)
                return Error{cmd + ": \"limit\" must be an integer from 1 to 10000"};
            r.limit = v.get<uint32_t>();
            continue;
        }
        if (k == "cursor") {
            if (!v.is_number_unsigned()) return Error{cmd + ": \"cursor\" must be the previous reply's next_cursor"};
            r.cursor = v.get<uint64_t>();
            continue;
        }
        if (!v.is_string()) return Error{cmd + ": \"" + k + "\" must be a string"};
        const std::string s = v.get<std::string>();
        if (k == "service") {
            r.service = s;
        } else if (k == "proto") {
            if (s != "tcp" && s != "udp") return Error{"lookup: \"proto\" must be \"tcp\" or \"udp\""};
            r.proto = s == "tcp" ? 6 : 17;
        } else {
            auto ep = parse_endpoint(s);
            if (!ep)
                return Error{cmd + ": \"" + k + "\" must be ADDRESS, ADDRESS:PORT or [IPV6]:PORT, not '" +
                             s.substr(0, 80) + "'"};
            (k == "server" ? r.server_ep : k == "client" ? r.client_ep : r.vip_ep) = ep;
        }
    }
    if (lookup && (!r.client_ep || !r.client_ep->port || !r.vip_ep || !r.vip_ep->port))
        return Error{"lookup needs \"client\" and \"vip\", each ADDRESS:PORT (e.g. 198.18.0.1:40000 and "
                     "198.18.0.100:80), and optionally \"proto\" (tcp or udp)"};
    if (lookup && r.client_ep->addr.family != r.vip_ep->addr.family)
        return Error{"lookup: the client and the VIP must be of the same address family"};
    return r;
}

}  // namespace

const char* admin_commands() {
    return "status, services, servers, set-weight, drain, disable, enable, reload, ha, acl, connections, lookup, doctor";
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

const char* admin_command_name(AdminCommand c) {
    for (const auto& [name, cmd] : kCommands)
        if (cmd == c) return name;
    return "?";
}

Expected<AdminRequest> parse_admin_request(const nlohmann::json& req) {
    if (!req.is_object())
        return Error{"a request is a JSON object such as {\"command\": \"status\"}"};
    auto c = req.find("command");
    if (c == req.end() || !c->is_string())
        return Error{std::string("missing \"command\" (one of: ") + admin_commands() + ")"};
    const std::string name = c->get<std::string>();
    AdminRequest r;
    bool known = false;
    for (const auto& [n, cmd] : kCommands)
        if (name == n) {
            r.command = cmd;
            known = true;
        }
    if (!known) return Error{"unknown command '" + name + "' (known: " + admin_commands() + ")"};
    std::string error;
    switch (r.command) {
        case AdminCommand::status:
        case AdminCommand::services:
        case AdminCommand::reload:
        case AdminCommand::acl:
        case AdminCommand::doctor:
            return r;
        case AdminCommand::ha: {
            std::string action;
            const bool has = string_arg(req, "action", action, error);
            if (!error.empty() || (has && action != "takeover" && action != "release" &&
                                   action != "resume"))
                return Error{"ha: \"action\" must be \"takeover\", \"release\" or \"resume\" "
                             "(or absent to show the state)"};
            if (action == "takeover") r.ha_action = HaAction::takeover;
            if (action == "release") r.ha_action = HaAction::release;
            if (action == "resume") r.ha_action = HaAction::resume;
            return r;
        }
        case AdminCommand::servers:
            string_arg(req, "service", r.service, error);
            if (!error.empty()) return Error{"servers: " + error + " (a service name)"};
            return r;
        case AdminCommand::connections:
        case AdminCommand::lookup:
            return parse_inspection(req, r);
        case AdminCommand::set_weight:
        case AdminCommand::drain:
        case AdminCommand::disable:
        case AdminCommand::enable:
            break;
    }
    const bool has_service = string_arg(req, "service", r.service, error);
    const bool has_server = error.empty() && string_arg(req, "server", r.server, error);
    if (!has_service || !has_server || r.service.empty() || r.server.empty())
        return Error{name + " needs \"service\" and \"server\" (non-empty strings)"};
    if (r.command == AdminCommand::set_weight) {
        auto w = req.find("weight");
        if (w == req.end() || !w->is_number_integer() || (w->is_number_unsigned() ? w->get<uint64_t>() > 65535
                                                                                  : w->get<int64_t>() < 0 ||
                                                                                        w->get<int64_t>() > 65535))
            return Error{"set-weight needs \"weight\": an integer from 0 to 65535"};
        r.weight = static_cast<uint32_t>(w->get<int64_t>());
    }
    return r;
}

}  // namespace fulcrum::control
