// fulcrum-dataplane: the DPDK forwarding process.
//
//   fulcrum-dataplane [EAL options] -- --uplink PORT [options]
//
// The main lcore serves the control socket; every other EAL lcore runs one worker on its
// own uplink RX/TX queue pair.
#include <rte_eal.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_lcore.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <csignal>
#include <fstream>
#include <iostream>
#include <iterator>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum_version.h"
#include "fulcrum/dpdk/control_server.hpp"
#include "fulcrum/dpdk/dataplane.hpp"

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

void reply_json(std::vector<uint8_t>& out, const nlohmann::json& j) {
    const std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out.assign(s.begin(), s.end());
}
}  // namespace

int main(int argc, char** argv) {
    spdlog::set_default_logger(spdlog::stderr_color_mt("fulcrum-dataplane"));  // logs go to stderr
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e fulcrum-dataplane %l: %v");
    fulcrum::dpdk::DataplaneOptions opt;
    std::string control_socket;
    std::string snapshot_file;
    std::string state_file;
    bool no_state_file = false;
    CLI::App app{"fulcrum-dataplane: Fulcrum's DPDK forwarding process. EAL options come first, then '--', then these."};
    app.name("fulcrum-dataplane");
    app.option_defaults()->always_capture_default();  // --help shows every default
    app.add_option("--uplink", opt.uplink, "DPDK port (name such as net_af_packet0 or 0000:01:00.0, or index) facing clients and servers")
        ->required();
    app.add_option("--exception", opt.exception_iface,
                   "create a TAP interface with this name as the exception path to the kernel (ARP, ND, VRRP, SSH, health checks)")
        ->check([](const std::string& name) -> std::string {
            // A kernel interface name (IFNAMSIZ - 1); it also goes into the TAP driver's device
            // arguments, where a ',' or '=' would start another argument.
            const bool ok = !name.empty() && name.size() <= 15 && name != "." && name != ".." &&
                            std::all_of(name.begin(), name.end(), [](char c) {
                                return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
                            });
            return ok ? "" : "'" + name + "' is not an interface name: 1 to 15 letters, digits, '_', '-' or '.'";
        });
    app.add_option("--control-socket", control_socket, "Unix socket for snapshots, counters and health (mode 0600)");
    app.add_option("--snapshot", snapshot_file, "forwarding snapshot to load at start");
    app.add_option("--state-file", state_file,
                   "restart handover: connection tables and snapshot written here at SIGTERM/SIGINT and restored "
                   "from here at start (default: next to the control socket, its name with .state for .sock)");
    app.add_flag("--no-state-file", no_state_file, "neither restore nor save connection state")
        ->excludes("--state-file");
    app.add_flag("--ha-managed", opt.ha_managed,
                 "one node of an active-passive pair: start in standby (no VIP traffic, no ARP/ND "
                 "answers for VIPs) until fulcrumd's first ha request makes it active");
    app.add_option("--conn-capacity", opt.conn_capacity, "connection table entries per worker")->check(CLI::Range(1ul, 1ul << 31));
    app.add_option("--mtu", opt.mtu, "uplink MTU (default: the device's)")->check(CLI::Range(576, 9702));
    app.add_option("--rx-desc", opt.rx_desc, "RX descriptors per queue")->check(CLI::Range(32, 16384));
    app.add_option("--tx-desc", opt.tx_desc, "TX descriptors per queue")->check(CLI::Range(32, 16384));
    app.add_option("--mbufs", opt.mbufs, "packet buffers in the pool (default: computed)");
    app.add_flag("--promiscuous", opt.promiscuous, "put the uplink in promiscuous mode");
    app.add_option("--tx-drain-us", opt.tx_drain_us, "flush buffered transmits at least this often")->check(CLI::Range(1, 100000));
    app.add_option("--idle-sleep-us", opt.idle_sleep_us,
                   "sleep this long after 256 empty polls (0 = pure polling; use on shared or tiny hosts)")
        ->check(CLI::Range(0, 100000));
    app.add_option("--timeout-tcp-new-ms", opt.timeouts.tcp_new, "idle timeout of half-open TCP connections");
    app.add_option("--timeout-tcp-established-ms", opt.timeouts.tcp_established, "idle timeout of established TCP connections");
    app.add_option("--timeout-tcp-closing-ms", opt.timeouts.tcp_closing, "idle timeout after FIN or RST");
    app.add_option("--timeout-udp-ms", opt.timeouts.udp, "idle timeout of UDP flows");
    app.add_option("--max-servers", opt.max_servers, "largest server slot count accepted")->check(CLI::Range(1u, 65536u));
    app.add_option("--max-services", opt.max_services, "largest service id + 1 accepted")->check(CLI::Range(1u, 4096u));
    app.add_option("--sync-ring", opt.sync_ring,
                   "connection sync: records each worker's export ring holds for the HA peer until the control op "
                   "sync_drain takes them (a power of two; 0 disables export)")
        ->check(CLI::Range(size_t{0}, size_t{1} << 24));
    // Listed by --help; the loop below answers it before DPDK or CLI11 parse anything.
    app.set_version_flag("--version", std::string("fulcrum-dataplane ") + FULCRUM_VERSION);
    // --help and --version anywhere answer without starting DPDK (before '--' the EAL would
    // print its own usage instead of Fulcrum's options).
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--help" || a == "-h") {
            std::cout << "usage: fulcrum-dataplane [EAL options] -- --uplink PORT [options]\n\n"
                      << "EAL options (DPDK's): -l CORES (the first is the main lcore, each other one runs a "
                         "worker), --file-prefix NAME, -m MB / --no-huge, --vdev DEVICE, -a PCI; see "
                         "docs/deployment.md\n\n"
                      << app.help();
            return 0;
        }
        if (a == "--version") {
            std::cout << "fulcrum-dataplane " << FULCRUM_VERSION << "\n";
            return 0;
        }
    }
    const int eal = rte_eal_init(argc, argv);
    if (eal < 0) {
        std::cerr << "fulcrum-dataplane: EAL initialisation failed: " << rte_strerror(rte_errno)
                  << " (check the EAL options before '--': cores -l, memory -m/--no-huge, --file-prefix, devices)\n";
        return 1;
    }
    argc -= eal;
    argv += eal;
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        rte_eal_cleanup();
        return rc;
    }

    if (no_state_file) {
        state_file.clear();
    } else if (state_file.empty() && !control_socket.empty()) {
        const std::string ext = ".sock";
        const bool sock = control_socket.size() > ext.size() &&
                          control_socket.compare(control_socket.size() - ext.size(), ext.size(), ext) == 0;
        state_file = (sock ? control_socket.substr(0, control_socket.size() - ext.size()) : control_socket) + ".state";
    }

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGPIPE, SIG_IGN);

    int rc = 0;
    try {
        fulcrum::dpdk::Dataplane dp(opt);
        if (!snapshot_file.empty()) {
            std::ifstream in(snapshot_file, std::ios::binary);
            if (!in) throw std::runtime_error("cannot read --snapshot " + snapshot_file);
            std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            auto gen = dp.load_snapshot(bytes);
            if (!gen) throw std::runtime_error("--snapshot " + snapshot_file + ": " + gen.error());
        }
        // After --snapshot: a handed-over snapshot that is at least as new replaces it.
        if (!state_file.empty()) dp.restore_state(state_file);
        std::unique_ptr<fulcrum::dpdk::ControlServer> ctl;
        if (!control_socket.empty()) {
            ctl = std::make_unique<fulcrum::dpdk::ControlServer>(
                control_socket, [&dp](uint8_t op, std::span<const uint8_t> body, fulcrum::ctl::Status& st,
                                      std::vector<uint8_t>& out) {
                    using fulcrum::ctl::Op;
                    st = fulcrum::ctl::Status::ok;
                    switch (static_cast<Op>(op)) {
                        case Op::load_snapshot: {
                            auto gen = dp.load_snapshot(body);
                            if (gen) {
                                reply_json(out, {{"generation", gen.value()}});
                            } else {
                                st = fulcrum::ctl::Status::error;
                                reply_json(out, {{"error", gen.error()}});
                            }
                            return;
                        }
                        case Op::counters: reply_json(out, nlohmann::json(dp.counters())); return;
                        case Op::health: reply_json(out, dp.health()); return;
                        case Op::ha: {
                            const auto req =
                                nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
                            auto r =
                                req.is_discarded()
                                    ? fulcrum::Expected<nlohmann::json>(fulcrum::Error{
                                          "ha request: the body is not valid JSON; send {\"role\": "
                                          "\"active\"|\"standby\", \"lease_ms\": N}"})
                                    : dp.set_ha(req);
                            if (r) {
                                reply_json(out, r.value());
                            } else {
                                st = fulcrum::ctl::Status::error;
                                reply_json(out, {{"error", r.error()}});
                            }
                            return;
                        }
                        case Op::sync_drain:
                        case Op::sync_install:
                        case Op::sync_dump:
                        case Op::conn_list: st = dp.sync_op(static_cast<Op>(op), body, out); return;
                        case Op::hello: break;  // answered by ControlServer itself, never passed here
                        case Op::get_snapshot:
                            out = dp.snapshot_bytes();
                            if (out.empty()) {
                                st = fulcrum::ctl::Status::error;
                                reply_json(out, {{"error", "no snapshot loaded"}});
                            }
                            return;
                    }
                    st = fulcrum::ctl::Status::error;
                    reply_json(out, {{"error", "unknown request op " + std::to_string(op) +
                                                   " (known: 1 load_snapshot, 2 counters, 3 "
                                                   "health, 4 get_snapshot, 5 hello, 6 ha, 7 sync_drain, "
                                                   "8 sync_install, 9 sync_dump, 10 conn_list)"}});
                });
            spdlog::info("control socket {}", control_socket);
        }
        dp.start();
        dp.restore_done();  // up: the handed-over state is no longer needed
        spdlog::info("forwarding; stop with SIGINT or SIGTERM");
        while (!g_stop.load()) {
            if (ctl)
                ctl->poll_once(100);
            else
                rte_delay_us_sleep(100000);
        }
        spdlog::info("stopping");
        dp.stop();
        if (!state_file.empty()) {
            auto saved = dp.save_state(state_file);
            if (!saved) spdlog::warn("connection state not saved: {}", saved.error());
        }
    } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
        rc = 1;
    }
    rte_eal_cleanup();
    return rc;
}
