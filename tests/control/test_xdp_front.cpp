// XdpFront (fulcrumd's side of the XDP front) against the real program: ebpf/xdp_front.bpf.o
// (its libbpf skeleton) attached in generic (SKB) mode to a veth in a network namespace of a
// forked child (tests/common/netns_child.hpp), as DPDK's net_af_xdp attaches it to the uplink.
// Checks that XdpFront finds the program by the interface, that the maps then hold exactly the
// desired entries (read back with bpf_map_lookup_elem), that a second state replaces them,
// that a new program (a restarted dataplane) is filled again, that the per-CPU counters are
// summed, and that a program with another ABI version is left alone. Needs root.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fulcrum/control/admin.hpp"
#include "fulcrum/control/config.hpp"
#include "fulcrum/control/daemon.hpp"
#include "fulcrum/control/xdp_front.hpp"
#include "fulcrum_xdp.h"
#include "netns_child.hpp"
#include "xdp_front.skel.h"

namespace fulcrum::control {
namespace {

using namespace fulcrum::test::netns;

constexpr const char* kNeedsRoot = "XdpFront tests need root (network namespaces, BPF)";

IpAddr ip(const char* s) {
    return *IpAddr::parse(s);
}
IpPrefix pfx(const char* s) {
    return *IpPrefix::parse(s);
}

// The front program, loaded and attached to `ifname` in SKB mode (replacing what is there).
struct Front {
    xdp_front* skel = nullptr;
    Front(const std::string& ifname, uint32_t preset_abi = 0) {
        skel = xdp_front::open_and_load();
        require(skel != nullptr,
                "cannot load xdp_front.bpf.o: " + std::string(std::strerror(errno)));
        if (preset_abi) {
            fl_front_config c{};
            c.abi_version = preset_abi;
            const uint32_t zero = 0;
            require(bpf_map_update_elem(bpf_map__fd(skel->maps.fl_cfg), &zero, &c, BPF_ANY) == 0,
                    "preset fl_cfg");
        }
        const int ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
        require(ifindex > 0, "no interface " + ifname);
        const int err = bpf_xdp_attach(ifindex, bpf_program__fd(skel->progs.fl_xdp_front),
                                       XDP_FLAGS_SKB_MODE, nullptr);
        require(err == 0, "cannot attach the front to " + ifname + ": " + std::strerror(-err));
    }
    ~Front() {
        xdp_front::destroy(skel);
    }  // the attachment stays until detached or the namespace dies
    Front(const Front&) = delete;
    Front& operator=(const Front&) = delete;

    uint32_t id() const {
        bpf_prog_info info{};
        uint32_t len = sizeof info;
        require(bpf_obj_get_info_by_fd(bpf_program__fd(skel->progs.fl_xdp_front), &info, &len) == 0,
                "prog info");
        return info.id;
    }

