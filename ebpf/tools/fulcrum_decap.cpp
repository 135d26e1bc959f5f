// fulcrum-decap: attaches Fulcrum's decapsulation program (ebpf/decap.bpf.c) to a server's
// interface, so the server receives what the balancer sends to `ipip` and `gue` services
// without the kernel's ipip / ip6_tunnel / fou modules. The attachment (XDP, or tc ingress)
// outlives this process; `--detach` removes it, `--stats` prints its counters.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <ifaddrs.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "decap.skel.h"
#include "fulcrum_decap.h"
#include "fulcrum_version.h"

namespace {

// Where the tc variant sits on the clsact ingress hook: a fixed handle and priority, so a
// later run finds (and replaces or removes) exactly its own filter.
constexpr uint32_t kTcHandle = 0xFD1;
constexpr uint32_t kTcPriority = 1;

// Counter names, in the order of enum fl_decap_reason.
constexpr const char* kReasonNames[] = {
    "pass_not_tunnel", "pass_not_local", "pass_vlan",        "decap_ipip4",
    "decap_ipip6",     "decap_gue4",     "decap_gue6",       "drop_fragment",
    "drop_options",    "drop_malformed", "drop_gue_variant", "drop_adjust",
};
static_assert(sizeof kReasonNames / sizeof kReasonNames[0] == FL_DECAP_REASON_COUNT);

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::string errstr(int err) {
    return std::strerror(err < 0 ? -err : err);
}

// An address the program decapsulates for, in network order.
struct Address {
    int family = AF_INET;
    uint8_t bytes[16] = {};
    bool operator<(const Address& o) const {
        return family != o.family ? family < o.family : std::memcmp(bytes, o.bytes, 16) < 0;
    }
    std::string text() const {
        char buf[INET6_ADDRSTRLEN];
        inet_ntop(family, bytes, buf, sizeof buf);
        return buf;
    }
};

Address parse_address(const std::string& s) {
    Address a;
    if (inet_pton(AF_INET, s.c_str(), a.bytes) == 1) return a;
    a.family = AF_INET6;
    if (inet_pton(AF_INET6, s.c_str(), a.bytes) == 1) return a;
    throw Error(
        "--address '" + s +
        "' is not an IPv4 or IPv6 address; give the server's own address, e.g. 198.18.0.11");
}

std::set<Address> interface_addresses(const std::string& iface) {
    ifaddrs* list = nullptr;
    if (getifaddrs(&list) != 0)
        throw Error("cannot list the interfaces' addresses: " + errstr(errno));
    std::set<Address> out;
    for (ifaddrs* i = list; i; i = i->ifa_next) {
        if (!i->ifa_addr || iface != i->ifa_name) continue;
        Address a;
        if (i->ifa_addr->sa_family == AF_INET) {
            std::memcpy(a.bytes, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, 4);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            a.family = AF_INET6;
            std::memcpy(a.bytes, &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, 16);
        } else {
            continue;
        }
        out.insert(a);
    }
    freeifaddrs(list);
    return out;
}

// libbpf's own messages: warnings and errors only (its info lines are noise for an operator),
// and none while probing for attachments, where "not there" is an expected answer.
bool g_libbpf_quiet = false;

int libbpf_print(libbpf_print_level level, const char* fmt, va_list args) {
    if (level > LIBBPF_WARN || g_libbpf_quiet) return 0;
    return std::vfprintf(stderr, fmt, args);
}

struct QuietLibbpf {
    QuietLibbpf() { g_libbpf_quiet = true; }
    ~QuietLibbpf() { g_libbpf_quiet = false; }
};

struct ProgInfo {
    uint32_t id = 0;
    std::string name;
    std::vector<uint32_t> map_ids;
};

std::optional<ProgInfo> prog_info(uint32_t id) {
    if (!id) return std::nullopt;
    const int fd = bpf_prog_get_fd_by_id(id);
    if (fd < 0) return std::nullopt;  // detached meanwhile
    ProgInfo p;
    p.id = id;
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
        p.name = info.name;
        p.map_ids.resize(info.nr_map_ids);
        bpf_prog_info again{};
        again.nr_map_ids = info.nr_map_ids;
        again.map_ids = reinterpret_cast<uint64_t>(p.map_ids.data());
        len = sizeof again;
        if (bpf_obj_get_info_by_fd(fd, &again, &len) != 0) p.map_ids.clear();
        p.map_ids.resize(std::min<size_t>(p.map_ids.size(), again.nr_map_ids));
    }
    close(fd);
    return p;
}

// The XDP program on the interface (any mode) and its mode's attach flag.
struct XdpState {
    std::optional<ProgInfo> prog;
    uint32_t mode_flag = 0;
    const char* mode = "";
};

