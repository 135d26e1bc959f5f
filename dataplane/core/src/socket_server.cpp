#include "fulcrum/socket_server.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace fulcrum {

std::string PeerCred::str() const {
    return "pid " + std::to_string(pid) + " uid " + std::to_string(uid) + " gid " +
           std::to_string(gid);
}

PeerCred peer_credentials(int fd) {
    PeerCred p;
    ucred uc{};
    socklen_t len = sizeof uc;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) == 0) {
        p.pid = uc.pid;
        p.uid = static_cast<int32_t>(uc.uid);
        p.gid = static_cast<int32_t>(uc.gid);
    }
    return p;
}

const char* refusal_name(Refusal r) {
    switch (r) {
        case Refusal::too_many_clients:
            return "too_many_clients";
        case Refusal::evicted_idle:
            return "evicted_idle";
        case Refusal::idle_timeout:
            return "idle_timeout";
        case Refusal::not_controller:
            return "not_controller";
        case Refusal::request_too_long:
            return "request_too_long";
        case Refusal::busy_output:
            return "busy_output";
        case Refusal::busy_input:
            return "busy_input";
        case Refusal::output_overflow:
            return "output_overflow";
    }
    return "unknown";
}

uint64_t ServerStats::refused_total() const {
    uint64_t t = 0;
    for (const auto& r : refused) t += r.load(std::memory_order_relaxed);
    return t;
}

namespace {
long long ms(std::chrono::steady_clock::duration d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}
constexpr size_t kReadChunk = 64 << 10;
constexpr size_t kReadPerRound = 1 << 20;  // per client and poll round: no client holds the loop
constexpr int kAcceptPerRound = 64;
}  // namespace

SocketServer::SocketServer(int listen_fd, Protocol proto, ServerLimits limits, int wake_fd)
    : listen_fd_(listen_fd), wake_fd_(wake_fd), proto_(std::move(proto)), limits_(limits) {}

SocketServer::~SocketServer() {
    for (auto& c : conns_) ::close(c->fd);
    if (listen_fd_ >= 0) ::close(listen_fd_);
}

void SocketServer::log(const std::string& line) {
    const auto now = Clock::now();
    if (now - log_window_ >= std::chrono::seconds(10)) {
        if (suppressed_ && proto_.log)
            proto_.log(proto_.what + ": " + std::to_string(suppressed_) +
                       " further refusals were not logged (more than " +
                       std::to_string(limits_.log_burst) + " in 10 s); see the refusal counters");
        log_window_ = now;
        logged_in_window_ = 0;
        suppressed_ = 0;
    }
    if (logged_in_window_ >= limits_.log_burst) {
        ++suppressed_;
        return;
    }
    ++logged_in_window_;
    if (proto_.log) proto_.log(line);
}

