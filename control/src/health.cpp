// Health checker: one thread, one epoll set. TCP checks are non-blocking connect()s whose
// sockets sit in the epoll set directly; HTTP/HTTPS checks are libcurl easy handles driven by
// one multi handle through its socket and timer callbacks (curl_multi_socket_action), with
// curl's sockets in the same epoll set. An eventfd wakes the loop for set_targets() and for
// shutdown.
//
// Shared state (the target table with each target's CheckStatus) is guarded by one mutex that
// is never held while calling out (OnChange, logging), so callers may hold their own locks
// around set_targets()/status() and take them again in OnChange without deadlocking.
// Everything about checks in flight (sockets, curl handles, timers) is owned by the thread.
#include "fulcrum/control/health.hpp"

#include <curl/curl.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

namespace fulcrum::control {

namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// epoll_event.data.u64 layout: the top two bits say what the rest is.
constexpr uint64_t kTagShift = 62;
constexpr uint64_t kTagWake = 0;  // the eventfd
constexpr uint64_t kTagTcp = 1;   // a TCP check socket; the rest is the runner id
constexpr uint64_t kTagCurl = 2;  // a libcurl socket; the rest is the fd
constexpr uint64_t kValueMask = (uint64_t{1} << kTagShift) - 1;

constexpr size_t kMaxBody = 1 << 20;  // HTTP bodies are discarded; longer ones end the check
constexpr auto kCurlGrace = std::chrono::milliseconds(250);  // our backstop after curl's timeout
constexpr Millis kMinInterval{10};
constexpr Millis kMinTimeout{1};

// "Connection refused" -> "connection refused" (thread-safe strerror).
std::string errno_text(int e) {
    std::string s = std::system_category().message(e);
    if (!s.empty()) s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
    return s;
}

// Errors that say the check never left this host (no route, no usable source address), not
// that the server failed it.
bool local_error(int e) { return e == ENETUNREACH || e == EADDRNOTAVAIL; }

std::string timeout_text(Millis timeout) { return "timeout after " + std::to_string(timeout.count()) + " ms"; }

const char* type_name(CheckType t) {
    switch (t) {
        case CheckType::tcp: return "tcp";
        case CheckType::http: return "http";
        case CheckType::https: return "https";
        case CheckType::none: return "none";
    }
    return "?";
}

// Stable spread of first checks over the interval: FNV-1a, then a 64-bit finalizer so that
// keys differing only in their last characters land far apart.
uint64_t key_hash(const std::string& key) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned char c : key) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

Millis effective_interval(const HealthCheckConfig& c) { return std::max(c.interval, kMinInterval); }
Millis effective_timeout(const HealthCheckConfig& c) { return std::max(c.timeout, kMinTimeout); }

bool same_target(const CheckTarget& a, const CheckTarget& b) {
    return a.address == b.address && a.port == b.port && a.cfg == b.cfg;
}

std::string addr_text(const IpAddr& a) { return a.is_v6() ? "[" + a.str() + "]" : a.str(); }

// A host name we can put in a URL and use for SNI (no port, no brackets, no path).
bool plain_host_name(const std::string& h) {
    if (h.empty() || h.size() > 253) return false;
    return std::all_of(h.begin(), h.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    });
}

std::string expected_text(const std::vector<int>& expect) {
    if (expect.empty()) return "2xx or 3xx";
    std::string s;
    for (size_t i = 0; i < expect.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(expect[i]);
    }
    return s;
}

bool status_expected(long code, const std::vector<int>& expect) {
    if (expect.empty()) return code >= 200 && code < 400;
    return std::find(expect.begin(), expect.end(), static_cast<int>(code)) != expect.end();
}

bool is_tls_error(CURLcode c) {
    switch (c) {
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_ENGINE_NOTFOUND:
        case CURLE_SSL_ENGINE_SETFAILED:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_ENGINE_INITFAILED:
        case CURLE_USE_SSL_FAILED:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_SHUTDOWN_FAILED:
        case CURLE_SSL_CRL_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
        case CURLE_SSL_CLIENTCERT:
            return true;
        default:
            return false;
    }
}

