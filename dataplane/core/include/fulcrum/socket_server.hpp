// The client policy shared by the dataplane's control socket and fulcrumd's admin socket: a
// single-threaded poll() server over a listening Unix stream socket that no local client can
// block, whatever it does.
//
//   - slots: at most `max_clients` ordinary clients. When they are full, a new connection
//     either evicts the client idle the longest (evict_idle_when_full: the admin API, so
//     fulcrumctl always gets in), or takes one of `reserved_slots` slots that it keeps only if
//     its first request identifies it as the controller (the control socket: fulcrumd always
//     gets in); otherwise it is refused with an error reply.
//   - idle timeout: a client that completes no request and takes none of its queued output
//     for `idle_timeout` is closed. Partial requests do not count as activity. A controller
//     is exempt.
//   - output: requests are taken from a client only while less than `output_pause` bytes of
//     replies wait for it (a client that does not read stops being served; its requests stay
//     in the kernel's socket buffer). A reply larger than `big_reply` that would bring the
//     output queued for all clients over `max_output_total` is replaced by a "busy, retry"
//     error, unless nothing else is queued (one big reply at a time always fits) or the client
//     is the controller; no further request is taken from that client until it has read the
//     refusal. A client whose queue exceeds `max_output_client` is disconnected.
//   - input: a request larger than `big_reply` that would bring the requests being received
//     over `max_input_total` is refused ("busy, retry") and the connection closed; a request
//     over `max_request` is refused and the connection closed (nothing after it is read).
//   - every refusal and abuse disconnect is counted by reason and logged once with the
//     peer's SO_PEERCRED pid/uid/gid (at most `log_burst` lines per 10 s; the rest are
//     summarised).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fulcrum/framing.hpp"

namespace fulcrum {

struct PeerCred {
    int32_t pid = -1;
    int32_t uid = -1;
    int32_t gid = -1;
    std::string str() const;  // "pid 4242 uid 0 gid 0"
};
PeerCred peer_credentials(int fd);

struct ServerLimits {
    size_t max_clients = 32;
    size_t reserved_slots = 0;
    bool evict_idle_when_full = false;
    std::chrono::milliseconds evict_min_idle{1000};  // never evict a client busier than this
    std::chrono::milliseconds idle_timeout{30000};
    std::chrono::milliseconds identify_timeout{2000};  // for a connection in a reserved slot
    size_t max_request = 1 << 20;
    size_t output_pause = 64 << 10;
    size_t big_reply = 64 << 10;
    size_t max_output_client = 256u << 20;
    size_t max_output_total = 64u << 20;
    size_t max_input_total = 64u << 20;
    unsigned log_burst = 20;
};

// Why a client was refused or disconnected.
enum class Refusal : uint8_t {
    too_many_clients,  // all slots taken: refused at accept
    evicted_idle,      // closed to make room for a new client (slots full, it was idle longest)
    idle_timeout,      // no request completed and no output taken for idle_timeout
    not_controller,    // in a reserved slot without identifying as the controller
    request_too_long,  // a request over max_request (the connection is closed)
    busy_output,       // a big reply refused: the total queued output is over its bound
    busy_input,  // a big request refused: the total request bytes being received are over their
                 // bound
    output_overflow,  // its own queued output over max_output_client (disconnected)
};
inline constexpr size_t kRefusalKinds = 8;
const char* refusal_name(Refusal r);

// Counters, readable from any thread.
struct ServerStats {
    std::array<std::atomic<uint64_t>, kRefusalKinds> refused{};
    std::atomic<uint64_t> accepted{0};
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> clients{0};        // connected now
    std::atomic<uint64_t> controllers{0};    // connected now, identified as the controller
    std::atomic<uint64_t> queued_output{0};  // reply bytes waiting for slow readers now
    uint64_t refused_total() const;
};

// One connection, as the protocol handler sees it.
struct Session {
    uint64_t id = 0;          // unique per connection; deliver() addresses a deferred reply by it
    PeerCred peer;
    bool reserved = false;    // accepted into a reserved slot: must identify first
    bool controller = false;  // set by the handler when the client identified as the controller
    bool close_after_reply = false;  // set by the handler to close once the reply is written
    // Set by the handler instead of writing a reply: the reply comes later through deliver().
    // Until then no further request of this client is taken (replies stay in order) and the
    // idle timeout does not run (the client is waiting for us).
    bool defer = false;
};

class SocketServer {
  public:
    struct Protocol {
        std::string what;     // "control socket": names the socket in log lines
        std::string clients;  // "control clients": in the too-many-clients reply
        std::function<std::unique_ptr<MessageDecoder>()> decoder;
        // Handles one complete message, appending the encoded reply to `out`.
        std::function<void(Session&, std::span<const uint8_t> msg, std::vector<uint8_t>& out)>
            handle;
        // Appends an encoded error reply saying `message`.
        std::function<void(std::vector<uint8_t>& out, const std::string& message)> error;
        // Logs a warning line (refusals and disconnects).
        std::function<void(const std::string&)> log;
        // Optional: the size the reply to `msg` will probably have, so a big reply is refused
        // while busy without being built first (a refused get_snapshot must not cost a copy
        // of the snapshot). 0: unknown or small; the reply is then checked once built.
        std::function<size_t(std::span<const uint8_t> msg)> reply_estimate;
    };

