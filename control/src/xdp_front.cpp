#include "fulcrum/control/xdp_front.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <utility>

#include <spdlog/spdlog.h>

#include "fulcrum/control/config.hpp"
#include "fulcrum_xdp.h"

namespace fulcrum::control {

// The loader refuses configurations the maps cannot hold.
static_assert(kMaxXdpAclPerFamily == FL_XDP_MAX_ACL && kMaxXdpVipsPerFamily == FL_XDP_MAX_VIPS,
              "config.hpp's xdp limits are the map sizes of fulcrum_xdp.h");
static_assert(kXdpReasonCount == FL_XDP_REASON_COUNT, "kXdpReasons must list every fl_xdp_reason");
static_assert(FL_XDP_REDIRECT == 3 && FL_XDP_DROP_ACL_DENY == 4 && FL_XDP_DROP_MALFORMED == 7,
              "kXdpReasons follows enum fl_xdp_reason");

namespace {

class Fd {
  public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    ~Fd() { reset(); }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }

  private:
    int fd_ = -1;
};

std::string errtext(int err) {
    return std::strerror(err < 0 ? -err : err);
}

// A map of the front as fulcrum_xdp.h defines it.
struct MapSpec {
    const char* name;
    uint32_t type, key_size, value_size, max_entries;
};
constexpr std::array<MapSpec, 6> kMaps{{
    {"fl_cfg", BPF_MAP_TYPE_ARRAY, 4, sizeof(fl_front_config), 1},
    {"fl_vip4", BPF_MAP_TYPE_HASH, 4, 4, FL_XDP_MAX_VIPS},
    {"fl_vip6", BPF_MAP_TYPE_HASH, sizeof(fl_in6), 4, FL_XDP_MAX_VIPS},
    {"fl_acl4", BPF_MAP_TYPE_LPM_TRIE, sizeof(fl_lpm4), sizeof(fl_acl_rule), FL_XDP_MAX_ACL},
    {"fl_acl6", BPF_MAP_TYPE_LPM_TRIE, sizeof(fl_lpm6), sizeof(fl_acl_rule), FL_XDP_MAX_ACL},
    {"fl_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, FL_XDP_REASON_COUNT},
}};
enum MapIndex { kCfg, kVip4, kVip6, kAcl4, kAcl6, kStats };

using Bytes = std::vector<uint8_t>;

template <class T>
Bytes bytes_of(const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    return Bytes(p, p + sizeof v);
}

// One map's plan: what it must hold, and the keys it holds now.
struct MapPlan {
    int fd;
    const MapSpec* spec;
    std::map<Bytes, Bytes> want;
    std::vector<Bytes> have;
};

// The keys a hash or LPM map holds now (at most max_entries of them: the walk is bounded
// even if the map changes under it).
std::vector<Bytes> map_keys(int fd, const MapSpec& m) {
    std::vector<Bytes> keys;
    Bytes cur(m.key_size), next(m.key_size);
    const void* prev = nullptr;
    for (uint32_t i = 0; i <= m.max_entries; ++i) {
        if (bpf_map_get_next_key(fd, prev, next.data()) != 0) {
            if (errno == ENOENT) return keys;
            throw std::runtime_error(std::string("cannot list the entries of ") + m.name + ": " +
                                     errtext(errno));
        }
        keys.push_back(next);
        cur = next;
        prev = cur.data();
    }
    return keys;
}

}  // namespace

struct XdpFront::Impl {
    mutable std::mutex mu;
    std::string ifname;
    XdpDesired desired;
    std::optional<XdpDesired> applied;  // what the maps of prog_id hold
    uint32_t prog_id = 0;               // the program whose maps are open
    std::string prog_name;
    std::array<Fd, kMaps.size()> maps;
    bool maps_ok = false;  // maps found and of the right shapes
    std::string error;
    std::string logged_error;
    uint64_t applies = 0, apply_errors = 0, program_changes = 0;
    size_t vips4 = 0, vips6 = 0, acl4 = 0, acl6 = 0;

    void fail(std::string e) {
        if (e != logged_error) spdlog::warn("{}", e);
        logged_error = e;
        error = std::move(e);
    }

