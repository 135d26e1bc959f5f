#include "fulcrum/control/ha_node.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fulcrum/control/announce.hpp"
#include "fulcrum/control/vip_netlink.hpp"
#include "fulcrum/control/vrrp.hpp"
#include "fulcrum/control/vrrp_packet.hpp"
#include "fulcrum/control/vrrp_socket.hpp"
#include "fulcrum/ctl_protocol.hpp"

namespace fulcrum::control {

using namespace std::chrono;
using SteadyClock = steady_clock;
using SteadyTime = SteadyClock::time_point;

namespace {

constexpr milliseconds kInterfaceCheck{200};   // how often the interface is looked at
constexpr milliseconds kStandbyResend{1000};   // a backup repeats "standby" this often
constexpr milliseconds kDataplaneTimeout{500}; // one lease request, at most
constexpr uint8_t kTakeoverPriority = 254;

const char* family_name(Family f) { return f == Family::v4 ? "IPv4" : "IPv6"; }

}  // namespace

// Everything the HA thread owns.
struct HaNode::Impl {
    explicit Impl(const Config& c) : cfg(c) {}

    struct Vr {
        Family family;
        std::unique_ptr<vrrp::Router> router;  // built once the primary address is known
        std::unique_ptr<ha::VrrpSocket> sock;
        std::vector<IpAddr> vips;
        IpAddr primary;
        std::map<std::string, uint64_t> invalid;  // by decode error
    };

    const Config& cfg;
    ha::AddressManager addrs;
    std::unique_ptr<ha::Announcer> announcer;
    int ifindex = 0;
    bool if_up = false;
    std::array<uint8_t, 6> mac{};
    SteadyTime next_if_check{};
    std::vector<Vr> vrs;  // one per family with VIPs (ha: only)
    std::vector<IpAddr> vips;
    bool vips_on = false;  // the VIPs are on the interface (we own them)
    std::set<std::string, std::less<>> faults;  // ours and the daemon's, mirrored to routers
    std::string override_;
    bool held = false;
    std::string hold_reason;
    std::optional<SteadyTime> garp_repeat_at;

    // The dataplane lease.
    std::optional<ctl::Client> dp;
    bool lease_active = false;
    SteadyTime next_standby{};
    SteadyTime next_dp_attempt{};
    std::string lease_error;

    HaStatus st;  // counters accumulate here

    // Set by run() for the commands posted by other threads (they run on the HA thread).
    std::function<void(const std::string&, bool)>* fault_cmd = nullptr;
    std::function<void(std::vector<IpAddr>)>* vips_cmd = nullptr;
    std::function<void(bool, const std::string&)>* hold_cmd = nullptr;
    std::function<void(const std::string&)>* override_cmd = nullptr;

    bool any_master() const {
        return std::any_of(vrs.begin(), vrs.end(), [](const Vr& v) {
            return v.router && v.router->state() == vrrp::State::master;
        });
    }
};

HaNode::HaNode(const Config& cfg, std::vector<IpAddr> vips) : cfg_(cfg) {
    impl_ = std::make_unique<Impl>(cfg_);
    impl_->vips = std::move(vips);
    status_.ha = cfg_.ha.enabled;
    status_.interface = cfg_.interface.name;
    status_.state = cfg_.ha.enabled ? "initialize" : "standalone";
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) throw std::runtime_error("HA: cannot create an eventfd");
}

