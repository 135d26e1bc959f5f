// Health checks: TCP connect and HTTP/HTTPS GET with an expected status, with interval,
// timeout, rise and fall, as HAProxy and keepalived users expect. All checks run on one
// thread (non-blocking connects + the libcurl multi interface), so hundreds of servers need
// no thread each. Check start times are spread over the interval.
//
// Checks in detail:
// - tcp: a non-blocking connect() to address:port; it passes when the connection completes
//   within the timeout. A completed connection is reset (SO_LINGER 0), not closed, so neither
//   side keeps a TIME_WAIT socket per check.
// - http/https: GET scheme://address:port/path (IPv6 addresses in brackets) through libcurl,
//   HTTP/1.1, a fresh connection each time, no proxy, redirects not followed, body discarded.
//   It passes when the status is one of expect_status (an empty list accepts 2xx and 3xx).
//   `host`, when set, is sent as the Host header (otherwise libcurl sends address:port).
//   https: certificate verification is OFF by default (tls_verify = false), as servers behind
//   a balancer are usually addressed by IP with internal certificates. With a host name
//   configured, the URL names that host and the connection still goes to the server address
//   (CURLOPT_CONNECT_TO), so SNI carries the host and tls_verify checks the certificate
//   against it.
// - none: the target is reported up and checked at once, without checks.
// Failure reasons are lower-case, e.g. "connection refused", "no route to host",
// "timeout after 1000 ms", "HTTP status 503 (expected 200)", "empty reply from server",
// "TLS error: ...". A check that exceeds its timeout is a failure.
//
// Scheduling: each target is checked every `interval` (fixed rate, never overlapping itself: a
// check slower than the interval delays the next one); a target's first check is at a stable
// offset hash(key) % interval, so hundreds of servers do not fire at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fulcrum/addr.hpp"
#include "fulcrum/control/config.hpp"

namespace fulcrum::control {

struct CheckTarget {
    std::string key;        // unique and stable, e.g. "web/198.18.0.11:80"
    IpAddr address;
    uint16_t port = 0;      // port to check (already resolved from the config)
    HealthCheckConfig cfg;
};

struct CheckStatus {
    bool up = false;        // current state after rise/fall
    bool checked = false;   // at least one check has completed
    std::string reason;     // why down (or the last failure, kept while up), e.g.
                            // "connection refused", "timeout after 1000 ms",
                            // "HTTP status 503 (expected 200)"
    double last_latency_ms = 0;
    uint64_t successes = 0; // checks that passed, in total
    uint64_t failures = 0;  // checks that failed, in total
    unsigned streak = 0;    // consecutive results of the same kind as the last one
};

class HealthChecker {
public:
    // Called on the checker's thread whenever a target changes state (after rise/fall),
    // including its first verdict (a target starts down and unchecked; its first successful
    // check marks it up at once, its first failed one marks it checked and down; later
    // transitions follow rise and fall). type == none targets get one call (up) when added
    // or changed. Each transition is also logged at info level. The checker holds no lock of
    // its own while calling, so the callback may call status(), all_checked() and
    // set_targets(); it must not destroy the HealthChecker. Exceptions it throws are logged
    // and swallowed. A call may, rarely, race with a set_targets() that has just removed or
    // changed the key: match keys against the current configuration.
    using OnChange = std::function<void(const std::string& key, const CheckStatus& status)>;

    // Starts the checker thread (throws std::system_error / std::runtime_error if it cannot
    // create its epoll set, eventfd or libcurl multi handle). Calls curl_global_init once.
    explicit HealthChecker(OnChange on_change);
    ~HealthChecker();  // stops and joins the thread, cancelling checks in flight (promptly)
    HealthChecker(const HealthChecker&) = delete;
    HealthChecker& operator=(const HealthChecker&) = delete;

    // Replaces the target set; any thread, any time, never blocks on checks. Targets whose key,
    // address, port and cfg are unchanged keep their state and schedule; changed ones restart
    // (down and unchecked, first check spread again); removed ones stop being checked (checks
    // in flight are cancelled). type == none targets are reported up without checks. Of
    // duplicate keys the first is used.
    void set_targets(std::vector<CheckTarget> targets);

    // Snapshot of every target's state.
    std::map<std::string, CheckStatus> status() const;

    // True once every current target has completed at least one check (or has type none).
    bool all_checked() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace fulcrum::control
