// The dataplane's control-socket protocol (see docs/control-protocol.md): length-prefixed
// binary frames over a Unix stream socket.
//
//   frame    = u32 length (little-endian, bytes after this field) | u8 kind | body
//   request  : kind = op, body = op-specific (snapshot bytes for load_snapshot, else empty)
//   response : kind = status (ok / error), body = JSON text, or raw snapshot bytes for
//              get_snapshot
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fulcrum/expected.hpp"

namespace fulcrum::ctl {

enum class Op : uint8_t {
    load_snapshot = 1,  // body: snapshot; reply: {"generation": N}
    counters = 2,       // reply: counters JSON
    health = 3,         // reply: process health JSON
    get_snapshot = 4,   // reply: the running snapshot's bytes
    hello = 5,          // body: {"role": "controller", "pid": N}; reply: ok JSON. Identifies
                        // fulcrumd: exempt from the idle timeout, may use a reserved slot
    ha = 6,             // body: {"role": "active"|"standby", "lease_ms": N}; reply:
                        // {"role", "lease_expires_in_ms", "generation"}. HA fencing lease
    // Connection sync (docs/control-protocol.md, "Connection sync"): bodies of raw
    // fl_sync_record arrays (sync_abi.h), 64 bytes each.
    sync_drain = 7,    // body: empty or {"max": N, "refresh_ms": R}; reply: records popped
                       // from the workers' export rings
    sync_install = 8,  // body: records; reply: {"queued", "invalid", "unknown_server",
                       // "ring_full"}. Queued to every worker's install ring
    sync_dump = 9,     // body: empty; reply: a record for every entry in a sync state
    conn_list = 10,    // body: empty or a JSON query (conn_query.hpp); reply: one page of the
                       // workers' connection entries as JSON, read by a sync_dump
};

enum class Status : uint8_t { ok = 0, error = 1 };

inline constexpr uint32_t kMaxFrame = 256u << 20;  // a request or reply body, plus the kind byte
// Records per sync_drain or sync_install request at most.
inline constexpr uint32_t kMaxSyncRecordsPerRequest = 65536;
// Request bodies: only load_snapshot carries up to kMaxFrame; sync_install at most
// kMaxSyncRecordsPerRequest records; every other op an empty or small JSON body.
inline constexpr uint32_t kMaxJsonRequest = 64u << 10;
// The largest length field (op byte + body) a request of `op` may have, with `max_frame` the
// server's limit (FrameDecoder::KindLimit).
uint32_t max_request_frame(uint8_t op, uint32_t max_frame);

const char* op_name(uint8_t op);

// Appends a frame to `out`.
void encode(std::vector<uint8_t>& out, uint8_t kind, std::span<const uint8_t> body);

struct Reply {
    Status status = Status::error;
    std::vector<uint8_t> body;
    std::string text() const { return {body.begin(), body.end()}; }
};

// A blocking client: connects, sends one request per call, waits for the reply.
class Client {
public:
    Client() = default;
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    Client(Client&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
    Client& operator=(Client&& o) noexcept;

    // Connects to the socket at `path`. The error says what failed and where.
    static Expected<Client> connect(const std::string& path,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(5));
    // Sends a request and reads its reply. A transport error (the dataplane went away, a
    // timeout, a malformed reply) is an Error; a refused request is a Reply with
    // Status::error and a JSON body {"error": "..."}.
    Expected<Reply> request(Op op, std::span<const uint8_t> body = {});
    // Identifies this connection to the dataplane (Op::hello) as `role` ("controller":
    // fulcrumd's link, which the dataplane keeps a slot for and never times out). The
    // controller must send it first on every new connection.
    Expected<Reply> hello(const std::string& role = "controller");
    bool connected() const { return fd_ >= 0; }
    const std::string& path() const { return path_; }

private:
    int fd_ = -1;
    std::string path_;
};

}  // namespace fulcrum::ctl
