// A forked child in network namespaces of its own, for tests of code that configures
// interfaces and sends raw frames (tests/control/test_ha_io.cpp, test_ha_node.cpp).
//
// run_isolated() forks a child that makes its own network namespaces with unshare(): "A" and,
// where two ends must not share one IP stack, "B", joined by a veth pair va (in A, MAC
// 02:00:5e:20:00:01) and vb (in B, 02:00:5e:20:00:02). Namespaces made this way die with the
// child, so nothing outlives a test, also when it fails or times out (the parent kills the
// child at the deadline). The child reports through a pipe: an empty message is success,
// anything else the failure. Needs root.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

namespace fulcrum::test::netns {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline constexpr auto kChildDeadline = 60s;  // a whole child test, namespaces and DAD included
inline constexpr auto kWait = 10s;           // one awaited state inside a child

inline void require(bool ok, const std::string& what) {
    if (!ok) throw std::runtime_error(what);
}

// Runs a shell command in the calling process's current namespace; throws if it fails.
inline void sh(const std::string& cmd) {
    std::string full = cmd + " >/dev/null 2>&1";
    int st = std::system(full.c_str());
    require(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "command failed: " + cmd);
}

inline std::string sh_out(const std::string& cmd) {
    std::string out;
    FILE* f = popen((cmd + " 2>&1").c_str(), "r");
    if (!f) throw std::runtime_error("cannot run: " + cmd);
    char buf[512];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    pclose(f);
    return out;
}

// Polls `pred` until it holds, for at most kWait (the state is awaited, not a fixed sleep).
inline void wait_for(const std::function<bool()>& pred, const std::string& what) {
    const auto deadline = Clock::now() + kWait;
    while (!pred()) {
        require(Clock::now() < deadline, "timed out waiting for " + what);
        std::this_thread::sleep_for(20ms);
    }
}

inline bool readable(int fd, Clock::time_point deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(left.count()));
        if (r > 0) return true;
        if (r < 0 && errno != EINTR) return false;
    }
}

// The namespaces of one child.
struct Lab {
    int ns_a = -1;
    int ns_b = -1;  // -1 when both veth ends live in A

    void enter(int ns) const {
        require(::setns(ns, CLONE_NEWNET) == 0,
                std::string("setns failed: ") + std::strerror(errno));
    }
    void a() const { enter(ns_a); }
    void b() const { enter(ns_b >= 0 ? ns_b : ns_a); }
};

// Builds the namespaces and the veth pair (both ends down, MACs kMacA / kMacB).
inline Lab make_lab(bool two_namespaces) {
    Lab lab;
    require(::unshare(CLONE_NEWNET) == 0,
            std::string("unshare(CLONE_NEWNET) failed: ") + std::strerror(errno));
    sh("ip link set lo up");
    lab.ns_a = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    require(lab.ns_a >= 0, "cannot open namespace A");
    if (two_namespaces) {
        require(::unshare(CLONE_NEWNET) == 0,
                std::string("unshare(CLONE_NEWNET) failed: ") + std::strerror(errno));
        sh("ip link set lo up");
        lab.ns_b = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        require(lab.ns_b >= 0, "cannot open namespace B");
        // Created in B, its peer moved to A through A's namespace file.
        sh("ip link add name vb type veth peer name va netns /proc/" + std::to_string(getpid()) +
           "/fd/" + std::to_string(lab.ns_a));
        sh("ip link set dev vb address 02:00:5e:20:00:02");
        lab.a();
        sh("ip link set dev va address 02:00:5e:20:00:01");
    } else {
        sh("ip link add name va type veth peer name vb");
        sh("ip link set dev va address 02:00:5e:20:00:01");
        sh("ip link set dev vb address 02:00:5e:20:00:02");
    }
    return lab;
}

inline void up(const char* dev) {
    sh(std::string("ip link set dev ") + dev + " up");
}

// Runs `body` in a forked child (see the file comment); returns "" on success, else why not.
inline std::string run_isolated(bool two_namespaces, const std::function<void(Lab&)>& body) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return std::string("pipe: ") + std::strerror(errno);
    pid_t pid = ::fork();
    if (pid < 0) return std::string("fork: ") + std::strerror(errno);
    if (pid == 0) {
        ::close(p[0]);
        std::string msg;
        try {
            Lab lab = make_lab(two_namespaces);
            body(lab);
        } catch (const std::exception& e) {
            msg = e.what();
            if (msg.empty()) msg = "exception without a message";
        } catch (...) {
            msg = "unknown exception";
        }
        size_t off = 0;
        while (off < msg.size()) {
            ssize_t n = ::write(p[1], msg.data() + off, msg.size() - off);
            if (n <= 0) break;
            off += static_cast<size_t>(n);
        }
        ::_exit(msg.empty() ? 0 : 1);
    }
    ::close(p[1]);
    std::string msg;
    const auto deadline = Clock::now() + kChildDeadline;
    bool timed_out = false;
    for (;;) {
        if (!readable(p[0], deadline)) {
            timed_out = true;
            break;
        }
        char buf[1024];
        ssize_t n = ::read(p[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        msg.append(buf, static_cast<size_t>(n));
    }
    ::close(p[0]);
    if (timed_out) ::kill(pid, SIGKILL);  // our own child
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) return "child timed out after " + std::to_string(kChildDeadline.count()) + " s";
    if (WIFSIGNALED(st)) return "child died of signal " + std::to_string(WTERMSIG(st)) + " " + msg;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return msg.empty() ? "child failed without a message" : msg;
    return msg;
}

}  // namespace fulcrum::test::netns
