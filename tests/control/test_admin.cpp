#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "fds.hpp"
#include "http_scrape.hpp"
#include "fulcrum/control/admin.hpp"

using namespace fulcrum::control;
using nlohmann::json;

namespace {
std::string temp_socket() {
    return "/tmp/fulcrum-admin-test-" + std::to_string(getpid()) + "-" +
           std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()) % 10000) + ".sock";
}

// Sends raw bytes, returns the first line of the reply.
std::string raw_exchange(const std::string& path, const std::string& data) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path.c_str());
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        close(fd);
        return "connect failed";
    }
    (void)!send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    std::string in;
    char buf[4096];
    while (in.find('\n') == std::string::npos) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    return in.substr(0, in.find('\n'));
}
}  // namespace

TEST(Admin, RequestReplyAndErrors) {
    const std::string path = temp_socket();
    AdminServer srv(path, [](const json& r) -> json {
        if (r.value("command", "") == "boom") throw std::runtime_error("exploded");
        return {{"ok", true}, {"echo", r}};
    });
    struct stat st{};
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    auto r = admin_request(path, {{"command", "status"}});
    ASSERT_TRUE(r) << r.error();
    EXPECT_TRUE(r.value()["ok"].get<bool>());
    EXPECT_EQ(r.value()["echo"]["command"], "status");

    auto bad = json::parse(raw_exchange(path, "{not json\n"));
    EXPECT_FALSE(bad["ok"].get<bool>());
    EXPECT_NE(bad["error"].get<std::string>().find("not valid JSON"), std::string::npos);

    auto arr = json::parse(raw_exchange(path, "[1,2]\n"));
    EXPECT_FALSE(arr["ok"].get<bool>());
    EXPECT_NE(arr["error"].get<std::string>().find("JSON object"), std::string::npos);

    auto boom = admin_request(path, {{"command", "boom"}});
    ASSERT_TRUE(boom);
    EXPECT_FALSE(boom.value()["ok"].get<bool>());
    EXPECT_NE(boom.value()["error"].get<std::string>().find("exploded"), std::string::npos);

    // Many requests on one connection, pipelined.
    std::string two = raw_exchange(path, "{\"command\":\"a\"}\n{\"command\":\"b\"}\n");
    EXPECT_EQ(json::parse(two)["echo"]["command"], "a");

    // A second server on the same path is refused; the first keeps working.
    EXPECT_THROW(AdminServer(path, [](const json&) { return json{}; }), std::runtime_error);
    EXPECT_TRUE(admin_request(path, {{"command", "x"}}));
}

TEST(Admin, ClientErrorsAreClear) {
    auto r = admin_request("/tmp/fulcrum-no-such-socket.sock", {{"command", "status"}});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("is fulcrumd running?"), std::string::npos);
}

TEST(Admin, StaleSocketFileIsReplaced) {
    const std::string path = temp_socket() + "2";
    {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strcpy(a.sun_path, path.c_str());
        ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        close(fd);  // leaves a socket file nobody listens on
    }
    AdminServer srv(path, [](const json&) { return json{{"ok", true}}; });
    EXPECT_TRUE(admin_request(path, {{"command", "status"}}));
}

TEST(Admin, InvalidUtf8GetsAnErrorAndTheServerStays) {
    const std::string path = temp_socket() + "3";
    AdminServer srv(path, [](const json& r) { return json{{"ok", true}, {"echo", r}}; });
    const std::string reply = raw_exchange(path, std::string("{\"command\":\"\xff\"}\n"));
    ASSERT_FALSE(reply.empty());
    EXPECT_FALSE(json::parse(reply)["ok"].get<bool>());
    // A handler reply holding invalid UTF-8 is sent with replacement characters.
    const std::string bad = std::string("\xfe\xff");
    AdminServer srv2(path + "b", [bad](const json&) { return json{{"ok", true}, {"text", bad}}; });
    auto r = admin_request(path + "b", {{"command", "x"}});
    ASSERT_TRUE(r) << r.error();
    EXPECT_TRUE(r.value()["ok"].get<bool>());
    EXPECT_TRUE(admin_request(path, {{"command", "status"}}));
}

