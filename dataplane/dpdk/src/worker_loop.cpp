// The worker lcore loop: run to completion, one uplink RX queue per worker.
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_rcu_qsbr.h>
#include <unistd.h>

#include <bit>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

#include "fulcrum/dpdk/dataplane.hpp"
#include "fulcrum/forward.hpp"
#include "worker_slot.hpp"

// Built with -fno-tree-slp-vectorize (dataplane/dpdk/meson.build says why).

namespace fulcrum::dpdk {

namespace {

constexpr unsigned kBurst = 32;
constexpr unsigned kMaxFragments = 8;
constexpr unsigned kIdlePollsBeforeSleep = 256;
// Frames per iteration of the common-case loops over a burst (see WorkerLoop::take).
constexpr unsigned kGroup = 8;
static_assert(std::has_single_bit(kGroup), "take() and dispatch() round down with a mask");

inline Frame frame_of(rte_mbuf* m) {
    return Frame{rte_pktmbuf_mtod(m, uint8_t*), m->data_len, rte_pktmbuf_headroom(m), m->buf_len};
}

// frame_of for the RX path, in fewer instructions: each field of the mbuf is loaded once, the
// buffer's length and the checksum flag are written with one 8-byte store (the flag's byte and
// the padding after it are the upper half), and the frame's first cache line is prefetched
// from the pointer already computed. The prefetch is issued while the rest of the burst's
// frames are built, well before the core's first pass reads the headers.
static_assert(std::endian::native == std::endian::little, "fill() stores buf_len and flag as one little-endian word");
static_assert(std::is_standard_layout_v<Frame> && std::is_trivially_copyable_v<Frame>);
static_assert(offsetof(Frame, ipv4_csum_good) == offsetof(Frame, buf_len) + 4 &&
                  sizeof(Frame) == offsetof(Frame, buf_len) + 8 && sizeof(Frame::buf_len) == 4,
              "fill() writes Frame::buf_len, ipv4_csum_good and the padding after it as one word");
inline void fill(Frame& f, const rte_mbuf* m, bool csum_good) {
    const uint64_t off = m->data_off;
    uint8_t* data = static_cast<uint8_t*>(m->buf_addr) + off;
    f.data = data;
    f.len = m->data_len;
    f.headroom = static_cast<uint32_t>(off);
    const uint64_t buf_flag = uint64_t{m->buf_len} | static_cast<uint64_t>(csum_good) << 32;
    std::memcpy(reinterpret_cast<unsigned char*>(&f) + offsetof(Frame, buf_len), &buf_flag, sizeof buf_flag);
    rte_prefetch0(data);
}

inline void apply(rte_mbuf* m, const Frame& f) {
    m->data_off = static_cast<uint16_t>(f.data - static_cast<uint8_t*>(m->buf_addr));
    m->data_len = static_cast<uint16_t>(f.len);
    m->pkt_len = f.len;
}

}  // namespace

struct WorkerLoop {
    WorkerSlot& w;
    Dataplane& dp;
    uint16_t uplink;
    int tap;
    rte_mempool* pool;
    bool hw_ipv4_cksum;  // the uplink's RX IPv4 checksum offload is on
    // Copies of w.id and w.tx_up, one load each on the per-poll path instead of two.
    uint16_t queue;
    rte_eth_dev_tx_buffer* tx_up;

    void drop_early(rte_mbuf* m, Drop d) {
        WorkerCounters& c = w.core->counters();
        c.rx.add();
        c.drops[static_cast<unsigned>(d)].add();
        c.dropped.add();
        rte_pktmbuf_free(m);
    }

    void to_uplink(rte_mbuf* m) {
        w.uplink_tx.add();
        rte_eth_tx_buffer(uplink, queue, tx_up, m);
    }

