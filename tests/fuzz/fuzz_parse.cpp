// libFuzzer target: the packet parser, then the whole per-packet pipeline (lookup, connection
// table, rewrite) against a fixed snapshot, on a frame with DPDK-like headroom.
#include <cstring>
#include <memory>

#include "fulcrum/flow.hpp"
#include "fulcrum/forward.hpp"
#include "fulcrum/parse.hpp"
#include "seeds.hpp"

using namespace fulcrum;

namespace {
struct Env {
    std::unique_ptr<Worker> worker;
    std::unique_ptr<LoadedSnapshot> snap;
    Env() {
        WorkerConfig c;
        c.conn_capacity = 4096;
        c.max_servers = 256;
        c.max_services = 64;
        c.mtu = 1500;
        worker = std::make_unique<Worker>(c);
        auto bytes = fuzzseeds::sample_snapshot();
        auto ls = LoadedSnapshot::load(bytes, 1);
        if (!ls) __builtin_trap();
        snap = std::move(ls.value());
    }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Env env;
    static uint32_t now = 0;
    // Exactly sized copy: any read past the end is caught by ASan.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[size ? size : 1]);
    if (size) std::memcpy(exact.get(), data, size);
    Parsed p;
    ParseOptions o;
    o.verify_ipv4_checksum = size % 2;
    const Drop d = parse_packet({exact.get(), size}, p, o);
    if (d == Drop::none && p.is_ip()) {
        if (p.l3_end() > size || p.l4_off > p.l3_end()) __builtin_trap();
        (void)flow_hash(flow_key_of(p), 1);
    }
    // Pipeline on a buffer with headroom and tailroom like an mbuf's.
    constexpr uint32_t kHead = 128, kCap = 4096;
    if (size + kHead > kCap) return 0;
    std::unique_ptr<uint8_t[]> buf(new uint8_t[kCap]);
    std::memcpy(buf.get() + kHead, data, size);
    Frame f{buf.get() + kHead, static_cast<uint32_t>(size), kHead, kCap};
    env.worker->set_parse_checksum(false);  // let more inputs reach the pipeline
    const Verdict v = env.worker->process(f, env.snap.get(), now += 7);
    if (f.data < buf.get() || f.data + f.len > buf.get() + kCap) __builtin_trap();
    if (v.action == Action::forward_fragments) {
        std::unique_ptr<uint8_t[]> more(new uint8_t[4 * 2048]);
        Frame outs[4];
        for (int i = 0; i < 4; ++i) outs[i] = Frame{more.get() + i * 2048, 0, 0, 2048};
        Parsed q;
        if (parse_packet(f.bytes(), q, {}) == Drop::none) (void)fragment_ipv4(f, q.l3_off, 1500, outs);
    }
    return 0;
}