// ---- abuse: no local client can lock fulcrumctl out ------------------------------------

namespace {
int connect_raw(const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path.c_str());
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// Reads until `fd` is closed by the server (true) or `timeout` passes (false); the bytes
// read are appended to `got`.
bool wait_closed(int fd, std::chrono::milliseconds timeout, std::string* got = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[65536];
    while (std::chrono::steady_clock::now() < deadline) {
        timeval tv{0, 100000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0) return true;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;  // reset
        if (n > 0 && got) got->append(buf, static_cast<size_t>(n));
    }
    return false;
}

uint64_t refused(const AdminServer& s, fulcrum::Refusal r) {
    return s.stats().refused[static_cast<size_t>(r)].load();
}

// Waits (bounded) until `pred` holds.
template <class P>
bool eventually(P pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}

fulcrum::ServerLimits small_limits() {
    auto l = AdminServer::default_limits();
    l.max_clients = 4;
    l.evict_min_idle = std::chrono::milliseconds(0);
    return l;
}

}  // namespace

TEST(AdminAbuse, IdleClientsBeyondTheLimitDoNotLockOutARequest) {
    const std::string path = temp_socket() + "i";
    AdminServer srv(path, [](const json& r) { return json{{"ok", true}, {"echo", r}}; }, small_limits());
    Fds idle;
    for (int i = 0; i < 12; ++i) {  // three times the slots, idle
        idle.fds.push_back(connect_raw(path));
        ASSERT_GE(idle.fds.back(), 0);
    }
    ASSERT_TRUE(eventually([&] { return srv.stats().accepted.load() >= 4; }));
    // A fulcrumctl request gets its answer: idle clients make room for it.
    for (int k = 0; k < 3; ++k) {
        auto r = admin_request(path, {{"command", "status"}}, std::chrono::seconds(5));
        ASSERT_TRUE(r) << r.error();
        EXPECT_EQ(r.value()["echo"]["command"], "status");
    }
    EXPECT_GE(refused(srv, fulcrum::Refusal::evicted_idle) + refused(srv, fulcrum::Refusal::too_many_clients), 3u);
    EXPECT_LE(srv.stats().clients.load(), 4u);
}

TEST(AdminAbuse, IdleClientsAreClosedAfterTheIdleTimeout) {
    const std::string path = temp_socket() + "t";
    auto l = small_limits();
    l.idle_timeout = std::chrono::milliseconds(300);
    AdminServer srv(path, [](const json&) { return json{{"ok", true}}; }, l);
    Fds c;
    c.fds.push_back(connect_raw(path));
    c.fds.push_back(connect_raw(path));
    (void)!send(c.fds[1], "{\"comm", 6, MSG_NOSIGNAL);  // a partial line is not activity
    std::string got;
    EXPECT_TRUE(wait_closed(c.fds[0], std::chrono::seconds(5), &got));
    EXPECT_NE(got.find("idle timeout"), std::string::npos) << got;
    EXPECT_TRUE(wait_closed(c.fds[1], std::chrono::seconds(5)));
    EXPECT_EQ(refused(srv, fulcrum::Refusal::idle_timeout), 2u);
    EXPECT_TRUE(admin_request(path, {{"command", "x"}}));
}

TEST(AdminAbuse, PartialLinesAreAssembled) {
    const std::string path = temp_socket() + "p";
    AdminServer srv(path, [](const json& r) { return json{{"ok", true}, {"echo", r}}; });
    Fds c;
    c.fds.push_back(connect_raw(path));
    const std::string req = "{\"command\": \"servers\", \"service\": \"web\"}\n";
    for (char ch : req) ASSERT_EQ(send(c.fds[0], &ch, 1, MSG_NOSIGNAL), 1);
    std::string in;
    char buf[4096];
    while (in.find('\n') == std::string::npos) {
        const ssize_t n = recv(c.fds[0], buf, sizeof buf, 0);
        ASSERT_GT(n, 0);
        in.append(buf, static_cast<size_t>(n));
    }
    EXPECT_EQ(json::parse(in.substr(0, in.find('\n')))["echo"]["service"], "web");
}