void SocketServer::refuse(const Session& s, Refusal r, const std::string& detail) {
    stats_.refused[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
    log(proto_.what + ": " + refusal_name(r) + ": client " + s.peer.str() + ": " + detail);
}

size_t SocketServer::input_in_progress() const {
    size_t t = 0;
    for (const auto& c : conns_)
        if (!c->drop && !c->closing) t += c->dec->expected();
    return t;
}

void SocketServer::poll_once(int timeout_ms) {
    auto now = Clock::now();
    // Wake up for the first client deadline, so timeouts hold whatever the caller passes.
    long long wait = timeout_ms;
    for (const auto& c : conns_) {
        if (c->s.controller || c->waiting) continue;
        auto deadline = c->active + limits_.idle_timeout;
        if (c->s.reserved) deadline = std::min(deadline, c->accepted + limits_.identify_timeout);
        wait = std::min(wait, std::max(0LL, ms(deadline - now) + 1));
    }
    std::vector<pollfd> pfds;
    pfds.reserve(conns_.size() + 2);
    const size_t first = wake_fd_ >= 0 ? 2 : 1;
    if (wake_fd_ >= 0) pfds.push_back({wake_fd_, POLLIN, 0});
    pfds.push_back({listen_fd_, POLLIN, 0});
    for (const auto& c : conns_) {
        short ev = 0;
        if (!c->closing && !c->eof && !c->paused(limits_.output_pause)) ev |= POLLIN;
        if (c->queued()) ev |= POLLOUT;
        pfds.push_back({c->fd, ev, 0});
    }
    const int n = ::poll(pfds.data(), pfds.size(), static_cast<int>(wait));
    if (n < 0 && errno != EINTR) return;
    now = Clock::now();
    if (wake_fd_ >= 0 && (pfds[0].revents & POLLIN)) {
        uint64_t v;
        (void)!::read(wake_fd_, &v, sizeof v);
    }
    for (size_t i = 0; i < conns_.size(); ++i) {
        Conn& c = *conns_[i];
        const short re = n > 0 ? pfds[first + i].revents : 0;
        if (re & POLLIN) read_from(c);
        if (re & (POLLERR | POLLNVAL)) c.drop = true;
        if (!c.drop) write_to(c, now);
        if (!c.drop) process(c, now);  // requests waiting for the client to take its replies
        if (!c.drop) write_to(c, now);
        if ((re & POLLHUP) && !(re & POLLIN))
            c.drop = true;  // gone both ways: nothing can be written
        if (c.eof && !c.drop && c.queued() == 0 && !c.waiting) c.drop = true;
        if (c.closing && c.queued() == 0) c.drop = true;
        if (!c.drop) enforce_timeouts(c, now);
    }
    for (auto& c : conns_)
        if (c->drop) close_conn(*c);
    std::erase_if(conns_, [](const auto& c) { return c->fd < 0; });
    if (n > 0 && (pfds[first - 1].revents & POLLIN)) accept_all(now);
    size_t ctl = 0;
    for (const auto& c : conns_) ctl += c->s.controller;
    stats_.clients.store(conns_.size(), std::memory_order_relaxed);
    stats_.controllers.store(ctl, std::memory_order_relaxed);
    stats_.queued_output.store(total_out_, std::memory_order_relaxed);
}

void SocketServer::close_conn(Conn& c) {
    if (c.fd < 0) return;
    total_out_ -= c.queued();
    c.out.clear();
    c.out_off = 0;
    ::close(c.fd);
    c.fd = -1;
}

void SocketServer::accept_all(Clock::time_point now) {
    for (int k = 0; k < kAcceptPerRound; ++k) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        auto c = std::make_unique<Conn>();
        c->fd = fd;
        c->s.id = ++next_id_;
        c->s.peer = peer_credentials(fd);
        c->dec = proto_.decoder();
        c->accepted = c->active = now;
        size_t ordinary = 0, reserved = 0;
        for (const auto& o : conns_) (o->s.reserved ? reserved : ordinary) += 1;
        if (ordinary >= limits_.max_clients && limits_.evict_idle_when_full) {
            Conn* victim = nullptr;
            for (auto& o : conns_)
                if (!o->s.reserved && !o->s.controller && !o->waiting &&
                    now - o->active >= limits_.evict_min_idle &&
                    (!victim || o->active < victim->active))
                    victim = o.get();
            if (victim) {
                refuse(victim->s, Refusal::evicted_idle,
                       "closed after " + std::to_string(ms(now - victim->active)) +
                           " ms without a request to make room for a new client (all " +
                           std::to_string(limits_.max_clients) + " slots taken)");
                std::vector<uint8_t> bye;
                proto_.error(bye, "closing this connection: idle while all " +
                                      std::to_string(limits_.max_clients) +
                                      " client slots are taken and another client is waiting; "
                                      "reconnect when needed");
                if (victim->queued() == 0)
                    (void)!::send(victim->fd, bye.data(), bye.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
                close_conn(*victim);
                std::erase_if(conns_, [](const auto& o) { return o->fd < 0; });
                --ordinary;
            }
        }
        if (ordinary < limits_.max_clients) {
            stats_.accepted.fetch_add(1, std::memory_order_relaxed);
            conns_.push_back(std::move(c));
            continue;
        }
        if (reserved < limits_.reserved_slots) {
            c->s.reserved = true;
            stats_.accepted.fetch_add(1, std::memory_order_relaxed);
            conns_.push_back(std::move(c));
            continue;
        }
        const std::string limit =
            std::to_string(limits_.max_clients) +
            (limits_.reserved_slots ? " plus " + std::to_string(limits_.reserved_slots) +
                                          " reserved for the controller"
                                    : std::string());
        std::vector<uint8_t> msg;
        proto_.error(msg, "too many " + proto_.clients + " connected (limit " + limit +
                              "); retry later, and close connections you do not use");
        (void)!::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        refuse(c->s, Refusal::too_many_clients,
               "refused: " + std::to_string(conns_.size()) + " clients connected (limit " + limit +
                   ")");
        ::close(fd);
    }
}

void SocketServer::read_from(Conn& c) {
    uint8_t buf[kReadChunk];
    size_t got = 0;
    while (!c.drop && !c.closing && !c.eof && !c.paused(limits_.output_pause) &&
           got < kReadPerRound) {
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) c.drop = true;
            return;
        }
        if (n == 0) {  // the peer is done sending: answer what is complete, then close
            c.eof = true;
            return;
        }
        got += static_cast<size_t>(n);
        c.dec->feed({buf, static_cast<size_t>(n)});
        const size_t need = c.dec->expected();
        if (!c.s.controller && !c.dec->failed() && need > limits_.big_reply) {
            const size_t total = input_in_progress();
            if (total > need && total > limits_.max_input_total) {
                refuse(c.s, Refusal::busy_input,
                       "a request of " + std::to_string(need) + " bytes while " +
                           std::to_string(total - need) +
                           " bytes of requests from other clients are being received (limit " +
                           std::to_string(limits_.max_input_total) + ")");
                const size_t before = c.out.size();
                proto_.error(c.out, "busy: " + std::to_string(total - need) +
                                        " bytes of requests from other clients are being received; "
                                        "retry on a new connection");
                total_out_ += c.out.size() - before;
                c.closing = true;
                return;
            }
        }
        process(c, Clock::now());
    }
}