void ensure_curl_global_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        // Never cleaned up: other parts of the process may use libcurl too, and global cleanup
        // at exit would race with them.
        const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (rc != CURLE_OK)
            throw std::runtime_error(std::string("curl_global_init: ") + curl_easy_strerror(rc));
    });
}

// One HTTP(S) check in flight: the easy handle and what it points into.
struct HttpCheck {
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    curl_slist* connect_to = nullptr;
    std::array<char, CURL_ERROR_SIZE> errbuf{};
    size_t body_bytes = 0;
    bool body_capped = false;

    HttpCheck() = default;
    HttpCheck(const HttpCheck&) = delete;
    HttpCheck& operator=(const HttpCheck&) = delete;
    ~HttpCheck() {
        if (easy) curl_easy_cleanup(easy);  // after curl_multi_remove_handle (see release())
        curl_slist_free_all(headers);
        curl_slist_free_all(connect_to);
    }

    static size_t discard(char*, size_t size, size_t nmemb, void* userp) {
        auto* self = static_cast<HttpCheck*>(userp);
        const size_t n = size * nmemb;
        self->body_bytes += n;
        if (self->body_bytes > kMaxBody) {
            self->body_capped = true;
            return 0;  // CURLE_WRITE_ERROR; the status line has been seen
        }
        return n;
    }
};

// The thread's view of one target.
struct Runner {
    uint64_t id = 0;
    std::string key;
    uint64_t generation = 0;
    CheckTarget target;
    Millis interval{};
    Millis timeout{};
    TimePoint due{};        // when the current (or next) check is (was) scheduled
    TimePoint started{};    // when the check in flight started
    std::optional<TimePoint> timer;  // our entry in the timer set, if any
    bool in_flight = false;
    int fd = -1;                      // TCP check socket
    std::unique_ptr<HttpCheck> http;  // HTTP check handle
};

}  // namespace

struct HealthChecker::Impl {
    // ---- shared with other threads (mu) -----------------------------------------------------
    struct Entry {
        CheckTarget target;
        CheckStatus status;
        uint64_t generation = 0;
        bool last_ok = false;         // kind of the last result, for the streak
        bool notify_pending = false;  // type none: the "up" verdict is still to be announced
        bool local_logged = false;    // "cannot be checked from this host yet" was logged
    };

    OnChange on_change;
    mutable std::mutex mu;
    std::map<std::string, Entry> entries;
    uint64_t next_generation = 1;
    bool dirty = false;
    std::atomic<bool> stop{false};

    // ---- owned by the checker thread ----------------------------------------------------------
    int epfd = -1;
    int wakefd = -1;
    CURLM* multi = nullptr;
    std::optional<TimePoint> curl_deadline;
    std::unordered_map<uint64_t, Runner> runners;  // by id; nodes are stable
    std::unordered_map<std::string, uint64_t> by_key;
    std::set<std::pair<TimePoint, uint64_t>> timers;
    uint64_t next_runner_id = 1;

    std::thread thread;

