// libFuzzer target: fulcrumd's configuration loader (YAML text to a validated Config).
//
// Any input must end in a Config or a ConfigError whose messages all name the file; anything
// else escaping (a yaml-cpp exception, std::bad_alloc, a crash, a sanitizer report, a
// libFuzzer timeout or RSS limit) is a bug. What the loader accepts must also be publishable:
// the limits it promises hold, and the snapshot builder takes it.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fulcrum/control/config.hpp"
#include "fulcrum/snapshot.hpp"

using namespace fulcrum;
using namespace fulcrum::control;

namespace {

constexpr const char* kName = "fuzz.yaml";

// Builds the snapshot fulcrumd would publish (all servers healthy and resolved) when its
// Maglev tables are small enough to populate quickly.
void build_if_small(const Config& cfg) {
    uint64_t entries = 0;
    for (const auto& s : cfg.services) entries += s.table_size;
    if (entries > (uint64_t{1} << 18)) return;
    SnapshotSpec spec;
    spec.hash_seed = cfg.hash_seed;
    spec.mtu = cfg.mtu;
    spec.encap = cfg.encap;
    uint32_t id = 0, slot = 0;
    for (const auto& s : cfg.services) {
        ServiceSpec out;
        out.id = id++;
        out.name = s.name;
        out.vip = s.vip;
        out.port = s.port;
        out.proto = s.proto;
        out.scheduler = s.scheduler;
        out.forwarding = s.forwarding;
        out.table_size = s.table_size;
        for (const auto& srv : s.servers) {
            ServerSpec ss;
            ss.slot = slot++;
            ss.addr = srv.address;
            ss.port = srv.effective_port(s.port);
            ss.weight = srv.weight;
            ss.backup = srv.backup;
            ss.enabled = srv.enabled;
            out.servers.push_back(ss);
        }
        spec.services.push_back(std::move(out));
    }
    // Throws std::invalid_argument (uncaught: a finding) if the loader let through something
    // the builder refuses.
    const auto bytes = build_snapshot(spec);
    if (bytes.size() > kMaxSnapshotBytes) __builtin_trap();
}

void check_accepted(const Config& cfg) {
    if (cfg.services.size() > FL_MAX_SERVICES) __builtin_trap();
    size_t servers = 0;
    for (const auto& s : cfg.services) {
        if (!valid_service_name(s.name) || s.name.size() > kMaxServiceNameLen) __builtin_trap();
        servers += s.servers.size();
        for (const auto& srv : s.servers) {
            if (srv.address.family != s.vip.family) __builtin_trap();
            if (srv.health.timeout > srv.health.interval) __builtin_trap();
            if (srv.weight > 65535) __builtin_trap();
        }
    }
    if (servers > kMaxConfiguredServers) __builtin_trap();
    build_if_small(cfg);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        check_accepted(parse_config(text, kName));
    } catch (const ConfigError& e) {
        if (e.messages().empty()) __builtin_trap();
        for (const auto& m : e.messages())
            if (m.rfind(kName, 0) != 0) __builtin_trap();  // every message says where
    }
    return 0;
}
