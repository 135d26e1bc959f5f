#include "fulcrum/dpdk/dataplane.hpp"

#include <rte_bus_vdev.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "fulcrum/conn_query.hpp"
#include "fulcrum/conn_state.hpp"
#include "fulcrum/forward.hpp"
#include "fulcrum/snapshot.hpp"
#include "fulcrum/sync.hpp"
#include "worker_slot.hpp"

namespace fulcrum::dpdk {

void register_telemetry(Dataplane* dp);
void unregister_telemetry();

namespace {

// The kernel side of the exception TAP queues what the host sends (ARP and ND answers, VRRP
// adverts, connection-sync datagrams, health checks) until the dataplane reads it; a tun
// device's default queue of 1000 frames drops a sync burst when the dataplane's poll is
// delayed for ~20 ms on a busy host (bench/sync.sh). A longer queue only costs memory while
// full.
constexpr int kTapTxQueueLen = 8192;

void set_tap_queue_len(const std::string& iface) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", iface.c_str());
    ifr.ifr_qlen = kTapTxQueueLen;
    if (fd < 0 || ::ioctl(fd, SIOCSIFTXQLEN, &ifr) != 0)
        spdlog::warn("exception interface {}: cannot set its transmit queue to {} frames ({}); "
                     "bursts from the host may be dropped (ip link set {} txqueuelen {})",
                     iface, kTapTxQueueLen, std::strerror(errno), iface, kTapTxQueueLen);
    if (fd >= 0) ::close(fd);
}

std::runtime_error fail(const std::string& m) { return std::runtime_error(m); }

static_assert(alignof(rte_rcu_qsbr_cnt) == RTE_CACHE_LINE_SIZE && sizeof(rte_rcu_qsbr_cnt) % RTE_CACHE_LINE_SIZE == 0,
              "each worker's RCU counter has a cache line of its own");

// Virtual devices whose RX queues are separate inputs filled by someone else, without RSS:
// each memif ring by the peer application, each rx_pcap file by whoever wrote it, each
// af_packet queue by the kernel's fanout (a flow hash), each af_xdp queue by the NIC's own RSS
// (set with ethtool), each ring by the application at its other end. Several workers on such a
// device are correct as long as that side keeps every flow on one queue, as RSS would. A
// hardware NIC without RSS is still refused: nothing would spread its flows over the queues.
bool queues_are_separate_inputs(const char* driver) {
    if (!driver) return false;
    for (const char* d : {"net_memif", "net_pcap", "net_af_packet", "net_af_xdp", "net_ring"})
        if (std::strcmp(driver, d) == 0) return true;
    return false;
}

std::string port_name(uint16_t p) {
    char name[RTE_ETH_NAME_MAX_LEN] = "";
    rte_eth_dev_get_name_by_port(p, name);
    return name;
}

std::string mac_str(const rte_ether_addr& a) {
    MacAddr m;
    std::copy(a.addr_bytes, a.addr_bytes + 6, m.bytes.begin());
    return m.str();  // lower case, as Linux and the rest of Fulcrum print MACs
}

uint16_t resolve_port(const std::string& spec) {
    uint16_t pid = 0;
    if (!spec.empty() && rte_eth_dev_get_port_by_name(spec.c_str(), &pid) == 0) return pid;
    if (!spec.empty() && spec.find_first_not_of("0123456789") == std::string::npos && spec.size() < 6) {
        const unsigned long n = std::stoul(spec);
        if (n < RTE_MAX_ETHPORTS && rte_eth_dev_is_valid_port(static_cast<uint16_t>(n)))
            return static_cast<uint16_t>(n);
    }
    std::string avail;
    uint16_t p;
    RTE_ETH_FOREACH_DEV(p) {
        avail += (avail.empty() ? "" : ", ") + port_name(p) + " (" + std::to_string(p) + ")";
    }
    throw fail("uplink port '" + spec + "' not found; DPDK ports present: " +
               (avail.empty() ? std::string("none") : avail) +
               ". Create it with an EAL option (--vdev, or -a for a PCI NIC bound to vfio-pci)");
}

void tx_drop_cb(rte_mbuf** pkts, uint16_t unsent, void* userdata) {
    static_cast<Counter*>(userdata)->add(unsent);
    rte_pktmbuf_free_bulk(pkts, unsent);
}

}  // namespace

