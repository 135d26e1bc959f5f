#include "fulcrum/control/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>

namespace fulcrum::control {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using Labels = std::map<std::string, std::string>;

namespace {

std::string label_key(const Labels& l) {
    std::string k;
    for (const auto& [a, b] : l) k += a + "=" + b + ";";
    return k;
}

// The series of one metric family, by label set; series not set since the previous sweep
// (servers or services gone) are removed from the family.
template <class Metric, class Value>
class Series {
public:
    explicit Series(Family<Metric>& fam) : fam_(&fam) {}
    void sweep() {
        for (auto it = entries_.begin(); it != entries_.end();) {
            if (!seen_.count(it->first)) {
                fam_->Remove(it->second.metric);
                it = entries_.erase(it);
            } else {
                ++it;
            }
        }
        seen_.clear();
    }

protected:
    struct Entry {
        Metric* metric = nullptr;
        Value last{};
    };
    Entry& entry(const Labels& l) {
        const std::string k = label_key(l);
        seen_.insert(k);
        Entry& e = entries_[k];
        if (!e.metric) e.metric = &fam_->Add(l);
        return e;
    }

private:
    Family<Metric>* fam_;
    std::map<std::string, Entry> entries_;
    std::set<std::string> seen_;
};

// Set while metrics_reference() builds a Metrics::Impl: every family declared is listed.
thread_local std::vector<MetricReference>* g_reference = nullptr;

void declare(const std::string& name, const char* type, const std::string& help) {
    if (g_reference) g_reference->push_back({name, type, help});
}

// A counter family fed from running totals: adds the increase since the last value seen,
// times `unit` (the metric's unit per step of the total: 1 / the TSC rate for a cycle count
// exported as seconds).
class MirroredCounters : public Series<Counter, uint64_t> {
public:
    MirroredCounters(prometheus::Registry& r, const std::string& name, const std::string& help)
        : Series(prometheus::BuildCounter().Name(name).Help(help).Register(r)) {
        declare(name, "counter", help);
    }
    void set_total(const Labels& l, uint64_t total, double unit = 1.0) {
        Entry& e = entry(l);
        const uint64_t delta = total >= e.last ? total - e.last : total;  // a restart resets totals
        if (delta) e.metric->Increment(static_cast<double>(delta) * unit);
        e.last = total;
    }
};

class Gauges : public Series<Gauge, double> {
public:
    Gauges(prometheus::Registry& r, const std::string& name, const std::string& help)
        : Series(prometheus::BuildGauge().Name(name).Help(help).Register(r)) {
        declare(name, "gauge", help);
    }
    void set(const Labels& l, double v) { entry(l).metric->Set(v); }
};


}  // namespace

struct Metrics::Impl {
    std::unique_ptr<prometheus::Exposer> exposer;
    std::shared_ptr<prometheus::Registry> reg = std::make_shared<prometheus::Registry>();
    Gauges dataplane_up{*reg, "fulcrum_dataplane_up", "1 if fulcrumd reaches the dataplane's control socket"};
    Gauges generation{*reg, "fulcrum_snapshot_generation", "Generation of the last snapshot fulcrumd published"};
    Gauges dp_generation{*reg, "fulcrum_dataplane_snapshot_generation", "Generation of the snapshot the dataplane runs"};
    MirroredCounters publishes{*reg, "fulcrum_publishes_total", "Snapshots published to the dataplane"};
    MirroredCounters publish_errors{*reg, "fulcrum_publish_errors_total", "Snapshot publications that failed"};
    MirroredCounters reloads{*reg, "fulcrum_config_reloads_total", "Configuration reloads applied"};
    MirroredCounters reload_errors{*reg, "fulcrum_config_reload_errors_total", "Configuration reloads refused"};
    MirroredCounters admin_refusals{*reg, "fulcrum_admin_refusals_total",
                                    "Admin socket clients refused or disconnected, by reason"};
    Gauges admin_clients{*reg, "fulcrum_admin_clients", "Admin socket clients connected"};
    MirroredCounters dp_control_refusals{*reg, "fulcrum_dataplane_control_refusals_total",
                                         "Dataplane control socket clients refused or disconnected, by reason"};

