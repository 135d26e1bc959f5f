// Restart handover: the state a stopping fulcrum-dataplane leaves for the next process (the
// running forwarding snapshot and every live connection entry), so that a planned restart or
// upgrade keeps established connections on their servers.
//
// File layout (little-endian, version 1):
//   header  (ConnStateHeader, 64 bytes)
//   snapshot bytes (header.snapshot_bytes), zero-padded to a multiple of 8
//   entries (header.entries x ConnStateRecord, 56 bytes each)
// The CRC32C in the header covers the whole file with the checksum field read as zero. A file
// whose sizes do not add up to its length, or whose checksum, magic or version is wrong, is
// refused whole: a half-trusted table could send connections to the wrong servers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fulcrum/conntable.hpp"
#include "fulcrum/expected.hpp"
#include "fulcrum/flow.hpp"

namespace fulcrum {

inline constexpr char kConnStateMagic[8] = {'F', 'L', 'C', 'O', 'N', 'N', 'S', 'T'};
inline constexpr uint32_t kConnStateVersion = 1;

struct ConnStateHeader {
    char magic[8];
    uint32_t version;
    uint32_t header_bytes;    // sizeof(ConnStateHeader): lets a reader refuse a foreign layout
    uint32_t record_bytes;    // sizeof(ConnStateRecord)
    uint32_t workers;         // worker count of the process that wrote the file
    uint64_t snapshot_bytes;  // unpadded length of the snapshot section
    uint64_t entries;
    // Identity of the uplink's RSS spreading (driver, queue count, hash types, key, RETA), or
    // 0 when it could not be read. Equal fingerprints and worker counts mean a flow lands on
    // the same worker as before, so each entry can go back to the worker that held it.
    uint64_t rss_fingerprint;
    uint64_t written_unix_ms;  // wall clock at writing: the downtime counts as idle time
    uint32_t checksum;         // CRC32C of the file with this field zero
    uint32_t reserved;
};
static_assert(sizeof(ConnStateHeader) == 64);

struct ConnStateRecord {
    FlowKey key;
    uint32_t server;      // server slot in the handed-over snapshot
    uint32_t server_tag;  // that server's tag
    uint32_t idle_ms;     // time since the connection's last packet, at writing
    uint16_t worker;      // worker whose table held the entry
    uint8_t state;        // ConnState
    uint8_t pad;
};
static_assert(sizeof(ConnStateRecord) == 56);

struct ConnStateData {
    std::vector<uint8_t> snapshot;  // empty: no snapshot was running
    std::vector<ConnStateRecord> entries;
    uint32_t workers = 0;
    uint64_t rss_fingerprint = 0;
    uint64_t written_unix_ms = 0;
};

// Serializes `d` (computing the checksum).
std::vector<uint8_t> encode_conn_state(const ConnStateData& d);

// Parses and checks a state file's bytes: magic, version, header and record sizes, section
// sizes against the length, checksum, and every record's state. Errors say what was wrong.
Expected<ConnStateData> decode_conn_state(std::span<const uint8_t> bytes);

// Writes `d` to `path` atomically: a temporary file in the same directory, flushed to disk,
// then renamed over `path`. Returns the bytes written.
Expected<size_t> write_conn_state_file(const std::string& path, const ConnStateData& d);

// Reads and decodes `path`. A file larger than `max_bytes` is refused before it is read.
// Sets `missing` (and returns an error) when there is no such file.
Expected<ConnStateData> read_conn_state_file(const std::string& path, size_t max_bytes,
                                             bool& missing);

// Which worker tables restored entries go to (a flow must be in the table of the worker whose
// RX queue its packets reach): the only worker's; each the table of the worker that held it
// (same worker count and a known, equal RSS fingerprint: flows reach the same queues); or,
// when the queue of a flow is unknown, every worker's.
enum class ConnPlacement : uint8_t { only_worker, same_worker, every_worker };
ConnPlacement conn_placement(unsigned workers, uint64_t rss_fingerprint,
                             const ConnStateData& saved);
const char* conn_placement_text(ConnPlacement p);

// Milliseconds of idle time a restored record has: its idle time at writing plus the time
// since the file was written (0 if the clock went backwards), saturated at 2^32 - 1.
uint32_t restored_idle_ms(const ConnStateRecord& r, uint64_t written_unix_ms, uint64_t now_unix_ms);

// Wall-clock milliseconds since the Unix epoch.
uint64_t unix_now_ms();

}  // namespace fulcrum
