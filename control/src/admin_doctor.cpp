// fulcrumctl doctor: the usual mistakes on a running host, each with what to do about it.
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <chrono>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "fulcrum/control/admin_api.hpp"
#include "fulcrum/control/daemon.hpp"
#include "fulcrum/ctl_protocol.hpp"

namespace fulcrum::control {

using nlohmann::json;

namespace {

json check(const std::string& name, const std::string& status, const std::string& detail,
           const std::string& fix = "") {
    json c = {{"check", name}, {"status", status}, {"detail", detail}};
    if (!fix.empty()) c["fix"] = fix;
    return c;
}

// The dataplane's health JSON, or an error saying why it cannot be had.
Expected<json> dataplane_health(const std::string& socket) {
    auto c = ctl::Client::connect(socket, std::chrono::seconds(2));
    if (!c) return Error{c.error()};
    auto r = c.value().request(ctl::Op::health);
    if (!r) return Error{r.error()};
    json j = json::parse(r.value().body.begin(), r.value().body.end(), nullptr, false);
    if (r.value().status != ctl::Status::ok || !j.is_object())
        return Error{"the health request was refused: " + r.value().text()};
    return j;
}

// Addresses on interface `name` (nullopt: no such interface).
std::optional<std::set<IpAddr>> interface_addresses(const std::string& name) {
    if (name.empty() || !if_nametoindex(name.c_str())) return std::nullopt;
    std::set<IpAddr> out;
    ifaddrs* list = nullptr;
    if (getifaddrs(&list) != 0) return out;
    for (ifaddrs* i = list; i; i = i->ifa_next) {
        if (!i->ifa_addr || name != i->ifa_name) continue;
        if (i->ifa_addr->sa_family == AF_INET)
            out.insert(IpAddr::v4(reinterpret_cast<const uint8_t*>(
                &reinterpret_cast<const sockaddr_in*>(static_cast<const void*>(i->ifa_addr))
                     ->sin_addr)));
        else if (i->ifa_addr->sa_family == AF_INET6)
            out.insert(IpAddr::v6(reinterpret_cast<const uint8_t*>(
                &reinterpret_cast<const sockaddr_in6*>(static_cast<const void*>(i->ifa_addr))
                     ->sin6_addr)));
    }
    freeifaddrs(list);
    return out;
}

// HugePages_Total from /proc/meminfo (nullopt: not readable).
std::optional<uint64_t> hugepages_total() {
    std::ifstream f("/proc/meminfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("HugePages_Total:", 0) == 0) return std::stoull(line.substr(16));
    return std::nullopt;
}

uint64_t no_server_drops(const DataplaneCounters* c) {
    if (!c) return 0;
    const auto it = c->drops.find("no_server");
    return it == c->drops.end() ? 0 : it->second;
}

}  // namespace

json AdminApi::doctor() {
    json checks = json::array();
    const Daemon::View v = d_.view(true);

    // The dataplane.
    auto health = dataplane_health(v.dataplane.socket);
    if (!health)
        checks.push_back(
            check("dataplane", "error",
                  "the dataplane at " + v.dataplane.socket + " is unreachable: " + health.error(),
                  "start fulcrum-dataplane with --control-socket " + v.dataplane.socket +
                      ", or set dataplane.control_socket to the socket it listens on"));
    else
        checks.push_back(check("dataplane", "ok",
                               "pid " + std::to_string(health.value().value("pid", 0)) +
                                   ", generation " + std::to_string(v.dataplane.generation)));

    // The VIPs on the exception interface, unless fulcrumd manages them (interface: / ha:).
    std::set<IpAddr> vips;
    for (const auto& s : v.model.services) vips.insert(s.cfg.vip);
    if (v.ha) {
        // On a backup of a pair the VIPs are rightly elsewhere: fulcrumctl ha tells.
        checks.push_back(check(
            "vips", "ok",
            "managed by fulcrumd on " + v.ha->interface + " (state " + v.ha->state + ", VIPs " +
                (v.ha->vips_on_interface ? "on it" : "not on it: fulcrumctl ha says why") + ")"));
    } else if (health) {
        const std::string ifname = health.value().value("exception_interface", std::string());
        const auto have = interface_addresses(ifname);
        if (!have) {
            checks.push_back(check(
                "vips", "error",
                "the dataplane's exception interface '" + ifname + "' does not exist here",
                "run fulcrumd in the dataplane's network namespace, and start the dataplane with "
                "--exception NAME"));
        } else {
            std::string missing;
            for (const auto& a : vips)
                if (!have->count(a)) missing += (missing.empty() ? "" : ", ") + a.str();
            if (missing.empty())
                checks.push_back(
                    check("vips", "ok", std::to_string(vips.size()) + " VIPs on " + ifname));
            else
                checks.push_back(check(
                    "vips", "error",
                    "VIPs not on " + ifname + ": " + missing +
                        " (the kernel does not answer ARP/ND for them: clients cannot reach them)",
                    "ip addr add VIP/32 dev " + ifname +
                        " (/128 for IPv6), or let fulcrumd "
                        "manage them with an 'interface:' section (docs/configuration.md)"));
        }
    }

    // Servers without a MAC: no frame can reach them.
    std::string unresolved;
    size_t n_unresolved = 0;
    for (const auto& [key, sm] : v.model.servers) {
        if (sm.retired || !sm.enabled() || sm.mac) continue;
        ++n_unresolved;
        if (n_unresolved <= 10)
            unresolved += (unresolved.empty() ? "" : "; ") + key +
                          (sm.l2_reason.empty() ? "" : " (" + sm.l2_reason + ")");
    }
    if (n_unresolved)
        checks.push_back(check(
            "servers_resolved", "warning",
            std::to_string(n_unresolved) + " servers have no MAC: " + unresolved,
            "check that each is up and on a segment the exception interface reaches (ip neigh "
            "show; for ipip/gue its next hop), or remove it from the configuration"));
    else
        checks.push_back(check("servers_resolved", "ok", "every enabled server has a MAC"));

    // no_server drops, over one second.
    if (v.counters) {
        const uint64_t before = no_server_drops(v.counters.get());
        std::this_thread::sleep_for(std::chrono::seconds(1));
        const Daemon::View later = d_.view(true);
        const uint64_t after = later.counters ? no_server_drops(later.counters.get()) : before;
        if (after > before)
            checks.push_back(
                check("no_server_drops", "warning",
                      std::to_string(after - before) +
                          " packets dropped in the last second because "
                          "their service has no usable server (" +
                          std::to_string(after) + " in all)",
                      "fulcrumctl servers: bring a server of the service up (health, fulcrumctl "
                      "enable, weight above 0), or remove the service"));
        else
            checks.push_back(
                check("no_server_drops", "ok",
                      "not rising (" + std::to_string(after) + " since the dataplane started)"));
    }

    // Hugepages.
    if (const auto hp = hugepages_total(); hp && *hp == 0)
        checks.push_back(
            check("hugepages", "warning", "no hugepages reserved (HugePages_Total: 0)",
                  "reserve them before starting the dataplane: scripts/hugepages.sh, or "
                  "vm.nr_hugepages (docs/deployment.md)"));
    else if (hp)
        checks.push_back(check("hugepages", "ok", std::to_string(*hp) + " hugepages reserved"));

    size_t errors = 0, warnings = 0;
    for (const auto& c : checks) {
        errors += c["status"] == "error";
        warnings += c["status"] == "warning";
    }
    return {{"ok", true}, {"errors", errors}, {"warnings", warnings}, {"checks", checks}};
}

}  // namespace fulcrum::control