    Gauges ha_state{*reg, "fulcrum_ha_state",
                    "1 for the VRRP state this node is in (master, backup, fault, initialize), 0 for the others"};
    Gauges ha_priority{*reg, "fulcrum_ha_priority", "Priority this node's adverts carry"};
    Gauges ha_vips_owned{*reg, "fulcrum_ha_vips_on_interface", "1 if the VIPs are on the exception interface"};
    Gauges ha_lease_active{*reg, "fulcrum_ha_lease_active", "1 if the dataplane was last told active"};
    Gauges ha_faults{*reg, "fulcrum_ha_faults", "Faults keeping this node out of master"};
    MirroredCounters ha_transitions{*reg, "fulcrum_ha_transitions_total", "VRRP transitions, by direction"};
    MirroredCounters ha_adverts{*reg, "fulcrum_ha_adverts_total", "VRRP adverts, by direction (sent, received)"};
    MirroredCounters ha_invalid{*reg, "fulcrum_ha_adverts_invalid_total", "VRRP adverts refused, by reason"};
    MirroredCounters ha_announce{*reg, "fulcrum_ha_announcements_total",
                                 "Gratuitous ARP and unsolicited NA sent, by kind (garp, na)"};
    MirroredCounters ha_lease{*reg, "fulcrum_ha_lease_renewals_total", "Dataplane fencing lease renewals"};
    MirroredCounters ha_lease_errors{*reg, "fulcrum_ha_lease_errors_total",
                                     "Failed lease requests (dataplane unreachable or refusing)"};

    MirroredCounters sync_records{*reg, "fulcrum_sync_records_total",
                                  "Connection-sync records, by what happened (drained, sent, received, installed, bulk_received)"};
    MirroredCounters sync_refused{*reg, "fulcrum_sync_datagrams_refused_total", "Sync datagrams refused, by reason"};
    MirroredCounters sync_dropped{*reg, "fulcrum_sync_records_dropped_total",
                                  "Sync records not installed, by reason (unknown_server, ring_full, install_failed, before_publish)"};
    MirroredCounters sync_overflows{*reg, "fulcrum_sync_receive_overflows_total",
                                    "Sync datagrams the kernel dropped because the sync socket's receive buffer was full"};
    MirroredCounters sync_gaps{*reg, "fulcrum_sync_sequence_gaps_total", "Sequence gaps seen from the peer (each triggers a bulk resync)"};
    Gauges sync_bulk{*reg, "fulcrum_sync_bulk_complete", "1 once the bulk sync from the peer completed"};
    Gauges sync_lag{*reg, "fulcrum_sync_send_lag_seconds", "Drain-to-send lag of sync records over the recent window, by quantile"};

    MirroredCounters xdp_packets{*reg, "fulcrum_xdp_packets_total",
                                 "Frames the XDP front handled, by verdict (redirect, pass, drop) and reason"};
    Gauges xdp_attached{*reg, "fulcrum_xdp_attached",
                        "1 if Fulcrum's XDP front is attached to its interface and its maps hold the configuration"};

    MirroredCounters svc_packets{*reg, "fulcrum_service_packets_total", "Packets forwarded for the service"};
    MirroredCounters svc_bytes{*reg, "fulcrum_service_bytes_total", "Bytes forwarded for the service"};
    MirroredCounters svc_conns{*reg, "fulcrum_service_new_connections_total", "New connections to the service"};

    MirroredCounters srv_packets{*reg, "fulcrum_server_packets_total", "Packets forwarded to the server"};
    MirroredCounters srv_bytes{*reg, "fulcrum_server_bytes_total", "Bytes forwarded to the server"};
    MirroredCounters srv_conns{*reg, "fulcrum_server_new_connections_total", "New connections sent to the server"};
    Gauges srv_active{*reg, "fulcrum_server_active_connections",
                      "Open connections to the server (opening, established, UDP flows)"};
    Gauges srv_inactive{*reg, "fulcrum_server_inactive_connections",
                        "Closing connections to the server (FIN or RST seen, entry not yet expired)"};
    Gauges srv_up{*reg, "fulcrum_server_up", "1 if the server takes new connections (healthy, enabled, weight > 0)"};
    Gauges srv_healthy{*reg, "fulcrum_server_healthy", "1 if the server passes its health check and is resolved"};
    Gauges srv_weight{*reg, "fulcrum_server_weight", "Effective weight of the server"};
    Gauges srv_latency{*reg, "fulcrum_server_check_latency_seconds", "Duration of the last health check"};
    MirroredCounters srv_checks{*reg, "fulcrum_server_checks_total", "Health checks run, by result"};