    // Opens the maps of program `id` by name and checks their layouts.
    void open_maps(uint32_t id) {
        for (auto& m : maps) m.reset();
        maps_ok = false;
        prog_name.clear();
        Fd prog(bpf_prog_get_fd_by_id(id));
        if (!prog)
            throw std::runtime_error("cannot open XDP program " + std::to_string(id) + " on " +
                                     ifname + ": " + errtext(errno) +
                                     " (fulcrumd needs CAP_BPF and CAP_SYS_ADMIN)");
        bpf_prog_info info{};
        uint32_t len = sizeof info;
        if (bpf_obj_get_info_by_fd(prog.get(), &info, &len) != 0)
            throw std::runtime_error("cannot read XDP program " + std::to_string(id) + ": " +
                                     errtext(errno));
        prog_name = info.name;
        std::vector<uint32_t> ids(info.nr_map_ids);
        if (!ids.empty()) {
            bpf_prog_info again{};
            again.nr_map_ids = static_cast<uint32_t>(ids.size());
            again.map_ids = reinterpret_cast<uint64_t>(ids.data());
            len = sizeof again;
            if (bpf_obj_get_info_by_fd(prog.get(), &again, &len) != 0)
                throw std::runtime_error("cannot list the maps of XDP program " +
                                         std::to_string(id) + ": " + errtext(errno));
            ids.resize(std::min<size_t>(ids.size(), again.nr_map_ids));
        }
        for (const uint32_t map_id : ids) {
            Fd fd(bpf_map_get_fd_by_id(map_id));
            if (!fd) continue;  // gone meanwhile: reported below as missing if it is one of ours
            bpf_map_info mi{};
            uint32_t mlen = sizeof mi;
            if (bpf_obj_get_info_by_fd(fd.get(), &mi, &mlen) != 0) continue;
            for (size_t i = 0; i < kMaps.size(); ++i) {
                const MapSpec& s = kMaps[i];
                if (std::strncmp(mi.name, s.name, sizeof mi.name) != 0) continue;
                if (mi.type != s.type || mi.key_size != s.key_size ||
                    mi.value_size != s.value_size || mi.max_entries != s.max_entries)
                    throw std::runtime_error(
                        "the XDP program " + std::to_string(id) + " (" + prog_name + ") on " +
                        ifname + ": map " + s.name + " has type " + std::to_string(mi.type) +
                        ", key " + std::to_string(mi.key_size) + " bytes, value " +
                        std::to_string(mi.value_size) + " bytes, " +
                        std::to_string(mi.max_entries) + " entries; this fulcrumd expects type " +
                        std::to_string(s.type) + ", " + std::to_string(s.key_size) + ", " +
                        std::to_string(s.value_size) + ", " + std::to_string(s.max_entries) +
                        " (ABI version " + std::to_string(FULCRUM_XDP_ABI_VERSION) +
                        "): load the xdp_front.bpf.o of the same Fulcrum release; nothing was "
                        "written");
                maps[i] = std::move(fd);
                break;
            }
        }
        std::string missing;
        for (size_t i = 0; i < kMaps.size(); ++i)
            if (!maps[i]) missing += (missing.empty() ? "" : ", ") + std::string(kMaps[i].name);
        if (!missing.empty())
            throw std::runtime_error(
                "the XDP program " + std::to_string(id) + " (" + prog_name + ") on " + ifname +
                " is not Fulcrum's front: it has no map " + missing +
                " (start the dataplane with xdp_prog= pointing at xdp_front.bpf.o)");
        maps_ok = true;
    }

    void check_abi() {
        const uint32_t zero = 0;
        fl_front_config c{};
        if (bpf_map_lookup_elem(maps[kCfg].get(), &zero, &c) != 0)
            throw std::runtime_error("cannot read fl_cfg of XDP program " +
                                     std::to_string(prog_id) + ": " + errtext(errno));
        // 0: nobody configured this program yet.
        if (c.abi_version != 0 && c.abi_version != FULCRUM_XDP_ABI_VERSION)
            throw std::runtime_error(
                "the XDP front on " + ifname + " (program " + std::to_string(prog_id) +
                ") carries ABI version " + std::to_string(c.abi_version) +
                " in fl_cfg; this fulcrumd writes version " +
                std::to_string(FULCRUM_XDP_ABI_VERSION) +
                ": run fulcrumd and xdp_front.bpf.o of the same release; nothing was written");
    }

