// The conn_list op's query, filter and paging, and scheduler_choice (fulcrumctl lookup), which
// must name the server a worker actually picks for a new flow.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "frame_buf.hpp"
#include "fulcrum/conn_query.hpp"
#include "fulcrum/forward.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using nlohmann::json;
using test::FrameBuf;
using test::ip;
using test::PacketBuilder;

namespace {

std::vector<uint8_t> body(const char* text) {
    return {text, text + std::strlen(text)};
}

fl_sync_record rec(const std::string& client, uint16_t cport, const std::string& vip, uint16_t port,
                   uint8_t proto, const std::string& server,
                   uint8_t state = FL_SYNC_S_ESTABLISHED) {
    fl_sync_record r{};
    const IpAddr c = ip(client), v = ip(vip), s = ip(server);
    r.family = v.is_v6() ? 6 : 4;
    r.server_family = s.is_v6() ? 6 : 4;
    r.proto = proto;
    r.state = state;
    r.src_port = cport;
    r.dst_port = port;
    r.service_port = port;
    r.server_port = port;
    r.idle_ms = 7;
    std::memcpy(r.src, c.bytes.data(), 16);
    std::memcpy(r.dst, v.bytes.data(), 16);
    std::memcpy(r.server_addr, s.bytes.data(), 16);
    return r;
}

}  // namespace

TEST(ConnQuery, ParsesFiltersAndRefusesWhatItDoesNotKnow) {
    auto d = parse_conn_query({});
    ASSERT_TRUE(d);
    EXPECT_EQ(d->limit, 100u);
    EXPECT_EQ(d->cursor, 0u);
    EXPECT_FALSE(d->vip || d->server || d->client || d->port || d->proto);

    auto q = parse_conn_query(
        body(R"({"limit": 5, "cursor": 10, "vip": "198.18.1.1", "port": 80, "proto": "tcp",
        "server": "2001:db8::2", "server_port": 8080, "client": "198.18.0.7", "client_port": 40000})"));
    ASSERT_TRUE(q) << q.error();
    EXPECT_EQ(q->limit, 5u);
    EXPECT_EQ(q->cursor, 10u);
    EXPECT_EQ(*q->vip, ip("198.18.1.1"));
    EXPECT_EQ(*q->server, ip("2001:db8::2"));
    EXPECT_EQ(*q->client, ip("198.18.0.7"));
    EXPECT_EQ(*q->port, 80);
    EXPECT_EQ(*q->server_port, 8080);
    EXPECT_EQ(*q->client_port, 40000);
    EXPECT_EQ(*q->proto, 6);

    const std::pair<const char*, const char*> bad[] = {
        {"[1]", "not a JSON object"},
        {"{", "not a JSON object"},
        {R"({"limit": 0})", "\"limit\" must be an integer from 1 to 10000"},
        {R"({"limit": 10001})", "\"limit\" must be an integer from 1 to 10000"},
        {R"({"cursor": -1})", "\"cursor\" must be a non-negative integer"},
        {R"({"vip": "198.18.1.300"})", "\"vip\" must be an IPv4 or IPv6 address"},
        {R"({"client": 5})", "\"client\" must be an IPv4 or IPv6 address"},
        {R"({"port": 65536})", "\"port\" must be a port"},
        {R"({"proto": "icmp"})", "\"proto\" must be \"tcp\" or \"udp\""},
        {R"({"sever": "198.18.2.1"})", "unknown key \"sever\""},
    };
    for (const auto& [text, want] : bad) {
        auto r = parse_conn_query(body(text));
        ASSERT_FALSE(r) << text;
        EXPECT_NE(r.error().find(want), std::string::npos) << text << " -> " << r.error();
    }
}