XdpState xdp_state(int ifindex, const std::string& iface) {
    LIBBPF_OPTS(bpf_xdp_query_opts, q);
    const int err = bpf_xdp_query(ifindex, 0, &q);
    if (err) throw Error("cannot query the XDP program of " + iface + ": " + errstr(err));
    XdpState s;
    if (q.drv_prog_id) {
        s.prog = prog_info(q.drv_prog_id);
        s.mode_flag = XDP_FLAGS_DRV_MODE;
        s.mode = "native";
    } else if (q.skb_prog_id) {
        s.prog = prog_info(q.skb_prog_id);
        s.mode_flag = XDP_FLAGS_SKB_MODE;
        s.mode = "generic";
    } else if (q.hw_prog_id) {
        s.prog = prog_info(q.hw_prog_id);
        s.mode_flag = XDP_FLAGS_HW_MODE;
        s.mode = "offloaded";
    }
    return s;
}

bpf_tc_hook ingress_hook(int ifindex) {
    bpf_tc_hook h{};
    h.sz = sizeof h;
    h.ifindex = ifindex;
    h.attach_point = BPF_TC_INGRESS;
    return h;
}

bpf_tc_opts tc_opts() {
    bpf_tc_opts o{};
    o.sz = sizeof o;
    o.handle = kTcHandle;
    o.priority = kTcPriority;
    return o;
}

// The program of our tc filter slot, if any (ENOENT: no clsact qdisc or no such filter).
std::optional<ProgInfo> tc_state(int ifindex, const std::string& iface) {
    auto hook = ingress_hook(ifindex);
    auto o = tc_opts();
    QuietLibbpf quiet;
    const int err = bpf_tc_query(&hook, &o);
    if (err == -ENOENT || err == -EINVAL) return std::nullopt;
    if (err) throw Error("cannot query the tc ingress filters of " + iface + ": " + errstr(err));
    return prog_info(o.prog_id);
}

bool is_ours(const std::optional<ProgInfo>& p, const char* name) {
    return p && p->name == name;
}

std::string describe(const ProgInfo& p) {
    return "'" + p.name + "' (id " + std::to_string(p.id) + ")";
}

void xdp_detach(int ifindex, const std::string& iface, const XdpState& s) {
    const int err = bpf_xdp_detach(ifindex, s.mode_flag, nullptr);
    if (err) throw Error("cannot remove the XDP program from " + iface + ": " + errstr(err));
}

void tc_detach(int ifindex, const std::string& iface) {
    auto hook = ingress_hook(ifindex);
    auto o = tc_opts();
    const int err = bpf_tc_detach(&hook, &o);
    if (err && err != -ENOENT)
        throw Error("cannot remove the tc ingress filter from " + iface + ": " + errstr(err));
}

int detach_all(int ifindex, const std::string& iface) {
    int removed = 0;
    const auto x = xdp_state(ifindex, iface);
    if (is_ours(x.prog, FL_DECAP_PROG_XDP)) {
        xdp_detach(ifindex, iface, x);
        std::cout << "fulcrum-decap: removed " << describe(*x.prog) << " (XDP, " << x.mode
                  << ") from " << iface << "\n";
        removed++;
    } else if (x.prog) {
        std::cout << "fulcrum-decap: left XDP program " << describe(*x.prog) << " on " << iface
                  << " alone: it is not fulcrum-decap's\n";
    }
    const auto t = tc_state(ifindex, iface);
    if (is_ours(t, FL_DECAP_PROG_TC)) {
        tc_detach(ifindex, iface);
        std::cout << "fulcrum-decap: removed " << describe(*t) << " (tc ingress) from " << iface
                  << "\n";
        removed++;
    } else if (t) {
        std::cout << "fulcrum-decap: left tc ingress filter " << describe(*t) << " (handle 0x"
                  << std::hex << kTcHandle << std::dec << ", priority " << kTcPriority << ") on "
                  << iface << " alone: it is not fulcrum-decap's\n";
    }
    if (!removed)
        std::cout << "fulcrum-decap: nothing of fulcrum-decap's was attached to " << iface << "\n";
    return 0;
}

