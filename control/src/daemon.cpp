#include "fulcrum/control/daemon.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fulcrum/control/admin.hpp"
#include "fulcrum/control/health.hpp"
#include "fulcrum/control/metrics.hpp"
#include "fulcrum/control/neighbors.hpp"
#include "fulcrum/snapshot.hpp"

namespace fulcrum::control {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

constexpr auto kTick = std::chrono::milliseconds(1000);

std::string addr_port(const IpAddr& a, uint16_t port) {
    return (a.is_v6() ? "[" + a.str() + "]" : a.str()) + ":" + std::to_string(port);
}

Millis longest_first_check(const Config& c) {
    Millis m{0};
    for (const auto& s : c.services)
        for (const auto& v : s.servers) m = std::max(m, v.health.interval + v.health.timeout);
    return m;
}

}  // namespace

void Daemon::block_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
}

Daemon::Daemon(Config cfg) {
    started_ = Clock::now();
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    neighbors_ = std::make_unique<NeighborResolver>();
    health_ = std::make_unique<HealthChecker>([this](const std::string& key, const CheckStatus& st) { on_health(key, st); });
    {
        std::lock_guard lk(mu_);
        apply_config(std::move(cfg));
        checks_deadline_ = started_ + longest_first_check(cfg_) + std::chrono::seconds(2);
    }
    if (!cfg_.metrics_listen.empty()) metrics_ = std::make_unique<Metrics>(cfg_.metrics_listen);
    admin_ = std::make_unique<AdminServer>(cfg_.admin_socket, [this](const json& r) { return handle_admin(r); });
    spdlog::info("fulcrumd: {} services from {}; admin socket {}; metrics {}; dataplane {}", cfg_.services.size(),
                 cfg_.path, cfg_.admin_socket, cfg_.metrics_listen.empty() ? "off" : "http://" + cfg_.metrics_listen + "/metrics",
                 cfg_.dataplane_socket);
}

