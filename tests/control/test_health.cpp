// Health checker tests. Everything runs on loopback (127.0.0.1 and ::1) against in-test
// servers on ephemeral ports; every wait is bounded, and every server, socket and thread is
// owned by an RAII object so it is stopped even when an assertion fails.
#include "fulcrum/control/health.hpp"
#include "netns_child.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace fulcrum;
using namespace fulcrum::control;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---- helpers ---------------------------------------------------------------------------------

template <class Pred>
bool wait_until(Pred pred, milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (!pred()) {
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(2ms);
    }
    return true;
}

long long ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration_cast<milliseconds>(b - a).count();
}

IpAddr loopback(Family f) { return *IpAddr::parse(f == Family::v6 ? "::1" : "127.0.0.1"); }

socklen_t loopback_sockaddr(Family f, uint16_t port, sockaddr_storage& ss) {
    ss = {};
    if (f == Family::v6) {
        auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons(port);
        sa->sin6_addr = in6addr_loopback;
        return sizeof(sockaddr_in6);
    }
    auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sizeof(sockaddr_in);
}

// A listening socket on loopback (port 0: ephemeral), or -1.
int listen_on(Family f, uint16_t port, int backlog) {
    sockaddr_storage ss;
    const socklen_t len = loopback_sockaddr(f, port, ss);
    const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (f == Family::v6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, backlog) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

uint16_t bound_port(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
    if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

bool ipv6_loopback_available() {
    const int fd = listen_on(Family::v6, 0, 1);
    if (fd < 0) return false;
    ::close(fd);
    return true;
}

// A port on which nothing listens (bound once, then released).
uint16_t closed_port(Family f = Family::v4) {
    const int fd = listen_on(f, 0, 1);
    if (fd < 0) return 0;
    const uint16_t port = bound_port(fd);
    ::close(fd);
    return port;
}

size_t open_fd_count() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

// Quiets the checker's info logs for tests with hundreds of transitions.
struct LogLevelGuard {
    spdlog::level::level_enum saved = spdlog::get_level();
    explicit LogLevelGuard(spdlog::level::level_enum l) { spdlog::set_level(l); }
    ~LogLevelGuard() { spdlog::set_level(saved); }
    LogLevelGuard(const LogLevelGuard&) = delete;
    LogLevelGuard& operator=(const LogLevelGuard&) = delete;
};

// ---- a loopback server: TCP acceptor and canned HTTP responder ---------------------------------

// Accepts connections and reads requests. For a request head ("...\r\n\r\n") it answers
// according to response(): a status code (> 0) gets "HTTP/1.1 <code>" and the connection is
// closed; kHang keeps the connection open without answering; kClose closes it without a reply.
// Bytes that cannot start an HTTP request (e.g. a TLS ClientHello) get a plain 400 and a close,
// as real plain-HTTP servers do. A TCP health check (connect, then reset) is just counted.
class TestServer {
public:
    static constexpr int kHang = -1;
    static constexpr int kClose = -2;

    explicit TestServer(Family family = Family::v4, int response = 200) : family_(family), response_(response) {}
    ~TestServer() { stop(); }
    TestServer(const TestServer&) = delete;
    TestServer& operator=(const TestServer&) = delete;

    // Listens on `port` (0: a new ephemeral port). After stop(), start(port()) reuses the port.
    bool start(uint16_t port = 0) {
        stop();
        const int fd = listen_on(family_, port, 512);
        if (fd < 0) return false;
        const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (wake < 0) {
            ::close(fd);
            return false;
        }
        listen_fd_ = fd;
        wake_fd_ = wake;
        port_ = bound_port(fd);
        thread_ = std::thread([this] { loop(); });
        return true;
    }

    // Closes the listener and every connection: the port refuses connections afterwards.
    void stop() {
        if (!thread_.joinable()) return;
        const uint64_t one = 1;
        (void)!::write(wake_fd_, &one, sizeof one);
        thread_.join();
        ::close(listen_fd_);
        ::close(wake_fd_);
        listen_fd_ = wake_fd_ = -1;
    }

    uint16_t port() const { return port_; }
    void set_response(int r) { response_.store(r); }
    size_t accepted() const { return accepted_.load(); }
    size_t open_connections() const { return open_.load(); }
    size_t max_open_connections() const { return max_open_.load(); }
    std::vector<std::string> requests() const {
        std::lock_guard lk(mu_);
        return requests_;
    }

private:
    struct Conn {
        int fd;
        std::string buf;
        bool answered = false;
    };

    static std::string reason_phrase(int code) {
        switch (code) {
            case 200: return "OK";
            case 204: return "No Content";
            case 301: return "Moved Permanently";
            case 400: return "Bad Request";
            case 404: return "Not Found";
            case 500: return "Internal Server Error";
            case 503: return "Service Unavailable";
            default: return "Status";
        }
    }

    static void send_all(int fd, const std::string& s) {
        size_t off = 0;
        while (off < s.size()) {
            const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += size_t(n);
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                pollfd p{fd, POLLOUT, 0};
                ::poll(&p, 1, 100);
                continue;
            }
            return;
        }
    }

    // Returns false when the connection is to be closed.
    bool on_data(Conn& c) {
        if (c.answered) return true;  // hanging: ignore anything more
        if (!c.buf.empty() && !std::isupper(static_cast<unsigned char>(c.buf[0]))) {
            send_all(c.fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return false;
        }
        const auto end = c.buf.find("\r\n\r\n");
        if (end == std::string::npos) return true;
        {
            std::lock_guard lk(mu_);
            requests_.push_back(c.buf.substr(0, end + 4));
        }
        const int r = response_.load();
        if (r == kHang) {
            c.answered = true;
            return true;
        }
        if (r == kClose) return false;
        const std::string body = "ok\n";
        send_all(c.fd, "HTTP/1.1 " + std::to_string(r) + " " + reason_phrase(r) +
                           "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nConnection: close\r\n\r\n" + body);
        return false;
    }

    void loop() {
        std::vector<Conn> conns;
        std::vector<pollfd> pfds;
        for (;;) {
            pfds.clear();
            pfds.push_back({wake_fd_, POLLIN, 0});
            pfds.push_back({listen_fd_, POLLIN, 0});
            for (const auto& c : conns) pfds.push_back({c.fd, POLLIN, 0});
            if (::poll(pfds.data(), pfds.size(), 1000) < 0 && errno != EINTR) break;
            if (pfds[0].revents) break;
            // Connections first: a closed connection is counted out before a new one is
            // counted in, so max_open_connections() measures overlap faithfully.
            std::vector<Conn> keep;
            for (size_t i = 0; i < conns.size(); ++i) {
                Conn& c = conns[i];
                bool alive = true;
                if (pfds[i + 2].revents) {
                    char buf[4096];
                    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
                    if (n > 0) {
                        c.buf.append(buf, size_t(n));
                        alive = on_data(c);
                    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                        alive = false;
                    }
                }
                if (alive) {
                    keep.push_back(std::move(c));
                } else {
                    ::close(c.fd);
                    --open_;
                }
            }
            conns = std::move(keep);
            if (pfds[1].revents) {
                for (;;) {
                    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    ++accepted_;
                    const size_t now_open = ++open_;
                    size_t prev = max_open_.load();
                    while (now_open > prev && !max_open_.compare_exchange_weak(prev, now_open)) {
                    }
                    conns.push_back(Conn{fd, {}, false});
                }
            }
        }
        for (const auto& c : conns) ::close(c.fd);
        open_ -= conns.size();
    }

    Family family_;
    std::atomic<int> response_;
    int listen_fd_ = -1;
    int wake_fd_ = -1;
    uint16_t port_ = 0;
    std::thread thread_;
    std::atomic<size_t> accepted_{0};
    std::atomic<size_t> open_{0};
    std::atomic<size_t> max_open_{0};
    mutable std::mutex mu_;
    std::vector<std::string> requests_;
};

// A listener that never accepts, with a backlog of 0 filled by connections of our own: further
// SYNs are dropped, so a connect() to it neither completes nor fails (a timeout on loopback).
class FullBacklog {
public:
    FullBacklog() {
        listen_fd_ = listen_on(Family::v4, 0, 0);
        if (listen_fd_ < 0) return;
        port_ = bound_port(listen_fd_);
        for (int i = 0; i < 16; ++i) {
            sockaddr_storage ss;
            const socklen_t len = loopback_sockaddr(Family::v4, port_, ss);
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) return;
            clients_.push_back(fd);
            if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) continue;
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, 300) == 0) {  // this one hangs: the queue is full
                full_ = true;
                return;
            }
        }
    }
    ~FullBacklog() {
        for (int fd : clients_) ::close(fd);
        if (listen_fd_ >= 0) ::close(listen_fd_);
    }
    FullBacklog(const FullBacklog&) = delete;
    FullBacklog& operator=(const FullBacklog&) = delete;

    bool ok() const { return full_; }
    uint16_t port() const { return port_; }