TEST(AdminAbuse, OverLongLineIsRefusedAndItsTailNeverExecuted) {
    const std::string path = temp_socket() + "l";
    std::atomic<int> executed{0};
    AdminServer srv(path, [&](const json& r) {
        if (r.value("command", "") == "tail") executed.fetch_add(1);
        return json{{"ok", true}};
    });
    Fds c;
    c.fds.push_back(connect_raw(path));
    // 1 MiB + 100 bytes of filler without a newline, then a valid request: the old server
    // cleared the first MiB and executed the rest as a request.
    std::string data(size_t{1} << 20, ' ');
    data += std::string(100, ' ') + "{\"command\": \"tail\"}\n";
    const int fd = c.fds[0];
    std::thread writer([fd, data] {
        size_t off = 0;
        while (off < data.size()) {
            const ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
            if (n <= 0) return;  // the server closed: expected
            off += static_cast<size_t>(n);
        }
    });
    std::string got;
    EXPECT_TRUE(wait_closed(fd, std::chrono::seconds(10), &got));
    writer.join();
    ASSERT_FALSE(got.empty());
    const auto reply = json::parse(got.substr(0, got.find('\n')));
    EXPECT_FALSE(reply["ok"].get<bool>());
    EXPECT_NE(reply["error"].get<std::string>().find("longer than"), std::string::npos) << got;
    EXPECT_EQ(got.find('\n'), got.size() - 1) << "exactly one reply line";
    EXPECT_EQ(executed.load(), 0);
    EXPECT_EQ(refused(srv, fulcrum::Refusal::request_too_long), 1u);
    EXPECT_TRUE(admin_request(path, {{"command", "status"}}));
}