void SocketServer::process(Conn& c, Clock::time_point now) {
    while (!c.drop && !c.closing && !c.paused(limits_.output_pause)) {
        std::span<const uint8_t> msg;
        const Decoded d = c.dec->next(msg);
        if (d == Decoded::need_more) return;
        if (c.queued() == 0) {  // reuse the buffer from the start
            c.out.clear();
            c.out_off = 0;
        }
        const size_t before = c.out.size();
        if (d == Decoded::too_long) {
            proto_.error(c.out, c.dec->error() + "; closing the connection");
            total_out_ += c.out.size() - before;
            refuse(c.s, Refusal::request_too_long, c.dec->error());
            c.closing = true;
            return;
        }
        stats_.requests.fetch_add(1, std::memory_order_relaxed);
        c.active = now;
        auto over_budget = [&](size_t bytes) {
            return bytes > limits_.big_reply && !c.s.controller && total_out_ > 0 &&
                   total_out_ + bytes > limits_.max_output_total;
        };
        const size_t estimate = proto_.reply_estimate ? proto_.reply_estimate(msg) : 0;
        if (!c.s.reserved && over_budget(estimate)) {
            proto_.error(c.out, "busy: " + std::to_string(total_out_) +
                                    " bytes of replies are queued for other clients (limit " +
                                    std::to_string(limits_.max_output_total) + "); retry");
            total_out_ += c.out.size() - before;
            refuse(c.s, Refusal::busy_output,
                   "a reply of about " + std::to_string(estimate) + " bytes refused while " +
                       std::to_string(total_out_) + " bytes are queued (limit " +
                       std::to_string(limits_.max_output_total) + ")");
            c.hold = true;
            continue;
        }
        try {
            proto_.handle(c.s, msg, c.out);
        } catch (const std::exception& e) {
            c.s.defer = false;
            c.out.resize(before);
            proto_.error(c.out, std::string("internal error: ") + e.what());
        }
        if (c.s.defer) {  // answered later through deliver()
            c.s.defer = false;
            c.out.resize(before);
            c.waiting = true;
            return;
        }
        const size_t added = c.out.size() - before;
        if (over_budget(added)) {
            c.out.resize(before);
            proto_.error(c.out, "busy: " + std::to_string(total_out_) +
                                    " bytes of replies are queued for other clients (limit " +
                                    std::to_string(limits_.max_output_total) + "); retry");
            refuse(c.s, Refusal::busy_output,
                   "a reply of " + std::to_string(added) + " bytes refused while " +
                       std::to_string(total_out_) + " bytes are queued (limit " +
                       std::to_string(limits_.max_output_total) + ")");
            c.hold = true;
        }
        total_out_ += c.out.size() - before;
        if (c.s.reserved && !c.s.controller) c.closing = true;  // the handler refused it already
        if (c.s.close_after_reply) c.closing = true;
        if (!c.s.controller && c.queued() > limits_.max_output_client) {
            refuse(c.s, Refusal::output_overflow,
                   std::to_string(c.queued()) + " bytes of replies queued (limit " +
                       std::to_string(limits_.max_output_client) + "); disconnected");
            c.drop = true;
            return;
        }
    }
}

