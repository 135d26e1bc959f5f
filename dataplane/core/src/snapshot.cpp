#include "fulcrum/snapshot.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>
#include <new>
#include <set>
#include <stdexcept>
#include <tuple>

#include "fulcrum/checksum.hpp"
#include "fulcrum/flow.hpp"
#include "fulcrum/maglev.hpp"

namespace fulcrum {

const char* scheduler_name(Scheduler s) {
    switch (s) {
        case Scheduler::maglev: return "maglev";
        case Scheduler::wrr: return "wrr";
    }
    return "?";
}
const char* forwarding_name(Forwarding f) {
    switch (f) {
        case Forwarding::dsr: return "dsr";
        case Forwarding::ipip: return "ipip";
        case Forwarding::gue: return "gue";
    }
    return "?";
}
const char* proto_name(uint8_t proto) {
    return proto == FL_PROTO_TCP ? "tcp" : proto == FL_PROTO_UDP ? "udp" : "?";
}

ServerIdentity server_identity(const IpAddr& addr, uint16_t port) {
    ServerIdentity id{};
    id[0] = static_cast<uint8_t>(addr.family);
    std::memcpy(id.data() + 1, addr.bytes.data(), 16);
    id[17] = static_cast<uint8_t>(port >> 8);
    id[18] = static_cast<uint8_t>(port);
    return id;
}

uint32_t server_tag(const IpAddr& addr, uint16_t port) {
    const ServerIdentity id = server_identity(addr, port);
    const auto t = static_cast<uint32_t>(bytes_hash(id.data(), id.size(), 0x7461673a66756c63ull));
    return t ? t : 1;  // 0 never names a server
}

std::vector<bool> rotation_of(const ServiceSpec& svc) {
    std::vector<bool> in(svc.servers.size(), false);
    bool any_primary = false;
    for (size_t i = 0; i < svc.servers.size(); ++i) {
        const auto& s = svc.servers[i];
        if (!s.backup && server_usable(s)) {
            in[i] = true;
            any_primary = true;
        }
    }
    if (!any_primary)
        for (size_t i = 0; i < svc.servers.size(); ++i)
            if (svc.servers[i].backup && server_usable(svc.servers[i])) in[i] = true;
    return in;
}

namespace {

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

std::string svc_label(size_t i, const std::string& name) {
    return "service #" + std::to_string(i) + (name.empty() ? "" : " '" + name + "'");
}

[[noreturn]] void fail(const std::string& m) { throw std::invalid_argument(m); }

}  // namespace

uint32_t snapshot_checksum(std::span<const uint8_t> bytes) {
    constexpr size_t off = offsetof(fl_snap_header, checksum);
    uint32_t c = crc32c(bytes.first(off));
    const uint8_t zero[4] = {0, 0, 0, 0};
    c = crc32c(zero, c);
    return crc32c(bytes.subspan(off + 4), c);
}

void snapshot_seal(std::span<uint8_t> bytes) {
    const uint32_t c = snapshot_checksum(bytes);
    std::memcpy(bytes.data() + offsetof(fl_snap_header, checksum), &c, 4);
}

SnapshotLayout snapshot_layout(size_t n_services, size_t n_server_slots, size_t n_members,
                               size_t n_table_entries) {
    SnapshotLayout l;
    l.services_off = align_up(sizeof(fl_snap_header), FL_SNAP_ALIGN);
    l.servers_off = align_up(l.services_off + n_services * sizeof(fl_snap_service), FL_SNAP_ALIGN);
    l.members_off = align_up(l.servers_off + n_server_slots * sizeof(fl_snap_server), FL_SNAP_ALIGN);
    l.tables_off = align_up(l.members_off + n_members * sizeof(fl_snap_member), FL_SNAP_ALIGN);
    l.total = l.tables_off + n_table_entries * sizeof(uint32_t);
    return l;
}

std::vector<uint8_t> build_snapshot(const SnapshotSpec& spec) {
    if (spec.services.size() > FL_MAX_SERVICES)
        fail(std::to_string(spec.services.size()) + " services exceed the limit of " +
             std::to_string(FL_MAX_SERVICES));
    std::set<uint32_t> ids;
    std::set<uint32_t> slots;
    std::map<std::tuple<IpAddr, uint16_t, uint8_t>, size_t> keys;
    uint32_t max_slot = 0;
    size_t n_members = 0;
    size_t n_entries = 0;
    for (size_t i = 0; i < spec.services.size(); ++i) {
        const ServiceSpec& s = spec.services[i];
        const std::string label = svc_label(i, s.name);
        if (s.name.size() >= FL_NAME_LEN)
            fail(label + ": name longer than " + std::to_string(FL_NAME_LEN - 1) + " bytes");
        if (!valid_service_name(s.name)) fail(label + ": name may only hold A-Z a-z 0-9 _ . -");
        if (s.id >= FL_MAX_SERVICES)
            fail(label + ": id " + std::to_string(s.id) + " not below " +
                 std::to_string(FL_MAX_SERVICES));
        if (!ids.insert(s.id).second) fail(label + ": id " + std::to_string(s.id) + " used twice");
        if (!s.vip.is_v4() && !s.vip.is_v6()) fail(label + ": VIP has no address family");
        if (s.proto != FL_PROTO_TCP && s.proto != FL_PROTO_UDP)
            fail(label + ": protocol must be tcp or udp");
        if (s.port == 0) fail(label + ": port 0");
        auto [it, fresh] = keys.emplace(std::make_tuple(s.vip, s.port, s.proto), i);
        if (!fresh)
            fail(label + ": " + s.vip.str() + ":" + std::to_string(s.port) + "/" +
                 proto_name(s.proto) + " is also " + svc_label(it->second, spec.services[it->second].name));
        if (s.table_size < 3 || s.table_size > kMaglevMaxSize || !is_prime(s.table_size))
            fail(label + ": Maglev table size " + std::to_string(s.table_size) +
                 " must be a prime between 3 and " + std::to_string(kMaglevMaxSize));
        if (s.forwarding != Forwarding::dsr) {
            const auto& pfx = s.vip.is_v4() ? spec.encap.src4 : spec.encap.src6;
            if (!pfx)
                fail(label + ": " + forwarding_name(s.forwarding) +
                     " needs an encapsulation source prefix for " +
                     (s.vip.is_v4() ? "IPv4" : "IPv6"));
        }
        for (size_t j = 0; j < s.servers.size(); ++j) {
            const ServerSpec& srv = s.servers[j];
            const std::string sl = label + " server " + srv.addr.str();
            if (srv.addr.family != s.vip.family)
                fail(sl + ": address family differs from the VIP's");
            if (srv.slot >= FL_MAX_SERVERS)
                fail(sl + ": slot " + std::to_string(srv.slot) + " not below " +
                     std::to_string(FL_MAX_SERVERS));
            if (!slots.insert(srv.slot).second)
                fail(sl + ": slot " + std::to_string(srv.slot) + " used twice");
            max_slot = std::max(max_slot, srv.slot);
        }
        const auto rot = rotation_of(s);
        n_members += static_cast<size_t>(std::count(rot.begin(), rot.end(), true));
        n_entries += s.table_size;
    }
    if (n_entries > FL_MAX_TABLE_ENTRIES)
        fail("Maglev tables total " + std::to_string(n_entries) + " entries, above the limit of " +
             std::to_string(FL_MAX_TABLE_ENTRIES));
    for (const auto* p : {&spec.encap.src4, &spec.encap.src6})
        if (*p && (*p)->addr.family != (p == &spec.encap.src4 ? Family::v4 : Family::v6))
            fail("encapsulation source prefix " + (*p)->str() + " has the wrong family");
    for (const auto* p : {&spec.encap.src4, &spec.encap.src6})
        if (*p && (*p)->length == 0)
            fail("encapsulation source prefix " + (*p)->str() + " must not be a /0");

    const size_t n_servers = slots.empty() ? 0 : size_t{max_slot} + 1;
    const SnapshotLayout layout =
        snapshot_layout(spec.services.size(), n_servers, n_members, n_entries);
    const size_t services_off = layout.services_off;
    const size_t servers_off = layout.servers_off;
    const size_t members_off = layout.members_off;
    const size_t tables_off = layout.tables_off;
    const size_t total = layout.total;

    std::vector<uint8_t> out(total, 0);
    auto* hdr = reinterpret_cast<fl_snap_header*>(out.data());
    hdr->magic = FL_SNAP_MAGIC;
    hdr->version = FL_SNAP_VERSION;
    hdr->header_size = sizeof(fl_snap_header);
    hdr->generation = spec.generation;
    hdr->total_size = total;
    hdr->hash_seed = spec.hash_seed;
    hdr->n_services = static_cast<uint32_t>(spec.services.size());
    hdr->services_off = static_cast<uint32_t>(services_off);
    hdr->n_servers = static_cast<uint32_t>(n_servers);
    hdr->servers_off = static_cast<uint32_t>(servers_off);
    hdr->n_members = static_cast<uint32_t>(n_members);
    hdr->members_off = static_cast<uint32_t>(members_off);
    hdr->n_table_entries = static_cast<uint32_t>(n_entries);
    hdr->tables_off = static_cast<uint32_t>(tables_off);
    if (spec.encap.src4) {
        std::memcpy(hdr->encap_src4, spec.encap.src4->addr.bytes.data(), 4);
        hdr->encap_src4_len = spec.encap.src4->length;
    }
    if (spec.encap.src6) {
        std::memcpy(hdr->encap_src6, spec.encap.src6->addr.bytes.data(), 16);
        hdr->encap_src6_len = spec.encap.src6->length;
    }
    hdr->gue_port = spec.encap.gue_port;
    hdr->mtu = spec.mtu;
    hdr->outer_ttl = spec.encap.outer_ttl;

    auto* svcs = reinterpret_cast<fl_snap_service*>(out.data() + services_off);
    auto* srvs = reinterpret_cast<fl_snap_server*>(out.data() + servers_off);
    auto* mems = reinterpret_cast<fl_snap_member*>(out.data() + members_off);
    auto* table = reinterpret_cast<uint32_t*>(out.data() + tables_off);
    size_t mem_i = 0;
    size_t tab_i = 0;
    for (size_t i = 0; i < spec.services.size(); ++i) {
        const ServiceSpec& s = spec.services[i];
        fl_snap_service& o = svcs[i];
        std::memcpy(o.vip, s.vip.bytes.data(), 16);
        o.port = s.port;
        o.proto = s.proto;
        o.family = static_cast<uint8_t>(s.vip.family);
        o.scheduler = static_cast<uint8_t>(s.scheduler);
        o.forwarding = static_cast<uint8_t>(s.forwarding);
        o.id = s.id;
        std::memcpy(o.name, s.name.data(), s.name.size());
        const auto rot = rotation_of(s);
        o.members_off = static_cast<uint32_t>(mem_i);
        std::vector<ServerIdentity> idents;
        std::vector<MaglevBackend> backends;
        idents.reserve(s.servers.size());
        for (size_t j = 0; j < s.servers.size(); ++j) {
            const ServerSpec& srv = s.servers[j];
            const uint16_t port = srv.port ? srv.port : s.port;
            fl_snap_server& d = srvs[srv.slot];
            std::memcpy(d.addr, srv.addr.bytes.data(), 16);
            std::memcpy(d.mac, srv.mac.bytes.data(), 6);
            d.family = static_cast<uint8_t>(srv.addr.family);
            d.flags = FL_SERVER_PRESENT;
            if (srv.backup) d.flags |= FL_SERVER_BACKUP;
            if (srv.healthy) d.flags |= FL_SERVER_HEALTHY;
            if (srv.enabled) d.flags |= FL_SERVER_ENABLED;
            if (srv.retired) d.flags |= FL_SERVER_RETIRED;
            if (rot[j]) d.flags |= FL_SERVER_IN_ROTATION;
            d.weight = srv.weight;
            d.service = static_cast<uint32_t>(i);
            d.tag = server_tag(srv.addr, port);
            d.port = port;
            if (rot[j]) {
                mems[mem_i++] = {srv.slot, srv.weight};
                idents.push_back(server_identity(srv.addr, port));
                backends.push_back({{}, srv.weight, srv.slot});
            }
        }
        for (size_t k = 0; k < backends.size(); ++k) backends[k].identity = idents[k];
        o.n_members = static_cast<uint32_t>(mem_i - o.members_off);
        o.table_off = static_cast<uint32_t>(tab_i);
        o.table_size = s.table_size;
        try {
            maglev_build(backends, s.table_size, spec.hash_seed, {table + tab_i, s.table_size});
        } catch (const std::invalid_argument& e) {
            fail(svc_label(i, s.name) + ": " + e.what());
        }
        tab_i += s.table_size;
    }
    snapshot_seal(out);
    return out;
}

// ---- reader -------------------------------------------------------------------------------

namespace {

Error err(std::string m) { return Error{"snapshot rejected: " + std::move(m)}; }

}  // namespace

bool valid_service_name(std::string_view name) {
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '.' || c == '-';
    });
}

