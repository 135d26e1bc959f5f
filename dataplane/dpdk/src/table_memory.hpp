// Memory for one worker's connection table (internal).
//
// The table is large (56 MiB per million connections) and each packet reads one random bucket
// and entry of it, so its page size decides how many of those reads miss the TLB. With the
// EAL's hugepages the table comes from rte_malloc on the worker's NUMA node, as every other
// DPDK object does. Without them (--no-huge, as in CI and on hosts where nobody reserved
// hugepages) rte_malloc would hand out 4 KiB pages; the table then gets a mapping of its own,
// aligned to 2 MiB and advised MADV_HUGEPAGE, so that the kernel backs it with transparent
// huge pages where it can. Either way the memory is touched before the worker starts, so no
// page fault lands on the packet path (docs/architecture.md, "Per-worker placement").
#pragma once

#include <cstddef>
#include <string>

namespace fulcrum::dpdk {

class TableMemory {
public:
    // Throws std::runtime_error naming `what` when the memory cannot be had.
    TableMemory(size_t bytes, int socket, bool eal_hugepages, std::string what);
    ~TableMemory();
    TableMemory(const TableMemory&) = delete;
    TableMemory& operator=(const TableMemory&) = delete;

    void* data() const { return data_; }
    // One line for the log: where the table lives and on which pages, with advice when less
    // than half of it is on huge pages.
    std::string describe() const;

private:
    std::string what_;
    void* data_ = nullptr;
    size_t bytes_ = 0;
    size_t map_len_ = 0;     // length of the own mapping at data_; 0: rte_malloc'd from the EAL
    size_t huge_bytes_ = 0;  // of the own mapping, on huge pages by the kernel's accounting
};

}  // namespace fulcrum::dpdk
