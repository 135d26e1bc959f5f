// Per-worker-lcore state of the DPDK adapter (internal).
#pragma once

#include <rte_common.h>
#include <rte_ethdev.h>

#include <memory>

#include "fulcrum/cache_line.hpp"
#include "fulcrum/counter.hpp"
#include "fulcrum/forward.hpp"
#include "table_memory.hpp"

namespace fulcrum::dpdk {

class Dataplane;

// One per worker lcore, allocated apart (make_unique: aligned new) and 64-byte aligned, so the
// adapter counters one worker writes per poll share no cache line with another worker's
// (docs/architecture.md, "Per-worker placement").
struct alignas(RTE_CACHE_LINE_SIZE) WorkerSlot {
    unsigned id = 0;     // queue number and RCU thread id
    unsigned lcore = 0;
    Dataplane* dp = nullptr;
    std::unique_ptr<fulcrum::Worker> core;
    std::unique_ptr<TableMemory> conn_mem;  // the core's connection table (table_memory.hpp)
    rte_eth_dev_tx_buffer* tx_up = nullptr;
    // Adapter counters (the core counts parse/forwarding decisions).
    Counter kernel_rx;    // frames from the kernel (TAP) sent out of the uplink
    Counter kernel_tx;    // frames handed to the kernel
    Counter kernel_rx_drop;  // frames from the kernel not sent: multi-segment, cannot linearize
    Counter tx_drop_up;   // uplink transmit queue full
    Counter uplink_tx;    // frames queued for the uplink
    Counter fragments;    // extra IPv4 fragments sent
    Counter polls;        // loop iterations
    Counter busy_polls;   // iterations that received something
    Counter busy_cycles;  // TSC cycles those iterations took, start to start
};
static_assert(alignof(WorkerSlot) == RTE_CACHE_LINE_SIZE && sizeof(WorkerSlot) % RTE_CACHE_LINE_SIZE == 0,
              "a WorkerSlot takes whole cache lines");
static_assert(RTE_CACHE_LINE_SIZE == kCacheLine, "the core's cache-line size is DPDK's");

}  // namespace fulcrum::dpdk