private:
    int listen_fd_ = -1;
    uint16_t port_ = 0;
    bool full_ = false;
    std::vector<int> clients_;
};

// ---- recording state changes -------------------------------------------------------------------

struct Event {
    std::string key;
    CheckStatus st;
    Clock::time_point at;
};

class Recorder {
public:
    HealthChecker::OnChange callback() {
        return [this](const std::string& key, const CheckStatus& st) {
            std::lock_guard lk(mu_);
            events_.push_back({key, st, Clock::now()});
        };
    }
    std::vector<Event> events(const std::string& key) const {
        std::lock_guard lk(mu_);
        std::vector<Event> out;
        for (const auto& e : events_)
            if (e.key == key) out.push_back(e);
        return out;
    }
    std::vector<Event> all() const {
        std::lock_guard lk(mu_);
        return events_;
    }
    size_t count(const std::string& key) const { return events(key).size(); }
    bool wait_count(const std::string& key, size_t n, milliseconds limit = 3000ms) const {
        return wait_until([&] { return count(key) >= n; }, limit);
    }

private:
    mutable std::mutex mu_;
    std::vector<Event> events_;
};

HealthCheckConfig check_cfg(CheckType type, milliseconds interval, milliseconds timeout, unsigned rise = 2,
                            unsigned fall = 3) {
    HealthCheckConfig c;
    c.type = type;
    c.interval = interval;
    c.timeout = timeout;
    c.rise = rise;
    c.fall = fall;
    return c;
}

CheckTarget make_target(std::string key, Family f, uint16_t port, HealthCheckConfig cfg) {
    CheckTarget t;
    t.key = std::move(key);
    t.address = loopback(f);
    t.port = port;
    t.cfg = std::move(cfg);
    return t;
}

CheckStatus status_of(const HealthChecker& hc, const std::string& key) {
    const auto all = hc.status();
    auto it = all.find(key);
    return it == all.end() ? CheckStatus{} : it->second;
}

bool has_header(const std::string& request, const std::string& line) {
    return request.find("\r\n" + line + "\r\n") != std::string::npos;
}

// ---- TCP ---------------------------------------------------------------------------------------

