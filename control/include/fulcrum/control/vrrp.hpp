// The VRRP version 3 state machine (RFC 5798 section 6.4, unchanged in RFC 9568) for one
// virtual router, as a pure class: no sockets, no threads, no clock of its own. The caller
// passes the time with every input and executes the returned actions (send an advert, add or
// remove the VIPs, send gratuitous ARP / unsolicited NA); each input also returns when tick()
// is due next. Packets are encoded and decoded by vrrp_packet.hpp.
//
// RFC behaviour:
// - startup: priority 255 (address owner) becomes Master at once; any other priority starts
//   in Backup with Master_Adver_Interval = own interval and the Master_Down_Timer running.
// - Backup: the Master_Down_Timer firing makes it Master (send an advert, take the VIPs). An
//   advert of priority 0 sets the timer to Skew_Time. Any other advert is accepted (learn
//   Master_Adver_Interval from it, restart the timer with the new Master_Down_Interval) when
//   preemption is off or its priority is >= ours; otherwise it is discarded, so the timer
//   runs out and this node preempts the lower-priority master.
// - Master: sends an advert every Advertisement_Interval. A priority-0 advert is answered by
//   an advert at once. A higher priority, or the same priority from a higher primary address,
//   makes it Backup (VIPs released). shutdown sends a priority-0 advert.
//   Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256,
//   Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time, both kept in microseconds
//   so that short intervals keep their skew (10 cs at priority 100 skews by 60.937 ms).
//
// Beyond the RFC (each one as keepalived does it, unless said otherwise):
// - heal split: a Master hearing an advert it wins against (lower priority, or equal priority
//   from a lower address) answers at once with an advert and a gratuitous ARP / NA
//   (heal_split), where the RFC only discards it. Two masters (after a partition) thus settle
//   on one quickly, and switches relearn where the VIPs live.
// - preempt_delay: a Backup keeps accepting a lower-priority master's adverts until
//   preempt_delay has passed since it first heard them, then preempts. Adverts of priority
//   >= ours reset that clock. It never delays taking over when no master is heard.
// - fault (dataplane down, uplink down, no server up; any named source, several at once): a
//   Master sends a priority-0 advert and becomes Backup; a faulted node runs no timer and
//   never becomes Master. When the last fault clears it restarts the Master_Down_Timer (an
//   owner becomes Master at once, as on startup).
// - hold (Fulcrum's own; for "preempt only after the bulk connection sync completed"): while
//   held, a Backup accepts lower-priority adverts as if preemption were off, and an owner
//   starting up begins in Backup. Hold never stops a takeover when no master is heard: a
//   dead master is worse than connections that were not yet synced.
// - Own adverts looped back (source == our primary address) and adverts for another VRID
//   are counted and ignored. The RFC says an address owner drops all adverts (7.1); like
//   keepalived by default, this one processes them, so two nodes wrongly both configured as
//   owner still settle on one master.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fulcrum/addr.hpp"

namespace fulcrum::control::vrrp {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

enum class State : uint8_t { initialize, backup, master };
const char* to_string(State s);

struct Config {
    uint8_t vrid = 0;                  // 1..255
    uint8_t priority = 100;            // 1..255; 255 = address owner
    uint16_t advert_interval_cs = 10;  // Advertisement_Interval, 1..4095 centiseconds
    bool preempt = true;
    std::chrono::milliseconds preempt_delay{0};  // 0..1000 s
    // Master accepts traffic to the VIPs although it does not own them (the owner always
    // does). Reported by accepts_vip_traffic() for the caller to apply.
    bool accept_mode = false;
    IpAddr primary_address;  // source of our adverts; breaks priority ties
};

// Throws std::invalid_argument naming the field, its value and the valid range.
void validate(const Config& c);

// What the state machine needs from a received, already validated advert.
struct PeerAdvert {
    IpAddr source;  // IP source = the sender's primary address
    uint8_t vrid = 0;
    uint8_t priority = 0;
    uint16_t advert_interval_cs = 0;  // Max Adver Int
};

enum class ActionKind : uint8_t {
    send_advert,    // send an advert with `priority` now
    become_master,  // add the VIPs, send gratuitous ARP / unsolicited NA, dataplane active
    leave_master,   // remove the VIPs, dataplane standby (to Backup, or stopping)
    heal_split,     // send gratuitous ARP / unsolicited NA for the VIPs again
};
const char* to_string(ActionKind k);

struct Action {
    ActionKind kind;
    uint8_t priority = 0;  // send_advert only
    friend bool operator==(const Action&, const Action&) = default;
};

// Result of every input: the actions to execute, in order, and when tick() is due next
// (nullopt: no timer runs, in Initialize or while faulted).
struct Step {
    std::vector<Action> actions;
    std::optional<TimePoint> next_deadline;
};

struct Transition {
    State from = State::initialize;
    State to = State::initialize;
    TimePoint at{};
    std::string reason;  // empty before the first transition
};

struct Stats {
    uint64_t adverts_received = 0;  // all adverts passed in, including ignored ones
    uint64_t adverts_sent = 0;      // send_advert actions returned
    uint64_t priority_zero_received = 0;
    uint64_t priority_zero_sent = 0;
    uint64_t other_vrid = 0;        // ignored: VRID not ours
    uint64_t own_adverts = 0;       // ignored: our own advert looped back
    uint64_t invalid = 0;           // ignored: interval 0 or wrong address family
    uint64_t preempt_discards = 0;  // lower-priority adverts discarded by a Backup
    uint64_t split_heals = 0;       // heal_split actions returned
    uint64_t became_master = 0;
    uint64_t left_master = 0;
};

class Router {
  public:
    explicit Router(Config cfg);  // validates (throws std::invalid_argument)

