#include "fulcrum/rewrite.hpp"

#include <algorithm>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"

namespace fulcrum {

EncapParams EncapParams::from(const fl_snap_header& h) {
    EncapParams e;
    std::memcpy(e.src4, h.encap_src4, 4);
    e.src4_len = h.encap_src4_len;
    std::memcpy(e.src6, h.encap_src6, 16);
    e.src6_len = h.encap_src6_len;
    e.gue_port = h.gue_port;
    e.ttl = h.outer_ttl ? h.outer_ttl : 64;
    e.mtu = h.mtu;
    return e;
}

namespace {
// The first `len` bits set (len 0..64), most significant first.
inline uint64_t prefix_mask64(unsigned len) { return len == 0 ? 0 : ~uint64_t{0} << (64 - std::min(len, 64u)); }

inline uint64_t load_be64(const uint8_t* p) { return (uint64_t{load_be32(p)} << 32) | load_be32(p + 4); }
inline void store_be64(uint8_t* p, uint64_t v) {
    store_be32(p, static_cast<uint32_t>(v >> 32));
    store_be32(p + 4, static_cast<uint32_t>(v));
}
}  // namespace

// Outer source addresses: the configured prefix's bits, the rest from the flow hash. Whole
// words with a mask: these run for every encapsulated packet.
void encap_source_v4(const EncapParams& e, uint64_t hash, uint8_t out[4]) {
    const auto m = static_cast<uint32_t>(prefix_mask64(e.src4_len) >> 32);
    const auto host = static_cast<uint32_t>(hash ^ (hash >> 32));
    store_be32(out, (load_be32(e.src4) & m) | (host & ~m));
}

void encap_source_v6(const EncapParams& e, uint64_t hash, uint8_t out[16]) {
    // The host bits are the hash and a remix of it as laid out in memory (as in earlier
    // releases, so a flow keeps its outer source across an upgrade).
    uint8_t host[16];
    const uint64_t mixed = hash * 0x9E3779B97F4A7C15ull;
    std::memcpy(host, &hash, 8);
    std::memcpy(host + 8, &mixed, 8);
    const unsigned len = e.src6_len;
    const uint64_t m0 = prefix_mask64(len);
    const uint64_t m1 = prefix_mask64(len > 64 ? len - 64 : 0);
    store_be64(out, (load_be64(e.src6) & m0) | (load_be64(host) & ~m0));
    store_be64(out + 8, (load_be64(e.src6 + 8) & m1) | (load_be64(host + 8) & ~m1));
}

bool encapsulate(Frame& f, const Parsed& p, uint8_t forwarding, const uint8_t* server_addr,
                 const EncapParams& e, uint64_t hash, uint16_t ip_id) {
    trim_to_ip(f, p);
    const bool v6 = p.is_v6();
    const uint32_t oh = encap_overhead(forwarding, v6);
    const uint32_t l2 = p.l3_off;
    if (!f.prepend(oh)) return false;
    // Move the L2 header (14, 18 or 22 bytes) to the new front with one fixed-size copy: the
    // bytes it carries past the header land where the outer IP header is written next.
    static_assert(eth::kHeaderLen + 2 * eth::kVlanLen == 22);
    uint8_t l2hdr[22];
    std::memcpy(l2hdr, f.data + oh, sizeof l2hdr);
    std::memcpy(f.data, l2hdr, sizeof l2hdr);
    uint8_t* ip = f.data + l2;
    const uint32_t inner_len = p.l3_len;
    const bool gue = forwarding == FL_FWD_GUE;
    const uint8_t proto = gue ? ipproto::kUdp : (v6 ? ipproto::kIpv6 : ipproto::kIpip);
    uint8_t* udp;
    if (!v6) {
        const uint32_t tot = inner_len + oh;
        ip[0] = 0x45;
        ip[1] = p.tos;
        store_be16(ip + 2, static_cast<uint16_t>(tot));
        store_be16(ip + 4, ip_id);
        store_be16(ip + 6, p.df ? 0x4000 : 0);
        ip[8] = e.ttl;
        ip[9] = proto;
        store_be16(ip + 10, 0);
        encap_source_v4(e, hash, ip + 12);
        std::memcpy(ip + 16, server_addr, 4);
        store_be16(ip + 10, ipv4_header_checksum(ip, 20));
        udp = ip + 20;
    } else {
        const uint32_t flow_label = static_cast<uint32_t>(hash >> 12) & 0xFFFFF;
        store_be32(ip, (6u << 28) | (uint32_t{p.tos} << 20) | flow_label);
        store_be16(ip + 4, static_cast<uint16_t>(inner_len + oh - 40));
        ip[6] = proto;
        ip[7] = e.ttl;
        encap_source_v6(e, hash, ip + 8);
        std::memcpy(ip + 24, server_addr, 16);
        udp = ip + 40;
    }
    // The innermost ethertype becomes the outer family (same as the inner: no mixing).
    store_be16(f.data + l2 - 2, v6 ? eth::kIpv6 : eth::kIpv4);
    if (gue) {
        // GUE variant 1 (draft-ietf-intarea-gue): the inner IP packet follows the UDP header
        // directly; Linux's fou in gue mode decapsulates it.
        const uint16_t sport = static_cast<uint16_t>(0xC000 | ((hash >> 20) & 0x3FFF));
        const uint32_t ulen = inner_len + 8;
        store_be16(udp, sport);
        store_be16(udp + 2, e.gue_port);
        store_be16(udp + 4, static_cast<uint16_t>(ulen));
        store_be16(udp + 6, 0);
        if (v6) {  // a zero UDP checksum is not allowed over IPv6 (RFC 8200)
            uint32_t sum = pseudo_sum_v6(ip + 8, ip + 24, ipproto::kUdp, ulen);
            sum = csum_partial(udp, ulen, sum);
            uint16_t c = csum_fold(sum);
            store_be16(udp + 6, c ? c : 0xFFFF);
        }
    }
    return true;
}

void make_echo_reply(Frame& f, const Parsed& p) {
    trim_to_ip(f, p);
    swap_macs(f.data);
    uint8_t* ip = f.data + p.l3_off;
    uint8_t* icmp = f.data + p.l4_off;
    if (!p.is_v6()) {
        uint8_t tmp[4];
        std::memcpy(tmp, ip + 12, 4);
        std::memcpy(ip + 12, ip + 16, 4);
        std::memcpy(ip + 16, tmp, 4);
        ip[8] = 64;
        const size_t ihl = static_cast<size_t>(ip[0] & 0x0F) * 4;
        store_be16(ip + 10, ipv4_header_checksum(ip, ihl));
        const uint16_t old = load_be16(icmp);
        icmp[0] = 0;  // echo reply
        store_be16(icmp + 2, csum_update16(load_be16(icmp + 2), old, load_be16(icmp)));
    } else {
        uint8_t tmp[16];
        std::memcpy(tmp, ip + 8, 16);
        std::memcpy(ip + 8, ip + 24, 16);
        std::memcpy(ip + 24, tmp, 16);
        ip[7] = 64;
        // The pseudo-header sum is unchanged by swapping addresses; only the type changes.
        const uint16_t old = load_be16(icmp);
        icmp[0] = 129;
        store_be16(icmp + 2, csum_update16(load_be16(icmp + 2), old, load_be16(icmp)));
    }
}

bool make_too_big_reply(Frame& f, const Parsed& p, uint32_t mtu) {
    trim_to_ip(f, p);
    const bool v6 = p.is_v6();
    const uint32_t l2 = p.l3_off;
    const uint32_t hdr = v6 ? 48 : 28;  // new IP header + ICMP header
    // RFC 1812 4.3.2.3: at most 576 bytes in all; RFC 4443 2.4: at most the IPv6 minimum MTU.
    const uint32_t quote = std::min<uint32_t>(p.l3_len, (v6 ? 1280u : 576u) - hdr);
    f.trim(l2 + quote);
    if (!f.prepend(hdr)) return false;
    std::memmove(f.data, f.data + hdr, l2);
    swap_macs(f.data);
    uint8_t* ip = f.data + l2;
    uint8_t* icmp = ip + (v6 ? 40 : 20);
    if (!v6) {
        mtu = std::clamp<uint32_t>(mtu, 68, 0xFFFF);
        ip[0] = 0x45;
        ip[1] = 0;
        store_be16(ip + 2, static_cast<uint16_t>(hdr + quote));
        store_be16(ip + 4, 0);
        store_be16(ip + 6, 0);
        ip[8] = 64;
        ip[9] = ipproto::kIcmp;
        std::memcpy(ip + 12, p.dst, 4);
        std::memcpy(ip + 16, p.src, 4);
        store_be16(ip + 10, 0);
        store_be16(ip + 10, ipv4_header_checksum(ip, 20));
        icmp[0] = 3;  // destination unreachable
        icmp[1] = 4;  // fragmentation needed and DF set
        store_be16(icmp + 2, 0);
        store_be16(icmp + 4, 0);
        store_be16(icmp + 6, static_cast<uint16_t>(mtu));
        store_be16(icmp + 2, csum_fold(csum_partial(icmp, 8 + quote, 0)));
    } else {
        mtu = std::max<uint32_t>(mtu, 1280);
        store_be32(ip, 6u << 28);
        store_be16(ip + 4, static_cast<uint16_t>(8 + quote));
        ip[6] = ipproto::kIcmpv6;
        ip[7] = 64;
        std::memcpy(ip + 8, p.dst, 16);
        std::memcpy(ip + 24, p.src, 16);
        icmp[0] = 2;  // packet too big
        icmp[1] = 0;
        store_be16(icmp + 2, 0);
        store_be32(icmp + 4, mtu);
        uint32_t sum = pseudo_sum_v6(ip + 8, ip + 24, ipproto::kIcmpv6, 8 + quote);
        store_be16(icmp + 2, csum_fold(csum_partial(icmp, 8 + quote, sum)));
    }
    store_be16(f.data + l2 - 2, v6 ? eth::kIpv6 : eth::kIpv4);
    return true;
}

int fragment_ipv4(Frame& f, uint32_t l3_off, uint32_t mtu, std::span<Frame> out) {
    uint8_t* ip = f.data + l3_off;
    const uint32_t ihl = uint32_t{ip[0] & 0x0Fu} * 4;
    const uint32_t tot = load_be16(ip + 2);
    if (tot <= mtu) return 0;
    if (mtu < ihl + 8 || f.len < l3_off + tot) return -1;
    const uint32_t chunk = (mtu - ihl) & ~7u;  // payload per fragment, multiple of 8
    const uint32_t payload = tot - ihl;
    const uint32_t nfrag = (payload + chunk - 1) / chunk;
    if (nfrag - 1 > out.size()) return -1;
    const uint16_t base_ff = load_be16(ip + 6);
    const uint32_t base_off = uint32_t{base_ff & 0x1FFFu} * 8;
    const bool base_mf = base_ff & 0x2000;
    for (uint32_t i = 1; i < nfrag; ++i) {
        Frame& o = out[i - 1];
        const uint32_t plen = std::min(chunk, payload - i * chunk);
        const uint32_t need = l3_off + ihl + plen;
        if (o.len + o.tailroom < need) return -1;
        o.tailroom = o.len + o.tailroom - need;
        o.len = need;
        std::memcpy(o.data, f.data, l3_off + ihl);
        std::memcpy(o.data + l3_off + ihl, ip + ihl + i * chunk, plen);
        uint8_t* oip = o.data + l3_off;
        store_be16(oip + 2, static_cast<uint16_t>(ihl + plen));
        const bool mf = (i + 1 < nfrag) || base_mf;
        store_be16(oip + 6, static_cast<uint16_t>((mf ? 0x2000 : 0) | ((base_off + i * chunk) / 8)));
        store_be16(oip + 10, 0);
        store_be16(oip + 10, ipv4_header_checksum(oip, ihl));
    }
    store_be16(ip + 2, static_cast<uint16_t>(ihl + chunk));
    store_be16(ip + 6, static_cast<uint16_t>(0x2000 | (base_off / 8)));
    store_be16(ip + 10, 0);
    store_be16(ip + 10, ipv4_header_checksum(ip, ihl));
    f.trim(l3_off + ihl + chunk);
    return static_cast<int>(nfrag - 1);
}

}  // namespace fulcrum