Daemon::~Daemon() {
    admin_.reset();
    health_.reset();
    metrics_.reset();
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Daemon::wake() {
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
}

// ---- configuration -------------------------------------------------------------------------

void Daemon::apply_config(Config cfg) {
    const auto now = Clock::now();
    std::map<std::string, ServerModel> servers;
    std::vector<ServiceModel> services;
    std::set<std::string> service_names;
    for (const ServiceConfig& sc : cfg.services) {
        ServiceModel svc;
        svc.cfg = sc;
        service_names.insert(sc.name);
        for (const ServerConfig& v : sc.servers) {
            const uint16_t port = v.effective_port(sc.port);
            const std::string key = server_key(sc.name, v.address, port);
            ServerModel sm;
            if (auto it = model_.servers.find(key); it != model_.servers.end()) sm = it->second;  // keep state
            sm.service = sc.name;
            sm.cfg = v;
            sm.port = port;
            sm.key = key;
            sm.retired = false;
            servers[key] = sm;
            svc.servers.push_back(key);
        }
        services.push_back(std::move(svc));
    }
    // Servers gone from a service that remains: retired, still serving their connections.
    for (auto& [key, sm] : model_.servers) {
        if (servers.count(key)) continue;
        if (!service_names.count(sm.service)) {
            slots_.release(key);
            continue;
        }
        ServerModel r = sm;
        if (!r.retired) {
            r.retired = true;
            r.retired_at = now;
            spdlog::info("server {} removed from the configuration: retired, serving its existing connections", key);
        }
        servers[key] = r;
        for (auto& svc : services)
            if (svc.cfg.name == r.service) svc.servers.push_back(key);
    }
    for (const auto& svc : model_.services)
        if (!service_names.count(svc.cfg.name)) service_ids_.release(svc.cfg.name);

    cfg_ = std::move(cfg);
    model_.config = &cfg_;
    model_.services = std::move(services);
    model_.servers = std::move(servers);

    std::vector<CheckTarget> targets;
    for (const auto& [key, sm] : model_.servers) {
        if (sm.retired) continue;
        CheckTarget t;
        t.key = key;
        t.address = sm.cfg.address;
        t.port = sm.cfg.health.port ? sm.cfg.health.port : sm.port;
        t.cfg = sm.cfg.health;
        targets.push_back(std::move(t));
    }
    health_->set_targets(std::move(targets));
    dirty_ = true;
}

json Daemon::reload() {
    std::string path;
    {
        std::lock_guard lk(mu_);
        path = cfg_.path;
    }
    Config next;
    try {
        next = load_config_file(path);
    } catch (const ConfigError& e) {
        std::lock_guard lk(mu_);
        ++reload_errors_;
        last_reload_error_.clear();
        for (const auto& m : e.messages()) {
            spdlog::error("reload refused: {}", m);
            last_reload_error_ += (last_reload_error_.empty() ? "" : "\n") + m;
        }
        return {{"ok", false},
                {"error", "configuration " + path + " refused; the running configuration stays"},
                {"messages", e.messages()}};
    }
    std::lock_guard lk(mu_);
    json warnings = json::array();
    if (next.admin_socket != cfg_.admin_socket) {
        warnings.push_back("admin.socket changed: restart fulcrumd to apply; still serving " + cfg_.admin_socket);
        next.admin_socket = cfg_.admin_socket;
    }
    if (next.metrics_listen != cfg_.metrics_listen) {
        warnings.push_back("metrics.listen changed: restart fulcrumd to apply; still serving " + cfg_.metrics_listen);
        next.metrics_listen = cfg_.metrics_listen;
    }
    // The main loop owns the dataplane connection; ask it to reconnect to the new socket.
    if (next.dataplane_socket != cfg_.dataplane_socket) reconnect_dp_ = true;
    apply_config(std::move(next));
    ++reloads_;
    last_reload_error_.clear();
    for (const auto& w : warnings) spdlog::warn("{}", w.get<std::string>());
    spdlog::info("configuration {} reloaded: {} services", cfg_.path, cfg_.services.size());
    wake();
    return {{"ok", true}, {"services", cfg_.services.size()}, {"warnings", warnings}};
}

// ---- events --------------------------------------------------------------------------------

void Daemon::on_health(const std::string& key, const CheckStatus& st) {
    {
        std::lock_guard lk(mu_);
        auto it = model_.servers.find(key);
        if (it == model_.servers.end()) return;
        ServerModel& sm = it->second;
        const bool was = sm.health_up;
        sm.health_up = st.up;
        sm.health_checked = st.checked;
        sm.health_reason = st.reason;
        sm.check_latency_ms = st.last_latency_ms;
        sm.checks_ok = st.successes;
        sm.checks_failed = st.failures;
        if (was != st.up || !first_publish_done_) dirty_ = true;
    }
    wake();
}

void Daemon::resolve_all() {
    // Netlink round trips happen outside the lock; the results are applied under it.
    std::vector<std::tuple<std::string, IpAddr, bool>> todo;
    {
        std::lock_guard lk(mu_);
        for (const auto& svc : model_.services)
            for (const auto& key : svc.servers) {
                const auto& sm = model_.servers.at(key);
                todo.emplace_back(key, sm.cfg.address, svc.cfg.forwarding == Forwarding::dsr);
            }
    }
    std::vector<std::pair<std::string, L2Destination>> results;
    for (const auto& [key, addr, onlink] : todo) results.emplace_back(key, neighbors_->resolve(addr, onlink));
    std::lock_guard lk(mu_);
    for (auto& [key, d] : results) {
        auto it = model_.servers.find(key);
        if (it == model_.servers.end()) continue;
        ServerModel& sm = it->second;
        if (sm.mac != d.mac || sm.l2_reason != d.reason) {
            if (d.mac)
                spdlog::info("server {} reachable at {} via {}", key, d.mac->str(), d.ifname.empty() ? "?" : d.ifname);
            else
                spdlog::warn("server {} unreachable: {}", key, d.reason);
            if (d.mac) sm.last_mac = d.mac;
            sm.mac = d.mac;
            sm.l2_reason = d.reason;
            dirty_ = true;
        }
    }
}

void Daemon::sync_dataplane() {
    std::string socket;
    {
        std::lock_guard lk(mu_);
        socket = cfg_.dataplane_socket;
    }
    {
        std::lock_guard lk(mu_);
        if (reconnect_dp_) {
            reconnect_dp_ = false;
            dp_.reset();
            dp_up_ = false;
            dp_pid_ = -1;
        }
    }
    auto fail = [&](const std::string& why) {
        if (dp_up_) spdlog::warn("lost the dataplane at {}: {}", socket, why);
        dp_.reset();
        dp_up_ = false;
        std::lock_guard lk(mu_);
        dp_error_ = why;
        dp_counters_ = json();
    };
    if (!dp_) {
        auto c = ctl::Client::connect(socket, std::chrono::seconds(5));
        if (!c) {
            std::lock_guard lk(mu_);
            if (dp_error_ != c.error()) spdlog::warn("{} (retrying every second)", c.error());
            dp_error_ = c.error();
            return;
        }
        dp_.emplace(std::move(c.value()));
    }
    auto h = dp_->request(ctl::Op::health);
    if (!h || h->status != ctl::Status::ok) return fail(h ? h->text() : h.error());
    json health;
    try {
        health = json::parse(h->text());
    } catch (const std::exception& e) {
        return fail(std::string("malformed health reply: ") + e.what());
    }
    const int64_t pid = health.value("pid", int64_t{-1});
    dp_generation_ = health.value("generation", uint64_t{0});
    if (!dp_up_) spdlog::info("dataplane at {} (pid {}) runs generation {}", socket, pid, dp_generation_);
    dp_up_ = true;
    if (pid != dp_pid_) {
        // A dataplane we have not published to: adopt its server slots and service ids so
        // its established connections keep their servers, then publish.
        if (!adopted_ && dp_generation_ > 0) {
            auto snap = dp_->request(ctl::Op::get_snapshot);
            if (snap && snap->status == ctl::Status::ok) {
                SnapshotBuffer buf(snap->body);
                auto v = SnapshotView::open(buf.bytes());
                if (v) {
                    std::lock_guard lk(mu_);
                    for (const auto& s : v->services()) service_ids_.adopt(s.name, s.id);
                    for (uint32_t slot = 0; slot < v->servers().size(); ++slot) {
                        const fl_snap_server* srv = v->server(slot);
                        if (!srv) continue;
                        const IpAddr a = srv->family == FL_AF_INET ? IpAddr::v4(srv->addr) : IpAddr::v6(srv->addr);
                        slots_.adopt(server_key(v->services()[srv->service].name, a, srv->port), slot);
                    }
                    published_gen_ = std::max(published_gen_, v->generation());
                    adopt_retired(v.value());
                    spdlog::info("adopted the server slots of the running snapshot (generation {})", v->generation());
                }
            }
        }
        adopted_ = true;
        dp_pid_ = pid;
        std::lock_guard lk(mu_);
        dirty_ = true;
    }
    {
        std::lock_guard lk(mu_);
        // The dataplane restarted (generation 0) or runs something else: publish ours again.
        if (first_publish_done_ && dp_generation_ != published_gen_) dirty_ = true;
        dp_error_.clear();
    }
    auto c = dp_->request(ctl::Op::counters);
    if (!c || c->status != ctl::Status::ok) return fail(c ? c->text() : c.error());
    try {
        auto counters = json::parse(c->text());
        std::lock_guard lk(mu_);
        dp_counters_ = std::move(counters);
    } catch (const std::exception& e) {
        return fail(std::string("malformed counters reply: ") + e.what());
    }
}

void Daemon::adopt_retired(const SnapshotView& v) {
    // Servers the running snapshot has but our configuration does not (removed while fulcrumd
    // was down): keep them retired so their connections end where they are, as after a reload.
    // Servers of services we no longer have are let go.
    for (uint32_t slot = 0; slot < v.servers().size(); ++slot) {
        const fl_snap_server* srv = v.server(slot);
        if (!srv) continue;
        const std::string service = v.services()[srv->service].name;
        const IpAddr a = srv->family == FL_AF_INET ? IpAddr::v4(srv->addr) : IpAddr::v6(srv->addr);
        const std::string key = server_key(service, a, srv->port);
        if (model_.servers.count(key)) continue;
        auto svc = std::find_if(model_.services.begin(), model_.services.end(),
                                [&](const ServiceModel& s) { return s.cfg.name == service; });
        if (svc == model_.services.end()) {
            slots_.release(key);
            continue;
        }
        ServerModel sm;
        sm.service = service;
        sm.cfg.address = a;
        sm.cfg.port = srv->port;
        sm.cfg.weight = srv->weight;
        sm.cfg.backup = (srv->flags & FL_SERVER_BACKUP) != 0;
        sm.port = srv->port;
        sm.key = key;
        MacAddr mac;
        std::copy(srv->mac, srv->mac + 6, mac.bytes.begin());
        if (!mac.is_zero()) sm.mac = sm.last_mac = mac;
        sm.retired = true;
        sm.retired_at = Clock::now();
        model_.servers[key] = sm;
        svc->servers.push_back(key);
        spdlog::info("server {} runs in the dataplane but is not configured: retired, serving its connections", key);
    }
}

void Daemon::publish() {
    if (!dp_up_ || !dp_) return;
    std::vector<uint8_t> bytes;
    uint64_t gen;
    {
        std::lock_guard lk(mu_);
        if (!dirty_) return;
        // Give the first health checks a chance, so a restarted fulcrumd does not publish
        // every server down while the dataplane still forwards with the last snapshot.
        if (!first_publish_done_ && !health_->all_checked() && Clock::now() < checks_deadline_) return;
        gen = std::max(published_gen_, dp_generation_.load()) + 1;
        try {
            bytes = build_snapshot(make_snapshot_spec(model_, gen, slots_, service_ids_));
        } catch (const std::exception& e) {
            ++publish_errors_;
            last_publish_error_ = e.what();
            spdlog::error("cannot build a snapshot: {}", e.what());
            return;
        }
        dirty_ = false;
    }
    auto r = dp_->request(ctl::Op::load_snapshot, bytes);
    std::lock_guard lk(mu_);
    if (!r || r->status != ctl::Status::ok) {
        std::string why = r ? r->text() : r.error();
        try {
            if (r) why = json::parse(why).value("error", why);
        } catch (const std::exception&) {
        }
        ++publish_errors_;
        last_publish_error_ = why;
        dirty_ = true;  // retry next tick
        spdlog::error("publishing generation {} failed: {}", gen, why);
        if (!r) {
            dp_.reset();
            dp_up_ = false;
        }
        return;
    }
    published_gen_ = gen;
    dp_generation_ = gen;
    ++publishes_;
    first_publish_done_ = true;
    last_publish_error_.clear();
    size_t up = 0;
    for (const auto& [k, sm] : model_.servers) up += sm.state() == ServerState::up;
    spdlog::info("published generation {}: {} of {} servers up", gen, up, model_.servers.size());
}

void Daemon::tick() {
    const auto now = Clock::now();
    {
        std::lock_guard lk(mu_);
        // Sync health counters for display and metrics.
        for (const auto& [key, st] : health_->status()) {
            auto it = model_.servers.find(key);
            if (it == model_.servers.end()) continue;
            it->second.check_latency_ms = st.last_latency_ms;
            it->second.checks_ok = st.successes;
            it->second.checks_failed = st.failures;
        }
        // Retired servers leave once their grace period is over or no connection remains.
        std::map<std::string, uint64_t> active;  // open and closing connections
        if (dp_counters_.contains("servers"))
            for (const auto& s : dp_counters_["servers"]) {
                const auto a = IpAddr::parse(s["address"].get<std::string>());
                if (a)
                    active[server_key(s["service"].get<std::string>(), *a, s["port"].get<uint16_t>())] =
                        s["active_connections"].get<uint64_t>() + s.value("inactive_connections", uint64_t{0});
            }
        for (auto it = model_.servers.begin(); it != model_.servers.end();) {
            const ServerModel& sm = it->second;
            const bool idle = active.count(sm.key) && active[sm.key] == 0 && dp_up_;
            if (sm.retired && (now - sm.retired_at >= cfg_.retire_after || idle)) {
                spdlog::info("retired server {} removed ({})", sm.key, idle ? "no connections left" : "grace period over");
                for (auto& svc : model_.services)
                    svc.servers.erase(std::remove(svc.servers.begin(), svc.servers.end(), sm.key), svc.servers.end());
                slots_.release(sm.key);
                it = model_.servers.erase(it);
                dirty_ = true;
            } else {
                ++it;
            }
        }
    }
    resolve_all();
    sync_dataplane();
    publish();
    if (metrics_) {
        std::lock_guard lk(mu_);
        MetricsInput in;
        in.model = &model_;
        in.dataplane = dp_up_ && !dp_counters_.is_null() ? &dp_counters_ : nullptr;
        in.published_generation = published_gen_;
        in.publishes = publishes_;
        in.publish_errors = publish_errors_;
        in.reloads = reloads_;
        in.reload_errors = reload_errors_;
        metrics_->update(in);
    }
}

int Daemon::run() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    const int sfd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        spdlog::error("signalfd: {}", std::strerror(errno));
        return 1;
    }
    auto next_tick = Clock::now();
    bool stop = false;
    while (!stop) {
        const auto now = Clock::now();
        bool dirty;
        {
            std::lock_guard lk(mu_);
            dirty = dirty_;
        }
        if (now >= next_tick) {
            tick();
            next_tick = now + kTick;
        } else if (dirty) {
            // Health or operator changes publish at once, not at the next tick.
            resolve_all();
            if (!dp_up_) sync_dataplane();
            publish();
        }
        const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - Clock::now()).count();
        pollfd pfds[3] = {{sfd, POLLIN, 0}, {wake_fd_, POLLIN, 0}, {neighbors_->event_fd(), POLLIN, 0}};
        ::poll(pfds, 3, static_cast<int>(std::clamp<long long>(wait, 0, 1000)));
        if (pfds[1].revents & POLLIN) {
            uint64_t v;
            (void)!::read(wake_fd_, &v, sizeof v);
        }
        if (pfds[2].revents & POLLIN && neighbors_->process_events()) {
            std::lock_guard lk(mu_);
            dirty_ = true;  // re-resolve and publish if anything moved
        }
        if (pfds[0].revents & POLLIN) {
            signalfd_siginfo si;
            while (::read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGHUP) {
                    spdlog::info("SIGHUP: reloading the configuration");
                    reload();
                } else {
                    spdlog::info("signal {}: stopping; the dataplane keeps forwarding with generation {}",
                                 si.ssi_signo, published_gen_);
                    stop = true;
                }
            }
        }
    }
    ::close(sfd);
    return 0;
}

