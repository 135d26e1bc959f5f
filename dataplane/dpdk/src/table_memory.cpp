#include "table_memory.hpp"

#include <rte_malloc.h>
#include <sys/mman.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fulcrum::dpdk {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// AnonHugePages of the mapping that starts at `start` in /proc/self/smaps, in bytes; 0 when
// the mapping or the field is not found.
size_t anon_huge_bytes(const void* start) {
    std::ifstream smaps("/proc/self/smaps");
    const auto want = reinterpret_cast<uintptr_t>(start);
    std::string line;
    bool in = false;
    while (std::getline(smaps, line)) {
        // A mapping's header line starts "lo-hi " in hex; no field line ("Name:  value") does.
        uintptr_t lo = 0, hi = 0;
        if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2) {
            in = lo == want;
        } else if (in && line.rfind("AnonHugePages:", 0) == 0) {
            unsigned long long kb = 0;
            return std::sscanf(line.c_str() + 14, "%llu", &kb) == 1 ? static_cast<size_t>(kb) << 10 : 0;
        }
    }
    return 0;
}
}  // namespace

TableMemory::TableMemory(size_t bytes, int socket, bool eal_hugepages, std::string what)
    : what_(std::move(what)), bytes_(bytes) {
    if (eal_hugepages) {
        // Cache-line aligned, and rte_malloc rounds every allocation up to whole cache lines:
        // the table shares no line with anything else.
        data_ = rte_malloc_socket("fulcrum_conns", bytes, 64, socket);
        if (!data_)
            throw std::runtime_error("cannot allocate " + std::to_string(bytes >> 20) + " MiB of hugepage memory for the " +
                                     what_ + ": lower --conn-capacity or give the EAL more memory (--socket-mem, -m)");
    } else {
        // Over-map by one huge page and trim both ends, so the table starts on a 2 MiB boundary
        // and its length is whole huge pages: every part of it can be a huge page.
        const size_t len = round_up(bytes, kHugePage);
        void* p = mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            throw std::runtime_error("cannot map " + std::to_string(len >> 20) + " MiB for the " + what_ + ": " +
                                     std::strerror(errno) + "; lower --conn-capacity");
        const auto base = reinterpret_cast<uintptr_t>(p);
        const uintptr_t start = round_up(base, kHugePage);
        if (start > base) munmap(p, start - base);
        const uintptr_t tail = start + len;
        const uintptr_t end = base + len + kHugePage;
        if (end > tail) munmap(reinterpret_cast<void*>(tail), end - tail);
        data_ = reinterpret_cast<void*>(start);
        map_len_ = len;
        // Advice only: a kernel with THP off ("never") leaves 4 KiB pages, and describe() says so.
        (void)madvise(data_, map_len_, MADV_HUGEPAGE);
        // Populate now, not on the packet path: each first touch of a page is a fault.
        std::memset(data_, 0, map_len_);
        huge_bytes_ = anon_huge_bytes(data_);
    }
}

TableMemory::~TableMemory() {
    if (map_len_) munmap(data_, map_len_);
    else rte_free(data_);
}

std::string TableMemory::describe() const {
    std::ostringstream s;
    if (!map_len_) {
        s << what_ << ": " << (bytes_ >> 20) << " MiB from the EAL's hugepages";
        return s.str();
    }
    s << what_ << ": " << (map_len_ >> 20) << " MiB mapped apart (the EAL runs without hugepages), " << (huge_bytes_ >> 20)
      << " MiB of it on transparent huge pages";
    if (huge_bytes_ * 2 < map_len_)
        s << "; the rest is on 4 KiB pages, where lookups miss the TLB: run with EAL hugepages "
             "(scripts/hugepages.sh, without --no-huge) or set "
             "/sys/kernel/mm/transparent_hugepage/enabled to madvise or always";
    return s.str();
}

}  // namespace fulcrum::dpdk