TEST(HealthTcp, UpWhenListening) {
    TestServer srv;
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    EXPECT_TRUE(hc.all_checked());  // no targets

    hc.set_targets({make_target("web/a", Family::v4, srv.port(), check_cfg(CheckType::tcp, 100ms, 100ms))});
    const CheckStatus before = status_of(hc, "web/a");
    EXPECT_FALSE(before.checked);
    EXPECT_FALSE(before.up);

    ASSERT_TRUE(rec.wait_count("web/a", 1));
    const auto ev = rec.events("web/a").at(0);
    EXPECT_TRUE(ev.st.up);
    EXPECT_TRUE(ev.st.checked);
    EXPECT_EQ(ev.st.successes, 1u);
    EXPECT_EQ(ev.st.failures, 0u);
    EXPECT_EQ(ev.st.streak, 1u);
    EXPECT_GT(ev.st.last_latency_ms, 0.0);
    EXPECT_LT(ev.st.last_latency_ms, 100.0);
    EXPECT_TRUE(hc.all_checked());

    // Checks repeat every interval; an up target that stays up is not announced again.
    ASSERT_TRUE(wait_until([&] { return status_of(hc, "web/a").successes >= 4; }, 2000ms));
    EXPECT_TRUE(wait_until([&] { return srv.accepted() >= 3; }, 1000ms));
    EXPECT_EQ(rec.count("web/a"), 1u);
    EXPECT_TRUE(status_of(hc, "web/a").up);
}

TEST(HealthTcp, DownWithConnectionRefused) {
    const uint16_t port = closed_port();
    ASSERT_NE(port, 0);
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/refused", Family::v4, port, check_cfg(CheckType::tcp, 50ms, 50ms))});

    ASSERT_TRUE(rec.wait_count("web/refused", 1));
    const auto ev = rec.events("web/refused").at(0);
    EXPECT_FALSE(ev.st.up);
    EXPECT_TRUE(ev.st.checked);
    EXPECT_EQ(ev.st.reason, "connection refused");
    EXPECT_EQ(ev.st.failures, 1u);
    EXPECT_TRUE(hc.all_checked());

    // Further failures of a down target are counted, not announced.
    ASSERT_TRUE(wait_until([&] { return status_of(hc, "web/refused").failures >= 4; }, 2000ms));
    EXPECT_EQ(rec.count("web/refused"), 1u);
    EXPECT_GE(status_of(hc, "web/refused").streak, 4u);
}

TEST(HealthTcp, FallAfterExactlyFallFailuresRiseAfterExactlyRiseSuccesses) {
    constexpr auto kInterval = 100ms;
    constexpr unsigned kRise = 2, kFall = 3;
    TestServer srv;
    ASSERT_TRUE(srv.start());
    const uint16_t port = srv.port();
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/flap", Family::v4, port, check_cfg(CheckType::tcp, kInterval, 100ms, kRise, kFall))});

    ASSERT_TRUE(rec.wait_count("web/flap", 1));
    ASSERT_TRUE(rec.events("web/flap")[0].st.up);
    ASSERT_TRUE(wait_until([&] { return status_of(hc, "web/flap").successes >= 3; }, 2000ms));

    // Listener gone: down after exactly `fall` consecutive failures.
    srv.stop();
    const auto stopped = Clock::now();
    ASSERT_TRUE(rec.wait_count("web/flap", 2));
    const auto down = rec.events("web/flap")[1];
    EXPECT_FALSE(down.st.up);
    EXPECT_EQ(down.st.reason, "connection refused");
    EXPECT_EQ(down.st.streak, kFall);
    EXPECT_EQ(down.st.failures, kFall);
    // Three checks one interval apart: at least two intervals after the stop (minus rounding),
    // at most three plus a generous margin for a loaded machine.
    EXPECT_GE(ms_between(stopped, down.at), 2 * 100 - 20);
    EXPECT_LE(ms_between(stopped, down.at), 3 * 100 + 700);

    // Listener back on the same port: up after exactly `rise` consecutive successes.
    ASSERT_TRUE(srv.start(port)) << "port " << port << " was taken meanwhile";
    const auto restarted = Clock::now();
    ASSERT_TRUE(rec.wait_count("web/flap", 3));
    const auto up = rec.events("web/flap")[2];
    EXPECT_TRUE(up.st.up);
    EXPECT_EQ(up.st.streak, kRise);
    EXPECT_EQ(up.st.successes, down.st.successes + kRise);
    EXPECT_EQ(up.st.failures, down.st.failures);
    EXPECT_EQ(up.st.reason, "connection refused");  // the last failure is kept for display
    EXPECT_GE(ms_between(restarted, up.at), 100 - 20);
    EXPECT_LE(ms_between(restarted, up.at), 2 * 100 + 700);

    // Exactly three transitions, in order: up, down, up.
    const auto evs = rec.events("web/flap");
    ASSERT_EQ(evs.size(), 3u);
    EXPECT_TRUE(evs[0].st.up);
    EXPECT_FALSE(evs[1].st.up);
    EXPECT_TRUE(evs[2].st.up);
    EXPECT_LT(evs[0].at, evs[1].at);
    EXPECT_LT(evs[1].at, evs[2].at);
}

TEST(HealthTcp, ChecksRunOncePerInterval) {
    TestServer srv;
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/rate", Family::v4, srv.port(), check_cfg(CheckType::tcp, 100ms, 100ms))});
    ASSERT_TRUE(rec.wait_count("web/rate", 1));
    const uint64_t first = status_of(hc, "web/rate").successes;
    std::this_thread::sleep_for(1000ms);
    const uint64_t done = status_of(hc, "web/rate").successes - first;
    EXPECT_GE(done, 7u);   // about 10
    EXPECT_LE(done, 11u);  // never faster than the interval
}

