// The dataplane's conn_list control op (docs/control-protocol.md, "conn_list"): which of the
// connection entries the workers dumped (as sync records, see Worker::request_sync_dump) an
// operator asked for, one page at a time. Pure logic, for the control thread and the tests.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include <nlohmann/json.hpp>

#include "fulcrum/addr.hpp"
#include "fulcrum/expected.hpp"
#include "fulcrum/snapshot.hpp"
#include "fulcrum/sync_abi.h"

namespace fulcrum {

struct ConnQuery {
    static constexpr uint32_t kMaxLimit = 10'000;
    uint32_t limit = 100;  // entries per page, 1..kMaxLimit
    uint64_t cursor = 0;   // index of the first matching entry to return
    // Filters (absent: any). The service: its VIP, port and protocol; the server: its
    // address and port; the client: its address and source port.
    std::optional<IpAddr> vip, server, client;
    std::optional<uint16_t> port, server_port, client_port;
    std::optional<uint8_t> proto;  // 6 or 17
};

// Decodes a request body: empty, or a JSON object with any of "limit", "cursor", "vip",
// "port", "proto" ("tcp"/"udp"), "server", "server_port", "client", "client_port". The
// error names the key and what it must be.
Expected<ConnQuery> parse_conn_query(std::span<const uint8_t> body);

bool conn_query_matches(const ConnQuery& q, const fl_sync_record& r);

// The reply: {"total": entries matching, "cursor", "next_cursor" (null on the last page),
// "entries": [{"client", "client_port", "vip", "port", "proto", "state", "server",
// "server_port", "idle_ms"}]}. Records that do not decode (a family other than 4 or 6) are
// skipped and counted in "skipped".
nlohmann::json conn_list_reply(std::span<const fl_sync_record> records, const ConnQuery& q);

// Where the dataplane running snapshot `v` sends the first packet of a flow that has no
// connection entry, as a worker decides it (Worker::pick): {"service": name or null,
// "scheduler": "maglev"|"wrr", and for Maglev "hash_seed", "table_index", "table_size", "slot",
// "server", "server_port", "server_has_mac"; for WRR "candidates" [{"server", "server_port",
// "weight"}] (each worker keeps its own rotation, so the next one depends on the worker);
// "reason": a sentence}. proto: 6 or 17.
nlohmann::json scheduler_choice(const SnapshotView& v, const IpAddr& client, uint16_t client_port,
                                const IpAddr& vip, uint16_t port, uint8_t proto);

}  // namespace fulcrum