    // Every entry of a hash or LPM map, as text.
    static std::set<std::string> keys(
        int fd, size_t key_size, size_t value_size,
        const std::function<std::string(const uint8_t*, const uint8_t*)>& show) {
        std::set<std::string> out;
        std::vector<uint8_t> cur(key_size), next(key_size), val(value_size);
        const void* prev = nullptr;
        for (int i = 0; i < 100000 && bpf_map_get_next_key(fd, prev, next.data()) == 0; ++i) {
            require(bpf_map_lookup_elem(fd, next.data(), val.data()) == 0,
                    "lookup of a listed key");
            out.insert(show(next.data(), val.data()));
            cur = next;
            prev = cur.data();
        }
        return out;
    }
    std::set<std::string> vips() const {
        auto v4 =
            keys(bpf_map__fd(skel->maps.fl_vip4), 4, 4, [](const uint8_t* k, const uint8_t* v) {
                uint32_t one;
                std::memcpy(&one, v, 4);
                return IpAddr::v4(k).str() + "=" + std::to_string(one);
            });
        auto v6 =
            keys(bpf_map__fd(skel->maps.fl_vip6), 16, 4, [](const uint8_t* k, const uint8_t* v) {
                uint32_t one;
                std::memcpy(&one, v, 4);
                return IpAddr::v6(k).str() + "=" + std::to_string(one);
            });
        v4.insert(v6.begin(), v6.end());
        return v4;
    }
    // "prefix action rule_id"
    std::set<std::string> acl() const {
        auto show = [](const uint8_t* k, const uint8_t* v, bool v6) {
            fl_acl_rule r;
            std::memcpy(&r, v, sizeof r);
            uint32_t len;
            std::memcpy(&len, k, 4);
            const IpAddr a = v6 ? IpAddr::v6(k + 4) : IpAddr::v4(k + 4);
            return a.str() + "/" + std::to_string(len) +
                   (r.action == FL_ACL_ALLOW  ? " allow "
                    : r.action == FL_ACL_DENY ? " deny "
                                              : " ? ") +
                   std::to_string(r.rule_id);
        };
        auto a4 = keys(bpf_map__fd(skel->maps.fl_acl4), sizeof(fl_lpm4), sizeof(fl_acl_rule),
                       [&](const uint8_t* k, const uint8_t* v) { return show(k, v, false); });
        auto a6 = keys(bpf_map__fd(skel->maps.fl_acl6), sizeof(fl_lpm6), sizeof(fl_acl_rule),
                       [&](const uint8_t* k, const uint8_t* v) { return show(k, v, true); });
        a4.insert(a6.begin(), a6.end());
        return a4;
    }
    fl_front_config cfg() const {
        fl_front_config c{};
        const uint32_t zero = 0;
        require(bpf_map_lookup_elem(bpf_map__fd(skel->maps.fl_cfg), &zero, &c) == 0, "read fl_cfg");
        return c;
    }
    // Runs the program once on a non-IP frame (an ARP request): counts one FL_XDP_PASS_NON_IP.
    void run_arp() const {
        std::vector<uint8_t> frame(60, 0);
        std::memset(frame.data(), 0xff, 6);
        frame[6] = 0x02;
        frame[12] = 0x08;
        frame[13] = 0x06;
        LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
                    .data_size_in = static_cast<uint32_t>(frame.size()));
        require(bpf_prog_test_run_opts(bpf_program__fd(skel->progs.fl_xdp_front), &opts) == 0,
                "BPF_PROG_TEST_RUN");
        require(opts.retval == XDP_PASS, "the ARP frame was not passed");
    }
};

void expect_eq(const std::set<std::string>& got, const std::set<std::string>& want,
               const std::string& what) {
    if (got == want) return;
    std::string g, w;
    for (const auto& s : got) g += " " + s;
    for (const auto& s : want) w += " " + s;
    throw std::runtime_error(what + ": maps hold {" + g + " }, expected {" + w + " }");
}

XdpDesired first_state() {
    XdpDesired d;
    d.vips = {ip("198.18.1.1"), ip("198.18.1.2"), ip("2001:db8:1::1"),
              ip("198.18.1.1")};  // one twice
    d.allow = {pfx("198.18.0.0/15"), pfx("2001:db8::/32")};
    d.deny = {pfx("198.18.66.0/24"), pfx("2001:db8:bad::/48"), pfx("198.18.99.7/32")};
    d.default_allow = false;
    d.syn_rate = 100;
    d.syn_burst = 20;
    d.syn_ipv6_prefix = 56;
    return d;
}

const std::set<std::string> kFirstVips{"198.18.1.1=1", "198.18.1.2=1", "2001:db8:1::1=1"};
const std::set<std::string> kFirstAcl{"198.18.0.0/15 allow 0", "2001:db8::/32 allow 1",
                                      "198.18.66.0/24 deny 0", "2001:db8:bad::/48 deny 1",
                                      "198.18.99.7/32 deny 2"};

TEST(XdpFrontKernel, FillsTheMapsOfTheAttachedProgramAsADiff) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    const std::string err = run_isolated(false, [](Lab&) {
        up("va");
        up("vb");
        XdpFront front("va");
        front.set_desired(first_state());

        // Nothing attached yet: reported, not fatal.
        require(!front.sync(), "sync succeeded without a program");
        XdpStatus st = front.status(true);
        require(!st.attached && st.program_id == 0 && !st.packets, "status claims a program");
        require(st.error ==
                    "xdp front not attached on va (is the dataplane running on net_af_xdp with "
                    "xdp_prog=?)",
                "unexpected error: " + st.error);

        Front a("va");
        require(front.sync(), "first apply failed: " + front.status(false).error);
        st = front.status(false);
        require(st.attached && st.applied && st.program_id == a.id() && st.error.empty(),
                "status after apply");
        require(st.vips4 == 2 && st.vips6 == 1 && st.acl4 == 3 && st.acl6 == 2, "entry counts");
        expect_eq(a.vips(), kFirstVips, "first VIPs");
        expect_eq(a.acl(), kFirstAcl, "first ACL");
        fl_front_config c = a.cfg();
        require(c.abi_version == FULCRUM_XDP_ABI_VERSION && c.acl_default == FL_ACL_DENY &&
                    c.syn_rate == 100 && c.syn_burst == 20 && c.v6_source_prefix == 56,
                "fl_cfg after the first apply");

        // A second state: a VIP gone and one new, a prefix moved from deny to allow, one gone,
        // one new; the rest unchanged. The maps hold exactly the new set.
        XdpDesired d = first_state();
        d.vips = {ip("198.18.1.2"), ip("198.18.1.3"), ip("2001:db8:1::1")};
        d.allow = {pfx("198.18.0.0/15"), pfx("198.18.66.0/24")};
        d.deny = {pfx("2001:db8:bad::/48"), pfx("2001:db8:dead::/64")};
        d.default_allow = true;
        d.syn_rate = 0;
        d.syn_burst = 0;
        front.set_desired(d);
        require(front.sync(), "second apply failed: " + front.status(false).error);
        expect_eq(a.vips(), {"198.18.1.2=1", "198.18.1.3=1", "2001:db8:1::1=1"}, "second VIPs");
        expect_eq(a.acl(),
                  {"198.18.0.0/15 allow 0", "198.18.66.0/24 allow 1", "2001:db8:bad::/48 deny 0",
                   "2001:db8:dead::/64 deny 1"},
                  "second ACL");
        c = a.cfg();
        require(c.acl_default == FL_ACL_ALLOW && c.syn_rate == 0, "fl_cfg after the second apply");
        require(front.status(false).applies == 2, "applies");

        // Per-CPU counters, summed: the program passes a non-IP frame.
        const auto before = front.status(true).packets;
        require(before.has_value(), "fl_stats not readable");
        a.run_arp();
        a.run_arp();
        const auto after = front.status(true).packets;
        require(after && (*after)[FL_XDP_PASS_NON_IP] == (*before)[FL_XDP_PASS_NON_IP] + 2,
                "the non_ip counter did not count the two frames");

        // The dataplane restarts: a new program with empty maps replaces the old one.
        Front b("va");
        require(b.id() != a.id(), "the second program has the first one's id");
        require(front.sync(), "apply to the new program failed: " + front.status(false).error);
        st = front.status(false);
        require(st.program_id == b.id() && st.program_changes == 2 && st.applied,
                "status after the restart");
        expect_eq(b.vips(), {"198.18.1.2=1", "198.18.1.3=1", "2001:db8:1::1=1"},
                  "VIPs of the new program");
        expect_eq(b.acl(), a.acl(), "ACL of the new program");
        // Nothing changed: a sync writes nothing (the count of applies stays).
        require(front.sync() && front.status(false).applies == 3,
                "an unchanged state was applied again");

        // A program whose fl_cfg says another ABI version: refused, nothing written.
        Front other("va", FULCRUM_XDP_ABI_VERSION + 98);
        require(!front.sync(), "a program with another ABI version was filled");
        st = front.status(false);
        require(!st.applied && st.program_id == other.id(), "status after the ABI refusal");
        require(
            st.error.find("carries ABI version " + std::to_string(FULCRUM_XDP_ABI_VERSION + 98) +
                          " in fl_cfg; this fulcrumd writes version " +
                          std::to_string(FULCRUM_XDP_ABI_VERSION)) != std::string::npos,
            "unexpected error: " + st.error);
        require(other.vips().empty() && other.acl().empty() &&
                    other.cfg().abi_version == FULCRUM_XDP_ABI_VERSION + 98,
                "the refused program's maps were written");

        // Detached: reported again.
        require(bpf_xdp_detach(static_cast<int>(::if_nametoindex("va")), XDP_FLAGS_SKB_MODE,
                               nullptr) == 0,
                "detach");
        require(!front.sync() && !front.status(false).attached,
                "a detached program still counts as attached");
    });
    EXPECT_EQ(err, "");
}

