#include "fulcrum/control/dataplane_link.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

namespace fulcrum::control {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// The reason inside a refused request's {"error": "..."} body, or the body itself.
std::string reply_error(const ctl::Reply& r) {
    const std::string text = r.text();
    try {
        const auto j = json::parse(text);
        if (j.is_object() && j.contains("error") && j["error"].is_string()) return j["error"].get<std::string>();
    } catch (const std::exception&) {
    }
    return text;
}

}  // namespace

DataplaneLink::DataplaneLink(std::string socket) { st_.socket = std::move(socket); }

DataplaneLink::~DataplaneLink() = default;

void DataplaneLink::set_socket(const std::string& socket) {
    std::lock_guard lk(mu_);
    if (socket == st_.socket) return;
    st_.socket = socket;
    reconnect_ = true;
}

Expected<ctl::Client> DataplaneLink::connect_controller(const std::string& socket, std::chrono::milliseconds timeout) {
    auto c = ctl::Client::connect(socket, timeout);
    if (!c) return Error{c.error()};
    // Announce ourselves as the controller: the dataplane keeps a connection slot for it, so
    // other local clients cannot lock fulcrumd out.
    const std::string hello = json{{"role", "controller"}, {"pid", static_cast<int64_t>(::getpid())}}.dump();
    auto r = c->request(ctl::Op::hello, {reinterpret_cast<const uint8_t*>(hello.data()), hello.size()});
    if (!r) return Error{r.error()};
    if (r->status != ctl::Status::ok) {
        const std::string why = reply_error(*r);
        // A dataplane from before the hello op (an upgrade in progress) serves us without a
        // reserved slot; anything else is a real refusal.
        if (why.find("unknown request op") == std::string::npos)
            return Error{"the dataplane at " + socket + " refused fulcrumd's hello: " + why};
        spdlog::warn("the dataplane at {} does not know the hello op (older version): no reserved controller slot",
                     socket);
    }
    return std::move(c.value());
}

void DataplaneLink::drop_connection(const std::string& why) {
    client_.reset();
    std::lock_guard lk(mu_);
    if (st_.connected) spdlog::warn("lost the dataplane at {}: {}", st_.socket, why);
    st_.connected = false;
    st_.pid = -1;
    st_.error = why;
    counters_.reset();
}

DataplaneStatus DataplaneLink::poll() {
    std::string socket;
    {
        std::lock_guard lk(mu_);
        if (reconnect_) {
            reconnect_ = false;
            client_.reset();
            st_.connected = false;
            st_.pid = -1;
            counters_.reset();
        }
        socket = st_.socket;
    }
    if (!client_) {
        auto c = connect_controller(socket, std::chrono::seconds(5));
        if (!c) {
            std::lock_guard lk(mu_);
            if (st_.error != c.error()) spdlog::warn("{} (retrying every second)", c.error());
            st_.error = c.error();
            return st_;
        }
        client_.emplace(std::move(c.value()));
    }
    auto h = client_->request(ctl::Op::health);
    if (!h || h->status != ctl::Status::ok) {
        drop_connection(h ? reply_error(*h) : h.error());
        return status();
    }
    json health;
    try {
        health = json::parse(h->text());
    } catch (const std::exception& e) {
        drop_connection(std::string("malformed health reply: ") + e.what());
        return status();
    }
    const int64_t pid = health.value("pid", int64_t{-1});
    const uint64_t gen = health.value("generation", uint64_t{0});
    const uint64_t uptime_ms = health.value("uptime_ms", health.value("uptime_seconds", uint64_t{0}) * 1000);
    auto c = client_->request(ctl::Op::counters);
    if (!c || c->status != ctl::Status::ok) {
        drop_connection(c ? reply_error(*c) : c.error());
        return status();
    }
    auto counters = std::make_shared<DataplaneCounters>();
    try {
        *counters = json::parse(c->text()).get<DataplaneCounters>();
    } catch (const std::exception& e) {
        drop_connection(std::string("malformed counters reply: ") + e.what());
        return status();
    }
    std::lock_guard lk(mu_);
    if (!st_.connected || st_.pid != pid) {
        spdlog::info("dataplane at {} (pid {}) runs generation {}", socket, pid, gen);
        // Its exception interface (and so fulcrumd's path to the servers) has been there
        // since the dataplane started, not since we connected.
        st_.up_since = Clock::now() - std::chrono::milliseconds(uptime_ms);
    }
    st_.control_refused.clear();
    if (auto ctl = health.find("control"); ctl != health.end() && ctl->is_object())
        if (auto r = ctl->find("refused"); r != ctl->end() && r->is_object())
            for (auto it = r->begin(); it != r->end(); ++it)
                if (it->is_number_unsigned()) st_.control_refused[it.key()] = it->get<uint64_t>();
    st_.uplink_link_up = health.value("uplink_link_up", true);
    st_.connected = true;
    st_.pid = pid;
    st_.generation = gen;
    st_.error.clear();
    counters_ = std::move(counters);
    return st_;
}

std::optional<std::vector<uint8_t>> DataplaneLink::running_snapshot() {
    if (!client_) return std::nullopt;
    auto r = client_->request(ctl::Op::get_snapshot);
    if (!r) {
        drop_connection(r.error());
        return std::nullopt;
    }
    if (r->status != ctl::Status::ok) return std::nullopt;
    return std::move(r->body);
}

Expected<uint64_t> DataplaneLink::publish(const std::vector<uint8_t>& bytes) {
    std::string socket;
    {
        std::lock_guard lk(mu_);
        socket = st_.socket;
    }
    if (!client_) return Error{"the dataplane at " + socket + " is not connected"};
    auto r = client_->request(ctl::Op::load_snapshot, bytes);
    if (!r) {
        const std::string why = r.error();
        drop_connection(why);
        return Error{why};
    }
    if (r->status != ctl::Status::ok) return Error{"the dataplane refused the snapshot: " + reply_error(*r)};
    uint64_t gen = 0;
    try {
        gen = json::parse(r->text()).value("generation", uint64_t{0});
    } catch (const std::exception& e) {
        return Error{std::string("malformed load_snapshot reply: ") + e.what()};
    }
    std::lock_guard lk(mu_);
    st_.generation = gen;
    return gen;
}

DataplaneStatus DataplaneLink::status() const {
    std::lock_guard lk(mu_);
    return st_;
}

std::shared_ptr<const DataplaneCounters> DataplaneLink::counters() const {
    std::lock_guard lk(mu_);
    return counters_;
}

std::shared_ptr<const DataplaneCounters> DataplaneLink::fetch_counters() {
    std::string socket;
    {
        std::lock_guard lk(mu_);
        if (!st_.connected) return counters_;
        socket = st_.socket;
    }
    auto c = ctl::Client::connect(socket, std::chrono::seconds(2));
    if (!c) return counters();
    auto r = c->request(ctl::Op::counters);
    if (!r || r->status != ctl::Status::ok) return counters();
    try {
        auto fresh = std::make_shared<const DataplaneCounters>(json::parse(r->text()).get<DataplaneCounters>());
        std::lock_guard lk(mu_);
        counters_ = fresh;
        return fresh;
    } catch (const std::exception&) {
        return counters();
    }
}

}  // namespace fulcrum::control
