// fulcrumd's admin commands (the requests fulcrumctl sends over the admin socket): views of
// services, servers and status, and the commands that change state. A state-changing command
// replies once the dataplane runs a generation containing the change ("generation" in the
// reply), or with an error saying why it is not applied (the dataplane is down: the change is
// kept and applied when it reconnects).
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "fulcrum/control/admin_counters.hpp"
#include "fulcrum/control/admin_request.hpp"

namespace fulcrum::control {

class Daemon;

class AdminApi {
public:
    explicit AdminApi(Daemon& daemon) : d_(daemon) {}

    using Reply = std::function<void(nlohmann::json)>;
    // Answers `request` through `reply`, exactly once: at once for views and refusals, later
    // (from fulcrumd's main loop thread) for state changes. Never throws.
    void handle(const nlohmann::json& request, Reply reply);

private:
    nlohmann::json status();
    nlohmann::json services();
    nlohmann::json servers(const std::string& service);
    nlohmann::json ha(HaAction action);
    nlohmann::json acl();
    // admin_inspect.cpp: the dataplane's connection entries, and where a flow goes.
    nlohmann::json connections(const AdminRequest& req);
    nlohmann::json lookup(const AdminRequest& req);
    // admin_doctor.cpp: the usual mistakes on this host, each with what to do.
    nlohmann::json doctor();
    // counters and counters-reset: the views show counters since the last reset (baseline_);
    // the sources, and so the Prometheus metrics, are never reset.
    nlohmann::json counters();
    nlohmann::json counters_reset(const std::string& service);
    // Tells the baseline which dataplane process the view's counters come from.
    void observe_dataplane(int64_t pid, bool connected);
    Daemon& d_;
    CounterBaseline baseline_;
};

}  // namespace fulcrum::control
