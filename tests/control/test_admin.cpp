#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

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
