// The dataplane counters contract: one typed structure, one JSON mapping used by both sides.
#include <gtest/gtest.h>

#include "fulcrum/dp_counters.hpp"

namespace fulcrum {
namespace {

DataplaneCounters sample() {
    DataplaneCounters c;
    c.generation = 7;
    c.rx = 100;
    c.forwarded = 90;
    c.replied = 3;
    c.to_kernel = 4;
    c.dropped = 3;
    c.too_big_replies = 1;
    c.tsc_hz = 2096000000;
    c.drops = {{"no_service", 2}, {"tx_full", 1}};
    QueueCounters q;
    q.queue = 1;
    q.lcore = 3;
    q.rx = 100;
    q.busy_polls = 5;
    q.busy_cycles = 123456789012ull;
    c.queues.push_back(q);
    ConnTableCounters t;
    t.queue = 1;
    t.capacity = 1024;
    t.entries = 10;
    c.conntables.push_back(t);
    PortCounters p;
    p.name = "net_af_packet0";
    p.role = "uplink";
    p.link_up = true;
    p.rx_nombuf = 9;
    c.ports.push_back(p);
    ServiceTraffic s;
    s.id = 2;
    s.name = "web";
    s.vip = "198.18.0.100";
    s.port = 80;
    s.protocol = "tcp";
    s.packets = 50;
    c.services.push_back(s);
    ServerTraffic v;
    v.slot = 4;
    v.service = "web";
    v.address = "2001:db8::11";
    v.port = 8080;
    v.in_rotation = true;
    v.active_connections = 12;
    c.servers.push_back(v);
    return c;
}

TEST(DpCounters, RoundTripKeepsEveryField) {
    const DataplaneCounters c = sample();
    const nlohmann::json j = c;
    const auto back = j.get<DataplaneCounters>();
    EXPECT_EQ(nlohmann::json(back), j);
    EXPECT_EQ(back.drops.at("no_service"), 2u);
    EXPECT_EQ(back.queues.at(0).busy_polls, 5u);
    EXPECT_EQ(back.queues.at(0).busy_cycles, 123456789012ull);
    EXPECT_EQ(back.tsc_hz, 2096000000u);
    EXPECT_EQ(back.ports.at(0).rx_nombuf, 9u);
    EXPECT_TRUE(back.servers.at(0).in_rotation);
}

TEST(DpCounters, JsonKeysAreTheDocumentedNames) {
    const nlohmann::json j = sample();
    // Names read by scripts, tests and operators (docs/control-protocol.md).
    for (const char* k : {"generation", "rx", "forwarded", "replied", "to_kernel", "dropped", "too_big_replies", "drops",
                          "queues", "conntables", "ports", "services", "servers"})
        EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_EQ(j["servers"][0]["active_connections"], 12);
    EXPECT_EQ(j["queues"][0]["lcore"], 3);
    EXPECT_EQ(j["ports"][0]["role"], "uplink");
}

TEST(DpCounters, MissingFieldsReadAsZeroAndWrongTypesThrow) {
    const auto c = nlohmann::json::parse(R"({"rx": 5, "servers": [{"service": "web", "address": "198.18.0.11", "port": 80}]})")
                       .get<DataplaneCounters>();
    EXPECT_EQ(c.rx, 5u);
    EXPECT_EQ(c.forwarded, 0u);
    ASSERT_EQ(c.servers.size(), 1u);
    EXPECT_EQ(c.servers[0].packets, 0u);
    EXPECT_THROW(nlohmann::json::parse(R"({"rx": "many"})").get<DataplaneCounters>(), nlohmann::json::exception);
}

TEST(DpCounters, ServerKeysMatchFulcrumdsServerKeys) {
    const DataplaneCounters c = sample();
    EXPECT_EQ(DataplaneCounters::server_key(c.servers[0]), "web/[2001:db8::11]:8080");
    EXPECT_NE(c.find_server("web/[2001:db8::11]:8080"), nullptr);
    EXPECT_EQ(c.find_server("web/2001:db8::11:8080"), nullptr);
    ServerTraffic v4;
    v4.service = "dns";
    v4.address = "198.18.0.12";
    v4.port = 53;
    EXPECT_EQ(DataplaneCounters::server_key(v4), "dns/198.18.0.12:53");
    EXPECT_NE(c.find_service("web"), nullptr);
    EXPECT_EQ(c.find_service("db"), nullptr);
}

}  // namespace
}  // namespace fulcrum