Dataplane::Dataplane(const DataplaneOptions& opt) : opt_(opt) {
    if (opt_.ha_managed) {
        ha_managed_.store(true);
        ha_deadline_tsc_.store(0);  // standby until fulcrumd's first ha request
        ha_active_role_ = false;
    }
    const unsigned n_workers = rte_lcore_count() - 1;
    if (n_workers == 0)
        throw fail("no worker lcore: give the EAL at least two cores (e.g. -l 0-1); the main lcore "
                   "serves the control socket and every other lcore runs one worker");
    if (opt_.conn_capacity == 0) throw fail("--conn-capacity must be at least 1");
    if (opt_.sync_ring && (!std::has_single_bit(opt_.sync_ring) ||
                           opt_.sync_ring > SpscRing<fl_sync_record>::kMaxCapacity))
        throw fail("--sync-ring " + std::to_string(opt_.sync_ring) +
                   " must be 0 (no connection sync export) or a power of two up to 2^30");
    uplink_ = resolve_port(opt_.uplink);
    uplink_name_ = port_name(uplink_);
    int socket = rte_eth_dev_socket_id(uplink_);
    if (socket < 0) socket = static_cast<int>(rte_socket_id());

    if (opt_.mtu) {
        mtu_ = opt_.mtu;
    } else if (rte_eth_dev_get_mtu(uplink_, &mtu_) != 0 || mtu_ == 0) {
        mtu_ = RTE_ETHER_MTU;
    }

    // One mempool for the uplink and the TAP, on the uplink's NUMA node.
    const unsigned ports = opt_.exception_iface.empty() ? 1 : 2;
    uint32_t nmbuf = opt_.mbufs;
    const uint32_t per_queue = opt_.rx_desc + opt_.tx_desc + 3 * Worker::kMaxBurst + 64;
    // Every descriptor filled, every burst in flight and every lcore's mempool cache (256).
    const uint32_t least = ports * n_workers * per_queue + rte_lcore_count() * 256;
    if (nmbuf == 0) {
        nmbuf = std::max<uint32_t>(rte_align32pow2(least + 4096) - 1, 8191);
    } else if (nmbuf < least) {
        throw fail("--mbufs " + std::to_string(nmbuf) + " is fewer packet buffers than the " +
                   std::to_string(least) + " the queues' descriptors, bursts and per-core caches need with these " +
                   "options; give at least " + std::to_string(least) + ", or leave --mbufs out to have it computed");
    }
    const uint32_t room = std::max<uint32_t>(RTE_MBUF_DEFAULT_BUF_SIZE,
                                             RTE_PKTMBUF_HEADROOM + mtu_ + RTE_ETHER_HDR_LEN + 8 + 64);
    pool_ = rte_pktmbuf_pool_create("fulcrum_mbufs", nmbuf, 256, 0, static_cast<uint16_t>(room), socket);
    if (!pool_)
        throw fail("cannot create a pool of " + std::to_string(nmbuf) + " packet buffers: " +
                   rte_strerror(rte_errno) + " (give the EAL more memory with -m or hugepages)");

    // Exception port: a TAP interface carrying the uplink's MAC, so the kernel keeps the
    // host's view of the link.
    if (!opt_.exception_iface.empty()) {
        rte_ether_addr mac;
        rte_eth_macaddr_get(uplink_, &mac);
        tap_name_ = "net_tap_fulcrum";
        const std::string args = "iface=" + opt_.exception_iface + ",mac=" + mac_str(mac);
        if (rte_vdev_init(tap_name_.c_str(), args.c_str()) != 0)
            throw fail("cannot create the exception TAP interface '" + opt_.exception_iface +
                       "' (" + args + "): is the name free and /dev/net/tun available?");
        uint16_t tp;
        if (rte_eth_dev_get_port_by_name(tap_name_.c_str(), &tp) != 0)
            throw fail("exception TAP port vanished after creation");
        tap_ = tp;
        set_tap_queue_len(opt_.exception_iface);
    }

    setup_port(uplink_, static_cast<uint16_t>(n_workers), true, "uplink");
    if (tap_ >= 0) setup_port(static_cast<uint16_t>(tap_), static_cast<uint16_t>(n_workers), false, "exception");
    ports_started_ = true;

    // RCU: workers report a quiescent state after every burst; a snapshot swap waits for all.
    // Each worker's quiescent-state counter, written every poll, is on a cache line of its own
    // in DPDK's layout (checked at compile time below).
    const size_t qsz = rte_rcu_qsbr_get_memsize(n_workers);
    qsbr_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc_socket("fulcrum_qsbr", qsz, RTE_CACHE_LINE_SIZE, socket));
    if (!qsbr_ || rte_rcu_qsbr_init(qsbr_, n_workers) != 0) throw fail("cannot set up RCU state");

    unsigned lcore;
    unsigned id = 0;
    RTE_LCORE_FOREACH_WORKER(lcore) {
        auto w = std::make_unique<WorkerSlot>();
        w->id = id;
        w->lcore = lcore;
        w->dp = this;
        const int wsock = static_cast<int>(rte_lcore_to_socket_id(lcore));
        w->conn_mem = std::make_unique<TableMemory>(ConnTable::memory_bytes(opt_.conn_capacity), wsock,
                                                    rte_eal_has_hugepages() != 0,
                                                    "connection table of worker " + std::to_string(id) +
                                                        " (--conn-capacity " + std::to_string(opt_.conn_capacity) + ")");
        spdlog::info("{}", w->conn_mem->describe());
        WorkerConfig wc;
        wc.worker_id = id;
        rte_ether_addr mac;
        rte_eth_macaddr_get(uplink_, &mac);
        std::copy(mac.addr_bytes, mac.addr_bytes + 6, wc.own_mac.bytes.begin());
        wc.mtu = mtu_;
        wc.conn_capacity = opt_.conn_capacity;
        wc.timeouts = opt_.timeouts;
        wc.max_services = opt_.max_services;
        wc.max_servers = opt_.max_servers;
        wc.conn_memory = w->conn_mem->data();
        wc.sync_ring = opt_.sync_ring;
        wc.sync_install_ring = kSyncMaxRecords;  // one full sync_install always fits an empty ring
        w->core = std::make_unique<Worker>(wc);
        w->tx_up = static_cast<rte_eth_dev_tx_buffer*>(
            rte_zmalloc_socket("fulcrum_txbuf", RTE_ETH_TX_BUFFER_SIZE(Worker::kMaxBurst), RTE_CACHE_LINE_SIZE, wsock));
        if (!w->tx_up) throw fail("cannot allocate transmit buffers");
        rte_eth_tx_buffer_init(w->tx_up, 32);
        rte_eth_tx_buffer_set_err_callback(w->tx_up, tx_drop_cb, &w->tx_drop_up);
        workers_.push_back(std::move(w));
        ++id;
    }
    started_tsc_ = rte_rdtsc();
    register_telemetry(this);
    rte_ether_addr mac;
    rte_eth_macaddr_get(uplink_, &mac);
    spdlog::info("uplink {} (port {}) mac {} mtu {}, {} worker(s), {} connections each ({} MiB){}",
                 uplink_name_, uplink_, mac_str(mac), mtu_, workers_.size(), opt_.conn_capacity,
                 ConnTable::memory_bytes(opt_.conn_capacity) >> 20,
                 tap_ >= 0 ? ", exception path to kernel interface " + opt_.exception_iface : ", no exception path");
}

