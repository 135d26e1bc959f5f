// fulcrumd's configuration: one YAML file (yaml-cpp), validated as a whole. Every problem is
// reported as "FILE:LINE:COLUMN: what is wrong (what to do)", all of them at once.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fulcrum/addr.hpp"
#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum/snapshot.hpp"

namespace fulcrum::control {

using Millis = std::chrono::milliseconds;

// At most this many servers in all services together. The snapshot has FL_MAX_SERVERS slots,
// and servers retired by a reload (still serving their connections) occupy slots as well.
inline constexpr size_t kMaxConfiguredServers = 65535;
// Limits checked by the loader (docs/configuration.md lists them all).
inline constexpr size_t kMaxServiceNameLen = 47;  // FL_NAME_LEN - 1
inline constexpr uint16_t kMinMtu = 576;
inline constexpr uint16_t kMaxMtu = 9702;
inline constexpr Millis kMinCheckInterval{100};

// Limits on the configuration text (docs/configuration.md, "Limits"), checked before any of
// it is turned into YAML nodes, so that a broken or hostile file (a "billion laughs" of nested
// aliases, a huge flow list) is refused in bounded time and memory. The largest useful
// configuration (65535 servers, each with its own health check) is well within them.
inline constexpr size_t kMaxConfigBytes = size_t{16} << 20;
// YAML nodes (scalars, lists, mappings), each alias counted as the nodes it stands for: the
// loader reads every alias as a full copy.
inline constexpr size_t kMaxConfigNodes = 1'000'000;
// Lists and mappings inside each other (a real configuration needs 8).
inline constexpr size_t kMaxConfigDepth = 32;
// Messages listed for one refused configuration; the rest are counted in a last message.
inline constexpr size_t kMaxConfigProblems = 100;
// The largest snapshot fulcrumd can publish: a control-protocol frame holds the snapshot
// plus one kind byte (the dataplane's own limit, 256 MiB by default, is not smaller).
inline constexpr size_t kMaxSnapshotBytes =
    std::min(size_t{ctl::kMaxFrame} - 1, kSnapshotDefaultMaxBytes);

// Where a value came from, for messages.
struct Location {
    std::string file;
    int line = 0;    // 1-based; 0 = unknown
    int column = 0;  // 1-based
    std::string str() const;  // "file:line:column"
    friend bool operator==(const Location&, const Location&) = default;
};

enum class CheckType { tcp, http, https, none };
const char* check_type_name(CheckType t);

struct HealthCheckConfig {
    CheckType type = CheckType::tcp;
    uint16_t port = 0;            // 0: the server's port (or the service port)
    Millis interval{2000};
    Millis timeout{1000};         // must not exceed interval
    unsigned rise = 2;            // consecutive successes to mark a server up
    unsigned fall = 3;            // consecutive failures to mark it down
    std::string path = "/";       // http/https
    std::vector<int> expect_status{200};  // http/https: any of these
    std::string host;             // http/https Host header; empty: the server address
    bool tls_verify = false;      // https: verify the server certificate
    friend bool operator==(const HealthCheckConfig&, const HealthCheckConfig&) = default;
};

struct ServerConfig {
    IpAddr address;
    uint16_t port = 0;            // 0: the service port (DSR always keeps the VIP port)
    uint32_t weight = 1;          // 0..65535; 0 drains
    bool backup = false;
    bool enabled = true;          // false: configured but administratively disabled
    HealthCheckConfig health;     // defaults <- service health_check <- server health_check
    Location where;

    uint16_t effective_port(uint16_t service_port) const { return port ? port : service_port; }
};

struct ServiceConfig {
    std::string name;             // unique, [A-Za-z0-9_.-], at most 47 bytes
    IpAddr vip;
    uint16_t port = 0;
    uint8_t proto = FL_PROTO_TCP;
    Scheduler scheduler = Scheduler::maglev;
    Forwarding forwarding = Forwarding::dsr;
    uint32_t table_size = 65537;  // prime
    std::vector<ServerConfig> servers;
    Location where;
};

// The exception interface (the dataplane's TAP, normally fl0) as fulcrumd manages it: the
// host addresses it keeps there (again after every dataplane restart, which recreates the
// interface) and, when `manage` is set, the service VIPs (always without `ha:`, only as master
// with it).
struct InterfaceConfig {
    bool configured = false;  // the `interface:` section is present
    std::string name = "fl0";
    std::vector<IpPrefix> addresses;  // host address and prefix length (host bits kept)
    Location where;
    friend bool operator==(const InterfaceConfig&, const InterfaceConfig&) = default;
};

// Connection sync with the peer balancer (`ha.sync`).
struct SyncConfig {
    bool enabled = false;  // `ha.sync` is present
    IpAddr peer;
    IpAddr local;          // source / bind address; unset: interface address of peer's family
    uint16_t port = 8450;
    std::string key_file;  // HMAC-SHA256 key; empty: no authentication
    Millis refresh{10'000};
    uint32_t rate = 100'000;  // records per second, at most
    Location where;
    friend bool operator==(const SyncConfig&, const SyncConfig&) = default;
};

// VRRPv3 between two balancers (`ha:`); docs/configuration.md, "ha".
struct HaConfig {
    bool enabled = false;  // the `ha:` section is present
    uint8_t vrid = 0;
    uint8_t priority = 100;            // 255: address owner
    uint16_t advert_interval_cs = 10;  // centiseconds
    bool preempt = true;
    Millis preempt_delay{0};
    std::vector<IpAddr> unicast_peers;  // empty: multicast
    bool checksum_message_only = false; // IPv4 adverts sent without the pseudo-header
    // IPv4 checksum forms accepted: 0 both, 1 pseudo-header only, 2 message only.
    uint8_t accept_checksum = 0;
    unsigned garp_count = 3;            // gratuitous ARP / NA per VIP in a burst
    Millis garp_repeat_delay{2000};     // the burst is repeated once after this
    Millis lease{0};                    // dataplane fencing lease; 0: 3 advert intervals
    std::vector<std::string> track_services;  // "no server up" in any of them is a fault
    SyncConfig sync;
    Location where;

