// The dataplane's control socket server: a Unix stream socket (mode 0600) speaking the
// frames of fulcrum/ctl_protocol.hpp. Single-threaded, driven by poll_once() from the main
// lcore; several clients may be connected at once. The client policy (slots, the controller's
// reserved slot, idle timeout, output and input bounds, refusal counters) is
// fulcrum::SocketServer's; this class adds the protocol: framing, the hello op, and a
// "control" object with those counters in every health reply.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum/socket_server.hpp"

namespace fulcrum::dpdk {

class ControlServer {
  public:
    // Fills `status` and `reply` for one request (never called for Op::hello).
    using Handler = std::function<void(uint8_t op, std::span<const uint8_t> body,
                                       ctl::Status& status, std::vector<uint8_t>& reply)>;

    // The limits the dataplane runs with: 64 ordinary clients plus 2 slots reserved for the
    // controller, 30 s idle timeout, 64 MiB of replies (and of big requests) in flight for
    // all clients together (one big reply or request at a time always fits).
    static ServerLimits default_limits(uint32_t max_frame = ctl::kMaxFrame);

    // Binds and listens at `path`. A stale socket file left by a dead process is replaced; a
    // live one (another dataplane answering there) is an error. Throws std::runtime_error.
    ControlServer(std::string path, Handler handler, uint32_t max_frame = ctl::kMaxFrame);
    ControlServer(std::string path, Handler handler, ServerLimits limits);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // Waits up to `timeout_ms` for activity, then accepts, reads, answers and writes.
    void poll_once(int timeout_ms);
    const std::string& path() const { return path_; }
    size_t clients() const { return server_.clients(); }
    const ServerStats& stats() const { return server_.stats(); }
    // The "control" object of the health reply: clients, controllers, queued output bytes,
    // limits and refusals by reason.
    nlohmann::json stats_json() const;

  private:
    void handle(Session& s, std::span<const uint8_t> msg, std::vector<uint8_t>& out);
    void hello(Session& s, std::span<const uint8_t> body, std::vector<uint8_t>& out);

    std::string path_;
    Handler handler_;
    size_t snapshot_reply_ = 0;  // size of the last get_snapshot reply: the estimate for the next
    SocketServer server_;
};

}  // namespace fulcrum::dpdk
