#include "fulcrum/control/sync_peer.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <system_error>

#include "fulcrum/sync_auth.hpp"

#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78  // linux/in6.h; glibc's netinet/in.h may lack it
#endif

namespace fulcrum::control {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// ---- the dataplane side ---------------------------------------------------------------------

Expected<std::vector<fl_sync_record>> parse_sync_records(std::span<const uint8_t> body,
                                                         const char* op) {
    if (body.size() % kSyncRecordLen != 0)
        return Error{std::string(op) + " reply of " + std::to_string(body.size()) +
                     " bytes is not a whole number of " + std::to_string(kSyncRecordLen) +
                     "-byte sync records (dataplane and fulcrumd from different versions?)"};
    std::vector<fl_sync_record> out(body.size() / kSyncRecordLen);
    if (!out.empty()) std::memcpy(out.data(), body.data(), body.size());
    return out;
}

Expected<SyncInstallResult> parse_sync_install_reply(std::span<const uint8_t> body) {
    try {
        const auto j = nlohmann::json::parse(body.begin(), body.end());
        if (!j.is_object()) throw std::invalid_argument("not a JSON object");
        SyncInstallResult r;
        auto field = [&](const char* name, uint64_t& out) {
            if (!j.contains(name) || !j[name].is_number_unsigned())
                throw std::invalid_argument(std::string("no unsigned integer \"") + name + "\"");
            out = j[name].get<uint64_t>();
        };
        field("queued", r.queued);
        field("invalid", r.invalid);
        field("unknown_server", r.unknown_server);
        field("ring_full", r.ring_full);
        return r;
    } catch (const std::exception& e) {
        return Error{
            std::string("malformed sync_install reply from the dataplane (") + e.what() +
            "): " + std::string(body.begin(), body.begin() + std::min<size_t>(body.size(), 200))};
    }
}

CtlSyncDataplane::CtlSyncDataplane(std::string socket_path, std::chrono::milliseconds timeout)
    : path_(std::move(socket_path)), timeout_(timeout) {}

Expected<ctl::Reply> CtlSyncDataplane::call(ctl::Op op, std::span<const uint8_t> body) {
    if (!client_.connected()) {
        auto c = ctl::Client::connect(path_, timeout_);
        if (!c) return Error{c.error()};
        // fulcrumd's own connection: the dataplane never idles it out and allows it large
        // replies (a dump of a big table).
        auto h = c->hello("controller");
        if (!h) return Error{h.error()};
        if (h->status != ctl::Status::ok)
            return Error{"the dataplane refused the sync connection's hello on " + path_ + ": " +
                         h->text()};
        client_ = std::move(*c);
    }
    auto r = client_.request(op, body);
    if (!r) {
        // A transport error leaves the stream in an unknown state: reconnect next time.
        client_ = ctl::Client();
        return Error{r.error()};
    }
    if (r->status != ctl::Status::ok)
        return Error{std::string("the dataplane refused ") +
                     ctl::op_name(static_cast<uint8_t>(op)) + " (op " +
                     std::to_string(static_cast<unsigned>(op)) + ") on " + path_ + ": " +
                     r->text()};
    return r;
}

Expected<std::vector<fl_sync_record>> CtlSyncDataplane::drain(size_t max, uint32_t refresh_ms) {
    const std::string body = nlohmann::json{{"max", max}, {"refresh_ms", refresh_ms}}.dump();
    auto r = call(kOpSyncDrain, {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
    if (!r) return Error{r.error()};
    return parse_sync_records(r->body, "sync_drain");
}

Expected<SyncInstallResult> CtlSyncDataplane::install(std::span<const fl_sync_record> records) {
    if (records.size() > kSyncInstallMaxRecords)
        return Error{"sync_install of " + std::to_string(records.size()) +
                     " records exceeds the limit of " + std::to_string(kSyncInstallMaxRecords) +
                     " per request (a fulcrumd bug: it splits larger batches)"};
    auto r = call(kOpSyncInstall, {reinterpret_cast<const uint8_t*>(records.data()),
                                   records.size() * kSyncRecordLen});
    if (!r) return Error{r.error()};
    return parse_sync_install_reply(r->body);
}

Expected<std::vector<fl_sync_record>> CtlSyncDataplane::dump() {
    auto r = call(kOpSyncDump, {});
    if (!r) return Error{r.error()};
    return parse_sync_records(r->body, "sync_dump");
}

// ---- configuration --------------------------------------------------------------------------

void validate(const SyncPeerConfig& c) {
    auto bad = [](const std::string& m) { throw std::invalid_argument("sync: " + m); };
    if (c.local.family == Family::none) bad("no local address to bind the sync socket to");
    if (c.peer.family == Family::none) bad("no peer address");
    if (c.local.family != c.peer.family)
        bad("local address " + c.local.str() + " and peer address " + c.peer.str() +
            " are of different families; use two IPv4 or two IPv6 addresses");
    for (const IpAddr* a : {&c.local, &c.peer})
        if (a->is_v6() && a->bytes[0] == 0xfe && (a->bytes[1] & 0xc0) == 0x80)
            bad("IPv6 link-local address " + a->str() +
                " needs an interface zone, which the sync configuration has no field for; use a "
                "global or unique-local address on the sync link");
    const uint16_t peer_port = c.peer_port ? c.peer_port : c.port;
    if (c.local == c.peer && c.port == peer_port)
        bad("the peer " + c.peer.str() + " port " + std::to_string(peer_port) +
            " is this balancer's own sync socket; configure the other balancer's address");
    if (c.rate == 0) bad("rate 0 records/s would never send; use at least 1");
    if (c.max_datagram > FL_SYNC_MAX_DATAGRAM ||
        c.max_datagram < kSyncHeaderLen + kSyncRecordLen + FL_SYNC_HMAC_LEN)
        bad("max datagram " + std::to_string(c.max_datagram) + " outside " +
            std::to_string(kSyncHeaderLen + kSyncRecordLen + FL_SYNC_HMAC_LEN) + ".." +
            std::to_string(FL_SYNC_MAX_DATAGRAM) + " bytes");
    if (c.drain_min.count() < 1 || c.drain_max < c.drain_min)
        bad("drain interval " + std::to_string(c.drain_min.count()) + ".." +
            std::to_string(c.drain_max.count()) + " ms: need 1 <= min <= max");
    if (c.drain_batch == 0 || c.max_pending < c.drain_batch)
        bad("drain batch " + std::to_string(c.drain_batch) + " and max pending " +
            std::to_string(c.max_pending) + ": need 1 <= batch <= max pending");
    if (c.refresh.count() < 0 || c.refresh.count() > UINT32_MAX)
        bad("refresh " + std::to_string(c.refresh.count()) + " ms out of range");
    if (c.bulk_timeout.count() < 1 || c.bulk_retry.count() < 0)
        bad("bulk timeout must be at least 1 ms and bulk retry not negative");
}

// ---- the peer -------------------------------------------------------------------------------

namespace {

// Logs the first occurrence of a repeating problem, then at most one line per interval saying
// how many were left out.
class LogLimiter {
  public:
    explicit LogLimiter(std::chrono::seconds every = std::chrono::seconds(10)) : every_(every) {}
    template <class... A>
    void warn(TimePoint now, spdlog::format_string_t<A...> fmt, A&&... args) {
        if (last_ != TimePoint{} && now - last_ < every_) {
            ++suppressed_;
            return;
        }
        const std::string m = fmt::format(fmt, std::forward<A>(args)...);
        if (suppressed_)
            spdlog::warn("{} ({} more like this in the last {} s)", m, suppressed_,
                         std::chrono::duration_cast<std::chrono::seconds>(now - last_).count());
        else
            spdlog::warn("{}", m);
        last_ = now;
        suppressed_ = 0;
    }

  private:
    std::chrono::seconds every_;
    TimePoint last_{};
    uint64_t suppressed_ = 0;
};

uint64_t micros(Clock::duration d) {
    return static_cast<uint64_t>(
        std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(d).count()));
}

void add_sample(std::vector<uint32_t>& window, SyncLatency& l, uint64_t us) {
    const uint32_t v = static_cast<uint32_t>(std::min<uint64_t>(us, UINT32_MAX));
    if (window.size() < kSyncLatencyWindow)
        window.push_back(v);
    else
        window[l.samples % kSyncLatencyWindow] = v;
    ++l.samples;
}

void summarize(const std::vector<uint32_t>& window, SyncLatency& l) {
    if (window.empty()) return;
    std::vector<uint32_t> v = window;
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
    };
    l.p50_us = at(0.50);
    l.p99_us = at(0.99);
    l.max_us = v.back();
}

struct Sockaddr {
    sockaddr_storage ss{};
    socklen_t len = 0;
};

Sockaddr make_sockaddr(const IpAddr& a, uint16_t port) {
    Sockaddr s;
    if (a.is_v4()) {
        auto* in = reinterpret_cast<sockaddr_in*>(&s.ss);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        std::memcpy(&in->sin_addr, a.bytes.data(), 4);
        s.len = sizeof(sockaddr_in);
    } else {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&s.ss);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        std::memcpy(&in6->sin6_addr, a.bytes.data(), 16);
        s.len = sizeof(sockaddr_in6);
    }
    return s;
}

std::runtime_error sys_error(const std::string& what) {
    return std::runtime_error("sync: " + what + ": " + std::strerror(errno));
}

struct Pending {
    fl_sync_record rec;
    TimePoint drained;
};

}  // namespace

