#include <gtest/gtest.h>

#include "fulcrum/control/publisher.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using namespace fulcrum::control;

TEST(PublisherIds, StableLowestFirstAndReleasedLast) {
    IdAllocator a(4);
    EXPECT_EQ(a.assign("a"), 0u);
    EXPECT_EQ(a.assign("b"), 1u);
    EXPECT_EQ(a.assign("a"), 0u);  // stable
    a.release("a");
    EXPECT_EQ(a.assign("c"), 2u);  // never-used ids first
    EXPECT_EQ(a.assign("d"), 3u);
    EXPECT_EQ(a.assign("e"), 0u);  // then released ones
    EXPECT_THROW(a.assign("f"), std::runtime_error);
    EXPECT_EQ(*a.find("b"), 1u);
    EXPECT_FALSE(a.find("zzz"));
}

TEST(PublisherIds, AdoptKeepsRunningAssignments) {
    IdAllocator a(100);
    a.adopt("x", 7);
    a.adopt("y", 7);   // taken: ignored
    a.adopt("z", 500); // out of range: ignored
    EXPECT_EQ(*a.find("x"), 7u);
    EXPECT_FALSE(a.find("y"));
    EXPECT_EQ(a.assign("y"), 0u);
    for (int i = 1; i < 7; ++i) a.assign("k" + std::to_string(i));
    EXPECT_EQ(a.assign("after"), 8u);  // skips the adopted 7
}

TEST(PublisherKeys, Format) {
    EXPECT_EQ(server_key("web", test::ip("198.18.0.11"), 80), "web/198.18.0.11:80");
    EXPECT_EQ(server_key("web", test::ip("2001:db8::11"), 443), "web/[2001:db8::11]:443");
}

namespace {
struct Fixture : ::testing::Test {
    Config cfg;
    Model m;
    IdAllocator slots{FL_MAX_SERVERS}, ids{FL_MAX_SERVICES};

    void SetUp() override {
        cfg.hash_seed = 42;
        ServiceConfig web;
        web.name = "web";
        web.vip = test::ip("198.18.0.100");
        web.port = 80;
        web.table_size = 251;
        for (int i = 1; i <= 3; ++i) {
            ServerConfig s;
            s.address = test::ip("198.18.0.1" + std::to_string(i));
            s.weight = static_cast<uint32_t>(i);
            s.backup = i == 3;
            web.servers.push_back(s);
        }
        cfg.services.push_back(web);
        m.config = &cfg;
        ServiceModel svc;
        svc.cfg = web;
        for (const auto& s : web.servers) {
            ServerModel sm;
            sm.service = "web";
            sm.cfg = s;
            sm.port = 80;
            sm.key = server_key("web", s.address, 80);
            sm.health_up = sm.health_checked = true;
            sm.mac = test::mac("02:00:00:00:00:0" + std::to_string(svc.servers.size() + 1));
            m.servers[sm.key] = sm;
            svc.servers.push_back(sm.key);
        }
        m.services.push_back(svc);
    }
    ServerModel& srv(int i) { return m.servers.at(m.services[0].servers[static_cast<size_t>(i)]); }
    std::vector<bool> rotation() {
        auto spec = make_snapshot_spec(m, 1, slots, ids);
        return rotation_of(spec.services[0]);
    }
};
}  // namespace

using Publisher = Fixture;

TEST_F(Publisher, SpecCarriesConfigAndState) {
    auto spec = make_snapshot_spec(m, 9, slots, ids);
    EXPECT_EQ(spec.generation, 9u);
    EXPECT_EQ(spec.hash_seed, 42u);
    ASSERT_EQ(spec.services.size(), 1u);
    const auto& s = spec.services[0];
    EXPECT_EQ(s.name, "web");
    ASSERT_EQ(s.servers.size(), 3u);
    EXPECT_EQ(s.servers[1].weight, 2u);
    EXPECT_TRUE(s.servers[2].backup);
    EXPECT_EQ(s.servers[0].mac, test::mac("02:00:00:00:00:01"));
    // Builds into a valid snapshot.
    auto bytes = build_snapshot(spec);
    EXPECT_TRUE(SnapshotView::open(bytes));
    // Slots are stable from one publish to the next.
    auto again = make_snapshot_spec(m, 10, slots, ids);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(again.services[0].servers[i].slot, s.servers[i].slot);
}

TEST_F(Publisher, StatesAndReasons) {
    EXPECT_EQ(rotation(), (std::vector<bool>{true, true, false}));
    EXPECT_EQ(srv(0).state(), ServerState::up);
    EXPECT_EQ(srv(0).reason(), "");
    srv(0).health_up = false;
    srv(0).health_reason = "connection refused";
    EXPECT_EQ(srv(0).state(), ServerState::down);
    EXPECT_EQ(srv(0).reason(), "connection refused");
    EXPECT_EQ(rotation(), (std::vector<bool>{false, true, false}));
    srv(1).mac.reset();
    srv(1).l2_reason = "unresolved";
    EXPECT_EQ(srv(1).state(), ServerState::down);
    EXPECT_EQ(srv(1).reason(), "unresolved");
    EXPECT_EQ(rotation(), (std::vector<bool>{false, false, true}));  // the backup takes over
    srv(2).weight_override = 0;
    EXPECT_EQ(srv(2).state(), ServerState::draining);
    EXPECT_EQ(rotation(), (std::vector<bool>{false, false, false}));
    srv(2).weight_override.reset();
    srv(2).admin_disabled = true;
    EXPECT_EQ(srv(2).state(), ServerState::disabled);
    EXPECT_EQ(srv(2).reason(), "disabled by the operator");
    srv(2).admin_disabled = false;
    srv(2).retired = true;
    EXPECT_EQ(srv(2).state(), ServerState::retired);
    EXPECT_EQ(rotation(), (std::vector<bool>{false, false, false}));
    auto spec = make_snapshot_spec(m, 2, slots, ids);
    EXPECT_TRUE(spec.services[0].servers[2].retired);
    srv(0).health_checked = false;
    EXPECT_EQ(srv(0).reason(), "not checked yet");
}

TEST_F(Publisher, WeightOverrideWinsOverConfig) {
    srv(0).weight_override = 7;
    auto spec = make_snapshot_spec(m, 1, slots, ids);
    EXPECT_EQ(spec.services[0].servers[0].weight, 7u);
    EXPECT_EQ(srv(0).cfg.weight, 1u);
}