    void apply() {
        check_abi();
        std::array<MapPlan, 4> plans{{{maps[kVip4].get(), &kMaps[kVip4], {}, {}},
                                      {maps[kVip6].get(), &kMaps[kVip6], {}, {}},
                                      {maps[kAcl4].get(), &kMaps[kAcl4], {}, {}},
                                      {maps[kAcl6].get(), &kMaps[kAcl6], {}, {}}}};
        const uint32_t one = 1;
        for (const auto& v : desired.vips) {
            if (v.is_v4())
                plans[0].want[Bytes(v.bytes.begin(), v.bytes.begin() + 4)] = bytes_of(one);
            else if (v.is_v6())
                plans[1].want[Bytes(v.bytes.begin(), v.bytes.end())] = bytes_of(one);
        }
        auto add_rules = [&](const std::vector<IpPrefix>& list, uint32_t action) {
            for (size_t i = 0; i < list.size(); ++i) {
                const IpPrefix& p = list[i];
                const fl_acl_rule rule{action, static_cast<uint32_t>(i)};
                if (p.addr.is_v4()) {
                    fl_lpm4 k{};
                    k.prefixlen = p.length;
                    std::memcpy(k.addr, p.addr.bytes.data(), 4);
                    plans[2].want[bytes_of(k)] = bytes_of(rule);
                } else {
                    fl_lpm6 k{};
                    k.prefixlen = p.length;
                    std::memcpy(k.addr, p.addr.bytes.data(), 16);
                    plans[3].want[bytes_of(k)] = bytes_of(rule);
                }
            }
        };
        add_rules(desired.allow, FL_ACL_ALLOW);
        add_rules(desired.deny, FL_ACL_DENY);
        for (auto& p : plans) {
            if (p.want.size() > p.spec->max_entries)
                throw std::runtime_error(
                    std::string(p.spec->name) + ": " + std::to_string(p.want.size()) +
                    " entries wanted, the map holds " + std::to_string(p.spec->max_entries));
            p.have = map_keys(p.fd, *p.spec);
        }
        // 1. New and changed entries, 2. stale entries, 3. the configuration: a source or VIP
        // that stays in the set is never missing from it meanwhile.
        for (auto& p : plans) {
            Bytes cur(p.spec->value_size);
            for (const auto& [k, v] : p.want) {
                if (bpf_map_lookup_elem(p.fd, k.data(), cur.data()) == 0 && cur == v) continue;
                if (bpf_map_update_elem(p.fd, k.data(), v.data(), BPF_ANY) != 0)
                    throw std::runtime_error(std::string("cannot write ") + p.spec->name + ": " +
                                             errtext(errno));
            }
        }
        for (auto& p : plans)
            for (const auto& k : p.have)
                if (!p.want.count(k) && bpf_map_delete_elem(p.fd, k.data()) != 0 && errno != ENOENT)
                    throw std::runtime_error(std::string("cannot delete from ") + p.spec->name +
                                             ": " + errtext(errno));
        fl_front_config c{};
        c.abi_version = FULCRUM_XDP_ABI_VERSION;
        c.acl_default = desired.default_allow ? FL_ACL_ALLOW : FL_ACL_DENY;
        c.syn_rate = desired.syn_rate;
        c.syn_burst =
            desired.syn_rate ? std::max<uint64_t>(desired.syn_burst, 1) : desired.syn_burst;
        c.v6_source_prefix = desired.syn_ipv6_prefix;
        const uint32_t zero = 0;
        if (bpf_map_update_elem(maps[kCfg].get(), &zero, &c, BPF_ANY) != 0)
            throw std::runtime_error("cannot write fl_cfg: " + errtext(errno));
        vips4 = plans[0].want.size();
        vips6 = plans[1].want.size();
        acl4 = plans[2].want.size();
        acl6 = plans[3].want.size();
    }

