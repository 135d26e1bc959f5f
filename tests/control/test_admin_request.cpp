// The admin request decoder: every command, every refusal with its message.
#include <gtest/gtest.h>

#include "fulcrum/control/admin_request.hpp"

namespace fulcrum::control {
namespace {

using nlohmann::json;

Expected<AdminRequest> parse(const char* text) { return parse_admin_request(json::parse(text)); }

TEST(AdminRequest, ViewsNeedOnlyTheCommand) {
    for (const char* c : {"status", "services", "reload"}) {
        auto r = parse_admin_request({{"command", c}});
        ASSERT_TRUE(r) << c << ": " << r.error();
        EXPECT_STREQ(admin_command_name(r->command), c);
    }
    auto s = parse(R"({"command": "servers", "service": "web"})");
    ASSERT_TRUE(s);
    EXPECT_EQ(s->command, AdminCommand::servers);
    EXPECT_EQ(s->service, "web");
    EXPECT_TRUE(parse(R"({"command": "servers"})"));
    auto bad = parse(R"({"command": "servers", "service": 3})");
    ASSERT_FALSE(bad);
    EXPECT_NE(bad.error().find("\"service\" must be a string"), std::string::npos) << bad.error();
}

TEST(AdminRequest, HaShowsOrTakesAnAction) {
    auto show = parse(R"({"command": "ha"})");
    ASSERT_TRUE(show) << show.error();
    EXPECT_EQ(show->command, AdminCommand::ha);
    EXPECT_EQ(show->ha_action, HaAction::none);
    const std::pair<const char*, HaAction> actions[] = {
        {"takeover", HaAction::takeover}, {"release", HaAction::release}, {"resume", HaAction::resume}};
    for (const auto& [name, action] : actions) {
        auto r = parse_admin_request({{"command", "ha"}, {"action", name}});
        ASSERT_TRUE(r) << name << ": " << r.error();
        EXPECT_EQ(r->ha_action, action);
    }
    for (const char* text : {R"({"command": "ha", "action": "failover"})", R"({"command": "ha", "action": 1})",
                             R"({"command": "ha", "action": ""})"}) {
        auto e = parse(text);
        ASSERT_FALSE(e) << text;
        EXPECT_EQ(e.error(), "ha: \"action\" must be \"takeover\", \"release\" or \"resume\" (or absent to show the state)");
    }
}

TEST(AdminRequest, ServerCommandsNeedServiceAndServer) {
    auto r = parse(R"({"command": "drain", "service": "web", "server": "198.18.0.11:80"})");
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->command, AdminCommand::drain);
    EXPECT_EQ(r->server, "198.18.0.11:80");
    for (const char* text : {R"({"command": "disable", "service": "web"})", R"({"command": "enable", "server": "x"})",
                             R"({"command": "drain", "service": "", "server": "x"})",
                             R"({"command": "drain", "service": "web", "server": ["x"]})"}) {
        auto e = parse(text);
        ASSERT_FALSE(e) << text;
        EXPECT_NE(e.error().find("needs \"service\" and \"server\""), std::string::npos) << e.error();
    }
}

TEST(AdminRequest, SetWeightChecksTheRange) {
    auto r = parse(R"({"command": "set-weight", "service": "web", "server": "s", "weight": 65535})");
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->weight, 65535u);
    for (const char* w : {"-1", "65536", "1.5", "\"3\"", "null", "18446744073709551615"}) {
        const std::string text = std::string(R"({"command": "set-weight", "service": "web", "server": "s", "weight": )") + w + "}";
        auto e = parse_admin_request(json::parse(text));
        ASSERT_FALSE(e) << text;
        EXPECT_NE(e.error().find("an integer from 0 to 65535"), std::string::npos) << e.error();
    }
}

TEST(AdminRequest, AclIsAView) {
    auto r = parse(R"({"command": "acl"})");
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->command, AdminCommand::acl);
    EXPECT_STREQ(admin_command_name(r->command), "acl");
    // Arguments it does not take are ignored, as for the other views.
    auto extra = parse(R"({"command": "acl", "service": "web"})");
    ASSERT_TRUE(extra);
    EXPECT_EQ(extra->command, AdminCommand::acl);
    EXPECT_NE(std::string(admin_commands()).find("acl"), std::string::npos);
    auto typo = parse(R"({"command": "acls"})");
    ASSERT_FALSE(typo);
    EXPECT_NE(typo.error().find("ha, acl, connections"), std::string::npos) << typo.error();
}

TEST(AdminRequest, RefusalsSayWhatIsExpected) {
    auto e = parse(R"([1, 2])");
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().find("JSON object"), std::string::npos);
    e = parse(R"({"cmd": "status"})");
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().find("missing \"command\""), std::string::npos);
    e = parse(R"({"command": "shutdown"})");
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().find("unknown command 'shutdown'"), std::string::npos);
    EXPECT_NE(e.error().find("set-weight"), std::string::npos);  // lists the known ones
}

}  // namespace
}  // namespace fulcrum::control
