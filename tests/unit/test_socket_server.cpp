// fulcrum::SocketServer (the client policy of the control and admin sockets), the frame and
// line decoders, and ctl::Client against it: slots, reserved slots, idle timeout, over-long
// requests, and client error messages that always name the socket.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fulcrum/ctl_protocol.hpp"
#include "fulcrum/framing.hpp"
#include "fulcrum/socket_server.hpp"
#include "fulcrum/unix_socket.hpp"

using namespace fulcrum;

namespace {
std::string temp_socket(const char* tag) {
    static std::atomic<int> n{0};
    return "/tmp/fulcrum-sockserver-" + std::to_string(getpid()) + "-" + tag + std::to_string(n++) +
           ".sock";
}

// A frame server on its own thread: op 3 answers "{}"; op 5 with body "controller" makes the
// connection the controller; in a reserved slot anything else is refused.
struct TestServer {
    std::string path;
    std::unique_ptr<SocketServer> srv;
    std::atomic<bool> stop{false};
    std::atomic<int> executed{0};
    std::vector<std::string> logs;  // written by the server thread; read after join
    std::thread thread;

    explicit TestServer(ServerLimits l) : path(temp_socket("t")) {
        const int fd = listen_private_unix(path, "test socket", "");
        srv = std::make_unique<SocketServer>(
            fd,
            SocketServer::Protocol{
                "test socket",
                "test clients",
                [] { return std::make_unique<FrameDecoder>(1024); },
                [this](Session& s, std::span<const uint8_t> msg, std::vector<uint8_t>& out) {
                    const std::string body(msg.begin() + 1, msg.end());
                    if (msg[0] == 5 && body == "controller") {
                        s.controller = true;
                    } else if (s.reserved && !s.controller) {
                        const std::string e = "{\"error\":\"too many test clients\"}";
                        ctl::encode(out, 1, {reinterpret_cast<const uint8_t*>(e.data()), e.size()});
                        s.close_after_reply = true;
                        return;
                    } else {
                        executed.fetch_add(1);
                    }
                    ctl::encode(out, 0, {reinterpret_cast<const uint8_t*>("{}"), 2});
                },
                [](std::vector<uint8_t>& out, const std::string& m) {
                    const std::string e = "{\"error\":\"" + m + "\"}";
                    ctl::encode(out, 1, {reinterpret_cast<const uint8_t*>(e.data()), e.size()});
                },
                [this](const std::string& line) { logs.push_back(line); },
                {}},
            l);
        thread = std::thread([this] {
            while (!stop.load()) srv->poll_once(20);
        });
    }
    ~TestServer() {
        stop.store(true);
        thread.join();
        srv.reset();
        ::unlink(path.c_str());
    }
    uint64_t refused(Refusal r) const {
        return srv->stats().refused[static_cast<size_t>(r)].load();
    }
};

ServerLimits small() {
    ServerLimits l;
    l.max_clients = 2;
    l.reserved_slots = 1;
    l.identify_timeout = std::chrono::milliseconds(300);
    l.idle_timeout = std::chrono::seconds(30);
    return l;
}

template <class P>
bool eventually(P pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}
}  // namespace

TEST(Framing, FrameDecoderSplitsAndRefusesBadLengths) {
    FrameDecoder d(16);
    std::vector<uint8_t> s;
    ctl::encode(s, 3, {});
    const uint8_t body[] = {1, 2, 3};
    ctl::encode(s, 1, body);
    for (uint8_t b : s) d.feed({&b, 1});  // byte by byte
    std::span<const uint8_t> m;
    ASSERT_EQ(d.next(m), Decoded::message);
    EXPECT_EQ(m.size(), 1u);
    EXPECT_EQ(m[0], 3);
    ASSERT_EQ(d.next(m), Decoded::message);
    EXPECT_EQ(m.size(), 4u);
    EXPECT_EQ(d.next(m), Decoded::need_more);
    const uint8_t bad[] = {17, 0, 0, 0};  // 17 > 16: refused on the length alone
    d.feed(bad);
    EXPECT_EQ(d.next(m), Decoded::too_long);
    EXPECT_NE(d.error().find("outside 1..16"), std::string::npos);
    std::vector<uint8_t> more;
    ctl::encode(more, 3, {});
    d.feed(more);
    EXPECT_EQ(d.next(m), Decoded::too_long);  // nothing after a bad frame
}