void Dataplane::setup_port(uint16_t port, uint16_t nq, bool rss, const char* role) {
    rte_eth_dev_info info;
    if (int rc = rte_eth_dev_info_get(port, &info); rc != 0)
        throw fail(std::string(role) + " port " + port_name(port) + ": cannot read device info: " + rte_strerror(-rc));
    const std::string name = std::string(role) + " port " + port_name(port) + " (" + (info.driver_name ? info.driver_name : "?") + ")";
    if (nq > info.max_rx_queues || nq > info.max_tx_queues)
        throw fail(name + " has at most " + std::to_string(std::min(info.max_rx_queues, info.max_tx_queues)) +
                   " queue pairs but " + std::to_string(nq) + " workers need one each: use fewer lcores (-l)");
    rte_eth_conf conf{};
    // Without this, configure() resets the port to 1500 while the workers would use mtu_.
    conf.rxmode.mtu = mtu_;
    if (rss && nq > 1) {
        const uint64_t want = RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP;
        const uint64_t got = want & info.flow_type_rss_offloads;
        if (got == 0 && queues_are_separate_inputs(info.driver_name)) {
            spdlog::info("{}: no RSS; each of its {} queues is a separate input, one per worker: whatever "
                         "fills the queues must keep every flow on one queue",
                         name, nq);
        } else if (got == 0) {
            throw fail(name + " cannot spread flows over " + std::to_string(nq) +
                       " queues (no RSS support): run one worker (-l with two cores)");
        }
        if (got != 0 && got != want)
            spdlog::warn("{}: RSS hash types trimmed to what the device supports: 0x{:x} of requested 0x{:x}",
                         name, got, want);
        if (got != 0) {
            conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = got;
        }
    }
    if (rss && (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM)) {
        conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
        if (port == uplink_) rx_ipv4_cksum_ = true;
    }
    if (info.tx_offload_capa & RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE)
        conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
    if (int rc = rte_eth_dev_configure(port, nq, nq, &conf); rc != 0)
        throw fail(name + ": configure failed: " + rte_strerror(-rc));
    uint16_t nrx = opt_.rx_desc, ntx = opt_.tx_desc;
    if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx); rc != 0)
        throw fail(name + ": cannot adjust descriptor counts: " + rte_strerror(-rc));
    if (nrx != opt_.rx_desc || ntx != opt_.tx_desc)
        spdlog::info("{}: descriptors trimmed to the device's limits: rx {} (asked {}), tx {} (asked {})", name,
                     nrx, opt_.rx_desc, ntx, opt_.tx_desc);
    if (int rc = rte_eth_dev_set_mtu(port, mtu_); rc != 0 && rc != -ENOTSUP)
        throw fail(name + ": cannot set MTU " + std::to_string(mtu_) + " (device range " +
                   std::to_string(info.min_mtu) + ".." + std::to_string(info.max_mtu) + "): " + rte_strerror(-rc));
    const int socket = std::max(0, rte_eth_dev_socket_id(port));
    rte_eth_rxconf rxc = info.default_rxconf;
    rxc.offloads = conf.rxmode.offloads;
    rte_eth_txconf txc = info.default_txconf;
    txc.offloads = conf.txmode.offloads;
    for (uint16_t q = 0; q < nq; ++q) {
        if (int rc = rte_eth_rx_queue_setup(port, q, nrx, static_cast<unsigned>(socket), &rxc, pool_); rc != 0)
            throw fail(name + ": RX queue " + std::to_string(q) + " setup failed: " + rte_strerror(-rc));
        if (int rc = rte_eth_tx_queue_setup(port, q, ntx, static_cast<unsigned>(socket), &txc); rc != 0)
            throw fail(name + ": TX queue " + std::to_string(q) + " setup failed: " + rte_strerror(-rc));
    }
    if (int rc = rte_eth_dev_start(port); rc != 0) throw fail(name + ": start failed: " + rte_strerror(-rc));
    if (port == uplink_)
        rss_fingerprint_ = read_rss_fingerprint(port, nq, info.driver_name, conf.rx_adv_conf.rss_conf.rss_hf);
    if (opt_.promiscuous || port != uplink_) rte_eth_promiscuous_enable(port);
    rte_eth_allmulticast_enable(port);  // VRRP and neighbour discovery use multicast
}

Dataplane::~Dataplane() {
    if (!restored_from_.empty()) {
        // The process did not come up after restoring: the next start gets the state again.
        const std::string consumed = restored_from_ + ".consumed";
        if (std::rename(consumed.c_str(), restored_from_.c_str()) == 0)
            spdlog::warn("the dataplane did not start: connection state put back at {} for the next start",
                         restored_from_);
        else
            spdlog::warn("the dataplane did not start, and the connection state {} cannot be put back at {}: {}",
                         consumed, restored_from_, std::strerror(errno));
    }
    stop();
    unregister_telemetry();
    if (ports_started_) {
        for (int p : {static_cast<int>(uplink_), tap_}) {
            if (p < 0) continue;
            rte_eth_dev_stop(static_cast<uint16_t>(p));
            rte_eth_dev_close(static_cast<uint16_t>(p));
        }
    }
    if (tap_ >= 0) rte_vdev_uninit(tap_name_.c_str());
    for (auto& w : workers_) {
        w->core.reset();
        w->conn_mem.reset();
        rte_free(w->tx_up);
    }
    delete current_.exchange(nullptr);
    rte_free(qsbr_);
    rte_mempool_free(pool_);
}

int worker_main(void* arg);

void Dataplane::start() {
    if (running_) return;
    quit_.store(false);
    for (auto& w : workers_) {
        if (int rc = rte_eal_remote_launch(worker_main, w.get(), w->lcore); rc != 0)
            throw fail("cannot launch worker on lcore " + std::to_string(w->lcore) + ": " + rte_strerror(-rc));
    }
    running_ = true;
}

void Dataplane::stop() {
    if (!running_) return;
    quit_.store(true);
    for (auto& w : workers_) rte_eal_wait_lcore(w->lcore);
    running_ = false;
}

Expected<uint64_t> Dataplane::load_snapshot(std::span<const uint8_t> bytes) {
    auto ls = LoadedSnapshot::load(bytes, workers(), opt_.max_snapshot_bytes);
    if (!ls) {
        spdlog::warn("{}; the running snapshot (generation {}) stays", ls.error(), generation());
        return Error{ls.error()};
    }
    std::unique_ptr<LoadedSnapshot> next = std::move(ls.value());
    const SnapshotView& v = next->view();
    for (const auto& s : v.services())
        if (s.id >= opt_.max_services)
            return Error{"snapshot rejected: service id " + std::to_string(s.id) + " is not below --max-services " +
                         std::to_string(opt_.max_services)};
    if (v.servers().size() > opt_.max_servers)
        return Error{"snapshot rejected: " + std::to_string(v.servers().size()) +
                     " server slots exceed --max-servers " + std::to_string(opt_.max_servers)};
    // Built here, on the control thread, never by the workers: sync_install maps records to
    // this snapshot's slots with it.
    auto index = std::make_unique<SyncServerIndex>(v);
    std::lock_guard lk(control_mu_);
    LoadedSnapshot* cur = current_.load();
    if (cur && next->generation() < cur->generation())
        return Error{"snapshot rejected: generation " + std::to_string(next->generation()) +
                     " is older than the running generation " + std::to_string(cur->generation())};
    const uint64_t gen = next->generation();
    LoadedSnapshot* old = current_.exchange(next.release(), std::memory_order_acq_rel);
    generation_.store(gen);
    sync_index_ = std::move(index);
    free_snapshot_after_grace(old);
    spdlog::info("snapshot generation {} loaded: {} services, {} server slots", gen, v.services().size(),
                 v.servers().size());
    return gen;
}