// A check that cannot leave this host (no route yet: fl0 just recreated by a restarting
// dataplane, before fulcrumd put its address back) is no verdict on the server: the server
// stays unchecked, nothing is announced, and the first real answer decides. In a namespace of
// its own (the test's own addresses, no route anywhere else).
TEST(HealthTcp, NoRouteFromThisHostLeavesTheServerUnchecked) {
    namespace nn = fulcrum::test::netns;
    const std::string err = nn::run_isolated(false, [](nn::Lab&) {
        Recorder rec;
        HealthChecker hc(rec.callback());
        CheckTarget t = make_target("web/unrouted", Family::v4, 80, check_cfg(CheckType::tcp, 50ms, 200ms));
        t.address = IpAddr::v4(std::array<uint8_t, 4>{198, 18, 77, 1}.data());
        hc.set_targets({t});
        nn::wait_for([&] { return status_of(hc, "web/unrouted").failures >= 3; }, "three unsendable checks");
        const CheckStatus st = status_of(hc, "web/unrouted");
        nn::require(!st.checked, "an unsendable check gave a verdict");
        nn::require(st.reason == "not checked yet: network is unreachable", "reason is '" + st.reason + "'");
        nn::require(rec.count("web/unrouted") == 0, "a state change was announced");
        nn::require(!hc.all_checked(), "all_checked() with an unchecked server");
        // The route appears; the server does not answer (nobody behind vb): a real verdict.
        nn::up("va");
        nn::up("vb");
        nn::sh("ip addr add 198.18.77.2/24 dev va");
        nn::wait_for([&] { return rec.count("web/unrouted") == 1; }, "the first real verdict");
        const auto ev = rec.events("web/unrouted").at(0);
        nn::require(ev.st.checked && !ev.st.up, "the first real verdict is not 'checked, down'");
        nn::require(ev.st.reason.find("not checked yet") == std::string::npos, "reason is '" + ev.st.reason + "'");
    });
    EXPECT_EQ(err, "");
}

TEST(HealthTcp, TimeoutWhenConnectHangs) {
    FullBacklog hole;
    ASSERT_TRUE(hole.ok()) << "could not fill a listen backlog on loopback";
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/hole", Family::v4, hole.port(), check_cfg(CheckType::tcp, 300ms, 150ms))});

    ASSERT_TRUE(rec.wait_count("web/hole", 1));
    const auto ev = rec.events("web/hole")[0];
    EXPECT_FALSE(ev.st.up);
    EXPECT_TRUE(ev.st.checked);
    EXPECT_EQ(ev.st.reason, "timeout after 150 ms");
    EXPECT_GE(ev.st.last_latency_ms, 145.0);
    EXPECT_LT(ev.st.last_latency_ms, 1000.0);
}

TEST(HealthTcp, InvalidTargetsFailWithReason) {
    Recorder rec;
    HealthChecker hc(rec.callback());
    CheckTarget no_addr;
    no_addr.key = "web/noaddr";
    no_addr.port = 80;
    no_addr.cfg = check_cfg(CheckType::tcp, 50ms, 50ms);
    CheckTarget no_port = make_target("web/noport", Family::v4, 0, check_cfg(CheckType::http, 50ms, 50ms));
    hc.set_targets({no_addr, no_port});
    ASSERT_TRUE(rec.wait_count("web/noaddr", 1));
    ASSERT_TRUE(rec.wait_count("web/noport", 1));
    EXPECT_EQ(rec.events("web/noaddr")[0].st.reason, "invalid address");
    EXPECT_EQ(rec.events("web/noport")[0].st.reason, "no port to check");
    EXPECT_FALSE(status_of(hc, "web/noaddr").up);
}

// ---- HTTP --------------------------------------------------------------------------------------

TEST(HealthHttp, ExpectedStatusPassesAndSendsPathAndHost) {
    TestServer srv(Family::v4, 200);
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    auto cfg = check_cfg(CheckType::http, 100ms, 100ms);
    cfg.path = "/healthz?probe=1";
    cfg.host = "web.example.test";
    hc.set_targets({make_target("web/http", Family::v4, srv.port(), cfg)});

    ASSERT_TRUE(rec.wait_count("web/http", 1));
    const auto ev = rec.events("web/http")[0];
    EXPECT_TRUE(ev.st.up) << ev.st.reason;
    EXPECT_GT(ev.st.last_latency_ms, 0.0);
    const auto reqs = srv.requests();
    ASSERT_FALSE(reqs.empty());
    EXPECT_EQ(reqs[0].rfind("GET /healthz?probe=1 HTTP/1.1\r\n", 0), 0u) << reqs[0];
    EXPECT_TRUE(has_header(reqs[0], "Host: web.example.test")) << reqs[0];
    EXPECT_EQ(reqs[0].find("Host: 127.0.0.1"), std::string::npos) << reqs[0];
}

TEST(HealthHttp, DefaultHostIsTheServerAddress) {
    TestServer srv(Family::v4, 200);
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/http", Family::v4, srv.port(), check_cfg(CheckType::http, 100ms, 100ms))});
    ASSERT_TRUE(rec.wait_count("web/http", 1));
    EXPECT_TRUE(rec.events("web/http")[0].st.up);
    const auto reqs = srv.requests();
    ASSERT_FALSE(reqs.empty());
    EXPECT_EQ(reqs[0].rfind("GET / HTTP/1.1\r\n", 0), 0u) << reqs[0];
    EXPECT_TRUE(has_header(reqs[0], "Host: 127.0.0.1:" + std::to_string(srv.port()))) << reqs[0];
}