TEST(AdminAbuse, NonReadingClientsStayBoundedAndOthersAreServed) {
    const std::string path = temp_socket() + "n";
    auto l = AdminServer::default_limits();
    l.max_output_total = 2u << 20;
    const std::string big(256 << 10, 'x');  // a 256 KiB reply
    std::atomic<uint64_t> served{0};
    AdminServer srv(path, [&](const json& r) {
        served.fetch_add(1);
        if (r.value("command", "") == "big") return json{{"ok", true}, {"data", big}};
        return json{{"ok", true}};
    }, l);
    // 20 clients pipeline 200 "big" requests each and never read: 1000 MiB if all answered;
    // the bound lets 8 of those replies wait at once.
    Fds abusers;
    std::string reqs;
    for (int i = 0; i < 200; ++i) reqs += "{\"command\": \"big\"}\n";
    for (int i = 0; i < 20; ++i) {
        const int fd = connect_raw(path);
        ASSERT_GE(fd, 0);
        timeval tv{0, 200000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        (void)!send(fd, reqs.data(), reqs.size(), MSG_NOSIGNAL);  // may block partially: the server stops reading
        abusers.fds.push_back(fd);
    }
    // Every abuser got at most one reply queued beyond the pause threshold, and the total of
    // big replies stays under the bound (a refused one is replaced by a short "busy" error).
    ASSERT_TRUE(eventually([&] { return served.load() >= 20; }));
    const uint64_t after = served.load();
    EXPECT_LE(after, 20u * 2) << "requests are not taken from clients that do not read";
    EXPECT_LE(srv.stats().queued_output.load(), l.max_output_total + big.size() + 1024);
    EXPECT_GE(refused(srv, fulcrum::Refusal::busy_output), 1u);
    // fulcrumctl is still answered promptly.
    const auto t0 = std::chrono::steady_clock::now();
    auto r = admin_request(path, {{"command", "status"}}, std::chrono::seconds(5));
    ASSERT_TRUE(r) << r.error();
    EXPECT_TRUE(r.value()["ok"].get<bool>());
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
    // A busy refusal is a clear error reply, not silence.
    std::string got;
    wait_closed(abusers.fds[19], std::chrono::milliseconds(300), &got);
    EXPECT_TRUE(got.find("\"data\"") != std::string::npos || got.find("busy") != std::string::npos) << got.substr(0, 200);
}

TEST(AdminAbuse, ClientOverItsOwnOutputBoundIsDisconnected) {
    const std::string path = temp_socket() + "o";
    auto l = AdminServer::default_limits();
    l.max_output_client = 1 << 20;
    const std::string big(2 << 20, 'y');
    AdminServer srv(path, [&](const json&) { return json{{"ok", true}, {"data", big}}; }, l);
    Fds c;
    c.fds.push_back(connect_raw(path));
    (void)!send(c.fds[0], "{}\n", 3, MSG_NOSIGNAL);
    ASSERT_TRUE(eventually([&] { return refused(srv, fulcrum::Refusal::output_overflow) == 1; }));
    EXPECT_TRUE(wait_closed(c.fds[0], std::chrono::seconds(5)));
}

TEST(AdminAbuse, FulcrumctlRequestAnsweredWhileAbusersAreConnected) {
    const std::string path = temp_socket() + "a";
    auto l = AdminServer::default_limits();
    l.evict_min_idle = std::chrono::milliseconds(0);  // the default 1 s would need the test to wait
    AdminServer srv(path, [](const json& r) { return json{{"ok", true}, {"echo", r}}; }, l);
    Fds abusers;
    // Fill every slot: idle, partial lines, non-readers with pipelined requests.
    std::string reqs;
    for (int i = 0; i < 5000; ++i) reqs += "{\"command\": \"status\"}\n";
    for (int i = 0; i < 32; ++i) {
        const int fd = connect_raw(path);
        ASSERT_GE(fd, 0);
        timeval tv{0, 100000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (i % 3 == 1) (void)!send(fd, "{\"command\":", 11, MSG_NOSIGNAL);
        if (i % 3 == 2) (void)!send(fd, reqs.data(), reqs.size(), MSG_NOSIGNAL);
        abusers.fds.push_back(fd);
    }
    ASSERT_TRUE(eventually([&] { return srv.stats().accepted.load() >= 32; }));
    const auto t0 = std::chrono::steady_clock::now();
    auto r = admin_request(path, {{"command", "servers"}}, std::chrono::seconds(5));
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r.value()["echo"]["command"], "servers");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
    EXPECT_EQ(refused(srv, fulcrum::Refusal::evicted_idle), 1u);
}

// A state change is answered later (once the dataplane runs it): other clients are served
// meanwhile, and the waiting client's next request is answered after it, in order.
TEST(AdminAsync, DeferredReplyDoesNotBlockOtherClientsAndKeepsOrder) {
    const std::string path = temp_socket();
    std::mutex mu;
    std::vector<AdminServer::Reply> parked;
    AdminServer srv(path, AdminServer::AsyncHandler([&](const nlohmann::json& req, AdminServer::Reply reply) {
                        if (req["command"] == "slow") {
                            std::lock_guard lk(mu);
                            parked.push_back(std::move(reply));
                            return;
                        }
                        reply({{"ok", true}, {"command", req["command"]}});
                    }));
    const int waiting = connect_raw(path);
    ASSERT_GE(waiting, 0);
    const std::string two = "{\"command\": \"slow\"}\n{\"command\": \"after\"}\n";
    ASSERT_EQ(send(waiting, two.data(), two.size(), MSG_NOSIGNAL), static_cast<ssize_t>(two.size()));
    ASSERT_TRUE(eventually([&] {
        std::lock_guard lk(mu);
        return parked.size() == 1;
    }));
    // Another client is answered while the first waits.
    EXPECT_EQ(nlohmann::json::parse(raw_exchange(path, "{\"command\": \"status\"}\n"))["command"], "status");
    // Nothing has reached the waiting client yet: its second request waits behind the first.
    char buf[256];
    timeval tv{0, 200000};
    setsockopt(waiting, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    EXPECT_LT(recv(waiting, buf, sizeof buf, 0), 0);
    {
        std::lock_guard lk(mu);
        EXPECT_EQ(parked.size(), 1u);  // "after" not handled before "slow" is answered
    }
    // Answer from another thread, as fulcrumd's main loop does.
    std::thread([&] {
        std::lock_guard lk(mu);
        parked[0]({{"ok", true}, {"command", "slow"}, {"generation", 7}});
    }).join();
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::count(got.begin(), got.end(), '\n') < 2 && std::chrono::steady_clock::now() < deadline) {
        const ssize_t n = recv(waiting, buf, sizeof buf, 0);
        if (n > 0) got.append(buf, static_cast<size_t>(n));
    }
    close(waiting);
    ASSERT_EQ(std::count(got.begin(), got.end(), '\n'), 2) << got;
    const auto first = nlohmann::json::parse(got.substr(0, got.find('\n')));
    const auto second = nlohmann::json::parse(got.substr(got.find('\n') + 1));
    EXPECT_EQ(first["command"], "slow");
    EXPECT_EQ(first["generation"], 7);
    EXPECT_EQ(second["command"], "after");
}

// ---- counters --reset: the views subtract a baseline; the sources and /metrics never reset ----

#include "fulcrum/control/admin_counters.hpp"
#include "fulcrum/control/metrics.hpp"

namespace {

fulcrum::DataplaneCounters traffic(uint64_t web_packets, uint64_t dns_packets) {
    fulcrum::DataplaneCounters c;
    fulcrum::ServiceTraffic web, dns;
    web.name = "web";
    web.packets = web_packets;
    web.bytes = web_packets * 100;
    web.new_connections = web_packets / 10;
    dns.name = "dns";
    dns.packets = dns_packets;
    c.services = {web, dns};
    fulcrum::ServerTraffic s;
    s.service = "web";
    s.address = "198.18.0.11";
    s.port = 80;
    s.packets = web_packets;
    s.active_connections = 3;  // a gauge: never subtracted
    c.servers = {s};
    return c;
}

// The copy a view prints: the counters since the last reset.
fulcrum::DataplaneCounters shown(CounterBaseline& b, const fulcrum::DataplaneCounters& source) {
    fulcrum::DataplaneCounters c = source;
    visit_counters(c, b.subtract());
    return c;
}

// The value of one exposition line starting with `series` (e.g. `x{service="web"}`), or -1.
double metric(const std::string& text, const std::string& series) {
    const size_t at = text.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + series.size() + 2));
}

}  // namespace

