#include "fulcrum/conn_state.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <limits>

#include "fulcrum/checksum.hpp"
#include "fulcrum/parse.hpp"

namespace fulcrum {

namespace {

constexpr size_t kHeader = sizeof(ConnStateHeader);
constexpr size_t kRecord = sizeof(ConnStateRecord);

size_t pad8(size_t n) {
    return (n + 7) & ~size_t{7};
}

uint32_t checksum_of(std::span<const uint8_t> bytes) {
    constexpr size_t off = offsetof(ConnStateHeader, checksum);
    const uint8_t zero[4] = {};
    uint32_t c = crc32c(bytes.first(off));
    c = crc32c(zero, c);
    return crc32c(bytes.subspan(off + 4), c);
}

std::string sys_error(const std::string& what, const std::string& path) {
    return what + " " + path + ": " + std::strerror(errno);
}

// Writes all of `data` to `fd`, retrying short writes and EINTR.
bool write_all(int fd, const uint8_t* data, size_t len) {
    while (len > 0) {
        const ssize_t n = ::write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        data += n;
        len -= static_cast<size_t>(n);
    }
    return true;
}

}  // namespace

std::vector<uint8_t> encode_conn_state(const ConnStateData& d) {
    const size_t snap_len = pad8(d.snapshot.size());
    std::vector<uint8_t> out(kHeader + snap_len + d.entries.size() * kRecord, 0);
    ConnStateHeader h{};
    std::memcpy(h.magic, kConnStateMagic, sizeof h.magic);
    h.version = kConnStateVersion;
    h.header_bytes = kHeader;
    h.record_bytes = kRecord;
    h.workers = d.workers;
    h.snapshot_bytes = d.snapshot.size();
    h.entries = d.entries.size();
    h.rss_fingerprint = d.rss_fingerprint;
    h.written_unix_ms = d.written_unix_ms;
    std::memcpy(out.data(), &h, kHeader);
    if (!d.snapshot.empty())
        std::memcpy(out.data() + kHeader, d.snapshot.data(), d.snapshot.size());
    if (!d.entries.empty())
        std::memcpy(out.data() + kHeader + snap_len, d.entries.data(), d.entries.size() * kRecord);
    const uint32_t sum = checksum_of(out);
    std::memcpy(out.data() + offsetof(ConnStateHeader, checksum), &sum, 4);
    return out;
}

Expected<ConnStateData> decode_conn_state(std::span<const uint8_t> bytes) {
    auto err = [](const std::string& m) { return Error{"connection state refused: " + m}; };
    if (bytes.size() < kHeader)
        return err("the file has " + std::to_string(bytes.size()) + " bytes, less than its " +
                   std::to_string(kHeader) + "-byte header (truncated)");
    ConnStateHeader h;
    std::memcpy(&h, bytes.data(), kHeader);
    if (std::memcmp(h.magic, kConnStateMagic, sizeof h.magic) != 0)
        return err("bad magic: not a fulcrum-dataplane connection state file");
    if (h.version != kConnStateVersion)
        return err("format version " + std::to_string(h.version) + ", this build reads version " +
                   std::to_string(kConnStateVersion) + " only (written by another release)");
    if (h.header_bytes != kHeader || h.record_bytes != kRecord)
        return err("header of " + std::to_string(h.header_bytes) + " bytes and records of " +
                   std::to_string(h.record_bytes) + " bytes, expected " + std::to_string(kHeader) +
                   " and " + std::to_string(kRecord));
    // Sizes in 64-bit arithmetic bounded by the length first, so no product can overflow.
    const uint64_t len = bytes.size();
    if (h.snapshot_bytes > len || h.entries > len / kRecord)
        return err("the header announces " + std::to_string(h.snapshot_bytes) +
                   " snapshot bytes and " + std::to_string(h.entries) +
                   " entries, more than the file's " + std::to_string(len) +
                   " bytes hold (truncated or corrupt)");
    const uint64_t snap_len = pad8(h.snapshot_bytes);
    const uint64_t want = kHeader + snap_len + h.entries * kRecord;
    if (want != len)
        return err("the file has " + std::to_string(len) + " bytes but its header describes " +
                   std::to_string(want) + (len < want ? " (truncated)" : " (trailing bytes)"));
    const uint32_t sum = checksum_of(bytes);
    if (sum != h.checksum) return err("checksum mismatch: the content is corrupt");
    ConnStateData d;
    d.workers = h.workers;
    d.rss_fingerprint = h.rss_fingerprint;
    d.written_unix_ms = h.written_unix_ms;
    d.snapshot.assign(bytes.begin() + kHeader,
                      bytes.begin() + static_cast<ptrdiff_t>(kHeader + h.snapshot_bytes));
    d.entries.resize(h.entries);
    if (h.entries)
        std::memcpy(d.entries.data(), bytes.data() + kHeader + snap_len, h.entries * kRecord);
    for (size_t i = 0; i < d.entries.size(); ++i) {
        const uint8_t st = d.entries[i].state;
        if (st == static_cast<uint8_t>(ConnState::empty) ||
            st >= static_cast<uint8_t>(ConnState::count_))
            return err("entry " + std::to_string(i) + " has invalid state " + std::to_string(st));
        // The forwarding path reads the protocol from the state (Worker::use_entry): TCP states
        // go with TCP keys, the UDP state with UDP keys.
        const uint8_t proto = d.entries[i].key.proto;
        if (proto != (st == static_cast<uint8_t>(ConnState::udp) ? ipproto::kUdp : ipproto::kTcp))
            return err("entry " + std::to_string(i) + " has state " + std::to_string(st) +
                       ", which does not fit its protocol " + std::to_string(proto));
    }
    return d;
}

Expected<size_t> write_conn_state_file(const std::string& path, const ConnStateData& d) {
    const std::vector<uint8_t> bytes = encode_conn_state(d);
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Error{sys_error("cannot create the connection state file", tmp)};
    const bool ok = write_all(fd, bytes.data(), bytes.size()) && ::fsync(fd) == 0;
    const std::string write_err =
        ok ? "" : sys_error("cannot write the connection state file", tmp);
    if (::close(fd) != 0 && ok) {
        const std::string e = sys_error("cannot write the connection state file", tmp);
        ::unlink(tmp.c_str());
        return Error{e};
    }
    if (!ok) {
        ::unlink(tmp.c_str());
        return Error{write_err};
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string e = sys_error("cannot rename " + tmp + " to", path);
        ::unlink(tmp.c_str());
        return Error{e};
    }
    return bytes.size();
}

Expected<ConnStateData> read_conn_state_file(const std::string& path, size_t max_bytes,
                                             bool& missing) {
    missing = false;
    // O_NONBLOCK: a FIFO at the path must not hang the start (refused below).
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        missing = errno == ENOENT;
        return Error{sys_error("cannot open the connection state file", path)};
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return Error{"connection state file " + path + " is not a regular file"};
    }
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size > max_bytes) {
        ::close(fd);
        return Error{
            "connection state file " + path + " has " + std::to_string(size) +
            " bytes, above the limit of " + std::to_string(max_bytes) +
            " bytes this configuration can use (its largest snapshot and table room): "
            "refused; raise --conn-capacity if the previous process had far larger tables"};
    }
    std::vector<uint8_t> bytes(size);
    size_t got = 0;
    while (got < size) {
        const ssize_t n = ::read(fd, bytes.data() + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<size_t>(n);
    }
    ::close(fd);
    bytes.resize(got);  // a file that shrank while being read fails the size checks
    auto d = decode_conn_state(bytes);
    if (!d) return Error{path + ": " + d.error()};
    return d;
}