    void send_fragments(rte_mbuf* m, Frame& f, const Verdict& v) {
        rte_mbuf* extra[kMaxFragments];
        // The core counted the frame as forwarded; a frame that cannot be sent is a drop.
        if (rte_pktmbuf_alloc_bulk(pool, extra, kMaxFragments) != 0) {
            w.core->uncount_forward(v, Drop::alloc_failed);
            rte_pktmbuf_free(m);
            return;
        }
        Frame outs[kMaxFragments];
        for (unsigned i = 0; i < kMaxFragments; ++i) outs[i] = frame_of(extra[i]);
        const int n = fragment_ipv4(f, v.l3_off, v.mtu, {outs, kMaxFragments});
        if (n < 0) {
            w.core->uncount_forward(v, Drop::too_big);
            rte_pktmbuf_free(m);
            rte_pktmbuf_free_bulk(extra, kMaxFragments);
            return;
        }
        apply(m, f);
        to_uplink(m);
        for (int i = 0; i < n; ++i) {
            apply(extra[i], outs[i]);
            to_uplink(extra[i]);
        }
        w.fragments.add(static_cast<uint64_t>(n));
        if (n < static_cast<int>(kMaxFragments)) rte_pktmbuf_free_bulk(extra + n, kMaxFragments - static_cast<unsigned>(n));
    }

    // Per-burst scratch, here rather than on poll_uplink's stack: arrays of Frame and Verdict
    // there would be value-initialised (a memset) on every poll.
    rte_mbuf* rx_[kBurst] = {};
    rte_mbuf* kern_[kBurst] = {};
    Frame frames_[kBurst] = {};
    Verdict verdicts_[kBurst] = {};

    // Takes the mbuf `m` into frame `f` if the core may have it: single-segment and, with the
    // RX IPv4 checksum offload (Hw), not marked bad by the NIC (one marked good skips the
    // software check; any other, unknown or not IPv4, is verified by the parser).
    template <bool Hw>
    static bool take_one(const rte_mbuf* m, Frame& f) {
        if (m->nb_segs != 1) [[unlikely]]
            return false;
        bool good = false;
        if constexpr (Hw) {
            const uint64_t cs = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
            if (cs == RTE_MBUF_F_RX_IP_CKSUM_BAD) [[unlikely]]
                return false;
            good = cs == RTE_MBUF_F_RX_IP_CKSUM_GOOD;
        }
        fill(f, m, good);
        return true;
    }

    // Takes the group r[0, sizeof...(I)) into f[...] as take_one does, or none of it (false).
    // Without the checksum offload the group's segment counts are tested at once: they are
    // all 1 exactly when their OR is (an mbuf has at least one segment).
    template <bool Hw, unsigned... I>
    static bool take_group(rte_mbuf* const* r, Frame* f, std::integer_sequence<unsigned, I...>) {
        // The pointers are read once: a Frame's data pointer might alias rx_ for the
        // compiler, which would then reload them after every store.
        const rte_mbuf* const m[] = {r[I]...};
        if constexpr (Hw) {
            return (take_one<Hw>(m[I], f[I]) && ...);
        } else {
            if ((m[I]->nb_segs | ...) != 1) [[unlikely]]
                return false;
            (fill(f[I], m[I], false), ...);
            return true;
        }
    }

    // Builds frames_ from the burst's mbufs (rx_[0, n)) and returns how many the core gets;
    // the others are dropped here (take_one). The taken mbufs stay in rx_, in burst order, so
    // that frames_[j] is rx_[j]'s. The common case, the whole burst taken, runs kGroup frames
    // per iteration (an eighth of the loop's bookkeeping) and copies no mbuf pointer. At the
    // first group with a frame that cannot be taken it falls back, from the start of that
    // group (filling a frame again is harmless), to the loop that drops and compacts.
    template <bool Hw>
    unsigned take(unsigned n) {
        rte_mbuf** r = rx_;
        Frame* f = frames_;
        for (rte_mbuf** const groups_end = rx_ + (n & ~(kGroup - 1)); r != groups_end; r += kGroup, f += kGroup)
            if (!take_group<Hw>(r, f, std::make_integer_sequence<unsigned, kGroup>{})) [[unlikely]]
                return take_slow<Hw>(static_cast<unsigned>(r - rx_), n);
        for (rte_mbuf** const end = rx_ + n; r != end; ++r, ++f)
            if (!take_one<Hw>(*r, *f)) [[unlikely]]
                return take_slow<Hw>(static_cast<unsigned>(r - rx_), n);
        return n;
    }