TEST(CountersReset, ViewsSubtractTheResetValuesAndTheSourceStays) {
    CounterBaseline b;
    const auto t0 = CounterBaseline::Clock::now();
    fulcrum::DataplaneCounters src = traffic(100, 40);
    EXPECT_EQ(shown(b, src).services[0].packets, 100u);  // never reset: the values as they are
    EXPECT_FALSE(b.reset_ago_ms(""));
    EXPECT_TRUE(b.reset_json("web").is_null());
    EXPECT_TRUE(b.describe(t0)["last_reset"].is_null());

    const auto r = b.reset([&](const CounterVisitor& take) { visit_counters(src, take); }, "", t0);
    EXPECT_EQ(r.counters, 9u);  // 2 services x 3 + 1 server x 3
    EXPECT_EQ(r.by_source.at("dataplane"), 9u);
    auto v = shown(b, src);
    EXPECT_EQ(v.services[0].packets, 0u);
    EXPECT_EQ(v.services[0].bytes, 0u);
    EXPECT_EQ(v.services[1].packets, 0u);
    EXPECT_EQ(v.servers[0].packets, 0u);
    EXPECT_EQ(v.servers[0].active_connections, 3u);
    EXPECT_EQ(src.services[0].packets, 100u);  // the source is untouched

    src = traffic(107, 41);
    v = shown(b, src);
    EXPECT_EQ(v.services[0].packets, 7u);
    EXPECT_EQ(v.services[0].bytes, 700u);
    EXPECT_EQ(v.services[1].packets, 1u);
    EXPECT_EQ(v.servers[0].packets, 7u);
    EXPECT_EQ(*b.reset_ago_ms("web", t0 + std::chrono::milliseconds(1500)), 1500);
    const json d = b.describe(t0 + std::chrono::seconds(2));
    EXPECT_EQ(d["last_reset"]["scope"], "all");
    EXPECT_EQ(d["last_reset"]["ago_ms"], 2000);
    EXPECT_EQ(d["all"]["ago_ms"], 2000);
    EXPECT_EQ(d["baselines"], 9);
    EXPECT_TRUE(d["restarted"].empty());
    EXPECT_EQ(d["last_reset"]["at"].get<std::string>().size(), 20u);  // 2026-12-02T05:50:00Z
}