// ---- admin API -----------------------------------------------------------------------------

ServerModel* Daemon::find_server(const std::string& service, const std::string& server, std::string& error) {
    bool service_found = false;
    std::vector<ServerModel*> matches;
    for (auto& [key, sm] : model_.servers) {
        if (sm.service != service) continue;
        service_found = true;
        const std::string ap = addr_port(sm.cfg.address, sm.port);
        if (server == ap || server == sm.cfg.address.str() || server == key) matches.push_back(&sm);
    }
    if (!service_found) {
        const bool exists = std::any_of(model_.services.begin(), model_.services.end(),
                                        [&](const ServiceModel& s) { return s.cfg.name == service; });
        error = exists ? "service '" + service + "' has no servers" : "no service named '" + service + "'";
        return nullptr;
    }
    if (matches.empty()) {
        error = "service '" + service + "' has no server '" + server + "' (give its address, or address:port)";
        return nullptr;
    }
    if (matches.size() > 1) {
        error = "'" + server + "' matches several servers of '" + service + "'; give address:port";
        return nullptr;
    }
    if (matches[0]->retired) {
        error = "server " + matches[0]->key + " was removed from the configuration and is retiring";
        return nullptr;
    }
    return matches[0];
}

json Daemon::status_json() {
    size_t up = 0;
    for (const auto& [k, sm] : model_.servers) up += sm.state() == ServerState::up;
    const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count();
    json dp = {{"socket", cfg_.dataplane_socket}, {"connected", dp_up_.load()}};
    if (dp_up_) {
        dp["pid"] = dp_pid_.load();
        dp["generation"] = dp_generation_.load();
    } else {
        dp["error"] = dp_error_;
    }
    return {{"ok", true},
            {"config", cfg_.path},
            {"uptime_seconds", uptime},
            {"services", model_.services.size()},
            {"servers", model_.servers.size()},
            {"servers_up", up},
            {"published_generation", published_gen_},
            {"publish_pending", dirty_},
            {"publishes", publishes_},
            {"publish_errors", publish_errors_},
            {"last_publish_error", last_publish_error_},
            {"reloads", reloads_},
            {"reload_errors", reload_errors_},
            {"last_reload_error", last_reload_error_},
            {"metrics", cfg_.metrics_listen},
            {"dataplane", dp}};
}