    MirroredCounters dp_rx{*reg, "fulcrum_dataplane_received_packets_total", "Frames received on the uplink, by queue"};
    MirroredCounters dp_fwd{*reg, "fulcrum_dataplane_forwarded_packets_total", "Frames forwarded to servers, by queue"};
    MirroredCounters dp_replied{*reg, "fulcrum_dataplane_replied_packets_total", "ICMP replies sent, by queue"};
    MirroredCounters dp_busy{*reg, "fulcrum_dataplane_busy_seconds_total",
                             "Time the worker spent in polls that received frames, by queue (its rate is the worker's load, 0 to 1)"};
    MirroredCounters dp_kernel{*reg, "fulcrum_dataplane_kernel_packets_total",
                               "Frames on the exception path, by queue and direction"};
    MirroredCounters dp_drops{*reg, "fulcrum_dataplane_drops_total", "Frames dropped, by reason"};
    Gauges ct_entries{*reg, "fulcrum_conntable_entries", "Connection-table entries, by queue"};
    Gauges ct_capacity{*reg, "fulcrum_conntable_capacity", "Connection-table capacity, by queue"};
    MirroredCounters ct_evictions{*reg, "fulcrum_conntable_evictions_total", "Live entries evicted to make room"};
    MirroredCounters ct_full{*reg, "fulcrum_conntable_full_total", "Inserts refused because the bucket was full"};

    MirroredCounters port_rx{*reg, "fulcrum_port_received_packets_total", "Packets received by the port"};
    MirroredCounters port_tx{*reg, "fulcrum_port_transmitted_packets_total", "Packets sent by the port"};
    MirroredCounters port_rx_bytes{*reg, "fulcrum_port_received_bytes_total", "Bytes received by the port"};
    MirroredCounters port_tx_bytes{*reg, "fulcrum_port_transmitted_bytes_total", "Bytes sent by the port"};
    MirroredCounters port_missed{*reg, "fulcrum_port_missed_packets_total", "Packets the port dropped for lack of RX descriptors"};
    MirroredCounters port_errors{*reg, "fulcrum_port_errors_total", "Port errors, by direction"};
};

namespace {
// Compares without an early exit, so response times do not reveal how much of a guess matched.
bool same_secret(const std::string& a, const std::string& b) {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
    return diff == 0;
}

std::string read_password(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read metrics.basic_auth.password_file " + path + ": " + std::strerror(errno) +
                                      " (create it with the password on its first line, readable by fulcrumd only)");
    std::string pw;
    std::getline(in, pw);
    if (!pw.empty() && pw.back() == '\r') pw.pop_back();
    if (pw.empty())
        throw std::runtime_error("metrics.basic_auth.password_file " + path +
                                 " holds no password (its first line is empty); write the password on the first line");
    return pw;
}
}  // namespace

Metrics::Metrics(const std::string& listen, const MetricsAuth& auth) : impl_(std::make_unique<Impl>()), listen_(listen) {
    if (auth.username.empty() != auth.password_file.empty())
        throw std::runtime_error("metrics.basic_auth needs both username and password_file");
    const std::string password = auth.username.empty() ? std::string() : read_password(auth.password_file);
    // civetweb serves each connection on one worker thread until it closes: a short request
    // timeout and no keep-alive bound how long an idle client holds one, and several workers
    // keep scrapes going while a few are held.
    std::vector<std::string> options = {"listening_ports", listen,
                                        "num_threads", std::to_string(kNumThreads),
                                        "request_timeout_ms", std::to_string(kRequestTimeoutMs),
                                        "enable_keep_alive", "no"};
    try {
        impl_->exposer = std::make_unique<prometheus::Exposer>(std::move(options));
    } catch (const std::exception& e) {
        throw std::runtime_error("cannot serve metrics on " + listen + ": " + e.what() +
                                 " (is the address local and the port free?)");
    }
    if (!auth.username.empty())
        impl_->exposer->RegisterAuth(
            [user = auth.username, password](const std::string& u, const std::string& p) {
                const bool user_ok = same_secret(u, user);
                const bool password_ok = same_secret(p, password);  // compared whatever the user name
                return user_ok && password_ok;
            },
            "fulcrum metrics");
    impl_->exposer->RegisterCollectable(impl_->reg);
}

int Metrics::port() const {
    const auto ports = impl_->exposer->GetListeningPorts();
    return ports.empty() ? 0 : ports.front();
}

Metrics::~Metrics() = default;

std::vector<MetricReference> metrics_reference() {
    std::vector<MetricReference> out;
    g_reference = &out;
    try {
        Metrics::Impl impl;  // declares every family on a registry of its own, serves nothing
        g_reference = nullptr;
    } catch (...) {
        g_reference = nullptr;
        throw;
    }
    return out;
}