TEST(HealthHttp, UnexpectedStatusFailsWithReason) {
    TestServer srv(Family::v4, 503);
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    auto two = check_cfg(CheckType::http, 100ms, 100ms);
    two.expect_status = {200, 204};
    auto want503 = check_cfg(CheckType::http, 100ms, 100ms);
    want503.expect_status = {503};
    hc.set_targets({make_target("web/one", Family::v4, srv.port(), check_cfg(CheckType::http, 100ms, 100ms)),
                    make_target("web/two", Family::v4, srv.port(), two),
                    make_target("web/503", Family::v4, srv.port(), want503)});
    ASSERT_TRUE(rec.wait_count("web/one", 1));
    ASSERT_TRUE(rec.wait_count("web/two", 1));
    ASSERT_TRUE(rec.wait_count("web/503", 1));
    EXPECT_FALSE(rec.events("web/one")[0].st.up);
    EXPECT_EQ(rec.events("web/one")[0].st.reason, "HTTP status 503 (expected 200)");
    EXPECT_FALSE(rec.events("web/two")[0].st.up);
    EXPECT_EQ(rec.events("web/two")[0].st.reason, "HTTP status 503 (expected 200, 204)");
    EXPECT_TRUE(rec.events("web/503")[0].st.up);
}

TEST(HealthHttp, StatusChangesFollowRiseAndFall) {
    TestServer srv(Family::v4, 200);
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/flap", Family::v4, srv.port(), check_cfg(CheckType::http, 100ms, 100ms, 3, 2))});
    ASSERT_TRUE(rec.wait_count("web/flap", 1));
    EXPECT_TRUE(rec.events("web/flap")[0].st.up);

    srv.set_response(500);
    ASSERT_TRUE(rec.wait_count("web/flap", 2));
    const auto down = rec.events("web/flap")[1];
    EXPECT_FALSE(down.st.up);
    EXPECT_EQ(down.st.streak, 2u);
    EXPECT_EQ(down.st.reason, "HTTP status 500 (expected 200)");

    srv.set_response(200);
    ASSERT_TRUE(rec.wait_count("web/flap", 3));
    const auto up = rec.events("web/flap")[2];
    EXPECT_TRUE(up.st.up);
    EXPECT_EQ(up.st.streak, 3u);
    EXPECT_EQ(rec.count("web/flap"), 3u);
}

TEST(HealthHttp, HangingServerTimesOut) {
    TestServer srv(Family::v4, TestServer::kHang);
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/hang", Family::v4, srv.port(), check_cfg(CheckType::http, 400ms, 200ms))});
    ASSERT_TRUE(rec.wait_count("web/hang", 1));
    const auto ev = rec.events("web/hang")[0];
    EXPECT_FALSE(ev.st.up);
    EXPECT_EQ(ev.st.reason, "timeout after 200 ms");
    EXPECT_GE(ev.st.last_latency_ms, 195.0);
    EXPECT_LT(ev.st.last_latency_ms, 1000.0);
    EXPECT_FALSE(srv.requests().empty());  // the request was sent; no answer came
}

TEST(HealthHttp, CheckNeverOverlapsItself) {
    // timeout == interval against a server that never answers: each check ends (timing out)
    // exactly when the next is due; the server must never see two of them at once.
    TestServer srv(Family::v4, TestServer::kHang);
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/slow", Family::v4, srv.port(), check_cfg(CheckType::http, 100ms, 100ms))});
    ASSERT_TRUE(wait_until([&] { return status_of(hc, "web/slow").failures >= 5; }, 3000ms));
    EXPECT_EQ(srv.max_open_connections(), 1u);
    EXPECT_EQ(status_of(hc, "web/slow").reason, "timeout after 100 ms");
}

TEST(HealthHttp, ClosedWithoutReply) {
    TestServer srv(Family::v4, TestServer::kClose);
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/close", Family::v4, srv.port(), check_cfg(CheckType::http, 100ms, 100ms))});
    ASSERT_TRUE(rec.wait_count("web/close", 1));
    EXPECT_FALSE(rec.events("web/close")[0].st.up);
    EXPECT_EQ(rec.events("web/close")[0].st.reason, "empty reply from server");
}

TEST(HealthHttp, ConnectionRefused) {
    const uint16_t port = closed_port();
    ASSERT_NE(port, 0);
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("web/refused", Family::v4, port, check_cfg(CheckType::http, 100ms, 100ms))});
    ASSERT_TRUE(rec.wait_count("web/refused", 1));
    EXPECT_FALSE(rec.events("web/refused")[0].st.up);
    EXPECT_EQ(rec.events("web/refused")[0].st.reason, "connection refused");
}