json Daemon::services_json() {
    std::map<std::string, json> dp;
    if (dp_counters_.contains("services"))
        for (const auto& s : dp_counters_["services"]) dp[s["name"].get<std::string>()] = s;
    std::map<std::string, uint64_t> active;
    if (dp_counters_.contains("servers"))
        for (const auto& s : dp_counters_["servers"]) active[s["service"].get<std::string>()] += s["active_connections"].get<uint64_t>();
    json out = json::array();
    for (const auto& svc : model_.services) {
        size_t up = 0;
        for (const auto& k : svc.servers) up += model_.servers.at(k).state() == ServerState::up;
        const auto& c = svc.cfg;
        json j = {{"name", c.name},
                  {"vip", c.vip.str()},
                  {"port", c.port},
                  {"protocol", proto_name(c.proto)},
                  {"scheduler", scheduler_name(c.scheduler)},
                  {"forwarding", forwarding_name(c.forwarding)},
                  {"servers", svc.servers.size()},
                  {"servers_up", up},
                  {"active_connections", active[c.name]}};
        auto it = dp.find(c.name);
        j["packets"] = it != dp.end() ? it->second["packets"].get<uint64_t>() : 0;
        j["bytes"] = it != dp.end() ? it->second["bytes"].get<uint64_t>() : 0;
        j["new_connections"] = it != dp.end() ? it->second["new_connections"].get<uint64_t>() : 0;
        out.push_back(j);
    }
    return {{"ok", true}, {"services", out}};
}