std::string metrics_reference_markdown() {
    std::string md = "| metric | type | meaning |\n|---|---|---|\n";
    for (const auto& m : metrics_reference()) md += "| `" + m.name + "` | " + m.type + " | " + m.help + " |\n";
    return md;
}

void Metrics::update(const MetricsInput& in) {
    Impl& m = *impl_;
    m.dataplane_up.set({}, in.dataplane ? 1 : 0);
    m.generation.set({}, static_cast<double>(in.published_generation));
    m.publishes.set_total({}, in.publishes);
    m.publish_errors.set_total({}, in.publish_errors);
    m.reloads.set_total({}, in.reloads);
    m.reload_errors.set_total({}, in.reload_errors);
    for (const auto& [reason, n] : in.admin_refused) m.admin_refusals.set_total({{"reason", reason}}, n);
    m.admin_clients.set({}, static_cast<double>(in.admin_clients));
    if (in.dataplane_control_refused)
        for (const auto& [reason, n] : *in.dataplane_control_refused) m.dp_control_refusals.set_total({{"reason", reason}}, n);

    if (in.ha && in.ha->ha) {
        const HaStatus& h = *in.ha;
        for (const char* st : {"master", "backup", "fault", "initialize"})
            m.ha_state.set({{"state", st}}, h.state == st ? 1 : 0);
        m.ha_priority.set({}, h.priority);
        m.ha_vips_owned.set({}, h.vips_on_interface ? 1 : 0);
        m.ha_lease_active.set({}, h.lease_active ? 1 : 0);
        m.ha_faults.set({}, static_cast<double>(h.faults.size()));
        m.ha_transitions.set_total({{"to", "master"}}, h.became_master);
        m.ha_transitions.set_total({{"to", "backup"}}, h.left_master);
        m.ha_adverts.set_total({{"direction", "sent"}}, h.adverts_sent);
        m.ha_adverts.set_total({{"direction", "received"}}, h.adverts_received);
        for (const auto& [reason, n] : h.invalid_by_reason) m.ha_invalid.set_total({{"reason", reason}}, n);
        m.ha_announce.set_total({{"kind", "garp"}}, h.garp_sent);
        m.ha_announce.set_total({{"kind", "na"}}, h.na_sent);
        m.ha_lease.set_total({}, h.lease_renewals);
        m.ha_lease_errors.set_total({}, h.lease_errors);
    }

    if (in.sync) {
        const SyncPeerStats& y = *in.sync;
        m.sync_records.set_total({{"event", "drained"}}, y.records_drained);
        m.sync_records.set_total({{"event", "sent"}}, y.records_sent);
        m.sync_records.set_total({{"event", "received"}}, y.records_received);
        m.sync_records.set_total({{"event", "installed"}}, y.installed);
        m.sync_records.set_total({{"event", "bulk_received"}}, y.bulk_records_received);
        for (size_t i = 0; i < kSyncErrorCount; ++i)
            if (y.refused[i]) m.sync_refused.set_total({{"reason", sync_error_name(static_cast<SyncError>(i))}}, y.refused[i]);
        m.sync_dropped.set_total({{"reason", "unknown_server"}}, y.install_unknown_server);
        m.sync_dropped.set_total({{"reason", "ring_full"}}, y.install_ring_full);
        m.sync_dropped.set_total({{"reason", "install_failed"}}, y.install_failed);
        m.sync_dropped.set_total({{"reason", "before_publish"}}, y.records_before_publish);
        m.sync_overflows.set_total({}, y.receive_overflows);
        m.sync_gaps.set_total({}, y.seq_gaps);
        m.sync_bulk.set({}, y.bulk_complete ? 1 : 0);
        m.sync_lag.set({{"quantile", "0.5"}}, static_cast<double>(y.send_lag.p50_us) / 1e6);
        m.sync_lag.set({{"quantile", "0.99"}}, static_cast<double>(y.send_lag.p99_us) / 1e6);
    }

    if (in.xdp) {
        const XdpStatus& x = *in.xdp;
        m.xdp_attached.set({{"interface", x.interface}}, x.attached && x.applied ? 1 : 0);
        // A new program (the dataplane restarted) starts from zero: a counter reset.
        if (x.packets)
            for (size_t r = 0; r < kXdpReasonCount; ++r)
                m.xdp_packets.set_total({{"verdict", kXdpReasons[r].verdict}, {"reason", kXdpReasons[r].reason}},
                                        (*x.packets)[r]);
    }

    // Per server: state from the model, traffic from the dataplane.
    const auto traffic =
        in.dataplane ? in.dataplane->servers_by_key() : std::unordered_map<std::string, const ServerTraffic*>{};
    if (in.model) {
        for (const auto& [key, sm] : in.model->servers) {
            const std::string addr = sm.cfg.address.is_v6() ? "[" + sm.cfg.address.str() + "]" : sm.cfg.address.str();
            const Labels l{{"service", sm.service}, {"server", addr + ":" + std::to_string(sm.port)}};
            m.srv_up.set(l, sm.state() == ServerState::up ? 1 : 0);
            m.srv_healthy.set(l, sm.healthy() ? 1 : 0);
            m.srv_weight.set(l, sm.weight());
            m.srv_latency.set(l, sm.check_latency_ms / 1000.0);
            Labels ok = l, bad = l;
            ok["result"] = "ok";
            bad["result"] = "failed";
            m.srv_checks.set_total(ok, sm.checks_ok);
            m.srv_checks.set_total(bad, sm.checks_failed);
            if (auto found = traffic.find(key); found != traffic.end()) {
                const ServerTraffic* s = found->second;
                m.srv_packets.set_total(l, s->packets);
                m.srv_bytes.set_total(l, s->bytes);
                m.srv_conns.set_total(l, s->new_connections);
                m.srv_active.set(l, static_cast<double>(s->active_connections));
                m.srv_inactive.set(l, static_cast<double>(s->inactive_connections));
            }
        }
    }
    if (in.dataplane) {
        const DataplaneCounters& d = *in.dataplane;
        m.dp_generation.set({}, static_cast<double>(d.generation));
        for (const auto& s : d.services) {
            const Labels l{{"service", s.name}};
            m.svc_packets.set_total(l, s.packets);
            m.svc_bytes.set_total(l, s.bytes);
            m.svc_conns.set_total(l, s.new_connections);
        }
        const double seconds_per_cycle = d.tsc_hz ? 1.0 / static_cast<double>(d.tsc_hz) : 0.0;
        for (const auto& q : d.queues) {
            const std::string qn = std::to_string(q.queue);
            m.dp_rx.set_total({{"queue", qn}}, q.rx);
            m.dp_fwd.set_total({{"queue", qn}}, q.forwarded);
            m.dp_replied.set_total({{"queue", qn}}, q.replied);
            if (d.tsc_hz) m.dp_busy.set_total({{"queue", qn}}, q.busy_cycles, seconds_per_cycle);
            m.dp_kernel.set_total({{"queue", qn}, {"direction", "to_kernel"}}, q.kernel_tx);
            m.dp_kernel.set_total({{"queue", qn}, {"direction", "from_kernel"}}, q.kernel_rx);
        }
        for (const auto& [reason, n] : d.drops) m.dp_drops.set_total({{"reason", reason}}, n);
        for (const auto& c : d.conntables) {
            const Labels l{{"queue", std::to_string(c.queue)}};
            m.ct_entries.set(l, static_cast<double>(c.entries));
            m.ct_capacity.set(l, static_cast<double>(c.capacity));
            m.ct_evictions.set_total(l, c.evictions);
            m.ct_full.set_total(l, c.full);
        }
        for (const auto& p : d.ports) {
            const Labels l{{"port", p.name}, {"role", p.role}};
            m.port_rx.set_total(l, p.rx_packets);
            m.port_tx.set_total(l, p.tx_packets);
            m.port_rx_bytes.set_total(l, p.rx_bytes);
            m.port_tx_bytes.set_total(l, p.tx_bytes);
            m.port_missed.set_total(l, p.rx_missed);
            Labels rx = l, tx = l;
            rx["direction"] = "rx";
            tx["direction"] = "tx";
            m.port_errors.set_total(rx, p.rx_errors);
            m.port_errors.set_total(tx, p.tx_errors);
        }
    }
    for (auto* g : {&m.srv_up, &m.srv_healthy, &m.srv_weight, &m.srv_latency}) g->sweep();
    m.srv_checks.sweep();
    // Traffic series follow the dataplane; while it is unreachable they keep their values.
    if (in.dataplane) {
        m.srv_active.sweep();
        m.srv_inactive.sweep();
        for (auto* c : {&m.srv_packets, &m.srv_bytes, &m.srv_conns, &m.svc_packets, &m.svc_bytes, &m.svc_conns})
            c->sweep();
    }
}

}  // namespace fulcrum::control
