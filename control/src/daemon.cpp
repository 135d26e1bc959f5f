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
#include "fulcrum/control/admin_api.hpp"
#include "fulcrum/control/health.hpp"
#include "fulcrum/control/metrics.hpp"
#include "fulcrum/control/neighbors.hpp"
#include "fulcrum/snapshot.hpp"

namespace fulcrum::control {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

constexpr auto kTick = std::chrono::milliseconds(1000);

Millis longest_first_check(const Config& c) {
    Millis m{0};
    for (const auto& s : c.services)
        for (const auto& v : s.servers) m = std::max(m, v.health.interval + v.health.timeout);
    return m;
}

// How far back a down verdict's failing checks reach: `fall` failures, one interval apart,
// each taking up to its timeout (plus a little for scheduling). A verdict is only believed if
// the dataplane path was up for all of it.
Clock::duration evidence_window(const ServerConfig& v) {
    const auto fall = std::max(1u, v.health.fall);
    return v.health.interval * (fall - 1) + v.health.timeout + std::chrono::milliseconds(200);
}

std::vector<IpAddr> vips_of(const Config& c) {
    std::vector<IpAddr> v;
    for (const auto& s : c.services)
        if (std::find(v.begin(), v.end(), s.vip) == v.end()) v.push_back(s.vip);
    return v;
}

XdpDesired xdp_desired(const Config& c) {
    XdpDesired d;
    d.vips = vips_of(c);
    d.allow = c.xdp.allow;
    d.deny = c.xdp.deny;
    d.default_allow = c.xdp.default_allow;
    d.syn_rate = c.xdp.syn_rate;
    d.syn_burst = c.xdp.syn_burst;
    d.syn_ipv6_prefix = c.xdp.syn_ipv6_prefix;
    return d;
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
    link_ = std::make_unique<DataplaneLink>(cfg.dataplane_socket);
    neighbors_ = std::make_unique<NeighborResolver>();
    health_ = std::make_unique<HealthChecker>([this](const std::string& key, const CheckStatus& st) { on_health(key, st); });
    {
        std::lock_guard lk(mu_);
        apply_config(std::move(cfg));
        load_state();
        checks_deadline_ = started_ + longest_first_check(cfg_) + std::chrono::seconds(2);
    }
    if (!cfg_.metrics_listen.empty())
        metrics_ = std::make_unique<Metrics>(cfg_.metrics_listen,
                                             MetricsAuth{cfg_.metrics_username, cfg_.metrics_password_file});
    if (cfg_.xdp.enabled) {
        // A missing program is not fatal: the dataplane may start later (or restart); the
        // main loop keeps looking and fills the maps of every program it finds. (A build
        // without the eBPF programs refuses here.)
        xdp_ = std::make_unique<XdpFront>(cfg_.xdp.interface);
        xdp_->set_desired(xdp_desired(cfg_));
        xdp_->sync();
    }
    if (cfg_.interface.configured || cfg_.ha.enabled) {
        ha_ = std::make_unique<HaNode>(cfg_, vips_of(cfg_));
        if (cfg_.ha.enabled) {
            // Preempt only with the servers' health known and published (a master that took
            // over with a pool still being checked would send flows elsewhere than its peer
            // did), and with the connections in hand: held until the first publish and the
            // first bulk sync (update_ha).
            publish_hold_ = true;
            sync_hold_ = cfg_.ha.sync.enabled;
            ha_->set_hold(true, kHoldPublish);
        }
        ha_->start();
    }
    if (cfg_.ha.enabled && cfg_.ha.sync.enabled) {
        const SyncConfig& y = cfg_.ha.sync;
        SyncPeerConfig sc;
        sc.peer = y.peer;
        sc.local = y.local;
        if (sc.local.family == Family::none)
            for (const auto& a : cfg_.interface.addresses)
                if (a.addr.family == y.peer.family) {
                    sc.local = a.addr;
                    break;
                }
        if (sc.local.family == Family::none)
            throw std::runtime_error("ha.sync: no local address of the peer's family (" + y.peer.str() +
                                     "): set ha.sync.local, or list this balancer's address under "
                                     "interface.addresses");
        sc.port = y.port;
        sc.key_file = y.key_file;
        sc.refresh = y.refresh;
        sc.rate = y.rate;
        sync_dp_ = std::make_unique<CtlSyncDataplane>(cfg_.dataplane_socket);
        sync_ = std::make_unique<SyncPeer>(sc, *sync_dp_);
        sync_->start();
        spdlog::info("connection sync with {} port {} from {}{}", sc.peer.str(), sc.port, sc.local.str(),
                     sc.key_file.empty() ? " (no HMAC)" : ", HMAC key " + sc.key_file);
    }
    api_ = std::make_unique<AdminApi>(*this);
    admin_ = std::make_unique<AdminServer>(
        cfg_.admin_socket, AdminServer::AsyncHandler([this](const json& r, AdminServer::Reply reply) {
            api_->handle(r, std::move(reply));
        }));
    spdlog::info("fulcrumd: {} services from {}; admin socket {}; metrics {}; dataplane {}", cfg_.services.size(),
                 cfg_.path, cfg_.admin_socket, cfg_.metrics_listen.empty() ? "off" : "http://" + cfg_.metrics_listen + "/metrics",
                 cfg_.dataplane_socket);
}

Daemon::~Daemon() {
    // Anyone waiting for a change hears why it will not be confirmed (before the admin thread,
    // which may be waiting for such an answer, is joined).
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    if (reload_thread_.joinable()) reload_thread_.join();
    Applied a;
    a.error = "fulcrumd is stopping; the change was not confirmed by the dataplane";
    finish_waiters(~uint64_t{0}, a);
    admin_.reset();
    sync_.reset();
    ha_.reset();  // if run() did not stop it cleanly: no announcement, the lease runs out
    health_.reset();
    metrics_.reset();
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Daemon::wake() {
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
}

void Daemon::mark_changed() { ++change_seq_; }

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
        if (r.weight_override || r.admin_disabled) {
            // An override belongs to a configured server: a server added back later starts clean.
            spdlog::info("operator override of {} dropped (weight {}, {}): the server is no longer in the "
                         "configuration", key, r.weight_override ? std::to_string(*r.weight_override) : "configured",
                         r.admin_disabled ? "disabled" : "enabled");
            r.weight_override.reset();
            r.admin_disabled = false;
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
    link_->set_socket(cfg_.dataplane_socket);
    mark_changed();
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
    } catch (const ConfigError& e) {  // the loader has given back what parsing took
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
    for (const auto& w : config_warnings(next)) {
        spdlog::warn("reload: {}", w);
        warnings.push_back(w);
    }
    if (next.admin_socket != cfg_.admin_socket) {
        warnings.push_back("admin.socket changed: restart fulcrumd to apply; still serving " + cfg_.admin_socket);
        next.admin_socket = cfg_.admin_socket;
    }
    if (next.state_file != cfg_.state_file) {
        warnings.push_back("admin.state_file changed: restart fulcrumd to apply; still using " + cfg_.state_file);
        next.state_file = cfg_.state_file;
    }
    if (next.metrics_listen != cfg_.metrics_listen) {
        warnings.push_back("metrics.listen changed: restart fulcrumd to apply; still serving " + cfg_.metrics_listen);
        next.metrics_listen = cfg_.metrics_listen;
    }
    if (next.metrics_username != cfg_.metrics_username || next.metrics_password_file != cfg_.metrics_password_file) {
        warnings.push_back("metrics.basic_auth changed: restart fulcrumd to apply; the running credentials stay");
        next.metrics_username = cfg_.metrics_username;
        next.metrics_password_file = cfg_.metrics_password_file;
    }
    {
        // The virtual router and the interface are set up once: changing them under a running
        // pair would make this node flap. The VIPs themselves follow the services.
        // ha.track_services does follow reloads (update_ha reads the running configuration):
        // it must name services of the new configuration, which the loader checks, and a
        // service removed from both would otherwise stay tracked and fault the node forever.
        HaConfig h = next.ha;
        h.where = cfg_.ha.where;
        h.sync.where = cfg_.ha.sync.where;
        h.track_services = cfg_.ha.track_services;
        InterfaceConfig i = next.interface;
        i.where = cfg_.interface.where;
        if (!(h == cfg_.ha) || !(i == cfg_.interface)) {
            warnings.push_back("ha or interface settings changed: restart fulcrumd to apply them "
                               "(the peer takes over meanwhile); the running ones stay");
            std::vector<std::string> tracked = std::move(next.ha.track_services);
            next.ha = cfg_.ha;
            next.ha.track_services = std::move(tracked);
            next.interface = cfg_.interface;
        }
        // The front's ACL and SYN limit follow reloads; which interface it is on does not
        // (adding or removing the section, or moving it, needs a restart).
        if (next.xdp.enabled != cfg_.xdp.enabled || next.xdp.interface != cfg_.xdp.interface) {
            warnings.push_back("xdp section added, removed or its interface changed: restart fulcrumd to "
                               "apply; the running XDP front settings stay");
            next.xdp = cfg_.xdp;
        }
    }
    apply_config(std::move(next));  // a changed dataplane socket: the link reconnects there
    if (ha_) ha_->set_vips(vips_of(cfg_));
    if (xdp_) {
        xdp_->set_desired(xdp_desired(cfg_));
        if (!xdp_->sync()) warnings.push_back("xdp front not updated (fulcrumd keeps trying every second): " +
                               xdp_->status(false).error);
    }
    ++reloads_;
    last_reload_error_.clear();
    for (const auto& w : warnings) spdlog::warn("{}", w.get<std::string>());
    spdlog::info("configuration {} reloaded: {} services", cfg_.path, cfg_.services.size());
    wake();
    return {{"ok", true}, {"services", cfg_.services.size()}, {"warnings", warnings}, {"seq", change_seq_}};
}

// ---- health --------------------------------------------------------------------------------

void Daemon::on_health(const std::string& key, const CheckStatus& st) {
    {
        std::lock_guard lk(mu_);
        auto it = model_.servers.find(key);
        if (it == model_.servers.end()) return;
        ServerModel& sm = it->second;
        sm.health_checked = sm.health_checked || st.checked;
        sm.check_latency_ms = st.last_latency_ms;
        sm.checks_ok = st.successes;
        sm.checks_failed = st.failures;
        if (!st.up && sm.health_up) {
            // Health checks travel through the dataplane's exception interface: the failure
            // may be our own path missing, not the server. The main loop decides, after asking
            // the dataplane (settle_health).
            sm.health_down_pending = true;
            sm.health_reason = st.reason;
            health_pending_ = true;
        } else {
            const bool was = sm.health_up;
            sm.health_up = st.up;
            sm.health_held = false;
            sm.health_down_pending = false;
            held_failures_at_return_.erase(key);
            sm.health_reason = st.reason;
            if (was != st.up || !first_publish_done_) mark_changed();
        }
    }
    wake();
}

// Down verdicts are believed only if the dataplane answers now and was up for the whole time
// the failing checks took; otherwise the server is held in its last state until checks run
// again with the path in place (release_held_health).
void Daemon::settle_health() {
    {
        std::lock_guard lk(mu_);
        if (!health_pending_) return;
        health_pending_ = false;
    }
    sync_dataplane();  // a fresh answer: has the dataplane gone away?
    const DataplaneStatus dp = link_->status();
    std::lock_guard lk(mu_);
    for (auto& [key, sm] : model_.servers) {
        if (!sm.health_down_pending) continue;
        sm.health_down_pending = false;
        const bool path_was_up = dp.connected && Clock::now() - dp.up_since >= evidence_window(sm.cfg);
        if (!path_was_up) {
            if (!sm.health_held)
                spdlog::warn("server {} failed its checks while the dataplane path was away or just back ({}): "
                             "holding its last state until checks run again",
                             key, sm.health_reason);
            sm.health_held = true;
            continue;
        }
        sm.health_up = false;
        sm.health_held = false;
        held_failures_at_return_.erase(key);
        mark_changed();
    }
}

// Servers held up during a dataplane outage: once the dataplane is back, a server whose checks
// have failed `fall` more times since then is down for real; one that passes again clears
// through on_health.
void Daemon::release_held_health() {
    const DataplaneStatus dp = link_->status();
    const auto checks = health_->status();
    std::lock_guard lk(mu_);
    for (auto& [key, sm] : model_.servers) {
        if (!sm.health_held) continue;
        auto st = checks.find(key);
        if (st == checks.end()) {
            sm.health_held = false;
            continue;
        }
        if (st->second.up) {  // passed again: the transition already cleared it, or will
            sm.health_held = false;
            held_failures_at_return_.erase(key);
            continue;
        }
        if (!dp.connected) {
            held_failures_at_return_.erase(key);
            continue;
        }
        auto [base, fresh] = held_failures_at_return_.emplace(key, st->second.failures);
        (void)fresh;
        if (st->second.failures - base->second >= std::max(1u, sm.cfg.health.fall) &&
            Clock::now() - dp.up_since >= evidence_window(sm.cfg)) {
            spdlog::info("server {} still fails its checks with the dataplane back: down ({})", key, st->second.reason);
            sm.health_up = false;
            sm.health_held = false;
            sm.health_reason = st->second.reason;
            held_failures_at_return_.erase(base);
            mark_changed();
        }
    }
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
    // Servers are reached through the dataplane's exception interface: while it is away (or
    // its neighbour entries are being learned again) a failed resolution is our path missing,
    // not the server; the last MAC stays.
    const DataplaneStatus dp = link_->status();
    const bool path_settled = dp.connected && Clock::now() - dp.up_since >= std::chrono::seconds(3);
    std::lock_guard lk(mu_);
    for (auto& [key, d] : results) {
        auto it = model_.servers.find(key);
        if (it == model_.servers.end()) continue;
        ServerModel& sm = it->second;
        if (!d.mac && sm.mac && !path_settled) continue;
        if (sm.mac != d.mac || sm.l2_reason != d.reason) {
            if (d.mac)
                spdlog::info("server {} reachable at {} via {}", key, d.mac->str(), d.ifname.empty() ? "?" : d.ifname);
            else
                spdlog::warn("server {} unreachable: {}", key, d.reason);
            if (d.mac) sm.last_mac = d.mac;
            sm.mac = d.mac;
            sm.l2_reason = d.reason;
            mark_changed();
        }
    }
}

// ---- the dataplane -------------------------------------------------------------------------

void Daemon::sync_dataplane() {
    const DataplaneStatus before = link_->status();
    const DataplaneStatus now = link_->poll();
    if (!now.connected) {
        if (before.connected) {
            // In-flight confirmations cannot come any more.
            Applied a;
            a.error = "lost the dataplane at " + now.socket + " (" + now.error +
                      "): the change is kept and will be applied when it reconnects";
            finish_waiters(~uint64_t{0}, a);
        }
        return;
    }
    if (now.pid != adopted_pid_) {
        // A dataplane we have not published to: adopt its server slots and service ids so its
        // established connections keep their servers, then publish.
        if (!adopted_any_ && now.generation > 0)
            if (auto running = link_->running_snapshot()) adopt(*running);
        adopted_any_ = true;
        adopted_pid_ = now.pid;
        std::lock_guard lk(mu_);
        republish_ = true;
    }
    std::lock_guard lk(mu_);
    // The dataplane restarted (generation 0) or runs something else: publish ours again.
    if (first_publish_done_ && now.generation != published_gen_ && in_flight_gen_ == 0) republish_ = true;
}

void Daemon::adopt(const std::vector<uint8_t>& running) {
    SnapshotBuffer buf(running);
    auto v = SnapshotView::open(buf.bytes());
    if (!v) {
        spdlog::warn("the dataplane's running snapshot cannot be read ({}): not adopting its server slots", v.error());
        return;
    }
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
    if (!link_->status().connected) return;
    std::vector<uint8_t> bytes;
    uint64_t gen, seq;
    Applied a;
    {
        std::lock_guard lk(mu_);
        if ((change_seq_ == applied_seq_ || change_seq_ == unbuildable_seq_) && !republish_) return;
        // Give the first health checks a chance, so a restarted fulcrumd does not publish
        // every server down while the dataplane still forwards with the last snapshot.
        if (!first_publish_done_ && !health_->all_checked() && Clock::now() < checks_deadline_) return;
        gen = std::max(published_gen_, link_->status().generation) + 1;
        seq = change_seq_;
        try {
            bytes = build_snapshot(make_snapshot_spec(model_, gen, slots_, service_ids_));
        } catch (const std::exception& e) {
            ++publish_errors_;
            last_publish_error_ = e.what();
            spdlog::error("cannot build a snapshot: {}", e.what());
            unbuildable_seq_ = seq;  // nothing to retry until the model changes again
            republish_ = false;
            a.error = std::string("the change cannot be published (the dataplane keeps the previous generation): ") +
                      e.what();
        }
    }
    if (!a.error.empty()) {
        finish_waiters(seq, a);
        return;
    }
    {
        std::lock_guard lk(mu_);
        in_flight_seq_ = seq;
        in_flight_gen_ = gen;
        republish_ = false;
    }
    auto r = link_->publish(bytes);
    std::vector<uint8_t> bytes_copy;
    if (sync_ && r) bytes_copy = std::move(bytes);
    bytes = {};
    {
        std::lock_guard lk(mu_);
        in_flight_seq_ = 0;
        in_flight_gen_ = 0;
        if (!r) {
            ++publish_errors_;
            last_publish_error_ = r.error();
            republish_ = true;  // retry at the next tick
            spdlog::error("publishing generation {} failed: {}", gen, r.error());
            a.error = "generation " + std::to_string(gen) + " was not applied: " + r.error() +
                      "; the change is kept and fulcrumd retries every second";
        } else {
            if (sync_) {
                // Both balancers must agree on what a synced entry means (docs/sync-protocol.md).
                SnapshotBuffer buf(bytes_copy);
                if (auto v = SnapshotView::open(buf.bytes())) sync_->set_config_digest(sync_config_digest(*v));
            }
            published_gen_ = gen;
            applied_seq_ = std::max(applied_seq_, seq);
            ++publishes_;
            first_publish_done_ = true;
            last_publish_error_.clear();
            size_t up = 0;
            for (const auto& [k, sm] : model_.servers) up += sm.state() == ServerState::up;
            spdlog::info("published generation {}: {} of {} servers up", gen, up, model_.servers.size());
            a.ok = true;
            a.generation = gen;
        }
    }
    finish_waiters(seq, a);
}

// ---- confirmations -------------------------------------------------------------------------

void Daemon::when_applied(uint64_t seq, Done done, std::chrono::milliseconds wait) {
    Applied now;
    {
        std::lock_guard lk(mu_);
        if (applied_seq_ >= seq) {
            now.ok = true;
            now.generation = published_gen_;
        } else if (stopping_) {
            now.error = "fulcrumd is stopping; the change was not confirmed by the dataplane";
        } else if (const DataplaneStatus dp = link_->status(); !dp.connected) {
            now.error = "the dataplane at " + dp.socket + " is not connected (" + dp.error +
                        "): the change is kept and will be applied when it reconnects";
        } else {
            waiters_.push_back({seq, Clock::now() + wait, std::move(done)});
            wake();
            return;
        }
    }
    done(now);
}

void Daemon::finish_waiters(uint64_t up_to_seq, const Applied& a) {
    std::vector<Waiter> ready;
    {
        std::lock_guard lk(mu_);
        auto mid = std::stable_partition(waiters_.begin(), waiters_.end(),
                                         [&](const Waiter& w) { return w.seq > up_to_seq; });
        std::move(mid, waiters_.end(), std::back_inserter(ready));
        waiters_.erase(mid, waiters_.end());
    }
    for (auto& w : ready) w.done(a);
}

void Daemon::expire_waiters() {
    std::vector<Waiter> late;
    uint64_t in_flight = 0;
    {
        std::lock_guard lk(mu_);
        const auto now = Clock::now();
        auto mid = std::stable_partition(waiters_.begin(), waiters_.end(), [&](const Waiter& w) { return w.deadline > now; });
        std::move(mid, waiters_.end(), std::back_inserter(late));
        waiters_.erase(mid, waiters_.end());
        in_flight = in_flight_gen_;
    }
    for (auto& w : late) {
        Applied a;
        a.error = in_flight ? "not confirmed yet: generation " + std::to_string(in_flight) +
                                  " is still being loaded by the dataplane (see fulcrumctl status)"
                            : "not applied yet: the first publish waits for the first health checks, or the "
                              "dataplane is busy (see fulcrumctl status)";
        w.done(a);
    }
}

PublishStatus Daemon::publish_status() const {
    PublishStatus p;
    p.applied_generation = published_gen_;
    p.in_flight_generation = in_flight_gen_;
    p.changes_pending = change_seq_ > std::max(applied_seq_, in_flight_seq_);
    p.publishes = publishes_;
    p.publish_errors = publish_errors_;
    p.last_error = last_publish_error_;
    if (in_flight_gen_) p.state = "in_flight";
    else if (change_seq_ == applied_seq_ && !republish_) p.state = "idle";
    else if (change_seq_ == unbuildable_seq_ && !republish_) p.state = "failed";
    else if (!link_->status().connected) p.state = "waiting_for_dataplane";
    else if (!first_publish_done_) p.state = "waiting_for_health_checks";
    else p.state = "pending";
    return p;
}

// ---- main loop -----------------------------------------------------------------------------

void Daemon::update_metrics() {
    if (!metrics_) return;
    const auto counters = link_->counters();
    const DataplaneStatus dp = link_->status();
    const std::optional<HaStatus> ha = ha_ ? std::optional<HaStatus>(ha_->status()) : std::nullopt;
    const std::optional<SyncPeerStats> sync = sync_stats();
    const std::optional<XdpStatus> xdp = xdp_ ? std::optional<XdpStatus>(xdp_->status(true)) : std::nullopt;
    std::lock_guard lk(mu_);
    MetricsInput in;
    if (xdp) in.xdp = &*xdp;
    if (admin_) {
        for (size_t r = 0; r < kRefusalKinds; ++r)
            in.admin_refused[refusal_name(static_cast<Refusal>(r))] = admin_->stats().refused[r].load();
        in.admin_clients = admin_->stats().clients.load();
    }
    if (dp.connected) in.dataplane_control_refused = &dp.control_refused;
    in.model = &model_;
    in.dataplane = counters.get();
    if (ha) in.ha = &*ha;
    if (sync) in.sync = &*sync;
    in.published_generation = published_gen_;
    in.publishes = publishes_;
    in.publish_errors = publish_errors_;
    in.reloads = reloads_;
    in.reload_errors = reload_errors_;
    metrics_->update(in);
}

void Daemon::tick() {
    const auto now = Clock::now();
    const auto counters = link_->counters();
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
        const auto traffic =
            counters ? counters->servers_by_key() : std::unordered_map<std::string, const ServerTraffic*>{};
        for (auto it = model_.servers.begin(); it != model_.servers.end();) {
            const ServerModel& sm = it->second;
            const auto t = traffic.find(sm.key);
            const bool idle =
                t != traffic.end() && t->second->active_connections + t->second->inactive_connections == 0;
            if (sm.retired && (now - sm.retired_at >= cfg_.retire_after || idle)) {
                spdlog::info("retired server {} removed ({})", sm.key, idle ? "no connections left" : "grace period over");
                for (auto& svc : model_.services)
                    svc.servers.erase(std::remove(svc.servers.begin(), svc.servers.end(), sm.key), svc.servers.end());
                slots_.release(sm.key);
                it = model_.servers.erase(it);
                mark_changed();
            } else {
                ++it;
            }
        }
    }
    persist_state();  // overrides dropped by a reload, or a write that failed before
    resolve_all();
    sync_dataplane();
    release_held_health();
    publish();
    update_ha();
    // A restarted dataplane loads the front again, with empty maps: refilled here.
    if (xdp_) xdp_->sync();
    update_metrics();
}

void Daemon::update_ha() {
    if (!ha_ || !ha_->config().enabled) return;
    bool first_published;
    {
        std::lock_guard lk(mu_);
        first_published = first_publish_done_;
    }
    if (publish_hold_ && first_published) {
        publish_hold_ = false;
        if (sync_hold_) ha_->set_hold(true, kHoldSync);
        spdlog::info("first publish done{}", sync_hold_ ? "; preemption held until the bulk connection sync"
                                                         : ": preemption no longer held");
    }
    if (sync_hold_ && sync_ && sync_->bulk_complete()) {
        sync_hold_ = false;
        if (!publish_hold_) spdlog::info("bulk connection sync complete: preemption no longer held");
    }
    if (!publish_hold_ && !sync_hold_ && hold_set_) ha_->set_hold(false, {});
    hold_set_ = publish_hold_ || sync_hold_;
    const DataplaneStatus dp = link_->status();
    ha_->set_fault("uplink link down", dp.connected && !dp.uplink_link_up);
    std::lock_guard lk(mu_);
    const std::set<std::string> tracked(cfg_.ha.track_services.begin(), cfg_.ha.track_services.end());
    for (const auto& name : tracked_)
        if (!tracked.count(name)) ha_->set_fault("no server up in " + name, false);
    tracked_ = tracked;
    for (const auto& name : tracked) {
        bool any_up = false;
        for (const auto& svc : model_.services) {
            if (svc.cfg.name != name) continue;
            for (const auto& key : svc.servers) {
                auto it = model_.servers.find(key);
                if (it != model_.servers.end() && it->second.state() == ServerState::up) any_up = true;
            }
        }
        // Before the first checks finished every server reads down: no fault yet.
        ha_->set_fault("no server up in " + name, first_publish_done_ && !any_up);
    }
}

std::optional<SyncPeerStats> Daemon::sync_stats() const {
    if (!sync_) return std::nullopt;
    return sync_->stats();
}

std::optional<HaStatus> Daemon::ha_status() const {
    if (!ha_) return std::nullopt;
    return ha_->status();
}

Expected<HaStatus> Daemon::ha_action(HaAction a) {
    if (!ha_ || !ha_->config().enabled) {
        std::lock_guard lk(mu_);
        return Error{"failover is not configured: add an 'ha:' section to " + cfg_.path +
                     " (docs/configuration.md, \"ha\") and restart fulcrumd"};
    }
    switch (a) {
        case HaAction::takeover:
            if (ha_->config().priority == 255)
                return Error{"this node is the address owner (priority 255): it is master whenever it runs"};
            return ha_->takeover();
        case HaAction::release: return ha_->release();
        case HaAction::resume: return ha_->resume();
        case HaAction::none: break;
    }
    return ha_->status();
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
        settle_health();
        bool dirty;
        {
            std::lock_guard lk(mu_);
            dirty = change_seq_ != applied_seq_ || republish_;
        }
        if (dirty) {
            // Health or operator changes publish at once, not at the next tick.
            resolve_all();
            if (!link_->status().connected) sync_dataplane();
            publish();
        }
        if (now >= next_tick) {
            tick();
            next_tick = now + kTick;
        }
        expire_waiters();
        auto wake_at = next_tick;
        {
            std::lock_guard lk(mu_);
            for (const auto& w : waiters_) wake_at = std::min(wake_at, w.deadline);
        }
        const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake_at - Clock::now()).count();
        pollfd pfds[3] = {{sfd, POLLIN, 0}, {wake_fd_, POLLIN, 0}, {neighbors_->event_fd(), POLLIN, 0}};
        ::poll(pfds, 3, static_cast<int>(std::clamp<long long>(wait, 0, 1000)));
        if (pfds[1].revents & POLLIN) {
            uint64_t v;
            (void)!::read(wake_fd_, &v, sizeof v);
        }
        if (pfds[2].revents & POLLIN && neighbors_->process_events()) {
            std::lock_guard lk(mu_);
            mark_changed();  // re-resolve and publish if anything moved
        }
        if (pfds[0].revents & POLLIN) {
            signalfd_siginfo si;
            while (::read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGHUP) {
                    // Parsing a large file takes a while: off the main loop, so health changes
                    // keep publishing meanwhile. SIGHUPs during a reload are coalesced.
                    if (reloading_.exchange(true)) {
                        spdlog::info("SIGHUP: a reload is already running");
                    } else {
                        spdlog::info("SIGHUP: reloading the configuration");
                        if (reload_thread_.joinable()) reload_thread_.join();
                        reload_thread_ = std::thread([this] {
                            // As on the admin socket: nothing a reload throws ends fulcrumd
                            // (an exception leaving a thread would call std::terminate).
                            try {
                                reload();
                            } catch (const std::exception& e) {
                                spdlog::error("SIGHUP: the reload failed: {}; fix the cause and reload again",
                                              e.what());
                                std::lock_guard lk(mu_);
                                ++reload_errors_;
                                last_reload_error_ = e.what();
                            }
                            reloading_.store(false);
                        });
                    }
                } else {
                    if (ha_ && ha_->config().enabled)
                        spdlog::info("signal {}: stopping; handing the VIPs to the peer (priority-0 advert)",
                                     si.ssi_signo);
                    else
                        spdlog::info("signal {}: stopping; the dataplane keeps forwarding with generation {}",
                                     si.ssi_signo, published_gen_);
                    stop = true;
                }
            }
        }
    }
    ::close(sfd);
    if (ha_) ha_->stop(true);  // a clean stop: the peer takes over after its skew time
    if (sync_) sync_->stop();
    if (reload_thread_.joinable()) reload_thread_.join();
    return 0;
}

