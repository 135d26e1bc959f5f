// Core placement with hwloc: the NIC's NUMA node and physical cores, one hardware thread per
// physical core for the dataplane's workers, the main lcore and fulcrumd kept off them.
// `fulcrumctl topology` prints the plan and the EAL arguments that apply it.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fulcrum::control {

struct PlacementRequest {
    std::string nic;        // interface name or PCI address ("0000:01:00.0"); "" = anywhere
    unsigned workers = 0;   // 0: one per physical core of the NIC's node, but one
    int numa_node = -1;     // >= 0: place near this node (when the NIC's cannot be found) core
    std::string synthetic;  // a synthetic hwloc topology instead of this machine (tests)
};

struct Placement {
    std::string nic;                   // as found ("eth1 (PCI 0000:01:00.0)")
    int numa_node = -1;                // the NIC's node; -1 unknown
    unsigned cores_on_node = 0;        // physical cores near the NIC
    unsigned main_cpu = 0;             // EAL main lcore: control socket, telemetry
    std::vector<unsigned> control_cpus;  // for fulcrumd (the main lcore's core)
    std::vector<unsigned> worker_cpus;   // one hardware thread per physical core
    std::vector<std::string> notes;    // what to know (cross-NUMA workers, shared cores...)

    std::string eal_args() const;      // "-l 0,2,4 --main-lcore 0"
    nlohmann::json to_json() const;
};

// Throws std::runtime_error when the topology cannot be read or a named NIC does not exist.
Placement plan_placement(const PlacementRequest& req);

}  // namespace fulcrum::control
