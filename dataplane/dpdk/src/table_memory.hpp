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
    size_t bytes() const { return bytes_; }
    bool from_eal() const { return from_eal_; }
    // Bytes of the table on huge pages: all of it from the EAL, otherwise what the kernel's
    // accounting (/proc/self/smaps, AnonHugePages) reports for the mapping after population.
    size_t huge_bytes() const { return huge_bytes_; }
    // One line for the log: where the table lives and on which pages, with advice when less
    // than half of it is on huge pages.
    std::string describe() const;

private:
    std::string what_;
    void* data_ = nullptr;
    size_t bytes_ = 0;
    void* map_ = nullptr;  // own mapping (no EAL hugepages): start and length as mapped
    size_t map_len_ = 0;
    bool from_eal_ = false;
    size_t huge_bytes_ = 0;
};

// AnonHugePages of the mapping that starts at `start` in /proc/self/smaps, in bytes; 0 when
// the mapping or the field is not found.
size_t anon_huge_bytes(const void* start);

}  // namespace fulcrum::dpdk
