// The Prometheus endpoint keeps answering scrapes while other TCP clients hold connections
// open without sending anything, and basic auth (metrics.basic_auth) guards it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "fds.hpp"
#include "http_scrape.hpp"
#include "fulcrum/control/metrics.hpp"
#include "fulcrum/dp_counters.hpp"

using namespace fulcrum::control;


TEST(MetricsEndpoint, ScrapesSucceedWhileIdleClientsHoldConnections) {
    Metrics m("127.0.0.1:0");
    const int port = m.port();
    ASSERT_GT(port, 0);
    MetricsInput in;
    m.update(in);
    // Twice as many idle connections as worker threads, each sending nothing (the old endpoint
    // had 2 workers and civetweb's 30 s request timeout: every scrape waited ~30 s).
    Fds idle;
    for (int i = 0; i < 2 * Metrics::kNumThreads; ++i) {
        idle.fds.push_back(tcp_connect(port));
        ASSERT_GE(idle.fds.back(), 0);
    }
    // A half-sent request on another one.
    idle.fds.push_back(tcp_connect(port));
    ASSERT_EQ(send(idle.fds.back(), "GET /metr", 9, MSG_NOSIGNAL), 9);
    for (int k = 0; k < 3; ++k) {
        const auto t0 = std::chrono::steady_clock::now();
        const std::string r = scrape(port);
        const auto took = std::chrono::steady_clock::now() - t0;
        EXPECT_NE(r.find("200 OK"), std::string::npos) << r.substr(0, 200);
        EXPECT_NE(r.find("fulcrum_dataplane_up 0"), std::string::npos);
        // Within Prometheus's default 10 s scrape timeout, with margin.
        EXPECT_LT(took, std::chrono::milliseconds(3 * Metrics::kRequestTimeoutMs))
            << "scrape " << k;
    }
}

TEST(MetricsEndpoint, XdpFrontPacketsByVerdictAndReason) {
    Metrics m("127.0.0.1:0");
    const int port = m.port();
    ASSERT_GT(port, 0);
    XdpStatus x;
    x.interface = "eth1";
    x.attached = true;
    x.applied = true;
    x.packets = std::array<uint64_t, kXdpReasonCount>{1, 2, 3, 40, 5, 6, 7, 8};
    MetricsInput in;
    in.xdp = &x;
    m.update(in);
    std::string r = scrape(port);
    EXPECT_NE(r.find("fulcrum_xdp_packets_total{reason=\"admitted\",verdict=\"redirect\"} 40"), std::string::npos) << r;
    EXPECT_NE(r.find("fulcrum_xdp_packets_total{reason=\"acl_deny\",verdict=\"drop\"} 5"), std::string::npos) << r;
    EXPECT_NE(r.find("fulcrum_xdp_packets_total{reason=\"non_vip\",verdict=\"pass\"} 2"), std::string::npos) << r;
    EXPECT_NE(r.find("fulcrum_xdp_attached{interface=\"eth1\"} 1"), std::string::npos) << r;
    // A new program (the dataplane restarted) counts from zero: the counters keep rising.
    x.packets = std::array<uint64_t, kXdpReasonCount>{0, 0, 0, 10, 0, 0, 0, 0};
    x.applied = false;
    m.update(in);
    r = scrape(port);
    EXPECT_NE(r.find("fulcrum_xdp_packets_total{reason=\"admitted\",verdict=\"redirect\"} 50"), std::string::npos) << r;
    EXPECT_NE(r.find("fulcrum_xdp_attached{interface=\"eth1\"} 0"), std::string::npos) << r;
}

