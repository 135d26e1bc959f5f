// Prometheus exposition of fulcrumd's and the dataplane's state (prometheus-cpp), on
// 127.0.0.1 by default. Dataplane counters are mirrored as Prometheus counters (increments
// of the dataplane's running totals; a dataplane restart is treated as a counter reset).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fulcrum/control/ha_node.hpp"
#include "fulcrum/control/publisher.hpp"
#include "fulcrum/control/sync_peer.hpp"
#include "fulcrum/control/xdp_front.hpp"
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
    // Refusals on the admin socket and on the dataplane's control socket, by reason
    // (fulcrum::refusal_name), and the admin clients connected now.
    std::map<std::string, uint64_t> admin_refused;
    uint64_t admin_clients = 0;
    const std::map<std::string, uint64_t>* dataplane_control_refused = nullptr;
    const HaStatus* ha = nullptr;  // null: no ha: section
    const SyncPeerStats* sync = nullptr;  // null: no ha.sync
    const XdpStatus* xdp = nullptr;       // null: no xdp: section
};

// HTTP basic auth for scrapes (metrics.basic_auth); both empty: none.
struct MetricsAuth {
    std::string username;
    std::string password_file;  // its first line is the password
};

// Every metric family fulcrumd exports, in declaration order: the one list the endpoint is
// built from (Metrics::Impl's members), for `fulcrumd --metrics-reference` and the reference
// table in docs/metrics.md (a test keeps the two equal).
struct MetricReference {
    std::string name;
    std::string type;  // counter or gauge
    std::string help;
};
std::vector<MetricReference> metrics_reference();
// The reference as the Markdown table of docs/metrics.md.
std::string metrics_reference_markdown();

class Metrics {
public:
    // Starts the HTTP endpoint on `listen` ("127.0.0.1:9310", "[::1]:9310"; port 0 picks a
    // free port, see port()). Idle or slow HTTP clients cannot hold off scrapes for long:
    // kNumThreads workers, a kRequestTimeoutMs limit on reading a request and writing its
    // reply, and no keep-alive (an idle kept-alive connection would hold a worker). Throws
    // std::runtime_error if it cannot listen or read the password file.
    explicit Metrics(const std::string& listen, const MetricsAuth& auth = {});
    ~Metrics();
    void update(const MetricsInput& in);
    std::string listen() const { return listen_; }
    int port() const;  // the TCP port it listens on

    static constexpr int kNumThreads = 8;
    static constexpr int kRequestTimeoutMs = 3000;

private:
    friend std::vector<MetricReference> metrics_reference();
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::string listen_;
};

}  // namespace fulcrum::control