    explicit Impl(OnChange cb) : on_change(std::move(cb)) {
        ensure_curl_global_init();
        epfd = ::epoll_create1(EPOLL_CLOEXEC);
        if (epfd < 0) throw std::system_error(errno, std::system_category(), "health: epoll_create1");
        wakefd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (wakefd < 0) {
            const int e = errno;
            ::close(epfd);
            throw std::system_error(e, std::system_category(), "health: eventfd");
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kTagWake << kTagShift;
        if (::epoll_ctl(epfd, EPOLL_CTL_ADD, wakefd, &ev) != 0) {
            const int e = errno;
            close_fds();
            throw std::system_error(e, std::system_category(), "health: epoll_ctl");
        }
        multi = curl_multi_init();
        if (!multi) {
            close_fds();
            throw std::runtime_error("health: curl_multi_init failed");
        }
        curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &Impl::curl_socket_cb);
        curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, this);
        curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &Impl::curl_timer_cb);
        curl_multi_setopt(multi, CURLMOPT_TIMERDATA, this);
        try {
            thread = std::thread([this] { run(); });
        } catch (...) {
            curl_multi_cleanup(multi);
            close_fds();
            throw;
        }
    }

    ~Impl() {
        stop.store(true);
        wake();
        if (thread.joinable()) thread.join();
        release_all();
        curl_multi_cleanup(multi);
        close_fds();
    }

    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    void close_fds() {
        if (wakefd >= 0) ::close(wakefd);
        if (epfd >= 0) ::close(epfd);
        wakefd = epfd = -1;
    }

    void wake() const {
        const uint64_t one = 1;
        // EAGAIN means the counter is already non-zero: the loop will wake anyway.
        (void)!::write(wakefd, &one, sizeof one);
    }

    // ---- public API (any thread) ----------------------------------------------------------------

    void set_targets(std::vector<CheckTarget> targets) {
        std::map<std::string, CheckTarget> incoming;
        for (auto& t : targets) {
            const std::string key = t.key;
            if (!incoming.try_emplace(key, std::move(t)).second)
                spdlog::warn("health: duplicate target key {}: the first one is checked", key);
        }
        {
            std::lock_guard lk(mu);
            for (auto it = entries.begin(); it != entries.end();)
                it = incoming.count(it->first) ? std::next(it) : entries.erase(it);
            for (auto& [key, t] : incoming) {
                auto it = entries.find(key);
                if (it != entries.end() && same_target(it->second.target, t)) continue;  // keeps state
                Entry e;
                e.generation = next_generation++;
                if (t.cfg.type == CheckType::none) {
                    e.status.up = true;
                    e.status.checked = true;
                    e.notify_pending = true;
                }
                e.target = std::move(t);
                entries.insert_or_assign(key, std::move(e));
            }
            dirty = true;
        }
        wake();
    }

    std::map<std::string, CheckStatus> status() const {
        std::map<std::string, CheckStatus> out;
        std::lock_guard lk(mu);
        for (const auto& [key, e] : entries) out.emplace(key, e.status);
        return out;
    }

    bool all_checked() const {
        std::lock_guard lk(mu);
        return std::all_of(entries.begin(), entries.end(), [](const auto& kv) { return kv.second.status.checked; });
    }

    // ---- the thread -------------------------------------------------------------------------------

    void run() {
        while (!stop.load()) {
            try {
                iterate();
            } catch (const std::exception& e) {
                spdlog::error("health: checker loop: {}", e.what());
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            } catch (...) {
                spdlog::error("health: checker loop: unknown exception");
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        }
        try {
            release_all();
        } catch (...) {
        }
    }

    int wait_timeout_ms(TimePoint now) const {
        std::optional<TimePoint> next;
        if (!timers.empty()) next = timers.begin()->first;
        if (curl_deadline && (!next || *curl_deadline < *next)) next = curl_deadline;
        if (!next) return -1;
        if (*next <= now) return 0;
        // Round up: waking a little early would only spin.
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - now).count();
        return static_cast<int>(std::min<int64_t>(ms, 60'000));
    }

    void iterate() {
        std::array<epoll_event, 64> evs;
        const int n = ::epoll_wait(epfd, evs.data(), static_cast<int>(evs.size()), wait_timeout_ms(Clock::now()));
        if (n < 0) {
            if (errno == EINTR) return;
            throw std::system_error(errno, std::system_category(), "epoll_wait");
        }
        if (stop.load()) return;  // no more results or callbacks once the destructor runs
        for (int i = 0; i < n; ++i) {
            const uint64_t tag = evs[size_t(i)].data.u64 >> kTagShift;
            const uint64_t value = evs[size_t(i)].data.u64 & kValueMask;
            const uint32_t what = evs[size_t(i)].events;
            if (tag == kTagWake) {
                uint64_t count;
                (void)!::read(wakefd, &count, sizeof count);
            } else if (tag == kTagTcp) {
                on_tcp_event(value, what);
            } else if (tag == kTagCurl) {
                int action = 0;
                if (what & EPOLLIN) action |= CURL_CSELECT_IN;
                if (what & EPOLLOUT) action |= CURL_CSELECT_OUT;
                if (what & (EPOLLERR | EPOLLHUP)) action |= CURL_CSELECT_ERR;
                int running = 0;
                curl_multi_socket_action(multi, static_cast<curl_socket_t>(value), action, &running);
            }
        }
        drain_curl();

        bool need_reconcile;
        {
            std::lock_guard lk(mu);
            need_reconcile = dirty;
        }
        if (need_reconcile) reconcile();

        const TimePoint now = Clock::now();
        if (curl_deadline && *curl_deadline <= now) {
            curl_deadline.reset();
            int running = 0;
            curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
            drain_curl();
        }
        // Collect first: a check that completes at once schedules its next run, which must
        // wait for the next round even if it is already due.
        std::vector<uint64_t> due;
        while (!timers.empty() && timers.begin()->first <= now) {
            due.push_back(timers.begin()->second);
            timers.erase(timers.begin());
        }
        for (uint64_t id : due) {
            auto it = runners.find(id);
            if (it == runners.end()) continue;
            Runner& r = it->second;
            r.timer.reset();
            if (r.in_flight)
                on_deadline(r);
            else
                start_check(r);
        }
    }

    // ---- target set changes -------------------------------------------------------------------

    void reconcile() {
        struct Want {
            uint64_t generation;
            CheckTarget target;
        };
        std::map<std::string, Want> want;
        std::vector<std::pair<std::string, CheckStatus>> announce;
        {
            std::lock_guard lk(mu);
            dirty = false;
            for (auto& [key, e] : entries) {
                if (e.target.cfg.type == CheckType::none) {
                    if (e.notify_pending) {
                        e.notify_pending = false;
                        announce.emplace_back(key, e.status);
                    }
                    continue;
                }
                auto r = by_key.find(key);
                if (r != by_key.end() && runners.at(r->second).generation == e.generation) {
                    want.emplace(key, Want{e.generation, {}});  // unchanged: no copy needed
                    continue;
                }
                want.emplace(key, Want{e.generation, e.target});
            }
        }
        // Stop what is gone or changed (cancelling checks in flight).
        for (auto it = by_key.begin(); it != by_key.end();) {
            auto w = want.find(it->first);
            Runner& r = runners.at(it->second);
            if (w != want.end() && w->second.generation == r.generation) {
                ++it;
                continue;
            }
            release(r);
            unset_timer(r);
            runners.erase(it->second);
            it = by_key.erase(it);
        }
        // Start what is new or changed, first checks spread over the interval.
        const TimePoint now = Clock::now();
        for (auto& [key, w] : want) {
            if (by_key.count(key)) continue;
            const uint64_t id = next_runner_id++;
            Runner& r = runners[id];
            r.id = id;
            r.key = key;
            r.generation = w.generation;
            r.target = std::move(w.target);
            r.interval = effective_interval(r.target.cfg);
            r.timeout = effective_timeout(r.target.cfg);
            r.due = now + Millis(static_cast<Millis::rep>(key_hash(key) % uint64_t(r.interval.count())));
            by_key.emplace(key, id);
            set_timer(r, r.due);
        }
        for (const auto& [key, st] : announce) {
            spdlog::info("health: {} is up (no health check)", key);
            notify(key, st);
        }
    }

    // ---- timers -------------------------------------------------------------------------------

    void set_timer(Runner& r, TimePoint t) {
        unset_timer(r);
        timers.emplace(t, r.id);
        r.timer = t;
    }

    void unset_timer(Runner& r) {
        if (r.timer) timers.erase({*r.timer, r.id});
        r.timer.reset();
    }

    // ---- checks -------------------------------------------------------------------------------

    void start_check(Runner& r) {
        r.started = Clock::now();
        r.in_flight = true;
        set_timer(r, r.started + r.timeout);  // start_http() moves it to libcurl's timeout + grace
        const CheckTarget& t = r.target;
        if (t.address.family != Family::v4 && t.address.family != Family::v6) return finish(r, false, "invalid address");
        if (t.port == 0) return finish(r, false, "no port to check");
        if (t.cfg.type == CheckType::tcp)
            start_tcp(r);
        else
            start_http(r);
    }

    void start_tcp(Runner& r) {
        const CheckTarget& t = r.target;
        sockaddr_storage ss{};
        socklen_t len;
        if (t.address.is_v4()) {
            auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
            sa->sin_family = AF_INET;
            sa->sin_port = htons(t.port);
            std::memcpy(&sa->sin_addr, t.address.bytes.data(), 4);
            len = sizeof(sockaddr_in);
        } else {
            auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
            sa->sin6_family = AF_INET6;
            sa->sin6_port = htons(t.port);
            std::memcpy(&sa->sin6_addr, t.address.bytes.data(), 16);
            len = sizeof(sockaddr_in6);
        }
        const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0) return finish(r, false, "socket: " + errno_text(errno));
        r.fd = fd;
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) == 0) return finish(r, true, {});
        if (errno != EINPROGRESS) return finish(r, false, errno_text(errno), local_error(errno));
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = (kTagTcp << kTagShift) | r.id;
        if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return finish(r, false, "epoll_ctl: " + errno_text(errno));
    }

    void on_tcp_event(uint64_t id, uint32_t what) {
        auto it = runners.find(id);
        if (it == runners.end() || !it->second.in_flight || it->second.fd < 0) return;
        Runner& r = it->second;
        int err = 0;
        socklen_t len = sizeof err;
        if (::getsockopt(r.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err == 0 && (what & EPOLLOUT)) return finish(r, true, {});
        if (err == 0) err = ECONNRESET;  // hang-up without an error code: treat as reset
        finish(r, false, errno_text(err), local_error(err));
    }

    void start_http(Runner& r) {
        const CheckTarget& t = r.target;
        const HealthCheckConfig& c = t.cfg;
        const bool tls = c.type == CheckType::https;
        auto h = std::make_unique<HttpCheck>();
        h->easy = curl_easy_init();
        if (!h->easy) return finish(r, false, "curl_easy_init failed");
        CURL* e = h->easy;

        std::string path = c.path.empty() ? "/" : c.path;
        if (path.front() != '/') path.insert(path.begin(), '/');
        const std::string port = std::to_string(t.port);
        std::string url;
        if (tls && plain_host_name(c.host)) {
            // Connect to the server's address but name the configured host in the URL, so TLS
            // sends it as SNI and verifies the certificate against it.
            url = "https://" + c.host + ":" + port + path;
            const std::string to = "::" + addr_text(t.address) + ":" + port;
            h->connect_to = curl_slist_append(nullptr, to.c_str());
            if (!h->connect_to) return finish(r, false, "out of memory");
            curl_easy_setopt(e, CURLOPT_CONNECT_TO, h->connect_to);
        } else {
            url = std::string(tls ? "https://" : "http://") + addr_text(t.address) + ":" + port + path;
        }
        for (const std::string& header : {c.host.empty() ? std::string() : "Host: " + c.host, std::string("Connection: close")}) {
            if (header.empty()) continue;
            curl_slist* more = curl_slist_append(h->headers, header.c_str());
            if (!more) return finish(r, false, "out of memory");
            h->headers = more;
        }

        curl_easy_setopt(e, CURLOPT_URL, url.c_str());  // copied by libcurl
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, long(CURL_HTTP_VERSION_1_1));
        curl_easy_setopt(e, CURLOPT_USERAGENT, "fulcrum-health-check");
#if LIBCURL_VERSION_NUM >= 0x075500
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, long(r.timeout.count()));
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, long(r.timeout.count()));
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c.tls_verify ? 1L : 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c.tls_verify ? 2L : 0L);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf.data());
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &HttpCheck::discard);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, h.get());
        curl_easy_setopt(e, CURLOPT_PRIVATE, reinterpret_cast<void*>(static_cast<uintptr_t>(r.id)));

        const CURLMcode mc = curl_multi_add_handle(multi, e);
        if (mc != CURLM_OK) return finish(r, false, std::string("curl: ") + curl_multi_strerror(mc));
        r.http = std::move(h);
        // libcurl enforces the timeout; ours only catches a transfer libcurl failed to end.
        set_timer(r, r.started + r.timeout + kCurlGrace);
    }

    void drain_curl() {
        int left = 0;
        while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
            if (m->msg != CURLMSG_DONE) continue;
            CURL* easy = m->easy_handle;
            const CURLcode res = m->data.result;  // m is invalid once the handle is removed
            char* priv = nullptr;
            curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
            const auto id = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(priv));
            auto it = runners.find(id);
            if (it == runners.end() || !it->second.http || it->second.http->easy != easy) {
                curl_multi_remove_handle(multi, easy);  // not ours any more (cannot happen)
                continue;
            }
            Runner& r = it->second;
            long code = 0;
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
            long os_errno = 0;
            curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &os_errno);
            evaluate_http(r, res, code, static_cast<int>(os_errno));
        }
    }

    void evaluate_http(Runner& r, CURLcode res, long code, int os_errno) {
        const HealthCheckConfig& c = r.target.cfg;
        const HttpCheck& h = *r.http;
        if (res == CURLE_OK || (res == CURLE_WRITE_ERROR && h.body_capped && code > 0)) {
            if (status_expected(code, c.expect_status)) return finish(r, true, {});
            return finish(r, false,
                          "HTTP status " + std::to_string(code) + " (expected " + expected_text(c.expect_status) + ")");
        }
        const std::string detail = h.errbuf[0] ? std::string(h.errbuf.data()) : std::string(curl_easy_strerror(res));
        std::string reason;
        bool local = false;
        switch (res) {
            case CURLE_OPERATION_TIMEDOUT:
                reason = timeout_text(r.timeout);
                break;
            case CURLE_COULDNT_CONNECT:
                reason = os_errno ? errno_text(os_errno) : "connect failed: " + detail;
                local = local_error(os_errno);
                break;
            case CURLE_GOT_NOTHING:
                reason = "empty reply from server";
                break;
            case CURLE_RECV_ERROR:
                reason = os_errno ? "receive failed: " + errno_text(os_errno) : detail;
                break;
            case CURLE_SEND_ERROR:
                reason = os_errno ? "send failed: " + errno_text(os_errno) : detail;
                break;
            case CURLE_WEIRD_SERVER_REPLY:
            case CURLE_UNSUPPORTED_PROTOCOL:
                reason = "invalid HTTP response: " + detail;
                break;
            case CURLE_URL_MALFORMAT:
                reason = "invalid URL: " + detail;
                break;
            default:
                reason = is_tls_error(res) ? "TLS error: " + detail : detail;
                break;
        }
        finish(r, false, std::move(reason), local);
    }

    void on_deadline(Runner& r) {
        finish(r, false, timeout_text(r.timeout));
    }

    // Frees whatever the check in flight holds. Safe to call on an idle runner.
    void release(Runner& r) {
        if (r.fd >= 0) {
            // Drop from epoll before closing; a successful connection is reset rather than
            // closed, so neither side keeps a TIME_WAIT socket per check.
            ::epoll_ctl(epfd, EPOLL_CTL_DEL, r.fd, nullptr);
            ::close(r.fd);
            r.fd = -1;
        }
        if (r.http) {
            curl_multi_remove_handle(multi, r.http->easy);
            r.http.reset();
        }
        r.in_flight = false;
    }

    void release_all() {
        for (auto& [id, r] : runners) release(r);
        runners.clear();
        by_key.clear();
        timers.clear();
    }

    // `local`: the check could not leave this host (local_error), not an answer of the server.
    void finish(Runner& r, bool ok, std::string reason, bool local = false) {
        const TimePoint now = Clock::now();
        const double latency = std::chrono::duration<double, std::milli>(now - r.started).count();
        if (ok && r.fd >= 0) {
            linger lg{1, 0};
            ::setsockopt(r.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        release(r);
        // Fixed rate from the schedule, never overlapping: a late check runs as soon as the
        // previous one is over.
        r.due = std::max(r.due + r.interval, now);
        set_timer(r, r.due);
        spdlog::debug("health: {} {} check {} in {:.1f} ms{}{}", r.key, type_name(r.target.cfg.type),
                      ok ? "passed" : "failed", latency, ok ? "" : ": ", reason);
        report(r.key, r.generation, ok, std::move(reason), latency, local);
    }

    // ---- results ------------------------------------------------------------------------------

    void report(const std::string& key, uint64_t generation, bool ok, std::string reason, double latency,
                bool local = false) {
        CheckStatus changed;
        bool first = false;
        bool change = false;
        bool log_unchecked = false;
        {
            std::lock_guard lk(mu);
            auto it = entries.find(key);
            if (it == entries.end() || it->second.generation != generation) return;  // gone or changed
            Entry& e = it->second;
            CheckStatus& s = e.status;
            s.last_latency_ms = latency;
            if (!ok && local && !s.checked) {
                // This host cannot send the check yet (its address or route is missing, as
                // on fl0 just after the dataplane started): no verdict on the server. It stays
                // unchecked, so the first publish waits for a real answer (up to its deadline).
                ++s.failures;
                s.reason = "not checked yet: " + reason;
                log_unchecked = !e.local_logged;
                e.local_logged = true;
            } else {
                if (ok)
                    ++s.successes;
                else
                    s.reason = reason;
                if (!ok) ++s.failures;
                s.streak = (s.checked && e.last_ok == ok) ? s.streak + 1 : 1;
                e.last_ok = ok;
                const unsigned rise = std::max(1u, e.target.cfg.rise);
                const unsigned fall = std::max(1u, e.target.cfg.fall);
                if (!s.checked) {
                    s.checked = true;
                    s.up = ok;
                    first = change = true;
                } else if (s.up && !ok && s.streak >= fall) {
                    s.up = false;
                    change = true;
                } else if (!s.up && ok && s.streak >= rise) {
                    s.up = true;
                    change = true;
                }
                if (change) changed = s;
            }
        }
        if (log_unchecked)
            spdlog::warn("health: {} cannot be checked from this host yet: {} (no verdict until a check "
                         "leaves this host; check its addresses and routes if this persists)",
                         key, reason);
        if (!change) return;  // an unsendable check changes nothing
        if (changed.up) {
            if (first)
                spdlog::info("health: {} is up (first check, {:.1f} ms)", key, latency);
            else
                spdlog::info("health: {} is up ({} consecutive successes)", key, changed.streak);
        } else {
            if (first)
                spdlog::info("health: {} is down: {} (first check)", key, changed.reason);
            else
                spdlog::info("health: {} is down: {} ({} consecutive failure{})", key, changed.reason, changed.streak,
                             changed.streak == 1 ? "" : "s");
        }
        notify(key, changed);
    }

    void notify(const std::string& key, const CheckStatus& st) {
        if (!on_change) return;
        try {
            on_change(key, st);
        } catch (const std::exception& e) {
            spdlog::error("health: state change handler for {} threw: {}", key, e.what());
        } catch (...) {
            spdlog::error("health: state change handler for {} threw", key);
        }
    }

    // ---- libcurl callbacks ----------------------------------------------------------------------

    static int curl_socket_cb(CURL*, curl_socket_t s, int what, void* userp, void*) {
        auto* self = static_cast<Impl*>(userp);
        if (what == CURL_POLL_REMOVE) {
            ::epoll_ctl(self->epfd, EPOLL_CTL_DEL, s, nullptr);  // may already be closed: fine
            return 0;
        }
        epoll_event ev{};
        if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
        if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
        ev.data.u64 = (kTagCurl << kTagShift) | static_cast<uint64_t>(s);
        // The fd may be new, or a number reused after a close that removed it implicitly.
        if (::epoll_ctl(self->epfd, EPOLL_CTL_MOD, s, &ev) != 0) {
            if (errno != ENOENT || ::epoll_ctl(self->epfd, EPOLL_CTL_ADD, s, &ev) != 0) {
                spdlog::error("health: epoll_ctl for a libcurl socket: {}", errno_text(errno));
                return -1;
            }
        }
        return 0;
    }

    static int curl_timer_cb(CURLM*, long timeout_ms, void* userp) {
        auto* self = static_cast<Impl*>(userp);
        if (timeout_ms < 0)
            self->curl_deadline.reset();
        else
            self->curl_deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
        return 0;
    }
};

HealthChecker::HealthChecker(OnChange on_change) : impl_(std::make_unique<Impl>(std::move(on_change))) {}

HealthChecker::~HealthChecker() = default;

void HealthChecker::set_targets(std::vector<CheckTarget> targets) { impl_->set_targets(std::move(targets)); }

std::map<std::string, CheckStatus> HealthChecker::status() const { return impl_->status(); }

bool HealthChecker::all_checked() const { return impl_->all_checked(); }

}  // namespace fulcrum::control
