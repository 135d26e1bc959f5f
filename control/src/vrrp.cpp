#include "fulcrum/control/vrrp.hpp"

#include <stdexcept>

namespace fulcrum::control::vrrp {

using std::chrono::microseconds;

const char* to_string(State s) {
    switch (s) {
        case State::initialize:
            return "initialize";
        case State::backup:
            return "backup";
        case State::master:
            return "master";
    }
    return "unknown";
}

const char* to_string(ActionKind k) {
    switch (k) {
        case ActionKind::send_advert:
            return "send_advert";
        case ActionKind::become_master:
            return "become_master";
        case ActionKind::leave_master:
            return "leave_master";
        case ActionKind::heal_split:
            return "heal_split";
    }
    return "unknown";
}

void validate(const Config& c) {
    if (c.vrid == 0) throw std::invalid_argument("vrrp: vrid 0 is invalid; use 1..255");
    if (c.priority == 0) {
        throw std::invalid_argument(
            "vrrp: priority 0 is reserved for a master that resigns; use 1..255 (255 only on "
            "the node that owns the virtual addresses)");
    }
    if (c.advert_interval_cs == 0 || c.advert_interval_cs > 4095) {
        throw std::invalid_argument("vrrp: advert interval " +
                                    std::to_string(c.advert_interval_cs) +
                                    " cs is outside 1..4095 cs (10 ms .. 40.95 s)");
    }
    if (c.preempt_delay < std::chrono::milliseconds(0) ||
        c.preempt_delay > std::chrono::seconds(1000)) {
        throw std::invalid_argument("vrrp: preempt_delay " +
                                    std::to_string(c.preempt_delay.count()) +
                                    " ms is outside 0..1000 s");
    }
    if (!c.primary_address.is_v4() && !c.primary_address.is_v6()) {
        throw std::invalid_argument(
            "vrrp: primary_address is not set; it is the source of our adverts and breaks "
            "priority ties (the interface's own address)");
    }
}

namespace {

// Centiseconds of VRRP timers to microseconds.
microseconds cs(uint32_t n) {
    return microseconds(int64_t{n} * 10'000);
}

// "3609.375 ms", "3000 ms": exact, as the timers are kept in microseconds.
std::string ms_text(microseconds d) {
    const int64_t us = d.count();
    std::string s = std::to_string(us / 1000);
    if (int64_t frac = us % 1000; frac != 0) {
        std::string f = std::to_string(frac);
        f.insert(0, 3 - f.size(), '0');
        while (f.back() == '0') f.pop_back();
        s += "." + f;
    }
    return s + " ms";
}

}  // namespace

Router::Router(Config cfg) : cfg_(std::move(cfg)), master_adver_int_cs_(cfg_.advert_interval_cs) {
    validate(cfg_);
}

microseconds Router::skew_time() const {
    // ((256 - Priority) * Master_Adver_Interval) / 256, in microseconds: 10'000 us per cs
    // makes the division exact to within a microsecond.
    return microseconds((256 - int64_t{cfg_.priority}) * int64_t{master_adver_int_cs_} * 10'000 /
                        256);
}

microseconds Router::master_down_interval() const {
    return cs(3u * master_adver_int_cs_) + skew_time();
}

std::optional<TimePoint> Router::next_deadline() const {
    switch (state_) {
        case State::initialize:
            return std::nullopt;
        case State::backup:
            if (faulted()) return std::nullopt;
            return master_down_at_;
        case State::master:
            return advert_at_;
    }
    return std::nullopt;
}

std::optional<IpAddr> Router::master_address() const {
    if (state_ == State::master) return cfg_.primary_address;
    if (state_ == State::backup) return master_addr_;
    return std::nullopt;
}

uint8_t Router::master_priority() const {
    if (state_ == State::master) return cfg_.priority;
    if (state_ == State::backup && master_addr_) return master_prio_;
    return 0;
}

Step Router::finish(Step s) const {
    s.next_deadline = next_deadline();
    return s;
}

void Router::record(State to, TimePoint now, std::string reason) {
    last_ = Transition{state_, to, now, std::move(reason)};
    state_ = to;
}

void Router::send(uint8_t priority, Step& out) {
    out.actions.push_back({ActionKind::send_advert, priority});
    ++stats_.adverts_sent;
    if (priority == 0) ++stats_.priority_zero_sent;
}

void Router::arm_master_down(TimePoint now, microseconds after, DownCause cause,
                             const IpAddr& peer) {
    master_down_at_ = now + after;
    down_ = {cause, peer, 0, after};
}

std::string Router::down_reason() const {
    const std::string peer = down_.peer.str();
    switch (down_.cause) {
        case DownCause::startup:
            return "no advert within Master_Down_Interval (" + ms_text(down_.after) +
                   ") after startup";
        case DownCause::master_silent:
            return "no advert from master " + peer + " within Master_Down_Interval (" +
                   ms_text(down_.after) + ")";
        case DownCause::master_resigned:
            return "master " + peer + " resigned (priority 0 advert), Skew_Time " +
                   ms_text(down_.after) + " passed";
        case DownCause::preempt:
            return "preempted lower-priority master " + peer + " (priority " +
                   std::to_string(down_.peer_priority) + " < " + std::to_string(cfg_.priority) +
                   ")";
        case DownCause::fault_cleared:
            return "no advert within Master_Down_Interval (" + ms_text(down_.after) +
                   ") after the fault cleared";
    }
    return "master down timer expired";
}

void Router::to_master(TimePoint now, std::string reason, Step& out) {
    // RFC 5798 6.4.1 / 6.4.2: send an advert, then the gratuitous ARPs / NAs, then run the
    // Adver_Timer.
    send(cfg_.priority, out);
    out.actions.push_back({ActionKind::become_master, 0});
    advert_at_ = now + cs(cfg_.advert_interval_cs);
    lower_master_since_.reset();
    ++stats_.became_master;
    record(State::master, now, std::move(reason));
}

void Router::to_backup(TimePoint now, std::string reason, Step& out) {
    if (state_ == State::master) {
        out.actions.push_back({ActionKind::leave_master, 0});
        ++stats_.left_master;
    }
    record(State::backup, now, std::move(reason));
}

Step Router::startup(TimePoint now) {
    Step out;
    if (state_ != State::initialize) return finish(std::move(out));
    master_adver_int_cs_ = cfg_.advert_interval_cs;
    master_addr_.reset();
    master_prio_ = 0;
    lower_master_since_.reset();
    if (cfg_.priority == 255 && !faulted() && !hold_) {
        to_master(now, "startup as address owner (priority 255)", out);
        return finish(std::move(out));
    }
    std::string why = "startup";
    if (faulted()) {
        why += " while faulted (" + *faults_.begin() + ")";
    } else if (cfg_.priority == 255) {
        why += " as address owner held in backup (" + hold_reason_ + ")";
    }
    arm_master_down(now, master_down_interval(), DownCause::startup);
    to_backup(now, std::move(why), out);
    return finish(std::move(out));
}

Step Router::shutdown(TimePoint now) {
    Step out;
    if (state_ == State::master) {
        // RFC 5798 6.4.3: a priority-0 advert lets the backups take over after Skew_Time.
        send(0, out);
        out.actions.push_back({ActionKind::leave_master, 0});
        ++stats_.left_master;
    }
    if (state_ != State::initialize) record(State::initialize, now, "shutdown");
    lower_master_since_.reset();
    return finish(std::move(out));
}

bool Router::preemption_blocked(TimePoint now) {
    if (cfg_.preempt_delay.count() > 0) {
        if (!lower_master_since_) lower_master_since_ = now;
        if (now < *lower_master_since_ + cfg_.preempt_delay) return true;
    }
    return hold_;
}

Step Router::advert_received(TimePoint now, const PeerAdvert& a) {
    Step out;
    ++stats_.adverts_received;
    if (a.vrid != cfg_.vrid) {
        ++stats_.other_vrid;
        return finish(std::move(out));
    }
    if (a.source == cfg_.primary_address) {
        ++stats_.own_adverts;
        return finish(std::move(out));
    }
    if (a.advert_interval_cs == 0 || a.source.family != cfg_.primary_address.family) {
        ++stats_.invalid;
        return finish(std::move(out));
    }
    if (a.priority == 0) ++stats_.priority_zero_received;

    if (state_ == State::backup) {
        if (a.priority == 0) {
            // RFC 5798 6.4.2: the master resigned; take over after Skew_Time unless a
            // higher-priority backup speaks first.
            if (!faulted()) arm_master_down(now, skew_time(), DownCause::master_resigned, a.source);
            master_addr_.reset();
            master_prio_ = 0;
            lower_master_since_.reset();
        } else if (!cfg_.preempt || a.priority >= cfg_.priority || preemption_blocked(now)) {
            master_adver_int_cs_ = a.advert_interval_cs;
            master_addr_ = a.source;
            master_prio_ = a.priority;
            if (a.priority >= cfg_.priority) lower_master_since_.reset();
            if (!faulted()) {
                arm_master_down(now, master_down_interval(), DownCause::master_silent, a.source);
            }
        } else {
            // Discarded: the Master_Down_Timer keeps running and makes us Master.
            ++stats_.preempt_discards;
            master_addr_ = a.source;
            master_prio_ = a.priority;
            down_ = {DownCause::preempt, a.source, a.priority, down_.after};
        }
        return finish(std::move(out));
    }

    if (state_ == State::master) {
        if (a.priority == 0) {
            // RFC 5798 6.4.3: answer at once so the other backups do not take over.
            send(cfg_.priority, out);
            advert_at_ = now + cs(cfg_.advert_interval_cs);
            return finish(std::move(out));
        }
        const bool higher = a.priority > cfg_.priority;
        if (higher || (a.priority == cfg_.priority && a.source > cfg_.primary_address)) {
            master_adver_int_cs_ = a.advert_interval_cs;
            master_addr_ = a.source;
            master_prio_ = a.priority;
            lower_master_since_.reset();
            arm_master_down(now, master_down_interval(), DownCause::master_silent, a.source);
            const std::string peer = a.source.str();
            const std::string prio = std::to_string(a.priority);
            to_backup(now,
                      higher ? "advert from " + peer + " with higher priority (" + prio + " > " +
                                   std::to_string(cfg_.priority) + ")"
                             : "advert from " + peer + " with equal priority " + prio +
                                   " and a higher primary address",
                      out);
            return finish(std::move(out));
        }
        // We win: the sender believes it is master too (or is about to). Tell it, and tell
        // the switches where the VIPs are.
        send(cfg_.priority, out);
        out.actions.push_back({ActionKind::heal_split, 0});
        ++stats_.split_heals;
        advert_at_ = now + cs(cfg_.advert_interval_cs);
        return finish(std::move(out));
    }
    return finish(std::move(out));  // Initialize: not running
}

Step Router::tick(TimePoint now) {
    Step out;
    if (state_ == State::backup && !faulted() && now >= master_down_at_) {
        to_master(now, down_reason(), out);
    } else if (state_ == State::master && now >= advert_at_) {
        send(cfg_.priority, out);
        // From now, not from the missed deadline: a late caller sends one advert, not a burst.
        advert_at_ = now + cs(cfg_.advert_interval_cs);
    }
    return finish(std::move(out));
}

Step Router::set_fault(TimePoint now, std::string_view source, bool active) {
    Step out;
    const bool was = faulted();
    if (active) {
        faults_.emplace(source);
    } else if (auto it = faults_.find(source); it != faults_.end()) {
        faults_.erase(it);
    }
    if (!was && faulted() && state_ == State::master) {
        send(0, out);
        to_backup(now, "fault: " + std::string(source), out);
    } else if (was && !faulted() && state_ == State::backup) {
        lower_master_since_.reset();
        if (cfg_.priority == 255 && !hold_) {
            to_master(now, "fault cleared (" + std::string(source) + "), address owner", out);
        } else {
            arm_master_down(now, master_down_interval(), DownCause::fault_cleared);
        }
    }
    return finish(std::move(out));
}

Step Router::set_priority(TimePoint /*now*/, uint8_t priority, bool preempt) {
    if (priority == 0 || priority == 255 || cfg_.priority == 255)
        throw std::invalid_argument("vrrp: set_priority: priority must be 1 to 254 and the router "
                                    "must not be the address owner (255), got " +
                                    std::to_string(priority));
    Step out;
    const bool changed = priority != cfg_.priority;
    cfg_.priority = priority;
    cfg_.preempt = preempt;
    lower_master_since_.reset();
    if (state_ == State::master && changed) send(cfg_.priority, out);
    return finish(std::move(out));
}

Step Router::set_hold(TimePoint /*now*/, bool on, std::string reason) {
    hold_ = on;
    hold_reason_ = on ? std::move(reason) : std::string();
    return finish(Step{});
}

}  // namespace fulcrum::control::vrrp