HaNode::~HaNode() {
    stop(false);
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

void HaNode::start() {
    if (thread_.joinable()) return;
    thread_ = std::thread([this] { run(); });
}

void HaNode::stop(bool clean) {
    if (!thread_.joinable()) return;
    {
        std::lock_guard lk(mu_);
        clean_stop_ = clean;
    }
    stop_ = true;
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    thread_.join();
}

uint64_t HaNode::post(std::function<void(Impl&)> cmd) {
    uint64_t id;
    {
        std::lock_guard lk(mu_);
        cmds_.push_back(std::move(cmd));
        id = ++posted_;
    }
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    return id;
}

HaStatus HaNode::wait_applied(uint64_t cmd) {
    std::unique_lock lk(mu_);
    applied_cv_.wait_for(lk, seconds(2), [&] { return applied_ >= cmd; });
    return status_;
}

HaStatus HaNode::status() const {
    std::lock_guard lk(mu_);
    return status_;
}

// ---- the HA thread ------------------------------------------------------------------------

// Free functions on Impl keep run() readable.
namespace ha_detail {

using Impl = HaNode::Impl;

void lease_request(Impl& m, bool active, SteadyTime now) {
    const auto& h = m.cfg.ha;
    if (!m.dp) {
        if (now < m.next_dp_attempt) return;
        auto c = ctl::Client::connect(m.cfg.dataplane_socket, kDataplaneTimeout);
        if (!c) {
            m.next_dp_attempt = now + milliseconds(100);
            if (m.lease_error != c.error())
                spdlog::warn("HA: cannot reach the dataplane for the fencing lease: {}",
                             c.error());
            m.lease_error = c.error();
            ++m.st.lease_errors;
            return;
        }
        m.dp = std::move(*c);
    }
    nlohmann::json req{{"role", active ? "active" : "standby"}};
    if (active) req["lease_ms"] = h.effective_lease().count();
    const std::string body = req.dump();
    auto r = m.dp->request(ctl::Op::ha, {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
    std::string err;
    if (!r)
        err = r.error();
    else if (r->status != ctl::Status::ok)
        err = "the dataplane refused the ha request: " + r->text();
    if (!err.empty()) {
        if (m.lease_error != err) spdlog::warn("HA: fencing lease: {}", err);
        m.lease_error = err;
        ++m.st.lease_errors;
        m.dp.reset();
        m.next_dp_attempt = now + milliseconds(100);
        return;
    }
    if (!m.lease_error.empty()) spdlog::info("HA: the dataplane answers the fencing lease again");
    m.lease_error.clear();
    m.lease_active = active;
    if (active) ++m.st.lease_renewals;
}

}  // namespace ha_detail

void HaNode::run() {
    using namespace ha_detail;
    Impl& m = *impl_;
    const HaConfig& h = cfg_.ha;
    const bool ha = h.enabled;

    // Which families have VIPs: one router each.
    auto rebuild_vr_vips = [&] {
        for (auto& vr : m.vrs) {
            vr.vips.clear();
            for (const auto& v : m.vips)
                if (v.family == vr.family) vr.vips.push_back(v);
        }
    };
    if (ha) {
        for (Family f : {Family::v4, Family::v6}) {
            const bool any = std::any_of(m.vips.begin(), m.vips.end(),
                                         [&](const IpAddr& a) { return a.family == f; });
            if (any) m.vrs.push_back(Impl::Vr{f, nullptr, nullptr, {}, {}, {}});
        }
        rebuild_vr_vips();
        // Held from the start when connection sync is configured: the daemon releases it when
        // the bulk sync completed.
    }

    auto vip_prefix = [](const IpAddr& a) { return static_cast<uint8_t>(a.is_v4() ? 32 : 128); };

    auto announce = [&](const std::vector<IpAddr>& which) {
        if (!m.announcer) return;
        std::optional<IpAddr> ll;
        for (const auto& v : which)
            if (v.is_v6()) {
                ll = m.addrs.link_local(m.ifindex);
                break;
            }
        for (unsigned i = 0; i < h.garp_count; ++i)
            for (const auto& v : which) {
                try {
                    if (v.is_v4()) {
                        m.announcer->garp(v, m.mac);
                        ++m.st.garp_sent;
                    } else if (ll) {
                        m.announcer->unsolicited_na(v, m.mac, *ll);
                        ++m.st.na_sent;
                    }
                } catch (const std::exception& e) {
                    ++m.st.send_errors;
                    spdlog::warn("HA: announcing {} on {}: {}", v.str(), m.cfg.interface.name,
                                 e.what());
                }
            }
    };

    auto add_vips = [&](const std::vector<IpAddr>& which) {
        for (const auto& v : which) {
            try {
                // Never a source: the host's own traffic (health checks) must leave from
                // its interface address, not from a VIP (see AddressManager::add).
                m.addrs.add(m.ifindex, v, vip_prefix(v), true, false);
            } catch (const std::exception& e) {
                ++m.st.address_errors;
                spdlog::error("HA: adding VIP {} to {}: {}", v.str(), m.cfg.interface.name, e.what());
            }
        }
    };
    auto remove_vips = [&](const std::vector<IpAddr>& which) {
        if (!m.ifindex) return;
        for (const auto& v : which) {
            try {
                m.addrs.remove(m.ifindex, v, vip_prefix(v));
            } catch (const std::exception& e) {
                ++m.st.address_errors;
                spdlog::error("HA: removing VIP {} from {}: {}", v.str(), m.cfg.interface.name,
                              e.what());
            }
        }
    };

    // Takes or gives up the VIPs: the interface addresses and the dataplane's lease.
    auto own = [&](bool yes, SteadyTime now) {
        if (yes) {
            if (m.ifindex) add_vips(m.vips);
            m.vips_on = m.ifindex != 0;
            if (ha) lease_request(m, true, now);
            announce(m.vips);
            m.garp_repeat_at = now + h.garp_repeat_delay;
        } else {
            if (ha) lease_request(m, false, now);
            remove_vips(m.vips);
            m.vips_on = false;
            m.garp_repeat_at.reset();
            m.next_standby = now + kStandbyResend;
        }
    };

    auto send_advert = [&](Impl::Vr& vr, uint8_t priority) {
        if (!vr.sock) return;
        vrrp::Advert a;
        a.vrid = h.vrid;
        a.priority = priority;
        a.max_advert_int_cs = h.advert_interval_cs;
        a.addresses = vr.vips;
        if (a.addresses.empty()) return;  // the RFC needs at least one address
        vrrp::EncodeOptions eo;
        eo.v4_checksum = h.checksum_message_only ? vrrp::ChecksumForm::message_only
                                                 : vrrp::ChecksumForm::pseudo_header;
        for (const auto& dst : vr.sock->destinations()) {
            try {
                const auto msg = vrrp::encode_advert(a, vr.primary, dst, eo);
                vr.sock->send_to(msg, vr.primary, dst);
            } catch (const std::exception& e) {
                ++m.st.send_errors;
                spdlog::warn("HA: sending a VRRP advert to {}: {}", dst.str(), e.what());
            }
        }
    };

    auto execute = [&](Impl::Vr& vr, const vrrp::Step& step, SteadyTime now) {
        for (const auto& act : step.actions) {
            switch (act.kind) {
                case vrrp::ActionKind::send_advert:
                    send_advert(vr, act.priority);
                    // The lease is renewed with every advert a master sends: if this thread
                    // stops, both stop together.
                    if (act.priority != 0 && vr.router->state() == vrrp::State::master)
                        lease_request(m, true, now);
                    break;
                case vrrp::ActionKind::become_master:
                    spdlog::info("HA: {} VRID {} is master: {}", family_name(vr.family), h.vrid,
                                 vr.router->last_transition().reason);
                    own(true, now);
                    break;
                case vrrp::ActionKind::leave_master:
                    spdlog::info("HA: {} VRID {} leaves master: {}", family_name(vr.family), h.vrid,
                                 vr.router->last_transition().reason);
                    if (!m.any_master()) own(false, now);
                    break;
                case vrrp::ActionKind::heal_split:
                    ++m.st.split_heals;
                    announce(m.vips);
                    break;
            }
        }
    };

    auto each_router = [&](auto&& fn, SteadyTime now) {
        for (auto& vr : m.vrs)
            if (vr.router) execute(vr, fn(*vr.router), now);
    };

    // Builds the routers once the interface and its primary addresses are known.
    auto ensure_routers = [&](SteadyTime now) {
        for (auto& vr : m.vrs) {
            if (!vr.sock) {
                try {
                    vr.sock = std::make_unique<ha::VrrpSocket>(vr.family, m.cfg.interface.name,
                                                               h.unicast_peers);
                } catch (const std::exception& e) {
                    spdlog::error("HA: {}", e.what());
                    continue;
                }
            }
            if (vr.router) continue;
            std::optional<IpAddr> primary;
            for (const auto& a : m.cfg.interface.addresses)
                if (a.addr.family == vr.family && vr.family == Family::v4) {
                    primary = a.addr;
                    break;
                }
            if (!primary)
                primary = vr.family == Family::v4 ? m.addrs.first_v4(m.ifindex, m.vips)
                                                  : m.addrs.link_local(m.ifindex);
            if (!primary) continue;  // tried again at the next interface check
            vr.primary = *primary;
            vrrp::Config rc;
            rc.vrid = h.vrid;
            rc.priority = m.override_ == "takeover" && h.priority != 255 ? kTakeoverPriority
                                                                          : h.priority;
            rc.advert_interval_cs = h.advert_interval_cs;
            rc.preempt = h.preempt || m.override_ == "takeover";
            rc.preempt_delay = h.preempt_delay;
            rc.primary_address = vr.primary;
            vr.router = std::make_unique<vrrp::Router>(rc);
            for (const auto& f : m.faults) vr.router->set_fault(now, f, true);
            vr.router->set_hold(now, m.held, m.hold_reason);
            spdlog::info("HA: {} virtual router {} on {} from {}, priority {}, adverts every {}",
                         family_name(vr.family), h.vrid, m.cfg.interface.name, vr.primary.str(),
                         rc.priority, format_duration(h.advert_interval()));
            execute(vr, vr.router->startup(now), now);
        }
    };

    auto set_fault = [&](const std::string& source, bool on, SteadyTime now) {
        const bool had = m.faults.count(source) != 0;
        if (had == on) return;
        if (on) {
            m.faults.insert(source);
            spdlog::warn("HA: fault: {}", source);
        } else {
            m.faults.erase(source);
            spdlog::info("HA: fault cleared: {}", source);
        }
        each_router([&](vrrp::Router& r) { return r.set_fault(now, source, on); }, now);
    };

    // Finds the interface (again after a dataplane restart), keeps its addresses.
    auto check_interface = [&](SteadyTime now) {
        const int idx = m.addrs.ifindex(m.cfg.interface.name);
        if (idx != m.ifindex) {
            if (m.ifindex || idx) ++m.st.interface_changes;
            m.ifindex = idx;
            m.announcer.reset();
            for (auto& vr : m.vrs) vr.sock.reset();
            if (idx) {
                spdlog::info("HA: interface {} found (index {})", m.cfg.interface.name, idx);
                try {
                    m.announcer = std::make_unique<ha::Announcer>(idx);
                } catch (const std::exception& e) {
                    spdlog::error("HA: {}", e.what());
                }
                if (auto mac = m.addrs.mac(idx)) m.mac = *mac;
                for (const auto& a : m.cfg.interface.addresses) {
                    try {
                        m.addrs.add(idx, a.addr, a.length, true);
                    } catch (const std::exception& e) {
                        ++m.st.address_errors;
                        spdlog::error("HA: adding host address {}/{} to {}: {}", a.addr.str(),
                                      a.length, m.cfg.interface.name, e.what());
                    }
                }
                // A recreated interface has lost the VIPs; an owner puts them back. A node
                // that does not own them takes away any left behind (by a fulcrumd killed as
                // master, say): the kernel would otherwise still take them for its own.
                if (!ha || m.any_master()) {
                    add_vips(m.vips);
                    m.vips_on = true;
                    announce(m.vips);
                } else {
                    remove_vips(m.vips);
                }
            } else {
                m.vips_on = false;
            }
        }
        m.if_up = idx && m.addrs.link_up(idx);
        if (ha) {
            set_fault("interface " + m.cfg.interface.name + " missing or down", !m.if_up, now);
            if (m.if_up) ensure_routers(now);
        }
        m.next_if_check = now + kInterfaceCheck;
    };

    uint64_t ran = 0;  // commands run, published with the status
    auto publish = [&](SteadyTime now) {
        HaStatus s = m.st;
        s.ha = ha;
        s.interface = m.cfg.interface.name;
        s.interface_present = m.ifindex != 0;
        s.configured_priority = h.priority;
        s.vrid = h.vrid;
        s.faults.assign(m.faults.begin(), m.faults.end());
        s.held = m.held;
        s.hold_reason = m.hold_reason;
        s.operator_override = m.override_;
        for (const auto& v : m.vips) s.vips.push_back(v.str());
        s.vips_on_interface = m.vips_on;
        s.lease_active = m.lease_active;
        s.lease_error = m.lease_error;
        if (!ha) {
            s.state = "standalone";
        } else {
            const Impl::Vr* lead = nullptr;  // the router shown: a master one, else the first
            for (const auto& vr : m.vrs)
                if (vr.router && (!lead || vr.router->state() == vrrp::State::master)) lead = &vr;
            std::map<std::string, uint64_t> invalid;
            for (const auto& vr : m.vrs) {
                if (!vr.router) continue;
                const auto& rs = vr.router->stats();
                s.adverts_sent += rs.adverts_sent;
                s.adverts_received += rs.adverts_received;
                s.priority_zero_sent += rs.priority_zero_sent;
                s.priority_zero_received += rs.priority_zero_received;
                s.became_master += rs.became_master;
                s.left_master += rs.left_master;
                for (const auto& [k, n] : vr.invalid) invalid[k] += n;
            }
            for (const auto& [k, n] : invalid) {
                s.adverts_invalid += n;
                s.invalid_by_reason.emplace_back(k, n);
            }
            s.transitions = s.became_master + s.left_master;
            if (lead) {
                const auto& r = *lead->router;
                s.state = !m.faults.empty() && r.state() != vrrp::State::master
                              ? "fault"
                              : vrrp::to_string(r.state());
                s.priority = r.priority();
                if (auto a = r.master_address()) s.master = a->str();
                s.master_priority = r.master_priority();
                const auto& t = r.last_transition();
                if (!t.reason.empty()) {
                    s.last_from = vrrp::to_string(t.from);
                    s.last_to = vrrp::to_string(t.to);
                    s.last_reason = t.reason;
                    s.last_ago_ms = duration_cast<milliseconds>(now - t.at).count();
                }
            } else {
                s.state = m.faults.empty() ? "initialize" : "fault";
            }
        }
        {
            std::lock_guard lk(mu_);
            status_ = std::move(s);
            applied_ = ran;
        }
        applied_cv_.notify_all();
    };

    // Commands from other threads. They run here, between two steps of the routers.
    auto run_commands = [&] {
        std::vector<std::function<void(Impl&)>> cmds;
        {
            std::lock_guard lk(mu_);
            cmds.swap(cmds_);
            ran = posted_;
        }
        for (auto& c : cmds) c(m);
    };

    // Bridges for the commands (they need the lambdas above).
    std::function<void(const std::string&, bool)> fault_cmd = [&](const std::string& s, bool on) {
        set_fault(s, on, SteadyClock::now());
    };
    m.fault_cmd = &fault_cmd;
    std::function<void(std::vector<IpAddr>)> vips_cmd = [&](std::vector<IpAddr> next) {
        std::vector<IpAddr> gone, added;
        for (const auto& v : m.vips)
            if (std::find(next.begin(), next.end(), v) == next.end()) gone.push_back(v);
        for (const auto& v : next)
            if (std::find(m.vips.begin(), m.vips.end(), v) == m.vips.end()) added.push_back(v);
        if (gone.empty() && added.empty()) return;
        if (m.vips_on) remove_vips(gone);
        m.vips = std::move(next);
        if (ha) {
            for (const auto& v : added)
                if (std::none_of(m.vrs.begin(), m.vrs.end(),
                                 [&](const Impl::Vr& vr) { return vr.family == v.family; }))
                    spdlog::warn("HA: VIP {} is of a family with no virtual router yet; restart "
                                 "fulcrumd to announce it over VRRP",
                                 v.str());
            rebuild_vr_vips();
        }
        if (m.vips_on) {
            add_vips(added);
            announce(added);
        }
    };
    m.vips_cmd = &vips_cmd;
    std::function<void(bool, const std::string&)> hold_cmd = [&](bool on, const std::string& why) {
        const auto now = SteadyClock::now();
        if (m.held == on) return;
        m.held = on;
        m.hold_reason = on ? why : std::string();
        spdlog::info("HA: preemption {}", on ? "held: " + why : std::string("no longer held"));
        each_router([&](vrrp::Router& r) { return r.set_hold(now, on, why); }, now);
    };
    m.hold_cmd = &hold_cmd;
    std::function<void(const std::string&)> override_cmd = [&](const std::string& what) {
        const auto now = SteadyClock::now();
        if (what == m.override_) return;
        const std::string prev = m.override_;
        m.override_ = what;
        spdlog::info("HA: operator {}", what.empty() ? std::string("resume") : what);
        if (prev == "release") set_fault("released by the operator", false, now);
        if (what == "release") set_fault("released by the operator", true, now);
        if (h.priority != 255) {
            const bool take = what == "takeover";
            each_router(
                [&](vrrp::Router& r) {
                    return r.set_priority(now, take ? kTakeoverPriority : h.priority,
                                          take || h.preempt);
                },
                now);
        }
    };
    m.override_cmd = &override_cmd;

    // Reads, validates and decodes the adverts waiting on a router's socket (at most 64, so the
    // timers run between), passing each valid one to `on_advert`.
    auto receive = [&](Impl::Vr& vr, const std::function<void(const vrrp::PeerAdvert&)>& on_advert) {
        if (!vr.sock) return;
        for (int i = 0; i < 64; ++i) {
            std::optional<ha::VrrpSocket::Received> rx;
            try {
                rx = vr.sock->receive();
            } catch (const std::exception& e) {
                ++m.st.send_errors;
                spdlog::warn("HA: receiving on {}: {}", m.cfg.interface.name, e.what());
                return;
            }
            if (!rx) return;
            if (!vr.router) continue;
            if (!rx->ok()) {
                if (vr.invalid["malformed_ip"]++ == 0)
                    spdlog::warn("HA: malformed packet on {}: {}", m.cfg.interface.name, rx->error);
                continue;
            }
            vrrp::IpContext ip{vr.family, rx->src, rx->dst, rx->ttl};
            vrrp::DecodeOptions opt;
            opt.v4_checksum = h.accept_checksum == 1   ? vrrp::V4ChecksumAccept::pseudo_header_only
                              : h.accept_checksum == 2 ? vrrp::V4ChecksumAccept::message_only
                                                       : vrrp::V4ChecksumAccept::both;
            opt.require_ttl_255 = h.unicast_peers.empty();
            const auto res = vrrp::decode_advert(rx->msg, ip, opt);
            if (const auto* fail = std::get_if<vrrp::DecodeFailure>(&res)) {
                const std::string name = vrrp::to_string(fail->error);
                if (vr.invalid[name]++ == 0)
                    spdlog::warn("HA: invalid advert from {}: {}", rx->src.str(), fail->message);
                continue;
            }
            const auto& adv = std::get<vrrp::Advert>(res);
            if (!h.unicast_peers.empty() && rx->src != vr.primary &&
                std::find(h.unicast_peers.begin(), h.unicast_peers.end(), rx->src) ==
                    h.unicast_peers.end()) {
                if (vr.invalid["unknown_peer"]++ == 0)
                    spdlog::warn("HA: advert from {}, which is not a configured unicast peer",
                                 rx->src.str());
                continue;
            }
            on_advert(vrrp::PeerAdvert{rx->src, adv.vrid, adv.priority, adv.max_advert_int_cs});
        }
    };

    auto now = SteadyClock::now();
    check_interface(now);
    if (!ha) {
        // Standalone: the VIPs are ours whenever the interface is there.
        if (m.ifindex && !m.vips_on) {
            add_vips(m.vips);
            m.vips_on = true;
            announce(m.vips);
        }
    }
    publish(now);

    while (!stop_.load()) {
        now = SteadyClock::now();
        run_commands();
        if (now >= m.next_if_check) check_interface(now);
        each_router([&](vrrp::Router& r) { return r.tick(now); }, now);
        if (ha) {
            // The dataplane side: "dataplane" is a fault while the lease cannot be delivered.
            if (m.any_master()) {
                if (!m.dp && now >= m.next_dp_attempt) lease_request(m, true, now);
            } else if (now >= m.next_standby) {
                lease_request(m, false, now);
                m.next_standby = now + kStandbyResend;
            }
            set_fault("dataplane unreachable", !m.lease_error.empty() && !m.dp, now);
        }
        if (m.garp_repeat_at && now >= *m.garp_repeat_at) {
            m.garp_repeat_at.reset();
            if (m.vips_on) announce(m.vips);
        }
        publish(now);

        // Sleep until the next deadline, an advert or a command.
        SteadyTime wake = m.next_if_check;
        for (const auto& vr : m.vrs)
            if (vr.router)
                if (auto d = vr.router->next_deadline()) wake = std::min(wake, *d);
        if (m.garp_repeat_at) wake = std::min(wake, *m.garp_repeat_at);
        if (ha && !m.any_master()) wake = std::min(wake, m.next_standby);
        now = SteadyClock::now();
        const auto wait = wake > now ? duration_cast<milliseconds>(wake - now) + milliseconds(1)
                                     : milliseconds(0);
        std::vector<pollfd> fds{{wake_fd_, POLLIN, 0}};
        for (const auto& vr : m.vrs)
            if (vr.sock) fds.push_back({vr.sock->fd(), POLLIN, 0});
        const int n = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
        if (n <= 0) continue;
        if (fds[0].revents) {
            uint64_t v;
            [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
        }
        now = SteadyClock::now();
        for (auto& vr : m.vrs)
            receive(vr, [&](const vrrp::PeerAdvert& pa) {
                execute(vr, vr.router->advert_received(now, pa), now);
            });
    }

    // Stopping.
    bool clean;
    {
        std::lock_guard lk(mu_);
        clean = clean_stop_;
    }
    now = SteadyClock::now();
    if (clean) {
        // Resign with a priority-0 advert, but keep the VIPs and the dataplane active until the
        // peer announces itself as master (its advert travels with its gratuitous ARP), so
        // traffic still arriving here meanwhile is forwarded, not dropped: both balancers pick
        // the same servers. Bounded: a peer that does not answer gets no more than 3 advert
        // intervals (and never more than 2 s).
        const bool was_master = m.any_master();
        for (auto& vr : m.vrs) {
            if (!vr.router) continue;
            for (const auto& act : vr.router->shutdown(now).actions)
                if (act.kind == vrrp::ActionKind::send_advert) send_advert(vr, act.priority);
        }
        if (ha && was_master) {
            const auto deadline = now + std::min<SteadyClock::duration>(3 * h.advert_interval(), seconds(2));
            auto renew_at = now;
            bool peer_master = false;
            while (!peer_master && SteadyClock::now() < deadline) {
                now = SteadyClock::now();
                if (now >= renew_at) {
                    lease_request(m, true, now);
                    renew_at = now + h.advert_interval();
                }
                std::vector<pollfd> fds;
                for (const auto& vr : m.vrs)
                    if (vr.sock) fds.push_back({vr.sock->fd(), POLLIN, 0});
                const auto until = std::min(deadline, renew_at);
                const auto wait = duration_cast<milliseconds>(until - SteadyClock::now()) + milliseconds(1);
                if (::poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(0, wait.count()))) <= 0)
                    continue;
                for (auto& vr : m.vrs)
                    receive(vr, [&](const vrrp::PeerAdvert& pa) {
                        if (pa.vrid == h.vrid && pa.priority != 0 && pa.source != vr.primary) peer_master = true;
                    });
            }
            spdlog::info("HA: {}", peer_master ? "the peer took over" : "no peer answered the resignation");
            if (peer_master) {
                // A little longer: frames the clients sent before the new master's gratuitous
                // ARP reached them are still on their way here (a dropped one costs its TCP
                // connection a retransmission timeout, 200 ms or more).
                const auto grace = std::clamp<SteadyClock::duration>(2 * h.advert_interval(), milliseconds(100),
                                                                     milliseconds(500));
                const auto until = SteadyClock::now() + grace;
                while ((now = SteadyClock::now()) < until) {
                    if (now >= renew_at) {
                        lease_request(m, true, now);
                        renew_at = now + h.advert_interval();
                    }
                    std::this_thread::sleep_for(std::min<SteadyClock::duration>(until - now, renew_at - now));
                }
            }
        }
        if (ha) lease_request(m, false, now);
        if (m.vips_on) remove_vips(m.vips);
        m.vips_on = false;
    }
    publish(now);
    m.fault_cmd = nullptr;
    m.vips_cmd = nullptr;
    m.hold_cmd = nullptr;
    m.override_cmd = nullptr;
}

void HaNode::set_vips(std::vector<IpAddr> vips) {
    post([v = std::move(vips)](Impl& m) mutable {
        if (m.vips_cmd) (*m.vips_cmd)(std::move(v));
    });
}

void HaNode::set_fault(const std::string& source, bool active) {
    post([source, active](Impl& m) {
        if (m.fault_cmd) (*m.fault_cmd)(source, active);
    });
}

void HaNode::set_hold(bool on, const std::string& reason) {
    post([on, reason](Impl& m) {
        if (m.hold_cmd) (*m.hold_cmd)(on, reason);
    });
}

HaStatus HaNode::takeover() {
    return wait_applied(post([](Impl& m) {
        if (m.override_cmd) (*m.override_cmd)("takeover");
    }));
}

HaStatus HaNode::release() {
    return wait_applied(post([](Impl& m) {
        if (m.override_cmd) (*m.override_cmd)("release");
    }));
}

HaStatus HaNode::resume() {
    return wait_applied(post([](Impl& m) {
        if (m.override_cmd) (*m.override_cmd)("");
    }));
}

}  // namespace fulcrum::control