// The control socket's per-op limits: a JSON op cannot make the server buffer a snapshot's worth
// (256 MiB) of input, refused as soon as its op byte arrives.
TEST(Framing, FrameDecoderAppliesEachKindsOwnLimit) {
    EXPECT_EQ(ctl::max_request_frame(static_cast<uint8_t>(ctl::Op::load_snapshot), ctl::kMaxFrame), ctl::kMaxFrame);
    EXPECT_EQ(ctl::max_request_frame(static_cast<uint8_t>(ctl::Op::sync_install), ctl::kMaxFrame), 1u + (4u << 20));
    EXPECT_EQ(ctl::max_request_frame(static_cast<uint8_t>(ctl::Op::ha), ctl::kMaxFrame), 1u + ctl::kMaxJsonRequest);
    EXPECT_EQ(ctl::max_request_frame(200, ctl::kMaxFrame), 1u + ctl::kMaxJsonRequest);  // unknown op
    EXPECT_EQ(ctl::max_request_frame(static_cast<uint8_t>(ctl::Op::ha), 100), 100u);     // never above the server's

    auto frame_head = [](uint32_t len, ctl::Op op) {
        std::vector<uint8_t> h(5);
        std::memcpy(h.data(), &len, 4);
        h[4] = static_cast<uint8_t>(op);
        return h;
    };
    std::span<const uint8_t> m;
    {
        FrameDecoder d(ctl::kMaxFrame, &ctl::max_request_frame, &ctl::op_name);
        d.feed(frame_head(16u << 20, ctl::Op::ha));  // 16 MiB announced: refused on 5 bytes
        EXPECT_EQ(d.next(m), Decoded::too_long);
        EXPECT_NE(d.error().find("request frame of 16777216 bytes for ha (6) is longer than the 65537 bytes"),
                  std::string::npos)
            << d.error();
    }
    {
        FrameDecoder d(ctl::kMaxFrame, &ctl::max_request_frame, &ctl::op_name);
        d.feed(frame_head(16u << 20, ctl::Op::load_snapshot));  // a snapshot may be that large
        EXPECT_EQ(d.next(m), Decoded::need_more);
        EXPECT_FALSE(d.failed());
    }
    {
        FrameDecoder d(ctl::kMaxFrame, &ctl::max_request_frame, &ctl::op_name);
        std::vector<uint8_t> s;
        const std::string body = R"({"role":"active","lease_ms":3000})";
        ctl::encode(s, static_cast<uint8_t>(ctl::Op::ha), {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
        d.feed(s);
        ASSERT_EQ(d.next(m), Decoded::message);
        EXPECT_EQ(m.size(), body.size() + 1);
    }
}

TEST(Framing, LineDecoderNeverHandsOutTheTailOfALongLine) {
    LineDecoder d(8);
    const std::string in = "{\"a\":1}\n0123456789{\"b\":2}\n";
    d.feed({reinterpret_cast<const uint8_t*>(in.data()), in.size()});
    std::span<const uint8_t> m;
    ASSERT_EQ(d.next(m), Decoded::message);
    EXPECT_EQ(std::string(m.begin(), m.end()), "{\"a\":1}");
    EXPECT_EQ(d.next(m), Decoded::too_long);
    EXPECT_EQ(d.next(m), Decoded::too_long);
}

TEST(SocketServer, ReservedSlotOnlyForTheController) {
    TestServer t(small());
    std::vector<ctl::Client> ordinary;
    for (int i = 0; i < 2; ++i) {
        auto c = ctl::Client::connect(t.path);
        ASSERT_TRUE(c) << c.error();
        auto r = c->request(ctl::Op::health);
        ASSERT_TRUE(r) << r.error();
        ordinary.push_back(std::move(c.value()));
    }
    // Slots full: a non-controller in the reserved slot is refused and nothing runs.
    auto other = ctl::Client::connect(t.path);
    ASSERT_TRUE(other);
    const int before = t.executed.load();
    auto r = other->request(ctl::Op::counters);
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->status, ctl::Status::error);
    EXPECT_NE(r->text().find("too many test clients"), std::string::npos);
    EXPECT_EQ(t.executed.load(), before);
    // A connection that sends nothing in the reserved slot is closed after identify_timeout;
    // one past every slot is refused at once.
    auto squat = ctl::Client::connect(t.path);
    ASSERT_TRUE(squat);
    ASSERT_TRUE(eventually([&] { return t.srv->stats().clients.load() == 3; }));
    auto beyond = ctl::Client::connect(t.path);
    ASSERT_TRUE(beyond);
    auto rb = beyond->request(ctl::Op::health);
    ASSERT_TRUE(!rb || rb->status == ctl::Status::error);
    ASSERT_TRUE(eventually([&] { return t.refused(Refusal::not_controller) == 1; }));
    // The controller gets in.
    auto ctl_conn = ctl::Client::connect(t.path);
    ASSERT_TRUE(ctl_conn);
    const std::string who = "controller";
    auto h = ctl_conn->request(ctl::Op::hello,
                               {reinterpret_cast<const uint8_t*>(who.data()), who.size()});
    ASSERT_TRUE(h) << h.error();
    EXPECT_EQ(h->status, ctl::Status::ok);
    auto again = ctl_conn->request(ctl::Op::health);
    ASSERT_TRUE(again) << again.error();
    EXPECT_EQ(again->status, ctl::Status::ok);
    EXPECT_GE(t.refused(Refusal::too_many_clients), 1u);
}

TEST(SocketServer, IdleClientsAreClosedButNotTheController) {
    auto l = small();
    l.idle_timeout = std::chrono::milliseconds(200);
    TestServer t(l);
    auto idle = ctl::Client::connect(t.path);
    auto ctl_conn = ctl::Client::connect(t.path);
    ASSERT_TRUE(idle && ctl_conn);
    const std::string who = "controller";
    ASSERT_TRUE(ctl_conn->request(ctl::Op::hello,
                                  {reinterpret_cast<const uint8_t*>(who.data()), who.size()}));
    ASSERT_TRUE(eventually([&] { return t.refused(Refusal::idle_timeout) == 1; }));
    // The idle one is gone (the error names the socket; if the request raced the close, it
    // reads the closing notice as its reply); the controller still works.
    auto gone = idle->request(ctl::Op::health);
    if (gone) {
        EXPECT_EQ(gone->status, ctl::Status::error);
        EXPECT_NE(gone->text().find("idle timeout"), std::string::npos) << gone->text();
    } else {
        EXPECT_NE(gone.error().find(t.path), std::string::npos) << gone.error();
    }
    auto h = ctl_conn->request(ctl::Op::health);
    ASSERT_TRUE(h) << h.error();
    EXPECT_EQ(h->status, ctl::Status::ok);
}

TEST(SocketServer, OverLongFrameRefusedWithPeerCredentialsLogged) {
    TestServer t(small());
    auto c = ctl::Client::connect(t.path);
    ASSERT_TRUE(c);
    std::vector<uint8_t> big(2000, 0);
    auto r = c->request(ctl::Op::load_snapshot, big);
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->status, ctl::Status::error);
    EXPECT_NE(r->text().find("outside 1..1024"), std::string::npos);
    EXPECT_FALSE(c->request(ctl::Op::health));  // closed
    ASSERT_TRUE(eventually([&] { return t.refused(Refusal::request_too_long) == 1; }));
    EXPECT_EQ(t.executed.load(), 0);
    t.stop.store(true);
    t.thread.join();
    t.thread = std::thread([] {});
    bool found = false;
    for (const auto& l : t.logs)
        found |= l.find("request_too_long: client pid " + std::to_string(getpid()) + " uid " +
                        std::to_string(getuid())) != std::string::npos;
    EXPECT_TRUE(found);
}

