#include "fulcrum/control/admin.hpp"

#include "fulcrum/unix_socket.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <spdlog/spdlog.h>

namespace fulcrum::control {

namespace {
sockaddr_un make_addr(const std::string& path) {
    sockaddr_un a{};
    if (path.empty() || path.size() >= sizeof a.sun_path)
        throw std::runtime_error("admin socket path '" + path + "' is empty or longer than " +
                                 std::to_string(sizeof a.sun_path - 1) + " bytes");
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

std::string reply_line(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"; }

nlohmann::json error_json(const std::string& m) { return {{"ok", false}, {"error", m}}; }

void append(std::vector<uint8_t>& out, const std::string& s) { out.insert(out.end(), s.begin(), s.end()); }
}  // namespace

ServerLimits AdminServer::default_limits() {
    ServerLimits l;
    l.max_clients = 32;
    l.evict_idle_when_full = true;
    l.evict_min_idle = std::chrono::seconds(1);
    l.idle_timeout = std::chrono::seconds(30);
    l.max_request = 1 << 20;
    l.output_pause = 64 << 10;
    l.big_reply = 64 << 10;
    l.max_output_client = 64u << 20;
    l.max_output_total = 64u << 20;
    l.max_input_total = 64u << 20;
    return l;
}

AdminServer::AdminServer(std::string path, Handler handler, ServerLimits limits)
    : path_(std::move(path)), handler_(std::move(handler)) {
    start(limits);
}

AdminServer::AdminServer(std::string path, AsyncHandler handler, ServerLimits limits)
    : path_(std::move(path)), async_(std::move(handler)) {
    start(limits);
}

void AdminServer::start(ServerLimits limits) {
    const int fd = listen_private_unix(path_, "admin socket", "is fulcrumd already running?");
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) {
        const std::string e = std::strerror(errno);
        ::close(fd);
        ::unlink(path_.c_str());
        throw std::runtime_error("cannot create the admin server's wake-up eventfd: " + e);
    }
    server_ = std::make_unique<SocketServer>(
        fd,
        SocketServer::Protocol{
            "admin socket " + path_, "admin clients",
            [max = limits.max_request] { return std::make_unique<LineDecoder>(max); },
            [this](Session& s, std::span<const uint8_t> line, std::vector<uint8_t>& out) { handle(s, line, out); },
            [](std::vector<uint8_t>& out, const std::string& m) { append(out, reply_line(error_json(m))); },
            [](const std::string& line) { spdlog::warn("{}", line); },
            {}},  // admin replies are built by the handler; checked for size once built
        limits, wake_fd_);
    thread_ = std::thread([this] { run(); });
}

AdminServer::~AdminServer() {
    stop_.store(true);
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    if (thread_.joinable()) thread_.join();
    server_.reset();
    ::close(wake_fd_);
    ::unlink(path_.c_str());
}

void AdminServer::handle(Session& s, std::span<const uint8_t> line, std::vector<uint8_t>& out) {
    std::string reply;
    try {
        const auto req = nlohmann::json::parse(line.begin(), line.end());
        if (!req.is_object()) throw std::invalid_argument("not an object");
        if (async_) {
            // An answer given during the call goes out at once; a later one through ready_.
            // Both sides decide under mu_ which of the two it is.
            struct Answer {
                bool in_call = true;
                std::optional<std::string> text;
            };
            auto answer = std::make_shared<Answer>();
            const uint64_t id = s.id;
            async_(req, [this, answer, id](nlohmann::json r) {
                std::string text = reply_line(r);
                std::lock_guard lk(mu_);
                if (answer->in_call) {
                    answer->text = std::move(text);
                    return;
                }
                ready_.emplace_back(id, std::move(text));
                const uint64_t one = 1;
                (void)!::write(wake_fd_, &one, sizeof one);
            });
            std::lock_guard lk(mu_);
            answer->in_call = false;
            if (answer->text)
                append(out, *answer->text);
            else
                s.defer = true;
            return;
        }
        reply = reply_line(handler_(req));
    } catch (const nlohmann::json::parse_error& e) {
        reply = reply_line(error_json(std::string("request is not valid JSON: ") + e.what()));
    } catch (const std::exception& e) {
        reply = reply_line(error_json(std::string("bad request: ") + e.what() +
                                      " (expected a JSON object such as {\"command\": \"status\"})"));
    }
    append(out, reply);
}

void AdminServer::run() {
    while (!stop_.load()) {
        server_->poll_once(1000);
        std::vector<std::pair<uint64_t, std::string>> ready;
        {
            std::lock_guard lk(mu_);
            ready.swap(ready_);
        }
        for (const auto& [id, line] : ready)
            server_->deliver(id, {reinterpret_cast<const uint8_t*>(line.data()), line.size()});
    }
}

Expected<nlohmann::json> admin_request(const std::string& path, const nlohmann::json& request,
                                       std::chrono::milliseconds timeout) {
    sockaddr_un addr;
    try {
        addr = make_addr(path);
    } catch (const std::exception& e) {
        return Error{e.what()};
    }
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Error{std::string("cannot create a socket: ") + std::strerror(errno)};
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        const std::string e = std::strerror(errno);
        ::close(fd);
        return Error{"cannot connect to fulcrumd's admin socket " + path + ": " + e +
                     " (is fulcrumd running? is --socket right? are you root?)"};
    }
    const std::string line = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
        ::close(fd);
        return Error{"cannot send to " + path};
    }
    std::string in;
    char buf[65536];
    while (in.find('\n') == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            ::close(fd);
            return Error{"no reply from fulcrumd on " + path + (n < 0 ? " (timed out)" : " (connection closed)")};
        }
        in.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    try {
        return nlohmann::json::parse(in.substr(0, in.find('\n')));
    } catch (const std::exception& e) {
        return Error{std::string("malformed reply from fulcrumd: ") + e.what()};
    }
}

}  // namespace fulcrum::control
