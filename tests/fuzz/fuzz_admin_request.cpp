// libFuzzer target: what a local client can send on fulcrumd's admin socket, one JSON request
// per line, through the request decoder. Every line must either decode to a request whose
// arguments satisfy the documented rules, or be refused with a message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fulcrum/control/admin_request.hpp"

using fulcrum::control::AdminCommand;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    while (!in.empty()) {
        const size_t nl = in.find('\n');
        const std::string_view line = in.substr(0, nl);
        in = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
        const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) continue;  // the server answers "not valid JSON"
        const auto r = fulcrum::control::parse_admin_request(j);
        if (!r) {
            if (r.error().empty()) std::abort();  // every refusal says why
            continue;
        }
        const auto& q = r.value();
        switch (q.command) {
            case AdminCommand::set_weight:
                if (q.weight > 65535) std::abort();
                [[fallthrough]];
            case AdminCommand::drain:
            case AdminCommand::disable:
            case AdminCommand::enable:
                if (q.service.empty() || q.server.empty()) std::abort();
                break;
            case AdminCommand::lookup:  // a whole flow: both ends with ports, one family
                if (!q.client_ep || !q.client_ep->port || !q.vip_ep || !q.vip_ep->port ||
                    q.client_ep->addr.family != q.vip_ep->addr.family || (q.proto != 6 && q.proto != 17))
                    std::abort();
                break;
            case AdminCommand::connections:
                if (q.limit < 1 || q.limit > 10000) std::abort();
                break;
            default:
                break;
        }
        // The decoded command must be the one the request named.
        if (j["command"].get<std::string>() != fulcrum::control::admin_command_name(q.command)) std::abort();
    }
    return 0;
}
