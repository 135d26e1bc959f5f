// The admin API's requests, decoded and validated before anything runs: a JSON object with a
// "command" and its arguments. Kept apart from the daemon so that the decoder an outsider can
// reach is unit-tested and fuzzed alone (tests/fuzz/fuzz_admin_request.cpp).
//
// Every request is declared once, in admin_command_table(): its name, its arguments (JSON
// type, required or not, default, what it means), what it replies and the fulcrumctl
// subcommand that sends it. The decoder checks requests against that table, fulcrumctl builds
// its subcommands from it, and `fulcrumd --admin-reference` prints it as docs/admin-api.md
// (a test keeps the file equal to the table).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fulcrum/addr.hpp"
#include "fulcrum/expected.hpp"

namespace fulcrum::control {

enum class AdminCommand {
    status, services, servers, set_weight, drain, disable, enable, reload, ha, acl, connections, lookup, doctor,
    counters, counters_reset
};

// The `ha` command's maintenance actions (none: show the state).
enum class HaAction { none, takeover, release, resume };

struct AdminRequest {
    AdminCommand command = AdminCommand::status;
    std::string service;  // servers, connections, counters-reset (optional); set-weight, drain, disable, enable
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

// ---- the table ---------------------------------------------------------------------------

enum class AdminArgType {
    text,           // a JSON string (non-empty when required)
    endpoint,       // a JSON string: ADDRESS, ADDRESS:PORT or [IPV6]:PORT
    flow_endpoint,  // a JSON string: ADDRESS:PORT or [IPV6]:PORT
    choice,         // a JSON string, one of `choices`
    integer,        // a JSON integer from `min` to `max`
};

struct AdminArg {
    std::string name;  // the JSON key
    AdminArgType type = AdminArgType::text;
    bool required = false;
    std::string absent;  // not required: what leaving it out means ("" if nothing to say)
    std::string help;    // what it is
    // fulcrumctl: "name" a positional argument, "--name" an option, "" not on the command line
    // (`cli_note` says how fulcrumctl fills it).
    std::string cli;
    std::string cli_note;
    std::vector<std::string> choices;  // choice
    uint64_t min = 0, max = 0;         // integer
    std::string expects;  // the refusal's "must be ..." when the type's own wording does not fit
    // Copies the checked value into the request.
    void (*store)(AdminRequest&, const nlohmann::json&) = nullptr;
};

struct AdminCommandSpec {
    std::string name;
    AdminCommand command;
    // A state change: the reply comes once the dataplane runs a generation containing it
    // ("generation"), or says why it does not (docs/admin-api.md, "Replies").
    bool changes_state = false;
    std::string summary;  // one line: fulcrumctl's help
    std::vector<AdminArg> args;
    std::string reply;    // what an "ok": true reply holds, besides "ok"
    std::string notes;    // further rules ("" none)
    // fulcrumctl: the subcommand sending this request, and the flag of that subcommand that
    // selects it ("" the subcommand alone).
    std::string cli_command, cli_flag, cli_flag_help;
    // A rule over several arguments, checked after each argument's own: "" if met, else the
    // refusal.
    std::string (*check)(const AdminRequest&) = nullptr;
};

// Every admin request, in the order of docs/admin-api.md and of fulcrumctl's help.
const std::vector<AdminCommandSpec>& admin_command_table();
const AdminCommandSpec& admin_command_spec(AdminCommand c);

// The reference (docs/admin-api.md) generated from the table: `fulcrumd --admin-reference`.
std::string admin_reference_markdown();

// "198.18.0.1", "198.18.0.1:80", "2001:db8::1" or "[2001:db8::1]:80"; nullopt if not one.
std::optional<AdminRequest::Endpoint> parse_endpoint(const std::string& text);

// "status, services, servers, set-weight, ..." from the table.
const std::string& admin_commands();
const char* admin_command_name(AdminCommand c);

// The request, or an error saying what is wrong and what is expected. Unknown keys are
// refused (a misspelt filter would otherwise widen a view silently). Never throws.
Expected<AdminRequest> parse_admin_request(const nlohmann::json& request);

}  // namespace fulcrum::control