    Step startup(TimePoint now);   // Initialize -> Master (owner) or Backup; else no-op
    Step shutdown(TimePoint now);  // -> Initialize; a Master sends priority 0 and leaves
    Step advert_received(TimePoint now, const PeerAdvert& a);
    Step tick(TimePoint now);  // fires the timer if it is due
    // Sets or clears one named fault source ("dataplane", "uplink", "no server up", ...).
    Step set_fault(TimePoint now, std::string_view source, bool active);
    // Holds preemption (see above) until set_hold(now, false).
    Step set_hold(TimePoint now, bool on, std::string reason = {});
    // Operator maintenance (fulcrumctl ha takeover / resume): changes the priority (1..254;
    // an address owner keeps 255) and preemption of the running router. A Master announces
    // the new priority at once; a Backup with a priority now above the master's and
    // preemption on discards that master's adverts and takes over when its timer runs out.
    Step set_priority(TimePoint now, uint8_t priority, bool preempt);

    State state() const { return state_; }
    const Config& config() const { return cfg_; }
    bool faulted() const { return !faults_.empty(); }
    const std::set<std::string, std::less<>>& faults() const { return faults_; }
    bool held() const { return hold_; }
    const std::string& hold_reason() const { return hold_reason_; }
    std::optional<TimePoint> next_deadline() const;
    const Transition& last_transition() const { return last_; }
    const Stats& stats() const { return stats_; }

    // Priority our adverts carry (the configured one; 255 for the owner).
    uint8_t priority() const { return cfg_.priority; }
    uint16_t master_advert_interval_cs() const { return master_adver_int_cs_; }
    std::chrono::microseconds skew_time() const;
    std::chrono::microseconds master_down_interval() const;
    // The current master as far as this node knows: itself when Master, the sender of the
    // last accepted advert when Backup (nullopt if none was heard or it resigned).
    std::optional<IpAddr> master_address() const;
    uint8_t master_priority() const;  // 0 when unknown
    bool accepts_vip_traffic() const {
        return state_ == State::master && (cfg_.priority == 255 || cfg_.accept_mode);
    }

  private:
    void to_master(TimePoint now, std::string reason, Step& out);
    void to_backup(TimePoint now, std::string reason, Step& out);
    void send(uint8_t priority, Step& out);
    // What will have happened if the Master_Down_Timer fires: the reason of that transition,
    // kept as data and turned into text only then (adverts arrive every interval).
    enum class DownCause : uint8_t {
        startup,
        master_silent,
        master_resigned,
        preempt,
        fault_cleared
    };
    struct PendingDown {
        DownCause cause = DownCause::startup;
        IpAddr peer;
        uint8_t peer_priority = 0;
        std::chrono::microseconds after{0};
    };
    void arm_master_down(TimePoint now, std::chrono::microseconds after, DownCause cause,
                         const IpAddr& peer = {});
    std::string down_reason() const;
    bool preemption_blocked(TimePoint now);
    void record(State to, TimePoint now, std::string reason);
    Step finish(Step s) const;

    Config cfg_;
    State state_ = State::initialize;
    uint16_t master_adver_int_cs_;
    TimePoint master_down_at_{};
    TimePoint advert_at_{};
    PendingDown down_;
    std::optional<IpAddr> master_addr_;
    uint8_t master_prio_ = 0;
    std::optional<TimePoint> lower_master_since_;  // preempt_delay clock
    std::set<std::string, std::less<>> faults_;
    bool hold_ = false;
    std::string hold_reason_;
    Transition last_;
    Stats stats_;
};

}  // namespace fulcrum::control::vrrp