// fulcrumd itself: the `xdp:` section, the main loop finding the program, `acl` over the admin
// socket, a SIGHUP reload changing the lists, and a new program (a dataplane restart) filled
// again. No dataplane runs: fulcrumd waits for it, the front does not need it.
std::string daemon_config(const std::string& dir, const std::string& acl) {
    return "dataplane: {control_socket: " + dir +
           "/dp.sock}\n"
           "admin: {socket: " +
           dir +
           "/admin.sock}\n"
           "metrics: {enabled: false}\n"
           "xdp:\n"
           "  interface: va\n"
           "  acl: " +
           acl +
           "\n"
           "  syn_limit: {rate: 200, burst: 50}\n"
           "services:\n"
           "  - {name: web, vip: 198.18.1.1, port: 80, servers: []}\n"
           "  - {name: web6, vip: 2001:db8:1::1, port: 80, servers: []}\n"
           "  - {name: dns, vip: 198.18.1.1, port: 53, protocol: udp, servers: []}\n";
}

TEST(XdpFrontKernel, FulcrumdFillsTheFrontAndShowsItInAcl) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    const std::string err = run_isolated(false, [](Lab&) {
        namespace fs = std::filesystem;
        up("va");
        up("vb");
        const std::string dir = "/tmp/fulcrum-xdp-test-" + std::to_string(::getpid());
        fs::create_directories(dir);
        struct RemoveDir {
            std::string d;
            ~RemoveDir() {
                std::error_code ec;
                fs::remove_all(d, ec);
            }
        } remove_dir{dir};
        const std::string path = dir + "/fulcrum.yaml";
        auto write = [&](const std::string& text) {
            std::ofstream(path + ".new") << text;
            fs::rename(path + ".new", path);
        };
        write(daemon_config(
            dir, "{default: deny, allow: [198.18.0.0/15, 2001:db8::/32], deny: [198.18.66.0/24]}"));

        Daemon::block_signals();
        Daemon daemon(load_config_file(path));
        std::thread loop([&] { daemon.run(); });
        struct Stop {  // SIGTERM to ourselves: run() takes it from its signalfd
            std::thread& t;
            ~Stop() {
                ::kill(::getpid(), SIGTERM);
                t.join();
            }
        } stop{loop};
        const std::string sock = dir + "/admin.sock";
        auto ask = [&](const char* command) {
            auto r = admin_request(sock, {{"command", command}});
            require(r.ok(), std::string(command) + ": " + (r.ok() ? "" : r.error()));
            return r.value();
        };

        // No program yet: fulcrumd runs and says so.
        auto st = ask("status");
        require(st["xdp"].is_object() && !st["xdp"]["attached"].get<bool>() &&
                    st["xdp"]["error"] ==
                        "xdp front not attached on va (is the dataplane running on net_af_xdp "
                        "with xdp_prog=?)",
                "status without a program: " + st["xdp"].dump());

        Front a("va");
        wait_for(
            [&] {
                const auto r = ask("acl");
                return r["applied"].get<bool>() && r["program_id"] == a.id();
            },
            "fulcrumd to fill the front");
        auto acl = ask("acl");
        require(acl["ok"] == true && acl["interface"] == "va" && acl["attached"] == true &&
                    acl["error"] == "" && acl["default"] == "deny" &&
                    acl["allow"] == nlohmann::json{"198.18.0.0/15", "2001:db8::/32"} &&
                    acl["deny"] == nlohmann::json{"198.18.66.0/24"} &&
                    acl["vips"] == nlohmann::json{"198.18.1.1", "2001:db8:1::1"} &&
                    acl["syn_limit"] ==
                        nlohmann::json{{"rate", 200}, {"burst", 50}, {"ipv6_prefix", 64}} &&
                    acl["packets"].size() == kXdpReasonCount &&
                    acl["packets"][3]["verdict"] == "redirect" &&
                    acl["packets"][0]["packets"].is_number(),
                "acl reply: " + acl.dump());
        expect_eq(a.vips(), {"198.18.1.1=1", "2001:db8:1::1=1"}, "VIPs from the services");
        expect_eq(a.acl(),
                  {"198.18.0.0/15 allow 0", "2001:db8::/32 allow 1", "198.18.66.0/24 deny 0"},
                  "ACL");
        require(a.cfg().acl_default == FL_ACL_DENY && a.cfg().syn_rate == 200 &&
                    a.cfg().syn_burst == 50,
                "fl_cfg from the configuration");

        // A reload changes the lists: the maps follow.
        write(daemon_config(dir, "{default: allow, deny: [198.18.66.0/24, 2001:db8:bad::/48]}"));
        ::kill(::getpid(), SIGHUP);
        wait_for(
            [&] {
                const auto r = ask("acl");
                return r["default"] == "allow" && r["applied"].get<bool>();
            },
            "the reload to reach the front");
        expect_eq(a.acl(), {"198.18.66.0/24 deny 0", "2001:db8:bad::/48 deny 1"},
                  "ACL after the reload");
        require(a.cfg().acl_default == FL_ACL_ALLOW, "default after the reload");

        // The dataplane restarts: a new, empty program; fulcrumd fills it within its tick.
        Front b("va");
        wait_for(
            [&] {
                const auto r = ask("acl");
                return r["applied"].get<bool>() && r["program_id"] == b.id();
            },
            "fulcrumd to fill the new program");
        expect_eq(b.vips(), {"198.18.1.1=1", "2001:db8:1::1=1"}, "VIPs of the new program");
        expect_eq(b.acl(), {"198.18.66.0/24 deny 0", "2001:db8:bad::/48 deny 1"},
                  "ACL of the new program");
        st = ask("status");
        require(st["xdp"]["attached"] == true && st["xdp"]["program_id"] == b.id(),
                "status: " + st["xdp"].dump());
    });
    EXPECT_EQ(err, "");
}

TEST(XdpFrontKernel, AMissingInterfaceIsReported) {
    if (::geteuid() != 0) GTEST_SKIP() << kNeedsRoot;
    const std::string err = run_isolated(false, [](Lab&) {
        XdpFront front("fl-nonexistent");
        require(!front.sync(), "sync succeeded on a missing interface");
        const XdpStatus st = front.status(true);
        require(
            st.error.rfind("xdp front not attached on fl-nonexistent: no such interface", 0) == 0,
            "unexpected error: " + st.error);
    });
    EXPECT_EQ(err, "");
}

}  // namespace
}  // namespace fulcrum::control