    // take() from rx_[i] on, when some frame there cannot be taken: those are dropped
    // (counted as the core would count them) and the rest move down over the gaps (k <= i).
    template <bool Hw>
    [[gnu::noinline]] unsigned take_slow(unsigned i, unsigned n) {
        unsigned k = i;
        for (; i < n; ++i) {
            rte_mbuf* m = rx_[i];
            if (m->nb_segs != 1) {
                drop_early(m, Drop::multi_segment);
                continue;
            }
            if constexpr (Hw) {
                if ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD) {
                    drop_early(m, Drop::ipv4_bad_checksum);
                    continue;
                }
            }
            take_one<Hw>(m, frames_[k]);
            rx_[k++] = m;
        }
        return k;
    }

    // Writes the mbuf `m` back from its frame `f` if the core forwards it.
    static bool forward_one(rte_mbuf* m, const Frame& f, const Verdict& v) {
        if (v.action != Action::forward) [[unlikely]]
            return false;
        // DSR leaves the frame's start and length as they were, but an IPIP forward
        // prepends a header: rewriting the three fields unconditionally costs fewer
        // instructions than comparing them first.
        apply(m, f);
        return true;
    }

    template <unsigned... I>
    static bool forward_group(rte_mbuf* const* r, const Frame* f, const Verdict* v,
                              std::integer_sequence<unsigned, I...>) {
        return (forward_one(r[I], f[I], v[I]) && ...);
    }

    // Carries out the verdicts of the burst's `k` frames (rx_[j], frames_[j], verdicts_[j]),
    // for a burst the core did not forward whole in place (poll_uplink). Common case here:
    // every frame forwarded (tunnels) - each is written back (kGroup per iteration) and
    // the whole burst goes to the uplink straight from rx_. Otherwise dispatch_slow takes
    // over from the start of the group with the first other verdict (writing a frame back
    // twice is harmless).
    void dispatch(unsigned k) {
        rte_mbuf** r = rx_;
        const Frame* f = frames_;
        const Verdict* v = verdicts_;
        for (rte_mbuf** const groups_end = rx_ + (k & ~(kGroup - 1)); r != groups_end; r += kGroup, f += kGroup, v += kGroup)
            if (!forward_group(r, f, v, std::make_integer_sequence<unsigned, kGroup>{})) [[unlikely]]
                return dispatch_slow(static_cast<unsigned>(r - rx_), k);
        for (rte_mbuf** const end = rx_ + k; r != end; ++r, ++f, ++v)
            if (!forward_one(*r, *f, *v)) [[unlikely]]
                return dispatch_slow(static_cast<unsigned>(r - rx_), k);
        to_uplink_all(rx_, k);
    }

    // dispatch() from frame j on, rx_[0, j) being forwarded frames: frames for the uplink are
    // collected in rx_ itself (the write index never passes the read index), in burst order,
    // and the rest go where their verdict says.
    [[gnu::noinline]] void dispatch_slow(unsigned j, unsigned k) {
        unsigned nk = 0, nu = j;
        for (; j < k; ++j) {
            rte_mbuf* m = rx_[j];
            switch (verdicts_[j].action) {
                case Action::forward:
                case Action::reply:
                    apply(m, frames_[j]);
                    rx_[nu++] = m;
                    break;
                case Action::forward_fragments:
                    // Keeps the uplink's order: what this burst queued so far goes first.
                    to_uplink_all(rx_, nu);
                    nu = 0;
                    send_fragments(m, frames_[j], verdicts_[j]);
                    break;
                case Action::to_kernel:
                    // Only with an exception port: without one the core drops these frames
                    // (no_exception_port), counted once (see worker_main).
                    kern_[nk++] = m;
                    break;
                case Action::drop:
                    rte_pktmbuf_free(m);
                    break;
            }
        }
        to_uplink_all(rx_, nu);
        if (nk) to_kernel(kern_, nk);
    }