// Everything only the peer's thread touches.
struct SyncPeer::Impl {
    explicit Impl(const SyncSenderConfig& sc) : encoder(sc) {}

    SyncEncoder encoder;
    SyncSeqTracker tracker;
    Sockaddr peer_addr;
    std::array<IpAddr, 1> peers{};

    // sending
    std::deque<Pending> queue;         // drained records, oldest first
    std::vector<fl_sync_record> bulk;  // the dump being answered
    size_t bulk_next = 0;
    bool bulk_active = false;  // BULK_END still to send
    uint64_t bulk_count = 0;
    bool alternate_bulk = false;  // both queues waiting: take turns
    double tokens = 0;
    TimePoint tokens_at{};
    size_t deferred_mark = 0;  // queue records already counted rate_limited
    TimePoint next_drain{};
    std::chrono::milliseconds drain_interval{};

    // receiving / bulk resync as the requester
    bool want_bulk = true;     // send a BULK_REQUEST when allowed
    bool outstanding = false;  // a request is waiting for its BULK_END
    TimePoint requested_at{};
    TimePoint last_bulk_rx{};
    bool ever_requested = false;
    uint64_t bulk_rx = 0;       // bulk records since the request
    bool bulk_damaged = false;  // gap or failed install since the request

    // digest: known once the daemon published its first snapshot. Until then the peer neither
    // sends (its datagrams would carry no digest, which the other balancer refuses) nor
    // installs (the dataplane has no snapshot to resolve records against).
    uint64_t digest = 0;
    bool digest_known = false;
    bool answer_waiting = false;  // the peer's bulk request, held until the digest is known
    uint64_t answer_digest = 0;   // that request's configuration digest
    uint64_t logged_mismatch_ours = 0, logged_mismatch_theirs = 0;
    bool mismatch_logged = false;

