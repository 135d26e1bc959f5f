#include "fulcrum/control/placement.hpp"

#include <hwloc.h>
#include <limits.h>
#include <unistd.h>

#include <memory>
#include <regex>
#include <stdexcept>

namespace fulcrum::control {

namespace {

struct Topology {
    hwloc_topology_t t = nullptr;
    ~Topology() {
        if (t) hwloc_topology_destroy(t);
    }
};

std::string join(const std::vector<unsigned>& v) {
    std::string s;
    for (unsigned x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
    return s;
}

// The PCI address behind a kernel interface, from sysfs ("" if it has none: veth, bridges).
std::string pci_of_interface(const std::string& ifname) {
    char buf[PATH_MAX];
    const std::string link = "/sys/class/net/" + ifname + "/device";
    const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    if (n <= 0) return "";
    buf[n] = '\0';
    std::string target(buf);
    const auto slash = target.rfind('/');
    return slash == std::string::npos ? target : target.substr(slash + 1);
}

}  // namespace

std::string Placement::eal_args() const {
    std::vector<unsigned> all{main_cpu};
    all.insert(all.end(), worker_cpus.begin(), worker_cpus.end());
    return "-l " + join(all) + " --main-lcore " + std::to_string(main_cpu);
}

nlohmann::json Placement::to_json() const {
    return {{"nic", nic},
            {"numa_node", numa_node},
            {"cores_on_node", cores_on_node},
            {"main_cpu", main_cpu},
            {"control_cpus", control_cpus},
            {"worker_cpus", worker_cpus},
            {"eal_args", eal_args()},
            {"notes", notes}};
}

Placement plan_placement(const PlacementRequest& req) {
    Topology topo;
    if (hwloc_topology_init(&topo.t) != 0) throw std::runtime_error("hwloc: cannot initialise a topology");
    if (!req.synthetic.empty()) {
        if (hwloc_topology_set_synthetic(topo.t, req.synthetic.c_str()) != 0)
            throw std::runtime_error("hwloc: invalid synthetic topology '" + req.synthetic + "'");
    } else {
        hwloc_topology_set_io_types_filter(topo.t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    }
    if (hwloc_topology_load(topo.t) != 0) throw std::runtime_error("hwloc: cannot read this machine's topology");

    Placement p;
    hwloc_const_cpuset_t near = hwloc_topology_get_allowed_cpuset(topo.t);
    if (!req.nic.empty()) {
        static const std::regex pci_re("^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\\.[0-7]$");
        std::string busid = std::regex_match(req.nic, pci_re) ? req.nic : "";
        if (busid.empty()) {
            if (::access(("/sys/class/net/" + req.nic).c_str(), F_OK) != 0 && req.synthetic.empty())
                throw std::runtime_error("no network interface or PCI address '" + req.nic +
                                         "' (give an interface name such as eth1 or a PCI address such as 0000:01:00.0)");
            busid = pci_of_interface(req.nic);
        }
        hwloc_obj_t dev = busid.empty() ? nullptr : hwloc_get_pcidev_by_busidstring(topo.t, busid.c_str());
        if (dev) {
            p.nic = req.nic == busid ? "PCI " + busid : req.nic + " (PCI " + busid + ")";
            hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo.t, dev);
            if (anc && anc->cpuset) near = anc->cpuset;
        } else {
            p.nic = req.nic;
            p.notes.push_back(req.nic + " has no PCI device in the topology (a virtual interface?): its NUMA node is "
                              "unknown, placing over the whole machine");
        }
    } else {
        p.nic = "(none given)";
    }
    if (req.numa_node >= 0) {
        hwloc_obj_t n = hwloc_get_numanode_obj_by_os_index(topo.t, static_cast<unsigned>(req.numa_node));
        if (!n)
            throw std::runtime_error("no NUMA node " + std::to_string(req.numa_node) + " on this machine (it has " +
                                     std::to_string(hwloc_get_nbobjs_by_type(topo.t, HWLOC_OBJ_NUMANODE)) + ")");
        near = n->cpuset;
    }
    // NUMA node of the locality.
    hwloc_obj_t node = hwloc_get_next_obj_covering_cpuset_by_type(topo.t, near, HWLOC_OBJ_NUMANODE, nullptr);
    if (!node) {
        // Fall back to the node whose cpuset intersects first.
        node = hwloc_get_next_obj_by_type(topo.t, HWLOC_OBJ_NUMANODE, nullptr);
    }
    const int n_nodes = hwloc_get_nbobjs_by_type(topo.t, HWLOC_OBJ_NUMANODE);
    if (node && n_nodes > 1 && hwloc_bitmap_isincluded(near, node->cpuset))
        p.numa_node = static_cast<int>(node->os_index);
    else if (n_nodes <= 1)
        p.numa_node = node ? static_cast<int>(node->os_index) : 0;

    // Physical cores near the NIC, then the others.
    std::vector<hwloc_obj_t> local, remote;
    for (hwloc_obj_t core = nullptr; (core = hwloc_get_next_obj_by_type(topo.t, HWLOC_OBJ_CORE, core));) {
        if (!core->cpuset || hwloc_bitmap_iszero(core->cpuset)) continue;
        (hwloc_bitmap_isincluded(core->cpuset, near) ? local : remote).push_back(core);
    }
    if (local.empty() && remote.empty()) {
        // No core objects (some virtual machines): treat every PU as a core.
        for (hwloc_obj_t pu = nullptr; (pu = hwloc_get_next_obj_by_type(topo.t, HWLOC_OBJ_PU, pu));)
            (hwloc_bitmap_isset(near, pu->os_index) ? local : remote).push_back(pu);
    }
    if (local.empty()) {
        local.swap(remote);
        p.notes.push_back("no core is local to the NIC; using the others");
    }
    p.cores_on_node = static_cast<unsigned>(local.size());
    auto first_pu = [&](hwloc_obj_t core) {
        hwloc_obj_t pu = hwloc_get_obj_inside_cpuset_by_type(topo.t, core->cpuset, HWLOC_OBJ_PU, 0);
        return pu ? pu->os_index : static_cast<unsigned>(hwloc_bitmap_first(core->cpuset));
    };
    // The first local core hosts the main lcore and fulcrumd (all its hardware threads).
    hwloc_obj_t main_core = local.front();
    p.main_cpu = first_pu(main_core);
    for (int i = hwloc_bitmap_first(main_core->cpuset); i >= 0; i = hwloc_bitmap_next(main_core->cpuset, i))
        p.control_cpus.push_back(static_cast<unsigned>(i));
    std::vector<hwloc_obj_t> pool(local.begin() + 1, local.end());
    const size_t local_workers = pool.size();
    pool.insert(pool.end(), remote.begin(), remote.end());
    unsigned want = req.workers ? req.workers : static_cast<unsigned>(std::max<size_t>(1, local_workers));
    if (pool.empty()) {
        p.notes.push_back("only one core: the worker shares it with the main lcore and fulcrumd (fine for tests, "
                          "not for production)");
        p.worker_cpus.push_back(hwloc_bitmap_weight(main_core->cpuset) > 1
                                    ? static_cast<unsigned>(hwloc_bitmap_next(main_core->cpuset, static_cast<int>(p.main_cpu)))
                                    : p.main_cpu);
        return p;
    }
    if (want > pool.size()) {
        p.notes.push_back(std::to_string(want) + " workers asked but only " + std::to_string(pool.size()) +
                          " cores are free of the main lcore: using " + std::to_string(pool.size()));
        want = static_cast<unsigned>(pool.size());
    }
    for (unsigned i = 0; i < want; ++i) p.worker_cpus.push_back(first_pu(pool[i]));
    if (want > local_workers)
        p.notes.push_back(std::to_string(want - local_workers) +
                          " worker(s) on another NUMA node than the NIC: expect slower memory access");
    bool smt = false;
    for (hwloc_obj_t c : local) smt |= hwloc_bitmap_weight(c->cpuset) > 1;
    if (smt)
        p.notes.push_back("one hardware thread per physical core is used for workers; leave their siblings idle "
                          "(isolcpus / systemd CPUAffinity) so they do not steal cycles");
    return p;
}

}  // namespace fulcrum::control
