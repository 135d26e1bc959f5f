// libFuzzer target: the snapshot reader. The first input byte chooses whether the checksum
// is recomputed, so the fuzzer also reaches the structural checks behind it.
#include <cstring>

#include "fulcrum/forward.hpp"
#include "fulcrum/snapshot.hpp"

using namespace fulcrum;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const bool reseal = data[0] & 1;
    std::vector<uint8_t> b(data + 1, data + size);
    if (reseal && b.size() >= sizeof(fl_snap_header)) snapshot_seal(b);
    SnapshotBuffer buf(b);
    auto v = SnapshotView::open(buf.bytes(), 1 << 24);
    if (!v) return 0;
    // Whatever is accepted must be safe to use: walk every reference.
    for (const auto& s : v->services()) {
        for (const auto& m : v->members(s))
            if (!v->server(m.server)) __builtin_trap();
        for (uint32_t e : v->table(s))
            if (e != FL_NO_SERVER && !v->server(e)) __builtin_trap();
    }
    auto ls = LoadedSnapshot::load(buf.bytes(), 2, 1 << 24);
    if (!ls) __builtin_trap();  // the view accepted it, so loading must too
    return 0;
}
