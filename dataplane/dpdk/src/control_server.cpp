#include "fulcrum/dpdk/control_server.hpp"

#include "fulcrum/unix_socket.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace fulcrum::dpdk {

namespace {
constexpr size_t kMaxClients = 64;


void error_reply(std::vector<uint8_t>& out, const std::string& msg) {
    const std::string body = nlohmann::json{{"error", msg}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    ctl::encode(out, static_cast<uint8_t>(ctl::Status::error),
                {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
}
}  // namespace

ControlServer::ControlServer(std::string path, Handler handler, uint32_t max_frame)
    : path_(std::move(path)), handler_(std::move(handler)), max_frame_(max_frame) {
    listen_fd_ = listen_private_unix(path_, "control socket", "stop it or pass a different --control-socket");
}

ControlServer::~ControlServer() {
    for (auto& c : conns_) ::close(c.fd);
    if (listen_fd_ >= 0) {
        ::close(listen_fd_);
        ::unlink(path_.c_str());
    }
}

void ControlServer::poll_once(int timeout_ms) {
    std::vector<pollfd> pfds;
    pfds.reserve(conns_.size() + 1);
    pfds.push_back({listen_fd_, POLLIN, 0});
    for (auto& c : conns_)
        pfds.push_back({c.fd, static_cast<short>(POLLIN | (c.out.size() > c.out_off ? POLLOUT : 0)), 0});
    const int n = ::poll(pfds.data(), pfds.size(), timeout_ms);
    if (n <= 0) return;
    std::vector<bool> drop(conns_.size(), false);
    for (size_t i = 0; i < conns_.size(); ++i) {
        const short re = pfds[i + 1].revents;
        if (!re) continue;
        Conn& c = conns_[i];
        if ((re & POLLIN) && !read_from(c)) drop[i] = true;
        if (!drop[i] && (re & (POLLERR | POLLNVAL))) drop[i] = true;
        if (!drop[i] && c.out.size() > c.out_off && !write_to(c)) drop[i] = true;
        if (!drop[i] && (re & POLLHUP) && c.out.size() <= c.out_off) drop[i] = true;
    }
    for (size_t i = conns_.size(); i-- > 0;) {
        if (drop[i] || (conns_[i].close_after_write && conns_[i].out.size() <= conns_[i].out_off)) {
            ::close(conns_[i].fd);
            conns_.erase(conns_.begin() + static_cast<long>(i));
        }
    }
    if (pfds[0].revents & POLLIN) accept_all();
}

void ControlServer::accept_all() {
    for (;;) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (conns_.size() >= kMaxClients) {
            std::vector<uint8_t> out;
            error_reply(out, "too many control clients connected (limit " + std::to_string(kMaxClients) + ")");
            (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            ::close(fd);
            continue;
        }
        conns_.push_back(Conn{fd, {}, {}, 0, false});
    }
}

bool ControlServer::read_from(Conn& c) {
    uint8_t buf[65536];
    for (;;) {
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (!c.close_after_write) c.in.insert(c.in.end(), buf, buf + n);
            dispatch(c);
            continue;
        }
        if (n == 0) return c.out.size() > c.out_off;  // peer done; finish writing first
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

void ControlServer::dispatch(Conn& c) {
    while (!c.close_after_write && c.in.size() >= 5) {
        uint32_t len;
        std::memcpy(&len, c.in.data(), 4);
        if (len < 1 || len > max_frame_) {
            error_reply(c.out, "request frame length " + std::to_string(len) + " outside 1.." +
                                   std::to_string(max_frame_) + "; closing the connection");
            c.close_after_write = true;
            c.in.clear();
            break;
        }
        if (c.in.size() < 4 + size_t{len}) break;
        const uint8_t op = c.in[4];
        std::vector<uint8_t> reply;
        ctl::Status st = ctl::Status::error;
        try {
            handler_(op, {c.in.data() + 5, len - 1}, st, reply);
        } catch (const std::exception& e) {
            st = ctl::Status::error;
            const std::string body = nlohmann::json{{"error", std::string("internal error: ") + e.what()}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
            reply.assign(body.begin(), body.end());
        }
        ctl::encode(c.out, static_cast<uint8_t>(st), reply);
        c.in.erase(c.in.begin(), c.in.begin() + 4 + len);
        if (c.out.size() - c.out_off > 2 * size_t{max_frame_}) {
            // A client that sends requests but does not read its replies: let it go.
            c.out.clear();
            c.out_off = 0;
            c.close_after_write = true;
            break;
        }
    }
    if (c.in.capacity() > (1u << 20) && c.in.empty()) std::vector<uint8_t>().swap(c.in);
}

bool ControlServer::write_to(Conn& c) {
    while (c.out_off < c.out.size()) {
        const ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c.out_off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    c.out.clear();
    c.out_off = 0;
    return true;
}

}  // namespace fulcrum::dpdk
