// Interface facts and virtual IP addresses over rtnetlink, for the HA node (VRRP over the
// dataplane's exception interface, normally `fl0`).
//
// One NETLINK_ROUTE socket, opened in the network namespace of the constructing thread; every
// request carries NLM_F_ACK and waits at most kRequestTimeoutMs for its answer, so no call
// hangs (a late answer to an abandoned request is recognised by its sequence number and
// skipped). No shelling out to `ip`. Adding and removing addresses needs CAP_NET_ADMIN;
// lookups do not.
//
// VIPs should be added as host prefixes (/32, /128), as keepalived does: removing an IPv4
// address that is the primary of its subnet also removes that subnet's secondaries unless the
// interface has net.ipv4.conf.IF.promote_secondaries=1.
//
// Not thread-safe: use one instance from one thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fulcrum/addr.hpp"

namespace fulcrum::control::ha {

class AddressManager {
  public:
    static constexpr int kRequestTimeoutMs = 2000;

    // One address of an interface as the kernel reports it.
    struct AddressInfo {
        IpAddr addr;
        uint8_t prefix_len = 0;
        uint32_t flags = 0;  // IFA_F_* (IFA_F_TENTATIVE, IFA_F_NODAD, IFA_F_SECONDARY, ...)
    };

    // Throws std::runtime_error if the netlink socket cannot be opened.
    AddressManager();
    ~AddressManager();
    AddressManager(const AddressManager&) = delete;
    AddressManager& operator=(const AddressManager&) = delete;

    // The index of the interface named `ifname`, 0 if there is none (also for a name that is
    // empty or too long to be an interface name).
    int ifindex(const std::string& ifname) const;

    // True if the interface is administratively up (IFF_UP) and has carrier (IFF_LOWER_UP);
    // false if it is not, or if there is no interface with this index.
    bool link_up(int ifindex);

    // The interface's Ethernet address; empty if the interface is absent or has no 6-byte
    // link-layer address, or an all-zero one (lo).
    std::optional<std::array<uint8_t, 6>> mac(int ifindex);

    // Adds `a/prefix_len`. An address that is already there is fine (for IPv4: the same
    // address with the same prefix length; another length adds a second entry, as `ip addr
    // add` does; for IPv6: the same address, whatever its prefix length). With `nodad`, an IPv6
    // address is added with IFA_F_NODAD, so it is usable at once instead of tentative for the
    // duration of duplicate address detection (ignored for IPv4). With `source` false, an
    // IPv6 address is added deprecated (preferred lifetime 0, valid forever): the kernel still
    // takes its traffic and answers neighbour solicitations for it, but never picks it as the
    // source of a connection of its own (RFC 6724 rule 3). A VIP needs this: as a /128 it
    // beats the host's /64 address for every destination in its prefix (rule 8, the longest
    // match is capped at the prefix length), so health checks would leave from the VIP and
    // their answers go to whoever holds it. Such an address that is already there is updated
    // (a VIP left preferred by an older fulcrumd is made deprecated). Ignored for IPv4, whose
    // source is the subnet route's preferred source, not a /32. Throws std::runtime_error
    // (interface gone, no permission, bad prefix length...).
    void add(int ifindex, const IpAddr& a, uint8_t prefix_len, bool nodad, bool source = true);

    // Removes `a/prefix_len` (the kernel matches the prefix length too: pass the one it was
    // added with). An address that is not there is fine, and so is an interface
    // that no longer exists (its addresses went with it). Throws std::runtime_error otherwise.
    void remove(int ifindex, const IpAddr& a, uint8_t prefix_len);

    // The addresses of the interface (both families, kernel order); empty if it is absent.
    std::vector<std::pair<IpAddr, uint8_t>> list(int ifindex);
    // The same with the kernel's address flags.
    std::vector<AddressInfo> addresses(int ifindex);

    // The interface's usable IPv6 link-local address (fe80::/10), the VRRP source for IPv6.
    // Tentative (duplicate address detection still running, about a second after the link
    // comes up) and DAD-failed addresses are skipped, because the kernel refuses them as a
    // source: empty until one is usable, so retry later.
    std::optional<IpAddr> link_local(int ifindex);

    // The interface's first IPv4 address in kernel order (the primary of its first subnet),
    // the VRRP source for IPv4, leaving out the addresses in `exclude` (pass the VIPs, which
    // are on the interface while this node is master).
    std::optional<IpAddr> first_v4(int ifindex, std::span<const IpAddr> exclude = {});

  private:
    struct Reply;
    // Sends one request (header and payload ready, seq filled in here) and collects the
    // answer: the messages of a dump, or the ack / error. Throws on timeout or socket errors.
    Reply transact(std::vector<uint8_t>& request, const char* what) const;
    std::optional<std::vector<uint8_t>> get_link(int ifindex, const char* ifname) const;

    int fd_ = -1;
    uint32_t port_id_ = 0;
    mutable uint32_t seq_ = 0;
};

// "interface index 4 (fl0)", for messages (the name only while the interface exists).
std::string if_label(int ifindex);

}  // namespace fulcrum::control::ha
