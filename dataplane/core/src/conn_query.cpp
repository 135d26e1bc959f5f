#include "fulcrum/conn_query.hpp"

#include <cstring>
#include <string>

#include "fulcrum/flow.hpp"

namespace fulcrum {

using nlohmann::json;

namespace {

std::optional<IpAddr> record_addr(uint8_t family, const uint8_t* p) {
    if (family == 4) return IpAddr::v4(p);
    if (family == 6) return IpAddr::v6(p);
    return std::nullopt;
}

Error bad(const std::string& key, const std::string& what) {
    return Error{"conn_list request: \"" + key + "\" must be " + what};
}

}  // namespace

Expected<ConnQuery> parse_conn_query(std::span<const uint8_t> body) {
    ConnQuery q;
    if (body.empty()) return q;
    const json req = json::parse(body.begin(), body.end(), nullptr, false);
    if (req.is_discarded() || !req.is_object())
        return Error{
            "conn_list request: the body is not a JSON object; send nothing, or {\"limit\": N, "
            "\"cursor\": C, \"vip\", \"port\", \"proto\", \"server\", \"server_port\", \"client\", "
            "\"client_port\"}"};
    for (const auto& [k, v] : req.items()) {
        if (k == "limit") {
            if (!v.is_number_unsigned() || v.get<uint64_t>() < 1 ||
                v.get<uint64_t>() > ConnQuery::kMaxLimit)
                return bad(k, "an integer from 1 to " + std::to_string(ConnQuery::kMaxLimit));
            q.limit = v.get<uint32_t>();
        } else if (k == "cursor") {
            if (!v.is_number_unsigned())
                return bad(k, "a non-negative integer (the previous reply's next_cursor)");
            q.cursor = v.get<uint64_t>();
        } else if (k == "vip" || k == "server" || k == "client") {
            std::optional<IpAddr> a =
                v.is_string() ? IpAddr::parse(v.get<std::string>()) : std::nullopt;
            if (!a) return bad(k, "an IPv4 or IPv6 address (a string)");
            (k == "vip" ? q.vip : k == "server" ? q.server : q.client) = a;
        } else if (k == "port" || k == "server_port" || k == "client_port") {
            if (!v.is_number_unsigned() || v.get<uint64_t>() > 65535)
                return bad(k, "a port from 0 to 65535");
            (k == "port"          ? q.port
             : k == "server_port" ? q.server_port
                                  : q.client_port) = v.get<uint16_t>();
        } else if (k == "proto") {
            if (v == "tcp")
                q.proto = 6;
            else if (v == "udp")
                q.proto = 17;
            else
                return bad(k, "\"tcp\" or \"udp\"");
        } else {
            return Error{"conn_list request: unknown key \"" + k +
                         "\" (known: limit, cursor, vip, port, proto, server, server_port, client, "
                         "client_port)"};
        }
    }
    return q;
}

bool conn_query_matches(const ConnQuery& q, const fl_sync_record& r) {
    if (q.proto && r.proto != *q.proto) return false;
    if (q.port && r.service_port != *q.port) return false;
    if (q.server_port && r.server_port != *q.server_port) return false;
    if (q.client_port && r.src_port != *q.client_port) return false;
    if (q.vip && record_addr(r.family, r.dst) != q.vip) return false;
    if (q.client && record_addr(r.family, r.src) != q.client) return false;
    if (q.server && record_addr(r.server_family, r.server_addr) != q.server) return false;
    return true;
}

json conn_list_reply(std::span<const fl_sync_record> records, const ConnQuery& q) {
    json entries = json::array();
    uint64_t total = 0, skipped = 0;
    for (const fl_sync_record& r : records) {
        const auto client = record_addr(r.family, r.src);
        const auto vip = record_addr(r.family, r.dst);
        const auto server = record_addr(r.server_family, r.server_addr);
        if (!client || !vip || !server) {
            ++skipped;
            continue;
        }
        if (!conn_query_matches(q, r)) continue;
        const uint64_t index = total++;
        if (index < q.cursor || entries.size() >= q.limit) continue;
        entries.push_back(
            {{"client", client->str()},
             {"client_port", r.src_port},
             {"vip", vip->str()},
             {"port", r.service_port},
             {"proto", r.proto == 6    ? "tcp"
                       : r.proto == 17 ? "udp"
                                       : std::to_string(r.proto)},
             {"state", r.state == FL_SYNC_S_ESTABLISHED ? (r.proto == 17 ? "udp" : "established")
                       : r.state == FL_SYNC_S_CLOSING   ? "closing"
                                                        : "unknown"},
             {"server", server->str()},
             {"server_port", r.server_port},
             {"idle_ms", r.idle_ms}});
    }
    const uint64_t next = q.cursor + entries.size();
    return {{"total", total},
            {"cursor", q.cursor},
            {"next_cursor", next < total ? json(next) : json(nullptr)},
            {"skipped", skipped},
            {"entries", entries}};
}

json scheduler_choice(const SnapshotView& v, const IpAddr& client, uint16_t client_port,
                      const IpAddr& vip, uint16_t port, uint8_t proto) {
    const fl_snap_service* svc = nullptr;
    for (const fl_snap_service& s : v.services())
        if (s.port == port && s.proto == proto && record_addr(s.family, s.vip) == vip) svc = &s;
    const std::string what =
        vip.str() + ":" + std::to_string(port) + (proto == 6 ? "/tcp" : "/udp");
    if (!svc)
        return {{"service", nullptr},
                {"reason", "no service on " + what + " in generation " +
                               std::to_string(v.generation()) + ": the packet goes to the kernel"}};
    json out = {{"service", std::string(svc->name, strnlen(svc->name, sizeof svc->name))}};
    auto server_json = [&](uint32_t slot, json& j) {
        const fl_snap_server* srv = v.server(slot);
        const auto a = srv ? record_addr(srv->family, srv->addr) : std::nullopt;
        j["server"] = a ? json(a->str()) : json(nullptr);
        j["server_port"] = srv ? json(srv->port) : json(nullptr);
        bool mac = false;
        if (srv)
            for (uint8_t b : srv->mac) mac = mac || b;
        j["server_has_mac"] = mac;
    };
    if (svc->n_members == 0) {
        out["scheduler"] = svc->scheduler == FL_SCHED_WRR ? "wrr" : "maglev";
        out["reason"] = "service " + out["service"].get<std::string>() +
                        " has no server in rotation: dropped (no_server)";
        return out;
    }
    if (svc->scheduler == FL_SCHED_WRR) {
        out["scheduler"] = "wrr";
        json c = json::array();
        for (const fl_snap_member& m : v.members(*svc)) {
            json e = {{"weight", m.weight}};
            server_json(m.server, e);
            c.push_back(e);
        }
        out["candidates"] = c;
        out["reason"] =
            "new flow: weighted round robin; each worker takes the next server of its own rotation";
        return out;
    }
    const FlowKey key =
        make_key(client.bytes.data(), vip.bytes.data(), vip.is_v6(), proto, client_port, port);
    const uint64_t seed = v.header().hash_seed;
    const uint32_t index = hash_to_range(flow_hash(key, seed), svc->table_size);
    const uint32_t slot = v.table(*svc)[index];
    out["scheduler"] = "maglev";
    out["hash_seed"] = seed;
    out["table_index"] = index;
    out["table_size"] = svc->table_size;
    out["slot"] = slot;
    server_json(slot, out);
    out["reason"] = "new flow: Maglev table entry " + std::to_string(index) + " of " +
                    std::to_string(svc->table_size) + " names slot " + std::to_string(slot);
    return out;
}

}  // namespace fulcrum