    unsigned poll_uplink(Worker& core, LoadedSnapshot* snap, uint32_t now) {
        const uint16_t n = rte_eth_rx_burst(uplink, queue, rx_, kBurst);
        if (n == 0) return 0;
        const unsigned k = hw_ipv4_cksum ? take<true>(n) : take<false>(n);
        // A burst of DSR forwards only (the common case) goes out as it is: its frames' start
        // and length are unchanged, so there is nothing to write back or to sort.
        if (core.process_burst({frames_, k}, verdicts_, snap, now))
            to_uplink_all(rx_, k);
        else
            dispatch(k);
        return n;
    }

    // Queues `n` frames for the uplink, counted once. When the TX buffer is empty and they
    // fill it exactly (every full burst of forwarded frames), the buffer would send them at
    // once: they go straight to rte_eth_tx_burst, and what the queue does not take is freed
    // and counted as the buffer's error callback does (tx_drop_up), without the per-frame
    // buffer bookkeeping.
    void to_uplink_all(rte_mbuf** pkts_up, unsigned n) {
        if (n == 0) return;
        w.uplink_tx.add(n);
        rte_eth_dev_tx_buffer* b = tx_up;
        if (b->length == 0 && n == b->size) {
            const uint16_t sent = rte_eth_tx_burst(uplink, queue, pkts_up, static_cast<uint16_t>(n));
            if (sent < n) b->error_callback(pkts_up + sent, static_cast<uint16_t>(n - sent), b->error_userdata);
            return;
        }
        for (unsigned i = 0; i < n; ++i) rte_eth_tx_buffer(uplink, queue, b, pkts_up[i]);
    }

    // Hands the burst's to_kernel frames to the TAP at once (not through a TX buffer), so a
    // frame the queue cannot take is known here and counted as a drop (kernel_full) instead
    // of to_kernel: each frame counts once even when the kernel falls behind.
    void to_kernel(rte_mbuf** pkts, unsigned n) {
        const uint16_t sent = rte_eth_tx_burst(static_cast<uint16_t>(tap), queue, pkts,
                                               static_cast<uint16_t>(n));
        w.kernel_tx.add(sent);
        if (sent < n) {
            w.core->uncount_to_kernel(Drop::kernel_full, n - sent);
            rte_pktmbuf_free_bulk(pkts + sent, n - sent);
        }
    }

    // Only with an exception port (tap >= 0: worker_main tests it).
    unsigned poll_kernel() {
        rte_mbuf* pkts[kBurst];
        const uint16_t n = rte_eth_rx_burst(static_cast<uint16_t>(tap), queue, pkts, kBurst);
        for (uint16_t i = 0; i < n; ++i) {
            if (pkts[i]->nb_segs != 1 && rte_pktmbuf_linearize(pkts[i]) != 0) {
                w.kernel_rx_drop.add();
                rte_pktmbuf_free(pkts[i]);
                continue;
            }
            w.kernel_rx.add();
            to_uplink(pkts[i]);
        }
        return n;
    }

    void flush() {
        rte_eth_tx_buffer_flush(uplink, queue, tx_up);
    }
};

