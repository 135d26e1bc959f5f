#include "fulcrum/dpdk/control_server.hpp"

#include <unistd.h>

#include <stdexcept>

#include <spdlog/spdlog.h>

#include "fulcrum/unix_socket.hpp"

namespace fulcrum::dpdk {

namespace {
std::string dump(const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void error_reply(std::vector<uint8_t>& out, const std::string& msg) {
    const std::string body = dump(nlohmann::json{{"error", msg}});
    ctl::encode(out, static_cast<uint8_t>(ctl::Status::error),
                {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
}

void json_reply(std::vector<uint8_t>& out, ctl::Status st, const nlohmann::json& j) {
    const std::string body = dump(j);
    ctl::encode(out, static_cast<uint8_t>(st),
                {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
}

int listen_fd(const std::string& path) {
    return listen_private_unix(path, "control socket",
                               "stop it or pass a different --control-socket");
}
}  // namespace

ServerLimits ControlServer::default_limits(uint32_t max_frame) {
    ServerLimits l;
    l.max_clients = 64;
    l.reserved_slots = 2;
    l.idle_timeout = std::chrono::seconds(30);
    l.identify_timeout = std::chrono::seconds(2);
    l.max_request = max_frame;
    l.output_pause = 64 << 10;
    l.big_reply = 64 << 10;
    l.max_output_client = size_t{max_frame} + 5 + l.output_pause;
    l.max_output_total = 64u << 20;
    l.max_input_total = 64u << 20;
    return l;
}

ControlServer::ControlServer(std::string path, Handler handler, uint32_t max_frame)
    : ControlServer(std::move(path), std::move(handler), default_limits(max_frame)) {}

ControlServer::ControlServer(std::string path, Handler handler, ServerLimits limits)
    : path_(std::move(path)),
      handler_(std::move(handler)),
      server_(
          listen_fd(path_),
          SocketServer::Protocol{
              "control socket " + path_, "control clients",
              [max = static_cast<uint32_t>(std::min<size_t>(limits.max_request, ctl::kMaxFrame))] {
                  return std::make_unique<FrameDecoder>(max, &ctl::max_request_frame, &ctl::op_name);
              },
              [this](Session& s, std::span<const uint8_t> msg, std::vector<uint8_t>& out) {
                  handle(s, msg, out);
              },
              error_reply, [](const std::string& line) { spdlog::warn("{}", line); },
              [this](std::span<const uint8_t> msg) {
                  return msg[0] == static_cast<uint8_t>(ctl::Op::get_snapshot) ? snapshot_reply_
                                                                               : size_t{0};
              }},
          limits) {}

ControlServer::~ControlServer() {
    ::unlink(path_.c_str());
}

void ControlServer::poll_once(int timeout_ms) {
    server_.poll_once(timeout_ms);
}

nlohmann::json ControlServer::stats_json() const {
    const ServerStats& st = server_.stats();
    const ServerLimits& l = server_.limits();
    nlohmann::json refused = nlohmann::json::object();
    for (size_t r = 0; r < kRefusalKinds; ++r)
        refused[refusal_name(static_cast<Refusal>(r))] =
            st.refused[r].load(std::memory_order_relaxed);
    return {{"clients", st.clients.load()},
            {"controllers", st.controllers.load()},
            {"max_clients", l.max_clients},
            {"reserved_slots", l.reserved_slots},
            {"idle_timeout_ms", l.idle_timeout.count()},
            {"queued_output_bytes", st.queued_output.load()},
            {"max_output_total", l.max_output_total},
            {"accepted", st.accepted.load()},
            {"requests", st.requests.load()},
            {"refused_total", st.refused_total()},
            {"refused", refused}};
}

void ControlServer::hello(Session& s, std::span<const uint8_t> body, std::vector<uint8_t>& out) {
    std::string role;
    int64_t pid = -1;
    try {
        const auto j = nlohmann::json::parse(body.begin(), body.end());
        if (!j.is_object() || !j.contains("role") || !j["role"].is_string())
            throw std::invalid_argument("it has no string \"role\"");
        role = j["role"].get<std::string>();
        if (j.contains("pid") && j["pid"].is_number_integer()) pid = j["pid"].get<int64_t>();
    } catch (const std::exception& e) {
        error_reply(out, std::string("hello body is not {\"role\": \"controller\", \"pid\": N}: ") +
                             e.what());
        if (s.reserved) {
            server_.refuse(s, Refusal::not_controller,
                           "malformed hello in a reserved slot; closed");
            s.close_after_reply = true;
        }
        return;
    }
    if (role != "controller") {
        if (s.reserved) {
            error_reply(out,
                        "too many control clients connected (limit " +
                            std::to_string(server_.limits().max_clients) +
                            "); the remaining slots are reserved for the controller; retry later");
            server_.refuse(s, Refusal::not_controller,
                           "hello with role '" + role + "' in a reserved slot; closed");
            s.close_after_reply = true;
            return;
        }
        json_reply(out, ctl::Status::ok, {{"role", role}, {"controller", false}});
        return;
    }
    if (!s.controller)
        spdlog::info("control socket {}: controller connected (pid {} says pid {}, uid {}){}",
                     path_, s.peer.pid, pid, s.peer.uid, s.reserved ? " in a reserved slot" : "");
    s.controller = true;
    json_reply(out, ctl::Status::ok,
               {{"role", role}, {"controller", true}, {"pid", static_cast<int64_t>(::getpid())}});
}

void ControlServer::handle(Session& s, std::span<const uint8_t> msg, std::vector<uint8_t>& out) {
    const uint8_t op = msg[0];
    const std::span<const uint8_t> body = msg.subspan(1);
    if (op == static_cast<uint8_t>(ctl::Op::hello)) return hello(s, body, out);
    if (s.reserved && !s.controller) {
        // Nothing but hello runs in a reserved slot.
        error_reply(out, "too many control clients connected (limit " +
                             std::to_string(server_.limits().max_clients) +
                             "); the remaining slots are reserved for the controller, which must "
                             "send hello first; retry later");
        server_.refuse(s, Refusal::not_controller,
                       std::string("first request ") + ctl::op_name(op) +
                           " in a reserved slot is not hello; closed");
        s.close_after_reply = true;
        return;
    }
    std::vector<uint8_t> reply;
    ctl::Status st = ctl::Status::error;
    try {
        handler_(op, body, st, reply);
    } catch (const std::exception& e) {
        st = ctl::Status::error;
        const std::string b =
            dump(nlohmann::json{{"error", std::string("internal error: ") + e.what()}});
        reply.assign(b.begin(), b.end());
    }
    if (op == static_cast<uint8_t>(ctl::Op::get_snapshot) && st == ctl::Status::ok)
        snapshot_reply_ = reply.size() + 5;
    if (op == static_cast<uint8_t>(ctl::Op::health) && st == ctl::Status::ok) {
        // The health reply carries this socket's own state, so fulcrumd and operators see refusals.
        try {
            auto j = nlohmann::json::parse(reply.begin(), reply.end());
            if (j.is_object()) {
                j["control"] = stats_json();
                const std::string b = dump(j);
                reply.assign(b.begin(), b.end());
            }
        } catch (const std::exception&) {
            // Not JSON: pass it on unchanged.
        }
    }
    ctl::encode(out, static_cast<uint8_t>(st), reply);
}

}  // namespace fulcrum::dpdk