TEST(HealthHttps, PlainHttpListenerFailsWithTlsReason) {
    // Certificate verification is off by default (tls_verify = false): servers behind a
    // balancer are usually reached by address with internal certificates.
    EXPECT_FALSE(HealthCheckConfig{}.tls_verify);

    TestServer srv(Family::v4, 200);
    ASSERT_TRUE(srv.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    auto plain = check_cfg(CheckType::https, 1000ms, 1000ms);  // the first load of the CA store is slow under sanitizers
    auto named = plain;
    named.host = "web.example.test";  // goes through CURLOPT_CONNECT_TO, same address
    named.tls_verify = true;
    hc.set_targets({make_target("web/tls", Family::v4, srv.port(), plain),
                    make_target("web/tls-named", Family::v4, srv.port(), named)});
    ASSERT_TRUE(rec.wait_count("web/tls", 1));
    ASSERT_TRUE(rec.wait_count("web/tls-named", 1));
    for (const char* key : {"web/tls", "web/tls-named"}) {
        const auto ev = rec.events(key)[0];
        EXPECT_FALSE(ev.st.up) << key;
        EXPECT_EQ(ev.st.reason.rfind("TLS error: ", 0), 0u) << key << ": " << ev.st.reason;
    }
    EXPECT_GE(srv.accepted(), 2u);  // both reached the server's address
}

// ---- IPv6 --------------------------------------------------------------------------------------

TEST(HealthIpv6, TcpAndHttpOnLoopback) {
    if (!ipv6_loopback_available()) GTEST_SKIP() << "no IPv6 loopback";
    TestServer tcp(Family::v6);
    TestServer http(Family::v6, 200);
    ASSERT_TRUE(tcp.start());
    ASSERT_TRUE(http.start());
    const uint16_t refused = closed_port(Family::v6);
    ASSERT_NE(refused, 0);
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("v6/tcp", Family::v6, tcp.port(), check_cfg(CheckType::tcp, 100ms, 100ms)),
                    make_target("v6/http", Family::v6, http.port(), check_cfg(CheckType::http, 100ms, 100ms)),
                    make_target("v6/refused", Family::v6, refused, check_cfg(CheckType::tcp, 100ms, 100ms))});
    ASSERT_TRUE(rec.wait_count("v6/tcp", 1));
    ASSERT_TRUE(rec.wait_count("v6/http", 1));
    ASSERT_TRUE(rec.wait_count("v6/refused", 1));
    EXPECT_TRUE(rec.events("v6/tcp")[0].st.up) << rec.events("v6/tcp")[0].st.reason;
    EXPECT_TRUE(rec.events("v6/http")[0].st.up) << rec.events("v6/http")[0].st.reason;
    EXPECT_FALSE(rec.events("v6/refused")[0].st.up);
    EXPECT_EQ(rec.events("v6/refused")[0].st.reason, "connection refused");
    EXPECT_TRUE(wait_until([&] { return tcp.accepted() >= 1; }, 1000ms));  // accepted after the check
    const auto reqs = http.requests();
    ASSERT_FALSE(reqs.empty());
    EXPECT_TRUE(has_header(reqs[0], "Host: [::1]:" + std::to_string(http.port()))) << reqs[0];
}

// ---- target set changes ------------------------------------------------------------------------