// ---- for the admin API ---------------------------------------------------------------------

Daemon::View Daemon::view(bool fresh_counters) {
    View v;
    v.counters = fresh_counters ? link_->fetch_counters() : link_->counters();
    v.dataplane = link_->status();
    std::lock_guard lk(mu_);
    v.config_path = cfg_.path;
    v.metrics_listen = cfg_.metrics_listen;
    v.model = model_;
    v.model.config = nullptr;  // the copy must not point into our configuration
    v.slots = slots_.assigned();
    v.publish = publish_status();
    v.uptime_seconds = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count();
    v.reloads = reloads_;
    v.reload_errors = reload_errors_;
    v.last_reload_error = last_reload_error_;
    if (ha_) v.ha = ha_->status();
    if (sync_) v.sync = sync_->stats();
    if (xdp_) v.xdp = xdp_->status(false);
    return v;
}

std::optional<Daemon::XdpView> Daemon::xdp_view() const {
    if (!xdp_) return std::nullopt;
    XdpView x;
    x.status = xdp_->status(true);
    std::lock_guard lk(mu_);
    x.cfg = cfg_.xdp;
    x.vips = vips_of(cfg_);
    return x;
}

Expected<Daemon::Change> Daemon::change_server(const std::string& service, const std::string& server, ServerOp op,
                                               uint32_t weight) {
    std::unique_lock lk(mu_);
    bool service_found = false;
    std::vector<ServerModel*> matches;
    for (auto& [key, sm] : model_.servers) {
        if (sm.service != service) continue;
        service_found = true;
        const std::string a = sm.cfg.address.is_v6() ? "[" + sm.cfg.address.str() + "]" : sm.cfg.address.str();
        if (server == a + ":" + std::to_string(sm.port) || server == sm.cfg.address.str() || server == key)
            matches.push_back(&sm);
    }
    if (!service_found) {
        const bool exists = std::any_of(model_.services.begin(), model_.services.end(),
                                        [&](const ServiceModel& s) { return s.cfg.name == service; });
        return Error{exists ? "service '" + service + "' has no servers" : "no service named '" + service + "'"};
    }
    if (matches.empty())
        return Error{"service '" + service + "' has no server '" + server + "' (give its address, or address:port)"};
    if (matches.size() > 1) return Error{"'" + server + "' matches several servers of '" + service + "'; give address:port"};
    ServerModel& sm = *matches[0];
    if (sm.retired) return Error{"server " + sm.key + " was removed from the configuration and is retiring"};
    switch (op) {
        case ServerOp::set_weight: sm.weight_override = weight; break;
        case ServerOp::drain: sm.weight_override = 0; break;
        case ServerOp::disable: sm.admin_disabled = true; break;
        case ServerOp::enable:  // back in service, at the configured weight
            sm.admin_disabled = false;
            if (sm.weight_override && *sm.weight_override == 0) sm.weight_override.reset();
            break;
    }
    mark_changed();
    spdlog::info("admin: {} -> state {}, weight {}", sm.key, server_state_name(sm.state()), sm.weight());
    wake();
    Change c{sm.key, server_state_name(sm.state()), sm.weight(), change_seq_, {}};
    lk.unlock();
    c.persist_error = persist_state();
    return c;
}