TEST(CountersReset, AServiceScopeResetsOnlyThatService) {
    CounterBaseline b;
    const auto t0 = CounterBaseline::Clock::now();
    fulcrum::DataplaneCounters src = traffic(100, 40);
    Model model;
    ServerModel sm;
    sm.service = "dns";
    sm.key = "dns/198.18.0.21:53";
    sm.checks_ok = 50;
    model.servers[sm.key] = sm;
    FulcrumdCounters fc{5, 1, 2, 0};
    const auto visit_all = [&](const CounterVisitor& take) {
        visit_counters(src, take);
        visit_counters(model, take);
        visit_counters(fc, take);
    };
    const auto r = b.reset(visit_all, "web", t0);
    EXPECT_EQ(r.counters, 6u);  // web's service and server traffic; not dns, not fulcrumd's own
    auto v = shown(b, src);
    EXPECT_EQ(v.services[0].packets, 0u);
    EXPECT_EQ(v.services[1].packets, 40u);
    FulcrumdCounters f = fc;
    visit_counters(f, b.subtract());
    EXPECT_EQ(f.publishes, 5u);
    EXPECT_TRUE(b.reset_ago_ms("web", t0));
    EXPECT_FALSE(b.reset_ago_ms("dns", t0));
    EXPECT_FALSE(b.reset_ago_ms("", t0));
    EXPECT_EQ(b.describe(t0)["last_reset"]["service"], "web");

    // Then all: every source, dns's health checks included; the service's own reset is
    // superseded.
    const auto all = b.reset(visit_all, "", t0 + std::chrono::seconds(1));
    EXPECT_EQ(all.counters, 9u + 2u + 4u);
    EXPECT_EQ(all.by_source.at("health"), 2u);
    Model m = model;
    m.servers.at(sm.key).checks_ok = 53;
    visit_counters(m, b.subtract());
    EXPECT_EQ(m.servers.at(sm.key).checks_ok, 3u);
    EXPECT_EQ(*b.reset_ago_ms("web", t0 + std::chrono::seconds(3)), 2000);
    EXPECT_TRUE(b.describe(t0)["services"].empty());
}