    // Serves `listen_fd` (non-blocking; closed by the destructor). `wake_fd`, if not -1, is
    // polled too so another thread can interrupt poll_once().
    SocketServer(int listen_fd, Protocol proto, ServerLimits limits, int wake_fd = -1);
    ~SocketServer();
    SocketServer(const SocketServer&) = delete;
    SocketServer& operator=(const SocketServer&) = delete;

    // Waits up to `timeout_ms` (less if a client's deadline comes first) for activity, then
    // accepts, reads, answers, writes and enforces the limits. Never blocks on a client.
    void poll_once(int timeout_ms);

    // Counts a refusal and logs it with the peer's credentials (for refusals a protocol
    // handler decides, such as a reserved slot used without identifying).
    void refuse(const Session& s, Refusal r, const std::string& detail);

    // The deferred reply of session `id` (on the server's thread). False if that client has
    // gone; the reply is then dropped.
    bool deliver(uint64_t id, std::span<const uint8_t> reply);

    const ServerStats& stats() const { return stats_; }
    const ServerLimits& limits() const { return limits_; }
    size_t clients() const { return conns_.size(); }

  private:
    using Clock = std::chrono::steady_clock;
    struct Conn {
        int fd = -1;
        Session s;
        std::unique_ptr<MessageDecoder> dec;
        std::vector<uint8_t> out;
        size_t out_off = 0;
        Clock::time_point accepted{};
        Clock::time_point active{};  // last completed request or output taken
        bool closing = false;        // close once `out` is written
        bool drop = false;           // close now
        bool eof = false;            // the peer shut down its side
        bool hold = false;           // told "busy": no more requests until it has read that
        bool waiting = false;        // a deferred reply is pending (Session::defer)
        size_t queued() const { return out.size() - out_off; }
        // No requests are taken from a client that has not read its replies, or that waits
        // for a deferred one.
        bool paused(size_t output_pause) const {
            return waiting || queued() >= output_pause || (hold && queued() > 0);
        }
    };
    void accept_all(Clock::time_point now);
    void read_from(Conn& c);
    void process(Conn& c, Clock::time_point now);
    void write_to(Conn& c, Clock::time_point now);
    void enforce_timeouts(Conn& c, Clock::time_point now);
    void close_conn(Conn& c);
    void log(const std::string& line);
    size_t input_in_progress() const;

    int listen_fd_;
    int wake_fd_;
    Protocol proto_;
    ServerLimits limits_;
    std::vector<std::unique_ptr<Conn>> conns_;
    size_t total_out_ = 0;
    uint64_t next_id_ = 0;
    ServerStats stats_;
    Clock::time_point log_window_{};
    unsigned logged_in_window_ = 0;
    uint64_t suppressed_ = 0;
};

}  // namespace fulcrum
