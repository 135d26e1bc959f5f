// Prometheus exposition of fulcrumd's and the dataplane's state (prometheus-cpp), on
// 127.0.0.1 by default. Dataplane counters are mirrored as Prometheus counters (increments
// of the dataplane's running totals; a dataplane restart is treated as a counter reset).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "fulcrum/control/publisher.hpp"
#include "fulcrum/dp_counters.hpp"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace fulcrum::control {

struct MetricsInput {
    const Model* model = nullptr;
    const DataplaneCounters* dataplane = nullptr;  // null while the dataplane is unreachable
    uint64_t published_generation = 0;
    uint64_t publishes = 0;
    uint64_t publish_errors = 0;
    uint64_t reloads = 0;
    uint64_t reload_errors = 0;
};

class Metrics {
public:
    // Starts the HTTP endpoint on `listen` ("127.0.0.1:9310", "[::1]:9310"). Throws
    // std::runtime_error if it cannot listen.
    explicit Metrics(const std::string& listen);
    ~Metrics();
    void update(const MetricsInput& in);
    std::string listen() const { return listen_; }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::string listen_;
};

}  // namespace fulcrum::control
