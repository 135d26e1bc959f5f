#include <gtest/gtest.h>

#include "fulcrum/control/placement.hpp"

using namespace fulcrum::control;

namespace {
const char* kTwoNodes = "NUMANode:2 Core:4 PU:2";  // 2 nodes x 4 cores x 2 hardware threads
}

TEST(Placement, OneHardwareThreadPerCoreMainLcoreApart) {
    PlacementRequest r;
    r.synthetic = "Core:4 PU:2";
    const Placement p = plan_placement(r);
    EXPECT_EQ(p.main_cpu, 0u);
    EXPECT_EQ(p.control_cpus, (std::vector<unsigned>{0, 1}));  // the main lcore's whole core
    EXPECT_EQ(p.worker_cpus, (std::vector<unsigned>{2, 4, 6}));  // siblings 3, 5, 7 left idle
    EXPECT_EQ(p.eal_args(), "-l 0,2,4,6 --main-lcore 0");
    ASSERT_FALSE(p.notes.empty());
    EXPECT_NE(p.notes.back().find("one hardware thread per physical core"), std::string::npos);
}

TEST(Placement, NearTheNicNodeThenSpillWithANote) {
    PlacementRequest r;
    r.synthetic = kTwoNodes;
    r.numa_node = 1;
    Placement p = plan_placement(r);
    EXPECT_EQ(p.numa_node, 1);
    EXPECT_EQ(p.cores_on_node, 4u);
    EXPECT_EQ(p.main_cpu, 8u);
    EXPECT_EQ(p.worker_cpus, (std::vector<unsigned>{10, 12, 14}));
    r.workers = 5;
    p = plan_placement(r);
    EXPECT_EQ(p.worker_cpus, (std::vector<unsigned>{10, 12, 14, 0, 2}));
    bool cross = false;
    for (const auto& n : p.notes) cross |= n.find("another NUMA node") != std::string::npos;
    EXPECT_TRUE(cross);
}

TEST(Placement, MoreWorkersThanCoresAreCapped) {
    PlacementRequest r;
    r.synthetic = "Core:3 PU:1";
    r.workers = 10;
    const Placement p = plan_placement(r);
    EXPECT_EQ(p.worker_cpus, (std::vector<unsigned>{1, 2}));
    EXPECT_NE(p.notes.front().find("only 2 cores"), std::string::npos);
}

TEST(Placement, SingleCoreSharesWithAWarning) {
    PlacementRequest r;
    r.synthetic = "Core:1 PU:2";
    const Placement p = plan_placement(r);
    EXPECT_EQ(p.main_cpu, 0u);
    EXPECT_EQ(p.worker_cpus, (std::vector<unsigned>{1}));
    EXPECT_NE(p.notes.front().find("only one core"), std::string::npos);
}

TEST(Placement, ClearErrors) {
    PlacementRequest r;
    r.synthetic = "not a topology";
    EXPECT_THROW(plan_placement(r), std::runtime_error);
    r.synthetic = kTwoNodes;
    r.numa_node = 7;
    try {
        plan_placement(r);
        ADD_FAILURE();
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("no NUMA node 7"), std::string::npos);
    }
    PlacementRequest n;
    n.nic = "no-such-nic0";
    EXPECT_THROW(plan_placement(n), std::runtime_error);
}

TEST(Placement, ThisMachine) {
    const Placement p = plan_placement({});
    EXPECT_FALSE(p.worker_cpus.empty());
    if (p.cores_on_node > 1) {
        for (unsigned c : p.worker_cpus) EXPECT_NE(c, p.main_cpu);
    }
    EXPECT_NE(p.to_json()["eal_args"].get<std::string>().find("--main-lcore"), std::string::npos);
}
