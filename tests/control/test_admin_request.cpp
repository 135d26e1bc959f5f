// The admin request decoder: every command, every refusal with its message.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

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
    EXPECT_NE(bad.error().find("\"service\" must be a non-empty string"), std::string::npos) << bad.error();
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
        EXPECT_EQ(e.error(), "ha: \"action\" must be \"takeover\", \"release\" or \"resume\" (or absent: show the state)");
    }
}

TEST(AdminRequest, ServerCommandsNeedServiceAndServer) {
    auto r = parse(R"({"command": "drain", "service": "web", "server": "198.18.0.11:80"})");
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->command, AdminCommand::drain);
    EXPECT_EQ(r->server, "198.18.0.11:80");
    const std::pair<const char*, const char*> bad[] = {
        {R"({"command": "disable", "service": "web"})", "disable needs \"service\" and \"server\" (\"server\" is missing"},
        {R"({"command": "enable", "server": "x"})", "enable needs \"service\" and \"server\" (\"service\" is missing"},
        {R"({"command": "drain", "service": "", "server": "x"})", "drain: \"service\" must be a non-empty string"},
        {R"({"command": "drain", "service": "web", "server": ["x"]})", "drain: \"server\" must be a non-empty string"},
    };
    for (const auto& [text, want] : bad) {
        auto e = parse(text);
        ASSERT_FALSE(e) << text;
        EXPECT_NE(e.error().find(want), std::string::npos) << e.error();
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
    // Arguments it does not take are refused: a misspelt one would otherwise go unnoticed.
    auto extra = parse(R"({"command": "acl", "service": "web"})");
    ASSERT_FALSE(extra);
    EXPECT_EQ(extra.error(), "acl: unknown key \"service\" (it takes no arguments)");
    auto typo_key = parse(R"({"command": "servers", "servcie": "web"})");
    ASSERT_FALSE(typo_key);
    EXPECT_EQ(typo_key.error(), "servers: unknown key \"servcie\" (known: service)");
    EXPECT_NE(admin_commands().find("acl"), std::string::npos);
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

TEST(AdminRequest, CountersShowsAndResetTakesAScope) {
    auto show = parse(R"({"command": "counters"})");
    ASSERT_TRUE(show) << show.error();
    EXPECT_EQ(show->command, AdminCommand::counters);
    auto all = parse(R"({"command": "counters-reset"})");
    ASSERT_TRUE(all) << all.error();
    EXPECT_EQ(all->command, AdminCommand::counters_reset);
    EXPECT_EQ(all->service, "");
    auto one = parse(R"({"command": "counters-reset", "service": "web"})");
    ASSERT_TRUE(one) << one.error();
    EXPECT_EQ(one->service, "web");
    const std::pair<const char*, const char*> bad[] = {
        {R"({"command": "counters-reset", "service": 7})",
         "counters-reset: \"service\" must be a non-empty string (or absent: every counter"},
        // An empty name is not "every service" (an unset variable in a script).
        {R"({"command": "counters-reset", "service": ""})",
         "counters-reset: \"service\" must be a non-empty string (or absent: every counter"},
        {R"({"command": "servers", "service": ""})", "servers: \"service\" must be a non-empty string"},
        {R"({"command": "counters-reset", "scope": "all"})", "counters-reset: unknown key \"scope\" (known: service)"},
        {R"({"command": "counters", "reset": true})", "counters: unknown key \"reset\" (it takes no arguments)"},
        {R"({"command": "counters_reset"})", "unknown command 'counters_reset'"},
    };
    for (const auto& [text, want] : bad) {
        auto e = parse(text);
        ASSERT_FALSE(e) << text;
        EXPECT_NE(e.error().find(want), std::string::npos) << text << " -> " << e.error();
    }
}

// A value the argument takes.
json valid(const AdminArg& a) {
    switch (a.type) {
        case AdminArgType::text: return "web";
        case AdminArgType::endpoint:
        case AdminArgType::flow_endpoint: return "198.18.0.1:80";
        case AdminArgType::choice: return a.choices.at(0);
        case AdminArgType::integer: return a.max;
    }
    return nullptr;
}

// The table drives the decoder: every command is named once, every required argument is
// refused when missing and every argument's type is checked.
TEST(AdminRequest, TheTableDrivesTheDecoder) {
    std::set<std::string> names;
    for (const auto& spec : admin_command_table()) {
        EXPECT_TRUE(names.insert(spec.name).second) << spec.name << " declared twice";
        EXPECT_EQ(admin_command_name(spec.command), spec.name);
        EXPECT_EQ(&admin_command_spec(spec.command), &spec);
        EXPECT_FALSE(spec.summary.empty() || spec.reply.empty()) << spec.name;
        for (const auto& a : spec.args) {
            EXPECT_TRUE(a.store) << spec.name << " " << a.name;
            EXPECT_FALSE(a.help.empty()) << spec.name << " " << a.name;
            EXPECT_TRUE(!a.cli.empty() || !a.cli_note.empty()) << spec.name << " " << a.name << ": not in fulcrumctl";
            // A wrong JSON type is refused by name, whatever the argument's type (the others
            // given valid values).
            json req = {{"command", spec.name}};
            for (const auto& o : spec.args) req[o.name] = valid(o);
            ASSERT_TRUE(parse_admin_request(req)) << req.dump() << ": " << parse_admin_request(req).error();
            req[a.name] = json::array();
            auto e = parse_admin_request(req);
            ASSERT_FALSE(e) << spec.name << " " << a.name;
            EXPECT_NE(e.error().find("\"" + a.name + "\" must be"), std::string::npos) << e.error();
        }
        // Without its required arguments: refused, naming them all.
        const bool needs = std::any_of(spec.args.begin(), spec.args.end(), [](const AdminArg& a) { return a.required; });
        auto bare = parse_admin_request({{"command", spec.name}});
        EXPECT_EQ(bool(bare), !needs) << spec.name << ": " << (bare ? "" : bare.error());
        if (!bare) {
            EXPECT_EQ(bare.error().rfind(spec.name + " needs \"", 0), 0u) << bare.error();
        }
    }
    EXPECT_EQ(names.size(), 15u);
}

}  // namespace
}  // namespace fulcrum::control