TEST(HealthSetTargets, UnchangedKeepStateChangedRestartNewStart) {
    TestServer a, b;
    ASSERT_TRUE(a.start());
    ASSERT_TRUE(b.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    const auto ta = make_target("svc/a", Family::v4, a.port(), check_cfg(CheckType::tcp, 100ms, 100ms));
    auto tb = make_target("svc/b", Family::v4, b.port(), check_cfg(CheckType::tcp, 100ms, 100ms));
    hc.set_targets({ta, tb});
    ASSERT_TRUE(rec.wait_count("svc/a", 1));
    ASSERT_TRUE(rec.wait_count("svc/b", 1));
    ASSERT_TRUE(wait_until([&] { return status_of(hc, "svc/a").successes >= 3; }, 2000ms));

    auto tb2 = tb;
    tb2.cfg.fall = 4;  // a settings change restarts the target
    const auto tc = make_target("svc/c", Family::v4, a.port(), check_cfg(CheckType::tcp, 100ms, 100ms));
    hc.set_targets({tc, tb2, ta});  // order does not matter

    // Visible at once, before any new check.
    const auto st = hc.status();
    ASSERT_EQ(st.size(), 3u);
    EXPECT_TRUE(st.at("svc/a").up);
    EXPECT_TRUE(st.at("svc/a").checked);
    EXPECT_GE(st.at("svc/a").successes, 3u);
    EXPECT_FALSE(st.at("svc/b").checked);
    EXPECT_FALSE(st.at("svc/b").up);
    EXPECT_EQ(st.at("svc/b").successes, 0u);
    EXPECT_FALSE(st.at("svc/c").checked);
    EXPECT_FALSE(hc.all_checked());

    ASSERT_TRUE(rec.wait_count("svc/b", 2));
    ASSERT_TRUE(rec.wait_count("svc/c", 1));
    EXPECT_TRUE(rec.events("svc/b")[1].st.up);
    EXPECT_EQ(rec.events("svc/b")[1].st.successes, 1u);  // counters restarted
    EXPECT_TRUE(rec.events("svc/c")[0].st.up);
    EXPECT_TRUE(hc.all_checked());
    // The unchanged target kept going without a new verdict.
    std::this_thread::sleep_for(250ms);
    EXPECT_EQ(rec.count("svc/a"), 1u);
    EXPECT_GE(status_of(hc, "svc/a").successes, st.at("svc/a").successes + 1);
}

TEST(HealthSetTargets, RemovedTargetsStopBeingChecked) {
    TestServer a, b;
    TestServer hang(Family::v4, TestServer::kHang);
    ASSERT_TRUE(a.start());
    ASSERT_TRUE(b.start());
    ASSERT_TRUE(hang.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    const auto ta = make_target("svc/a", Family::v4, a.port(), check_cfg(CheckType::tcp, 50ms, 50ms));
    const auto tb = make_target("svc/b", Family::v4, b.port(), check_cfg(CheckType::tcp, 50ms, 50ms));
    const auto th = make_target("svc/h", Family::v4, hang.port(), check_cfg(CheckType::http, 3000ms, 3000ms));
    hc.set_targets({ta, tb, th});
    ASSERT_TRUE(rec.wait_count("svc/a", 1));
    ASSERT_TRUE(rec.wait_count("svc/b", 1));
    ASSERT_TRUE(wait_until([&] { return b.accepted() >= 3; }, 2000ms));
    // The HTTP check is in flight: the server holds its request, unanswered.
    ASSERT_TRUE(wait_until([&] { return hang.requests().size() == 1 && hang.open_connections() == 1; }, 6000ms));

    hc.set_targets({ta});
    EXPECT_EQ(hc.status().count("svc/b"), 0u);
    EXPECT_EQ(hc.status().count("svc/h"), 0u);
    // The cancelled HTTP check closes its connection.
    EXPECT_TRUE(wait_until([&] { return hang.open_connections() == 0; }, 1000ms));
    std::this_thread::sleep_for(100ms);  // a TCP check in flight at removal may still land
    const size_t b_after = b.accepted();
    const size_t a_after = a.accepted();
    std::this_thread::sleep_for(500ms);  // ten intervals
    EXPECT_EQ(b.accepted(), b_after);
    EXPECT_GT(a.accepted(), a_after);
    EXPECT_EQ(hang.requests().size(), 1u);
    EXPECT_EQ(rec.count("svc/b"), 1u);
    EXPECT_EQ(rec.count("svc/h"), 0u);
    EXPECT_TRUE(hc.all_checked());
}

TEST(HealthSetTargets, DuplicateKeysUseTheFirst) {
    TestServer a;
    ASSERT_TRUE(a.start());
    Recorder rec;
    HealthChecker hc(rec.callback());
    hc.set_targets({make_target("dup", Family::v4, a.port(), check_cfg(CheckType::tcp, 100ms, 100ms)),
                    make_target("dup", Family::v4, closed_port(), check_cfg(CheckType::tcp, 100ms, 100ms))});
    ASSERT_TRUE(rec.wait_count("dup", 1));
    EXPECT_TRUE(rec.events("dup")[0].st.up);
    EXPECT_EQ(hc.status().size(), 1u);
}

// ---- type none ---------------------------------------------------------------------------------

TEST(HealthNone, UpImmediatelyWithoutChecks) {
    Recorder rec;
    HealthChecker hc(rec.callback());
    CheckTarget t;
    t.key = "svc/none";
    t.address = loopback(Family::v4);
    t.port = closed_port();  // would fail if it were checked
    t.cfg = check_cfg(CheckType::none, 50ms, 50ms);
    hc.set_targets({t});
    const auto st = status_of(hc, "svc/none");
    EXPECT_TRUE(st.up);
    EXPECT_TRUE(st.checked);
    EXPECT_TRUE(hc.all_checked());
    ASSERT_TRUE(rec.wait_count("svc/none", 1));
    EXPECT_TRUE(rec.events("svc/none")[0].st.up);
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(rec.count("svc/none"), 1u);  // announced once
    EXPECT_EQ(status_of(hc, "svc/none").failures, 0u);
    EXPECT_EQ(status_of(hc, "svc/none").successes, 0u);

    // Re-applying the same set changes nothing; switching to tcp starts real checks.
    hc.set_targets({t});
    t.cfg.type = CheckType::tcp;
    hc.set_targets({t});
    EXPECT_FALSE(status_of(hc, "svc/none").checked);
    ASSERT_TRUE(rec.wait_count("svc/none", 2));
    EXPECT_FALSE(rec.events("svc/none")[1].st.up);
    EXPECT_EQ(rec.events("svc/none")[1].st.reason, "connection refused");
}

// ---- scale, shutdown, robustness ---------------------------------------------------------------

TEST(HealthMany, ThreeHundredTargetsComeUpSpreadOverTheInterval) {
    LogLevelGuard quiet(spdlog::level::warn);
    constexpr size_t kTargets = 300;
    constexpr auto kInterval = 200ms;
    TestServer s1, s2, s3;
    ASSERT_TRUE(s1.start());
    ASSERT_TRUE(s2.start());
    ASSERT_TRUE(s3.start());
    const uint16_t ports[] = {s1.port(), s2.port(), s3.port()};
    Recorder rec;
    HealthChecker hc(rec.callback());
    std::vector<CheckTarget> targets;
    for (size_t i = 0; i < kTargets; ++i)
        targets.push_back(make_target("many/" + std::to_string(i), Family::v4, ports[i % 3],
                                      check_cfg(CheckType::tcp, kInterval, kInterval)));
    const auto t0 = Clock::now();
    hc.set_targets(targets);
    ASSERT_TRUE(wait_until([&] { return hc.all_checked(); }, 3000ms));
    const auto st = hc.status();
    ASSERT_EQ(st.size(), kTargets);
    for (const auto& [key, s] : st) EXPECT_TRUE(s.up) << key << ": " << s.reason;

    // First verdicts (one per target) spread over the interval, not in one burst.
    const auto events = rec.all();
    ASSERT_EQ(events.size(), kTargets);
    std::map<long long, size_t> per_10ms;
    auto first = events.front().at, last = events.front().at;
    for (const auto& e : events) {
        first = std::min(first, e.at);
        last = std::max(last, e.at);
        ++per_10ms[ms_between(t0, e.at) / 10];
    }
    EXPECT_LE(ms_between(t0, last), 2000);
    EXPECT_GE(ms_between(first, last), 100) << "first checks are not spread";
    size_t busiest = 0;
    for (const auto& [bucket, n] : per_10ms) busiest = std::max(busiest, n);
    EXPECT_LE(busiest, kTargets / 5) << "too many first checks in one 10 ms window";
}

TEST(HealthShutdown, DestructorWithChecksInFlightIsQuick) {
    LogLevelGuard quiet(spdlog::level::warn);
    TestServer hang(Family::v4, TestServer::kHang);
    ASSERT_TRUE(hang.start());
    FullBacklog hole;
    ASSERT_TRUE(hole.ok());
    Recorder rec;
    auto hc = std::make_unique<HealthChecker>(rec.callback());
    std::vector<CheckTarget> targets;
    for (int i = 0; i < 50; ++i) {
        targets.push_back(
            make_target("hang/" + std::to_string(i), Family::v4, hang.port(), check_cfg(CheckType::http, 1000ms, 1000ms)));
        targets.push_back(
            make_target("hole/" + std::to_string(i), Family::v4, hole.port(), check_cfg(CheckType::tcp, 1000ms, 1000ms)));
    }
    hc->set_targets(targets);
    ASSERT_TRUE(wait_until([&] { return hang.requests().size() >= 10; }, 3000ms));
    ASSERT_GE(hang.open_connections(), 5u);  // HTTP checks in flight (and TCP connects hanging)

    const auto t0 = Clock::now();
    hc.reset();
    EXPECT_LT(ms_between(t0, Clock::now()), 300);
    EXPECT_TRUE(wait_until([&] { return hang.open_connections() == 0; }, 1000ms));
}

TEST(HealthRobust, NoFileDescriptorLeaks) {
    LogLevelGuard quiet(spdlog::level::warn);
    {
        // Warm-up: lets libcurl/OpenSSL do their one-time initialisation first.
        TestServer srv(Family::v4, 200);
        ASSERT_TRUE(srv.start());
        HealthChecker hc(nullptr);
        hc.set_targets({make_target("warm/https", Family::v4, srv.port(), check_cfg(CheckType::https, 50ms, 50ms)),
                        make_target("warm/http", Family::v4, srv.port(), check_cfg(CheckType::http, 50ms, 50ms))});
        ASSERT_TRUE(wait_until([&] { return hc.all_checked(); }, 2000ms));
    }
    const size_t before = open_fd_count();
    {
        TestServer ok(Family::v4, 200), hang(Family::v4, TestServer::kHang), close(Family::v4, TestServer::kClose);
        ASSERT_TRUE(ok.start());
        ASSERT_TRUE(hang.start());
        ASSERT_TRUE(close.start());
        FullBacklog hole;
        ASSERT_TRUE(hole.ok());
        const uint16_t refused = closed_port();
        Recorder rec;
        HealthChecker hc(rec.callback());
        auto all = [&](milliseconds interval) {
            return std::vector<CheckTarget>{
                make_target("t/ok", Family::v4, ok.port(), check_cfg(CheckType::tcp, interval, 40ms)),
                make_target("t/refused", Family::v4, refused, check_cfg(CheckType::tcp, interval, 40ms)),
                make_target("t/hole", Family::v4, hole.port(), check_cfg(CheckType::tcp, interval, 40ms)),
                make_target("h/ok", Family::v4, ok.port(), check_cfg(CheckType::http, interval, 40ms)),
                make_target("h/hang", Family::v4, hang.port(), check_cfg(CheckType::http, interval, 40ms)),
                make_target("h/close", Family::v4, close.port(), check_cfg(CheckType::http, interval, 40ms)),
                make_target("h/refused", Family::v4, refused, check_cfg(CheckType::http, interval, 40ms)),
                make_target("s/plain", Family::v4, ok.port(), check_cfg(CheckType::https, interval, 40ms)),
            };
        };
        hc.set_targets(all(50ms));
        ASSERT_TRUE(wait_until([&] { return hc.all_checked(); }, 2000ms));
        // Churn: restart everything repeatedly, cancelling checks in flight.
        for (int i = 0; i < 10; ++i) {
            hc.set_targets(all(milliseconds(50 + (i % 2))));
            std::this_thread::sleep_for(30ms);
        }
        hc.set_targets({});
        std::this_thread::sleep_for(100ms);
        hc.set_targets(all(50ms));
        std::this_thread::sleep_for(300ms);
    }  // checker first, then servers
    EXPECT_EQ(open_fd_count(), before);
}

TEST(HealthRobust, CallbackMayCallBackAndThrow) {
    TestServer srv;
    ASSERT_TRUE(srv.start());
    std::atomic<HealthChecker*> self{nullptr};
    std::atomic<int> calls{0};
    std::atomic<size_t> seen{0};
    HealthChecker hc([&](const std::string&, const CheckStatus&) {
        ++calls;
        if (HealthChecker* h = self.load()) seen = h->status().size();  // no deadlock
        throw std::runtime_error("handler failure");                    // contained
    });
    self = &hc;
    hc.set_targets({make_target("cb/a", Family::v4, srv.port(), check_cfg(CheckType::tcp, 50ms, 50ms, 1, 1)),
                    make_target("cb/b", Family::v4, srv.port(), check_cfg(CheckType::tcp, 50ms, 50ms, 1, 1))});
    ASSERT_TRUE(wait_until([&] { return calls.load() >= 2; }, 2000ms));
    EXPECT_EQ(seen.load(), 2u);
    // The thread survived the exceptions: it still notices the server going away.
    srv.stop();
    ASSERT_TRUE(wait_until([&] { return calls.load() >= 4; }, 2000ms));
    EXPECT_FALSE(status_of(hc, "cb/a").up);
    EXPECT_FALSE(status_of(hc, "cb/b").up);
    self = nullptr;
}

}  // namespace
