// fulcrumd: keeps the dataplane's forwarding snapshot in line with the configuration, the
// health checks, server reachability and operator commands; serves the admin API and the
// metrics endpoint. If fulcrumd stops, the dataplane keeps forwarding with the last snapshot.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "fulcrum/control/config.hpp"
#include "fulcrum/control/publisher.hpp"
#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum/snapshot.hpp"

namespace fulcrum::control {

class AdminServer;
class HealthChecker;
struct CheckStatus;
class Metrics;
class NeighborResolver;

class Daemon {
public:
    // Takes a validated configuration; opens the admin socket, the metrics endpoint, netlink,
    // and starts health checks. Throws std::runtime_error on startup problems.
    explicit Daemon(Config cfg);
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Runs until SIGINT or SIGTERM (SIGHUP reloads). The caller must have blocked SIGINT,
    // SIGTERM and SIGHUP in every thread (see block_signals()) before constructing the Daemon.
    int run();
    static void block_signals();

    // The admin API (also used by tests). Thread-safe.
    nlohmann::json handle_admin(const nlohmann::json& request);

    // Re-reads the configuration file. On error the running state stays; the messages are
    // returned. Thread-safe.
    nlohmann::json reload();

private:
    void apply_config(Config cfg);
    void on_health(const std::string& key, const CheckStatus& st);
    void tick();
    void resolve_all();
    void adopt_retired(const SnapshotView& v);
    void sync_dataplane();
    void publish();
    void wake();
    nlohmann::json status_json();
    nlohmann::json services_json();
    nlohmann::json servers_json(const std::string& service);
    ServerModel* find_server(const std::string& service, const std::string& server, std::string& error);

    std::mutex mu_;
    Config cfg_;
    Model model_;
    IdAllocator slots_{FL_MAX_SERVERS};
    IdAllocator service_ids_{FL_MAX_SERVICES};
    bool dirty_ = true;
    uint64_t published_gen_ = 0;
    uint64_t publishes_ = 0, publish_errors_ = 0, reloads_ = 0, reload_errors_ = 0;
    std::string last_publish_error_;
    std::string last_reload_error_;
    std::chrono::steady_clock::time_point started_;
    std::chrono::steady_clock::time_point checks_deadline_;
    bool first_publish_done_ = false;

    // dataplane link: the connection belongs to the main loop thread; the state below is
    // also read by the admin thread
    std::optional<ctl::Client> dp_;
    std::atomic<bool> dp_up_{false};
    std::atomic<int64_t> dp_pid_{-1};
    std::atomic<uint64_t> dp_generation_{0};
    bool reconnect_dp_ = false;  // under mu_: the dataplane socket changed on reload
    bool adopted_ = false;
    nlohmann::json dp_counters_;  // under mu_
    std::string dp_error_;        // under mu_

    int wake_fd_ = -1;
    std::unique_ptr<NeighborResolver> neighbors_;
    std::unique_ptr<HealthChecker> health_;
    std::unique_ptr<Metrics> metrics_;
    std::unique_ptr<AdminServer> admin_;
};

}  // namespace fulcrum::control
