#include "fulcrum/control/admin_counters.hpp"

#include <ctime>

namespace fulcrum::control {

using nlohmann::json;

void visit_counters(DataplaneCounters& c, const CounterVisitor& f) {
    for (auto& s : c.services) {
        const std::string p = "service " + s.name + " ";
        f({"dataplane", s.name, p + "packets"}, s.packets);
        f({"dataplane", s.name, p + "bytes"}, s.bytes);
        f({"dataplane", s.name, p + "new_connections"}, s.new_connections);
    }
    for (auto& s : c.servers) {
        const std::string p = "server " + DataplaneCounters::server_key(s) + " ";
        f({"dataplane", s.service, p + "packets"}, s.packets);
        f({"dataplane", s.service, p + "bytes"}, s.bytes);
        f({"dataplane", s.service, p + "new_connections"}, s.new_connections);
    }
}

void visit_counters(Model& m, const CounterVisitor& f) {
    for (auto& [key, sm] : m.servers) {
        f({"health", sm.service, "server " + key + " checks_ok"}, sm.checks_ok);
        f({"health", sm.service, "server " + key + " checks_failed"}, sm.checks_failed);
    }
}

void visit_counters(FulcrumdCounters& c, const CounterVisitor& f) {
    f({"fulcrumd", "", "publishes"}, c.publishes);
    f({"fulcrumd", "", "publish_errors"}, c.publish_errors);
    f({"fulcrumd", "", "reloads"}, c.reloads);
    f({"fulcrumd", "", "reload_errors"}, c.reload_errors);
}

void visit_counters(HaStatus& h, const CounterVisitor& f) {
    const std::pair<const char*, uint64_t*> fields[] = {
        {"transitions", &h.transitions},
        {"became_master", &h.became_master},
        {"left_master", &h.left_master},
        {"adverts_sent", &h.adverts_sent},
        {"adverts_received", &h.adverts_received},
        {"adverts_invalid", &h.adverts_invalid},
        {"priority_zero_sent", &h.priority_zero_sent},
        {"priority_zero_received", &h.priority_zero_received},
        {"split_heals", &h.split_heals},
        {"garp_sent", &h.garp_sent},
        {"na_sent", &h.na_sent},
        {"lease_renewals", &h.lease_renewals},
        {"lease_errors", &h.lease_errors},
        {"send_errors", &h.send_errors},
        {"interface_changes", &h.interface_changes},
        {"address_errors", &h.address_errors},
    };
    for (const auto& [name, v] : fields) f({"ha", "", name}, *v);
    for (auto& [reason, n] : h.invalid_by_reason) f({"ha", "", "adverts_invalid " + reason}, n);
}

void visit_counters(SyncPeerStats& s, const CounterVisitor& f) {
    // pending, the digests, identities and latencies are not counters.
    const std::pair<const char*, uint64_t*> fields[] = {
        {"records_drained", &s.records_drained},
        {"datagrams_sent", &s.datagrams_sent},
        {"records_sent", &s.records_sent},
        {"bulk_records_sent", &s.bulk_records_sent},
        {"send_errors", &s.send_errors},
        {"rate_limited", &s.rate_limited},
        {"pending_full", &s.pending_full},
        {"datagrams_received", &s.datagrams_received},
        {"receive_overflows", &s.receive_overflows},
        {"datagrams_accepted", &s.datagrams_accepted},
        {"records_received", &s.records_received},
        {"seq_gaps", &s.seq_gaps},
        {"seq_lost", &s.seq_lost},
        {"seq_reboots", &s.seq_reboots},
        {"seq_old", &s.seq_old},
        {"seq_stale_boot", &s.seq_stale_boot},
        {"installed", &s.installed},
        {"install_invalid", &s.install_invalid},
        {"install_unknown_server", &s.install_unknown_server},
        {"install_ring_full", &s.install_ring_full},
        {"install_failed", &s.install_failed},
        {"records_before_publish", &s.records_before_publish},
        {"bulk_requests_sent", &s.bulk_requests_sent},
        {"bulk_requests_received", &s.bulk_requests_received},
        {"bulk_served", &s.bulk_served},
        {"bulk_aborted", &s.bulk_aborted},
        {"bulk_records_received", &s.bulk_records_received},
        {"bulk_ends_received", &s.bulk_ends_received},
        {"bulk_incomplete", &s.bulk_incomplete},
        {"dataplane_errors", &s.dataplane_errors},
    };
    for (const auto& [name, v] : fields) f({"sync", "", name}, *v);
    for (size_t i = 0; i < kSyncErrorCount; ++i)
        f({"sync", "", std::string("refused ") + sync_error_name(static_cast<SyncError>(i))}, s.refused[i]);
}

void visit_counters(XdpStatus& x, const CounterVisitor& f) {
    f({"xdp", "", "applies"}, x.applies);
    f({"xdp", "", "apply_errors"}, x.apply_errors);
    f({"xdp", "", "program_changes"}, x.program_changes);
    // The packet counters live in the program's maps: a new program (a dataplane restart)
    // starts them from zero, hence a source of their own (identity: the program id).
    if (x.packets)
        for (size_t r = 0; r < kXdpReasonCount; ++r)
            f({"xdp_packets", "", std::string("packets ") + kXdpReasons[r].verdict + " " + kXdpReasons[r].reason},
              (*x.packets)[r]);
}

CounterBaseline::Result CounterBaseline::reset(const std::function<void(const CounterVisitor&)>& visit,
                                               const std::string& service, Clock::time_point now,
                                               std::chrono::system_clock::time_point wall) {
    std::map<CounterKey, uint64_t> taken;
    visit([&](const CounterKey& k, uint64_t& v) {
        if (service.empty() || k.service == service) taken[k] = v;
    });
    std::lock_guard lk(mu_);
    if (service.empty()) {
        base_.clear();
        services_.clear();
        restarts_.clear();
        all_ = When{now, wall};
    } else {
        std::erase_if(base_, [&](const auto& e) { return e.first.service == service; });
        services_[service] = When{now, wall};
    }
    last_ = std::make_pair(service, When{now, wall});
    Result r;
    for (const auto& [k, v] : taken) {
        base_[k] = v;
        ++r.counters;
        ++r.by_source[k.source];
    }
    return r;
}

void CounterBaseline::rebase(const std::string& source, const std::string& why, Clock::time_point now) {
    size_t n = 0;
    for (auto& [k, v] : base_)
        if (k.source == source && v != 0) {
            v = 0;
            ++n;
        }
    if (n == 0) return;
    Restart& r = restarts_[source];
    r.counters += n;
    r.why = why;
    r.at = now;
}

void CounterBaseline::observe(const std::string& source, const std::string& identity, Clock::time_point now) {
    if (identity.empty()) return;
    std::lock_guard lk(mu_);
    auto [it, fresh] = identity_.try_emplace(source, identity);
    if (fresh || it->second == identity) return;
    const std::string before = it->second;
    it->second = identity;
    rebase(source, source + " restarted (" + before + ", now " + identity + "): its counters count from its start",
           now);
}

CounterVisitor CounterBaseline::subtract(Clock::time_point now) {
    return [this, now](const CounterKey& k, uint64_t& v) {
        std::lock_guard lk(mu_);
        const auto it = base_.find(k);
        if (it == base_.end()) return;
        if (v >= it->second) {
            v -= it->second;
            return;
        }
        // Below its value at the reset: the counter restarted from zero since. What it counts
        // now is all after the reset (what it had counted between the reset and its restart is
        // lost with the old source), so it is shown as it is and counts on from zero.
        it->second = 0;
        Restart& r = restarts_[k.source];
        ++r.counters;
        r.why = k.source + " counter '" + k.name + "' went below its value at the reset (its source restarted): "
                "it counts from zero again";
        r.at = now;
    };
}

std::optional<CounterBaseline::When> CounterBaseline::covering(const std::string& service) const {
    std::optional<When> w = all_;
    if (!service.empty())
        if (auto s = services_.find(service); s != services_.end() && (!w || s->second.at > w->at)) w = s->second;
    return w;
}

json CounterBaseline::when_json(const When& w, Clock::time_point now) const {
    const std::time_t t = std::chrono::system_clock::to_time_t(w.wall);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return {{"at", buf}, {"ago_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - w.at).count()}};
}

std::optional<int64_t> CounterBaseline::reset_ago_ms(const std::string& service, Clock::time_point now) const {
    std::lock_guard lk(mu_);
    const auto w = covering(service);
    if (!w) return std::nullopt;
    return std::chrono::duration_cast<std::chrono::milliseconds>(now - w->at).count();
}

json CounterBaseline::reset_json(const std::string& service, Clock::time_point now) const {
    std::lock_guard lk(mu_);
    const auto w = covering(service);
    return w ? when_json(*w, now) : json(nullptr);
}

json CounterBaseline::describe(Clock::time_point now) const {
    std::lock_guard lk(mu_);
    json last = nullptr;
    if (last_) {
        last = when_json(last_->second, now);
        last["scope"] = last_->first.empty() ? "all" : "service";
        last["service"] = last_->first.empty() ? json(nullptr) : json(last_->first);
    }
    json services = json::object();
    for (const auto& [name, w] : services_) services[name] = when_json(w, now);
    json restarted = json::object();
    for (const auto& [source, r] : restarts_)
        restarted[source] = {{"counters", r.counters},
                             {"why", r.why},
                             {"ago_ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - r.at).count()}};
    return {{"last_reset", last},
            {"all", all_ ? when_json(*all_, now) : json(nullptr)},
            {"services", services},
            {"baselines", base_.size()},
            {"restarted", restarted}};
}

}  // namespace fulcrum::control
