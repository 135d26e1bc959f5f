#include "fulcrum/control/admin_request.hpp"

#include <array>
#include <utility>

namespace fulcrum::control {

namespace {

constexpr std::array<std::pair<const char*, AdminCommand>, 10> kCommands{{
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

}  // namespace

const char* admin_commands() { return "status, services, servers, set-weight, drain, disable, enable, reload, ha, acl"; }

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
