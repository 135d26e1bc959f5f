#include "fulcrum/parse.hpp"

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"

namespace fulcrum {
namespace {

constexpr unsigned kMaxIpv6Ext = 8;  // extension headers followed before giving up

// Skips IPv6 extension headers starting at `cur` with next-header `nh`, staying below
// `end`. On return `nh`/`cur` point at the upper-layer header. `frag` receives the
// fragment position. Returns ipv6_ext_* on malformed chains.
Drop skip_ipv6_ext(const uint8_t* p, size_t end, uint8_t& nh, size_t& cur, Frag& frag,
                   Drop truncated) {
    for (unsigned i = 0; i <= kMaxIpv6Ext; ++i) {
        switch (nh) {
            case ipproto::kHopByHop:
            case ipproto::kRouting:
            case ipproto::kDestOpts: {
                if (end - cur < 8) return truncated;
                const size_t len = (size_t{p[cur + 1]} + 1) * 8;
                if (end - cur < len) return truncated;
                nh = p[cur];
                cur += len;
                break;
            }
            case ipproto::kFragment: {
                if (end - cur < 8) return truncated;
                const uint16_t fo = load_be16(p + cur + 2);
                const bool more = fo & 1;
                const uint16_t offset = fo & 0xFFF8;
                nh = p[cur];
                cur += 8;
                if (offset != 0) {
                    frag = Frag::later;
                    return Drop::none;  // no upper-layer header in this fragment
                }
                if (more) frag = Frag::first;
                // offset 0 and M=0: an atomic fragment, a whole datagram (RFC 6946)
                break;
            }
            default:
                return Drop::none;
        }
    }
    return Drop::ipv6_ext_too_many;
}

// Parses the packet quoted in an ICMP error starting at `q`, up to `end`.
Drop parse_quoted(const uint8_t* p, size_t q, size_t end, bool v6, Parsed& o) {
    QuotedFlow& f = o.quoted;
    f = QuotedFlow{};
    o.quoted_off = static_cast<uint16_t>(q);
    size_t l4 = 0;
    uint8_t proto = 0;
    bool has_ports = true;
    if (!v6) {
        if (end - q < 20) return Drop::icmp_inner_truncated;
        if ((p[q] >> 4) != 4) return Drop::icmp_inner_bad;
        const size_t ihl = static_cast<size_t>(p[q] & 0x0F) * 4;
        if (ihl < 20) return Drop::icmp_inner_bad;
        if (end - q < ihl) return Drop::icmp_inner_truncated;
        proto = p[q + 9];
        std::memcpy(f.src, p + q + 12, 4);
        std::memcpy(f.dst, p + q + 16, 4);
        if ((load_be16(p + q + 6) & 0x1FFF) != 0) has_ports = false;
        l4 = q + ihl;
        f.is_v6 = 0;
    } else {
        if (end - q < 40) return Drop::icmp_inner_truncated;
        if ((p[q] >> 4) != 6) return Drop::icmp_inner_bad;
        std::memcpy(f.src, p + q + 8, 16);
        std::memcpy(f.dst, p + q + 24, 16);
        uint8_t nh = p[q + 6];
        size_t cur = q + 40;
        Frag frag = Frag::none;
        Drop d = skip_ipv6_ext(p, end, nh, cur, frag, Drop::icmp_inner_truncated);
        if (d == Drop::ipv6_ext_too_many) return Drop::icmp_inner_bad;
        if (d != Drop::none) return d;
        if (frag == Frag::later) has_ports = false;
        proto = nh;
        l4 = cur;
        f.is_v6 = 1;
    }
    f.proto = proto;
    f.sport = f.dport = 0;
    if (has_ports && (proto == ipproto::kTcp || proto == ipproto::kUdp)) {
        // RFC 792 guarantees 8 bytes of the original datagram: enough for both ports.
        if (end - l4 < 8) return Drop::icmp_inner_truncated;
        f.sport = load_be16(p + l4);
        f.dport = load_be16(p + l4 + 2);
    }
    return Drop::none;
}

Drop parse_icmp(const uint8_t* p, size_t l4, size_t end, bool v6, Parsed& o) {
    if (end - l4 < 8) return Drop::icmp_truncated;
    const uint8_t type = p[l4];
    o.icmp_type = type;
    o.icmp_code = p[l4 + 1];
    bool error = false;
    if (!v6) {
        switch (type) {
            case 8: o.icmp = IcmpKind::echo_request; break;
            case 0: o.icmp = IcmpKind::echo_reply; break;
            case 3:   // destination unreachable (code 4: fragmentation needed)
            case 11:  // time exceeded
            case 12:  // parameter problem
                error = true;
                if (type == 3 && o.icmp_code == 4) o.icmp_mtu = load_be16(p + l4 + 6);
                break;
            default: o.icmp = IcmpKind::other; break;
        }
    } else {
        switch (type) {
            case 128: o.icmp = IcmpKind::echo_request; break;
            case 129: o.icmp = IcmpKind::echo_reply; break;
            case 1:  // destination unreachable
            case 2:  // packet too big
            case 3:  // time exceeded
            case 4:  // parameter problem
                error = true;
                if (type == 2) o.icmp_mtu = load_be32(p + l4 + 4);
                break;
            default: o.icmp = IcmpKind::other; break;
        }
    }
    if (!error) return Drop::none;
    o.icmp = IcmpKind::error;
    return parse_quoted(p, l4 + 8, end, v6, o);
}

Drop parse_l4(const uint8_t* p, size_t l4, size_t end, Parsed& o) {
    o.l4_off = static_cast<uint16_t>(l4);
    switch (o.l4_proto) {
        case ipproto::kTcp: {
            if (end - l4 < 20) return Drop::tcp_truncated;
            const size_t doff = static_cast<size_t>(p[l4 + 12] >> 4) * 4;
            if (doff < 20 || doff > end - l4) return Drop::tcp_bad_offset;
            o.sport = load_be16(p + l4);
            o.dport = load_be16(p + l4 + 2);
            o.tcp_flags = p[l4 + 13];
            return Drop::none;
        }
        case ipproto::kUdp: {
            if (end - l4 < 8) return Drop::udp_truncated;
            o.sport = load_be16(p + l4);
            o.dport = load_be16(p + l4 + 2);
            if (o.frag == Frag::none) {
                // The length of a first fragment's UDP header covers the whole datagram.
                const size_t ulen = load_be16(p + l4 + 4);
                if (ulen < 8 || ulen > end - l4) return Drop::udp_bad_length;
            }
            return Drop::none;
        }
        case ipproto::kIcmp:
            if (o.l3 != L3::ipv4) return Drop::none;
            if (o.frag != Frag::none) return Drop::none;  // fragmented ICMP: not parsed further
            return parse_icmp(p, l4, end, false, o);
        case ipproto::kIcmpv6:
            if (o.l3 != L3::ipv6) return Drop::none;
            if (o.frag != Frag::none) return Drop::none;
            return parse_icmp(p, l4, end, true, o);
        default:
            return Drop::none;
    }
}

// IPv4 options (RFC 791 3.1): end-of-list stops the walk, no-operation is one byte, every
// other option carries a length byte of at least 2 that must stay inside the header. At most
// 40 bytes, so the walk is bounded; it runs only for headers with options.
Drop check_ipv4_options(const uint8_t* opt, size_t n) {
    size_t i = 0;
    while (i < n) {
        const uint8_t type = opt[i];
        if (type == 0) return Drop::none;  // end of option list
        if (type == 1) {                   // no operation
            ++i;
            continue;
        }
        if (n - i < 2) return Drop::ipv4_bad_options;
        const size_t len = opt[i + 1];
        if (len < 2 || len > n - i) return Drop::ipv4_bad_options;
        i += len;
    }
    return Drop::none;
}

Drop parse_ipv4(const uint8_t* p, size_t off, size_t n, Parsed& o, const ParseOptions& opt) {
    if (n - off < 20) return Drop::ipv4_truncated;
    const uint8_t* ip = p + off;
    if ((ip[0] >> 4) != 4) return Drop::ipv4_bad_version;
    const size_t ihl = static_cast<size_t>(ip[0] & 0x0F) * 4;
    if (ihl < 20) return Drop::ipv4_bad_ihl;
    if (n - off < ihl) return Drop::ipv4_truncated;
    const size_t tot = load_be16(ip + 2);
    if (tot < ihl || tot > n - off) return Drop::ipv4_bad_length;
    if (opt.verify_ipv4_checksum && !ipv4_header_checksum_ok(ip, ihl))
        return Drop::ipv4_bad_checksum;
    if (ihl > 20) [[unlikely]] {
        if (Drop d = check_ipv4_options(ip + 20, ihl - 20); d != Drop::none) return d;
    }
    const uint16_t ff = load_be16(ip + 6);
    o.df = (ff & 0x4000) != 0;
    const size_t foff = size_t{ff & 0x1FFFu} * 8;
    if (foff + (tot - ihl) > 65535) return Drop::ipv4_bad_fragment;
    if (foff != 0)
        o.frag = Frag::later;
    else if (ff & 0x2000)
        o.frag = Frag::first;
    o.tos = ip[1];
    o.ttl = ip[8];
    o.l4_proto = ip[9];
    std::memcpy(o.src, ip + 12, 4);
    std::memcpy(o.dst, ip + 16, 4);
    o.l3 = L3::ipv4;
    o.l3_len = static_cast<uint16_t>(tot);
    o.l4_off = static_cast<uint16_t>(off + ihl);
    if (o.frag == Frag::later) return Drop::none;
    return parse_l4(p, off + ihl, off + tot, o);
}

Drop parse_ipv6(const uint8_t* p, size_t off, size_t n, Parsed& o) {
    if (n - off < 40) return Drop::ipv6_truncated;
    const uint8_t* ip = p + off;
    if ((ip[0] >> 4) != 6) return Drop::ipv6_bad_version;
    const size_t plen = load_be16(ip + 4);
    uint8_t nh = ip[6];
    // Payload length 0 with a hop-by-hop header is a jumbogram, which we do not carry.
    if ((plen == 0 && nh == ipproto::kHopByHop) || plen > n - off - 40)
        return Drop::ipv6_bad_length;
    const size_t end = off + 40 + plen;
    o.tos = static_cast<uint8_t>(((ip[0] & 0x0F) << 4) | (ip[1] >> 4));
    o.ttl = ip[7];
    o.df = true;
    std::memcpy(o.src, ip + 8, 16);
    std::memcpy(o.dst, ip + 24, 16);
    o.l3 = L3::ipv6;
    o.l3_len = static_cast<uint16_t>(40 + plen);
    size_t cur = off + 40;
    Drop d = skip_ipv6_ext(p, end, nh, cur, o.frag, Drop::ipv6_ext_truncated);
    o.l4_proto = nh;
    o.l4_off = static_cast<uint16_t>(cur);
    if (d != Drop::none) return d;
    if (o.frag == Frag::later) return Drop::none;
    return parse_l4(p, cur, end, o);
}

}  // namespace

Drop parse_packet_full(std::span<const uint8_t> pkt, Parsed& o, const ParseOptions& opt) {
    // Resets every field but `quoted` (38 bytes that only ICMP errors use; parse_quoted sets
    // it): this runs for every packet.
    static_assert(std::is_standard_layout_v<Parsed> && std::is_trivially_copyable_v<Parsed>);
    static constexpr Parsed kEmpty{};
    std::memcpy(static_cast<void*>(&o), &kEmpty, offsetof(Parsed, quoted));
    const uint8_t* p = pkt.data();
    const size_t n = pkt.size();
    if (n < eth::kHeaderLen) return Drop::eth_truncated;
    // Frames longer than 64 KiB cannot be described by our 16-bit offsets.
    if (n > 65535) return Drop::frame_too_long;
    uint16_t et = load_be16(p + 12);
    size_t off = eth::kHeaderLen;
    while (et == eth::kVlan || et == eth::kQinQ) {
        if (o.vlan_count == 2) return Drop::vlan_too_many;
        if (n - off < eth::kVlanLen) return Drop::vlan_truncated;
        o.vlan_tci[o.vlan_count++] = load_be16(p + off);
        et = load_be16(p + off + 2);
        off += eth::kVlanLen;
    }
    o.ethertype = et;
    o.l3_off = static_cast<uint16_t>(off);
    switch (et) {
        case eth::kIpv4: return parse_ipv4(p, off, n, o, opt);
        case eth::kIpv6: return parse_ipv6(p, off, n, o);
        case eth::kArp:
            if (n - off < 28) return Drop::arp_truncated;
            o.l3 = L3::arp;
            return Drop::none;
        default:
            o.l3 = L3::other;
            return Drop::none;
    }
}

}  // namespace fulcrum