void Dataplane::free_snapshot_after_grace(LoadedSnapshot* old) {
    if (!old) return;
    // Wait until every online worker has passed a quiescent point: none can still hold it.
    const uint64_t token = rte_rcu_qsbr_start(qsbr_);
    rte_rcu_qsbr_check(qsbr_, token, true);
    delete old;
}

std::vector<uint8_t> Dataplane::snapshot_bytes() const {
    std::lock_guard lk(control_mu_);
    const LoadedSnapshot* cur = current_.load();
    if (!cur) return {};
    auto b = cur->view().bytes();
    return {b.begin(), b.end()};
}

uint64_t Dataplane::generation() const { return generation_.load(); }

// ---- restart handover ----------------------------------------------------------------------

uint64_t Dataplane::read_rss_fingerprint(uint16_t port, uint16_t nq, const char* driver, uint64_t rss_hf) {
    // What decides which queue (worker) a flow lands on: with one queue, nothing; otherwise
    // the driver, the queue count, the hash types, the key and the redirection table. A device
    // that cannot report its key or table gets 0: the queue of a flow is then unknown.
    std::vector<uint8_t> id;
    auto put = [&id](const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        id.insert(id.end(), b, b + n);
    };
    put(driver ? driver : "", driver ? std::strlen(driver) + 1 : 1);
    put(&nq, sizeof nq);
    if (nq > 1) {
        rte_eth_dev_info info;
        if (rte_eth_dev_info_get(port, &info) != 0 || info.hash_key_size == 0 || info.reta_size == 0) return 0;
        std::vector<uint8_t> key(info.hash_key_size);
        rte_eth_rss_conf rc{};
        rc.rss_key = key.data();
        rc.rss_key_len = info.hash_key_size;
        if (rte_eth_dev_rss_hash_conf_get(port, &rc) != 0) return 0;
        std::vector<rte_eth_rss_reta_entry64> reta((info.reta_size + RTE_ETH_RETA_GROUP_SIZE - 1) /
                                                   RTE_ETH_RETA_GROUP_SIZE);
        for (auto& g : reta) g.mask = ~uint64_t{0};
        if (rte_eth_dev_rss_reta_query(port, reta.data(), info.reta_size) != 0) return 0;
        put(&rss_hf, sizeof rss_hf);
        put(key.data(), rc.rss_key_len);
        for (size_t i = 0; i < info.reta_size; ++i)
            put(&reta[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE], sizeof(uint16_t));
    }
    const uint64_t h = bytes_hash(id.data(), id.size(), 0x7273732d66707231ull);
    return h ? h : 1;
}

uint32_t Dataplane::now_ms() const {
    const uint64_t hz = rte_get_tsc_hz();
    const uint64_t per_ms = hz / 1000 ? hz / 1000 : 1;
    return static_cast<uint32_t>((rte_rdtsc() - started_tsc_) / per_ms);
}

Expected<size_t> Dataplane::save_state(const std::string& path) {
    if (running_) return Error{"cannot save the connection state while the workers run: stop them first"};
    ConnStateData d;
    d.snapshot = snapshot_bytes();
    if (d.snapshot.empty()) {
        // Without a snapshot no packet reached a service: there is nothing to hand over.
        spdlog::info("no snapshot is running: no connection state to hand over ({} not written)", path);
        return size_t{0};
    }
    d.workers = workers();
    d.rss_fingerprint = rss_fingerprint_;
    const uint32_t now = now_ms();
    std::vector<ConnExport> live;
    for (const auto& w : workers_) {
        live.clear();
        w->core->conns().export_live(now, live);
        d.entries.reserve(d.entries.size() + live.size());
        for (const ConnExport& e : live) {
            ConnStateRecord r{};
            r.key = e.entry.key;
            r.server = e.entry.server;
            r.server_tag = e.entry.server_tag;
            r.idle_ms = e.idle_ms;
            r.worker = static_cast<uint16_t>(w->id);
            r.state = static_cast<uint8_t>(e.state);
            d.entries.push_back(r);
        }
    }
    // Stamped last: the time spent collecting is not downtime.
    d.written_unix_ms = unix_now_ms();
    auto n = write_conn_state_file(path, d);
    if (!n) return Error{n.error()};
    spdlog::info("connection state saved to {}: snapshot generation {}, {} connection(s), {} bytes", path,
                 generation(), d.entries.size(), n.value());
    return d.entries.size();
}