    LogLimiter log_send, log_dp, log_refused, log_recv;
};

SyncPeer::SyncPeer(const SyncPeerConfig& cfg, SyncDataplane& dataplane)
    : cfg_(cfg), dp_(dataplane), boot_id_(new_sync_boot_id()) {
    validate(cfg_);
    if (cfg_.peer_port == 0) cfg_.peer_port = cfg_.port;
    if (!cfg_.key_file.empty()) {
        auto key = load_sync_key_file(cfg_.key_file);
        if (!key) throw std::runtime_error("sync: " + key.error());
        auth_ = std::make_unique<HmacSha256Auth>(*key);
    }
    SyncSenderConfig sc;
    sc.boot_id = boot_id_;
    sc.max_datagram = cfg_.max_datagram;
    sc.auth = auth_.get();
    impl_ = std::make_unique<Impl>(sc);
    impl_->peer_addr = make_sockaddr(cfg_.peer, cfg_.peer_port);
    impl_->peers[0] = cfg_.peer;
    impl_->drain_interval = cfg_.drain_min;

    const bool v6 = cfg_.local.is_v6();
    fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw sys_error("cannot create the UDP socket");
    auto fail = [&](const std::string& what) {
        const auto e = sys_error(what);
        ::close(fd_);
        fd_ = -1;
        return e;
    };
    const int one = 1, ttl = 255;
    // TTL 255 out, and the received TTL reported with each datagram: a peer that is not
    // directly attached cannot reach 255 (docs/sync-protocol.md, "What the receiver does").
    if (v6) {
        if (::setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0 ||
            ::setsockopt(fd_, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof ttl) != 0 ||
            ::setsockopt(fd_, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof one) != 0)
            throw fail("cannot set the hop limit options on the IPv6 sync socket");
    } else {
        if (::setsockopt(fd_, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) != 0 ||
            ::setsockopt(fd_, IPPROTO_IP, IP_RECVTTL, &one, sizeof one) != 0)
            throw fail("cannot set the TTL options on the IPv4 sync socket");
    }
    // Room for a bulk answer arriving while this thread waits for the dataplane to install
    // the previous batch: the default buffer (rmem_default, about 200 KiB) holds about a
    // hundred datagrams, which a peer sending at the rate cap fills in milliseconds; each
    // overflow is a sequence gap and a whole new bulk resync. SO_*BUFFORCE needs
    // CAP_NET_ADMIN (fulcrumd has it); without it the kernel's rmem_max/wmem_max cap applies.
    for (const auto& [force, plain] : {std::pair{SO_RCVBUFFORCE, SO_RCVBUF}, std::pair{SO_SNDBUFFORCE, SO_SNDBUF}}) {
        const int size = static_cast<int>(kSyncSocketBuffer);
        if (::setsockopt(fd_, SOL_SOCKET, force, &size, sizeof size) != 0)
            (void)::setsockopt(fd_, SOL_SOCKET, plain, &size, sizeof size);
    }
    // Datagrams the kernel dropped for want of buffer space, reported with each datagram.
    (void)::setsockopt(fd_, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    // The local address lives on the dataplane's exception interface, which exists only while
    // the dataplane runs (and is recreated when it restarts): bind to it even when it is not
    // (yet) configured, as keepalived and other HA daemons do with their addresses.
    if (::setsockopt(fd_, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_FREEBIND : IP_FREEBIND, &one,
                     sizeof one) != 0)
        throw fail("cannot set IP_FREEBIND on the sync socket");
    const Sockaddr local = make_sockaddr(cfg_.local, cfg_.port);
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&local.ss), local.len) != 0)
        throw fail("cannot bind the sync socket to " + cfg_.local.str() + " port " +
                   std::to_string(cfg_.port) +
                   " (is the address configured on this host, and the port free?)");
    Sockaddr bound;
    bound.len = sizeof bound.ss;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&bound.ss), &bound.len);
    local_port_ = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&bound.ss)->sin6_port
                           : reinterpret_cast<sockaddr_in*>(&bound.ss)->sin_port);
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) throw fail("cannot create the sync peer's wake-up eventfd");
    stats_.boot_id = boot_id_;
}