TEST(CtlClient, MovedClientKeepsItsPathInMessages) {
    TestServer t(small());
    auto c = ctl::Client::connect(t.path);
    ASSERT_TRUE(c);
    ctl::Client moved(std::move(c.value()));
    EXPECT_EQ(moved.path(), t.path);
    ctl::Client assigned;
    assigned = std::move(moved);
    EXPECT_EQ(assigned.path(), t.path);
    auto h = assigned.hello();
    ASSERT_TRUE(h) << h.error();
    EXPECT_EQ(h->status, ctl::Status::ok);  // the test server treats this body as a plain request
    ctl::Client empty;
    auto e = empty.request(ctl::Op::health);
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().find("not connected to the dataplane control socket"), std::string::npos);
    // After the server goes away, the error names the socket.
    const std::string path = t.path;
    t.stop.store(true);
    t.thread.join();
    t.thread = std::thread([] {});
    t.srv.reset();
    auto gone = assigned.request(ctl::Op::health);
    ASSERT_FALSE(gone);
    EXPECT_NE(gone.error().find(path), std::string::npos) << gone.error();
    EXPECT_FALSE(ctl::Client().hello("Bad Role"));
}

TEST(SocketServer, BigRequestsAreRefusedWhileOthersAreBeingReceived) {
    auto l = small();
    l.big_reply = 64;
    l.max_input_total = 600;
    TestServer t(l);
    // A receives a 500-byte request slowly (in progress); B starts another one: over the
    // bound, so B is told busy and closed; A's completes and is answered.
    int b = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, t.path.c_str());
    ASSERT_EQ(connect(b, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    int a_raw = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(connect(a_raw, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::vector<uint8_t> frame;
    ctl::encode(frame, 3, std::vector<uint8_t>(499, 'x'));
    ASSERT_EQ(send(a_raw, frame.data(), 200, MSG_NOSIGNAL), 200);
    ASSERT_TRUE(eventually([&] { return t.srv->stats().clients.load() == 2; }));
    ASSERT_EQ(send(b, frame.data(), 200, MSG_NOSIGNAL), 200);
    ASSERT_TRUE(eventually([&] { return t.refused(Refusal::busy_input) == 1; }));
    timeval tv{5, 0};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string got;
    char buf[512];
    for (ssize_t n; (n = recv(b, buf, sizeof buf, 0)) > 0;) got.append(buf, static_cast<size_t>(n));
    EXPECT_NE(got.find("busy"), std::string::npos) << got;  // then closed (recv returned 0)
    ASSERT_EQ(send(a_raw, frame.data() + 200, frame.size() - 200, MSG_NOSIGNAL),
              static_cast<ssize_t>(frame.size() - 200));
    setsockopt(a_raw, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t hdr[5];
    ASSERT_EQ(recv(a_raw, hdr, 5, MSG_WAITALL), 5);
    EXPECT_EQ(hdr[4], 0);  // ok
    EXPECT_EQ(t.executed.load(), 1);
    close(a_raw);
    close(b);
}