size_t Dataplane::restore_state(const std::string& path) {
    if (running_) {
        spdlog::error("connection state {} not restored: the workers already run", path);
        return 0;
    }
    // A file larger than any this configuration could use is refused unread: the largest
    // snapshot plus four times this process's table room (a predecessor may have had more
    // workers or larger tables; what does not fit is lost anyway).
    const size_t rec = sizeof(ConnStateRecord);
    const size_t max_bytes = sizeof(ConnStateHeader) + opt_.max_snapshot_bytes + 8 +
                             4 * workers_.size() * ConnTable::buckets_for(opt_.conn_capacity) * ConnTable::kWays * rec;
    bool missing = false;
    auto st = read_conn_state_file(path, max_bytes, missing);
    const std::string consumed = path + ".consumed", rejected = path + ".rejected";
    if (!st) {
        if (missing) {
            struct stat cs {};
            spdlog::info("no connection state at {}: starting with empty connection tables{}", path,
                         ::stat(consumed.c_str(), &cs) == 0
                             ? " (" + consumed + " is left from a start that did not finish: kept for inspection)"
                             : std::string());
            return 0;
        }
        // Only a regular file is moved aside (a directory would take what it holds with it).
        struct stat fs {};
        const bool moved = ::stat(path.c_str(), &fs) == 0 && S_ISREG(fs.st_mode) &&
                           std::rename(path.c_str(), rejected.c_str()) == 0;
        spdlog::warn("{}; starting with empty connection tables{}", st.error(),
                     moved ? " (file kept as " + rejected + ")" : "");
        return 0;
    }
    ConnStateData& d = st.value();
    // Out of the way now: a restart after a crash below must not find it again. It is removed
    // once the process is up (restore_done), and put back if the start fails.
    if (std::rename(path.c_str(), consumed.c_str()) == 0) {
        restored_from_ = path;
    } else {
        spdlog::warn("cannot rename the connection state file {} to {}: {}; removing it", path, consumed,
                     std::strerror(errno));
        if (std::remove(path.c_str()) != 0)
            spdlog::warn("cannot remove the consumed connection state file {}: {}", path, std::strerror(errno));
    }
    if (!d.snapshot.empty()) {
        auto gen = load_snapshot(d.snapshot);
        if (!gen) {
            if (generation() == 0) {
                const bool kept = !restored_from_.empty() && std::rename(consumed.c_str(), rejected.c_str()) == 0;
                restored_from_.clear();
                spdlog::warn("connection state {} refused: its snapshot does not load ({}); starting with empty "
                             "connection tables{}", path, gen.error(), kept ? " (file kept as " + rejected + ")" : "");
                return 0;
            }
            // A newer --snapshot is running; entries whose slots it reuses for other servers
            // fail the per-packet tag check and are picked again.
            spdlog::info("connection state {}: keeping the running snapshot generation {} ({})", path, generation(),
                         gen.error());
        }
    }
    // With several workers and an unknown queue per flow, every worker gets a copy: the copy
    // on the worker the flow reaches keeps the connection, the others age out unused.
    const unsigned nw = workers();
    const ConnPlacement where = conn_placement(nw, rss_fingerprint_, d);
    // Freshest first: a key present more than once (copies left by an earlier restore into
    // every worker) is restored with its most recent use; later copies are duplicates.
    std::stable_sort(d.entries.begin(), d.entries.end(),
                     [](const ConnStateRecord& a, const ConnStateRecord& b) { return a.idle_ms < b.idle_ms; });
    const uint64_t now_unix = unix_now_ms();
    const uint32_t now = now_ms();
    size_t counts[5] = {};  // by ConnRestore
    size_t restored_conns = 0;
    for (const ConnStateRecord& r : d.entries) {
        const ConnEntry e{r.key, r.server, r.server_tag};
        const auto cs = static_cast<ConnState>(r.state);
        const uint32_t idle = restored_idle_ms(r, d.written_unix_ms, now_unix);
        if (where == ConnPlacement::every_worker) {
            bool any = false;
            ConnRestore last = ConnRestore::full;
            for (auto& w : workers_) {
                last = w->core->restore_connection(e, cs, idle, now);
                any |= last == ConnRestore::restored;
            }
            ++counts[static_cast<unsigned>(any ? ConnRestore::restored : last)];
            restored_conns += any;
        } else {
            const unsigned wi = where == ConnPlacement::only_worker ? 0 : r.worker;
            const ConnRestore res = wi < nw ? workers_[wi]->core->restore_connection(e, cs, idle, now)
                                            : ConnRestore::invalid;
            ++counts[static_cast<unsigned>(res)];
            restored_conns += res == ConnRestore::restored;
        }
    }
    spdlog::info("connection state {} restored: {} of {} connection(s) ({} expired while down, {} without room, "
                 "{} duplicate, {} invalid); placed {}", path, restored_conns, d.entries.size(),
                 counts[static_cast<unsigned>(ConnRestore::expired)], counts[static_cast<unsigned>(ConnRestore::full)],
                 counts[static_cast<unsigned>(ConnRestore::duplicate)],
                 counts[static_cast<unsigned>(ConnRestore::invalid)], conn_placement_text(where));
    return restored_conns;
}

void Dataplane::restore_done() {
    if (restored_from_.empty()) return;
    const std::string consumed = restored_from_ + ".consumed";
    restored_from_.clear();
    if (std::remove(consumed.c_str()) != 0)
        spdlog::warn("cannot remove the consumed connection state file {}: {}", consumed, std::strerror(errno));
}

namespace {
PortCounters port_stats(uint16_t p, const char* role) {
    rte_eth_stats st{};
    rte_eth_stats_get(p, &st);
    rte_eth_link link{};
    rte_eth_link_get_nowait(p, &link);
    PortCounters c;
    c.name = port_name(p);
    c.role = role;
    c.port = p;
    c.link_up = link.link_status == RTE_ETH_LINK_UP;
    c.speed_mbps = link.link_speed;
    c.rx_packets = st.ipackets;
    c.tx_packets = st.opackets;
    c.rx_bytes = st.ibytes;
    c.tx_bytes = st.obytes;
    c.rx_missed = st.imissed;
    c.rx_errors = st.ierrors;
    c.tx_errors = st.oerrors;
    c.rx_nombuf = st.rx_nombuf;
    return c;
}
}  // namespace