TEST(MetricsEndpoint, WorkerBusyCyclesAreExportedAsSeconds) {
    Metrics m("127.0.0.1:0");
    const int port = m.port();
    ASSERT_GT(port, 0);
    fulcrum::DataplaneCounters d;
    d.tsc_hz = 2'000'000'000;
    fulcrum::QueueCounters q;
    q.queue = 1;
    q.busy_cycles = 5'000'000'000;  // 2.5 s at 2 GHz
    d.queues.push_back(q);
    MetricsInput in;
    in.dataplane = &d;
    m.update(in);
    std::string r = scrape(port);
    EXPECT_NE(r.find("fulcrum_dataplane_busy_seconds_total{queue=\"1\"} 2.5"), std::string::npos) << r;
    d.queues[0].busy_cycles = 6'000'000'000;
    m.update(in);
    r = scrape(port);
    EXPECT_NE(r.find("fulcrum_dataplane_busy_seconds_total{queue=\"1\"} 3"), std::string::npos) << r;
    // A dataplane restarted counts its cycles from zero: the counter keeps rising.
    d.queues[0].busy_cycles = 1'000'000'000;
    m.update(in);
    r = scrape(port);
    EXPECT_NE(r.find("fulcrum_dataplane_busy_seconds_total{queue=\"1\"} 3.5"), std::string::npos) << r;
}

TEST(MetricsEndpoint, BasicAuth) {
    const std::string pwfile = "/tmp/fulcrum-metrics-pw-" + std::to_string(getpid());
    std::ofstream(pwfile) << "s3cret\n";
    Metrics m("127.0.0.1:0", MetricsAuth{"prom", pwfile});
    std::remove(pwfile.c_str());
    m.update(MetricsInput{});
    const int port = m.port();
    EXPECT_NE(scrape(port).find("401"), std::string::npos);
    // base64("prom:s3cret") = cHJvbTpzM2NyZXQ=, base64("prom:wrong") = cHJvbTp3cm9uZw==
    EXPECT_NE(scrape(port, "Authorization: Basic cHJvbTp3cm9uZw==\r\n").find("401"),
              std::string::npos);
    const std::string ok = scrape(port, "Authorization: Basic cHJvbTpzM2NyZXQ=\r\n");
    EXPECT_NE(ok.find("200 OK"), std::string::npos) << ok.substr(0, 200);
    EXPECT_NE(ok.find("fulcrum_dataplane_up"), std::string::npos);
}

TEST(MetricsEndpoint, BasicAuthErrorsAreClear) {
    try {
        Metrics m("127.0.0.1:0", MetricsAuth{"prom", "/nonexistent/fulcrum-pw"});
        FAIL() << "a missing password file must be refused";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("/nonexistent/fulcrum-pw"), std::string::npos)
            << e.what();
    }
    const std::string empty = "/tmp/fulcrum-metrics-pw-empty-" + std::to_string(getpid());
    std::ofstream(empty) << "\n";
    EXPECT_THROW(Metrics("127.0.0.1:0", MetricsAuth{"prom", empty}), std::runtime_error);
    std::remove(empty.c_str());
}

#include "fulcrum/control/config.hpp"

namespace {
const char* kServices = R"(
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    servers:
      - address: 198.18.0.11
)";
}  // namespace

TEST(MetricsConfig, BasicAuth) {
    const auto cfg = parse_config(
        std::string("metrics:\n  basic_auth: {username: prom, password_file: /etc/fulcrum/pw}\n") +
            kServices,
        "t.yaml");
    EXPECT_EQ(cfg.metrics_username, "prom");
    EXPECT_EQ(cfg.metrics_password_file, "/etc/fulcrum/pw");
    const auto none =
        parse_config(std::string("metrics:\n  listen: 127.0.0.1:9310\n") + kServices, "t.yaml");
    EXPECT_TRUE(none.metrics_username.empty() && none.metrics_password_file.empty());
    auto message = [](const std::string& metrics) {
        try {
            parse_config("metrics:\n" + metrics + kServices, "t.yaml");
        } catch (const ConfigError& e) {
            return e.messages().at(0);
        }
        return std::string("accepted");
    };
    EXPECT_NE(message("  basic_auth: {username: prom}\n").find("missing key 'password_file'"),
              std::string::npos);
    EXPECT_NE(message("  basic_auth: {username: 'a:b', password_file: /x}\n").find("without ':'"),
              std::string::npos);
    EXPECT_NE(message("  basic_auth: {username: prom, password_file: pw.txt}\n")
                  .find("not an absolute path"),
              std::string::npos);
    EXPECT_NE(message("  basic_auth: {user: prom}\n").find("user"), std::string::npos);
}