    bool sync() {
        const unsigned ifindex = ::if_nametoindex(ifname.c_str());
        if (ifindex == 0) {
            prog_id = 0;
            maps_ok = false;
            fail("xdp front not attached on " + ifname + ": no such interface (" + errtext(errno) +
                 ")");
            return false;
        }
        bpf_xdp_query_opts q{};
        q.sz = sizeof q;
        if (const int err = bpf_xdp_query(static_cast<int>(ifindex), 0, &q); err != 0) {
            fail("cannot query the XDP program on " + ifname + ": " + errtext(err));
            return false;
        }
        // One mode attached: prog_id; several: prefer the driver's, where net_af_xdp attaches.
        const uint32_t id = q.prog_id       ? q.prog_id
                            : q.drv_prog_id ? q.drv_prog_id
                            : q.skb_prog_id ? q.skb_prog_id
                                            : q.hw_prog_id;
        if (id == 0) {
            prog_id = 0;
            maps_ok = false;
            applied.reset();
            fail("xdp front not attached on " + ifname +
                 " (is the dataplane running on net_af_xdp with xdp_prog=?)");
            return false;
        }
        if (id != prog_id) {
            prog_id = id;
            applied.reset();
            ++program_changes;
            try {
                open_maps(id);
            } catch (const std::exception& e) {
                fail(e.what());
                return false;
            }
            spdlog::info("xdp front: program {} ({}) on {}", id, prog_name, ifname);
        }
        if (!maps_ok) return false;  // this program was refused; error says why
        if (applied && *applied == desired) return true;
        try {
            apply();
        } catch (const std::exception& e) {
            ++apply_errors;
            fail(e.what());
            return false;
        }
        ++applies;
        applied = desired;
        error.clear();
        logged_error.clear();
        spdlog::info(
            "xdp front on {} (program {}): {} IPv4 and {} IPv6 VIPs, {} IPv4 and {} IPv6 ACL "
            "prefixes, "
            "default {}, SYN limit {}",
            ifname, prog_id, vips4, vips6, acl4, acl6, desired.default_allow ? "allow" : "deny",
            desired.syn_rate
                ? std::to_string(desired.syn_rate) + "/s burst " + std::to_string(desired.syn_burst)
                : std::string("off"));
        return true;
    }

    std::optional<std::array<uint64_t, kXdpReasonCount>> read_packets() const {
        if (!maps_ok) return std::nullopt;
        const int ncpu = libbpf_num_possible_cpus();
        if (ncpu <= 0) return std::nullopt;
        std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));  // 8-byte values: no padding
        std::array<uint64_t, kXdpReasonCount> sum{};
        for (uint32_t r = 0; r < kXdpReasonCount; ++r) {
            if (bpf_map_lookup_elem(maps[kStats].get(), &r, per_cpu.data()) != 0)
                return std::nullopt;
            for (const uint64_t v : per_cpu) sum[r] += v;
        }
        return sum;
    }
};

XdpFront::XdpFront(std::string interface) : impl_(std::make_unique<Impl>()) {
    impl_->ifname = std::move(interface);
}

XdpFront::~XdpFront() = default;

void XdpFront::set_desired(XdpDesired d) {
    std::lock_guard lk(impl_->mu);
    impl_->desired = std::move(d);
}

bool XdpFront::sync() {
    std::lock_guard lk(impl_->mu);
    return impl_->sync();
}

XdpStatus XdpFront::status(bool packets) const {
    std::lock_guard lk(impl_->mu);
    const Impl& i = *impl_;
    XdpStatus s;
    s.interface = i.ifname;
    s.attached = i.prog_id != 0 && i.maps_ok;
    s.program_id = i.prog_id;
    s.program_name = i.prog_name;
    s.applied = i.applied && *i.applied == i.desired && i.maps_ok;
    s.error = i.error;
    s.applies = i.applies;
    s.apply_errors = i.apply_errors;
    s.program_changes = i.program_changes;
    s.vips4 = i.vips4;
    s.vips6 = i.vips6;
    s.acl4 = i.acl4;
    s.acl6 = i.acl6;
    if (packets) s.packets = i.read_packets();
    return s;
}

}  // namespace fulcrum::control