DataplaneCounters Dataplane::counters() const {
    // One reader at a time: ethdev statistics calls are not thread-safe, and the snapshot
    // metadata must not be freed underneath (swaps hold this lock too).
    std::lock_guard lk(control_mu_);
    DataplaneCounters out;
    std::vector<uint64_t> drops(kDropReasons, 0);
    uint64_t drp = 0, extra_drops = 0;
    for (const auto& w : workers_) {
        const WorkerCounters& c = w->core->counters();
        out.rx += c.rx.get();
        out.forwarded += c.forwarded.get();
        out.replied += c.replied.get();
        out.to_kernel += c.to_kernel.get();
        drp += c.dropped.get();
        out.too_big_replies += c.too_big_replies.get();
        out.sync_exported += c.sync_exported.get();
        out.sync_export_ring_full += c.sync_export_ring_full.get();
        out.sync_installed += c.sync_installed.get();
        out.sync_install_table_full += c.sync_install_table_full.get();
        out.sync_install_expired += c.sync_install_expired.get();
        out.sync_removed += c.sync_removed.get();
        for (unsigned d = 0; d < kDropReasons; ++d) drops[d] += c.drops[d].get();
        drops[static_cast<unsigned>(Drop::multi_segment)] += w->kernel_rx_drop.get();
        drops[static_cast<unsigned>(Drop::tx_full)] += w->tx_drop_up.get();
        extra_drops += w->kernel_rx_drop.get() + w->tx_drop_up.get();
        QueueCounters q;
        q.queue = w->id;
        q.lcore = w->lcore;
        q.rx = c.rx.get();
        q.forwarded = c.forwarded.get();
        q.replied = c.replied.get();
        q.to_kernel = c.to_kernel.get();
        q.dropped = c.dropped.get();
        q.uplink_tx = w->uplink_tx.get();
        q.kernel_rx = w->kernel_rx.get();
        q.kernel_rx_dropped = w->kernel_rx_drop.get();
        q.kernel_tx = w->kernel_tx.get();
        q.fragments = w->fragments.get();
        q.polls = w->polls.get();
        q.busy_polls = w->busy_polls.get();
        q.busy_cycles = w->busy_cycles.get();
        out.queues.push_back(q);
        const ConnTableStats& cs = w->core->conns().stats();
        ConnTableCounters ct;
        ct.queue = w->id;
        ct.capacity = w->core->conns().capacity();
        ct.entries = cs.live.get();
        ct.inserts = cs.inserts.get();
        ct.evictions = cs.evictions.get();
        ct.expired = cs.expired.get();
        ct.full = cs.full.get();
        out.conntables.push_back(ct);
    }
    out.dropped = drp + extra_drops;
    out.sync_install_ring_full = sync_install_ring_full_.load();
    out.sync_install_unknown = sync_install_unknown_.load();
    out.sync_install_invalid = sync_install_invalid_.load();
    for (unsigned d = 1; d < kDropReasons; ++d) out.drops[std::string(drop_name(static_cast<Drop>(d)))] = drops[d];
    out.ports.push_back(port_stats(uplink_, "uplink"));
    if (tap_ >= 0) out.ports.push_back(port_stats(static_cast<uint16_t>(tap_), "exception"));

    const LoadedSnapshot* snap = current_.load();
    out.generation = snap ? snap->generation() : 0;
    out.tsc_hz = rte_get_tsc_hz();
    if (!snap) return out;
    const SnapshotView& v = snap->view();
    for (const auto& s : v.services()) {
        ServiceTraffic t;
        for (const auto& w : workers_) {
            const auto& sc = w->core->counters().services[s.id];
            t.packets += sc.packets.get();
            t.bytes += sc.bytes.get();
            t.new_connections += sc.new_conns.get();
        }
        t.id = s.id;
        t.name = s.name;
        t.vip = (s.family == FL_AF_INET ? IpAddr::v4(s.vip) : IpAddr::v6(s.vip)).str();
        t.port = s.port;
        t.protocol = proto_name(s.proto);
        t.scheduler = scheduler_name(static_cast<Scheduler>(s.scheduler));
        t.forwarding = forwarding_name(static_cast<Forwarding>(s.forwarding));
        out.services.push_back(std::move(t));
    }
    const auto srv = v.servers();
    for (uint32_t slot = 0; slot < srv.size(); ++slot) {
        if (!(srv[slot].flags & FL_SERVER_PRESENT)) continue;
        ServerTraffic t;
        int64_t act = 0, inact = 0;
        for (const auto& w : workers_) {
            const auto& sc = w->core->counters().servers[slot];
            t.packets += sc.packets.get();
            t.bytes += sc.bytes.get();
            t.new_connections += sc.new_conns.get();
            act += sc.active.get_signed();
            inact += sc.inactive.get_signed();
        }
        const auto& e = srv[slot];
        t.slot = slot;
        t.service = v.services()[e.service].name;
        t.address = (e.family == FL_AF_INET ? IpAddr::v4(e.addr) : IpAddr::v6(e.addr)).str();
        t.port = e.port;
        t.weight = e.weight;
        t.in_rotation = (e.flags & FL_SERVER_IN_ROTATION) != 0;
        t.active_connections = static_cast<uint64_t>(std::max<int64_t>(0, act));
        t.inactive_connections = static_cast<uint64_t>(std::max<int64_t>(0, inact));
        out.servers.push_back(std::move(t));
    }
    return out;
}

nlohmann::json Dataplane::health() const {
    std::lock_guard lk(control_mu_);
    const uint64_t hz = rte_get_tsc_hz();
    rte_eth_link link{};
    rte_eth_link_get_nowait(uplink_, &link);
    rte_ether_addr mac;
    rte_eth_macaddr_get(uplink_, &mac);
    const LoadedSnapshot* snap = current_.load();
    return {{"status", running_ ? "running" : "stopped"},
            {"uplink_mac", mac_str(mac)},
            {"pid", static_cast<int64_t>(::getpid())},
            {"uptime_seconds", hz ? (rte_rdtsc() - started_tsc_) / hz : 0},
            {"uptime_ms", hz ? (rte_rdtsc() - started_tsc_) / (hz / 1000) : 0},
            {"workers", workers_.size()},
            {"uplink", uplink_name_},
            {"uplink_link_up", link.link_status == RTE_ETH_LINK_UP},
            {"exception_interface", opt_.exception_iface},
            {"mtu", mtu_},
            {"snapshot_loaded", snap != nullptr},
            {"generation", snap ? snap->generation() : 0},
            {"services", snap ? snap->view().services().size() : 0},
            {"ha", ha_status()},
            {"sync",
             {{"export_ring", opt_.sync_ring},
              {"refresh_ms", workers_.empty() ? 0u : workers_.front()->core->sync_refresh_ms()}}}};
}

nlohmann::json Dataplane::ha_status() const {
    const uint64_t deadline = ha_deadline_tsc_.load();
    const uint64_t now = rte_rdtsc();
    const uint64_t per_ms = std::max<uint64_t>(1, rte_get_tsc_hz() / 1000);
    const bool active = now < deadline;
    const bool managed = ha_managed_.load();
    // Rounded up, so that a lease that is still running never reads 0.
    const uint64_t left = !managed || !active ? 0 : (deadline - now + per_ms - 1) / per_ms;
    return {{"mode", managed ? "managed" : "standalone"},
            {"active", active},
            {"lease_expires_in_ms", left}};
}