namespace {

bool section_ok(size_t total, size_t off, size_t count, size_t elem, size_t min_off) {
    if (off % FL_SNAP_ALIGN != 0 || off < min_off || off > total) return false;
    return count <= (total - off) / elem;
}

}  // namespace

Expected<SnapshotView> SnapshotView::open(std::span<const uint8_t> b, size_t max_bytes) {
    if (b.size() > max_bytes)
        return err("it is " + std::to_string(b.size()) + " bytes, above the limit of " +
                   std::to_string(max_bytes));
    if (b.size() < sizeof(fl_snap_header))
        return err("truncated: " + std::to_string(b.size()) + " bytes, the header alone needs " +
                   std::to_string(sizeof(fl_snap_header)));
    if (reinterpret_cast<uintptr_t>(b.data()) % 8 != 0)
        return err("buffer not 8-byte aligned (internal error)");
    const auto* h = reinterpret_cast<const fl_snap_header*>(b.data());
    if (h->magic != FL_SNAP_MAGIC) return err("bad magic: not a Fulcrum forwarding snapshot");
    if (h->version != FL_SNAP_VERSION)
        return err("format version " + std::to_string(h->version) +
                   " is not supported (this build reads version " +
                   std::to_string(FL_SNAP_VERSION) + ")");
    if (h->header_size != sizeof(fl_snap_header))
        return err("header size " + std::to_string(h->header_size) + ", expected " +
                   std::to_string(sizeof(fl_snap_header)));
    if (h->total_size != b.size())
        return err("header says " + std::to_string(h->total_size) + " bytes but " +
                   std::to_string(b.size()) + " were received (truncated or padded)");
    const uint32_t sum = snapshot_checksum(b);
    if (sum != h->checksum) return err("checksum mismatch: the content is corrupt");
    if (h->flags != 0) return err("unknown header flags");
    if (h->n_services > FL_MAX_SERVICES) return err("too many services");
    if (h->n_servers > FL_MAX_SERVERS) return err("too many servers");
    if (h->n_table_entries > FL_MAX_TABLE_ENTRIES) return err("Maglev tables too large");
    if (h->encap_src4_len > 32 || h->encap_src6_len > 128)
        return err("encapsulation prefix length out of range");
    const size_t total = b.size();
    if (!section_ok(total, h->services_off, h->n_services, sizeof(fl_snap_service), sizeof(fl_snap_header)))
        return err("services section out of bounds or misaligned");
    if (!section_ok(total, h->servers_off, h->n_servers, sizeof(fl_snap_server), sizeof(fl_snap_header)))
        return err("servers section out of bounds or misaligned");
    if (!section_ok(total, h->members_off, h->n_members, sizeof(fl_snap_member), sizeof(fl_snap_header)))
        return err("members section out of bounds or misaligned");
    if (!section_ok(total, h->tables_off, h->n_table_entries, sizeof(uint32_t), sizeof(fl_snap_header)))
        return err("tables section out of bounds or misaligned");
    // Sections must not overlap: check them in offset order.
    struct Sec {
        size_t off, len;
        const char* name;
    };
    Sec secs[] = {{h->services_off, size_t{h->n_services} * sizeof(fl_snap_service), "services"},
                  {h->servers_off, size_t{h->n_servers} * sizeof(fl_snap_server), "servers"},
                  {h->members_off, size_t{h->n_members} * sizeof(fl_snap_member), "members"},
                  {h->tables_off, size_t{h->n_table_entries} * sizeof(uint32_t), "tables"}};
    // Empty sections take no room; the others, in offset order, must not overlap.
    std::vector<Sec> used;
    for (const Sec& x : secs)
        if (x.len) used.push_back(x);
    std::sort(used.begin(), used.end(), [](const Sec& x, const Sec& y) { return x.off < y.off; });
    for (size_t i = 1; i < used.size(); ++i)
        if (used[i - 1].off + used[i - 1].len > used[i].off)
            return err(std::string("sections ") + used[i - 1].name + " and " + used[i].name + " overlap");
    if (h->mtu != 0 && h->mtu < 576) return err("MTU " + std::to_string(h->mtu) + " below 576");

    SnapshotView v;
    v.bytes_ = b;
    v.hdr_ = h;
    v.services_ = {reinterpret_cast<const fl_snap_service*>(b.data() + h->services_off), h->n_services};
    v.servers_ = {reinterpret_cast<const fl_snap_server*>(b.data() + h->servers_off), h->n_servers};
    v.members_ = {reinterpret_cast<const fl_snap_member*>(b.data() + h->members_off), h->n_members};
    v.table_ = {reinterpret_cast<const uint32_t*>(b.data() + h->tables_off), h->n_table_entries};

    // Servers.
    for (uint32_t i = 0; i < h->n_servers; ++i) {
        const fl_snap_server& s = v.servers_[i];
        if (!(s.flags & FL_SERVER_PRESENT)) continue;
        const std::string l = "server slot " + std::to_string(i);
        if (s.flags & ~FL_SERVER_FLAGS_ALL) return err(l + ": unknown flags");
        if (s.family != FL_AF_INET && s.family != FL_AF_INET6) return err(l + ": bad address family");
        if (s.service >= h->n_services) return err(l + ": service index out of range");
        if (s.family != v.services_[s.service].family)
            return err(l + ": address family differs from its service's VIP");
        if (s.family == FL_AF_INET && !std::all_of(s.addr + 4, s.addr + 16, [](uint8_t x) { return x == 0; }))
            return err(l + ": IPv4 address with non-zero padding");
        if (s.tag == 0) return err(l + ": zero tag");
    }
    // Services, their members and tables.
    std::set<std::tuple<std::array<uint8_t, 16>, uint16_t, uint8_t>> seen;
    std::set<uint32_t> ids;
    std::vector<uint32_t> rotation_count(h->n_services, 0);
    for (uint32_t i = 0; i < h->n_servers; ++i)
        if ((v.servers_[i].flags & FL_SERVER_PRESENT) && (v.servers_[i].flags & FL_SERVER_IN_ROTATION))
            ++rotation_count[v.servers_[i].service];
    std::vector<uint32_t> member_of(h->n_servers, FL_NO_SERVER);
    for (uint32_t i = 0; i < h->n_services; ++i) {
        const fl_snap_service& s = v.services_[i];
        std::string l = "service #" + std::to_string(i);
        if (std::memchr(s.name, 0, FL_NAME_LEN) == nullptr) return err(l + ": name not terminated");
        if (!valid_service_name(s.name)) return err(l + ": name has characters other than A-Z a-z 0-9 _ . -");
        if (s.name[0]) l += " '" + std::string(s.name) + "'";
        if (s.family != FL_AF_INET && s.family != FL_AF_INET6) return err(l + ": bad address family");
        if (s.proto != FL_PROTO_TCP && s.proto != FL_PROTO_UDP) return err(l + ": bad protocol");
        if (s.scheduler != FL_SCHED_MAGLEV && s.scheduler != FL_SCHED_WRR) return err(l + ": bad scheduler");
        if (s.forwarding < FL_FWD_DSR || s.forwarding > FL_FWD_GUE) return err(l + ": bad forwarding mode");
        if (s.flags != 0) return err(l + ": unknown flags");
        if (s.port == 0) return err(l + ": port 0");
        if (s.family == FL_AF_INET && !std::all_of(s.vip + 4, s.vip + 16, [](uint8_t x) { return x == 0; }))
            return err(l + ": IPv4 VIP with non-zero padding");
        if (s.forwarding == FL_FWD_GUE && h->gue_port == 0) return err(l + ": GUE without a GUE port");
        if (s.id >= FL_MAX_SERVICES || !ids.insert(s.id).second) return err(l + ": bad or duplicate id");
        std::array<uint8_t, 16> vip{};
        std::memcpy(vip.data(), s.vip, 16);
        if (!seen.insert({vip, s.port, s.proto}).second) return err(l + ": duplicate VIP, port and protocol");
        if (s.forwarding != FL_FWD_DSR &&
            (s.family == FL_AF_INET ? h->encap_src4_len : h->encap_src6_len) == 0)
            return err(l + ": encapsulation without a source prefix");
        if (s.members_off > h->n_members || s.n_members > h->n_members - s.members_off)
            return err(l + ": members out of range");
        if (s.n_members != rotation_count[i])
            return err(l + ": member count differs from its servers in rotation");
        for (const auto& m : v.members(s)) {
            const fl_snap_server* srv = v.server(m.server);
            if (!srv || srv->service != i || !(srv->flags & FL_SERVER_IN_ROTATION) || m.weight == 0)
                return err(l + ": member slot " + std::to_string(m.server) + " invalid");
            if (member_of[m.server] != FL_NO_SERVER) return err(l + ": member listed twice");
            member_of[m.server] = i;
        }
        if (s.table_size < 3 || s.table_size > kMaglevMaxSize || !is_prime(s.table_size))
            return err(l + ": Maglev table size not a prime in range");
        if (s.table_off > h->n_table_entries || s.table_size > h->n_table_entries - s.table_off)
            return err(l + ": Maglev table out of range");
        for (uint32_t e : v.table(s)) {
            if (e == FL_NO_SERVER) {
                if (s.n_members) return err(l + ": Maglev table has holes");
                continue;
            }
            if (e >= h->n_servers || member_of[e] != i)
                return err(l + ": Maglev table entry " + std::to_string(e) + " is not a member");
        }
    }
    return v;
}

void SnapshotBuffer::Free::operator()(uint8_t* p) const {
    ::operator delete(p, std::align_val_t{64});
}

SnapshotBuffer::SnapshotBuffer(std::span<const uint8_t> bytes) : size_(bytes.size()) {
    data_.reset(static_cast<uint8_t*>(::operator new(bytes.empty() ? 64 : bytes.size(), std::align_val_t{64})));
    if (!bytes.empty()) std::memcpy(data_.get(), bytes.data(), bytes.size());
}

}  // namespace fulcrum