    Millis advert_interval() const { return Millis{advert_interval_cs * 10}; }
    Millis effective_lease() const { return lease.count() ? lease : 3 * advert_interval(); }
    friend bool operator==(const HaConfig&, const HaConfig&) = default;
};

// The XDP front of an af_xdp deployment (`xdp:`; docs/configuration.md, "xdp"): fulcrumd
// fills the maps of the program the dataplane attached to `interface` with the services'
// VIPs, this source ACL and the per-source SYN limit.
// At most this many prefixes per family in acl.allow and acl.deny together (FL_XDP_MAX_ACL).
inline constexpr size_t kMaxXdpAclPerFamily = 16384;
// At most this many distinct VIPs per family over all services with `xdp:` (FL_XDP_MAX_VIPS).
inline constexpr size_t kMaxXdpVipsPerFamily = 1024;
struct XdpConfig {
    bool enabled = false;         // the `xdp:` section is present
    std::string interface;        // the kernel interface carrying the front program
    bool default_allow = true;    // acl.default: sources no rule matches
    std::vector<IpPrefix> allow;  // acl.allow (host bits zero, no duplicates)
    std::vector<IpPrefix> deny;   // acl.deny (none of them also in allow)
    uint64_t syn_rate = 0;        // SYNs per second per source; 0: no limit
    uint64_t syn_burst = 0;       // bucket depth in SYNs (>= 1 when syn_rate > 0)
    uint32_t syn_ipv6_prefix = 64;  // IPv6 sources are counted per prefix of this length
    Location where;
    friend bool operator==(const XdpConfig&, const XdpConfig&) = default;
};

struct Config {
    std::string path;

    // dataplane:
    std::string dataplane_socket = "/run/fulcrum/dataplane.sock";
    uint64_t hash_seed = 0;       // must be equal on both balancers of a pair
    uint16_t mtu = 0;             // 0: the dataplane port's MTU
    EncapSpec encap;              // source prefixes, GUE port, outer TTL

    // admin:
    std::string admin_socket = "/run/fulcrum/admin.sock";
    // operator overrides (drain, disable, set-weight) kept across restarts of fulcrumd
    std::string state_file = "/var/lib/fulcrum/overrides.json";
    // metrics: ("" disables the endpoint)
    std::string metrics_listen = "127.0.0.1:9310";
    std::string metrics_username;       // metrics.basic_auth: scrapes need these credentials
    std::string metrics_password_file;  // (both empty: no authentication); read at start

    // limits:
    Millis retire_after{900'000}; // how long a server removed from the configuration keeps
                                  // serving its existing connections

    InterfaceConfig interface;
    HaConfig ha;
    XdpConfig xdp;

    std::vector<ServiceConfig> services;
};

// All the problems found in a configuration, each "file:line:column: message".
class ConfigError : public std::runtime_error {
public:
    explicit ConfigError(std::vector<std::string> messages);
    const std::vector<std::string>& messages() const { return messages_; }

private:
    std::vector<std::string> messages_;
};

// Parses and validates; throws ConfigError listing every problem (at most kMaxConfigProblems
// of them). `filename` is only used in the messages and stored as Config::path: this is the
// entry point for text that does not come from a file (the fuzzer, tests). The memory a refused
// configuration took is handed back to the system before the error is thrown.
Config parse_config(std::string_view yaml_text, const std::string& filename);
// Reads `path` and parses it; a file that cannot be read, or is larger than kMaxConfigBytes,
// is a ConfigError with a single message naming the file.
Config load_config_file(const std::string& path);

// What is valid but probably not meant, as "file:line:col: warning: what, and what to do":
// a service without servers, or whose servers are all drained (weight 0) or disabled (its
// traffic is dropped as no_server), and a service whose servers are never health-checked
// (type none: a dead server keeps receiving new connections). `fulcrumd --check` prints them
// and still exits 0; fulcrumd logs them at start and on every reload.
std::vector<std::string> config_warnings(const Config& c);

// Durations as written in the configuration: a whole number followed by ms, s, m or h
// ("500ms", "2s", "1m", "1h"). No spaces, no fractions, no number without a unit. Returns
// nullopt for anything else or on overflow. Zero is returned as zero (the
// loader refuses zero durations itself).
std::optional<Millis> parse_duration(std::string_view text);
// The longest duration the configuration takes (read_duration refuses longer ones).
inline constexpr Millis kMaxDuration{8760LL * 3'600'000};
// The shortest exact form of a duration in the same syntax: 2000ms -> "2s", 1500ms -> "1500ms".
std::string format_duration(Millis d);

}  // namespace fulcrum::control
