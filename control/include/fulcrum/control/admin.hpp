// fulcrumd's admin API: JSON requests and replies, one per line, over a Unix stream socket
// created with mode 0600 (only root, or the owner, may administer the balancer).
//
//   request:  {"command": "servers", "service": "web"}\n
//   reply:    {"ok": true, ...}\n   or   {"ok": false, "error": "what is wrong"}\n
//
// No local client can lock fulcrumctl out (fulcrum::SocketServer's policy): when the 32
// slots are full, the client idle the longest (at least 1 s) is closed to make room; idle
// clients are closed after 30 s; a client that does not read its replies stops being served
// and is closed after 30 s without progress; a line over 1 MiB gets an error reply and the
// connection is closed (the rest is never executed); every refusal is counted (stats()) and
// logged with the peer's pid/uid.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "fulcrum/expected.hpp"
#include "fulcrum/socket_server.hpp"

namespace fulcrum::control {

class AdminServer {
public:
    // Runs on the server's own thread; must not throw (exceptions become error replies).
    using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

    // Answers through `reply`, exactly once, now or later from any thread (a state change is
    // answered once the dataplane runs it). Other clients are served meanwhile; this client's
    // next request waits for the answer, so replies stay in order.
    using Reply = std::function<void(nlohmann::json)>;
    using AsyncHandler = std::function<void(const nlohmann::json& request, Reply reply)>;

    // Binds `path` (replacing a stale socket file; refusing if another process answers
    // there) and starts serving. Throws std::runtime_error with the reason.
    AdminServer(std::string path, Handler handler, ServerLimits limits = default_limits());
    AdminServer(std::string path, AsyncHandler handler, ServerLimits limits = default_limits());
    ~AdminServer();
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;
    const std::string& path() const { return path_; }

    // 32 clients (evicting the longest idle when full), 30 s idle timeout, 1 MiB requests,
    // 64 MiB of replies queued for all clients together.
    static ServerLimits default_limits();
    // Connections, requests and refusals by reason (fulcrum::refusal_name); any thread.
    const ServerStats& stats() const { return server_->stats(); }

private:
    void start(ServerLimits limits);
    void run();
    void handle(Session& s, std::span<const uint8_t> line, std::vector<uint8_t>& out);
    std::string path_;
    Handler handler_;
    AsyncHandler async_;
    std::mutex mu_;  // guards ready_: deferred replies waiting for the server thread
    std::vector<std::pair<uint64_t, std::string>> ready_;
    int wake_fd_ = -1;
    std::unique_ptr<SocketServer> server_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// One request, one reply. Transport problems are Errors; refused requests are replies with
// "ok": false.
Expected<nlohmann::json> admin_request(const std::string& path, const nlohmann::json& request,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace fulcrum::control
