// Server reachability from the kernel's routing and neighbour tables over rtnetlink
// (libnl-route). DSR needs each server's own MAC (the server must be on-link); IPIP and GUE
// need the MAC of the next hop towards the server. Missing entries trigger resolution;
// changes are followed through netlink notifications.
//
// Resolution is triggered by asking the kernel to "use" the neighbour entry (RTM_NEWNEIGH
// with NTF_USE, as `ip neigh replace ADDR dev DEV use` does): the kernel creates the entry if
// needed and runs ARP / neighbour discovery for it without sending any traffic to the
// server. Without CAP_NET_ADMIN an empty UDP datagram to the next hop's discard port is sent
// instead, and also for entries another agent maintains (externally learned or kernel-managed
// entries, whose flags NTF_USE would clear). Triggers are rate limited to one per second per
// next hop.
//
// The resolver follows the next hops that resolve() looked up ("watched" next hops):
//   - an unresolved next hop is re-triggered with exponential backoff (1 s up to 30 s), so a
//     server that comes up later is found without the caller polling;
//   - a resolved entry that the kernel marks STALE is re-confirmed (the dataplane bypasses
//     the kernel, so nothing else would keep the entry fresh or notice a dead server);
//   - a next hop that resolve() has not asked about for 10 minutes is dropped, and
//     process_events() reports a change so the caller re-resolves what it still needs.
// Not thread-safe: use one instance from one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fulcrum/addr.hpp"

namespace fulcrum::control {

struct L2Destination {
    std::optional<MacAddr> mac;  // set when resolved
    IpAddr next_hop;             // the server itself when on-link, else the gateway
    std::string ifname;          // interface of the route
    std::string reason;          // when unresolved: "unresolved" (no neighbour entry yet or
                                 // FAILED), "no route to X", "X is not on-link (via gateway Y):
                                 // DSR needs servers on the balancer's L2 segment"
                                 // (also "no route to X (blackhole route)" and the like,
                                 // "X is a local address of this host", lookup errors)
};

class NeighborResolver {
public:
    // Counters for metrics and tests.
    struct Stats {
        uint64_t resolves = 0;             // resolve() calls
        uint64_t triggers = 0;             // resolution triggers sent to the kernel
        uint64_t udp_probes = 0;           // of which UDP datagrams (no CAP_NET_ADMIN, or the
                                           // entry belongs to another agent)
        uint64_t triggers_suppressed = 0;  // triggers skipped by the per-next-hop rate limit
        uint64_t trigger_errors = 0;       // triggers that failed (see last_error)
        uint64_t events = 0;               // netlink notifications read
        uint64_t overruns = 0;             // notifications lost to a full socket buffer
        uint64_t watched = 0;              // next hops currently followed
        std::string last_error;            // most recent internal error, for diagnostics
    };

    // Throws std::runtime_error if netlink cannot be opened.
    NeighborResolver();
    ~NeighborResolver();
    NeighborResolver(const NeighborResolver&) = delete;
    NeighborResolver& operator=(const NeighborResolver&) = delete;

    // Looks up the route to `addr` and the neighbour entry of its next hop. With
    // require_onlink (DSR), a route through a gateway is an error. When the neighbour entry is
    // missing, incomplete or failed, resolution is triggered and `mac` is empty with reason
    // "unresolved"; a later call (after a change notification) finds it.
    L2Destination resolve(const IpAddr& addr, bool require_onlink);

    // A file descriptor that becomes readable when neighbour or route changes arrive; call
    // process_events() then. Returns true if anything relevant changed since the last call.
    // The descriptor also becomes readable for the resolver's own timers (retries, expiry),
    // so poll it and call process_events() whenever it is readable.
    // Relevant: any route or link change, a watched next hop's MAC appearing, changing or
    // disappearing, lost notifications, or watched next hops expiring. Neighbour changes for
    // addresses resolve() never looked up are not reported.
    int event_fd() const;
    bool process_events();

    Stats stats() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace fulcrum::control
