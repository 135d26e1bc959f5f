// fulcrumd's admin API: JSON requests and replies, one per line, over a Unix stream socket
// created with mode 0600 (only root, or the owner, may administer the balancer).
//
//   request:  {"command": "servers", "service": "web"}\n
//   reply:    {"ok": true, ...}\n   or   {"ok": false, "error": "what is wrong"}\n
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "fulcrum/expected.hpp"

namespace fulcrum::control {

class AdminServer {
public:
    // Runs on the server's own thread; must not throw (exceptions become error replies).
    using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

    // Binds `path` (replacing a stale socket file; refusing if another process answers
    // there) and starts serving. Throws std::runtime_error with the reason.
    AdminServer(std::string path, Handler handler);
    ~AdminServer();
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;
    const std::string& path() const { return path_; }

private:
    void run();
    std::string path_;
    Handler handler_;
    int listen_fd_ = -1;
    int wake_fd_ = -1;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// One request, one reply. Transport problems are Errors; refused requests are replies with
// "ok": false.
Expected<nlohmann::json> admin_request(const std::string& path, const nlohmann::json& request,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace fulcrum::control