TEST(ConnQuery, FiltersAndPages) {
    std::vector<fl_sync_record> recs;
    for (uint16_t p = 1000; p < 1010; ++p)
        recs.push_back(rec("198.18.0.7", p, "198.18.1.1", 80, 6, "198.18.2.1"));
    for (uint16_t p = 2000; p < 2005; ++p)
        recs.push_back(rec("198.18.0.8", p, "198.18.1.1", 80, 6, "198.18.2.2"));
    recs.push_back(rec("198.18.0.8", 3000, "198.18.1.1", 53, 17, "198.18.2.9"));
    recs.push_back(
        rec("2001:db8::7", 4000, "2001:db8::1", 80, 6, "2001:db8::2", FL_SYNC_S_CLOSING));
    fl_sync_record broken = recs[0];
    broken.family = 5;  // not a family: skipped, counted
    recs.push_back(broken);

    ConnQuery all;
    all.limit = 100;
    json r = conn_list_reply(recs, all);
    EXPECT_EQ(r["total"], 17);
    EXPECT_EQ(r["skipped"], 1);
    EXPECT_TRUE(r["next_cursor"].is_null());
    ASSERT_EQ(r["entries"].size(), 17u);
    EXPECT_EQ(r["entries"][0], (json{{"client", "198.18.0.7"},
                                     {"client_port", 1000},
                                     {"vip", "198.18.1.1"},
                                     {"port", 80},
                                     {"proto", "tcp"},
                                     {"state", "established"},
                                     {"server", "198.18.2.1"},
                                     {"server_port", 80},
                                     {"idle_ms", 7}}));
    EXPECT_EQ(r["entries"][15]["state"], "udp");
    EXPECT_EQ(r["entries"][16]["state"], "closing");
    EXPECT_EQ(r["entries"][16]["client"], "2001:db8::7");

    ConnQuery by_server;
    by_server.server = ip("198.18.2.2");
    EXPECT_EQ(conn_list_reply(recs, by_server)["total"], 5);
    ConnQuery by_client;
    by_client.client = ip("198.18.0.8");
    by_client.proto = 17;
    json u = conn_list_reply(recs, by_client);
    ASSERT_EQ(u["total"], 1);
    EXPECT_EQ(u["entries"][0]["client_port"], 3000);
    ConnQuery by_service;
    by_service.vip = ip("198.18.1.1");
    by_service.port = 80;
    by_service.proto = 6;
    EXPECT_EQ(conn_list_reply(recs, by_service)["total"], 15);
    ConnQuery exact;
    exact.client = ip("198.18.0.7");
    exact.client_port = 1004;
    json e = conn_list_reply(recs, exact);
    ASSERT_EQ(e["total"], 1);
    EXPECT_EQ(e["entries"][0]["client_port"], 1004);

    // Pages of 4 walk every matching entry once.
    ConnQuery page = by_service;
    page.limit = 4;
    std::vector<int> ports;
    for (int i = 0; i < 10; ++i) {
        json p = conn_list_reply(recs, page);
        EXPECT_EQ(p["total"], 15);
        EXPECT_LE(p["entries"].size(), 4u);
        for (const auto& x : p["entries"]) ports.push_back(x["client_port"].get<int>());
        if (p["next_cursor"].is_null()) break;
        page.cursor = p["next_cursor"].get<uint64_t>();
    }
    ASSERT_EQ(ports.size(), 15u);
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(ports[i], 1000 + static_cast<int>(i));
    page.cursor = 100;  // past the end: an empty last page
    json past = conn_list_reply(recs, page);
    EXPECT_TRUE(past["entries"].empty());
    EXPECT_TRUE(past["next_cursor"].is_null());
}

namespace {

ServerSpec server(uint32_t slot, const std::string& addr, uint32_t weight = 1) {
    ServerSpec s;
    s.slot = slot;
    s.addr = ip(addr);
    s.mac = MacAddr{{0x02, 0, 0, 0, 0x10, static_cast<uint8_t>(slot)}};
    s.weight = weight;
    return s;
}

SnapshotSpec spec() {
    SnapshotSpec sp;
    sp.hash_seed = 4321;
    ServiceSpec web;
    web.id = 1;
    web.name = "web";
    web.vip = ip("198.18.1.1");
    web.port = 80;
    web.proto = FL_PROTO_TCP;
    web.table_size = 4099;
    web.servers = {server(0, "198.18.2.1"), server(1, "198.18.2.2"), server(2, "198.18.2.3", 3)};
    sp.services.push_back(web);
    ServiceSpec dns = web;
    dns.id = 2;
    dns.name = "dns";
    dns.port = 53;
    dns.proto = FL_PROTO_UDP;
    dns.scheduler = Scheduler::wrr;
    dns.servers = {server(3, "198.18.2.9", 2)};
    sp.services.push_back(dns);
    return sp;
}

}  // namespace

TEST(SchedulerChoice, NamesTheServerAWorkerPicks) {
    auto ls = LoadedSnapshot::load(build_snapshot(spec()), 1);
    ASSERT_TRUE(ls) << ls.error();
    WorkerConfig c;
    c.own_mac = MacAddr{{0x02, 0, 0, 0, 0, 0xaa}};
    c.conn_capacity = 1 << 12;
    c.max_servers = 64;
    c.max_services = 8;
    Worker w(c);
    std::set<uint32_t> seen;
    for (uint16_t sport = 30000; sport < 30200; ++sport) {
        PacketBuilder b;
        b.from("198.18.0.7", sport).to("198.18.1.1", 80).tcp(tcpflag::kSyn);
        FrameBuf fb(b.build());
        ASSERT_EQ(w.process(fb.f, ls.value().get(), 1000).action, Action::forward);
        const uint32_t picked = fb.f.data[5];  // the destination MAC ends in the slot
        const json choice =
            scheduler_choice(ls.value()->view(), ip("198.18.0.7"), sport, ip("198.18.1.1"), 80, 6);
        ASSERT_EQ(choice["service"], "web");
        ASSERT_EQ(choice["scheduler"], "maglev");
        ASSERT_EQ(choice["slot"], picked) << "source port " << sport << ": " << choice.dump();
        EXPECT_EQ(choice["server"], "198.18.2." + std::to_string(picked + 1));
        EXPECT_EQ(choice["server_has_mac"], true);
        seen.insert(picked);
    }
    EXPECT_EQ(seen.size(), 3u);  // the check covered every server

    const json none =
        scheduler_choice(ls.value()->view(), ip("198.18.0.7"), 1, ip("198.18.1.1"), 443, 6);
    EXPECT_TRUE(none["service"].is_null());
    EXPECT_NE(none["reason"].get<std::string>().find("no service on 198.18.1.1:443/tcp"),
              std::string::npos);

    const json wrr =
        scheduler_choice(ls.value()->view(), ip("198.18.0.7"), 1, ip("198.18.1.1"), 53, 17);
    EXPECT_EQ(wrr["service"], "dns");
    EXPECT_EQ(wrr["scheduler"], "wrr");
    ASSERT_EQ(wrr["candidates"].size(), 1u);
    EXPECT_EQ(wrr["candidates"][0]["server"], "198.18.2.9");
    EXPECT_EQ(wrr["candidates"][0]["weight"], 2);
}