SyncPeer::~SyncPeer() {
    stop();
    if (fd_ >= 0) ::close(fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

void SyncPeer::start() {
    if (thread_.joinable()) return;
    stop_.store(false);
    spdlog::info("sync: peer {} port {}, local {} port {}, boot id {:016x}, {}rate {} records/s",
                 cfg_.peer.str(), cfg_.peer_port, cfg_.local.str(), local_port_, boot_id_,
                 auth_ ? "HMAC-SHA256, " : "no key (no HMAC), ", cfg_.rate);
    thread_ = std::thread([this] { run(); });
}

void SyncPeer::stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
    thread_.join();
}

void SyncPeer::set_config_digest(uint64_t digest) {
    digest_.store(digest);
    digest_set_.store(true);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void SyncPeer::request_bulk() {
    want_bulk_.store(true);
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

SyncPeerStats SyncPeer::stats() const {
    std::lock_guard lk(stats_mu_);
    SyncPeerStats s = stats_;
    s.bulk_complete = bulk_complete();
    summarize(lag_window_, s.send_lag);
    summarize(install_window_, s.install_time);
    return s;
}

void SyncPeer::run() {
    Impl& m = *impl_;
    const auto now0 = Clock::now();
    m.tokens_at = now0;
    // Start with a burst's worth: what 20 ms of the rate allows, at least one full datagram,
    // and at most kSyncMaxBurstDatagrams of them: the datagrams leave through the dataplane's
    // exception interface, whose kernel queue (a TAP's 1000 frames) drops what the dataplane
    // has not read yet — a 20 ms burst at a high rate cap (1000 datagrams at 1M records/s)
    // overflowed it and cost a sequence gap and a whole new bulk resync (bench/sync.sh).
    const double full = static_cast<double>(m.encoder.records_per_datagram());
    const double burst = std::clamp(static_cast<double>(cfg_.rate) / 50.0, full, full * kSyncMaxBurstDatagrams);
    m.tokens = burst;
    m.next_drain = now0;
    std::vector<uint8_t> rxbuf(65536);
    std::vector<fl_sync_record> batch;  // the records of one datagram being sent
    std::vector<fl_sync_record> rx;     // received records waiting for one sync_install
    std::vector<std::vector<uint8_t>> out;
    // Datagrams sendto() could not take (socket buffer full), oldest first: they already hold
    // their sequence numbers, so they go out before anything else once the socket is writable.
    struct Outgoing {
        std::vector<uint8_t> bytes;
        size_t records = 0;
        bool bulk = false;
        bool incremental = false;  // drained records: a lag sample
        TimePoint drained{};
    };
    std::deque<Outgoing> blocked;

    auto lock = [this] { return std::unique_lock(stats_mu_); };

    auto refresh_tokens = [&](TimePoint now) {
        m.tokens =
            std::min(burst, m.tokens + std::chrono::duration<double>(now - m.tokens_at).count() *
                                           static_cast<double>(cfg_.rate));
        m.tokens_at = now;
    };

    // True when the datagram is done with (sent, or lost to a hard error and counted); false
    // when the socket cannot take it now.
    auto try_send = [&](const Outgoing& o) -> bool {
        const ssize_t n =
            ::sendto(fd_, o.bytes.data(), o.bytes.size(), 0,
                     reinterpret_cast<const sockaddr*>(&m.peer_addr.ss), m.peer_addr.len);
        const int err = errno;
        const auto now = Clock::now();
        if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS)) return false;
        auto lk = lock();
        if (n < 0) {
            ++stats_.send_errors;
            lk.unlock();
            m.log_send.warn(now,
                            "sync: sending to {} port {} failed: {} (the datagram is lost; "
                            "the peer sees a sequence gap and asks for a resync)",
                            cfg_.peer.str(), cfg_.peer_port, std::strerror(err));
            return true;
        }
        ++stats_.datagrams_sent;
        stats_.records_sent += o.records;
        if (o.bulk) stats_.bulk_records_sent += o.records;
        if (o.incremental) add_sample(lag_window_, stats_.send_lag, micros(now - o.drained));
        return true;
    };
    auto flush = [&]() -> bool {
        while (!blocked.empty()) {
            if (!try_send(blocked.front())) return false;
            blocked.pop_front();
        }
        return true;
    };
    // Sends, or queues behind the blocked ones; false when it had to be queued.
    auto submit = [&](Outgoing&& o) -> bool {
        if (!flush() || !try_send(o)) {
            blocked.push_back(std::move(o));
            return false;
        }
        return true;
    };
    // Control datagrams are not rate limited: they are rare and small.
    auto send_control = [&](std::vector<uint8_t>&& d) { return submit(Outgoing{std::move(d)}); };

    auto send_request = [&](TimePoint now) {
        {
            // Counted first: whoever receives the request can rely on seeing it counted.
            auto lk = lock();
            ++stats_.bulk_requests_sent;
        }
        send_control(m.encoder.bulk_request());  // a blocked datagram goes out with the next one
        m.outstanding = true;
        m.ever_requested = true;
        m.requested_at = now;
        m.last_bulk_rx = now;
        m.bulk_rx = 0;
        m.bulk_damaged = false;
        m.want_bulk = false;
    };

    auto set_pending_stat = [&] {
        auto lk = lock();
        stats_.pending = m.queue.size() + (m.bulk.size() - m.bulk_next);
    };

    auto install = [&](std::span<const fl_sync_record> recs, std::span<const TimePoint> received) {
        for (size_t i = 0; i < recs.size(); i += kSyncInstallMaxRecords) {
            const auto part = recs.subspan(i, std::min(kSyncInstallMaxRecords, recs.size() - i));
            auto r = dp_.install(part);
            const auto done = Clock::now();
            auto lk = lock();
            if (!r) {
                ++stats_.dataplane_errors;
                stats_.install_failed += part.size();
                lk.unlock();
                m.bulk_damaged = true;
                // Records were lost here: the next complete bulk puts them back.
                m.want_bulk = true;
                bulk_complete_.store(false, std::memory_order_release);
                m.log_dp.warn(done,
                              "sync: installing {} records from the peer failed: {} "
                              "(a bulk resync is requested)",
                              part.size(), r.error());
                return;
            }
            stats_.installed += r->queued;
            stats_.install_invalid += r->invalid;
            stats_.install_unknown_server += r->unknown_server;
            stats_.install_ring_full += r->ring_full;
            if (i + part.size() >= recs.size())
                for (const TimePoint t : received)
                    add_sample(install_window_, stats_.install_time, micros(done - t));
        }
    };

    auto answer_bulk = [&](TimePoint now) {
        if (m.bulk_active) {
            auto lk = lock();
            ++stats_.bulk_aborted;
        }
        m.bulk.clear();
        m.bulk_next = 0;
        m.bulk_active = false;
        auto d = dp_.dump();
        if (!d) {
            {
                auto lk = lock();
                ++stats_.dataplane_errors;
            }
            m.log_dp.warn(now,
                          "sync: cannot answer the peer's bulk request: sync_dump failed: {} "
                          "(the peer asks again after its bulk timeout)",
                          d.error());
            return;
        }
        m.bulk = std::move(*d);
        m.bulk_active = true;
        m.bulk_count = m.bulk.size();
        spdlog::info("sync: answering the bulk request of {} with {} records", cfg_.peer.str(),
                     m.bulk_count);
    };

    // Reads and handles every datagram waiting (bounded per round so sending is not starved).
    auto receive = [&] {
        rx.clear();
        std::vector<TimePoint> received;  // one per accepted RECORDS datagram
        for (int round = 0; round < 256; ++round) {
            sockaddr_storage from{};
            iovec iov{rxbuf.data(), rxbuf.size()};
            alignas(cmsghdr) uint8_t cbuf[CMSG_SPACE(sizeof(int)) * 4];
            msghdr msg{};
            msg.msg_name = &from;
            msg.msg_namelen = sizeof from;
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf;
            msg.msg_controllen = sizeof cbuf;
            const ssize_t n = ::recvmsg(fd_, &msg, MSG_TRUNC);
            const auto now = Clock::now();
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                if (errno == EINTR) continue;
                // ECONNREFUSED and the like: an ICMP error for an earlier send; nothing to read.
                m.log_recv.warn(now, "sync: receiving failed: {}", std::strerror(errno));
                break;
            }
            IpAddr src;
            if (from.ss_family == AF_INET)
                src = IpAddr::v4(reinterpret_cast<const uint8_t*>(
                    &reinterpret_cast<const sockaddr_in*>(&from)->sin_addr));
            else if (from.ss_family == AF_INET6)
                src = IpAddr::v6(reinterpret_cast<const uint8_t*>(
                    &reinterpret_cast<const sockaddr_in6*>(&from)->sin6_addr));
            int ttl = -1;
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) ||
                    (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT))
                    std::memcpy(&ttl, CMSG_DATA(c), sizeof ttl);
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
                    uint32_t drops = 0;  // cumulative since the socket was created
                    std::memcpy(&drops, CMSG_DATA(c), sizeof drops);
                    auto lk = lock();
                    stats_.receive_overflows = drops;
                }
            }
            SyncError err = check_sync_source(
                src, ttl >= 0 && ttl <= 255 ? static_cast<uint8_t>(ttl) : 0, m.peers);
            SyncDatagram dg;
            if (err == SyncError::ok) {
                // MSG_TRUNC: n is the real length; a longer datagram than the buffer is cut,
                // and decode refuses it (total_len above the bytes it was given).
                const size_t len = std::min(static_cast<size_t>(n), rxbuf.size());
                SyncDecodeOptions opt;
                opt.auth = auth_.get();
                opt.check_digest = m.digest_known;
                opt.config_digest = m.digest;
                opt.own_boot_id = boot_id_;
                err = decode_sync_datagram({rxbuf.data(), len}, opt, dg);
                if (err == SyncError::ok || err == SyncError::config_mismatch) {
                    // Authenticated (the HMAC is checked before the digest): the peer's digest
                    // can be reported.
                    const uint64_t theirs = dg.header.config_digest;
                    {
                        auto lk = lock();
                        stats_.peer_config_digest = theirs;
                    }
                    if (err == SyncError::config_mismatch &&
                        (!m.mismatch_logged || m.logged_mismatch_ours != m.digest ||
                         m.logged_mismatch_theirs != theirs)) {
                        spdlog::error(
                            "sync: the peer {} runs configuration digest {:016x}, this balancer "
                            "{:016x}: the two balancers' service configurations differ (services "
                            "or servers, or the flow hash seed); its sync datagrams are refused "
                            "until both run the same configuration",
                            cfg_.peer.str(), theirs, m.digest);
                        m.mismatch_logged = true;
                        m.logged_mismatch_ours = m.digest;
                        m.logged_mismatch_theirs = theirs;
                    } else if (err == SyncError::ok && m.mismatch_logged) {
                        spdlog::info(
                            "sync: the peer {} and this balancer agree on configuration "
                            "digest {:016x} again",
                            cfg_.peer.str(), m.digest);
                        m.mismatch_logged = false;
                    }
                }
            }
            {
                auto lk = lock();
                ++stats_.datagrams_received;
                if (err != SyncError::ok) ++stats_.refused[static_cast<size_t>(err)];
            }
            if (err != SyncError::ok) {
                if (err != SyncError::config_mismatch)
                    m.log_refused.warn(now, "sync: datagram from {} refused: {}", src.str(),
                                       sync_error_message(err, dg));
                continue;
            }
            const fl_sync_header& h = dg.header;
            const SyncSeqResult sr = m.tracker.observe(h.boot_id, h.sequence);
            // Before the new peer boot id shows in the stats: nobody may see the new boot id
            // together with the old boot's completed resync.
            if (sr.verdict == SyncSeq::first || sr.verdict == SyncSeq::reboot)
                bulk_complete_.store(false, std::memory_order_release);
            {
                auto lk = lock();
                const SyncSeqStats& ts = m.tracker.stats();
                stats_.seq_gaps = ts.gaps;
                stats_.seq_lost = ts.lost;
                stats_.seq_reboots = ts.reboots;
                stats_.seq_old = ts.old;
                stats_.seq_stale_boot = ts.stale_boot;
                if (sr.accept) {
                    ++stats_.datagrams_accepted;
                    stats_.peer_boot_id = h.boot_id;
                }
            }
            if (!sr.accept) {
                m.log_refused.warn(now,
                                   "sync: datagram from {} refused: sequence {} of boot {:016x} "
                                   "is {} (duplicate, reordered or replayed)",
                                   src.str(), h.sequence, h.boot_id, sync_seq_name(sr.verdict));
                continue;
            }
            switch (sr.verdict) {
                case SyncSeq::first:
                case SyncSeq::reboot:
                    // Another process of the peer: what we had resynced is not its table.
                    if (sr.verdict == SyncSeq::reboot) {
                        spdlog::info(
                            "sync: the peer {} restarted (boot id {:016x}); asking for "
                            "its whole table",
                            cfg_.peer.str(), h.boot_id);
                        m.outstanding = false;
                    }
                    // A request already waiting is answered by this process of the peer (or
                    // times out and is sent again): no second one.
                    if (!m.outstanding) m.want_bulk = true;
                    break;
                case SyncSeq::gap:
                    m.log_recv.warn(now,
                                    "sync: {} datagrams from {} lost (sequence gap); asking "
                                    "for a bulk resync",
                                    sr.lost, cfg_.peer.str());
                    // During a bulk answer the loss makes it incomplete; its BULK_END then
                    // asks again. Otherwise ask now.
                    m.bulk_damaged = true;
                    if (!m.outstanding) m.want_bulk = true;
                    break;
                default:
                    break;
            }
            switch (h.type) {
                case FL_SYNC_T_RECORDS: {
                    const size_t cnt = dg.count();
                    if (!m.digest_known) {
                        // Nothing to install them into yet: the bulk request sent after the
                        // first publish brings them (the peer's dump is taken after it).
                        auto lk = lock();
                        stats_.records_received += cnt;
                        stats_.records_before_publish += cnt;
                        break;
                    }
                    const size_t at = rx.size();
                    rx.resize(at + cnt);
                    std::memcpy(rx.data() + at, dg.records.data(), cnt * kSyncRecordLen);
                    received.push_back(now);
                    {
                        auto lk = lock();
                        stats_.records_received += cnt;
                        if (h.flags & FL_SYNC_F_BULK) stats_.bulk_records_received += cnt;
                    }
                    if ((h.flags & FL_SYNC_F_BULK) && m.outstanding) {
                        m.bulk_rx += cnt;
                        m.last_bulk_rx = now;
                    }
                    break;
                }
                case FL_SYNC_T_BULK_REQUEST: {
                    {
                        auto lk = lock();
                        ++stats_.bulk_requests_received;
                    }
                    if (m.digest_known) {
                        answer_bulk(now);
                    } else {  // answered after the first publish, if the digests agree then
                        m.answer_waiting = true;
                        m.answer_digest = h.config_digest;
                    }
                    break;
                }
                case FL_SYNC_T_BULK_END: {
                    {
                        auto lk = lock();
                        ++stats_.bulk_ends_received;
                    }
                    if (!m.outstanding) break;  // not an answer to a request of ours
                    // Records of this rx are installed before the verdict, so a failed
                    // install damages this bulk.
                    install(rx, received);
                    rx.clear();
                    received.clear();
                    m.outstanding = false;
                    if (m.bulk_rx == h.aux && !m.bulk_damaged) {
                        bulk_complete_.store(true, std::memory_order_release);
                        spdlog::info("sync: bulk resync from {} complete ({} records)",
                                     cfg_.peer.str(), h.aux);
                    } else {
                        {
                            auto lk = lock();
                            ++stats_.bulk_incomplete;
                        }
                        m.log_recv.warn(
                            now,
                            "sync: bulk resync from {} incomplete ({} of {} "
                            "records{}); asking again",
                            cfg_.peer.str(), m.bulk_rx, h.aux,
                            m.bulk_damaged ? ", datagrams lost or an install failed" : "");
                        m.want_bulk = true;
                    }
                    break;
                }
                default:
                    break;  // decode refuses other types
            }
        }
        if (!rx.empty()) install(rx, received);
    };

    auto drain = [&](TimePoint now) {
        const size_t waiting = m.queue.size();
        if (waiting + cfg_.drain_batch > cfg_.max_pending) {
            // The rate cap is behind: leave the records in the dataplane's rings for now.
            auto lk = lock();
            ++stats_.pending_full;
            m.next_drain = now + cfg_.drain_min;
            return;
        }
        auto r = dp_.drain(cfg_.drain_batch, static_cast<uint32_t>(cfg_.refresh.count()));
        const auto got_at = Clock::now();
        if (!r) {
            {
                auto lk = lock();
                ++stats_.dataplane_errors;
            }
            m.log_dp.warn(got_at,
                          "sync: draining records from the dataplane failed: {} "
                          "(retrying every {} ms)",
                          r.error(), cfg_.drain_max.count());
            m.drain_interval = cfg_.drain_max;
            m.next_drain = got_at + m.drain_interval;
            return;
        }
        for (const auto& rec : *r) m.queue.push_back({rec, got_at});
        {
            auto lk = lock();
            stats_.records_drained += r->size();
        }
        // Adaptive: back at the shortest interval while records flow (a full batch means more
        // are waiting), doubling up to drain_max while idle.
        if (r->size() >= cfg_.drain_batch)
            m.drain_interval = std::chrono::milliseconds(0);
        else if (!r->empty())
            m.drain_interval = cfg_.drain_min;
        else
            m.drain_interval =
                std::min(cfg_.drain_max, std::max(cfg_.drain_min, m.drain_interval * 2));
        m.next_drain = got_at + m.drain_interval;
    };

    // Sends what the rate cap allows. Returns when the cap allows the next datagram (or
    // nullopt: nothing waits, or the socket is blocked).
    auto send_pending = [&](TimePoint now) -> std::optional<TimePoint> {
        const size_t per = m.encoder.records_per_datagram();
        refresh_tokens(now);
        if (!flush()) return std::nullopt;
        for (int guard = 0; guard < 4096; ++guard) {
            const size_t bulk_left = m.bulk.size() - m.bulk_next;
            if (m.bulk_active && bulk_left == 0) {
                // The whole dump is out: end the answer now, not after the incremental records
                // still waiting for the rate cap (they follow as usual). Queued behind blocked
                // datagrams if need be, so it never overtakes the dump's last records.
                send_control(m.encoder.bulk_end(m.bulk_count));
                m.bulk_active = false;
                m.bulk.clear();
                m.bulk_next = 0;
                auto lk = lock();
                ++stats_.bulk_served;
            }
            if (m.queue.empty() && bulk_left == 0) return std::nullopt;
            // Both waiting: alternate datagrams so neither starves the other.
            bool take_bulk = bulk_left > 0 && (m.queue.empty() || m.alternate_bulk);
            const size_t n = std::min(per, take_bulk ? bulk_left : m.queue.size());
            if (m.tokens < static_cast<double>(n)) {
                // Count each waiting record once.
                const size_t waiting = m.queue.size() + bulk_left;
                if (waiting > m.deferred_mark) {
                    auto lk = lock();
                    stats_.rate_limited += waiting - m.deferred_mark;
                    m.deferred_mark = waiting;
                }
                const double need =
                    (static_cast<double>(n) - m.tokens) / static_cast<double>(cfg_.rate);
                return now +
                       std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(need)) +
                       std::chrono::microseconds(1);
            }
            m.tokens -= static_cast<double>(n);
            m.deferred_mark = m.deferred_mark > n ? m.deferred_mark - n : 0;
            out.clear();
            TimePoint drained{};
            if (take_bulk) {
                m.encoder.encode_records({m.bulk.data() + m.bulk_next, n}, true, out);
                m.bulk_next += n;
            } else {
                batch.clear();
                drained = m.queue.front().drained;
                for (size_t i = 0; i < n; ++i) {
                    batch.push_back(m.queue.front().rec);
                    m.queue.pop_front();
                }
                m.encoder.encode_records(batch, false, out);
            }
            m.alternate_bulk = !take_bulk;
            if (!submit(Outgoing{std::move(out.front()), n, take_bulk, !take_bulk, drained}))
                return std::nullopt;
        }
        return now;  // more to do at once
    };

    while (!stop_.load()) {
        auto now = Clock::now();
        if (digest_set_.load()) {
            const uint64_t d = digest_.load();
            if (!m.digest_known || d != m.digest) {
                if (!m.digest_known) {
                    uint64_t early;
                    {
                        auto lk = lock();
                        early = stats_.records_before_publish;
                    }
                    spdlog::info("sync: the first snapshot is published (configuration digest "
                                 "{:016x}): syncing with {}{}",
                                 d, cfg_.peer.str(),
                                 early ? fmt::format("; {} records it sent before are left to the "
                                                     "bulk resync", early)
                                       : std::string());
                }
                m.digest = d;
                m.digest_known = true;
                m.encoder.set_config_digest(d);
                auto lk = lock();
                stats_.config_digest = d;
            }
        }
        const bool ready = m.digest_known;
        if (ready && m.answer_waiting) {
            m.answer_waiting = false;
            if (m.answer_digest == m.digest) {
                answer_bulk(now);
            } else {
                // Refused now as it would be had it come after the publish (its datagram was
                // counted as received then).
                auto lk = lock();
                ++stats_.refused[static_cast<size_t>(SyncError::config_mismatch)];
            }
        }
        if (want_bulk_.exchange(false)) {
            m.want_bulk = true;
            m.outstanding = false;  // asked for explicitly: do not wait for an older answer
        }

        receive();
        now = Clock::now();
        if (ready && now >= m.next_drain) drain(now);

        if (m.outstanding && now - std::max(m.requested_at, m.last_bulk_rx) >= cfg_.bulk_timeout) {
            m.log_recv.warn(now, "sync: no bulk answer from {} for {} ms; asking again",
                            cfg_.peer.str(), cfg_.bulk_timeout.count());
            m.outstanding = false;
            m.want_bulk = true;
        }
        std::optional<TimePoint> request_at;
        if (ready && m.want_bulk && !m.outstanding) {
            const TimePoint allowed = m.ever_requested ? m.requested_at + cfg_.bulk_retry : now;
            if (now >= allowed)
                send_request(now);
            else
                request_at = allowed;
        }

        now = Clock::now();
        const std::optional<TimePoint> send_at = send_pending(now);
        set_pending_stat();

        // Sleep until the next thing is due: a drain, the rate cap, a bulk retry or timeout.
        // Before the first publish only a datagram or set_config_digest() (the eventfd) wakes it.
        TimePoint due = ready ? m.next_drain : now + std::chrono::seconds(60);
        if (send_at) due = std::min(due, *send_at);
        if (request_at) due = std::min(due, *request_at);
        if (m.outstanding)
            due = std::min(due, std::max(m.requested_at, m.last_bulk_rx) + cfg_.bulk_timeout);
        now = Clock::now();
        int timeout_ms = 0;
        if (due > now)
            timeout_ms = static_cast<int>(std::min<int64_t>(
                60000,
                std::chrono::duration_cast<std::chrono::milliseconds>(due - now).count() + 1));
        pollfd fds[2] = {{fd_, static_cast<short>(POLLIN | (blocked.empty() ? 0 : POLLOUT)), 0},
                         {wake_fd_, POLLIN, 0}};
        if (::poll(fds, 2, timeout_ms) < 0 && errno != EINTR) {
            // Not expected (EINVAL, ENOMEM); the loop goes on, at most one round per timeout.
            m.log_recv.warn(Clock::now(), "sync: poll failed: {}", std::strerror(errno));
        }
        if (fds[1].revents & POLLIN) {
            uint64_t v;
            [[maybe_unused]] ssize_t n = ::read(wake_fd_, &v, sizeof v);
        }
    }
}

}  // namespace fulcrum::control