// ---- the state file ------------------------------------------------------------------------

void Daemon::load_state() {
    std::lock_guard sl(state_mu_);
    state_file_ = std::make_unique<StateFile>(cfg_.state_file);
    auto loaded = state_file_->load();
    if (!loaded) {
        state_error_ = loaded.error();
        if (state_file_->not_a_file())
            spdlog::error("{}; starting without operator overrides", loaded.error());
        else
            spdlog::error("{}; starting without operator overrides (the file is kept: it moves to {}.bad at the "
                          "first drain, disable, enable or set-weight)",
                          loaded.error(), cfg_.state_file);
        return;
    }
    state_saved_ = loaded.value();
    size_t applied = 0;
    for (const auto& [key, ov] : state_saved_) {
        auto it = model_.servers.find(key);
        if (it == model_.servers.end() || it->second.retired) {
            // The next tick writes the file without it.
            spdlog::info("operator override of {} dropped (weight {}, {}): the server is no longer in the "
                         "configuration", key, ov.weight ? std::to_string(*ov.weight) : "configured",
                         ov.disabled ? "disabled" : "enabled");
            continue;
        }
        it->second.weight_override = ov.weight;
        it->second.admin_disabled = ov.disabled;
        ++applied;
        spdlog::info("operator override of {} from {}: weight {}, {}", key, cfg_.state_file,
                     ov.weight ? std::to_string(*ov.weight) : "configured", ov.disabled ? "disabled" : "enabled");
    }
    if (applied) mark_changed();
}

