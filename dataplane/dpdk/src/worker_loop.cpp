// The worker lcore loop: run to completion, one uplink RX queue per worker.
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_rcu_qsbr.h>
#include <unistd.h>

#include "fulcrum/dpdk/dataplane.hpp"
#include "fulcrum/forward.hpp"
#include "worker_slot.hpp"

namespace fulcrum::dpdk {

namespace {

constexpr unsigned kBurst = 32;
constexpr unsigned kMaxFragments = 8;
constexpr unsigned kIdlePollsBeforeSleep = 256;

inline Frame frame_of(rte_mbuf* m) {
    return Frame{rte_pktmbuf_mtod(m, uint8_t*), m->data_len, rte_pktmbuf_headroom(m),
                 rte_pktmbuf_tailroom(m)};
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

    void drop_early(rte_mbuf* m, Drop d) {
        WorkerCounters& c = w.core->counters();
        c.rx.add();
        c.drops[static_cast<unsigned>(d)].add();
        c.dropped.add();
        rte_pktmbuf_free(m);
    }

    void to_uplink(rte_mbuf* m) {
        w.uplink_tx.add();
        rte_eth_tx_buffer(uplink, static_cast<uint16_t>(w.id), w.tx_up, m);
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
    rte_mbuf* taken_[kBurst] = {};
    rte_mbuf* up_[kBurst] = {};
    rte_mbuf* kern_[kBurst] = {};
    Frame frames_[kBurst] = {};
    Verdict verdicts_[kBurst] = {};

    unsigned poll_uplink(LoadedSnapshot* snap, uint32_t now) {
        const uint16_t n = rte_eth_rx_burst(uplink, static_cast<uint16_t>(w.id), rx_, kBurst);
        if (n == 0) return 0;
        unsigned k = 0;
        // With the RX IPv4 checksum offload on, a frame the NIC marks bad is dropped here and
        // one it marks good skips the software check; any other (unknown, not IPv4) is
        // verified by the parser.
        const bool hw_cksum = hw_ipv4_cksum;
        for (uint16_t i = 0; i < n; ++i) {
            rte_mbuf* m = rx_[i];
            if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(rx_[i + 1], void*));
            if (m->nb_segs != 1) [[unlikely]] {
                drop_early(m, Drop::multi_segment);
                continue;
            }
            bool good = false;
            if (hw_cksum) {
                const uint64_t cs = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
                if (cs == RTE_MBUF_F_RX_IP_CKSUM_BAD) {
                    drop_early(m, Drop::ipv4_bad_checksum);
                    continue;
                }
                good = cs == RTE_MBUF_F_RX_IP_CKSUM_GOOD;
            }
            Frame& f = frames_[k];
            f = frame_of(m);
            f.ipv4_csum_good = good;
            taken_[k++] = m;
        }
        w.core->process_burst({frames_, k}, verdicts_, snap, now);
        unsigned nk = 0, nu = 0;
        for (unsigned j = 0; j < k; ++j) {
            rte_mbuf* m = taken_[j];
            switch (verdicts_[j].action) {
                case Action::forward:
                case Action::reply:
                    apply(m, frames_[j]);
                    up_[nu++] = m;
                    break;
                case Action::forward_fragments:
                    // Keeps the uplink's order: what this burst queued so far goes first.
                    to_uplink_all(up_, nu);
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
        to_uplink_all(up_, nu);
        if (nk) to_kernel(kern_, nk);
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
        rte_eth_dev_tx_buffer* b = w.tx_up;
        if (b->length == 0 && n == b->size) {
            const uint16_t sent = rte_eth_tx_burst(uplink, static_cast<uint16_t>(w.id), pkts_up, static_cast<uint16_t>(n));
            if (sent < n) b->error_callback(pkts_up + sent, static_cast<uint16_t>(n - sent), b->error_userdata);
            return;
        }
        for (unsigned i = 0; i < n; ++i) rte_eth_tx_buffer(uplink, static_cast<uint16_t>(w.id), b, pkts_up[i]);
    }

    // Hands the burst's to_kernel frames to the TAP at once (not through a TX buffer), so a
    // frame the queue cannot take is known here and counted as a drop (kernel_full) instead
    // of to_kernel: each frame counts once even when the kernel falls behind.
    void to_kernel(rte_mbuf** pkts, unsigned n) {
        const uint16_t sent = rte_eth_tx_burst(static_cast<uint16_t>(tap), static_cast<uint16_t>(w.id), pkts,
                                               static_cast<uint16_t>(n));
        w.kernel_tx.add(sent);
        if (sent < n) {
            w.core->uncount_to_kernel(Drop::kernel_full, n - sent);
            rte_pktmbuf_free_bulk(pkts + sent, n - sent);
        }
    }

    unsigned poll_kernel() {
        if (tap < 0) return 0;
        rte_mbuf* pkts[kBurst];
        const uint16_t n = rte_eth_rx_burst(static_cast<uint16_t>(tap), static_cast<uint16_t>(w.id), pkts, kBurst);
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
        rte_eth_tx_buffer_flush(uplink, static_cast<uint16_t>(w.id), w.tx_up);
    }
};

int worker_main(void* arg) {
    WorkerSlot& w = *static_cast<WorkerSlot*>(arg);
    Dataplane& dp = *w.dp;
    WorkerLoop loop{w, dp, dp.uplink_, dp.tap_, dp.pool_, dp.rx_ipv4_cksum_};
    // The core decides the fate of frames for the kernel: with no exception port they are
    // drops (no_exception_port), so rx = forwarded + replied + to_kernel + dropped holds
    // without counting a frame twice.
    w.core->set_exception_path(dp.tap_ >= 0);
    rte_rcu_qsbr_thread_register(dp.qsbr_, w.id);
    rte_rcu_qsbr_thread_online(dp.qsbr_, w.id);
    const uint64_t hz = rte_get_tsc_hz();
    const uint64_t per_ms = hz / 1000 ? hz / 1000 : 1;
    const uint64_t drain = hz / 1000000 * dp.opt_.tx_drain_us;
    const uint32_t idle_sleep = dp.opt_.idle_sleep_us;
    uint64_t last_drain = rte_rdtsc();
    unsigned empty = 0;
    while (!dp.quit_.load(std::memory_order_relaxed)) {
        const uint64_t tsc = rte_rdtsc();
        const auto now = static_cast<uint32_t>((tsc - dp.started_tsc_) / per_ms);
        LoadedSnapshot* snap = dp.current_.load(std::memory_order_acquire);
        // HA fencing: one relaxed load per poll; the core tests the flag once per burst.
        w.core->set_active(tsc < dp.ha_deadline_tsc_.load(std::memory_order_relaxed));
        unsigned got = loop.poll_uplink(snap, now);
        got += loop.poll_kernel();
        // Connection sync: install a bounded batch of the peer's entries, serve a dump request
        // a few buckets further (docs/architecture.md, "Connection sync").
        const unsigned sync_work = w.core->sync_poll(now, snap);
        if (tsc - last_drain >= drain) {
            loop.flush();
            w.core->idle(now, 64, snap);  // expiry, and the sync refresh (uses `snap`)
            last_drain = tsc;
        }
        // Done with `snap` for this iteration: a swap may free it once every worker got here.
        rte_rcu_qsbr_quiescent(dp.qsbr_, w.id);
        w.polls.add();
        if (got) {
            w.busy_polls.add();
            empty = 0;
        }
        if (sync_work) empty = 0;  // sync work pending: do not sleep on it
        if (!got && idle_sleep && ++empty >= kIdlePollsBeforeSleep) {
            loop.flush();
            // Offline while asleep so snapshot swaps need not wait for us.
            rte_rcu_qsbr_thread_offline(dp.qsbr_, w.id);
            usleep(idle_sleep);
            rte_rcu_qsbr_thread_online(dp.qsbr_, w.id);
        }
    }
    loop.flush();
    rte_rcu_qsbr_thread_offline(dp.qsbr_, w.id);
    rte_rcu_qsbr_thread_unregister(dp.qsbr_, w.id);
    return 0;
}

}  // namespace fulcrum::dpdk
