// The connections and lookup admin requests: endpoints, filters, pages and their refusals.
#include <gtest/gtest.h>

#include "fulcrum/control/admin_request.hpp"

namespace fulcrum::control {
namespace {

using nlohmann::json;

TEST(AdminInspect, Endpoints) {
    auto a = parse_endpoint("198.18.0.1");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->addr, *IpAddr::parse("198.18.0.1"));
    EXPECT_FALSE(a->port);
    auto b = parse_endpoint("198.18.0.1:40000");
    ASSERT_TRUE(b && b->port);
    EXPECT_EQ(*b->port, 40000);
    auto c = parse_endpoint("2001:db8::1");
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->addr.is_v6());
    EXPECT_FALSE(c->port);
    auto d = parse_endpoint("[2001:db8::1]:443");
    ASSERT_TRUE(d && d->port);
    EXPECT_EQ(*d->port, 443);
    for (const char* bad :
         {"", "198.18.0.1:", "198.18.0.1:65536", "198.18.0.1:8x", "[2001:db8::1]",
          "[2001:db8::1]:", "[2001:db8::1", "host:80", "198.18.0.300", ":80", "198.18.0.1:123456"})
        EXPECT_FALSE(parse_endpoint(bad)) << bad;
}

TEST(AdminInspect, ConnectionsTakesFiltersAndAPage) {
    auto r = parse_admin_request(json::parse(
        R"({"command": "connections", "service": "web", "server": "198.18.0.11", "client": "198.18.0.1:40000",
            "limit": 7, "cursor": 14})"));
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->command, AdminCommand::connections);
    EXPECT_EQ(r->service, "web");
    ASSERT_TRUE(r->server_ep && r->client_ep);
    EXPECT_FALSE(r->server_ep->port);
    EXPECT_EQ(*r->client_ep->port, 40000);
    EXPECT_EQ(r->limit, 7u);
    EXPECT_EQ(r->cursor, 14u);
    auto all = parse_admin_request({{"command", "connections"}});
    ASSERT_TRUE(all);
    EXPECT_EQ(all->limit, 100u);
    EXPECT_FALSE(all->server_ep || all->client_ep);

    const std::pair<const char*, const char*> bad[] = {
        {R"({"command": "connections", "limit": 0})",
         "\"limit\" must be an integer from 1 to 10000"},
        {R"({"command": "connections", "limit": "5"})",
         "\"limit\" must be an integer from 1 to 10000"},
        {R"({"command": "connections", "cursor": -2})",
         "\"cursor\" must be the previous reply's next_cursor"},
        {R"({"command": "connections", "server": "s1"})",
         "\"server\" must be ADDRESS, ADDRESS:PORT or [IPV6]:PORT"},
        {R"({"command": "connections", "client": 3})", "\"client\" must be ADDRESS, ADDRESS:PORT or [IPV6]:PORT"},
        {R"({"command": "connections", "vip": "198.18.0.100:80"})", "unknown key \"vip\""},
    };
    for (const auto& [text, want] : bad) {
        auto e = parse_admin_request(json::parse(text));
        ASSERT_FALSE(e) << text;
        EXPECT_NE(e.error().find(want), std::string::npos) << text << " -> " << e.error();
    }
}

TEST(AdminInspect, LookupNeedsAFlow) {
    auto r = parse_admin_request(json::parse(
        R"({"command": "lookup", "client": "198.18.0.1:40000", "vip": "198.18.0.100:53", "proto": "udp"})"));
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->command, AdminCommand::lookup);
    EXPECT_EQ(r->proto, 17);
    EXPECT_EQ(*r->vip_ep->port, 53);
    auto tcp = parse_admin_request(json::parse(
        R"({"command": "lookup", "client": "[2001:db8::7]:1", "vip": "[2001:db8::1]:80"})"));
    ASSERT_TRUE(tcp) << tcp.error();
    EXPECT_EQ(tcp->proto, 6);

    const std::pair<const char*, const char*> bad[] = {
        {R"({"command": "lookup"})", "lookup needs \"client\" and \"vip\" (\"client\" is missing: ADDRESS:PORT"},
        {R"({"command": "lookup", "client": "198.18.0.1", "vip": "198.18.0.100:80"})",
         "lookup: \"client\" must be ADDRESS:PORT or [IPV6]:PORT, not '198.18.0.1'"},
        {R"({"command": "lookup", "client": "198.18.0.1:1", "vip": "198.18.0.100"})",
         "lookup: \"vip\" must be ADDRESS:PORT or [IPV6]:PORT, not '198.18.0.100'"},
        {R"({"command": "lookup", "client": "198.18.0.1:1", "vip": "[2001:db8::1]:80"})",
         "same address family"},
        {R"({"command": "lookup", "client": "198.18.0.1:1", "vip": "198.18.0.100:80", "proto": "icmp"})",
         "\"proto\" must be \"tcp\" or \"udp\" (or absent: tcp)"},
        {R"({"command": "lookup", "client": "198.18.0.1:1", "vip": "198.18.0.100:80", "limit": 3})",
         "unknown key \"limit\""},
    };
    for (const auto& [text, want] : bad) {
        auto e = parse_admin_request(json::parse(text));
        ASSERT_FALSE(e) << text;
        EXPECT_NE(e.error().find(want), std::string::npos) << text << " -> " << e.error();
    }
}

}  // namespace
}  // namespace fulcrum::control