int print_stats(int ifindex, const std::string& iface) {
    std::optional<ProgInfo> prog;
    std::string mode;
    const auto x = xdp_state(ifindex, iface);
    if (is_ours(x.prog, FL_DECAP_PROG_XDP)) {
        prog = x.prog;
        mode = "xdp";
    } else if (auto t = tc_state(ifindex, iface); is_ours(t, FL_DECAP_PROG_TC)) {
        prog = t;
        mode = "tc";
    }
    if (!prog)
        throw Error("no fulcrum-decap program is attached to " + iface +
                    "; attach it first: fulcrum-decap " + iface);
    for (uint32_t id : prog->map_ids) {
        const int fd = bpf_map_get_fd_by_id(id);
        if (fd < 0) continue;
        bpf_map_info info{};
        uint32_t len = sizeof info;
        if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0 ||
            std::string(info.name) != "fl_dc_stats") {
            close(fd);
            continue;
        }
        if (info.max_entries != FL_DECAP_REASON_COUNT || info.value_size != sizeof(uint64_t)) {
            close(fd);
            throw Error("the program attached to " + iface + " has " +
                        std::to_string(info.max_entries) +
                        " counters where this fulcrum-decap knows " +
                        std::to_string(FL_DECAP_REASON_COUNT) +
                        ": it comes from another version; re-attach it with this fulcrum-decap");
        }
        const int ncpu = libbpf_num_possible_cpus();
        if (ncpu <= 0) {
            close(fd);
            throw Error("cannot count the possible CPUs: " + errstr(ncpu));
        }
        std::vector<uint64_t> vals(static_cast<size_t>(ncpu));
        nlohmann::json counters = nlohmann::json::object();
        for (uint32_t r = 0; r < FL_DECAP_REASON_COUNT; r++) {
            uint64_t sum = 0;
            if (bpf_map_lookup_elem(fd, &r, vals.data()) == 0)
                for (auto v : vals) sum += v;
            counters[kReasonNames[r]] = sum;
        }
        close(fd);
        nlohmann::json out = {
            {"interface", iface}, {"mode", mode}, {"program_id", prog->id}, {"counters", counters}};
        std::cout << out.dump(2) << "\n";
        return 0;
    }
    throw Error("the program attached to " + iface +
                " has no fl_dc_stats map; re-attach it with this fulcrum-decap");
}

void fill(decap* skel, const std::set<Address>& addrs, const std::vector<uint16_t>& ports) {
    const uint32_t one = 1;
    for (const auto& a : addrs) {
        auto* map = a.family == AF_INET ? skel->maps.fl_dc_addr4 : skel->maps.fl_dc_addr6;
        const size_t klen = a.family == AF_INET ? 4 : 16;
        const int err = bpf_map__update_elem(map, a.bytes, klen, &one, sizeof one, BPF_ANY);
        if (err)
            throw Error("cannot add address " + a.text() + " to the program: " + errstr(err) +
                        " (at most " + std::to_string(FL_DECAP_MAX_ADDRS) + " per family)");
    }
    for (uint16_t p : ports) {
        const uint16_t key = htons(p);
        const int err = bpf_map__update_elem(skel->maps.fl_dc_ports, &key, sizeof key, &one,
                                             sizeof one, BPF_ANY);
        if (err)
            throw Error("cannot add GUE port " + std::to_string(p) + ": " + errstr(err) +
                        " (at most " + std::to_string(FL_DECAP_MAX_PORTS) + " ports)");
    }
}

struct Skeleton {
    decap* skel = nullptr;
    ~Skeleton() { decap::destroy(skel); }
};