json Daemon::servers_json(const std::string& service) {
    std::map<std::string, json> dp;
    if (dp_counters_.contains("servers"))
        for (const auto& s : dp_counters_["servers"]) {
            const auto a = IpAddr::parse(s["address"].get<std::string>());
            if (a) dp[server_key(s["service"].get<std::string>(), *a, s["port"].get<uint16_t>())] = s;
        }
    json out = json::array();
    bool found = service.empty();
    for (const auto& svc : model_.services) {
        if (!service.empty() && svc.cfg.name != service) continue;
        found = true;
        for (const auto& key : svc.servers) {
            const ServerModel& sm = model_.servers.at(key);
            json j = {{"service", sm.service},
                      {"address", sm.cfg.address.str()},
                      {"port", sm.port},
                      {"state", server_state_name(sm.state())},
                      {"reason", sm.reason()},
                      {"weight", sm.weight()},
                      {"configured_weight", sm.cfg.weight},
                      {"backup", sm.cfg.backup},
                      {"health_check", check_type_name(sm.cfg.health.type)},
                      {"healthy", sm.health_up},
                      {"check_latency_ms", sm.check_latency_ms},
                      {"checks_ok", sm.checks_ok},
                      {"checks_failed", sm.checks_failed},
                      {"mac", sm.mac ? sm.mac->str() : ""},
                      {"slot", slots_.find(key) ? json(*slots_.find(key)) : json(nullptr)}};
            auto it = dp.find(key);
            j["in_rotation"] = it != dp.end() && it->second["in_rotation"].get<bool>();
            j["active_connections"] = it != dp.end() ? it->second["active_connections"].get<uint64_t>() : 0;
            j["inactive_connections"] = it != dp.end() ? it->second.value("inactive_connections", uint64_t{0}) : 0;
            j["packets"] = it != dp.end() ? it->second["packets"].get<uint64_t>() : 0;
            j["bytes"] = it != dp.end() ? it->second["bytes"].get<uint64_t>() : 0;
            j["new_connections"] = it != dp.end() ? it->second["new_connections"].get<uint64_t>() : 0;
            out.push_back(j);
        }
    }
    if (!found) return {{"ok", false}, {"error", "no service named '" + service + "'"}};
    return {{"ok", true}, {"servers", out}};
}