TEST(CountersReset, ACounterThatRestartedFromZeroIsClampedAndReported) {
    CounterBaseline b;
    const auto t0 = CounterBaseline::Clock::now();
    fulcrum::DataplaneCounters src = traffic(100, 40);
    b.reset([&](const CounterVisitor& take) { visit_counters(src, take); }, "", t0);
    // The dataplane restarted (its identity was not seen change): it counts from zero.
    src = traffic(30, 2);
    auto v = shown(b, src);
    EXPECT_EQ(v.services[0].packets, 30u);  // never negative (nor wrapped): what it counted since
    EXPECT_EQ(v.services[1].packets, 2u);
    json d = b.describe(t0 + std::chrono::seconds(1));
    ASSERT_TRUE(d["restarted"].contains("dataplane")) << d.dump();
    EXPECT_GE(d["restarted"]["dataplane"]["counters"].get<int>(), 3);
    EXPECT_NE(d["restarted"]["dataplane"]["why"].get<std::string>().find("went below its value at the reset"),
              std::string::npos);
    // It counts on from its new zero.
    src = traffic(35, 2);
    EXPECT_EQ(shown(b, src).services[0].packets, 35u);

    // A new dataplane process seen by its identity: everything it counts is since the reset,
    // even a counter that already went past its old reset value.
    CounterBaseline c;
    src = traffic(100, 40);
    c.observe("dataplane", "pid 100", t0);
    c.reset([&](const CounterVisitor& take) { visit_counters(src, take); }, "", t0);
    c.observe("dataplane", "pid 100", t0);
    src = traffic(150, 45);
    EXPECT_EQ(shown(c, src).services[0].packets, 50u);
    c.observe("dataplane", "pid 200", t0);
    src = traffic(120, 45);
    EXPECT_EQ(shown(c, src).services[0].packets, 120u);
    d = c.describe(t0);
    EXPECT_EQ(d["restarted"]["dataplane"]["counters"], 5);  // those whose reset value was not 0 already
    EXPECT_NE(d["restarted"]["dataplane"]["why"].get<std::string>().find("pid 100, now pid 200"), std::string::npos);
    // Another reset starts the report afresh.
    c.reset([&](const CounterVisitor& take) { visit_counters(src, take); }, "", t0);
    EXPECT_TRUE(c.describe(t0)["restarted"].empty());
}

TEST(CountersReset, PrometheusCountersStayMonotonic) {
    Metrics m("127.0.0.1:0");
    CounterBaseline b;
    fulcrum::DataplaneCounters src = traffic(100, 40);
    MetricsInput in;
    in.dataplane = &src;
    m.update(in);
    const std::string web = "fulcrum_service_packets_total{service=\"web\"}";
    EXPECT_EQ(metric(scrape(m.port()), web), 100);

    b.reset([&](const CounterVisitor& take) { visit_counters(src, take); }, "");
    EXPECT_EQ(shown(b, src).services[0].packets, 0u);
    m.update(in);  // fulcrumd feeds /metrics from the sources, which the reset left as they were
    EXPECT_EQ(metric(scrape(m.port()), web), 100);

    src = traffic(105, 40);
    m.update(in);
    EXPECT_EQ(shown(b, src).services[0].packets, 5u);
    EXPECT_EQ(metric(scrape(m.port()), web), 105);
}

TEST(CountersReset, EveryHostSourceIsVisited) {
    // Each counter a view shows is reset; gauges and identities are not touched.
    HaStatus h;
    h.adverts_sent = 10;
    h.priority = 100;
    h.invalid_by_reason = {{"bad_checksum", 2}};
    SyncPeerStats y;
    y.records_sent = 7;
    y.pending = 3;
    y.refused[0] = 1;
    XdpStatus x;
    x.applies = 4;
    x.program_id = 9;
    x.packets = std::array<uint64_t, kXdpReasonCount>{};
    (*x.packets)[0] = 11;
    CounterBaseline b;
    b.reset(
        [&](const CounterVisitor& take) {
            visit_counters(h, take);
            visit_counters(y, take);
            visit_counters(x, take);
        },
        "");
    const auto sub = b.subtract();
    visit_counters(h, sub);
    visit_counters(y, sub);
    visit_counters(x, sub);
    EXPECT_EQ(h.adverts_sent, 0u);
    EXPECT_EQ(h.invalid_by_reason[0].second, 0u);
    EXPECT_EQ(h.priority, 100);
    EXPECT_EQ(y.records_sent, 0u);
    EXPECT_EQ(y.refused[0], 0u);
    EXPECT_EQ(y.pending, 3u);
    EXPECT_EQ(x.applies, 0u);
    EXPECT_EQ((*x.packets)[0], 0u);
    EXPECT_EQ(x.program_id, 9u);
}