Overrides Daemon::overrides() const {
    Overrides o;
    for (const auto& [key, sm] : model_.servers) {
        if (sm.retired || (!sm.weight_override && !sm.admin_disabled)) continue;
        o[key] = ServerOverride{sm.weight_override, sm.admin_disabled};
    }
    return o;
}

std::string Daemon::persist_state() {
    std::lock_guard sl(state_mu_);
    if (!state_file_) return {};
    Overrides now;
    {
        std::lock_guard lk(mu_);
        now = overrides();
    }
    if (now == state_saved_ && !state_write_failed_) return {};
    try {
        if (state_file_->save(now))
            spdlog::warn("state file {}: the file that could not be read at start was moved to {}",
                         state_file_->path(), state_file_->kept_bad());
        if (state_write_failed_) spdlog::info("state file {} written again", state_file_->path());
        state_saved_ = std::move(now);
        state_write_failed_ = false;
        state_error_.clear();
        return {};
    } catch (const std::exception& e) {
        if (state_error_ != e.what())
            spdlog::error("{}: the operator's overrides apply now but would be lost at a restart of fulcrumd; "
                          "retrying every second",
                          e.what());
        state_error_ = e.what();
        state_write_failed_ = true;
        return state_error_;
    }
}

Daemon::StateFileStatus Daemon::state_file_status() const {
    std::lock_guard sl(state_mu_);
    StateFileStatus st;
    if (state_file_) st.path = state_file_->path();
    st.error = state_error_;
    st.overrides = state_saved_.size();
    return st;
}

}  // namespace fulcrum::control
