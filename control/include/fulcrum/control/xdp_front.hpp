// fulcrumd's side of the XDP front (af_xdp deployments): the program DPDK's net_af_xdp loads
// on the uplink (`xdp_prog=`, ebpf/xdp_front.bpf.c) is found on its interface, and its maps
// are filled with the services' VIPs, the source ACL and the SYN limit from `xdp:`; its
// per-reason packet counters are read back. The map layouts are ebpf/include/fulcrum_xdp.h.
//
// Only xdp_front.cpp uses libbpf; it is built when the eBPF programs are (meson option ebpf).
// Otherwise xdp_front_unavailable.cpp's constructor throws: fulcrumd refuses an `xdp:` section.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fulcrum/addr.hpp"

namespace fulcrum::control {

// What the maps should hold.
struct XdpDesired {
    std::vector<IpAddr> vips;     // fl_vip4 / fl_vip6 (duplicates are ignored)
    std::vector<IpPrefix> allow;  // fl_acl4 / fl_acl6, action allow, rule_id = list index
    std::vector<IpPrefix> deny;   // action deny, rule_id = list index
    bool default_allow = true;    // fl_cfg: sources no rule matches
    uint64_t syn_rate = 0;        // fl_cfg: SYNs per second per source; 0: no limit
    uint64_t syn_burst = 0;
    uint32_t syn_ipv6_prefix = 64;
    friend bool operator==(const XdpDesired&, const XdpDesired&) = default;
};

// The program's packet counters (fl_stats), in the order of enum fl_xdp_reason.
inline constexpr size_t kXdpReasonCount = 8;
struct XdpReasonName {
    const char* verdict;  // redirect, pass, drop
    const char* reason;
};
inline constexpr std::array<XdpReasonName, kXdpReasonCount> kXdpReasons{{
    {"pass", "non_ip"},
    {"pass", "non_vip"},
    {"pass", "no_socket"},
    {"redirect", "admitted"},
    {"drop", "acl_deny"},
    {"drop", "acl_default"},
    {"drop", "syn_rate"},
    {"drop", "malformed"},
}};

struct XdpStatus {
    std::string interface;
    bool attached = false;    // Fulcrum's front program is attached to the interface
    uint32_t program_id = 0;  // the attached XDP program (0: none)
    std::string program_name;
    bool applied = false;  // the maps hold the desired state
    std::string error;     // why not attached or not applied ("" when applied)
    uint64_t applies = 0, apply_errors = 0;
    uint64_t program_changes = 0;  // new programs found (dataplane restarts)
    // Entries written by the last successful apply.
    size_t vips4 = 0, vips6 = 0, acl4 = 0, acl6 = 0;
    // Summed over the possible CPUs; nullopt when not asked for or not readable.
    std::optional<std::array<uint64_t, kXdpReasonCount>> packets;
};

class XdpFront {
  public:
    explicit XdpFront(std::string interface);
    ~XdpFront();
    XdpFront(const XdpFront&) = delete;
    XdpFront& operator=(const XdpFront&) = delete;

    // The state sync() makes the maps hold.
    void set_desired(XdpDesired d);

    // Looks up the program attached to the interface and, when it is new (the dataplane
    // restarted and loaded it again, with empty maps), the desired state changed or the last
    // attempt failed, applies the desired state: entries added or changed first, stale ones
    // deleted next, fl_cfg last, so traffic that stays allowed is never dropped meanwhile.
    // Refuses to write into a program whose maps do not have the layouts of fulcrum_xdp.h or
    // whose fl_cfg carries another ABI version. Returns whether the maps hold the desired
    // state; status().error says why not. Never throws. Thread-safe.
    bool sync();

    // `packets`: also read fl_stats (from the program found by the last sync()).
    XdpStatus status(bool packets) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace fulcrum::control
