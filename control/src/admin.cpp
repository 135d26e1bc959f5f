#include "fulcrum/control/admin.hpp"

#include "fulcrum/unix_socket.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace fulcrum::control {

namespace {
constexpr size_t kMaxRequest = 1 << 20;
constexpr size_t kMaxClients = 32;
constexpr size_t kMaxPendingReplies = 64 << 20;

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
}  // namespace

AdminServer::AdminServer(std::string path, Handler handler) : path_(std::move(path)), handler_(std::move(handler)) {
    listen_fd_ = listen_private_unix(path_, "admin socket", "is fulcrumd already running?");
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    thread_ = std::thread([this] { run(); });
}

AdminServer::~AdminServer() {
    stop_.store(true);
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    if (thread_.joinable()) thread_.join();
    ::close(wake_fd_);
    ::close(listen_fd_);
    ::unlink(path_.c_str());
}

void AdminServer::run() {
    struct Client {
        int fd;
        std::string in, out;
    };
    std::vector<Client> clients;
    while (!stop_.load()) {
        std::vector<pollfd> pfds = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
        for (auto& c : clients) pfds.push_back({c.fd, static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
        if (::poll(pfds.data(), pfds.size(), 1000) < 0 && errno != EINTR) break;
        if (stop_.load()) break;
        std::vector<bool> drop(clients.size(), false);
        for (size_t i = 0; i < clients.size(); ++i) {
            const short re = pfds[i + 2].revents;
            Client& c = clients[i];
            if (re & POLLIN) {
                char buf[8192];
                const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
                if (n <= 0) {
                    drop[i] = c.out.empty();
                } else {
                    c.in.append(buf, static_cast<size_t>(n));
                    size_t nl;
                    while ((nl = c.in.find('\n')) != std::string::npos) {
                        const std::string line = c.in.substr(0, nl);
                        c.in.erase(0, nl + 1);
                        std::string out;
                        try {
                            const auto req = nlohmann::json::parse(line);
                            if (!req.is_object()) throw std::invalid_argument("not an object");
                            out = reply_line(handler_(req));
                        } catch (const nlohmann::json::parse_error& e) {
                            out = reply_line(error_json(std::string("request is not valid JSON: ") + e.what()));
                        } catch (const std::exception& e) {
                            out = reply_line(error_json(std::string("bad request: ") + e.what() +
                                                        " (expected a JSON object such as {\"command\": \"status\"})"));
                        }
                        c.out += out;
                        if (c.out.size() > kMaxPendingReplies) {  // never reads its replies
                            drop[i] = true;
                            break;
                        }
                    }
                    if (c.in.size() > kMaxRequest) {
                        c.out += reply_line(error_json("request longer than 1 MiB without a newline"));
                        c.in.clear();
                    }
                }
            }
            if (re & (POLLERR | POLLNVAL)) drop[i] = true;
            if (!drop[i] && !c.out.empty()) {
                const ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) c.out.erase(0, static_cast<size_t>(n));
                else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) drop[i] = true;
            }
            if (!drop[i] && (re & POLLHUP) && c.out.empty()) drop[i] = true;
        }
        for (size_t i = clients.size(); i-- > 0;)
            if (drop[i]) {
                ::close(clients[i].fd);
                clients.erase(clients.begin() + static_cast<long>(i));
            }
        if (pfds[1].revents & POLLIN) {
            for (;;) {
                const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) break;
                if (clients.size() >= kMaxClients) {
                    const std::string m = reply_line(error_json("too many admin clients connected"));
                    (void)!::send(fd, m.data(), m.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
                    ::close(fd);
                    continue;
                }
                clients.push_back({fd, {}, {}});
            }
        }
    }
    for (auto& c : clients) ::close(c.fd);
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