ConnPlacement conn_placement(unsigned workers, uint64_t rss_fingerprint,
                             const ConnStateData& saved) {
    if (workers <= 1) return ConnPlacement::only_worker;
    if (saved.workers == workers && rss_fingerprint != 0 &&
        saved.rss_fingerprint == rss_fingerprint)
        return ConnPlacement::same_worker;
    return ConnPlacement::every_worker;
}

const char* conn_placement_text(ConnPlacement p) {
    switch (p) {
        case ConnPlacement::only_worker:
            return "in the only worker's table";
        case ConnPlacement::same_worker:
            return "each in the table of the worker that held it (same worker count and RSS)";
        case ConnPlacement::every_worker:
            return "in every worker's table (the worker count or the RSS spreading differs or is "
                   "unknown)";
    }
    return "?";
}

uint32_t restored_idle_ms(const ConnStateRecord& r, uint64_t written_unix_ms,
                          uint64_t now_unix_ms) {
    const uint64_t down = now_unix_ms > written_unix_ms ? now_unix_ms - written_unix_ms : 0;
    const uint64_t idle = uint64_t{r.idle_ms} + down;
    return idle > std::numeric_limits<uint32_t>::max() ? std::numeric_limits<uint32_t>::max()
                                                       : static_cast<uint32_t>(idle);
}

uint64_t unix_now_ms() {
    using namespace std::chrono;
    return static_cast<uint64_t>(
        duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

}  // namespace fulcrum
