#include "fulcrum/ctl_protocol.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fulcrum/sync_abi.h"

namespace fulcrum::ctl {

const char* op_name(uint8_t op) {
    switch (static_cast<Op>(op)) {
        case Op::load_snapshot: return "load_snapshot";
        case Op::counters: return "counters";
        case Op::health: return "health";
        case Op::get_snapshot: return "get_snapshot";
        case Op::hello: return "hello";
        case Op::ha: return "ha";
        case Op::sync_drain: return "sync_drain";
        case Op::sync_install: return "sync_install";
        case Op::sync_dump: return "sync_dump";
        case Op::conn_list: return "conn_list";
    }
    return "unknown";
}

uint32_t max_request_frame(uint8_t op, uint32_t max_frame) {
    switch (static_cast<Op>(op)) {
        case Op::load_snapshot: return max_frame;
        case Op::sync_install:
            return std::min<uint32_t>(max_frame, 1 + kMaxSyncRecordsPerRequest * sizeof(fl_sync_record));
        default: return std::min<uint32_t>(max_frame, 1 + kMaxJsonRequest);
    }
}

void encode(std::vector<uint8_t>& out, uint8_t kind, std::span<const uint8_t> body) {
    const auto len = static_cast<uint32_t>(body.size() + 1);
    const size_t at = out.size();
    out.resize(at + 5 + body.size());
    std::memcpy(out.data() + at, &len, 4);  // little-endian host (asserted in flow.hpp)
    out[at + 4] = kind;
    if (!body.empty()) std::memcpy(out.data() + at + 5, body.data(), body.size());
}

Client::~Client() {
    if (fd_ >= 0) ::close(fd_);
}

Client& Client::operator=(Client&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = o.fd_;
        path_ = std::move(o.path_);
        o.fd_ = -1;
    }
    return *this;
}

namespace {
Error sys_error(const std::string& what, const std::string& path) {
    return Error{what + " " + path + ": " + std::strerror(errno)};
}
}  // namespace

Expected<Client> Client::connect(const std::string& path, std::chrono::milliseconds timeout) {
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path)
        return Error{"control socket path too long (max " + std::to_string(sizeof addr.sun_path - 1) +
                     " bytes): " + path};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    Client c;
    c.path_ = path;
    c.fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd_ < 0) return sys_error("cannot create a socket for", path);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(c.fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(c.fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(c.fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        return sys_error("cannot connect to the dataplane control socket", path);
    return c;
}

Expected<Reply> Client::request(Op op, std::span<const uint8_t> body) {
    if (fd_ < 0)
        return Error{"not connected to the dataplane control socket" +
                     (path_.empty() ? std::string(" (connect() was not called or failed)") : " " + path_) +
                     "; connect first"};
    if (body.size() + 1 > kMaxFrame)
        return Error{std::string(op_name(static_cast<uint8_t>(op))) + " request of " + std::to_string(body.size()) +
                     " bytes exceeds the protocol limit of " + std::to_string(kMaxFrame - 1) +
                     " bytes; not sent to " + path_};
    std::vector<uint8_t> out;
    encode(out, static_cast<uint8_t>(op), body);
    size_t sent = 0;
    while (sent < out.size()) {
        const ssize_t n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("sending to the dataplane control socket", path_);
        }
        sent += static_cast<size_t>(n);
    }
    auto read_all = [&](uint8_t* p, size_t len) -> bool {
        while (len) {
            const ssize_t n = ::recv(fd_, p, len, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            p += n;
            len -= static_cast<size_t>(n);
        }
        return true;
    };
    uint8_t hdr[5];
    if (!read_all(hdr, 5))
        return Error{"no reply from the dataplane control socket " + path_ + " (closed or timed out)"};
    uint32_t len;
    std::memcpy(&len, hdr, 4);
    if (len < 1 || len > kMaxFrame)
        return Error{"malformed reply length " + std::to_string(len) + " from the dataplane control socket " + path_};
    Reply r;
    r.status = hdr[4] == 0 ? Status::ok : Status::error;
    r.body.resize(len - 1);
    if (!read_all(r.body.data(), r.body.size()))
        return Error{"reply from the dataplane control socket " + path_ + " cut short (closed or timed out)"};
    return r;
}

Expected<Reply> Client::hello(const std::string& role) {
    // The role is an identifier; refusing anything else keeps the hand-written JSON valid.
    if (role.empty() || !std::all_of(role.begin(), role.end(), [](char ch) { return (ch >= 'a' && ch <= 'z') || ch == '_'; }))
        return Error{"hello role '" + role + "' is not a lower-case identifier; not sent to " + path_};
    const std::string body = "{\"role\":\"" + role + "\",\"pid\":" + std::to_string(::getpid()) + "}";
    return request(Op::hello, {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
}

}  // namespace fulcrum::ctl