void SocketServer::write_to(Conn& c, Clock::time_point now) {
    while (c.queued()) {
        const ssize_t n =
            ::send(c.fd, c.out.data() + c.out_off, c.queued(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c.out_off += static_cast<size_t>(n);
            total_out_ -= static_cast<size_t>(n);
            c.active = now;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        c.drop = true;
        return;
    }
    c.out.clear();
    c.out_off = 0;
    c.hold = false;
    if (c.out.capacity() > (1u << 20)) std::vector<uint8_t>().swap(c.out);  // a big reply is gone
}

bool SocketServer::deliver(uint64_t id, std::span<const uint8_t> reply) {
    for (auto& cp : conns_) {
        Conn& c = *cp;
        if (c.s.id != id || c.fd < 0 || c.drop) continue;
        const auto now = Clock::now();
        if (c.queued() == 0) {
            c.out.clear();
            c.out_off = 0;
        }
        c.out.insert(c.out.end(), reply.begin(), reply.end());
        total_out_ += reply.size();
        c.waiting = false;
        c.active = now;
        write_to(c, now);
        if (!c.drop) process(c, now);  // requests it sent meanwhile
        if (!c.drop) write_to(c, now);
        stats_.queued_output.store(total_out_, std::memory_order_relaxed);
        return true;
    }
    return false;
}

void SocketServer::enforce_timeouts(Conn& c, Clock::time_point now) {
    if (c.s.controller || c.waiting) return;
    if (c.s.reserved && now - c.accepted >= limits_.identify_timeout) {
        refuse(c.s, Refusal::not_controller,
               "took a reserved slot and did not identify as the controller within " +
                   std::to_string(limits_.identify_timeout.count()) + " ms; closed");
        c.drop = true;
        return;
    }
    if (now - c.active < limits_.idle_timeout) return;
    std::string state = "idle";
    if (c.queued())
        state = "not reading its " + std::to_string(c.queued()) + " bytes of replies";
    else if (c.dec->buffered())
        state = "a partial request of " + std::to_string(c.dec->buffered()) + " bytes pending";
    refuse(c.s, Refusal::idle_timeout,
           state + " for " + std::to_string(limits_.idle_timeout.count()) + " ms; closed");
    if (c.queued() == 0) {
        std::vector<uint8_t> bye;
        proto_.error(bye, "closing this connection: no complete request for " +
                              std::to_string(limits_.idle_timeout.count()) +
                              " ms (idle timeout); reconnect when needed");
        (void)!::send(c.fd, bye.data(), bye.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    c.drop = true;
}

}  // namespace fulcrum