Expected<nlohmann::json> Dataplane::set_ha(const nlohmann::json& req) {
    if (!req.is_object())
        return Error{
            "ha request: the body must be a JSON object {\"role\": \"active\"|\"standby\", "
            "\"lease_ms\": N}"};
    const auto role = req.find("role");
    if (role == req.end() || !role->is_string() || (*role != "active" && *role != "standby"))
        return Error{"ha request: field 'role' must be \"active\" or \"standby\""};
    const bool active = *role == "active";
    uint64_t lease_ms = 0;
    const auto lease = req.find("lease_ms");
    if (lease != req.end()) {
        if (!lease->is_number_unsigned() || lease->get<uint64_t>() < 1 ||
            lease->get<uint64_t>() > kMaxHaLeaseMs)
            return Error{"ha request: field 'lease_ms' must be an integer from 1 to " +
                         std::to_string(kMaxHaLeaseMs) + " (milliseconds)"};
        lease_ms = lease->get<uint64_t>();
    } else if (active) {
        return Error{"ha request: field 'lease_ms' is required with role \"active\" (1 to " +
                     std::to_string(kMaxHaLeaseMs) + " milliseconds)"};
    }
    for (const auto& [k, v] : req.items())
        if (k != "role" && k != "lease_ms")
            return Error{"ha request: unknown field '" + k + "' (known: role, lease_ms)"};
    {
        std::lock_guard lk(control_mu_);
        const uint64_t per_ms = std::max<uint64_t>(1, rte_get_tsc_hz() / 1000);
        ha_deadline_tsc_.store(active ? rte_rdtsc() + lease_ms * per_ms : 0);
        const bool was_managed = ha_managed_.exchange(true);
        if (!was_managed || ha_active_role_ != active)
            spdlog::info("HA role {}{}", active ? "active" : "standby",
                         active ? ", lease " + std::to_string(lease_ms) + " ms"
                                : ": VIP traffic no longer forwarded");
        ha_active_role_ = active;
    }
    const nlohmann::json st = ha_status();
    return nlohmann::json{{"role", active ? "active" : "standby"},
                          {"lease_expires_in_ms", st["lease_expires_in_ms"]},
                          {"generation", generation()}};
}

// ---- connection sync ------------------------------------------------------------------------

namespace {
Error sync_json_error(const char* op, const std::string& what) {
    return Error{std::string(op) + " request: " + what};
}
}  // namespace

ctl::Status Dataplane::sync_op(ctl::Op op, std::span<const uint8_t> body,
                               std::vector<uint8_t>& out) {
    auto error = [&out](const std::string& msg) {
        const std::string b = nlohmann::json{{"error", msg}}.dump(
            -1, ' ', false, nlohmann::json::error_handler_t::replace);
        out.assign(b.begin(), b.end());
        return ctl::Status::error;
    };
    switch (op) {
        case ctl::Op::sync_drain: {
            auto r = sync_drain(body);
            if (!r) return error(r.error());
            out = std::move(r.value());
            return ctl::Status::ok;
        }
        case ctl::Op::sync_install: {
            auto r = sync_install(body);
            if (!r) return error(r.error());
            const std::string b = r.value().dump();
            out.assign(b.begin(), b.end());
            return ctl::Status::ok;
        }
        case ctl::Op::sync_dump: {
            auto r = sync_dump();
            if (!r) return error(r.error());
            out = std::move(r.value());
            return ctl::Status::ok;
        }
        case ctl::Op::conn_list: {
            // The workers' tables are read the way sync_dump reads them (each worker copies
            // its entries into its dump ring, a few buckets per poll): no lock on the packet
            // path, no read of a table another thread writes. The filtering and paging are
            // the control thread's.
            auto q = parse_conn_query(body);
            if (!q) return error(q.error());
            auto r = sync_dump();
            if (!r) return error("conn_list request: reading the tables failed: " + r.error());
            std::vector<fl_sync_record> recs(r.value().size() / sizeof(fl_sync_record));
            if (!recs.empty()) std::memcpy(recs.data(), r.value().data(), recs.size() * sizeof(fl_sync_record));
            const std::string b = conn_list_reply(recs, q.value()).dump(-1, ' ', false,
                                                                        nlohmann::json::error_handler_t::replace);
            out.assign(b.begin(), b.end());
            return ctl::Status::ok;
        }
        default:
            return error(std::string("op ") + ctl::op_name(static_cast<uint8_t>(op)) +
                         " is not a sync op");
    }
}

Expected<std::vector<uint8_t>> Dataplane::sync_drain(std::span<const uint8_t> body) {
    size_t max = 4096;
    if (!body.empty()) {
        const auto req = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
        const char* shape = "; send nothing, or {\"max\": N, \"refresh_ms\": R}";
        if (req.is_discarded() || !req.is_object())
            return sync_json_error("sync_drain",
                                   std::string("the body is not a JSON object") + shape);
        for (const auto& [k, v] : req.items()) {
            if (k == "max") {
                if (!v.is_number_unsigned() || v.get<uint64_t>() < 1 ||
                    v.get<uint64_t>() > kSyncMaxRecords)
                    return sync_json_error("sync_drain",
                                           "field 'max' must be an integer from 1 to " +
                                               std::to_string(kSyncMaxRecords) + " (records)");
                max = v.get<size_t>();
            } else if (k == "refresh_ms") {
                if (!v.is_number_unsigned() || v.get<uint64_t>() < 100 ||
                    v.get<uint64_t>() > 3'600'000)
                    return sync_json_error(
                        "sync_drain",
                        "field 'refresh_ms' must be an integer from 100 to 3600000 (milliseconds)");
            } else {
                return sync_json_error("sync_drain",
                                       "unknown field '" + k + "' (known: max, refresh_ms)");
            }
        }
        // Applied only once the whole request is known to be valid.
        if (const auto r = req.find("refresh_ms"); r != req.end())
            for (auto& w : workers_) w->core->set_sync_refresh_ms(r->get<uint32_t>());
    }
    std::lock_guard sl(sync_mu_);
    std::vector<uint8_t> out;
    if (opt_.sync_ring == 0) return out;  // export disabled (--sync-ring 0): never any record
    std::vector<fl_sync_record> recs(max);
    size_t n = 0;
    // Round robin, a few records per worker per turn, so one busy worker cannot starve the
    // others' rings within one drain.
    constexpr size_t kTurn = 64;
    for (bool any = true; any && n < max;) {
        any = false;
        for (auto& w : workers_) {
            if (n >= max) break;
            const size_t got =
                w->core->sync_export_ring()->pop_bulk(recs.data() + n, std::min(kTurn, max - n));
            n += got;
            any |= got > 0;
        }
    }
    out.resize(n * kSyncRecordLen);
    if (n) std::memcpy(out.data(), recs.data(), out.size());
    return out;
}

