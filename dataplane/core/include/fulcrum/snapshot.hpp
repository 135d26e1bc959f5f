// Forwarding snapshot: builder (control plane side) and validating reader (dataplane side)
// of the format in snapshot_abi.h.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fulcrum/addr.hpp"
#include "fulcrum/expected.hpp"
#include "fulcrum/snapshot_abi.h"

namespace fulcrum {

inline constexpr size_t kSnapshotDefaultMaxBytes = size_t{512} << 20;

enum class Scheduler : uint8_t { maglev = FL_SCHED_MAGLEV, wrr = FL_SCHED_WRR };
enum class Forwarding : uint8_t { dsr = FL_FWD_DSR, ipip = FL_FWD_IPIP, gue = FL_FWD_GUE };

const char* scheduler_name(Scheduler s);
const char* forwarding_name(Forwarding f);
const char* proto_name(uint8_t proto);  // "tcp", "udp", or "?"
// Service names: letters, digits, '_', '.', '-' (so they are safe in JSON, metrics, telemetry).
bool valid_service_name(std::string_view name);

// ---- identity -----------------------------------------------------------------------------

// The bytes that identify a server for Maglev and for its tag: family, address, port. Two
// balancers configured with the same servers derive the same identities.
using ServerIdentity = std::array<uint8_t, 19>;
ServerIdentity server_identity(const IpAddr& addr, uint16_t port);
uint32_t server_tag(const IpAddr& addr, uint16_t port);

// ---- builder ------------------------------------------------------------------------------

struct ServerSpec {
    uint32_t slot = 0;  // stable slot number chosen by the control plane (< FL_MAX_SERVERS)
    IpAddr addr;
    uint16_t port = 0;  // 0: same as the service port
    MacAddr mac;        // server MAC (dsr) or next-hop MAC (ipip, gue)
    uint32_t weight = 1;
    bool backup = false;
    bool healthy = true;
    bool enabled = true;
    bool retired = false;  // removed from the configuration, kept for existing connections
};

// True if the server can take new connections, backups aside.
inline bool server_usable(const ServerSpec& s) {
    return s.healthy && s.enabled && !s.retired && s.weight > 0;
}

struct ServiceSpec {
    uint32_t id = 0;  // stable id (< FL_MAX_SERVICES)
    std::string name;
    IpAddr vip;
    uint16_t port = 0;
    uint8_t proto = FL_PROTO_TCP;
    Scheduler scheduler = Scheduler::maglev;
    Forwarding forwarding = Forwarding::dsr;
    uint32_t table_size = 65537;
    std::vector<ServerSpec> servers;
};

// Which servers of a service take new connections: the usable primaries, or, when there is
// none, the usable backups. Element i is true if servers[i] is in rotation.
std::vector<bool> rotation_of(const ServiceSpec& svc);

struct EncapSpec {
    std::optional<IpPrefix> src4;  // outer source prefix for IPv4 servers
    std::optional<IpPrefix> src6;  // outer source prefix for IPv6 servers
    uint16_t gue_port = 6080;
    uint8_t outer_ttl = 64;
};

struct SnapshotSpec {
    uint64_t generation = 1;
    uint64_t hash_seed = 0;
    uint16_t mtu = 0;
    EncapSpec encap;
    std::vector<ServiceSpec> services;
};

// Where the sections of a snapshot with these counts start, and its total size in bytes.
// build_snapshot lays snapshots out with this; the control plane uses it to refuse a
// configuration whose snapshot could not be published (docs/configuration.md, "Limits").
struct SnapshotLayout {
    size_t services_off = 0;
    size_t servers_off = 0;
    size_t members_off = 0;
    size_t tables_off = 0;
    size_t total = 0;
};
// `n_server_slots` is the highest slot number plus one; the counts must be within the
// FL_MAX_* limits (larger ones cannot overflow but give meaningless sizes).
SnapshotLayout snapshot_layout(size_t n_services, size_t n_server_slots, size_t n_members,
                               size_t n_table_entries);

// Serializes a snapshot, computing rotations and Maglev tables. Throws std::invalid_argument
// with a message naming the service or server when the spec is inconsistent.
std::vector<uint8_t> build_snapshot(const SnapshotSpec& spec);

// ---- reader -------------------------------------------------------------------------------

// A validated snapshot read in place. It does not own the bytes.
class SnapshotView {
public:
    // Checks the whole snapshot: size limits, magic, version, checksum, section bounds and
    // alignment, every record and every cross reference. `bytes` must be 8-byte aligned.
    static Expected<SnapshotView> open(std::span<const uint8_t> bytes,
                                       size_t max_bytes = kSnapshotDefaultMaxBytes);

    const fl_snap_header& header() const { return *hdr_; }
    uint64_t generation() const { return hdr_->generation; }
    std::span<const uint8_t> bytes() const { return bytes_; }
    std::span<const fl_snap_service> services() const { return services_; }
    std::span<const fl_snap_server> servers() const { return servers_; }
    std::span<const fl_snap_member> members(const fl_snap_service& s) const {
        return members_.subspan(s.members_off, s.n_members);
    }
    std::span<const uint32_t> table(const fl_snap_service& s) const {
        return table_.subspan(s.table_off, s.table_size);
    }
    const fl_snap_server* server(uint32_t slot) const {
        return slot < servers_.size() && (servers_[slot].flags & FL_SERVER_PRESENT)
                   ? &servers_[slot]
                   : nullptr;
    }

private:
    std::span<const uint8_t> bytes_;
    const fl_snap_header* hdr_ = nullptr;
    std::span<const fl_snap_service> services_;
    std::span<const fl_snap_server> servers_;
    std::span<const fl_snap_member> members_;
    std::span<const uint32_t> table_;
};

// A 64-byte aligned private copy of snapshot bytes.
class SnapshotBuffer {
public:
    SnapshotBuffer() = default;
    explicit SnapshotBuffer(std::span<const uint8_t> bytes);
    std::span<const uint8_t> bytes() const { return {data_.get(), size_}; }

private:
    struct Free {
        void operator()(uint8_t* p) const;
    };
    std::unique_ptr<uint8_t, Free> data_;
    size_t size_ = 0;
};

// Recomputes and stores the checksum of a snapshot (used by the builder and by tests that
// craft snapshots).
void snapshot_seal(std::span<uint8_t> bytes);
uint32_t snapshot_checksum(std::span<const uint8_t> bytes);

}  // namespace fulcrum