int worker_main(void* arg) {
    WorkerSlot& w = *static_cast<WorkerSlot*>(arg);
    Dataplane& dp = *w.dp;
    WorkerLoop loop{w, dp, dp.uplink_, dp.tap_, dp.pool_, dp.rx_ipv4_cksum_, static_cast<uint16_t>(w.id), w.tx_up};
    // The core decides the fate of frames for the kernel: with no exception port they are
    // drops (no_exception_port), so rx = forwarded + replied + to_kernel + dropped holds
    // without counting a frame twice.
    w.core->set_exception_path(dp.tap_ >= 0);
    rte_rcu_qsbr_thread_register(dp.qsbr_, w.id);
    rte_rcu_qsbr_thread_online(dp.qsbr_, w.id);
    Worker& core = *w.core;
    rte_rcu_qsbr* const qsbr = dp.qsbr_;
    const unsigned id = w.id;
    const uint64_t hz = rte_get_tsc_hz();
    const uint64_t per_ms = hz / 1000 ? hz / 1000 : 1;
    const uint64_t drain = hz / 1000000 * dp.opt_.tx_drain_us;
    const uint32_t idle_sleep = dp.opt_.idle_sleep_us;
    const uint64_t started = dp.started_tsc_;
    uint64_t last_drain = rte_rdtsc();
    // busy_cycles: an iteration's cycles, from its TSC read to the next one's, count when it
    // received something (`busy` all ones) - close to testpmd's --record-core-cycles (which
    // times only its forwarding call), so that cycles per packet compare with macswap's even
    // when the traffic source, not the worker, is the limit. Branch-free: one masked add per
    // iteration.
    uint64_t prev_tsc = last_drain;
    uint64_t busy = 0;
    // `now` (ms since start, as Dataplane::now_ms computes it) is divided out only when the
    // TSC passes the next millisecond boundary, not on every poll: a 64-bit division takes
    // tens of cycles and polls come far more often than once a millisecond.
    uint32_t now = 0;
    uint64_t next_ms = 0;  // TSC at which `now` next changes (0: compute it on the first poll)
    unsigned empty = 0;
    while (!dp.quit_.load(std::memory_order_relaxed)) {
        const uint64_t tsc = rte_rdtsc();
        w.busy_cycles.add((tsc - prev_tsc) & busy);
        prev_tsc = tsc;
        if (tsc >= next_ms) [[unlikely]] {
            const uint64_t ms = (tsc - started) / per_ms;
            now = static_cast<uint32_t>(ms);
            next_ms = started + (ms + 1) * per_ms;
        }
        LoadedSnapshot* snap = dp.current_.load(std::memory_order_acquire);
        // HA fencing: one relaxed load per poll; the core tests the flag once per burst.
        core.set_active(tsc < dp.ha_deadline_tsc_.load(std::memory_order_relaxed));
        unsigned got = loop.poll_uplink(core, snap, now);
        if (loop.tap >= 0) got += loop.poll_kernel();
        // Connection sync: install a bounded batch of the peer's entries, serve a dump request
        // a few buckets further (docs/architecture.md, "Connection sync").
        const unsigned sync_work = core.sync_poll(now, snap);
        if (tsc - last_drain >= drain) {
            loop.flush();
            core.idle(now, 64, snap);  // expiry, and the sync refresh (uses `snap`)
            last_drain = tsc;
        }
        // Done with `snap` for this iteration: a swap may free it once every worker got here.
        rte_rcu_qsbr_quiescent(qsbr, id);
        w.polls.add();
        busy = got ? ~uint64_t{0} : 0;
        if (got) {
            w.busy_polls.add();
            empty = 0;
        }
        if (sync_work) empty = 0;  // sync work pending: do not sleep on it
        if (!got && idle_sleep && ++empty >= kIdlePollsBeforeSleep) {
            loop.flush();
            // Offline while asleep so snapshot swaps need not wait for us.
            rte_rcu_qsbr_thread_offline(qsbr, id);
            usleep(idle_sleep);
            rte_rcu_qsbr_thread_online(qsbr, id);
        }
    }
    loop.flush();
    rte_rcu_qsbr_thread_offline(dp.qsbr_, w.id);
    rte_rcu_qsbr_thread_unregister(dp.qsbr_, w.id);
    return 0;
}

}  // namespace fulcrum::dpdk
