// fulcrum-snapshot: builds a forwarding snapshot from a JSON description, or shows and checks
// one. Used by tests, benchmarks and operators running the dataplane without fulcrumd.
//
//   fulcrum-snapshot build SPEC.json -o OUT.snap
//   fulcrum-snapshot show FILE.snap        (validates, prints JSON)
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <set>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fulcrum/snapshot.hpp"
#include "fulcrum_version.h"

using nlohmann::json;
using namespace fulcrum;

namespace {

struct SpecError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

void only_keys(const json& j, const std::string& where, std::initializer_list<const char*> keys) {
    if (!j.is_object()) throw SpecError(where + ": expected an object");
    std::set<std::string> allowed(keys.begin(), keys.end());
    for (auto it = j.begin(); it != j.end(); ++it)
        if (!allowed.count(it.key())) {
            std::string list;
            for (const auto& k : allowed) list += (list.empty() ? "" : ", ") + k;
            throw SpecError(where + ": unknown key '" + it.key() + "' (known: " + list + ")");
        }
}

template <class T>
T get(const json& j, const std::string& key, const std::string& where, T def) {
    if (!j.contains(key)) return def;
    try {
        return j.at(key).get<T>();
    } catch (const json::exception&) {
        throw SpecError(where + "." + key + ": wrong type (" + j.at(key).dump() + ")");
    }
}

IpAddr addr(const json& j, const std::string& key, const std::string& where) {
    const auto s = get<std::string>(j, key, where, "");
    auto a = IpAddr::parse(s);
    if (!a) throw SpecError(where + "." + key + ": '" + s + "' is not an IPv4 or IPv6 address");
    return *a;
}

SnapshotSpec parse_spec(const json& j) {
    only_keys(j, "spec", {"generation", "hash_seed", "mtu", "encap", "services"});
    SnapshotSpec s;
    s.generation = get<uint64_t>(j, "generation", "spec", 1);
    s.hash_seed = get<uint64_t>(j, "hash_seed", "spec", 0);
    s.mtu = get<uint16_t>(j, "mtu", "spec", 0);
    if (j.contains("encap")) {
        const json& e = j["encap"];
        only_keys(e, "encap", {"source_v4", "source_v6", "gue_port", "ttl"});
        for (const char* k : {"source_v4", "source_v6"}) {
            if (!e.contains(k)) continue;
            const auto t = get<std::string>(e, k, "encap", "");
            auto p = IpPrefix::parse(t);
            if (!p) throw SpecError(std::string("encap.") + k + ": '" + t + "' is not a prefix like 198.18.255.0/24");
            (std::string(k) == "source_v4" ? s.encap.src4 : s.encap.src6) = *p;
        }
        s.encap.gue_port = get<uint16_t>(e, "gue_port", "encap", 6080);
        s.encap.outer_ttl = get<uint8_t>(e, "ttl", "encap", 64);
    }
    const json services = j.value("services", json::array());
    for (size_t i = 0; i < services.size(); ++i) {
        const json& sj = services[i];
        const std::string w = "services[" + std::to_string(i) + "]";
        only_keys(sj, w, {"id", "name", "vip", "port", "protocol", "scheduler", "forwarding", "table_size", "servers"});
        ServiceSpec svc;
        svc.id = get<uint32_t>(sj, "id", w, static_cast<uint32_t>(i));
        svc.name = get<std::string>(sj, "name", w, "");
        svc.vip = addr(sj, "vip", w);
        svc.port = get<uint16_t>(sj, "port", w, 0);
        const auto proto = get<std::string>(sj, "protocol", w, "tcp");
        if (proto != "tcp" && proto != "udp") throw SpecError(w + ".protocol: '" + proto + "' (tcp or udp)");
        svc.proto = proto == "tcp" ? FL_PROTO_TCP : FL_PROTO_UDP;
        const auto sched = get<std::string>(sj, "scheduler", w, "maglev");
        if (sched != "maglev" && sched != "wrr") throw SpecError(w + ".scheduler: '" + sched + "' (maglev or wrr)");
        svc.scheduler = sched == "maglev" ? Scheduler::maglev : Scheduler::wrr;
        const auto fwd = get<std::string>(sj, "forwarding", w, "dsr");
        static const std::map<std::string, Forwarding> fwds = {
            {"dsr", Forwarding::dsr}, {"ipip", Forwarding::ipip}, {"gue", Forwarding::gue}};
        if (!fwds.count(fwd)) throw SpecError(w + ".forwarding: '" + fwd + "' (dsr, ipip or gue)");
        svc.forwarding = fwds.at(fwd);
        svc.table_size = get<uint32_t>(sj, "table_size", w, 65537);
        const json servers = sj.value("servers", json::array());
        for (size_t k = 0; k < servers.size(); ++k) {
            const json& vj = servers[k];
            const std::string vw = w + ".servers[" + std::to_string(k) + "]";
            only_keys(vj, vw, {"slot", "address", "port", "mac", "weight", "backup", "healthy", "enabled", "retired"});
            ServerSpec srv;
            srv.slot = get<uint32_t>(vj, "slot", vw, 0);
            srv.addr = addr(vj, "address", vw);
            srv.port = get<uint16_t>(vj, "port", vw, 0);
            const auto m = get<std::string>(vj, "mac", vw, "00:00:00:00:00:00");
            auto mac = MacAddr::parse(m);
            if (!mac) throw SpecError(vw + ".mac: '" + m + "' is not a MAC address like 02:00:00:00:00:01");
            srv.mac = *mac;
            srv.weight = get<uint32_t>(vj, "weight", vw, 1);
            srv.backup = get<bool>(vj, "backup", vw, false);
            srv.healthy = get<bool>(vj, "healthy", vw, true);
            srv.enabled = get<bool>(vj, "enabled", vw, true);
            srv.retired = get<bool>(vj, "retired", vw, false);
            svc.servers.push_back(srv);
        }
        s.services.push_back(std::move(svc));
    }
    return s;
}

std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw SpecError("cannot read " + path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

json describe(const SnapshotView& v) {
    const auto& h = v.header();
    json out;
    out["generation"] = h.generation;
    out["hash_seed"] = h.hash_seed;
    out["size_bytes"] = h.total_size;
    out["mtu"] = h.mtu;
    out["gue_port"] = h.gue_port;
    json services = json::array();
    for (const auto& s : v.services()) {
        std::map<uint32_t, uint32_t> slots;
        for (uint32_t e : v.table(s)) ++slots[e];
        json servers = json::array();
        for (uint32_t slot = 0; slot < v.servers().size(); ++slot) {
            const fl_snap_server* srv = v.server(slot);
            if (!srv || &v.services()[srv->service] != &s) continue;
            std::vector<std::string> flags;
            if (srv->flags & FL_SERVER_BACKUP) flags.push_back("backup");
            if (srv->flags & FL_SERVER_HEALTHY) flags.push_back("healthy");
            if (srv->flags & FL_SERVER_ENABLED) flags.push_back("enabled");
            if (srv->flags & FL_SERVER_IN_ROTATION) flags.push_back("in_rotation");
            if (srv->flags & FL_SERVER_RETIRED) flags.push_back("retired");
            MacAddr mac;
            std::copy(srv->mac, srv->mac + 6, mac.bytes.begin());
            servers.push_back({{"slot", slot},
                               {"address", (srv->family == FL_AF_INET ? IpAddr::v4(srv->addr) : IpAddr::v6(srv->addr)).str()},
                               {"port", srv->port},
                               {"mac", mac.str()},
                               {"weight", srv->weight},
                               {"flags", flags},
                               {"table_slots", slots.count(slot) ? slots[slot] : 0}});
        }
        services.push_back({{"id", s.id},
                            {"name", s.name},
                            {"vip", (s.family == FL_AF_INET ? IpAddr::v4(s.vip) : IpAddr::v6(s.vip)).str()},
                            {"port", s.port},
                            {"protocol", proto_name(s.proto)},
                            {"scheduler", scheduler_name(static_cast<Scheduler>(s.scheduler))},
                            {"forwarding", forwarding_name(static_cast<Forwarding>(s.forwarding))},
                            {"table_size", s.table_size},
                            {"servers", servers}});
    }
    out["services"] = services;
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"fulcrum-snapshot: build, show and check Fulcrum forwarding snapshots"};
    app.name("fulcrum-snapshot");
    app.set_version_flag("--version", std::string("fulcrum-snapshot ") + FULCRUM_VERSION);
    app.require_subcommand(1);
    std::string spec_path, out_path, snap_path;
    auto* build = app.add_subcommand("build", "build a snapshot from a JSON description");
    build->add_option("spec", spec_path, "JSON description (see docs/control-protocol.md)")->required();
    build->add_option("-o,--output", out_path, "snapshot file to write")->required();
    auto* show = app.add_subcommand("show", "validate a snapshot and print it as JSON");
    show->add_option("snapshot", snap_path, "snapshot file")->required();
    CLI11_PARSE(app, argc, argv);
    try {
        if (*build) {
            json j;
            try {
                std::ifstream in(spec_path);
                if (!in) throw SpecError("cannot read " + spec_path);
                j = json::parse(in);
            } catch (const json::parse_error& e) {
                throw SpecError(spec_path + ": not valid JSON: " + e.what());
            }
            const auto bytes = build_snapshot(parse_spec(j));
            std::ofstream out(out_path, std::ios::binary);
            out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
            if (!out) throw SpecError("cannot write " + out_path);
            return 0;
        }
        const SnapshotBuffer buf(read_file(snap_path));
        auto v = SnapshotView::open(buf.bytes());
        if (!v) {
            std::cerr << snap_path << ": " << v.error() << "\n";
            return 1;
        }
        std::cout << describe(v.value()).dump(2) << "\n";
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "fulcrum-snapshot: " << e.what() << "\n";
        return 1;
    }
}