int attach(int ifindex, const std::string& iface, const std::string& mode,
           const std::set<Address>& addrs, const std::vector<uint16_t>& ports) {
    Skeleton s;
    s.skel = decap::open_and_load();
    if (!s.skel)
        throw Error("cannot load the decap program into the kernel: " + errstr(errno) +
                    "; run as root (it needs CAP_BPF and CAP_NET_ADMIN) on Linux 5.15 or later");
    fill(s.skel, addrs, ports);
    ProgInfo attached;
    std::string how;
    if (mode == "xdp") {
        const auto x = xdp_state(ifindex, iface);
        if (x.prog && !is_ours(x.prog, FL_DECAP_PROG_XDP))
            throw Error(iface + " already runs XDP program " + describe(*x.prog) +
                        "; an interface has one XDP program: remove it (ip link set dev " + iface +
                        " xdp off) or use --mode tc");
        // Replacing our own program in its mode is atomic: no tunnel packet goes undecapsulated.
        const int fd = bpf_program__fd(s.skel->progs.fl_decap_xdp);
        const int err = bpf_xdp_attach(ifindex, fd, x.prog ? x.mode_flag : 0, nullptr);
        if (err)
            throw Error("cannot attach the XDP program to " + iface + ": " + errstr(err) +
                        "; try --mode tc (works on every interface)");
        if (is_ours(tc_state(ifindex, iface), FL_DECAP_PROG_TC))
            tc_detach(ifindex, iface);  // mode switch
        const auto now = xdp_state(ifindex, iface);
        if (now.prog) attached = *now.prog;
        how = std::string("XDP, ") + now.mode;
    } else {
        const auto t = tc_state(ifindex, iface);
        if (t && !is_ours(t, FL_DECAP_PROG_TC))
            throw Error(iface + " already has tc ingress filter " + describe(*t) + " at handle 0x" +
                        [] {
                            char b[16];
                            std::snprintf(b, sizeof b, "%x", kTcHandle);
                            return std::string(b);
                        }() +
                        " priority " + std::to_string(kTcPriority) +
                        "; remove it (tc filter del dev " + iface + " ingress) or use --mode xdp");
        auto hook = ingress_hook(ifindex);
        int err = bpf_tc_hook_create(&hook);
        if (err && err != -EEXIST)
            throw Error("cannot add the clsact qdisc to " + iface + ": " + errstr(err) +
                        " (the kernel needs CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF)");
        auto o = tc_opts();
        o.prog_fd = bpf_program__fd(s.skel->progs.fl_decap_tc);
        o.flags = BPF_TC_F_REPLACE;
        err = bpf_tc_attach(&hook, &o);
        if (err)
            throw Error("cannot attach the tc ingress filter to " + iface + ": " + errstr(err));
        const auto x = xdp_state(ifindex, iface);
        if (is_ours(x.prog, FL_DECAP_PROG_XDP)) xdp_detach(ifindex, iface, x);  // mode switch
        if (auto now = prog_info(o.prog_id)) attached = *now;
        how = "tc ingress";
    }
    std::cout << "fulcrum-decap: attached '" << attached.name << "' (id " << attached.id << ", "
              << how << ") to " << iface << "; decapsulating IPIP, IP6IP6 and GUE (UDP port";
    if (ports.size() > 1) std::cout << "s";
    for (size_t i = 0; i < ports.size(); i++) std::cout << (i ? ", " : " ") << ports[i];
    std::cout << ") to";
    size_t i = 0;
    for (const auto& a : addrs) std::cout << (i++ ? ", " : " ") << a.text();
    std::cout << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Attach Fulcrum's IPIP/IP6IP6/GUE decapsulation program to a server's interface"};
    app.name("fulcrum-decap");
    app.set_version_flag("--version", std::string("fulcrum-decap ") + FULCRUM_VERSION);
    std::string iface, mode = "xdp";
    bool detach = false, stats = false;
    std::vector<int> ports;
    std::vector<std::string> addresses;
    app.add_option("IFACE", iface, "the interface tunnel packets arrive on")->required();
    app.add_option("--mode", mode,
                   "xdp (earliest, fastest) or tc (ingress classifier; any interface)")
        ->check(CLI::IsMember({"xdp", "tc"}))
        ->capture_default_str();
    app.add_flag("--detach", detach, "remove fulcrum-decap's program from IFACE (both modes)");
    app.add_flag("--stats", stats, "print the attached program's counters as JSON");
    app.add_option("--gue-port", ports,
                   "UDP port(s) of GUE packets (dataplane.encapsulation.gue_port); default 6080")
        ->check(CLI::Range(1, 65535));
    app.add_option(
        "--address", addresses,
        "outer destination address(es) to decapsulate for; default: IFACE's addresses now");
    app.get_formatter()->column_width(40);
    CLI11_PARSE(app, argc, argv);
    if (detach && stats) {
        std::cerr << "fulcrum-decap: --detach and --stats exclude each other; give one\n";
        return 2;
    }
    libbpf_set_print(libbpf_print);
    try {
        const unsigned ifindex = if_nametoindex(iface.c_str());
        if (!ifindex)
            throw Error("no interface '" + iface + "' in this network namespace (" + errstr(errno) +
                        "); see `ip link`");
        if (detach) return detach_all(static_cast<int>(ifindex), iface);
        if (stats) return print_stats(static_cast<int>(ifindex), iface);
        std::set<Address> addrs;
        for (const auto& a : addresses) addrs.insert(parse_address(a));
        if (addrs.empty()) addrs = interface_addresses(iface);
        if (addrs.empty())
            throw Error(
                iface +
                " has no IPv4 or IPv6 address to decapsulate for; add one, or name the server's "
                "address(es) with --address");
        std::vector<uint16_t> gue;
        for (int p : ports) gue.push_back(static_cast<uint16_t>(p));
        if (gue.empty()) gue.push_back(FL_DECAP_DEFAULT_GUE_PORT);
        return attach(static_cast<int>(ifindex), iface, mode, addrs, gue);
    } catch (const std::exception& e) {
        std::cerr << "fulcrum-decap: " << e.what() << "\n";
        return 1;
    }
}
