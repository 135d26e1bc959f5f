// The admin API's requests, decoded and validated before anything runs: a JSON object with a
// "command" and its arguments. Kept apart from the daemon so that the decoder an outsider can
// reach is unit-tested and fuzzed alone (tests/fuzz/fuzz_admin_request.cpp).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fulcrum/expected.hpp"

namespace fulcrum::control {

enum class AdminCommand { status, services, servers, set_weight, drain, disable, enable, reload, ha, acl };

// The `ha` command's maintenance actions (none: show the state).
enum class HaAction { none, takeover, release, resume };

struct AdminRequest {
    AdminCommand command = AdminCommand::status;
    std::string service;  // servers (optional filter); set-weight, drain, disable, enable
    std::string server;   // set-weight, drain, disable, enable: address or address:port
    uint32_t weight = 0;  // set-weight: 0..65535
    HaAction ha_action = HaAction::none;  // ha: "action"
};

// "status, services, servers, set-weight, drain, disable, enable, reload, ha, acl"
const char* admin_commands();
const char* admin_command_name(AdminCommand c);

// The request, or an error saying what is wrong and what is expected. Never throws.
Expected<AdminRequest> parse_admin_request(const nlohmann::json& request);

}  // namespace fulcrum::control