json Daemon::handle_admin(const json& req) {
    static const char* kCommands = "status, services, servers, set-weight, drain, disable, enable, reload";
    if (!req.contains("command") || !req["command"].is_string())
        return {{"ok", false}, {"error", std::string("missing \"command\" (one of: ") + kCommands + ")"}};
    const std::string cmd = req["command"].get<std::string>();
    auto str_arg = [&](const char* k) -> std::optional<std::string> {
        if (!req.contains(k)) return std::nullopt;
        if (!req[k].is_string()) return std::nullopt;
        return req[k].get<std::string>();
    };
    if (cmd == "reload") return reload();
    if (cmd == "servers" || cmd == "services") {
        // Fresh traffic counters on a connection of our own (the main loop's is not shared);
        // the cached ones (at most a second old) serve if the dataplane does not answer.
        std::string socket;
        {
            std::lock_guard lk(mu_);
            socket = cfg_.dataplane_socket;
        }
        if (auto c = ctl::Client::connect(socket, std::chrono::seconds(2))) {
            if (auto r = c->request(ctl::Op::counters); r && r->status == ctl::Status::ok) {
                try {
                    auto counters = json::parse(r->text());
                    std::lock_guard lk(mu_);
                    dp_counters_ = std::move(counters);
                } catch (const std::exception&) {
                }
            }
        }
    }
    std::lock_guard lk(mu_);
    if (cmd == "status") return status_json();
    if (cmd == "services") return services_json();
    if (cmd == "servers") return servers_json(str_arg("service").value_or(""));
    if (cmd == "set-weight" || cmd == "drain" || cmd == "disable" || cmd == "enable") {
        const auto service = str_arg("service");
        const auto server = str_arg("server");
        if (!service || !server)
            return {{"ok", false}, {"error", cmd + " needs \"service\" and \"server\" (strings)"}};
        std::string error;
        ServerModel* sm = find_server(*service, *server, error);
        if (!sm) return {{"ok", false}, {"error", error}};
        if (cmd == "set-weight") {
            if (!req.contains("weight") || !req["weight"].is_number_integer() || req["weight"].get<int64_t>() < 0 ||
                req["weight"].get<int64_t>() > 65535)
                return {{"ok", false}, {"error", "set-weight needs \"weight\": an integer from 0 to 65535"}};
            sm->weight_override = static_cast<uint32_t>(req["weight"].get<int64_t>());
        } else if (cmd == "drain") {
            sm->weight_override = 0;
        } else if (cmd == "disable") {
            sm->admin_disabled = true;
        } else {  // enable: back in service, at the configured weight
            sm->admin_disabled = false;
            if (sm->weight_override && *sm->weight_override == 0) sm->weight_override.reset();
        }
        spdlog::info("admin: {} {} -> state {}, weight {}", cmd, sm->key, server_state_name(sm->state()), sm->weight());
        dirty_ = true;
        wake();
        return {{"ok", true},
                {"server", sm->key},
                {"state", server_state_name(sm->state())},
                {"weight", sm->weight()}};
    }
    return {{"ok", false}, {"error", "unknown command '" + cmd + "' (known: " + kCommands + ")"}};
}

}  // namespace fulcrum::control