Expected<nlohmann::json> Dataplane::sync_install(std::span<const uint8_t> body) {
    if (body.size() % kSyncRecordLen != 0)
        return Error{"sync_install request: the body is " + std::to_string(body.size()) +
                     " bytes, not a whole number of " + std::to_string(kSyncRecordLen) +
                     "-byte fl_sync_record (sync_abi.h)"};
    const size_t n = body.size() / kSyncRecordLen;
    if (n > kSyncMaxRecords)  // the control socket's frame limit refuses such a request first
        return Error{"sync_install request: " + std::to_string(n) +
                     " records, above the limit of " + std::to_string(kSyncMaxRecords) +
                     " per request; send them in several requests"};
    std::lock_guard sl(sync_mu_);  // one producer per install ring
    std::lock_guard lk(control_mu_);
    if (!sync_index_)
        return Error{
            "sync_install request: no snapshot loaded; records name services and servers, so load "
            "a "
            "snapshot first"};
    uint64_t queued = 0, invalid = 0, unknown = 0, ring_full = 0;
    std::string first_invalid;
    for (size_t i = 0; i < n; ++i) {
        fl_sync_record r;
        std::memcpy(&r, body.data() + i * kSyncRecordLen, kSyncRecordLen);
        if (const SyncError e = validate_sync_record(r); e != SyncError::ok) {
            if (!invalid++)
                first_invalid = "record " + std::to_string(i) + ": " + sync_error_name(e) + ": " +
                                sync_error_text(e);
            continue;
        }
        SyncInstallItem it{};
        it.idle_ms = r.idle_ms;
        if (r.state == FL_SYNC_S_REMOVED) {
            // Removal needs only the flow: the server may be gone here already.
            it.entry.key = sync_record_key(r);
            it.state = ConnState::empty;
        } else if (!conn_entry_from_sync(r, *sync_index_, it.entry, it.state)) {
            ++unknown;
            continue;
        }
        // Every worker: the queue (worker) a flow's packets reach is not predictable on every
        // port type. The copies on workers the flow never reaches expire unused.
        bool all = true;
        for (auto& w : workers_) {
            if (!w->core->sync_install_ring().push(it)) {
                all = false;
                sync_install_ring_full_.fetch_add(1, std::memory_order_relaxed);
            }
        }
        all ? ++queued : ++ring_full;
    }
    sync_install_invalid_.fetch_add(invalid, std::memory_order_relaxed);
    sync_install_unknown_.fetch_add(unknown, std::memory_order_relaxed);
    nlohmann::json reply{{"queued", queued},
                         {"invalid", invalid},
                         {"unknown_server", unknown},
                         {"ring_full", ring_full}};
    if (invalid) reply["first_invalid"] = first_invalid;
    return reply;
}

Expected<std::vector<uint8_t>> Dataplane::sync_dump() {
    std::lock_guard sl(sync_mu_);
    if (!running_)
        return Error{
            "sync_dump request: the workers are not running, so nobody can read their tables"};
    const uint64_t seq = ++sync_dump_seq_;
    for (auto& w : workers_) w->core->request_sync_dump(seq);
    const uint64_t hz = rte_get_tsc_hz();
    const uint64_t deadline = rte_rdtsc() + kSyncDumpDeadlineMs * (hz / 1000);
    std::vector<bool> done(workers_.size(), false);
    size_t left = workers_.size();
    // A flow installed from the peer has a copy in every worker: one record per flow, its
    // most recently used copy.
    struct KeyHash {
        size_t operator()(const FlowKey& k) const {
            return static_cast<size_t>(flow_hash(k, 0x64756d70ull));
        }
    };
    std::unordered_map<FlowKey, size_t, KeyHash> seen;
    std::vector<fl_sync_record> recs;
    constexpr size_t kBatch = 256;
    SyncDumpItem items[kBatch];
    while (left) {
        size_t got = 0;
        for (size_t i = 0; i < workers_.size(); ++i) {
            if (done[i]) continue;
            const size_t n = workers_[i]->core->sync_dump_ring().pop_bulk(items, kBatch);
            got += n;
            for (size_t j = 0; j < n; ++j) {
                const SyncDumpItem& d = items[j];
                if (d.seq != seq) continue;  // left over from a dump given up earlier
                if (d.end) {
                    done[i] = true;
                    --left;
                    continue;
                }
                const FlowKey k = sync_record_key(d.record);
                const auto [it, fresh] = seen.emplace(k, recs.size());
                if (fresh)
                    recs.push_back(d.record);
                else if (d.record.idle_ms < recs[it->second].idle_ms)
                    recs[it->second] = d.record;
            }
        }
        if (!left) break;
        if (rte_rdtsc() > deadline) {
            std::string slow;
            for (size_t i = 0; i < workers_.size(); ++i)
                if (!done[i]) slow += (slow.empty() ? "" : ", ") + std::to_string(workers_[i]->id);
            return Error{"sync_dump request: worker(s) " + slow +
                         " did not finish dumping their connection table within " +
                         std::to_string(kSyncDumpDeadlineMs) +
                         " ms (is a worker lcore stalled?); retry"};
        }
        if (!got) rte_delay_us_sleep(100);  // the workers serve a few buckets per poll
    }
    const size_t bytes = recs.size() * kSyncRecordLen;
    if (bytes + 1 > ctl::kMaxFrame)
        return Error{"sync_dump request: " + std::to_string(recs.size()) +
                     " entries do not fit one control frame (" + std::to_string(ctl::kMaxFrame) +
                     " bytes); use sync_drain with refreshes instead"};
    std::vector<uint8_t> out(bytes);
    if (bytes) std::memcpy(out.data(), recs.data(), bytes);
    return out;
}

}  // namespace fulcrum::dpdk
