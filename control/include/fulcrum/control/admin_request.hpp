// The admin API's requests, decoded and validated before anything runs: a JSON object with a
// "command" and its arguments. Kept apart from the daemon so that the decoder an outsider can
// reach is unit-tested and fuzzed alone (tests/fuzz/fuzz_admin_request.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "fulcrum/addr.hpp"
#include "fulcrum/expected.hpp"

namespace fulcrum::control {

enum class AdminCommand { status, services, servers, set_weight, drain, disable, enable, reload, ha, acl, connections, lookup, doctor };

// The `ha` command's maintenance actions (none: show the state).
enum class HaAction { none, takeover, release, resume };

struct AdminRequest {
    AdminCommand command = AdminCommand::status;
    std::string service;  // servers (optional filter); set-weight, drain, disable, enable
    std::string server;   // set-weight, drain, disable, enable: address or address:port
    uint32_t weight = 0;  // set-weight: 0..65535
    HaAction ha_action = HaAction::none;  // ha: "action"
    // connections: optional filters ("server" and "client": address or address:port) and the
    // page; lookup: the flow ("client" and "vip" as address:port, "proto").
    struct Endpoint {
        IpAddr addr;
        std::optional<uint16_t> port;
    };
    std::optional<Endpoint> server_ep, client_ep, vip_ep;
    uint8_t proto = 6;        // lookup: 6 (tcp, the default) or 17 (udp)
    uint32_t limit = 100;     // connections: 1..10000 entries per page
    uint64_t cursor = 0;      // connections: the previous page's next_cursor
};

// "198.18.0.1", "198.18.0.1:80", "2001:db8::1" or "[2001:db8::1]:80"; nullopt if not one.
std::optional<AdminRequest::Endpoint> parse_endpoint(const std::string& text);

// "status, services, servers, set-weight, drain, disable, enable, reload, ha, acl, connections, lookup, doctor"
const char* admin_commands();
const char* admin_command_name(AdminCommand c);

// The request, or an error saying what is wrong and what is expected. Never throws.
Expected<AdminRequest> parse_admin_request(const nlohmann::json& request);

}  // namespace fulcrum::control
